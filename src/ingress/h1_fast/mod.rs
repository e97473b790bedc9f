//! The first request of an HTTP/1.1 connection, read here rather than by hyper: a
//! WebSocket upgrade is served without hyper (its head parsed with `httparse`, the same
//! checks, routing, door and backend handshake as [`request::serve_h1`] gives it, the 101
//! written here, and the relay started at once, with no `OnUpgrade` hand-off); anything
//! else goes to
//! hyper (`conn::serve_http1`) with the bytes read so far, through the [`H1Guard`] that
//! sees every byte.
//!
//! Hand-written because hyper's server serves a WebSocket through its whole request
//! machinery, a spawned upgrade task and an `OnUpgrade` hand-off to a second spawned task,
//! which measured (benches/callgrind.sh `conn`) as most of what a new connection costs
//! wsgate. A bodyless plain request (`GET` or `HEAD` without `Upgrade`) is handed on to
//! `h1_plain`, which serves it and the like of it after it without hyper either; the
//! same [`read_head`] reads each of their heads. Only heads hyper would take as they are
//! come here: a complete head within
//! `limits.max_header_bytes` (at least 8 KiB, hyper's floor) that is `GET` (or, plain,
//! `HEAD`) over HTTP/1.1 with an origin-form target, `Upgrade: websocket` (or, plain, no
//! `Upgrade`), no `Content-Length`,
//! `Transfer-Encoding` or `Expect`, and that the guard's scan passes. Everything else,
//! including a head over the limit (hyper's 431), goes to hyper unchanged. A refusal is
//! sent by hyper too, from the same bytes read again (`conn::serve_http1` with the
//! answer), so its wire form is hyper's.
//!
//! The head is read and judged in `read`; the 101 and the other writes are made in `write`.
//!
//! [`request::serve_h1`]: crate::ingress::request::serve_h1
//! [`H1Guard`]: crate::ingress::h1_guard::H1Guard

mod read;
mod write;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hyper::{Request, Response};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::ingress::request;
use crate::ingress::upgrade::{Body, Prepared};
use crate::shared::client::ClientInfo;
use crate::shared::state::{ProxyState, Settings};
use crate::shared::stream::Stream;

pub(crate) use read::{read_head, read_head_until, rejoin};
use write::write_switch;
pub(crate) use write::{http_date, write_within};
/// hyper refuses a read buffer under 8 KiB.
pub(crate) const MIN_HEADER_BYTES: usize = 8 * 1024;

/// What the first bytes of a connection came to.
// Returned once per connection and taken apart at once: boxing the request would cost an
// allocation for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum First {
    /// A WebSocket upgrade served here: the request, the bytes of its head, the bytes
    /// read past it.
    Upgrade(Request<()>, Bytes, BytesMut),
    /// A bodyless plain request (`GET` or `HEAD`, no `Upgrade`) served by [`h1_plain`]:
    /// as `Upgrade`.
    Plain(Request<()>, Bytes, BytesMut),
    /// Anything else, for hyper, with what was read so far.
    Hyper(BytesMut),
    /// Closed, failed, timed out or shut down before a whole head: nothing to answer, as
    /// hyper does then.
    Gone,
}

/// What hyper does with the requests of an HTTP/1.1 connection.
pub(crate) enum Then {
    /// Serves them, for this client.
    Serve(ClientInfo),
    /// Sends this answer to the first, an upgrade the fast path already refused (hyper
    /// reads it again from the bytes handed over, so the answer is encoded as hyper does).
    Answer(Response<Body>),
}

/// A connection handed to hyper (`conn::serve_http1`).
pub(crate) struct ToHyper {
    /// The client's stream.
    pub(crate) stream: Stream,
    /// What was read of it already.
    pub(crate) read: BytesMut,
    /// What hyper does with its requests.
    pub(crate) then: Then,
    /// The settings the connection started with.
    pub(crate) settings: Arc<Settings>,
    /// The listener's place, held while hyper serves the connection.
    pub(crate) pending: OwnedSemaphorePermit,
}

/// What a connection goes on to, when [`serve`] did not serve it to its end.
// Returned once per connection and taken apart at once: boxing either would cost an
// allocation for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Handed {
    /// hyper, for the rest of the connection.
    Hyper(ToHyper),
    /// `h1_plain`, from a bodyless plain first request on.
    Plain(ToPlain),
}

/// A connection whose first request is bodyless and plain, for `h1_plain`.
pub(crate) struct ToPlain {
    /// The client's stream.
    pub(crate) stream: Stream,
    /// Who the client is.
    pub(crate) client: ClientInfo,
    /// The settings the connection started with.
    pub(crate) settings: Arc<Settings>,
    /// The listener's place, held while the connection is served.
    pub(crate) pending: OwnedSemaphorePermit,
    /// The request, the bytes of its head, the bytes read past it.
    pub(crate) first: (Request<()>, Bytes, BytesMut),
}

/// Serves a fresh HTTP/1.1 connection whose first request is an upgrade; a bodyless plain
/// one is handed on for `h1_plain`, anything else for hyper. `pending` is the listener's place for a connection that does not
/// relay yet, given back before the relay starts.
pub(crate) async fn serve(
    mut stream: Stream,
    client: ClientInfo,
    settings: Arc<Settings>,
    state: Arc<ProxyState>,
    pending: OwnedSemaphorePermit,
) -> Option<Handed> {
    let limits = &settings.limits;
    let max = (limits.max_header_bytes as usize).max(MIN_HEADER_BYTES);
    let timeout = limits.header_read_timeout;
    let first = read_head(&mut stream, BytesMut::new(), max, timeout, &state.shutdown).await;
    let (mut req, head, rest) = match first {
        First::Upgrade(req, head, rest) => (req, head, rest),
        First::Plain(req, head, rest) => {
            return Some(Handed::Plain(ToPlain {
                stream,
                client,
                settings,
                pending,
                first: (req, head, rest),
            }));
        }
        First::Hyper(read) => {
            let then = Then::Serve(client);
            return Some(Handed::Hyper(ToHyper {
                stream,
                read,
                then,
                settings,
                pending,
            }));
        }
        First::Gone => return None,
    };
    // Boxed: with the door's checks and the backend handshake it is large, and only
    // needed this once (hyper's path ran it in a task of its own).
    let prepared = Box::pin(request::prepare_upgrade(&mut req, client, &state)).await;
    match prepared {
        Prepared::Switch {
            pending: relay,
            response,
        } => {
            drop((req, head));
            let stall_after = settings.http_idle_timeout;
            let written = write_switch(&mut stream, &response, stall_after).await;
            drop((response, pending));
            let client = match written {
                Ok(()) => Some((stream, leftover(rest))),
                Err(e) => {
                    tracing::info!(error = %e, "client upgrade failed after 101");
                    None
                }
            };
            // A task of its own, as after hyper's upgrade: what this task's future holds
            // (every step up to here) would otherwise stay allocated for the connection's
            // whole life, doubling what an idle connection costs (tests/memory.rs).
            state
                .tracker
                .spawn(crate::relay::run(relay, client).in_current_span());
            None
        }
        Prepared::Answer(res) => {
            drop(req);
            let read = rejoin(&head, &rest);
            let then = Then::Answer(res);
            Some(Handed::Hyper(ToHyper {
                stream,
                read,
                then,
                settings,
                pending,
            }))
        }
    }
}

/// The bytes read past the head, copied so the read buffer is not kept for the
/// connection's life.
fn leftover(rest: BytesMut) -> BytesMut {
    if rest.is_empty() {
        BytesMut::new()
    } else {
        BytesMut::from(&rest[..])
    }
}
