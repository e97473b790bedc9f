//! The backend hop's HTTP/1.1: one `GET` with `Upgrade: websocket` written in a single
//! write, and one answer read with httparse. wsgate never sends a second request on a
//! backend connection, so hyper's client (a connection task, a request channel and an
//! upgrade hand-off per connection) was machinery paid on every new connection for nothing.

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::handshake::{HandshakeError, accept_key, forwardable, has_token, tokens};
use crate::stream::Stream;
use crate::upstream::BackendAnswer;

/// First allocation for the answer: a 101 is a few hundred bytes.
const HEAD_START: usize = 1024;
/// Largest answer head (interim 1xx heads included); past it the backend is not sane.
const HEAD_MAX: usize = 16 * 1024;
/// Most header lines in one answer head.
const MAX_HEADERS: usize = 64;
/// Largest refusal body relayed; a larger one is dropped and the status relayed alone.
const BODY_MAX: usize = 64 * 1024;
/// Chunk-size lines and extensions allowed on top of a chunked refusal body.
const CHUNK_OVERHEAD_MAX: usize = 16 * 1024;

fn invalid(why: impl Into<String>) -> HandshakeError {
    HandshakeError::BackendInvalid(why.into())
}

/// An upgrade request being serialised straight into the bytes that go on the wire.
pub(crate) struct RequestHead {
    buf: Vec<u8>,
}

impl RequestHead {
    /// Starts `GET <target> HTTP/1.1`; `extra` sizes the buffer for the headers to come.
    pub(crate) fn get(target: &str, extra: usize) -> Self {
        // The same rule as parsing into a `Uri` did: a target that is not a clean
        // origin-form path (spaces, controls) would corrupt the request line, so `/` instead.
        let parsed = PathAndQuery::try_from(target).ok();
        let target = parsed
            .as_ref()
            .map(PathAndQuery::as_str)
            .filter(|t| t.starts_with('/'))
            .unwrap_or("/");
        let mut buf = Vec::with_capacity(target.len() + extra + 32);
        buf.extend_from_slice(b"GET ");
        buf.extend_from_slice(target.as_bytes());
        buf.extend_from_slice(b" HTTP/1.1\r\n");
        RequestHead { buf }
    }

    /// Adds `name: value`; a value `HeaderValue` would refuse (CR, LF, controls) is left out.
    pub(crate) fn header(&mut self, name: &str, value: &[u8]) {
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return;
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Ends the head; the request has no body.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"\r\n");
        self.buf
    }
}

/// The backend's answer, before any WebSocket check.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A 101: its headers, and what the backend sent after them (its first frames).
    Switching { headers: HeaderMap, leftover: Bytes },
    /// Any other final status, with its body read whole (or dropped when over 64 KiB).
    Refused(Response<Bytes>),
}

/// Sends the upgrade request and checks the backend's 101 the way RFC 6455 §4.1 asks a client
/// to; any other final status comes back as a refusal to relay.
pub(crate) async fn handshake(
    mut stream: Stream,
    request: &[u8],
    key: &str,
    offered: &[String],
) -> Result<BackendAnswer, HandshakeError> {
    let (h, leftover) = match exchange(&mut stream, request).await? {
        Answer::Switching { headers, leftover } => (headers, leftover),
        Answer::Refused(res) => return Ok(BackendAnswer::Refused(res)),
    };
    if !has_token(&h, &header::UPGRADE, "websocket") {
        return Err(invalid("101 without Upgrade: websocket"));
    }
    if !has_token(&h, &header::CONNECTION, "upgrade") {
        return Err(invalid("101 without Connection: upgrade"));
    }
    let expected = accept_key(key.as_bytes());
    if h.get(header::SEC_WEBSOCKET_ACCEPT).map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
        return Err(invalid("wrong Sec-WebSocket-Accept"));
    }
    if h.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
        return Err(invalid("extension that was not offered"));
    }
    let chosen: Vec<String> = tokens(&h, &header::SEC_WEBSOCKET_PROTOCOL).collect();
    match chosen.as_slice() {
        [] => {}
        [p] if offered.contains(p) => {}
        _ => return Err(invalid("subprotocol that was not offered")),
    }
    Ok(BackendAnswer::Upgraded {
        stream,
        leftover,
        headers: forwardable(&h),
    })
}

/// Writes `request` and reads the answer: interim 1xx heads are skipped (as hyper's client
/// did), a 101 is returned with the bytes read past its head, anything else with its body.
pub(crate) async fn exchange<S>(io: &mut S, request: &[u8]) -> Result<Answer, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(request)
        .await
        .map_err(|e| invalid(format!("sending the upgrade request: {e}")))?;
    io.flush()
        .await
        .map_err(|e| invalid(format!("sending the upgrade request: {e}")))?;
    let mut buf = Vec::with_capacity(HEAD_START);
    let mut start = 0;
    let head = loop {
        let head = read_head(io, &mut buf, start).await?;
        if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
            start = head.end;
            continue;
        }
        break head;
    };
    if head.status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Answer::Switching {
            headers: head.headers,
            leftover: Bytes::copy_from_slice(&buf[head.end..]),
        });
    }
    let body = match framing(head.status, &head.headers)? {
        Framing::Empty => Some(Bytes::new()),
        Framing::Length(len) => read_sized(io, &mut buf, head.end, len).await?,
        Framing::Chunked => read_chunked(io, &mut buf, head.end).await?,
        Framing::UntilEof => read_to_eof(io, &mut buf, head.end).await?,
    };
    let body = body.unwrap_or_else(|| {
        tracing::info!(
            status = head.status.as_u16(),
            "backend refusal body over 64 KiB: relaying the status without it"
        );
        Bytes::new()
    });
    let mut res = Response::new(body);
    *res.status_mut() = head.status;
    *res.headers_mut() = head.headers;
    Ok(Answer::Refused(res))
}

/// A parsed answer head; `end` is where it ends in the read buffer.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    end: usize,
}

/// Reads until `buf[start..]` holds a complete head, within `HEAD_MAX` for the whole buffer.
async fn read_head<S>(io: &mut S, buf: &mut Vec<u8>, start: usize) -> Result<Head, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    // Bytes already buffered behind a skipped 1xx head may hold the next head whole.
    let mut worth_parsing = buf.len() > start;
    loop {
        if worth_parsing {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut slots);
            match res.parse(&buf[start..]) {
                Ok(httparse::Status::Complete(n)) => return owned_head(&res, start + n),
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(invalid(format!(
                        "answer with more than {MAX_HEADERS} headers"
                    )));
                }
                Err(e) => return Err(invalid(format!("malformed answer head: {e}"))),
            }
        }
        if buf.len() >= HEAD_MAX {
            return Err(invalid(format!("answer head over {} KiB", HEAD_MAX / 1024)));
        }
        let before = buf.len();
        if fill(io, buf, HEAD_MAX).await? == 0 {
            return Err(invalid(
                "connection closed before the answer head was complete",
            ));
        }
        // A head only completes on a line feed; without one a re-parse would find the
        // same partial head, so a backend trickling bytes costs no quadratic parsing.
        worth_parsing = buf[before..].contains(&b'\n');
    }
}

fn owned_head(res: &httparse::Response<'_, '_>, end: usize) -> Result<Head, HandshakeError> {
    // httparse sets the code on every complete parse; 0 stands for "impossible" and fails below.
    let code = res.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| invalid(format!("answer with status code {code}")))?;
    let mut headers = HeaderMap::with_capacity(res.headers.len());
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| invalid(format!("bad header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| invalid(format!("bad value for header {:?}", h.name)))?;
        headers.append(name, value);
    }
    Ok(Head {
        status,
        headers,
        end,
    })
}

/// How a refusal's body is delimited (RFC 9112 §6.3, for the answer to a GET).
#[derive(Debug, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilEof,
}

fn framing(status: StatusCode, h: &HeaderMap) -> Result<Framing, HandshakeError> {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    if h.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding wins over Content-Length; one not ending in chunked runs to close.
        let last = tokens(h, &header::TRANSFER_ENCODING).last();
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::UntilEof,
        });
    }
    let mut length = None;
    for value in h.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            // Digits only: `u64::from_str` would also take a leading `+`.
            let n = std::str::from_utf8(part)
                .ok()
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(|| invalid("malformed Content-Length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(invalid("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::UntilEof, Framing::Length))
}

/// Reads more into `buf`, never past `limit` bytes in all; 0 means end of stream (or `limit`).
async fn fill<S>(io: &mut S, buf: &mut Vec<u8>, limit: usize) -> Result<usize, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    let room = limit.saturating_sub(buf.len());
    if room == 0 {
        return Ok(0);
    }
    if buf.len() == buf.capacity() {
        // Doubling from 1 KiB: the usual 101 fits the first allocation.
        buf.reserve_exact(buf.capacity().max(HEAD_START).min(room));
    }
    let want = (buf.capacity() - buf.len()).min(room) as u64;
    (&mut *io)
        .take(want)
        .read_buf(buf)
        .await
        .map_err(|e| invalid(format!("reading the answer: {e}")))
}

/// Makes `buf` hold at least `need` bytes; false if the stream ended first.
async fn fill_to<S>(io: &mut S, buf: &mut Vec<u8>, need: usize) -> Result<bool, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    while buf.len() < need {
        if fill(io, buf, need).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A `Content-Length` body; `None` when over `BODY_MAX` (left unread).
async fn read_sized<S>(
    io: &mut S,
    buf: &mut Vec<u8>,
    at: usize,
    len: u64,
) -> Result<Option<Bytes>, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    let len = match usize::try_from(len) {
        Ok(len) if len <= BODY_MAX => len,
        _ => return Ok(None),
    };
    if !fill_to(io, buf, at + len).await? {
        return Err(invalid("answer body shorter than its Content-Length"));
    }
    Ok(Some(Bytes::copy_from_slice(&buf[at..at + len])))
}

/// A body delimited by the end of the connection; `None` when over `BODY_MAX`.
async fn read_to_eof<S>(
    io: &mut S,
    buf: &mut Vec<u8>,
    at: usize,
) -> Result<Option<Bytes>, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    // One byte over the bound tells "exactly BODY_MAX" from "more".
    let limit = at + BODY_MAX + 1;
    loop {
        if buf.len() >= limit {
            return Ok(None);
        }
        if fill(io, buf, limit).await? == 0 {
            return Ok(Some(Bytes::copy_from_slice(&buf[at..])));
        }
    }
}

/// A chunked body, decoded; `None` when the data (or the framing around it) is over its bound.
/// It stops at the last chunk without waiting for trailers: they are never relayed and the
/// connection is closed right after, so waiting would only risk the handshake timeout.
async fn read_chunked<S>(
    io: &mut S,
    buf: &mut Vec<u8>,
    at: usize,
) -> Result<Option<Bytes>, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    let wire_limit = at + BODY_MAX + CHUNK_OVERHEAD_MAX;
    let mut body = Vec::new();
    let mut pos = at;
    loop {
        let (used, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            // httparse reads an empty size line as 0; hyper refused it, and so do we.
            Ok(httparse::Status::Complete(_))
                if !buf.get(pos).is_some_and(u8::is_ascii_hexdigit) =>
            {
                return Err(invalid("malformed chunk size"));
            }
            Ok(httparse::Status::Complete(pair)) => pair,
            Ok(httparse::Status::Partial) => {
                if buf.len() >= wire_limit {
                    return Ok(None);
                }
                if fill(io, buf, wire_limit).await? == 0 {
                    return Err(invalid("chunked answer body cut short"));
                }
                continue;
            }
            Err(_) => return Err(invalid("malformed chunk size")),
        };
        pos += used;
        if size == 0 {
            return Ok(Some(Bytes::from(body)));
        }
        let size = match usize::try_from(size) {
            Ok(s) if s <= BODY_MAX - body.len() => s,
            _ => return Ok(None),
        };
        let end = pos + size + 2;
        if end > wire_limit {
            return Ok(None);
        }
        if !fill_to(io, buf, end).await? {
            return Err(invalid("chunked answer body cut short"));
        }
        if &buf[pos + size..end] != b"\r\n" {
            return Err(invalid("chunk data not followed by CRLF"));
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    /// A backend connection that hands out its canned answer `step` bytes per read and
    /// records what was written to it.
    struct Canned {
        answer: Vec<u8>,
        pos: usize,
        step: usize,
        written: Vec<u8>,
        reads: usize,
    }

    impl Canned {
        fn new(answer: impl AsRef<[u8]>, step: usize) -> Self {
            Canned {
                answer: answer.as_ref().to_vec(),
                pos: 0,
                step,
                written: Vec::new(),
                reads: 0,
            }
        }
    }

    impl AsyncRead for Canned {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = self
                .step
                .min(buf.remaining())
                .min(self.answer.len() - self.pos);
            let pos = self.pos;
            buf.put_slice(&self.answer[pos..pos + n]);
            self.pos += n;
            self.reads += 1;
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Canned {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn ok101(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n"
        )
    }

    async fn answer(bytes: impl AsRef<[u8]>, step: usize) -> Result<Answer, HandshakeError> {
        exchange(&mut Canned::new(bytes, step), b"GET / HTTP/1.1\r\n\r\n").await
    }

    fn refused(a: Result<Answer, HandshakeError>) -> Response<Bytes> {
        match a {
            Ok(Answer::Refused(res)) => res,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn invalid_reason(a: Result<Answer, HandshakeError>) -> String {
        match a {
            Err(HandshakeError::BackendInvalid(why)) => why,
            other => panic!("expected BackendInvalid, got {other:?}"),
        }
    }

    #[test]
    fn request_is_serialised_in_order_and_bad_values_are_left_out() {
        let mut req = RequestHead::get("/chat?room=1", 0);
        req.header("host", b"example.com:8080");
        req.header("x-evil", b"a\r\nInjected: 1");
        req.header("sec-websocket-key", KEY.as_bytes());
        assert_eq!(
            String::from_utf8(req.finish()).unwrap(),
            format!(
                "GET /chat?room=1 HTTP/1.1\r\nhost: example.com:8080\r\nsec-websocket-key: {KEY}\r\n\r\n"
            )
        );
    }

    #[test]
    fn unusable_targets_fall_back_to_slash() {
        for target in ["/a b", "/a\r\nX: y", "", "*", "relative"] {
            let line = RequestHead::get(target, 0).finish();
            assert!(
                line.starts_with(b"GET / HTTP/1.1\r\n"),
                "{target:?}: {:?}",
                String::from_utf8_lossy(&line)
            );
        }
        // A fragment never goes on the wire.
        assert!(
            RequestHead::get("/p?q#frag", 0)
                .finish()
                .starts_with(b"GET /p?q HTTP/1.1\r\n")
        );
    }

    #[tokio::test]
    async fn request_goes_out_whole_in_one_write() {
        let mut io = Canned::new(ok101(""), usize::MAX);
        let request = b"GET /x HTTP/1.1\r\nhost: h\r\n\r\n";
        exchange(&mut io, request).await.unwrap();
        assert_eq!(io.written, request);
    }

    #[tokio::test]
    async fn head_arriving_byte_by_byte_is_parsed() {
        let mut io = Canned::new(ok101("X-Backend: one\r\n"), 1);
        let a = exchange(&mut io, b"GET / HTTP/1.1\r\n\r\n").await;
        let Ok(Answer::Switching { headers, leftover }) = a else {
            panic!("expected a 101, got {a:?}");
        };
        assert_eq!(headers["x-backend"], "one");
        assert_eq!(headers["sec-websocket-accept"], ACCEPT);
        assert!(leftover.is_empty());
        // One byte per read, and not a read past the head.
        assert_eq!(io.reads, ok101("X-Backend: one\r\n").len());
    }

    #[tokio::test]
    async fn bytes_after_the_101_are_kept_as_leftover() {
        let frame = [0x81, 0x02, b'h', b'i'];
        let head_len = ok101("").len();
        let mut wire = ok101("").into_bytes();
        wire.extend_from_slice(&frame);
        // Whole in one read: every frame byte is leftover.
        let Ok(Answer::Switching { leftover, .. }) = answer(&wire, usize::MAX).await else {
            panic!("expected a 101");
        };
        assert_eq!(&leftover[..], &frame);
        // In 5-byte reads the last one straddles the head's end: its tail is leftover too.
        let read = head_len.div_ceil(5) * 5;
        assert!(
            read > head_len && read < wire.len(),
            "test needs a straddling read"
        );
        let Ok(Answer::Switching { leftover, .. }) = answer(&wire, 5).await else {
            panic!("expected a 101");
        };
        assert_eq!(&leftover[..], &wire[head_len..read]);
    }

    #[tokio::test]
    async fn interim_heads_are_skipped() {
        let wire = format!(
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n{}",
            ok101("")
        );
        for step in [usize::MAX, 1] {
            let Ok(Answer::Switching { headers, .. }) = answer(&wire, step).await else {
                panic!("expected the 101 after the 103");
            };
            assert!(headers.get("link").is_none());
        }
    }

    #[tokio::test]
    async fn oversize_head_is_invalid() {
        let big = format!("X-Big: {}\r\n", "a".repeat(HEAD_MAX));
        let why = invalid_reason(answer(ok101(&big), usize::MAX).await);
        assert!(why.contains("over 16 KiB"), "{why}");
        // Just under the cap is fine.
        let fits = format!(
            "X-Big: {}\r\n",
            "a".repeat(HEAD_MAX - ok101("X-Big: \r\n").len())
        );
        assert!(matches!(
            answer(ok101(&fits), 100).await,
            Ok(Answer::Switching { .. })
        ));
    }

    #[tokio::test]
    async fn too_many_headers_is_invalid() {
        let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let why = invalid_reason(answer(ok101(&many), usize::MAX).await);
        assert!(why.contains("more than 64 headers"), "{why}");
    }

    #[tokio::test]
    async fn bad_status_lines_are_invalid() {
        for wire in [
            "HTTP/1.1 abc Nope\r\n\r\n",
            "HTTP/2 101 Switching Protocols\r\n\r\n",
            "SSH-2.0-OpenSSH_9.6\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTP/1.1 101 OK\r\nBad Header: x\r\n\r\n",
        ] {
            let why = invalid_reason(answer(wire, usize::MAX).await);
            assert!(
                why.starts_with("malformed answer head") || why.contains("status code"),
                "{wire:?}: {why}"
            );
        }
    }

    #[tokio::test]
    async fn closed_mid_head_is_invalid() {
        let why = invalid_reason(answer("HTTP/1.1 101 Switching", 3).await);
        assert!(why.contains("closed before"), "{why}");
        let why = invalid_reason(answer("", 3).await);
        assert!(why.contains("closed before"), "{why}");
    }

    #[tokio::test]
    async fn content_length_refusal_body_is_read_exactly() {
        let wire =
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\nX-Why: no\r\n\r\ngo awayTRAILING";
        for step in [usize::MAX, 1] {
            let res = refused(answer(wire, step).await);
            assert_eq!(res.status(), 403);
            assert_eq!(res.headers()["x-why"], "no");
            assert_eq!(&res.body()[..], b"go away", "step {step}");
        }
        let short = "HTTP/1.1 403 Forbidden\r\nContent-Length: 70\r\n\r\ngo away";
        let why = invalid_reason(answer(short, usize::MAX).await);
        assert!(why.contains("shorter"), "{why}");
    }

    #[tokio::test]
    async fn bad_or_conflicting_content_length_is_invalid() {
        for cl in [
            "Content-Length: +5",
            "Content-Length: 5, 6",
            "Content-Length: x",
        ] {
            let wire = format!("HTTP/1.1 403 Forbidden\r\n{cl}\r\n\r\nhello");
            let why = invalid_reason(answer(wire, usize::MAX).await);
            assert!(why.contains("Content-Length"), "{cl}: {why}");
        }
        let same = "HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            &refused(answer(same, usize::MAX).await).body()[..],
            b"hello"
        );
    }

    #[tokio::test]
    async fn chunked_refusal_body_is_decoded() {
        let wire = "HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
                    5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        for step in [usize::MAX, 1, 4] {
            let res = refused(answer(wire, step).await);
            assert_eq!(res.status(), 503);
            assert_eq!(&res.body()[..], b"hello world", "step {step}");
        }
    }

    #[tokio::test]
    async fn broken_chunking_is_invalid() {
        for chunks in [
            "5\r\nhelloXX0\r\n\r\n",
            "zz\r\nhello\r\n",
            "\r\n",
            "5\r\nhel",
        ] {
            let wire = format!("HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}");
            let why = invalid_reason(answer(wire, usize::MAX).await);
            assert!(why.contains("chunk"), "{chunks:?}: {why}");
        }
    }

    #[tokio::test]
    async fn refusal_bodies_over_the_bound_are_dropped_not_fatal() {
        let big = "a".repeat(BODY_MAX + 1);
        let sized = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        );
        let chunked = format!(
            "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        );
        let to_eof = format!("HTTP/1.1 404 Not Found\r\n\r\n{big}");
        for wire in [sized, chunked, to_eof] {
            let res = refused(answer(&wire, 1000).await);
            assert_eq!(res.status(), 404);
            assert!(res.body().is_empty());
        }
        // Exactly at the bound is relayed.
        let edge = "b".repeat(BODY_MAX);
        let res = refused(answer(format!("HTTP/1.1 404 Not Found\r\n\r\n{edge}"), 1000).await);
        assert_eq!(res.body().len(), BODY_MAX);
    }

    #[tokio::test]
    async fn body_without_length_runs_to_close_and_204_has_none() {
        let res = refused(answer("HTTP/1.1 400 Bad\r\n\r\nuntil close", 2).await);
        assert_eq!(&res.body()[..], b"until close");
        let res = refused(answer("HTTP/1.1 204 No Content\r\n\r\nstray", usize::MAX).await);
        assert!(res.body().is_empty());
    }

    async fn handshake_with(
        answer: String,
        offered: &[&str],
    ) -> Result<BackendAnswer, HandshakeError> {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            theirs.write_all(answer.as_bytes()).await.unwrap();
            // Keep the pipe open until the client is done with it.
            let mut sink = Vec::new();
            let _ = theirs.read_to_end(&mut sink).await;
        });
        let offered: Vec<String> = offered.iter().map(|s| s.to_string()).collect();
        handshake(
            Stream::Memory(ours),
            b"GET / HTTP/1.1\r\n\r\n",
            KEY,
            &offered,
        )
        .await
    }

    fn handshake_error(r: Result<BackendAnswer, HandshakeError>) -> String {
        match r {
            Err(HandshakeError::BackendInvalid(why)) => why,
            Err(e) => panic!("expected BackendInvalid, got {e}"),
            Ok(_) => panic!("expected BackendInvalid, got an answer"),
        }
    }

    #[tokio::test]
    async fn correct_101_upgrades_and_keeps_only_forwardable_headers() {
        let r = handshake_with(
            ok101("Sec-WebSocket-Protocol: b\r\nX-Id: 7\r\n"),
            &["a", "b"],
        )
        .await;
        let Ok(BackendAnswer::Upgraded { headers, .. }) = r else {
            panic!("expected an upgrade");
        };
        assert_eq!(headers["sec-websocket-protocol"], "b");
        assert_eq!(headers["x-id"], "7");
        assert!(headers.get("sec-websocket-accept").is_none());
        assert!(headers.get("upgrade").is_none());
    }

    #[tokio::test]
    async fn missing_or_wrong_accept_is_invalid() {
        let missing =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let why = handshake_error(handshake_with(missing.into(), &[]).await);
        assert_eq!(why, "wrong Sec-WebSocket-Accept");
        let wrong = missing.replace("\r\n\r\n", "\r\nSec-WebSocket-Accept: AAAA\r\n\r\n");
        let why = handshake_error(handshake_with(wrong, &[]).await);
        assert_eq!(why, "wrong Sec-WebSocket-Accept");
    }

    #[tokio::test]
    async fn other_101_violations_are_invalid() {
        let cases = [
            (
                ok101("").replace("Upgrade: websocket", "Upgrade: h2c"),
                &[][..],
                "Upgrade",
            ),
            (
                ok101("").replace("Connection: Upgrade", "Connection: close"),
                &[],
                "Connection",
            ),
            (
                ok101("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
                &[],
                "extension",
            ),
            (
                ok101("Sec-WebSocket-Protocol: chat\r\n"),
                &[],
                "subprotocol",
            ),
            (
                ok101("Sec-WebSocket-Protocol: a, b\r\n"),
                &["a", "b"],
                "subprotocol",
            ),
        ];
        for (wire, offered, expect) in cases {
            let why = handshake_error(handshake_with(wire.clone(), offered).await);
            assert!(why.contains(expect), "{wire:?}: {why}");
        }
    }
}
