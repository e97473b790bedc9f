//! Bodyless plain requests (`GET`, `HEAD`) of an HTTP/1.1 connection, served without
//! hyper on either hop: each head read by [`h1_fast::read_head`], routed and checked at the
//! door as [`request::serve_h1`] and [`forward::answer`] do, sent to a backend over a bare
//! pooled connection ([`raw::exchange`]), and the response head and body written here.
//! The connection stays here for as long as its requests are of that shape; the first
//! one that is not (a body, an upgrade, HTTP/1.0, an `Expect`…) goes to hyper with every
//! byte read so far, and hyper serves the rest of the connection.
//!
//! Hand-written because hyper's server and client were most of what a keep-alive GET cost
//! wsgate (benches/callgrind.sh `http1`: 39k instructions per request against nginx's 18k,
//! hyper ~21k of them). What is written matches hyper's: status line with the canonical
//! reason, lowercase field names, `date` unless the backend sent one, a body framed by
//! its length, else chunked.
//!
//! The connection loop is here; `serve_one` answers one request, `host_cache` keeps what
//! the connection's Host came to, and `respond` writes the client's heads and wsgate's
//! own answers.
//!
//! [`forward::answer`]: crate::ingress::forward::answer
//! [`request::serve_h1`]: crate::ingress::request::serve_h1
//! [`raw::exchange`]: crate::backend::http::raw::exchange

mod host_cache;
mod respond;
mod serve_one;

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use hyper::Request;
use hyper::header;
use tokio::sync::OwnedSemaphorePermit;

use crate::ingress::h1_fast::{self, First, MIN_HEADER_BYTES, Then, ToHyper, ToPlain, rejoin};
use crate::shared::client::ClientInfo;
use crate::shared::deadline::LazyDeadline;
use crate::shared::state::{ProxyState, Settings};
use crate::shared::stream::Stream;

use host_cache::HostCache;
use serve_one::one;

/// After shutdown starts, a request in flight gets this long to finish (as hyper's
/// connections get `conn::HTTP_GRACE`).
const GRACE: Duration = Duration::from_secs(5);

/// How a request left the connection.
enum Next {
    /// Answered; the connection may carry another.
    Keep,
    /// Answered or abandoned; the connection ends.
    Close,
}

/// Serves `first` and the bodyless requests after it on the connection; gives the
/// connection to hyper at the first request of another shape.
pub(crate) async fn serve(handed: ToPlain, state: Arc<ProxyState>) -> Option<ToHyper> {
    let ToPlain {
        mut stream,
        client,
        settings,
        pending,
        first,
    } = handed;
    let limits = &settings.limits;
    let max = (limits.max_header_bytes as usize).max(MIN_HEADER_BYTES);
    let (mut req, mut head, mut rest) = first;
    // One of each for the connection's life: made and dropped per request, a timer and a
    // shutdown wait cost a registration and its removal every time.
    let mut deadline = LazyDeadline::default();
    let mut cache = HostCache::default();
    let cancelled = state.shutdown.cancelled();
    tokio::pin!(cancelled);
    // Each turn is one request the client sent; the connection ends or goes to hyper.
    loop {
        drop(head);
        let close = wants_close(&req);
        let next = {
            let served = one(
                &mut stream,
                req,
                &client,
                &settings,
                &state,
                &mut rest,
                max,
                close,
                &mut deadline,
                &mut cache,
            );
            tokio::pin!(served);
            tokio::select! {
                biased;
                next = &mut served => next,
                _ = &mut cancelled => {
                    tokio::time::timeout(GRACE, &mut served).await.unwrap_or(Next::Close)
                }
            }
        };
        if matches!(next, Next::Close) || close || state.shutdown.is_cancelled() {
            return None;
        }
        deadline.set_after(limits.header_read_timeout);
        let stop = |cx: &mut Context<'_>| {
            if deadline.poll_passed(cx).is_ready() || cancelled.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        };
        let read =
            h1_fast::read_head_until(&mut stream, std::mem::take(&mut rest), max, stop).await;
        deadline.clear();
        (req, head, rest) = match read {
            First::Plain(r, h, b) => (r, h, b),
            First::Upgrade(_, h, b) => {
                let read = rejoin(&h, &b);
                return Some(to_hyper(stream, read, client, settings, pending));
            }
            First::Hyper(read) => return Some(to_hyper(stream, read, client, settings, pending)),
            First::Gone => return None,
        };
    }
}

fn to_hyper(
    stream: Stream,
    read: BytesMut,
    client: ClientInfo,
    settings: Arc<Settings>,
    pending: OwnedSemaphorePermit,
) -> ToHyper {
    ToHyper {
        stream,
        read,
        then: Then::Serve(client),
        settings,
        pending,
    }
}

/// Whether the client asked for the connection to end after this request.
fn wants_close(req: &Request<()>) -> bool {
    crate::proto::headers::has_token(req.headers(), &header::CONNECTION, "close")
}
