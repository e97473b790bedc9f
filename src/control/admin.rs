//! The admin listener: `/metrics` (Prometheus text), `/healthz`, `/readyz`, the admin API
//! under `/api/` and the live status page at `/` when a token is configured
//! (`control::api`, `control::api::page`); 404 otherwise.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::control::StartError;
use crate::control::api::{self, Body};
use crate::shared::state::ProxyState;

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Admin connections served at once: scrapers and probes need a handful, and a cap keeps
/// a flood of idle connections from holding tasks and descriptors without bound.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request head (hyper's minimum read buffer); admin requests are a line or two.
const MAX_HEADER_BYTES: usize = 8 * 1024;
/// A request head must arrive within this (slowloris).
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds the admin address; serving starts with [`serve`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Answers admin requests until shutdown has finished draining (so `/readyz` says 503 meanwhile).
///
/// A permit is taken before each accept and held until the connection ends, so at most
/// [`MAX_CONNECTIONS`] are served; the rest wait in the kernel's backlog.
pub async fn serve(listener: TcpListener, state: Arc<ProxyState>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // The semaphore is never closed, so acquiring only waits.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors or similar: the admin port must not spin; try again shortly.
            drop(permit);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, state.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            drop(permit);
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<ProxyState>,
) -> Result<Response<Body>, Infallible> {
    if req.uri().path().starts_with("/api/") && state.settings.load().admin_token.is_some() {
        return Ok(api::answer(req, state).await);
    }
    if req.method() == Method::GET
        && state.settings.load().admin_token.is_some()
        && let Some((body, content_type)) = api::page::file(req.uri().path())
    {
        return Ok(api::page::answer(body, content_type));
    }
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, PROMETHEUS_TEXT, state.metrics.render()),
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        (&Method::GET, "/readyz") if state.shutdown.is_cancelled() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "draining\n".to_string(),
        ),
        (&Method::GET, "/readyz") if state.too_full_to_be_ready() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "full\n".to_string(),
        ),
        (&Method::GET, "/readyz") => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n".to_string(),
        ),
    };
    let mut res = Response::new(api::full(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(res)
}
