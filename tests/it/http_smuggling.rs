//! Request-smuggling shapes on plain requests: refused with 400 before any backend is
//! contacted, by hyper's parser or (for the shapes hyper would reframe silently) by
//! wsgate's guard beneath it; the backend never sees two requests where the client sent
//! one. More on the guard in `http_guard`.

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

/// Content-Length together with Transfer-Encoding, in either order: hyper's server would
/// drop the length and read the body as chunked (RFC 9112 §6.3), so wsgate's guard beneath
/// it refuses the head: 400, the connection closed, the bytes after it (a smuggled
/// request) never read as a request, and the backend never contacted.
#[tokio::test]
async fn content_length_with_chunked_is_refused_and_the_connection_closed() {
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
        assert_eq!(first.status(), 400);
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
    assert_eq!(backend.stats.accepted(), 0, "a backend was contacted");
}

/// Bare LF line ends: hyper's parser (httparse) takes them as line ends, and a peer
/// downstream might not; the guard refuses the head with 400 and nothing is forwarded.
#[tokio::test]
async fn bare_lf_line_ends_are_refused() {
    let (proxy, backend) = setup().await;
    let res = http::exchange(proxy.addr(), "GET /app/lf HTTP/1.1\nHost: a\nX-A: 1\n\n").await;
    assert_eq!(res.status(), 400, "{res:?}");
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(backend.stats.accepted(), 0, "a backend was contacted");
}
