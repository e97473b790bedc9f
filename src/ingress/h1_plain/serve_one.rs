//! One bodyless request answered: routed, checked at the door, sent to a backend over a
//! pooled connection, and its answer forwarded while the client's next bytes are read.

use std::sync::Arc;

use bytes::BytesMut;
use hyper::{Method, Request, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::backend::balance;
use crate::backend::http::raw::{self, Bodyless, Framing};
use crate::ingress::door::{self, Entry};
use crate::ingress::forward::{AccessLog, exchange_settings};
use crate::ingress::request;
use crate::ingress::upgrade::HandshakeError;
use crate::shared::client::ClientInfo;
use crate::shared::deadline::LazyDeadline;
use crate::shared::state::{ProxyState, Settings};
use crate::shared::stream::Stream;

use crate::ingress::h1_plain::Next;
use crate::ingress::h1_plain::host_cache::HostCache;
use crate::ingress::h1_plain::respond::{answer, encode_head, write};

/// Answers one request: routed, checked, forwarded; `rest` holds what the client sent
/// after its head, and takes what it sends while the answer is on its way (pipelined
/// requests, up to `max` bytes).
#[allow(clippy::too_many_arguments)]
pub(super) async fn one(
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
