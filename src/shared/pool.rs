//! A route's backend pool at run time: its members, their live connection counts, health
//! and retirement, and the state the balancer keeps between picks. The balancing itself
//! (which backend is tried first) is `backend::balance`.
//!
//! A backend whose URL names a host (not an IP literal) is not one member: the pool holds
//! one member per address the name resolved to (`backend::discovery` keeps them current),
//! each connected to by address while its `Host` and TLS name stay the URL's host.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use hyper::header::HeaderValue;
use prometheus::IntGauge;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::BackendUrl;
use crate::config::pool::PoolConfig;
use crate::shared::idle_conns::{IdleConns, RawConns};
use crate::shared::occupancy::{Occupancy, Seat};
use crate::shared::retire::Retirement;

/// The sticky hash: SipHash-1-3 with keys (0, 0), over bytes the caller defines (not
/// through `std::hash::Hash`, whose output is not specified), so the same key gives the
/// same value in every wsgate build, release and process. The keys are fixed and public
/// on purpose: the hash only spreads keys over backends, it guards no secret.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    siphasher::sip::SipHasher13::new_with_keys(0, 0).hash(bytes)
}

/// Local addresses connections are made from, taken in turn (`source_addresses`).
#[derive(Debug)]
pub struct Sources {
    addrs: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Sources {
    /// The addresses of a config list; none for an empty list (the kernel chooses).
    pub fn of(addrs: &[IpAddr]) -> Option<Arc<Sources>> {
        (!addrs.is_empty()).then(|| {
            Arc::new(Sources {
                addrs: addrs.to_vec(),
                next: AtomicUsize::new(0),
            })
        })
    }

    /// The addresses of the family of `to` (IPv4 or IPv6), the next in turn first, then
    /// the others in order: each is tried once when the ones before have no port left.
    pub fn order(&self, to: IpAddr) -> Vec<IpAddr> {
        let same: Vec<IpAddr> = self
            .addrs
            .iter()
            .copied()
            .filter(|a| a.is_ipv4() == to.is_ipv4())
            .collect();
        if same.is_empty() {
            return same;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % same.len();
        same[start..]
            .iter()
            .chain(&same[..start])
            .copied()
            .collect()
    }
}

/// One backend server and what wsgate knows about it.
#[derive(Debug)]
pub struct Backend {
    /// Where it is (for a member resolved from a name: the URL as configured).
    pub url: BackendUrl,
    /// The address connections go to: the URL's IP literal, or the record its name
    /// resolved to. None only for a name nothing resolved yet (connects resolve it then).
    pub addr: Option<IpAddr>,
    /// Its label in logs and metrics: the URL, or `URL@address` for a resolved member.
    pub name: String,
    /// Its value in a sticky cookie: a stable hash of its name, so every wsgate instance
    /// names it alike and the cookie does not show the backend's address.
    pub sticky_id: String,
    /// Local addresses to connect from (`source_addresses`), swapped by a reload.
    pub sources: ArcSwapOption<Sources>,
    active: Occupancy,
    /// Active health check verdict (true until a check says otherwise).
    healthy: AtomicBool,
    /// Consecutive failed connects (passive check).
    fails: AtomicU32,
    ejected_until: Mutex<Option<Instant>>,
    /// Its connections, for closing them when it is removed or turns unhealthy.
    pub retirement: Retirement,
    /// Its `wsgate_backend_healthy` gauge, set when the pool's checks start.
    pub gauge: OnceLock<IntGauge>,
    /// Idle keep-alive connections for plain HTTP requests.
    pub http_idle: IdleConns,
    /// Idle bare keep-alive connections of the hand-written HTTP/1.1 path.
    pub raw_idle: RawConns,
    /// The Host of plain requests sent to it (`url.host_header()`), made once rather than
    /// per request; `None` if that is no header value (then no Host is sent).
    pub http_host: Option<HeaderValue>,
}

impl Backend {
    /// A backend at `url`, healthy, with no connections yet.
    pub fn new(url: BackendUrl) -> Backend {
        let name = url.url.clone();
        Backend::at(url, None, name)
    }

    /// The member for address `ip` of a backend named by host in `url`.
    pub fn member(url: BackendUrl, ip: IpAddr) -> Backend {
        let name = format!("{}@{ip}", url.url);
        Backend::at(url, Some(ip), name)
    }

    fn at(url: BackendUrl, resolved: Option<IpAddr>, name: String) -> Backend {
        Backend {
            sticky_id: format!("{:016x}", stable_hash(name.as_bytes())),
            addr: resolved.or_else(|| url.ip()),
            name,
            sources: ArcSwapOption::empty(),
            active: Occupancy::default(),
            healthy: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            retirement: Retirement::default(),
            gauge: OnceLock::new(),
            http_idle: IdleConns::default(),
            raw_idle: RawConns::default(),
            http_host: HeaderValue::try_from(url.host_header()).ok(),
            url,
        }
    }

    /// Live connections on this backend.
    pub fn active(&self) -> usize {
        self.active.count()
    }

    /// Counts a connection on this backend until the seat is dropped.
    pub fn occupy(&self) -> Seat {
        self.active.enter()
    }

    /// Whether new connections may go here: healthy and not ejected.
    pub fn usable(&self) -> bool {
        self.healthy.load(Ordering::Acquire) && !self.ejected()
    }

    fn ejected(&self) -> bool {
        let mut until = self.ejected_until.lock().unwrap_or_else(|p| p.into_inner());
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                tracing::info!(backend = %self.url, "backend ejection over: taking connections again");
                self.show(self.healthy());
                false
            }
            None => false,
        }
    }

    /// Records the active health check's verdict; returns true when it changed.
    pub fn set_healthy(&self, healthy: bool) -> bool {
        let changed = self.healthy.swap(healthy, Ordering::AcqRel) != healthy;
        self.show(self.usable());
        changed
    }

    /// Sets the health gauge (once the pool's checks have started and given it one).
    fn show(&self, usable: bool) {
        if let Some(g) = self.gauge.get() {
            g.set(usable as i64);
        }
    }

    /// Whether the active health check considers it healthy.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// A connect (or upgrade) succeeded: the passive failure count starts over.
    pub fn connect_ok(&self) {
        self.fails.store(0, Ordering::Release);
    }

    /// A connect failed; returns true when this ejected the backend for `config.fail_timeout`.
    pub fn connect_failed(&self, config: &PoolConfig) -> bool {
        let fails = self.fails.fetch_add(1, Ordering::AcqRel) + 1;
        if config.max_fails == 0 || fails < config.max_fails {
            return false;
        }
        self.fails.store(0, Ordering::Release);
        *self.ejected_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + config.fail_timeout);
        self.show(false);
        true
    }
}

/// A route's backends, their balancing state and their health-check switch.
#[derive(Debug)]
pub struct Pool {
    /// The configuration it was built from.
    pub config: PoolConfig,
    /// The backends, in config order, with their weights.
    pub backends: Vec<(Arc<Backend>, u32)>,
    /// Smooth weighted round robin: the current weight of each backend.
    pub(crate) rr: Mutex<Vec<i64>>,
    /// Rotates ties for least_connections, and seeds random_two.
    pub(crate) turn: AtomicUsize,
    /// Consistent hash ring: (point, backend index), sorted by point. Built by the first
    /// hash-balanced pick, so pools balanced otherwise never pay for it.
    pub(crate) ring: OnceLock<Vec<(u64, usize)>>,
    /// Cancelled when this pool is replaced (reload, or a new DNS answer) or its route
    /// goes: its health checks end.
    pub stop: CancellationToken,
    health_started: AtomicBool,
    /// What the pools that DNS answers derive from one another share.
    lineage: Arc<Lineage>,
}

/// Shared by a pool built from config and the pools DNS answers make of it: the name
/// resolution runs for all of them, until a reload replaces them or their route goes.
#[derive(Debug, Default)]
struct Lineage {
    stop: CancellationToken,
    started: AtomicBool,
}

impl Pool {
    /// Builds a pool; backends with the same URL in `previous` keep their state (live counts,
    /// health), so a reload that only adds or removes backends does not disturb the others.
    /// A backend named by host keeps the members `previous` resolved for it (none without
    /// one, until its name is resolved).
    pub fn new(config: PoolConfig, previous: Option<&Pool>) -> Pool {
        let mut backends: Vec<(Arc<Backend>, u32)> = Vec::new();
        for b in &config.backends {
            let sources = Sources::of(b.sources(&config));
            let old = previous.into_iter().flat_map(|p| &p.backends);
            let mine: Vec<Arc<Backend>> = if b.url.ip().is_some() {
                let kept = old.map(|(o, _)| o).find(|o| o.name == b.url.url).cloned();
                vec![kept.unwrap_or_else(|| Arc::new(Backend::new(b.url.clone())))]
            } else {
                old.filter(|(o, _)| o.url == b.url)
                    .map(|(o, _)| o.clone())
                    .collect()
            };
            for backend in mine {
                backend.sources.store(sources.clone());
                backends.push((backend, b.weight));
            }
        }
        Pool::of(config, backends, Arc::default())
    }

    fn of(config: PoolConfig, backends: Vec<(Arc<Backend>, u32)>, lineage: Arc<Lineage>) -> Pool {
        Pool {
            rr: Mutex::new(vec![0; backends.len()]),
            turn: AtomicUsize::new(crate::shared::random::u64() as usize),
            ring: OnceLock::new(),
            stop: CancellationToken::new(),
            health_started: AtomicBool::new(false),
            lineage,
            backends,
            config,
        }
    }

    /// The addresses the members of the backend at `url` (named by host) connect to.
    pub fn members_of(&self, url: &BackendUrl) -> Vec<IpAddr> {
        self.backends
            .iter()
            .filter(|(b, _)| b.url == *url)
            .filter_map(|(b, _)| b.addr)
            .collect()
    }

    /// This pool with the members of the backend at `url` set to `addrs` (members at an
    /// address already known are kept, with their state), and the members it drops; None
    /// when they are the members already.
    pub fn with_members(
        &self,
        url: &BackendUrl,
        addrs: &[IpAddr],
    ) -> Option<(Pool, Vec<Arc<Backend>>)> {
        let mut now = self.members_of(url);
        now.sort();
        let mut want = addrs.to_vec();
        want.sort();
        want.dedup();
        if now == want {
            return None;
        }
        let mut backends = Vec::new();
        for b in &self.config.backends {
            if b.url != *url {
                let same: Vec<_> = self
                    .backends
                    .iter()
                    .filter(|(o, _)| o.url == b.url)
                    .cloned()
                    .collect();
                // A URL listed twice is still one set of members.
                if !backends
                    .iter()
                    .any(|(o, _): &(Arc<Backend>, u32)| o.url == b.url)
                {
                    backends.extend(same);
                }
                continue;
            }
            if backends
                .iter()
                .any(|(o, _): &(Arc<Backend>, u32)| o.url == b.url)
            {
                continue;
            }
            let sources = Sources::of(b.sources(&self.config));
            for ip in &want {
                let kept = self
                    .backends
                    .iter()
                    .find(|(o, _)| o.url == *url && o.addr == Some(*ip))
                    .map(|(o, _)| o.clone());
                let member = kept.unwrap_or_else(|| {
                    let m = Arc::new(Backend::member(url.clone(), *ip));
                    m.sources.store(sources.clone());
                    m
                });
                backends.push((member, b.weight));
            }
        }
        let next = Pool::of(self.config.clone(), backends, self.lineage.clone());
        let dropped = next.removed_from(self).into_iter().cloned().collect();
        Some((next, dropped))
    }

    /// Ends this pool's health checks and name resolution (a reload replaced it, or its
    /// route went).
    pub fn end(&self) {
        self.stop.cancel();
        self.lineage.stop.cancel();
    }

    /// Cancelled when name resolution for this pool (and those derived from it) must end.
    pub fn discovery_stop(&self) -> &CancellationToken {
        &self.lineage.stop
    }

    /// Whether `other` is this pool, or derived from the same one by DNS answers.
    pub fn same_lineage(&self, other: &Pool) -> bool {
        Arc::ptr_eq(&self.lineage, &other.lineage)
    }

    /// True the first time only for a pool and those derived from it by DNS answers:
    /// whoever gets true starts the name resolution.
    pub fn claim_discovery_start(&self) -> bool {
        !self.lineage.started.swap(true, Ordering::AcqRel)
    }

    /// Backends of `previous` that this pool no longer has.
    pub fn removed_from<'p>(&self, previous: &'p Pool) -> Vec<&'p Arc<Backend>> {
        previous
            .backends
            .iter()
            .filter(|(old, _)| !self.backends.iter().any(|(b, _)| Arc::ptr_eq(b, old)))
            .map(|(old, _)| old)
            .collect()
    }

    /// True the first time only: whoever gets true starts the health checks.
    pub fn claim_health_start(&self) -> bool {
        !self.health_started.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::pool::BackendConfig;

    fn config(hosts: &[&str]) -> PoolConfig {
        PoolConfig {
            backends: hosts
                .iter()
                .map(|h| BackendConfig {
                    url: BackendUrl::parse(&format!("ws://{h}:80/")).unwrap(),
                    weight: 1,
                    source_addresses: None,
                })
                .collect(),
            retries: 9,
            ..PoolConfig::default()
        }
    }

    #[test]
    fn ejection_after_consecutive_failures() {
        let p = Pool::new(config(&["10.0.0.1"]), None);
        let b = &p.backends[0].0;
        assert!(!b.connect_failed(&p.config));
        b.connect_ok();
        assert!(!b.connect_failed(&p.config));
        assert!(!b.connect_failed(&p.config));
        assert!(b.usable());
        assert!(
            b.connect_failed(&p.config),
            "third consecutive failure ejects"
        );
        assert!(!b.usable() && b.healthy(), "ejected, not unhealthy");
    }

    #[test]
    fn kept_backends_keep_their_state() {
        let old = Pool::new(config(&["10.0.0.1", "10.0.0.2"]), None);
        old.backends[1].0.set_healthy(false);
        let new = Pool::new(config(&["10.0.0.2", "10.0.0.3"]), Some(&old));
        assert!(Arc::ptr_eq(&new.backends[0].0, &old.backends[1].0));
        assert!(!new.backends[0].0.healthy());
        let removed: Vec<_> = new
            .removed_from(&old)
            .iter()
            .map(|b| b.url.host.clone())
            .collect();
        assert_eq!(removed, ["10.0.0.1"]);
    }

    #[test]
    fn members_of_a_name_follow_its_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p = Pool::new(config(&["10.0.0.1", "svc.test"]), None);
        assert_eq!(
            p.backends.len(),
            1,
            "a name has no member before it resolves"
        );
        let url = p.config.backends[1].url.clone();
        let (p1, dropped) = p.with_members(&url, &[ip("127.0.0.2")]).unwrap();
        assert!(dropped.is_empty());
        assert!(
            p1.with_members(&url, &[ip("127.0.0.2")]).is_none(),
            "unchanged"
        );
        let (p3, dropped) = p1
            .with_members(&url, &[ip("127.0.0.4"), ip("127.0.0.2"), ip("127.0.0.3")])
            .unwrap();
        assert!(dropped.is_empty());
        assert_eq!(p3.backends.len(), 4);
        assert!(
            Arc::ptr_eq(&p3.backends[0].0, &p.backends[0].0),
            "static kept"
        );
        assert!(
            Arc::ptr_eq(&p3.backends[1].0, &p1.backends[1].0),
            "member kept"
        );
        assert_eq!(p3.backends[2].0.name, "ws://svc.test:80/@127.0.0.3");
        assert_eq!(p3.backends[2].0.url.host_header(), "svc.test");
        let (back, dropped) = p3.with_members(&url, &[ip("127.0.0.3")]).unwrap();
        let names: Vec<_> = dropped.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["ws://svc.test:80/@127.0.0.2", "ws://svc.test:80/@127.0.0.4"]
        );
        assert!(Arc::ptr_eq(&back.backends[1].0, &p3.backends[2].0));
        // A reload keeps the members a name resolved to, until it is resolved anew.
        let reloaded = Pool::new(back.config.clone(), Some(&back));
        assert_eq!(reloaded.members_of(&url), [ip("127.0.0.3")]);
        assert!(
            back.claim_discovery_start() && !p.claim_discovery_start(),
            "one lineage"
        );
        assert!(
            reloaded.claim_discovery_start(),
            "a reload starts a lineage of its own"
        );
    }
}
