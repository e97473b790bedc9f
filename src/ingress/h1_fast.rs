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
//! [`request::serve_h1`]: crate::ingress::request::serve_h1
//! [`H1Guard`]: crate::ingress::h1_guard::H1Guard

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri, Version};
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ingress::request;
use crate::ingress::upgrade::{Body, Prepared};
use crate::proto::headers::has_token;
use crate::shared::client::ClientInfo;
use crate::shared::state::{ProxyState, Settings};
use crate::shared::stream::Stream;

/// hyper refuses a read buffer under 8 KiB.
pub(crate) const MIN_HEADER_BYTES: usize = 8 * 1024;
/// Header lines parsed; hyper's default limit (more are its 431).
const MAX_HEADERS: usize = 100;
/// First read buffer: an upgrade head is a few hundred bytes.
const FIRST_READ: usize = 2048;
/// Longest request target hyper takes (more is its 414).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

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

/// Reads until a head is whole (then judged by [`take`]), or it is plain it is not a
/// `GET` or `HEAD`, or `max` bytes hold no whole head, or the connection ends; bounded by
/// `timeout` from the start, as hyper's `header_read_timeout` is (from when it waits for
/// a head, so on a keep-alive connection it also bounds the wait for the next request).
/// `buf` holds what was read of the connection already (the start of this head).
pub(crate) async fn read_head(
    stream: &mut Stream,
    buf: BytesMut,
    max: usize,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> First {
    let deadline = tokio::time::sleep(timeout);
    let cancelled = shutdown.cancelled();
    tokio::pin!(deadline, cancelled);
    let stop = |cx: &mut Context<'_>| {
        if deadline.as_mut().poll(cx).is_ready() || cancelled.as_mut().poll(cx).is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    };
    read_head_until(stream, buf, max, stop).await
}

/// [`read_head`] that gives up (`First::Gone`) when `stop`, polled while a read waits,
/// is ready: the caller's deadline and shutdown.
pub(crate) async fn read_head_until(
    stream: &mut Stream,
    mut buf: BytesMut,
    max: usize,
    mut stop: impl FnMut(&mut Context<'_>) -> Poll<()>,
) -> First {
    // A pipelined head already read whole needs no read.
    if !buf.is_empty() {
        match judge(buf, 0, max) {
            Ok(first) => return first,
            Err(b) => buf = b,
        }
    }
    if buf.capacity() == 0 {
        buf.reserve(FIRST_READ.min(max));
    }
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().min(max - buf.len()).max(1));
        }
        let before = buf.len();
        let read = std::future::poll_fn(|cx| {
            let mut room = (&mut buf).limit(max - before);
            if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut *stream), cx, &mut room) {
                return Poll::Ready(Some(r));
            }
            stop(cx).map(|()| None)
        })
        .await;
        match read {
            None => return First::Gone,
            Some(Ok(0)) if buf.is_empty() => return First::Gone,
            Some(Ok(0)) => return First::Hyper(buf),
            Some(Ok(_)) => {}
            Some(Err(_)) => return First::Gone,
        }
        match judge(buf, before, max) {
            Ok(first) => return first,
            Err(b) => buf = b,
        }
    }
}

/// What `buf` comes to so far, its bytes from `new` on just read: a whole head judged,
/// bytes for hyper, or (`Err`) not enough yet.
fn judge(buf: BytesMut, new: usize, max: usize) -> Result<First, BytesMut> {
    if !may_be_get(&buf) {
        return Ok(First::Hyper(buf));
    }
    // A head only completes on a line feed: without one a parse finds the same partial
    // head, so a client trickling bytes costs no quadratic parsing.
    if memchr::memchr(b'\n', &buf[new..]).is_some() {
        match parse(&buf) {
            Parsed::Complete(lines) => return Ok(take(buf, &lines)),
            Parsed::Other => return Ok(First::Hyper(buf)),
            Parsed::Partial => {}
        }
    }
    if buf.len() >= max {
        return Ok(First::Hyper(buf));
    }
    Err(buf)
}

/// Whether `buf` (the start of a request) may still be a `GET` or `HEAD` request line;
/// empty lines before it are skipped, as `httparse` does.
fn may_be_get(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let n = line.len().min(5);
    line[..n.min(4)] == b"GET "[..n.min(4)] || line[..n] == b"HEAD "[..n]
}

/// Where the parts of a whole head are in the buffer.
struct Lines {
    len: usize,
    head_only: bool,
    path: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

enum Parsed {
    Complete(Lines),
    Partial,
    /// Not a head served here (or not one at all): hyper's to judge.
    Other,
}

/// Parses the head the way hyper does (`httparse`, default settings, at most 100 lines)
/// and keeps only what is served here: `GET` or `HEAD`, HTTP/1.1, an origin-form target.
fn parse(buf: &[u8]) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method @ ("GET" | "HEAD")), Some(1), Some(path)) =
        (req.method, req.version, req.path)
    else {
        return Parsed::Other;
    };
    if !path.starts_with('/') || path.len() > MAX_URI_LEN {
        return Parsed::Other;
    }
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        // A framing or expectation header goes to hyper, which reads bodies and answers
        // expectations; the scan below refuses what it must.
        let framing = ["content-length", "transfer-encoding", "expect"]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n));
        if framing || h.name.len() >= 1 << 16 {
            return Parsed::Other;
        }
        headers.push((at(h.name.as_bytes()), at(h.value)));
    }
    Parsed::Complete(Lines {
        len,
        head_only: method == "HEAD",
        path: at(path.as_bytes()),
        headers,
    })
}

/// The request of a whole head parsed by [`parse`], if it is a WebSocket upgrade (a
/// `GET`) or a plain request without `Upgrade` the guard's scan lets through; else
/// everything goes to hyper.
///
/// The guard's scan ([`Scanner`]) is not run again here: on a head `httparse` read whole,
/// without `Content-Length` or `Transfer-Encoding`, the only refusal it can still find is a
/// line ended by a bare LF (every other one is a head `httparse` refuses itself), and that
/// is looked for in one pass (a test holds the two to agreeing).
///
/// [`Scanner`]: crate::proto::h1_scan::Scanner
fn take(mut buf: BytesMut, lines: &Lines) -> First {
    if has_bare_lf(&buf[..lines.len]) {
        return First::Hyper(buf);
    }
    let head = buf.split_to(lines.len).freeze();
    match request_of(&head, lines) {
        Some(req) if !req.headers().contains_key(header::UPGRADE) => First::Plain(req, head, buf),
        Some(req)
            if !lines.head_only && has_token(req.headers(), &header::UPGRADE, "websocket") =>
        {
            First::Upgrade(req, head, buf)
        }
        _ => First::Hyper(rejoin(&head, &buf)),
    }
}

/// The head taken out of the read buffer and what followed it, as one buffer again, for
/// hyper to read as the connection's first bytes.
pub(crate) fn rejoin(head: &[u8], rest: &[u8]) -> BytesMut {
    let mut all = BytesMut::with_capacity(head.len() + rest.len());
    all.extend_from_slice(head);
    all.extend_from_slice(rest);
    all
}

/// Whether a line of `head` ends in a LF without a CR before it (only the LFs are
/// looked at: a few per head, found a word at a time).
fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

/// The request hyper would build from the head (header values share its bytes).
fn request_of(head: &Bytes, lines: &Lines) -> Option<Request<()>> {
    let mut headers = HeaderMap::with_capacity(lines.headers.len());
    for (name, value) in &lines.headers {
        let name = HeaderName::from_bytes(&head[name.clone()]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(value.clone())).ok()?;
        headers.append(name, value);
    }
    let uri = Uri::from_maybe_shared(head.slice(lines.path.clone())).ok()?;
    let mut req = Request::new(());
    *req.method_mut() = if lines.head_only {
        Method::HEAD
    } else {
        Method::GET
    };
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
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

/// Writes the 101 as hyper encodes it (status line, the headers in order, its `date`
/// unless one is there), within `stall_after` (0: no limit) as the guard bounds hyper's
/// writes.
async fn write_switch(
    stream: &mut Stream,
    res: &Response<Body>,
    stall_after: Duration,
) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(256);
    encode_switch(res.headers(), &mut out);
    write_within(stream, &out, stall_after).await
}

/// Writes `bytes` whole and flushes them within `stall` (zero: no limit), as the guard
/// bounds hyper's writes (`TimedOut` past it); the timer is made only when the client
/// does not take them at once.
pub(crate) async fn write_within(
    stream: &mut Stream,
    bytes: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    tokio::pin!(write);
    match crate::backend::http::raw::poll_once(write.as_mut()).await {
        Poll::Ready(r) => r,
        Poll::Pending if stall.is_zero() => write.await,
        Poll::Pending => tokio::time::timeout(stall, write)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "client stopped reading the response",
                ))
            }),
    }
}

/// A 101's head with `headers`, byte for byte as hyper writes it (lowercase names, one
/// line per value: a 101's headers hold none of the ones hyper folds or drops, which
/// `forwardable` removed from the backend's and wsgate sets once).
fn encode_switch(headers: &HeaderMap, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    let mut dated = false;
    for (name, value) in headers {
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The `date` value of the current second, as hyper caches its own.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the IMF-fixdate of now (RFC 9110 §5.6.7), formatted once per second.
pub(crate) fn http_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *at = secs;
            } else {
                // Only a year past 9999 is longer: written, never cached.
                out.extend_from_slice(formatted.as_bytes());
                return;
            }
        }
        out.extend_from_slice(text);
    });
}

#[cfg(test)]
mod tests;
