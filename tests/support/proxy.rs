//! wsgate started in-process on port 0, and YAML helpers for its config.

use std::net::SocketAddr;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wsgate::{CloseReport, Config, Running};

use super::{STEP, eventually, within};

/// Defaults used by every test proxy: short timeouts so failures show fast,
/// keepalive off so no proxy Ping interleaves with the frames a test checks.
pub const TEST_DEFAULTS: &str =
    "defaults: { close_timeout: 1s, handshake_timeout: 1s, ping_interval: 0s }\n";

/// A config with one plain listener, [`TEST_DEFAULTS`] and `routes`
/// (a YAML sequence, each item indented by two spaces).
pub fn yaml(routes: &str) -> String {
    format!("listeners:\n  - bind: \"127.0.0.1:0\"\n{TEST_DEFAULTS}routes:\n{routes}")
}

/// A route item forwarding `path` to `backend`, plus `extra` lines (indented 4).
pub fn route(name: &str, path: &str, backend: &str, extra: &str) -> String {
    format!("  - name: {name}\n    path: {path}\n    backends: [\"{backend}\"]\n{extra}")
}

/// A running wsgate; dropping it cancels its shutdown token.
pub struct Proxy {
    pub addrs: Vec<SocketAddr>,
    pub reports: broadcast::Receiver<CloseReport>,
    running: Option<Running>,
    shutdown: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Proxy {
    /// Parses `yaml` (origin `test.yaml`) and runs wsgate with it.
    pub async fn start(yaml: &str) -> Proxy {
        let config = Config::parse(yaml, "test.yaml")
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n---\n{yaml}"));
        let shutdown = CancellationToken::new();
        let running = within("wsgate::run", wsgate::run(config, shutdown.clone()))
            .await
            .unwrap_or_else(|e| panic!("wsgate::run failed: {e}"));
        let addrs = running.listener_addrs().to_vec();
        assert!(
            addrs.iter().all(|a| a.port() != 0),
            "unresolved port: {addrs:?}"
        );
        let reports = running.subscribe_reports();
        Proxy {
            addrs,
            reports,
            running: Some(running),
            shutdown,
        }
    }

    /// Runs wsgate with [`yaml`]`(routes)`.
    pub async fn with_routes(routes: &str) -> Proxy {
        Proxy::start(&yaml(routes)).await
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// `ws://ADDR{path}` on the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr())
    }

    /// Currently relayed connections.
    pub fn active(&self) -> usize {
        self.running.as_ref().expect("running").active_connections()
    }

    /// The next close report, within [`STEP`].
    pub async fn next_report(&mut self) -> CloseReport {
        within("close report", self.reports.recv())
            .await
            .expect("report channel")
    }

    /// Waits (bounded) until no connection is relayed any more.
    pub async fn assert_drained(&self) {
        eventually("active_connections() == 0", STEP, || self.active() == 0).await;
    }

    /// Parses `yaml` and applies it to the running proxy; the error as text.
    pub async fn reload(&self, yaml: &str) -> Result<(), String> {
        let config = Config::parse(yaml, "reload.yaml").map_err(|e| e.to_string())?;
        let running = self.running.as_ref().expect("running");
        within("reload", running.reload(config))
            .await
            .map_err(|e| e.to_string())
    }

    /// Cancels the shutdown token (starts the drain) without waiting.
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// Cancels the shutdown token and waits (bounded) for wsgate to finish.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let running = self.running.take().expect("running");
        within("wsgate shutdown", running.wait()).await;
    }
}
