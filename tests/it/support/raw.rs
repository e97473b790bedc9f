//! Raw WebSocket peers: a frame stream over any socket, and a client that
//! performs the upgrade by hand so that it can then write anything at all.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{self, CLOSE, Frame, MASK};
use super::http::{self, Head};
use super::patience;

/// Why [`FrameStream::try_recv`] returned no frame.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing arrived in time.
    Timeout,
    /// The bytes were not a frame we could decode.
    Garbage(String),
}

/// A WebSocket peer that reads and writes frames exactly as told.
pub struct FrameStream<S> {
    io: S,
    buf: Vec<u8>,
    /// Client role: [`FrameStream::send`] masks frames.
    client: bool,
}

/// A raw client connected to wsgate over plain TCP.
pub type RawClient = FrameStream<TcpStream>;

impl<S: AsyncRead + AsyncWrite + Unpin> FrameStream<S> {
    /// Wraps `io`; `leftover` holds bytes already read past the HTTP head.
    pub fn new(io: S, leftover: Vec<u8>, client: bool) -> FrameStream<S> {
        FrameStream {
            io,
            buf: leftover,
            client,
        }
    }

    /// Sends a frame, masked with [`MASK`] in the client role unless it
    /// already says how it is masked.
    pub async fn send(&mut self, mut frame: Frame) {
        if self.client && frame.mask.is_none() {
            frame.mask = Some(MASK);
        }
        self.send_exact(frame).await;
    }

    /// Sends a frame with exactly the masking it carries.
    pub async fn send_exact(&mut self, frame: Frame) {
        self.write_bytes(&frame.encode()).await;
    }

    /// Writes arbitrary bytes. Errors are ignored: the peer may have closed.
    pub async fn write_bytes(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// Next frame, `Ok(None)` at EOF (or reset).
    pub async fn try_recv(&mut self, timeout: Duration) -> Result<Option<Frame>, RecvError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match frame::decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(e) => return Err(RecvError::Garbage(e)),
            }
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return Err(RecvError::Timeout),
                Ok(Ok(0)) | Ok(Err(_)) if self.buf.is_empty() => return Ok(None),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Err(RecvError::Garbage(format!(
                        "EOF inside a frame, {} bytes pending: {:02x?}",
                        self.buf.len(),
                        &self.buf[..self.buf.len().min(32)]
                    )));
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Next frame within [`patience`]; `None` at EOF. Panics on timeout or garbage.
    pub async fn recv(&mut self) -> Option<Frame> {
        match self.try_recv(patience()).await {
            Ok(frame) => frame,
            Err(e) => panic!("raw peer: no frame: {e:?}"),
        }
    }

    /// Next frame, which must exist.
    pub async fn recv_frame(&mut self) -> Frame {
        self.recv()
            .await
            .expect("raw peer: EOF where a frame was expected")
    }

    /// Reads frames until a Close (skipping nothing: any other frame panics),
    /// checks it is legal on the wire and returns it.
    pub async fn recv_close(&mut self) -> Frame {
        let frame = self.recv_frame().await;
        assert_eq!(frame.opcode, CLOSE, "expected a Close frame, got {frame:?}");
        frame::assert_wire_close(&frame);
        frame
    }

    /// Expects a Close with `code`, answers it with the same code (if the
    /// peer is still there) and expects the connection to end.
    pub async fn expect_close(&mut self, code: u16) -> Frame {
        let close = self.recv_close().await;
        assert_eq!(
            close.close_code(),
            Some(code),
            "close code (reason {:?})",
            close.close_reason()
        );
        self.send(Frame::close(code, "")).await;
        self.expect_eof().await;
        close
    }

    /// Sends a Close, expects the peer's reply with the same code, then EOF.
    pub async fn expect_close_after_sending(&mut self, code: u16, reason: &str) -> Frame {
        self.send(Frame::close(code, reason)).await;
        let reply = self.recv_close().await;
        assert_eq!(reply.close_code(), Some(code), "close reply {reply:?}");
        self.expect_eof().await;
        reply
    }

    /// Expects EOF within [`patience`], with no frame before it.
    pub async fn expect_eof(&mut self) {
        match self.try_recv(patience()).await {
            Ok(None) => {}
            other => panic!("expected the connection to end, got {other:?}"),
        }
    }

    /// The underlying socket.
    pub fn io(&mut self) -> &mut S {
        &mut self.io
    }
}

/// Performs the upgrade by hand and returns the response head and the
/// stream, whatever the status.
pub async fn upgrade_with(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
) -> (Head, RawClient) {
    super::within("raw upgrade", async {
        let mut io = TcpStream::connect(addr).await.expect("connect to proxy");
        io.write_all(http::upgrade_request(addr, path, extra).as_bytes())
            .await
            .expect("write upgrade request");
        let mut buf = Vec::new();
        let head = http::read_head(&mut io, &mut buf)
            .await
            .expect("connection closed before the upgrade response");
        (head, FrameStream::new(io, buf, true))
    })
    .await
}

/// Performs the upgrade by hand and asserts a correct 101.
pub async fn upgrade(addr: SocketAddr, path: &str) -> RawClient {
    let (head, stream) = upgrade_with(addr, path, &[]).await;
    assert_eq!(head.status(), 101, "upgrade refused: {head:?}");
    assert_eq!(
        head.header("sec-websocket-accept"),
        Some(http::accept_key(http::KEY).as_str()),
        "wrong Sec-WebSocket-Accept"
    );
    stream
}

/// Reads from `io` until EOF, returning everything read (bounded by [`patience`]).
pub async fn read_to_eof<S: AsyncRead + Unpin>(io: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(patience(), io.read_to_end(&mut out)).await;
    out
}
