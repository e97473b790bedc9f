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
    // On HTTP/2 a reset stream frees its place among the connection's streams at once, so
    // its upgrade must not outlive it: else a client resetting each CONNECT right after
    // sending it would have backend handshakes pile up without bound (rapid reset,
    // CVE-2023-44487). hyper drops this future on the reset, and the guard aborts the task.
    let h2 = req.version() == hyper::Version::HTTP_2;
    let task = state
        .tracker
        .spawn(upgrade::answer(req, client, state.clone()).in_current_span());
    let _abort = AbortOnDrop(h2.then(|| task.abort_handle()));
    match task.await {
        Ok(res) => Ok(res),
        // A panic stays a panic of this connection, as if the upgrade had run here.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels a task.
        Err(_) => Ok(HandshakeError::ShuttingDown.response()),
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
