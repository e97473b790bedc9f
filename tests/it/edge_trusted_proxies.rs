//! `trusted_proxies`: spoofing both ways. An untrusted peer's forwarding headers are
//! replaced and its own address is the client's; a trusted peer's chain is appended to,
//! and the first untrusted hop from the right is the client that caps, logs and the
//! backend's `X-Real-IP` see. Upgrades and plain requests, over HTTP/1.1 and HTTP/2, and
//! behind a PROXY header.

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::backend::Backend;
use crate::support::ca::TestCa;
use crate::support::frame::Frame;
use crate::support::h2client::{H2Conn, tls_yaml};
use crate::support::http::{self, Head};
use crate::support::http_backend::{self as hb, HttpBackend};
use crate::support::proxy::{Proxy, TEST_DEFAULTS, route};
use crate::support::raw::{self, FrameStream, RawClient};
use crate::support::within;

/// One plain listener, `trusted_proxies: [trusted]`, an upgrade route `/ws` with a per-IP
/// cap of 1 and a plain route `/http`.
fn trusting(trusted: &str, ws: &Backend, http: &HttpBackend) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n{TEST_DEFAULTS}trusted_proxies: [{trusted}]\nroutes:\n{}{}",
        route(
            "ws",
            "/ws",
            &ws.url("/"),
            "    admission: { max_connections_per_ip: 1 }\n"
        ),
        route("http", "/http", &http.url("/"), "    http: true\n"),
    )
}

async fn plain_backend() -> HttpBackend {
    HttpBackend::start(|_req| async { hyper::Response::new(hb::text("ok")) }).await
}

/// Upgrades `/ws` with `extra` headers; the answer and the socket.
async fn upgrade(proxy: &Proxy, extra: &[(&str, &str)]) -> (Head, RawClient) {
    raw::upgrade_with(proxy.addr(), "/ws", extra).await
}

/// The forwarding headers of the backend's last upgrade request.
fn last_seen(backend: &Backend) -> (String, String, String) {
    let head = backend.log.requests().pop().expect("a request");
    let one = |name: &str| head.header_all(name).join(" | ");
    (one("x-forwarded-for"), one("x-real-ip"), one("forwarded"))
}

async fn close(mut ws: RawClient) {
    ws.send(Frame::close(1000, "")).await;
    ws.recv_close().await;
}

#[tokio::test]
async fn an_untrusted_peer_gets_its_headers_replaced_and_is_the_client() {
    let (ws, http) = (Backend::echo().await, plain_backend().await);
    let mut proxy = Proxy::start(&trusting("10.0.0.0/8", &ws, &http)).await;
    let spoofed = [
        ("X-Forwarded-For", "6.6.6.6, 10.1.1.1"),
        ("X-Real-IP", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6"),
    ];
    let (head, held) = upgrade(&proxy, &spoofed).await;
    assert_eq!(head.status(), 101, "{head:?}");
    let (xff, real_ip, forwarded) = last_seen(&ws);
    assert_eq!((xff.as_str(), real_ip.as_str()), ("127.0.0.1", "127.0.0.1"));
    assert!(forwarded.starts_with("for=127.0.0.1;"), "{forwarded}");
    assert!(!forwarded.contains("6.6.6.6"), "{forwarded}");
    // Another claimed address does not get a place of its own.
    let (second, _) = upgrade(&proxy, &[("X-Forwarded-For", "7.7.7.7")]).await;
    assert_eq!(second.status(), 429, "{second:?}");
    close(held).await;
    assert_eq!(
        proxy.next_report().await.client_addr.ip().to_string(),
        "127.0.0.1"
    );

    let mut req = hb::get("/http/x");
    req.headers_mut()
        .insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
    assert_eq!(hb::fetch(proxy.addr(), req).await.status, 200);
    let seen = http.stats.seen().pop().unwrap();
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    proxy.assert_drained().await;
}

#[tokio::test]
async fn a_trusted_peers_chain_is_appended_and_the_first_untrusted_hop_is_the_client() {
    let (ws, http) = (Backend::echo().await, plain_backend().await);
    let mut proxy = Proxy::start(&trusting("127.0.0.1, 10.0.0.0/8", &ws, &http)).await;
    let chain = [
        ("X-Forwarded-For", "6.6.6.6, 203.0.113.9"),
        ("X-Forwarded-For", "10.1.1.1"),
        ("Forwarded", "for=6.6.6.6, for=203.0.113.9, for=10.1.1.1"),
    ];
    let (head, held) = upgrade(&proxy, &chain).await;
    assert_eq!(head.status(), 101, "{head:?}");
    let (xff, real_ip, forwarded) = last_seen(&ws);
    assert_eq!(xff, "6.6.6.6, 203.0.113.9, 10.1.1.1, 127.0.0.1");
    assert_eq!(real_ip, "203.0.113.9");
    assert!(
        forwarded.starts_with("for=6.6.6.6, for=203.0.113.9, for=10.1.1.1, for=127.0.0.1;"),
        "{forwarded}"
    );
    // The cap counts the client, not the proxy: another client behind it gets in, and
    // the same client with another (spoofed) far end of the chain does not.
    let (other, other_ws) = upgrade(&proxy, &[("X-Forwarded-For", "203.0.113.10")]).await;
    assert_eq!(other.status(), 101, "{other:?}");
    let (same, _) = upgrade(&proxy, &[("X-Forwarded-For", "1.1.1.1, 203.0.113.9")]).await;
    assert_eq!(same.status(), 429, "{same:?}");
    close(held).await;
    let report = proxy.next_report().await;
    assert_eq!(report.client_addr, "203.0.113.9:0".parse().unwrap());
    close(other_ws).await;
    proxy.next_report().await;

    // IPv6, and garbage: a trusted hop that wrote something unreadable is the client.
    for (given, client) in [
        ("2001:db8::7", "2001:db8::7"),
        ("[2001:db8::7]:4430, 10.1.1.1", "2001:db8::7"),
        ("6.6.6.6, evil", "127.0.0.1"),
        ("6.6.6.6, 10.1.1.1, 300.1.1.1", "127.0.0.1"),
    ] {
        let (head, held) = upgrade(&proxy, &[("X-Forwarded-For", given)]).await;
        assert_eq!(head.status(), 101, "{given}: {head:?}");
        let (xff, real_ip, _) = last_seen(&ws);
        assert_eq!(xff, format!("{given}, 127.0.0.1"));
        assert_eq!(real_ip, client, "{given}");
        close(held).await;
        assert_eq!(
            proxy.next_report().await.client_addr.ip().to_string(),
            client,
            "{given}"
        );
    }

    // Plain requests too.
    let mut req = hb::get("/http/x");
    req.headers_mut()
        .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    assert_eq!(hb::fetch(proxy.addr(), req).await.status, 200);
    let seen = http.stats.seen().pop().unwrap();
    assert_eq!(seen.all("x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(seen.all("x-real-ip"), ["203.0.113.9"]);
    proxy.assert_drained().await;
}

#[tokio::test]
async fn http2_requests_and_websockets_follow_the_same_rules() {
    let ca = TestCa::new();
    let (ws, http) = (Backend::echo().await, plain_backend().await);
    let routes = format!(
        "{}{}",
        route("ws", "/ws", &ws.url("/"), ""),
        route("http", "/http", &http.url("/"), "    http: true\n")
    );
    for (trusted, want_xff, want_client) in [
        ("10.0.0.0/8", "127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "203.0.113.9, 127.0.0.1", "203.0.113.9"),
    ] {
        let top = format!("trusted_proxies: [{trusted}]\n");
        let proxy = Proxy::start(&tls_yaml(&ca, "", &top, &routes)).await;
        let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
        let opened = conn
            .try_websocket("/ws", &[("x-forwarded-for", "203.0.113.9")])
            .await;
        let Ok((_, mut socket)) = opened else {
            panic!("{trusted}: extended CONNECT refused")
        };
        socket.close(None).await.expect("close");
        let (xff, real_ip, _) = last_seen(&ws);
        assert_eq!(
            (xff.as_str(), real_ip.as_str()),
            (want_xff, want_client),
            "{trusted}"
        );

        let get = Request::builder()
            .uri(format!("https://localhost:{}/http/x", proxy.addr().port()))
            .header("x-forwarded-for", "203.0.113.9")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (res, _) = conn.send(get).await.expect("plain answer");
        assert_eq!(res.status(), 200, "{trusted}");
        let seen = http.stats.seen().pop().unwrap();
        assert_eq!(seen.all("x-forwarded-for"), [want_xff], "{trusted}");
        assert_eq!(seen.all("x-real-ip"), [want_client], "{trusted}");
        drop(conn);
        proxy.assert_drained().await;
    }
}

/// Behind a PROXY header, the carried address is the peer whose trust is decided.
#[tokio::test]
async fn behind_a_proxy_header_the_carried_address_is_the_peer() {
    let ws = Backend::echo().await;
    let yaml = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    proxy_protocol: true\n    \
         proxy_protocol_from: [127.0.0.1]\n{TEST_DEFAULTS}trusted_proxies: [10.0.0.0/8]\n\
         routes:\n{}",
        route("ws", "/ws", &ws.url("/"), "")
    );
    let proxy = Proxy::start(&yaml).await;
    for (carried, want_xff, want_client) in [
        ("10.1.1.1", "203.0.113.9, 10.1.1.1", "203.0.113.9"),
        ("192.0.2.7", "192.0.2.7", "192.0.2.7"),
    ] {
        let mut io = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut bytes = format!("PROXY TCP4 {carried} 127.0.0.1 5000 80\r\n").into_bytes();
        bytes.extend_from_slice(
            http::upgrade_request(proxy.addr(), "/ws", &[("X-Forwarded-For", "203.0.113.9")])
                .as_bytes(),
        );
        io.write_all(&bytes).await.unwrap();
        let mut buf = Vec::new();
        let head = within("answer", http::read_head(&mut io, &mut buf))
            .await
            .expect("an answer");
        assert_eq!(head.status(), 101, "{carried}: {head:?}");
        let (xff, real_ip, _) = last_seen(&ws);
        assert_eq!(
            (xff.as_str(), real_ip.as_str()),
            (want_xff, want_client),
            "{carried}"
        );
        close(FrameStream::new(io, buf, true)).await;
    }
    proxy.assert_drained().await;
}
