//! A plain response's body on its way from the backend: read as its framing says,
//! chunked data moved to the front for re-chunking on the client hop, and the
//! connection given back to the pool when the body ended cleanly.

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::backend::http::raw::{Framing, READ};
use crate::proto::h1_scan::ChunkedBody;
use crate::shared::pool::Backend;
use crate::shared::stream::Stream;

/// Why a response body could not be forwarded whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The backend sent nothing for the idle-body timeout.
    #[error("backend response body idle past http_idle_timeout")]
    Idle,
    /// The connection failed or closed before the body's end.
    #[error("backend response body cut: {0}")]
    Io(#[from] std::io::Error),
    /// A chunked body broke its syntax.
    #[error("backend sent a malformed chunked body")]
    Chunked,
}

impl BodyError {
    /// Whether the backend went quiet (the access log's `timeout`).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self, BodyError::Idle)
    }
}

/// A response body on its way from the backend, read into a buffer whose front is what
/// is to be forwarded next. The connection goes back to the pool when the body ends on a
/// keep-alive connection with nothing after it.
pub(crate) struct RawBody {
    stream: Option<Stream>,
    buf: BytesMut,
    framing: Framing,
    /// Length framing: bytes still to come. Chunked: its follower.
    left: u64,
    chunked: ChunkedBody,
    /// Bytes at `buf`'s front handed out last, dropped before the next piece.
    ready: usize,
    /// Of those, the first `piece` are the body's data (chunked: the chunks' data moved
    /// to the front, their lines and trailers left out).
    piece: usize,
    keep_alive: bool,
    done: bool,
    idle_timeout: Duration,
    give_back: GiveBack,
}

/// Where a connection goes when its body ended cleanly.
pub(super) struct GiveBack {
    /// The backend whose idle list takes it.
    pub(super) backend: Arc<Backend>,
    /// The most idle connections the list keeps.
    pub(super) idle_max: usize,
    /// How long it may wait there.
    pub(super) idle_timeout: Duration,
    /// Closes it on shutdown.
    pub(super) shutdown: CancellationToken,
}

impl RawBody {
    /// The body of a response framed as `framing`, read from `stream` after `buf` (what
    /// was read past the head); `keep_alive`: the connection may be given back after it.
    pub(super) fn new(
        stream: Stream,
        buf: BytesMut,
        framing: Framing,
        keep_alive: bool,
        idle_timeout: Duration,
        give_back: GiveBack,
    ) -> RawBody {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        RawBody {
            stream: Some(stream),
            buf,
            framing,
            left,
            chunked: ChunkedBody::default(),
            ready: 0,
            piece: 0,
            keep_alive,
            done: false,
            idle_timeout,
            give_back,
        }
    }

    /// The body bytes already read, if any (empty: the body is over), without waiting,
    /// and whether the body ended with them; as [`RawBody::next_done`] otherwise.
    pub(crate) fn buffered_done(&mut self) -> Option<Result<(&[u8], bool), BodyError>> {
        self.advance();
        match self.ready_now() {
            Ok(Some(())) => Some(Ok((&self.buf[..self.piece], self.done))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Waits until more of the body is buffered and returns it (empty: the body is over)
    /// and whether the body ended with it, to be forwarded before the next call, which
    /// drops it from the buffer.
    pub(crate) async fn next_done(&mut self) -> Result<(&[u8], bool), BodyError> {
        self.next().await?;
        Ok((&self.buf[..self.piece], self.done))
    }

    async fn next(&mut self) -> Result<(), BodyError> {
        self.advance();
        // Bounded: each turn reads at least a byte, or ends.
        loop {
            if self.ready_now()?.is_some() {
                return Ok(());
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(BodyError::Io(std::io::ErrorKind::NotConnected.into()));
            };
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ);
            }
            let read = read_within(stream, &mut self.buf, self.idle_timeout).await;
            match read {
                Some(Ok(0)) if self.framing == Framing::Close => {
                    self.done = true;
                    self.keep_alive = false;
                }
                Some(Ok(0)) => {
                    self.stream = None;
                    return Err(BodyError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.stream = None;
                    return Err(BodyError::Io(e));
                }
                None => {
                    self.stream = None;
                    return Err(BodyError::Idle);
                }
            }
        }
    }

    /// Drops the bytes handed out last from the buffer.
    fn advance(&mut self) {
        self.piece = 0;
        let n = std::mem::take(&mut self.ready);
        if n == self.buf.len() {
            self.buf.clear();
        } else {
            let _ = self.buf.split_to(n);
        }
    }

    /// Whether a piece of the body (empty once it is over) is at the buffer's front now
    /// (`ready` and `piece` say how much); `None` when more must be read.
    fn ready_now(&mut self) -> Result<Option<()>, BodyError> {
        if self.done {
            self.finish();
            return Ok(Some(()));
        }
        if self.buf.is_empty() && self.framing != Framing::Empty {
            return Ok(None);
        }
        let (consumed, piece) = self.take_buffered()?;
        if piece == 0 && !self.done {
            // Only chunk lines: dropped, and more is read.
            let _ = self.buf.split_to(consumed);
            return Ok(None);
        }
        (self.ready, self.piece) = (consumed, piece);
        if self.done {
            self.finish();
        }
        Ok(Some(()))
    }

    /// How much of the buffer's front is followed and how much of that is data, per the
    /// framing (and whether the body ended); chunk data is moved to the front.
    fn take_buffered(&mut self) -> Result<(usize, usize), BodyError> {
        let have = self.buf.len();
        match self.framing {
            Framing::Empty => {
                self.done = true;
                Ok((0, 0))
            }
            Framing::Close => Ok((have, have)),
            Framing::Length(_) => {
                let n = usize::try_from(self.left).map_or(have, |left| left.min(have));
                self.left -= n as u64;
                self.done = self.left == 0;
                Ok((n, n))
            }
            Framing::Chunked => {
                let (mut at, mut data) = (0, 0);
                // Bounded by the buffer: each step follows at least a byte.
                while at < have {
                    let (n, d, ended) = match self.chunked.step(&self.buf[at..]) {
                        Ok(step) => step,
                        Err(_) => {
                            self.stream = None;
                            return Err(BodyError::Chunked);
                        }
                    };
                    if d > 0 {
                        self.buf.copy_within(at..at + d, data);
                        data += d;
                    }
                    at += n;
                    if ended {
                        self.done = true;
                        break;
                    }
                }
                Ok((at, data))
            }
        }
    }

    /// The body ended: the connection goes back to the pool if nothing follows it.
    fn finish(&mut self) {
        let clean = self.buf.len() == self.ready;
        if self.stream.is_none() {
            return;
        }
        if let Some(stream) = self.stream.take()
            && self.keep_alive
            && clean
        {
            let g = &self.give_back;
            g.backend
                .raw_idle
                .put(stream, g.idle_max, g.idle_timeout, &g.shutdown);
        }
    }
}

/// One read into `buf`, given up after `timeout` (zero: never); `None` when it timed out.
/// The timer is made only when the read must wait.
async fn read_within(
    stream: &mut Stream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Option<std::io::Result<usize>> {
    let read = stream.read_buf(buf);
    tokio::pin!(read);
    if let Poll::Ready(r) = poll_once(read.as_mut()).await {
        return Some(r);
    }
    if timeout.is_zero() {
        return Some(read.await);
    }
    tokio::time::timeout(timeout, read).await.ok()
}

/// Polls `fut` once: its result if it is ready at once, else `Pending` (it stays pinned
/// by the caller, to be awaited on).
pub(crate) async fn poll_once<F: std::future::Future + Unpin>(mut fut: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx))).await
}
