//! HTTP header helpers shared by both hops: header tokens, and which of a peer's headers
//! may be forwarded to the other hop (RFC 9110 §7.6.1).

use std::net::IpAddr;

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

/// The `Forwarded` element wsgate sends for one hop (RFC 7239 §4): the client's address
/// (an IPv6 literal bracketed and quoted), the Host it asked for, and its protocol.
pub fn forwarded_element(client: IpAddr, host: Option<&str>, proto: &str) -> String {
    let for_ip = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    match host {
        Some(host) => format!("for={for_ip};host=\"{host}\";proto={proto}"),
        None => format!("for={for_ip};proto={proto}"),
    }
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

    #[test]
    fn forwarded_element_quotes_ipv6_and_host() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            forwarded_element(v4, Some("chat.example.com"), "https"),
            "for=192.0.2.1;host=\"chat.example.com\";proto=https"
        );
        assert_eq!(
            forwarded_element(v6, None, "http"),
            "for=\"[2001:db8::1]\";proto=http"
        );
    }
}
