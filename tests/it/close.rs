//! The close handshake end to end: codes and reasons pass unchanged in both
//! directions, vanished peers become 1001/1014 (never 1006 on the wire), an
//! unanswered Close is bounded by close_timeout, and shutdown sends 1001.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::support::backend::{Backend, BackendWs, Handshake, Log, RawBackend, RawConn};
use crate::support::frame::{CLOSE, Frame};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::{STEP, client, eventually, raw, within};
use wsgate::{ClosedBy, Outcome};

async fn proxy_to(backend: &str, extra: &str) -> Proxy {
    Proxy::with_routes(&route("app", "/app", backend, extra)).await
}

#[tokio::test]
async fn client_close_4000_bye_reaches_backend_and_reply_returns() {
    let backend = Backend::echo().await;
    let mut proxy = proxy_to(&backend.url("/ws"), "").await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    let bye = CloseFrame {
        code: 4000.into(),
        reason: "bye".into(),
    };
    ws.close(Some(bye.clone())).await.unwrap();

    let reply = client::next(&mut ws).await;
    assert_eq!(
        reply,
        Message::Close(Some(bye)),
        "the backend's reply, unchanged"
    );
    assert!(
        within("end", ws.next()).await.is_none(),
        "stream ends after the close"
    );
    assert_eq!(backend.log.close(), Some((4000, "bye".to_string())));

    let report = proxy.next_report().await;
    assert!(matches!(report.closed_by, ClosedBy::Client), "{report:?}");
    assert_eq!(report.close_code, Some(4000), "{report:?}");
    assert_eq!(report.close_reason, "bye", "{report:?}");
    assert_eq!(report.outcome, Outcome::Normal, "{report:?}");
    assert_eq!(report.route, "app");
    assert_eq!(report.client_addr.ip().to_string(), "127.0.0.1");
    proxy.assert_drained().await;
}

/// Backend session: on the first message, close with 4000 "bye", then record
/// everything until the end (the client's reply included).
async fn close_on_first_message(mut ws: BackendWs, log: Arc<Log>) {
    let Some(Ok(first)) = ws.next().await else {
        return;
    };
    log.record(first);
    let bye = CloseFrame {
        code: 4000.into(),
        reason: "bye".into(),
    };
    if ws.close(Some(bye)).await.is_err() {
        return;
    }
    crate::support::backend::record(ws, log).await;
}

#[tokio::test]
async fn backend_close_4000_bye_reaches_client_and_reply_returns() {
    let backend = Backend::start(Handshake::Accept, None, close_on_first_message).await;
    let mut proxy = proxy_to(&backend.url("/ws"), "").await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    client.send(Frame::text("hi")).await;

    let close = client.recv_close().await;
    assert_eq!(close.close_code(), Some(4000));
    assert_eq!(close.close_reason(), "bye");
    client.send(Frame::close(4000, "bye")).await;
    client.expect_eof().await;

    eventually("backend got the reply", || backend.log.close().is_some()).await;
    assert_eq!(backend.log.close(), Some((4000, "bye".to_string())));
    let report = proxy.next_report().await;
    assert!(matches!(report.closed_by, ClosedBy::Backend), "{report:?}");
    assert_eq!(report.close_code, Some(4000), "{report:?}");
    assert_eq!(report.close_reason, "bye", "{report:?}");
    assert_eq!(report.outcome, Outcome::Normal, "{report:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn empty_close_stays_empty_and_is_never_1005_on_the_wire() {
    let backend = Backend::echo().await;
    let mut proxy = proxy_to(&backend.url("/ws"), "").await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    client.send(Frame::new(CLOSE, [])).await;
    let reply = client.recv_close().await;
    assert_eq!(reply.payload, b"", "reply to an empty close: {reply:?}");
    client.expect_eof().await;
    eventually("backend got the close", || {
        !backend.log.messages().is_empty()
    })
    .await;
    assert_eq!(backend.log.messages(), [Message::Close(None)]);
    let report = proxy.next_report().await;
    assert!(matches!(report.closed_by, ClosedBy::Client), "{report:?}");
    assert_eq!(report.outcome, Outcome::Normal, "{report:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn client_vanishing_gives_backend_1001() {
    let backend = Backend::echo().await;
    let mut proxy = proxy_to(&backend.url("/ws"), "").await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    client.send(Frame::text("hi")).await;
    assert_eq!(client.recv_frame().await.payload, b"hi");
    drop(client);

    eventually("backend got a close", || backend.log.close().is_some()).await;
    assert_eq!(
        backend.log.close().unwrap().0,
        1001,
        "{:?}",
        backend.log.messages()
    );
    let report = proxy.next_report().await;
    assert!(matches!(report.closed_by, ClosedBy::Client), "{report:?}");
    assert_eq!(report.outcome, Outcome::ClientGone, "{report:?}");
    assert_eq!((report.msgs_in, report.msgs_out), (1, 1), "{report:?}");
    assert_eq!((report.bytes_in, report.bytes_out), (2, 2), "{report:?}");
    proxy.assert_drained().await;
}

#[tokio::test(start_paused = true)]
async fn unanswered_close_is_dropped_after_close_timeout() {
    // The backend reads the forwarded Close but never answers it.
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept(&[]).await;
        for _ in 0..10 {
            match conn.io.try_recv(STEP).await {
                Ok(Some(frame)) => conn.log.record_frame(frame),
                _ => return conn.log.mark("eof"),
            }
        }
    })
    .await;
    let routes = route(
        "app",
        "/app",
        &backend.url("/ws"),
        "    close_timeout: 400ms\n",
    );
    let mut proxy = Proxy::builder(&yaml(&routes)).paused().start().await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    let started = tokio::time::Instant::now();
    client.send(Frame::close(1000, "done")).await;

    // Whatever wsgate sends (nothing, or its own Close), the connection ends in time.
    for _ in 0..2 {
        match client.recv().await {
            None => break,
            Some(frame) => crate::support::frame::assert_wire_close(&frame),
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "connection ended {waited:?} after the Close; close_timeout is 400ms"
    );
    eventually("backend socket closed", || backend.log.saw("eof")).await;
    let frames = backend.log.frames();
    assert_eq!(frames[0].close_code(), Some(1000), "{frames:?}");
    assert_eq!(frames[0].close_reason(), "done");
    proxy.next_report().await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn shutdown_sends_1001_both_ways_and_stops_listening() {
    let backend = Backend::echo().await;
    let mut proxy = proxy_to(&backend.url("/ws"), "").await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    client.send(Frame::text("hi")).await;
    assert_eq!(client.recv_frame().await.payload, b"hi");
    let addr = proxy.addr();

    proxy.cancel();
    client.expect_close(1001).await;
    eventually("backend got a close", || backend.log.close().is_some()).await;
    assert_eq!(backend.log.close().unwrap().0, 1001);
    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::Shutdown, "{report:?}");
    assert!(matches!(report.closed_by, ClosedBy::Proxy), "{report:?}");
    proxy.assert_drained().await;
    proxy.shutdown().await;

    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "still accepting after shutdown");
}

#[tokio::test]
async fn tungstenite_client_close_handshake_completes_cleanly() {
    // A well-behaved client library sees a clean close (no error, no reset).
    let backend = Backend::echo().await;
    let proxy = proxy_to(&backend.url("/ws"), "").await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(client::next(&mut ws).await, Message::text("x"));
    ws.close(None).await.unwrap();
    let rest = client::drain(&mut ws).await;
    assert!(
        rest.iter().all(|r| r.is_ok()),
        "errors after close: {rest:?}"
    );
    proxy.assert_drained().await;
}
