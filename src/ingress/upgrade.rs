//! The upgrade: validate the client's request (an HTTP/1.1 upgrade, or an HTTP/2 extended
//! CONNECT checked by [`connect`]), route it, do the backend handshake first, and only
//! then answer the client with 101 (200 on HTTP/2) and start the relay.

use std::sync::Arc;

use base64::Engine;
use bytes::BytesMut;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tracing::Instrument;

use crate::backend::client::Answer;
use crate::backend::open::{Opened, open_backend};
use crate::ingress::door::{self, Entry};
pub use crate::ingress::hello::{Body, HandshakeError};
use crate::ingress::hello::{Hello, check_expectation, offered_subprotocols};
use crate::ingress::{connect, h1_guard};
use crate::proto::handshake::accept_key;
use crate::proto::headers::{forwardable, has_token, valid_authority};
use crate::shared::client::{ClientInfo, ClientProtocol, StreamHold};
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// Answers one request hyper read: the 101 (the relay already spawned, waiting for hyper
/// to hand over the client's stream) or the refusal, counted.
pub(crate) async fn answer(
    mut req: Request<Incoming>,
    client: ClientInfo,
    state: Arc<ProxyState>,
    routed: Routed,
) -> Response<Body> {
    match prepare(&mut req, client, &state, routed).await {
        Prepared::Answer(res) => res,
        Prepared::Switch { pending, response } => {
            let on_client_upgrade = hyper::upgrade::on(&mut req);
            // Boxed: tokio's task cell is aligned to 128 bytes, so this future inline
            // (176 bytes with its span and tracker) made a 384-byte cell for the
            // connection's whole life; boxed, a 128-byte cell and a 160-byte box.
            state.tracker.spawn(Box::pin(
                crate::relay::after_upgrade(pending, on_client_upgrade, h1_guard::recover)
                    .in_current_span(),
            ));
            response
        }
    }
}

/// Where an upgrade request got to, the client not told anything yet.
pub(crate) enum Prepared {
    /// The backend switched: the client's 101 (200 on HTTP/2), and what the relay needs
    /// besides the client's stream (boxed: it is held while the client's upgrade completes).
    Switch {
        /// The relay's state, the backend's stream in it.
        pending: Box<crate::relay::Pending>,
        /// The answer to send the client.
        response: Response<Body>,
    },
    /// A refusal (wsgate's own, counted and logged, or the backend's relayed).
    Answer(Response<Body>),
}

/// A request's route, with the authority it asked for and its normalised path (routing
/// comes before the upgrade's own checks, so their refusals come after routing's).
pub(crate) type Routed = (Arc<Route>, String, String);

/// Validates and checks the `routed` request, then does the backend handshake: whatever
/// read the request (hyper, or the HTTP/1.1 fast path) sends the answer and starts the relay.
pub(crate) async fn prepare<B>(
    req: &mut Request<B>,
    client: ClientInfo,
    state: &Arc<ProxyState>,
    routed: Routed,
) -> Prepared {
    match upgrade(req, client, state, routed).await {
        Ok(prepared) => prepared,
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
            Prepared::Answer(e.response())
        }
    }
}

type Refusal = (Option<String>, HandshakeError);

async fn upgrade<B>(
    req: &mut Request<B>,
    client: ClientInfo,
    state: &Arc<ProxyState>,
    (route, host, path): Routed,
) -> Result<Prepared, Refusal> {
    let mut hello = validate_for(req, Some(host)).map_err(|e| (None, e))?;
    if req.version() == Version::HTTP_2 {
        connect::join_cookies(req.headers_mut());
    }
    if state.shutdown.is_cancelled() {
        return Err((None, HandshakeError::ShuttingDown));
    }
    let host = Some(hello.host.clone());
    let fail = |e: HandshakeError| (Some(route.name().to_string()), e);
    check_origin(&route, req.headers()).map_err(fail)?;
    let protocols = &mut hello.protocols;
    let pass = door::check(&route, req, &client, state, Entry::Upgrade { protocols })
        .await
        .map_err(|r| fail(HandshakeError::Door(Box::new(r))))?;
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
        set_cookie,
    } = open_backend(
        &route,
        req,
        &client,
        host.as_deref(),
        &path,
        &hello.protocols,
        state,
    )
    .await
    .map_err(|e| fail(e.into()))?;
    state
        .metrics
        .handshake_duration(&route.close_metrics, route.name(), started.elapsed());

    let (backend_stream, leftover, mut backend_headers) = match answer {
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
            return Ok(Prepared::Answer(relay_refusal(res)));
        }
    };

    if let Some(cookie) = set_cookie {
        backend_headers.append(header::SET_COOKIE, cookie);
    }
    if let Some(marker) = &pass.subprotocol
        && !backend_headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL)
        && let Ok(v) = HeaderValue::from_str(marker)
    {
        backend_headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    let (backend_slot, backend_watch) = backend.unzip();
    let subprotocol = backend_headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let id = match client.protocol {
        ClientProtocol::H1 => client.id,
        ClientProtocol::H2 => state
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    };
    let session = crate::relay::Session {
        id,
        route: route.clone(),
        backend: backend_label,
        client_addr: client.addr(),
        tls: client.tls,
        protocol: client.protocol,
        _stream_hold: req.extensions_mut().remove::<StreamHold>(),
        subprotocol,
        _slots: (global_slot, route_slot),
        _backend_slot: backend_slot,
        route_watch,
        backend_watch,
        admitted: pass.into_admitted(),
    };
    // Boxed: the task holds only a pointer to these while the client's upgrade completes.
    let pending = Box::new(crate::relay::Pending {
        session,
        backend: (backend_stream, BytesMut::from(&leftover[..])),
        state: state.clone(),
    });
    let response = match &hello.key {
        Some(key) => switching_protocols(key, backend_headers),
        None => {
            let mut res = Response::new(Full::new(Bytes::new()));
            *res.headers_mut() = connect::accepted(backend_headers);
            res
        }
    };
    Ok(Prepared::Switch { pending, response })
}

/// Checks the client's request: an HTTP/1.1 upgrade here, an HTTP/2 extended CONNECT in
/// [`connect::validate`].
pub(crate) fn validate<B>(req: &Request<B>) -> Result<Hello, HandshakeError> {
    validate_for(req, None)
}

/// [`validate`], `host` being what [`requested_host`] already found for the request.
fn validate_for<B>(req: &Request<B>, host: Option<String>) -> Result<Hello, HandshakeError> {
    if req.version() == Version::HTTP_2 {
        return connect::validate(req);
    }
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
    check_expectation(h)?;
    let host = match host {
        Some(host) => host,
        None => requested_host(req)?,
    };
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
    Ok(Hello {
        key: Some(key.clone()),
        protocols: offered_subprotocols(h)?,
        host,
    })
}

/// The authority the client asked for: exactly one Host, itself an authority, and with an
/// absolute-form target that target's authority, which the Host is then ignored for (RFC
/// 9112 §3.2.2). hyper leaves an absolute-form target whole in `req.uri()`. On HTTP/2,
/// `:authority` ([`connect::authority`]).
pub(crate) fn requested_host<B>(req: &Request<B>) -> Result<String, HandshakeError> {
    // HTTP/2 names it in `:authority` (RFC 9113 §8.3.1).
    if req.version() == Version::HTTP_2 {
        return connect::authority(req);
    }
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
