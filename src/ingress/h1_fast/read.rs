//! A request head read from the client and judged: served here (an upgrade, or a bodyless
//! plain request for `h1_plain`) or left to hyper with the bytes read.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};
use tokio_util::io::poll_read_buf;
use tokio_util::sync::CancellationToken;

use crate::ingress::h1_fast::First;
use crate::proto::headers::has_token;
use crate::shared::stream::Stream;
/// Header lines parsed; hyper's default limit (more are its 431).
const MAX_HEADERS: usize = 100;
/// First read buffer: an upgrade head is a few hundred bytes.
const FIRST_READ: usize = 2048;
/// Longest request target hyper takes (more is its 414).
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

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
pub(super) fn may_be_get(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let line = &buf[start..];
    let n = line.len().min(5);
    line[..n.min(4)] == b"GET "[..n.min(4)] || line[..n] == b"HEAD "[..n]
}

/// Where the parts of a whole head are in the buffer.
pub(super) struct Lines {
    /// The head's length.
    pub(super) len: usize,
    head_only: bool,
    path: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

/// What a parse of the bytes read so far came to.
pub(super) enum Parsed {
    Complete(Lines),
    Partial,
    /// Not a head served here (or not one at all): hyper's to judge.
    Other,
}

/// Parses the head the way hyper does (`httparse`, default settings, at most 100 lines)
/// and keeps only what is served here: `GET` or `HEAD`, HTTP/1.1, an origin-form target.
pub(super) fn parse(buf: &[u8]) -> Parsed {
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
pub(super) fn take(mut buf: BytesMut, lines: &Lines) -> First {
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
