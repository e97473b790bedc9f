//! What a client asks for when it opens a WebSocket (an HTTP/1.1 upgrade or an HTTP/2
//! extended CONNECT), and every reason it can be refused, with its status.

use http_body_util::Full;
use hyper::Response;
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};

use crate::backend::error::BackendError;
use crate::proto::headers::{is_token, tokens};

/// The body of any response wsgate sends on the client hop: always known whole (a
/// refusal, a relayed refusal read whole, or the empty body of a 101).
pub type Body = Full<Bytes>;

/// Why an upgrade was refused; each maps to an HTTP status and a metric reason.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not an upgrade to WebSocket at all (or an upgrade to something else).
    #[error("expected an upgrade to websocket")]
    NotWebSocket,
    /// Upgrade requested with a method other than GET.
    #[error("method must be GET")]
    Method,
    /// HTTP/1.0 or another version.
    #[error("HTTP/1.1 required")]
    HttpVersion,
    /// `Connection` lacks the `upgrade` token.
    #[error("Connection header must contain `upgrade`")]
    ConnectionHeader,
    /// Missing, repeated or malformed `Sec-WebSocket-Key`.
    #[error("Sec-WebSocket-Key must be 16 bytes in base64")]
    Key,
    /// `Sec-WebSocket-Version` other than 13.
    #[error("unsupported Sec-WebSocket-Version (13 required)")]
    WsVersion,
    /// No `Host`, more than one, or one that is not an authority (RFC 9112 §3.2).
    #[error("exactly one Host header, an authority (host and optional port), required")]
    Host,
    /// An absolute-form target whose scheme or authority is not acceptable, or an
    /// authority-form target (CONNECT only) on a GET.
    #[error("request target must be a path or an http(s)/ws(s) URI with a valid authority")]
    Target,
    /// `Content-Length` over 0 or `Transfer-Encoding`: an upgrade has no body (RFC 9112
    /// §6.1), and body bytes must never reach the backend as if they were frames.
    #[error("an upgrade request carries no body")]
    Body,
    /// `Connection: close` beside `upgrade`: the connection cannot both close and switch,
    /// and hyper would announce `close` on the 101.
    #[error("Connection: close contradicts the upgrade")]
    ConnectionClose,
    /// An `Expect` other than `100-continue`, which is the only expectation defined (RFC
    /// 9110 §10.1.1); wsgate cannot meet one it does not know.
    #[error("the only expectation met is 100-continue")]
    Expectation,
    /// A `Sec-WebSocket-Protocol` offer that is not a comma-separated list of tokens.
    #[error("Sec-WebSocket-Protocol must list tokens")]
    Subprotocol,
    /// The path could not be normalised.
    #[error("bad path: {0}")]
    Path(#[from] crate::proto::path::PathError),
    /// No route matches.
    #[error("no route")]
    NoRoute,
    /// `Origin` not on the route's allowlist.
    #[error("origin not allowed")]
    Origin,
    /// No backend of the route completed the upgrade.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// wsgate is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// `max_connections` (global or the route's) is reached.
    #[error("too many {0}")]
    Overloaded(&'static str),
    /// An HTTP/2 CONNECT without `:protocol`: a request for a TCP tunnel.
    #[error("CONNECT is only served with :protocol websocket (RFC 8441)")]
    PlainConnect,
    /// An HTTP/2 extended CONNECT for a protocol other than `websocket`.
    #[error("only :protocol websocket is supported")]
    Protocol,
    /// An HTTP/2 extended CONNECT whose `Sec-WebSocket-Version` is not 13 (or missing):
    /// RFC 6455 §4.4's answer, with a status HTTP/2 allows (426 asks for an `Upgrade`,
    /// which HTTP/2 does not have).
    #[error("unsupported Sec-WebSocket-Version (13 required)")]
    ConnectWsVersion,
    /// Turned away at the route's door (authentication or admission), with its response.
    #[error("{0}")]
    Door(Box<crate::ingress::door::Refusal>),
}

impl HandshakeError {
    /// The HTTP status sent to the client.
    pub fn status(&self) -> StatusCode {
        use HandshakeError::*;
        match self {
            NotWebSocket | WsVersion => StatusCode::UPGRADE_REQUIRED,
            Method => StatusCode::METHOD_NOT_ALLOWED,
            HttpVersion | ConnectionHeader | ConnectionClose | Key | Host | Target | Body
            | Subprotocol | Path(_) | ConnectWsVersion => StatusCode::BAD_REQUEST,
            PlainConnect => StatusCode::METHOD_NOT_ALLOWED,
            Protocol => StatusCode::NOT_IMPLEMENTED,
            NoRoute => StatusCode::NOT_FOUND,
            Origin => StatusCode::FORBIDDEN,
            Expectation => StatusCode::EXPECTATION_FAILED,
            Backend(e) => e.status(),
            ShuttingDown | Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Door(r) => r.status,
        }
    }

    /// Short label for the `handshake_failures_total` metric.
    pub fn reason(&self) -> &'static str {
        use HandshakeError::*;
        match self {
            NotWebSocket => "not_websocket",
            Method => "method",
            HttpVersion => "http_version",
            ConnectionHeader | ConnectionClose => "connection_header",
            Key => "key",
            WsVersion | ConnectWsVersion => "ws_version",
            PlainConnect => "method",
            Protocol => "not_websocket",
            Host => "host",
            Target => "target",
            Body => "body",
            Expectation => "expect",
            Subprotocol => "subprotocol",
            Path(_) => "path",
            NoRoute => "no_route",
            Origin => "origin",
            Backend(e) => e.reason(),
            ShuttingDown => "shutting_down",
            Overloaded(_) => "max_connections",
            Door(r) => r.reason,
        }
    }

    /// The response the client gets for this refusal.
    pub(crate) fn response(&self) -> Response<Body> {
        if let HandshakeError::Door(refusal) = self {
            return refusal.response();
        }
        let mut res = Response::new(Full::new(Bytes::from(format!("{}\n", self))));
        *res.status_mut() = self.status();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        match self {
            HandshakeError::NotWebSocket | HandshakeError::WsVersion => {
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            HandshakeError::ConnectWsVersion => {
                h.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            HandshakeError::Method | HandshakeError::PlainConnect => {
                h.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            _ => {}
        }
        res
    }
}

/// What the client asked for, once validated.
pub(crate) struct Hello {
    /// The client's `Sec-WebSocket-Key` (none on HTTP/2, whose 200 has no accept key).
    pub(crate) key: Option<HeaderValue>,
    /// Subprotocols the client offered.
    pub(crate) protocols: Vec<String>,
    /// The authority asked for: the absolute-form target's (RFC 9112 §3.2.2), else Host's.
    pub(crate) host: String,
}

/// The subprotocols offered in `Sec-WebSocket-Protocol`, which must list tokens.
pub(crate) fn offered_subprotocols(h: &HeaderMap) -> Result<Vec<String>, HandshakeError> {
    // Checked on the raw values: `tokens` skips what is not UTF-8, which would let such a
    // line through to the backend unparsed.
    let offers_ok = h.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().all(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .all(|t| t.is_empty() || is_token(t))
    });
    if !offers_ok {
        return Err(HandshakeError::Subprotocol);
    }
    Ok(tokens(h, &header::SEC_WEBSOCKET_PROTOCOL).collect())
}

/// Only `Expect: 100-continue` is met: an upgrade (or extended CONNECT) has no body, so it
/// has nothing to wait for and is met by the final answer; it is never forwarded (not on
/// the allowlist of `forwardable`).
pub(crate) fn check_expectation(h: &HeaderMap) -> Result<(), HandshakeError> {
    let expect_ok = h.get_all(header::EXPECT).iter().all(|v| {
        v.as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"100-continue")
    });
    if expect_ok {
        Ok(())
    } else {
        Err(HandshakeError::Expectation)
    }
}
