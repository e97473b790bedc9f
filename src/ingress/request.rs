//! One request on the client hop: its Host checked and its path normalised, routed, then
//! sent to the upgrade (a request with `Upgrade`) or forwarded as plain HTTP (routes with
//! `http`; on the others it gets the upgrade's 426).

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response};
use tracing::Instrument;

use crate::ingress::forward::{self, ResponseBody};
use crate::ingress::upgrade::{self, HandshakeError, requested_host};
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
    let upgrades = req.headers().contains_key(header::UPGRADE);
    let (route, host, path) = match route(&req, &state) {
        Ok(routed) => routed,
        Err(e) => return Ok(refuse(None, e, upgrades, &state)),
    };
    if upgrades {
        return Ok(upgrade(req, client, state).await.map(forward::full));
    }
    if !route.config.http {
        return Ok(refuse(
            Some(&route),
            HandshakeError::NotWebSocket,
            false,
            &state,
        ));
    }
    Ok(forward::answer(req, client, route, host, path, state).await)
}

/// The route for the request's Host and normalised path, with both.
fn route(
    req: &Request<Incoming>,
    state: &ProxyState,
) -> Result<(Arc<Route>, String, String), HandshakeError> {
    let host = requested_host(req)?;
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
) -> Response<upgrade::Body> {
    let task = state
        .tracker
        .spawn(upgrade::answer(req, client, state.clone()).in_current_span());
    match task.await {
        Ok(res) => res,
        // A panic stays a panic of this connection, as if the upgrade had run here.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a task.
        Err(_) => HandshakeError::ShuttingDown.response(),
    }
}

/// A request refused before it reached the upgrade or the forwarding, logged and counted.
fn refuse(
    route: Option<&Route>,
    e: HandshakeError,
    upgrade: bool,
    state: &ProxyState,
) -> Response<ResponseBody> {
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
    e.response().map(forward::full)
}
