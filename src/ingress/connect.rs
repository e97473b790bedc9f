//! An HTTP/2 extended CONNECT (RFC 8441 §4, §5) checked like an HTTP/1.1 upgrade: the
//! same authority, body and subprotocol rules, answered 200 instead of 101.
//!
//! What h2 itself refuses never gets here: a `:protocol` on another method, an extended
//! CONNECT without `:scheme` or `:path`, connection-specific headers (`Connection`,
//! `Upgrade`, `Transfer-Encoding`…) and uppercase names are malformed requests, reset with
//! PROTOCOL_ERROR (RFC 9113 §8.1.1); a CONNECT with a non-zero Content-Length is reset by
//! hyper.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request};

use crate::ingress::hello::{HandshakeError, Hello, check_expectation, offered_subprotocols};
use crate::proto::headers::valid_authority;

/// Checks an HTTP/2 request that reached the upgrade: an extended CONNECT for
/// `websocket`, version 13, with a valid `:authority`.
pub(crate) fn validate<B>(req: &Request<B>) -> Result<Hello, HandshakeError> {
    if req.method() != Method::CONNECT {
        return Err(HandshakeError::NotWebSocket);
    }
    let Some(protocol) = req.extensions().get::<hyper::ext::Protocol>() else {
        // A classic CONNECT asks for a TCP tunnel: wsgate is no forward proxy.
        return Err(HandshakeError::PlainConnect);
    };
    // Upgrade tokens compare without case (RFC 9110 §7.8).
    if !protocol.as_str().eq_ignore_ascii_case("websocket") {
        return Err(HandshakeError::Protocol);
    }
    let host = authority(req)?;
    let h = req.headers();
    let body = h
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .any(|v| v.as_bytes().trim_ascii() != b"0");
    if body {
        return Err(HandshakeError::Body);
    }
    check_expectation(h)?;
    let versions: Vec<_> = h.get_all(header::SEC_WEBSOCKET_VERSION).iter().collect();
    if versions.len() != 1 || versions[0].as_bytes().trim_ascii() != b"13" {
        return Err(HandshakeError::ConnectWsVersion);
    }
    // No Sec-WebSocket-Key on HTTP/2 (RFC 8441 §5); one sent anyway is not forwarded:
    // the backend hop gets wsgate's own key.
    Ok(Hello {
        key: None,
        protocols: offered_subprotocols(h)?,
        host,
    })
}

/// The `:authority` asked for (required: the extended CONNECT names a host like a Host
/// header does), with an `http`/`https` `:scheme`; a Host header beside it must name the
/// same authority (RFC 9113 §8.3.1), or the two could route differently.
pub(crate) fn authority<B>(req: &Request<B>) -> Result<String, HandshakeError> {
    // A classic CONNECT has an authority and nothing else to route on: it is refused as
    // such, whichever check meets it first.
    if req.method() == Method::CONNECT && req.extensions().get::<hyper::ext::Protocol>().is_none() {
        return Err(HandshakeError::PlainConnect);
    }
    let uri = req.uri();
    let target = uri
        .authority()
        .and_then(|a| valid_authority(a.as_str().as_bytes()))
        .ok_or(HandshakeError::Host)?;
    let scheme_ok = uri
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("https") || s.eq_ignore_ascii_case("http"));
    if !scheme_ok {
        return Err(HandshakeError::Target);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) => {}
        (Some(h), None) if h.as_bytes().eq_ignore_ascii_case(target.as_bytes()) => {}
        _ => return Err(HandshakeError::Host),
    }
    Ok(target.to_string())
}

/// HTTP/2 may split `Cookie` into one field per pair (RFC 9113 §8.2.3); an HTTP/1.1 hop
/// needs them joined with `; ` into one line.
pub(crate) fn join_cookies(h: &mut HeaderMap) {
    if h.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in h.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    // Each part was a valid value and `; ` is too, so the join is one.
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        h.insert(header::COOKIE, v);
    }
}

/// The 200 that opens the WebSocket on the client's stream (RFC 8441 §5): the backend's
/// headers (its chosen subprotocol among them) without what belongs to its HTTP/1.1 101.
pub(crate) fn accepted(mut backend_headers: HeaderMap) -> HeaderMap {
    for name in [
        header::SEC_WEBSOCKET_ACCEPT,
        header::UPGRADE,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        backend_headers.remove(name);
    }
    backend_headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(protocol: Option<&'static str>) -> hyper::http::request::Builder {
        let mut b = Request::builder()
            .method(Method::CONNECT)
            .version(hyper::Version::HTTP_2)
            .uri("https://example.com/chat")
            .header("sec-websocket-version", "13");
        if let Some(p) = protocol {
            b = b.extension(hyper::ext::Protocol::from_static(p));
        }
        b
    }

    fn check(b: hyper::http::request::Builder) -> Result<Hello, HandshakeError> {
        validate(&b.body(()).unwrap())
    }

    #[test]
    fn an_extended_connect_for_websocket_is_accepted() {
        let hello = check(connect(Some("websocket")).header("sec-websocket-protocol", "a, b"))
            .expect("valid");
        assert_eq!(hello.host, "example.com");
        assert_eq!(hello.protocols, ["a", "b"]);
        assert!(hello.key.is_none());
        assert!(check(connect(Some("WebSocket"))).is_ok());
    }

    #[test]
    fn malformed_extended_connects_get_their_status() {
        let status = |b| check(b).err().map(|e| e.status().as_u16());
        assert_eq!(status(connect(None)), Some(405));
        assert_eq!(status(connect(Some("h2c"))), Some(501));
        let no_version = Request::builder()
            .method(Method::CONNECT)
            .uri("https://example.com/chat")
            .extension(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(status(no_version), Some(400));
        assert_eq!(
            status(connect(Some("websocket")).header("sec-websocket-version", "8")),
            Some(400)
        );
        let bad_host = connect(Some("websocket")).header("host", "other.example");
        assert_eq!(status(bad_host), Some(400));
        let same_host = connect(Some("websocket")).header("host", "EXAMPLE.com");
        assert!(check(same_host).is_ok());
        let ws_scheme = Request::builder()
            .method(Method::CONNECT)
            .uri("ftp://example.com/chat")
            .header("sec-websocket-version", "13")
            .extension(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(status(ws_scheme), Some(400));
        let bad_offer = connect(Some("websocket")).header("sec-websocket-protocol", "a b");
        assert_eq!(status(bad_offer), Some(400));
        let expect = connect(Some("websocket")).header("expect", "something-else");
        assert_eq!(status(expect), Some(417));
        let continue_ = connect(Some("websocket")).header("expect", "100-continue");
        assert!(check(continue_).is_ok());
        let get = Request::builder()
            .method(Method::GET)
            .uri("https://example.com/chat");
        assert_eq!(status(get), Some(426));
    }

    #[test]
    fn split_cookies_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2"]);
    }
}
