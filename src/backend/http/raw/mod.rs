//! Bodyless plain requests (`GET`, `HEAD`) over bare keep-alive connections, written and
//! read here rather than by hyper's client: the request head is encoded straight from the
//! client's, the response head parsed with `httparse` (as hyper does) and handed over as
//! it was read, and the body forwarded by its length, else chunked anew.
//!
//! Hand-written because hyper's client drives each connection from a task of its own and
//! hands requests and responses over channels: on keep-alive GETs (benches/callgrind.sh
//! `http1`) that task, its wake-ups and hyper's encode and parse of both heads were about
//! a third of wsgate's instructions per request. Requests with a body, and everything the
//! client hop does not send here, still go through [`super::exchange`].
//!
//! Same balancing, seats, ejection, timeouts and retries as [`super::exchange`]: a pooled
//! connection that turns out closed before any answer is replaced by another (these
//! requests are idempotent and have no body), and a failed backend is followed by the
//! next candidate unless its response head timed out.
//!
//! The request head is encoded in `request`, the response head parsed in `head`, and the
//! body followed in `body`.

mod body;
mod head;
mod request;

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use bytes::BytesMut;
use hyper::Method;
use hyper::header::{HeaderMap, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::backend::balance;
use crate::backend::dial;
use crate::backend::error::BackendError;
use crate::backend::http::{ExchangeSettings, Failed};
use crate::shared::deadline::LazyDeadline;
use crate::shared::metrics::Metrics;
use crate::shared::occupancy::Seat;
use crate::shared::pool::Backend;
use crate::shared::routes::Route;
use crate::shared::stream::Stream;

use body::GiveBack;
pub(crate) use body::{RawBody, poll_once};
pub(crate) use head::{Framing, ResponseHead, parse_for_fuzzing};
use head::{Parsed, parse};
use request::encode;
pub(crate) use request::{encode_proxy, field, push_decimal};

/// What is read at a time from the backend.
const READ: usize = 8 * 1024;

/// A bodyless request for the route's backends.
pub(crate) struct Bodyless<'a> {
    /// `GET` or `HEAD`.
    pub(crate) method: &'a Method,
    /// The client's headers: what [`crate::proto::headers::each_forwardable`] passes is
    /// sent, then `proxy`.
    pub(crate) headers: &'a HeaderMap,
    /// wsgate's forwarding headers, as field lines ([`encode_proxy`]).
    pub(crate) proxy: &'a [u8],
    /// The normalised path.
    pub(crate) path: &'a str,
    /// The part of `path` after the route's prefix.
    pub(crate) remainder: &'a str,
    /// The client's query.
    pub(crate) query: Option<&'a str>,
    /// The client's Host, sent instead of the backend's with `preserve_host`.
    pub(crate) host: &'a str,
    /// The balancer's hash key for this request.
    pub(crate) hash_key: Option<u64>,
    /// The request's sticky cookie, if the route has one.
    pub(crate) sticky: balance::Sticky,
    /// The client hop is TLS (the sticky cookie is then `Secure`).
    pub(crate) secure: bool,
}

/// A backend's answer: its head, its body to come, where it came from.
pub(crate) struct Answered {
    /// The response head.
    pub(crate) head: ResponseHead,
    /// The body, read from the backend connection as it is forwarded.
    pub(crate) body: RawBody,
    /// The backend that answered.
    pub(crate) backend: Arc<Backend>,
    /// The request's place on the backend, held until the body ends.
    pub(crate) seat: Seat,
    /// The route's sticky cookie for the client, when it is not pinned to this backend yet.
    pub(crate) set_cookie: Option<HeaderValue>,
}

/// Why one attempt on one connection failed.
enum AttemptError {
    /// A pooled connection closed before any answer: try another one.
    Stale,
    /// No response head within the response timeout: the request was taken, and is not
    /// sent to another backend.
    HeadTimeout,
    /// Anything else, the backend's.
    Failed(BackendError),
}

/// Sends the request to a backend of the route and returns its response head, trying the
/// next candidate where that is safe (see the module doc).
pub(crate) async fn exchange(
    route: &Arc<Route>,
    out: &Bodyless<'_>,
    settings: &ExchangeSettings,
    metrics: &Metrics,
    shutdown: &CancellationToken,
    deadline: &mut LazyDeadline,
) -> Result<Answered, Failed> {
    let pool = route.pool().ok_or(Failed {
        error: BackendError::NoHealthyBackend,
        backend: None,
    })?;
    let tls = route.backend_tls();
    let mut last = BackendError::NoHealthyBackend;
    let mut tried = None;
    let head_only = *out.method == Method::HEAD;
    for backend in balance::candidates(&pool, out.hash_key, &out.sticky) {
        let seat = backend.occupy();
        tried = Some(backend.clone());
        let request = encode(out, &backend, route.config.preserve_host);
        // Pooled connections found closed, then one new connection (bounded by the list).
        let attempt = loop {
            let (stream, reused) = match checkout(&backend, &tls, settings).await {
                Ok(c) => c,
                Err(e) => break Err((e, false)),
            };
            match send(stream, &request, head_only, settings, reused, deadline).await {
                Ok(answer) => break Ok(answer),
                Err(AttemptError::Stale) => continue,
                Err(AttemptError::HeadTimeout) => break Err((BackendError::Timeout, true)),
                Err(AttemptError::Failed(e)) => break Err((e, false)),
            }
        };
        match attempt {
            Ok((head, stream, rest, keep_alive)) => {
                backend.connect_ok();
                let give_back = GiveBack {
                    backend: backend.clone(),
                    idle_max: settings.pool.idle_max,
                    idle_timeout: settings.pool.idle_timeout,
                    shutdown: shutdown.clone(),
                };
                let body = RawBody::new(
                    stream,
                    rest,
                    head.framing,
                    keep_alive,
                    settings.idle_timeout,
                    give_back,
                );
                return Ok(Answered {
                    head,
                    body,
                    set_cookie: out.sticky.set_cookie(&pool, &backend, out.secure),
                    backend,
                    seat,
                });
            }
            Err((error, head_timed_out)) => {
                crate::backend::error::attempt_failed(
                    route.name(),
                    &backend,
                    &pool,
                    &error,
                    metrics,
                );
                last = error;
                if head_timed_out || !last.retryable() {
                    break;
                }
            }
        }
    }
    Err(Failed {
        error: last,
        backend: tried,
    })
}

/// A pooled connection when one is open, else a new one within the connect timeout.
async fn checkout(
    backend: &Arc<Backend>,
    tls: &Arc<rustls::ClientConfig>,
    settings: &ExchangeSettings,
) -> Result<(Stream, bool), BackendError> {
    if let Some(stream) = backend.raw_idle.take() {
        return Ok((stream, true));
    }
    // Boxed: a new connection is the rare case, and its (TLS) state would otherwise make
    // every request's future that much larger, and copied as it is made.
    let connect = Box::pin(dial::connect(backend, tls));
    let stream = tokio::time::timeout(settings.pool.connect_timeout, connect)
        .await
        .map_err(|_| BackendError::Timeout)??;
    Ok((stream, false))
}

/// Writes the request and reads the response head (1xx heads skipped) within the response
/// timeout; gives the head, the connection, what was read past the head, and whether the
/// connection may be kept.
async fn send(
    mut stream: Stream,
    request: &[u8],
    head_only: bool,
    settings: &ExchangeSettings,
    reused: bool,
    deadline: &mut LazyDeadline,
) -> Result<(ResponseHead, Stream, BytesMut, bool), AttemptError> {
    let io = |during: &'static str| {
        move |source: std::io::Error| AttemptError::Failed(BackendError::Io { during, source })
    };
    let exchange = async {
        if let Err(e) = write_flushed(&mut stream, request).await {
            return Err(if reused {
                AttemptError::Stale
            } else {
                io("writing the request")(e)
            });
        }
        let max = settings.pool.max_header_bytes.max(1024);
        let mut buf = BytesMut::with_capacity(READ);
        let mut answered = false;
        let mut skip_read = false;
        // Bounded by `max`: each turn reads at least a byte or drops a 1xx head, or ends.
        loop {
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ);
            }
            let read = if std::mem::take(&mut skip_read) {
                Ok(1)
            } else {
                stream.read_buf(&mut buf).await
            };
            match read {
                Ok(0) if reused && !answered => return Err(AttemptError::Stale),
                Ok(0) => {
                    return Err(io("reading the response head")(
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                Ok(_) => answered = true,
                Err(_) if reused && !answered => return Err(AttemptError::Stale),
                Err(e) => return Err(io("reading the response head")(e)),
            }
            match parse(&buf, head_only) {
                Parsed::Partial if buf.len() >= max => {
                    return Err(AttemptError::Failed(BackendError::Invalid(
                        "response head over max_header_bytes".into(),
                    )));
                }
                Parsed::Partial => {}
                Parsed::Informational(len) => {
                    let _ = buf.split_to(len);
                    // What followed it may be the whole answer already.
                    skip_read = !buf.is_empty();
                }
                Parsed::Invalid(why) => {
                    return Err(AttemptError::Failed(BackendError::Invalid(why.into())));
                }
                Parsed::Complete(len, mut head, keep_alive) => {
                    head.bytes = buf.split_to(len).freeze();
                    return Ok((head, buf, keep_alive));
                }
            }
        }
    };
    deadline.set_after(settings.response_timeout);
    let answered = {
        let mut exchange = std::pin::pin!(exchange);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            deadline
                .poll_passed(cx)
                .map(|()| Err(AttemptError::HeadTimeout))
        })
        .await
    };
    deadline.clear();
    let (head, rest, keep_alive) = answered?;
    Ok((head, stream, rest, keep_alive))
}

/// Writes `bytes` whole and flushes them (TLS).
async fn write_flushed(stream: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}
