//! Prometheus metrics, owned by the proxy state (never the global registry) so tests are isolated.
//!
//! Label values come only from finite sets: route names and backend URLs from the config,
//! directions, hops, opcodes, `closed_by`, outcomes, close code classes ([`code_label`]) and
//! failure reasons; never a peer's bytes. The series of a route or backend that a reload
//! removed are dropped ([`Metrics::forget_route`], [`Metrics::forget_backend`]).
//! A connection resolves its label handles once ([`ConnMetrics`]), so relaying a frame
//! costs a few atomic adds and no hashing.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::proto::frame::OpCode;
use crate::shared::report::{CloseReport, ClosedBy, Outcome};

/// `direction` label values: index 0 is client → backend, 1 is backend → client.
pub const DIRECTIONS: [&str; 2] = ["client_to_backend", "backend_to_client"];

/// Opcodes in the order of [`ConnMetrics::frames`].
const OPCODES: [OpCode; 6] = [
    OpCode::Continuation,
    OpCode::Text,
    OpCode::Binary,
    OpCode::Close,
    OpCode::Ping,
    OpCode::Pong,
];

/// The `code` label of `wsgate_closes_total`: a registered code exactly, a private-use
/// range as its class, anything else `other`, so a peer choosing codes cannot create
/// more than this fixed set of series.
///
/// `None` (an empty Close) is `none`; 1006 never travels on the wire but is what the
/// report says when a peer vanished.
pub fn code_label(code: Option<u16>) -> &'static str {
    CODE_LABELS[code_index(code)]
}

/// The values of the close code label, in the order of [`code_index`].
const CODE_LABELS: [&str; 19] = [
    "none", "1000", "1001", "1002", "1003", "1005", "1006", "1007", "1008", "1009", "1010", "1011",
    "1012", "1013", "1014", "1015", "3xxx", "4xxx", "other",
];

/// Where a close code's label is in [`CODE_LABELS`].
fn code_index(code: Option<u16>) -> usize {
    let Some(code) = code else { return 0 };
    match code {
        1000..=1003 => (code - 999) as usize,
        1005..=1015 => (code - 1000) as usize,
        3000..=3999 => 16,
        4000..=4999 => 17,
        _ => 18,
    }
}

/// A route's series for its connections' handshakes and ends, each resolved by the first
/// connection that needs it: looked up per connection, the four lookups of an end (each a
/// hash of its label values and a read lock) cost ~800 instructions (issue #17).
#[derive(Debug, Default)]
pub struct CloseCounters {
    outcomes: [OnceLock<IntCounter>; Outcome::Admin as usize + 1],
    protocols: [OnceLock<IntCounter>; 2],
    closes: [[OnceLock<IntCounter>; CODE_LABELS.len()]; ClosedBy::Proxy as usize + 1],
    duration: OnceLock<Histogram>,
    handshake: OnceLock<Histogram>,
}

/// The metrics of one running wsgate.
pub struct Metrics {
    registry: Registry,
    connections_active: IntGaugeVec,
    connections_total: IntCounterVec,
    connections_protocol_total: IntCounterVec,
    handshake_failures_total: IntCounterVec,
    handshake_duration_seconds: HistogramVec,
    messages_total: IntCounterVec,
    frames_total: IntCounterVec,
    bytes_total: IntCounterVec,
    closes_total: IntCounterVec,
    connection_duration_seconds: HistogramVec,
    ping_rtt_seconds: HistogramVec,
    backend_connect_errors_total: IntCounterVec,
    backend_source_exhausted_total: IntCounterVec,
    dns_resolutions_total: IntCounterVec,
    dns_members: IntGaugeVec,
    config_reloads_total: IntCounterVec,
    backend_healthy: IntGaugeVec,
    http_requests_total: IntCounterVec,
    http_request_duration_seconds: HistogramVec,
    admission_refusals_total: IntCounterVec,
    proxy_protocol_headers_total: IntCounterVec,
    proxy_protocol_refusals_total: IntCounterVec,
    /// Bytes of the buffer budget granted now (the budget updates it).
    pub buffered_bytes: IntGauge,
    /// Waits for buffer room (the budget counts them).
    pub buffer_waits_total: IntCounter,
    /// Door refusals and JWKS fetches.
    pub auth: AuthMetrics,
}

/// Requests refused by a route's authentication, and the JWKS fetches behind it.
pub struct AuthMetrics {
    failures_total: IntCounterVec,
    jwks_fetches_total: IntCounterVec,
    jwks_keys: IntGaugeVec,
    jwks_last_success: IntGaugeVec,
}

impl AuthMetrics {
    fn new(r: &Registry) -> AuthMetrics {
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

    fn forget(&self, matches: &dyn Fn(&HashMap<&str, &str>) -> bool) {
        remove_matching(&self.failures_total, matches);
        remove_matching(&self.jwks_fetches_total, matches);
        remove_matching(&self.jwks_keys, matches);
        remove_matching(&self.jwks_last_success, matches);
    }
}

/// One connection's live counters, resolved once when it starts.
pub struct ConnMetrics {
    /// The route's handles; its active gauge is among them (one pointer for both).
    counters: Arc<RouteCounters>,
    /// Whether frames are counted (`metrics.per_frame`).
    per_frame: bool,
    /// Set once the connection left the active gauge (by `finish` or by drop).
    finished: bool,
}

/// The `code` label of each status class.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`STATUS_CLASSES`] of `status`'s class.
fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// A route's plain-HTTP series, each resolved by its first request.
#[derive(Debug, Default)]
pub struct HttpCounters {
    classes: [OnceLock<IntCounter>; 5],
    duration: OnceLock<Histogram>,
}

/// A route's per-direction counters, resolved once per route and shared by its connections.
pub struct RouteCounters {
    active: IntGauge,
    messages: [IntCounter; 2],
    bytes: [IntCounter; 2],
    frames: [[IntCounter; 6]; 2],
}

impl ConnMetrics {
    /// Counts one frame relayed in `direction` (0 or 1); `data_len` is its payload length
    /// when it is a data frame, and `ends_message` whether it completes a message.
    pub fn frame(
        &self,
        direction: usize,
        opcode: OpCode,
        data_len: Option<u64>,
        ends_message: bool,
    ) {
        if !self.per_frame {
            return;
        }
        let c = &self.counters;
        let i = OPCODES.iter().position(|o| *o == opcode).unwrap_or(0);
        c.frames[direction][i].inc();
        if let Some(len) = data_len {
            c.bytes[direction].inc_by(len);
            if ends_message {
                c.messages[direction].inc();
            }
        }
    }
}

impl ConnMetrics {
    /// Takes the connection out of the active gauge now, before its close report (the
    /// relay's state, which owns this, is dropped a little later; dropping it without
    /// `finish`, as an aborted task does, still leaves the gauge right).
    pub fn finish(&mut self) {
        if !std::mem::replace(&mut self.finished, true) {
            self.counters.active.dec();
        }
    }
}

impl Drop for ConnMetrics {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Registers a collector; names are static and distinct, so registration cannot fail.
fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("each metric name is static, valid and registered once");
    c
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    register(registry, c)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: (f64, f64, usize),
) -> HistogramVec {
    let buckets = prometheus::exponential_buckets(buckets.0, buckets.1, buckets.2)
        .expect("static bucket layout");
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(
        registry,
        HistogramVec::new(opts, labels).expect("static metric definition"),
    )
}

impl Metrics {
    /// Creates the metrics in a registry of their own.
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("wsgate".into()), None).expect("valid prefix");
        let r = &registry;
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
            register(r, g)
        };
        let build = gauge("build_info", "Build information (always 1)", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            connections_active: gauge(
                "connections_active",
                "Relayed connections open now",
                &["route"],
            ),
            connections_total: counter(
                r,
                "connections_total",
                "Relayed connections ended, by outcome",
                &["route", "outcome"],
            ),
            // A family of its own rather than a label on `connections_total`: existing
            // queries and dashboards keep their series, and each family stays small.
            connections_protocol_total: counter(
                r,
                "connections_protocol_total",
                "Relayed connections ended, by the client hop's HTTP version (h1, h2)",
                &["route", "protocol"],
            ),
            handshake_failures_total: counter(
                r,
                "handshake_failures_total",
                "Upgrades not completed, by reason",
                &["route", "reason"],
            ),
            handshake_duration_seconds: histogram(
                r,
                "handshake_duration_seconds",
                "Time to complete an upgrade, backend handshake included",
                &["route"],
                (0.0005, 2.0, 16),
            ),
            messages_total: counter(
                r,
                "messages_total",
                "Messages relayed",
                &["route", "direction"],
            ),
            frames_total: counter(
                r,
                "frames_total",
                "Frames relayed",
                &["route", "direction", "opcode"],
            ),
            bytes_total: counter(
                r,
                "bytes_total",
                "Data frame payload bytes relayed",
                &["route", "direction"],
            ),
            closes_total: counter(
                r,
                "closes_total",
                "Connections closed, by who closed first and the close code",
                &["route", "closed_by", "code"],
            ),
            connection_duration_seconds: histogram(
                r,
                "connection_duration_seconds",
                "Lifetime of relayed connections",
                &["route"],
                (0.01, 4.0, 12),
            ),
            ping_rtt_seconds: histogram(
                r,
                "ping_rtt_seconds",
                "Round trip of wsgate's keepalive pings, per hop",
                &["route", "hop"],
                (0.0001, 2.0, 16),
            ),
            backend_connect_errors_total: counter(
                r,
                "backend_connect_errors_total",
                "Failed backend connects",
                &["route", "backend"],
            ),
            backend_source_exhausted_total: counter(
                r,
                "backend_source_exhausted_total",
                "Backend connects refused for want of a local port (every source address used up)",
                &["route", "backend"],
            ),
            dns_resolutions_total: counter(
                r,
                "dns_resolutions_total",
                "Lookups of backends given by host name, by result (ok, changed, empty, error)",
                &["route", "backend", "result"],
            ),
            dns_members: gauge(
                "dns_members",
                "Pool members (addresses) a backend given by host name has now",
                &["route", "backend"],
            ),
            backend_healthy: gauge(
                "backend_healthy",
                "1 when a backend takes new connections (health checks, passive ejection)",
                &["route", "backend"],
            ),
            http_requests_total: counter(
                r,
                "http_requests_total",
                "Plain HTTP requests answered, by status class",
                &["route", "code"],
            ),
            http_request_duration_seconds: histogram(
                r,
                "http_request_duration_seconds",
                "Plain HTTP requests, from the request head to the response body's end",
                &["route"],
                (0.0005, 2.0, 20),
            ),
            admission_refusals_total: counter(
                r,
                "admission_refusals_total",
                "Requests refused by a route's admission checks, by reason (per_ip, \
                 per_identity, rate)",
                &["route", "reason"],
            ),
            proxy_protocol_headers_total: counter(
                r,
                "proxy_protocol_headers_total",
                "PROXY protocol headers taken on proxy_protocol listeners, by version (v1, v2)",
                &["version"],
            ),
            proxy_protocol_refusals_total: counter(
                r,
                "proxy_protocol_refusals_total",
                "Connections closed on proxy_protocol listeners before their PROXY header \
                 was taken, by reason (untrusted_peer, timeout, truncated, bad_signature, \
                 too_long, malformed, io)",
                &["reason"],
            ),
            config_reloads_total: counter(
                r,
                "config_reloads_total",
                "Configuration reloads, by result",
                &["result"],
            ),
            buffered_bytes: register(
                r,
                IntGauge::new(
                    "buffered_bytes",
                    "Bytes of limits.max_buffered_bytes granted to frames over 16 KiB now",
                )
                .expect("static metric definition"),
            ),
            buffer_waits_total: register(
                r,
                IntCounter::new(
                    "buffer_waits_total",
                    "Times a connection stopped reading a large frame until buffer room came back",
                )
                .expect("static metric definition"),
            ),
            auth: AuthMetrics::new(r),
            registry,
        }
    }

    /// Counts a new relayed connection and resolves its live counters (unless `per_frame` is off).
    ///
    /// `cached` holds the route's resolved handles (`Route::metrics`), so a new
    /// connection costs no label hashing.
    pub fn connection_opened(
        &self,
        route: &str,
        per_frame: bool,
        cached: &OnceLock<Arc<RouteCounters>>,
    ) -> ConnMetrics {
        let handles = cached.get_or_init(|| {
            let per_dir = |v: &IntCounterVec| DIRECTIONS.map(|d| v.with_label_values(&[route, d]));
            Arc::new(RouteCounters {
                active: self.connections_active.with_label_values(&[route]),
                messages: per_dir(&self.messages_total),
                bytes: per_dir(&self.bytes_total),
                frames: DIRECTIONS.map(|d| {
                    OPCODES.map(|o| self.frames_total.with_label_values(&[route, d, o.as_str()]))
                }),
            })
        });
        handles.active.inc();
        ConnMetrics {
            counters: handles.clone(),
            per_frame,
            finished: false,
        }
    }

    /// Records the end of a relayed connection, through its route's handles.
    pub fn connection_closed(&self, handles: &CloseCounters, r: &CloseReport) {
        let route = r.route.as_str();
        let outcome = r.outcome;
        handles.outcomes[outcome as usize]
            .get_or_init(|| {
                self.connections_total
                    .with_label_values(&[route, outcome.as_str()])
            })
            .inc();
        let protocol = r.protocol;
        handles.protocols[protocol as usize]
            .get_or_init(|| {
                self.connections_protocol_total
                    .with_label_values(&[route, protocol.as_str()])
            })
            .inc();
        let code = code_index(r.close_code);
        let closed_by = r.closed_by;
        handles.closes[closed_by as usize][code]
            .get_or_init(|| {
                self.closes_total.with_label_values(&[
                    route,
                    closed_by.as_str(),
                    code_label(r.close_code),
                ])
            })
            .inc();
        handles
            .duration
            .get_or_init(|| self.connection_duration_seconds.with_label_values(&[route]))
            .observe(r.duration.as_secs_f64());
    }

    /// Counts a refused or failed upgrade.
    pub fn handshake_failure(&self, route: &str, reason: &str) {
        self.handshake_failures_total
            .with_label_values(&[route, reason])
            .inc();
    }

    /// Records how long a successful upgrade took.
    pub fn handshake_duration(&self, handles: &CloseCounters, route: &str, took: Duration) {
        handles
            .handshake
            .get_or_init(|| self.handshake_duration_seconds.with_label_values(&[route]))
            .observe(took.as_secs_f64());
    }

    /// Records a keepalive round trip on one hop (`client` or `backend`).
    pub fn ping_rtt(&self, route: &str, hop: &str, rtt: Duration) {
        self.ping_rtt_seconds
            .with_label_values(&[route, hop])
            .observe(rtt.as_secs_f64());
    }

    /// Counts a plain HTTP request answered with `status` and how long it took.
    pub fn http_request(&self, route: &str, status: u16, took: Duration) {
        let class = STATUS_CLASSES[status_class(status)];
        self.http_requests_total
            .with_label_values(&[route, class])
            .inc();
        self.http_request_duration_seconds
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// [`Metrics::http_request`] through a route's handles, each looked up in its vector
    /// once (the first request of its status class) rather than per request.
    pub fn http_request_on(
        &self,
        handles: &HttpCounters,
        route: &str,
        status: u16,
        took: Duration,
    ) {
        let class = status_class(status);
        handles.classes[class]
            .get_or_init(|| {
                self.http_requests_total
                    .with_label_values(&[route, STATUS_CLASSES[class]])
            })
            .inc();
        handles
            .duration
            .get_or_init(|| {
                self.http_request_duration_seconds
                    .with_label_values(&[route])
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a failed backend connect.
    pub fn backend_connect_error(&self, route: &str, backend: &str) {
        self.backend_connect_errors_total
            .with_label_values(&[route, backend])
            .inc();
    }

    /// Counts a backend connect refused for want of a local port.
    pub fn source_exhausted(&self, route: &str, backend: &str) {
        self.backend_source_exhausted_total
            .with_label_values(&[route, backend])
            .inc();
    }

    /// Counts a lookup of a backend's host name (`result` from a fixed set) and sets the
    /// number of members it has now.
    pub fn dns_resolution(&self, route: &str, backend: &str, result: &str, members: usize) {
        self.dns_resolutions_total
            .with_label_values(&[route, backend, result])
            .inc();
        self.dns_members
            .with_label_values(&[route, backend])
            .set(members as i64);
    }

    /// The gauge saying whether a backend takes new connections (1) or not (0).
    pub fn backend_healthy_gauge(&self, route: &str, backend: &str) -> IntGauge {
        self.backend_healthy.with_label_values(&[route, backend])
    }

    /// Counts a refusal by a route's admission checks (`reason` from a fixed set).
    pub fn admission_refusal(&self, route: &str, reason: &str) {
        self.admission_refusals_total
            .with_label_values(&[route, reason])
            .inc();
    }

    /// Counts a PROXY header taken (`version` `v1` or `v2`).
    pub fn proxy_protocol_accepted(&self, version: &str) {
        self.proxy_protocol_headers_total
            .with_label_values(&[version])
            .inc();
    }

    /// Counts a connection closed before its PROXY header was taken (`reason` from a
    /// fixed set).
    pub fn proxy_protocol_refused(&self, reason: &str) {
        self.proxy_protocol_refusals_total
            .with_label_values(&[reason])
            .inc();
    }

    /// Counts a configuration reload (`ok` or `error`).
    pub fn config_reload(&self, result: &str) {
        self.config_reloads_total.with_label_values(&[result]).inc();
    }

    /// Drops every series labelled with `route` (call once nothing counts for it any more:
    /// a closing connection would bring its series back).
    pub fn forget_route(&self, route: &str) {
        self.forget(&|labels| labels.get("route") == Some(&route));
    }

    /// Drops the series of `backend` on `route` (same caveat as [`Metrics::forget_route`]).
    pub fn forget_backend(&self, route: &str, backend: &str) {
        self.forget(&|labels| {
            labels.get("route") == Some(&route) && labels.get("backend") == Some(&backend)
        });
    }

    /// Removes, from every family, the series whose labels `matches` accepts.
    fn forget(&self, matches: &dyn Fn(&HashMap<&str, &str>) -> bool) {
        remove_matching(&self.connections_active, matches);
        remove_matching(&self.connections_total, matches);
        remove_matching(&self.connections_protocol_total, matches);
        remove_matching(&self.handshake_failures_total, matches);
        remove_matching(&self.handshake_duration_seconds, matches);
        remove_matching(&self.messages_total, matches);
        remove_matching(&self.frames_total, matches);
        remove_matching(&self.bytes_total, matches);
        remove_matching(&self.closes_total, matches);
        remove_matching(&self.connection_duration_seconds, matches);
        remove_matching(&self.ping_rtt_seconds, matches);
        remove_matching(&self.backend_connect_errors_total, matches);
        remove_matching(&self.backend_source_exhausted_total, matches);
        remove_matching(&self.dns_resolutions_total, matches);
        remove_matching(&self.dns_members, matches);
        remove_matching(&self.backend_healthy, matches);
        remove_matching(&self.http_requests_total, matches);
        remove_matching(&self.http_request_duration_seconds, matches);
        remove_matching(&self.admission_refusals_total, matches);
        self.auth.forget(matches);
    }

    /// Relayed connections open now, over all routes.
    pub fn active_total(&self) -> usize {
        self.connections_active
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .map(|m| m.get_gauge().get_value().max(0.0) as usize)
            .sum()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Removes the series of `vec` whose labels `matches` accepts. The prometheus crate removes
/// only by a full label set, so the sets are read back from the series that exist.
fn remove_matching<T: MetricVecBuilder>(
    vec: &MetricVec<T>,
    matches: &dyn Fn(&HashMap<&str, &str>) -> bool,
) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            // The labels were read from this very vector, so they always fit it.
            if matches(&labels) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_labels_are_a_finite_set() {
        assert_eq!(code_label(None), "none");
        for code in (1000..=1003).chain(1005..=1015) {
            assert_eq!(code_label(Some(code)), code.to_string());
        }
        assert_eq!(code_label(Some(1004)), "other");
        assert_eq!(code_label(Some(1016)), "other");
        assert_eq!(code_label(Some(2999)), "other");
        assert_eq!(code_label(Some(3000)), "3xxx");
        assert_eq!(code_label(Some(3999)), "3xxx");
        assert_eq!(code_label(Some(4000)), "4xxx");
        assert_eq!(code_label(Some(4999)), "4xxx");
        assert_eq!(code_label(Some(5000)), "other");
        assert_eq!(code_label(Some(0)), "other");
        let all: std::collections::BTreeSet<_> =
            (0..=u16::MAX).map(|c| code_label(Some(c))).collect();
        assert_eq!(all.len(), 18, "15 registered codes, two classes, other");
    }
}
