//! Data flows through intact: echo over ws and wss, text and binary, empty to
//! 16 MiB, many messages in order, fragments with pings in between, and the
//! peers' own pings and pongs end to end.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::support::backend::{Backend, BackendWs, Handshake, Log, echo};
use crate::support::ca::TestCa;
use crate::support::frame::{CLOSE, CONT, Frame, PING, PONG, TEXT};
use crate::support::proxy::{Proxy, TEST_DEFAULTS, route};
use crate::support::{client, eventually, raw, within};
use std::sync::Arc;
use wsgate::{ClosedBy, Outcome};

/// Sends `msg` and expects it back unchanged.
async fn round_trip(ws: &mut client::Client, msg: Message) {
    within("send", ws.send(msg.clone())).await.unwrap();
    let back = client::next(ws).await;
    assert!(
        back == msg,
        "echo differs for a message of {} bytes",
        msg.len()
    );
}

fn sizes() -> Vec<usize> {
    vec![0, 1, 125, 126, 127, 65535, 65536, 1 << 20]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_echo_text_and_binary_all_sizes() {
    let mut proxy = Proxy::with_routes("  - name: echo\n    path: /echo\n    echo: true\n").await;
    let (mut ws, _) = client::connect(proxy.url("/echo")).await;
    for size in sizes() {
        round_trip(&mut ws, Message::binary(vec![0xA5u8; size])).await;
        round_trip(&mut ws, Message::text("é".repeat(size / 2))).await;
    }
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    let report = proxy.next_report().await;
    assert_eq!(report.route, "echo");
    assert_eq!(report.msgs_in, 2 * sizes().len() as u64, "{report:?}");
    assert_eq!(report.msgs_out, report.msgs_in, "{report:?}");
    let payload: u64 = sizes().iter().map(|s| (s + s / 2 * 2) as u64).sum();
    assert_eq!(report.bytes_in, payload, "{report:?}");
    assert_eq!(report.bytes_out, payload, "{report:?}");
    assert!(!report.tls);
    proxy.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_echo_up_to_16_mib_at_the_frame_limit() {
    let backend = Backend::echo().await;
    let extra = "    max_frame_bytes: 16MiB\n    max_message_bytes: 16MiB\n";
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), extra)).await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    round_trip(&mut ws, Message::binary(Vec::new())).await;
    round_trip(&mut ws, Message::text(String::new())).await;
    // Exactly the limit is allowed (a limit is a maximum, not a bound to stay under).
    let big: Vec<u8> = (0..16 << 20).map(|i: u32| (i % 251) as u8).collect();
    round_trip(&mut ws, Message::binary(big)).await;
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    let report = proxy.next_report().await;
    assert_eq!(report.bytes_in, 16 << 20, "{report:?}");
    assert_eq!(report.bytes_out, 16 << 20, "{report:?}");
    assert!(
        report.backend.contains(&backend.addr.port().to_string()),
        "{report:?}"
    );
    proxy.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_over_wss_to_a_wss_backend() {
    let ca = TestCa::new();
    let backend = Backend::start(Handshake::Accept, Some(ca.server_config()), echo).await;
    let backend_url = format!("wss://localhost:{}/ws", backend.addr.port());
    let yaml = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {}\n{TEST_DEFAULTS}routes:\n{}",
        ca.listener_tls_yaml(),
        route(
            "app",
            "/app",
            &backend_url,
            &format!("    tls_ca: {}\n", ca.ca_pem().display())
        ),
    );
    let mut proxy = Proxy::start(&yaml).await;
    let (mut ws, _) = client::connect_tls(proxy.addr(), "/app", &ca).await;
    for size in sizes() {
        round_trip(&mut ws, Message::binary(vec![7u8; size])).await;
    }
    round_trip(&mut ws, Message::text("over tls")).await;
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    let report = proxy.next_report().await;
    assert!(report.tls, "{report:?}");
    assert!(matches!(report.closed_by, ClosedBy::Client), "{report:?}");
    assert_eq!(backend.log.data_messages().len(), sizes().len() + 1);
    proxy.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_listener_serves_wss() {
    let yaml = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {{ self_signed: true }}\n{TEST_DEFAULTS}\
         routes:\n  - name: echo\n    path: /echo\n    echo: true\n"
    );
    let proxy = Proxy::start(&yaml).await;
    // Our CA does not trust it: the TLS handshake must fail (the listener does speak TLS).
    let ca = TestCa::new();
    let url = format!("wss://localhost:{}/echo", proxy.addr().port());
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let result = within(
        "wss connect",
        tokio_tungstenite::client_async_tls_with_config(url, tcp, None, Some(ca.connector())),
    )
    .await;
    let err = result.expect_err("an untrusted self-signed cert must be refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // And a plain ws client gets no 101 from a TLS listener.
    assert!(client::try_connect(proxy.url("/echo")).await.is_err());
    proxy.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_arrive_in_order() {
    let backend = Backend::echo().await;
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let (ws, _) = client::connect(proxy.url("/app")).await;
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..1000 {
            tx.send(Message::text(format!("msg {i}"))).await.unwrap();
        }
        tx
    });
    for i in 0..1000 {
        let msg = within("echo", rx.next()).await.unwrap().unwrap();
        assert_eq!(msg.to_text().unwrap(), format!("msg {i}"));
    }
    let mut ws = sender.await.unwrap().reunite(rx).unwrap();
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    let received: Vec<String> = backend
        .log
        .data_messages()
        .iter()
        .map(|m| m.to_text().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..1000).map(|i| format!("msg {i}")).collect();
    assert_eq!(received, expected);
    let report = proxy.next_report().await;
    assert_eq!(
        (report.msgs_in, report.msgs_out),
        (1000, 1000),
        "{report:?}"
    );
    proxy.assert_drained().await;
}

/// Backend session: on the first message, send "hello world" in three
/// fragments with pings between them, then echo.
async fn fragments_with_pings(mut ws: BackendWs, log: Arc<Log>) {
    let Some(Ok(first)) = ws.next().await else {
        return;
    };
    log.record(first);
    let frames = [
        Message::Frame(WsFrame::message("hel", OpCode::Data(Data::Text), false)),
        Message::Ping("p1".into()),
        Message::Frame(WsFrame::message("lo ", OpCode::Data(Data::Continue), false)),
        Message::Ping("p2".into()),
        Message::Frame(WsFrame::message(
            "world",
            OpCode::Data(Data::Continue),
            true,
        )),
    ];
    for frame in frames {
        if ws.send(frame).await.is_err() {
            return;
        }
    }
    echo(ws, log).await;
}

#[tokio::test]
async fn backend_fragments_with_pings_between_arrive_in_order() {
    let backend = Backend::start(Handshake::Accept, None, fragments_with_pings).await;
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    client.send(Frame::text("go")).await;

    let mut text = Vec::new();
    let mut pings = Vec::new();
    for _ in 0..10 {
        let frame = client.recv_frame().await;
        assert!(
            frame.mask.is_none(),
            "wsgate must not mask towards the client: {frame:?}"
        );
        match frame.opcode {
            PING => pings.push(String::from_utf8(frame.payload).unwrap()),
            TEXT | CONT => {
                assert_eq!(
                    frame.opcode == TEXT,
                    text.is_empty(),
                    "opcode order: {frame:?}"
                );
                text.extend(frame.payload);
                if frame.fin {
                    break;
                }
            }
            other => panic!("unexpected opcode {other}"),
        }
    }
    assert_eq!(String::from_utf8(text).unwrap(), "hello world");
    assert_eq!(
        pings,
        ["p1", "p2"],
        "pings arrive in order, before the message ends"
    );

    // Our pongs go back to the backend; tungstenite surfaces them.
    client.send(Frame::new(PONG, "p1")).await;
    client.send(Frame::new(PONG, "p2")).await;
    client.send(Frame::close(1000, "")).await;
    let close = client.recv_close().await;
    assert_eq!(close.opcode, CLOSE);
    let pongs: Vec<Message> = backend
        .log
        .messages()
        .into_iter()
        .filter(|m| matches!(m, Message::Pong(_)))
        .collect();
    assert_eq!(
        pongs,
        [Message::Pong("p1".into()), Message::Pong("p2".into())]
    );
    proxy.next_report().await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn client_fragments_with_pings_and_a_split_character_arrive_intact() {
    let backend = Backend::echo().await;
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    // "aé€" with é (C3 A9) and € (E2 82 AC) split across fragments.
    client.send(Frame::text(vec![b'a', 0xC3]).fin(false)).await;
    client.send(Frame::ping("p1")).await;
    client.send(Frame::cont(vec![0xA9, 0xE2]).fin(false)).await;
    client.send(Frame::ping("p2")).await;
    client.send(Frame::cont(vec![0x82, 0xAC])).await;

    // The backend (tungstenite) answers each ping with a pong, then echoes the text.
    let mut got = Vec::new();
    for _ in 0..3 {
        let frame = client.recv_frame().await;
        got.push((frame.opcode, String::from_utf8(frame.payload).unwrap()));
    }
    assert_eq!(
        got,
        [
            (PONG, "p1".into()),
            (PONG, "p2".into()),
            (TEXT, "aé€".into())
        ]
    );
    let seen: Vec<Message> = backend.log.messages();
    assert_eq!(
        seen,
        [
            Message::Ping("p1".into()),
            Message::Ping("p2".into()),
            Message::text("aé€")
        ]
    );
    client.send(Frame::close(1000, "")).await;
    client.recv_close().await;
    let report = proxy.next_report().await;
    assert!(matches!(report.outcome, Outcome::Normal), "{report:?}");
    assert_eq!(
        report.msgs_in, 1,
        "one message, however fragmented: {report:?}"
    );
    proxy.assert_drained().await;
}

#[tokio::test]
async fn backend_pings_reach_the_client_and_pongs_come_back() {
    let backend = Backend::start(
        Handshake::Accept,
        None,
        |mut ws: BackendWs, log: Arc<Log>| async move {
            let _ = ws.send(Message::Ping("from backend".into())).await;
            echo(ws, log).await;
        },
    )
    .await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    // tungstenite surfaces the ping and answers it itself on the next read/write.
    let ping = client::next(&mut ws).await;
    assert_eq!(ping, Message::Ping("from backend".into()));
    // A client ping is answered by the backend, through wsgate.
    ws.send(Message::Ping("from client".into())).await.unwrap();
    let pong = client::next(&mut ws).await;
    assert_eq!(pong, Message::Pong("from client".into()));
    eventually("backend got the pong", || {
        backend
            .log
            .messages()
            .contains(&Message::Pong("from backend".into()))
    })
    .await;
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    proxy.assert_drained().await;
}
