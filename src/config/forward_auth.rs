//! A route's `forward_auth` section: the auth service asked before a request goes in, what
//! is sent to it, what of its answer goes on to the backend, and the optional cache of its
//! positive answers. Also the route keys for client certificates (`client_cert`,
//! `client_cert_header`), which need the same header-name parsing.

use std::time::Duration;

use hyper::Method;
use hyper::header::HeaderName;
use serde::{Deserialize, Deserializer};

use super::BackendUrl;
use super::parse::{duration, scalar};

/// Headers that are never sent to the auth service, nor taken from its answer: the
/// upgrade's own (the reason forward auth breaks WebSockets elsewhere), the hop-by-hop
/// set, the framing of a body (the subrequest has none), and what wsgate sets itself.
const NEVER: &[&str] = &[
    "upgrade",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "host",
    "expect",
    "x-forwarded-method",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-uri",
    "x-forwarded-for",
];

/// Whether `name` may never be sent to the auth service or copied from its answer.
pub fn never_forwarded(name: &str) -> bool {
    NEVER.contains(&name) || name.starts_with("sec-websocket-")
}

/// The auth service of a route and how it is asked.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// The auth service's URL, `http://` or `https://` (an `https` one is verified against
    /// the public roots and the route's `tls_ca`).
    #[serde(deserialize_with = "auth_url")]
    pub url: BackendUrl,
    /// The subrequest's method. Default GET.
    #[serde(default = "get", deserialize_with = "method")]
    pub method: Method,
    /// Deadline of the whole subrequest (connect, TLS, answer and its body); past it the
    /// client gets 503. Default 5s.
    #[serde(default = "five_seconds", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Client headers sent to the auth service (every value). Default `[authorization, cookie]`.
    #[serde(default = "client_headers", deserialize_with = "header_names")]
    pub request_headers: Vec<HeaderName>,
    /// Headers of a 2xx answer copied onto the backend request; the client's own copies
    /// are always removed first. Default none.
    #[serde(default, deserialize_with = "header_names")]
    pub response_headers: Vec<HeaderName>,
    /// The answer header naming the client (for per-identity caps and the close report).
    /// Default none.
    #[serde(default, deserialize_with = "opt_header_name")]
    pub identity_header: Option<HeaderName>,
    /// Cache of positive answers; off when absent.
    #[serde(default)]
    pub cache: Option<AuthCacheConfig>,
}

/// How positive answers are cached: for `ttl`, keyed by the values of `key_headers` and
/// of the cookie `key_cookie` (a request carrying none of them is never cached).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthCacheConfig {
    /// How long an answer is reused. Required.
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Request headers whose values make the key. Default `[authorization]` when no
    /// `key_cookie` is given, else none.
    #[serde(default, deserialize_with = "opt_header_names")]
    pub key_headers: Option<Vec<HeaderName>>,
    /// A cookie whose value is part of the key. Default none.
    #[serde(default, deserialize_with = "cookie_name")]
    pub key_cookie: Option<String>,
    /// Answers kept at most. Default 10000.
    #[serde(default = "ten_thousand")]
    pub max_entries: usize,
}

impl AuthCacheConfig {
    /// The headers the key is made of.
    pub fn key_headers(&self) -> Vec<HeaderName> {
        match (&self.key_headers, &self.key_cookie) {
            (Some(h), _) => h.clone(),
            (None, Some(_)) => Vec::new(),
            (None, None) => vec![hyper::header::AUTHORIZATION],
        }
    }
}

/// Whether a route needs a verified client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertPolicy {
    /// A certificate, when the client presented one, is passed on; none is fine.
    #[default]
    Optional,
    /// A request without a verified client certificate gets 403.
    Required,
}

/// The default header carrying the client certificate's subject and SANs to the backend.
pub const CLIENT_CERT_HEADER: HeaderName = HeaderName::from_static("x-client-cert-subject");

fn get() -> Method {
    Method::GET
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

fn ten_thousand() -> usize {
    10_000
}

fn client_headers() -> Vec<HeaderName> {
    vec![hyper::header::AUTHORIZATION, hyper::header::COOKIE]
}

fn auth_url<'de, D: Deserializer<'de>>(d: D) -> Result<BackendUrl, D::Error> {
    scalar(d, "an http:// or https:// URL", |text| {
        let (secure, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(format!(
                "forward_auth url `{text}`: expected http://host:port/path or https://…"
            ));
        };
        // The WebSocket URL parser checks the same shape (host, port, no user info or
        // fragment); only the scheme differs.
        let ws = format!("{}://{rest}", if secure { "wss" } else { "ws" });
        let mut url = BackendUrl::parse(&ws).map_err(|e| {
            e.replace(&ws, text).replace(
                "expected ws://host:port/path or wss://…",
                "expected http://host:port/path or https://…",
            )
        })?;
        url.url = text.to_string();
        Ok(url)
    })
}

fn cookie_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    scalar(d, "a cookie name", |text| {
        if crate::proto::headers::is_token(text.as_bytes()) {
            Ok(Some(text.to_string()))
        } else {
            Err(format!(
                "key_cookie `{text}` must be a cookie name (letters, digits, `-`, `_` …)"
            ))
        }
    })
}

fn method<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
    scalar(d, "an HTTP method like GET", |text| match text {
        "GET" => Ok(Method::GET),
        "HEAD" => Ok(Method::HEAD),
        "POST" => Ok(Method::POST),
        _ => Err(format!("method `{text}`: expected GET, HEAD or POST")),
    })
}

/// A header name sent to or taken from the auth service: never one of [`NEVER`].
struct AuthName(HeaderName);

impl<'de> Deserialize<'de> for AuthName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        scalar(d, "a header name", |text| {
            let name = HeaderName::from_bytes(text.as_bytes())
                .map_err(|_| format!("`{text}` is not a header name"))?;
            if never_forwarded(name.as_str()) {
                return Err(format!(
                    "header `{text}` is never passed through forward auth (hop-by-hop, WebSocket or set by wsgate)"
                ));
            }
            Ok(AuthName(name))
        })
    }
}

fn header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HeaderName>, D::Error> {
    Ok(Vec::<AuthName>::deserialize(d)?
        .into_iter()
        .map(|n| n.0)
        .collect())
}

fn opt_header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<HeaderName>>, D::Error> {
    header_names(d).map(Some)
}

fn opt_header_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HeaderName>, D::Error> {
    Ok(Some(AuthName::deserialize(d)?.0))
}

/// `client_cert_header`: any header name but a hop-by-hop or WebSocket one.
pub(super) fn cert_header<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HeaderName>, D::Error> {
    opt_header_name(d)
}
