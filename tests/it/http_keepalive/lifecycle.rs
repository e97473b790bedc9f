//! The client connection's life on the plain forwarding path: who closes it and when
//! (the client's `Connection: close`, HTTP/1.0, the idle timeout, a client gone while
//! its request is held), and the same over a TLS listener.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use crate::support::ca::TestCa;
use crate::support::child::Child;
use crate::support::http::read_head;
use crate::support::proxy::{Proxy, route};
use crate::support::{eventually, within};

use super::wire::*;

#[tokio::test]
async fn connection_close_from_the_client_is_answered_with_close_and_the_connection_ends() {
    let backend = echo_target().await;
    let (proxy, mut c) = proxy_and_client(&backend, "").await;
    ok_on(&mut c, "/app/1", "/1").await;
    c.get("/app/2", "Connection: close\r\n").await;
    let a = c.answer(false).await;
    assert_eq!((a.status(), a.text().as_str()), (200, "/2"), "{a:?}");
    assert_eq!(a.head.header("connection"), Some("close"), "{a:?}");
    c.expect_eof().await;
    proxy.assert_drained().await;
}

/// HTTP/1.0 without keep-alive: answered in HTTP/1.0 with a length and no `Connection`
/// header (close is 1.0's default), then closed; the backend gets HTTP/1.1.
#[tokio::test]
async fn an_http_1_0_request_is_answered_then_closed() {
    let backend = echo_target().await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    c.send("GET /app/old HTTP/1.0\r\nHost: wsgate.test\r\n\r\n")
        .await;
    let a = c.answer(false).await;
    assert_eq!(a.head.start_line, "HTTP/1.0 200 OK", "{a:?}");
    assert_eq!(a.text(), "/old");
    assert_eq!(a.framing, Framing::Length(4));
    assert_eq!(a.head.header("connection"), None, "{a:?}");
    c.expect_eof().await;
    let heads = backend.heads.lock().unwrap().clone();
    assert_eq!(heads[0].start_line, "GET /old HTTP/1.1");
}

/// HTTP/1.0 answers of unknown length are close-delimited (no chunked for 1.0).
#[tokio::test]
async fn an_http_1_0_request_gets_a_close_delimited_body_when_the_length_is_unknown() {
    let backend = Scripted::start(|_| Reply::then_close("HTTP/1.1 200 OK\r\n\r\nstreamed")).await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    c.send("GET /app HTTP/1.0\r\nHost: wsgate.test\r\n\r\n")
        .await;
    let a = c.answer(false).await;
    assert_eq!(a.framing, Framing::Close, "{a:?}");
    assert_eq!(a.text(), "streamed");
}

/// An idle keep-alive connection is closed, without an answer, `header_read_timeout`
/// after its last response (the header timer restarts when a connection goes idle, as hyper's does).
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_header_read_timeout() {
    let backend = echo_target().await;
    let (proxy, mut c) = proxy_and_client(&backend, "limits: { header_read_timeout: 1s }\n").await;
    ok_on(&mut c, "/app/1", "/1").await;
    // Still usable well inside the timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok_on(&mut c, "/app/2", "/2").await;
    c.expect_idle_close().await;
    proxy.assert_drained().await;
}

/// A client gone while its request is held: the backend's connection is closed (the
/// request abandoned), and the access log says `client_gone`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_during_a_long_poll_abandons_the_backend_request_and_logs_client_gone() {
    let (held_tx, mut held_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::channel::<()>(1);
    let backend_url = held_backend(|mut tcp| async move {
        let mut buf = Vec::new();
        if read_head(&mut tcp, &mut buf).await.is_none() {
            return;
        }
        let _ = held_tx.send(()).await;
        // Held: never answered. Wait (bounded) for wsgate to give up on it.
        let mut rest = [0u8; 1024];
        let read = tokio::time::timeout(Duration::from_secs(60), tcp.read(&mut rest)).await;
        if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            let _ = ended_tx.send(()).await;
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsgate.yaml");
    let config = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\nroutes:\n{}log: {{ format: json, level: info }}\nreload: {{ watch: false }}\n",
        route("app", "/app", &backend_url, "")
    );
    std::fs::write(&path, config).unwrap();
    let gate = Child::start(&path).await;
    let mut c = Client::open(gate.addr).await;
    c.get("/app/poll", "").await;
    let lines = |gate: &Child| -> Vec<serde_json::Value> {
        gate.log()
            .iter()
            .filter(|l| l.contains("\"http request\""))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    within("the request at the backend", held_rx.recv())
        .await
        .expect("the backend got the request");
    assert!(lines(&gate).is_empty(), "answered early: {:?}", gate.log());
    drop(c);
    let gone = Instant::now();
    within("the backend connection closed", ended_rx.recv())
        .await
        .expect("the backend saw its connection end");
    assert!(
        gone.elapsed() < Duration::from_secs(3),
        "{:?}",
        gone.elapsed()
    );
    eventually("the access-log line", || !lines(&gate).is_empty()).await;
    let line = lines(&gate).pop().unwrap();
    let field = |k: &str| line.get(k).or_else(|| line["fields"].get(k)).cloned();
    assert_eq!(field("outcome").unwrap(), "client_gone", "{line}");
    assert_eq!(field("status").unwrap(), 0, "{line}");
    assert_eq!(field("method").unwrap(), "GET", "{line}");
    assert_eq!(field("route").unwrap(), "app", "{line}");
    // Not pinned: the path (and backend) are empty for a request abandoned before
    // its response head, since they are filled in only once the exchange returns.
}

/// Pipelining and keep-alive over a TLS listener: the same answers in order, and the
/// connection kept for a later request.
#[tokio::test]
async fn over_tls_pipelined_gets_are_answered_in_order_and_the_connection_kept() {
    let ca = TestCa::new();
    let backend = echo_target().await;
    let proxy = Proxy::start(&tls_config(&ca, &backend)).await;
    let mut c = tls_client(&ca, proxy.addr()).await;
    c.send(&(get("/app/1", "") + &get("/app/2", "") + &get("/app/3", "")))
        .await;
    for n in 1..=3 {
        let a = c.answer(false).await;
        assert_eq!((a.status(), a.text()), (200, format!("/{n}")), "{a:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    ok_on(&mut c, "/app/4", "/4").await;
    c.get("/app/5", "Connection: close\r\n").await;
    let a = c.answer(false).await;
    assert_eq!(a.head.header("connection"), Some("close"), "{a:?}");
    c.expect_eof().await;
}

/// HTTP/1.0 with `Connection: keep-alive` (served by hyper): it answers in HTTP/1.0 with
/// `connection: keep-alive` and keeps the connection for the next request.
#[tokio::test]
async fn an_http_1_0_keep_alive_request_is_answered_with_keep_alive_and_kept() {
    let backend = echo_target().await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    for n in 1..=2 {
        c.send(&format!(
            "GET /app/{n} HTTP/1.0\r\nHost: wsgate.test\r\nConnection: keep-alive\r\n\r\n"
        ))
        .await;
        let a = c.answer(false).await;
        assert_eq!(a.head.start_line, "HTTP/1.0 200 OK", "{a:?}");
        assert_eq!(a.head.header("connection"), Some("keep-alive"), "{a:?}");
        assert_eq!(a.text(), format!("/{n}"));
    }
    c.send("GET /app/3 HTTP/1.0\r\nHost: wsgate.test\r\n\r\n")
        .await;
    assert_eq!(c.answer(false).await.text(), "/3");
    c.expect_eof().await;
}

/// An idle TLS keep-alive connection is closed `header_read_timeout` after its last answer.
#[tokio::test]
async fn over_tls_an_idle_keep_alive_connection_is_closed_after_header_read_timeout() {
    let ca = TestCa::new();
    let backend = echo_target().await;
    let config = tls_config(&ca, &backend) + "limits: { header_read_timeout: 1s }\n";
    let proxy = Proxy::start(&config).await;
    let mut c = tls_client(&ca, proxy.addr()).await;
    ok_on(&mut c, "/app/1", "/1").await;
    c.expect_idle_close().await;
    proxy.assert_drained().await;
}

/// A backend that closes inside its body (length-framed or chunked): the client gets the
/// head and the bytes that came, never a clean end, and its connection is closed.
#[tokio::test]
async fn a_body_cut_by_the_backend_ends_the_client_connection_without_a_clean_end() {
    for (reply, framing) in [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart",
            "content-length",
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n",
            "transfer-encoding",
        ),
    ] {
        let backend = Scripted::start(move |_| Reply::then_close(reply)).await;
        let (proxy, mut c) = proxy_and_client(&backend, "").await;
        c.get("/app", "").await;
        let head = within("the head", read_head(&mut c.io, &mut c.buf))
            .await
            .expect("a head");
        assert_eq!(head.status(), 200, "{head:?}");
        assert!(head.header(framing).is_some(), "{head:?}");
        let rest = within("the close", async {
            while c.fill().await {}
            String::from_utf8_lossy(&c.buf).into_owned()
        })
        .await;
        assert!(rest.contains("part"), "{framing}: {rest:?}");
        assert!(
            !rest.ends_with("0\r\n\r\n"),
            "{framing}: a clean end: {rest:?}"
        );
        proxy.assert_drained().await;
    }
}
