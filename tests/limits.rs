//! Process-wide limits on the client hop before the upgrade: slow headers,
//! half-open TLS handshakes, oversized headers, and the connection cap; a
//! legitimate client still gets through.

mod support;

use std::time::Duration;

use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use support::http;
use support::proxy::{Proxy, TEST_DEFAULTS, yaml};
use support::{STEP, client, raw};

const ECHO: &str = "  - { name: echo, path: /echo, echo: true }\n";

/// A legitimate client: echo round trip, then a clean close.
async fn legit_client_gets_through(proxy: &Proxy) {
    let (mut ws, _) = client::connect(proxy.url("/echo")).await;
    ws.send(Message::text("legit")).await.unwrap();
    assert_eq!(client::next(&mut ws).await, Message::text("legit"));
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
}

#[tokio::test]
async fn slow_headers_are_cut_off_at_header_read_timeout() {
    let proxy = Proxy::start(&(yaml(ECHO) + "limits: { header_read_timeout: 300ms }\n")).await;
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let started = tokio::time::Instant::now();
    // One header byte every 50ms: 3s worth, never a complete head.
    let trickle = tokio::spawn(async move {
        if wr
            .write_all(b"GET /echo HTTP/1.1\r\nX-Slow: ")
            .await
            .is_err()
        {
            return;
        }
        for _ in 0..60 {
            if wr.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Meanwhile a legitimate client is served.
    legit_client_gets_through(&proxy).await;
    let answer = raw::read_to_eof(&mut rd).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(2500),
        "slow client cut off after {waited:?}, header_read_timeout is 300ms"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains(" 101 "), "{answer}");
    trickle.abort();
    proxy.assert_drained().await;
}

#[tokio::test]
async fn half_open_tls_handshake_is_cut_off() {
    let config = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {{ self_signed: true }}\n\
         {TEST_DEFAULTS}routes:\n{ECHO}limits: {{ tls_handshake_timeout: 300ms }}\n"
    );
    let proxy = Proxy::start(&config).await;
    let started = tokio::time::Instant::now();
    let mut idle = TcpStream::connect(proxy.addr()).await.unwrap();
    let got = raw::read_to_eof(&mut idle).await;
    let waited = started.elapsed();
    assert!(got.is_empty(), "{got:02x?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(2500),
        "silent TLS client cut off after {waited:?}, tls_handshake_timeout is 300ms"
    );
    proxy.assert_drained().await;
}

#[tokio::test]
async fn headers_over_max_header_bytes_are_431() {
    let proxy = Proxy::start(&(yaml(ECHO) + "limits: { max_header_bytes: 8KiB }\n")).await;
    let small = "a".repeat(6 * 1024);
    let big = "a".repeat(10 * 1024);
    let ok = http::exchange(
        proxy.addr(),
        http::upgrade_request(proxy.addr(), "/echo", &[("X-Pad", &small)]),
    )
    .await;
    assert_eq!(
        ok.status(),
        101,
        "6 KiB of headers under an 8 KiB limit: {ok:?}"
    );
    let refused = http::exchange(
        proxy.addr(),
        http::upgrade_request(proxy.addr(), "/echo", &[("X-Pad", &big)]),
    )
    .await;
    assert_eq!(refused.status(), 431, "{refused:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn connection_cap_answers_503_and_frees_slots() {
    let proxy = Proxy::start(&(yaml(ECHO) + "limits: { max_connections: 2 }\n")).await;
    let mut first = raw::upgrade(proxy.addr(), "/echo").await;
    let second = raw::upgrade(proxy.addr(), "/echo").await;

    let third = http::exchange(
        proxy.addr(),
        http::upgrade_request(proxy.addr(), "/echo", &[]),
    )
    .await;
    assert_eq!(third.status(), 503, "{third:?}");

    first.expect_close_after_sending(1000, "").await;
    // The slot frees once wsgate has finished with the first connection.
    let deadline = tokio::time::Instant::now() + STEP;
    let mut status = 0;
    for _ in 0..500 {
        let request = http::upgrade_request(proxy.addr(), "/echo", &[]);
        status = http::exchange(proxy.addr(), request).await.status();
        if status == 101 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, 101, "no slot freed after a connection closed");
    drop(second);
    proxy.assert_drained().await;
}
