//! HTTP header helpers shared by both hops: header tokens, which of a peer's headers
//! may be forwarded to the other hop (RFC 9110 §7.6.1), the authority grammar a Host must
//! match, and the quoting of the values wsgate writes itself.

use std::net::IpAddr;

use bytes::Bytes;
use hyper::header::{self, GetAll, HeaderMap, HeaderName, HeaderValue};

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

/// Whether any instance of a header lists `token` (ASCII case-insensitive); the same
/// reading as [`tokens`], without making a `String` of each (asked on every request).
pub fn has_token(h: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    // On bytes: a value `to_str` accepts is visible ASCII and tabs, so its Unicode trim is
    // the ASCII one, and a byte split is the char split without its searcher's cost (this
    // runs several times on every upgrade).
    lists(&h.get_all(name), token)
}

/// Whether `values` list `token`, read as [`has_token`] reads them.
fn lists(values: &GetAll<'_, HeaderValue>, token: &str) -> bool {
    lists_token(values.iter().map(HeaderValue::as_bytes), token)
}

/// Whether the raw field values `values` list `token` (case-insensitive), read as
/// [`has_token`] reads a map's: a value that is not visible ASCII (what
/// `HeaderValue::to_str` accepts) lists nothing.
pub fn lists_token<'a>(values: impl Iterator<Item = &'a [u8]>, token: &str) -> bool {
    !token.is_empty() && listed(values).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// The comma-separated items of the raw field `values`, trimmed, as [`has_token`] reads
/// them: a value that is not visible ASCII lists nothing.
fn listed<'a>(values: impl Iterator<Item = &'a [u8]>) -> impl Iterator<Item = &'a [u8]> {
    values
        .filter(|v| v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)))
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// Whether a header describes one hop only and is never forwarded (RFC 9110 §7.6.1), or is
/// one of the WebSocket and forwarding headers wsgate sets itself on each hop. A `match`
/// (asked for every header of every request) rather than a scan of a list.
fn not_forwarded(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection"
            | b"keep-alive"
            | b"proxy-connection"
            | b"proxy-authenticate"
            | b"proxy-authorization"
            | b"te"
            | b"trailer"
            | b"transfer-encoding"
            | b"upgrade"
            | b"host"
            | b"content-length"
            | b"sec-websocket-key"
            | b"sec-websocket-accept"
            | b"sec-websocket-version"
            | b"sec-websocket-extensions"
            | b"x-forwarded-for"
            | b"x-forwarded-proto"
            | b"x-forwarded-host"
            | b"x-real-ip"
            | b"forwarded"
            // An upgrade has no body, so there is nothing to continue: wsgate answers the
            // request itself (RFC 9110 §10.1.1) and the expectation ends on this hop.
            | b"expect"
    )
}

/// Whether a header named `name` (lowercase, as `HeaderName` keeps it) is forwarded from
/// a message whose `Connection` values are `connection`: not hop-by-hop, not one wsgate
/// sets, not listed in `Connection`. The one test behind [`forwardable`],
/// [`each_forwardable`] and [`strip_unforwardable`]; it allocates nothing.
fn forwarded(name: &str, connection: &GetAll<'_, HeaderValue>) -> bool {
    !not_forwarded(name.as_bytes()) && !lists(connection, name)
}

/// [`forwardable`]'s test for a field read straight from a head's bytes: `name`
/// lowercase, `connection` the message's `Connection` values.
pub fn forwarded_field(name: &[u8], connection: &[&[u8]]) -> bool {
    !not_forwarded(name)
        && !connection
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
}

/// Copies `from` without hop-by-hop headers, without those named in `Connection`, and
/// without the ones wsgate sets itself; done before wsgate adds its own.
pub fn forwardable(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(from.len() + 8);
    each_forwardable(from, |name, value| {
        out.append(name.clone(), value.clone());
    });
    out
}

/// Calls `each` with every header [`forwardable`] copies, in order, copying nothing: for a
/// request serialised straight to bytes (the backend upgrade), which needs no map.
pub fn each_forwardable<'h>(
    from: &'h HeaderMap,
    mut each: impl FnMut(&'h HeaderName, &'h HeaderValue),
) {
    let connection = from.get_all(header::CONNECTION);
    // Usually `Connection` names only what is never forwarded anyway (`Upgrade`,
    // `keep-alive`): then no header needs it scanned again (~60 instructions a header).
    // Found out at the first header that could be forwarded, if any.
    let mut names_more = None;
    for (name, value) in from {
        if not_forwarded(name.as_str().as_bytes()) {
            continue;
        }
        let names_more =
            *names_more.get_or_insert_with(|| lists_any(&connection, |t| !not_forwarded_token(t)));
        if !(names_more && lists(&connection, name.as_str())) {
            each(name, value);
        }
    }
}

/// Whether any token `values` list (read as [`has_token`] reads them) passes `test`.
fn lists_any(values: &GetAll<'_, HeaderValue>, mut test: impl FnMut(&[u8]) -> bool) -> bool {
    listed(values.iter().map(HeaderValue::as_bytes)).any(|t| !t.is_empty() && test(t))
}

/// [`not_forwarded`] for a token as listed, in any case; a token too long for any of
/// those names is not one of them.
fn not_forwarded_token(token: &[u8]) -> bool {
    let mut lower = [0u8; 32];
    let Some(lower) = lower.get_mut(..token.len()) else {
        return false;
    };
    lower.copy_from_slice(token);
    lower.make_ascii_lowercase();
    not_forwarded(lower)
}

/// Removes from `h`, in place, what [`forwardable`] would not copy: for a map wsgate owns
/// and sends on, which spares building a second one.
pub fn strip_unforwardable(h: &mut HeaderMap) {
    let connection = h.get_all(header::CONNECTION);
    let doomed: Vec<HeaderName> = h
        .keys()
        .filter(|name| !forwarded(name.as_str(), &connection))
        .cloned()
        .collect();
    for name in &doomed {
        h.remove(name);
    }
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
    /// `None` when it is `xff`'s text (no trusted chain).
    real_ip: Option<String>,
    proto: &'static str,
    host: Option<&'h str>,
    forwarded: String,
}

/// `X-Forwarded-For`.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Real-IP`.
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Forwarded-Proto`.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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
        let peer_ip = ip_text(peer);
        let element = forwarded_with(peer, &peer_ip, host, proto);
        let prior = forwarding.prior.as_deref();
        let forwarded = match prior.and_then(|p| p.forwarded.as_deref()) {
            Some(chain) => format!("{chain}, {element}"),
            None => element,
        };
        let chain = prior.and_then(|p| p.xff.as_deref());
        // Without a chain to append to, and the peer the client, both headers are one text.
        let real_ip =
            (chain.is_some() || forwarding.client != peer).then(|| ip_text(forwarding.client));
        let xff = match chain {
            Some(chain) => format!("{chain}, {peer_ip}"),
            None => peer_ip,
        };
        ProxyHeaders {
            xff,
            real_ip,
            proto,
            host,
            forwarded,
        }
    }

    /// Calls `add(name, value)` for each header, in a fixed order.
    pub fn each(&self, mut add: impl FnMut(&'static str, &[u8])) {
        add("x-forwarded-for", self.xff.as_bytes());
        add(
            "x-real-ip",
            self.real_ip.as_ref().unwrap_or(&self.xff).as_bytes(),
        );
        add("x-forwarded-proto", self.proto.as_bytes());
        if let Some(host) = self.host {
            add("x-forwarded-host", host.as_bytes());
        }
        add("forwarded", self.forwarded.as_bytes());
    }

    /// Inserts the headers into `h` (replacing any of the same name), as [`each`] names
    /// them, with names known in advance and the values' text moved rather than copied.
    ///
    /// [`each`]: ProxyHeaders::each
    pub fn insert_into(self, h: &mut HeaderMap) {
        if let Ok(xff) = HeaderValue::from_maybe_shared(Bytes::from(self.xff)) {
            let real_ip = match self.real_ip {
                None => Some(xff.clone()),
                Some(ip) => HeaderValue::from_maybe_shared(Bytes::from(ip)).ok(),
            };
            h.insert(X_FORWARDED_FOR, xff);
            if let Some(ip) = real_ip {
                h.insert(X_REAL_IP, ip);
            }
        }
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        if let Some(host) = self.host
            && let Ok(v) = HeaderValue::from_str(host)
        {
            h.insert(X_FORWARDED_HOST, v);
        }
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(self.forwarded)) {
            h.insert(header::FORWARDED, v);
        }
    }
}

/// The address as `Display` writes it; an IPv4 address without the formatting machinery,
/// which cost more than the rest of a plain request's header rewrite.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = Vec::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push(b'.');
                }
                if octet >= 100 {
                    s.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    s.push(b'0' + octet / 10 % 10);
                }
                s.push(b'0' + octet % 10);
            }
            // Digits and dots only.
            String::from_utf8(s).unwrap_or_default()
        }
        IpAddr::V6(v6) => v6.to_string(),
    }
}

/// The `Forwarded` element wsgate sends for one hop (RFC 7239 §4): the client's address
/// (an IPv6 literal bracketed and quoted), the Host it asked for as a quoted-string, and
/// its protocol. (What [`ProxyHeaders`] writes; on its own for the tests of that text.)
#[cfg(test)]
pub fn forwarded_element(client: IpAddr, host: Option<&str>, proto: &str) -> String {
    forwarded_with(client, &ip_text(client), host, proto)
}

/// [`forwarded_element`] with the address's text already made.
fn forwarded_with(client: IpAddr, ip: &str, host: Option<&str>, proto: &str) -> String {
    let mut out = String::with_capacity(ip.len() + host.map_or(0, str::len) + 32);
    out.push_str("for=");
    match client {
        IpAddr::V4(_) => out.push_str(ip),
        IpAddr::V6(_) => {
            out.push_str("\"[");
            out.push_str(ip);
            out.push_str("]\"");
        }
    }
    if let Some(host) = host {
        out.push_str(";host=");
        push_quoted(&mut out, host);
    }
    out.push_str(";proto=");
    out.push_str(proto);
    out
}

/// `s` as an HTTP quoted-string (RFC 9110 §5.6.4): `"` and `\\` escaped with a backslash,
/// so whatever `s` holds it stays one parameter value. Controls other than HTAB cannot be
/// quoted at all; callers pass values already checked (a Host against [`valid_authority`]).
#[cfg(test)]
pub fn quoted_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_quoted(&mut out, s);
    out
}

/// Appends `s` to `out` as [`quoted_string`] makes it.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    // The usual value has nothing to escape: copied whole rather than char by char.
    if !s.contains(['"', '\\']) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
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

    /// The shortcut for a `Connection` that names only never-forwarded headers keeps
    /// exactly what the per-header test keeps, whatever the case and shape of its tokens.
    #[test]
    fn each_forwardable_keeps_what_the_per_header_test_keeps() {
        let long = "x-".repeat(20);
        let connections: [&[&[u8]]; 9] = [
            &[],
            &[b"Upgrade"],
            &[b"UPGRADE, Keep-Alive, te"],
            &[b"upgrade", b"X-Secret"],
            &[b"Upgrade, x-SECRET ,"],
            &[b" , ,upgrade"],
            &[b"close"],
            &[long.as_bytes()],
            &[b"upgrade, \xe9, x-secret"],
        ];
        for values in connections {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("connection", HeaderValue::from_bytes(v).unwrap());
            }
            h.append("x-secret", HeaderValue::from_static("1"));
            h.append("close", HeaderValue::from_static("2"));
            h.append("origin", HeaderValue::from_static("https://o.test"));
            h.append("upgrade", HeaderValue::from_static("websocket"));
            h.append(
                HeaderName::from_bytes(long.as_bytes()).unwrap(),
                HeaderValue::from_static("3"),
            );
            let connection = h.get_all(header::CONNECTION);
            let expected: Vec<&str> = h
                .keys()
                .filter(|n| forwarded(n.as_str(), &connection))
                .map(HeaderName::as_str)
                .collect();
            let mut kept = Vec::new();
            each_forwardable(&h, |n, _| kept.push(n.as_str()));
            assert_eq!(kept, expected, "Connection: {values:?}");
        }
    }

    #[test]
    fn each_forwardable_names_what_forwardable_copies_in_order() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade, X-SECRET,"));
        h.append("connection", HeaderValue::from_static("x-other"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("2"));
        h.append("cookie", HeaderValue::from_static("a=b"));
        h.append("cookie", HeaderValue::from_static("c=d"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("origin", HeaderValue::from_static("https://o.test"));
        let mut seen = HeaderMap::new();
        each_forwardable(&h, |n, v| {
            seen.append(n.clone(), v.clone());
        });
        assert_eq!(seen, forwardable(&h));
        let order: Vec<_> = seen
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        let expected: Vec<_> = forwardable(&h)
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(order.len(), 3);
        for ((n, v), (en, ev)) in order.iter().zip(&expected) {
            assert_eq!((*n, *v), (en.as_str(), ev.as_slice()));
        }
    }

    #[test]
    fn stripping_in_place_keeps_what_forwardable_copies() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("content-length", HeaderValue::from_static("5"));
        h.append("set-cookie", HeaderValue::from_static("a=1"));
        h.append("set-cookie", HeaderValue::from_static("b=2"));
        h.insert("date", HeaderValue::from_static("today"));
        let copied = forwardable(&h);
        strip_unforwardable(&mut h);
        assert_eq!(h, copied);
        assert_eq!(h.get_all("set-cookie").iter().count(), 2);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn has_token_reads_lists_and_never_matches_nothing() {
        let mut h = HeaderMap::new();
        h.append(
            "connection",
            HeaderValue::from_static("keep-alive ,, Close"),
        );
        assert!(has_token(&h, &header::CONNECTION, "close"));
        assert!(has_token(&h, &header::CONNECTION, "KEEP-ALIVE"));
        assert!(!has_token(&h, &header::CONNECTION, ""));
        assert!(!has_token(&h, &header::CONNECTION, "upgrade"));
    }

    /// Behind a trusted proxy, the chain gets wsgate's hop (the peer) appended, and
    /// `X-Real-IP` is the client policy uses, whichever way the headers are written.
    #[test]
    fn proxy_headers_append_to_a_trusted_chain() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let forwarding = Forwarding {
            client: "203.0.113.7".parse().unwrap(),
            prior: Some(std::sync::Arc::new(crate::proto::forwarded::Prior {
                xff: Some("203.0.113.7".into()),
                forwarded: Some("for=203.0.113.7".into()),
            })),
        };
        let headers = ProxyHeaders::new(peer, &forwarding, false, None);
        let mut each = Vec::new();
        headers.each(|name, value| each.push((name, String::from_utf8_lossy(value).into_owned())));
        let mut h = HeaderMap::new();
        headers.insert_into(&mut h);
        for (name, value) in each {
            assert_eq!(h[name], value.as_str(), "{name}");
        }
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.2");
        assert_eq!(h["x-real-ip"], "203.0.113.7");
        assert_eq!(h["forwarded"], "for=203.0.113.7, for=10.0.0.2;proto=http");

        // A trusted peer whose chain named no readable client is the client itself.
        let unreadable = Forwarding {
            client: peer,
            ..forwarding
        };
        let mut h = HeaderMap::new();
        ProxyHeaders::new(peer, &unreadable, false, None).insert_into(&mut h);
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.2");
        assert_eq!(h["x-real-ip"], "10.0.0.2");
    }

    #[test]
    fn proxy_headers_write_the_address_as_display_does() {
        for ip in ["0.0.0.0", "9.10.99.100", "255.255.255.255", "2001:db8::1"] {
            let addr: IpAddr = ip.parse().unwrap();
            let mut h = HeaderMap::new();
            ProxyHeaders::new(addr, &Forwarding::direct(addr), true, Some("h:1"))
                .insert_into(&mut h);
            assert_eq!(h["x-forwarded-for"], addr.to_string().as_str());
            assert_eq!(h["x-real-ip"], addr.to_string().as_str());
            assert_eq!(h["x-forwarded-proto"], "https");
            assert_eq!(h["x-forwarded-host"], "h:1");
            assert_eq!(
                h["forwarded"],
                forwarded_element(addr, Some("h:1"), "https").as_str()
            );
        }
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
