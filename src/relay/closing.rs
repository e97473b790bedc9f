//! The close rules: which hop is told what when a peer closes, vanishes or misbehaves, and
//! which event is reported as the one that ended the connection.

use std::task::{Context, Poll};

use tokio::time::Instant;

use super::Relay;
use crate::proto::close::{self, code};
use crate::proto::frame::Frame;
use crate::relay::hop::Reading;
use crate::relay::violation::Violation;
use crate::shared::metrics::ConnMetrics;
use crate::shared::registry::Conn;
use crate::shared::report::{CloseReport, ClosedBy, Outcome};
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;
use crate::shared::stream::is_stream_reset;

/// One of the two hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Backend,
}

impl Side {
    /// The hop frames from this side are forwarded to.
    pub(super) fn other(self) -> Side {
        match self {
            Side::Client => Side::Backend,
            Side::Backend => Side::Client,
        }
    }

    /// What the other hop is told when this side vanishes or misbehaves.
    fn gone_code(self) -> (u16, &'static str) {
        match self {
            Side::Client => (code::GOING_AWAY, "client went away"),
            Side::Backend => (code::BAD_GATEWAY, "backend failed"),
        }
    }

    /// Label for logs and the `hop` metric label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
        }
    }

    /// Who the close report names when this side ends the connection.
    pub(super) fn closed_by(self) -> ClosedBy {
        match self {
            Side::Client => ClosedBy::Client,
            Side::Backend => ClosedBy::Backend,
        }
    }
}

/// How the connection started to end (the first event wins).
pub(super) struct FirstClose {
    /// Who ended it.
    pub(super) closed_by: ClosedBy,
    /// The close code, when there was one.
    pub(super) code: Option<u16>,
    /// The close reason.
    pub(super) reason: String,
    /// How it ended, for the report and the metrics.
    pub(super) outcome: Outcome,
}

/// The close report of a connection, from its facts and its registry entry (when it
/// started, its message and byte counts, its backend and identity).
pub(super) fn report(subprotocol: Option<String>, conn: &Conn, first: FirstClose) -> CloseReport {
    let [(msgs_in, bytes_in), (msgs_out, bytes_out)] = conn.totals();
    CloseReport {
        id: conn.id,
        route: conn.route.name().to_string(),
        backend: conn.backend.to_string(),
        client_addr: conn.client_addr,
        tls: conn.tls,
        protocol: conn.protocol,
        subprotocol,
        duration: conn.started.elapsed(),
        msgs_in,
        msgs_out,
        bytes_in,
        bytes_out,
        close_code: first.code,
        close_reason: first.reason,
        closed_by: first.closed_by,
        outcome: first.outcome,
        identity: conn.identity.as_deref().map(str::to_string),
    }
}

/// Takes the connection out of the active gauge, counts its end, logs its report and hands
/// it to subscribers.
pub(super) fn publish(
    state: &ProxyState,
    route: &Route,
    live: &mut ConnMetrics,
    report: CloseReport,
) {
    live.finish();
    state
        .metrics
        .connection_closed(&route.close_metrics, &report);
    report.log();
    // No subscriber is the normal case outside tests.
    let _ = state.reports.send(report);
}

impl Relay {
    /// Keeps how the connection started to end; later events do not overwrite it.
    pub(super) fn record(
        &mut self,
        closed_by: ClosedBy,
        code: Option<u16>,
        reason: &str,
        outcome: Outcome,
    ) {
        if self.first.is_none() {
            self.conn.set_closing();
            self.first = Some(Box::new(FirstClose {
                closed_by,
                code,
                reason: reason.to_string(),
                outcome,
            }));
        }
    }

    /// Starts the close handshake's clock, once.
    fn start_closing(&mut self) {
        if self.close_by.is_none() {
            self.close_by = Some(Instant::now() + self.conn.route.tuning.close_timeout);
        }
    }

    /// Queues a Close for `side` unless it already got one (a Close owed to it goes instead).
    pub(super) fn send_close(&mut self, side: Side, payload: &[u8]) {
        if self.hop(side).queue_close(payload) {
            self.start_closing();
        }
    }

    /// Queues a frame for `to`; frames after its Close are dropped.
    pub(super) fn forward(&mut self, to: Side, frame: Frame) {
        if self.hop(to).forward(frame) {
            self.start_closing();
        }
    }

    /// `from` vanished (`clean`: its stream ended between frames) or its socket failed:
    /// tell the other side. A backend that just ends its stream is not an error (mosquitto
    /// does so after every MQTT DISCONNECT); a reset, a failed read or write or a stream cut
    /// inside a frame is.
    pub(super) fn peer_gone(&mut self, from: Side, clean: bool) {
        let outcome = match from {
            Side::Client => Outcome::ClientGone,
            Side::Backend if clean => Outcome::BackendGone,
            Side::Backend => Outcome::BackendError,
        };
        self.record(from.closed_by(), Some(code::ABNORMAL), "", outcome);
        self.dead(from, "");
    }

    /// `side` cannot be reached any more: never write to it again, and close the other hop.
    pub(super) fn dead(&mut self, side: Side, why: &str) {
        self.hop(side).unreachable();
        let (code, reason) = side.gone_code();
        let reason = if why.is_empty() {
            reason.to_string()
        } else {
            format!("{reason}: {why}")
        };
        self.send_close(side.other(), &close::close_payload(code, &reason));
    }

    /// wsgate gives up on a peer that is there but not keeping up (no pong, not reading):
    /// the other hop is closed as if the peer had vanished.
    pub(super) fn give_up(&mut self, side: Side, why: &str, outcome: Outcome) {
        self.record(ClosedBy::Proxy, Some(code::ABNORMAL), why, outcome);
        self.dead(side, why);
    }

    /// `from` broke the protocol or a limit: close it with the violation's code, and the
    /// other hop too.
    pub(super) fn violation(&mut self, from: Side, violation: Violation) {
        let (code, reason) = (violation.code(), violation.to_string());
        tracing::info!(?from, code, reason, "closing on violation");
        self.record(ClosedBy::Proxy, Some(code), &reason, violation.outcome());
        let payload = close::close_payload(code, &reason);
        let (other_code, other_reason) = from.gone_code();
        let other_payload = close::close_payload(other_code, other_reason);
        if from == Side::Client {
            // The backend may still be sending what it had before our Close (echoes of the
            // client's valid messages): the client gets its Close after those, when the
            // backend's Close reply is relayed (or at the close timeout at the latest).
            self.hop(Side::Client).owe_close(payload);
            self.send_close(Side::Backend, &other_payload);
        } else {
            self.send_close(from, &payload);
            self.send_close(from.other(), &other_payload);
        }
        self.hop(from).set_reading(Reading::Draining);
    }

    /// A hop inside a streamed frame whose sender will never finish it (it broke the
    /// protocol, vanished or ran out of time mid-frame) cannot get a Close: a Close inside
    /// a frame would be read as payload (RFC 6455 §5.4). It is cut instead, its connection
    /// closed without a Close, which its peer reports as 1006 (§7.1.5); the sender gets the
    /// Close it is owed now. True when a hop was cut.
    pub(super) fn cut_abandoned(&mut self) -> bool {
        let mut cut = false;
        for side in [Side::Client, Side::Backend] {
            if self.hop(side).inside_frame_out()
                && self.hop(side.other()).reading() != Reading::Open
            {
                tracing::debug!(
                    ?side,
                    "frame toward this hop abandoned: closing it without a Close"
                );
                self.hop(side).cut();
                let (code, reason) = side.gone_code();
                self.send_close(side.other(), &close::close_payload(code, reason));
                cut = true;
            }
        }
        cut
    }

    /// wsgate itself ends the connection (shutdown, reload, idle): Close to both peers.
    pub(super) fn initiate(&mut self, code: u16, reason: &str, outcome: Outcome) {
        self.record(ClosedBy::Proxy, Some(code), reason, outcome);
        let payload = close::close_payload(code, reason);
        self.send_close(Side::Client, &payload);
        self.send_close(Side::Backend, &payload);
    }

    /// A read or write on `side` failed with `error`: a client's HTTP/2 stream reset is
    /// reported as such (the peer_gone that follows keeps it, the first event winning).
    pub(super) fn note_reset(&mut self, side: Side, error: &std::io::Error) {
        if side == Side::Client && is_stream_reset(error) {
            self.record(
                ClosedBy::Client,
                Some(code::ABNORMAL),
                "",
                Outcome::ClientReset,
            );
        }
    }

    /// A write to `side` failed: the peer is gone.
    pub(super) fn write_failed(&mut self, side: Side, error: &std::io::Error) {
        tracing::debug!(?side, %error, "write failed");
        if !self.hop(side).close_sent() {
            self.note_reset(side, error);
        }
        if self.stop_writing(side) {
            self.peer_gone(side, false);
        }
    }

    /// A write to `side` waited longer than `write_timeout`: the peer is there but stopped
    /// reading.
    pub(super) fn write_timed_out(&mut self, side: Side) {
        if self.stop_writing(side) {
            self.give_up(side, "write timeout", Outcome::WriteTimeout);
        }
    }

    /// Drops what was queued for `side` and writes nothing more to it; false when its Close
    /// was already on the way (the connection is ending, nothing more to report).
    fn stop_writing(&mut self, side: Side) -> bool {
        let was_closing = self.hop(side).close_sent();
        self.hop(side).fail();
        !was_closing
    }

    /// Writes what is queued for `side`, as far as it goes without waiting.
    pub(super) fn write_out(&mut self, side: Side, cx: &mut Context<'_>) {
        // Nothing queued, unflushed or owed a shutdown: the write would find that out
        // again (twice per relayed message, the relay writing both hops each round).
        if self.hop(side).written() {
            return;
        }
        let write_timeout = self.conn.route.tuning.write_timeout;
        if let Poll::Ready(Err(e)) = self.hop(side).poll_write_out(cx, write_timeout) {
            self.write_failed(side, &e);
        }
    }
}
