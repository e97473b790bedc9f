//! One request on the client hop: its Host checked and its path normalised, routed, then
//! sent to the upgrade (a request with `Upgrade`) or forwarded as plain HTTP (routes with
//! `http`; on the others it gets the upgrade's 426).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tracing::Instrument;

use crate::config::cidr::any_contains;
use crate::ingress::forward::{self, ResponseBody};
use crate::ingress::h1_guard::{HeadCheck, Inspection};
use crate::ingress::upgrade::{self, HandshakeError, requested_host};
use crate::proto::forwarded::Forwarding;
use crate::proto::path::normalize_path;
use crate::shared::client::ClientInfo;
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// hyper service entry: answers one request on the client hop.
pub async fn serve(
    req: Request<Incoming>,
    client: ClientInfo,
    state: Arc<ProxyState>,
) -> Result<Response<ResponseBody>, Infallible> {
    serve_inspected(req, client, state, None).await
}

/// hyper service entry on an HTTP/1.1 connection: `head` is what its [`H1Guard`] saw of
/// this request (a refused head is answered 400 here, sent nowhere, and the connection
/// closes), `inspection` the connection's (the access log asks it whether the client
/// stalled).
///
/// [`H1Guard`]: crate::ingress::h1_guard::H1Guard
pub(crate) async fn serve_h1(
    req: Request<Incoming>,
    client: ClientInfo,
    state: Arc<ProxyState>,
    head: HeadCheck,
    inspection: Arc<Inspection>,
) -> Result<Response<ResponseBody>, Infallible> {
    let why = match head {
        HeadCheck::Clean => return serve_inspected(req, client, state, Some(inspection)).await,
        HeadCheck::Upgrade => {
            let res = serve_inspected(req, client, state, Some(inspection)).await?;
            return Ok(closing_unless_switched(res));
        }
        HeadCheck::Refused(r) => r.as_str(),
        HeadCheck::Unseen => UNSEEN,
    };
    Ok(refused_head(why, &state))
}

/// Why a request the guard did not follow is refused.
const UNSEEN: &str = "request after an uninspected one";

/// The guard stopped reading at an upgrade's head: after anything but the switch, a next
/// request on the connection would reach hyper uninspected.
fn closing_unless_switched(mut res: Response<ResponseBody>) -> Response<ResponseBody> {
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// The answer the fast path already gave an upgrade (logged and counted there), for hyper
/// to send when it reads the same head again; as [`serve_h1`] would answer it.
pub(crate) fn answer_again(
    head: HeadCheck,
    answer: Option<Response<upgrade::Body>>,
    state: &ProxyState,
) -> Response<ResponseBody> {
    match (head, answer) {
        (HeadCheck::Upgrade, Some(res)) => closing_unless_switched(res.map(forward::full)),
        (HeadCheck::Refused(r), _) => refused_head(r.as_str(), state),
        // The fast path sends none but a head the scan takes for an upgrade, and the
        // answer closes the connection.
        _ => refused_head(UNSEEN, state),
    }
}

/// The 400 for a head the guard refused (or did not see), logged and counted.
fn refused_head(why: &str, state: &ProxyState) -> Response<ResponseBody> {
    tracing::info!(status = 400, route = "", error = why, "request refused");
    state
        .metrics
        .http_request("", 400, std::time::Duration::ZERO);
    let mut res = Response::new(forward::full(Full::new(Bytes::from(format!("{why}\n")))));
    *res.status_mut() = StatusCode::BAD_REQUEST;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// Answers one request; `inspection` is its HTTP/1.1 connection's, if it has one.
async fn serve_inspected(
    req: Request<Incoming>,
    mut client: ClientInfo,
    state: Arc<ProxyState>,
    inspection: Option<Arc<Inspection>>,
) -> Result<Response<ResponseBody>, Infallible> {
    forwarded_client(req.headers(), &mut client, &state);
    // On HTTP/2 a WebSocket is an extended CONNECT (RFC 8441), and any CONNECT gets the
    // upgrade's answer (405 without `:protocol`): wsgate forwards no tunnels.
    let upgrades = req.headers().contains_key(header::UPGRADE)
        || (req.version() == Version::HTTP_2 && req.method() == Method::CONNECT);
    let (route, host, path) = match route(&req, &state) {
        Ok(routed) => routed,
        Err(e) => return Ok(refuse(None, e, upgrades, &state)),
    };
    if upgrades {
        let routed = (route, host, path);
        return Ok(upgrade(req, client, state, routed).await.map(forward::full));
    }
    if !route.config.http {
        return Ok(refuse(
            Some(&route),
            HandshakeError::NotWebSocket,
            false,
            &state,
        ));
    }
    Ok(forward::answer(req, client, route, host, path, state, inspection).await)
}

/// Per request: each request of a connection from a trusted proxy may come from another
/// client, whom its forwarding headers name.
pub(crate) fn forwarded_client(headers: &HeaderMap, client: &mut ClientInfo, state: &ProxyState) {
    let settings = state.settings.load();
    let trusted = &settings.trusted_proxies;
    if !trusted.is_empty() {
        client.forwarding =
            Forwarding::read(headers, client.peer.ip(), |ip| any_contains(trusted, ip));
    }
}

/// An upgrade request that the HTTP/1.1 fast path read instead of hyper: the steps
/// [`serve_h1`] takes for it (the client behind trusted proxies, routing, then the
/// upgrade), up to the answer, which the caller sends.
pub(crate) async fn prepare_upgrade<B>(
    req: &mut Request<B>,
    mut client: ClientInfo,
    state: &Arc<ProxyState>,
) -> upgrade::Prepared {
    forwarded_client(req.headers(), &mut client, state);
    match route(req, state) {
        Ok(routed) => upgrade::prepare(req, client, state, routed).await,
        Err(e) => {
            log_refusal(None, &e, true, state);
            upgrade::Prepared::Answer(e.response())
        }
    }
}

/// The route for the request's Host and normalised path, with both.
pub(crate) fn route<B>(
    req: &Request<B>,
    state: &ProxyState,
) -> Result<upgrade::Routed, HandshakeError> {
    route_for_host(req, requested_host(req)?, state)
}

/// [`route`] of a request whose Host was checked already (`host`, as
/// [`requested_host`] gives it).
pub(crate) fn route_for_host<B>(
    req: &Request<B>,
    host: String,
    state: &ProxyState,
) -> Result<upgrade::Routed, HandshakeError> {
    let path = normalize_path(req.uri().path())?;
    let route = state
        .routes
        .load()
        .find(Some(&host), &path)
        .ok_or(HandshakeError::NoRoute)?;
    Ok((route, host, path))
}

/// The upgrade runs in a task of its own because hyper drops this future as soon as the
/// client goes away: a backend that completes its upgrade after that must still get a
/// Close and the connection a report (the relay's start sees the client's upgrade fail),
/// not be dropped halfway through its handshake.
async fn upgrade(
    req: Request<Incoming>,
    client: ClientInfo,
    state: Arc<ProxyState>,
    routed: upgrade::Routed,
) -> Response<upgrade::Body> {
    // On HTTP/2 a reset stream frees its place among the connection's streams at once, so
    // its upgrade must not outlive it: else a client resetting each CONNECT right after
    // sending it would have backend handshakes pile up without bound (rapid reset,
    // CVE-2023-44487). hyper drops this future on the reset, and the guard aborts the task.
    let h2 = req.version() == Version::HTTP_2;
    let task = state
        .tracker
        .spawn(upgrade::answer(req, client, state.clone(), routed).in_current_span());
    let _abort = AbortOnDrop(h2.then(|| task.abort_handle()));
    match task.await {
        Ok(res) => res,
        // A panic stays a panic of this connection, as if the upgrade had run here.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a task.
        Err(_) => HandshakeError::ShuttingDown.response(),
    }
}

/// A request refused before it reached the upgrade or the forwarding, logged and counted.
pub(crate) fn refuse(
    route: Option<&Route>,
    e: HandshakeError,
    upgrade: bool,
    state: &ProxyState,
) -> Response<ResponseBody> {
    log_refusal(route, &e, upgrade, state);
    e.response().map(forward::full)
}

/// Logs and counts a refusal of [`refuse`].
fn log_refusal(route: Option<&Route>, e: &HandshakeError, upgrade: bool, state: &ProxyState) {
    let name = route.map_or("", Route::name);
    let (status, error) = (e.status().as_u16(), e.to_string());
    // A string field, so the text format quotes whatever a peer put in the error.
    if upgrade {
        tracing::info!(status, route = name, error, "upgrade refused");
        state.metrics.handshake_failure(name, e.reason());
    } else {
        tracing::info!(status, route = name, error, "request refused");
        state
            .metrics
            .http_request(name, e.status().as_u16(), std::time::Duration::ZERO);
    }
}

/// Aborts the task it holds a handle of when dropped (a finished task is not affected).
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}
