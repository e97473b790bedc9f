//! Admission at the door: how many WebSockets a client network and an identity may hold on
//! a route, how fast new ones may open, and how long each may live.
//!
//! Only WebSockets count and only upgrades are limited. A plain request is short: a cap
//! on live requests per client would be a concurrency limit nobody asked for, and a rate
//! that plain requests drew from would let a page's assets (or Socket.IO's polling) use
//! up the budget meant for connections. Each refusal comes before any backend contact and
//! is counted in `wsgate_admission_refusals_total{route,reason}`.

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use tokio::time::Instant;

use crate::config::Tuning;
use crate::ingress::door::{Pass, Refusal};
use crate::shared::admission::EndOfLife;
use crate::shared::client::ClientInfo;
use crate::shared::gate::client_key;
use crate::shared::metrics::Metrics;
use crate::shared::report::Outcome;
use crate::shared::routes::Route;

/// `Retry-After` for a client over a cap: a place comes back only when one of its own
/// connections closes, which no server-side clock predicts; 10 s keeps a reconnect loop
/// from spinning while being short enough for a client that just closed one.
const CAP_RETRY_AFTER_SECS: u64 = 10;

/// Close code at the end of `max_lifetime`: going away, come back (RFC 6455 §7.4.1).
const LIFETIME_CODE: u16 = 1001;

/// The cheap checks, before any credential is looked at: the client network's cap, then
/// the route's rate (in that order, so a client refused at its own cap does not spend
/// the tokens of everyone else). The per-client seat goes into `pass`.
pub(super) fn before_auth(
    route: &Route,
    client: &ClientInfo,
    metrics: &Metrics,
    pass: &mut Pass,
) -> Result<(), Box<Refusal>> {
    let config = &route.config.admission;
    if let Some(max) = config.max_connections_per_ip {
        let key = client_key(client.ip(), config.ipv6_prefix);
        let seat = route
            .gate
            .per_ip
            .try_enter(key, max)
            .ok_or_else(|| refuse(route, metrics, "per_ip", CAP_RETRY_AFTER_SECS))?;
        pass.admitted.seats.push(seat);
    }
    if let Some(bucket) = &route.gate.rate
        && let Err(wait) = bucket.take()
    {
        return Err(refuse(route, metrics, "rate", retry_after_secs(wait)));
    }
    Ok(())
}

/// The identity's cap, once the checks before it said who the client is; a connection
/// without an identity is not counted.
pub(super) fn after_auth(
    route: &Route,
    metrics: &Metrics,
    pass: &mut Pass,
) -> Result<(), Box<Refusal>> {
    let (Some(max), Some(identity)) = (
        route.config.admission.max_connections_per_identity,
        &pass.admitted.identity,
    ) else {
        return Ok(());
    };
    let seat = route
        .gate
        .per_identity
        .try_enter(identity.clone(), max)
        .ok_or_else(|| refuse(route, metrics, "per_identity", CAP_RETRY_AFTER_SECS))?;
    pass.admitted.seats.push(seat);
    Ok(())
}

/// The end of a WebSocket's `max_lifetime`, drawn for this connection, if it has one.
pub(super) fn lifetime(tuning: &Tuning) -> Option<EndOfLife> {
    if tuning.max_lifetime.is_zero() {
        return None;
    }
    let unit = unit_interval(crate::shared::random::u64());
    Some(EndOfLife {
        at: Instant::now() + jittered(tuning.max_lifetime, tuning.max_lifetime_jitter, unit),
        code: LIFETIME_CODE,
        reason: "lifetime".into(),
        outcome: Outcome::Lifetime,
    })
}

/// `base` moved by up to `jitter` of itself either way: `unit` 0 is `base·(1−jitter)`,
/// `unit` towards 1 approaches `base·(1+jitter)`.
fn jittered(base: Duration, jitter: f64, unit: f64) -> Duration {
    base.mul_f64(1.0 - jitter + 2.0 * jitter * unit)
}

/// A uniform draw from [0, 1) out of 64 random bits (the top 53, a double's mantissa).
fn unit_interval(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Whole seconds, rounded up and at least 1 (`Retry-After: 0` would invite a retry that
/// is refused again).
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// A 429 with `Retry-After`, counted.
fn refuse(
    route: &Route,
    metrics: &Metrics,
    reason: &'static str,
    retry_after: u64,
) -> Box<Refusal> {
    metrics.admission_refusal(route.name(), reason);
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    let body = match reason {
        "rate" => "too many new connections on this route, retry later\n",
        _ => "too many connections, retry later\n",
    };
    Box::new(Refusal {
        status: StatusCode::TOO_MANY_REQUESTS,
        headers,
        body: Bytes::from_static(body.as_bytes()),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each WebSocket's lifetime is uniform over [L·(1−j), L·(1+j)]: every draw inside
    /// the bounds, both outer tenths of the range reached, every tenth about as full as
    /// the others, and the mean close to L.
    #[test]
    fn lifetimes_spread_uniformly_within_the_jitter() {
        let (base, jitter) = (Duration::from_secs(3600), 0.1);
        let (lo, hi) = (base.mul_f64(0.9), base.mul_f64(1.1));
        const DRAWS: usize = 20_000;
        let mut tenths = [0usize; 10];
        let mut sum = 0.0;
        for _ in 0..DRAWS {
            let d = jittered(base, jitter, unit_interval(crate::shared::random::u64()));
            assert!(lo <= d && d <= hi, "{d:?} outside [{lo:?}, {hi:?}]");
            let at = (d - lo).as_secs_f64() / (hi - lo).as_secs_f64();
            tenths[((at * 10.0) as usize).min(9)] += 1;
            sum += d.as_secs_f64();
        }
        // 2,000 expected per tenth, standard deviation ~42: ±400 is ~10 deviations.
        for (i, n) in tenths.iter().enumerate() {
            assert!((1600..=2400).contains(n), "tenth {i} has {n}: {tenths:?}");
        }
        let mean = sum / DRAWS as f64;
        assert!(
            (mean - 3600.0).abs() < 3600.0 * 0.005,
            "mean {mean}s, expected about 3600s"
        );
        // The ends of the range are the ends of the formula.
        assert_eq!(jittered(base, jitter, 0.0), lo);
        assert!(jittered(base, jitter, unit_interval(u64::MAX)) <= hi);
        assert_eq!(jittered(base, 0.0, 0.7), base, "no jitter, no spread");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2500)), 3);
    }

    fn route(admission: &str) -> std::sync::Arc<Route> {
        crate::shared::routes::test_route(&format!(
            "{{name: r, path: /, echo: true, admission: {admission}}}"
        ))
    }

    fn pass_as(identity: Option<&str>) -> Pass {
        let mut pass = Pass::default();
        pass.admitted.identity = identity.map(str::to_string);
        pass
    }

    /// The identity cap counts the identity the checks before it found (JWT, forward
    /// auth; set by hand here), per identity, and nobody
    /// without one; the places come back with the passes.
    #[test]
    fn the_identity_cap_counts_live_connections_per_identity() {
        let metrics = Metrics::new();
        let route = route("{max_connections_per_identity: 2}");
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut pass = pass_as(Some("alice"));
            after_auth(&route, &metrics, &mut pass).expect("under the cap");
            held.push(pass);
        }
        let refused = after_auth(&route, &metrics, &mut pass_as(Some("alice")))
            .expect_err("third connection of alice");
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.reason, "per_identity");
        assert_eq!(refused.headers[RETRY_AFTER], "10");
        let mut bob = pass_as(Some("bob"));
        after_auth(&route, &metrics, &mut bob).expect("bob has his own count");
        for _ in 0..5 {
            let mut anonymous = pass_as(None);
            after_auth(&route, &metrics, &mut anonymous).expect("no identity, no count");
            assert!(anonymous.admitted.seats.is_empty());
        }
        assert_eq!(route.gate.per_identity.count(&"alice".to_string()), 2);
        held.pop();
        after_auth(&route, &metrics, &mut pass_as(Some("alice"))).expect("a place came back");
        drop((held, bob));
        assert_eq!(route.gate.per_identity.keys(), 0);
        let text = metrics.render();
        assert!(
            text.contains("wsgate_admission_refusals_total{reason=\"per_identity\",route=\"r\"} 1"),
            "{text}"
        );
    }
}
