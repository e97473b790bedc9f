//! One request on the client hop, whatever it asks for. Today every request is an
//! upgrade attempt (a plain request gets the upgrade's 426); plain-HTTP forwarding
//! joins here beside the upgrade.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};
use tracing::Instrument;

use crate::ingress::upgrade::{self, Body, HandshakeError};
use crate::shared::client::ClientInfo;
use crate::shared::state::ProxyState;

/// hyper service entry: answers one request on the client hop.
///
/// The upgrade runs in a task of its own because hyper drops this future as soon as the
/// client goes away: a backend that completes its upgrade after that must still get a
/// Close and the connection a report (the relay's start sees the client's upgrade fail),
/// not be dropped halfway through its handshake.
pub async fn serve(
    req: Request<Incoming>,
    client: ClientInfo,
    state: Arc<ProxyState>,
) -> Result<Response<Body>, Infallible> {
    let task = state
        .tracker
        .spawn(upgrade::answer(req, client, state.clone()).in_current_span());
    match task.await {
        Ok(res) => Ok(res),
        // A panic stays a panic of this connection, as if the upgrade had run here.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a task.
        Err(_) => Ok(HandshakeError::ShuttingDown.response()),
    }
}
