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
//! [`forward::answer`]: crate::ingress::forward::answer
//! [`request::serve_h1`]: crate::ingress::request::serve_h1

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::backend::balance;
use crate::backend::http::raw::{self, Bodyless, Framing, encode_proxy, field, push_decimal};
use crate::ingress::door::{self, Entry};
use crate::ingress::forward::{AccessLog, ResponseBody, exchange_settings};
use crate::ingress::h1_fast::{
    self, First, MIN_HEADER_BYTES, Then, ToHyper, ToPlain, http_date, rejoin,
};
use crate::ingress::request;
use crate::ingress::upgrade::HandshakeError;
use crate::proto::headers::ProxyHeaders;
use crate::shared::client::ClientInfo;
use crate::shared::deadline::LazyDeadline;
use crate::shared::state::{ProxyState, Settings};
use crate::shared::stream::Stream;

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

/// What the connection's last request's Host came to, for the next one with the same
/// Host (a client sends one Host for the whole connection): the Host checked, and
/// wsgate's forwarding headers for it (while the client hop is the client itself).
#[derive(Default)]
struct HostCache {
    /// The Host value as received; empty while nothing is kept.
    raw: Vec<u8>,
    /// It checked, as `requested_host` gives it.
    host: String,
    /// The forwarding headers' field lines for it; empty until made.
    proxy: Vec<u8>,
}

impl HostCache {
    /// The checked Host of `req`, if it is the one kept (its only Host, and an
    /// origin-form target, as every request here has).
    fn host_of(&mut self, req: &Request<()>) -> Option<String> {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(h), None) if !self.raw.is_empty() && h.as_bytes() == self.raw => {
                Some(self.host.clone())
            }
            // Another Host: checked anew, and kept once its forwarding lines are made.
            _ => {
                self.raw.clear();
                self.proxy.clear();
                self.host.clear();
                None
            }
        }
    }

    /// wsgate's forwarding headers for a request to `host` from `client`, as field lines:
    /// the kept ones when the client hop is the client (no trusted chain), else made
    /// into `fresh`.
    fn proxy_lines<'a>(
        &'a mut self,
        req: &Request<()>,
        host: &str,
        client: &ClientInfo,
        fresh: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        let make = |out: &mut Vec<u8>| {
            let proxy =
                ProxyHeaders::new(client.peer.ip(), &client.forwarding, client.tls, Some(host));
            encode_proxy(&proxy, out);
        };
        let direct =
            client.forwarding.prior.is_none() && client.forwarding.client == client.peer.ip();
        if !direct {
            make(fresh);
            return fresh;
        }
        if self.raw.is_empty()
            && let Some(h) = req.headers().get(header::HOST)
        {
            self.raw.extend_from_slice(h.as_bytes());
            self.host.push_str(host);
        }
        if self.host != host {
            make(fresh);
            return fresh;
        }
        if self.proxy.is_empty() {
            make(&mut self.proxy);
        }
        &self.proxy
    }
}

/// Whether the client asked for the connection to end after this request.
fn wants_close(req: &Request<()>) -> bool {
    crate::proto::headers::has_token(req.headers(), &header::CONNECTION, "close")
}

/// Answers one request: routed, checked, forwarded; `rest` holds what the client sent
/// after its head, and takes what it sends while the answer is on its way (pipelined
/// requests, up to `max` bytes).
#[allow(clippy::too_many_arguments)]
async fn one(
    stream: &mut Stream,
    mut req: Request<()>,
    client: &ClientInfo,
    settings: &Settings,
    state: &Arc<ProxyState>,
    rest: &mut BytesMut,
    max: usize,
    close: bool,
    deadline: &mut LazyDeadline,
    cache: &mut HostCache,
) -> Next {
    let mut client = client.clone();
    request::forwarded_client(req.headers(), &mut client, state);
    let head_only = req.method() == Method::HEAD;
    let stall = settings.http_idle_timeout;
    let routed = match cache.host_of(&req) {
        Some(host) => request::route_for_host(&req, host, state),
        None => request::route(&req, state),
    };
    let (route, host, path) = match routed {
        Ok(routed) => routed,
        Err(e) => {
            let res = request::refuse(None, e, false, state);
            return answer(stream, res, head_only, close, stall).await;
        }
    };
    if !route.config.http {
        let res = request::refuse(Some(&route), HandshakeError::NotWebSocket, false, state);
        return answer(stream, res, head_only, close, stall).await;
    }
    let started = Instant::now();
    let logged_path = match req.uri().query() {
        Some(q) if route.config.log_query => format!("{path}?{q}"),
        _ => String::new(),
    };
    let mut log = AccessLog::new(&route, state, req.method(), logged_path, started);
    let Some(pool) = route.pool() else {
        log.set_path(path);
        let res = log.refuse(StatusCode::UPGRADE_REQUIRED, "route takes only upgrades");
        return answer(stream, res, head_only, close, stall).await;
    };
    // Held until the answer is back: what a check keeps for the request's life.
    let checked = if door::plain_may_wait(&route) {
        door::check(&route, &mut req, &client, state, Entry::Plain).await
    } else {
        door::check_plain_now(&route, &mut req, &client, state)
    };
    let _pass = match checked {
        Ok(pass) => pass,
        Err(refusal) => {
            log.set_path(path);
            let res = log.turned_away(&refusal);
            return answer(stream, res, head_only, close, stall).await;
        }
    };
    let exchange = exchange_settings(&route, settings.limits.max_header_bytes as usize);
    let headers = req.headers();
    let query = req.uri().query();
    let mut fresh = Vec::new();
    let proxy = cache.proxy_lines(&req, &host, &client, &mut fresh);
    let out = Bodyless {
        method: req.method(),
        headers,
        proxy,
        path: &path,
        remainder: route.remainder(&path),
        query,
        host: &host,
        hash_key: balance::hash_key(&pool, headers, query, client.ip()),
        sticky: balance::Sticky::of(&pool, headers),
        secure: client.tls,
    };
    let exchanged = {
        let exchange = std::pin::pin!(raw::exchange(
            &route,
            &out,
            &exchange,
            &state.metrics,
            &state.shutdown,
            deadline,
        ));
        watching(stream, rest, max, exchange).await
    };
    log.set_path(path);
    let answered = match exchanged {
        Some(Ok(a)) => a,
        Some(Err(failed)) => {
            log.backend = failed.backend;
            let res = log.failed(&failed.error);
            return answer(stream, res, head_only, close, stall).await;
        }
        None => {
            log.outcome = Some("client_gone");
            return Next::Close;
        }
    };
    let raw::Answered {
        head,
        mut body,
        backend,
        seat,
        set_cookie,
    } = answered;
    log.backend = Some(backend);
    log._seat = Some(seat);
    log.status = head.status;
    let mut out = Vec::with_capacity(512);
    encode_head(&head, set_cookie.as_ref(), close, &mut out);
    let wrap = matches!(head.framing, Framing::Close | Framing::Chunked);
    // The head goes out with the body's first bytes when they came with it: one write.
    let mut first = true;
    // Bounded by the body: each turn forwards some of it, or ends.
    loop {
        let piece = if first {
            first = false;
            body.buffered_done()
        } else {
            None
        };
        let piece = match piece {
            Some(p) => p,
            None => {
                if !out.is_empty() {
                    if let Err(outcome) = write(stream, &out, stall).await {
                        log.outcome = Some(outcome);
                        return Next::Close;
                    }
                    out.clear();
                }
                match watching(stream, rest, max, std::pin::pin!(body.next_done())).await {
                    Some(p) => p,
                    None => {
                        log.outcome = Some("client_gone");
                        return Next::Close;
                    }
                }
            }
        };
        let (piece, done) = match piece {
            Ok(p) => p,
            Err(e) => {
                let outcome = if e.is_idle() {
                    "timeout"
                } else {
                    "backend_error"
                };
                tracing::info!(route = route.name(), error = %e, "plain response cut");
                log.outcome = Some(outcome);
                let _ = write(stream, &out, stall).await;
                return Next::Close;
            }
        };
        let end = piece.is_empty() || done;
        log.bytes_out += piece.len() as u64;
        if wrap && !piece.is_empty() {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(piece);
        }
        if end {
            if wrap {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            // Logged and counted as the body ends, before its last bytes are written (as
            // on hyper's path): a client that has its answer finds it on the dashboard.
            log.outcome = Some("ok");
            drop(log);
            return match write(stream, &out, stall).await {
                Ok(()) => Next::Keep,
                Err(_) => Next::Close,
            };
        }
        // Written at the top of the next turn, before waiting for more.
    }
}

/// Runs `fut` while reading what the client sends meanwhile into `rest` (up to `max`
/// bytes): `None` when the client closed or failed first (its request is abandoned, as
/// hyper's server drops it then).
async fn watching<F: std::future::Future>(
    stream: &mut Stream,
    rest: &mut BytesMut,
    max: usize,
    mut fut: std::pin::Pin<&mut F>,
) -> Option<F::Output> {
    // Bounded by `max`: each turn reads a byte at least, or ends.
    loop {
        if rest.len() >= max {
            return Some(fut.await);
        }
        if rest.capacity() == rest.len() {
            rest.reserve(2048.min(max - rest.len()));
        }
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            read = stream.read_buf(rest) => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}

/// [`h1_fast::write_within`], with the access log's outcome when it fails.
async fn write(stream: &mut Stream, bytes: &[u8], stall: Duration) -> Result<(), &'static str> {
    h1_fast::write_within(stream, bytes, stall)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => "client_stalled",
            _ => "client_gone",
        })
}

/// Writes wsgate's own answer (a refusal, or why no backend answered) as hyper writes a
/// whole body: the headers, `content-length`, `date`.
async fn answer(
    stream: &mut Stream,
    res: Response<ResponseBody>,
    head_only: bool,
    close: bool,
    stall: Duration,
) -> Next {
    let (parts, body) = res.into_parts();
    // wsgate's own bodies are whole in memory: collecting them does not wait.
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(256 + body.len());
    status_line(parts.status.as_u16(), &mut out);
    let mut dated = false;
    for (name, value) in &parts.headers {
        dated |= name == header::DATE;
        if name == header::CONTENT_LENGTH {
            continue;
        }
        field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    field(
        &mut out,
        b"content-length",
        body.len().to_string().as_bytes(),
    );
    let close = close || parts.headers.contains_key(header::CONNECTION);
    finish_head(&mut out, dated, close);
    if !head_only {
        out.extend_from_slice(&body);
    }
    match write(stream, &out, stall).await {
        Ok(()) if !close => Next::Keep,
        _ => Next::Close,
    }
}

/// The client's head for a backend's answer: status line, the forwarded fields with
/// lowercase names, the sticky cookie, the framing, `date`, `connection: close`.
fn encode_head(
    head: &raw::ResponseHead,
    set_cookie: Option<&HeaderValue>,
    close: bool,
    out: &mut Vec<u8>,
) {
    status_line(head.status, out);
    let mut dated = false;
    head.each(|name, value| {
        dated |= name.eq_ignore_ascii_case(b"date");
        let at = out.len();
        out.extend_from_slice(name);
        out[at..].make_ascii_lowercase();
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    });
    if let Some(cookie) = set_cookie {
        field(out, b"set-cookie", cookie.as_bytes());
    }
    match (head.framing, head.head_length) {
        (_, Some(n)) | (Framing::Length(n), None) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        (Framing::Chunked | Framing::Close, None) => {
            field(out, b"transfer-encoding", b"chunked");
        }
        // hyper's server writes no length on a 204 or 304, nor on a HEAD answer that had
        // none, and 0 on any other empty body.
        (Framing::Empty, None) if head.head_only || matches!(head.status, 204 | 304) => {}
        (Framing::Empty, None) => field(out, b"content-length", b"0"),
    }
    finish_head(out, dated, close);
}

/// `HTTP/1.1 <code> <canonical reason>` as hyper writes it.
fn status_line(status: u16, out: &mut Vec<u8>) {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("<none>");
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `date` (unless one was written), `connection: close` when asked, and the empty line.
fn finish_head(out: &mut Vec<u8>, dated: bool, close: bool) {
    if close {
        field(out, b"connection", b"close");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
