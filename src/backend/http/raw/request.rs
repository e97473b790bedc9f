//! The request head sent to the backend: encoded straight from the client's, with the
//! target rewritten as the route says and wsgate's forwarding fields.

use hyper::header::HeaderValue;

use crate::backend::http::raw::Bodyless;
use crate::proto::headers::{ProxyHeaders, each_forwardable};
use crate::shared::pool::Backend;

/// The request head for `backend`: the target rewritten as the route says, the client's
/// forwardable fields, wsgate's, then its Host (or the client's with `preserve_host`).
pub(super) fn encode(out: &Bodyless<'_>, backend: &Backend, preserve_host: bool) -> Vec<u8> {
    let target = backend
        .url
        .request_target(out.remainder, out.path, out.query);
    let mut head = Vec::with_capacity(256 + target.len() + 64 * out.headers.len());
    head.extend_from_slice(out.method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    each_forwardable(out.headers, |name, value| {
        field(&mut head, name.as_str().as_bytes(), value.as_bytes());
    });
    head.extend_from_slice(out.proxy);
    let host = if preserve_host {
        Some(out.host.as_bytes())
    } else {
        backend.http_host.as_ref().map(HeaderValue::as_bytes)
    };
    // Last, where hyper's client puts it (a map's insert after the rest).
    if let Some(host) = host {
        field(&mut head, b"host", host);
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Appends wsgate's forwarding headers as field lines, for [`Bodyless::proxy`].
pub(crate) fn encode_proxy(proxy: &ProxyHeaders<'_>, out: &mut Vec<u8>) {
    proxy.each(|name, value| field(out, name.as_bytes(), value));
}

/// Appends `n` in decimal, without the allocation of a `to_string`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    // At most 20 turns: a u64 has at most 20 digits.
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends one field line.
pub(crate) fn field(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Method;
    use hyper::header::{self, HeaderMap};

    use crate::backend::balance;

    #[test]
    fn decimals_are_written_as_to_string_writes_them() {
        for n in [0, 7, 10, 1234, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn the_request_head_carries_host_forwardable_fields_and_wsgates() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("client.example"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let forwarding = crate::proto::forwarded::Forwarding::direct([127, 0, 0, 1].into());
        let proxy = ProxyHeaders::new(
            [127, 0, 0, 1].into(),
            &forwarding,
            false,
            Some("client.example"),
        );
        let mut lines = Vec::new();
        encode_proxy(&proxy, &mut lines);
        let url = crate::config::BackendUrl::parse("ws://127.0.0.1:9/base").expect("a valid URL");
        let backend = Backend::new(url);
        let out = Bodyless {
            method: &Method::GET,
            headers: &headers,
            proxy: &lines,
            path: "/app/x",
            remainder: "/x",
            query: Some("a=1"),
            host: "client.example",
            hash_key: None,
            sticky: balance::Sticky::default(),
            secure: false,
        };
        let head = String::from_utf8(encode(&out, &backend, false)).expect("ASCII");
        assert!(
            head.starts_with("GET /base/x?a=1 HTTP/1.1\r\naccept: */*\r\n"),
            "{head}"
        );
        assert!(
            head.contains("\r\nx-forwarded-for: 127.0.0.1\r\n"),
            "{head}"
        );
        assert!(head.ends_with("\r\nhost: 127.0.0.1:9\r\n\r\n"), "{head}");
        assert!(!head.contains("x-hop") && !head.contains("connection"));
        let kept = String::from_utf8(encode(&out, &backend, true)).expect("ASCII");
        assert!(kept.contains("\r\nhost: client.example\r\n"), "{kept}");
    }
}
