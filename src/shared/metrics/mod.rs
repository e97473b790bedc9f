//! Prometheus metrics, owned by the proxy state (never the global registry) so tests are isolated.
//!
//! Label values come only from finite sets: route names and backend URLs from the config,
//! directions, hops, opcodes, `closed_by`, outcomes, close code classes
//! (`handles::code_label`) and failure reasons; never a peer's bytes. The series of a route or backend that a reload
//! removed are dropped ([`Metrics::forget_route`], [`Metrics::forget_backend`]).
//! A connection resolves its label handles once ([`ConnMetrics`]), so relaying a frame
//! costs a few atomic adds and no hashing.
//!
//! Here: the families and the exposition; `record`: what the proxy records as things
//! happen; `handles`: what a route or a connection resolves once; `auth`: the door's.

use std::collections::HashMap;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

mod auth;
mod handles;
mod record;

pub use auth::AuthMetrics;
pub use handles::{CloseCounters, ConnMetrics, HttpCounters, RouteCounters};

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
}

impl Metrics {
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
