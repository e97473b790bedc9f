//! HTTP/2 floods against a TLS listener: rapid reset (CVE-2023-44487), CONTINUATION
//! without end, and resets that would leave backend handshakes behind. The flooding
//! connection gets GOAWAY and is closed, what it can make wsgate hold is bounded, and a
//! normal client is served afterwards.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::{Method, Request};
use tokio_tungstenite::tungstenite::Message;

use crate::support::backend::RawBackend;
use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::h2client::{H2Conn, tls, tls_yaml};
use crate::support::h2raw::{
    CANCEL, CONTINUATION, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, HEADERS, RST_STREAM, RawH2,
    connect_block, frame, literal,
};
use crate::support::proxy::{Proxy, route};
use crate::support::{eventually, eventually_some, within};

const ECHO: &str = "  - name: echo\n    path: /echo\n    echo: true\n";

/// A normal client still gets through: an h2 WebSocket and an HTTP/1.1 one.
async fn still_serves(proxy: &Proxy, ca: &TestCa) {
    let mut conn = H2Conn::connect(proxy.addr(), ca).await;
    let mut ws = conn.websocket("/echo").await;
    ws.send(Message::text("still here")).await.unwrap();
    let echo = within("echo", ws.next()).await.expect("open").expect("ok");
    assert_eq!(echo, Message::text("still here"));
    let (mut h1, _) = client::connect_tls(proxy.addr(), "/echo", ca).await;
    h1.send(Message::text("h1 too")).await.unwrap();
    assert_eq!(client::next(&mut h1).await, Message::text("h1 too"));
}

#[tokio::test]
async fn a_rapid_reset_flood_gets_goaway_enhance_your_calm() {
    let ca = TestCa::new();
    let proxy = Proxy::start(&tls_yaml(&ca, "", "", ECHO)).await;
    let mut raw = RawH2::connect(proxy.addr(), &ca).await;
    let block = connect_block("/echo");
    let mut pairs = 0u32;
    // Up to 5000 streams opened and reset at once, 100 pairs per write.
    'flood: for batch in 0..50u32 {
        let mut bytes = Vec::new();
        for i in 0..100u32 {
            let stream = 2 * (batch * 100 + i) + 1;
            bytes.extend(frame(HEADERS, END_HEADERS, stream, &block));
            bytes.extend(frame(RST_STREAM, 0, stream, &CANCEL.to_be_bytes()));
        }
        if !raw.send(&bytes).await {
            break 'flood;
        }
        pairs += 100;
    }
    let seen = raw.seen().await;
    assert_eq!(
        seen.goaway,
        Some(ENHANCE_YOUR_CALM),
        "{seen:?} after {pairs} pairs"
    );
    assert!(seen.closed);
    still_serves(&proxy, &ca).await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn a_continuation_flood_gets_goaway_after_a_few_frames() {
    let ca = TestCa::new();
    let proxy = Proxy::start(&tls_yaml(&ca, "", "", ECHO)).await;
    let mut raw = RawH2::connect(proxy.addr(), &ca).await;
    // A header block that never ends: HEADERS without END_HEADERS, then CONTINUATION
    // frames of valid HPACK (1 KiB fields) for up to 10 MiB.
    let start = frame(HEADERS, END_STREAM, 1, &connect_block("/echo"));
    assert!(raw.send(&start).await);
    let field = literal("x-flood", &[b'a'; 1000]);
    let piece = frame(CONTINUATION, 0, 1, &field);
    let mut sent = 0usize;
    for _ in 0..10_000 {
        if !raw.send(&piece).await {
            break;
        }
        sent += 1;
    }
    let seen = raw.seen().await;
    assert!(
        seen.goaway.is_some(),
        "{seen:?} after {sent} CONTINUATION frames"
    );
    assert!(seen.closed);
    assert!(sent < 10_000, "wsgate stopped the flood (sent {sent})");
    still_serves(&proxy, &ca).await;
    proxy.assert_drained().await;
}

/// A stream reset once wsgate accepted it (so not counted as a rapid reset) must not leave
/// its backend handshake running: the place it holds is free at once.
#[tokio::test]
async fn a_reset_extended_connect_frees_its_backend_handshake_at_once() {
    let ca = TestCa::new();
    // A backend that takes the connection and never answers the upgrade.
    let backend = RawBackend::start(|conn| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(conn);
    })
    .await;
    let routes = route(
        "app",
        "/app",
        &backend.url("/ws"),
        "    handshake_timeout: 30s\n",
    ) + ECHO;
    let proxy = Proxy::start(&tls_yaml(
        &ca,
        "",
        "limits: { max_connections: 3 }\n",
        &routes,
    ))
    .await;
    let (io, _) = tls(proxy.addr(), &ca, &[b"h2"]).await;
    let (client, conn) = within("h2 handshake", h2::client::handshake(io))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = |path: &str| {
        Request::builder()
            .method(Method::CONNECT)
            .uri(format!("https://localhost:{}{path}", proxy.addr().port()))
            .header("sec-websocket-version", "13")
            .extension(h2::ext::Protocol::from_static("websocket"))
            .body(())
            .unwrap()
    };
    for n in 1..=3 {
        let mut client = within("ready", client.clone().ready()).await.unwrap();
        let (_res, mut send) = client.send_request(request("/app"), false).unwrap();
        eventually("the backend got the upgrade", || {
            backend.log.requests().len() == n
        })
        .await;
        send.send_reset(h2::Reason::CANCEL);
    }
    // All three places would stay taken for the 30 s handshake timeout.
    let status = eventually_some("an upgrade gets a place again", || {
        let client = client.clone();
        let req = request("/echo");
        async move {
            let mut client = client.ready().await.ok()?;
            let (res, mut send) = client.send_request(req, false).ok()?;
            let status = res.await.ok()?.status();
            send.send_reset(h2::Reason::CANCEL);
            (status != 503).then_some(status)
        }
    })
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn malformed_requests_past_max_local_error_reset_streams_get_goaway() {
    let ca = TestCa::new();
    let top = "http2: { max_local_error_reset_streams: 5 }\n";
    let proxy = Proxy::start(&tls_yaml(&ca, "", top, ECHO)).await;
    let mut raw = RawH2::connect(proxy.addr(), &ca).await;
    // An extended CONNECT without :path is malformed (RFC 8441 §4): h2 resets the stream
    // itself with PROTOCOL_ERROR, and counts it.
    let mut block = literal(":method", b"CONNECT");
    block.push(0x87); // :scheme https
    block.extend(literal(":authority", b"localhost"));
    block.extend(literal(":protocol", b"websocket"));
    for i in 0..20u32 {
        if !raw
            .send(&frame(HEADERS, END_HEADERS, 2 * i + 1, &block))
            .await
        {
            break;
        }
    }
    let seen = raw.seen().await;
    // Only streams that h2 reset itself count toward this limit: its GOAWAY says each
    // malformed request was a stream error, not a connection error.
    assert_eq!(seen.goaway, Some(ENHANCE_YOUR_CALM), "{seen:?}");
    still_serves(&proxy, &ca).await;
}
