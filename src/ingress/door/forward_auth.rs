//! Forward auth: before a request goes in, the route's auth service is asked with a
//! subrequest that carries the configured client headers and what the client asked for
//! (`X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri`, `-For`), and never the upgrade's own
//! headers (`Upgrade`, `Connection`, `Sec-WebSocket-*`), the hop-by-hop set or a body.
//!
//! A 2xx answer lets the request in, its configured headers copied onto the backend
//! request (the client's own copies of them removed first, so a client cannot forge
//! them); any other answer goes back to the client as it is (a 302 to a login page, a 401
//! with its challenge), its body up to [`MAX_BODY`]; an auth service that cannot be asked
//! within the timeout gives 503. Positive answers may be cached (see
//! `shared::forward_auth`).
//!
//! The subrequest goes over the plain-HTTP pool machinery (`backend::http::pool`), the
//! auth service being one backend of its own with keep-alive connections.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};

use super::{Pass, Refusal};
use crate::backend::error::BackendError;
use crate::backend::http::PoolSettings;
use crate::backend::http::pool::checkout;
use crate::ingress::upgrade::requested_host;
use crate::proto::headers::{forwardable, has_token};
use crate::proto::path::normalize_path;
use crate::shared::client::ClientInfo;
use crate::shared::forward_auth::{ForwardAuth, Granted};
use crate::shared::idle_conns::ForwardBody;
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// The largest auth-service body relayed to a client; a longer one is dropped (its status
/// and headers still go), as a backend's refusal body is. A login page or an error text
/// fits; anything larger is not worth holding for each refused client.
pub(crate) const MAX_BODY: usize = 64 << 10;
/// Idle connections kept to one auth service: enough for a burst of new connections to
/// reuse them, few enough to be nothing on the auth service's side.
const IDLE_MAX: usize = 16;
/// An idle connection to the auth service is closed after this; below the common server
/// keep-alive timeouts (nginx 75 s, Go 90 s), so wsgate closes first.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Asks the route's auth service about `req`; on a 2xx rewrites `req` for the backend and
/// records the identity in `pass`.
pub(crate) async fn check<B>(
    route: &Route,
    auth: &ForwardAuth,
    req: &mut Request<B>,
    client: &ClientInfo,
    state: &ProxyState,
    upgrade: bool,
    pass: &mut Pass,
) -> Result<(), Refusal> {
    let key = auth.cache.as_ref().and_then(|c| c.key(req.headers()));
    let cached = key.and_then(|k| auth.cache.as_ref()?.get(k));
    let granted = match cached {
        Some(granted) => granted,
        None => {
            let sub = subrequest(auth, req, client, upgrade);
            let asked = tokio::time::timeout(auth.config.timeout, ask(route, auth, sub, state));
            let answer = match asked.await {
                Ok(Ok(res)) => res,
                Ok(Err(e)) => return Err(unavailable(route, state, &e.to_string())),
                Err(_) => return Err(unavailable(route, state, "timed out")),
            };
            let granted = judge(route, auth, answer, state)?;
            if let (Some(cache), Some(k)) = (&auth.cache, key) {
                cache.put(k, granted.clone());
            }
            granted
        }
    };
    let headers = req.headers_mut();
    for name in &auth.config.response_headers {
        headers.remove(name);
    }
    for (name, value) in granted.headers {
        headers.append(name, value);
    }
    if granted.identity.is_some() {
        pass.admitted.identity = granted.identity;
    }
    Ok(())
}

/// The subrequest for `req`: the configured client headers and the forwarding ones.
fn subrequest<B>(
    auth: &ForwardAuth,
    req: &Request<B>,
    client: &ClientInfo,
    upgrade: bool,
) -> Request<ForwardBody> {
    let config = &auth.config;
    let url = &config.url;
    let target = url.request_target("", url.path.as_deref().unwrap_or("/"), None);
    let mut sub = Request::new(empty());
    *sub.method_mut() = config.method.clone();
    // The target is the configured URL's path and query, checked when the file was read.
    *sub.uri_mut() = Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/"));
    let h = sub.headers_mut();
    for name in &config.request_headers {
        copy(req.headers(), name, h);
    }
    let set = |h: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    if let Ok(host) = HeaderValue::try_from(url.host_header()) {
        h.insert(header::HOST, host);
    }
    // A WebSocket is opened with a GET on HTTP/1.1 and an extended CONNECT on HTTP/2; the
    // auth service is told the same for both.
    let method = if upgrade {
        "GET"
    } else {
        req.method().as_str()
    };
    set(h, "x-forwarded-method", method);
    set(
        h,
        "x-forwarded-proto",
        if client.tls { "https" } else { "http" },
    );
    if let Ok(host) = requested_host(req) {
        set(h, "x-forwarded-host", &host);
    }
    // What the backend will be asked for: the normalised path (routing decided on it)
    // and the client's query.
    if let Ok(path) = normalize_path(req.uri().path()) {
        match req.uri().query() {
            Some(q) => set(h, "x-forwarded-uri", &format!("{path}?{q}")),
            None => set(h, "x-forwarded-uri", &path),
        }
    }
    set(h, "x-forwarded-for", &client.ip().to_string());
    sub
}

/// Copies every value of `name` from `from` into `to`; several `Cookie` lines (HTTP/2
/// sends one per cookie) become one, as HTTP/1.1 wants (RFC 6265 §5.4).
fn copy(from: &HeaderMap, name: &HeaderName, to: &mut HeaderMap) {
    if name == header::COOKIE {
        let parts: Vec<&[u8]> = from.get_all(name).iter().map(|v| v.as_bytes()).collect();
        if !parts.is_empty()
            && let Ok(v) = HeaderValue::from_bytes(&parts.join(&b"; "[..]))
        {
            to.insert(header::COOKIE, v);
        }
        return;
    }
    for value in from.get_all(name) {
        to.append(name.clone(), value.clone());
    }
}

/// The auth service's answer, its body read whole up to [`MAX_BODY`] (`None` past it).
struct Answer {
    head: hyper::http::response::Parts,
    body: Option<Bytes>,
}

/// Sends `sub` on a pooled (or new) connection, retrying once on a new one when a pooled
/// connection turned out closed before anything was written.
async fn ask(
    route: &Route,
    auth: &ForwardAuth,
    mut sub: Request<ForwardBody>,
    state: &ProxyState,
) -> Result<Answer, BackendError> {
    let settings = PoolSettings {
        connect_timeout: auth.config.timeout,
        idle_max: IDLE_MAX,
        idle_timeout: IDLE_TIMEOUT,
        max_header_bytes: state.settings.load().limits.max_header_bytes as usize,
    };
    let tls = route.backend_tls();
    // Pooled connections found closed, then one new one: bounded by the idle list.
    let (res, conn) = loop {
        let (mut conn, reused) = checkout(&auth.backend, &tls, &settings, &state.shutdown).await?;
        match conn.sender.try_send_request(sub).await {
            Ok(res) => break (res, conn),
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => sub = unsent,
                _ => return Err(BackendError::Exchange(e.into_error())),
            },
        }
    };
    let keep = !has_token(res.headers(), &header::CONNECTION, "close");
    let (head, body) = res.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => Some(b.to_bytes()),
        // Too long, or broken: the connection is not reused either way.
        Err(_) => None,
    };
    if keep && body.is_some() {
        auth.backend.http_idle.put(conn, IDLE_MAX);
    }
    Ok(Answer { head, body })
}

/// A 2xx answer's grant, or the refusal the client gets.
// The door's one error type, made once per refused request: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn judge(
    route: &Route,
    auth: &ForwardAuth,
    answer: Answer,
    state: &ProxyState,
) -> Result<Granted, Refusal> {
    let status = answer.head.status;
    if status.is_success() {
        let h = &answer.head.headers;
        let mut headers = Vec::new();
        for name in &auth.config.response_headers {
            for value in h.get_all(name) {
                headers.push((name.clone(), value.clone()));
            }
        }
        let identity = auth
            .config
            .identity_header
            .as_ref()
            .and_then(|n| h.get(n))
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        return Ok(Granted { headers, identity });
    }
    if status.is_informational() {
        // A 1xx as a final answer (a 101 above all) is nothing a client may be given.
        return Err(unavailable(
            route,
            state,
            "informational status as an answer",
        ));
    }
    state.metrics.auth.failure(route.name(), "forward_denied");
    tracing::info!(
        route = route.name(),
        status = status.as_u16(),
        "forward auth refused the request"
    );
    let body = match answer.body {
        Some(b) if auth.config.method != Method::HEAD => b,
        _ => Bytes::new(),
    };
    // Hop-by-hop and framing headers go; the length is the body's own.
    let headers = forwardable(&answer.head.headers);
    Err(Refusal {
        status,
        headers,
        body,
        reason: "forward_denied",
    })
}

/// The 503 for an auth service that could not be asked.
fn unavailable(route: &Route, state: &ProxyState, why: &str) -> Refusal {
    state
        .metrics
        .auth
        .failure(route.name(), "forward_unavailable");
    tracing::warn!(route = route.name(), url = %route_auth_url(route), error = why, "forward auth service unavailable");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        headers,
        body: Bytes::from_static(b"auth service unavailable\n"),
        reason: "forward_unavailable",
    }
}

fn route_auth_url(route: &Route) -> &str {
    route
        .forward_auth
        .as_ref()
        .map_or("", |a| a.config.url.url.as_str())
}

fn empty() -> ForwardBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}
