//! The admin listener at the edge: a bounded request head and a cap on connections served
//! at once, so neither a huge header nor a flood of idle connections takes it over.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::proxy::Proxy;
use crate::support::within;

/// The cap of `src/control/admin.rs` (`MAX_CONNECTIONS`).
const ADMIN_CAP: usize = 64;

const CONFIG: &str = r#"
listeners:
  - bind: "127.0.0.1:0"
admin: { bind: "127.0.0.1:0" }
defaults: { ping_interval: 0s }
routes:
  - { name: echo, path: /echo, echo: true }
"#;

/// Sends `request` and reads until the admin listener closes the connection.
async fn send(admin: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(admin).await.expect("connect to admin");
    // The listener may answer and close before the whole head is written: that is fine.
    let _ = tcp.write_all(request).await;
    let mut raw = Vec::new();
    let _ = tcp.read_to_end(&mut raw).await;
    String::from_utf8_lossy(&raw).into_owned()
}

fn metrics_request() -> &'static [u8] {
    b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
}

#[tokio::test]
async fn a_huge_request_head_is_refused_and_metrics_still_answer() {
    // Regression: the admin listener read request heads of any size hyper allows (~400 KiB);
    // 64 KiB is far beyond any admin request.
    let proxy = Proxy::start(CONFIG).await;
    let admin = proxy.admin_addr();
    let mut request = b"GET /metrics HTTP/1.1\r\nHost: admin\r\n".to_vec();
    for i in 0..64 {
        request.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let answer = within("huge head refused", send(admin, &request)).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "a 64 KiB head was served: {}",
        &answer[..answer.len().min(200)]
    );
    let answer = within("metrics after", send(admin, metrics_request())).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_wait_and_metrics_answer_once_one_goes() {
    // Regression: every idle connection to the admin port got a task, without bound.
    let proxy = Proxy::start(CONFIG).await;
    let admin = proxy.admin_addr();
    let mut idle = Vec::with_capacity(ADMIN_CAP);
    for _ in 0..ADMIN_CAP {
        idle.push(
            within("idle admin connection", TcpStream::connect(admin))
                .await
                .unwrap(),
        );
    }
    let mut waiting = within("one more", TcpStream::connect(admin)).await.unwrap();
    waiting.write_all(metrics_request()).await.unwrap();
    let mut first = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut first)).await;
    assert!(
        early.is_err(),
        "served beyond the cap of {ADMIN_CAP}: {early:?}"
    );
    idle.pop();
    let mut raw = Vec::new();
    within("served once a place freed", waiting.read_to_end(&mut raw))
        .await
        .unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}
