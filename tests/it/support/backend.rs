//! Scriptable backends listening on 127.0.0.1:0.
//!
//! [`Backend`] is a real WebSocket server (tokio-tungstenite) whose handshake
//! answer and session are chosen by the test; [`RawBackend`] reads the
//! request head and hands the bare socket to the test, for hostile answers
//! and hostile frames. Both record what they saw in a shared [`Log`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Message, http};

use super::frame::Frame;
use super::http::{Head, read_head};
use super::raw::FrameStream;

/// Most connections a test backend accepts before its loop ends.
const MAX_CONNECTIONS: usize = 2_000;

/// Any socket a backend session can run on (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The WebSocket a [`Backend`] session gets.
pub type BackendWs = WebSocketStream<Box<dyn Io>>;

/// What a backend saw: TCP accepts, request heads, messages and raw frames.
#[derive(Default)]
pub struct Log {
    accepted: AtomicUsize,
    requests: Mutex<Vec<Head>>,
    messages: Mutex<Vec<Message>>,
    frames: Mutex<Vec<Frame>>,
    events: Mutex<Vec<&'static str>>,
}

impl Log {
    /// TCP connections accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Request heads received, in order.
    pub fn requests(&self) -> Vec<Head> {
        self.requests.lock().unwrap().clone()
    }

    /// The only request head received (panics if there is not exactly one).
    pub fn request(&self) -> Head {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "backend requests: {requests:?}");
        requests.into_iter().next().unwrap()
    }

    /// Messages received by [`Backend`] sessions, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Frames received by [`RawBackend`] sessions, in order.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames.lock().unwrap().clone()
    }

    pub fn record(&self, message: Message) {
        self.messages.lock().unwrap().push(message);
    }

    pub fn record_frame(&self, frame: Frame) {
        self.frames.lock().unwrap().push(frame);
    }

    /// Notes that something happened (e.g. `"eof"`), for [`Log::saw`].
    pub fn mark(&self, event: &'static str) {
        self.events.lock().unwrap().push(event);
    }

    /// Whether [`Log::mark`] was called with `event`.
    pub fn saw(&self, event: &'static str) -> bool {
        self.events.lock().unwrap().contains(&event)
    }

    /// The received messages that carry data (Text/Binary).
    pub fn data_messages(&self) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.is_text() || m.is_binary())
            .collect()
    }

    /// The first Close received, as (code, reason).
    pub fn close(&self) -> Option<(u16, String)> {
        self.messages().into_iter().find_map(|m| match m {
            Message::Close(Some(f)) => Some((u16::from(f.code), f.reason.to_string())),
            _ => None,
        })
    }
}

/// How a [`Backend`] answers the upgrade request.
#[derive(Clone, Debug)]
pub enum Handshake {
    /// 101, choosing no subprotocol.
    Accept,
    /// 101, choosing this subprotocol, whatever was offered.
    Protocol(&'static str),
    /// 101 with these extra response headers.
    Headers(Vec<(&'static str, &'static str)>),
    /// This status and body (with Content-Length), no upgrade.
    Refuse(u16, &'static str),
}

/// A tokio-tungstenite backend running one session per connection.
pub struct Backend {
    pub addr: SocketAddr,
    pub log: Arc<Log>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts a backend; `tls` makes it a `wss://` backend.
    // The handshake callback's signature is tungstenite's `Callback`; its error type is large.
    #[allow(clippy::result_large_err)]
    pub async fn start<F, Fut>(
        handshake: Handshake,
        tls: Option<Arc<rustls::ServerConfig>>,
        session: F,
    ) -> Backend
    where
        F: Fn(BackendWs, Arc<Log>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let session = Arc::new(session);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                task_log.accepted.fetch_add(1, Ordering::SeqCst);
                let (log, session, handshake, acceptor) = (
                    task_log.clone(),
                    session.clone(),
                    handshake.clone(),
                    acceptor.clone(),
                );
                tokio::spawn(async move {
                    let io: Box<dyn Io> = match acceptor {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => Box::new(tls),
                            Err(_) => return,
                        },
                        None => Box::new(tcp),
                    };
                    let callback =
                        |req: &Request, resp: Response| answer(&log, &handshake, req, resp);
                    if let Ok(ws) = tokio_tungstenite::accept_hdr_async(io, callback).await {
                        session(ws, log).await;
                    }
                });
            }
        });
        Backend { addr, log, task }
    }

    /// A plain echo backend.
    pub async fn echo() -> Backend {
        Backend::start(Handshake::Accept, None, echo).await
    }

    /// A backend refusing every upgrade with `status` and `body`.
    pub async fn refuse(status: u16, body: &'static str) -> Backend {
        Backend::start(Handshake::Refuse(status, body), None, echo).await
    }

    /// `ws://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

/// Records the request and answers it as `handshake` says (tungstenite's `Callback`).
#[allow(clippy::result_large_err)]
fn answer(
    log: &Log,
    handshake: &Handshake,
    req: &Request,
    mut resp: Response,
) -> Result<Response, ErrorResponse> {
    let mut head = Head {
        start_line: format!("{} {} {:?}", req.method(), req.uri(), req.version()),
        ..Head::default()
    };
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        head.headers.push((name.as_str().to_string(), value));
    }
    log.requests.lock().unwrap().push(head);
    let headers = resp.headers_mut();
    match handshake {
        Handshake::Accept => {}
        Handshake::Protocol(p) => {
            headers.insert("sec-websocket-protocol", p.parse().unwrap());
        }
        Handshake::Headers(extra) => {
            for (name, value) in extra {
                headers.append(*name, value.parse().unwrap());
            }
        }
        Handshake::Refuse(status, body) => {
            let refusal = http::Response::builder()
                .status(*status)
                .header("content-type", "text/plain")
                .header("content-length", body.len())
                .header("x-backend-refusal", "yes")
                .body(Some(body.to_string()))
                .unwrap();
            return Err(refusal);
        }
    }
    Ok(resp)
}

/// Session: record every message and echo data messages until the end.
/// (tungstenite answers Ping and Close by itself.)
pub async fn echo(mut ws: BackendWs, log: Arc<Log>) {
    for _ in 0..1_000_000 {
        let Some(Ok(msg)) = ws.next().await else {
            return;
        };
        log.record(msg.clone());
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

/// Session: record messages until the connection ends, send nothing.
pub async fn record(mut ws: BackendWs, log: Arc<Log>) {
    for _ in 0..1_000_000 {
        let Some(Ok(msg)) = ws.next().await else {
            return;
        };
        log.record(msg);
    }
}

/// A connection to a [`RawBackend`], its request head already read.
pub struct RawConn {
    pub request: Head,
    pub io: FrameStream<TcpStream>,
    pub log: Arc<Log>,
}

impl RawConn {
    /// The correct `Sec-WebSocket-Accept` for this request.
    pub fn accept_key(&self) -> String {
        let key = self.request.header("sec-websocket-key").unwrap_or_default();
        super::http::accept_key(key)
    }

    /// Answers a correct 101, with `extra` header lines.
    pub async fn accept(&mut self, extra: &[(&str, &str)]) {
        let accept = self.accept_key();
        super::http::write_101(self.io.io(), &accept, extra).await;
    }

    /// Records every frame received until EOF, a Close, or a quiet [`super::STEP`].
    /// Answers a Close with the same payload, as a polite server would.
    pub async fn record_until_close(&mut self) {
        for _ in 0..10_000 {
            let frame = match self.io.try_recv(super::STEP).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return self.log.mark("eof"),
                Err(_) => return self.log.mark("quiet or garbage"),
            };
            self.log.record_frame(frame.clone());
            if frame.opcode == super::frame::CLOSE {
                self.io
                    .send(Frame::new(super::frame::CLOSE, frame.payload))
                    .await;
                return;
            }
        }
    }
}

/// A backend speaking raw bytes after reading the request head.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub log: Arc<Log>,
    task: JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    pub async fn start<F, Fut>(session: F) -> RawBackend
    where
        F: Fn(RawConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let session = Arc::new(session);
        let task_log = log.clone();
        let task = tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                task_log.accepted.fetch_add(1, Ordering::SeqCst);
                let (log, session) = (task_log.clone(), session.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let Some(request) = read_head(&mut tcp, &mut buf).await else {
                        return;
                    };
                    log.requests.lock().unwrap().push(request.clone());
                    let io = FrameStream::new(tcp, buf, false);
                    session(RawConn { request, io, log }).await;
                });
            }
        });
        RawBackend { addr, log, task }
    }

    /// `ws://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}
