//! The client's upgrade request is validated by wsgate itself: a bad one gets
//! an HTTP error from wsgate, never a 101, and the backend is never contacted.

use crate::support::backend::Backend;
use crate::support::http::{self, Head, KEY};
use crate::support::proxy::{Proxy, route};
use crate::support::raw;

/// A valid upgrade for `/app/chat`, as a list of header lines we can edit.
fn headers() -> Vec<(&'static str, String)> {
    vec![
        ("Host", "wsgate.test".into()),
        ("Upgrade", "websocket".into()),
        ("Connection", "Upgrade".into()),
        ("Sec-WebSocket-Key", KEY.into()),
        ("Sec-WebSocket-Version", "13".into()),
    ]
}

/// Builds a request: `start_line`, then [`headers`] with `edits` applied
/// (`Some` replaces or appends the header, `None` removes it).
fn request(start_line: &str, edits: &[(&'static str, Option<&str>)]) -> String {
    let mut lines = headers();
    for (name, value) in edits {
        let pos = lines.iter().position(|(n, _)| n.eq_ignore_ascii_case(name));
        match (pos, value) {
            (Some(i), Some(v)) => lines[i].1 = v.to_string(),
            (None, Some(v)) => lines.push((name, v.to_string())),
            (Some(i), None) => drop(lines.remove(i)),
            (None, None) => {}
        }
    }
    let mut out = format!("{start_line}\r\n");
    for (name, value) in lines {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out + "\r\n"
}

const GET: &str = "GET /app/chat HTTP/1.1";

/// A proxy with route `app` (`/app`, origins limited to good.example, plus `extra` lines)
/// to an echo backend.
async fn setup(extra: &str) -> (Proxy, Backend) {
    let backend = Backend::echo().await;
    let extra = format!("    origins: [\"https://good.example\"]\n{extra}");
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), &extra)).await;
    (proxy, backend)
}

/// Sends `request` and checks that wsgate answered `status` on its own.
async fn rejected(request: String, status: u16) -> Head {
    rejected_on("", request, status).await
}

/// [`rejected`] with `extra` lines on the route.
async fn rejected_on(extra: &str, request: String, status: u16) -> Head {
    let (proxy, backend) = setup(extra).await;
    let head = http::exchange(proxy.addr(), request.clone()).await;
    assert_eq!(head.status(), status, "answer to\n{request}\nwas {head:?}");
    assert_eq!(backend.log.accepted(), 0, "the backend was contacted");
    assert_eq!(backend.log.requests().len(), 0);
    proxy.assert_drained().await;
    head
}

/// Sends `request` and checks that it is upgraded and reached the backend.
async fn accepted(request: String) {
    let (proxy, backend) = setup("").await;
    let head = http::exchange(proxy.addr(), request.clone()).await;
    assert_eq!(head.status(), 101, "answer to\n{request}\nwas {head:?}");
    assert_eq!(backend.log.requests().len(), 1, "backend requests");
    // exchange() dropped the client connection: wsgate lets go of both hops.
    proxy.assert_drained().await;
}

#[tokio::test]
async fn valid_variants_are_upgraded() {
    // Positive controls for the rejections below: the same request is fine as is,
    // with a token list in Connection, and with mixed-case tokens.
    accepted(request(GET, &[])).await;
    accepted(request(GET, &[("Connection", Some("keep-alive, Upgrade"))])).await;
    accepted(request(GET, &[("Upgrade", Some("WebSocket"))])).await;
    accepted(request(GET, &[("Origin", Some("https://good.example"))])).await;
}

#[tokio::test]
async fn non_get_method_is_405() {
    let post = request("POST /app/chat HTTP/1.1", &[("Content-Length", Some("0"))]);
    rejected(post, 405).await;
    rejected(
        request("PUT /app/chat HTTP/1.1", &[("Content-Length", Some("0"))]),
        405,
    )
    .await;
}

#[tokio::test]
async fn http_1_0_is_400() {
    rejected(request("GET /app/chat HTTP/1.0", &[]), 400).await;
}

#[tokio::test]
async fn missing_or_short_key_is_400() {
    rejected(request(GET, &[("Sec-WebSocket-Key", None)]), 400).await;
    // "short" base64: 5 bytes instead of 16.
    rejected(
        request(GET, &[("Sec-WebSocket-Key", Some("c2hvcnQ="))]),
        400,
    )
    .await;
    rejected(
        request(
            GET,
            &[("Sec-WebSocket-Key", Some("not base64 at all!!!!!!="))],
        ),
        400,
    )
    .await;
}

#[tokio::test]
async fn connection_without_upgrade_token_is_400() {
    rejected(request(GET, &[("Connection", Some("keep-alive"))]), 400).await;
    rejected(request(GET, &[("Connection", Some("close"))]), 400).await;
}

#[tokio::test]
async fn wrong_version_is_426_naming_13() {
    for version in ["8", "14", "banana"] {
        let head = rejected(
            request(GET, &[("Sec-WebSocket-Version", Some(version))]),
            426,
        )
        .await;
        assert_eq!(
            head.header("sec-websocket-version"),
            Some("13"),
            "426 for version {version} must say which version we speak: {head:?}"
        );
    }
}

#[tokio::test]
async fn plain_get_on_a_route_without_http_and_h2c_are_426() {
    let plain = "GET /app/chat HTTP/1.1\r\nHost: wsgate.test\r\n\r\n".to_string();
    let head = rejected_on("    http: false\n", plain, 426).await;
    assert_eq!(head.header("upgrade"), Some("websocket"), "{head:?}");
    let h2c = request(
        GET,
        &[
            ("Upgrade", Some("h2c")),
            ("Connection", Some("Upgrade, HTTP2-Settings")),
            ("HTTP2-Settings", Some("AAMAAABkAARAAAAAAAIAAAAA")),
        ],
    );
    rejected(h2c, 426).await;
}

#[tokio::test]
async fn unknown_route_is_404() {
    rejected(request("GET /nope HTTP/1.1", &[]), 404).await;
    // Prefixes match on a segment boundary: /apple is not under /app.
    rejected(request("GET /apple HTTP/1.1", &[]), 404).await;
    rejected(request("GET / HTTP/1.1", &[]), 404).await;
}

#[tokio::test]
async fn origin_not_allowed_is_403() {
    rejected(
        request(GET, &[("Origin", Some("https://evil.example"))]),
        403,
    )
    .await;
    // Look-alikes of the allowed origin are not it.
    rejected(
        request(GET, &[("Origin", Some("https://good.example.evil"))]),
        403,
    )
    .await;
    rejected(
        request(GET, &[("Origin", Some("http://good.example"))]),
        403,
    )
    .await;
}

#[tokio::test]
async fn huge_or_too_many_headers_are_431() {
    let big = "a".repeat(1 << 20);
    rejected(request(GET, &[("X-Big", Some(&big))]), 431).await;
    let mut many = String::from("GET /app/chat HTTP/1.1\r\nHost: wsgate.test\r\n");
    for i in 0..2_000 {
        many.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    rejected(many + "\r\n", 431).await;
}

#[tokio::test]
async fn upgrade_with_raw_client_gets_correct_accept() {
    // The 101 wsgate writes carries the accept for *our* key (RFC 6455 §4.2.2).
    let (proxy, _backend) = setup("").await;
    let (head, stream) = raw::upgrade_with(proxy.addr(), "/app/chat", &[]).await;
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(
        head.header("sec-websocket-accept"),
        Some(http::accept_key(KEY).as_str())
    );
    assert!(
        head.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{head:?}"
    );
    drop(stream);
    proxy.assert_drained().await;
}
