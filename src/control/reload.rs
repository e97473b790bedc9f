//! Reload: a new configuration is built and checked whole, then swapped in at once;
//! unchanged routes and listeners keep their connections.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ListenerConfig};
use crate::ingress::listener::Listener;
use crate::shared::pool::Backend;
use crate::shared::routes::{Route, RouteTable};
use crate::shared::state::ProxyState;

use super::{
    ListenerHandle, Running, StartError, listener_tls, proxy_from, settings, spawn_listener,
    start_discovery, start_health_checks, start_jwks_refresh,
};

impl Running {
    /// Applies a new configuration: everything is built and checked first, then swapped in
    /// at once; on any error the running configuration stays in force untouched.
    ///
    /// Unchanged routes keep their connections; removed or changed routes close theirs with
    /// 1012 spread over `reload.drain_window`; new listeners start, removed ones stop
    /// accepting (their open connections go on); certificates are re-read.
    pub async fn reload(&self, new: Config) -> Result<(), StartError> {
        let result = self.apply(new).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.gateway.metrics.config_reload(outcome);
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "reload rejected; the running configuration stays")
            }
        }
        result
    }

    /// Reads `path` and applies it with [`Running::reload`]; a file that does not parse
    /// is refused the same way (logged with file:line:column, counted as an error).
    pub async fn reload_from(&self, path: &std::path::Path) -> Result<(), StartError> {
        match Config::load(path) {
            Ok(config) => self.reload(config).await,
            Err(e) => {
                self.gateway.metrics.config_reload("error");
                tracing::error!(error = %e, "reload rejected; the running configuration stays");
                Err(e.into())
            }
        }
    }

    async fn apply(&self, new: Config) -> Result<(), StartError> {
        let mut listeners = self.listeners.lock().await;
        let mut current = self.config.lock().await;
        // 1. Build everything that can fail, touching nothing that is running.
        let matched = match_listeners(&listeners, &new.listeners);
        let mut tls_configs = Vec::new();
        for (lc, old) in new.listeners.iter().zip(&matched) {
            tls_configs.push(listener_tls(lc, old.map(|i| &listeners[i]))?);
        }
        let (table, mut rebuilt) = RouteTable::build(
            &new.routes,
            &new.defaults,
            Some(&self.gateway.routes.load()),
        )?;
        let mut fresh = Vec::new();
        for (i, lc) in new.listeners.iter().enumerate() {
            if matched[i].is_none() {
                let listener = Listener::bind(
                    lc.bind,
                    tls_configs[i].clone(),
                    proxy_from(lc),
                    self.gateway.clone(),
                    self.workers.handles().len(),
                )
                .map_err(|source| StartError::Bind {
                    addr: lc.bind,
                    source,
                })?;
                fresh.push((i, listener));
            }
        }
        // 2. Swap.
        let window = new.reload.drain_window;
        // Taken before the swap: a kept route's pool is replaced in place.
        let before = Snapshot::of(&self.gateway.routes.load());
        rebuilt.install();
        self.gateway.routes.store(Arc::new(table));
        self.gateway.budget.resize(new.limits.max_buffered_bytes);
        self.gateway.settings.store(Arc::new(settings(&new)));
        // Old checks stop before new ones start, so no stale verdict lands after them.
        for pool in &rebuilt.replaced_pools {
            pool.end();
        }
        start_health_checks(&self.gateway);
        start_discovery(&self.gateway).await;
        start_jwks_refresh(&self.gateway);
        for route in &rebuilt.retired_routes {
            tracing::info!(
                route = route.name(),
                ?window,
                "route removed or changed: closing its connections with 1012"
            );
            self.gateway.registry.retire_route(route, window, None);
            if let Some(pool) = route.pool() {
                pool.end();
            }
        }
        for backend in &rebuilt.retired_backends {
            tracing::info!(backend = %backend.name, ?window, "backend removed: closing its connections with 1012");
            self.gateway.registry.retire_backend(backend, window, None);
        }
        for (gone, series) in before.removed_in(&self.gateway.routes.load()) {
            tokio::spawn(forget_when_idle(self.gateway.clone(), gone, series));
        }
        let mut old: Vec<Option<ListenerHandle>> = listeners.drain(..).map(Some).collect();
        let mut next = Vec::with_capacity(new.listeners.len());
        for (i, lc) in new.listeners.iter().enumerate() {
            if let Some(handle) = matched[i].and_then(|j| old[j].take()) {
                handle.tls.set(tls_configs[i].clone());
                handle.proxy.set(proxy_from(lc));
                next.push(ListenerHandle {
                    config: lc.clone(),
                    ..handle
                });
            } else if let Some(pos) = fresh.iter().position(|(k, _)| *k == i) {
                let (_, listener) = fresh.swap_remove(pos);
                next.push(spawn_listener(
                    listener,
                    lc.clone(),
                    &self.workers,
                    &self.accepting,
                ));
            }
        }
        for handle in old.into_iter().flatten() {
            tracing::info!(addr = %handle.addr, "listener removed: no longer accepting");
            handle.stop.cancel();
        }
        *listeners = next;
        *self.addrs.lock().unwrap_or_else(|p| p.into_inner()) =
            listeners.iter().map(|h| h.addr).collect();
        *current = new;
        Ok(())
    }
}

/// How often a sweep looks whether the connections of a removed route or backend ended:
/// they get 1012 within the drain window and end a close handshake later, and a seat
/// count has no wake-up to wait on.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// How long past the drain window a sweep waits for the last connection before it drops
/// the series anyway (a connection still open then only loses its own counts).
const SWEEP_GRACE: Duration = Duration::from_secs(300);

/// Metric series a reload removed: a route name, or a backend URL of a kept route.
enum Series {
    Route(String),
    Backend(String, String),
}

/// What the series' connections are counted by, and what they are.
type Removed = (Arc<dyn Fn() -> usize + Send + Sync>, Series);

/// The routes of a table and their backends, as they were.
struct Snapshot(Vec<(Arc<Route>, Vec<Arc<Backend>>)>);

impl Snapshot {
    fn of(table: &RouteTable) -> Snapshot {
        Snapshot(
            table
                .routes()
                .iter()
                .map(|r| {
                    let backends = r.pool().map_or_else(Vec::new, |p| {
                        p.backends.iter().map(|(b, _)| b.clone()).collect()
                    });
                    (r.clone(), backends)
                })
                .collect(),
        )
    }

    /// Route names `new` no longer has, and backends (by route name and URL) that a route
    /// kept by name no longer has. A changed route keeps its name, so its series are kept
    /// too: they go on counting for the new definition.
    fn removed_in(&self, new: &RouteTable) -> Vec<Removed> {
        let mut removed: Vec<Removed> = Vec::new();
        for (route, backends) in &self.0 {
            let name = route.name().to_string();
            let Some(kept) = new.routes().iter().find(|r| r.name() == name) else {
                let r = route.clone();
                removed.push((Arc::new(move || r.active()), Series::Route(name)));
                continue;
            };
            for backend in backends {
                if !serves(kept, &backend.name) {
                    let b = backend.clone();
                    let series = Series::Backend(name.clone(), backend.name.clone());
                    removed.push((Arc::new(move || b.active()), series));
                }
            }
        }
        removed
    }
}

/// Whether `route`'s pool in force has a backend named `name` (a URL, or a resolved
/// member's `URL@address`).
pub(crate) fn serves(route: &Route, name: &str) -> bool {
    route
        .pool()
        .is_some_and(|p| p.backends.iter().any(|(b, _)| b.name == name))
}

/// Drops `series` once `active` says their last connection ended (a connection that
/// ends later would write its close counts back), unless a later reload brought the
/// route or backend back by then.
async fn forget_when_idle(
    state: Arc<ProxyState>,
    active: Arc<dyn Fn() -> usize + Send + Sync>,
    series: Series,
) {
    let patience = state.settings.load().drain_window + SWEEP_GRACE;
    let max_sweeps = patience.as_millis() / SWEEP_EVERY.as_millis() + 1;
    for _ in 0..max_sweeps {
        if active() == 0 {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = state.shutdown.cancelled() => return,
        }
    }
    let table = state.routes.load();
    let route = |name: &str| table.routes().iter().find(|r| r.name() == name).cloned();
    match &series {
        Series::Route(name) if route(name).is_none() => state.metrics.forget_route(name),
        Series::Backend(name, url) if !route(name).is_some_and(|r| serves(&r, url)) => {
            state.metrics.forget_backend(name, url)
        }
        _ => {}
    }
}

/// For each new listener config, the running listener it continues (same bind address;
/// repeated addresses, such as port 0 in tests, pair up in order), or None for a new one.
fn match_listeners(running: &[ListenerHandle], new: &[ListenerConfig]) -> Vec<Option<usize>> {
    let mut taken = vec![false; running.len()];
    new.iter()
        .map(|lc| {
            let j = (0..running.len()).find(|&j| !taken[j] && running[j].config.bind == lc.bind)?;
            taken[j] = true;
            Some(j)
        })
        .collect()
}
