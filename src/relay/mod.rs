//! The tunnel after 101: both hops driven by one task, every frame checked on the hop it
//! came from and forwarded to the other, and the close handshake.
//!
//! One task owns both streams (design §8: per-connection state is what idle connections
//! cost, and cross-task wakeups and locks are what small frames cost). A frame read from
//! one hop (or a piece of one too large to buffer whole) is queued for the other, and
//! nothing more is read from that hop until the queue is written, so backpressure is the
//! loop itself; each hop's queue drains on its own, so a peer that stops reading never
//! stops the other direction. A Close is sent at most once per peer and nothing follows
//! it. One timer serves every deadline (keepalive, idle, write, close handshake, drain,
//! a started frame) and is only moved when a deadline comes earlier.

mod abandoned;
mod closing;
mod deadlines;
pub mod hop;
pub mod keepalive;
mod mailbox;
pub mod message;
mod rate;
mod signal;
pub mod violation;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};

use crate::proto::close;
use crate::proto::frame::{Frame, FrameError, OpCode};
use crate::relay::hop::{DRAIN_QUIET, Hop, Reading};
use crate::relay::keepalive::Pings;
use crate::relay::message::Limits;
use crate::shared::client::ClientProtocol;
use crate::shared::metrics::ConnMetrics;
use crate::shared::occupancy::Seat;
use crate::shared::registry::{Conn, Ending};
use crate::shared::report::{ClosedBy, Outcome};
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;
use crate::shared::stream::{Stream, is_stream_reset};
use closing::{FirstClose, Side};
use rate::RateLimit;
use signal::Signal;
use violation::Violation;

/// How long the final FIN / TLS close_notify may take to write before the socket is just dropped.
const SHUTDOWN_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The facts about a connection known when the relay starts.
pub struct Session {
    /// Connection id; a WebSocket on an HTTP/2 stream has one of its own (its
    /// connection's streams would otherwise share one entry in the registry).
    pub id: u64,
    /// The route it matched.
    pub route: Arc<Route>,
    /// Backend URL (or `echo`).
    pub backend: String,
    /// Client socket address.
    pub client_addr: SocketAddr,
    /// Whether the client hop is TLS.
    pub tls: bool,
    /// The client hop's HTTP version.
    pub protocol: ClientProtocol,
    /// Subprotocol chosen by the backend.
    pub subprotocol: Option<String>,
    /// Places in the global and the route's connection counts, held (never read) until
    /// the relay ends: dropping them releases the places.
    pub _slots: (Seat, Seat),
    /// The connection's place on its backend (least_connections counts it), held likewise.
    pub _backend_slot: Option<Seat>,
    /// For a WebSocket on an HTTP/2 stream: keeps its connection up at shutdown until
    /// the relay ends (held, never read).
    pub _stream_hold: Option<crate::shared::client::StreamHold>,
    /// Retirement of its route: closes it with 1012.
    pub route_watch: crate::shared::retire::RetireWatch,
    /// Retirement of its backend (removed, or unhealthy with `close_on_unhealthy`).
    pub backend_watch: Option<crate::shared::retire::RetireWatch>,
    /// Who the door let in and until when (boxed: most routes check nobody).
    pub admitted: Option<Box<crate::shared::admission::Admitted>>,
}

/// What the relay keeps of a [`Session`] besides its registry entry.
struct Kept {
    subprotocol: Option<Box<str>>,
    /// Declared before the seats, so dropped first: once the connection counts show it
    /// gone, its per-client and per-identity places are free too.
    admitted: Option<Box<crate::shared::admission::Admitted>>,
    _slots: (Seat, Seat),
    _backend_slot: Option<Seat>,
    _stream_hold: Option<crate::shared::client::StreamHold>,
    route_watch: crate::shared::retire::RetireWatch,
    backend_watch: Option<crate::shared::retire::RetireWatch>,
}

impl Session {
    /// The connection's registry entry and the rest. The facts the API lists (id, route,
    /// backend, client, identity) are moved into the entry, not copied, and the relay
    /// and its report read them from there: an idle connection holds them once.
    fn split(self, started: Instant) -> (Conn, Kept) {
        let mut admitted = self.admitted;
        let identity = admitted.as_mut().and_then(|a| a.identity.take());
        let conn = Conn::new(
            self.id,
            self.route,
            self.backend.into_boxed_str(),
            self.client_addr,
            self.tls,
            self.protocol,
            identity.map(String::into_boxed_str),
            started,
        );
        let kept = Kept {
            subprotocol: self.subprotocol.map(String::into_boxed_str),
            _slots: self._slots,
            _backend_slot: self._backend_slot,
            _stream_hold: self._stream_hold,
            route_watch: self.route_watch,
            backend_watch: self.backend_watch,
            admitted,
        };
        (conn, kept)
    }
}

/// What the relay needs besides the client's stream, kept while the client's upgrade completes.
pub struct Pending {
    /// The connection's facts.
    pub session: Session,
    /// The backend's stream and the bytes it sent after its 101.
    pub backend: (Stream, BytesMut),
    /// The proxy state the connection belongs to.
    pub state: Arc<ProxyState>,
}

/// How the client's stream is taken out of hyper's `Upgraded` after the 101 (with the bytes
/// hyper read past it): `Err` gives back any other kind of stream.
pub type Recover =
    fn(hyper::upgrade::Upgraded) -> Result<(Stream, BytesMut), hyper::upgrade::Upgraded>;

/// Waits for hyper to hand over the client's stream after the 101 (taken out by
/// `recover`), then relays until both close handshakes are done (or timed out) and logs
/// the report. A client that is gone by then still ends the backend's side properly, and
/// is reported.
pub async fn after_upgrade(
    pending: Box<Pending>,
    on_client_upgrade: hyper::upgrade::OnUpgrade,
    recover: Recover,
) {
    // One `run` after the match, not one per arm: an await inside an arm would keep
    // hyper's result (72 bytes) in the task's state for the connection's whole life.
    let client = match on_client_upgrade.await.map(recover) {
        Ok(Ok(client)) => Some(client),
        // An HTTP/2 stream is hyper's own type, relayed as it is (nothing was read ahead).
        Ok(Err(stream)) if pending.session.protocol == ClientProtocol::H2 => {
            Some((Stream::H2(Box::new(TokioIo::new(stream))), BytesMut::new()))
        }
        Ok(Err(_)) => {
            tracing::error!("client upgrade produced an unexpected stream type");
            None
        }
        Err(e) => {
            tracing::info!(error = %e, "client upgrade failed after 101");
            None
        }
    };
    run(pending, client).await
}

/// Relays `client` (its stream and the bytes read past its 101) until both close
/// handshakes are done (or timed out) and logs the report; with no client (its 101 never
/// reached it) the backend's side is ended properly and the connection reported.
///
/// The relay is made here, before the future: an async fn would keep its arguments (the
/// streams, the leftover bytes) in its state for the connection's whole life, and an
/// HTTP/2 stream's task awaits this inside its own (128 bytes more per idle stream,
/// measured by `tests/memory.rs`).
pub fn run(
    pending: Box<Pending>,
    client: Option<(Stream, BytesMut)>,
) -> impl Future<Output = ()> + Send {
    // `Relay::new` takes `pending`'s box: moving out of it here would keep the emptied
    // allocation (256 bytes) for that same life.
    let start = match client {
        Some(client) => Ok(Box::new(Relay::new(pending, client))),
        None => Err(pending),
    };
    async move {
        match start {
            // On the heap, and polled through the box: an async fn taking the relay by
            // value would keep a second copy of it in its own state.
            Ok(mut relay) => {
                // Made once: wakers made on every wake-up took and dropped two reference
                // counts each time.
                let wakers = relay.signals.each_ref().map(Signal::waker);
                std::future::poll_fn(|cx| relay.poll_relay(cx, &wakers)).await;
                // Boxed: the ending's state is only needed once.
                Box::pin(relay.finish()).await;
            }
            // Boxed, like `finish`: the task's own state stays as small as the relay needs.
            Err(pending) => Box::pin(abandoned::client_never_upgraded(pending)).await,
        }
    }
}

/// The whole state of one relayed connection.
struct Relay {
    session: Kept,
    state: Arc<ProxyState>,
    /// Indexed by `Side as usize`.
    hops: [Hop; 2],
    /// How the connection started to end (boxed, like the other state only an ending or
    /// a rare setting uses: the relay's size decides its allocator bin, see the test below).
    first: Option<Box<FirstClose>>,
    /// Its entry in the registry: its counters (messages and payload bytes per direction,
    /// written only here) and the mailbox of admin commands.
    conn: Arc<Conn>,
    /// The waker last handed to the mailbox (handed again only when it changes).
    mail_waker: Option<Waker>,
    live: ConnMetrics,
    /// Only clients are rate limited: the backend is the operator's own.
    rate: Option<Box<RateLimit>>,
    /// When the close handshake must be over (set by the first Close sent).
    close_by: Option<Instant>,
    /// When the last data frame moved (kept only with an idle timeout).
    last_data: Instant,
    idle_closed: bool,
    /// Still in the registry (taken out when the report is published, or when dropped).
    listed: bool,
    /// A retirement that fired: when this connection's turn comes, and why.
    retire_at: Option<Box<(Instant, &'static str)>>,
    /// The [`Ending`]s acted on already (each kind is acted on once).
    seen: u8,
    timer: Option<Pin<Box<Sleep>>>,
    /// Per hop (indexed like `hops`): its stream and its room are polled with this
    /// signal's waker (`wakers`, given to [`Relay::poll_relay`]), so a wake-up says which
    /// hop may move.
    signals: [Arc<Signal>; 2],
    /// Per hop: its last read was pending and its signal has not fired since, so reading
    /// it again would only find it pending again (its stream holds the waker).
    parked: [bool; 2],
}

impl Relay {
    /// Takes over both hops, lists the connection and starts its metrics.
    fn new(pending: Box<Pending>, client: (Stream, BytesMut)) -> Relay {
        let Pending {
            session,
            backend,
            state,
        } = *pending;
        let started = Instant::now();
        let (conn, session) = session.split(started);
        let conn = Arc::new(conn);
        state.registry.insert(conn.clone());
        let settings = state.settings.load();
        let live = state.metrics.connection_opened(
            conn.route.name(),
            settings.per_frame_metrics,
            &conn.route.metrics,
        );
        if settings.log_open {
            tracing::info!(conn = conn.id, route = conn.route.name(), backend = %conn.backend,
                client_addr = %conn.client_addr, "connection opened");
        }
        drop(settings);
        let tuning = &conn.route.tuning;
        let hops = [
            Hop::new(client.0, client.1, true, tuning, state.budget.lease()),
            Hop::new(backend.0, backend.1, false, tuning, state.budget.lease()),
        ];
        let rate = (tuning.max_message_rate > 0)
            .then(|| Box::new(RateLimit::new(tuning.max_message_rate)));
        // Listed first, then checked: a shutdown or retirement that searched the
        // registry before this entry was in it was marked before it searched.
        if state.shutdown.is_cancelled() {
            conn.raise(Ending::Shutdown);
        }
        if session.route_watch.is_retired() {
            conn.raise(Ending::RouteRetired);
        }
        if session
            .backend_watch
            .as_ref()
            .is_some_and(|w| w.is_retired())
        {
            conn.raise(Ending::BackendRetired);
        }
        Relay {
            session,
            state,
            hops,
            first: None,
            conn,
            mail_waker: None,
            live,
            rate,
            close_by: None,
            last_data: started,
            idle_closed: false,
            listed: true,
            retire_at: None,
            seen: 0,
            timer: None,
            signals: [Signal::new(false), Signal::new(false)],
            parked: [false; 2],
        }
    }

    /// The hop on `side`.
    fn hop(&mut self, side: Side) -> &mut Hop {
        &mut self.hops[side as usize]
    }

    /// Moves everything that can move; ready when the connection is over.
    ///
    /// Returns pending only when nothing moved and no deadline acted in a whole round, so
    /// every read, write and timer that waits has registered this task for a wakeup.
    ///
    /// Each hop's stream is polled with its own [`Signal`], and a hop whose read was
    /// pending is not read again until its signal fired: its stream holds the waker, so
    /// whatever lets it move wakes the task and says so. Reading both hops again after any
    /// progress and on every wake-up polled the frame decoder ~10 times per 64 B echo
    /// round trip where 2 return a frame (issue #17); now 4 (a frame, and the read that
    /// registers for the next one, per hop).
    fn poll_relay(&mut self, cx: &mut Context<'_>, wakers: &[Waker; 2]) -> Poll<()> {
        let new_waker = self.watch_mail(cx);
        for side in 0..2 {
            if self.signals[side].take(cx.waker(), new_waker) {
                self.parked[side] = false;
            }
        }
        let mut cxs = wakers.each_ref().map(Context::from_waker);
        loop {
            let mailed = self.poll_mail();
            self.write_out(Side::Client, &mut cxs[0]);
            self.write_out(Side::Backend, &mut cxs[1]);
            let moved = mailed
                | self.pump(Side::Client, &mut cxs)
                | self.pump(Side::Backend, &mut cxs)
                | self.cut_abandoned();
            let (expired, acted) = self.poll_deadlines(cx);
            if expired {
                return Poll::Ready(());
            }
            if self
                .hops
                .iter()
                .all(|h| h.reading() == Reading::Done && h.written())
            {
                return Poll::Ready(());
            }
            if !moved && !acted {
                return Poll::Pending;
            }
            // Nothing is queued and no hop can be read before its signal fires: another
            // round would only find that out again (~200 instructions per 64 B message).
            let quiet = (0..2).all(|i| {
                self.hops[i].written()
                    && (self.parked[i] || self.hops[i].reading() == Reading::Done)
            });
            if quiet && !acted && !self.conn.has_mail() {
                return Poll::Pending;
            }
        }
    }

    /// Reads, checks and forwards frames from `from` while the other hop keeps up; true
    /// when anything happened. `cxs`: each hop's context (see [`Relay::poll_relay`]).
    fn pump(&mut self, from: Side, cxs: &mut [Context<'_>; 2]) -> bool {
        let to = from.other();
        let mut moved = false;
        loop {
            let reading = self.hop(from).reading();
            let cx = &mut cxs[from as usize];
            match reading {
                Reading::Done => return moved,
                Reading::Open if !self.hops[to as usize].written() => {
                    self.hop(from).hold_frame_clock();
                    return moved;
                }
                _ if self.parked[from as usize] => return moved,
                Reading::RawDrain => {
                    let Poll::Ready(read) = self.hops[from as usize].poll_discard(cx) else {
                        self.parked[from as usize] = true;
                        return moved;
                    };
                    match read {
                        Ok(n) if n > 0 => {
                            self.hop(from).raw_drain_until(Instant::now() + DRAIN_QUIET)
                        }
                        _ => self.hop(from).set_reading(Reading::Done),
                    }
                }
                Reading::Draining => {
                    let Poll::Ready(read) = self.hops[from as usize].poll_frame(cx) else {
                        self.parked[from as usize] = true;
                        return moved;
                    };
                    match read {
                        Ok(Some(f)) if f.opcode != OpCode::Close => {}
                        Ok(_) => self.hop(from).set_reading(Reading::Done),
                        Err(_) => self.hop(from).raw_drain_until(Instant::now() + DRAIN_QUIET),
                    }
                }
                Reading::Open => {
                    let Poll::Ready(read) = self.hops[from as usize].poll_frame(cx) else {
                        self.parked[from as usize] = true;
                        return moved;
                    };
                    self.on_read(from, read);
                    self.write_out(to, &mut cxs[to as usize]);
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
            Ok(None) => return self.stream_ended(from, true),
            Err(e) => match Violation::from_frame_error(&e, from == Side::Client) {
                Some(violation) => return self.violation(from, violation),
                None => {
                    if let FrameError::Io(io) = &e {
                        self.note_reset(from, io);
                    }
                    return self.stream_ended(from, false);
                }
            },
        };
        let pings = Pings::of(&self.conn.route.tuning);
        self.hop(from).keepalive_mut().on_frame(pings);
        // Every data frame takes a token, continuations included: a message that never
        // ends must not escape the rate.
        let over_rate = from == Side::Client
            && frame.starts()
            && !frame.opcode.is_control()
            && self.rate.as_mut().is_some_and(|r| !r.allow());
        if over_rate {
            return self.violation(from, Violation::RateLimit);
        }
        let limits = Limits::of(&self.conn.route.tuning);
        if let Err(violation) = self.hop(from).check(&mut frame, limits) {
            self.violation(from, violation);
            // An invalid Close still ends the peer's side of the handshake (RFC 6455 §7.1.1):
            // nothing more will come, so close now instead of waiting for another Close.
            if frame.opcode == OpCode::Close {
                self.hop(from).set_reading(Reading::Done);
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
                self.hop(from).set_reading(Reading::Done);
                return;
            }
            OpCode::Pong => {
                if let Some(rtt) = self.hop(from).keepalive_mut().on_pong(frame.payload()) {
                    self.conn.set_rtt(from as usize, rtt);
                    let route = self.conn.route.name();
                    self.state.metrics.ping_rtt(route, from.label(), rtt);
                    return;
                }
            }
            _ => {}
        }
        if !self.hop(to).accepts(&frame) {
            // `to` already got its Close (or is gone): the frame is dropped, not counted.
            return;
        }
        let is_data = !frame.opcode.is_control();
        let len = frame.len() as u64;
        // Counted before the write, so a peer that has received a message always finds it
        // in the counters (the write completes on another thread than a scrape); a
        // streamed frame is counted once, from its header.
        if frame.starts() {
            let data_len = is_data.then_some(frame.frame_len());
            self.live.frame(dir, frame.opcode, data_len, frame.fin);
        }
        // The last piece of a fragmented message: a push that waited for it goes next,
        // before anything read after it (a Close in the same read, say).
        let ends_fragmented = frame.opcode == OpCode::Continuation && frame.fin && frame.ends();
        if is_data {
            self.conn.count(dir, len, frame.fin && frame.ends());
            // Only the idle timeout reads it; without one, spare the per-frame clock read.
            if !self.conn.route.tuning.idle_timeout.is_zero() {
                self.last_data = Instant::now();
            }
        }
        self.forward(to, frame);
        if ends_fragmented {
            self.poll_mail();
        }
    }

    /// `from`'s stream ended (`clean`: between frames) or failed: nothing more is read.
    fn stream_ended(&mut self, from: Side, clean: bool) {
        self.peer_gone(from, clean);
        self.hop(from).set_reading(Reading::Done);
    }

    /// Sends what is still owed, half-closes both hops (each bounded), then counts and logs.
    async fn finish(mut self: Box<Self>) {
        for side in [Side::Client, Side::Backend] {
            // A Close still owed (the other hop never finished its handshake) goes out now:
            // send_close sends the owed payload in place of the one given.
            if self.hop(side).owes_close() {
                self.send_close(side, &[]);
            }
            let hop = self.hop(side);
            // Bounded: a peer that stopped reading must not hold the task forever.
            let end = std::future::poll_fn(|cx| {
                // No write timeout: the one around this bounds it.
                std::task::ready!(hop.poll_write_out(cx, Duration::ZERO))?;
                hop.poll_shutdown(cx)
            });
            let ended = tokio::time::timeout(SHUTDOWN_WRITE_TIMEOUT, end).await;
            // An HTTP/2 stream reset with CANCEL reads as its end: only the write side
            // tells a client that vanished from one that reset its stream.
            if let (Side::Client, Ok(Err(e))) = (side, &ended)
                && is_stream_reset(e)
                && let Some(f) = self.first.as_mut()
                && f.outcome == Outcome::ClientGone
            {
                f.outcome = Outcome::ClientReset;
            }
        }
        let first = self.first.take().map_or(
            FirstClose {
                closed_by: ClosedBy::Proxy,
                code: None,
                reason: String::new(),
                outcome: Outcome::Normal,
            },
            |first| *first,
        );
        let report = closing::report(
            self.session.subprotocol.take().map(String::from),
            &self.conn,
            first,
        );
        // Gone from the API before its report is out: whoever sees the report finds it
        // gone, and whoever still holds the entry gets 409.
        self.conn.set_closing();
        self.state.registry.remove(self.conn.id);
        self.listed = false;
        closing::publish(&self.state, &self.conn.route, &mut self.live, report);
    }
}

impl Drop for Relay {
    /// A relay dropped without finishing (its runtime stopped) leaves the registry too.
    fn drop(&mut self) {
        if self.listed {
            self.state.registry.remove(self.conn.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection holds one boxed `Relay`; mimalloc (the binary's allocator)
    /// serves it from a bin of 896 bytes only while it fits there, the next bin being
    /// 1,024. State that only an ending, a busy hop or a rare setting uses is boxed (a
    /// raw drain's deadline too), and the route's settings (message limits, timeouts) are
    /// read from the route, to keep it so.
    #[test]
    fn the_relay_state_fits_its_allocator_bin() {
        let size = std::mem::size_of::<Relay>();
        assert!(size <= 896, "Relay is {size} bytes");
    }
}
