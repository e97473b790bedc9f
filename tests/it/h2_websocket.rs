//! WebSockets over HTTP/2 (RFC 8441): an extended CONNECT is validated and routed like an
//! HTTP/1.1 upgrade, the backend hop stays an HTTP/1.1 upgrade with wsgate's own key, the
//! client gets 200, and each stream is a relay of its own.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::support::backend::{Backend, Handshake, record};
use crate::support::ca::TestCa;
use crate::support::h2client::{H2Conn, H2Ws, tls_yaml};
use crate::support::proxy::{Proxy, route};
use crate::support::within;
use wsgate::{ClosedBy, Outcome};

async fn h2_proxy(ca: &TestCa, backend: &str, extra: &str) -> Proxy {
    Proxy::start(&tls_yaml(ca, "", "", &route("app", "/app", backend, extra))).await
}

async fn next(ws: &mut H2Ws) -> Message {
    within("h2 websocket message", ws.next())
        .await
        .expect("stream ended")
        .unwrap_or_else(|e| panic!("read error: {e}"))
}

#[tokio::test]
async fn an_extended_connect_echoes_text_binary_and_fragments_then_closes_4000() {
    let ca = TestCa::new();
    let backend = Backend::echo().await;
    let mut proxy = h2_proxy(&ca, &backend.url("/ws"), "").await;
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
    let mut ws = conn.websocket("/app").await;

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(vec![7u8; 100_000]));
    // One message in three frames: forwarded frame by frame, echoed whole by the backend.
    for (i, (op, part, fin)) in [
        (OpCode::Data(Data::Text), "frag", false),
        (OpCode::Data(Data::Continue), "men", false),
        (OpCode::Data(Data::Continue), "ted", true),
    ]
    .into_iter()
    .enumerate()
    {
        let frame = WsFrame::message(part.as_bytes().to_vec(), op, fin);
        ws.send(Message::Frame(frame))
            .await
            .unwrap_or_else(|e| panic!("fragment {i}: {e}"));
    }
    assert_eq!(next(&mut ws).await, Message::text("fragmented"));

    let bye = CloseFrame {
        code: 4000.into(),
        reason: "bye".into(),
    };
    ws.close(Some(bye.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::Close(Some(bye)));
    // After the close handshake wsgate ends the stream (END_STREAM): the socket ends.
    assert!(within("end of stream", ws.next()).await.is_none());

    let report = proxy.next_report().await;
    assert_eq!(report.protocol.as_str(), "h2", "{report:?}");
    assert_eq!(report.closed_by, ClosedBy::Client, "{report:?}");
    assert_eq!(report.close_code, Some(4000), "{report:?}");
    assert_eq!(report.outcome, Outcome::Normal, "{report:?}");
    assert_eq!(report.msgs_in, 3, "{report:?}");
    assert!(report.tls);
    let counted = r#"wsgate_connections_protocol_total{route="app",protocol="h2"}"#;
    assert_eq!(proxy.metric(counted), Some(1.0));
    proxy.assert_drained().await;
}

#[tokio::test]
async fn a_backend_close_code_reaches_the_h2_client() {
    let ca = TestCa::new();
    let backend = Backend::start(Handshake::Accept, None, |mut ws, _log| async move {
        if let Some(Ok(_)) = ws.next().await {
            let close = CloseFrame {
                code: 4001.into(),
                reason: "done".into(),
            };
            let _ = ws.close(Some(close)).await;
            for _ in 0..10 {
                if ws.next().await.is_none() {
                    break;
                }
            }
        }
    })
    .await;
    let mut proxy = h2_proxy(&ca, &backend.url("/ws"), "").await;
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
    let mut ws = conn.websocket("/app").await;
    ws.send(Message::text("go")).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(c)) => {
            assert_eq!(u16::from(c.code), 4001);
            assert_eq!(c.reason.as_str(), "done");
        }
        other => panic!("expected the backend's Close, got {other:?}"),
    }
    // tungstenite replies to the Close; then the stream ends.
    assert!(within("end of stream", ws.next()).await.is_none());
    let report = proxy.next_report().await;
    assert_eq!(report.closed_by, ClosedBy::Backend, "{report:?}");
    assert_eq!(report.close_code, Some(4001), "{report:?}");
    assert_eq!(report.outcome, Outcome::Normal, "{report:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn the_backend_gets_an_http11_upgrade_with_its_own_key_and_the_200_carries_the_subprotocol() {
    let ca = TestCa::new();
    let backend = Backend::start(Handshake::Protocol("chat.v2"), None, record).await;
    let proxy = h2_proxy(&ca, &backend.url("/ws"), "").await;
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
    let headers = [
        ("sec-websocket-protocol", "chat.v1, chat.v2"),
        ("cookie", "a=1"),
        ("cookie", "b=2"),
        ("x-custom", "kept"),
    ];
    let (res, mut ws) = match conn.try_websocket("/app/room?x=1", &headers).await {
        Ok(ok) => ok,
        Err((res, body)) => panic!("refused: {} {body:?}", res.status()),
    };
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["sec-websocket-protocol"], "chat.v2");
    assert!(!res.headers().contains_key("sec-websocket-accept"));
    ws.send(Message::text("hi")).await.unwrap();
    crate::support::eventually("backend got the message", || {
        backend.log.data_messages() == [Message::text("hi")]
    })
    .await;

    let head = backend.log.request();
    assert!(
        head.start_line.starts_with("GET /ws"),
        "{}",
        head.start_line
    );
    assert!(
        head.start_line.contains("/room?x=1 HTTP/1.1"),
        "{}",
        head.start_line
    );
    let key = head.header("sec-websocket-key").expect("wsgate's own key");
    assert_eq!(key.len(), 24, "{key}");
    assert_eq!(head.header("sec-websocket-version"), Some("13"));
    assert_eq!(head.header("upgrade"), Some("websocket"));
    assert_eq!(head.header("x-forwarded-proto"), Some("https"));
    let authority = format!("localhost:{}", proxy.addr().port());
    assert_eq!(head.header("x-forwarded-host"), Some(authority.as_str()));
    assert_eq!(head.header("cookie"), Some("a=1; b=2"), "{head:?}");
    assert_eq!(head.header("x-custom"), Some("kept"));
    assert_eq!(
        head.header("sec-websocket-protocol"),
        Some("chat.v1, chat.v2")
    );
    drop(ws);
}

#[tokio::test]
async fn malformed_extended_connects_get_their_status_and_never_reach_the_backend() {
    let ca = TestCa::new();
    let backend = Backend::echo().await;
    let proxy = h2_proxy(
        &ca,
        &backend.url("/ws"),
        "    origins: [\"https://good.example\"]\n",
    )
    .await;
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;

    let mut req = conn.request("/app", &[]);
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("h2c-tunnel"));
    let (res, _) = conn.send(req).await.expect("answered");
    assert_eq!(res.status(), 501, "unknown :protocol");

    let mut req = conn.request("/app", &[]);
    req.headers_mut()
        .insert("sec-websocket-version", "8".parse().unwrap());
    let (res, _) = conn.send(req).await.expect("answered");
    assert_eq!(res.status(), 400, "wrong version");
    assert_eq!(res.headers()["sec-websocket-version"], "13");

    let mut req = conn.request("/app", &[]);
    req.headers_mut().remove("sec-websocket-version");
    let (res, _) = conn.send(req).await.expect("answered");
    assert_eq!(res.status(), 400, "no version");

    // A classic CONNECT (authority-form, no :protocol): wsgate is no forward proxy.
    let mut req = conn.request("/app", &[]);
    req.extensions_mut().remove::<hyper::ext::Protocol>();
    *req.uri_mut() = format!("localhost:{}", proxy.addr().port())
        .parse()
        .unwrap();
    let (res, _) = conn.send(req).await.expect("answered");
    assert_eq!(res.status(), 405, "plain CONNECT");

    let (res, _) = conn
        .send(conn.request("/nowhere", &[]))
        .await
        .expect("answered");
    assert_eq!(res.status(), 404, "no route");

    let req = conn.request("/app", &[("origin", "https://evil.example")]);
    let (res, _) = conn.send(req).await.expect("answered");
    assert_eq!(res.status(), 403, "origin");

    let req = conn.request("/app", &[("host", "other.example")]);
    let (res, _) = conn.send(req).await.expect("answered");
    assert_eq!(res.status(), 400, "Host differs from :authority");

    let req = conn.request("/app", &[("sec-websocket-protocol", "a b")]);
    let (res, _) = conn.send(req).await.expect("answered");
    assert_eq!(res.status(), 400, "subprotocol offer not tokens");

    let req = conn.request("/app/%2e%2e/x", &[]);
    let (res, _) = conn.send(req).await.expect("answered");
    assert!(
        res.status() == 400 || res.status() == 404,
        "{}",
        res.status()
    );

    assert_eq!(backend.log.accepted(), 0, "the backend was never contacted");
    // The connection survived every refusal: a good request still works.
    let mut ws = conn.websocket("/app").await;
    ws.send(Message::text("ok")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("ok"));
}

#[tokio::test]
async fn a_backend_refusal_reaches_the_h2_client_with_its_status_and_body() {
    let ca = TestCa::new();
    let backend = Backend::refuse(403, "not you").await;
    let proxy = h2_proxy(&ca, &backend.url("/ws"), "").await;
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
    let Err((res, body)) = conn.try_websocket("/app", &[]).await else {
        panic!("expected the refusal");
    };
    assert_eq!(res.status(), 403);
    assert_eq!(&body[..], b"not you");
    assert_eq!(
        proxy.metric(r#"wsgate_handshake_failures_total{route="app",reason="backend_refused"}"#),
        Some(1.0)
    );
    // Only the stream ended: the connection serves the next one.
    let Err((res, _)) = conn.try_websocket("/app", &[]).await else {
        panic!("expected the refusal again");
    };
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn one_stalled_stream_does_not_stall_99_others_on_the_same_connection() {
    let ca = TestCa::new();
    let backend = Backend::echo().await;
    let mut proxy = Proxy::start(&tls_yaml(
        &ca,
        "",
        "",
        &route(
            "app",
            "/app",
            &backend.url("/ws"),
            "    write_timeout: 0s\n",
        ),
    ))
    .await;
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
    let mut sockets = Vec::new();
    for _ in 0..100 {
        sockets.push(conn.websocket("/app").await);
    }
    // The first one never reads: its echoes fill the client's stream window, then
    // wsgate's queue toward it, then the backend's socket, until its own sends stop.
    let mut stalled = sockets.remove(0);
    let chunk = Message::binary(vec![1u8; 64 << 10]);
    let mut blocked = false;
    for _ in 0..2_000 {
        let send = tokio::time::timeout(Duration::from_millis(300), stalled.send(chunk.clone()));
        if send.await.is_err() {
            blocked = true;
            break;
        }
    }
    assert!(
        blocked,
        "backpressure reached the client that stopped reading"
    );
    for (i, ws) in sockets.iter_mut().enumerate() {
        let text = format!("stream {i}");
        within("send", ws.send(Message::text(text.clone())))
            .await
            .unwrap();
        assert_eq!(next(ws).await, Message::text(text));
    }
    for ws in &mut sockets {
        ws.close(None).await.unwrap();
    }
    for _ in 0..99 {
        let report = proxy.next_report().await;
        assert_eq!(report.outcome, Outcome::Normal, "{report:?}");
    }
    // Still there, only stalled (write_timeout is off); ends when its client vanishes.
    assert_eq!(proxy.active(), 1);
    conn.cut();
    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::ClientGone, "{report:?}");
    drop(stalled);
    proxy.assert_drained().await;
}

#[tokio::test]
async fn a_plain_get_over_h2_is_forwarded_beside_a_websocket_on_the_same_connection() {
    use crate::support::http_backend::{self as hb, HttpBackend};
    let ca = TestCa::new();
    let backend =
        HttpBackend::start(|_req| async { hyper::Response::new(hb::text("hello")) }).await;
    let routes = route("app", "/app", &backend.url("/base"), "    http: true\n")
        + "  - name: echo\n    path: /echo\n    echo: true\n";
    let proxy = Proxy::start(&tls_yaml(&ca, "", "", &routes)).await;
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
    let mut ws = conn.websocket("/echo").await;
    let get = hyper::Request::get(format!(
        "https://localhost:{}/app/x?q=1",
        proxy.addr().port()
    ))
    .body(http_body_util::Empty::new())
    .unwrap();
    let (res, _) = conn.send(get).await.expect("answered");
    assert_eq!(res.status(), 200);
    let seen = backend.stats.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert!(seen[0].target.ends_with("/x?q=1"), "{}", seen[0].target);
    ws.send(Message::text("both")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("both"));
}
