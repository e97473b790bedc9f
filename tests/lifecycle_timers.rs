//! Per-connection timers with real sockets and short real timeouts (paused time
//! does not mix with real sockets: it would jump over the network waits):
//! peer pings pass through while wsgate's own keepalive runs, data either way
//! defers the idle timeout, and the write timeout frees a connection whose
//! client stopped reading while wsgate's memory stays flat.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use support::backend::{self, Backend, BackendWs, Handshake, RawBackend, RawConn};
use support::frame::{self as wire, Frame};
use support::lifecycle::rss_bytes;
use support::proxy::{Proxy, route};
use support::{STEP, client, eventually, raw, within};
use wsgate::{ClosedBy, Outcome};

/// The payload prefix of wsgate's own pings (`src/keepalive.rs`).
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

#[tokio::test]
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
    let proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), keepalive)).await;
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

#[tokio::test]
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
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), extra)).await;
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
    eventually("backend got its close", STEP, || {
        backend.log.close().is_some()
    })
    .await;
    assert_eq!(backend.log.close().unwrap().0, 1001, "backend close");
    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::IdleTimeout, "{report:?}");
    assert!(matches!(report.closed_by, ClosedBy::Proxy), "{report:?}");
    proxy.assert_drained().await;
}

/// What the flooding backend managed to push, and when each MiB left it.
#[derive(Default)]
struct Flood {
    sent_at: Vec<Duration>,
    first_frame_back: Option<Frame>,
}

const MIB: usize = 1 << 20;
/// The backend tries to push this much to a client that never reads.
const FLOOD: usize = 256;
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
/// Allowed growth of this process's RSS (wsgate, backend and client all live here).
const RSS_BOUND: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_timeout_frees_a_client_that_never_reads_and_memory_stays_flat() {
    let flood = Arc::new(Mutex::new(Flood::default()));
    let record = flood.clone();
    let backend = RawBackend::start(move |mut conn: RawConn| {
        let record = record.clone();
        async move {
            conn.accept(&[]).await;
            let mut bytes = wire::header(true, 0, wire::BINARY, None, MIB as u64);
            bytes.extend(std::iter::repeat_n(0x42u8, MIB));
            let started = Instant::now();
            // Never reads while flooding; each MiB may wait at most STEP.
            for _ in 0..FLOOD {
                match tokio::time::timeout(STEP, conn.io.io().write_all(&bytes)).await {
                    Ok(Ok(())) => record.lock().unwrap().sent_at.push(started.elapsed()),
                    _ => break,
                }
            }
            let back = conn.io.try_recv(STEP).await.ok().flatten();
            record.lock().unwrap().first_frame_back = back;
            conn.io.send(Frame::close(1001, "")).await;
            let _ = tokio::time::timeout(STEP, conn.io.io().read(&mut [0u8; 64])).await;
        }
    })
    .await;
    // A long close_timeout: wsgate keeps reading the backend while it waits for its Close reply.
    let extra = "    write_timeout: 500ms\n    close_timeout: 20s\n";
    let mut proxy = Proxy::with_routes(&route("flood", "/flood", &backend.url("/ws"), extra)).await;
    let sink = raw::upgrade(proxy.addr(), "/flood").await;
    let baseline = rss_bytes();

    let mut peak = baseline;
    let done = |f: &Flood| f.first_frame_back.is_some();
    for _ in 0..6_000 {
        peak = peak.max(rss_bytes());
        if done(&flood.lock().unwrap()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let flood = std::mem::take(&mut *flood.lock().unwrap());
    let pushed = flood.sent_at.len();
    let (stall_at, stall) = flood
        .sent_at
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i + 1, w[1] - w[0]))
        .max_by_key(|(_, gap)| *gap)
        .unwrap_or((0, Duration::ZERO));
    let growth = peak.saturating_sub(baseline);
    println!(
        "flood: backend pushed {pushed} MiB; blocked {stall:?} after {stall_at} MiB; \
         RSS {} MiB before, peak {} MiB (+{:.1} MiB)",
        baseline >> 20,
        peak >> 20,
        growth as f64 / MIB as f64
    );
    assert!(
        growth < RSS_BOUND,
        "RSS grew by {growth} bytes during the flood"
    );
    assert_eq!(
        pushed,
        FLOOD,
        "the backend could not push its {FLOOD} MiB: {:?}",
        flood.sent_at.last()
    );
    assert!(
        stall_at < 64,
        "backend pushed {stall_at} MiB before the client hop filled: buffering"
    );
    assert!(
        stall >= WRITE_TIMEOUT / 2 && stall < WRITE_TIMEOUT * 4,
        "backend blocked {stall:?}, write_timeout {WRITE_TIMEOUT:?}"
    );
    let back = flood.first_frame_back.expect("a frame back");
    assert_eq!(back.opcode, wire::CLOSE, "{back:?}");
    assert_eq!(
        back.close_code(),
        Some(1001),
        "backend close after the client stopped reading"
    );

    drop(sink);
    let report = proxy.next_report().await;
    println!(
        "report: outcome {:?}, closed_by {:?}, code {:?}",
        report.outcome, report.closed_by, report.close_code
    );
    assert_eq!(report.outcome, Outcome::WriteTimeout, "{report:?}");
    assert!(matches!(report.closed_by, ClosedBy::Proxy), "{report:?}");
    proxy.assert_drained().await;
}
