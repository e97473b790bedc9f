//! Hostile frames. A violation closes the offending hop with 1002 (or 1007,
//! 1009) and the other hop with 1001 (client at fault) or 1014 (backend at
//! fault); the offending bytes never reach the other side.

use std::time::Duration;

use crate::support::backend::{Backend, Handshake, RawBackend, RawConn, record};
use crate::support::frame::{self, BINARY, CLOSE, Frame, MASK, PING};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::raw;
use wsgate::{ClosedBy, Outcome};

/// Route limits for the size cases: 1 KiB frames, 4 KiB messages.
const LIMITS: &str = "    max_frame_bytes: 1KiB\n    max_message_bytes: 4KiB\n";

fn masked(frame: Frame) -> Vec<u8> {
    frame.masked().encode()
}

fn masked_all(frames: Vec<Frame>) -> Vec<u8> {
    frames.into_iter().flat_map(masked).collect()
}

/// On a fresh proxy and echo backend: upgrade, write `bytes`, and check that
/// the client gets Close `code`, the backend gets Close 1001 and no data, and
/// the report blames the proxy with `outcome`.
async fn client_violation(what: &str, bytes: Vec<u8>, code: u16, outcome: Outcome) {
    let backend = Backend::echo().await;
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), LIMITS)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    client.write_bytes(&bytes).await;

    let close = client.recv_close().await;
    assert_eq!(
        close.close_code(),
        Some(code),
        "{what}: client got {close:?}"
    );
    client.send(Frame::close(code, "")).await;
    client.expect_eof().await;

    crate::support::eventually(&format!("{what}: backend closed"), || {
        backend.log.close().is_some()
    })
    .await;
    let (backend_code, _) = backend.log.close().unwrap();
    assert_eq!(
        backend_code,
        1001,
        "{what}: backend got {:?}",
        backend.log.messages()
    );
    assert_eq!(
        backend.log.data_messages(),
        vec![],
        "{what}: data reached the backend"
    );
    assert_eq!(backend.log.requests().len(), 1, "{what}");

    let report = proxy.next_report().await;
    assert_eq!(report.close_code, Some(code), "{what}: {report:?}");
    assert!(
        matches!(report.closed_by, ClosedBy::Proxy),
        "{what}: {report:?}"
    );
    assert_eq!(report.outcome, outcome, "{what}: {report:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn unmasked_client_frame_is_1002_and_backend_gets_1001() {
    let bytes = Frame::text("not masked").encode();
    client_violation("unmasked text", bytes, 1002, Outcome::ProtocolError).await;
}

#[tokio::test]
async fn malformed_client_frames_are_1002() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ping of 126 bytes", masked(Frame::ping(vec![b'p'; 126]))),
        ("fragmented ping", masked(Frame::ping("a").fin(false))),
        (
            "close of 126 bytes",
            masked(Frame::close(1000, &"r".repeat(124))),
        ),
        ("RSV1 on text", masked(Frame::text("x").rsv(0b100))),
        ("RSV2 on binary", masked(Frame::binary("x").rsv(0b010))),
        ("RSV3 on ping", masked(Frame::ping("x").rsv(0b001))),
        ("reserved data opcode 3", masked(Frame::new(0x3, "x"))),
        ("reserved control opcode 0xB", masked(Frame::new(0xB, "x"))),
        ("orphan continuation", masked(Frame::cont("x"))),
        (
            "new data frame inside an open message",
            masked_all(vec![Frame::text("a").fin(false), Frame::text("b")]),
        ),
        (
            "binary inside an open text message",
            masked_all(vec![Frame::text("a").fin(false), Frame::binary("b")]),
        ),
        (
            "raw HTTP after the 101 (smuggling)",
            b"GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        client_violation(what, bytes, 1002, Outcome::ProtocolError).await;
    }
}

#[tokio::test]
async fn invalid_close_payloads_are_1002() {
    let mut cases: Vec<(String, Vec<u8>)> = [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]
        .into_iter()
        .map(|code| (format!("close code {code}"), masked(Frame::close(code, ""))))
        .collect();
    cases.push((
        "1-byte close payload".into(),
        masked(Frame::new(CLOSE, [0x03])),
    ));
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend([0xff, 0xfe, b'x']);
    cases.push((
        "non-UTF-8 close reason".into(),
        masked(Frame::new(CLOSE, bad_reason)),
    ));
    for (what, bytes) in cases {
        client_violation(&what, bytes, 1002, Outcome::ProtocolError).await;
    }
}

#[tokio::test]
async fn invalid_utf8_text_is_1007() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid byte in one frame",
            masked(Frame::text([b'a', 0xff])),
        ),
        (
            "truncated character at message end",
            masked(Frame::text([b'a', 0xC3])),
        ),
        (
            "invalid character split across fragments",
            masked_all(vec![
                Frame::text([b'a', 0xC3]).fin(false),
                Frame::cont([0x28]),
            ]),
        ),
        // Fail fast: 0xff can never start a character, no need to wait for the rest.
        (
            "invalid first fragment, rest never sent",
            masked(Frame::text([0xff]).fin(false)),
        ),
        (
            "surrogate code point",
            masked(Frame::text([0xED, 0xA0, 0x80])),
        ),
    ];
    for (what, bytes) in cases {
        client_violation(what, bytes, 1007, Outcome::ProtocolError).await;
    }
}

#[tokio::test]
async fn oversized_frames_and_messages_are_1009() {
    let fragments = |n: usize| {
        let mut frames = vec![Frame::binary(vec![1u8; 1024]).fin(false)];
        frames.extend((1..n).map(|i| Frame::cont(vec![1u8; 1024]).fin(i == n - 1)));
        masked_all(frames)
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("frame of 1 KiB + 1", masked(Frame::binary(vec![0u8; 1025]))),
        ("message of 5 x 1 KiB fragments", fragments(5)),
        (
            "text frame of 64 KiB",
            masked(Frame::text(vec![b'a'; 65536])),
        ),
    ];
    for (what, bytes) in cases {
        client_violation(what, bytes, 1009, Outcome::Limit).await;
    }
}

#[tokio::test]
async fn sizes_at_the_limits_pass() {
    // Positive control for the 1009 cases: exactly 1 KiB frames, exactly 4 KiB messages.
    let backend = Backend::start(Handshake::Accept, None, record).await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), LIMITS)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    client.send(Frame::binary(vec![9u8; 1024])).await;
    let frames = [
        Frame::binary(vec![1u8; 1024]).fin(false),
        Frame::cont(vec![2u8; 1024]).fin(false),
        Frame::cont(vec![3u8; 1024]).fin(false),
        Frame::cont(vec![4u8; 1024]),
    ];
    for frame in frames {
        client.send(frame).await;
    }
    client.send(Frame::close(1000, "")).await;
    assert_eq!(client.recv_close().await.close_code(), Some(1000));
    client.expect_eof().await;
    let sizes: Vec<usize> = backend
        .log
        .data_messages()
        .iter()
        .map(|m| m.len())
        .collect();
    assert_eq!(sizes, [1024, 4096]);
    proxy.assert_drained().await;
}

#[tokio::test]
async fn absurd_length_header_then_stall_is_1009_at_once() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    // Default limits (16 MiB frames); the header claims 2^63-1 bytes and nothing follows.
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = raw::upgrade(proxy.addr(), "/app").await;
        let started = tokio::time::Instant::now();
        client
            .write_bytes(&frame::header(true, 0, BINARY, Some(MASK), i64::MAX as u64))
            .await;
        let close = client.recv_close().await;
        assert_eq!(close.close_code(), Some(1009), "{close:?}");
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(1), "1009 after {waited:?}");
        clients.push(client);
    }
    for client in &mut clients {
        client.expect_eof().await;
    }
    proxy.assert_drained().await;
}

/// On a fresh proxy and raw backend that sends `hostile` once the client has
/// spoken: the backend gets Close 1002, the client gets Close 1014.
async fn backend_violation(what: &'static str, hostile: Vec<u8>) {
    let backend = RawBackend::start(move |mut conn: RawConn| {
        let hostile = hostile.clone();
        async move {
            conn.accept(&[]).await;
            if let Ok(Some(first)) = conn.io.try_recv(crate::support::STEP).await {
                conn.log.record_frame(first);
                conn.io.write_bytes(&hostile).await;
                conn.record_until_close().await;
            }
        }
    })
    .await;
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    client.send(Frame::text("go")).await;

    let close = client.recv_close().await;
    assert_eq!(
        close.close_code(),
        Some(1014),
        "{what}: client got {close:?}"
    );
    client.send(Frame::close(1014, "")).await;
    client.expect_eof().await;

    crate::support::eventually(what, || backend.log.frames().len() >= 2).await;
    let frames = backend.log.frames();
    assert_eq!(frames[0].payload, b"go", "{what}");
    assert_eq!(frames[1].opcode, CLOSE, "{what}: backend got {frames:?}");
    frame::assert_wire_close(&frames[1]);
    assert_eq!(
        frames[1].close_code(),
        Some(1002),
        "{what}: backend got {frames:?}"
    );
    let report = proxy.next_report().await;
    assert!(
        matches!(report.closed_by, ClosedBy::Proxy),
        "{what}: {report:?}"
    );
    assert_eq!(report.outcome, Outcome::ProtocolError, "{what}: {report:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn masked_backend_frame_is_1002_to_backend_and_1014_to_client() {
    backend_violation("masked text from backend", masked(Frame::text("masked"))).await;
}

#[tokio::test]
async fn malformed_backend_frames_are_1002_to_backend_and_1014_to_client() {
    backend_violation("RSV1 from backend", Frame::text("x").rsv(0b100).encode()).await;
    backend_violation("opcode 0xB from backend", Frame::new(0xB, "x").encode()).await;
    backend_violation(
        "ping of 126 bytes",
        Frame::new(PING, vec![0u8; 126]).encode(),
    )
    .await;
    backend_violation("orphan continuation", Frame::cont("x").encode()).await;
    backend_violation("close code 1005", Frame::close(1005, "").encode()).await;
}

/// Regression: after answering an invalid Close with 1002, wsgate kept the TCP connection
/// open for the whole close_timeout, waiting for a second Close that never comes (the
/// invalid Close already ended the client's side of the handshake, RFC 6455 §7.1.1).
#[tokio::test(start_paused = true)]
async fn invalid_close_ends_the_connection_without_waiting_for_close_timeout() {
    let backend = Backend::echo().await;
    let routes = route(
        "app",
        "/app",
        &backend.url("/ws"),
        "    close_timeout: 10s\n",
    );
    let proxy = Proxy::builder(&yaml(&routes)).paused().start().await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    let started = tokio::time::Instant::now();
    client.write_bytes(&masked(Frame::close(1005, ""))).await;
    assert_eq!(client.recv_close().await.close_code(), Some(1002));
    // Not answering: the proxy must close TCP by itself, long before the 10 s close_timeout.
    client.expect_eof().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "TCP stayed open {:?}",
        started.elapsed()
    );
    proxy.assert_drained().await;
}

/// A valid message followed at once by a bad frame: the backend's echo of the valid
/// message still reaches the client, before the client's 1002 (Autobahn 3.x/4.x/5.15
/// grade this NON-STRICT otherwise: the echo was dropped behind an early Close).
#[tokio::test]
async fn data_already_sent_by_the_backend_arrives_before_the_clients_1002() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    let mut bytes = masked(Frame::text("hello"));
    bytes.extend(masked(Frame::new(0x3, *b"bad opcode")));
    client.write_bytes(&bytes).await;
    let first = client.recv_frame().await;
    assert_eq!(first.payload, b"hello", "echo first, got {first:?}");
    assert_eq!(client.recv_close().await.close_code(), Some(1002));
    client.send(Frame::close(1002, "")).await;
    client.expect_eof().await;
    crate::support::eventually("backend got 1001", || {
        backend.log.close().map(|c| c.0) == Some(1001)
    })
    .await;
    proxy.assert_drained().await;
}
