//! HTTP/2 on TLS listeners: what ALPN offers by default and per listener (reloadable),
//! the `http2` limits announced in SETTINGS, plain listeners that stay HTTP/1.1, and
//! graceful shutdown of an HTTP/2 connection (GOAWAY, WebSockets closed with 1001).

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use wsgate::{Config, Outcome};

use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::h2client::{H2Conn, tls, tls_yaml};
use crate::support::h2raw::{PREFACE, RawH2};
use crate::support::proxy::{Proxy, yaml};
use crate::support::{eventually, eventually_some, within};

const ECHO: &str = "  - name: echo\n    path: /echo\n    echo: true\n";

#[tokio::test]
async fn a_tls_listener_offers_h2_first_then_http11() {
    let ca = TestCa::new();
    let mut proxy = Proxy::start(&tls_yaml(&ca, "", "", ECHO)).await;
    let (_, chosen) = tls(proxy.addr(), &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
    let (_, chosen) = tls(proxy.addr(), &ca, &[b"http/1.1", b"h2"]).await;
    assert_eq!(
        chosen.as_deref(),
        Some(&b"h2"[..]),
        "the server's preference"
    );
    let (_, chosen) = tls(proxy.addr(), &ca, &[b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));

    // A client without ALPN speaks HTTP/1.1: the classic upgrade, reported as h1.
    let (mut ws, _) = client::connect_tls(proxy.addr(), "/echo", &ca).await;
    ws.send(Message::text("h1")).await.unwrap();
    assert_eq!(client::next(&mut ws).await, Message::text("h1"));
    client::close(&mut ws).await;
    let report = proxy.next_report().await;
    assert_eq!(report.protocol.as_str(), "h1", "{report:?}");
    let h1 = r#"wsgate_connections_protocol_total{route="echo",protocol="h1"}"#;
    assert_eq!(proxy.metric(h1), Some(1.0));
}

#[tokio::test]
async fn alpn_http11_only_turns_h2_off_and_a_reload_turns_it_back_on() {
    let ca = TestCa::new();
    let off = tls_yaml(&ca, "    alpn: [\"http/1.1\"]\n", "", ECHO);
    let proxy = Proxy::start(&off).await;
    let (_, chosen) = tls(proxy.addr(), &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));

    proxy.reload_ok(&tls_yaml(&ca, "", "", ECHO)).await;
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
    let mut ws = conn.websocket("/echo").await;
    ws.send(Message::text("on")).await.unwrap();
    assert_eq!(
        within("echo", ws.next()).await.unwrap().unwrap(),
        Message::text("on")
    );

    // Back off: new handshakes get HTTP/1.1; the open h2 connection and its WebSocket go on.
    proxy.reload_ok(&off).await;
    let (_, chosen) = tls(proxy.addr(), &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
    ws.send(Message::text("still")).await.unwrap();
    assert_eq!(
        within("echo", ws.next()).await.unwrap().unwrap(),
        Message::text("still")
    );
}

#[tokio::test]
async fn a_self_signed_listener_keeps_its_certificate_when_its_alpn_changes() {
    let routes = ECHO;
    let with = |alpn: &str| {
        format!(
            "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {{ self_signed: true }}\n{alpn}{}routes:\n{routes}",
            crate::support::proxy::TEST_DEFAULTS
        )
    };
    let proxy = Proxy::start(&with("")).await;
    let leaf = |addr| async move {
        let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert))
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (_, session) = tls.get_ref();
        (
            session.peer_certificates().unwrap()[0].to_vec(),
            session.alpn_protocol().map(<[u8]>::to_vec),
        )
    };
    let (cert, alpn) = leaf(proxy.addr()).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    proxy.reload_ok(&with("    alpn: [\"http/1.1\"]\n")).await;
    let (again, alpn) = leaf(proxy.addr()).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(cert, again, "same self-signed certificate");
}

/// Accepts any server certificate (the self-signed one is made at start).
#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test]
async fn the_http2_limits_are_announced_in_settings() {
    let ca = TestCa::new();
    let top = "limits: { max_header_bytes: 32KiB, header_read_timeout: 200ms }\n\
               http2: { max_concurrent_streams: 7, initial_stream_window_bytes: 100000, \
               initial_connection_window_bytes: 1MiB, max_frame_bytes: 32KiB }\n";
    let proxy = Proxy::start(&tls_yaml(&ca, "", top, ECHO)).await;
    // Read raw: the server's SETTINGS and first connection WINDOW_UPDATE, until the idle
    // connection is closed: GOAWAY after the header timeout; the raw client never answers
    // the PING of hyper's graceful close, so wsgate closes it 5 s later.
    let raw = RawH2::connect(proxy.addr(), &ca).await;
    let seen = raw.seen_within(std::time::Duration::from_secs(20)).await;
    assert_eq!(seen.goaway, Some(0), "GOAWAY NO_ERROR: {seen:?}");
    let setting = |id: u16| {
        seen.settings
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, v)| *v)
    };
    assert_eq!(setting(0x3), Some(7), "MAX_CONCURRENT_STREAMS: {seen:?}");
    assert_eq!(setting(0x4), Some(100_000), "INITIAL_WINDOW_SIZE");
    assert_eq!(setting(0x5), Some(32 << 10), "MAX_FRAME_SIZE");
    assert_eq!(setting(0x6), Some(32 << 10), "MAX_HEADER_LIST_SIZE");
    assert_eq!(setting(0x8), Some(1), "ENABLE_CONNECT_PROTOCOL");
    assert_eq!(seen.connection_window_increment, Some((1 << 20) - 65_535));
    assert_eq!(seen.pings, 0, "keepalive is off by default");
}

#[tokio::test]
async fn the_h2_keepalive_pings_and_closes_a_connection_that_never_answers() {
    let ca = TestCa::new();
    let top = "http2: { keepalive_interval: 100ms, keepalive_timeout: 200ms }\n";
    let proxy = Proxy::start(&tls_yaml(&ca, "", top, ECHO)).await;
    // The raw client never answers a PING (and the header timeout, 10 s, is far off).
    let seen = RawH2::connect(proxy.addr(), &ca).await.seen().await;
    assert!(seen.pings >= 1, "{seen:?}");
    assert!(seen.closed);
}

#[tokio::test]
async fn a_plain_listener_speaks_http11_only() {
    let proxy = Proxy::start(&yaml(ECHO)).await;
    // HTTP/2 with prior knowledge (h2c) is not served: no SETTINGS comes back.
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    tcp.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut answer = Vec::new();
    let _ = within("answer or close", tcp.read_to_end(&mut answer)).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    let err = Config::parse(
        &yaml(ECHO).replace(
            "  - bind: \"127.0.0.1:0\"\n",
            "  - bind: \"127.0.0.1:0\"\n    alpn: [h2]\n",
        ),
        "t.yaml",
    )
    .and_then(|c| c.validate("t.yaml").map(|_| c))
    .expect_err("alpn without tls");
    assert!(err.to_string().contains("`alpn` needs `tls`"), "{err}");
}

#[test]
fn alpn_and_http2_values_are_checked() {
    let ca = TestCa::new();
    let bad = |listener: &str, top: &str| {
        let text = tls_yaml(&ca, listener, top, ECHO);
        match Config::parse(&text, "t.yaml").and_then(|c| c.validate("t.yaml").map(|_| c)) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    };
    assert!(
        bad("    alpn: [h3]\n", "").contains("t.yaml:4:"),
        "unknown protocol"
    );
    assert!(bad("    alpn: []\n", "").contains("at least one"));
    assert!(bad("    alpn: [h2, h2]\n", "").contains("each protocol once"));
    let small = bad("", "http2: { initial_stream_window_bytes: 1KiB }\n");
    assert!(small.contains("initial_stream_window_bytes"), "{small}");
    let frame = bad("", "http2: { max_frame_bytes: 16MiB }\n");
    assert!(frame.contains("max_frame_bytes"), "{frame}");
    let streams = bad("", "http2: { max_concurrent_streams: 0 }\n");
    assert!(streams.contains("max_concurrent_streams"), "{streams}");
    assert!(bad("", "http2: { colour: blue }\n").contains("colour"));
}

#[tokio::test]
async fn shutdown_closes_h2_websockets_with_1001_then_the_connection() {
    let ca = TestCa::new();
    let mut proxy = Proxy::start(&tls_yaml(&ca, "", "", ECHO)).await;
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
    let mut first = conn.websocket("/echo").await;
    let mut second = conn.websocket("/echo").await;
    proxy.cancel();
    for ws in [&mut first, &mut second] {
        match within("Close", ws.next()).await {
            Some(Ok(Message::Close(Some(c)))) => assert_eq!(u16::from(c.code), 1001),
            other => panic!("expected Close 1001, got {other:?}"),
        }
    }
    for _ in 0..2 {
        let report = proxy.next_report().await;
        assert_eq!(report.outcome, Outcome::Shutdown, "{report:?}");
    }
    // GOAWAY, then the connection ends once its streams are done.
    let ended = eventually_some("the h2 connection ends", || {
        std::future::ready(conn.task.is_finished().then_some(()))
    });
    ended.await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn an_h2_connection_without_streams_gets_goaway_after_the_header_timeout() {
    let ca = TestCa::new();
    let top = "limits: { header_read_timeout: 300ms }\n";
    let proxy = Proxy::start(&tls_yaml(&ca, "", top, ECHO)).await;
    // Asks for nothing: closed, as an HTTP/1.1 connection sending no request would be.
    let idle = H2Conn::connect(proxy.addr(), &ca).await;
    eventually("the idle h2 connection ends", || idle.task.is_finished()).await;

    // A WebSocket keeps its connection open however long it lasts.
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
    let mut ws = conn.websocket("/echo").await;
    // Time passing, not a readiness wait: three header timeouts.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert!(!conn.task.is_finished());
    ws.send(Message::text("alive")).await.unwrap();
    assert_eq!(
        within("echo", ws.next()).await.unwrap().unwrap(),
        Message::text("alive")
    );
    ws.close(None).await.unwrap();
    let _ = within("close reply", ws.next()).await;
    eventually("the connection ends once idle", || conn.task.is_finished()).await;
}

/// Two WebSockets on one HTTP/2 connection are two entries in the admin API, each with
/// an id of its own: closing one leaves the other listed, and shutdown reaches both
/// (it finds them there).
#[tokio::test]
async fn each_websocket_on_an_h2_connection_is_listed_apart() {
    let ca = TestCa::new();
    let (_dir, token) = crate::admin_api::token_file();
    let top = format!(
        "admin: {{ bind: \"127.0.0.1:0\", token_file: \"{}\" }}\n",
        token.display()
    );
    let proxy = Proxy::start(&tls_yaml(&ca, "", &top, ECHO)).await;
    let admin = proxy.admin_addr();
    let mut conn = H2Conn::connect(proxy.addr(), &ca).await;
    let mut first = conn.websocket("/echo").await;
    let mut second = conn.websocket("/echo").await;
    let listed = || async {
        let (status, page) = crate::admin_api::call(admin, "GET", "/api/connections").await;
        assert_eq!(status, 200, "{page}");
        let ids: Vec<u64> = page["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_u64().unwrap())
            .collect();
        ids
    };
    let ids = within("both listed", async {
        loop {
            let ids = listed().await;
            if ids.len() == 2 {
                return ids;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_ne!(ids[0], ids[1]);
    first.close(None).await.unwrap();
    let _ = within("close reply", first.next()).await;
    within("one left", async {
        while listed().await.len() != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    second.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        within("echo", second.next()).await.unwrap().unwrap(),
        Message::text("still here")
    );
}
