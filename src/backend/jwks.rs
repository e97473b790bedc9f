//! Fetching a route's JWKS: once at start, then in the background every `refresh`, and
//! on demand when a token names a `kid` the set lacks (at most once a minute). A failed
//! fetch keeps the keys already held, so a short outage of the key server refuses nobody.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::shared::jwks::{Jwks, KeySet};
use crate::shared::metrics::Metrics;
use crate::shared::state::ProxyState;
use crate::shared::stream::Stream;

/// A JWKS document larger than this is refused: key sets are a few KiB.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Least time between two fetches caused by unknown `kid`s: a client sending made-up
/// `kid`s must not turn wsgate into a load generator against the key server.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(60);

/// After a failed background fetch, the next one comes this soon (or at `refresh`, if
/// sooner), so a key server back from an outage is seen quickly.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Why a JWKS could not be fetched (the key server's side, or its address).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The URL did not parse (it was checked at load, so this means a bug).
    #[error("bad URL")]
    Url,
    /// TCP connect or TLS failed.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// An answer other than 200.
    #[error("status {0}")]
    Status(StatusCode),
    /// Not a JWKS.
    #[error("{0}")]
    Document(String),
    /// No answer within the fetch timeout.
    #[error("timed out")]
    Timeout,
}

/// Starts the background refresh of `jwks` for `route` (once per key set).
pub fn start(jwks: &Arc<Jwks>, route: &str, state: &Arc<ProxyState>) {
    if !jwks.claim_start() {
        return;
    }
    let (weak, route, state) = (Arc::downgrade(jwks), route.to_string(), state.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = state.shutdown.cancelled() => {}
            _ = run(weak, &route, &state.metrics) => {}
        }
    });
}

/// Refreshes until the key set is no longer used by any route or connection.
async fn run(jwks: Weak<Jwks>, route: &str, metrics: &Metrics) {
    loop {
        let Some(set) = jwks.upgrade() else { return };
        let ok = refresh(&set, route, metrics).await;
        let wait = if ok {
            set.config.refresh
        } else {
            set.config.refresh.min(RETRY_AFTER_FAILURE)
        };
        drop(set);
        tokio::time::sleep(wait).await;
    }
}

/// Fetches the key set now because a token named an unknown `kid`, unless such a fetch
/// happened within [`UNKNOWN_KID_INTERVAL`]; concurrent callers wait for the one fetch.
pub async fn refetch_for_unknown_kid(jwks: &Jwks, route: &str, metrics: &Metrics) {
    let mut last = jwks.refetched.lock().await;
    if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_INTERVAL) {
        return;
    }
    *last = Some(Instant::now());
    refresh(jwks, route, metrics).await;
}

/// One fetch: installs the keys and counts it; false when it failed (the old keys stay).
pub async fn refresh(jwks: &Jwks, route: &str, metrics: &Metrics) -> bool {
    let result = match tokio::time::timeout(jwks.config.timeout, fetch(jwks)).await {
        Ok(r) => r,
        Err(_) => Err(JwksError::Timeout),
    };
    match result {
        Ok(keys) => {
            let n = keys.keys.len();
            tracing::debug!(route, keys = n, "JWKS fetched");
            jwks.keys.store(Arc::new(keys));
            metrics.auth.jwks_fetch(route, Some(n));
            true
        }
        Err(e) => {
            tracing::warn!(route, error = %e, "JWKS fetch failed; keeping the keys held");
            metrics.auth.jwks_fetch(route, None);
            false
        }
    }
}

async fn fetch(jwks: &Jwks) -> Result<KeySet, JwksError> {
    let uri: Uri = jwks.config.url.parse().map_err(|_| JwksError::Url)?;
    let secure = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or(JwksError::Url)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((bare, port))
        .await
        .map_err(JwksError::Connect)?;
    let stream = if secure {
        let name = ServerName::try_from(bare.to_string()).map_err(|_| JwksError::Url)?;
        let tls = tokio_rustls::TlsConnector::from(jwks.tls.load_full())
            .connect(name, tcp)
            .await
            .map_err(JwksError::Connect)?;
        Stream::ClientTls(Box::new(tls))
    } else {
        Stream::Tcp(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| JwksError::Http(e.to_string()))?;
    // The connection is driven beside the exchange and dropped with it.
    let exchange = async {
        let authority = uri.authority().map_or(host, |a| a.as_str());
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| JwksError::Http(e.to_string()))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| JwksError::Http(e.to_string()))?;
        if res.status() != StatusCode::OK {
            return Err(JwksError::Status(res.status()));
        }
        let body = Limited::new(res.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| JwksError::Http(e.to_string()))?
            .to_bytes();
        KeySet::from_jwks(&body).map_err(JwksError::Document)
    };
    tokio::select! {
        keys = exchange => keys,
        Err(e) = conn => Err(JwksError::Http(e.to_string())),
    }
}
