//! What the proxy records as connections, requests and checks happen.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge};

use super::Metrics;
use super::handles::{
    CloseCounters, ConnMetrics, DIRECTIONS, HttpCounters, OPCODES, RouteCounters, STATUS_CLASSES,
    code_index, code_label, status_class,
};
use crate::shared::report::CloseReport;

impl Metrics {
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
}
