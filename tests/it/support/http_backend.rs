//! A plain HTTP/1.1 backend on hyper's server, scripted by a handler, counting the
//! connections it accepted and saw end, for the plain-forwarding tests.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Body type of the backend's responses.
pub type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A whole response body.
pub fn text(s: impl Into<Bytes>) -> Body {
    Full::new(s.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body fed chunk by chunk from the returned sender; it ends when the sender is dropped.
pub fn channel() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk)),
            rx,
        ))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

/// What the backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: hyper::HeaderMap,
}

impl Seen {
    /// Every value of a header, as text.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The one value of a header (panics when there are several).
    pub fn one(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(all.len() <= 1, "{name} more than once: {all:?}");
        all.into_iter().next()
    }
}

/// Counters and the requests seen.
#[derive(Default)]
pub struct Stats {
    pub accepted: AtomicUsize,
    pub closed: AtomicUsize,
    pub seen: Mutex<Vec<Seen>>,
}

impl Stats {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A running backend; stops when dropped.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    secure: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpBackend {
    /// Serves `handler` on plain TCP.
    pub async fn start<F, Fut>(handler: F) -> HttpBackend
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        HttpBackend::serve(handler, None).await
    }

    /// Serves `handler` on TLS with `tls`.
    pub async fn start_tls<F, Fut>(handler: F, tls: Arc<rustls::ServerConfig>) -> HttpBackend
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        HttpBackend::serve(handler, Some(tls)).await
    }

    async fn serve<F, Fut>(handler: F, tls: Option<Arc<rustls::ServerConfig>>) -> HttpBackend
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let secure = tls.is_some();
        let s = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let (s, handler, tls) = (s.clone(), handler.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = {
                        let s = s.clone();
                        hyper::service::service_fn(move |req: Request<Incoming>| {
                            s.seen.lock().unwrap().push(Seen {
                                method: req.method().to_string(),
                                target: req.uri().to_string(),
                                headers: req.headers().clone(),
                            });
                            let fut = handler(req);
                            async move { Ok::<_, Infallible>(fut.await) }
                        })
                    };
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder.timer(TokioTimer::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(tcp), service)
                                .with_upgrades()
                                .await;
                        }
                        Some(tls) => {
                            if let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await
                            {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                    s.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        HttpBackend {
            addr,
            stats,
            secure,
            task,
        }
    }

    /// The backend's URL as a route names it (`ws://` or `wss://`, reached as http(s)).
    pub fn url(&self, path: &str) -> String {
        if self.secure {
            format!("wss://localhost:{}{path}", self.addr.port())
        } else {
            format!("ws://{}{path}", self.addr)
        }
    }
}

/// A response read whole by [`fetch`].
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Fetched {
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `req` on a new client connection (hyper's client) to `addr` and reads the answer whole.
pub async fn fetch(addr: SocketAddr, req: Request<Body>) -> Fetched {
    super::within("plain HTTP request", fetch_inner(addr, req)).await
}

/// [`fetch`] waiting up to `patience` (for answers held on purpose, under a paused clock).
pub async fn fetch_for(
    addr: SocketAddr,
    req: Request<Body>,
    patience: std::time::Duration,
) -> Fetched {
    tokio::time::timeout(patience, fetch_inner(addr, req))
        .await
        .expect("plain HTTP request within its patience")
}

async fn fetch_inner(addr: SocketAddr, req: Request<Body>) -> Fetched {
    {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to proxy");
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("client handshake");
        tokio::spawn(conn);
        let res = send.send_request(req).await.expect("response");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Fetched {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }
}

/// A request for `path` with Host `wsgate.test` and `body`.
pub fn get(path: &str) -> Request<Body> {
    with_body("GET", path, text(""))
}

/// A request with a method, a path, Host `wsgate.test`, and a body.
pub fn with_body(method: &str, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "wsgate.test")
        .body(body)
        .expect("valid request")
}

/// A 101 answer to a WebSocket upgrade request (the tunnel is then dropped), or `None`
/// when `req` is no upgrade.
pub fn switch(req: &Request<Incoming>) -> Option<Response<Body>> {
    let key = req.headers().get("sec-websocket-key")?.to_str().ok()?;
    Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", super::http::accept_key(key))
        .body(text(""))
        .ok()
}

/// A gate handlers wait at until the test opens it.
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }
}

impl Gate {
    /// Waits until [`Gate::open`].
    pub async fn pass(&self) {
        let _ = self.0.acquire().await.map(|p| p.forget());
    }
    /// Lets `n` waiters through.
    pub fn open(&self, n: usize) {
        self.0.add_permits(n);
    }
}

/// A plain GET of `/app` in flight when shutdown begins: a backend that holds it until
/// the proxy is cancelled, then answers `finished`. Returns the backend, the proxy and
/// the client's request, which has not been awaited.
pub async fn request_in_flight_at_shutdown() -> (
    HttpBackend,
    super::proxy::Proxy,
    tokio::task::JoinHandle<Fetched>,
) {
    use super::proxy::{Proxy, route, yaml};
    let gate = Gate::default();
    let g = gate.clone();
    let backend = HttpBackend::start(move |_req| {
        let g = g.clone();
        async move {
            g.pass().await;
            Response::new(text("finished"))
        }
    })
    .await;
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/"), ""))).await;
    let addr = proxy.addr();
    let client = tokio::spawn(async move { fetch(addr, get("/app")).await });
    super::eventually("the request at the backend", || {
        backend.stats.seen().len() == 1
    })
    .await;
    proxy.cancel();
    gate.open(1);
    (backend, proxy, client)
}
