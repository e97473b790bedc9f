//! Plain HTTP requests to a route's backends: the same balancing, health, ejection and
//! seats as upgrades, over a keep-alive pool per backend.
//!
//! The pool is wsgate's own, small, over hyper's `client::conn::http1` rather than
//! hyper-util's legacy `Client`: that `Client` takes the request by value and does not give
//! it back when its connect fails, so the next backend could not be tried with the
//! client's body intact (it is streamed, never buffered). With `SendRequest` a connect
//! failure leaves the request in our hands, and `try_send_request` returns it when a
//! pooled connection turned out closed before anything was written.
//!
//! Retries: another connection or backend is tried when nothing was sent (connect failed,
//! or a pooled connection was found closed first); after something may have been sent,
//! only for an idempotent method whose request had no body (it is rebuilt from its head).

pub mod body;
pub(crate) mod pool;
pub(crate) mod raw;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backend::balance;
use crate::backend::error::BackendError;
use crate::proto::headers::has_token;
use crate::shared::idle_conns::ForwardBody;
use crate::shared::metrics::Metrics;
use crate::shared::occupancy::Seat;
use crate::shared::pool::Backend;
use crate::shared::routes::Route;
use body::{BackendBody, Reusable, UploadBody};
pub(crate) use pool::PoolSettings;

/// A plain request for the backends: everything but the target and Host, which depend on
/// the backend chosen.
pub(crate) struct Outgoing<'a> {
    /// The client's method.
    pub(crate) method: Method,
    /// Headers to send (already cleaned of hop-by-hop ones, wsgate's forwarding headers
    /// added), without Host: moved into the first attempt's request.
    pub(crate) headers: HeaderMap,
    /// Makes `headers` again, for an attempt after one that hyper consumed (a replay):
    /// rebuilding only then spares a copy of the headers on every request.
    pub(crate) rebuild: &'a (dyn Fn() -> HeaderMap + Sync),
    /// The normalised path, the part after the route's prefix, and the query.
    pub(crate) path: &'a str,
    /// See `path`.
    pub(crate) remainder: &'a str,
    /// See `path`.
    pub(crate) query: Option<&'a str>,
    /// The client's Host, sent instead of the backend's with `preserve_host`.
    pub(crate) host: Option<&'a str>,
    /// The balancer's hash key for this request.
    pub(crate) hash_key: Option<u64>,
    /// The request's sticky cookie, if the route has one.
    pub(crate) sticky: balance::Sticky,
    /// The client hop is TLS (the sticky cookie is then `Secure`).
    pub(crate) secure: bool,
}

/// The backend's answer, its label and the request's seat on it (held until the response
/// body ends, so least-connections and drains see requests in flight).
pub(crate) struct Exchanged {
    /// The response, its body streaming from the backend.
    pub(crate) response: Response<BackendBody>,
    /// The backend that answered (its URL labels the logs).
    pub(crate) backend: Arc<Backend>,
    /// The request's place on the backend.
    pub(crate) seat: Seat,
    /// The route's sticky cookie for the client, when it is not pinned to this backend yet.
    pub(crate) set_cookie: Option<HeaderValue>,
}

/// A request no backend answered: why, and the last backend tried (its URL, for logs;
/// `None` when there was none to try).
#[derive(Debug)]
pub(crate) struct Failed {
    /// Why the last attempt failed.
    pub(crate) error: BackendError,
    /// The last backend tried.
    pub(crate) backend: Option<Arc<crate::shared::pool::Backend>>,
}

/// Timeouts and pool settings of one exchange (the route's tuning and the limits).
pub(crate) struct ExchangeSettings {
    /// How connections are made and kept.
    pub(crate) pool: PoolSettings,
    /// Response head deadline, from the end of the request body.
    pub(crate) response_timeout: Duration,
    /// Idle-body timeout: of the response body, and of a backend that stops taking the
    /// request body.
    pub(crate) idle_timeout: Duration,
}

/// Sends the request to a backend of the route and returns its response head, trying the
/// next candidate where that is safe (see the module doc).
pub(crate) async fn exchange(
    route: &Arc<Route>,
    mut out: Outgoing<'_>,
    body: ForwardBody,
    settings: &ExchangeSettings,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<Exchanged, Failed> {
    let mut tried = None;
    let fail = |error, backend| Failed { error, backend };
    let pool = route
        .pool()
        .ok_or_else(|| fail(BackendError::NoHealthyBackend, None))?;
    let tls = route.backend_tls();
    let replayable = is_idempotent(&out.method) && body.is_end_stream();
    let (body, mut uploaded) = UploadBody::new(body);
    let mut body = Some(body.boxed_unsync());
    let mut last = BackendError::NoHealthyBackend;
    let mut headers = Some(std::mem::take(&mut out.headers));
    for backend in balance::candidates(&pool, out.hash_key, &out.sticky) {
        let seat = backend.occupy();
        let Some(b) = body.take() else { break };
        tried = Some(backend.clone());
        let h = headers.take().unwrap_or_else(out.rebuild);
        let mut req = request(&out, h, &backend, route.config.preserve_host, b);
        // Pooled connections found closed, then one new connection (bounded by the list).
        let attempt = loop {
            let (mut conn, reused) =
                match pool::checkout(&backend, &tls, &settings.pool, shutdown).await {
                    Ok(c) => c,
                    Err(e) => break Err((e, Some(req))),
                };
            let sent = conn.sender.try_send_request(req);
            tokio::pin!(sent);
            let res = tokio::select! {
                // The answer first: a deadline is only worth checking while there is none.
                biased;
                res = &mut sent => res,
                _ = response_deadline(&mut uploaded, settings) => {
                    break Err((BackendError::Timeout, None));
                }
            };
            match res {
                Ok(res) => break Ok((res, conn)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    unsent => break Err((BackendError::Exchange(e.into_error()), unsent)),
                },
            }
        };
        let (error, unsent) = match attempt {
            Ok((res, conn)) => {
                backend.connect_ok();
                let keep = !has_token(res.headers(), &header::CONNECTION, "close");
                let reusable = keep.then(|| Reusable {
                    conn,
                    backend: backend.clone(),
                    idle_max: settings.pool.idle_max,
                    shutdown: shutdown.clone(),
                });
                let response = res.map(|b| BackendBody::new(b, settings.idle_timeout, reusable));
                return Ok(Exchanged {
                    response,
                    set_cookie: out.sticky.set_cookie(&pool, &backend, out.secure),
                    backend,
                    seat,
                });
            }
            Err(e) => e,
        };
        if matches!(&error, BackendError::Exchange(e) if e.is_user()) {
            // The client's body failed (it went away or went quiet): not the backend's fault.
            return Err(fail(error, tried));
        }
        crate::backend::error::attempt_failed(route.name(), &backend, &pool, &error, metrics);
        let timed_out = matches!(error, BackendError::Timeout) && unsent.is_none();
        body = match unsent {
            Some(req) => {
                let (parts, body) = req.into_parts();
                headers = Some(parts.headers);
                Some(body)
            }
            None if replayable && !timed_out => Some(empty()),
            None => None,
        };
        last = error;
        if body.is_none() || !last.retryable() {
            break;
        }
    }
    Err(fail(last, tried))
}

/// Resolves when the backend is too slow: it stopped taking the request body for
/// `idle_timeout` (hyper, blocked writing to it, takes no frame), or gave no response head
/// within `response_timeout` of the body's end. A client slow to send is not the
/// backend's fault: its own idle timeout (`IdleBody`) fails the body instead.
async fn response_deadline(
    uploaded: &mut Option<watch::Receiver<bool>>,
    settings: &ExchangeSettings,
) {
    // An empty body was sent whole at once.
    if let Some(uploaded) = uploaded
        && !sent_whole(uploaded, settings).await
    {
        return;
    }
    tokio::time::sleep(settings.response_timeout).await;
}

/// Whether the request body was sent whole (true: its sender was dropped) rather than the
/// backend stopping taking it for `idle_timeout` (false).
async fn sent_whole(uploaded: &mut watch::Receiver<bool>, settings: &ExchangeSettings) -> bool {
    // Bounded by the body: each turn is a frame taken, or an idle period of a client whose
    // body then fails, until the sender is dropped.
    loop {
        let taken = uploaded.changed();
        if settings.idle_timeout.is_zero() {
            if taken.await.is_err() {
                return true;
            }
            continue;
        }
        match tokio::time::timeout(settings.idle_timeout, taken).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return true,
            Err(_) if *uploaded.borrow() => {}
            Err(_) => return false,
        }
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

fn empty() -> ForwardBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn request(
    out: &Outgoing<'_>,
    mut headers: HeaderMap,
    backend: &Backend,
    preserve_host: bool,
    body: ForwardBody,
) -> Request<ForwardBody> {
    let target = backend
        .url
        .request_target(out.remainder, out.path, out.query);
    let mut req = Request::new(body);
    *req.method_mut() = out.method.clone();
    // The target is a normalised path plus the client's query, both already valid in a URI.
    *req.uri_mut() = Uri::try_from(target).unwrap_or_else(|_| Uri::from_static("/"));
    let host = match out.host {
        Some(h) if preserve_host => HeaderValue::from_str(h).ok(),
        _ => backend.http_host.clone(),
    };
    match host {
        Some(v) => {
            headers.insert(header::HOST, v);
        }
        // Headers given back by an attempt on another backend carry that one's Host.
        None => {
            headers.remove(header::HOST);
        }
    }
    *req.headers_mut() = headers;
    req
}
