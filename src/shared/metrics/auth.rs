//! The door's metrics: refusals by reason, and the JWKS fetches behind JWT checks.

use std::collections::HashMap;

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{counter, register, remove_matching};

/// Requests refused by a route's authentication, and the JWKS fetches behind it.
pub struct AuthMetrics {
    failures_total: IntCounterVec,
    jwks_fetches_total: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_last_success: IntGaugeVec,
}

impl AuthMetrics {
    pub(super) fn new(r: &Registry) -> AuthMetrics {
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["route"])
                .expect("static metric definition");
            register(r, g)
        };
        AuthMetrics {
            failures_total: counter(
                r,
                "auth_failures_total",
                "Requests refused by a route's authentication, by reason",
                &["route", "reason"],
            ),
            jwks_fetches_total: counter(
                r,
                "jwks_fetches_total",
                "JWKS fetches, by result (ok, failed)",
                &["route", "result"],
            ),
            jwks_keys: gauge("jwks_keys", "Keys of the route's JWKS in use now"),
            jwks_last_success: gauge(
                "jwks_last_success_timestamp_seconds",
                "Unix time of the last successful JWKS fetch",
            ),
        }
    }

    /// Counts a request refused by authentication (`reason` from a finite set).
    pub fn failure(&self, route: &str, reason: &str) {
        self.failures_total
            .with_label_values(&[route, reason])
            .inc();
    }

    /// Records a JWKS fetch: its key count and time when it succeeded.
    pub fn jwks_fetch(&self, route: &str, keys: Option<usize>) {
        let result = if keys.is_some() { "ok" } else { "failed" };
        self.jwks_fetches_total
            .with_label_values(&[route, result])
            .inc();
        if let Some(n) = keys {
            self.jwks_keys.with_label_values(&[route]).set(n as i64);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            self.jwks_last_success
                .with_label_values(&[route])
                .set(now as i64);
        }
    }

    pub(super) fn forget(&self, matches: &dyn Fn(&HashMap<&str, &str>) -> bool) {
        remove_matching(&self.failures_total, matches);
        remove_matching(&self.jwks_fetches_total, matches);
        remove_matching(&self.jwks_keys, matches);
        remove_matching(&self.jwks_last_success, matches);
    }
}
