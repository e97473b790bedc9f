//! Why the backend side of an upgrade failed, and whether another backend may be tried.

use hyper::StatusCode;

use crate::backend::dial::ConnectError;
use crate::shared::metrics::Metrics;
use crate::shared::pool::{Backend, Pool};

/// A failed backend attempt. Every variant happened before the client heard anything, so
/// the client gets an HTTP status; [`BackendError::retryable`] says whether the next
/// candidate may be tried.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached (TCP or TLS).
    #[error("backend unreachable: {0}")]
    Connect(#[from] ConnectError),
    /// The backend did not finish its handshake in time.
    #[error("backend handshake timed out")]
    Timeout,
    /// The connection failed while the upgrade was written or its answer read.
    #[error("backend connection failed during the upgrade ({during}): {source}")]
    Io {
        /// What wsgate was doing.
        during: &'static str,
        /// The socket error (`UnexpectedEof` when the backend closed too early).
        source: std::io::Error,
    },
    /// The backend answered, but not with a valid WebSocket upgrade (or HTTP at all).
    #[error("invalid backend handshake: {0}")]
    Invalid(String),
    /// A plain HTTP exchange failed: the connection broke before the response head, or the
    /// head was invalid or too large.
    #[error("backend HTTP exchange failed: {0}")]
    Exchange(#[source] hyper::Error),
    /// Every backend of the route is unhealthy (and `all_unhealthy: fail`).
    #[error("no healthy backend")]
    NoHealthyBackend,
}

impl BackendError {
    /// Whether the next candidate may be tried: nothing was sent to the client, and the
    /// failure belongs to this backend, not to the request.
    pub fn retryable(&self) -> bool {
        !matches!(self, BackendError::NoHealthyBackend)
    }

    /// Whether wsgate itself ran out of local ports towards the backend: its host's
    /// limit, so the backend is not to blame (no ejection) and the client gets 503.
    pub fn no_source_port(&self) -> bool {
        matches!(
            self,
            BackendError::Connect(ConnectError::NoSourcePort { .. })
        )
    }

    /// The HTTP status sent to the client when no candidate is left.
    pub fn status(&self) -> StatusCode {
        match self {
            e if e.no_source_port() => StatusCode::SERVICE_UNAVAILABLE,
            BackendError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            BackendError::NoHealthyBackend => StatusCode::SERVICE_UNAVAILABLE,
            BackendError::Connect(_)
            | BackendError::Io { .. }
            | BackendError::Invalid(_)
            | BackendError::Exchange(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Label for the `handshake_failures_total` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            e if e.no_source_port() => "no_source_port",
            BackendError::Connect(_) => "backend_connect",
            BackendError::Timeout => "backend_timeout",
            BackendError::Io { .. } | BackendError::Exchange(_) => "backend_io",
            BackendError::Invalid(_) => "backend_invalid",
            BackendError::NoHealthyBackend => "no_healthy_backend",
        }
    }
}

/// Logs and counts a failed attempt on `backend`: a connect or exchange error counts
/// against the backend (and may eject it); a lack of local ports is counted apart.
pub(crate) fn attempt_failed(
    route: &str,
    backend: &Backend,
    pool: &Pool,
    error: &BackendError,
    metrics: &Metrics,
) {
    if error.no_source_port() {
        tracing::warn!(route, backend = %backend.name, error = %error, "no source port left: add source_addresses or widen net.ipv4.ip_local_port_range");
        metrics.source_exhausted(route, &backend.name);
        return;
    }
    tracing::warn!(route, backend = %backend.name, error = %error, "backend attempt failed");
    metrics.backend_connect_error(route, &backend.name);
    if backend.connect_failed(&pool.config) {
        tracing::warn!(route, backend = %backend.name, fail_timeout = ?pool.config.fail_timeout,
            "backend ejected after consecutive failures");
    }
}
