//! Plain HTTP on a route: the client's request, cleaned of its hop-by-hop headers and
//! given wsgate's forwarding headers, goes to a backend of the route's pool; the response
//! comes back the same way. Bodies stream both ways (never buffered whole), each with the
//! idle-body timeout; one access-log line and the metrics are written when the response
//! body ends or the client goes away.
//!
//! Works on any `Request<Incoming>`: hyper's server has framed the request and refused the
//! smuggling shapes it sees, whatever the HTTP version (on HTTP/1.1, with the ones it
//! would normalise refused beneath it by [`H1Guard`](crate::ingress::h1_guard::H1Guard)).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::time::Instant;

use crate::backend::balance;
use crate::backend::error::BackendError;
use crate::backend::http::body::{IdleBody, is_idle_timeout};
use crate::backend::http::{self, ExchangeSettings, Outgoing, PoolSettings};
use crate::ingress::connect::join_cookies;
use crate::ingress::door::{self, Entry, Refusal};
use crate::ingress::h1_guard::Inspection;
use crate::proto::headers::{ProxyHeaders, forwardable, strip_unforwardable};
use crate::shared::client::ClientInfo;
use crate::shared::idle_conns::BoxError;
use crate::shared::occupancy::Seat;
use crate::shared::pool::Backend;
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// The body of every response on the client hop: a backend's, streamed, or wsgate's own.
pub type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// A whole body of wsgate's own as a [`ResponseBody`].
pub fn full(body: Full<Bytes>) -> ResponseBody {
    body.map_err(|never| match never {}).boxed_unsync()
}

/// Forwards one plain request of `route` (`host` and `path` as routed) and answers it;
/// `inspection` is its HTTP/1.1 connection's, if it has one.
pub(crate) async fn answer(
    mut req: Request<Incoming>,
    client: ClientInfo,
    route: Arc<Route>,
    host: String,
    path: String,
    state: Arc<ProxyState>,
    inspection: Option<Arc<Inspection>>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    // The logged path, moved (not copied) unless the query goes with it.
    let logged_path = match req.uri().query() {
        Some(q) if route.config.log_query => format!("{path}?{q}"),
        _ => String::new(),
    };
    let mut log = AccessLog::new(&route, &state, req.method(), logged_path, started);
    log.inspection = inspection;
    // Any expectation but 100-continue (which hyper's server answers when the body is
    // first read) cannot be met (RFC 9110 §10.1.1); Expect itself never travels on.
    let expect_ok = req.headers().get_all(header::EXPECT).iter().all(|v| {
        v.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
    });
    if !expect_ok {
        log.set_path(path);
        return log.refuse(StatusCode::EXPECTATION_FAILED, "expectation not supported");
    }
    let Some(pool) = route.pool() else {
        log.set_path(path);
        return log.refuse(StatusCode::UPGRADE_REQUIRED, "route takes only upgrades");
    };
    // Held until the answer is back: what a check keeps for the request's life.
    let _pass = match door::check(&route, &mut req, &client, &state, Entry::Plain).await {
        Ok(pass) => pass,
        Err(refusal) => return log.turned_away(&refusal),
    };
    let tuning = &route.tuning;
    let max_header_bytes = state.settings.load().limits.max_header_bytes as usize;
    let settings = exchange_settings(&route, max_header_bytes);
    let (parts, body) = req.into_parts();
    let query = parts.uri.query();
    let backend_headers = || {
        let mut headers = forwardable(&parts.headers);
        if parts.version == Version::HTTP_2 {
            join_cookies(&mut headers);
        }
        ProxyHeaders::new(
            client.peer.ip(),
            &client.forwarding,
            client.tls,
            Some(&host),
        )
        .insert_into(&mut headers);
        headers
    };
    let body = Counted {
        inner: IdleBody::new(body, tuning.http_idle_timeout),
        count: log.bytes_in.clone(),
    }
    .boxed_unsync();
    let exchanged = {
        let out = Outgoing {
            method: parts.method.clone(),
            headers: backend_headers(),
            rebuild: &backend_headers,
            path: &path,
            remainder: route.remainder(&path),
            query,
            host: Some(&host),
            hash_key: balance::hash_key(&pool, &parts.headers, query, client.ip()),
            sticky: balance::Sticky::of(&pool, &parts.headers),
            secure: client.tls,
        };
        http::exchange(
            &route,
            out,
            body,
            &settings,
            &state.metrics,
            &state.shutdown,
        )
        .await
    };
    log.set_path(path);
    let ex = match exchanged {
        Ok(ex) => ex,
        Err(http::Failed { error: e, backend }) => {
            log.backend = backend;
            return log.failed(&e);
        }
    };
    log.backend = Some(ex.backend);
    log._seat = Some(ex.seat);
    let (mut res_parts, res_body) = ex.response.into_parts();
    log.status = res_parts.status.as_u16();
    if res_body.is_end_stream() {
        // Over before it started (HEAD, 204, 304, length 0): hyper may never read it.
        log.outcome = Some("ok");
    }
    // A HEAD's Content-Length describes the representation, not this (empty) body (RFC 9110
    // §9.3.2); elsewhere hyper frames the body from its length, or chunked. (hyper's server
    // writes no Content-Length on a 204 or 304 whatever is given.)
    let head_length = res_parts
        .headers
        .get(header::CONTENT_LENGTH)
        .filter(|_| parts.method == Method::HEAD)
        .cloned();
    let h = &mut res_parts.headers;
    strip_unforwardable(h);
    if let Some(cookie) = ex.set_cookie {
        h.append(header::SET_COOKIE, cookie);
    }
    if let Some(len) = head_length {
        h.insert(header::CONTENT_LENGTH, len);
    }
    let mut res = Response::new(
        Logged {
            inner: res_body,
            log,
        }
        .boxed_unsync(),
    );
    *res.status_mut() = res_parts.status;
    *res.headers_mut() = res_parts.headers;
    res
}

/// Timeouts and pool settings of a route's plain requests.
pub(crate) fn exchange_settings(route: &Route, max_header_bytes: usize) -> ExchangeSettings {
    let tuning = &route.tuning;
    ExchangeSettings {
        pool: PoolSettings {
            connect_timeout: tuning.http_connect_timeout,
            idle_max: tuning.http_pool_idle_max as usize,
            idle_timeout: tuning.http_pool_idle_timeout,
            max_header_bytes,
        },
        response_timeout: tuning.http_response_timeout,
        idle_timeout: tuning.http_idle_timeout,
    }
}

/// What the access-log line says; written when dropped (response body ended, cut, or the
/// client gone).
pub(crate) struct AccessLog {
    route: Arc<Route>,
    state: Arc<ProxyState>,
    method: Method,
    path: String,
    /// The answer's status.
    pub(crate) status: u16,
    /// The backend that answered, once one did.
    pub(crate) backend: Option<Arc<Backend>>,
    started: Instant,
    bytes_in: Arc<AtomicU64>,
    /// Body bytes sent to the client.
    pub(crate) bytes_out: u64,
    /// How the request ended, once known (else `client_gone` or `client_stalled`).
    pub(crate) outcome: Option<&'static str>,
    /// The client connection's, when HTTP/1.1: whether the client stalled.
    inspection: Option<Arc<Inspection>>,
    /// The request's seat on its backend, held to the end of the response.
    pub(crate) _seat: Option<Seat>,
}

impl AccessLog {
    /// The line of a request of `route` begun at `started`; `path` as logged (empty: set
    /// later by [`AccessLog::set_path`]).
    pub(crate) fn new(
        route: &Arc<Route>,
        state: &Arc<ProxyState>,
        method: &Method,
        path: String,
        started: Instant,
    ) -> AccessLog {
        AccessLog {
            route: route.clone(),
            state: state.clone(),
            method: method.clone(),
            path,
            status: 0,
            backend: None,
            started,
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: 0,
            outcome: None,
            inspection: None,
            _seat: None,
        }
    }

    /// wsgate's answer when no backend answered: the status and outcome `e` calls for.
    pub(crate) fn failed(mut self, e: &BackendError) -> Response<ResponseBody> {
        // The client's own body failing (it went quiet or away) is the client's side.
        let (status, outcome) = match e {
            BackendError::Exchange(h) if is_idle_timeout(h) => {
                (StatusCode::REQUEST_TIMEOUT, "timeout")
            }
            BackendError::Exchange(h) if h.is_user() => (StatusCode::BAD_REQUEST, "client_gone"),
            BackendError::Timeout => (e.status(), "timeout"),
            _ => (e.status(), "backend_error"),
        };
        self.outcome = Some(outcome);
        tracing::debug!(route = self.route.name(), error = %e, "plain request failed");
        self.refuse(status, &e.to_string())
    }

    /// Logs `path` unless the path with its query is logged already.
    pub(crate) fn set_path(&mut self, path: String) {
        if self.path.is_empty() {
            self.path = path;
        }
    }

    /// The door's refusal (logged with its reason as the line is written).
    pub(crate) fn turned_away(mut self, refusal: &Refusal) -> Response<ResponseBody> {
        self.status = refusal.status.as_u16();
        self.outcome = Some("refused");
        let route = self.route.name();
        tracing::info!(
            status = self.status,
            route,
            reason = refusal.reason,
            "request refused"
        );
        refusal.response().map(full)
    }

    /// wsgate's own answer (the log line written as this returns).
    pub(crate) fn refuse(mut self, status: StatusCode, why: &str) -> Response<ResponseBody> {
        self.status = status.as_u16();
        self.outcome.get_or_insert("refused");
        let mut res = Response::new(full(Full::new(Bytes::from(format!("{why}\n")))));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::UPGRADE_REQUIRED {
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        res
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        let stalled = self.inspection.as_ref().is_some_and(|i| i.client_stalled());
        let outcome = match self.outcome {
            Some(o) => o,
            None if stalled => "client_stalled",
            None => "client_gone",
        };
        // String fields (not Display), so every log format escapes the client's path.
        tracing::info!(
            target: "wsgate::http",
            route = self.route.name(),
            method = self.method.as_str(),
            path = self.path.as_str(),
            status = self.status,
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out,
            duration_ms = took.as_millis() as u64,
            backend = self.backend.as_ref().map_or("", |b| b.name.as_str()),
            outcome,
            "http request"
        );
        self.state.metrics.http_request_on(
            &self.route.http_metrics,
            self.route.name(),
            self.status,
            took,
        );
    }
}

/// A request body counting its bytes into `count`.
struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts its bytes and settles the request's outcome for the log.
struct Logged<B> {
    inner: B,
    log: AccessLog,
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for Logged<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.log.bytes_out += data.len() as u64;
                }
                // A length-framed body is over with its last byte; hyper need not ask again.
                if self.inner.is_end_stream() {
                    self.log.outcome.get_or_insert("ok");
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let outcome = if is_idle_timeout(e.as_ref()) {
                    "timeout"
                } else {
                    "backend_error"
                };
                tracing::info!(route = self.log.route.name(), error = %e, "plain response cut");
                self.log.outcome = Some(outcome);
            }
            Poll::Ready(None) => {
                self.log.outcome.get_or_insert("ok");
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
