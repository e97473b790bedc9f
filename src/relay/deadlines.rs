//! What ends a connection from outside or in time: shutdown and retirement, and the one
//! timer behind every deadline (keepalive, idle, write, close handshake, drain, retirement).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::Relay;
use super::closing::Side;
use super::signal::Signal;
use crate::proto::close::code;
use crate::relay::hop::Reading;
use crate::relay::keepalive::{Due, Pings};
use crate::shared::report::Outcome;

/// Something outside the connection that ends it.
pub(super) enum Control {
    Shutdown,
    RouteRetired,
    BackendRetired,
}

/// The wait for one token's cancellation, boxed: an idle connection holds three.
type Wait = Pin<Box<WaitForCancellationFutureOwned>>;

/// Watches shutdown and the connection's retirements; each kind is reported once (a
/// retirement of the route or of the backend ends the watch on both).
///
/// Each token's wait is a box of its own (72 bytes each, in mimalloc's 80 bin) rather
/// than one boxed `select!` over the three (336 bytes, in its 384 bin), which also kept a
/// copy of every token beside its wait.
pub(super) struct ControlWatch {
    shutdown: Option<Wait>,
    route: Option<Wait>,
    backend: Option<Wait>,
    /// The waits are polled with it, and only when it fired (fired at first, so each wait
    /// gets its first poll and registers with its token): polled on every wake-up of the
    /// relay, the waits (each poll taking its token's lock) cost ~1,500 instructions per
    /// 64 B echo round trip (issue #17).
    signal: Arc<Signal>,
}

impl ControlWatch {
    /// Watches the given tokens.
    pub(super) fn new(
        shutdown: Option<CancellationToken>,
        route: Option<CancellationToken>,
        backend: Option<CancellationToken>,
    ) -> ControlWatch {
        let wait = |t: Option<CancellationToken>| t.map(|t| Box::pin(t.cancelled_owned()));
        ControlWatch {
            shutdown: wait(shutdown),
            route: wait(route),
            backend: wait(backend),
            signal: Signal::new(true),
        }
    }

    /// The next event not reported yet. Several may be ready at once (a reload just before
    /// a shutdown): each ready one is reported on its own call, and a finished wait is never
    /// polled again.
    ///
    /// `new_waker` says the task's waker is not the one given last time (it is handed to
    /// the signal then, and after each firing, which takes it out).
    pub(super) fn poll_next(&mut self, cx: &mut Context<'_>, new_waker: bool) -> Poll<Control> {
        if self.shutdown.is_none() && self.route.is_none() && self.backend.is_none() {
            return Poll::Pending;
        }
        if !self.signal.take(cx.waker(), new_waker) {
            return Poll::Pending;
        }
        let waker = self.signal.waker();
        let cx = &mut Context::from_waker(&waker);
        let event = if poll_wait(&mut self.shutdown, cx) {
            Control::Shutdown
        } else if poll_wait(&mut self.route, cx) {
            Control::RouteRetired
        } else if poll_wait(&mut self.backend, cx) {
            Control::BackendRetired
        } else {
            return Poll::Pending;
        };
        if !matches!(event, Control::Shutdown) {
            self.route = None;
            self.backend = None;
        }
        // Another wait may be ready too: the next call polls them again.
        self.signal.set();
        Poll::Ready(event)
    }
}

/// Polls `wait` if it is still there; true (and the wait gone) once its token is cancelled.
fn poll_wait(wait: &mut Option<Wait>, cx: &mut Context<'_>) -> bool {
    let done = wait
        .as_mut()
        .is_some_and(|w| w.as_mut().poll(cx).is_ready());
    if done {
        *wait = None;
    }
    done
}

impl Relay {
    /// When the door's admission of this connection runs out, if it does.
    fn end_of_life(&self) -> Option<&crate::shared::admission::EndOfLife> {
        self.session.admitted.as_ref()?.ends.as_ref()
    }

    /// Reacts to shutdown and retirement (every event that is ready, once each);
    /// `new_waker` as for [`ControlWatch::poll_next`].
    pub(super) fn poll_control(&mut self, cx: &mut Context<'_>, new_waker: bool) {
        while let Poll::Ready(event) = self.control.poll_next(cx, new_waker) {
            match event {
                Control::Shutdown => {
                    self.initiate(code::GOING_AWAY, "proxy shutting down", Outcome::Shutdown);
                }
                Control::RouteRetired | Control::BackendRetired => {
                    let (watch, why) = match event {
                        Control::RouteRetired => {
                            (Some(&self.session.route_watch), "route reloaded")
                        }
                        _ => (
                            self.session.backend_watch.as_ref(),
                            "backend removed or unhealthy",
                        ),
                    };
                    let delay = watch.map_or(Duration::ZERO, |w| w.delay());
                    let why = watch.and_then(|w| w.why()).unwrap_or(why);
                    self.retire_at = Some(Box::new((Instant::now() + delay, why)));
                }
            }
        }
    }

    /// Acts on every deadline that has passed and sets the timer for the next; says whether
    /// the close handshake ran out of time, and whether any deadline acted.
    pub(super) fn poll_deadlines(&mut self, cx: &mut Context<'_>) -> (bool, bool) {
        let mut acted = false;
        loop {
            let tuning = &self.conn.route.tuning;
            let idle = (!self.idle_closed && !tuning.idle_timeout.is_zero())
                .then(|| self.last_data + tuning.idle_timeout);
            let mut next: Option<Instant> = None;
            let mut consider = |at: Option<Instant>| {
                if let Some(at) = at {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            };
            consider(self.close_by);
            consider(idle);
            consider(self.retire_at.as_ref().map(|r| r.0));
            consider(self.end_of_life().map(|e| e.at));
            for hop in &self.hops {
                consider(hop.write_deadline(tuning.write_timeout));
                match hop.reading() {
                    Reading::Open => {
                        consider(hop.keepalive().deadline(Pings::of(tuning)));
                        consider(hop.frame_deadline(tuning.frame_timeout));
                    }
                    Reading::RawDrain { quiet_until } => consider(Some(quiet_until)),
                    _ => {}
                }
            }
            let Some(next) = next else {
                return (false, acted);
            };
            let now = Instant::now();
            if next > now {
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
                // A later deadline lets the timer fire early and be moved then: frames move
                // keepalive deadlines constantly, the timer wheel should not see each of them.
                if timer.is_elapsed() || next < timer.deadline() {
                    timer.as_mut().reset(next);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return (false, acted);
                }
                continue;
            }
            if self.close_by.is_some_and(|at| at <= now) {
                tracing::debug!("close handshake timed out");
                return (true, acted);
            }
            acted = true;
            if idle.is_some_and(|at| at <= now) {
                self.idle_closed = true;
                self.initiate(code::GOING_AWAY, "idle timeout", Outcome::IdleTimeout);
            }
            if let Some(&(at, why)) = self.retire_at.as_deref()
                && at <= now
            {
                self.retire_at = None;
                self.initiate(code::SERVICE_RESTART, why, Outcome::Reload);
            }
            if let Some(end) = self.end_of_life()
                && end.at <= now
            {
                let end = self.session.admitted.as_mut().and_then(|a| a.ends.take());
                if let Some(end) = end {
                    self.initiate(end.code, &end.reason, end.outcome);
                }
            }
            let tuning = &self.conn.route.tuning;
            let (frame_timeout, write_timeout) = (tuning.frame_timeout, tuning.write_timeout);
            let pings = Pings::of(tuning);
            for side in [Side::Client, Side::Backend] {
                let hop = self.hop(side);
                if hop
                    .write_deadline(write_timeout)
                    .is_some_and(|at| at <= now)
                {
                    self.write_timed_out(side);
                }
                let hop = self.hop(side);
                if hop.reading() == Reading::Open
                    && hop
                        .frame_deadline(frame_timeout)
                        .is_some_and(|at| at <= now)
                {
                    tracing::info!(peer = ?side, "frame not finished within frame_timeout");
                    self.violation(side, crate::relay::violation::Violation::FrameTimeout);
                }
                let hop = self.hop(side);
                match hop.reading() {
                    Reading::RawDrain { quiet_until } if quiet_until <= now => {
                        hop.set_reading(Reading::Done);
                    }
                    Reading::Open
                        if hop.keepalive().deadline(pings).is_some_and(|at| at <= now) =>
                    {
                        match hop.keepalive_mut().due() {
                            Due::Ping(payload) => hop.queue_ping(&payload),
                            Due::Dead => {
                                tracing::info!(peer = ?side, "no pong within ping_timeout");
                                hop.set_reading(Reading::Done);
                                self.give_up(side, "ping timeout", Outcome::PingTimeout);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload retired the route and shutdown began before the connection was polled:
    /// both are reported, once each, whichever comes first, and nothing is polled after
    /// it finished.
    #[tokio::test]
    async fn events_ready_together_are_each_reported_once() {
        for _ in 0..20 {
            let (shutdown, route, backend) = (
                CancellationToken::new(),
                CancellationToken::new(),
                CancellationToken::new(),
            );
            let mut watch = ControlWatch::new(
                Some(shutdown.clone()),
                Some(route.clone()),
                Some(backend.clone()),
            );
            shutdown.cancel();
            route.cancel();
            backend.cancel();
            let mut seen = Vec::new();
            std::future::poll_fn(|cx| {
                while let Poll::Ready(event) = watch.poll_next(cx, true) {
                    seen.push(matches!(event, Control::Shutdown));
                }
                Poll::Ready(())
            })
            .await;
            seen.sort();
            assert_eq!(seen, [false, true], "one retirement and one shutdown");
        }
    }
}
