//! One side of a relayed connection: its stream, the frames cut from what it sends, and
//! the bytes queued for it.
//!
//! Both hops of a connection live in one task (see `relay`), so a hop needs no locks: the
//! stream is read and written from the same place, and a frame waiting to be written is
//! just a buffer in the queue.
//!
//! A hop keeps its own rules: a Close is queued at most once and nothing is queued after
//! it (nor after a failed write), and a hop that finished reading never reads again.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::proto::frame::{self, Frame, FrameDecoder, FrameError, MaskKeys, OpCode};
use crate::relay::keepalive::Keepalive;
use crate::relay::message::{Limits, Message};
use crate::relay::violation::Violation;
use crate::shared::budget::Lease;
use crate::shared::stream::Stream;

/// How long a hop that broke the protocol may keep sending bytes that cannot be parsed
/// before it counts as finished.
pub const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// What is read from a hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Frames are read, checked and forwarded.
    Open,
    /// After a violation: frames are read and dropped until the peer's Close.
    Draining,
    /// The stream cannot be parsed any more: bytes are dropped until the peer pauses
    /// (until [`Hop::quiet_until`]; kept apart so that this is one byte in every hop).
    RawDrain,
    /// Nothing more will be read.
    Done,
}

/// A hop's state that only a busy or an ending hop holds.
#[derive(Default)]
struct Rare {
    /// Frames queued behind the one being written (a ping or a Close of wsgate's own),
    /// oldest first.
    more: VecDeque<BytesMut>,
    /// A Close owed to this peer that waits until the other hop has finished its close
    /// handshake, so data the other hop sent before it is still delivered (client violations).
    pending_close: Option<Vec<u8>>,
    /// wsgate's own frames (a ping, a Close) that wait for the end of the streamed frame
    /// toward the peer.
    held: Option<BytesMut>,
    /// While raw draining: when the peer's pause is long enough.
    quiet_until: Option<Instant>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.more.is_empty()
            && self.pending_close.is_none()
            && self.held.is_none()
            && self.quiet_until.is_none()
    }
}

/// One peer of the relay.
pub struct Hop {
    /// The peer's stream, read and written here.
    io: Stream,
    decoder: FrameDecoder,
    /// The frame being written (almost always the only one waiting).
    out: Option<BytesMut>,
    /// What only a busy or an ending hop holds (frames queued behind `out`, a Close owed,
    /// wsgate's own frames held back), boxed and dropped once empty: every idle connection
    /// holds two hops, and the relay's state fits a smaller allocator bin without them.
    rare: Option<Box<Rare>>,
    /// Bytes were written since the last flush (TLS holds them until flushed).
    unflushed: bool,
    /// Masking keys when the peer is a server.
    keys: Option<MaskKeys>,
    /// When the queue stopped draining (the write timeout counts from here).
    blocked_since: Option<Instant>,
    /// What happens to what the peer sends.
    reading: Reading,
    /// A Close was queued for the peer, or it cannot be reached: nothing more is queued.
    close_sent: bool,
    /// A write failed: the queue is dropped and nothing more is written.
    broken: bool,
    /// The message in progress from this peer.
    message: Message,
    /// wsgate's own pings to this peer.
    keepalive: Keepalive,
    /// A streamed frame is being forwarded to the peer, with the key its pieces are
    /// masked with: nothing else may be written to the peer until its last piece.
    inside: Option<Option<[u8; 4]>>,
    /// A fragmented message toward the peer has begun and not ended: a message of
    /// wsgate's own (an admin push) waits for its end.
    message_out: bool,
    /// The peer is inside a frame that will never be finished: it gets no Close, and its
    /// connection is shut down once what is queued is written (`shut` once done).
    cut: bool,
    shut: bool,
    /// When the first bytes of the frame being read from the peer arrived (moved later by
    /// the time wsgate did not read it).
    frame_started: Option<Instant>,
    /// Since when wsgate has not read the frame in progress (the other hop is not written,
    /// or there is no room for the frame): that time is not the peer's.
    held_since: Option<Instant>,
    /// The room this hop holds for a large frame from the peer.
    lease: Lease,
}

impl Hop {
    /// A hop over `io`; `leftover` holds bytes read past the handshake; `is_client` says which
    /// masking direction applies (clients mask, and frames to servers are masked); `lease`
    /// grants its large frames room.
    pub fn new(
        io: Stream,
        leftover: BytesMut,
        is_client: bool,
        tuning: &crate::config::Tuning,
        lease: Lease,
    ) -> Hop {
        Hop {
            io,
            decoder: FrameDecoder::new(leftover, is_client, tuning.max_frame_bytes),
            out: None,
            rare: None,
            unflushed: false,
            keys: (!is_client).then(|| MaskKeys::new(crate::shared::random::u64())),
            blocked_since: None,
            reading: Reading::Open,
            close_sent: false,
            broken: false,
            message: Message::default(),
            keepalive: Keepalive::new(),
            inside: None,
            message_out: false,
            cut: false,
            shut: false,
            frame_started: None,
            held_since: None,
            lease,
        }
    }

    /// Reads the next frame, or piece of a streamed frame, from the peer.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, FrameError>> {
        if let Some(since) = self.held_since.take()
            && let Some(started) = self.frame_started.as_mut()
        {
            *started += since.elapsed();
        }
        let read = self.decoder.poll_frame(&mut self.io, &mut self.lease, cx);
        match &read {
            // Only a frame that did not arrive in one read reads the clock.
            Poll::Pending if self.decoder.inside_frame() => {
                if self.frame_started.is_none() {
                    self.frame_started = Some(Instant::now());
                }
                if self.lease.waiting() {
                    self.hold_frame_clock();
                }
            }
            Poll::Ready(Ok(Some(frame))) if frame.ends() => self.frame_started = None,
            _ => {}
        }
        read
    }

    /// wsgate does not read the peer now (what it sent is not written on yet): the frame
    /// in progress from it, if any, does not age meanwhile.
    pub fn hold_frame_clock(&mut self) {
        if self.frame_started.is_some() && self.held_since.is_none() {
            self.held_since = Some(Instant::now());
        }
    }

    /// When the frame being read from the peer must be complete (`timeout` 0 = never);
    /// none while wsgate holds it up.
    pub fn frame_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.frame_started
            .filter(|_| !timeout.is_zero() && self.held_since.is_none())
            .map(|at| at + timeout)
    }

    /// A streamed frame is being forwarded to the peer and is not finished.
    pub fn inside_frame_out(&self) -> bool {
        self.inside.is_some()
    }

    /// Whether [`Hop::forward`] would queue `frame`: a new frame until the peer's Close is
    /// queued, the rest of the frame in progress toward the peer even after that.
    pub fn accepts(&self, frame: &Frame) -> bool {
        if frame.starts() {
            !self.close_sent
        } else {
            self.inside.is_some()
        }
    }

    /// The frame in progress toward the peer will never be finished: the peer gets no
    /// Close (none can be sent inside a frame) and its connection is shut down once what is
    /// already queued is written.
    pub fn cut(&mut self) {
        self.close_sent = true;
        if let Some(rare) = self.rare.as_mut() {
            rare.pending_close = None;
            rare.held = None;
        }
        self.tidy();
        self.inside = None;
        self.cut = true;
    }

    /// Reads and drops raw bytes; the count read (0 at the end of the stream).
    pub fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut scratch = [0u8; 512];
        let mut read = ReadBuf::new(&mut scratch);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        Poll::Ready(Ok(read.filled().len()))
    }

    /// What is read from the peer now.
    pub fn reading(&self) -> Reading {
        self.reading
    }

    /// Changes what is read from the peer; once `Done`, nothing is read again.
    pub fn set_reading(&mut self, next: Reading) {
        if self.reading != Reading::Done {
            self.reading = next;
        }
        if self.reading != Reading::RawDrain {
            self.take_rare(|r| r.quiet_until.take());
        }
        if next == Reading::Done {
            // Nothing more is read: its room goes back now, not when the connection ends.
            self.decoder.give_back(&mut self.lease);
        }
    }

    /// Checks a frame from the peer against its message in progress.
    pub fn check(&mut self, frame: &mut Frame, limits: Limits) -> Result<(), Violation> {
        self.message.check(frame, limits)
    }

    /// The peer's keepalive state.
    pub fn keepalive(&self) -> &Keepalive {
        &self.keepalive
    }

    /// The peer's keepalive state, to record what it sent or what is due.
    pub fn keepalive_mut(&mut self) -> &mut Keepalive {
        &mut self.keepalive
    }

    /// A Close was queued for the peer, or it cannot be reached: nothing more goes to it.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Queues a frame read from the other hop, re-masked for this one, unless the peer's
    /// Close is already queued (then it is dropped). A Close goes out as the one owed to the
    /// peer when there is one. True when this queued the peer's Close.
    ///
    /// The pieces of a streamed frame all go out with the key its first piece got, and
    /// wsgate's own frames wait until its last piece is queued.
    pub fn forward(&mut self, frame: Frame) -> bool {
        if !self.accepts(&frame) {
            return false;
        }
        if frame.opcode != OpCode::Close {
            let key = match self.inside {
                Some(key) if !frame.starts() => key,
                _ => self.keys.as_mut().map(MaskKeys::next_key),
            };
            let ends = frame.ends();
            if ends && !frame.opcode.is_control() {
                self.message_out = !frame.fin;
            }
            self.inside = (!ends).then_some(key);
            self.queue(frame.into_wire(key));
            if ends && let Some(held) = self.take_rare(|r| r.held.take()) {
                self.queue(held);
            }
            return false;
        }
        self.close_sent = true;
        match self.take_rare(|r| r.pending_close.take()) {
            Some(owed) => self.queue_own(OpCode::Close, &owed),
            None => {
                let key = self.keys.as_mut().map(MaskKeys::next_key);
                self.push(frame.into_wire(key));
            }
        }
        true
    }

    /// Queues wsgate's own Close with `payload` (or the one owed to the peer), unless a Close
    /// was already queued; true when this queued it.
    pub fn queue_close(&mut self, payload: &[u8]) -> bool {
        if self.close_sent {
            return false;
        }
        self.close_sent = true;
        let owed = self.take_rare(|r| r.pending_close.take());
        self.queue_own(OpCode::Close, owed.as_deref().unwrap_or(payload));
        true
    }

    /// No message toward the peer is in progress (none begun and unfinished, no frame
    /// half written), so a whole message of wsgate's own may go next.
    pub fn between_messages(&self) -> bool {
        self.inside.is_none() && !self.message_out
    }

    /// Queues a whole data message of wsgate's own (an admin push) unless the peer's Close
    /// is queued; true when queued. Only between messages ([`Hop::between_messages`]).
    pub fn queue_message(&mut self, binary: bool, payload: &[u8]) -> bool {
        if self.close_sent || !self.between_messages() {
            return false;
        }
        let opcode = if binary { OpCode::Binary } else { OpCode::Text };
        self.queue_own(opcode, payload);
        true
    }

    /// Queues wsgate's own keepalive ping, unless the peer's Close is already queued.
    pub fn queue_ping(&mut self, payload: &[u8]) {
        if !self.close_sent {
            self.queue_own(OpCode::Ping, payload);
        }
    }

    /// Keeps `payload` as the Close the peer gets when its Close is next queued (by
    /// [`Hop::forward`] or [`Hop::queue_close`]), whatever that call carries.
    pub fn owe_close(&mut self, payload: Vec<u8>) {
        if !self.close_sent {
            self.rare_mut().pending_close = Some(payload);
        }
    }

    /// A Close is owed to the peer and not queued yet.
    pub fn owes_close(&self) -> bool {
        self.rare
            .as_ref()
            .is_some_and(|r| r.pending_close.is_some())
    }

    /// Takes something out of the rare state (`take` says what), dropping the state if
    /// that left it empty.
    fn take_rare<T>(&mut self, take: impl FnOnce(&mut Rare) -> Option<T>) -> Option<T> {
        let taken = self.rare.as_deref_mut().and_then(take);
        self.tidy();
        taken
    }

    /// Drops raw bytes from the peer until it pauses until `until` (moved on by each read).
    pub fn raw_drain_until(&mut self, until: Instant) {
        self.set_reading(Reading::RawDrain);
        if self.reading == Reading::RawDrain {
            self.rare_mut().quiet_until = Some(until);
        }
    }

    /// While raw draining: when the peer's pause is long enough.
    pub fn quiet_until(&self) -> Option<Instant> {
        self.rare.as_ref()?.quiet_until
    }

    /// The rare state, made when first needed.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Drops the rare state once nothing is left in it.
    fn tidy(&mut self) {
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
    }

    /// The peer cannot be reached any more: nothing more is queued for it (what is already
    /// queued is still written).
    pub fn unreachable(&mut self) {
        self.close_sent = true;
    }

    /// Queues a frame wsgate makes itself (a Close or a ping).
    fn queue_own(&mut self, opcode: OpCode, payload: &[u8]) {
        let key = self.keys.as_mut().map(MaskKeys::next_key);
        self.push(frame::encode(true, opcode, payload, key));
    }

    /// Queues a whole frame, or holds it while a streamed frame toward the peer is open.
    fn push(&mut self, bytes: BytesMut) {
        if self.inside.is_none() {
            return self.queue(bytes);
        }
        let held = &mut self.rare_mut().held;
        match held {
            Some(held) => held.extend_from_slice(&bytes),
            None => *held = Some(bytes),
        }
    }

    fn queue(&mut self, bytes: BytesMut) {
        if !self.broken {
            match self.out {
                None => self.out = Some(bytes),
                Some(_) => self.rare_mut().more.push_back(bytes),
            }
        }
    }

    /// Nothing is waiting to be written (or nothing can be any more).
    pub fn written(&self) -> bool {
        self.broken || (self.out.is_none() && !self.unflushed && self.cut == self.shut)
    }

    /// Writes what is queued; ready once all of it is written and flushed.
    ///
    /// `write_timeout` (the route's; zero: none) says whether a write that waits starts the
    /// clock [`Hop::write_deadline`] reads.
    pub fn poll_write_out(
        &mut self,
        cx: &mut Context<'_>,
        write_timeout: Duration,
    ) -> Poll<io::Result<()>> {
        if self.broken {
            return Poll::Ready(Ok(()));
        }
        let result = self.write_queue(cx);
        match &result {
            Poll::Pending => {
                if self.blocked_since.is_none() && !write_timeout.is_zero() {
                    self.blocked_since = Some(Instant::now());
                }
            }
            Poll::Ready(Ok(())) => self.blocked_since = None,
            // The relay decides what a failed write means (and calls `fail`).
            Poll::Ready(Err(_)) => {}
        }
        result
    }

    fn write_queue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(front) = self.out.as_mut() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, front))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            front.advance(n);
            self.unflushed = true;
            if front.is_empty() {
                self.out = self.take_rare(|r| r.more.pop_front());
            }
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        if self.cut && !self.shut {
            // FIN (and close_notify) inside a frame: the peer sees its connection end.
            let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
            self.shut = true;
        }
        Poll::Ready(Ok(()))
    }

    /// The peer cannot be written to any more.
    pub fn fail(&mut self) {
        self.broken = true;
        self.close_sent = true;
        self.out = None;
        if let Some(rare) = self.rare.as_mut() {
            rare.more = VecDeque::new();
            rare.held = None;
        }
        self.tidy();
        self.unflushed = false;
        self.blocked_since = None;
        self.inside = None;
    }

    /// When the write that is waiting times out.
    pub fn write_deadline(&self, write_timeout: Duration) -> Option<Instant> {
        self.blocked_since.map(|at| at + write_timeout)
    }

    /// Sends FIN (and TLS close_notify). Plain TCP skips it: the socket is closed right
    /// after, which sends the same FIN without a system call of its own.
    pub fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.broken || self.shut || matches!(self.io, Stream::Tcp(_)) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use prometheus::{IntCounter, IntGauge};
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::shared::budget::Budget;

    /// A hop toward a backend (its frames masked) over an in-memory pipe.
    fn backend_hop(io: tokio::io::DuplexStream) -> Hop {
        let budget = Budget::new(
            1 << 20,
            IntGauge::new("used", "used").unwrap(),
            IntCounter::new("waits", "waits").unwrap(),
        );
        let tuning = crate::config::Tuning::default();
        Hop::new(
            Stream::Memory(io),
            BytesMut::new(),
            false,
            &tuning,
            budget.lease(),
        )
    }

    /// The rare state exists only while something is in it: frames queued behind the one
    /// being written, a Close owed. An idle hop holds none of it.
    #[tokio::test]
    async fn the_rare_state_is_dropped_once_empty() {
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let mut hop = backend_hop(ours);
        assert!(hop.rare.is_none());
        hop.queue_ping(b"one");
        assert!(hop.rare.is_none(), "a lone frame waits outside the queue");
        hop.queue_ping(b"two");
        assert!(hop.rare.is_some(), "a second frame queues behind it");
        poll_fn(|cx| hop.poll_write_out(cx, Duration::ZERO))
            .await
            .unwrap();
        assert!(hop.rare.is_none(), "written out, the queue is gone");
        hop.owe_close(close_payload_bytes());
        assert!(hop.owes_close() && hop.rare.is_some());
        assert!(hop.queue_close(b"ignored: the owed one goes"));
        assert!(!hop.owes_close() && hop.rare.is_none());
        poll_fn(|cx| hop.poll_write_out(cx, Duration::ZERO))
            .await
            .unwrap();
        // Two pings and the owed Close, each masked (2 + 4 header bytes).
        let mut wire = vec![0u8; (6 + 3) + (6 + 3) + (6 + 2)];
        peer.read_exact(&mut wire).await.unwrap();
        assert_eq!(wire[0], 0x89);
        assert_eq!(wire[9], 0x89);
        assert_eq!(wire[18], 0x88);
        assert_eq!(wire[19] & 0x7f, 2, "the owed payload, not the one given");
    }

    fn close_payload_bytes() -> Vec<u8> {
        1000u16.to_be_bytes().to_vec()
    }
}
