//! Tests of the test harness itself, so a harness bug is not mistaken for a wsgate bug.

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::backend::{Backend, Handshake, RawBackend, RawConn, echo};
use crate::support::ca::TestCa;
use crate::support::frame::{self, BINARY, Frame, MASK};
use crate::support::metrics::{families, metric};
use crate::support::{client, http, raw};

#[test]
fn frame_codec_round_trips_every_length_format() {
    for len in [0usize, 1, 125, 126, 65535, 65536] {
        for mask in [None, Some(MASK)] {
            let mut frame = Frame::binary(vec![7u8; len]).fin(false).rsv(0b010);
            frame.mask = mask;
            let bytes = frame.encode();
            let (decoded, used) = frame::decode(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(decoded, frame);
            assert_eq!(frame::decode(&bytes[..bytes.len() - 1]).unwrap(), None);
        }
    }
}

#[test]
fn frame_codec_refuses_absurd_lengths() {
    let header = frame::header(true, 0, BINARY, None, i64::MAX as u64);
    assert_eq!(header.len(), 10);
    assert!(frame::decode(&header).is_err());
}

#[test]
fn masking_matches_rfc_6455_example() {
    // RFC 6455 §5.7: a masked "Hello" from a client.
    let bytes = Frame::text("Hello").masked().encode();
    assert_eq!(
        bytes,
        [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
}

#[test]
fn accept_key_matches_rfc_6455_example() {
    // RFC 6455 §1.3.
    assert_eq!(http::accept_key(http::KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn wire_close_check_rejects_reserved_codes() {
    frame::assert_wire_close(&Frame::close(4000, "bye"));
    for code in [1005u16, 1006, 1015] {
        let result = std::panic::catch_unwind(|| frame::assert_wire_close(&Frame::close(code, "")));
        assert!(result.is_err(), "{code} accepted");
    }
}

// The backends and clients against each other, without wsgate: when a wsgate
// test fails, these passing says the harness itself is sound.

#[tokio::test]
async fn raw_client_talks_to_backend_directly() {
    let backend = Backend::echo().await;
    let mut peer = raw::upgrade(backend.addr, "/direct").await;
    peer.send(Frame::text("hi")).await;
    let echo = peer.recv_frame().await;
    assert_eq!(
        (echo.opcode, echo.payload.as_slice(), echo.mask),
        (1, &b"hi"[..], None)
    );
    peer.expect_close_after_sending(4000, "bye").await;
    assert_eq!(backend.log.request().target(), "/direct");
    assert_eq!(backend.log.close(), Some((4000, "bye".to_string())));
}

#[tokio::test]
async fn refusing_backend_sends_status_and_body_directly() {
    let backend = Backend::refuse(403, "go away").await;
    let head = http::exchange(backend.addr, http::upgrade_request(backend.addr, "/", &[])).await;
    assert_eq!((head.status(), head.body_text().as_str()), (403, "go away"));
}

#[tokio::test]
async fn raw_backend_handshake_satisfies_tungstenite() {
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept(&[]).await;
        conn.record_until_close().await;
    })
    .await;
    let (mut ws, _) = client::connect(backend.url("/x")).await;
    ws.send(Message::text("hello")).await.unwrap();
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    let frames = backend.log.frames();
    assert_eq!(frames[0].payload, b"hello");
    assert!(frames[0].mask.is_some());
    assert_eq!(frames[1].opcode, frame::CLOSE);
}

#[tokio::test]
async fn tls_backend_and_client_trust_the_test_ca() {
    let ca = TestCa::new();
    let backend = Backend::start(Handshake::Accept, Some(ca.server_config()), echo).await;
    let (mut ws, _) = client::connect_tls(backend.addr, "/tls", &ca).await;
    ws.send(Message::text("secure")).await.unwrap();
    assert_eq!(client::next(&mut ws).await, Message::text("secure"));
    assert!(ca.cert_pem().exists() && ca.key_pem().exists() && ca.ca_pem().exists());
}

#[test]
fn metric_reader_matches_labels_in_any_order_and_sums_the_rest() {
    let text = "# HELP wsgate_x_total An example.\n# TYPE wsgate_x_total counter\n\
        wsgate_x_total{route=\"a\",direction=\"in\"} 2\n\
        wsgate_x_total{route=\"a\",direction=\"out\"} 3 1700000000\n\
        wsgate_x_total{route=\"b\",direction=\"in\"} 7\n\
        wsgate_x_total_extra{route=\"a\"} 100\n\
        wsgate_odd{reason=\"say \\\"hi\\\", {x}\"} 1.5\n\
        wsgate_up 1\n";
    assert_eq!(
        metric(text, r#"wsgate_x_total{direction="out",route="a"}"#),
        Some(3.0)
    );
    assert_eq!(metric(text, r#"wsgate_x_total{route="a"}"#), Some(5.0));
    assert_eq!(metric(text, "wsgate_x_total"), Some(12.0));
    assert_eq!(metric(text, r#"wsgate_x_total{route="c"}"#), None);
    assert_eq!(
        metric(text, r#"wsgate_odd{reason="say \"hi\", {x}"}"#),
        Some(1.5)
    );
    assert_eq!(metric(text, "wsgate_up"), Some(1.0));
    assert_eq!(metric(text, "wsgate_down"), None);
    assert_eq!(
        families(text).into_iter().collect::<Vec<_>>(),
        ["wsgate_x_total"]
    );
}

#[tokio::test(start_paused = true)]
async fn eventually_waits_for_a_condition_and_the_metronome_keeps_steps_small() {
    let _metronome = crate::support::clock::Metronome::start();
    let started = tokio::time::Instant::now();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = flag.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        set.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    crate::support::eventually("the flag is set", || {
        flag.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(300)
            && waited < std::time::Duration::from_millis(320),
        "{waited:?}"
    );
    // A real socket round trip under the metronome costs only a few ticks.
    let backend = Backend::echo().await;
    let mut peer = raw::upgrade(backend.addr, "/tick").await;
    let before = tokio::time::Instant::now();
    peer.send(Frame::text("tick")).await;
    assert_eq!(peer.recv_frame().await.payload, b"tick");
    let took = before.elapsed();
    assert!(took < std::time::Duration::from_millis(50), "{took:?}");
}
