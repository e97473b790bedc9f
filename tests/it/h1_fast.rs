//! The first request of an HTTP/1.1 connection read without hyper when it is a WebSocket
//! upgrade (`ingress::h1_fast`): what it reads past, in pieces and at its limits, and what
//! it hands on to hyper (a plain first request, after which an upgrade on the same
//! connection still switches).

use std::time::Duration;

use hyper::Response;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::frame::Frame;
use crate::support::http::{self, read_body, read_head};
use crate::support::http_backend::{self as hb, HttpBackend};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::raw::{self, FrameStream};
use crate::support::within;

const ECHO: &str = "  - { name: echo, path: /echo, echo: true }\n";

/// The echo route, with `limits` (YAML lines) added.
async fn echo_proxy(limits: &str) -> Proxy {
    Proxy::start(&(yaml(ECHO) + limits)).await
}

/// Asserts a 101 with the right accept key on `head`.
fn assert_switched(head: &http::Head) {
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(
        head.header("sec-websocket-accept"),
        Some(http::accept_key(http::KEY).as_str()),
        "{head:?}"
    );
}

/// One echo round trip and the close handshake on an upgraded stream.
async fn echo_and_close(ws: &mut FrameStream<TcpStream>) {
    ws.send(Frame::text("ping?").masked()).await;
    assert_eq!(ws.recv_frame().await.payload, b"ping?");
    ws.expect_close_after_sending(1000, "").await;
}

#[tokio::test]
async fn a_plain_request_then_an_upgrade_on_the_same_connection_switches() {
    let backend = HttpBackend::start(|req| async move {
        hb::switch(&req).unwrap_or_else(|| Response::new(hb::text("hello")))
    })
    .await;
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/base"), ""))).await;
    within("a plain request, then an upgrade", async {
        let mut io = TcpStream::connect(proxy.addr()).await.unwrap();
        let plain = format!("GET /app/x HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr());
        io.write_all(plain.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut first = read_head(&mut io, &mut buf).await.expect("a response");
        read_body(&mut io, &mut first, std::mem::take(&mut buf)).await;
        assert_eq!(first.status(), 200, "{first:?}");
        assert_eq!(first.body_text(), "hello");
        assert_ne!(first.header("connection"), Some("close"), "{first:?}");
        let upgrade = http::upgrade_request(proxy.addr(), "/app/ws", &[]);
        io.write_all(upgrade.as_bytes()).await.unwrap();
        let second = read_head(&mut io, &mut buf).await.expect("an answer");
        assert_switched(&second);
    })
    .await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn an_upgrade_head_written_a_byte_at_a_time_switches() {
    let proxy = echo_proxy("").await;
    let request = http::upgrade_request(proxy.addr(), "/echo", &[]);
    let mut ws = within("a trickled upgrade", async {
        let mut io = TcpStream::connect(proxy.addr()).await.unwrap();
        io.set_nodelay(true).unwrap();
        for b in request.as_bytes() {
            io.write_all(&[*b]).await.unwrap();
            io.flush().await.unwrap();
        }
        let mut buf = Vec::new();
        let head = read_head(&mut io, &mut buf).await.expect("an answer");
        assert_switched(&head);
        FrameStream::new(io, buf, true)
    })
    .await;
    echo_and_close(&mut ws).await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn a_frame_sent_with_the_head_is_relayed_after_the_101() {
    let proxy = echo_proxy("").await;
    let mut bytes = http::upgrade_request(proxy.addr(), "/echo", &[]).into_bytes();
    bytes.extend(Frame::text("early").masked().encode());
    let mut ws = within("an upgrade and a frame in one write", async {
        let mut io = TcpStream::connect(proxy.addr()).await.unwrap();
        io.write_all(&bytes).await.unwrap();
        let mut buf = Vec::new();
        let head = read_head(&mut io, &mut buf).await.expect("an answer");
        assert_switched(&head);
        FrameStream::new(io, buf, true)
    })
    .await;
    assert_eq!(ws.recv_frame().await.payload, b"early");
    echo_and_close(&mut ws).await;
    proxy.assert_drained().await;
}

/// An upgrade request of exactly `len` bytes, padded with one header line.
fn upgrade_of_len(proxy: &Proxy, len: usize) -> String {
    let bare = http::upgrade_request(proxy.addr(), "/echo", &[("X-Pad", "")]).len();
    let pad = "a".repeat(len - bare);
    let request = http::upgrade_request(proxy.addr(), "/echo", &[("X-Pad", &pad)]);
    assert_eq!(request.len(), len);
    request
}

#[tokio::test]
async fn a_head_of_exactly_max_header_bytes_switches_and_one_byte_more_is_431() {
    let proxy = echo_proxy("limits: { max_header_bytes: 16KiB }\n").await;
    let at_limit = http::exchange(proxy.addr(), upgrade_of_len(&proxy, 16 * 1024)).await;
    assert_switched(&at_limit);
    let over = http::exchange(proxy.addr(), upgrade_of_len(&proxy, 16 * 1024 + 1)).await;
    assert_eq!(over.status(), 431, "{over:?}");
    proxy.assert_drained().await;
}

#[tokio::test(start_paused = true)]
async fn a_head_that_never_ends_is_closed_at_header_read_timeout_without_an_answer() {
    let proxy = Proxy::builder(&(yaml(ECHO) + "limits: { header_read_timeout: 700ms }\n"))
        .paused()
        .start()
        .await;
    let mut io = TcpStream::connect(proxy.addr()).await.unwrap();
    let started = Instant::now();
    // A whole request line and one header, then nothing.
    io.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = raw::read_to_eof(&mut io).await;
    let cut = started.elapsed();
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert!(
        cut >= Duration::from_millis(700) && cut < Duration::from_millis(1500),
        "closed after {cut:?}"
    );
    proxy.assert_drained().await;
}

#[tokio::test]
async fn a_refused_upgrade_is_answered_as_hyper_answers_it_and_closed() {
    let proxy = echo_proxy("").await;
    // A key that is not 16 bytes in base64: wsgate's 400, sent by hyper.
    let request = http::upgrade_request(proxy.addr(), "/echo", &[]).replace(http::KEY, "c2hvcnQ=");
    let refused = http::exchange(proxy.addr(), request).await;
    assert_eq!(refused.status(), 400, "{refused:?}");
    assert_eq!(refused.header("connection"), Some("close"), "{refused:?}");
    assert!(refused.header("date").is_some(), "{refused:?}");
    assert_eq!(
        refused.body_text(),
        "Sec-WebSocket-Key must be 16 bytes in base64\n"
    );
    proxy.assert_drained().await;
}

/// Bodyless plain requests are served without hyper (`ingress::h1_plain`) until one of
/// another shape: a POST with a body hands the connection to hyper, which answers it and
/// the GET after it; every answer on the one connection has its own right length and body.
#[tokio::test]
async fn bodyless_requests_then_a_post_then_a_get_share_one_client_connection() {
    use http_body_util::BodyExt;
    let backend = HttpBackend::start(|req| async move {
        let method = req.method().to_string();
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        let body = body.unwrap_or_default();
        Response::new(hb::text(format!(
            "{method}:{}",
            String::from_utf8_lossy(&body)
        )))
    })
    .await;
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/"), ""))).await;
    within("four requests on one connection", async {
        let mut io = TcpStream::connect(proxy.addr()).await.unwrap();
        let host = proxy.addr();
        let steps = [
            (
                format!("GET /app/a HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                "GET:",
                "4",
            ),
            (
                format!("HEAD /app/a HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                "",
                "5",
            ),
            (
                format!("POST /app/b HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\n\r\nabc"),
                "POST:abc",
                "8",
            ),
            (
                format!("GET /app/c HTTP/1.1\r\nHost: {host}\r\n\r\n"),
                "GET:",
                "4",
            ),
        ];
        for (req, body, length) in steps {
            io.write_all(req.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            let mut res = read_head(&mut io, &mut buf).await.expect("an answer");
            assert_eq!(res.status(), 200, "{req:?}: {res:?}");
            assert_eq!(
                res.header("content-length"),
                Some(length),
                "{req:?}: {res:?}"
            );
            assert!(res.header("date").is_some(), "{res:?}");
            if !req.starts_with("HEAD") {
                read_body(&mut io, &mut res, buf).await;
            }
            assert_eq!(res.body_text(), body, "{req:?}");
        }
    })
    .await;
}
