//! `wsgate health`: the container HEALTHCHECK's probe, the real binary against a real
//! admin listener (wsgate's own, or a stand-in that answers what the test wants).

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::proxy::{Proxy, yaml};
use crate::support::within;

/// One built-in echo route.
const ECHO: &str = "  - { name: echo, path: /echo, echo: true }\n";

/// Runs `wsgate health --config FILE ARGS…`; its exit code and stdout.
async fn health(config: &Path, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
        .arg("health")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("WSGATE_CONFIG")
        .stdin(Stdio::null())
        .output();
    let out = within("wsgate health exits", out)
        .await
        .expect("run wsgate health");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().expect("exited, not killed"), stdout)
}

/// A config file whose only admin listener is `bind`, in `dir`.
fn config_with_admin(dir: &Path, bind: &str) -> std::path::PathBuf {
    let path = dir.join("wsgate.yaml");
    let text = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\nadmin:\n  bind: \"{bind}\"\nroutes:\n  - name: echo\n    path: /echo\n    echo: true\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// A stand-in admin listener: answers every connection with `status_line` once it has
/// read the request head, or never answers when `status_line` is empty.
async fn stand_in(status_line: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        // Bounded: a test asks a handful of times at most.
        for _ in 0..8 {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 1024];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if status_line.is_empty() {
                    // Holds the connection open without a word until the client gives up.
                    let _ = tcp.read(&mut buf).await;
                    return;
                }
                let _ = tcp
                    .write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn health_is_0_when_wsgates_admin_listener_answers_200() {
    let proxy = Proxy::start(&format!("admin:\n  bind: \"127.0.0.1:0\"\n{}", yaml(ECHO))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_admin(dir.path(), &proxy.admin_addr().to_string());
    let (code, out) = health(&config, &[]).await;
    assert_eq!((code, out.trim()), (0, "healthy: /healthz answered 200"));
    let (code, _) = health(&config, &["--path", "/readyz"]).await;
    assert_eq!(code, 0, "a running wsgate is ready");
    let (code, out) = health(&config, &["--path", "/nowhere"]).await;
    assert_eq!((code, out.trim()), (1, "unhealthy: /nowhere answered 404"));
}

#[tokio::test]
async fn health_is_1_when_nothing_listens() {
    // A port that was just free: bound, then closed, so connecting is refused.
    let gone = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = gone.local_addr().expect("local addr");
    drop(gone);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_admin(dir.path(), &addr.to_string());
    let (code, out) = health(&config, &["--timeout", "1s"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot connect"), "{out}");
}

#[tokio::test]
async fn health_asks_a_wildcard_admin_bind_on_loopback() {
    let addr = stand_in("HTTP/1.1 200 OK").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with_admin(dir.path(), &format!("0.0.0.0:{}", addr.port()));
    assert_eq!(health(&config, &[]).await.0, 0);
}

#[tokio::test]
async fn health_is_1_on_a_non_200_answer_and_on_silence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unavailable = stand_in("HTTP/1.1 503 Service Unavailable").await;
    let config = config_with_admin(dir.path(), &unavailable.to_string());
    let (code, out) = health(&config, &[]).await;
    assert_eq!((code, out.trim()), (1, "unhealthy: /healthz answered 503"));

    let silent = stand_in("").await;
    let config = config_with_admin(dir.path(), &silent.to_string());
    let (code, out) = health(&config, &["--timeout", "300ms"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no answer"), "{out}");
}

#[tokio::test]
async fn health_is_1_without_an_admin_listener_in_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wsgate.yaml");
    std::fs::write(&path, yaml(ECHO)).expect("write");
    let (code, out) = health(&path, &[]).await;
    assert_eq!(code, 1);
    assert!(out.contains("no `admin:` listener"), "{out}");
    let (code, out) = health(&dir.path().join("missing.yaml"), &[]).await;
    assert_eq!(code, 1);
    assert!(out.contains("cannot read"), "{out}");
}
