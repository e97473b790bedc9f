//! The relay's WebSocket frame codec (RFC 6455 §5): one frame at a time, checked per hop.
//!
//! wsgate owns this codec instead of using fastwebsockets' reader because the relay must
//! check the masking direction of every frame, and fastwebsockets 0.10 neither checks it
//! nor exposes the mask; owning it also lets a frame be read into one buffer sized from
//! its header and be forwarded in that same buffer.

use bytes::BytesMut;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

use crate::proto::room::Room;

/// Size of the per-thread scratch buffer that reads land in when the connection has no
/// room of its own (one read of a typical burst).
const SCRATCH_BYTES: usize = 16 * 1024;
/// With at least this much free room in its own buffer (a large frame being read), a
/// connection reads straight into it and skips the copy out of the scratch buffer.
const DIRECT_READ_MIN: usize = 4 * 1024;
/// An empty connection buffer larger than this is released rather than kept for later.
const KEEP_MAX: usize = 64 * 1024;
/// A frame larger than this (header included) is not buffered whole: its header and then
/// its payload are handed out in pieces as they arrive, so a peer that stalls inside a
/// frame pins at most one chunk whatever `max_frame_bytes` is. At least 64 KiB + 14, so a
/// streamed frame always has a 64-bit length (minimally encoded, its header reusable).
pub(crate) const STREAM_MIN: usize = 64 * 1024 + 14;
/// Spare room in a buffer sized for a frame, beyond the frame (see `FrameDecoder::size_for`):
/// enough for the read after the frame to be a direct one.
const READ_SLACK: usize = DIRECT_READ_MIN;
/// The room a streamed frame's payload is read into: the most one piece holds.
const STREAM_CHUNK: usize = 32 * 1024;

thread_local! {
    /// Reads of connections with no room of their own land here and only the bytes that
    /// arrived are copied out, so an idle connection holds no read buffer (design §8).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation = 0,
    /// First frame of a text message.
    Text = 1,
    /// First frame of a binary message.
    Binary = 2,
    /// Close.
    Close = 8,
    /// Ping.
    Ping = 9,
    /// Pong.
    Pong = 10,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            _ => return None,
        })
    }

    /// Close, Ping and Pong are control frames.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }

    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            OpCode::Continuation => "continuation",
            OpCode::Text => "text",
            OpCode::Binary => "binary",
            OpCode::Close => "close",
            OpCode::Ping => "ping",
            OpCode::Pong => "pong",
        }
    }
}

/// One frame as it arrived, or one piece of a frame too large to buffer whole: header
/// (on the first piece only) and payload in one buffer, so forwarding it to the other hop
/// rewrites at most the masking key and writes it with one call.
#[derive(Debug)]
pub struct Frame {
    /// Final fragment of its message.
    pub fin: bool,
    /// Frame type.
    pub opcode: OpCode,
    /// Header and payload as received.
    raw: BytesMut,
    /// Length of the header, masking key included.
    head: usize,
    /// The key the payload is still masked with (`None` once unmasked or never masked).
    key: Option<[u8; 4]>,
    /// Whether the length was encoded in the fewest bytes; only such headers are reused.
    minimal: bool,
    /// Where this piece's payload starts in the frame's payload (0 for a whole frame).
    offset: u64,
    /// Payload length of the whole frame (this piece's length for a whole frame).
    total: u64,
    /// This piece ends the frame (always, for a whole frame).
    last: bool,
}

impl Frame {
    /// Payload length of this piece (of the frame, when it came whole).
    pub fn len(&self) -> usize {
        self.raw.len() - self.head
    }

    /// Payload length of the whole frame, from its header.
    pub fn frame_len(&self) -> u64 {
        self.total
    }

    /// This piece carries the frame's header (a whole frame always does).
    pub fn starts(&self) -> bool {
        self.head > 0
    }

    /// This piece ends the frame (a whole frame always does).
    pub fn ends(&self) -> bool {
        self.last
    }

    /// The unmasked payload of this piece (unmasked in place on first use).
    pub fn payload(&mut self) -> &[u8] {
        if let Some(key) = self.key.take() {
            apply_mask(&mut self.raw[self.head..], rotate(key, self.offset));
        }
        &self.raw[self.head..]
    }

    /// The frame's bytes for the next hop, masked with `key` when that hop is a server.
    ///
    /// The header is reused whenever it already has the right shape (always, between a
    /// client and a backend, for minimally encoded lengths): a payload still masked by the
    /// client is re-masked in one pass with the XOR of both keys.
    ///
    /// A piece of a streamed frame goes out with the same `key` for every piece of its
    /// frame: masking is positional, so each piece is masked from its offset in the frame.
    /// Only a whole frame can need a new header (a streamed frame's 64-bit length is
    /// always minimal, and both hops agree on the key slot, see [`FrameDecoder`]).
    pub fn into_wire(mut self, key: Option<[u8; 4]>) -> BytesMut {
        if self.starts() && self.last && self.offset == 0 {
            let has_key_slot = self.raw[1] & 0x80 != 0;
            if !self.minimal || has_key_slot != key.is_some() {
                let (fin, opcode) = (self.fin, self.opcode);
                return encode(fin, opcode, self.payload(), key);
            }
        }
        if let Some(new) = key {
            let combined = match self.key {
                Some(old) => [
                    old[0] ^ new[0],
                    old[1] ^ new[1],
                    old[2] ^ new[2],
                    old[3] ^ new[3],
                ],
                None => new,
            };
            apply_mask(&mut self.raw[self.head..], rotate(combined, self.offset));
            if self.head >= 4 {
                self.raw[self.head - 4..self.head].copy_from_slice(&new);
            }
        }
        self.raw
    }
}

/// The key as it applies from payload byte `offset` on (masking is positional, RFC 6455 §5.3).
fn rotate(key: [u8; 4], offset: u64) -> [u8; 4] {
    let mut key = key;
    key.rotate_left((offset % 4) as usize);
    key
}

/// Writes a frame header for `len` payload bytes into `head`; returns its length.
fn put_header(
    head: &mut [u8; 14],
    fin: bool,
    opcode: OpCode,
    len: usize,
    key: Option<[u8; 4]>,
) -> usize {
    head[0] = (fin as u8) << 7 | opcode as u8;
    let mut n = if len < 126 {
        head[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        head[1] = 126;
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    if let Some(key) = key {
        head[1] |= 0x80;
        head[n..n + 4].copy_from_slice(&key);
        n += 4;
    }
    n
}

/// Encodes a whole frame into a new buffer, masking the copy of `payload` with `key`.
pub fn encode(fin: bool, opcode: OpCode, payload: &[u8], key: Option<[u8; 4]>) -> BytesMut {
    let mut head = [0u8; 14];
    let n = put_header(&mut head, fin, opcode, payload.len(), key);
    let mut out = BytesMut::with_capacity(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
    if let Some(key) = key {
        apply_mask(&mut out[n..], key);
    }
    out
}

/// A frame-level violation found while reading; each maps to a close code.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// RSV1-3 set without a negotiated extension.
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 3-7 or 11-15.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u8),
    /// Control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// Control frame payload over 125 bytes.
    #[error("control frame too long")]
    ControlTooLong,
    /// Mask bit wrong for this hop (clients must mask, servers must not).
    #[error("frame masking wrong for this peer")]
    Masking,
    /// 64-bit length with the top bit set, or a length that is not minimal is accepted;
    /// this is the top-bit case.
    #[error("invalid payload length")]
    BadLength,
    /// Payload larger than the configured frame limit.
    #[error("frame of {0} bytes over the limit")]
    TooLarge(u64),
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    /// Socket error.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Cuts frames out of what one peer sends, enforcing the hop's masking direction and the
/// frame limit; the stream itself is passed in, so the same stream can be written to.
///
/// A frame larger than [`STREAM_MIN`] comes out in pieces: the first as soon as its header
/// is known (with whatever payload came with it), then one per read, never reassembled.
///
/// A frame over [`SCRATCH_BYTES`] (buffered whole, or streamed through one chunk) is read
/// only once a [`Room`] granted its buffer; the room goes back when the connection has
/// nothing more to read after it, so an idle connection holds none.
pub struct FrameDecoder {
    buf: BytesMut,
    expect_masked: bool,
    max_frame: u64,
    /// The streamed frame in progress, if any.
    stream: Option<Streaming>,
    /// Bytes of room granted (0: none held).
    granted: u32,
    /// Room the frame being read needs before more of it is read (0: none).
    wanted: u32,
}

/// What a streamed frame's later pieces need from its header.
#[derive(Debug, Clone, Copy)]
struct Streaming {
    fin: bool,
    opcode: OpCode,
    key: Option<[u8; 4]>,
    total: u64,
    /// Payload bytes not handed out yet.
    remaining: u64,
}

impl FrameDecoder {
    /// `expect_masked` is true when the peer is a client; `leftover` is what was read past the handshake.
    pub fn new(leftover: BytesMut, expect_masked: bool, max_frame: u64) -> Self {
        FrameDecoder {
            buf: leftover,
            expect_masked,
            max_frame,
            stream: None,
            granted: 0,
            wanted: 0,
        }
    }

    /// Part of a frame has arrived and the rest has not (a frame deadline runs).
    pub fn inside_frame(&self) -> bool {
        self.stream.is_some() || !self.buf.is_empty()
    }

    /// Nothing more will be read: the room granted (and the buffer it paid for) goes back.
    pub fn give_back<M: Room>(&mut self, room: &mut M) {
        if self.granted > 0 {
            room.release();
            self.granted = 0;
            self.buf = BytesMut::new();
        }
    }

    /// Reads until one frame is complete; `Ok(None)` on a clean end of stream between
    /// frames. A large frame's buffer is granted by `room` first: pending while `room` has
    /// none to grant.
    ///
    /// The caller must have written (and dropped) the frames this returned before it
    /// polls again: the room is given back on that next poll, when nothing more arrived.
    pub fn poll_frame<R: AsyncRead + Unpin, M: Room>(
        &mut self,
        io: &mut R,
        room: &mut M,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>, FrameError>> {
        loop {
            if let Some(frame) = self.parse()? {
                return Poll::Ready(Ok(Some(frame)));
            }
            if self.stream.is_some() && (self.granted as usize) < STREAM_CHUNK {
                self.wanted = STREAM_CHUNK as u32;
            }
            if self.wanted > self.granted {
                ready!(room.poll_grant(self.wanted as usize, cx));
                self.granted = self.wanted;
                self.wanted = 0;
                // Parsed again: the frame's buffer is reserved now.
                continue;
            }
            let between = self.buf.is_empty() && self.stream.is_none();
            if between && self.granted == 0 && self.buf.capacity() > KEEP_MAX {
                self.buf = BytesMut::new();
            }
            let filled = match self.poll_fill(io, room, cx) {
                Poll::Ready(filled) => filled?,
                // Nothing follows the large frame for now: its room (and the buffer it
                // paid for) goes back. A frame that follows at once keeps both.
                Poll::Pending if between => {
                    self.give_back(room);
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            };
            if filled == 0 {
                return Poll::Ready(if !self.inside_frame() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                });
            }
        }
    }

    /// Reads once, into the decoder's own room when it has plenty (a large frame is
    /// arriving), else into the thread's scratch buffer, copying out what arrived.
    fn poll_fill<R: AsyncRead + Unpin, M: Room>(
        &mut self,
        io: &mut R,
        room: &mut M,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<usize>> {
        if self.stream.is_some() && self.buf.is_empty() {
            // A streamed frame's pieces were written and dropped before this read (the
            // relay reads a hop only once the other is written), so its chunk comes back.
            if !self.buf.try_reclaim(STREAM_CHUNK) {
                self.buf = BytesMut::with_capacity(STREAM_CHUNK);
            }
            return tokio_util::io::poll_read_buf(std::pin::Pin::new(io), cx, &mut self.buf);
        }
        // The room of the last frame comes back once that frame was written and dropped.
        if self.buf.capacity() - self.buf.len() >= DIRECT_READ_MIN
            || (self.buf.is_empty() && self.buf.try_reclaim(SCRATCH_BYTES))
        {
            return tokio_util::io::poll_read_buf(std::pin::Pin::new(io), cx, &mut self.buf);
        }
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut read = ReadBuf::new(&mut scratch[..]);
            ready!(std::pin::Pin::new(io).poll_read(cx, &mut read))?;
            let filled = read.filled();
            if self.buf.is_empty() {
                self.size_for(filled, room, cx);
            }
            if self.buf.capacity() == 0 {
                // One allocation of the read's size and a copy: extending the empty
                // buffer went through BytesMut's and Vec's growth paths, ~200 more
                // instructions per 64 B message (issue #17).
                self.buf = BytesMut::from(filled);
            } else {
                self.buf.extend_from_slice(filled);
            }
            Poll::Ready(Ok(filled.len()))
        })
    }

    /// Sizes the empty buffer for the frame whose start `first` is, when that frame is one
    /// that is buffered whole but does not fit the scratch buffer and its room is granted
    /// at once: the frame is then copied out of the scratch buffer once, into a buffer of
    /// its size, instead of into one of the read's size that is regrown (copied again)
    /// when the header is parsed. That second copy was ~1,300 instructions per 64 KiB
    /// frame (issue #17). Room that is not granted now is asked for again by the parse.
    ///
    /// The room asked for is the frame's size, as the parse would ask (never more than one
    /// frame may hold); the buffer is [`READ_SLACK`] larger. With it, the relay's read after
    /// the frame lands in that spare room and finds the socket drained without a system
    /// call: measured, a spare of a few bytes left one failing `recvfrom` (EAGAIN) per 64 KiB
    /// round trip, 4 KiB none. So a frame holds up to 4 KiB more than its room says.
    fn size_for<M: Room>(&mut self, first: &[u8], room: &mut M, cx: &mut Context<'_>) {
        let Some(total) = claimed_total(first) else {
            return;
        };
        let whole = total > first.len() && total > SCRATCH_BYTES && total <= STREAM_MIN;
        // A length over the limit is refused by the parse, before any room is used.
        if !whole || total as u64 > self.max_frame.saturating_add(14) {
            return;
        }
        if (self.granted as usize) < total {
            if room.poll_grant(total, cx).is_pending() {
                return;
            }
            // Fits: total <= STREAM_MIN.
            self.granted = total as u32;
        }
        self.buf = BytesMut::with_capacity(total + READ_SLACK);
    }

    /// Takes one complete frame from the buffer, or says how much more to wait for.
    fn parse(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(stream) = self.stream {
            return Ok(self.piece(stream, 0));
        }
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        if b[0] & 0x70 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let opcode =
            OpCode::from_bits(b[0] & 0x0f).ok_or(FrameError::UnknownOpcode(b[0] & 0x0f))?;
        let masked = b[1] & 0x80 != 0;
        if masked != self.expect_masked {
            return Err(FrameError::Masking);
        }
        let len7 = (b[1] & 0x7f) as u64;
        if opcode.is_control() {
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
            if len7 > 125 {
                return Err(FrameError::ControlTooLong);
            }
        }
        let (len, mut header) = match len7 {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as u64, 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            126 | 127 => return Ok(None),
            n => (n, 2),
        };
        if len >> 63 != 0 {
            return Err(FrameError::BadLength);
        }
        if len > self.max_frame {
            return Err(FrameError::TooLarge(len));
        }
        let key_at = header;
        if masked {
            header += 4;
        }
        // Fits in usize: len <= max_frame, which came from a u64 the config accepted and
        // is compared again here so a 32-bit target cannot truncate it.
        let Ok(total) = usize::try_from(len + header as u64) else {
            return Err(FrameError::TooLarge(len));
        };
        if self.buf.len() < total && total > STREAM_MIN {
            if self.buf.len() < header {
                return Ok(None);
            }
            let key = masked.then(|| {
                let mut key = [0u8; 4];
                key.copy_from_slice(&self.buf[key_at..key_at + 4]);
                key
            });
            let stream = Streaming {
                fin,
                opcode,
                key,
                total: len,
                remaining: len,
            };
            return Ok(self.piece(stream, header));
        }
        if self.buf.len() < total {
            if total > SCRATCH_BYTES && (self.granted as usize) < total {
                // Fits: total <= STREAM_MIN here.
                self.wanted = total as u32;
                return Ok(None);
            }
            // Grow towards the frame's size as it arrives, capped so a header that lies costs nothing.
            let want = (total - self.buf.len()).min(256 * 1024);
            if self.buf.capacity() - self.buf.len() < want {
                self.buf.reserve(want);
            }
            return Ok(None);
        }
        let key = masked.then(|| {
            let mut key = [0u8; 4];
            key.copy_from_slice(&self.buf[key_at..key_at + 4]);
            key
        });
        let minimal = match key_at {
            2 => true,
            4 => len >= 126,
            _ => len > u16::MAX as u64,
        };
        // A buffer that is exactly this frame (the copy out of the scratch buffer after one
        // read of a small frame) is taken whole: `split_to` would first make it a shared
        // buffer, one more allocation and free per frame.
        let raw = if self.buf.len() == total && self.buf.capacity() == total {
            std::mem::take(&mut self.buf)
        } else {
            self.buf.split_to(total)
        };
        Ok(Some(Frame {
            fin,
            opcode,
            raw,
            head: header,
            key,
            minimal,
            offset: 0,
            total: len,
            last: true,
        }))
    }

    /// The next piece of a streamed frame: its `head` header bytes (on the first piece)
    /// and the payload that has arrived; `None` when nothing new arrived.
    fn piece(&mut self, mut stream: Streaming, head: usize) -> Option<Frame> {
        let arrived = (self.buf.len() - head) as u64;
        let take = arrived.min(stream.remaining);
        if take == 0 && head == 0 {
            return None;
        }
        let offset = stream.total - stream.remaining;
        stream.remaining -= take;
        let last = stream.remaining == 0;
        self.stream = (!last).then_some(stream);
        // Fits: take <= what the buffer holds.
        let raw = self.buf.split_to(head + take as usize);
        Some(Frame {
            fin: stream.fin,
            opcode: stream.opcode,
            raw,
            head,
            key: stream.key,
            minimal: true,
            offset,
            total: stream.total,
            last,
        })
    }
}

/// The whole length (header and payload) a frame starting with `b` claims, when `b` holds
/// its length; checks nothing else (the parse does).
fn claimed_total(b: &[u8]) -> Option<usize> {
    let (&b1, rest) = b.get(1).map(|b1| (b1, &b[2..]))?;
    let key = if b1 & 0x80 != 0 { 4 } else { 0 };
    let (len, len_bytes) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
            2,
        ),
        127 => (u64::from_be_bytes(rest.get(..8)?.try_into().ok()?), 8),
        n => (u64::from(n), 0),
    };
    usize::try_from(len.checked_add(2 + len_bytes + key)?).ok()
}

/// Masking keys for the frames wsgate sends to a backend.
#[derive(Debug)]
pub struct MaskKeys(u64);

impl MaskKeys {
    /// Seeded from the OS per connection.
    pub fn new(seed: u64) -> MaskKeys {
        MaskKeys(seed | 1)
    }

    /// xorshift64*: masking keys only need to be unpredictable to a script choosing payloads
    /// far from here, and the seed comes from the OS per connection.
    pub fn next_key(&mut self) -> [u8; 4] {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((v >> 32) as u32).to_ne_bytes()
    }
}

/// Bytes masked per pass of [`apply_mask`]'s main loop.
const MASK_BLOCK: usize = 128;

/// XORs `data` with the 4-byte masking key (RFC 6455 §5.3).
///
/// Written as 128-byte blocks of 64-bit lanes so that LLVM turns each block into eight
/// 16-byte SSE2 XORs (27 instructions per 128 bytes, x86-64's baseline): the former
/// 8-bytes-per-pass loop was 48% of the instructions of a 64 KiB echo (issue #17), and
/// this one takes a 64 KiB payload from ~37k to ~14k instructions. The crate forbids
/// `unsafe`, so no AVX2 path chosen at run time.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let half = u64::from(u32::from_ne_bytes(key));
    let wide = half | half << 32;
    let (blocks, rest) = data.as_chunks_mut::<MASK_BLOCK>();
    for block in blocks {
        for lane in block.as_chunks_mut::<8>().0 {
            *lane = (u64::from_ne_bytes(*lane) ^ wide).to_ne_bytes();
        }
    }
    let (lanes, tail) = rest.as_chunks_mut::<8>();
    for lane in lanes {
        *lane = (u64::from_ne_bytes(*lane) ^ wide).to_ne_bytes();
    }
    // Fewer than 8 bytes are left, from an offset that is a multiple of 8: the key's
    // first byte applies to the first of them.
    for (b, k) in tail.iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::room::{Alternating, Unbounded};

    #[test]
    fn mask_matches_bytewise() {
        let key = [1, 2, 3, 250];
        // Every length through two whole blocks and a partial third: blocks, lanes, tail.
        for len in 0..3 * MASK_BLOCK + 13 {
            let orig: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut fast = orig.clone();
            apply_mask(&mut fast, key);
            let slow: Vec<u8> = orig
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow, "length {len}");
        }
    }

    async fn read_one(
        mut bytes: &[u8],
        masked: bool,
        max: u64,
    ) -> Result<Option<Frame>, FrameError> {
        let mut d = FrameDecoder::new(BytesMut::new(), masked, max);
        std::future::poll_fn(|cx| d.poll_frame(&mut bytes, &mut Unbounded, cx)).await
    }

    #[tokio::test]
    async fn round_trip_masked_and_checks() {
        let key = MaskKeys::new(42).next_key();
        let out = encode(true, OpCode::Binary, &[7u8; 60_000], Some(key));
        let mut f = read_one(&out, true, 1 << 20).await.unwrap().unwrap();
        assert_eq!((f.fin, f.opcode, f.len()), (true, OpCode::Binary, 60_000));
        assert!(f.payload().iter().all(|&b| b == 7));
        // Same bytes at a server reader: masked frames from a server are a violation.
        assert!(matches!(
            read_one(&out, false, 1 << 20).await,
            Err(FrameError::Masking)
        ));
        assert!(matches!(
            read_one(&out, true, 1000).await,
            Err(FrameError::TooLarge(60_000))
        ));
    }

    #[tokio::test]
    async fn header_violations() {
        type Expect = fn(&FrameError) -> bool;
        let cases: &[(&[u8], Expect)] = &[
            (&[0xC1, 0x00], |e| matches!(e, FrameError::ReservedBits)),
            (&[0x83, 0x00], |e| matches!(e, FrameError::UnknownOpcode(3))),
            (&[0x09, 0x00], |e| {
                matches!(e, FrameError::FragmentedControl)
            }),
            (&[0x89, 126, 0, 126], |e| {
                matches!(e, FrameError::ControlTooLong)
            }),
            (&[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0], |e| {
                matches!(e, FrameError::BadLength)
            }),
            (
                &[0x82, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                |e| matches!(e, FrameError::TooLarge(_)),
            ),
            (&[0x82, 5, 1], |e| matches!(e, FrameError::Truncated)),
        ];
        for (bytes, want) in cases {
            let err = read_one(bytes, false, 1 << 20).await.unwrap_err();
            assert!(want(&err), "{bytes:?} gave {err:?}");
        }
        assert!(read_one(&[], false, 10).await.unwrap().is_none());
    }

    /// A client's frame forwarded to a backend: same header shape, a new key, the payload
    /// re-masked in one pass; decoded at the backend it is the client's payload.
    #[tokio::test]
    async fn forwarding_remasks_in_place() {
        for (opcode, len) in [
            (OpCode::Binary, 0),
            (OpCode::Binary, 125),
            (OpCode::Text, 126),
            (OpCode::Binary, 65_535),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let wire = encode(true, opcode, &payload, Some([9, 8, 7, 6]));
            let f = read_one(&wire, true, 1 << 20).await.unwrap().unwrap();
            let out = f.into_wire(Some([1, 2, 3, 4]));
            assert_eq!(out.len(), wire.len(), "header reused for {len}");
            assert_eq!(
                &out[..],
                &encode(true, opcode, &payload, Some([1, 2, 3, 4]))[..]
            );
            let mut back = read_one(&out, true, 1 << 20).await.unwrap().unwrap();
            assert_eq!(back.payload(), &payload[..]);
        }
    }

    /// Backend to client: the bytes pass as they came; a payload that was looked at stays unmasked.
    #[tokio::test]
    async fn forwarding_unmasked_passes_bytes() {
        let wire = encode(false, OpCode::Text, b"hello", None);
        let mut f = read_one(&wire, false, 100).await.unwrap().unwrap();
        assert_eq!(f.payload(), b"hello");
        assert_eq!(&f.into_wire(None)[..], &wire[..]);
    }

    /// A length that is not minimal (5 bytes in a 16-bit length) is re-encoded minimally.
    #[tokio::test]
    async fn non_minimal_length_is_reencoded() {
        let wire = [0x82u8, 126, 0, 5, 1, 2, 3, 4, 5];
        let f = read_one(&wire, false, 100).await.unwrap().unwrap();
        assert_eq!(&f.into_wire(None)[..], &[0x82u8, 5, 1, 2, 3, 4, 5][..]);
        let masked = [0x82u8, 0xfe, 0, 1, 0, 0, 0, 0, 42];
        let f = read_one(&masked, true, 100).await.unwrap().unwrap();
        let out = f.into_wire(Some([0, 0, 0, 0]));
        assert_eq!(&out[..], &[0x82u8, 0x81, 0, 0, 0, 0, 42][..]);
    }

    /// Frames larger than one read of the scratch buffer, up to the largest buffered whole,
    /// masked or not, decode whole whether their room comes at once or later, and no
    /// request for room is over what one frame may hold (the buffer sized from the first
    /// read of a frame asks for a little more than the frame).
    #[tokio::test]
    async fn frames_past_the_scratch_buffer_decode_whole_with_any_room() {
        for len in [SCRATCH_BYTES, 40_000, 65_535, 65_536, STREAM_MIN - 14] {
            for (masked, key) in [(true, Some([3, 1, 4, 1])), (false, None)] {
                for refuse_first in [false, true] {
                    let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
                    let wire = encode(true, OpCode::Binary, &payload, key);
                    let mut d = FrameDecoder::new(BytesMut::new(), masked, 1 << 20);
                    let mut room = Alternating::new(refuse_first, STREAM_MIN);
                    let mut io = &wire[..];
                    let mut f = std::future::poll_fn(|cx| d.poll_frame(&mut io, &mut room, cx))
                        .await
                        .unwrap()
                        .unwrap();
                    assert!(f.ends(), "length {len}");
                    assert_eq!(f.payload(), &payload[..], "length {len}");
                }
            }
        }
    }

    /// A frame too large to buffer whole comes out in pieces (the first as soon as its
    /// header is known), none larger than a chunk; forwarded piece by piece with one key,
    /// the bytes are exactly the whole frame masked with that key.
    #[tokio::test]
    async fn large_frames_stream_in_pieces_masked_by_position() {
        let len = 3 * STREAM_MIN + 3;
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let wire = encode(false, OpCode::Text, &payload, Some([9, 8, 7, 6]));
        let mut d = FrameDecoder::new(BytesMut::new(), true, 1 << 20);
        let mut io = &wire[..];
        let (mut unmasked, mut out, mut pieces) = (Vec::new(), Vec::new(), 0);
        for _ in 0..1000 {
            let mut piece = std::future::poll_fn(|cx| d.poll_frame(&mut io, &mut Unbounded, cx))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (piece.starts(), piece.frame_len()),
                (pieces == 0, len as u64)
            );
            assert!(piece.len() <= STREAM_CHUNK, "piece of {}", piece.len());
            pieces += 1;
            let ends = piece.ends();
            unmasked.extend_from_slice(piece.payload());
            out.extend_from_slice(&piece.into_wire(Some([1, 2, 3, 4])));
            if ends {
                break;
            }
        }
        assert!(pieces > 3, "{pieces} pieces");
        assert_eq!(unmasked, payload);
        assert_eq!(
            out,
            &encode(false, OpCode::Text, &payload, Some([1, 2, 3, 4]))[..]
        );
        assert!(!d.inside_frame());
    }
}
