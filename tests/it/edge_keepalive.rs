//! Edge hardening: only the pong that answers wsgate's own outstanding ping is consumed
//! (every other pong passes end to end, whatever its payload looks like); connections
//! waiting for their request are capped before `accept`, so idle sockets cannot pile
//! up; the admin listener caps header size and connections.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::backend::{Backend, RawBackend, RawConn};
use crate::support::frame::{CLOSE, Frame, PING, PONG};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::{eventually, http, raw, within};

/// The payload prefix of wsgate's own pings (`src/relay/keepalive.rs`).
const MARK: &[u8] = b"wsgate\0";

/// A payload shaped exactly like one of wsgate's own pings.
fn lookalike(seq: u64) -> Vec<u8> {
    let mut payload = MARK.to_vec();
    payload.extend_from_slice(&seq.to_be_bytes());
    payload
}

/// Keepalive every 100ms, dead after 200ms more without a pong.
const FAST_KEEPALIVE: &str = "    ping_interval: 100ms\n    ping_timeout: 200ms\n";

async fn paused(routes: &str) -> Proxy {
    Proxy::builder(&yaml(routes)).paused().start().await
}

/// Closes `client` politely and waits for wsgate to finish with it.
async fn close_and_drain(mut client: raw::RawClient, proxy: &Proxy) {
    client.send(Frame::close(1000, "")).await;
    for _ in 0..20 {
        match client.recv().await {
            Some(f) if f.opcode == CLOSE => break,
            Some(f) if f.opcode == PING => client.send(Frame::new(PONG, f.payload)).await,
            Some(_) => {}
            None => break,
        }
    }
    proxy.assert_drained().await;
}

#[tokio::test]
async fn with_keepalive_off_a_peers_ping_that_looks_like_wsgates_gets_its_pong() {
    // Bug: any pong shaped like wsgate's keepalive pong was consumed, keepalive on or off.
    let backend = RawBackend::start(|mut conn: RawConn| async move {
        conn.accept(&[]).await;
        // The backend pings the client with a lookalike payload, then answers pings and
        // records the rest.
        conn.io.send(Frame::ping(lookalike(2))).await;
        for _ in 0..100 {
            let Ok(Some(frame)) = conn.io.try_recv(crate::support::STEP).await else {
                return;
            };
            conn.log.record_frame(frame.clone());
            match frame.opcode {
                PING => conn.io.send(Frame::new(PONG, frame.payload)).await,
                CLOSE => return conn.io.send(Frame::new(CLOSE, frame.payload)).await,
                _ => {}
            }
        }
    })
    .await;
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/ws"), ""))).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;

    let ping = client.recv_frame().await;
    assert_eq!((ping.opcode, ping.payload.clone()), (PING, lookalike(2)));
    client.send(Frame::new(PONG, ping.payload)).await;
    client.send(Frame::ping(lookalike(1))).await;
    let pong = client.recv_frame().await;
    assert_eq!(
        (pong.opcode, pong.payload),
        (PONG, lookalike(1)),
        "the client's ping got no pong"
    );
    eventually("the backend got the client's pong", || {
        backend
            .log
            .frames()
            .iter()
            .any(|f| f.opcode == PONG && f.payload == lookalike(2))
    })
    .await;
    close_and_drain(client, &proxy).await;
}

#[tokio::test(start_paused = true)]
async fn wsgates_own_pong_is_consumed_and_timed_but_a_repeat_of_it_passes() {
    let backend = Backend::echo().await;
    let proxy = paused(&route("app", "/app", &backend.url("/ws"), FAST_KEEPALIVE)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;

    let ping = client.recv_frame().await;
    assert_eq!(ping.opcode, PING, "{ping:?}");
    assert!(ping.payload.starts_with(MARK), "{ping:?}");
    client.send(Frame::new(PONG, ping.payload.clone())).await;
    let rtt = r#"wsgate_ping_rtt_seconds_count{route="app",hop="client"}"#;
    eventually("the pong's round trip was measured", || {
        proxy.metric(rtt).is_some_and(|n| n >= 1.0)
    })
    .await;
    // The ping was answered: the same pong again answers nothing of wsgate's, so it is
    // the client's own and goes to the backend.
    client.send(Frame::new(PONG, ping.payload.clone())).await;
    eventually("the repeated pong reached the backend", || {
        backend
            .log
            .messages()
            .contains(&Message::Pong(ping.payload.clone().into()))
    })
    .await;
    let pongs = backend
        .log
        .messages()
        .iter()
        .filter(|m| matches!(m, Message::Pong(_)))
        .count();
    assert_eq!(pongs, 1, "the answering pong was forwarded too");
    close_and_drain(client, &proxy).await;
}

#[tokio::test(start_paused = true)]
async fn successive_keepalive_pings_carry_unpredictable_payloads() {
    let backend = Backend::echo().await;
    let proxy = paused(&route("app", "/app", &backend.url("/ws"), FAST_KEEPALIVE)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    let mut payloads = Vec::new();
    for _ in 0..3 {
        let ping = client.recv_frame().await;
        assert_eq!(ping.opcode, PING, "{ping:?}");
        client.send(Frame::new(PONG, ping.payload.clone())).await;
        payloads.push(ping.payload);
    }
    // A counter would give 1, 2, 3; random tokens share no such pattern.
    assert_ne!(payloads[1..], [lookalike(2), lookalike(3)], "{payloads:?}");
    assert_ne!(payloads[0], payloads[1]);
    close_and_drain(client, &proxy).await;
}

#[tokio::test]
async fn pending_cap_leaves_the_next_connection_unaccepted_until_one_goes() {
    // Bug: the accept loop took no permit, so idle sockets each held a task until the
    // header timeout, without bound.
    let backend = Backend::echo().await;
    let app = route("app", "/app", &backend.url("/ws"), "");
    // One worker: one listening socket, so the kernel hands connections over in order.
    let config = yaml(&app) + "workers: 1\nlimits: { max_pending_connections: 2 }\n";
    let proxy = Proxy::start(&config).await;
    let silent = TcpStream::connect(proxy.addr()).await.expect("connect");
    let _silent = TcpStream::connect(proxy.addr()).await.expect("connect");
    // The kernel completes this handshake, but wsgate does not take the connection.
    let mut third = TcpStream::connect(proxy.addr()).await.expect("connect");
    let request = http::upgrade_request(proxy.addr(), "/app", &[]);
    third.write_all(request.as_bytes()).await.expect("write");
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "the connection over the cap was served: {early:?}"
    );
    assert_eq!(backend.log.accepted(), 0);

    drop(silent);
    let mut buf = Vec::new();
    let head = within(
        "the waiting client is served",
        http::read_head(&mut third, &mut buf),
    )
    .await
    .expect("an answer");
    assert_eq!(head.status(), 101, "{head:?}");
    drop(third);
    proxy.assert_drained().await;
}
