//! The one pool route the pool tests put wsgate in front of (`p` on `/p`), and the
//! helpers that open connections through it one after another or keep them open.

use std::time::Duration;

use super::{config, open, pool_route};
use crate::support::proxy::Proxy;
use crate::support::raw::RawClient;

/// The name of the route every pool test's proxy serves.
pub const ROUTE: &str = "p";
/// The path of [`ROUTE`].
pub const PATH: &str = "/p";

/// Active checks fast enough to flip a backend within a few hundred milliseconds.
pub const FAST_CHECKS: &str =
    "health_check: {path: /health, interval: 100ms, timeout: 200ms, rise: 2, fall: 2}";

/// The interval of [`FAST_CHECKS`], for tests that time its flips.
pub const FAST_INTERVAL: Duration = Duration::from_millis(100);
/// The rise of [`FAST_CHECKS`].
pub const FAST_RISE: u32 = 2;
/// The fall of [`FAST_CHECKS`].
pub const FAST_FALL: u32 = 2;

/// wsgate with the one route `p` over `backends` (YAML items) and `extra` route lines.
pub async fn proxy(backends: &[String], extra: &[&str]) -> Proxy {
    Proxy::start(&config("1s", &pool_route(ROUTE, PATH, backends, extra))).await
}

/// [`proxy`] served on the test's paused clock (the test runs with `start_paused = true`),
/// for tests that wait on a configured duration: it passes in virtual time, exactly.
pub async fn paused_proxy(backends: &[String], extra: &[&str]) -> Proxy {
    Proxy::builder(&config("1s", &pool_route(ROUTE, PATH, backends, extra)))
        .paused()
        .start()
        .await
}

/// Connects and drops `n` times in a row (`extra` headers); the serving backend of each.
pub async fn sequential(proxy: &Proxy, n: usize, extra: &[(&str, &str)]) -> Vec<String> {
    let mut served = Vec::with_capacity(n);
    for _ in 0..n {
        served.push(open(proxy.addr(), PATH, extra).await.0);
    }
    served
}

/// Opens `n` connections and keeps them; with the serving backend of each.
pub async fn hold(proxy: &Proxy, n: usize) -> Vec<(String, RawClient)> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(open(proxy.addr(), PATH, &[]).await);
    }
    held
}
