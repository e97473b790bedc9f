//! The admin listener and the metrics it serves: counters move live and add up exactly,
//! the close is counted with its code and who closed, and the exposition passes promtool.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::metrics::metric;
use crate::support::proxy::Proxy;
use crate::support::{client, within};

const CONFIG: &str = r#"
listeners:
  - bind: "127.0.0.1:0"
admin: { bind: "127.0.0.1:0" }
defaults: { ping_interval: 0s, close_timeout: 1s }
routes:
  - { name: echo, path: /echo, echo: true }
"#;

/// GET `path` on the admin listener; returns (status, body).
async fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    let fetch = async {
        let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.unwrap();
        raw
    };
    let raw = within("admin answer", fetch).await;
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of `selector` in an exposition (see [`metric`]), 0 when absent.
fn value(exposition: &str, selector: &str) -> f64 {
    metric(exposition, selector).unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_live_and_close_is_counted() {
    let mut proxy = Proxy::start(CONFIG).await;
    let admin = proxy.admin_addr();
    let (mut ws, _) = client::connect(proxy.url("/echo")).await;
    let mut sent_bytes = 0;
    for i in 0..3 {
        let text = format!("message {i}");
        sent_bytes += text.len();
        ws.send(Message::text(text)).await.unwrap();
    }
    for _ in 0..2 {
        ws.send(Message::binary(vec![7u8; 100])).await.unwrap();
        sent_bytes += 100;
    }
    for _ in 0..5 {
        client::next(&mut ws).await;
    }

    // While the connection is open: the counters already moved, by exactly what was sent.
    let (status, live) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        value(&live, r#"wsgate_connections_active{route="echo"}"#),
        1.0
    );
    for direction in ["client_to_backend", "backend_to_client"] {
        let on = |name: &str, more: &str| {
            value(
                &live,
                &format!(r#"{name}{{route="echo",direction="{direction}"{more}}}"#),
            )
        };
        assert_eq!(on("wsgate_messages_total", ""), 5.0, "{direction}\n{live}");
        assert_eq!(
            on("wsgate_bytes_total", ""),
            sent_bytes as f64,
            "{direction}"
        );
        assert_eq!(on("wsgate_frames_total", r#",opcode="text""#), 3.0);
        assert_eq!(on("wsgate_frames_total", r#",opcode="binary""#), 2.0);
    }
    assert_eq!(
        value(
            &live,
            r#"wsgate_handshake_duration_seconds_count{route="echo"}"#
        ),
        1.0
    );

    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    client::drain(&mut ws).await;
    let report = proxy.next_report().await;
    assert_eq!(report.close_code, Some(4000));

    let (_, after) = get(admin, "/metrics").await;
    assert_eq!(
        value(&after, r#"wsgate_connections_active{route="echo"}"#),
        0.0
    );
    let close = r#"wsgate_closes_total{route="echo",closed_by="client",code="4xxx"}"#;
    assert_eq!(value(&after, close), 1.0, "{after}");
    assert_eq!(
        value(
            &after,
            r#"wsgate_connections_total{route="echo",outcome="normal"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"wsgate_frames_total{route="echo",opcode="close"}"#
        ),
        2.0
    );
    assert_eq!(value(&after, "wsgate_build_info"), 1.0);
    // No label ever carries a client address.
    assert!(
        !after.contains("127.0.0.1"),
        "client address leaked into labels"
    );

    proxy.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_unknown_paths() {
    let proxy = Proxy::start(CONFIG).await;
    let admin = proxy.admin_addr();
    assert_eq!(get(admin, "/healthz").await.0, 200);
    assert_eq!(get(admin, "/readyz").await.0, 200);
    assert_eq!(get(admin, "/nope").await.0, 404);
    assert_eq!(get(admin, "/metrics/extra").await.0, 404);

    // Hold a connection open so the drain lasts while /readyz is asked.
    let (mut ws, _) = client::connect(proxy.url("/echo")).await;
    proxy.cancel();
    assert_eq!(get(admin, "/readyz").await.0, 503);
    assert_eq!(get(admin, "/healthz").await.0, 200);
    // The drain sends 1001 to the client; answering it lets the drain finish.
    let msg = client::next(&mut ws).await;
    assert!(
        matches!(msg, Message::Close(Some(ref f)) if f.code == CloseCode::Away),
        "{msg:?}"
    );
    client::drain(&mut ws).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let proxy = Proxy::start(CONFIG).await;
    let admin = proxy.admin_addr();
    // One connection so the per-route series exist in the exposition.
    let (mut ws, _) = client::connect(proxy.url("/echo")).await;
    ws.send(Message::text("x")).await.unwrap();
    client::next(&mut ws).await;
    let (_, body) = get(admin, "/metrics").await;
    assert!(body.contains("wsgate_messages_total"));

    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool not found: `bash scripts/test.sh` installs it (Debian package prometheus)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool rejected the exposition:\n{text}"
    );
    assert!(text.trim().is_empty(), "promtool found problems:\n{text}");
}
