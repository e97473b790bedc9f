//! The backend's response head: parsed with `httparse` (as hyper's client does), its
//! body's framing worked out (RFC 9112 §6.3), and the fields forwarded to the client.

use std::mem::MaybeUninit;
use std::ops::Range;

use bytes::Bytes;

use crate::proto::headers::forwarded_field;

/// Header lines of a response head parsed; hyper's client limit.
const MAX_HEADERS: usize = 100;

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
    /// The head as read, which `fields` index.
    pub(super) bytes: Bytes,
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

/// What a read so far of the response head came to.
pub(super) enum Parsed {
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
pub(super) fn parse(buf: &[u8], head_only: bool) -> Parsed {
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
}
