//! Keepalive, idle timeout and backpressure: dead peers are detected by
//! wsgate's own pings, whose pongs are consumed, not forwarded, while the peers'
//! own pings pass end to end; data either way defers the idle timeout, and what a
//! client sends after wsgate's Close is dropped; a peer that stops reading slows
//! its sender down instead of growing wsgate's memory.
//!
//! The timer tests run on tokio's paused clock with wsgate on the test's runtime
//! (see `support::clock`): intervals and timeouts are virtual time, exact, and
//! cost no real waiting. The backpressure test measures real sending stalls
//! across worker threads and stays on the wall clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::backend::{self, Backend, BackendWs, Handshake, Log, RawBackend, RawConn};
use crate::support::frame::{CLOSE, Frame, PING, PONG};
use crate::support::proxy::{Proxy, route};
use crate::support::{client, eventually, raw, within};
use wsgate::{ClosedBy, Outcome};

/// Keepalive every 100ms, dead after 200ms more without a pong.
const FAST_KEEPALIVE: &str = "    ping_interval: 100ms\n    ping_timeout: 200ms\n";

/// wsgate on the test's paused clock with `routes`.
async fn paused(routes: &str) -> Proxy {
    Proxy::builder(&crate::support::proxy::yaml(routes))
        .paused()
        .start()
        .await
}

#[tokio::test(start_paused = true)]
async fn client_that_ignores_pings_is_dropped_and_backend_gets_1001() {
    let backend = Backend::echo().await;
    let mut proxy = paused(&route("app", "/app", &backend.url("/ws"), FAST_KEEPALIVE)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    let started = tokio::time::Instant::now();

    // Read what wsgate sends but never answer: its pings, then the end.
    let mut pings = 0;
    for _ in 0..50 {
        match client.recv().await {
            Some(f) if f.opcode == PING => pings += 1,
            Some(f) if f.opcode == CLOSE => crate::support::frame::assert_wire_close(&f),
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

    eventually("backend got a close", || backend.log.close().is_some()).await;
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

#[tokio::test(start_paused = true)]
async fn backend_that_ignores_pings_is_dropped_and_client_gets_1014() {
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept(&[]).await;
        // Records frames (wsgate's pings among them) and never answers a ping.
        conn.record_until_close().await;
    })
    .await;
    let mut proxy = paused(&route("app", "/app", &backend.url("/ws"), FAST_KEEPALIVE)).await;
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
    crate::support::frame::assert_wire_close(&close);
    assert_eq!(close.close_code(), Some(1014), "{close:?}");
    assert!(
        backend.log.frames().iter().any(|f| f.opcode == PING),
        "backend never pinged"
    );
    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::PingTimeout, "{report:?}");
    proxy.assert_drained().await;
}

#[tokio::test(start_paused = true)]
async fn answered_keepalive_pings_keep_the_connection_and_are_not_forwarded() {
    let backend = Backend::echo().await;
    let proxy = paused(&route("app", "/app", &backend.url("/ws"), FAST_KEEPALIVE)).await;
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

/// The payload prefix of wsgate's own pings (`src/relay/keepalive.rs`).
const MARK: &[u8] = b"wsgate\0";

fn is_ours(m: &Message) -> bool {
    matches!(m, Message::Ping(p) | Message::Pong(p) if p.starts_with(MARK))
}

fn wsgate_pongs(messages: &[Message]) -> Vec<&Message> {
    messages
        .iter()
        .filter(|m| matches!(m, Message::Pong(_)) && is_ours(m))
        .collect()
}

/// Reads everything that arrives on `ws` for `period` (bounded count).
async fn collect_for(ws: &mut client::Client, period: Duration) -> Vec<Message> {
    let until = Instant::now() + period;
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match tokio::time::timeout_at(until, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(m))) => out.push(m),
            Ok(other) => panic!("connection ended: {other:?} after {out:?}"),
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn peer_pings_pass_end_to_end_while_wsgates_own_pongs_are_consumed() {
    let backend = Backend::start(
        Handshake::Accept,
        None,
        |mut ws: BackendWs, log| async move {
            let _ = ws.send(Message::Ping("from backend".into())).await;
            backend::echo(ws, log).await;
        },
    )
    .await;
    let keepalive = "    ping_interval: 200ms\n    ping_timeout: 200ms\n";
    let proxy = paused(&route("app", "/app", &backend.url("/ws"), keepalive)).await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    ws.send(Message::Ping("from client".into())).await.unwrap();

    // Both peers answer pings (tungstenite does) for three ping intervals and more.
    let seen = collect_for(&mut ws, Duration::from_millis(1200)).await;
    let at_backend = backend.log.messages();
    let ours = |ms: &[Message]| {
        ms.iter()
            .filter(|m| matches!(m, Message::Ping(_)) && is_ours(m))
            .count()
    };
    println!(
        "in 1.2s wsgate pinged the client {} times and the backend {} times",
        ours(&seen),
        ours(&at_backend)
    );
    assert!(
        seen.contains(&Message::Ping("from backend".into())),
        "client saw {seen:?}"
    );
    assert!(
        seen.contains(&Message::Pong("from client".into())),
        "client saw {seen:?}"
    );
    assert!(
        at_backend.contains(&Message::Ping("from client".into())),
        "{at_backend:?}"
    );
    assert!(
        at_backend.contains(&Message::Pong("from backend".into())),
        "{at_backend:?}"
    );
    assert!(
        ours(&seen) >= 2 && ours(&at_backend) >= 2,
        "keepalive did not ping both hops"
    );
    assert_eq!(
        wsgate_pongs(&seen),
        Vec::<&Message>::new(),
        "backend's keepalive pongs reached the client"
    );
    assert_eq!(
        wsgate_pongs(&at_backend),
        Vec::<&Message>::new(),
        "client's keepalive pongs reached the backend"
    );
    assert!(!seen.iter().any(Message::is_close), "{seen:?}");

    ws.send(Message::text("still here")).await.unwrap();
    let rest = collect_for(&mut ws, Duration::from_millis(300)).await;
    assert!(rest.contains(&Message::text("still here")), "{rest:?}");
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    proxy.assert_drained().await;
}

/// Backend ticks while data keeps the connection alive.
const TICKS: usize = 8;
const TICK: Duration = Duration::from_millis(100);
const IDLE: Duration = Duration::from_millis(400);

#[tokio::test(start_paused = true)]
async fn data_either_way_defers_the_idle_timeout_then_both_hops_get_1001() {
    let backend = Backend::start(
        Handshake::Accept,
        None,
        |mut ws: BackendWs, log| async move {
            for i in 0..TICKS {
                if ws.send(Message::text(format!("tick {i}"))).await.is_err() {
                    return;
                }
                tokio::time::sleep(TICK).await;
            }
            backend::record(ws, log).await;
        },
    )
    .await;
    // Keepalive pings (answered) run faster than the idle timeout: they are not data.
    let extra = "    idle_timeout: 400ms\n    ping_interval: 100ms\n    ping_timeout: 200ms\n";
    let mut proxy = paused(&route("app", "/app", &backend.url("/ws"), extra)).await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    let opened = Instant::now();

    let mut ticks = 0;
    let mut last_tick = opened;
    let close = loop {
        match within("client read", ws.next()).await {
            Some(Ok(Message::Text(_))) => {
                ticks += 1;
                last_tick = Instant::now();
            }
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no Close: {other:?}"),
        }
        assert!(ticks <= TICKS, "too many ticks");
    };
    let (lived, quiet) = (opened.elapsed(), last_tick.elapsed());
    println!("idle close after {lived:?}, {quiet:?} after the last data frame");
    assert_eq!(ticks, TICKS, "the connection was closed while data flowed");
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    assert!(
        lived > IDLE * 2,
        "closed after {lived:?} although data kept flowing"
    );
    assert!(
        quiet >= IDLE - Duration::from_millis(50) && quiet < IDLE * 3,
        "closed {quiet:?} after the last data frame, idle_timeout {IDLE:?}"
    );
    client::drain(&mut ws).await;
    eventually("backend got its close", || backend.log.close().is_some()).await;
    assert_eq!(backend.log.close().unwrap().0, 1001, "backend close");
    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::IdleTimeout, "{report:?}");
    assert!(matches!(report.closed_by, ClosedBy::Proxy), "{report:?}");
    proxy.assert_drained().await;
}

/// Messages a client sends after wsgate's idle Close are not relayed and not counted: the
/// backend hop already got its Close, and the report counts what reached the backend.
#[tokio::test(start_paused = true)]
async fn messages_after_wsgates_close_are_dropped_and_not_counted() {
    let backend = Backend::echo().await;
    let extra = "    idle_timeout: 300ms\n";
    let mut proxy = paused(&route("app", "/app", &backend.url("/ws"), extra)).await;
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
