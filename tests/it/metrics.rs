//! The admin listener and the metrics it serves: counters move live and add up exactly,
//! the close is counted with its code and who closed, and the exposition passes promtool.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

/// Bound on every network step of these tests.
const STEP: Duration = Duration::from_secs(5);

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
    let raw = tokio::time::timeout(STEP, fetch)
        .await
        .expect("admin answered in time");
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `name` whose labels include all of `labels` (0 when absent).
fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn counters_move_live_and_close_is_counted() {
    let config = wsgate::Config::parse(CONFIG, "metrics.yaml").unwrap();
    let shutdown = CancellationToken::new();
    let running = wsgate::run(config, shutdown.clone()).await.unwrap();
    let admin = running.admin_addr().expect("admin listener configured");
    let url = format!("ws://{}/echo", running.listener_addrs()[0]);
    let mut reports = running.subscribe_reports();

    let (mut ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
        .unwrap();
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
        tokio::time::timeout(STEP, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    // While the connection is open: the counters already moved, by exactly what was sent.
    let (status, live) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let route = ("route", "echo");
    assert_eq!(sample(&live, "wsgate_connections_active", &[route]), 1.0);
    for direction in ["client_to_backend", "backend_to_client"] {
        let d = ("direction", direction);
        assert_eq!(
            sample(&live, "wsgate_messages_total", &[route, d]),
            5.0,
            "{direction}\n{live}"
        );
        assert_eq!(
            sample(&live, "wsgate_bytes_total", &[route, d]),
            sent_bytes as f64,
            "{direction}"
        );
        assert_eq!(
            sample(
                &live,
                "wsgate_frames_total",
                &[route, d, ("opcode", "text")]
            ),
            3.0
        );
        assert_eq!(
            sample(
                &live,
                "wsgate_frames_total",
                &[route, d, ("opcode", "binary")]
            ),
            2.0
        );
    }
    assert_eq!(
        sample(&live, "wsgate_handshake_duration_seconds_count", &[route]),
        1.0
    );

    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
    let report = tokio::time::timeout(STEP, reports.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.close_code, Some(4000));

    let (_, after) = get(admin, "/metrics").await;
    assert_eq!(sample(&after, "wsgate_connections_active", &[route]), 0.0);
    let close = [route, ("closed_by", "client"), ("code", "4000")];
    assert_eq!(
        sample(&after, "wsgate_closes_total", &close),
        1.0,
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "wsgate_connections_total",
            &[route, ("outcome", "normal")]
        ),
        1.0
    );
    assert_eq!(
        sample(&after, "wsgate_frames_total", &[route, ("opcode", "close")]),
        2.0
    );
    assert_eq!(sample(&after, "wsgate_build_info", &[]), 1.0);
    // No label ever carries a client address.
    assert!(
        !after.contains("127.0.0.1"),
        "client address leaked into labels"
    );

    shutdown.cancel();
    running.wait().await;
}

#[tokio::test]
async fn health_readiness_and_unknown_paths() {
    let config = wsgate::Config::parse(CONFIG, "metrics.yaml").unwrap();
    let shutdown = CancellationToken::new();
    let running = wsgate::run(config, shutdown.clone()).await.unwrap();
    let admin = running.admin_addr().unwrap();
    assert_eq!(get(admin, "/healthz").await.0, 200);
    assert_eq!(get(admin, "/readyz").await.0, 200);
    assert_eq!(get(admin, "/nope").await.0, 404);
    assert_eq!(get(admin, "/metrics/extra").await.0, 404);

    // Hold a connection open so the drain lasts while /readyz is asked.
    let url = format!("ws://{}/echo", running.listener_addrs()[0]);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    shutdown.cancel();
    assert_eq!(get(admin, "/readyz").await.0, 503);
    assert_eq!(get(admin, "/healthz").await.0, 200);
    // The drain sends 1001 to the client; answering it lets the drain finish.
    let msg = tokio::time::timeout(STEP, ws.next()).await.unwrap();
    assert!(
        matches!(msg, Some(Ok(Message::Close(Some(ref f)))) if f.code == CloseCode::Away),
        "{msg:?}"
    );
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
    tokio::time::timeout(STEP, running.wait())
        .await
        .expect("drained in time");
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let config = wsgate::Config::parse(CONFIG, "metrics.yaml").unwrap();
    let shutdown = CancellationToken::new();
    let running = wsgate::run(config, shutdown.clone()).await.unwrap();
    let admin = running.admin_addr().unwrap();
    // One connection so the per-route series exist in the exposition.
    let url = format!("ws://{}/echo", running.listener_addrs()[0]);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text("x")).await.unwrap();
    tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
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
    shutdown.cancel();
}
