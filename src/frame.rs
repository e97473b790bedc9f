//! The relay's WebSocket frame codec (RFC 6455 §5): one frame at a time, checked per hop.
//!
//! wsgate owns this codec instead of using fastwebsockets' reader because the relay must
//! check the masking direction of every frame, and fastwebsockets 0.10 neither checks it
//! nor exposes the mask; owning it also lets a frame be read into one buffer sized from
//! its header and lets `read_frame` be cancel-safe (it only awaits `read_buf`).

use bytes::{Buf, BytesMut};
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Size of the per-thread scratch buffer that reads land in when the connection has no
/// room of its own (one read of a typical burst).
const SCRATCH_BYTES: usize = 16 * 1024;
/// With at least this much free room in its own buffer (a large frame being read), a
/// connection reads straight into it and skips the copy out of the scratch buffer.
const DIRECT_READ_MIN: usize = 4 * 1024;
/// An empty connection buffer larger than this is released rather than kept for later.
const KEEP_MAX: usize = 64 * 1024;

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

/// One frame with its payload already unmasked.
#[derive(Debug)]
pub struct Frame {
    /// Final fragment of its message.
    pub fin: bool,
    /// Frame type.
    pub opcode: OpCode,
    /// Unmasked payload.
    pub payload: BytesMut,
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

/// Reads frames from one peer, enforcing the hop's masking direction and the frame limit.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    expect_masked: bool,
    max_frame: u64,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// `expect_masked` is true when the peer is a client; `leftover` is what was read past the handshake.
    pub fn new(io: R, leftover: BytesMut, expect_masked: bool, max_frame: u64) -> Self {
        FrameReader {
            io,
            buf: leftover,
            expect_masked,
            max_frame,
        }
    }

    /// Reads the next frame; `Ok(None)` on a clean end of stream between frames.
    ///
    /// Cancel-safe: the only await is `read_buf`, which loses nothing when dropped.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(Some(frame));
            }
            if self.buf.is_empty() && self.buf.capacity() > KEEP_MAX {
                self.buf = BytesMut::new();
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
        }
    }

    /// Reads once, into the connection's own room when it has plenty (a large frame is
    /// arriving), else into the thread's scratch buffer, copying out what arrived.
    ///
    /// Cancel-safe: bytes are only taken from the socket inside a single poll.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.capacity() - self.buf.len() >= DIRECT_READ_MIN {
            return self.io.read_buf(&mut self.buf).await;
        }
        let (io, buf) = (&mut self.io, &mut self.buf);
        std::future::poll_fn(|cx| {
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut read = ReadBuf::new(&mut scratch[..]);
                match std::pin::Pin::new(&mut *io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        buf.extend_from_slice(read.filled());
                        Poll::Ready(Ok(read.filled().len()))
                    }
                    other => other.map(|r| r.map(|()| 0)),
                }
            })
        })
        .await
    }

    /// Gives back the stream (what was buffered is dropped).
    pub fn into_inner(self) -> R {
        self.io
    }

    /// Takes one complete frame from the buffer, or says how much more to wait for.
    fn parse(&mut self) -> Result<Option<Frame>, FrameError> {
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
        if self.buf.len() < total {
            // Grow towards the frame's size as it arrives, capped so a header that lies costs nothing.
            let want = (total - self.buf.len()).min(256 * 1024);
            if self.buf.capacity() - self.buf.len() < want {
                self.buf.reserve(want);
            }
            return Ok(None);
        }
        let mut key = [0u8; 4];
        if masked {
            key.copy_from_slice(&self.buf[key_at..key_at + 4]);
        }
        let mut payload = self.buf.split_to(total);
        payload.advance(header);
        if masked {
            apply_mask(&mut payload, key);
        }
        Ok(Some(Frame {
            fin,
            opcode,
            payload,
        }))
    }
}

/// Writes frames to one peer, masking them when the peer is a server.
pub struct FrameWriter<W> {
    io: W,
    mask: bool,
    rng: u64,
    closed: bool,
    timeout: std::time::Duration,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// `mask` is true when the peer is a server (we are its client); a frame that cannot be
    /// written within `timeout` (zero: no limit) fails with `TimedOut`, so a peer that
    /// stopped reading cannot hold the connection forever.
    pub fn new(io: W, mask: bool, seed: u64, timeout: std::time::Duration) -> Self {
        FrameWriter {
            io,
            mask,
            rng: seed | 1,
            closed: false,
            timeout,
        }
    }

    /// Writes one frame and flushes it; the payload is masked in place when this hop needs it.
    pub async fn write_frame(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: &mut [u8],
    ) -> std::io::Result<()> {
        let mut head = [0u8; 14];
        head[0] = (fin as u8) << 7 | opcode as u8;
        let len = payload.len();
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
        if self.mask {
            let key = self.next_key();
            head[1] |= 0x80;
            head[n..n + 4].copy_from_slice(&key);
            n += 4;
            apply_mask(payload, key);
        }
        let mut out = Buf::chain(&head[..n], &payload[..]);
        let write = async {
            self.io.write_all_buf(&mut out).await?;
            self.io.flush().await
        };
        let mut write = std::pin::pin!(write);
        // Almost every write completes at once: the timer (and its state in every pump)
        // is only set up for a write that has to wait.
        if let Poll::Ready(result) = futures_poll_once(write.as_mut()).await {
            return result;
        }
        if self.timeout.is_zero() {
            return write.await;
        }
        match Box::pin(tokio::time::timeout(self.timeout, write)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer did not read within write_timeout",
            )),
        }
    }

    /// Sends FIN (and TLS close_notify) once; later calls do nothing.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        self.io.shutdown().await
    }

    /// xorshift64*: masking keys only need to be unpredictable to a script choosing payloads
    /// far from here, and the seed comes from the OS per connection.
    fn next_key(&mut self) -> [u8; 4] {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let v = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((v >> 32) as u32).to_ne_bytes()
    }
}

/// Polls `fut` once, handing back its result if it is ready.
async fn futures_poll_once<F: std::future::Future + Unpin>(mut fut: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx))).await
}

/// XORs `data` with the 4-byte masking key (RFC 6455 §5.3), eight bytes at a time.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_matches_bytewise() {
        let key = [1, 2, 3, 250];
        let orig: Vec<u8> = (0..37u8).collect();
        let mut fast = orig.clone();
        apply_mask(&mut fast, key);
        let slow: Vec<u8> = orig
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(fast, slow);
    }

    async fn read_one(bytes: &[u8], masked: bool, max: u64) -> Result<Option<Frame>, FrameError> {
        let mut r = FrameReader::new(bytes, BytesMut::new(), masked, max);
        r.read_frame().await
    }

    #[tokio::test]
    async fn round_trip_masked_and_checks() {
        let mut out = Vec::new();
        let mut w = FrameWriter::new(&mut out, true, 42, std::time::Duration::ZERO);
        let mut payload = vec![7u8; 70_000];
        w.write_frame(true, OpCode::Binary, &mut payload)
            .await
            .unwrap();
        let f = read_one(&out, true, 1 << 20).await.unwrap().unwrap();
        assert_eq!(
            (f.fin, f.opcode, f.payload.len()),
            (true, OpCode::Binary, 70_000)
        );
        assert!(f.payload.iter().all(|&b| b == 7));
        // Same bytes at a server reader: masked frames from a server are a violation.
        assert!(matches!(
            read_one(&out, false, 1 << 20).await,
            Err(FrameError::Masking)
        ));
        assert!(matches!(
            read_one(&out, true, 1000).await,
            Err(FrameError::TooLarge(70_000))
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
}
