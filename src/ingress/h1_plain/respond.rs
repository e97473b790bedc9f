//! What goes to the client: the head of a backend's answer as hyper writes one, wsgate's
//! own answers whole, and each write bounded by the write-stall timeout.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::backend::http::raw::{self, Framing, field, push_decimal};
use crate::ingress::forward::ResponseBody;
use crate::ingress::h1_fast::{self, http_date};
use crate::shared::stream::Stream;

use crate::ingress::h1_plain::Next;

/// [`h1_fast::write_within`], with the access log's outcome when it fails.
pub(super) async fn write(
    stream: &mut Stream,
    bytes: &[u8],
    stall: Duration,
) -> Result<(), &'static str> {
    h1_fast::write_within(stream, bytes, stall)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => "client_stalled",
            _ => "client_gone",
        })
}

/// Writes wsgate's own answer (a refusal, or why no backend answered) as hyper writes a
/// whole body: the headers, `content-length`, `date`.
pub(super) async fn answer(
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
pub(super) fn encode_head(
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
