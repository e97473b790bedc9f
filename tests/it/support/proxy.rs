//! wsgate started in-process on port 0 ([`Proxy`]), and YAML helpers for its config.

use std::net::SocketAddr;
use std::path::Path;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use wsgate::{CloseReport, Config, Running};

use super::clock::Metronome;
use super::metrics;
use super::{eventually, within};

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

/// Parses a test config (origin `origin`), panicking with the text if it is refused.
pub fn parse(yaml: &str, origin: &str) -> Config {
    Config::parse(yaml, origin).unwrap_or_else(|e| panic!("test config rejected: {e}\n---\n{yaml}"))
}

/// How a [`Proxy`] serves its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// `wsgate::run`: worker threads of its own, as in production.
    Workers,
    /// `wsgate::run_here`: on the test's runtime, so a paused clock drives its timers.
    Here,
    /// `run_here` plus a [`Metronome`], for tests under `start_paused = true`.
    Paused,
}

/// What to start: a config and how to serve it. From [`Proxy::builder`].
pub struct Builder {
    config: Config,
    serve: Serve,
}

impl Builder {
    /// Serves on the test's runtime (`wsgate::run_here`).
    pub fn here(mut self) -> Builder {
        self.serve = Serve::Here;
        self
    }

    /// Serves on the test's runtime whose clock is paused, keeping its steps small
    /// (see [`super::clock`]); the test must run with `start_paused = true`.
    pub fn paused(mut self) -> Builder {
        self.serve = Serve::Paused;
        self
    }

    /// Serves as `serve` says.
    pub fn serve(mut self, serve: Serve) -> Builder {
        self.serve = serve;
        self
    }

    /// Starts wsgate; returns once every listener is bound.
    pub async fn start(self) -> Proxy {
        // Ticking before the start: binding and TLS setup already involve timers.
        let metronome = (self.serve == Serve::Paused).then(Metronome::start);
        let shutdown = CancellationToken::new();
        let started = match self.serve {
            Serve::Workers => {
                within("wsgate::run", wsgate::run(self.config, shutdown.clone())).await
            }
            Serve::Here | Serve::Paused => {
                within(
                    "wsgate::run_here",
                    wsgate::run_here(self.config, shutdown.clone()),
                )
                .await
            }
        };
        let running = started.unwrap_or_else(|e| panic!("wsgate failed to start: {e}"));
        let addrs = running.listener_addrs();
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
            _metronome: metronome,
        }
    }
}

/// A running wsgate; dropping it cancels its shutdown token.
pub struct Proxy {
    /// The listeners' addresses at start, in config order.
    pub addrs: Vec<SocketAddr>,
    /// Every close report since the start.
    pub reports: broadcast::Receiver<CloseReport>,
    running: Option<Running>,
    shutdown: CancellationToken,
    _metronome: Option<Metronome>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Proxy {
    /// What to start: `yaml` parsed with origin `test.yaml`, served by `run` unless told.
    pub fn builder(yaml: &str) -> Builder {
        Proxy::builder_config(parse(yaml, "test.yaml"))
    }

    /// What to start: an already parsed config.
    pub fn builder_config(config: Config) -> Builder {
        Builder {
            config,
            serve: Serve::Workers,
        }
    }

    /// Parses `yaml` (origin `test.yaml`) and runs wsgate with it on worker threads.
    pub async fn start(yaml: &str) -> Proxy {
        Proxy::builder(yaml).start().await
    }

    /// Runs wsgate with [`yaml`]`(routes)`.
    pub async fn with_routes(routes: &str) -> Proxy {
        Proxy::start(&yaml(routes)).await
    }

    /// Runs wsgate with an already parsed config.
    pub async fn run(config: Config) -> Proxy {
        Proxy::builder_config(config).start().await
    }

    /// Runs wsgate with the config file at `path` (as the binary would load it).
    pub async fn from_file(path: &Path) -> Proxy {
        let config = Config::load(path).unwrap_or_else(|e| panic!("config rejected: {e}"));
        Proxy::run(config).await
    }

    /// The handle of the running wsgate (reload, metrics, listeners, config).
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The admin listener's address (the config must have `admin:`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.running()
            .admin_addr()
            .expect("admin listener configured")
    }

    /// `ws://ADDR{path}` on the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr())
    }

    /// Currently relayed connections.
    pub fn active(&self) -> usize {
        self.running().active_connections()
    }

    /// The next close report, within [`super::patience`].
    pub async fn next_report(&mut self) -> CloseReport {
        within("close report", self.reports.recv())
            .await
            .expect("report channel")
    }

    /// Waits (bounded) until no connection is relayed any more.
    pub async fn assert_drained(&self) {
        eventually("active_connections() == 0", || self.active() == 0).await;
    }

    /// The metrics text exposition, as the admin listener would serve it.
    pub fn metrics_text(&self) -> String {
        self.running().metrics().render()
    }

    /// The value of `selector` in the metrics (see [`metrics::metric`]).
    pub fn metric(&self, selector: &str) -> Option<f64> {
        metrics::metric(&self.metrics_text(), selector)
    }

    /// `wsgate_backend_healthy{route, backend}`.
    pub fn healthy(&self, route: &str, backend: &str) -> Option<f64> {
        self.metric(&format!(
            "wsgate_backend_healthy{{route=\"{route}\",backend=\"{backend}\"}}"
        ))
    }

    /// `wsgate_backend_connect_errors_total{route, backend}` (0 when absent).
    pub fn connect_errors(&self, route: &str, backend: &str) -> f64 {
        self.metric(&format!(
            "wsgate_backend_connect_errors_total{{route=\"{route}\",backend=\"{backend}\"}}"
        ))
        .unwrap_or(0.0)
    }

    /// Parses `yaml` and applies it to the running proxy; the error as text.
    pub async fn reload(&self, yaml: &str) -> Result<(), String> {
        let config = Config::parse(yaml, "reload.yaml").map_err(|e| e.to_string())?;
        within("reload", self.running().reload(config))
            .await
            .map_err(|e| e.to_string())
    }

    /// Applies `yaml`, which must be accepted.
    pub async fn reload_ok(&self, yaml: &str) {
        if let Err(e) = self.reload(yaml).await {
            panic!("reload refused: {e}\n---\n{yaml}");
        }
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
