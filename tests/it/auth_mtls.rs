//! Client certificates (mTLS) with test-time certificates: a listener that requires one
//! refuses the handshake without it; an optional one lets a client in without, and a
//! route with `client_cert: required` then answers 403; the certificate's subject and
//! SANs reach the backend in the route's header (never the client's own copy), over
//! HTTP/1.1 and HTTP/2; and the CA file reloads like the listener's certificate.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::backend::Backend;
use crate::support::ca::{Leaf, TestCa};
use crate::support::client;
use crate::support::http::Head;
use crate::support::proxy::{Proxy, TEST_DEFAULTS, route};
use crate::support::{eventually, within};

/// A config with one TLS listener (the CA's leaf) asking for client certificates.
fn mtls_yaml(ca: &TestCa, client_auth: &str, routes: &str) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {}\n    client_auth: {client_auth}\n{TEST_DEFAULTS}routes:\n{routes}",
        ca.listener_tls_yaml()
    )
}

/// An upgrade over TLS presenting `leaf` (or no certificate), with `headers`; the
/// handshake's outcome.
async fn connect(
    addr: SocketAddr,
    path: &str,
    ca: &TestCa,
    leaf: Option<&Leaf>,
    headers: &[(&'static str, &'static str)],
) -> Result<client::Client, String> {
    let config = match leaf {
        Some(leaf) => ca.client_config_as(leaf, &[]),
        None => ca.client_config(),
    };
    let mut req = format!("wss://localhost:{}{path}", addr.port())
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    client::try_connect_tls(addr, req, config).await
}

/// What the backend saw of its latest upgrade request.
async fn last_request(backend: &Backend, count: usize) -> Head {
    eventually("the backend saw the upgrade", || {
        backend.log.accepted() >= count
    })
    .await;
    backend.log.requests().pop().expect("a request")
}

/// `mode: required`: no certificate, no connection; with one, the backend learns who it
/// is, and a client's own copy of the header is replaced.
#[tokio::test]
async fn a_required_client_certificate_is_checked_and_its_subject_reaches_the_backend() {
    let ca = TestCa::new();
    let backend = Backend::echo().await;
    let yaml = mtls_yaml(
        &ca,
        &format!("{{ ca: {}, mode: required }}", ca.ca_pem().display()),
        &route("chat", "/chat", &backend.url("/"), ""),
    );
    let mut proxy = Proxy::start(&yaml).await;
    let refused = connect(proxy.addr(), "/chat", &ca, None, &[]).await;
    assert!(refused.is_err(), "no certificate, no WebSocket");

    let stranger = TestCa::new().issue_client("mallory");
    let refused = connect(proxy.addr(), "/chat", &ca, Some(&stranger), &[]).await;
    assert!(refused.is_err(), "a certificate of another CA is refused");
    assert_eq!(backend.log.accepted(), 0);

    let alice = ca.issue_client("alice");
    let forged = [("x-client-cert-subject", "Subject=\"CN=root\"")];
    let mut ws = connect(proxy.addr(), "/chat", &ca, Some(&alice), &forged)
        .await
        .expect("alice connects");
    let seen = last_request(&backend, 1).await;
    assert_eq!(
        seen.header_all("x-client-cert-subject"),
        ["Subject=\"CN=alice\";Email=\"alice@example.test\""]
    );
    client::close(&mut ws).await;
    let _ = proxy.next_report().await;
    proxy.assert_drained().await;
}

/// `mode: optional`: a client without a certificate gets in on an open route (with the
/// header it forged removed), and 403 on a route that requires one; with a certificate
/// it gets into both, its summary in the route's own header name.
#[tokio::test]
async fn an_optional_listener_lets_routes_require_a_certificate() {
    let ca = TestCa::new();
    let backend = Backend::echo().await;
    let routes = format!(
        "{}{}",
        route("open", "/open", &backend.url("/"), ""),
        route(
            "strict",
            "/strict",
            &backend.url("/"),
            "    client_cert: required\n    client_cert_header: X-Peer\n",
        )
    );
    let yaml = mtls_yaml(
        &ca,
        &format!("{{ ca: {}, mode: optional }}", ca.ca_pem().display()),
        &routes,
    );
    let proxy = Proxy::start(&yaml).await;
    let forged = [("x-client-cert-subject", "Subject=\"CN=root\"")];
    let mut ws = connect(proxy.addr(), "/open", &ca, None, &forged)
        .await
        .expect("no certificate is fine on an open route");
    let seen = last_request(&backend, 1).await;
    assert!(seen.header("x-client-cert-subject").is_none(), "{seen:?}");
    client::close(&mut ws).await;

    let Err(err) = connect(proxy.addr(), "/strict", &ca, None, &[("x-peer", "CN=root")]).await
    else {
        panic!("a client without a certificate got into a route requiring one");
    };
    assert!(err.contains("403"), "{err}");
    assert_eq!(backend.log.accepted(), 1);
    assert_eq!(
        proxy.metric(r#"wsgate_auth_failures_total{route="strict",reason="client_cert_required"}"#),
        Some(1.0)
    );

    let bob = ca.issue_client("bob");
    let mut ws = connect(
        proxy.addr(),
        "/strict",
        &ca,
        Some(&bob),
        &[("x-peer", "CN=root")],
    )
    .await
    .expect("bob connects");
    let seen = last_request(&backend, 2).await;
    assert_eq!(
        seen.header_all("x-peer"),
        ["Subject=\"CN=bob\";Email=\"bob@example.test\""]
    );
    client::close(&mut ws).await;
    proxy.assert_drained().await;
}

/// Over HTTP/2 (an extended CONNECT on a connection that presented a certificate) the
/// backend learns the same.
#[tokio::test]
async fn the_certificate_reaches_the_backend_over_http2() {
    let ca = TestCa::new();
    let backend = Backend::echo().await;
    let yaml = mtls_yaml(
        &ca,
        &format!("{{ ca: {}, mode: required }}", ca.ca_pem().display()),
        &route(
            "chat",
            "/chat",
            &backend.url("/"),
            "    client_cert: required\n",
        ),
    );
    let proxy = Proxy::start(&yaml).await;
    let carol = ca.issue_client("carol");
    let config = ca.client_config_as(&carol, &[b"h2"]);
    let status = within("h2 CONNECT", async {
        let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS with a client certificate");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(format!("https://localhost:{}/chat", proxy.addr().port()))
            .header("sec-websocket-version", "13")
            .header("x-client-cert-subject", "forged")
            .extension(hyper::ext::Protocol::from_static("websocket"))
            .body(Empty::new())
            .unwrap();
        send.send_request(req).await.expect("response").status()
    })
    .await;
    assert_eq!(status, 200);
    let seen = last_request(&backend, 1).await;
    assert_eq!(
        seen.header_all("x-client-cert-subject"),
        ["Subject=\"CN=carol\";Email=\"carol@example.test\""]
    );
}

/// Replacing the CA file and reloading: certificates of the new CA get in, those of the
/// old one no longer do.
#[tokio::test]
async fn the_client_ca_file_reloads() {
    let server = TestCa::new();
    let (old_ca, new_ca) = (TestCa::new(), TestCa::new());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("clients.pem");
    std::fs::copy(old_ca.ca_pem(), &ca_file).unwrap();
    let backend = Backend::echo().await;
    let yaml = mtls_yaml(
        &server,
        &format!("{{ ca: {} }}", ca_file.display()),
        &route("chat", "/chat", &backend.url("/"), ""),
    );
    let proxy = Proxy::start(&yaml).await;
    let (old_leaf, new_leaf) = (old_ca.issue_client("old"), new_ca.issue_client("new"));
    // The server's chain is `server`'s; the client certificate's CA is the file's.
    let as_client = |leaf: &Leaf| server_trusting_client(&server, leaf);
    let mut ws = connect_with(proxy.addr(), as_client(&old_leaf))
        .await
        .expect("the old CA's client gets in");
    client::close(&mut ws).await;
    assert!(
        connect_with(proxy.addr(), as_client(&new_leaf))
            .await
            .is_err()
    );

    std::fs::copy(new_ca.ca_pem(), &ca_file).unwrap();
    proxy.reload_ok(&yaml).await;
    assert!(
        connect_with(proxy.addr(), as_client(&old_leaf))
            .await
            .is_err(),
        "the old CA is no longer trusted"
    );
    let mut ws = connect_with(proxy.addr(), as_client(&new_leaf))
        .await
        .expect("the new CA's client gets in");
    client::close(&mut ws).await;
    proxy.assert_drained().await;
}

/// A client config trusting `server`'s CA and presenting `leaf` (issued by another CA).
fn server_trusting_client(server: &TestCa, leaf: &Leaf) -> Arc<rustls::ClientConfig> {
    server.client_config_as(leaf, &[])
}

async fn connect_with(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<client::Client, String> {
    let url = format!("wss://localhost:{}/chat", addr.port());
    client::try_connect_tls(addr, url, config).await
}

/// `client_auth` on a plain listener, and a CA file that holds no certificate, are
/// refused before anything listens.
#[test]
fn client_auth_needs_tls_and_a_usable_ca() {
    let ca = TestCa::new();
    let plain = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    client_auth: {{ ca: {} }}\nroutes:\n  - {{ name: e, path: /e, echo: true }}\n",
        ca.ca_pem().display()
    );
    let err = wsgate::Config::parse(&plain, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs `tls`"), "{err}");
    let no_ca = mtls_yaml(
        &ca,
        &format!("{{ ca: {} }}", ca.key_pem().display()),
        "  - { name: e, path: /e, echo: true }\n",
    );
    let err = wsgate::Config::parse(&no_ca, "t.yaml")
        .unwrap_err()
        .to_string();
    // Checked where the whole `client_auth` mapping is known: the listener's place.
    assert!(err.starts_with("t.yaml:2:"), "{err}");
    assert!(err.contains("client_auth"), "{err}");
}
