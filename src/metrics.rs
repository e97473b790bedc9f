//! Prometheus metrics, owned by the gateway (never the global registry) so tests are isolated.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::close::CloseReport;

/// The metrics of one running wsgate.
pub struct Metrics {
    registry: Registry,
    connections_active: IntGaugeVec,
    connections_total: IntCounterVec,
    handshake_failures_total: IntCounterVec,
    handshake_duration_seconds: HistogramVec,
    messages_total: IntCounterVec,
    bytes_total: IntCounterVec,
    closes_total: IntCounterVec,
    connection_duration_seconds: HistogramVec,
    backend_connect_errors_total: IntCounterVec,
    ping_rtt_seconds: HistogramVec,
}

/// Decrements `connections_active` when the connection ends, however it ends.
pub struct ActiveGuard(IntGauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric definitions are static and valid");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric name is registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["route"])
        .expect("metric definitions are static and valid");
    registry
        .register(Box::new(h.clone()))
        .expect("each metric name is registered once");
    h
}

impl Metrics {
    /// Creates the metrics in a registry of their own.
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("wsgate".into()), None).expect("the prefix is a valid name");
        let connections_active = IntGaugeVec::new(
            Opts::new("connections_active", "Relayed connections open now"),
            &["route"],
        )
        .expect("metric definitions are static and valid");
        registry
            .register(Box::new(connections_active.clone()))
            .expect("each metric name is registered once");
        let build = IntGaugeVec::new(Opts::new("build_info", "Build information"), &["version"])
            .expect("metric definitions are static and valid");
        registry
            .register(Box::new(build.clone()))
            .expect("each metric name is registered once");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        Metrics {
            connections_active,
            connections_total: counter(
                &registry,
                "connections_total",
                "Relayed connections ended, by outcome",
                &["route", "outcome"],
            ),
            handshake_failures_total: counter(
                &registry,
                "handshake_failures_total",
                "Upgrades refused, by reason",
                &["route", "reason"],
            ),
            handshake_duration_seconds: histogram(
                &registry,
                "handshake_duration_seconds",
                "Upgrade time including the backend handshake",
                prometheus::exponential_buckets(0.0005, 2.0, 16).expect("static bucket layout"),
            ),
            messages_total: counter(
                &registry,
                "messages_total",
                "Messages relayed",
                &["route", "direction"],
            ),
            bytes_total: counter(
                &registry,
                "bytes_total",
                "Data payload bytes relayed",
                &["route", "direction"],
            ),
            closes_total: counter(
                &registry,
                "closes_total",
                "Connections closed, by who closed and code",
                &["route", "closed_by", "code"],
            ),
            connection_duration_seconds: histogram(
                &registry,
                "connection_duration_seconds",
                "Lifetime of relayed connections",
                prometheus::exponential_buckets(0.01, 4.0, 12).expect("static bucket layout"),
            ),
            backend_connect_errors_total: counter(
                &registry,
                "backend_connect_errors_total",
                "Failed backend connects",
                &["route", "backend"],
            ),
            ping_rtt_seconds: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "ping_rtt_seconds",
                        "Round trip of wsgate's keepalive pings, per hop",
                    )
                    .buckets(
                        prometheus::exponential_buckets(0.0001, 2.0, 16)
                            .expect("static bucket layout"),
                    ),
                    &["route", "hop"],
                )
                .expect("metric definitions are static and valid");
                registry
                    .register(Box::new(h.clone()))
                    .expect("each metric name is registered once");
                h
            },
            registry,
        }
    }

    /// Counts a new relayed connection; the guard uncounts it.
    pub fn connection_opened(&self, route: &str) -> ActiveGuard {
        let g = self.connections_active.with_label_values(&[route]);
        g.inc();
        ActiveGuard(g)
    }

    /// Records the end of a relayed connection.
    pub fn connection_closed(&self, r: &CloseReport) {
        let route = r.route.as_str();
        self.connections_total
            .with_label_values(&[route, r.outcome.as_str()])
            .inc();
        let code = r
            .close_code
            .map_or_else(|| "none".to_string(), |c| c.to_string());
        self.closes_total
            .with_label_values(&[route, r.closed_by.as_str(), &code])
            .inc();
        self.connection_duration_seconds
            .with_label_values(&[route])
            .observe(r.duration.as_secs_f64());
        self.messages_total
            .with_label_values(&[route, "in"])
            .inc_by(r.msgs_in);
        self.messages_total
            .with_label_values(&[route, "out"])
            .inc_by(r.msgs_out);
        self.bytes_total
            .with_label_values(&[route, "in"])
            .inc_by(r.bytes_in);
        self.bytes_total
            .with_label_values(&[route, "out"])
            .inc_by(r.bytes_out);
    }

    /// Counts a refused upgrade.
    pub fn handshake_failure(&self, route: &str, reason: &str) {
        self.handshake_failures_total
            .with_label_values(&[route, reason])
            .inc();
    }

    /// Records how long a successful upgrade took.
    pub fn handshake_duration(&self, route: &str, took: Duration) {
        self.handshake_duration_seconds
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// Records a keepalive round trip on one hop (`client` or `backend`).
    pub fn ping_rtt(&self, route: &str, hop: &str, rtt: Duration) {
        self.ping_rtt_seconds
            .with_label_values(&[route, hop])
            .observe(rtt.as_secs_f64());
    }

    /// Counts a failed backend connect.
    pub fn backend_connect_error(&self, route: &str, backend: &str) {
        self.backend_connect_errors_total
            .with_label_values(&[route, backend])
            .inc();
    }

    /// Relayed connections open now, over all routes.
    pub fn active_total(&self) -> usize {
        use prometheus::core::Collector;
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
        // Encoding into a Vec cannot fail for the text format.
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
