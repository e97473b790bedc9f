//! The tunnel after 101: both hops driven by one task, every frame checked on the hop it
//! came from and forwarded to the other, and the close handshake.
//!
//! One task owns both streams (design §8: per-connection state is what idle connections
//! cost, and cross-task wakeups and locks are what small frames cost). A frame read from
//! one hop is queued whole for the other, and nothing more is read from that hop until the
//! queue is written, so backpressure is the loop itself; each hop's queue drains on its
//! own, so a peer that stops reading never stops the other direction. A Close is sent at
//! most once per peer and nothing follows it. One timer serves every deadline (keepalive,
//! idle, write, close handshake, drain) and is only moved when a deadline comes earlier.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::close::{self, CloseReport, ClosedBy, Outcome, code};
use crate::frame::{Frame, FrameError, OpCode};
use crate::hop::{DRAIN_QUIET, Hop, Reading};
use crate::keepalive::Due;
use crate::metrics::ConnMetrics;
use crate::occupancy::Seat;
use crate::route::Route;
use crate::server::Gateway;
use crate::stream::Stream;

/// How long the final FIN / TLS close_notify may take to write before the socket is just dropped.
const SHUTDOWN_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The facts about a connection known when the relay starts.
pub struct Session {
    /// Connection id.
    pub id: u64,
    /// The route it matched.
    pub route: Arc<Route>,
    /// Backend URL (or `echo`).
    pub backend: String,
    /// Client socket address.
    pub client_addr: SocketAddr,
    /// Whether the client hop is TLS.
    pub tls: bool,
    /// Subprotocol chosen by the backend.
    pub subprotocol: Option<String>,
    /// Places in the global and the route's connection counts, released when the relay ends.
    pub slots: (Seat, Seat),
    /// The connection's place on its backend (least_connections counts it).
    pub backend_slot: Option<Seat>,
    /// Retirement of its route: closes it with 1012.
    pub route_watch: crate::retire::RetireWatch,
    /// Retirement of its backend (removed, or unhealthy with `close_on_unhealthy`).
    pub backend_watch: Option<crate::retire::RetireWatch>,
}

/// One of the two hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Backend,
}

impl Side {
    fn other(self) -> Side {
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
    fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
        }
    }

    fn closed_by(self) -> ClosedBy {
        match self {
            Side::Client => ClosedBy::Client,
            Side::Backend => ClosedBy::Backend,
        }
    }
}

/// How the connection started to end (the first event wins).
struct FirstClose {
    closed_by: ClosedBy,
    code: Option<u16>,
    reason: String,
    outcome: Outcome,
}

/// Something outside the connection that ends it.
enum Control {
    Shutdown,
    RouteRetired,
    BackendRetired,
}

type ControlWait = Pin<Box<dyn Future<Output = Control> + Send>>;

/// Waits for whichever of the given tokens is cancelled first.
fn control_wait(
    shutdown: Option<CancellationToken>,
    route: Option<CancellationToken>,
    backend: Option<CancellationToken>,
) -> Option<ControlWait> {
    if shutdown.is_none() && route.is_none() && backend.is_none() {
        return None;
    }
    async fn cancelled(token: Option<CancellationToken>) {
        match token {
            Some(t) => t.cancelled_owned().await,
            None => std::future::pending().await,
        }
    }
    Some(Box::pin(async move {
        tokio::select! {
            _ = cancelled(shutdown) => Control::Shutdown,
            _ = cancelled(route) => Control::RouteRetired,
            _ = cancelled(backend) => Control::BackendRetired,
        }
    }))
}

/// The whole state of one relayed connection.
struct Relay {
    session: Session,
    gw: Arc<Gateway>,
    /// Indexed by `Side as usize`.
    hops: [Hop; 2],
    first: Option<FirstClose>,
    /// Messages and payload bytes per direction (client to backend first).
    counts: [(u64, u64); 2],
    live: ConnMetrics,
    /// Only clients are rate limited: the backend is the operator's own.
    rate: Option<RateLimit>,
    /// When the close handshake must be over (set by the first Close sent).
    close_by: Option<Instant>,
    started: Instant,
    /// When the last data frame moved (kept only with an idle timeout).
    last_data: Instant,
    idle_closed: bool,
    /// A retirement that fired: when this connection's turn comes, and why.
    retire_at: Option<(Instant, &'static str)>,
    retiring: bool,
    shutting_down: bool,
    control: Option<ControlWait>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Relay {
    fn hop(&mut self, side: Side) -> &mut Hop {
        &mut self.hops[side as usize]
    }

    fn record(&mut self, closed_by: ClosedBy, code: Option<u16>, reason: &str, outcome: Outcome) {
        if self.first.is_none() {
            self.first = Some(FirstClose {
                closed_by,
                code,
                reason: reason.to_string(),
                outcome,
            });
        }
    }

    fn start_closing(&mut self) {
        if self.close_by.is_none() {
            self.close_by = Some(Instant::now() + self.session.route.tuning.close_timeout);
        }
    }

    /// Queues a Close for `side` unless it already got one (a Close owed to it goes instead).
    fn send_close(&mut self, side: Side, payload: &[u8]) {
        let hop = self.hop(side);
        if hop.close_sent {
            return;
        }
        hop.close_sent = true;
        let owed = hop.pending_close.take();
        hop.queue_own(OpCode::Close, owed.as_deref().unwrap_or(payload));
        self.start_closing();
    }

    /// Queues a frame for `to`; frames after its Close are dropped.
    fn forward(&mut self, to: Side, frame: Frame) {
        let hop = self.hop(to);
        if hop.close_sent {
            return;
        }
        if frame.opcode == OpCode::Close {
            hop.close_sent = true;
            match hop.pending_close.take() {
                Some(owed) => hop.queue_own(OpCode::Close, &owed),
                None => hop.queue_frame(frame),
            }
            self.start_closing();
        } else {
            hop.queue_frame(frame);
        }
    }

    /// `from` vanished or its socket failed: tell the other side.
    fn peer_gone(&mut self, from: Side) {
        let outcome = if from == Side::Client {
            Outcome::ClientGone
        } else {
            Outcome::BackendError
        };
        self.record(from.closed_by(), Some(code::ABNORMAL), "", outcome);
        self.dead(from, "");
    }

    /// `side` cannot be reached any more: never write to it again, and close the other hop.
    fn dead(&mut self, side: Side, why: &str) {
        self.hop(side).close_sent = true;
        let (code, reason) = side.gone_code();
        let reason = if why.is_empty() {
            reason.to_string()
        } else {
            format!("{reason}: {why}")
        };
        self.send_close(side.other(), &close::close_payload(code, &reason));
    }

    /// `from` broke the protocol or a limit: close it with `code`, and the other hop too.
    fn violation(&mut self, from: Side, code: u16, reason: &str) {
        let outcome = if code == code::TOO_BIG || code == code::POLICY {
            Outcome::Limit
        } else {
            Outcome::ProtocolError
        };
        tracing::info!(?from, code, reason, "closing on violation");
        self.record(ClosedBy::Proxy, Some(code), reason, outcome);
        let payload = close::close_payload(code, reason);
        let (other_code, other_reason) = from.gone_code();
        let other_payload = close::close_payload(other_code, other_reason);
        if from == Side::Client {
            // The backend may still be sending what it had before our Close (echoes of the
            // client's valid messages): the client gets its Close after those, when the
            // backend's Close reply is relayed (or at the close timeout at the latest).
            self.hop(Side::Client).pending_close = Some(payload);
            self.send_close(Side::Backend, &other_payload);
        } else {
            self.send_close(from, &payload);
            self.send_close(from.other(), &other_payload);
        }
        self.hop(from).reading = Reading::Draining;
    }

    /// wsgate itself ends the connection (shutdown, reload, idle): Close to both peers.
    fn initiate(&mut self, code: u16, reason: &str, outcome: Outcome) {
        self.record(ClosedBy::Proxy, Some(code), reason, outcome);
        let payload = close::close_payload(code, reason);
        self.send_close(Side::Client, &payload);
        self.send_close(Side::Backend, &payload);
    }

    /// A write to `side` failed or timed out.
    fn write_failed(&mut self, side: Side, error: &std::io::Error) {
        tracing::debug!(?side, %error, "write failed");
        let was_closing = self.hop(side).close_sent;
        self.hop(side).fail();
        if !was_closing {
            self.peer_gone(side);
        }
    }

    /// Writes what is queued for `side`, as far as it goes without waiting.
    fn write_out(&mut self, side: Side, cx: &mut Context<'_>) {
        if let Poll::Ready(Err(e)) = self.hop(side).poll_write_out(cx) {
            self.write_failed(side, &e);
        }
    }

    /// Reads, checks and forwards frames from `from` while the other hop keeps up; true
    /// when anything happened.
    fn pump(&mut self, from: Side, cx: &mut Context<'_>) -> bool {
        let to = from.other();
        let mut moved = false;
        loop {
            let reading = self.hop(from).reading;
            match reading {
                Reading::Done => return moved,
                Reading::Open if !self.hop(to).written() => return moved,
                Reading::RawDrain { .. } => {
                    let Poll::Ready(read) = self.hop(from).poll_discard(cx) else {
                        return moved;
                    };
                    self.hop(from).reading = match read {
                        Ok(n) if n > 0 => Reading::RawDrain {
                            quiet_until: Instant::now() + DRAIN_QUIET,
                        },
                        _ => Reading::Done,
                    };
                }
                Reading::Draining => {
                    let Poll::Ready(read) = self.hop(from).poll_frame(cx) else {
                        return moved;
                    };
                    self.hop(from).reading = match read {
                        Ok(Some(f)) if f.opcode != OpCode::Close => Reading::Draining,
                        Ok(_) => Reading::Done,
                        Err(_) => Reading::RawDrain {
                            quiet_until: Instant::now() + DRAIN_QUIET,
                        },
                    };
                }
                Reading::Open => {
                    let Poll::Ready(read) = self.hop(from).poll_frame(cx) else {
                        return moved;
                    };
                    self.on_read(from, read);
                    self.write_out(to, cx);
                }
            }
            moved = true;
        }
    }

    /// Handles what one read from `from` produced.
    fn on_read(&mut self, from: Side, read: Result<Option<Frame>, FrameError>) {
        let to = from.other();
        let dir = from as usize;
        let mut frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(FrameError::Io(_)) | Err(FrameError::Truncated) => {
                self.peer_gone(from);
                self.hop(from).reading = Reading::Done;
                return;
            }
            Err(e) => {
                let code = if matches!(e, FrameError::TooLarge(_)) {
                    code::TOO_BIG
                } else {
                    code::PROTOCOL_ERROR
                };
                return self.violation(from, code, &e.to_string());
            }
        };
        self.hop(from).keepalive.on_frame();
        let over_rate = from == Side::Client
            && frame.fin
            && !frame.opcode.is_control()
            && self.rate.as_mut().is_some_and(|r| !r.allow());
        if over_rate {
            return self.violation(from, code::POLICY, "message rate exceeded");
        }
        if let Err((code, reason)) = self.hop(from).message.check(&mut frame) {
            self.violation(from, code, reason);
            // An invalid Close still ends the peer's side of the handshake (RFC 6455 §7.1.1):
            // nothing more will come, so close now instead of waiting for another Close.
            if frame.opcode == OpCode::Close {
                self.hop(from).reading = Reading::Done;
            }
            return;
        }
        match frame.opcode {
            OpCode::Close => {
                let parsed = close::parse_close(frame.payload()).ok().flatten();
                let (code, reason) = parsed.map_or((None, ""), |(c, r)| (Some(c), r));
                self.record(from.closed_by(), code, reason, Outcome::Normal);
                self.forward(to, frame);
                self.live.frame(dir, OpCode::Close, None, false);
                // Our Close to `from` (if any) and theirs have now crossed: nothing more to read.
                self.hop(from).reading = Reading::Done;
                return;
            }
            OpCode::Pong => {
                if let Some(rtt) = self.hops[dir].keepalive.on_pong(frame.payload()) {
                    if let Some(rtt) = rtt {
                        let route = self.session.route.name();
                        self.gw.metrics.ping_rtt(route, from.label(), rtt);
                    }
                    return;
                }
            }
            _ => {}
        }
        let is_data = !frame.opcode.is_control();
        let len = frame.len() as u64;
        // Counted before the write, so a peer that has received a message always finds it
        // in the counters (the write completes on another thread than a scrape).
        self.live
            .frame(dir, frame.opcode, is_data.then_some(len), frame.fin);
        if is_data {
            self.counts[dir].1 += len;
            if frame.fin {
                self.counts[dir].0 += 1;
            }
            // Only the idle timeout reads it; without one, spare the per-frame clock read.
            if !self.session.route.tuning.idle_timeout.is_zero() {
                self.last_data = Instant::now();
            }
        }
        self.forward(to, frame);
    }

    /// Reacts to shutdown and retirement.
    fn poll_control(&mut self, cx: &mut Context<'_>) {
        let Some(wait) = self.control.as_mut() else {
            return;
        };
        let Poll::Ready(event) = wait.as_mut().poll(cx) else {
            return;
        };
        match event {
            Control::Shutdown => {
                self.shutting_down = true;
                self.initiate(code::GOING_AWAY, "proxy shutting down", Outcome::Shutdown);
            }
            Control::RouteRetired | Control::BackendRetired => {
                self.retiring = true;
                let (watch, why) = match event {
                    Control::RouteRetired => (Some(&self.session.route_watch), "route reloaded"),
                    _ => (
                        self.session.backend_watch.as_ref(),
                        "backend removed or unhealthy",
                    ),
                };
                let delay = watch.map_or(Duration::ZERO, |w| w.delay());
                self.retire_at = Some((Instant::now() + delay, why));
            }
        }
        let retire = |w: &crate::retire::RetireWatch| w.token().clone();
        self.control = control_wait(
            (!self.shutting_down).then(|| self.gw.shutdown.clone()),
            (!self.retiring).then(|| retire(&self.session.route_watch)),
            (!self.retiring)
                .then(|| self.session.backend_watch.as_ref().map(retire))
                .flatten(),
        );
        if let Some(wait) = self.control.as_mut() {
            // Registers the new wait (it cannot be ready: each token fires once).
            let _ = wait.as_mut().poll(cx);
        }
    }

    /// Acts on every deadline that has passed and sets the timer for the next; says whether
    /// the close handshake ran out of time, and whether any deadline acted.
    fn poll_deadlines(&mut self, cx: &mut Context<'_>) -> (bool, bool) {
        let mut acted = false;
        loop {
            let tuning = &self.session.route.tuning;
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
            consider(self.retire_at.map(|(at, _)| at));
            for hop in &self.hops {
                consider(hop.write_deadline());
                match hop.reading {
                    Reading::Open => consider(hop.keepalive.deadline()),
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
            if let Some((at, why)) = self.retire_at
                && at <= now
            {
                self.retire_at = None;
                self.initiate(code::SERVICE_RESTART, why, Outcome::Reload);
            }
            for side in [Side::Client, Side::Backend] {
                let hop = self.hop(side);
                if hop.write_deadline().is_some_and(|at| at <= now) {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "peer did not read within write_timeout",
                    );
                    self.write_failed(side, &e);
                }
                let hop = self.hop(side);
                match hop.reading {
                    Reading::RawDrain { quiet_until } if quiet_until <= now => {
                        hop.reading = Reading::Done;
                    }
                    Reading::Open if hop.keepalive.deadline().is_some_and(|at| at <= now) => {
                        match hop.keepalive.due() {
                            Due::Ping(payload) => {
                                if !hop.close_sent {
                                    hop.queue_own(OpCode::Ping, &payload);
                                }
                            }
                            Due::Dead => {
                                tracing::info!(peer = ?side, "no pong within ping_timeout");
                                hop.reading = Reading::Done;
                                self.record(
                                    ClosedBy::Proxy,
                                    Some(code::ABNORMAL),
                                    "ping timeout",
                                    Outcome::PingTimeout,
                                );
                                self.dead(side, "ping timeout");
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Moves everything that can move; ready when the connection is over.
    ///
    /// Returns pending only when nothing moved and no deadline acted in a whole round, so
    /// every read, write and timer that waits has registered this task for a wakeup.
    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_control(cx);
        loop {
            self.write_out(Side::Client, cx);
            self.write_out(Side::Backend, cx);
            let moved = self.pump(Side::Client, cx) | self.pump(Side::Backend, cx);
            let (expired, acted) = self.poll_deadlines(cx);
            if expired {
                return Poll::Ready(());
            }
            if self
                .hops
                .iter()
                .all(|h| h.reading == Reading::Done && h.written())
            {
                return Poll::Ready(());
            }
            if !moved && !acted {
                return Poll::Pending;
            }
        }
    }

    /// Sends what is still owed, half-closes both hops (each bounded), then counts and logs.
    async fn finish(mut self: Box<Self>) {
        for side in [Side::Client, Side::Backend] {
            // A Close still owed (the other hop never finished its handshake) goes out now.
            let hop = self.hop(side);
            if let Some(owed) = hop.pending_close.take()
                && !hop.close_sent
            {
                hop.close_sent = true;
                hop.queue_own(OpCode::Close, &owed);
            }
            // Bounded: a peer that stopped reading must not hold the task forever.
            let end = std::future::poll_fn(|cx| {
                std::task::ready!(hop.poll_write_out(cx))?;
                hop.poll_shutdown(cx)
            });
            let _ = tokio::time::timeout(SHUTDOWN_WRITE_TIMEOUT, end).await;
        }
        let first = self.first.take().unwrap_or(FirstClose {
            closed_by: ClosedBy::Proxy,
            code: None,
            reason: String::new(),
            outcome: Outcome::Normal,
        });
        let session = &self.session;
        let [(msgs_in, bytes_in), (msgs_out, bytes_out)] = self.counts;
        let report = CloseReport {
            id: session.id,
            route: session.route.name().to_string(),
            backend: session.backend.clone(),
            client_addr: session.client_addr,
            tls: session.tls,
            subprotocol: session.subprotocol.clone(),
            duration: self.started.elapsed(),
            msgs_in,
            msgs_out,
            bytes_in,
            bytes_out,
            close_code: first.code,
            close_reason: first.reason,
            closed_by: first.closed_by,
            outcome: first.outcome,
        };
        self.live.finish();
        self.gw.metrics.connection_closed(&report);
        report.log();
        // No subscriber is the normal case outside tests.
        let _ = self.gw.reports.send(report);
    }
}

/// What the relay needs besides the client's stream, kept while the client's upgrade completes.
pub struct Pending {
    /// The connection's facts.
    pub session: Session,
    /// The backend's stream and the bytes it sent after its 101.
    pub backend: (Stream, BytesMut),
    /// The gateway the connection belongs to.
    pub gw: Arc<Gateway>,
}

/// Waits for hyper to hand over the client's stream after the 101, then relays until both
/// close handshakes are done (or timed out) and logs the report.
pub async fn after_upgrade(pending: Box<Pending>, on_client_upgrade: hyper::upgrade::OnUpgrade) {
    let parts = match on_client_upgrade
        .await
        .map(|u| u.downcast::<TokioIo<Stream>>())
    {
        Ok(Ok(parts)) => parts,
        Ok(Err(_)) => {
            return tracing::error!("client upgrade produced an unexpected stream type");
        }
        Err(e) => return tracing::info!(error = %e, "client upgrade failed after 101"),
    };
    // Copy the few early bytes and drop hyper's read buffer: kept, its 8 KiB allocation
    // would live as long as the connection.
    let leftover = BytesMut::from(&parts.read_buf[..]);
    drop(parts.read_buf);
    // On the heap, and polled through the box: an async fn taking the relay by value would
    // keep a second copy of it in its own state for the connection's whole life.
    let mut relay = Box::new(Relay::new(*pending, (parts.io.into_inner(), leftover)));
    std::future::poll_fn(|cx| relay.poll_relay(cx)).await;
    // Boxed: the ending's state is only needed once, not for the connection's whole life.
    Box::pin(relay.finish()).await;
}

impl Relay {
    fn new(pending: Pending, client: (Stream, BytesMut)) -> Relay {
        let Pending {
            session,
            backend,
            gw,
        } = pending;
        let started = Instant::now();
        let settings = gw.settings.load();
        let live = gw.metrics.connection_opened(
            session.route.name(),
            settings.per_frame_metrics,
            &session.route.metrics,
        );
        if settings.log_open {
            tracing::info!(conn = session.id, route = session.route.name(), backend = %session.backend,
                client_addr = %session.client_addr, "connection opened");
        }
        drop(settings);
        let tuning = &session.route.tuning;
        let hops = [
            Hop::new(client.0, client.1, true, tuning),
            Hop::new(backend.0, backend.1, false, tuning),
        ];
        let rate = (tuning.max_message_rate > 0).then(|| RateLimit::new(tuning.max_message_rate));
        let control = control_wait(
            Some(gw.shutdown.clone()),
            Some(session.route_watch.token().clone()),
            session.backend_watch.as_ref().map(|w| w.token().clone()),
        );
        Relay {
            session,
            gw,
            hops,
            first: None,
            counts: [(0, 0); 2],
            live,
            rate,
            close_by: None,
            started,
            last_data: started,
            idle_closed: false,
            retire_at: None,
            retiring: false,
            shutting_down: false,
            control,
            timer: None,
        }
    }
}

/// A token bucket: `rate` messages per second, bursts up to one second's worth.
struct RateLimit {
    rate: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl RateLimit {
    fn new(rate: u32) -> RateLimit {
        RateLimit {
            rate: rate as f64,
            tokens: rate as f64,
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes one message's token; false when the client is over its rate.
    fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}
