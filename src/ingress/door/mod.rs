//! The door: who may come in on a route, decided after routing and before any backend is
//! contacted, for upgrades and plain requests alike. Each check is optional per route; a
//! route without any costs one branch.
//!
//! A check either refuses (a whole response: 401 with `WWW-Authenticate`, an auth
//! service's own answer, 429 or 503) or lets the request in, possibly rewriting it on the
//! way (claims become headers, a token offered as a subprotocol is taken out of the
//! offer), and says who the client is and until when it may stay.

mod admission;
mod client_cert;
mod forward_auth;
mod jwt;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};

use crate::shared::admission::Admitted;
use crate::shared::client::ClientInfo;
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// Which way a request goes in, once past the door.
pub(crate) enum Entry<'a> {
    /// A WebSocket upgrade (or extended CONNECT), with the subprotocols it offers (a
    /// check may take a credential out of them before the backend sees the offer).
    Upgrade {
        /// The offered subprotocols, in order.
        protocols: &'a mut Vec<String>,
    },
    /// A plain request, forwarded to the route's backends.
    Plain,
}

/// A request let in: who it is and, for a WebSocket, until when. Whatever a check holds
/// for the connection's life (a place under a cap) is held here and dropped with it.
#[derive(Debug, Default)]
pub(crate) struct Pass {
    /// Identity and end of life, handed to the relay.
    pub admitted: Admitted,
    /// The subprotocol the 101 names when the backend picks none: the credential
    /// marker a browser offered beside its token (it fails a 101 naming none of its offers).
    pub subprotocol: Option<String>,
}

impl Pass {
    /// The part the relay keeps, boxed, or nothing when no check had anything to say.
    pub(crate) fn into_admitted(self) -> Option<Box<Admitted>> {
        (!self.admitted.is_empty()).then(|| Box::new(self.admitted))
    }
}

/// A request turned away at the door, with the whole response the client gets.
#[derive(Debug)]
pub struct Refusal {
    /// The response status.
    pub status: StatusCode,
    /// Its headers (`WWW-Authenticate`, `Retry-After`, an auth service's `Location`…).
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
    /// Short label for logs and metrics (`expired`, `bad_signature`, `per_ip`…).
    pub reason: &'static str,
}

impl Refusal {
    /// The response the client gets.
    pub(crate) fn response(&self) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(self.body.clone()));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        res
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused at the door: {}", self.reason)
    }
}

/// Whether a plain request's checks on `route` may wait (a JWKS fetch, an auth service):
/// else [`check_plain_now`] does them without building [`check`]'s future, which holds
/// every check's state (kilobytes, copied as it is made).
pub(crate) fn plain_may_wait(route: &Route) -> bool {
    route.jwt.is_some() || route.forward_auth.is_some()
}

/// [`check`] of a plain request on a route where [`plain_may_wait`] is false: the client
/// certificate's header and policy are all there is.
// The door's one error type, made once per refused request: boxing it buys nothing.
#[allow(clippy::result_large_err)]
pub(crate) fn check_plain_now<B>(
    route: &Route,
    req: &mut Request<B>,
    client: &ClientInfo,
    state: &ProxyState,
) -> Result<Pass, Refusal> {
    client_cert::check(route, req, client, state)?;
    Ok(Pass::default())
}

/// Runs the route's checks on `req`, in order, stopping at the first refusal.
pub(crate) async fn check<B>(
    route: &Route,
    req: &mut Request<B>,
    client: &ClientInfo,
    state: &ProxyState,
    mut entry: Entry<'_>,
) -> Result<Pass, Refusal> {
    let mut pass = Pass::default();
    let upgrade = matches!(entry, Entry::Upgrade { .. });
    let admission = route.config.admission.is_on() && upgrade;
    if admission {
        admission::before_auth(route, client, &state.metrics, &mut pass).map_err(|r| *r)?;
    }
    client_cert::check(route, req, client, state)?;
    if let Some(check) = &route.jwt {
        jwt::check(route, check, req, state, &mut entry, &mut pass)
            .await
            .inspect_err(|r| state.metrics.auth.failure(route.name(), r.reason))?;
    }
    if let Some(auth) = &route.forward_auth {
        forward_auth::check(route, auth, req, client, state, upgrade, &mut pass).await?;
    }
    if admission {
        admission::after_auth(route, &state.metrics, &mut pass).map_err(|r| *r)?;
    }
    if upgrade && let Some(end) = admission::lifetime(&route.tuning) {
        pass.admitted.end_by(end);
    }
    Ok(pass)
}
