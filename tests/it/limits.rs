//! Limits: headers over max_header_bytes get 431; connection caps answer 503
//! before any backend is contacted and free their slots; a client over its
//! message rate gets 1008; slow or silent clients are cut off at their timeouts
//! while a legitimate client connects at the same time.
//!
//! The timeout tests run on tokio's paused clock (wsgate on the test's runtime,
//! see `support::clock`): the cut-off times are virtual, so they are exact and
//! no test waits for them in real time.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::backend::Backend;
use crate::support::ca::TestCa;
use crate::support::frame::{CLOSE, Frame, TEXT};
use crate::support::proxy::{Proxy, TEST_DEFAULTS, route, yaml};
use crate::support::{client, eventually, eventually_some, http, raw, within};
use wsgate::{ClosedBy, Outcome};

const ECHO: &str = "  - { name: echo, path: /echo, echo: true }\n";

async fn status_of(proxy: &Proxy, path: &str) -> u16 {
    let request = http::upgrade_request(proxy.addr(), path, &[]);
    http::exchange(proxy.addr(), request).await.status()
}

#[tokio::test]
async fn global_cap_answers_503_before_the_backend_is_contacted_and_frees_slots() {
    let backend = Backend::echo().await;
    let app = route("app", "/app", &backend.url("/ws"), "");
    let proxy = Proxy::start(&(yaml(&app) + "limits: { max_connections: 2 }\n")).await;
    let mut open = [
        raw::upgrade(proxy.addr(), "/app").await,
        raw::upgrade(proxy.addr(), "/app").await,
    ];
    assert_eq!(backend.log.accepted(), 2);

    let third = http::exchange(
        proxy.addr(),
        http::upgrade_request(proxy.addr(), "/app", &[]),
    )
    .await;
    assert_eq!(third.status(), 503, "{third:?}");
    assert_eq!(
        backend.log.accepted(),
        2,
        "the backend was contacted for the third"
    );
    // The client has its 101 a moment before its relay counts as active.
    eventually("both relays active", || proxy.active() == 2).await;

    // The slot frees once wsgate has finished with one of the two.
    open[0].expect_close_after_sending(1000, "").await;
    eventually_some("a slot freed after a connection closed", || async {
        (status_of(&proxy, "/app").await == 101).then_some(())
    })
    .await;
    open[1].expect_close_after_sending(1000, "").await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn route_cap_answers_503_on_the_second_and_spares_other_routes() {
    let capped = Backend::echo().await;
    let other = Backend::echo().await;
    let routes = route(
        "one",
        "/one",
        &capped.url("/ws"),
        "    max_connections: 1\n",
    ) + &route("other", "/other", &other.url("/ws"), "");
    let proxy = Proxy::with_routes(&routes).await;
    let mut first = raw::upgrade(proxy.addr(), "/one").await;

    assert_eq!(status_of(&proxy, "/one").await, 503);
    assert_eq!(
        capped.log.accepted(),
        1,
        "the capped route's backend was contacted"
    );
    let mut elsewhere = raw::upgrade(proxy.addr(), "/other").await;
    assert_eq!(other.log.accepted(), 1);
    for c in [&mut first, &mut elsewhere] {
        c.expect_close_after_sending(1000, "").await;
    }
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

/// Messages the client sends in one burst.
const BURST: usize = 50;
/// The route's `max_message_rate` (and so its burst allowance).
const RATE: usize = 5;

#[tokio::test]
async fn burst_over_the_message_rate_gets_1008_and_outcome_limit() {
    let backend = Backend::echo().await;
    let extra = format!("    max_message_rate: {RATE}\n");
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), &extra)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;

    let mut burst = Vec::new();
    for i in 0..BURST {
        burst.extend(Frame::text(format!("m{i}")).masked().encode());
    }
    client.write_bytes(&burst).await;
    let mut echoed = 0;
    let close = loop {
        let frame = client.recv_frame().await;
        match frame.opcode {
            TEXT => echoed += 1,
            CLOSE => break frame,
            _ => panic!("unexpected {frame:?}"),
        }
        assert!(echoed <= BURST, "no Close after {echoed} echoes");
    };
    crate::support::frame::assert_wire_close(&close);
    assert_eq!(close.close_code(), Some(1008), "{close:?}");
    client.send(Frame::close(1008, "")).await;
    client.expect_eof().await;

    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::Limit, "{report:?}");
    assert_eq!(report.close_code, Some(1008), "{report:?}");
    assert!(matches!(report.closed_by, ClosedBy::Proxy), "{report:?}");
    let forwarded = backend.log.data_messages().len();
    println!("rate {RATE}/s: {forwarded} of {BURST} forwarded, {echoed} echoed before the 1008");
    assert_eq!(
        forwarded, RATE,
        "messages forwarded within the burst allowance"
    );
    assert_eq!(
        backend.log.close().map(|c| c.0),
        Some(1001),
        "backend close"
    );
    proxy.assert_drained().await;
}

/// Slow or silent clients attacking at once.
const ATTACKERS: usize = 10;
/// The configured header read and TLS handshake timeouts.
const CUTOFF: Duration = Duration::from_millis(500);

/// Each attacker must be cut off at [`CUTOFF`], not before, not later (virtual time:
/// only the clock's small steps, see `support::clock`, come on top).
fn assert_cut_off(what: &str, times: &[Duration]) {
    println!("{what} cut off after {times:?}");
    for t in times {
        assert!(
            *t >= CUTOFF && *t < CUTOFF + CUTOFF / 5,
            "{what} cut off after {t:?}, timeout {CUTOFF:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn slowloris_is_cut_off_at_header_read_timeout_while_a_client_connects() {
    let limits = "limits: { header_read_timeout: 500ms }\n";
    let proxy = Proxy::builder(&(yaml(ECHO) + limits))
        .paused()
        .start()
        .await;
    let addr = proxy.addr();
    let started = Instant::now();
    let attackers = join_all((0..ATTACKERS).map(|_| async move {
        let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
        // One header byte every 100ms, for up to 5s: never a complete head.
        let trickle = tokio::spawn(async move {
            let _ = wr
                .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await;
            for _ in 0..50 {
                if wr.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let answer = raw::read_to_eof(&mut rd).await;
        let cut = started.elapsed();
        trickle.abort();
        assert!(!String::from_utf8_lossy(&answer).contains(" 101 "));
        cut
    }));
    let legit = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = Instant::now();
        let (mut ws, _) = client::connect(proxy.url("/echo")).await;
        ws.send(Message::text("legit")).await.unwrap();
        assert_eq!(client::next(&mut ws).await, Message::text("legit"));
        let took = asked.elapsed();
        ws.close(None).await.unwrap();
        client::drain(&mut ws).await;
        took
    };
    let (times, took) = tokio::join!(attackers, legit);
    println!("legitimate client's round trip during the attack: {took:?}");
    assert!(took < CUTOFF, "the legitimate client waited {took:?}");
    assert_cut_off("slowloris clients", &times);
    proxy.assert_drained().await;
}

#[tokio::test(start_paused = true)]
async fn silent_tls_clients_are_dropped_at_tls_handshake_timeout_while_a_client_connects() {
    let ca = TestCa::new();
    let config = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {}\n{TEST_DEFAULTS}\
         routes:\n{ECHO}limits: {{ tls_handshake_timeout: 500ms }}\n",
        ca.listener_tls_yaml()
    );
    let proxy = Proxy::builder(&config).paused().start().await;
    let addr = proxy.addr();
    let started = Instant::now();
    let attackers = join_all((0..ATTACKERS).map(|_| async move {
        // Connects and never sends a ClientHello.
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let got = raw::read_to_eof(&mut tcp).await;
        assert!(got.is_empty(), "{got:02x?}");
        started.elapsed()
    }));
    let legit = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let asked = Instant::now();
        let (mut ws, _) = client::connect_tls(addr, "/echo", &ca).await;
        ws.send(Message::text("legit")).await.unwrap();
        let echoed = within("echo", ws.next()).await;
        assert_eq!(echoed.unwrap().unwrap(), Message::text("legit"));
        let took = asked.elapsed();
        ws.close(None).await.unwrap();
        for _ in 0..10 {
            if within("close reply", ws.next()).await.is_none() {
                break;
            }
        }
        took
    };
    let (times, took) = tokio::join!(attackers, legit);
    println!("legitimate TLS client's round trip during the attack: {took:?}");
    assert!(took < CUTOFF, "the legitimate TLS client waited {took:?}");
    assert_cut_off("silent TLS clients", &times);
    proxy.assert_drained().await;
}
