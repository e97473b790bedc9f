//! Balancing: the order in which a pool's backends are tried for a new connection, per the
//! route's `balance` (smooth weighted round robin, least connections, power of two choices,
//! consistent hashing). The pool's members and the state kept between picks live in
//! [`crate::shared::pool`].
//!
//! The `hash` balance uses [`stable_hash`]: the same key maps to the same backend in every
//! wsgate build, release and process, which sticky sessions across instances and upgrades
//! need. A pool's `sticky_cookie` goes before any balance: a request whose cookie names a
//! usable backend tries that one first, and a response from another backend sets it.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::header::{COOKIE, HeaderMap, HeaderValue};

use crate::config::pool::{AllUnhealthy, Balance, HashOn};
pub use crate::shared::pool::stable_hash;
use crate::shared::pool::{Backend, Pool};

/// Points each backend gets on the hash ring per unit of weight (more: smoother spread).
const RING_POINTS_PER_WEIGHT: u32 = 160;

/// Where a request stands with its pool's sticky cookie.
#[derive(Debug, Clone, Default)]
pub struct Sticky {
    /// The cookie's value in the request, when the pool has a sticky cookie.
    present: Option<String>,
    /// The usable backend it names, tried first.
    pinned: Option<usize>,
}

impl Sticky {
    /// Reads the pool's sticky cookie from the request headers.
    pub fn of(pool: &Pool, headers: &HeaderMap) -> Sticky {
        let Some(name) = pool.config.sticky_cookie.as_deref() else {
            return Sticky::default();
        };
        let present = cookie(headers, name).map(str::to_string);
        let pinned = present.as_deref().and_then(|id| {
            pool.backends
                .iter()
                .position(|(b, _)| b.sticky_id == id && b.usable())
        });
        Sticky { present, pinned }
    }

    /// The `Set-Cookie` that pins the client to `chosen`, unless its cookie already does.
    pub fn set_cookie(&self, pool: &Pool, chosen: &Backend, secure: bool) -> Option<HeaderValue> {
        let name = pool.config.sticky_cookie.as_deref()?;
        if self.present.as_deref() == Some(chosen.sticky_id.as_str()) {
            return None;
        }
        let secure = if secure { "; Secure" } else { "" };
        let value = format!(
            "{name}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
            chosen.sticky_id
        );
        // A token name and a hex id: always a valid header value.
        HeaderValue::try_from(value).ok()
    }
}

/// The key a `hash` balance uses for a request: the configured header, cookie or query
/// value's bytes, or, when it is absent (or `hash_on: client_ip`), the client address
/// (4 octets for IPv4, 16 for IPv6). `None` for other balances.
pub fn hash_key(
    pool: &Pool,
    headers: &HeaderMap,
    query: Option<&str>,
    client: IpAddr,
) -> Option<u64> {
    let Balance::Hash(on) = &pool.config.balance else {
        return None;
    };
    let value = match on {
        HashOn::Header(name) => headers.get(name.as_str()).map(|v| v.as_bytes()),
        HashOn::Cookie(name) => cookie(headers, name).map(str::as_bytes),
        HashOn::Query(name) => query_param(query, name).map(str::as_bytes),
        HashOn::ClientIp => None,
    };
    Some(match (value, client) {
        (Some(v), _) => stable_hash(v),
        (None, IpAddr::V4(ip)) => stable_hash(&ip.octets()),
        (None, IpAddr::V6(ip)) => stable_hash(&ip.octets()),
    })
}

/// The backends to try for a new connection, best first (the one `sticky` pins, then the
/// balance's order), at most `retries + 1`; empty when none is usable and `all_unhealthy`
/// is `fail`.
pub fn candidates(pool: &Pool, hash_key: Option<u64>, sticky: &Sticky) -> Vec<Arc<Backend>> {
    let mut pick: Vec<usize> = (0..pool.backends.len())
        .filter(|&i| pool.backends[i].0.usable())
        .collect();
    if pick.is_empty() {
        if pool.config.all_unhealthy == AllUnhealthy::Fail {
            return Vec::new();
        }
        pick = (0..pool.backends.len()).collect();
    }
    let order = match (sticky.pinned, &pool.config.balance) {
        // The pinned backend, then the others as listed: a pinned request takes no turn of
        // the balance (round robin's position, say, stays where new clients need it).
        (Some(pinned), _) => std::iter::once(pinned)
            .chain(pick.into_iter().filter(|&i| i != pinned))
            .collect(),
        (None, Balance::RoundRobin) => round_robin(pool, &pick),
        (None, Balance::LeastConnections) => by_load(pool, &pick),
        (None, Balance::RandomTwo) => random_two(pool, &pick),
        (None, Balance::Hash(_)) => ring_walk(pool, &pick, hash_key.unwrap_or(0)),
    };
    order
        .into_iter()
        .take(pool.config.retries as usize + 1)
        .map(|i| pool.backends[i].0.clone())
        .collect()
}

/// Smooth weighted round robin (as nginx): each turn every candidate gains its weight,
/// the richest is chosen and pays the total. Fallbacks follow in config order.
fn round_robin(pool: &Pool, pick: &[usize]) -> Vec<usize> {
    let mut current = pool.rr.lock().unwrap_or_else(|p| p.into_inner());
    let total: i64 = pick.iter().map(|&i| pool.backends[i].1 as i64).sum();
    for &i in pick {
        current[i] += pool.backends[i].1 as i64;
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
fn by_load(pool: &Pool, pick: &[usize]) -> Vec<usize> {
    let turn = pool.turn.fetch_add(1, Ordering::Relaxed);
    let n = pool.backends.len().max(1);
    let mut order = pick.to_vec();
    order.sort_by_key(|&i| (load(pool, i), (i + n - turn % n) % n));
    order
}

/// Load of a backend: live connections per unit of weight, scaled to stay an integer.
fn load(pool: &Pool, i: usize) -> u64 {
    let (backend, weight) = &pool.backends[i];
    backend.active() as u64 * 1000 / (*weight).max(1) as u64
}

/// Power of two choices: two random candidates, the less loaded first, then the rest by load.
fn random_two(pool: &Pool, pick: &[usize]) -> Vec<usize> {
    let seed = pool.turn.fetch_add(0x9e37_79b9, Ordering::Relaxed) as u64;
    // The turn counter is seeded at random; hashing it spreads consecutive turns.
    let r = stable_hash(&seed.to_le_bytes());
    let a = pick[(r % pick.len() as u64) as usize];
    let b = pick[((r >> 32) % pick.len() as u64) as usize];
    let first = if load(pool, b) < load(pool, a) { b } else { a };
    let mut rest: Vec<usize> = pick.iter().copied().filter(|&i| i != first).collect();
    rest.sort_by_key(|&i| load(pool, i));
    std::iter::once(first).chain(rest).collect()
}

/// The ring of `pool`: `weight × RING_POINTS_PER_WEIGHT` points per backend, point `p` of a
/// backend at the hash of its name's bytes (its URL, or `URL@address` for a member a name
/// resolved to) followed by `p` as 4 little-endian bytes.
fn ring(pool: &Pool) -> &[(u64, usize)] {
    pool.ring.get_or_init(|| {
        let mut ring = Vec::new();
        for (i, (backend, weight)) in pool.backends.iter().enumerate() {
            let url = backend.name.as_bytes();
            let mut key = Vec::with_capacity(url.len() + 4);
            for point in 0..weight * RING_POINTS_PER_WEIGHT {
                key.clear();
                key.extend_from_slice(url);
                key.extend_from_slice(&point.to_le_bytes());
                ring.push((stable_hash(&key), i));
            }
        }
        ring.sort_unstable();
        ring
    })
}

/// The first point at or after `key` (found by binary search), then the distinct
/// candidates met walking on clockwise, for the fallbacks.
fn ring_walk(pool: &Pool, pick: &[usize], key: u64) -> Vec<usize> {
    let ring = ring(pool);
    let start = ring.partition_point(|&(point, _)| point < key);
    let mut order = Vec::with_capacity(pick.len());
    // At most once round the ring; it ends early once every candidate is in.
    for k in 0..ring.len() {
        let i = ring[(start + k) % ring.len()].1;
        if pick.contains(&i) && !order.contains(&i) {
            order.push(i);
            if order.len() == pick.len() {
                break;
            }
        }
    }
    order
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
mod tests;
