//! The backend side of the upgrade: pick a backend of the route, send it the client's
//! upgrade (cleaned of hop-by-hop headers, with wsgate's forwarding headers), and check
//! its answer — all before the client hears anything.

use std::sync::Arc;

use base64::Engine;
use hyper::Request;
use hyper::header;

use crate::backend::balance;
use crate::backend::client::Answer;
use crate::backend::client::{self, RequestHead};
use crate::backend::dial;
use crate::backend::error::BackendError;
use crate::config::BackendUrl;
use crate::proto::headers::{ProxyHeaders, each_forwardable};
use crate::shared::client::ClientInfo;
use crate::shared::occupancy::Seat;
use crate::shared::retire::RetireWatch;
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// A backend that answered, and (for pooled backends) its connection slot and retirement watch.
pub(crate) struct Opened {
    /// The backend's URL (or `echo`), for logs and the close report.
    pub(crate) label: String,
    /// Its answer to the upgrade.
    pub(crate) answer: Answer,
    /// For pooled backends: the connection's place on it and its retirement watch.
    pub(crate) backend: Option<(Seat, RetireWatch)>,
    /// The route's sticky cookie for the client, when it is not pinned to this backend yet.
    pub(crate) set_cookie: Option<hyper::header::HeaderValue>,
}

/// Connects and upgrades to a backend of the route: candidates in the balancer's order, each
/// within `handshake_timeout`; refused, timed out or 5xx → the next one (nothing was sent to
/// the client yet), at most `retries` more.
pub(crate) async fn open_backend<B>(
    route: &Arc<Route>,
    req: &Request<B>,
    client: &ClientInfo,
    host: Option<&str>,
    path: &str,
    protocols: &[String],
    state: &ProxyState,
) -> Result<Opened, BackendError> {
    let timeout = route.tuning.handshake_timeout;
    let Some(pool) = route.pool() else {
        let (request, key) = backend_request(req, client, host, path, route, None, protocols);
        let answer = tokio::time::timeout(
            timeout,
            client::handshake(crate::backend::echo::connect(), &request, &key, protocols),
        )
        .await
        .map_err(|_| BackendError::Timeout)??;
        return Ok(Opened {
            label: "echo".into(),
            answer,
            backend: None,
            set_cookie: None,
        });
    };
    let hash_key = balance::hash_key(&pool, req.headers(), req.uri().query(), client.ip());
    let sticky = balance::Sticky::of(&pool, req.headers());
    let candidates = balance::candidates(&pool, hash_key, &sticky);
    let mut last = BackendError::NoHealthyBackend;
    let attempts = candidates.len();
    for (n, backend) in candidates.into_iter().enumerate() {
        let slot = backend.occupy();
        let watch = backend.retirement.watch();
        let (request, key) = backend_request(
            req,
            client,
            host,
            path,
            route,
            Some(&backend.url),
            protocols,
        );
        let attempt = tokio::time::timeout(timeout, async {
            let stream = dial::connect(&backend, &route.backend_tls()).await?;
            client::handshake(stream, &request, &key, protocols).await
        })
        .await
        .unwrap_or(Err(BackendError::Timeout));
        let (error, last_answer) = match attempt {
            // A 5xx to the upgrade is a failed attempt; the last one is still relayed as is.
            Ok(Answer::Refused(res)) if res.status().is_server_error() => {
                let error = BackendError::Invalid(format!("upgrade answered {}", res.status()));
                let relay = (n + 1 == attempts).then_some(Answer::Refused(res));
                (error, relay)
            }
            Ok(answer) => {
                backend.connect_ok();
                return Ok(Opened {
                    label: backend.name.clone(),
                    answer,
                    backend: Some((slot, watch)),
                    set_cookie: sticky.set_cookie(&pool, &backend, client.tls),
                });
            }
            Err(e) => (e, None),
        };
        crate::backend::error::attempt_failed(
            route.name(),
            &backend,
            &pool,
            &error,
            &state.metrics,
        );
        if let Some(answer) = last_answer {
            return Ok(Opened {
                label: backend.name.clone(),
                answer,
                backend: Some((slot, watch)),
                set_cookie: sticky.set_cookie(&pool, &backend, client.tls),
            });
        }
        let retryable = error.retryable();
        last = error;
        if !retryable {
            break;
        }
    }
    Err(last)
}

/// The upgrade request for the backend, serialised, and the `Sec-WebSocket-Key` it carries.
fn backend_request<B>(
    req: &Request<B>,
    client: &ClientInfo,
    host: Option<&str>,
    path: &str,
    route: &Route,
    url: Option<&BackendUrl>,
    protocols: &[String],
) -> (Vec<u8>, String) {
    let query = req.uri().query();
    let target = match url {
        Some(u) => u.request_target(route.remainder(path), path, query),
        None => query.map_or_else(|| path.to_string(), |q| format!("{path}?{q}")),
    };
    let mut nonce = [0u8; 16];
    crate::shared::random::fill(&mut nonce);
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    let backend_host = match (url, host) {
        (_, Some(host)) if route.config.preserve_host => host.to_string(),
        (Some(u), _) => u.host_header(),
        (None, _) => "echo".to_string(),
    };
    // Sized once for the client's headers (all of them: a bound, not a count) plus
    // wsgate's (a few hundred bytes with the offer).
    let client_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut out = RequestHead::get(&target, client_bytes + 512);
    let offers = !protocols.is_empty();
    // Straight from the client's map: a filtered copy of it would be built only to be read.
    each_forwardable(req.headers(), |name, value| {
        // wsgate rewrites the offer from the parsed list below, replacing the client's lines.
        if !(offers && name == header::SEC_WEBSOCKET_PROTOCOL) {
            out.header(name.as_str(), value.as_bytes());
        }
    });
    out.header("host", backend_host.as_bytes());
    out.header("upgrade", b"websocket");
    out.header("connection", b"Upgrade");
    out.header("sec-websocket-key", key.as_bytes());
    out.header("sec-websocket-version", b"13");
    ProxyHeaders::new(client.peer.ip(), &client.forwarding, client.tls, host)
        .each(|name, value| out.header(name, value));
    if offers {
        out.header("sec-websocket-protocol", protocols.join(", ").as_bytes());
    }
    (out.finish(), key)
}
