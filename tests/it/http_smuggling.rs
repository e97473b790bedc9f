//! Request-smuggling shapes on plain requests: refused with 400 before any backend is
//! contacted, or (where hyper's server reframes the request itself) reaching the backend
//! as exactly the one request the client sent, and never two.

use hyper::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::http::{self, read_head};
use crate::support::http_backend::{self as hb, HttpBackend};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::within;

async fn setup() -> (Proxy, HttpBackend) {
    let backend = HttpBackend::start(|_req| async { Response::new(hb::text("ok")) }).await;
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/"), ""))).await;
    (proxy, backend)
}

/// Each shape, with a smuggled second request behind it.
const REFUSED: &[(&str, &str)] = &[
    (
        "TE not ending in chunked",
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE gzip alone",
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE obfuscated",
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE twice, last not chunked",
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE on HTTP/1.0",
        "POST /app HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "differing Content-Lengths",
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    ),
    (
        "differing Content-Length list",
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 5\r\n\r\nabcde",
    ),
    (
        "signed Content-Length",
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\nabcd",
    ),
    (
        "hex Content-Length",
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 0x4\r\n\r\nabcd",
    ),
    (
        "negative Content-Length",
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    ),
    (
        "Content-Length with a space inside",
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 4 4\r\n\r\nabcd",
    ),
    (
        "obs-fold",
        "GET /app HTTP/1.1\r\nHost: a\r\nX-A: a\r\n b\r\n\r\n",
    ),
    (
        "space before the colon",
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length : 4\r\n\r\nabcd",
    ),
    (
        "tab before the colon",
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "bare CR in a value",
        "GET /app HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n",
    ),
    (
        "NUL in a value",
        "GET /app HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n",
    ),
    (
        "space in the target",
        "GET /app /x HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
];

/// Before plain forwarding these got 426 (the upgrade's answer); now each is hyper's 400,
/// and the backend is never contacted.
#[tokio::test]
async fn every_malformed_framing_is_400_and_the_backend_sees_nothing() {
    let (proxy, backend) = setup().await;
    for (what, head) in REFUSED {
        let smuggled = format!("{head}GET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
        let res = http::exchange(proxy.addr(), smuggled).await;
        assert_eq!(res.status(), 400, "{what}: {res:?}");
    }
    assert_eq!(backend.stats.accepted(), 0, "a backend was contacted");
}

/// Content-Length together with Transfer-Encoding: hyper's server drops the Content-Length,
/// reads the body as chunked (RFC 9112 §6.3) and closes the connection after its answer
/// (it sees both headers, wsgate does not: they are gone by the time the request reaches
/// the service). The backend gets one chunked request; the bytes after the chunked body,
/// a smuggled request, are never read as one.
#[tokio::test]
async fn content_length_with_chunked_reaches_the_backend_as_one_chunked_request_then_closes() {
    let (proxy, backend) = setup().await;
    for head in [
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n",
    ] {
        let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let bytes = format!("{head}0\r\n\r\nGET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
        tcp.write_all(bytes.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let first = within("the answer", read_head(&mut tcp, &mut buf))
            .await
            .unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(first.header("connection"), Some("close"), "{first:?}");
        let mut rest = Vec::new();
        let _ = within("EOF", tcp.read_to_end(&mut rest)).await;
        assert!(
            !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
            "a second answer"
        );
        assert!(
            !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
            "a second answer"
        );
    }
    let seen = backend.stats.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(s.target, "/");
        assert!(s.all("content-length").is_empty(), "{s:?}");
    }
}

/// Bare LF line ends: hyper's parser (httparse) takes them as line ends, so the request
/// is the one it reads; wsgate writes it to the backend with CRLF, so no peer downstream
/// can read it otherwise. One request in, one request out.
#[tokio::test]
async fn bare_lf_line_ends_reach_the_backend_as_the_one_request_hyper_read() {
    let (proxy, backend) = setup().await;
    let res = http::exchange(proxy.addr(), "GET /app/lf HTTP/1.1\nHost: a\nX-A: 1\n\n").await;
    assert_eq!(res.status(), 200, "{res:?}");
    let seen = backend.stats.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/lf");
    assert_eq!(seen[0].one("x-a").as_deref(), Some("1"));
}
