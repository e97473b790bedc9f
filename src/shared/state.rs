//! The state every connection shares: routes, settings, metrics, reports, and the counts
//! and tokens of the running proxy. Swapped parts are swapped whole on reload.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Http2Config, Limits};
use crate::shared::budget::Budget;
use crate::shared::metrics::Metrics;
use crate::shared::occupancy::{Occupancy, Seat};
use crate::shared::registry::Registry;
use crate::shared::report::CloseReport;
use crate::shared::routes::RouteTable;

/// The settings a reload can change that are read per connection.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Connection limits and client-hop timeouts.
    pub limits: Limits,
    /// Limits of HTTP/2 client connections.
    pub http2: Http2Config,
    /// Log a line when a connection opens.
    pub log_open: bool,
    /// Count messages, frames and bytes per connection (off only to measure their cost).
    pub per_frame_metrics: bool,
    /// Window over which retired connections are closed with 1012.
    pub drain_window: std::time::Duration,
    /// `/readyz` says not ready at this fraction of `max_connections` (`admin.ready_below`).
    pub ready_below: Option<f64>,
    /// `defaults.http_idle_timeout`: on an HTTP/1.1 client connection, a write blocked
    /// this long (the client stopped reading) ends the connection; 0 = off.
    pub http_idle_timeout: std::time::Duration,
    /// Peers whose forwarding headers are believed and appended to (`trusted_proxies`).
    pub trusted_proxies: Vec<crate::config::Cidr>,
    /// How backends given by host name are resolved (`dns`).
    pub dns: crate::config::dns::DnsConfig,
    /// The admin API's bearer token (`admin.token_file` / `admin.token_env`); API off without.
    pub admin_token: Option<crate::config::admin_token::Secret>,
    /// The configuration in force, for the admin API's `/api/config`.
    pub config: Arc<crate::config::Config>,
}

/// Everything a connection needs from the running proxy.
pub struct ProxyState {
    /// The routes in force (swapped whole on reload).
    pub routes: ArcSwap<RouteTable>,
    /// Settings in force (swapped whole on reload).
    pub settings: ArcSwap<Settings>,
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
    /// Relayed connections and upgrades in progress, for `limits.max_connections`.
    pub connections: Occupancy,
    /// Room for large frames, shared by all relayed connections (`limits.max_buffered_bytes`).
    pub budget: Arc<Budget>,
    /// Live relayed connections, for the admin API.
    pub registry: Registry,
}

impl ProxyState {
    /// Takes a place in the global count, unless `limits.max_connections` is reached.
    pub fn reserve(&self) -> Option<Seat> {
        self.connections
            .try_enter(Some(self.settings.load().limits.max_connections))
    }

    /// Whether connections fill `admin.ready_below` of `limits.max_connections` (never
    /// when the threshold is off).
    pub fn too_full_to_be_ready(&self) -> bool {
        let settings = self.settings.load();
        settings.ready_below.is_some_and(|fraction| {
            self.connections.count() as f64 >= fraction * settings.limits.max_connections as f64
        })
    }
}
