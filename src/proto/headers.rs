//! HTTP header helpers shared by both hops: header tokens, and which of a peer's headers
//! may be forwarded to the other hop (RFC 9110 §7.6.1).

use hyper::header::{self, HeaderMap, HeaderName};

/// Comma-separated tokens of every instance of a header, trimmed.
pub fn tokens<'h>(h: &'h HeaderMap, name: &HeaderName) -> impl Iterator<Item = String> + 'h {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Whether any instance of a header lists `token` (ASCII case-insensitive).
pub fn has_token(h: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    tokens(h, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// Headers that describe one hop only and are never forwarded (RFC 9110 §7.6.1), plus
/// the WebSocket and forwarding headers wsgate sets itself on each hop.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-accept",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
];

/// Copies `from` without hop-by-hop headers, without those named in `Connection`, and
/// without the ones wsgate sets itself; done before wsgate adds its own.
pub fn forwardable(from: &HeaderMap) -> HeaderMap {
    let listed: Vec<String> = tokens(from, &header::CONNECTION)
        .map(|t| t.to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(from.len() + 8);
    for (name, value) in from {
        let n = name.as_str();
        if NOT_FORWARDED.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn strips_hop_by_hop_and_listed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert(
            "sec-websocket-extensions",
            HeaderValue::from_static("permessage-deflate"),
        );
        h.insert("cookie", HeaderValue::from_static("a=b"));
        let out = forwardable(&h);
        assert_eq!(out.len(), 1);
        assert_eq!(out["cookie"], "a=b");
    }
}
