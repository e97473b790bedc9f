//! What the backend's upgrade request looks like: hop-by-hop headers and
//! extensions stripped, forwarding headers set by wsgate, path rewritten,
//! and routing by host and longest prefix on the normalised path.

use crate::support::backend::{Backend, Log};
use crate::support::http::{self, Head};
use crate::support::proxy::{Proxy, route};
use crate::support::raw;

/// Upgrades `path` with `extra` headers (must get 101), returns the request the backend saw.
async fn seen_by_backend(proxy: &Proxy, log: &Log, path: &str, extra: &[(&str, &str)]) -> Head {
    let before = log.requests().len();
    let (head, _stream) = raw::upgrade_with(proxy.addr(), path, extra).await;
    assert_eq!(head.status(), 101, "{path}: {head:?}");
    let requests = log.requests();
    assert_eq!(
        requests.len(),
        before + 1,
        "{path}: backend requests {requests:?}"
    );
    requests.last().unwrap().clone()
}

#[tokio::test]
async fn extensions_are_not_forwarded_nor_answered() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let ext = (
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits",
    );
    let (head, mut client) = raw::upgrade_with(proxy.addr(), "/app", &[ext]).await;
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(head.header("sec-websocket-extensions"), None, "{head:?}");
    let seen = backend.log.request();
    assert_eq!(seen.header("sec-websocket-extensions"), None, "{seen:?}");

    // And the tunnel works without compression.
    client
        .send(crate::support::frame::Frame::text("plain"))
        .await;
    let echo = client.recv_frame().await;
    assert_eq!(
        (echo.opcode, echo.rsv, echo.payload.as_slice()),
        (1, 0, &b"plain"[..])
    );
    client
        .send(crate::support::frame::Frame::close(1000, ""))
        .await;
    client.recv_close().await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn spoofed_forwarding_headers_are_replaced_by_the_real_peer() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let spoofed = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6"),
    ];
    let seen = seen_by_backend(&proxy, &backend.log, "/app", &spoofed).await;
    let xff = seen.header_all("x-forwarded-for").join(",");
    assert_eq!(
        xff.trim(),
        "127.0.0.1",
        "X-Forwarded-For seen by the backend: {seen:?}"
    );
    for name in ["x-real-ip", "forwarded", "x-forwarded-for"] {
        for value in seen.header_all(name) {
            assert!(
                !value.contains("6.6.6.6"),
                "spoofed {name}: {value} reached the backend"
            );
        }
    }
    proxy.assert_drained().await;
}

#[tokio::test]
async fn headers_named_in_connection_are_stripped_before_proxy_headers_are_added() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let extra = [
        ("Connection", "Upgrade, X-Secret, X-Forwarded-For"),
        ("X-Secret", "hop-only"),
        ("Keep-Alive", "timeout=5"),
        ("X-Custom", "kept"),
    ];
    let seen = seen_by_backend(&proxy, &backend.log, "/app", &extra).await;
    assert_eq!(seen.header("x-secret"), None, "{seen:?}");
    assert_eq!(seen.header("keep-alive"), None, "{seen:?}");
    assert_eq!(
        seen.header("x-custom"),
        Some("kept"),
        "end-to-end headers pass: {seen:?}"
    );
    // wsgate's own X-Forwarded-For is added after the strip, so it survives.
    assert_eq!(
        seen.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "{seen:?}"
    );
    // The backend hop carries its own upgrade headers.
    let connection = seen
        .header("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        connection.contains("upgrade") && !connection.contains("x-secret"),
        "{seen:?}"
    );
    proxy.assert_drained().await;
}

#[tokio::test]
async fn backend_path_replaces_the_matched_prefix() {
    let backend = Backend::echo().await;
    let bare = Backend::echo().await;
    let routes = route("app", "/app", &backend.url("/ws"), "")
        + &route("bare", "/bare", &format!("ws://{}", bare.addr), "");
    let proxy = Proxy::with_routes(&routes).await;

    for (path, expected) in [
        ("/app/x", "/ws/x"),
        ("/app", "/ws"),
        ("/app/x/y", "/ws/x/y"),
    ] {
        let seen = seen_by_backend(&proxy, &backend.log, path, &[]).await;
        assert_eq!(seen.target(), expected, "{path}: {seen:?}");
    }
    // With no path in the backend URL the client's path goes through unchanged.
    let seen = seen_by_backend(&proxy, &bare.log, "/bare/x", &[]).await;
    assert_eq!(seen.target(), "/bare/x", "{seen:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn query_string_is_forwarded() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let seen = seen_by_backend(&proxy, &backend.log, "/app/x?room=7&u=a%20b", &[]).await;
    assert_eq!(seen.target(), "/ws/x?room=7&u=a%20b", "{seen:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn longest_prefix_exact_and_host_routes_win() {
    let general = Backend::echo().await;
    let admin = Backend::echo().await;
    let exact = Backend::echo().await;
    let hosted = Backend::echo().await;
    let routes = route("general", "/app", &general.url(""), "")
        + &route("admin", "/app/admin", &admin.url(""), "")
        + &route("exact", "/status", &exact.url(""), "    exact: true\n")
        + &route(
            "hosted",
            "/app",
            &hosted.url(""),
            "    host: chat.example\n",
        );
    let proxy = Proxy::with_routes(&routes).await;

    seen_by_backend(&proxy, &admin.log, "/app/admin/x", &[]).await;
    seen_by_backend(&proxy, &general.log, "/app/administrator", &[]).await;
    seen_by_backend(&proxy, &exact.log, "/status", &[]).await;
    for path in ["/status/x", "/statusx"] {
        let head =
            http::exchange(proxy.addr(), http::upgrade_request(proxy.addr(), path, &[])).await;
        assert_eq!(
            head.status(),
            404,
            "{path} must not match the exact route: {head:?}"
        );
    }
    // Host match is case-insensitive and ignores the port.
    let host = http::upgrade_request(proxy.addr(), "/app/x", &[]).replacen(
        &format!("Host: {}", proxy.addr()),
        "Host: Chat.Example:8443",
        1,
    );
    let head = http::exchange(proxy.addr(), host).await;
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(hosted.log.requests().len(), 1, "host route not taken");
    assert_eq!(
        general.log.requests().len(),
        1,
        "only /app/administrator went to general"
    );
    proxy.assert_drained().await;
}

/// Decodes `%XX` escapes (for checking what a backend would make of a path).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = path
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn dot_segments_never_escape_a_route() {
    let public = Backend::echo().await;
    let admin = Backend::echo().await;
    let routes = route("public", "/public", &public.url("/pub"), "")
        + &route("admin", "/admin", &admin.url("/adm"), "");
    let proxy = Proxy::with_routes(&routes).await;

    let tricks = [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/./../admin/x",
        "/public//../admin",
        "//admin",
        "/public/.%2e/admin",
    ];
    for path in tricks {
        let request = http::upgrade_request(proxy.addr(), path, &[]);
        let head = http::exchange(proxy.addr(), request).await;
        for (name, backend, prefix) in [("public", &public, "/pub"), ("admin", &admin, "/adm")] {
            for seen in backend.log.requests() {
                let target = seen.target().split('?').next().unwrap().to_string();
                let decoded = percent_decode(&target);
                assert!(
                    decoded == prefix || decoded.starts_with(&format!("{prefix}/")),
                    "{path} reached {name} as {target}"
                );
                assert!(
                    decoded.split('/').all(|seg| seg != ".." && seg != "."),
                    "{path} reached {name} with dot segments: {target}"
                );
            }
        }
        assert!(
            head.status() == 101 || (400..500).contains(&head.status()),
            "{path}: {head:?}"
        );
    }
    // The normalised forms route where they say: /public/../admin is /admin.
    assert!(
        admin.log.requests().iter().any(|r| r.target() == "/adm"),
        "/public/../admin should reach admin as /adm: {:?}",
        admin.log.requests()
    );
    proxy.assert_drained().await;
}
