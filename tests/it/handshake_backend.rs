//! The backend handshake happens first: the client gets 101 only after the
//! backend did, and any other answer (or none) is relayed or mapped to
//! 502/504 with no tunnel.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::backend::{Backend, Handshake, RawBackend, RawConn, echo};
use crate::support::frame::Frame;
use crate::support::http::{self, KEY};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::{client, eventually, raw, within};

/// A proxy with route `app` (`/app`) to `backend_url`, with `extra` route lines.
async fn proxy_to(backend_url: &str, extra: &str) -> Proxy {
    Proxy::with_routes(&route("app", "/app", backend_url, extra)).await
}

#[tokio::test]
async fn backend_refusal_is_relayed_unchanged_and_no_tunnel() {
    let backend = Backend::refuse(403, "go away").await;
    let proxy = proxy_to(&backend.url("/ws"), "").await;

    let mut tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let upgrade = http::upgrade_request(proxy.addr(), "/app", &[]);
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut head = within("refusal", http::read_head(&mut tcp, &mut buf))
        .await
        .expect("a response");
    http::read_body(&mut tcp, &mut head, buf).await;

    assert_eq!(head.status(), 403, "{head:?}");
    assert_eq!(head.body_text(), "go away");
    assert_eq!(
        head.header("x-backend-refusal"),
        Some("yes"),
        "the backend's headers are relayed too: {head:?}"
    );
    // No tunnel: nothing more arrives, and the connection ends.
    let rest = raw::read_to_eof(&mut tcp).await;
    assert!(rest.is_empty(), "bytes after the refusal: {rest:02x?}");
    assert_eq!(backend.log.requests().len(), 1);
    proxy.assert_drained().await;
}

#[tokio::test]
async fn backend_200_and_426_are_relayed_and_early_bytes_never_reach_it() {
    for (status, reason) in [(200u16, "OK"), (426, "Upgrade Required")] {
        let backend = RawBackend::start(move |mut conn: RawConn| async move {
            let body = format!("no websocket here ({status})");
            let resp = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nSec-WebSocket-Version: 13\r\n\r\n{body}",
                body.len()
            );
            conn.io.write_bytes(resp.as_bytes()).await;
            conn.record_until_close().await;
        })
        .await;
        let proxy = proxy_to(&backend.url("/ws"), "").await;

        // The client pipelines a frame right behind its request, before any 101.
        let mut request = http::upgrade_request(proxy.addr(), "/app", &[]).into_bytes();
        request.extend(Frame::text("early").masked().encode());
        let head = http::exchange(proxy.addr(), request).await;

        assert_eq!(head.status(), status, "{head:?}");
        assert_eq!(head.body_text(), format!("no websocket here ({status})"));
        eventually("backend connection closed", || backend.log.saw("eof")).await;
        assert_eq!(
            backend.log.frames(),
            vec![],
            "early client bytes reached the backend"
        );
        proxy.assert_drained().await;
    }
}

#[tokio::test]
async fn unreachable_backend_is_502() {
    let addr = crate::support::dead_addr().await;
    let proxy = proxy_to(&format!("ws://{addr}/ws"), "").await;
    let head = http::exchange(
        proxy.addr(),
        http::upgrade_request(proxy.addr(), "/app", &[]),
    )
    .await;
    assert_eq!(head.status(), 502, "{head:?}");
    proxy.assert_drained().await;
}

#[tokio::test(start_paused = true)]
async fn silent_backend_is_504_after_handshake_timeout() {
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        // Accept TCP, read the request, never answer; note when wsgate gives up.
        conn.record_until_close().await;
    })
    .await;
    let routes = route(
        "app",
        "/app",
        &backend.url("/ws"),
        "    handshake_timeout: 300ms\n",
    );
    let proxy = Proxy::builder(&yaml(&routes)).paused().start().await;

    let started = tokio::time::Instant::now();
    let head = http::exchange(
        proxy.addr(),
        http::upgrade_request(proxy.addr(), "/app", &[]),
    )
    .await;
    let waited = started.elapsed();

    assert_eq!(head.status(), 504, "{head:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "504 after {waited:?}, handshake_timeout is 300ms"
    );
    eventually("wsgate closed the backend connection", || {
        backend.log.saw("eof")
    })
    .await;
    proxy.assert_drained().await;
}

/// What a broken backend puts in its 101 instead of a correct answer.
struct Broken101 {
    what: &'static str,
    /// Extra request header lines the client sends.
    client_headers: &'static [(&'static str, &'static str)],
    /// Builds the backend's response from the correct accept value.
    response: fn(&str) -> String,
}

const BROKEN: &[Broken101] = &[
    Broken101 {
        what: "wrong Sec-WebSocket-Accept",
        client_headers: &[],
        response: |_| ok101("AAAAAAAAAAAAAAAAAAAAAAAAAAA=", ""),
    },
    Broken101 {
        what: "missing Sec-WebSocket-Accept",
        client_headers: &[],
        response: |_| {
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .into()
        },
    },
    Broken101 {
        what: "Upgrade: h2c",
        client_headers: &[],
        response: |accept| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
        },
    },
    Broken101 {
        what: "no Connection: upgrade",
        client_headers: &[],
        response: |accept| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
        },
    },
    Broken101 {
        what: "subprotocol when none was offered",
        client_headers: &[],
        response: |accept| ok101(accept, "Sec-WebSocket-Protocol: chat\r\n"),
    },
    Broken101 {
        what: "subprotocol not among those offered",
        client_headers: &[("Sec-WebSocket-Protocol", "a, b")],
        response: |accept| ok101(accept, "Sec-WebSocket-Protocol: c\r\n"),
    },
    Broken101 {
        what: "extension nobody offered",
        client_headers: &[],
        response: |accept| ok101(accept, "Sec-WebSocket-Extensions: permessage-deflate\r\n"),
    },
];

fn ok101(accept: &str, extra: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn broken_101_from_backend_is_502_and_no_tunnel() {
    for case in BROKEN {
        let make = case.response;
        let backend = RawBackend::start(move |mut conn: RawConn| async move {
            let resp = make(&conn.accept_key());
            conn.io.write_bytes(resp.as_bytes()).await;
            conn.record_until_close().await;
        })
        .await;
        let proxy = proxy_to(&backend.url("/ws"), "").await;
        let request = http::upgrade_request(proxy.addr(), "/app", case.client_headers);
        let head = http::exchange(proxy.addr(), request).await;
        assert_eq!(head.status(), 502, "{}: {head:?}", case.what);
        eventually(case.what, || backend.log.saw("eof")).await;
        assert_eq!(
            backend.log.frames(),
            vec![],
            "{}: frames reached the backend",
            case.what
        );
        proxy.assert_drained().await;
    }
}

#[tokio::test]
async fn correct_raw_101_is_accepted() {
    // Positive control for the cases above: the same raw backend, answering correctly.
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept(&[]).await;
        conn.record_until_close().await;
    })
    .await;
    let mut proxy = proxy_to(&backend.url("/ws"), "").await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    client.send(Frame::text("hi")).await;
    client.send(Frame::close(1000, "")).await;
    let close = client.recv_close().await;
    assert_eq!(close.close_code(), Some(1000));
    client.expect_eof().await;
    let frames = backend.log.frames();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0].payload, b"hi");
    assert!(
        frames.iter().all(|f| f.mask.is_some()),
        "wsgate must mask towards the backend"
    );
    let report = proxy.next_report().await;
    assert_eq!(report.route, "app");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn subprotocol_chosen_by_backend_reaches_client() {
    let backend = Backend::start(Handshake::Protocol("b"), None, echo).await;
    let mut proxy = proxy_to(&backend.url("/ws"), "").await;
    let mut request = proxy.url("/app").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "a, b".parse().unwrap());
    let (mut ws, response) = client::connect(request).await;

    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap()),
        Some("b")
    );
    let offered = backend.log.request();
    let offered = offered.header_all("sec-websocket-protocol").join(",");
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    assert_eq!(
        offered,
        ["a", "b"],
        "the client's offer reaches the backend"
    );

    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    let report = proxy.next_report().await;
    assert_eq!(report.subprotocol.as_deref(), Some("b"), "{report:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn client_gets_101_only_after_backend_did() {
    // The backend holds its 101 until the test releases it; meanwhile the
    // client must not have been answered.
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let backend = RawBackend::start(move |mut conn: RawConn| {
        let mut release = release_rx.clone();
        async move {
            let _ = within("release", release.wait_for(|r| *r)).await;
            conn.accept(&[]).await;
            conn.record_until_close().await;
        }
    })
    .await;
    let proxy = proxy_to(&backend.url("/ws"), "").await;

    let mut tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let request = http::upgrade_request(proxy.addr(), "/app", &[]);
    tcp.write_all(request.as_bytes()).await.unwrap();
    eventually("backend got the request", || {
        backend.log.requests().len() == 1
    })
    .await;
    let mut buf = Vec::new();
    let early = tokio::time::timeout(
        Duration::from_millis(200),
        http::read_head(&mut tcp, &mut buf),
    )
    .await;
    assert!(
        early.is_err(),
        "client answered before the backend: {early:?}"
    );

    release_tx.send(true).unwrap();
    let head = within("101", http::read_head(&mut tcp, &mut buf))
        .await
        .unwrap();
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(
        head.header("sec-websocket-accept"),
        Some(http::accept_key(KEY).as_str())
    );
    drop(tcp);
    proxy.assert_drained().await;
}
