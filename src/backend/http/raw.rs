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

use std::future::Future;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::Method;
use hyper::header::{HeaderMap, HeaderValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::backend::balance;
use crate::backend::dial;
use crate::backend::error::BackendError;
use crate::backend::http::{ExchangeSettings, Failed};
use crate::proto::h1_scan::ChunkedBody;
use crate::proto::headers::{ProxyHeaders, each_forwardable, forwarded_field};
use crate::shared::deadline::LazyDeadline;
use crate::shared::metrics::Metrics;
use crate::shared::occupancy::Seat;
use crate::shared::pool::Backend;
use crate::shared::routes::Route;
use crate::shared::stream::Stream;

/// Header lines of a response head parsed; hyper's client limit.
const MAX_HEADERS: usize = 100;
/// What is read at a time from the backend.
const READ: usize = 8 * 1024;

/// A bodyless request for the route's backends.
pub(crate) struct Bodyless<'a> {
    /// `GET` or `HEAD`.
    pub(crate) method: &'a Method,
    /// The client's headers: what [`each_forwardable`] passes is sent, then `proxy`.
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

/// How a response body is framed, on the backend hop and so on the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// None (`HEAD`, 204, 304, or a length of 0).
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked: its data goes on chunked anew (extensions and trailers left out, as
    /// hyper's server writes them).
    Chunked,
    /// Until the backend closes: the client gets it chunked.
    Close,
}

/// A response head as the backend sent it; its fields are the ones forwarded (hop-by-hop
/// and framing fields left out, the client hop's framing is written anew).
pub(crate) struct ResponseHead {
    /// Status code.
    pub(crate) status: u16,
    /// The backend's `Content-Length` on a `HEAD` answer: the representation's, sent on.
    pub(crate) head_length: Option<u64>,
    /// It answers a `HEAD` (no body, and no implied length of 0).
    pub(crate) head_only: bool,
    /// The body's framing.
    pub(crate) framing: Framing,
    bytes: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl ResponseHead {
    /// Calls `each(name, value)` for every forwarded field, in order (names as sent).
    pub(crate) fn each(&self, mut each: impl FnMut(&[u8], &[u8])) {
        for (n, v) in &self.fields {
            each(&self.bytes[n.clone()], &self.bytes[v.clone()]);
        }
    }
}

/// Why a response body could not be forwarded whole.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The backend sent nothing for the idle-body timeout.
    #[error("backend response body idle past http_idle_timeout")]
    Idle,
    /// The connection failed or closed before the body's end.
    #[error("backend response body cut: {0}")]
    Io(#[from] std::io::Error),
    /// A chunked body broke its syntax.
    #[error("backend sent a malformed chunked body")]
    Chunked,
}

impl BodyError {
    /// Whether the backend went quiet (the access log's `timeout`).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self, BodyError::Idle)
    }
}

/// A response body on its way from the backend, read into a buffer whose front is what
/// is to be forwarded next. The connection goes back to the pool when the body ends on a
/// keep-alive connection with nothing after it.
pub(crate) struct RawBody {
    stream: Option<Stream>,
    buf: BytesMut,
    framing: Framing,
    /// Length framing: bytes still to come. Chunked: its follower.
    left: u64,
    chunked: ChunkedBody,
    /// Bytes at `buf`'s front handed out last, dropped before the next piece.
    ready: usize,
    /// Of those, the first `piece` are the body's data (chunked: the chunks' data moved
    /// to the front, their lines and trailers left out).
    piece: usize,
    keep_alive: bool,
    done: bool,
    idle_timeout: Duration,
    give_back: GiveBack,
}

/// Where a connection goes when its body ended cleanly.
struct GiveBack {
    backend: Arc<Backend>,
    idle_max: usize,
    idle_timeout: Duration,
    shutdown: CancellationToken,
}

impl RawBody {
    /// The body bytes already read, if any (empty: the body is over), without waiting,
    /// and whether the body ended with them; as [`RawBody::next_done`] otherwise.
    pub(crate) fn buffered_done(&mut self) -> Option<Result<(&[u8], bool), BodyError>> {
        self.advance();
        match self.ready_now() {
            Ok(Some(())) => Some(Ok((&self.buf[..self.piece], self.done))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Waits until more of the body is buffered and returns it (empty: the body is over)
    /// and whether the body ended with it, to be forwarded before the next call, which
    /// drops it from the buffer.
    pub(crate) async fn next_done(&mut self) -> Result<(&[u8], bool), BodyError> {
        self.next().await?;
        Ok((&self.buf[..self.piece], self.done))
    }

    async fn next(&mut self) -> Result<(), BodyError> {
        self.advance();
        // Bounded: each turn reads at least a byte, or ends.
        loop {
            if self.ready_now()?.is_some() {
                return Ok(());
            }
            let Some(stream) = self.stream.as_mut() else {
                return Err(BodyError::Io(std::io::ErrorKind::NotConnected.into()));
            };
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ);
            }
            let read = read_within(stream, &mut self.buf, self.idle_timeout).await;
            match read {
                Some(Ok(0)) if self.framing == Framing::Close => {
                    self.done = true;
                    self.keep_alive = false;
                }
                Some(Ok(0)) => {
                    self.stream = None;
                    return Err(BodyError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    self.stream = None;
                    return Err(BodyError::Io(e));
                }
                None => {
                    self.stream = None;
                    return Err(BodyError::Idle);
                }
            }
        }
    }

    /// Drops the bytes handed out last from the buffer.
    fn advance(&mut self) {
        self.piece = 0;
        let n = std::mem::take(&mut self.ready);
        if n == self.buf.len() {
            self.buf.clear();
        } else {
            let _ = self.buf.split_to(n);
        }
    }

    /// Whether a piece of the body (empty once it is over) is at the buffer's front now
    /// (`ready` and `piece` say how much); `None` when more must be read.
    fn ready_now(&mut self) -> Result<Option<()>, BodyError> {
        if self.done {
            self.finish();
            return Ok(Some(()));
        }
        if self.buf.is_empty() && self.framing != Framing::Empty {
            return Ok(None);
        }
        let (consumed, piece) = self.take_buffered()?;
        if piece == 0 && !self.done {
            // Only chunk lines: dropped, and more is read.
            let _ = self.buf.split_to(consumed);
            return Ok(None);
        }
        (self.ready, self.piece) = (consumed, piece);
        if self.done {
            self.finish();
        }
        Ok(Some(()))
    }

    /// How much of the buffer's front is followed and how much of that is data, per the
    /// framing (and whether the body ended); chunk data is moved to the front.
    fn take_buffered(&mut self) -> Result<(usize, usize), BodyError> {
        let have = self.buf.len();
        match self.framing {
            Framing::Empty => {
                self.done = true;
                Ok((0, 0))
            }
            Framing::Close => Ok((have, have)),
            Framing::Length(_) => {
                let n = usize::try_from(self.left).map_or(have, |left| left.min(have));
                self.left -= n as u64;
                self.done = self.left == 0;
                Ok((n, n))
            }
            Framing::Chunked => {
                let (mut at, mut data) = (0, 0);
                // Bounded by the buffer: each step follows at least a byte.
                while at < have {
                    let (n, d, ended) = match self.chunked.step(&self.buf[at..]) {
                        Ok(step) => step,
                        Err(_) => {
                            self.stream = None;
                            return Err(BodyError::Chunked);
                        }
                    };
                    if d > 0 {
                        self.buf.copy_within(at..at + d, data);
                        data += d;
                    }
                    at += n;
                    if ended {
                        self.done = true;
                        break;
                    }
                }
                Ok((at, data))
            }
        }
    }

    /// The body ended: the connection goes back to the pool if nothing follows it.
    fn finish(&mut self) {
        let clean = self.buf.len() == self.ready;
        if self.stream.is_none() {
            return;
        }
        if let Some(stream) = self.stream.take()
            && self.keep_alive
            && clean
        {
            let g = &self.give_back;
            g.backend
                .raw_idle
                .put(stream, g.idle_max, g.idle_timeout, &g.shutdown);
        }
    }
}

/// One read into `buf`, given up after `timeout` (zero: never); `None` when it timed out.
/// The timer is made only when the read must wait.
async fn read_within(
    stream: &mut Stream,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Option<std::io::Result<usize>> {
    let read = stream.read_buf(buf);
    tokio::pin!(read);
    if let Poll::Ready(r) = poll_once(read.as_mut()).await {
        return Some(r);
    }
    if timeout.is_zero() {
        return Some(read.await);
    }
    tokio::time::timeout(timeout, read).await.ok()
}

/// Polls `fut` once: its result if it is ready at once, else `Pending` (it stays pinned
/// by the caller, to be awaited on).
pub(crate) async fn poll_once<F: std::future::Future + Unpin>(mut fut: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx))).await
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
                let left = match head.framing {
                    Framing::Length(n) => n,
                    _ => 0,
                };
                let body = RawBody {
                    stream: Some(stream),
                    buf: rest,
                    framing: head.framing,
                    left,
                    chunked: ChunkedBody::default(),
                    ready: 0,
                    piece: 0,
                    keep_alive,
                    done: false,
                    idle_timeout: settings.idle_timeout,
                    give_back,
                };
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
                Parsed::Complete(len, head, keep_alive) => {
                    let bytes = buf.split_to(len).freeze();
                    let head = ResponseHead { bytes, ..head };
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

/// The request head for `backend`: the target rewritten as the route says, the client's
/// forwardable fields, wsgate's, then its Host (or the client's with `preserve_host`).
fn encode(out: &Bodyless<'_>, backend: &Backend, preserve_host: bool) -> Vec<u8> {
    let target = backend
        .url
        .request_target(out.remainder, out.path, out.query);
    let mut head = Vec::with_capacity(256 + target.len() + 64 * out.headers.len());
    head.extend_from_slice(out.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    each_forwardable(out.headers, |name, value| {
        field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    });
    head.extend_from_slice(out.proxy);
    let host = if preserve_host {
        Some(out.host.as_bytes())
    } else {
        backend.http_host.as_ref().map(HeaderValue::as_bytes)
    };
    // Last, where hyper's client puts it (a map's insert after the rest).
    if let Some(host) = host {
        field(&mut head, b"host", host);
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Appends wsgate's forwarding headers as field lines, for [`Bodyless::proxy`].
pub(crate) fn encode_proxy(proxy: &ProxyHeaders<'_>, out: &mut Vec<u8>) {
    proxy.each(|name, value| field(out, name.as_bytes(), value));
}

/// Appends `n` in decimal, without the allocation of a `to_string`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    // At most 20 turns: a u64 has at most 20 digits.
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends one field line.
pub(crate) fn field(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// What a read so far of the response head came to.
enum Parsed {
    Partial,
    /// A 1xx head (not 101) of this length, to be dropped (as hyper's client does).
    Informational(usize),
    /// Not a response wsgate forwards.
    Invalid(&'static str),
    /// A whole head (its bytes not yet set), its length, whether the connection may be
    /// kept after the body.
    Complete(usize, ResponseHead, bool),
}

/// Parses the response head in `buf` (`httparse`, as hyper's client) and works out its
/// framing (RFC 9112 §6.3) and the fields forwarded.
fn parse(buf: &[u8], head_only: bool) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Invalid("too many response headers");
        }
        Err(_) => return Parsed::Invalid("malformed response head"),
    };
    let (Some(status), Some(version)) = (res.code, res.version) else {
        return Parsed::Invalid("malformed response head");
    };
    match status {
        // Three digits that are no status code (hyper's client refuses them too).
        0..=99 => return Parsed::Invalid("invalid status code"),
        101 => return Parsed::Invalid("101 to a plain request"),
        100..=199 => return Parsed::Informational(len),
        _ => {}
    }
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + s.len()
    };
    // Few per head: the values of `Connection`, looked up for every field.
    let mut connection: [&[u8]; 4] = [&[]; 4];
    let mut connections = 0;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            if connections == connection.len() {
                return Parsed::Invalid("too many Connection fields");
            }
            connection[connections] = h.value;
            connections += 1;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // RFC 9110 §8.6: a list of one repeated value is that value; others are errors.
            for v in h.value.split(|&b| b == b',') {
                let n = match parse_length(v.trim_ascii()) {
                    Some(n) if length.is_none_or(|l| l == n) => n,
                    _ => return Parsed::Invalid("invalid Content-Length"),
                };
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(&[]);
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    let connection = &connection[..connections];
    let token = |t: &str| {
        connection
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|v| v.trim_ascii().eq_ignore_ascii_case(t.as_bytes()))
    };
    let mut keep_alive = if version == 1 {
        !token("close")
    } else {
        token("keep-alive")
    };
    let no_body = head_only || status == 204 || status == 304;
    let framing = match (no_body, chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, Some(true), _) => Framing::Chunked,
        (false, Some(false), _) => Framing::Close,
        (false, None, Some(0)) => Framing::Empty,
        (false, None, Some(n)) => Framing::Length(n),
        (false, None, None) => Framing::Close,
    };
    // Both framings at once: the coding wins (RFC 9112 §6.3), and the connection, whose
    // next bytes the two read differently, is not used again.
    if chunked.is_some() && length.is_some() || framing == Framing::Close {
        keep_alive = false;
    }
    let mut fields = Vec::with_capacity(res.headers.len());
    let mut lower = [0u8; 64];
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        let forwarded = match lower.get_mut(..name.len()) {
            Some(l) => {
                for (d, s) in l.iter_mut().zip(name) {
                    *d = s.to_ascii_lowercase();
                }
                forwarded_field(l, connection)
            }
            None => forwarded_field(&name.to_ascii_lowercase(), connection),
        };
        if forwarded {
            fields.push((at(name), at(h.value)));
        }
    }
    let head = ResponseHead {
        status,
        head_length: length.filter(|_| head_only),
        head_only,
        framing,
        bytes: Bytes::new(),
        fields,
    };
    Parsed::Complete(len, head, keep_alive)
}

/// For the fuzz targets: what the response-head parse makes of `buf` (a whole head: its
/// length, the head, whether the connection may be kept), or why not (`Partial`,
/// `Informational n`, or the refusal).
pub(crate) fn parse_for_fuzzing(
    buf: &[u8],
    head_only: bool,
) -> Result<(usize, ResponseHead, bool), String> {
    match parse(buf, head_only) {
        Parsed::Complete(len, mut head, keep) => {
            head.bytes = Bytes::copy_from_slice(buf);
            Ok((len, head, keep))
        }
        Parsed::Partial => Err("partial".into()),
        Parsed::Informational(n) => Err(format!("informational {n}")),
        Parsed::Invalid(why) => Err(why.into()),
    }
}

/// A `Content-Length` value: digits only, within a u64.
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Whether `name` is one a response head may not carry on to the client (used by tests).
#[cfg(test)]
fn is_hop(name: &str) -> bool {
    !forwarded_field(name.as_bytes(), &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header;

    fn complete(raw: &str, head_only: bool) -> (ResponseHead, bool, usize) {
        match parse(raw.as_bytes(), head_only) {
            Parsed::Complete(len, mut head, keep) => {
                head.bytes = Bytes::copy_from_slice(raw.as_bytes());
                (head, keep, len)
            }
            _ => panic!("not complete: {raw:?}"),
        }
    }

    fn names(head: &ResponseHead) -> Vec<String> {
        let mut out = Vec::new();
        head.each(|n, _| out.push(String::from_utf8_lossy(n).into_owned()));
        out
    }

    #[test]
    fn decimals_are_written_as_to_string_writes_them() {
        for n in [0, 7, 10, 1234, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
                false,
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::Close,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Framing::Close, false),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
                true,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
                false,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
        ];
        for (raw, head_only, framing, keep) in cases {
            let (head, k, len) = complete(raw, head_only);
            assert_eq!(
                (head.framing, k, len),
                (framing, keep, raw.len()),
                "{raw:?}"
            );
        }
        let (head, _, _) = complete("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", true);
        assert_eq!(head.head_length, Some(1234));
    }

    #[test]
    fn bad_lengths_101_and_1xx_are_told_apart() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw.as_bytes(), false), Parsed::Invalid(_)),
                "{raw:?}"
            );
        }
        let early = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n";
        assert!(
            matches!(parse(early.as_bytes(), false), Parsed::Informational(n) if n == early.len() - 17)
        );
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nA: b\r\n", false),
            Parsed::Partial
        ));
    }

    #[test]
    fn hop_by_hop_framing_and_connection_listed_fields_are_not_forwarded() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
                   X-Hop: 1\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
                   X-Mixed-Case: v\r\nUpgrade: h2c\r\n\r\n";
        let (head, keep, _) = complete(raw, false);
        assert!(keep);
        assert_eq!(names(&head), ["Set-Cookie", "Set-Cookie", "X-Mixed-Case"]);
        assert!(is_hop("transfer-encoding") && is_hop("content-length") && !is_hop("set-cookie"));
    }

    #[test]
    fn the_request_head_carries_host_forwardable_fields_and_wsgates() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("client.example"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let forwarding = crate::proto::forwarded::Forwarding::direct([127, 0, 0, 1].into());
        let proxy = ProxyHeaders::new(
            [127, 0, 0, 1].into(),
            &forwarding,
            false,
            Some("client.example"),
        );
        let mut lines = Vec::new();
        encode_proxy(&proxy, &mut lines);
        let url = crate::config::BackendUrl::parse("ws://127.0.0.1:9/base").expect("a valid URL");
        let backend = Backend::new(url);
        let out = Bodyless {
            method: &Method::GET,
            headers: &headers,
            proxy: &lines,
            path: "/app/x",
            remainder: "/x",
            query: Some("a=1"),
            host: "client.example",
            hash_key: None,
            sticky: balance::Sticky::default(),
            secure: false,
        };
        let head = String::from_utf8(encode(&out, &backend, false)).expect("ASCII");
        assert!(
            head.starts_with("GET /base/x?a=1 HTTP/1.1\r\naccept: */*\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
            "{head}"
        );
        assert!(head.ends_with("\r\nhost: 127.0.0.1:9\r\n\r\n"), "{head}");
        assert!(!head.contains("x-hop") && !head.contains("connection"));
        let kept = String::from_utf8(encode(&out, &backend, true)).expect("ASCII");
        assert!(kept.contains("\r\nhost: client.example\r\n"), "{kept}");
    }
}
