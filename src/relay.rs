//! The tunnel after 101: two per-direction frame pumps with per-hop checks, and the close handshake.
//!
//! Each pump reads a frame from one peer, checks it, and writes it to the other; nothing
//! more is read from a peer until its previous frame was written, so backpressure is the
//! loop itself. The two write halves are shared behind async locks so a pump can send a
//! Close to either peer; a Close is sent at most once per peer and nothing follows it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, ReadHalf, WriteHalf};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::close::{self, CloseReport, ClosedBy, Outcome, code};
use crate::frame::{Frame, FrameError, FrameReader, FrameWriter, OpCode};
use crate::keepalive::{Due, Keepalive};
use crate::message::Message;
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

/// The write half of one peer, and whether it has been sent its Close (or is unreachable).
///
/// The flag is outside the lock so a dead peer can be marked without waiting for a
/// write that is stuck on it; it is re-checked under the lock before every write.
struct Peer {
    writer: Mutex<FrameWriter<WriteHalf<Stream>>>,
    close_sent: AtomicBool,
    /// A Close owed to this peer that waits until the other hop has finished its close
    /// handshake, so data the other hop sent before it is still delivered (client violations).
    pending_close: StdMutex<Option<Vec<u8>>>,
}

impl Peer {
    fn new(writer: FrameWriter<WriteHalf<Stream>>) -> Peer {
        Peer {
            writer: Mutex::new(writer),
            close_sent: AtomicBool::new(false),
            pending_close: StdMutex::new(None),
        }
    }

    fn take_pending(&self) -> Option<Vec<u8>> {
        self.pending_close
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// How the connection started to end (the first event wins).
struct FirstClose {
    closed_by: ClosedBy,
    code: Option<u16>,
    reason: String,
    outcome: Outcome,
}

/// Messages and payload bytes in one direction.
#[derive(Default)]
struct Counters {
    messages: AtomicU64,
    bytes: AtomicU64,
}

/// State both pumps share.
struct Shared {
    client: Peer,
    backend: Peer,
    first: StdMutex<Option<FirstClose>>,
    /// Cancelled when the first Close is sent: the close timeout starts.
    closing: CancellationToken,
    counts: [Counters; 2],
    /// Milliseconds from the relay's start to the last data frame either way (idle timeout).
    last_data: AtomicU64,
    started: tokio::time::Instant,
}

impl Shared {
    fn peer(&self, side: Side) -> &Peer {
        match side {
            Side::Client => &self.client,
            Side::Backend => &self.backend,
        }
    }

    /// Notes that a data frame moved, for the idle timeout.
    fn touch(&self) {
        self.last_data
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn record(&self, closed_by: ClosedBy, code: Option<u16>, reason: &str, outcome: Outcome) {
        // A poisoned lock only means another pump panicked; the record is still usable.
        let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(FirstClose {
                closed_by,
                code,
                reason: reason.to_string(),
                outcome,
            });
        }
    }

    /// Sends a Close to `side` unless it already got one; returns whether it was sent.
    async fn send_close(&self, side: Side, payload: &[u8]) -> bool {
        let peer = self.peer(side);
        let mut writer = peer.writer.lock().await;
        if peer.close_sent.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.closing.cancel();
        let mut payload = peer.take_pending().unwrap_or_else(|| payload.to_vec());
        if let Err(e) = writer.write_frame(true, OpCode::Close, &mut payload).await {
            tracing::debug!(?side, error = %e, "could not send close");
        }
        true
    }

    /// Forwards a frame to `side`; frames after its Close are dropped. Err means `side` is gone.
    async fn forward(&self, side: Side, frame: &mut Frame) -> std::io::Result<()> {
        let peer = self.peer(side);
        let mut writer = peer.writer.lock().await;
        if peer.close_sent.load(Ordering::Acquire) {
            return Ok(());
        }
        if frame.opcode == OpCode::Close {
            peer.close_sent.store(true, Ordering::Release);
            self.closing.cancel();
            if let Some(owed) = peer.take_pending() {
                frame.payload = owed.as_slice().into();
            }
        }
        let result = writer
            .write_frame(frame.fin, frame.opcode, &mut frame.payload)
            .await;
        if result.is_err() {
            peer.close_sent.store(true, Ordering::Release);
        }
        result
    }

    /// Sends one of wsgate's own pings to `side` (not after its Close).
    async fn ping(&self, side: Side, payload: &mut [u8]) {
        let peer = self.peer(side);
        let mut writer = peer.writer.lock().await;
        if !peer.close_sent.load(Ordering::Acquire)
            && writer
                .write_frame(true, OpCode::Ping, payload)
                .await
                .is_err()
        {
            peer.close_sent.store(true, Ordering::Release);
        }
    }

    /// `from` vanished or its socket failed: tell the other side.
    async fn peer_gone(&self, from: Side) {
        let outcome = if from == Side::Client {
            Outcome::ClientGone
        } else {
            Outcome::BackendError
        };
        self.record(from.closed_by(), Some(code::ABNORMAL), "", outcome);
        self.dead(from, "").await;
    }

    /// `side` cannot be reached any more: never write to it again, and close the other hop.
    async fn dead(&self, side: Side, why: &str) {
        self.peer(side).close_sent.store(true, Ordering::Release);
        let (code, reason) = side.gone_code();
        let reason = if why.is_empty() {
            reason.to_string()
        } else {
            format!("{reason}: {why}")
        };
        self.send_close(side.other(), &close::close_payload(code, &reason))
            .await;
    }

    /// `from` broke the protocol or a limit: close it with `code`, and the other hop too.
    async fn violation(&self, from: Side, code: u16, reason: &str) {
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
            *self
                .client
                .pending_close
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(payload);
            self.send_close(Side::Backend, &other_payload).await;
        } else {
            self.send_close(from, &payload).await;
            self.send_close(from.other(), &other_payload).await;
        }
    }

    /// wsgate itself ends the connection (shutdown, reload): Close to both peers.
    async fn initiate(&self, code: u16, reason: &str, outcome: Outcome) {
        self.record(ClosedBy::Proxy, Some(code), reason, outcome);
        let payload = close::close_payload(code, reason);
        self.send_close(Side::Client, &payload).await;
        self.send_close(Side::Backend, &payload).await;
    }
}

/// Runs the relay until both close handshakes are done (or timed out), then logs the report.
pub async fn run(
    session: Session,
    client: (Stream, BytesMut),
    backend: (Stream, BytesMut),
    gw: &Gateway,
) {
    let started = tokio::time::Instant::now();
    let tuning = session.route.tuning.clone();
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
    let (client_r, client_w) = tokio::io::split(client.0);
    let (backend_r, backend_w) = tokio::io::split(backend.0);
    let shared = Arc::new(Shared {
        client: Peer::new(FrameWriter::new(client_w, false, 0, tuning.write_timeout)),
        backend: Peer::new(FrameWriter::new(
            backend_w,
            true,
            crate::random_u64(),
            tuning.write_timeout,
        )),
        last_data: AtomicU64::new(0),
        started,
        first: StdMutex::new(None),
        closing: CancellationToken::new(),
        counts: Default::default(),
    });
    let client_reader = FrameReader::new(client_r, client.1, true, tuning.max_frame_bytes);
    let backend_reader = FrameReader::new(backend_r, backend.1, false, tuning.max_frame_bytes);
    // Each pump is a task of its own, so a frame wakes only the pump that reads it, not
    // this task's timers and tokens (design §8: re-polling both directions showed up first
    // in the profile). Both stay on this worker's runtime.
    let live = Arc::new(live);
    let spawn_pump = |side, reader| {
        let (shared, route, metrics, live) = (
            shared.clone(),
            session.route.clone(),
            gw.metrics.clone(),
            live.clone(),
        );
        tokio::spawn(pump(side, reader, shared, route, metrics, live))
    };
    let client_pump = spawn_pump(Side::Client, client_reader);
    let backend_pump = spawn_pump(Side::Backend, backend_reader);
    let aborts = [client_pump.abort_handle(), backend_pump.abort_handle()];
    let pumps = async {
        let _ = tokio::join!(client_pump, backend_pump);
    };
    tokio::pin!(pumps);
    let close_deadline = async {
        shared.closing.cancelled().await;
        tokio::time::sleep(tuning.close_timeout).await
    };
    tokio::pin!(close_deadline);
    let retire = async {
        let backend_retired = async {
            match &session.backend_watch {
                Some(w) => w.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = session.route_watch.wait() => "route reloaded",
            _ = backend_retired => "backend removed or unhealthy",
        }
    };
    tokio::pin!(retire);
    let mut reloading = false;
    let mut shutting_down = false;
    let mut idle_closed = tuning.idle_timeout.is_zero();
    loop {
        let last_data = Duration::from_millis(shared.last_data.load(Ordering::Relaxed));
        let idle_at = started + last_data + tuning.idle_timeout;
        tokio::select! {
            _ = &mut pumps => break,
            _ = &mut close_deadline => {
                tracing::debug!("close handshake timed out");
                break;
            }
            reason = &mut retire, if !reloading => {
                reloading = true;
                Box::pin(shared.initiate(code::SERVICE_RESTART, reason, Outcome::Reload)).await;
            }
            _ = gw.shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                Box::pin(shared.initiate(code::GOING_AWAY, "proxy shutting down", Outcome::Shutdown)).await;
            }
            _ = tokio::time::sleep_until(idle_at), if !idle_closed => {
                // Data may have moved while we slept; only a full quiet period closes.
                if shared.last_data.load(Ordering::Relaxed) == last_data.as_millis() as u64 {
                    idle_closed = true;
                    Box::pin(shared.initiate(code::GOING_AWAY, "idle timeout", Outcome::IdleTimeout)).await;
                }
            }
        }
    }
    for pump in aborts {
        pump.abort();
    }
    // Boxed: the ending's state is only needed once, not for the connection's whole life.
    Box::pin(finish(&session, &shared, &live, started, gw)).await;
}

/// Sends what is still owed, half-closes both hops, then counts and logs the connection.
async fn finish(
    session: &Session,
    shared: &Shared,
    live: &ConnMetrics,
    started: tokio::time::Instant,
    gw: &Gateway,
) {
    for side in [Side::Client, Side::Backend] {
        // A Close still owed (the other hop never finished its handshake) goes out now.
        if let Some(owed) = shared.peer(side).take_pending() {
            let send = shared.send_close(side, &owed);
            let _ = tokio::time::timeout(SHUTDOWN_WRITE_TIMEOUT, send).await;
        }
        let mut writer = shared.peer(side).writer.lock().await;
        // Bounded: a peer that stopped reading must not hold the task forever.
        let _ = tokio::time::timeout(SHUTDOWN_WRITE_TIMEOUT, writer.shutdown()).await;
    }
    let first = shared
        .first
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let first = first.unwrap_or(FirstClose {
        closed_by: ClosedBy::Proxy,
        code: None,
        reason: String::new(),
        outcome: Outcome::Normal,
    });
    let count = |i: usize| {
        (
            shared.counts[i].messages.load(Ordering::Relaxed),
            shared.counts[i].bytes.load(Ordering::Relaxed),
        )
    };
    let ((msgs_in, bytes_in), (msgs_out, bytes_out)) = (count(0), count(1));
    let report = CloseReport {
        id: session.id,
        route: session.route.name().to_string(),
        backend: session.backend.clone(),
        client_addr: session.client_addr,
        tls: session.tls,
        subprotocol: session.subprotocol.clone(),
        duration: started.elapsed(),
        msgs_in,
        msgs_out,
        bytes_in,
        bytes_out,
        close_code: first.code,
        close_reason: first.reason,
        closed_by: first.closed_by,
        outcome: first.outcome,
    };
    live.finish();
    gw.metrics.connection_closed(&report);
    report.log();
    // No subscriber is the normal case outside tests.
    let _ = gw.reports.send(report);
}

/// Moves frames from `from` to the other side until `from` is finished; also keeps
/// `from` alive with wsgate's own pings.
async fn pump(
    from: Side,
    mut reader: FrameReader<ReadHalf<Stream>>,
    shared: Arc<Shared>,
    route: Arc<Route>,
    metrics: Arc<crate::metrics::Metrics>,
    live: Arc<ConnMetrics>,
) {
    let shared = &*shared;
    let tuning = &route.tuning;
    let to = from.other();
    let dir = from as usize;
    let counts = &shared.counts[dir];
    let mut message = Message::new(tuning);
    let mut keepalive = Keepalive::new(tuning.ping_interval, tuning.ping_timeout);
    // Only clients are rate limited: the backend is the operator's own.
    let mut rate = (from == Side::Client && tuning.max_message_rate > 0)
        .then(|| RateLimit::new(tuning.max_message_rate));
    loop {
        // read_frame is cancel-safe, so losing the race to the keepalive timer loses nothing.
        let read = tokio::select! {
            read = reader.read_frame() => read,
            _ = keepalive.wait() => {
                match keepalive.due() {
                    Due::Ping(mut payload) => Box::pin(shared.ping(from, &mut payload)).await,
                    Due::Dead => {
                        tracing::info!(peer = ?from, "no pong within ping_timeout");
                        shared.record(ClosedBy::Proxy, Some(code::ABNORMAL), "ping timeout", Outcome::PingTimeout);
                        Box::pin(shared.dead(from, "ping timeout")).await;
                        return;
                    }
                }
                continue;
            }
        };
        let mut frame = match read {
            Ok(Some(frame)) => frame,
            Ok(None) | Err(FrameError::Io(_)) | Err(FrameError::Truncated) => {
                Box::pin(shared.peer_gone(from)).await;
                return;
            }
            Err(e) => {
                let code = if matches!(e, FrameError::TooLarge(_)) {
                    code::TOO_BIG
                } else {
                    code::PROTOCOL_ERROR
                };
                Box::pin(shared.violation(from, code, &e.to_string())).await;
                return Box::pin(drain(reader)).await;
            }
        };
        keepalive.on_frame();
        let over_rate =
            frame.fin && !frame.opcode.is_control() && rate.as_mut().is_some_and(|r| !r.allow());
        if over_rate {
            Box::pin(shared.violation(from, code::POLICY, "message rate exceeded")).await;
            return Box::pin(drain(reader)).await;
        }
        if let Err((code, reason)) = message.check(&frame) {
            Box::pin(shared.violation(from, code, reason)).await;
            // An invalid Close still ends the peer's side of the handshake (RFC 6455 §7.1.1):
            // nothing more will come, so close now instead of waiting for another Close.
            if frame.opcode != OpCode::Close {
                Box::pin(drain(reader)).await;
            }
            return;
        }
        match frame.opcode {
            OpCode::Close => {
                let parsed = close::parse_close(&frame.payload).ok().flatten();
                let (code, reason) = parsed.map_or((None, ""), |(c, r)| (Some(c), r));
                shared.record(from.closed_by(), code, reason, Outcome::Normal);
                if shared.forward(to, &mut frame).await.is_ok() {
                    live.frame(dir, OpCode::Close, None, false);
                }
                // Our Close to `from` (if any) and theirs have now crossed: nothing more to read.
                return;
            }
            OpCode::Pong => {
                if let Some(rtt) = keepalive.on_pong(&frame.payload) {
                    if let Some(rtt) = rtt {
                        metrics.ping_rtt(route.name(), from.label(), rtt);
                    }
                    continue;
                }
            }
            _ => {}
        }
        let is_data = !frame.opcode.is_control();
        let len = frame.payload.len() as u64;
        // Counted before the write, so a peer that has received a message always finds it
        // in the counters (the write completes on another thread than a scrape).
        live.frame(dir, frame.opcode, is_data.then_some(len), frame.fin);
        if is_data {
            counts.bytes.fetch_add(len, Ordering::Relaxed);
            if frame.fin {
                counts.messages.fetch_add(1, Ordering::Relaxed);
            }
            // Only the idle timeout reads it; without one, spare the per-frame clock read.
            if !tuning.idle_timeout.is_zero() {
                shared.touch();
            }
        }
        if shared.forward(to, &mut frame).await.is_err() {
            Box::pin(shared.peer_gone(to)).await;
        }
    }
}

/// How long `drain` waits for more bytes once frames can no longer be parsed.
const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(200);

/// After a violation: read and discard until the peer's Close arrives or it goes quiet, so
/// the socket is not closed with unread data (which would turn our Close into a reset).
async fn drain(mut reader: FrameReader<ReadHalf<Stream>>) {
    loop {
        match reader.read_frame().await {
            Ok(Some(f)) if f.opcode == OpCode::Close => return,
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(_) => break,
        }
    }
    // The stream cannot be parsed any more: discard raw bytes until the peer pauses.
    let mut io = reader.into_inner();
    // On the heap: an array here would sit in every pump's state for the connection's life.
    let mut scratch = vec![0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(DRAIN_QUIET, io.read(&mut scratch)).await {
        if n == 0 {
            break;
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
