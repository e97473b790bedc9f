//! Backends given by host name (a Kubernetes headless Service, say): the name is resolved
//! with hickory-resolver, one pool member per A/AAAA record, and asked again when the
//! answer's TTL runs out, within `dns.min_interval` and `dns.max_interval`.
//!
//! Each answer that changes the addresses puts a new pool in force (members at known
//! addresses kept with their state): added members take connections at once, removed
//! ones close theirs with 1012 spread over `reload.drain_window`, as a reload's removal
//! does. A failed or empty lookup keeps the members there are (a name server that stops
//! answering must not empty the pool), and is counted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::BackendUrl;
use crate::config::dns::{DnsConfig, Family};
use crate::shared::pool::{Backend, Pool};
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// How often the sweep after a removal looks whether the member's connections ended
/// (they get 1012 within the drain window; a seat count has no wake-up to wait on).
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// How long past the drain window the sweep waits before it drops the member's series.
const SWEEP_GRACE: Duration = Duration::from_secs(300);
/// Tries to put an answer in force when the pool changes under it (another name's
/// answer, a reload) between reading it and swapping it.
const SWAP_TRIES: usize = 8;

/// Starts resolving every backend of `pool` given by host name (once per pool and the
/// pools its answers make), until a reload replaces it, its route goes, or wsgate stops.
/// Each receiver hears when its name's first lookup is over.
pub fn start(
    pool: &Arc<Pool>,
    route: &Arc<Route>,
    state: &Arc<ProxyState>,
) -> Vec<oneshot::Receiver<()>> {
    let mut urls: Vec<&BackendUrl> = Vec::new();
    for b in &pool.config.backends {
        if b.url.ip().is_none() && !urls.contains(&&b.url) {
            urls.push(&b.url);
        }
    }
    if urls.is_empty() || !pool.claim_discovery_start() {
        return Vec::new();
    }
    urls.into_iter()
        .map(|url| {
            let (tx, rx) = oneshot::channel();
            let watch = Watch {
                route: route.clone(),
                origin: pool.clone(),
                url: url.clone(),
                state: state.clone(),
            };
            let stop = pool.discovery_stop().clone();
            tokio::spawn(watch.run(stop, tx));
            rx
        })
        .collect()
}

/// One backend name of one pool lineage.
struct Watch {
    route: Arc<Route>,
    /// The pool the lineage started with: a pool in force of another lineage means a
    /// reload took over, and this watch must not touch it.
    origin: Arc<Pool>,
    url: BackendUrl,
    state: Arc<ProxyState>,
}

/// Why a lookup gave no address.
enum Failure {
    /// The name has no A/AAAA record (NXDOMAIN or no data).
    Empty(String),
    /// No answer (timeout, refused, unreachable server, bad configuration).
    Error(String),
}

impl Watch {
    async fn run(self, stop: CancellationToken, first: oneshot::Sender<()>) {
        let mut first = Some(first);
        let mut resolver: Option<(DnsConfig, TokioResolver)> = None;
        let mut failing = false;
        // Each turn waits at least dns.min_interval (above 0), until stopped.
        loop {
            let dns = self.state.settings.load().dns.clone();
            let result = self.lookup(&dns, &mut resolver).await;
            let route = self.route.name();
            let wait = match result {
                Ok((addrs, ttl)) => {
                    let changed = self.put_in_force(&addrs);
                    if std::mem::take(&mut failing) {
                        tracing::info!(route, backend = %self.url, "backend name resolves again");
                    }
                    self.count(if changed { "changed" } else { "ok" });
                    dns.next_after(ttl)
                }
                Err(failure) => {
                    let (result, why) = match failure {
                        Failure::Empty(why) => ("empty", why),
                        Failure::Error(why) => ("error", why),
                    };
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(route, backend = %self.url, error = %why,
                            "backend name lookup failed: keeping the members there are");
                    }
                    self.count(result);
                    dns.min_interval
                }
            };
            if let Some(tx) = first.take() {
                let _ = tx.send(());
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // A reload that dropped this name from a kept route leaves its series behind.
        let named = self
            .live_pool()
            .is_some_and(|p| p.config.backends.iter().any(|b| b.url == self.url));
        if !named {
            self.state
                .metrics
                .forget_backend(self.route.name(), &self.url.url);
        }
    }

    /// The route's pool in force, when it is of this watch's lineage.
    fn live_pool(&self) -> Option<Arc<Pool>> {
        self.route.pool().filter(|p| p.same_lineage(&self.origin))
    }

    fn count(&self, result: &str) {
        let members = self
            .live_pool()
            .map_or(0, |p| p.members_of(&self.url).len());
        self.state
            .metrics
            .dns_resolution(self.route.name(), &self.url.url, result, members);
    }

    /// The name's addresses and the time the answer is valid for.
    async fn lookup(
        &self,
        dns: &DnsConfig,
        resolver: &mut Option<(DnsConfig, TokioResolver)>,
    ) -> Result<(Vec<IpAddr>, Duration), Failure> {
        if resolver.as_ref().is_none_or(|(c, _)| c != dns) {
            *resolver = None;
            let built = build(dns).map_err(|e| Failure::Error(format!("resolver: {e}")))?;
            *resolver = Some((dns.clone(), built));
        }
        let Some((_, r)) = resolver.as_ref() else {
            return Err(Failure::Error("no resolver".into()));
        };
        let answer =
            match tokio::time::timeout(dns.timeout, r.lookup_ip(self.url.host.as_str())).await {
                Err(_) => return Err(Failure::Error("timed out".into())),
                Ok(Err(e)) if e.is_no_records_found() => return Err(Failure::Empty(e.to_string())),
                Ok(Err(e)) => return Err(Failure::Error(e.to_string())),
                Ok(Ok(answer)) => answer,
            };
        let addrs: Vec<IpAddr> = answer.iter().collect();
        if addrs.is_empty() {
            return Err(Failure::Empty("no address in the answer".into()));
        }
        let ttl = answer
            .as_lookup()
            .answers()
            .iter()
            .map(|r| r.ttl)
            .min()
            .unwrap_or(0);
        Ok((addrs, Duration::from_secs(ttl.into())))
    }

    /// Makes `addrs` the name's members in the pool in force; true when they changed.
    fn put_in_force(&self, addrs: &[IpAddr]) -> bool {
        let route = self.route.name();
        for _ in 0..SWAP_TRIES {
            let Some(current) = self.live_pool() else {
                return false;
            };
            let Some((next, dropped)) = current.with_members(&self.url, addrs) else {
                return false;
            };
            let next = Arc::new(next);
            if !self.route.replace_pool(&current, next.clone()) {
                continue;
            }
            // The replaced pool's checks end; the new pool's start (kept members keep
            // their verdicts, which live on the member).
            current.stop.cancel();
            crate::backend::health::start(&next, &self.route, &self.state);
            let window = self.state.settings.load().drain_window;
            tracing::info!(route, backend = %self.url, members = ?next.members_of(&self.url),
                "backend name resolved to new addresses");
            for gone in dropped {
                tracing::info!(route, backend = %gone.name, ?window,
                    "address no longer in the answer: closing its connections with 1012");
                self.state.registry.retire_backend(&gone, window, None);
                tokio::spawn(forget_when_idle(
                    self.state.clone(),
                    self.route.clone(),
                    gone,
                ));
            }
            return true;
        }
        false
    }
}

/// A resolver for `dns`: its name servers over UDP and TCP, or the system's.
fn build(dns: &DnsConfig) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    let mut builder = if dns.nameservers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers = dns
            .nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for c in &mut server.connections {
                    c.port = addr.port();
                }
                server
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // Every turn must ask the servers: the TTL wsgate waits on is the answer's own.
    opts.cache_size = 0;
    opts.timeout = dns.timeout;
    opts.ip_strategy = match dns.family {
        Family::Ipv4ThenIpv6 => LookupIpStrategy::Ipv4thenIpv6,
        Family::Ipv4AndIpv6 => LookupIpStrategy::Ipv4AndIpv6,
        Family::Ipv4 => LookupIpStrategy::Ipv4Only,
        Family::Ipv6 => LookupIpStrategy::Ipv6Only,
    };
    builder.build()
}

/// Drops the series of a removed member once its last connection ended, unless an
/// answer brought its address back by then.
async fn forget_when_idle(state: Arc<ProxyState>, route: Arc<Route>, gone: Arc<Backend>) {
    let patience = state.settings.load().drain_window + SWEEP_GRACE;
    let max_sweeps = patience.as_millis() / SWEEP_EVERY.as_millis() + 1;
    for _ in 0..max_sweeps {
        if gone.active() == 0 {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = state.shutdown.cancelled() => return,
        }
    }
    let back = route
        .pool()
        .is_some_and(|p| p.backends.iter().any(|(b, _)| b.name == gone.name));
    if !back {
        state.metrics.forget_backend(route.name(), &gone.name);
    }
}
