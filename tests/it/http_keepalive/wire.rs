//! The wire-level harness of the keep-alive tests: a raw backend answering each request
//! head with exact bytes, and a client connection that writes requests by hand and reads
//! each response with its framing (length, chunked with its trailer section, or to the
//! close) kept apart from its decoded body.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use crate::support::ca::TestCa;
use crate::support::http::{Head, read_head};
use crate::support::proxy::{Proxy, TEST_DEFAULTS, route, yaml};
use crate::support::within;

/// What a scripted backend writes for one request head.
pub(super) struct Reply {
    pub(super) bytes: Vec<u8>,
    /// Close the connection once written (ends a close-delimited body).
    pub(super) close: bool,
}

impl Reply {
    pub(super) fn keep(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            close: false,
        }
    }

    pub(super) fn then_close(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            bytes: bytes.into(),
            close: true,
        }
    }
}

/// A raw backend answering every request head with exact bytes; records the heads.
pub(super) struct Scripted {
    pub(super) addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Every request head, in the order they came.
    pub(super) heads: Arc<Mutex<Vec<Head>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    pub(super) async fn start(answer: impl Fn(&Head) -> Reply + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let (a, h) = (accepted.clone(), heads.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (h, answer) = (h.clone(), answer.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    // Bodyless requests only: each head is answered as it comes.
                    while let Some(head) = read_head(&mut tcp, &mut buf).await {
                        let reply = answer(&head);
                        h.lock().unwrap().push(head);
                        if tcp.write_all(&reply.bytes).await.is_err() || reply.close {
                            return;
                        }
                    }
                });
            }
        });
        Scripted {
            addr,
            accepted,
            heads,
            task,
        }
    }

    /// A backend answering every request with the same bytes, keeping its connection.
    pub(super) async fn always(bytes: &'static str) -> Scripted {
        Scripted::start(move |_| Reply::keep(bytes)).await
    }

    /// A backend answering a `HEAD` with `bytes` and anything else with [`NEXT`].
    pub(super) async fn head_or_next(bytes: &'static str) -> Scripted {
        Scripted::start(move |head| {
            if head.start_line.starts_with("HEAD") {
                Reply::keep(bytes)
            } else {
                Reply::keep(NEXT)
            }
        })
        .await
    }

    /// The URL a route names it by.
    pub(super) fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Connections accepted so far.
    pub(super) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The request targets seen so far, in order.
    pub(super) fn targets(&self) -> Vec<String> {
        let heads = self.heads.lock().unwrap();
        heads.iter().map(|h| h.target().to_string()).collect()
    }
}

/// The answer a scripted backend gives the tests' follow-up requests: `next`, by length.
pub(super) const NEXT: &str = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext";

/// A backend of one connection that the test scripts by hand (holding, dribbling or
/// withholding its answers): `script` gets the connection once accepted; gives the URL a
/// route names the backend by.
pub(super) async fn held_backend<S, F>(script: S) -> String
where
    S: FnOnce(TcpStream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        script(tcp).await;
    });
    format!("ws://{addr}/")
}

/// Keeps a held backend's connection until the test is done with it (wsgate closes it,
/// or 30 s pass).
pub(super) async fn hold_open(tcp: &mut TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(30), tcp.read(&mut [0u8; 16])).await;
}

/// wsgate with the route `app` on `/app` to the backend at `url`, and `extra` top-level
/// YAML.
pub(super) async fn proxy_at(url: &str, extra: &str) -> Proxy {
    Proxy::start(&(yaml(&route("app", "/app", url, "")) + extra)).await
}

/// wsgate with the route `app` on `/app` to `backend`, and `extra` top-level YAML.
pub(super) async fn proxy_to(backend: &Scripted, extra: &str) -> Proxy {
    proxy_at(&backend.url(), extra).await
}

/// [`proxy_to`], and a plain client connection to it.
pub(super) async fn proxy_and_client(
    backend: &Scripted,
    extra: &str,
) -> (Proxy, Client<TcpStream>) {
    let proxy = proxy_to(backend, extra).await;
    let client = Client::open(proxy.addr()).await;
    (proxy, client)
}

/// How a response body was framed to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body by the rules (HEAD, 1xx, 204, 304).
    None,
    Length(usize),
    Chunked,
    /// Neither: the body ran to the connection's end.
    Close,
}

/// One response as the client read it.
#[derive(Debug)]
pub(super) struct Answer {
    /// 1xx heads before the final one.
    pub(super) informational: Vec<Head>,
    pub(super) head: Head,
    /// The final head exactly as written, its blank line included.
    pub(super) raw_head: String,
    pub(super) framing: Framing,
    /// The decoded body.
    pub(super) body: Vec<u8>,
    /// The chunked framing exactly as written (sizes, extensions, trailer section).
    pub(super) raw_chunked: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub(super) trailers: Vec<String>,
}

impl Answer {
    /// The final status code.
    pub(super) fn status(&self) -> u16 {
        self.head.status()
    }

    /// The decoded body as text.
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection read and written by hand.
pub(super) struct Client<S> {
    pub(super) io: S,
    pub(super) buf: Vec<u8>,
}

impl Client<TcpStream> {
    /// A plain TCP connection to `addr`.
    pub(super) async fn open(addr: SocketAddr) -> Client<TcpStream> {
        let io = within("connect to wsgate", TcpStream::connect(addr))
            .await
            .unwrap();
        Client {
            io,
            buf: Vec::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Writes `bytes` as they are.
    pub(super) async fn send(&mut self, bytes: &str) {
        self.io.write_all(bytes.as_bytes()).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// `GET {path}` with Host `wsgate.test` and `extra` header lines.
    pub(super) async fn get(&mut self, path: &str, extra: &str) {
        self.send(&get(path, extra)).await;
    }

    /// Reads more bytes into the buffer; false at EOF (or reset).
    pub(super) async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.io.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next CRLF-ended line, without its CRLF.
    async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.drain(..at + 2).collect::<Vec<u8>>();
                return line[..at].to_vec();
            }
            assert!(
                self.fill().await,
                "EOF inside a chunked body: {:?}",
                self.buf
            );
        }
    }

    /// The next `n` bytes.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "EOF with {n} body bytes expected");
        }
        self.buf.drain(..n).collect()
    }

    /// The next response (1xx heads collected first); `head_request` when it answers a HEAD.
    pub(super) async fn answer(&mut self, head_request: bool) -> Answer {
        within("a response", self.answer_inner(head_request)).await
    }

    async fn answer_inner(&mut self, head_request: bool) -> Answer {
        let mut informational = Vec::new();
        let (head, raw_head) = loop {
            while !self.buf.windows(4).any(|w| w == b"\r\n\r\n") {
                assert!(self.fill().await, "wsgate closed without a response");
            }
            let end = self
                .buf
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or(0)
                + 4;
            let raw = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            let head = read_head(&mut self.io, &mut self.buf)
                .await
                .expect("a head already buffered");
            match head.status() {
                100..=199 => informational.push(head),
                _ => break (head, raw),
            }
        };
        let mut answer = Answer {
            informational,
            raw_head,
            framing: Framing::None,
            body: Vec::new(),
            raw_chunked: Vec::new(),
            trailers: Vec::new(),
            head,
        };
        let status = answer.status();
        if head_request || status == 204 || status == 304 {
            return answer;
        }
        let te = answer.head.header("transfer-encoding").map(str::to_owned);
        let cl = answer.head.header("content-length").map(str::to_owned);
        if let Some(te) = te {
            assert_eq!(te, "chunked", "{:?}", answer.head);
            answer.framing = Framing::Chunked;
            self.chunked(&mut answer).await;
        } else if let Some(cl) = cl {
            let n: usize = cl.parse().expect("numeric content-length");
            answer.framing = Framing::Length(n);
            answer.body = self.take(n).await;
        } else {
            answer.framing = Framing::Close;
            while self.fill().await {}
            answer.body = std::mem::take(&mut self.buf);
        }
        answer
    }

    /// Reads a chunked body into `answer`, keeping its framing as written.
    async fn chunked(&mut self, answer: &mut Answer) {
        for _ in 0..10_000 {
            let size_line = self.line().await;
            answer.raw_chunked.extend_from_slice(&size_line);
            answer.raw_chunked.extend_from_slice(b"\r\n");
            let text = String::from_utf8_lossy(&size_line).into_owned();
            let hex = text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(hex, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {text:?}"));
            if size == 0 {
                loop {
                    let line = self.line().await;
                    answer.raw_chunked.extend_from_slice(&line);
                    answer.raw_chunked.extend_from_slice(b"\r\n");
                    if line.is_empty() {
                        return;
                    }
                    answer
                        .trailers
                        .push(String::from_utf8_lossy(&line).into_owned());
                }
            }
            let data = self.take(size).await;
            answer.raw_chunked.extend_from_slice(&data);
            answer.body.extend_from_slice(&data);
            let end = self.take(2).await;
            assert_eq!(end, b"\r\n", "chunk not followed by CRLF");
            answer.raw_chunked.extend_from_slice(b"\r\n");
        }
        panic!("more than 10000 chunks");
    }

    /// Expects wsgate to close the idle connection with nothing more written, as a
    /// `header_read_timeout` of 1 s does: between 0.5 s and 4 s from now.
    pub(super) async fn expect_idle_close(&mut self) {
        let idle = Instant::now();
        self.expect_eof().await;
        let took = idle.elapsed();
        assert!(took >= Duration::from_millis(500), "closed after {took:?}");
        assert!(took < Duration::from_millis(4000), "closed after {took:?}");
    }

    /// Expects wsgate to close the connection with nothing more written.
    pub(super) async fn expect_eof(&mut self) {
        let more = within("wsgate closing the connection", async {
            while self.fill().await {}
            std::mem::take(&mut self.buf)
        })
        .await;
        assert!(
            more.is_empty(),
            "bytes before the close: {:?}",
            String::from_utf8_lossy(&more)
        );
    }
}

/// `GET {path}` with Host `wsgate.test` and `extra` header lines (each ending in CRLF).
pub(super) fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: wsgate.test\r\n{extra}\r\n")
}

/// A backend answering each request with its own target as a length-framed body.
pub(super) async fn echo_target() -> Scripted {
    Scripted::start(|head| {
        let t = head.target();
        Reply::keep(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{t}",
            t.len()
        ))
    })
    .await
}

/// Sends `GET {path}` on `client` and expects a 200 with body `body`.
pub(super) async fn ok_on<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    path: &str,
    body: &str,
) {
    client.get(path, "").await;
    let a = client.answer(false).await;
    assert_eq!((a.status(), a.text().as_str()), (200, body), "{a:?}");
}

/// One TLS listener (the CA's `localhost` leaf) with the route `app` to `backend`.
pub(super) fn tls_config(ca: &TestCa, backend: &Scripted) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {}\n{TEST_DEFAULTS}routes:\n{}",
        ca.listener_tls_yaml(),
        route("app", "/app", &backend.url(), "")
    )
}

/// A TLS client connection to `addr` offering ALPN `http/1.1` only.
pub(super) async fn tls_client(ca: &TestCa, addr: SocketAddr) -> Client<TlsStream<TcpStream>> {
    let tcp = within("connect to wsgate", TcpStream::connect(addr))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut offer = (*ca.client_config()).clone();
    offer.alpn_protocols = vec![b"http/1.1".to_vec()];
    let io = within(
        "TLS to wsgate",
        tokio_rustls::TlsConnector::from(Arc::new(offer)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake");
    Client {
        io,
        buf: Vec::new(),
    }
}
