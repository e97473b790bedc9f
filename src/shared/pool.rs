//! A route's backend pool at run time: live connection counts, health, and the order in
//! which backends are tried for a new connection.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::IntGauge;

use hyper::header::{COOKIE, HeaderMap};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::BackendUrl;
use crate::config::pool::{AllUnhealthy, Balance, HashOn, PoolConfig};
use crate::shared::occupancy::{Occupancy, Seat};
use crate::shared::retire::Retirement;

/// Points each backend gets on the hash ring per unit of weight (more: smoother spread).
const RING_POINTS_PER_WEIGHT: u32 = 160;

/// One backend server and what wsgate knows about it.
#[derive(Debug)]
pub struct Backend {
    /// Where it is.
    pub url: BackendUrl,
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
}

impl Backend {
    fn new(url: BackendUrl) -> Backend {
        Backend {
            url,
            active: Occupancy::default(),
            healthy: AtomicBool::new(true),
            fails: AtomicU32::new(0),
            ejected_until: Mutex::new(None),
            retirement: Retirement::default(),
            gauge: OnceLock::new(),
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
    rr: Mutex<Vec<i64>>,
    /// Rotates ties for least_connections, and seeds random_two.
    turn: AtomicUsize,
    /// Consistent hash ring: (point, backend index), sorted by point.
    ring: Vec<(u64, usize)>,
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
        let mut ring = Vec::new();
        for (i, (backend, weight)) in backends.iter().enumerate() {
            for point in 0..weight * RING_POINTS_PER_WEIGHT {
                ring.push((hash_of(&(&backend.url.url, point)), i));
            }
        }
        ring.sort_unstable();
        Pool {
            rr: Mutex::new(vec![0; backends.len()]),
            turn: AtomicUsize::new(crate::shared::random::u64() as usize),
            ring,
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

    /// The key a `hash` balance uses for a request (client address when the key is absent).
    pub fn hash_key(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        client: IpAddr,
    ) -> Option<u64> {
        let Balance::Hash(on) = &self.config.balance else {
            return None;
        };
        let value = match on {
            HashOn::Header(name) => headers.get(name.as_str()).map(|v| v.as_bytes().to_vec()),
            HashOn::Cookie(name) => cookie(headers, name).map(|v| v.as_bytes().to_vec()),
            HashOn::Query(name) => query_param(query, name).map(|v| v.as_bytes().to_vec()),
            HashOn::ClientIp => None,
        };
        Some(value.map_or_else(|| hash_of(&client), |v| hash_of(&v)))
    }

    /// The backends to try for a new connection, best first, at most `retries + 1`;
    /// empty when none is usable and `all_unhealthy` is `fail`.
    pub fn candidates(&self, hash_key: Option<u64>) -> Vec<Arc<Backend>> {
        let mut pick: Vec<usize> = (0..self.backends.len())
            .filter(|&i| self.backends[i].0.usable())
            .collect();
        if pick.is_empty() {
            if self.config.all_unhealthy == AllUnhealthy::Fail {
                return Vec::new();
            }
            pick = (0..self.backends.len()).collect();
        }
        let order = match &self.config.balance {
            Balance::RoundRobin => self.round_robin(&pick),
            Balance::LeastConnections => self.by_load(&pick),
            Balance::RandomTwo => self.random_two(&pick),
            Balance::Hash(_) => self.ring_walk(&pick, hash_key.unwrap_or(0)),
        };
        order
            .into_iter()
            .take(self.config.retries as usize + 1)
            .map(|i| self.backends[i].0.clone())
            .collect()
    }

    /// Smooth weighted round robin (as nginx): each turn every candidate gains its weight,
    /// the richest is chosen and pays the total. Fallbacks follow in config order.
    fn round_robin(&self, pick: &[usize]) -> Vec<usize> {
        let mut current = self.rr.lock().unwrap_or_else(|p| p.into_inner());
        let total: i64 = pick.iter().map(|&i| self.backends[i].1 as i64).sum();
        for &i in pick {
            current[i] += self.backends[i].1 as i64;
        }
        let Some(&best) = pick
            .iter()
            .max_by_key(|&&i| (current[i], std::cmp::Reverse(i)))
        else {
            return Vec::new();
        };
        current[best] -= total;
        let at = pick.iter().position(|&i| i == best).unwrap_or(0);
        pick[at..].iter().chain(&pick[..at]).copied().collect()
    }

    /// Fewest connections per unit of weight first; ties rotate so equal backends share.
    fn by_load(&self, pick: &[usize]) -> Vec<usize> {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let n = self.backends.len().max(1);
        let mut order = pick.to_vec();
        order.sort_by_key(|&i| (self.load(i), (i + n - turn % n) % n));
        order
    }

    /// Load of a backend: live connections per unit of weight, scaled to stay an integer.
    fn load(&self, i: usize) -> u64 {
        let (backend, weight) = &self.backends[i];
        backend.active() as u64 * 1000 / (*weight).max(1) as u64
    }

    /// Power of two choices: two random candidates, the less loaded first, then the rest by load.
    fn random_two(&self, pick: &[usize]) -> Vec<usize> {
        let seed = self.turn.fetch_add(0x9e37_79b9, Ordering::Relaxed) as u64;
        let r = hash_of(&seed);
        let a = pick[(r % pick.len() as u64) as usize];
        let b = pick[((r >> 32) % pick.len() as u64) as usize];
        let first = if self.load(b) < self.load(a) { b } else { a };
        let mut rest: Vec<usize> = pick.iter().copied().filter(|&i| i != first).collect();
        rest.sort_by_key(|&i| self.load(i));
        std::iter::once(first).chain(rest).collect()
    }

    /// Distinct candidates met walking the ring clockwise from `key`.
    fn ring_walk(&self, pick: &[usize], key: u64) -> Vec<usize> {
        let start = self.ring.partition_point(|&(point, _)| point < key);
        let mut order = Vec::with_capacity(pick.len());
        for k in 0..self.ring.len() {
            let i = self.ring[(start + k) % self.ring.len()].1;
            if pick.contains(&i) && !order.contains(&i) {
                order.push(i);
                if order.len() == pick.len() {
                    break;
                }
            }
        }
        order
    }
}

/// A stable 64-bit hash (SipHash with fixed keys: the same key maps the same way in every
/// process, which sticky sessions across wsgate instances need).
fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::pool::BackendConfig;

    fn pool(balance: Balance, weights: &[u32]) -> Pool {
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| BackendConfig {
                url: BackendUrl::parse(&format!("ws://10.0.0.{i}:80/")).unwrap(),
                weight,
            })
            .collect();
        Pool::new(
            PoolConfig {
                backends,
                balance,
                retries: 9,
                health_check: None,
                max_fails: 3,
                fail_timeout: std::time::Duration::from_secs(10),
                close_on_unhealthy: false,
                all_unhealthy: AllUnhealthy::Fail,
            },
            None,
        )
    }

    fn first(p: &Pool, key: Option<u64>) -> String {
        p.candidates(key)[0].url.host.clone()
    }

    #[test]
    fn weighted_round_robin_is_smooth() {
        let p = pool(Balance::RoundRobin, &[5, 1, 1]);
        let picks: Vec<String> = (0..7).map(|_| first(&p, None)).collect();
        assert_eq!(picks.iter().filter(|h| *h == "10.0.0.0").count(), 5);
        // Smooth: the heavy backend never gets more than 2 in a row here (5,1,1 → a a b a c a a).
        assert_ne!(picks[..3], ["10.0.0.0", "10.0.0.0", "10.0.0.0"]);
    }

    #[test]
    fn least_connections_prefers_the_idle() {
        let p = pool(Balance::LeastConnections, &[1, 1, 1]);
        let _busy: Vec<_> = (0..3).map(|_| p.backends[0].0.occupy()).collect();
        let _one = p.backends[1].0.occupy();
        assert_eq!(first(&p, None), "10.0.0.2");
    }

    #[test]
    fn consistent_hash_moves_few_keys() {
        let before = pool(Balance::Hash(HashOn::ClientIp), &[1, 1, 1, 1]);
        let after = pool(Balance::Hash(HashOn::ClientIp), &[1, 1, 1, 1, 1]);
        let keys: Vec<u64> = (0..2000u64).map(|k| hash_of(&k)).collect();
        let moved = keys
            .iter()
            .filter(|&&k| first(&before, Some(k)) != first(&after, Some(k)))
            .count();
        // Ideal is 1/5 of the keys; a modulo hash would move about 4/5.
        assert!(moved < 2000 * 3 / 10, "moved {moved} of 2000");
        assert!(
            keys.iter()
                .all(|&k| first(&before, Some(k)) == first(&before, Some(k)))
        );
    }

    #[test]
    fn ejection_after_consecutive_failures_and_all_unhealthy() {
        let p = pool(Balance::RoundRobin, &[1, 1]);
        let b0 = &p.backends[0].0;
        assert!(!b0.connect_failed(&p.config));
        assert!(!b0.connect_failed(&p.config));
        assert!(
            b0.connect_failed(&p.config),
            "third consecutive failure ejects"
        );
        assert!((0..4).all(|_| first(&p, None) == "10.0.0.1"));
        p.backends[1].0.set_healthy(false);
        assert!(p.candidates(None).is_empty(), "all unhealthy → fail");
    }

    #[test]
    fn cookie_and_query_keys() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, "a=1; sid=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, "sid"), Some("xyz"));
        assert_eq!(query_param(Some("x=1&user=bob"), "user"), Some("bob"));
        assert_eq!(query_param(None, "user"), None);
    }
}
