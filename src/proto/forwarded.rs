//! Forwarding headers that arrive from a proxy wsgate trusts (`trusted_proxies`): the chain
//! of hops it reports (`X-Forwarded-For`, else the `for=` of `Forwarded`, RFC 7239), the
//! client address policy uses, and the values wsgate appends its own hop to. From any other
//! peer these headers are not believed: the peer itself is the client.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use hyper::header::{FORWARDED, HeaderMap, HeaderName};

/// Who a request comes from, as far as its hops can be believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    /// The address for policy (per-IP caps, `hash_on: client_ip`, logs): walking the
    /// chain from the right, the first hop that is not trusted; the leftmost when all are;
    /// the last trusted one when the next entry is not an address (a trusted proxy wrote
    /// something wsgate cannot read, and it is that proxy who is known to have sent it).
    pub client: IpAddr,
    /// The trusted peer's headers, which wsgate's own hop is appended to.
    pub prior: Option<Arc<Prior>>,
}

/// The forwarding headers a trusted peer sent, each one line (several joined by `, `).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prior {
    /// Its `X-Forwarded-For`.
    pub xff: Option<String>,
    /// Its `Forwarded`.
    pub forwarded: Option<String>,
}

impl Forwarding {
    /// A peer whose headers are not believed: it is the client.
    pub fn direct(peer: IpAddr) -> Forwarding {
        Forwarding {
            client: peer,
            prior: None,
        }
    }

    /// Reads the chain of a request from `peer`; `trusted` says which addresses are
    /// trusted proxies.
    pub fn read(headers: &HeaderMap, peer: IpAddr, trusted: impl Fn(IpAddr) -> bool) -> Self {
        if !trusted(peer) {
            return Forwarding::direct(peer);
        }
        let xff = joined(headers, &HeaderName::from_static("x-forwarded-for"));
        let forwarded = joined(headers, &FORWARDED);
        let hops: Vec<&str> = match (&xff, &forwarded) {
            (Some(x), _) => split_outside_quotes(x, b',').collect(),
            (None, Some(f)) => split_outside_quotes(f, b',').map(for_value).collect(),
            (None, None) => Vec::new(),
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = node_ip(hop) else { break };
            client = ip;
            if !trusted(ip) {
                break;
            }
        }
        let prior =
            (xff.is_some() || forwarded.is_some()).then(|| Arc::new(Prior { xff, forwarded }));
        Forwarding { client, prior }
    }
}

/// Every value of `name`, joined by `, ` (several lines are one list, RFC 9110 §5.3);
/// `None` when there is none, or a value is not visible ASCII.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for value in headers.get_all(name) {
        let v = value.to_str().ok()?.trim();
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(v);
            }
            None => out = Some(v.to_string()),
        }
    }
    out
}

/// The parts of `s` between `sep`s that are not inside a quoted-string, trimmed.
fn split_outside_quotes(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let bytes = s.as_bytes();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    let mut cuts = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                cuts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    cuts.push(&s[start..]);
    cuts.into_iter().map(str::trim)
}

/// The `for=` value of one `Forwarded` element (empty when it has none).
fn for_value(element: &str) -> &str {
    split_outside_quotes(element, b';')
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("for")
                .then_some(value.trim())
        })
        .unwrap_or("")
}

/// The address of one hop: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:80`, any of them as a quoted-string; `None` for anything else (RFC 7239's
/// `unknown` and obfuscated `_names` included).
fn node_ip(hop: &str) -> Option<IpAddr> {
    let hop = hop
        .strip_prefix('"')
        .and_then(|h| h.strip_suffix('"'))
        .unwrap_or(hop);
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok
            .then(|| v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (v4, port) = hop.split_once(':')?;
    port.parse::<u16>().ok()?;
    v4.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    /// 10.0.0.0/8 and 2001:db8:ffff::/48 are the trusted proxies.
    fn trusted(ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => v4.octets()[0] == 10,
            IpAddr::V6(v6) => v6.segments()[..3] == [0x2001, 0xdb8, 0xffff],
        }
    }

    fn client(pairs: &[(&'static str, &'static str)], peer: &str) -> IpAddr {
        Forwarding::read(&headers(pairs), ip(peer), trusted).client
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let h = [("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")];
        let f = Forwarding::read(&headers(&h), ip("198.51.100.1"), trusted);
        assert_eq!(f, Forwarding::direct(ip("198.51.100.1")));
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let h = [("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.1.1")];
        assert_eq!(client(&h, "10.0.0.1"), ip("203.0.113.9"));
        // Several lines are one list.
        let h = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
        ];
        assert_eq!(client(&h, "10.0.0.1"), ip("203.0.113.9"));
        // All trusted: the leftmost.
        let h = [("x-forwarded-for", "10.9.9.9, 10.1.1.1")];
        assert_eq!(client(&h, "10.0.0.1"), ip("10.9.9.9"));
        // No header: the trusted peer itself.
        assert_eq!(client(&[], "10.0.0.1"), ip("10.0.0.1"));
        // A mapped IPv4 peer is trusted as its IPv4 address.
        let h = [("x-forwarded-for", "203.0.113.9")];
        assert_eq!(client(&h, "::ffff:10.0.0.1"), ip("203.0.113.9"));
    }

    #[test]
    fn ipv6_ports_and_garbage() {
        let h = [("x-forwarded-for", "2001:db8::7, 2001:db8:ffff::2")];
        assert_eq!(client(&h, "10.0.0.1"), ip("2001:db8::7"));
        let h = [("x-forwarded-for", "[2001:db8::7]:443, 203.0.113.9:5000")];
        assert_eq!(client(&h, "10.0.0.1"), ip("203.0.113.9"));
        let h = [("x-forwarded-for", "[2001:db8::7]:443, 10.2.2.2:1")];
        assert_eq!(client(&h, "10.0.0.1"), ip("2001:db8::7"));
        // Garbage right of the client: the last trusted hop that handed it over.
        for garbage in [
            "6.6.6.6, evil, 10.2.2.2",
            "6.6.6.6, , 10.2.2.2",
            "6.6.6.6, 10.2.2.2:x, 10.2.2.2",
        ] {
            let h = [("x-forwarded-for", garbage)];
            assert_eq!(
                Forwarding::read(&headers(&h), ip("10.0.0.1"), trusted).client,
                ip("10.2.2.2"),
                "{garbage}"
            );
        }
        let h = [("x-forwarded-for", "nonsense")];
        assert_eq!(client(&h, "10.0.0.1"), ip("10.0.0.1"));
        let h = [("x-forwarded-for", "[::1, 1.2.3.4]")];
        assert_eq!(client(&h, "10.0.0.1"), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let h = [(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::7]:443\";proto=https;host=\"a,b\", For=10.3.3.3",
        )];
        let f = Forwarding::read(&headers(&h), ip("10.0.0.1"), trusted);
        assert_eq!(f.client, ip("2001:db8::7"));
        let prior = f.prior.unwrap();
        assert_eq!(prior.xff, None);
        assert_eq!(prior.forwarded.as_deref(), Some(h[0].1));
        let h = [("forwarded", "for=unknown, for=10.3.3.3")];
        assert_eq!(client(&h, "10.0.0.1"), ip("10.3.3.3"));
        let h = [("forwarded", "for=_hidden")];
        assert_eq!(client(&h, "10.0.0.1"), ip("10.0.0.1"));
        // X-Forwarded-For wins when both are there.
        let h = [
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9"),
        ];
        assert_eq!(client(&h, "10.0.0.1"), ip("203.0.113.9"));
    }
}
