//! What ends a connection from outside or in time: shutdown and retirement, and the one
//! timer behind every deadline (keepalive, idle, write, close handshake, drain, retirement).

use std::future::Future;
use std::task::Context;

use tokio::time::Instant;

use super::Relay;
use super::closing::Side;
use crate::proto::close::code;
use crate::relay::hop::Reading;
use crate::relay::keepalive::{Due, Pings};
use crate::shared::registry::Ending;
use crate::shared::report::Outcome;

impl Relay {
    /// When the door's admission of this connection runs out, if it does.
    fn end_of_life(&self) -> Option<&crate::shared::admission::EndOfLife> {
        self.session.admitted.as_ref()?.ends.as_ref()
    }

    /// Acts on the shutdown and retirements raised on the connection's entry, each kind
    /// once (a retirement of the route or of the backend ends the watch for both); true
    /// when any acted. A retirement raised for a group this connection is not in (a later
    /// group of its route, a backend of the same name elsewhere) is passed over.
    pub(super) fn act_on_endings(&mut self) -> bool {
        let endings = self.conn.take_endings();
        let mut acted = false;
        if endings.has(Ending::Shutdown) && self.seen & Ending::Shutdown as u8 == 0 {
            self.seen |= Ending::Shutdown as u8;
            acted = true;
            self.initiate(code::GOING_AWAY, "proxy shutting down", Outcome::Shutdown);
        }
        let retired = [
            (
                Ending::RouteRetired,
                Some(&self.session.route_watch),
                "route reloaded",
            ),
            (
                Ending::BackendRetired,
                self.session.backend_watch.as_ref(),
                "backend removed or unhealthy",
            ),
        ]
        .into_iter()
        .find(|(ending, watch, _)| endings.has(*ending) && watch.is_some_and(|w| w.is_retired()));
        const RETIRED: u8 = Ending::RouteRetired as u8 | Ending::BackendRetired as u8;
        if let Some((_, Some(watch), why)) = retired
            && self.seen & RETIRED == 0
        {
            self.seen |= RETIRED;
            acted = true;
            let at = Instant::now() + watch.delay();
            self.retire_at = Some(Box::new((at, watch.why().unwrap_or(why))));
        }
        acted
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
                    Reading::RawDrain => consider(hop.quiet_until()),
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
                    Reading::RawDrain if hop.quiet_until().is_some_and(|at| at <= now) => {
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
