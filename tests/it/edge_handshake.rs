//! Edge hardening of the upgrade: Host checked against the authority grammar and
//! quoted in every header wsgate writes, absolute-form targets, upgrades carrying a
//! body or `Expect`, and a backend 101 that is subtly wrong.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::backend::{Backend, RawBackend, RawConn};
use crate::support::http::{self, Head, KEY};
use crate::support::proxy::{Proxy, route};
use crate::support::{patience, raw, within};

/// An upgrade request with `host_lines` as its Host header lines, verbatim.
fn request_with_host(target: &str, host_lines: &[&[u8]], extra: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\n").into_bytes();
    for host in host_lines {
        req.extend_from_slice(b"Host: ");
        req.extend_from_slice(host);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(
        format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n"
        )
        .as_bytes(),
    );
    for (name, value) in extra {
        req.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// Sends `request`, reads the answer head (and body unless 101), then reads on until
/// EOF: returns the head and whether the connection was closed by wsgate.
async fn send_and_watch_close(addr: SocketAddr, request: &[u8]) -> (Head, bool) {
    within("exchange then EOF", async {
        let mut io = TcpStream::connect(addr).await.expect("connect to proxy");
        io.write_all(request).await.expect("write request");
        let mut buf = Vec::new();
        let mut head = http::read_head(&mut io, &mut buf)
            .await
            .expect("connection closed without a response");
        if head.status() == 101 {
            return (head, false);
        }
        // The answer, then EOF: whatever the client sent after its head is never read as
        // a next request.
        let mut rest = Vec::new();
        let eof = tokio::time::timeout(patience(), io.read_to_end(&mut rest)).await;
        buf.extend_from_slice(&rest);
        head.body = buf;
        let closed = matches!(eof, Ok(Ok(_)));
        (head, closed)
    })
    .await
}

#[tokio::test]
async fn hostile_hosts_are_400_and_the_backend_is_never_contacted() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let hostile: &[&[u8]] = &[
        b"a\"b.example",
        b"example.com\";for=\"6.6.6.6",
        b"example.com;for=6.6.6.6",
        b"example.com,for=6.6.6.6;proto=https",
        b"example.com, evil.example",
        b"exa mple.com",
        b"example.com\t:80",
        b"user@example.com",
        b"user:pw@example.com:80",
        b"[example.com]",
        b"[::1",
        b"::1",
        b"[::1]x",
        b"[v1.fe]",
        b"[fe80::1%25eth0]",
        b"example.com:http",
        b"example.com:99999",
        b"example.com:-1",
        b"exa\\mple.com",
        b"exa%zzmple.com",
        b"h\xc3\xb6st.example",
        b"h\xffst",
        b"",
        b"example.com/path",
        b"example.com?x",
        b"example.com#x",
    ];
    for host in hostile {
        let request = request_with_host("/app", &[host], &[]);
        let head = http::exchange(proxy.addr(), request).await;
        assert_eq!(
            head.status(),
            400,
            "Host {:?}: {head:?}",
            String::from_utf8_lossy(host)
        );
    }
    assert_eq!(backend.log.accepted(), 0, "the backend was contacted");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn duplicate_host_is_400() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    for hosts in [
        &[&b"a.example"[..], b"b.example"][..],
        &[b"a.example", b"a.example"],
    ] {
        let head = http::exchange(proxy.addr(), request_with_host("/app", hosts, &[])).await;
        assert_eq!(head.status(), 400, "{hosts:?}: {head:?}");
    }
    assert_eq!(backend.log.accepted(), 0, "the backend was contacted");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn valid_hosts_are_forwarded_as_one_well_formed_forwarded_element() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let hosts = [
        "example.com",
        "Example.COM:8080",
        "127.0.0.1:80",
        "[::1]:8080",
        "[2001:db8::1]",
        "xn--bcher-kva.example",
        "a_b-c~d.example",
        "caf%C3%A9.example",
        "example.com.",
    ];
    for host in hosts {
        let request = request_with_host("/app", &[host.as_bytes()], &[]);
        let mut io = TcpStream::connect(proxy.addr()).await.unwrap();
        io.write_all(&request).await.unwrap();
        let mut buf = Vec::new();
        let head = within("101", http::read_head(&mut io, &mut buf))
            .await
            .unwrap();
        assert_eq!(head.status(), 101, "Host {host:?}: {head:?}");
        let seen = backend.log.requests().last().unwrap().clone();
        let forwarded = seen.header_all("forwarded");
        assert_eq!(
            forwarded,
            [format!("for=127.0.0.1;host=\"{host}\";proto=http")],
            "Host {host:?}: {seen:?}"
        );
        assert_eq!(seen.header_all("x-forwarded-host"), [host], "{seen:?}");
        drop(io);
    }
    proxy.assert_drained().await;
}

#[tokio::test]
async fn absolute_form_authority_decides_the_route_and_the_forwarded_host() {
    let a = Backend::echo().await;
    let b = Backend::echo().await;
    let routes = route("a", "/app", &a.url("/ws"), "    host: a.example\n")
        + &route("b", "/app", &b.url("/ws"), "    host: b.example\n");
    let proxy = Proxy::with_routes(&routes).await;
    let request = request_with_host("http://a.example:8080/app?x=1", &[b"b.example"], &[]);
    let mut io = TcpStream::connect(proxy.addr()).await.unwrap();
    io.write_all(&request).await.unwrap();
    let mut buf = Vec::new();
    let head = within("101", http::read_head(&mut io, &mut buf))
        .await
        .unwrap();
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(b.log.accepted(), 0, "routed by Host instead of the target");
    let seen = a.log.request();
    assert_eq!(seen.target(), "/ws?x=1", "{seen:?}");
    assert_eq!(seen.header("x-forwarded-host"), Some("a.example:8080"));
    assert_eq!(
        seen.header_all("forwarded"),
        ["for=127.0.0.1;host=\"a.example:8080\";proto=http"]
    );
    drop(io);
    // An authority the grammar refuses is refused in the target too.
    for target in [
        "http://u@a.example/app",
        "http://a.example:x/app",
        "ftp://a.example/app",
    ] {
        let head = http::exchange(
            proxy.addr(),
            request_with_host(target, &[b"a.example"], &[]),
        )
        .await;
        assert_eq!(head.status(), 400, "{target}: {head:?}");
    }
    assert_eq!(a.log.accepted(), 1);
    proxy.assert_drained().await;
}

#[tokio::test]
async fn upgrades_with_a_body_are_400_and_the_connection_closes() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    // A masked text frame "hi": what a smuggler would hope reaches the backend.
    let frame = b"\x81\x82\x00\x00\x00\x00hi";
    // (extra headers, the body that follows the head)
    type Case = (Vec<(&'static str, &'static str)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        (vec![("Content-Length", "8")], frame.to_vec()),
        (
            vec![("Transfer-Encoding", "chunked")],
            b"8\r\n\x81\x82\x00\x00\x00\x00hi\r\n0\r\n\r\n".to_vec(),
        ),
        (
            vec![("Content-Length", "8"), ("Transfer-Encoding", "chunked")],
            b"8\r\n\x81\x82\x00\x00\x00\x00hi\r\n0\r\n\r\n".to_vec(),
        ),
        (
            vec![("Content-Length", "8"), ("Expect", "100-continue")],
            frame.to_vec(),
        ),
    ];
    for (extra, body) in cases {
        let mut request = http::upgrade_request(proxy.addr(), "/app", &extra).into_bytes();
        request.extend_from_slice(&body);
        let (head, closed) = send_and_watch_close(proxy.addr(), &request).await;
        assert_eq!(head.status(), 400, "{extra:?}: {head:?}");
        assert!(closed, "{extra:?}: connection left open");
        assert_eq!(
            head.header("connection").map(str::to_ascii_lowercase),
            Some("close".into())
        );
    }
    assert_eq!(backend.log.accepted(), 0, "the backend was contacted");
    // An explicit empty body is no body.
    let request = http::upgrade_request(proxy.addr(), "/app", &[("Content-Length", "0")]);
    let (head, _) = send_and_watch_close(proxy.addr(), request.as_bytes()).await;
    assert_eq!(head.status(), 101, "{head:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn expect_100_continue_is_answered_by_the_upgrade_and_not_forwarded() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let (head, mut client) =
        raw::upgrade_with(proxy.addr(), "/app", &[("Expect", "100-continue")]).await;
    assert_eq!(head.status(), 101, "{head:?}");
    let seen = backend.log.request();
    assert_eq!(seen.header("expect"), None, "{seen:?}");
    client
        .send(crate::support::frame::Frame::text("after expect"))
        .await;
    let echo = client.recv_frame().await;
    assert_eq!(echo.payload, b"after expect");
    drop(client);
    proxy.assert_drained().await;
}

#[tokio::test]
async fn an_expectation_other_than_100_continue_is_417_without_backend_contact() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    for value in ["200-ok", "100-continue, foo", "100-continue-please"] {
        let request = http::upgrade_request(proxy.addr(), "/app", &[("Expect", value)]);
        let head = http::exchange(proxy.addr(), request).await;
        assert_eq!(head.status(), 417, "Expect: {value}: {head:?}");
    }
    // Case does not matter for the one expectation that is defined (RFC 9110 §10.1.1).
    let (head, _client) =
        raw::upgrade_with(proxy.addr(), "/app", &[("Expect", "100-Continue")]).await;
    assert_eq!(head.status(), 101, "{head:?}");
    assert_eq!(
        backend.log.accepted(),
        1,
        "only the 100-continue upgrade reached the backend"
    );
}

#[tokio::test]
async fn switching_protocols_never_announces_connection_close() {
    // The backend tries to slip its own `Connection: close` into the 101.
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept(&[("Connection", "close"), ("X-Backend", "1")])
            .await;
        conn.record_until_close().await;
    })
    .await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let (head, client) = raw::upgrade_with(proxy.addr(), "/app", &[]).await;
    assert_eq!(head.status(), 101, "{head:?}");
    let connection: Vec<String> = head
        .header_all("connection")
        .iter()
        .map(|v| v.to_ascii_lowercase())
        .collect();
    assert_eq!(connection, ["upgrade"], "{head:?}");
    assert_eq!(head.header("x-backend"), Some("1"));
    drop(client);
    // A client asking to close and upgrade at once would get a 101 saying `close` from
    // hyper: it is refused instead, before the backend hears of it.
    let accepted = backend.log.accepted();
    for client_connection in ["Upgrade, close", "close, Upgrade", "Upgrade, Close"] {
        let request =
            http::upgrade_request(proxy.addr(), "/app", &[("Connection", client_connection)]);
        let head = http::exchange(proxy.addr(), request).await;
        assert_eq!(head.status(), 400, "{client_connection}: {head:?}");
    }
    assert_eq!(backend.log.accepted(), accepted);
    proxy.assert_drained().await;
}

#[tokio::test]
async fn subtly_wrong_backend_101s_are_502() {
    type Make = fn(&str) -> String;
    let cases: [(&str, Make); 6] = [
        ("a second, wrong Sec-WebSocket-Accept", |accept| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Accept: AAAA\r\n\r\n"
            )
        }),
        ("a wrong one before the right one", |accept| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: AAAA\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )
        }),
        ("an empty subprotocol nobody offered", |accept| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: \r\n\r\n"
            )
        }),
        ("a subprotocol of invalid bytes", |accept| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: \u{e9}vil\r\n\r\n"
            )
        }),
        ("a subprotocol of separators", |accept| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: ,\r\n\r\n"
            )
        }),
        ("a status over 599", |_| {
            "HTTP/1.1 600 Beyond\r\nContent-Length: 0\r\n\r\n".to_string()
        }),
    ];
    for (what, make) in cases {
        let backend = RawBackend::start(move |mut conn: RawConn| async move {
            let answer = make(&conn.accept_key());
            conn.io.write_bytes(answer.as_bytes()).await;
            conn.record_until_close().await;
        })
        .await;
        let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
        let head = http::exchange(
            proxy.addr(),
            http::upgrade_request(proxy.addr(), "/app", &[]),
        )
        .await;
        assert_eq!(head.status(), 502, "{what}: {head:?}");
        assert_eq!(
            proxy.metric(
                "wsgate_handshake_failures_total{route=\"app\",reason=\"backend_invalid\"}"
            ),
            Some(1.0),
            "{what}"
        );
        proxy.assert_drained().await;
    }
}

#[tokio::test]
async fn subprotocol_offers_that_are_not_tokens_are_400() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), "")).await;
    let hostile: &[&[u8]] = &[
        b"chat;q=1",
        b"\"chat\"",
        b"ch at",
        b"chat, \xc3\xa9",
        b"\xff",
    ];
    for offer in hostile {
        let mut request = http::upgrade_request(proxy.addr(), "/app", &[]).into_bytes();
        request.truncate(request.len() - 2);
        request.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        request.extend_from_slice(offer);
        request.extend_from_slice(b"\r\n\r\n");
        let head = http::exchange(proxy.addr(), request).await;
        assert_eq!(
            head.status(),
            400,
            "{:?}: {head:?}",
            String::from_utf8_lossy(offer)
        );
    }
    assert_eq!(backend.log.accepted(), 0, "the backend was contacted");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn authority_form_on_a_get_is_400() {
    let backend = Backend::echo().await;
    let proxy = Proxy::with_routes(&route("app", "/", &backend.url("/ws"), "")).await;
    let request = request_with_host("a.example:80", &[b"a.example"], &[]);
    let head = http::exchange(proxy.addr(), request).await;
    assert_eq!(head.status(), 400, "{head:?}");
    assert_eq!(backend.log.accepted(), 0, "the backend was contacted");
    proxy.assert_drained().await;
}
