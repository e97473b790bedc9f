//! The backend side of the upgrade: pick a backend of the route, send it the client's
//! upgrade (cleaned of hop-by-hop headers, with wsgate's forwarding headers), and check
//! its answer — all before the client hears anything.

use std::sync::Arc;

use base64::Engine;
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::backend::{self, BackendUrl};
use crate::handshake::{
    ClientInfo, HandshakeError, Hello, accept_key, forwardable, has_token, tokens,
};
use crate::occupancy::Seat;
use crate::retire::RetireWatch;
use crate::route::Route;
use crate::server::Gateway;
use crate::stream::Stream;

/// A backend that answered the upgrade.
pub(crate) enum BackendAnswer {
    /// 101 checked: the stream, bytes it sent after the 101, and the headers to pass on.
    Upgraded {
        stream: Stream,
        leftover: Bytes,
        headers: HeaderMap,
    },
    /// Any other status: relayed to the client as is.
    Refused(Response<Incoming>),
}

/// A backend that answered, and (for pooled backends) its connection slot and retirement watch.
pub(crate) struct Opened {
    /// The backend's URL (or `echo`), for logs and the close report.
    pub(crate) label: String,
    /// Its answer to the upgrade.
    pub(crate) answer: BackendAnswer,
    /// For pooled backends: the connection's place on it and its retirement watch.
    pub(crate) backend: Option<(Seat, RetireWatch)>,
}

/// Connects and upgrades to a backend of the route: candidates in the balancer's order, each
/// within `handshake_timeout`; refused, timed out or 5xx → the next one (nothing was sent to
/// the client yet), at most `retries` more.
pub(crate) async fn open_backend(
    route: &Arc<Route>,
    req: &Request<Incoming>,
    client: ClientInfo,
    host: Option<&str>,
    path: &str,
    hello: &Hello,
    gw: &Gateway,
) -> Result<Opened, HandshakeError> {
    let timeout = route.tuning.handshake_timeout;
    let Some(pool) = route.pool() else {
        let request = backend_request(req, client, host, path, route, None, hello);
        let key = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
        let answer = tokio::time::timeout(
            timeout,
            backend_handshake(crate::echo::connect(), request, key, &hello.protocols),
        )
        .await
        .map_err(|_| HandshakeError::BackendTimeout)??;
        return Ok(Opened {
            label: "echo".into(),
            answer,
            backend: None,
        });
    };
    let hash_key = pool.hash_key(req.headers(), req.uri().query(), client.peer.ip());
    let candidates = pool.candidates(hash_key);
    let mut last = HandshakeError::NoHealthyBackend;
    let attempts = candidates.len();
    for (n, backend) in candidates.into_iter().enumerate() {
        let slot = backend.occupy();
        let watch = backend.retirement.watch();
        let request = backend_request(req, client, host, path, route, Some(&backend.url), hello);
        let key = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
        let attempt = tokio::time::timeout(timeout, async {
            let stream = backend::connect(&backend.url, &route.backend_tls).await?;
            backend_handshake(stream, request, key, &hello.protocols).await
        })
        .await
        .unwrap_or(Err(HandshakeError::BackendTimeout));
        let (error, last_answer) = match attempt {
            // A 5xx to the upgrade is a failed attempt; the last one is still relayed as is.
            Ok(BackendAnswer::Refused(res)) if res.status().is_server_error() => {
                let error =
                    HandshakeError::BackendInvalid(format!("upgrade answered {}", res.status()));
                let relay = (n + 1 == attempts).then_some(BackendAnswer::Refused(res));
                (error, relay)
            }
            Ok(answer) => {
                backend.connect_ok();
                return Ok(Opened {
                    label: backend.url.url.clone(),
                    answer,
                    backend: Some((slot, watch)),
                });
            }
            Err(e) => (e, None),
        };
        tracing::warn!(route = route.name(), backend = %backend.url, error = %error, "backend attempt failed");
        gw.metrics
            .backend_connect_error(route.name(), &backend.url.url);
        if backend.connect_failed(&pool.config) {
            tracing::warn!(route = route.name(), backend = %backend.url, fail_timeout = ?pool.config.fail_timeout,
                "backend ejected after consecutive failures");
        }
        if let Some(answer) = last_answer {
            return Ok(Opened {
                label: backend.url.url.clone(),
                answer,
                backend: Some((slot, watch)),
            });
        }
        last = error;
    }
    Err(last)
}

fn backend_request(
    req: &Request<Incoming>,
    client: ClientInfo,
    host: Option<&str>,
    path: &str,
    route: &Route,
    url: Option<&BackendUrl>,
    hello: &Hello,
) -> Request<Empty<Bytes>> {
    let query = req.uri().query();
    let target = match url {
        Some(u) => u.request_target(route.remainder(path), path, query),
        None => query.map_or_else(|| path.to_string(), |q| format!("{path}?{q}")),
    };
    let mut out = Request::new(Empty::new());
    *out.uri_mut() = target
        .parse()
        .unwrap_or_else(|_| hyper::Uri::from_static("/"));
    let mut h = forwardable(req.headers());
    let mut nonce = [0u8; 16];
    crate::random_bytes(&mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let ip = client.peer.ip().to_string();
    let proto = if client.tls { "https" } else { "http" };
    let backend_host = url.map_or_else(|| "echo".to_string(), |u| u.host_header());
    let set = |h: &mut HeaderMap, name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            h.insert(n, v);
        }
    };
    set(&mut h, "host", &backend_host);
    set(&mut h, "upgrade", "websocket");
    set(&mut h, "connection", "Upgrade");
    set(&mut h, "sec-websocket-key", &key);
    set(&mut h, "sec-websocket-version", "13");
    set(&mut h, "x-forwarded-for", &ip);
    set(&mut h, "x-real-ip", &ip);
    set(&mut h, "x-forwarded-proto", proto);
    let for_ip = if client.peer.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip.clone()
    };
    match host {
        Some(host) => {
            set(&mut h, "x-forwarded-host", host);
            set(
                &mut h,
                "forwarded",
                &format!("for={for_ip};host=\"{host}\";proto={proto}"),
            );
        }
        None => set(&mut h, "forwarded", &format!("for={for_ip};proto={proto}")),
    }
    if !hello.protocols.is_empty() {
        set(
            &mut h,
            "sec-websocket-protocol",
            &hello.protocols.join(", "),
        );
    }
    *out.headers_mut() = h;
    out
}

async fn backend_handshake(
    stream: Stream,
    request: Request<Empty<Bytes>>,
    key: Option<HeaderValue>,
    offered: &[String],
) -> Result<BackendAnswer, HandshakeError> {
    let invalid = |why: &str| HandshakeError::BackendInvalid(why.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| invalid(&e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "backend HTTP connection ended");
        }
    });
    let res = sender
        .send_request(request)
        .await
        .map_err(|e| invalid(&e.to_string()))?;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(BackendAnswer::Refused(res));
    }
    let h = res.headers();
    if !has_token(h, &header::UPGRADE, "websocket") {
        return Err(invalid("101 without Upgrade: websocket"));
    }
    if !has_token(h, &header::CONNECTION, "upgrade") {
        return Err(invalid("101 without Connection: upgrade"));
    }
    let expected = key.map(|k| accept_key(k.as_bytes())).unwrap_or_default();
    if h.get(header::SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
        return Err(invalid("wrong Sec-WebSocket-Accept"));
    }
    if h.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
        return Err(invalid("extension that was not offered"));
    }
    let chosen: Vec<String> = tokens(h, &header::SEC_WEBSOCKET_PROTOCOL).collect();
    match chosen.as_slice() {
        [] => {}
        [p] if offered.contains(p) => {}
        _ => return Err(invalid("subprotocol that was not offered")),
    }
    let headers = forwardable(h);
    let upgraded = hyper::upgrade::on(res)
        .await
        .map_err(|e| invalid(&e.to_string()))?;
    let parts = upgraded
        .downcast::<TokioIo<Stream>>()
        .map_err(|_| invalid("unexpected stream type after upgrade"))?;
    Ok(BackendAnswer::Upgraded {
        stream: parts.io.into_inner(),
        leftover: parts.read_buf,
        headers,
    })
}
