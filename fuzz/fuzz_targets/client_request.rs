//! A client's upgrade request head: validation, path normalisation and header forwarding.
#![no_main]

use hyper::header::CONNECTION;
use libfuzzer_sys::fuzz_target;

/// Headers that must never reach the backend from the client (hop-by-hop, and the ones
/// wsgate sets itself), written out here independently of the code under test.
const NEVER: &[&str] = &[
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

fuzz_target!(|data: &[u8]| {
    let Some(r) = wsgate::fuzzing::client_request(data) else {
        return;
    };
    let h = r.request.headers();
    for name in r.forwarded.keys() {
        assert!(!NEVER.contains(&name.as_str()), "forwarded {name}");
    }
    for listed in h.get_all(CONNECTION).iter().filter_map(|v| v.to_str().ok()) {
        for token in listed.split(',').map(str::trim) {
            assert!(
                !r.forwarded
                    .keys()
                    .any(|n| n.as_str().eq_ignore_ascii_case(token)),
                "forwarded {token}, listed in Connection"
            );
        }
    }
    // Everything else is kept, each value in order.
    for (name, _) in h.iter().filter(|(n, _)| r.forwarded.contains_key(*n)) {
        let a: Vec<_> = h.get_all(name).iter().collect();
        let b: Vec<_> = r.forwarded.get_all(name).iter().collect();
        assert_eq!(a, b);
    }
    if r.hello.is_ok() {
        assert_eq!(r.request.method(), hyper::Method::GET);
        assert_eq!(r.request.version(), hyper::Version::HTTP_11);
        assert_eq!(h.get_all("sec-websocket-key").iter().count(), 1);
        assert!(h.contains_key("host"));
    }
    if let Ok(p) = &r.path {
        assert!(p.starts_with('/') && !p.contains("//"), "{p:?}");
        assert_eq!(wsgate::fuzzing::path(p).as_ref(), Ok(p));
    }
});
