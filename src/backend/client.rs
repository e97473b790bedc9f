//! The backend hop's HTTP/1.1, for proxied upgrades and health probes alike: one `GET` with
//! `Upgrade: websocket` written in a single write, and one answer read with httparse.
//! wsgate never sends a second request on a backend connection, so a general client (a
//! connection task, a request channel and an upgrade hand-off per connection) would be
//! machinery paid on every new connection for nothing.

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use self::body::{Framing, fill, framing, read_chunked, read_sized, read_to_eof};
use crate::backend::error::BackendError;
use crate::proto::handshake::accept_key;
use crate::proto::headers::{forwarded_field, is_token, lists_token};
use crate::shared::stream::Stream;

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

fn invalid(why: impl Into<String>) -> BackendError {
    BackendError::Invalid(why.into())
}

/// An upgrade request being serialised straight into the bytes that go on the wire.
pub(crate) struct RequestHead {
    buf: Vec<u8>,
}

impl RequestHead {
    /// Starts `GET <target> HTTP/1.1`; `extra` sizes the buffer for the headers to come.
    pub(crate) fn get(target: &str, extra: usize) -> Self {
        // A target that is not a clean origin-form path (spaces, controls) would corrupt
        // the request line, so `/` instead.
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
        // Folded without short-circuiting, so it compiles to vector compares: the
        // byte-at-a-time `any` was ~120 instructions per header, 20 headers per upgrade.
        let bad = value.iter().fold(false, |bad, &b| {
            bad | ((b < 0x20) & (b != b'\t')) | (b == 0x7f)
        });
        if bad {
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

/// A backend's answer to the upgrade, checked: what the client hop is told.
pub(crate) enum Answer {
    /// 101 checked: the stream, bytes it sent after the 101, and the headers to pass on.
    Upgraded {
        stream: Stream,
        leftover: Bytes,
        headers: HeaderMap,
    },
    /// Any other final status, its body read whole (at most 64 KiB): relayed to the client.
    Refused(Response<Bytes>),
}

/// The backend's reply on the wire, before any WebSocket check.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A 101: its head as it came, and what the backend sent after it (its first frames).
    Switching { head: SwitchHead, leftover: Bytes },
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
) -> Result<Answer, BackendError> {
    let (h, leftover) = match exchange(&mut stream, request).await? {
        Reply::Switching { head, leftover } => (head, leftover),
        Reply::Refused(res) => return Ok(Answer::Refused(res)),
    };
    if !lists_token(h.get_all("upgrade"), "websocket") {
        return Err(invalid("101 without Upgrade: websocket"));
    }
    if !lists_token(h.get_all("connection"), "upgrade") {
        return Err(invalid("101 without Connection: upgrade"));
    }
    let expected = accept_key(key.as_bytes());
    // Exactly one, and right: a client hop told a second value could act on either.
    let mut accepts = h.get_all("sec-websocket-accept");
    match (accepts.next(), accepts.next()) {
        (Some(v), None) if v == expected.as_bytes() => {}
        (Some(_), Some(_)) => return Err(invalid("more than one Sec-WebSocket-Accept")),
        _ => return Err(invalid("wrong Sec-WebSocket-Accept")),
    }
    if h.get_all("sec-websocket-extensions").next().is_some() {
        return Err(invalid("extension that was not offered"));
    }
    // On the raw values: one line, one token, one of the offered (RFC 6455 §4.1); an
    // empty or non-token value is not "no subprotocol", it is a wrong answer.
    let mut chosen = h.get_all("sec-websocket-protocol");
    match (chosen.next(), chosen.next()) {
        (None, _) => {}
        (Some(p), None) if is_token(p) && offered.iter().any(|o| o.as_bytes() == p) => {}
        _ => return Err(invalid("subprotocol that was not offered")),
    }
    let headers = h.forwardable()?;
    Ok(Answer::Upgraded {
        stream,
        leftover,
        headers,
    })
}

/// Writes `request` and reads the answer: interim 1xx heads are skipped (they announce, they
/// do not answer), a 101 is returned with the bytes read past its head, anything else with
/// its body.
pub(crate) async fn exchange<S>(io: &mut S, request: &[u8]) -> Result<Reply, BackendError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sending = |source| BackendError::Io {
        during: "sending the request",
        source,
    };
    io.write_all(request).await.map_err(sending)?;
    io.flush().await.map_err(sending)?;
    let mut buf = Vec::with_capacity(HEAD_START);
    let mut start = 0;
    let head = loop {
        match read_head(io, &mut buf, start).await? {
            Parsed::Other(head) if head.status.is_informational() => start = head.end,
            head => break head,
        }
    };
    let head = match head {
        Parsed::Switching(fields, end) => {
            let leftover = Bytes::copy_from_slice(&buf[end..]);
            buf.truncate(end);
            let head = SwitchHead { bytes: buf, fields };
            return Ok(Reply::Switching { head, leftover });
        }
        Parsed::Other(head) => head,
    };
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
    Ok(Reply::Refused(res))
}

/// A parsed answer head; `end` is where it ends in the read buffer.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    end: usize,
}

/// A head read: a 101 is kept as it came (where its fields are, and where it ends), every
/// other one made a map.
enum Parsed {
    /// A 101: its fields (spans in the buffer) and where it ends.
    Switching(Vec<Field>, usize),
    /// Any other status (interim heads included).
    Other(Head),
}

/// Where one field's name and value are in a head's bytes.
#[derive(Debug, Clone, Copy)]
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// A backend's 101 as it came. Its checks read the fields in place, and only the fields
/// passed on to the client become a map: the map of every field, built and then looked up
/// by name for each check, was ~3k instructions of every new connection (issue #17).
#[derive(Debug)]
pub(crate) struct SwitchHead {
    bytes: Vec<u8>,
    fields: Vec<Field>,
}

impl SwitchHead {
    /// Every field's name (as sent) and value, in order.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|f| {
            (
                &self.bytes[f.name.0..f.name.1],
                &self.bytes[f.value.0..f.value.1],
            )
        })
    }

    /// The values of the fields named `name` (lowercase), in order.
    pub(crate) fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.fields()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The fields passed on to the client ([`forwarded_field`]), as a map that allocates
    /// only once one is kept (a bare 101 keeps none): the 101 to the client adds wsgate's
    /// own to it.
    fn forwardable(&self) -> Result<HeaderMap, BackendError> {
        let connection: Vec<&[u8]> = self.get_all("connection").collect();
        let mut out = HeaderMap::new();
        for (name, value) in self.fields() {
            let name = HeaderName::from_bytes(name).map_err(|_| {
                invalid(format!(
                    "bad header name {:?}",
                    String::from_utf8_lossy(name)
                ))
            })?;
            if forwarded_field(name.as_str().as_bytes(), &connection) {
                let value = HeaderValue::from_bytes(value)
                    .map_err(|_| invalid(format!("bad value for header {:?}", name.as_str())))?;
                out.append(name, value);
            }
        }
        Ok(out)
    }
}

/// Reads until `buf[start..]` holds a complete head, within `HEAD_MAX` for the whole buffer.
async fn read_head<S>(io: &mut S, buf: &mut Vec<u8>, start: usize) -> Result<Parsed, BackendError>
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
                Ok(httparse::Status::Complete(n)) if res.code == Some(101) => {
                    let base = buf.as_ptr() as usize;
                    let span = |s: &[u8]| {
                        let at = s.as_ptr() as usize - base;
                        (at, at + s.len())
                    };
                    let fields = res
                        .headers
                        .iter()
                        .map(|h| Field {
                            name: span(h.name.as_bytes()),
                            value: span(h.value),
                        })
                        .collect();
                    return Ok(Parsed::Switching(fields, start + n));
                }
                Ok(httparse::Status::Complete(n)) => {
                    return owned_head(&res, start + n).map(Parsed::Other);
                }
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
            return Err(BackendError::Io {
                during: "reading the answer head",
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        // A head only completes on a line feed; without one a re-parse would find the
        // same partial head, so a backend trickling bytes costs no quadratic parsing.
        worth_parsing = buf[before..].contains(&b'\n');
    }
}

fn owned_head(res: &httparse::Response<'_, '_>, end: usize) -> Result<Head, BackendError> {
    // httparse sets the code on every complete parse; 0 stands for "impossible" and fails below.
    let code = res.code.unwrap_or(0);
    // StatusCode takes 100–999, HTTP defines 100–599 (RFC 9110 §15): a 6xx is no answer
    // to relay.
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|_| code <= 599)
        .ok_or_else(|| invalid(format!("answer with status code {code}")))?;
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

mod body;

#[cfg(test)]
mod tests;
