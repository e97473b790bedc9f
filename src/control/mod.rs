//! Wires the listeners, routes, metrics, reload and shutdown together.

pub mod admin;
pub mod api;
mod reload;
pub mod shutdown;
pub mod watch;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;
use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ListenerConfig, TlsConfig};
use crate::control::workers::Workers;
use crate::ingress::listener::{Listener, TlsSlot};
use crate::ingress::proxy_protocol::ProxySlot;
use crate::shared::budget::Budget;
use crate::shared::metrics::Metrics;
use crate::shared::occupancy::Occupancy;
use crate::shared::registry::Ending;
use crate::shared::report::CloseReport;
use crate::shared::routes::RouteTable;
use crate::shared::state::{ProxyState, Settings};

/// How many close reports a slow subscriber may lag behind before it misses some.
const REPORT_BACKLOG: usize = 4096;

/// wsgate could not start, or a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// A certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::shared::tls::TlsError),
    /// The worker threads could not be started.
    #[error("cannot start worker threads: {0}")]
    Workers(std::io::Error),
    /// The new configuration file is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A listener that is running: its stop switch and its swappable TLS config and PROXY
/// protocol setting.
struct ListenerHandle {
    config: ListenerConfig,
    addr: SocketAddr,
    tls: Arc<TlsSlot>,
    proxy: Arc<ProxySlot>,
    stop: CancellationToken,
}

/// The networks that may send a listener's PROXY header, when it takes one.
fn proxy_from(lc: &ListenerConfig) -> Option<Vec<crate::config::Cidr>> {
    lc.proxy_protocol.then(|| lc.proxy_protocol_from.clone())
}

/// A started proxy: its bound addresses and handles to observe, reload and stop it.
pub struct Running {
    listeners: Mutex<Vec<ListenerHandle>>,
    addrs: std::sync::Mutex<Vec<SocketAddr>>,
    admin_addr: Option<SocketAddr>,
    gateway: Arc<ProxyState>,
    config: Mutex<Config>,
    workers: Arc<Workers>,
    /// The accept loops of every listener.
    accepting: TaskTracker,
}

impl Running {
    /// Bound listener addresses, in config order (port 0 resolved).
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        // A poisoned lock only means a reload panicked; the list itself is intact.
        self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bound admin listener address, when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Receives every close report from now on.
    pub fn subscribe_reports(&self) -> broadcast::Receiver<CloseReport> {
        self.gateway.reports.subscribe()
    }

    /// Relayed connections open now.
    pub fn active_connections(&self) -> usize {
        self.gateway.metrics.active_total()
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.gateway.metrics
    }

    /// The configuration in force.
    pub async fn config(&self) -> Config {
        self.config.lock().await.clone()
    }

    /// Waits for shutdown (the token passed to [`run`]) and for connections to drain,
    /// at most the configured drain timeout after shutdown began.
    pub async fn wait(self) {
        self.gateway.shutdown.cancelled().await;
        // Every listening socket is closed before this returns: the ports are free again.
        self.accepting.close();
        self.accepting.wait().await;
        self.gateway.tracker.close();
        let drain = self.config.lock().await.shutdown.drain_timeout;
        if tokio::time::timeout(drain, self.gateway.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.gateway.tracker.len(),
                "drain timeout: dropping remaining connections"
            );
        }
    }
}

/// Once shutdown begins, tells every relayed connection (each closes with 1001). One
/// search of the registry instead of a wait in every connection: see [`Ending`].
async fn tell_at_shutdown(state: std::sync::Weak<ProxyState>) {
    let Some(shutdown) = state.upgrade().map(|s| s.shutdown.clone()) else {
        return;
    };
    shutdown.cancelled().await;
    if let Some(state) = state.upgrade() {
        let told = state.registry.raise(Ending::Shutdown, |_| true);
        tracing::debug!(told, "shutdown: relayed connections told");
    }
}

/// Starts the health checks of every pool that has not started them yet.
fn start_health_checks(state: &Arc<ProxyState>) {
    for route in state.routes.load().routes() {
        if let Some(pool) = route.pool() {
            crate::backend::health::start(&pool, route, state);
        }
    }
}

/// Starts the background refresh of every route's JWKS that has not started it yet.
fn start_jwks_refresh(state: &Arc<ProxyState>) {
    for route in state.routes.load().routes() {
        if let Some(jwks) = route.jwt.as_ref().and_then(|j| j.jwks()) {
            crate::backend::jwks::start(jwks, route.name(), state);
        }
    }
}

/// Starts resolving the backend names of every pool that has not started yet, and waits
/// for their first lookups (at most `dns.timeout` and a second), so a route given by name
/// has its members before it takes connections.
async fn start_discovery(state: &Arc<ProxyState>) {
    let mut first = Vec::new();
    for route in state.routes.load().routes() {
        if let Some(pool) = route.pool() {
            first.extend(crate::backend::discovery::start(&pool, route, state));
        }
    }
    if first.is_empty() {
        return;
    }
    let bound = state.settings.load().dns.timeout + std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(bound, async {
        for rx in first {
            let _ = rx.await;
        }
    })
    .await;
}

/// The TLS config for a listener (none for plain `ws`), loading its certificate files
/// anew; the running listener it continues, if any, keeps its self-signed certificate
/// (regenerating it would only break clients that pinned it).
fn listener_tls(
    lc: &ListenerConfig,
    running: Option<&ListenerHandle>,
) -> Result<Option<Arc<rustls::ServerConfig>>, StartError> {
    Ok(match (&lc.tls, running) {
        (None, _) => None,
        (Some(TlsConfig::SelfSigned), Some(h)) if h.config.tls == lc.tls => match h.tls.current() {
            Some(c) => Some(crate::shared::tls::with_alpn(
                &c,
                lc.client_auth.as_ref(),
                lc.alpn(),
            )?),
            None => None,
        },
        (Some(t), _) => Some(crate::shared::tls::server_config(
            t,
            lc.client_auth.as_ref(),
            lc.alpn(),
        )?),
    })
}

fn settings(config: &Config) -> Settings {
    Settings {
        limits: config.limits.clone(),
        http2: config.http2.clone(),
        log_open: config.log.connection_open,
        per_frame_metrics: config.metrics.per_frame,
        drain_window: config.reload.drain_window,
        ready_below: config.admin.as_ref().and_then(|a| a.ready_below),
        http_idle_timeout: config.defaults.http_idle_timeout,
        trusted_proxies: config.trusted_proxies.clone(),
        dns: config.dns.clone(),
        admin_token: config
            .admin
            .as_ref()
            .and_then(|a| a.token())
            .map(|t| t.token.clone()),
        config: Arc::new(config.clone()),
    }
}

fn spawn_listener(
    listener: Listener,
    config: ListenerConfig,
    workers: &Workers,
    loops: &TaskTracker,
) -> ListenerHandle {
    let handle = ListenerHandle {
        addr: listener.local_addr(),
        tls: listener.tls_slot(),
        proxy: listener.proxy_slot(),
        stop: listener.stop_token(),
        config,
    };
    tracing::info!(addr = %handle.addr, tls = handle.config.tls.is_some(), workers = workers.handles().len(), "listening");
    listener.serve(workers.handles(), loops);
    handle
}

/// Binds every listener and starts serving on `config.workers` threads of its own;
/// returns once all are listening.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let workers = Workers::start(config.workers).map_err(StartError::Workers)?;
    start(config, shutdown, workers).await
}

/// Like [`run`], but serves every connection on the caller's runtime (one worker,
/// whatever `config.workers` says), so a test under `tokio::time::pause()` drives the
/// proxy's timers too.
pub async fn run_here(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    start(config, shutdown, Workers::current()).await
}

async fn start(
    config: Config,
    shutdown: CancellationToken,
    workers: Arc<Workers>,
) -> Result<Running, StartError> {
    let (table, _) = RouteTable::build(&config.routes, &config.defaults, None)?;
    let metrics = Arc::new(Metrics::new());
    let budget = Budget::new(
        config.limits.max_buffered_bytes,
        metrics.buffered_bytes.clone(),
        metrics.buffer_waits_total.clone(),
    );
    let gateway = Arc::new(ProxyState {
        routes: ArcSwap::from_pointee(table),
        settings: ArcSwap::from_pointee(settings(&config)),
        metrics,
        budget,
        reports: broadcast::channel(REPORT_BACKLOG).0,
        tracker: TaskTracker::new(),
        shutdown,
        next_id: AtomicU64::new(1),
        connections: Occupancy::default(),
        registry: Default::default(),
    });
    // Everything that can fail is bound first, and nothing is started until all of it
    // is: a failed start leaves no accept loop, admin server or health check behind.
    let mut bound = Vec::new();
    for lc in &config.listeners {
        let tls = listener_tls(lc, None)?;
        let workers_n = workers.handles().len();
        let listener = Listener::bind(lc.bind, tls, proxy_from(lc), gateway.clone(), workers_n)
            .map_err(|source| StartError::Bind {
                addr: lc.bind,
                source,
            })?;
        bound.push((listener, lc.clone()));
    }
    let admin = match &config.admin {
        None => None,
        Some(admin) => Some(crate::control::admin::bind(admin.bind).await?),
    };
    let accepting = TaskTracker::new();
    let listeners: Vec<ListenerHandle> = bound
        .into_iter()
        .map(|(listener, lc)| spawn_listener(listener, lc, &workers, &accepting))
        .collect();
    let admin_addr = admin.map(|listener| {
        let addr = listener.local_addr().ok();
        tracing::info!(addr = ?addr, "admin listening");
        tokio::spawn(crate::control::admin::serve(listener, gateway.clone()));
        addr
    });
    let admin_addr = admin_addr.flatten();
    tokio::spawn(tell_at_shutdown(Arc::downgrade(&gateway)));
    start_health_checks(&gateway);
    start_discovery(&gateway).await;
    start_jwks_refresh(&gateway);
    let addrs = std::sync::Mutex::new(listeners.iter().map(|h| h.addr).collect());
    Ok(Running {
        listeners: Mutex::new(listeners),
        addrs,
        admin_addr,
        gateway,
        config: Mutex::new(config),
        workers,
        accepting,
    })
}
