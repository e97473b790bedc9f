//! The wsgate binary as a child process (its stderr collected, signalled by its
//! own pid), and config files replaced the way editors do.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::eventually;

/// Writes `text` to `path` the way editors do: a temporary file renamed over it.
pub fn replace_file(path: &Path, text: &[u8]) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the file");
}

/// The wsgate binary running as a child process, its stderr collected.
pub struct Child {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Child {
    fn drop(&mut self) {
        // Only this child, by its own handle: never a broad kill.
        let _ = self.child.start_kill();
    }
}

impl Child {
    /// Starts `wsgate --config path` and waits (bounded) for its `listening addr=` line.
    pub async fn start(config: &Path) -> Child {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wsgate"))
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn wsgate");
        let stderr = child.stderr.take().expect("stderr pipe");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        // Keeps reading to the end so the child never blocks on a full pipe.
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
        let mut addr = None;
        eventually("wsgate logged `listening addr=`", || {
            addr = log.lock().unwrap().iter().find_map(|l| listening_addr(l));
            addr.is_some()
        })
        .await;
        Child {
            child,
            addr: addr.unwrap(),
            log,
        }
    }

    /// Sends a signal (`TERM`, `HUP`) to this child by its process id.
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("child still running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Everything logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Whether some log line contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Waits at most `timeout` for the child to exit.
    pub async fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait for wsgate"))
    }

    /// Whether the child has not exited yet.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The address in a `listening addr=IP:PORT …` line, text or JSON format.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        return match event.get("message")?.as_str()? {
            "listening" => event.get("addr")?.as_str()?.parse().ok(),
            _ => None,
        };
    }
    let (_, rest) = line.split_once(" listening addr=")?;
    rest.split_whitespace().next()?.parse().ok()
}
