//! Active health checks: a real WebSocket upgrade to each backend, with rise/fall thresholds.

use std::sync::Arc;

use base64::Engine;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use crate::backend::dial;
use crate::config::BackendUrl;
use crate::config::pool::HealthCheck;
use crate::proto::frame::{self, MaskKeys, OpCode};
use crate::shared::pool::{Backend, Pool};
use crate::shared::state::ProxyState;

/// Starts the checks of `pool` (once per pool), until the pool is replaced or wsgate stops.
pub fn start(
    pool: &Arc<Pool>,
    route: &str,
    tls: &Arc<rustls::ClientConfig>,
    state: &Arc<ProxyState>,
) {
    if !pool.claim_health_start() {
        return;
    }
    for (backend, _) in &pool.backends {
        let gauge = state.metrics.backend_healthy_gauge(route, &backend.url.url);
        gauge.set(backend.usable() as i64);
        // A backend kept across a reload already has its gauge.
        let _ = backend.gauge.set(gauge);
    }
    let Some(check) = pool.config.health_check.clone() else {
        return;
    };
    let stop = pool.stop.clone();
    for (backend, _) in &pool.backends {
        let (backend, check, tls, state, route) = (
            backend.clone(),
            check.clone(),
            tls.clone(),
            state.clone(),
            route.to_string(),
        );
        let pool = pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = state.shutdown.cancelled() => {}
                _ = run(&backend, &check, &tls, &state, &route, &pool) => {}
            }
        });
    }
}

/// Probes forever, flipping the backend's health after `rise` successes or `fall` failures.
async fn run(
    backend: &Arc<Backend>,
    check: &HealthCheck,
    tls: &Arc<rustls::ClientConfig>,
    state: &ProxyState,
    route: &str,
    pool: &Pool,
) {
    let (mut ok_streak, mut fail_streak) = (0u32, 0u32);
    loop {
        let result =
            tokio::time::timeout(check.timeout, probe(&backend.url, &check.path, tls)).await;
        let outcome = match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("timed out".to_string()),
        };
        match outcome {
            Ok(()) => {
                (ok_streak, fail_streak) = (ok_streak + 1, 0);
                if ok_streak >= check.rise && backend.set_healthy(true) {
                    tracing::info!(route, backend = %backend.url, "backend healthy again");
                }
            }
            Err(why) => {
                (ok_streak, fail_streak) = (0, fail_streak + 1);
                if fail_streak >= check.fall && backend.set_healthy(false) {
                    tracing::warn!(route, backend = %backend.url, reason = %why, "backend unhealthy: no new connections");
                    if pool.config.close_on_unhealthy {
                        let window = state.settings.load().drain_window;
                        backend.retirement.retire(backend.active(), window);
                    }
                }
            }
        }
        tokio::time::sleep(check.interval).await;
    }
}

/// One probe: connect and upgrade to `path`, check the 101 and its accept key, then close.
async fn probe(
    url: &BackendUrl,
    path: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    let stream = dial::connect(url, tls).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn.with_upgrades());
    let mut nonce = [0u8; 16];
    crate::shared::random::fill(&mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = path
        .parse()
        .map_err(|_| format!("bad health check path `{path}`"))?;
    let h = req.headers_mut();
    let value = |s: &str| HeaderValue::from_str(s).map_err(|e| e.to_string());
    h.insert(header::HOST, value(&url.host_header())?);
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_VERSION,
        HeaderValue::from_static("13"),
    );
    h.insert(header::SEC_WEBSOCKET_KEY, value(&key)?);
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let accepted = res.status() == StatusCode::SWITCHING_PROTOCOLS
        && res
            .headers()
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .map(|v| v.as_bytes())
            == Some(crate::proto::handshake::accept_key(key.as_bytes()).as_bytes());
    if !accepted {
        driver.abort();
        return Err(format!("upgrade answered {}", res.status()));
    }
    // Close politely so the backend logs a normal close, not a dropped connection.
    if let Ok(upgraded) = hyper::upgrade::on(res).await {
        let mut io = TokioIo::new(upgraded);
        let payload =
            crate::proto::close::close_payload(crate::proto::close::code::NORMAL, "health check");
        let key = MaskKeys::new(crate::shared::random::u64()).next_key();
        let close = frame::encode(true, OpCode::Close, &payload, Some(key));
        let _ = io.write_all(&close).await;
        let _ = io.shutdown().await;
    }
    Ok(())
}
