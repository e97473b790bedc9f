//! A route's backend pool at run time: its members, their live connection counts, health
//! and retirement, and the state the balancer keeps between picks. The balancing itself
//! (which backend is tried first) is `backend::balance`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hyper::header::HeaderValue;
use prometheus::IntGauge;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::BackendUrl;
use crate::config::pool::PoolConfig;
use crate::shared::idle_conns::IdleConns;
use crate::shared::occupancy::{Occupancy, Seat};
use crate::shared::retire::Retirement;

/// The sticky hash: SipHash-1-3 with keys (0, 0), over bytes the caller defines (not
/// through `std::hash::Hash`, whose output is not specified), so the same key gives the
/// same value in every wsgate build, release and process. The keys are fixed and public
/// on purpose: the hash only spreads keys over backends, it guards no secret.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    siphasher::sip::SipHasher13::new_with_keys(0, 0).hash(bytes)
}

/// One backend server and what wsgate knows about it.
#[derive(Debug)]
pub struct Backend {
    /// Where it is.
    pub url: BackendUrl,
    /// Its value in a sticky cookie: a stable hash of its URL, so every wsgate instance
    /// names it alike and the cookie does not show the backend's address.
    pub sticky_id: String,
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
    /// The Host of plain requests sent to it (`url.host_header()`), made once rather than
    /// per request; `None` if that is no header value (then no Host is sent).
    pub http_host: Option<HeaderValue>,
}

impl Backend {
    /// A backend at `url`, healthy, with no connections yet.
    pub fn new(url: BackendUrl) -> Backend {
        Backend {
            sticky_id: format!("{:016x}", stable_hash(url.url.as_bytes())),
            active: Occupancy::default(),
            healthy: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            retirement: Retirement::default(),
            gauge: OnceLock::new(),
            http_idle: IdleConns::default(),
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
    /// Cancelled when this pool is replaced (reload) or wsgate stops: its health checks end.
    pub stop: CancellationToken,
    health_started: AtomicBool,
}

impl Pool {
    /// Builds a pool; backends with the same URL in `previous` keep their state (live counts,
    /// health), so a reload that only adds or removes backends does not disturb the others.
    pub fn new(config: PoolConfig, previous: Option<&Pool>) -> Pool {
        let backends: Vec<(Arc<Backend>, u32)> = config
            .backends
            .iter()
            .map(|b| {
                let kept =
                    previous.and_then(|p| p.backends.iter().find(|(old, _)| old.url == b.url));
                let backend = kept.map_or_else(
                    || Arc::new(Backend::new(b.url.clone())),
                    |(old, _)| old.clone(),
                );
                (backend, b.weight)
            })
            .collect();
        Pool {
            rr: Mutex::new(vec![0; backends.len()]),
            turn: AtomicUsize::new(crate::shared::random::u64() as usize),
            ring: OnceLock::new(),
            stop: CancellationToken::new(),
            health_started: AtomicBool::new(false),
            backends,
            config,
        }
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
                })
                .collect(),
            retries: 9,
            ..PoolConfig::default()
        }
    }

    #[test]
    fn ejection_after_consecutive_failures() {
        let p = Pool::new(config(&["a"]), None);
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
        let old = Pool::new(config(&["a", "b"]), None);
        old.backends[1].0.set_healthy(false);
        let new = Pool::new(config(&["b", "c"]), Some(&old));
        assert!(Arc::ptr_eq(&new.backends[0].0, &old.backends[1].0));
        assert!(!new.backends[0].0.healthy());
        let removed: Vec<_> = new
            .removed_from(&old)
            .iter()
            .map(|b| b.url.host.clone())
            .collect();
        assert_eq!(removed, ["a"]);
    }
}
