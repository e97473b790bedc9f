//! Active health checks: a real WebSocket upgrade to each backend, with rise/fall thresholds.

use std::sync::Arc;

use base64::Engine;
use hyper::http::uri::PathAndQuery;
use tokio::io::AsyncWriteExt;

use crate::backend::client::{self, Reply, RequestHead};
use crate::backend::dial;
use crate::config::pool::HealthCheck;
use crate::proto::close::{close_payload, code};
use crate::proto::frame::{self, MaskKeys, OpCode};
use crate::proto::handshake::accept_key;
use crate::shared::pool::{Backend, Pool};
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// Starts the checks of `pool` (once per pool), a pool of `route`, until the pool is
/// replaced or wsgate stops. Each probe uses the route's backend TLS config in force.
pub fn start(pool: &Arc<Pool>, route: &Arc<Route>, state: &Arc<ProxyState>) {
    if !pool.claim_health_start() {
        return;
    }
    let name = route.name();
    if pool.config.health_check.is_none() {
        // A backend kept from a pool whose checks found it unhealthy: with no check left to
        // say otherwise it is healthy (passive ejection still applies), or it never returns.
        for (backend, _) in &pool.backends {
            if backend.set_healthy(true) {
                tracing::info!(route = name, backend = %backend.name, "health checks removed: backend healthy");
            }
        }
    }
    for (backend, _) in &pool.backends {
        let gauge = state.metrics.backend_healthy_gauge(name, &backend.name);
        gauge.set(backend.usable() as i64);
        // A backend kept across a reload already has its gauge.
        let _ = backend.gauge.set(gauge);
    }
    let Some(check) = pool.config.health_check.clone() else {
        return;
    };
    let stop = pool.stop.clone();
    for (backend, _) in &pool.backends {
        let (backend, check, state, route) =
            (backend.clone(), check.clone(), state.clone(), route.clone());
        let pool = pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = state.shutdown.cancelled() => {}
                _ = run(&backend, &check, &state, &route, &pool) => {}
            }
        });
    }
}

/// Probes forever, flipping the backend's health after `rise` successes or `fall` failures.
async fn run(
    backend: &Arc<Backend>,
    check: &HealthCheck,
    state: &ProxyState,
    route: &Route,
    pool: &Pool,
) {
    let route_name = route.name();
    let (mut ok_streak, mut fail_streak) = (0u32, 0u32);
    loop {
        let result = tokio::time::timeout(
            check.timeout,
            probe(backend, &check.path, &route.backend_tls()),
        )
        .await;
        let outcome = match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("timed out".to_string()),
        };
        if pool.stop.is_cancelled() {
            // The pool was replaced while this probe ran: the new pool's checks (or their
            // absence) decide now, and this verdict must not overwrite theirs.
            return;
        }
        match outcome {
            Ok(()) => {
                (ok_streak, fail_streak) = (ok_streak + 1, 0);
                if ok_streak >= check.rise && backend.set_healthy(true) {
                    tracing::info!(route = route_name, backend = %backend.name, "backend healthy again");
                }
            }
            Err(why) => {
                (ok_streak, fail_streak) = (0, fail_streak + 1);
                if fail_streak >= check.fall && backend.set_healthy(false) {
                    tracing::warn!(route = route_name, backend = %backend.name, reason = %why, "backend unhealthy: no new connections");
                    if pool.config.close_on_unhealthy {
                        let window = state.settings.load().drain_window;
                        state.registry.retire_backend(backend, window, None);
                    }
                }
            }
        }
        tokio::time::sleep(check.interval).await;
    }
}

/// One probe: connect and upgrade to `path` with the upgrade client the proxied
/// connections use; healthy is a 101 carrying the right `Sec-WebSocket-Accept`. Then a
/// Close, so the backend logs a normal close rather than a dropped connection.
async fn probe(
    backend: &Backend,
    path: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<(), String> {
    // The upgrade client would send `/` for a target that is not origin-form; a probe of
    // the wrong path would pass for the right one, so such a path fails the check instead.
    if !PathAndQuery::try_from(path).is_ok_and(|p| p.as_str().starts_with('/')) {
        return Err(format!("bad health check path `{path}`"));
    }
    let url = &backend.url;
    let mut stream = dial::connect(backend, tls)
        .await
        .map_err(|e| e.to_string())?;
    let mut nonce = [0u8; 16];
    crate::shared::random::fill(&mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let mut head = RequestHead::get(path, 160);
    head.header("host", url.host_header().as_bytes());
    head.header("upgrade", b"websocket");
    head.header("connection", b"Upgrade");
    head.header("sec-websocket-version", b"13");
    head.header("sec-websocket-key", key.as_bytes());
    let head = match client::exchange(&mut stream, &head.finish())
        .await
        .map_err(|e| e.to_string())?
    {
        Reply::Switching { head, .. } => head,
        Reply::Refused(res) => return Err(format!("upgrade answered {}", res.status())),
    };
    let accept = head.get_all("sec-websocket-accept").next();
    if accept != Some(accept_key(key.as_bytes()).as_bytes()) {
        return Err("101 with a wrong Sec-WebSocket-Accept".into());
    }
    let payload = close_payload(code::NORMAL, "health check");
    let mask = MaskKeys::new(crate::shared::random::u64()).next_key();
    let _ = stream
        .write_all(&frame::encode(true, OpCode::Close, &payload, Some(mask)))
        .await;
    let _ = stream.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::BackendUrl;

    /// A one-shot backend on 127.0.0.1:0 answering the probe with `answer(key)`; returns
    /// the URL and the request it received.
    async fn backend(answer: fn(&str) -> String) -> (BackendUrl, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = BackendUrl::parse(&format!("ws://{}/", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // One head, well under 4 KiB; bounded by the buffer.
            while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
                let n = tcp.read(&mut buf[len..]).await.unwrap();
                if n == 0 {
                    break;
                }
                len += n;
            }
            let request = String::from_utf8_lossy(&buf[..len]).into_owned();
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("sec-websocket-key: "))
                .unwrap_or_default()
                .to_string();
            tcp.write_all(answer(&key).as_bytes()).await.unwrap();
            request
        });
        (url, task)
    }

    fn tls() -> Arc<rustls::ClientConfig> {
        crate::shared::tls::backend_client_config(None).unwrap()
    }

    async fn check(answer: fn(&str) -> String) -> (Result<(), String>, String) {
        let (url, task) = backend(answer).await;
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            probe(&Backend::new(url), "/health?x=1", &tls()),
        )
        .await
        .unwrap();
        (result, task.await.unwrap())
    }

    #[tokio::test]
    async fn a_101_with_the_right_accept_is_healthy() {
        let (result, request) = check(|key| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept: {}\r\n\r\n",
                accept_key(key.as_bytes())
            )
        })
        .await;
        assert_eq!(result, Ok(()));
        assert!(
            request.starts_with("GET /health?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("upgrade: websocket\r\n"), "{request}");
    }

    #[tokio::test]
    async fn a_wrong_accept_or_a_refusal_is_unhealthy() {
        let (wrong, _) =
            check(|_| "HTTP/1.1 101 Switching Protocols\r\nsec-websocket-accept: x\r\n\r\n".into())
                .await;
        assert!(wrong.is_err());
        let (refused, _) =
            check(|_| "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".into()).await;
        assert_eq!(
            refused,
            Err("upgrade answered 503 Service Unavailable".into())
        );
    }

    #[tokio::test]
    async fn a_path_that_is_not_origin_form_fails() {
        let url = BackendUrl::parse("ws://127.0.0.1:9/").unwrap();
        assert!(probe(&Backend::new(url), "no slash", &tls()).await.is_err());
    }
}
