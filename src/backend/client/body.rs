//! A refusal's body: how it is delimited, and reading it within its bounds (the buffer
//! filling that the head reader shares).

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{self, HeaderMap};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{BODY_MAX, CHUNK_OVERHEAD_MAX, HEAD_START, invalid};
use crate::backend::error::BackendError;
use crate::proto::headers::tokens;

/// How a refusal's body is delimited (RFC 9112 §6.3, for the answer to a GET).
#[derive(Debug, PartialEq)]
pub(super) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilEof,
}

pub(super) fn framing(status: StatusCode, h: &HeaderMap) -> Result<Framing, BackendError> {
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
pub(super) async fn fill<S>(
    io: &mut S,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, BackendError>
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
        .map_err(|source| BackendError::Io {
            during: "reading the answer",
            source,
        })
}

/// Makes `buf` hold at least `need` bytes; false if the stream ended first.
async fn fill_to<S>(io: &mut S, buf: &mut Vec<u8>, need: usize) -> Result<bool, BackendError>
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
pub(super) async fn read_sized<S>(
    io: &mut S,
    buf: &mut Vec<u8>,
    at: usize,
    len: u64,
) -> Result<Option<Bytes>, BackendError>
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
pub(super) async fn read_to_eof<S>(
    io: &mut S,
    buf: &mut Vec<u8>,
    at: usize,
) -> Result<Option<Bytes>, BackendError>
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
pub(super) async fn read_chunked<S>(
    io: &mut S,
    buf: &mut Vec<u8>,
    at: usize,
) -> Result<Option<Bytes>, BackendError>
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
