//! HTTP header helpers shared by both hops: header tokens, which of a peer's headers
//! may be forwarded to the other hop (RFC 9110 §7.6.1), the authority grammar a Host must
//! match, and the quoting of the values wsgate writes itself.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName};

use crate::proto::forwarded::Forwarding;

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
    // An upgrade has no body, so there is nothing to continue: wsgate answers the
    // request itself (RFC 9110 §10.1.1) and the expectation ends on this hop.
    "expect",
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

/// The forwarding headers wsgate writes on the backend hop of every request, upgrade or
/// plain: the client's address (`X-Forwarded-For`, `X-Real-IP`), the protocol it used
/// (`X-Forwarded-Proto`), the authority it asked for (`X-Forwarded-Host`, when known) and
/// all three again as one `Forwarded` element. The client's own values were removed by
/// [`forwardable`] first, so these replace them; from a trusted proxy, `X-Forwarded-For`
/// and `Forwarded` are its values with wsgate's hop (the peer's address) appended, and
/// `X-Real-IP` the client address policy uses ([`Forwarding::client`]).
pub struct ProxyHeaders<'h> {
    xff: String,
    real_ip: String,
    proto: &'static str,
    host: Option<&'h str>,
    forwarded: String,
}

impl<'h> ProxyHeaders<'h> {
    /// The headers for a request from `peer` (the hop wsgate took it from) whose chain is
    /// `forwarding`, over TLS or not; `host` was checked against [`valid_authority`].
    pub fn new(
        peer: IpAddr,
        forwarding: &Forwarding,
        tls: bool,
        host: Option<&'h str>,
    ) -> ProxyHeaders<'h> {
        let proto = if tls { "https" } else { "http" };
        let element = forwarded_element(peer, host, proto);
        let prior = forwarding.prior.as_deref();
        let xff = match prior.and_then(|p| p.xff.as_deref()) {
            Some(chain) => format!("{chain}, {peer}"),
            None => peer.to_string(),
        };
        let forwarded = match prior.and_then(|p| p.forwarded.as_deref()) {
            Some(chain) => format!("{chain}, {element}"),
            None => element,
        };
        ProxyHeaders {
            xff,
            real_ip: forwarding.client.to_string(),
            proto,
            host,
            forwarded,
        }
    }

    /// Calls `add(name, value)` for each header, in a fixed order.
    pub fn each(&self, mut add: impl FnMut(&'static str, &[u8])) {
        add("x-forwarded-for", self.xff.as_bytes());
        add("x-real-ip", self.real_ip.as_bytes());
        add("x-forwarded-proto", self.proto.as_bytes());
        if let Some(host) = self.host {
            add("x-forwarded-host", host.as_bytes());
        }
        add("forwarded", self.forwarded.as_bytes());
    }
}

/// The `Forwarded` element wsgate sends for one hop (RFC 7239 §4): the client's address
/// (an IPv6 literal bracketed and quoted), the Host it asked for as a quoted-string, and
/// its protocol.
pub fn forwarded_element(client: IpAddr, host: Option<&str>, proto: &str) -> String {
    let for_ip = match client {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    match host {
        Some(host) => format!("for={for_ip};host={};proto={proto}", quoted_string(host)),
        None => format!("for={for_ip};proto={proto}"),
    }
}

/// `s` as an HTTP quoted-string (RFC 9110 §5.6.4): `"` and `\\` escaped with a backslash,
/// so whatever `s` holds it stays one parameter value. Controls other than HTAB cannot be
/// quoted at all; callers pass values already checked (a Host against [`valid_authority`]).
pub fn quoted_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Whether `b` is an HTTP token (RFC 9110 §5.6.2): one or more tchar.
pub fn is_token(b: &[u8]) -> bool {
    !b.is_empty()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// `value` as a str when it is an authority a client may ask for (RFC 9110 §7.2, RFC 3986
/// §3.2.2–3): a reg-name or IPv4 address, or a bracketed IPv6 literal, with an optional
/// port. No userinfo, no IPvFuture, no zone identifier.
///
/// reg-name is narrowed to unreserved characters and percent-encodings: its sub-delims
/// (`;`, `,`, `=`, `'`…) never occur in a DNS name, and `;` and `,` separate the pairs and
/// elements of the `Forwarded` header the Host is copied into.
pub fn valid_authority(value: &[u8]) -> Option<&str> {
    let (host_ok, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let close = rest.iter().position(|&b| b == b']')?;
            let literal = std::str::from_utf8(&rest[..close]).ok()?;
            let ok = literal.parse::<std::net::Ipv6Addr>().is_ok();
            match &rest[close + 1..] {
                [] => (ok, None),
                [b':', port @ ..] => (ok, Some(port)),
                _ => return None,
            }
        }
        None => match value.iter().position(|&b| b == b':') {
            Some(colon) => (reg_name(&value[..colon]), Some(&value[colon + 1..])),
            None => (reg_name(value), None),
        },
    };
    // A port is digits (RFC 3986 allows none at all), and fits in 16 bits.
    let port_ok = port.is_none_or(|p| {
        p.len() <= 5
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p)
                .ok()
                .is_none_or(|p| p.is_empty() || p.parse::<u16>().is_ok())
    });
    if !(host_ok && port_ok) {
        return None;
    }
    // Only ASCII got this far.
    std::str::from_utf8(value).ok()
}

/// A non-empty reg-name of unreserved characters and percent-encodings (see
/// [`valid_authority`] for why sub-delims are left out).
fn reg_name(b: &[u8]) -> bool {
    if b.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => i += 1,
            b'%' if b.len() > i + 2
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                i += 3
            }
            _ => return false,
        }
    }
    true
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

    #[test]
    fn forwarded_element_escapes_whatever_host_it_is_given() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            forwarded_element(v4, Some("a\";for=\"6.6.6.6\\"), "http"),
            "for=192.0.2.1;host=\"a\\\";for=\\\"6.6.6.6\\\\\";proto=http"
        );
        assert_eq!(quoted_string(""), "\"\"");
    }

    #[test]
    fn authorities_follow_the_grammar() {
        for ok in [
            "example.com",
            "EXAMPLE.com:8080",
            "example.com:",
            "127.0.0.1",
            "127.0.0.1:65535",
            "[::1]",
            "[2001:db8::1]:443",
            "[::ffff:192.0.2.1]",
            "caf%C3%A9.example",
            "a_b-c~d.",
        ] {
            assert_eq!(valid_authority(ok.as_bytes()), Some(ok), "{ok}");
        }
        for bad in [
            &b""[..],
            b":80",
            b"a\"b",
            b"a;for=x",
            b"a,b",
            b"a b",
            b"a\tb",
            b"a\x01b",
            b"u@h",
            b"u:p@h:1",
            b"[h]",
            b"[::1",
            b"::1",
            b"[::1]x",
            b"[::1]:x",
            b"[v1.fe]",
            b"[fe80::1%25eth0]",
            b"h:http",
            b"h:65536",
            b"h:000001",
            b"h:-1",
            b"h:1:2",
            b"a%zz",
            b"a%2",
            b"h\xc3\xb6",
            b"h\xff",
            b"h/p",
            b"h?q",
            b"h#f",
            b"a=b",
            b"a'b",
            b"a\\b",
        ] {
            assert_eq!(
                valid_authority(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn tokens_are_tchar_only() {
        assert!(is_token(b"chat.v2+json"));
        for bad in [
            &b""[..],
            b"a b",
            b"a,b",
            b"a\"",
            b"\xc3\xa9",
            b"a;b",
            b"(x)",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }
}
