//! Routing: the request path is normalised once, and routes match on exactly that path.

use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::shared::forward_auth::ForwardAuth;
use crate::shared::gate::Gate;
use crate::shared::jwks::{JwtCheck, KeySet};
use crate::shared::metrics::{CloseCounters, HttpCounters, RouteCounters};
use crate::shared::occupancy::{Occupancy, Seat};
use crate::shared::pool::{Backend, Pool};
use crate::shared::retire::Retirement;
use crate::shared::tls::TlsError;

use crate::config::{RouteConfig, Target, Tuning};

/// A route ready for matching, with its effective tuning and its live state.
pub struct Route {
    /// The route as configured (its pool part as first built; the live pool is [`Route::pool`]).
    pub config: RouteConfig,
    /// `defaults` with this route's overrides applied.
    pub tuning: Tuning,
    /// TLS client config for this route's `wss://` backends; rebuilt from `tls_ca` on reload.
    backend_tls: ArcSwap<rustls::ClientConfig>,
    /// The backend pool (none for the built-in echo); replaced when a reload changes only it.
    pool: ArcSwapOption<Pool>,
    /// Its connections, closed with 1012 when a reload removes or changes the route.
    pub retirement: Retirement,
    /// Connections on this route now (including upgrades in progress).
    active: Occupancy,
    /// Its metric handles, resolved by the first connection.
    pub metrics: OnceLock<Arc<RouteCounters>>,
    /// Its plain-HTTP metric handles, resolved by the first requests.
    pub http_metrics: HttpCounters,
    /// Its connections' handshake and end series, resolved once.
    pub close_metrics: CloseCounters,
    /// What its admission checks count (handed over when a reload rebuilds the route).
    pub gate: Gate,
    /// Its auth service's connections and answer cache, with `forward_auth`.
    pub forward_auth: Option<ForwardAuth>,
    /// Its JWT check and keys, when it has a `jwt:` section.
    pub jwt: Option<JwtCheck>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.config.name)
            .field("path", &self.config.path)
            .finish()
    }
}

/// How a route of the running table compares with a route of a new configuration.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    Same,
    /// Only the backend pool differs: the route is kept, its pool replaced.
    PoolOnly,
    Different,
}

impl Route {
    /// Builds a route from its config and the defaults, taking over from `previous` (the
    /// table a reload replaces) the admission counts of the route of the same name, and a
    /// running JWKS with the same URL and settings (its keys survive the reload, and no
    /// second refresh starts).
    pub fn new(
        config: &RouteConfig,
        defaults: &Tuning,
        previous: Option<&RouteTable>,
    ) -> Result<Route, TlsError> {
        let same_name = previous
            .and_then(|p| p.routes.iter().find(|r| r.config.name == config.name))
            .map(|r| &**r);
        let reuse = previous.and_then(|p| {
            p.routes
                .iter()
                .filter_map(|r| r.jwt.as_ref()?.jwks())
                .find(|j| {
                    matches!(&config.jwt, Some(c) if matches!(&c.keys, crate::config::jwt::JwtKeys::Jwks(k) if *k == j.config))
                })
                .cloned()
        });
        let jwt = config
            .jwt
            .as_ref()
            .map(|c| JwtCheck::new(c, reuse.as_ref()))
            .transpose()?;
        let pool = match &config.target {
            Target::Echo => None,
            Target::Backends(p) => Some(Arc::new(Pool::new(p.clone(), None))),
        };
        Ok(Route {
            tuning: config.tuning.apply(defaults),
            backend_tls: ArcSwap::new(crate::shared::tls::backend_client_config(
                config.tls_ca.as_deref(),
            )?),
            config: config.clone(),
            pool: ArcSwapOption::new(pool),
            retirement: Retirement::default(),
            active: Occupancy::default(),
            metrics: OnceLock::new(),
            http_metrics: HttpCounters::default(),
            close_metrics: CloseCounters::default(),
            gate: Gate::new(
                &config.admission,
                same_name.map(|p| (&p.gate, &p.config.admission)),
            ),
            forward_auth: config.forward_auth.as_ref().map(ForwardAuth::new),
            jwt,
        })
    }

    /// The route's name (metric label and log field).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The TLS client config in force for this route's `wss://` backends.
    pub fn backend_tls(&self) -> Arc<rustls::ClientConfig> {
        self.backend_tls.load_full()
    }

    /// The backend pool in force; `None` for the built-in echo.
    pub fn pool(&self) -> Option<Arc<Pool>> {
        self.pool.load_full()
    }

    /// Puts `next` in force in place of `current`, unless the pool in force is no longer
    /// `current` (a reload or another answer replaced it first); true when it was put.
    pub fn replace_pool(&self, current: &Arc<Pool>, next: Arc<Pool>) -> bool {
        let current = Some(current.clone());
        let was = self.pool.compare_and_swap(&current, Some(next));
        match (&*was, &current) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Connections on this route now.
    pub fn active(&self) -> usize {
        self.active.count()
    }

    /// Takes a place on this route, unless its `max_connections` is reached.
    pub fn reserve(&self) -> Option<Seat> {
        self.active.try_enter(self.config.max_connections)
    }

    /// The part of `path` after this route's prefix (always empty or starting with `/`).
    pub fn remainder<'p>(&self, path: &'p str) -> &'p str {
        let prefix = self.config.path.trim_end_matches('/');
        &path[prefix.len().min(path.len())..]
    }

    fn matches_path(&self, path: &str) -> bool {
        let p = &self.config.path;
        if self.config.exact {
            return path == p;
        }
        let prefix = p.trim_end_matches('/');
        path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
    }

    fn compare(&self, config: &RouteConfig, defaults: &Tuning) -> Change {
        if self.config.name != config.name || self.tuning != config.tuning.apply(defaults) {
            return Change::Different;
        }
        let live_pool = self.pool().map(|p| p.config.clone());
        let (mut old, mut new) = (self.config.clone(), config.clone());
        let new_pool = match (&mut old.target, &mut new.target) {
            (Target::Echo, Target::Echo) => {
                return if old == new {
                    Change::Same
                } else {
                    Change::Different
                };
            }
            (Target::Backends(_), Target::Backends(n)) => n.clone(),
            _ => return Change::Different,
        };
        // Compare everything but the pool, then the pool against the live one.
        old.target = Target::Echo;
        new.target = Target::Echo;
        match (old == new, live_pool == Some(new_pool)) {
            (false, _) => Change::Different,
            (true, true) => Change::Same,
            (true, false) => Change::PoolOnly,
        }
    }
}

/// The outcome of building a route table against the running one.
#[derive(Default)]
pub struct Rebuilt {
    /// Routes of the running table that are gone or changed: their connections get 1012.
    pub retired_routes: Vec<Arc<Route>>,
    /// Backends removed from kept routes: their connections get 1012 (known once
    /// [`Rebuilt::install`] swapped the pools).
    pub retired_backends: Vec<Arc<Backend>>,
    /// Pools replaced by new ones: their health checks and name resolution must stop
    /// (known once [`Rebuilt::install`] swapped the pools).
    pub replaced_pools: Vec<Arc<Pool>>,
    /// Routes whose pool changed, and the new pool to install when the table is swapped in.
    pool_swaps: Vec<(Arc<Route>, Arc<Pool>)>,
    /// Kept routes with a `tls_ca`, and the client config built from that file anew.
    tls_swaps: Vec<(Arc<Route>, Arc<rustls::ClientConfig>)>,
    /// Kept routes with a JWT key file or secret, and the keys read from it anew.
    jwt_swaps: Vec<(Arc<Route>, Arc<KeySet>)>,
}

impl Rebuilt {
    /// Installs the new pools and backend TLS configs of kept routes (call when the new
    /// table goes live); open connections keep the TLS session they have. What a pool
    /// drops is measured against the pool it replaces then, which a DNS answer may have
    /// replaced since the table was built.
    pub fn install(&mut self) {
        for (route, pool) in &self.pool_swaps {
            if let Some(old) = route.pool.swap(Some(pool.clone())) {
                self.retired_backends
                    .extend(pool.removed_from(&old).into_iter().cloned());
                self.replaced_pools.push(old);
            }
        }
        for (route, tls) in &self.tls_swaps {
            route.backend_tls.store(tls.clone());
        }
        for (route, keys) in &self.jwt_swaps {
            if let Some(jwt) = &route.jwt {
                jwt.install(keys.clone());
            }
        }
    }
}

/// All routes, in match order: routes with a host first, then exact ones, then longer prefixes.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Builds the table. A route whose definition is unchanged from `previous` is carried
    /// over as is (its connections are untouched); one whose backends alone changed is
    /// carried over with a new pool (connections to kept backends are untouched).
    pub fn build(
        configs: &[RouteConfig],
        defaults: &Tuning,
        previous: Option<&RouteTable>,
    ) -> Result<(RouteTable, Rebuilt), TlsError> {
        let mut routes = Vec::with_capacity(configs.len());
        let mut rebuilt = Rebuilt::default();
        for config in configs {
            let old = previous.and_then(|p| {
                p.routes
                    .iter()
                    .map(|r| (r, r.compare(config, defaults)))
                    .find(|(_, c)| *c != Change::Different)
            });
            if let (Some((route, _)), Some(ca)) = (&old, &config.tls_ca) {
                // A reload re-reads every certificate, even for a route that is otherwise
                // unchanged; the public roots alone are compiled in and never change.
                let tls = crate::shared::tls::backend_client_config(Some(ca))?;
                rebuilt.tls_swaps.push(((*route).clone(), tls));
            }
            // Key files are re-read like certificates: a rotated key takes effect without
            // closing the route's connections.
            if let Some((route, _)) = &old
                && let Some(jwt) = &route.jwt
                && let Some(keys) = jwt.reread()?
            {
                rebuilt.jwt_swaps.push(((*route).clone(), keys));
            }
            routes.push(match old {
                Some((route, Change::Same)) => route.clone(),
                Some((route, _)) => {
                    let Target::Backends(pool_config) = &config.target else {
                        unreachable!("PoolOnly implies backends")
                    };
                    let old_pool = route.pool();
                    let pool = Arc::new(Pool::new(pool_config.clone(), old_pool.as_deref()));
                    rebuilt.pool_swaps.push((route.clone(), pool));
                    route.clone()
                }
                None => Arc::new(Route::new(config, defaults, previous)?),
            });
        }
        routes.sort_by_key(|r| {
            (
                r.config.host.is_none(),
                !r.config.exact,
                std::cmp::Reverse(r.config.path.len()),
            )
        });
        if let Some(p) = previous {
            rebuilt.retired_routes = p
                .routes
                .iter()
                .filter(|old| !routes.iter().any(|r| Arc::ptr_eq(r, old)))
                .cloned()
                .collect();
        }
        Ok((RouteTable { routes }, rebuilt))
    }

    /// Every route, in match order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route for a normalised path and the request's host (port and case ignored).
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<Arc<Route>> {
        let host = host.map(strip_port).map(str::to_ascii_lowercase);
        self.routes
            .iter()
            .find(|r| {
                let host_ok = match (&r.config.host, &host) {
                    (None, _) => true,
                    (Some(want), Some(got)) => want == got,
                    (Some(_), None) => false,
                };
                host_ok && r.matches_path(path)
            })
            .cloned()
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

/// The one route of a config whose `routes:` is `[route]` (a YAML flow mapping), for unit
/// tests that need a live route.
#[cfg(test)]
pub(crate) fn test_route(route: &str) -> Arc<Route> {
    let text = format!("listeners: [{{bind: '127.0.0.1:0'}}]\nroutes: [{route}]\n");
    let config = crate::Config::parse(&text, "test.yaml").expect("a test route's config");
    let (table, _) =
        RouteTable::build(&config.routes, &config.defaults, None).expect("a test route's table");
    table.routes()[0].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let text = format!("listeners: [{{bind: '127.0.0.1:0'}}]\nroutes:\n{yaml}");
        let cfg = crate::Config::parse(&text, "t").unwrap();
        RouteTable::build(&cfg.routes, &cfg.defaults, None)
            .unwrap()
            .0
    }

    #[test]
    fn longest_prefix_on_segment_boundary() {
        let t = table(
            "  - {name: a, path: /chat, echo: true}\n  - {name: b, path: /chat/admin, echo: true}\n  - {name: c, path: /x, exact: true, echo: true}\n  - {name: d, path: /, host: Example.com, echo: true}\n",
        );
        let name = |h: Option<&str>, p: &str| t.find(h, p).map(|r| r.name().to_string());
        assert_eq!(name(None, "/chat"), Some("a".into()));
        assert_eq!(name(None, "/chat/room"), Some("a".into()));
        assert_eq!(name(None, "/chat/admin/1"), Some("b".into()));
        assert_eq!(name(None, "/chatty"), None);
        assert_eq!(name(None, "/x"), Some("c".into()));
        assert_eq!(name(None, "/x/y"), None);
        assert_eq!(name(Some("example.COM:8443"), "/chatty"), Some("d".into()));
        assert_eq!(name(Some("example.com"), "/chat"), Some("d".into()));
        assert_eq!(
            t.find(None, "/chat/room").unwrap().remainder("/chat/room"),
            "/room"
        );
    }

    #[test]
    fn reload_keeps_unchanged_routes_and_swaps_pools() {
        let parse = |routes: &str| {
            let text = format!("listeners: [{{bind: '127.0.0.1:0'}}]\nroutes:\n{routes}");
            crate::Config::parse(&text, "t").unwrap()
        };
        let a = parse(
            "  - {name: a, path: /a, echo: true}\n  - {name: b, path: /b, echo: true}\n  - {name: p, path: /p, backends: ['ws://10.0.0.1:1/', 'ws://10.0.0.2:1/']}\n",
        );
        let (old, rebuilt) = RouteTable::build(&a.routes, &a.defaults, None).unwrap();
        assert!(rebuilt.retired_routes.is_empty());
        let b = parse(
            "  - {name: a, path: /a, echo: true}\n  - {name: b, path: /b2, echo: true}\n  - {name: p, path: /p, backends: ['ws://10.0.0.2:1/', 'ws://10.0.0.3:1/']}\n",
        );
        let (new, mut rebuilt) = RouteTable::build(&b.routes, &b.defaults, Some(&old)).unwrap();
        let (old_a, new_a) = (old.find(None, "/a").unwrap(), new.find(None, "/a").unwrap());
        assert!(
            Arc::ptr_eq(&old_a, &new_a),
            "unchanged route is carried over"
        );
        assert_eq!(
            rebuilt
                .retired_routes
                .iter()
                .map(|r| r.name())
                .collect::<Vec<_>>(),
            ["b"]
        );
        let (old_p, new_p) = (old.find(None, "/p").unwrap(), new.find(None, "/p").unwrap());
        assert!(
            Arc::ptr_eq(&old_p, &new_p),
            "a route whose backends changed is kept"
        );
        let h2_before = old_p.pool().unwrap().backends[1].0.clone();
        rebuilt.install();
        let pool = new_p.pool().unwrap();
        assert!(
            Arc::ptr_eq(&pool.backends[0].0, &h2_before),
            "kept backend keeps its state"
        );
        assert_eq!(
            rebuilt
                .retired_backends
                .iter()
                .map(|b| b.url.host.as_str())
                .collect::<Vec<_>>(),
            ["10.0.0.1"]
        );
    }
}
