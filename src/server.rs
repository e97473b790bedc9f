//! Wires the listeners, routes, metrics and shutdown together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::close::CloseReport;
use crate::config::{Config, Target};
use crate::listener::Listener;
use crate::metrics::Metrics;
use crate::route::RouteTable;

/// How many close reports a slow subscriber may lag behind before it misses some.
const REPORT_BACKLOG: usize = 4096;

/// wsgate could not start.
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
    Tls(#[from] crate::tls::TlsError),
}

/// Everything a connection needs from the running proxy.
pub struct Gateway {
    /// The routes in force.
    pub routes: RouteTable,
    /// Metrics of this proxy.
    pub metrics: Arc<Metrics>,
    /// Close reports for subscribers (tests, future admin API).
    pub reports: broadcast::Sender<CloseReport>,
    /// Tracks every connection task so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when wsgate shuts down.
    pub shutdown: CancellationToken,
    /// Next connection id.
    pub next_id: AtomicU64,
    /// Log a line when a connection opens.
    pub log_open: bool,
    backend_tls: HashMap<String, Arc<rustls::ClientConfig>>,
}

impl Gateway {
    /// TLS client config for a route's `wss://` backends.
    pub fn backend_tls(&self, route: &str) -> Arc<rustls::ClientConfig> {
        // Built for every route with backends at start, so the route is always present.
        self.backend_tls
            .get(route)
            .cloned()
            .unwrap_or_else(|| self.backend_tls[""].clone())
    }
}

/// A started proxy: its bound addresses and handles to observe and stop it.
pub struct Running {
    addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    gateway: Arc<Gateway>,
    drain_timeout: std::time::Duration,
}

impl Running {
    /// Bound listener addresses, in config order (port 0 resolved).
    pub fn listener_addrs(&self) -> &[SocketAddr] {
        &self.addrs
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

    /// Waits for shutdown (the token passed to [`run`]) and for connections to drain,
    /// at most the configured drain timeout after shutdown began.
    pub async fn wait(self) {
        self.gateway.shutdown.cancelled().await;
        self.gateway.tracker.close();
        if tokio::time::timeout(self.drain_timeout, self.gateway.tracker.wait())
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

/// Binds every listener and starts serving; returns once all are listening.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    let mut backend_tls = HashMap::new();
    backend_tls.insert(String::new(), crate::tls::backend_client_config(None)?);
    for route in &config.routes {
        if let (Target::Backends(_), Some(ca)) = (&route.target, &route.tls_ca) {
            backend_tls.insert(
                route.name.clone(),
                crate::tls::backend_client_config(Some(ca))?,
            );
        }
    }
    let gateway = Arc::new(Gateway {
        routes: RouteTable::new(&config.routes, &config.defaults),
        metrics: Arc::new(Metrics::new()),
        reports: broadcast::channel(REPORT_BACKLOG).0,
        tracker: TaskTracker::new(),
        shutdown,
        next_id: AtomicU64::new(1),
        log_open: config.log.connection_open,
        backend_tls,
    });
    let mut addrs = Vec::new();
    for lc in &config.listeners {
        let listener = Listener::bind(lc, gateway.clone()).await?;
        addrs.push(listener.local_addr());
        tracing::info!(addr = %listener.local_addr(), tls = lc.tls.is_some(), "listening");
        tokio::spawn(listener.serve());
    }
    let admin_addr = match &config.admin {
        None => None,
        Some(admin) => {
            let listener = crate::admin::bind(admin.bind).await?;
            let addr = listener.local_addr().ok();
            tracing::info!(addr = ?addr, "admin listening");
            tokio::spawn(crate::admin::serve(listener, gateway.clone()));
            addr
        }
    };
    Ok(Running {
        admin_addr,
        addrs,
        gateway,
        drain_timeout: config.shutdown.drain_timeout,
    })
}
