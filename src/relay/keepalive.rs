//! Per-hop keepalive: wsgate's own pings to a quiet peer, and the deadline for its pong.
//!
//! Only a pong that answers a ping wsgate sent on this hop and that is not answered yet is
//! wsgate's: it is consumed and timed. Every other pong (the peers' own, a repeat, one for
//! a ping already answered) passes end to end, whatever its payload looks like, so a
//! peer's ping never loses its pong. Each round of pings carries a fresh random token, so
//! no peer can answer a ping it never saw; the hop keeps only that token (8 bytes), how
//! many pings carry it, and when the latest was sent.

use std::time::Duration;

use tokio::time::Instant;

/// Prefix of the payload of wsgate's own pings, so they are recognisable on the wire; the
/// random token after it is what a pong must match.
const MARK: &[u8; 7] = b"wsgate\0";

/// Length of a ping payload of wsgate's: the mark, then the token.
pub const PING_LEN: usize = MARK.len() + 8;

/// The route's ping settings, passed in by the relay rather than kept in each hop's
/// state: every hop of every idle connection holds a [`Keepalive`], and the relay's state
/// fits a smaller allocator bin without two copies of the route's settings.
#[derive(Debug, Clone, Copy)]
pub struct Pings {
    /// How long a peer may be quiet before it is pinged (zero: keepalive is off).
    pub interval: Duration,
    /// How long a ping may go unanswered before the peer counts as dead.
    pub timeout: Duration,
}

impl Pings {
    /// The ping settings of `tuning`.
    pub fn of(tuning: &crate::config::Tuning) -> Pings {
        Pings {
            interval: tuning.ping_interval,
            timeout: tuning.ping_timeout,
        }
    }
}

/// The keepalive state of one peer; the relay's one timer waits for its deadline.
#[derive(Debug)]
pub struct Keepalive {
    /// When the peer last sent anything.
    last_rx: Instant,
    /// When the latest ping was sent.
    sent: Instant,
    /// The token of the pings not answered yet.
    token: [u8; 8],
    /// Pings sent with `token` and not answered yet: that many pongs carrying it are
    /// consumed. A peer busy with data is pinged again each quiet `interval` before its
    /// pong comes; those pings reuse the token, so a late pong is still recognised.
    unanswered: u8,
    /// Nothing came from the peer since the latest ping: it is dead at `sent + timeout`.
    silent: bool,
}

/// What the pump should do when the keepalive deadline passes.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Send this ping payload to the peer.
    Ping([u8; PING_LEN]),
    /// The peer did not answer the last ping in time: it is dead.
    Dead,
}

impl Keepalive {
    /// A peer that was just heard from.
    pub fn new() -> Keepalive {
        let now = Instant::now();
        Keepalive {
            last_rx: now,
            sent: now,
            token: [0; 8],
            unanswered: 0,
            silent: false,
        }
    }

    /// When the next ping or the pong deadline is due; `None` when disabled.
    pub fn deadline(&self, pings: Pings) -> Option<Instant> {
        if pings.interval.is_zero() {
            return None;
        }
        if self.silent {
            Some(self.sent + pings.timeout)
        } else {
            Some(self.last_rx + pings.interval)
        }
    }

    /// The deadline passed: ping, or declare the peer dead. A fresh token is drawn when
    /// every earlier ping was answered.
    pub fn due(&mut self) -> Due {
        if self.silent {
            return Due::Dead;
        }
        if self.unanswered == 0 {
            crate::shared::random::fill(&mut self.token);
        }
        // Saturating: past 255 unanswered pings a few repeats more are consumed, no harm.
        self.unanswered = self.unanswered.saturating_add(1);
        self.sent = Instant::now();
        self.silent = true;
        let mut payload = [0u8; PING_LEN];
        payload[..MARK.len()].copy_from_slice(MARK);
        payload[MARK.len()..].copy_from_slice(&self.token);
        Due::Ping(payload)
    }

    /// Any frame from the peer proves it alive.
    pub fn on_frame(&mut self, pings: Pings) {
        // Disabled: skip the clock read, this runs for every frame.
        if pings.interval.is_zero() {
            return;
        }
        self.last_rx = Instant::now();
        self.silent = false;
    }

    /// The round trip (from the latest ping) when `payload` answers a ping of wsgate's
    /// not answered yet (the pong is then consumed, not forwarded); `None` for every other
    /// pong.
    pub fn on_pong(&mut self, payload: &[u8]) -> Option<Duration> {
        let ours = self.unanswered > 0
            && payload.len() == PING_LEN
            && payload[..MARK.len()] == MARK[..]
            && payload[MARK.len()..] == self.token;
        if !ours {
            return None;
        }
        self.unanswered -= 1;
        Some(self.sent.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pings(interval: Duration, timeout: Duration) -> Pings {
        Pings { interval, timeout }
    }

    #[tokio::test(start_paused = true)]
    async fn pings_then_declares_dead() {
        let p = pings(Duration::from_secs(20), Duration::from_secs(10));
        let mut k = Keepalive::new();
        let start = Instant::now();
        assert_eq!(k.deadline(p), Some(start + Duration::from_secs(20)));
        tokio::time::sleep_until(k.deadline(p).unwrap()).await;
        let Due::Ping(payload) = k.due() else {
            panic!("expected a ping")
        };
        assert_eq!(k.deadline(p), Some(start + Duration::from_secs(30)));
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(k.on_pong(b"app ping"), None);
        assert_eq!(k.on_pong(&payload), Some(Duration::from_millis(5)));
        assert_eq!(k.on_pong(&payload), None, "a ping is answered once");
        tokio::time::sleep_until(k.deadline(p).unwrap()).await;
        assert_eq!(
            k.due(),
            Due::Dead,
            "a pong is not a frame: the relay calls on_frame"
        );
        k.on_frame(p);
        assert_eq!(
            k.deadline(p),
            Some(Instant::now() + Duration::from_secs(20))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pings_before_the_pong_share_its_token_and_each_is_answered_once() {
        let second = Duration::from_secs(1);
        let p = pings(second, second);
        let mut k = Keepalive::new();
        let Due::Ping(first) = k.due() else {
            panic!("expected a ping")
        };
        // Data proves the peer alive; the next quiet interval pings again, same token.
        k.on_frame(p);
        tokio::time::advance(Duration::from_millis(3)).await;
        let Due::Ping(again) = k.due() else {
            panic!("expected a ping")
        };
        assert_eq!(first, again);
        assert_eq!(k.on_pong(&first), Some(Duration::ZERO));
        assert_eq!(k.on_pong(&first), Some(Duration::ZERO));
        assert_eq!(k.on_pong(&first), None, "a third pong answers nothing");
        k.on_frame(p);
        let Due::Ping(next) = k.due() else {
            panic!("expected a ping")
        };
        assert_ne!(first, next, "a fresh token once every ping was answered");
    }

    #[test]
    fn disabled_consumes_no_pong() {
        let mut k = Keepalive::new();
        assert_eq!(
            k.deadline(pings(Duration::ZERO, Duration::from_secs(10))),
            None
        );
        let mut lookalike = MARK.to_vec();
        lookalike.extend_from_slice(&[0; 8]);
        assert_eq!(k.on_pong(&lookalike), None);
    }
}
