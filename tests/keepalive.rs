//! Keepalive, idle timeout and backpressure: dead peers are detected by
//! wsgate's own pings, whose pongs are consumed, not forwarded; a peer that
//! stops reading slows its sender down instead of growing wsgate's memory.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use support::backend::{Backend, BackendWs, Handshake, Log, RawBackend, RawConn};
use support::frame::{CLOSE, Frame, PING, PONG};
use support::proxy::{Proxy, route};
use support::{STEP, client, eventually, raw};
use wsgate::{ClosedBy, Outcome};

/// Keepalive every 100ms, dead after 200ms more without a pong.
const FAST_KEEPALIVE: &str = "    ping_interval: 100ms\n    ping_timeout: 200ms\n";

#[tokio::test]
async fn client_that_ignores_pings_is_dropped_and_backend_gets_1001() {
    let backend = Backend::echo().await;
    let mut proxy =
        Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), FAST_KEEPALIVE)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    let started = tokio::time::Instant::now();

    // Read what wsgate sends but never answer: its pings, then the end.
    let mut pings = 0;
    for _ in 0..50 {
        match client.recv().await {
            Some(f) if f.opcode == PING => pings += 1,
            Some(f) if f.opcode == CLOSE => support::frame::assert_wire_close(&f),
            Some(f) => panic!("unexpected frame {f:?}"),
            None => break,
        }
    }
    assert!(pings >= 1, "wsgate never pinged the client");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "dead client detected after {waited:?}"
    );

    eventually("backend got a close", STEP, || {
        backend.log.close().is_some()
    })
    .await;
    assert_eq!(
        backend.log.close().unwrap().0,
        1001,
        "{:?}",
        backend.log.messages()
    );
    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::PingTimeout, "{report:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn backend_that_ignores_pings_is_dropped_and_client_gets_1014() {
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept(&[]).await;
        // Records frames (wsgate's pings among them) and never answers a ping.
        conn.record_until_close().await;
    })
    .await;
    let mut proxy =
        Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), FAST_KEEPALIVE)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;

    // The client answers every ping, so only the backend is dead.
    let mut close = None;
    for _ in 0..50 {
        let frame = client.recv_frame().await;
        match frame.opcode {
            PING => client.send(Frame::new(PONG, frame.payload)).await,
            CLOSE => {
                close = Some(frame);
                break;
            }
            _ => panic!("unexpected frame {frame:?}"),
        }
    }
    let close = close.expect("no close within 50 frames");
    support::frame::assert_wire_close(&close);
    assert_eq!(close.close_code(), Some(1014), "{close:?}");
    assert!(
        backend.log.frames().iter().any(|f| f.opcode == PING),
        "backend never pinged"
    );
    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::PingTimeout, "{report:?}");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn answered_keepalive_pings_keep_the_connection_and_are_not_forwarded() {
    let backend = Backend::echo().await;
    let proxy =
        Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), FAST_KEEPALIVE)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;

    // Answer five of wsgate's pings: well past ping_interval + ping_timeout.
    let mut answered = 0;
    for _ in 0..20 {
        let frame = client.recv_frame().await;
        assert_eq!(frame.opcode, PING, "{frame:?}");
        client.send(Frame::new(PONG, frame.payload)).await;
        answered += 1;
        if answered == 5 {
            break;
        }
    }
    client.send(Frame::text("still here")).await;
    let mut echoed = None;
    for _ in 0..10 {
        let frame = client.recv_frame().await;
        match frame.opcode {
            PING => client.send(Frame::new(PONG, frame.payload)).await,
            _ => {
                echoed = Some(frame);
                break;
            }
        }
    }
    assert_eq!(echoed.map(|f| f.payload), Some(b"still here".to_vec()));
    // wsgate's pings and their pongs belong to one hop: the client's pongs never reach the backend.
    let pongs: Vec<Message> = backend
        .log
        .messages()
        .into_iter()
        .filter(|m| matches!(m, Message::Pong(_)))
        .collect();
    assert_eq!(
        pongs,
        vec![],
        "keepalive pongs were forwarded to the backend"
    );
    client.send(Frame::close(1000, "")).await;
    for _ in 0..10 {
        if client.recv_frame().await.opcode == CLOSE {
            break;
        }
    }
    proxy.assert_drained().await;
}

#[tokio::test]
async fn idle_connection_is_closed_after_idle_timeout() {
    let backend = Backend::echo().await;
    let extra = "    idle_timeout: 300ms\n";
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), extra)).await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    ws.send(Message::text("once")).await.unwrap();
    assert_eq!(client::next(&mut ws).await, Message::text("once"));
    let started = tokio::time::Instant::now();

    let rest = client::drain(&mut ws).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "idle close after {waited:?}, idle_timeout is 300ms"
    );
    assert!(
        rest.iter()
            .any(|m| matches!(m, Ok(Message::Close(Some(_))))),
        "the client gets a Close with a code: {rest:?}"
    );
    eventually("backend got a close", STEP, || {
        backend.log.close().is_some()
    })
    .await;
    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::IdleTimeout, "{report:?}");
    assert!(matches!(report.closed_by, ClosedBy::Proxy), "{report:?}");
    proxy.assert_drained().await;
}

/// Most 1 MiB messages the flooding backend tries to send.
const FLOOD_MESSAGES: usize = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_to_a_client_that_never_reads_is_backpressured() {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let backend = Backend::start(
        Handshake::Accept,
        None,
        move |mut ws: BackendWs, log: Arc<Log>| {
            let counter = counter.clone();
            async move {
                let Some(Ok(first)) = ws.next().await else {
                    return;
                };
                log.record(first);
                let chunk = vec![0x42u8; 1 << 20];
                for _ in 0..FLOOD_MESSAGES {
                    if ws.send(Message::binary(chunk.clone())).await.is_err() {
                        return;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        },
    )
    .await;
    let echo = Backend::echo().await;
    let routes = route("flood", "/flood", &backend.url("/ws"), "")
        + &route("app", "/app", &echo.url("/ws"), "");
    let proxy = Proxy::with_routes(&routes).await;
    let mut sink = raw::upgrade(proxy.addr(), "/flood").await;
    sink.send(Frame::text("start")).await;

    // Wait until the backend's sending stalls: no progress for 500ms (bounded
    // at 20s). Kernel socket buffers on the two hops hold some MiB; anything
    // far beyond that is wsgate queueing.
    let mut last = usize::MAX;
    for _ in 0..40 {
        let now = sent.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stalled_at = sent.load(Ordering::SeqCst);
    println!("backend stalled after {stalled_at} MiB");
    assert!(
        stalled_at < 64,
        "backend sent {stalled_at} MiB to a client that reads nothing: wsgate is buffering"
    );

    // Other connections are unaffected.
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    ws.send(Message::text("unaffected")).await.unwrap();
    assert_eq!(client::next(&mut ws).await, Message::text("unaffected"));
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;

    // Once the client reads, everything arrives.
    let mut received = 0usize;
    while received < FLOOD_MESSAGES << 20 {
        let frame = sink.recv_frame().await;
        received += frame.payload.len();
    }
    assert_eq!(sent.load(Ordering::SeqCst), FLOOD_MESSAGES);
    drop(sink);
    proxy.assert_drained().await;
}

/// Messages a client sends after wsgate's idle Close are not relayed and not counted: the
/// backend hop already got its Close, and the report counts what reached the backend.
#[tokio::test]
async fn messages_after_wsgates_close_are_dropped_and_not_counted() {
    let backend = Backend::echo().await;
    let extra = "    idle_timeout: 300ms\n";
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), extra)).await;
    let mut c = raw::upgrade(proxy.addr(), "/app").await;
    c.send(Frame::text("once")).await;
    assert_eq!(c.recv_frame().await.payload, b"once");
    let close = c.recv_close().await;
    assert_eq!(close.close_code(), Some(1001));
    for _ in 0..3 {
        c.send(Frame::text("late")).await;
    }
    c.send(Frame::close(1001, "")).await;
    c.expect_eof().await;
    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::IdleTimeout, "{report:?}");
    assert_eq!((report.msgs_in, report.msgs_out), (1, 1), "{report:?}");
    assert_eq!(
        backend.log.data_messages().len(),
        1,
        "only `once` reached the backend"
    );
}
