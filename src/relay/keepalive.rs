//! Per-hop keepalive: wsgate's own pings to a quiet peer, and the deadline for its pong.

use std::time::Duration;

use tokio::time::Instant;

/// Prefix of the payload of wsgate's own pings, so their pongs are recognised and consumed.
const MARK: &[u8; 7] = b"wsgate\0";

/// The keepalive state of one peer; the relay's one timer waits for its deadline.
#[derive(Debug)]
pub struct Keepalive {
    interval: Duration,
    timeout: Duration,
    last_rx: Instant,
    outstanding: bool,
    last_ping: Option<(u64, Instant)>,
    seq: u64,
}

/// What the pump should do when the keepalive deadline passes.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Send this ping payload to the peer.
    Ping(Vec<u8>),
    /// The peer did not answer the last ping in time: it is dead.
    Dead,
}

impl Keepalive {
    /// `interval` of zero disables keepalive.
    pub fn new(interval: Duration, timeout: Duration) -> Keepalive {
        Keepalive {
            interval,
            timeout,
            last_rx: Instant::now(),
            outstanding: false,
            last_ping: None,
            seq: 0,
        }
    }

    /// When the next ping or the pong deadline is due; `None` when disabled.
    pub fn deadline(&self) -> Option<Instant> {
        if self.interval.is_zero() {
            return None;
        }
        match (self.outstanding, self.last_ping) {
            (true, Some((_, sent))) => Some(sent + self.timeout),
            _ => Some(self.last_rx + self.interval),
        }
    }

    /// The deadline passed: ping, or declare the peer dead.
    pub fn due(&mut self) -> Due {
        if self.outstanding {
            return Due::Dead;
        }
        self.seq += 1;
        let now = Instant::now();
        self.last_ping = Some((self.seq, now));
        self.outstanding = true;
        let mut payload = MARK.to_vec();
        payload.extend_from_slice(&self.seq.to_be_bytes());
        Due::Ping(payload)
    }

    /// Any frame from the peer proves it alive.
    pub fn on_frame(&mut self) {
        // Disabled: skip the clock read, this runs for every frame.
        if self.interval.is_zero() {
            return;
        }
        self.last_rx = Instant::now();
        self.outstanding = false;
    }

    /// Whether a pong answers one of our pings (then it is consumed, not forwarded);
    /// returns the round trip when it answers the latest one.
    pub fn on_pong(&mut self, payload: &[u8]) -> Option<Option<Duration>> {
        if payload.len() != MARK.len() + 8 || &payload[..MARK.len()] != MARK {
            return None;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&payload[MARK.len()..]);
        let rtt = match self.last_ping {
            Some((want, sent)) if want == u64::from_be_bytes(seq) => Some(sent.elapsed()),
            _ => None,
        };
        Some(rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pings_then_declares_dead() {
        let mut k = Keepalive::new(Duration::from_secs(20), Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(k.deadline(), Some(start + Duration::from_secs(20)));
        tokio::time::sleep_until(k.deadline().unwrap()).await;
        let Due::Ping(payload) = k.due() else {
            panic!("expected a ping")
        };
        assert_eq!(k.deadline(), Some(start + Duration::from_secs(30)));
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(k.on_pong(&payload), Some(Some(Duration::from_millis(5))));
        assert_eq!(k.on_pong(b"app ping"), None);
        tokio::time::sleep_until(k.deadline().unwrap()).await;
        assert_eq!(k.due(), Due::Dead);
        k.on_frame();
        assert_eq!(k.deadline(), Some(Instant::now() + Duration::from_secs(20)));
    }

    #[test]
    fn disabled() {
        let k = Keepalive::new(Duration::ZERO, Duration::from_secs(10));
        assert_eq!(k.deadline(), None);
    }
}
