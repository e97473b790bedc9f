//! Regression tests for relay defects: a clean backend FIN reported as an error, a client
//! gone between the backend's 101 and its own upgrade, and messages that never end.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::support::backend::{Backend, Handshake, RawBackend, RawConn};
use crate::support::frame::{CLOSE, Frame};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::{STEP, backend, eventually, http, raw, within};
use wsgate::{ClosedBy, Config};

/// Frames in a flood: well over [`FRAMES`].
const FLOOD: usize = 10_000;
/// `max_message_frames` for the floods: the default (2^20) would take millions of frames
/// to reach, which only costs the test time; the rule is the same.
const FRAMES: &str = "    max_message_frames: 4096\n";

/// wsgate with one route `app` on `/app` to `backend`, metrics readable.
async fn gate(backend: &str, extra: &str) -> Proxy {
    let yaml = yaml(&route("app", "/app", backend, extra));
    Proxy::run(Config::parse(&yaml, "test.yaml").expect("test config")).await
}

/// `wsgate_connections_total` of route `app` with `outcome`.
fn ended(gate: &Proxy, outcome: &str) -> f64 {
    gate.metric(&format!(
        "wsgate_connections_total{{outcome=\"{outcome}\",route=\"app\"}}"
    ))
    .unwrap_or(0.0)
}

#[tokio::test]
async fn backend_fin_without_close_is_backend_gone_and_reset_is_backend_error() {
    // Bug: a backend that closed TCP cleanly without a Close frame (mosquitto after every
    // MQTT DISCONNECT) was reported as `backend_error`, inflating the error metrics.
    // Either way the client gets 1014 and the report says the backend closed.
    for (reset, outcome) in [(false, "backend_gone"), (true, "backend_error")] {
        let backend = RawBackend::start(move |mut conn: RawConn| async move {
            conn.accept(&[]).await;
            if let Ok(Some(first)) = conn.io.try_recv(STEP).await {
                conn.log.record_frame(first);
                if reset {
                    let _ = conn.io.io().set_zero_linger();
                }
            }
        })
        .await;
        let mut gate = gate(&backend.url("/ws"), "").await;
        let mut client = raw::upgrade(gate.addr(), "/app").await;
        client.send(Frame::text("hi")).await;
        // The client's side of it is unchanged: 1014, whichever way the backend went.
        client.expect_close(1014).await;

        let report = gate.next_report().await;
        assert_eq!(
            report.closed_by,
            ClosedBy::Backend,
            "reset={reset}: {report:?}"
        );
        assert_eq!(
            report.outcome.as_str(),
            outcome,
            "reset={reset}: {report:?}"
        );
        assert_eq!(report.close_code, Some(1006), "reset={reset}: {report:?}");
        assert_eq!(ended(&gate, outcome), 1.0, "reset={reset}");
        gate.assert_drained().await;
    }
}

#[tokio::test]
async fn client_gone_before_its_upgrade_closes_the_backend_and_is_reported() {
    // Bug: the backend's 101 arrived after the client had gone; the client's upgrade then
    // failed and the backend socket was dropped without a Close, with no close report.
    for reset in [false, true] {
        let go = Arc::new(Notify::new());
        let backend_go = go.clone();
        let backend = RawBackend::start(move |mut conn: RawConn| {
            let go = backend_go.clone();
            async move {
                go.notified().await;
                conn.accept(&[]).await;
                conn.record_until_close().await;
            }
        })
        .await;
        let mut gate = gate(&backend.url("/ws"), "").await;
        let mut io = within("connect", TcpStream::connect(gate.addr()))
            .await
            .expect("connect to wsgate");
        let request = http::upgrade_request(gate.addr(), "/app", &[]);
        io.write_all(request.as_bytes())
            .await
            .expect("write upgrade");
        eventually("backend got the upgrade", || {
            !backend.log.requests().is_empty()
        })
        .await;
        if reset {
            io.set_zero_linger().expect("SO_LINGER");
        }
        drop(io);
        go.notify_one();

        let report = gate.next_report().await;
        assert_eq!(
            report.closed_by,
            ClosedBy::Client,
            "reset={reset}: {report:?}"
        );
        assert_eq!(report.outcome.as_str(), "client_gone", "reset={reset}");
        assert_eq!((report.msgs_in, report.msgs_out), (0, 0), "{report:?}");
        assert_eq!((report.bytes_in, report.bytes_out), (0, 0), "{report:?}");
        eventually("backend got a Close", || {
            backend.log.saw("eof") || !backend.log.frames().is_empty()
        })
        .await;
        let frames = backend.log.frames();
        assert_eq!(frames.len(), 1, "reset={reset}: {frames:?}");
        assert_eq!(frames[0].opcode, CLOSE, "{frames:?}");
        assert_eq!(frames[0].close_code(), Some(1001), "{frames:?}");
        assert_eq!(ended(&gate, "client_gone"), 1.0, "reset={reset}");
        gate.assert_drained().await;
    }
}

/// Sends a message that never ends: a first frame then [`FLOOD`] continuations of
/// `payload`, all without FIN; expects Close `code` with `reason` and outcome `limit`.
async fn endless_message(extra: &str, payload: &'static [u8], code: u16, reason: &str) {
    let backend = Backend::start(Handshake::Accept, None, backend::record).await;
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), extra)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    let mut flood = Frame::binary(payload).fin(false).masked().encode();
    let cont = Frame::cont(payload).fin(false).masked().encode();
    for _ in 0..FLOOD {
        flood.extend_from_slice(&cont);
    }
    client.write_bytes(&flood).await;

    let close = client.recv_close().await;
    assert_eq!(close.close_code(), Some(code), "{close:?}");
    assert_eq!(close.close_reason(), reason, "{close:?}");
    client.send(Frame::close(code, "")).await;
    client.expect_eof().await;
    let report = proxy.next_report().await;
    assert_eq!(report.outcome.as_str(), "limit", "{report:?}");
    assert_eq!(report.closed_by, ClosedBy::Proxy, "{report:?}");
    assert_eq!(
        backend.log.close().map(|c| c.0),
        Some(1001),
        "backend close"
    );
    proxy.assert_drained().await;
}

#[tokio::test]
async fn endless_zero_length_continuations_get_1009() {
    // Bug: zero-length continuations never grow the message and never finish it, so a
    // client could send them forever past both `max_message_bytes` and the message rate.
    endless_message(FRAMES, b"", 1009, "message has too many fragments").await;
}

#[tokio::test]
async fn endless_tiny_continuations_get_1009() {
    // Bug: one-byte continuations take ~16 million frames to reach `max_message_bytes`.
    endless_message(FRAMES, b"x", 1009, "message has too many fragments").await;
}

#[tokio::test]
async fn continuations_count_against_the_message_rate() {
    // Bug: only a message's last frame took a token, so one endless message was never
    // rate limited.
    let extra = "    max_message_rate: 5\n";
    endless_message(extra, b"x", 1008, "message rate exceeded").await;
}

#[tokio::test]
async fn max_message_frames_is_per_route_and_counts_every_frame() {
    let backend = Backend::echo().await;
    let extra = "    max_message_frames: 3\n";
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), extra)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    // Three frames: allowed, and echoed whole.
    client.send(Frame::text("a").fin(false)).await;
    client.send(Frame::cont("b").fin(false)).await;
    client.send(Frame::cont("c")).await;
    assert_eq!(client.recv_frame().await.payload, b"abc");
    // Four frames: the fourth closes it.
    client.send(Frame::text("a").fin(false)).await;
    client.send(Frame::cont("b").fin(false)).await;
    client.send(Frame::cont("c").fin(false)).await;
    client.send(Frame::cont("d")).await;
    let close = client.expect_close(1009).await;
    assert_eq!(close.close_reason(), "message has too many fragments");
    let report = proxy.next_report().await;
    assert_eq!(report.outcome.as_str(), "limit", "{report:?}");
    assert_eq!(report.msgs_in, 1, "{report:?}");
    proxy.assert_drained().await;
}
