//! One stream type for every hop: plain TCP, TLS from a client, an HTTP/2 stream from a
//! client, TLS to a backend, or in-memory.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

/// A connection to a client or a backend.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS accepted from a client.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// One HTTP/2 stream of a client, after its extended CONNECT (RFC 8441): reads are
    /// its DATA, a write shutdown is its END_STREAM. Boxed, so the hops that are not h2
    /// do not pay for its size.
    H2(Box<TokioIo<Upgraded>>),
    /// TLS to a `wss://` backend.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// The in-process echo backend.
    Memory(DuplexStream),
}

impl Stream {
    /// Whether an idle connection has something to read (bytes, or the peer's FIN or
    /// reset): a backend connection kept for reuse is then no longer usable. Asks tokio's
    /// readiness without a system call: a read that came back short cleared it, so only
    /// what arrived since sets it (a read that filled its buffer exactly leaves it set,
    /// and a good connection is then dropped: a lost reuse, never a broken request).
    pub fn idle_readable(&self) -> bool {
        let tcp = match self {
            Stream::Tcp(s) => s,
            Stream::ClientTls(s) => s.get_ref().0,
            Stream::ServerTls(s) => s.get_ref().0,
            Stream::H2(_) | Stream::Memory(_) => return false,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        tcp.poll_read_ready(&mut cx).is_ready()
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Tcp($s) => $e,
            Stream::ServerTls($s) => $e,
            Stream::H2($s) => $e,
            Stream::ClientTls($s) => $e,
            Stream::Memory($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::ServerTls(s) => s.is_write_vectored(),
            Stream::H2(s) => s.is_write_vectored(),
            Stream::ClientTls(s) => s.is_write_vectored(),
            Stream::Memory(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// Whether `e`, from a read or write on an HTTP/2 stream, says that the stream was reset
/// (RST_STREAM, any reason) rather than that the connection failed.
pub fn is_stream_reset(e: &io::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|e| e as _);
    // Bounded: hyper wraps h2's error once or twice.
    for _ in 0..4 {
        let Some(c) = cause else { return false };
        if let Some(h2) = c.downcast_ref::<h2::Error>() {
            return h2.is_reset() || (h2.reason().is_some() && !h2.is_go_away());
        }
        cause = c.source();
    }
    false
}
