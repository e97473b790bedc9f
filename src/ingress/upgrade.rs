//! The upgrade: validate the client's request, route it, do the backend handshake first,
//! and only then answer the client with 101 and start the relay.

use std::sync::Arc;

use base64::Engine;
use bytes::BytesMut;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tracing::Instrument;

use crate::backend::client::Answer;
use crate::backend::error::BackendError;
use crate::backend::open::{Opened, open_backend};
use crate::proto::handshake::accept_key;
use crate::proto::headers::{forwardable, has_token, is_token, tokens, valid_authority};
use crate::proto::path::normalize_path;
use crate::shared::client::ClientInfo;
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// The body of any response wsgate sends on the client hop: always known whole (a
/// refusal, a relayed refusal read whole, or the empty body of a 101).
pub type Body = Full<Bytes>;

/// Why an upgrade was refused; each maps to an HTTP status and a metric reason.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not an upgrade to WebSocket at all (or an upgrade to something else).
    #[error("expected an upgrade to websocket")]
    NotWebSocket,
    /// Upgrade requested with a method other than GET.
    #[error("method must be GET")]
    Method,
    /// HTTP/1.0 or another version.
    #[error("HTTP/1.1 required")]
    HttpVersion,
    /// `Connection` lacks the `upgrade` token.
    #[error("Connection header must contain `upgrade`")]
    ConnectionHeader,
    /// Missing, repeated or malformed `Sec-WebSocket-Key`.
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    Key,
    /// `Sec-WebSocket-Version` other than 13.
    #[error("unsupported Sec-WebSocket-Version (13 required)")]
    WsVersion,
    /// No `Host`, more than one, or one that is not an authority (RFC 9112 §3.2).
    #[error("exactly one Host header, an authority (host and optional port), required")]
    Host,
    /// An absolute-form target whose scheme or authority is not acceptable, or an
    /// authority-form target (CONNECT only) on a GET.
    #[error("request target must be a path or an http(s)/ws(s) URI with a valid authority")]
    Target,
    /// `Content-Length` over 0 or `Transfer-Encoding`: an upgrade has no body (RFC 9112
    /// §6.1), and body bytes must never reach the backend as if they were frames.
    #[error("an upgrade request carries no body")]
    Body,
    /// `Connection: close` beside `upgrade`: the connection cannot both close and switch,
    /// and hyper would announce `close` on the 101.
    #[error("Connection: close contradicts the upgrade")]
    ConnectionClose,
    /// An `Expect` other than `100-continue`, which is the only expectation defined (RFC
    /// 9110 §10.1.1); wsgate cannot meet one it does not know.
    #[error("the only expectation met is 100-continue")]
    Expectation,
    /// A `Sec-WebSocket-Protocol` offer that is not a comma-separated list of tokens.
    #[error("Sec-WebSocket-Protocol must list tokens")]
    Subprotocol,
    /// The path could not be normalised.
    #[error("bad path: {0}")]
    Path(#[from] crate::proto::path::PathError),
    /// No route matches.
    #[error("no route")]
    NoRoute,
    /// `Origin` not on the route's allowlist.
    #[error("origin not allowed")]
    Origin,
    /// No backend of the route completed the upgrade.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// wsgate is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// `max_connections` (global or the route's) is reached.
    #[error("too many {0}")]
    Overloaded(&'static str),
}

impl HandshakeError {
    /// The HTTP status sent to the client.
    pub fn status(&self) -> StatusCode {
        use HandshakeError::*;
        match self {
            NotWebSocket | WsVersion => StatusCode::UPGRADE_REQUIRED,
            Method => StatusCode::METHOD_NOT_ALLOWED,
            HttpVersion | ConnectionHeader | ConnectionClose | Key | Host | Target | Body
            | Subprotocol | Path(_) => StatusCode::BAD_REQUEST,
            NoRoute => StatusCode::NOT_FOUND,
            Origin => StatusCode::FORBIDDEN,
            Expectation => StatusCode::EXPECTATION_FAILED,
            Backend(e) => e.status(),
            ShuttingDown | Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Short label for the `handshake_failures_total` metric.
    pub fn reason(&self) -> &'static str {
        use HandshakeError::*;
        match self {
            NotWebSocket => "not_websocket",
            Method => "method",
            HttpVersion => "http_version",
            ConnectionHeader | ConnectionClose => "connection_header",
            Key => "key",
            WsVersion => "ws_version",
            Host => "host",
            Target => "target",
            Body => "body",
            Expectation => "expect",
            Subprotocol => "subprotocol",
            Path(_) => "path",
            NoRoute => "no_route",
            Origin => "origin",
            Backend(e) => e.reason(),
            ShuttingDown => "shutting_down",
            Overloaded(_) => "max_connections",
        }
    }

    /// The response the client gets for this refusal.
    pub(crate) fn response(&self) -> Response<Body> {
        let mut res = Response::new(Full::new(Bytes::from(format!("{}\n", self))));
        *res.status_mut() = self.status();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        match self {
            HandshakeError::NotWebSocket | HandshakeError::WsVersion => {
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            HandshakeError::Method => {
                h.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            _ => {}
        }
        res
    }
}

/// What the client asked for, once validated.
pub(crate) struct Hello {
    /// The client's `Sec-WebSocket-Key`.
    pub(crate) key: HeaderValue,
    /// Subprotocols the client offered.
    pub(crate) protocols: Vec<String>,
    /// The authority asked for: the absolute-form target's (RFC 9112 §3.2.2), else Host's.
    pub(crate) host: String,
}

/// Answers one request: the 101 (the relay already spawned) or the refusal, counted.
pub(crate) async fn answer(
    req: Request<Incoming>,
    client: ClientInfo,
    state: Arc<ProxyState>,
) -> Response<Body> {
    match upgrade(req, client, &state).await {
        Ok(res) => res,
        Err((route, e)) => {
            // A string field, so the text format quotes whatever a peer put in the error.
            tracing::info!(
                status = e.status().as_u16(),
                route = route.as_deref().unwrap_or(""),
                error = e.to_string(),
                "upgrade refused"
            );
            state
                .metrics
                .handshake_failure(route.as_deref().unwrap_or(""), e.reason());
            e.response()
        }
    }
}

type Refusal = (Option<String>, HandshakeError);

async fn upgrade(
    mut req: Request<Incoming>,
    client: ClientInfo,
    state: &Arc<ProxyState>,
) -> Result<Response<Body>, Refusal> {
    let hello = validate(&req).map_err(|e| (None, e))?;
    if state.shutdown.is_cancelled() {
        return Err((None, HandshakeError::ShuttingDown));
    }
    let path = normalize_path(req.uri().path()).map_err(|e| (None, e.into()))?;
    let host = Some(hello.host.clone());
    let route = state
        .routes
        .load()
        .find(host.as_deref(), &path)
        .ok_or((None, HandshakeError::NoRoute))?;
    let fail = |e: HandshakeError| (Some(route.name().to_string()), e);
    check_origin(&route, req.headers()).map_err(fail)?;
    // Both places are held from here until the relay ends (or the upgrade fails).
    let global_slot = state
        .reserve()
        .ok_or_else(|| fail(HandshakeError::Overloaded("connections")))?;
    let route_slot = route
        .reserve()
        .ok_or_else(|| fail(HandshakeError::Overloaded("route connections")))?;

    let route_watch = route.retirement.watch();
    let started = tokio::time::Instant::now();
    let Opened {
        label: backend_label,
        answer,
        backend,
    } = open_backend(
        &route,
        &req,
        client,
        host.as_deref(),
        &path,
        &hello.protocols,
        state,
    )
    .await
    .map_err(|e| fail(e.into()))?;
    state
        .metrics
        .handshake_duration(route.name(), started.elapsed());

    let (backend_stream, leftover, backend_headers) = match answer {
        Answer::Upgraded {
            stream,
            leftover,
            headers,
        } => (stream, leftover, headers),
        Answer::Refused(res) => {
            tracing::info!(
                route = route.name(),
                status = res.status().as_u16(),
                "backend refused the upgrade"
            );
            state
                .metrics
                .handshake_failure(route.name(), "backend_refused");
            return Ok(relay_refusal(res));
        }
    };

    let (backend_slot, backend_watch) = backend.unzip();
    let subprotocol = backend_headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let on_client_upgrade = hyper::upgrade::on(&mut req);
    let session = crate::relay::Session {
        id: client.id,
        route: route.clone(),
        backend: backend_label,
        client_addr: client.peer,
        tls: client.tls,
        subprotocol,
        _slots: (global_slot, route_slot),
        _backend_slot: backend_slot,
        route_watch,
        backend_watch,
    };
    // Boxed: the task holds only a pointer to these while the client's upgrade completes.
    let pending = Box::new(crate::relay::Pending {
        session,
        backend: (backend_stream, BytesMut::from(&leftover[..])),
        state: state.clone(),
    });
    state
        .tracker
        .spawn(crate::relay::after_upgrade(pending, on_client_upgrade).in_current_span());
    Ok(switching_protocols(&hello.key, backend_headers))
}

pub(crate) fn validate<B>(req: &Request<B>) -> Result<Hello, HandshakeError> {
    let h = req.headers();
    if !has_token(h, &header::UPGRADE, "websocket") {
        return Err(HandshakeError::NotWebSocket);
    }
    if req.method() != Method::GET {
        return Err(HandshakeError::Method);
    }
    if req.version() != Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    if !has_token(h, &header::CONNECTION, "upgrade") {
        return Err(HandshakeError::ConnectionHeader);
    }
    if has_token(h, &header::CONNECTION, "close") {
        return Err(HandshakeError::ConnectionClose);
    }
    let body = h.contains_key(header::TRANSFER_ENCODING)
        || h.get_all(header::CONTENT_LENGTH)
            .iter()
            .any(|v| v.as_bytes().trim_ascii() != b"0");
    if body {
        return Err(HandshakeError::Body);
    }
    // An upgrade has no body, so a `100-continue` has nothing to wait for and is met by the
    // final answer; it is never forwarded (not on the allowlist of `forwardable`).
    let expect_ok = h.get_all(header::EXPECT).iter().all(|v| {
        v.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
    });
    if !expect_ok {
        return Err(HandshakeError::Expectation);
    }
    let host = requested_host(req)?;
    let mut keys = h.get_all(header::SEC_WEBSOCKET_KEY).iter();
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k,
        _ => return Err(HandshakeError::Key),
    };
    match base64::engine::general_purpose::STANDARD.decode(key.as_bytes()) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(HandshakeError::Key),
    }
    let versions: Vec<_> = h.get_all(header::SEC_WEBSOCKET_VERSION).iter().collect();
    if versions.len() != 1 || versions[0].as_bytes().trim_ascii() != b"13" {
        return Err(HandshakeError::WsVersion);
    }
    // Checked on the raw values: `tokens` skips what is not UTF-8, which would let such a
    // line through to the backend unparsed.
    let offers_ok = h.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().all(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .all(|t| t.is_empty() || is_token(t))
    });
    if !offers_ok {
        return Err(HandshakeError::Subprotocol);
    }
    Ok(Hello {
        key: key.clone(),
        protocols: tokens(h, &header::SEC_WEBSOCKET_PROTOCOL).collect(),
        host,
    })
}

/// The authority the client asked for: exactly one Host, itself an authority, and with an
/// absolute-form target that target's authority, which the Host is then ignored for (RFC
/// 9112 §3.2.2). hyper leaves an absolute-form target whole in `req.uri()`.
pub(crate) fn requested_host<B>(req: &Request<B>) -> Result<String, HandshakeError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => valid_authority(h.as_bytes()).ok_or(HandshakeError::Host)?,
        _ => return Err(HandshakeError::Host),
    };
    let uri = req.uri();
    let Some(authority) = uri.authority() else {
        return Ok(host.to_string());
    };
    let scheme_ok = uri.scheme_str().is_some_and(|s| {
        ["http", "https", "ws", "wss"]
            .iter()
            .any(|k| s.eq_ignore_ascii_case(k))
    });
    match valid_authority(authority.as_str().as_bytes()) {
        Some(target) if scheme_ok => Ok(target.to_string()),
        _ => Err(HandshakeError::Target),
    }
}

fn check_origin(route: &Route, headers: &HeaderMap) -> Result<(), HandshakeError> {
    let allowed = &route.config.origins;
    if allowed.is_empty() {
        return Ok(());
    }
    // Browsers always send Origin; the allowlist is against cross-site pages, so a
    // non-browser client without the header is let through.
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        Ok(())
    } else {
        Err(HandshakeError::Origin)
    }
}

fn relay_refusal(res: Response<Bytes>) -> Response<Body> {
    let (parts, body) = res.into_parts();
    let mut h = forwardable(&parts.headers);
    // The body was read whole (or dropped when too large), so its length is known; a 204 or
    // 304 has none whatever its Content-Length says, and a 304's Content-Length describes
    // the stored representation (RFC 9110 §8.6), so the backend's value is passed on.
    let bodyless =
        parts.status == StatusCode::NO_CONTENT || parts.status == StatusCode::NOT_MODIFIED;
    if !bodyless {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    } else if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
        h.insert(header::CONTENT_LENGTH, len.clone());
    }
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    let mut out = Response::new(Full::new(body));
    *out.status_mut() = parts.status;
    *out.headers_mut() = h;
    out
}

fn switching_protocols(client_key: &HeaderValue, backend_headers: HeaderMap) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let mut h = backend_headers;
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::try_from(accept_key(client_key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    *res.headers_mut() = h;
    res
}
