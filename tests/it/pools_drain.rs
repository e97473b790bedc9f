//! Backend pools changing under open connections: draining with 1012 when a backend
//! turns unhealthy or is removed by reload, and scale-out by reload.
//!
//! Backends are real [`Node`]s on 127.0.0.1:0 that name themselves in `X-Backend` and
//! record the close codes wsgate sends them.
//!
//! The drain tests run on tokio's paused clock with wsgate on the test's runtime (see
//! `support::clock`): the drain window and the health-check interval are virtual time, so
//! each 1012 is checked against its slot of the window to within [`SLACK`].

use std::time::Duration;

use tokio::time::Instant;

use crate::support::eventually;
use crate::support::frame::{Frame, TEXT};
use crate::support::pools::one_route::{
    FAST_CHECKS, FAST_FALL, FAST_INTERVAL, PATH, ROUTE, hold, sequential,
};
use crate::support::pools::{Node, config, count, counts, held_counts, open, pool_route, urls};
use crate::support::proxy::Proxy;
use crate::support::raw::RawClient;

/// The drain window of the drain tests (`reload.drain_window`).
const WINDOW: Duration = Duration::from_millis(800);

/// What the paused clock adds to a configured duration: each loopback hop on the way
/// costs up to one 1 ms tick of the metronome, and a close or a probe takes a handful.
const SLACK: Duration = Duration::from_millis(30);

/// Asserts that the `i`th of `closes` (sorted) came `window * i / n` after the first,
/// `n` being their number: the drain gives each its slot of the window.
fn assert_slots(closes: &[(u16, Duration)], window: Duration) {
    let n = closes.len() as u32;
    for (i, &(_, at)) in closes.iter().enumerate() {
        let due = closes[0].1 + window * i as u32 / n;
        assert!(
            at.abs_diff(due) <= SLACK,
            "1012 #{i} at {at:?}, due at {due:?}: {closes:?}"
        );
    }
}

/// The drain config `config` with [`WINDOW`].
fn drain_config(routes: &str) -> String {
    config(&format!("{}ms", WINDOW.as_millis()), routes)
}

/// One echo round trip on a raw client.
async fn echoes(ws: &mut RawClient, text: &str) {
    ws.send(Frame::text(text)).await;
    let reply = ws.recv_frame().await;
    assert_eq!(
        (reply.opcode, reply.payload.as_slice()),
        (TEXT, text.as_bytes())
    );
}

/// Waits on each client for wsgate's Close, answers it; (code, arrival after `since`).
async fn closes_of(clients: Vec<RawClient>, since: Instant) -> Vec<(u16, Duration)> {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let close = ws.recv_close().await;
                let at = since.elapsed();
                let code = close.close_code().expect("close code");
                ws.send(Frame::close(code, "")).await;
                ws.expect_eof().await;
                (code, at)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("close watcher"));
    }
    out.sort_by_key(|&(_, at)| at);
    out
}

/// Splits held connections into those on `name` and the others.
fn split_off(held: Vec<(String, RawClient)>, name: &str) -> (Vec<RawClient>, Vec<RawClient>) {
    let (on, off): (Vec<_>, Vec<_>) = held.into_iter().partition(|(b, _)| b == name);
    (
        on.into_iter().map(|(_, c)| c).collect(),
        off.into_iter().map(|(_, c)| c).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_backend_moves_few_hashed_users() {
    let nodes = Node::many(5).await;
    let opts = ["balance: hash", "hash_on: header:X-User"];
    let four = config("1s", &pool_route(ROUTE, PATH, &urls(&nodes[..4]), &opts));
    let proxy = Proxy::start(&four).await;
    let users: Vec<String> = (0..500).map(|u| format!("user-{u}")).collect();
    let mut before = Vec::new();
    for u in &users {
        before.push(open(proxy.addr(), PATH, &[("X-User", u)]).await.0);
    }
    proxy
        .reload_ok(&config(
            "1s",
            &pool_route(ROUTE, PATH, &urls(&nodes), &opts),
        ))
        .await;
    let mut moved = Vec::new();
    for (u, was) in users.iter().zip(&before) {
        let now = open(proxy.addr(), PATH, &[("X-User", u)]).await.0;
        if &now != was {
            moved.push(now);
        }
    }
    eprintln!(
        "hash: {} of 500 users moved, to {:?}",
        moved.len(),
        counts(&moved)
    );
    // Ideal: the new backend's fifth. A modulo hash would move about four fifths.
    assert!(
        (50..=150).contains(&moved.len()),
        "{} of 500 users moved",
        moved.len()
    );
    assert!(
        moved.iter().all(|b| b == "b4"),
        "moved elsewhere: {:?}",
        counts(&moved)
    );
    proxy.assert_drained().await;
}

#[tokio::test(start_paused = true)]
async fn close_on_unhealthy_drains_the_backend_with_1012() {
    let nodes = Node::many(2).await;
    let route = pool_route(
        ROUTE,
        PATH,
        &urls(&nodes),
        &[FAST_CHECKS, "close_on_unhealthy: true"],
    );
    let proxy = Proxy::builder(&drain_config(&route)).paused().start().await;
    let (doomed, mut kept) = split_off(hold(&proxy, 8).await, "b1");
    assert_eq!((doomed.len(), kept.len()), (4, 4));
    nodes[1].set_probes_failing(true);
    let closes = closes_of(doomed, Instant::now()).await;
    assert!(closes.iter().all(|&(code, _)| code == 1012), "{closes:?}");
    let span = closes[3].1 - closes[0].1;
    eprintln!("close_on_unhealthy: 1012 at {closes:?}, span {span:?}");
    // The drain starts at the last of FAST_FALL failed probes: the first fails at once or an
    // interval later, and each further one an interval after that.
    let (earliest, latest) = (
        FAST_INTERVAL * (FAST_FALL - 1),
        FAST_INTERVAL * FAST_FALL + SLACK,
    );
    assert!(
        (earliest..=latest).contains(&closes[0].1),
        "first 1012 after {:?}, due within {earliest:?}..={latest:?}",
        closes[0].1
    );
    // Four closes: slots 0, 200, 400 and 600 ms of the 800 ms window.
    assert_slots(&closes, WINDOW);
    eventually("b1 saw four 1012s", || nodes[1].closes() == [1012; 4]).await;
    for (i, ws) in kept.iter_mut().enumerate() {
        echoes(ws, &format!("still here {i}")).await;
    }
    assert!(nodes[0].closes().is_empty());
    drop(kept);
    proxy.assert_drained().await;
}

/// A backend turning unhealthy in the route that checks it closes that route's
/// connections to it only: the same backend in a route that does not check it keeps its
/// own. Both are found by the backend's name when it is retired; each connection then
/// looks at its own group.
#[tokio::test(start_paused = true)]
async fn close_on_unhealthy_leaves_the_same_backend_in_another_route_alone() {
    let nodes = Node::many(2).await;
    let checked = pool_route(
        ROUTE,
        PATH,
        &urls(&nodes),
        &[FAST_CHECKS, "close_on_unhealthy: true"],
    );
    let unchecked = pool_route("unchecked", "/unchecked", &urls(&nodes[1..]), &[]);
    let proxy = Proxy::builder(&drain_config(&format!("{checked}{unchecked}")))
        .paused()
        .start()
        .await;
    let (doomed, _kept) = split_off(hold(&proxy, 8).await, "b1");
    let mut elsewhere = Vec::new();
    for _ in 0..3 {
        let (backend, ws) = open(proxy.addr(), "/unchecked", &[]).await;
        assert_eq!(backend, "b1");
        elsewhere.push(ws);
    }
    nodes[1].set_probes_failing(true);
    let closes = closes_of(doomed, Instant::now()).await;
    assert!(closes.iter().all(|&(code, _)| code == 1012), "{closes:?}");
    // Past the whole window: the other route's connections to b1 still echo.
    tokio::time::sleep(WINDOW).await;
    for (i, ws) in elsewhere.iter_mut().enumerate() {
        echoes(ws, &format!("still here {i}")).await;
    }
    eventually("b1 saw four 1012s", || nodes[1].closes() == [1012; 4]).await;
    drop((elsewhere, _kept));
    proxy.assert_drained().await;
}

#[tokio::test(start_paused = true)]
async fn a_backend_removed_by_reload_drains_over_the_window() {
    let nodes = Node::many(3).await;
    let proxy = Proxy::builder(&drain_config(&pool_route(ROUTE, PATH, &urls(&nodes), &[])))
        .paused()
        .start()
        .await;
    let (doomed, mut kept) = split_off(hold(&proxy, 24).await, "b2");
    assert_eq!((doomed.len(), kept.len()), (8, 16));
    proxy
        .reload_ok(&drain_config(&pool_route(
            ROUTE,
            PATH,
            &urls(&nodes[..2]),
            &[],
        )))
        .await;
    let watcher = tokio::spawn(closes_of(doomed, Instant::now()));
    // The others keep talking through the whole window (10 rounds, 100 ms apart).
    for round in 0..10 {
        for ws in kept.iter_mut() {
            echoes(ws, &format!("round {round}")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closes = watcher.await.unwrap();
    assert!(closes.iter().all(|&(code, _)| code == 1012), "{closes:?}");
    let span = closes[7].1 - closes[0].1;
    eprintln!("removal: 1012 at {closes:?}, span {span:?}");
    // The drain starts within the reload, before the clock was read: slot 0 is due at once.
    assert!(closes[0].1 <= SLACK, "first 1012 after {:?}", closes[0].1);
    // Eight closes: slots 0, 100, …, 700 ms of the 800 ms window.
    assert_slots(&closes, WINDOW);
    assert_eq!(nodes[2].closes(), [1012; 8]);
    let served = counts(&sequential(&proxy, 10, &[]).await);
    assert_eq!(count(&served, &nodes[2]), 0, "{served:?}");
    for ws in kept.iter_mut() {
        echoes(ws, "after").await;
    }
    assert!(
        nodes[0]
            .closes()
            .iter()
            .chain(&nodes[1].closes())
            .all(|&c| c != 1012)
    );
    drop(kept);
    proxy.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_sends_new_connections_to_the_new_backend() {
    let nodes = Node::many(3).await;
    let opts = ["balance: least_connections"];
    let two = config("1s", &pool_route(ROUTE, PATH, &urls(&nodes[..2]), &opts));
    let proxy = Proxy::start(&two).await;
    let mut held = hold(&proxy, 20).await;
    assert!(
        nodes[..2]
            .iter()
            .all(|n| count(&held_counts(&held), n) == 10)
    );
    proxy
        .reload_ok(&config(
            "1s",
            &pool_route(ROUTE, PATH, &urls(&nodes), &opts),
        ))
        .await;
    let new = hold(&proxy, 10).await;
    assert_eq!(
        held_counts(&new).get("b2"),
        Some(&10),
        "{:?}",
        held_counts(&new)
    );
    let next = hold(&proxy, 3).await;
    assert!(nodes.iter().all(|n| count(&held_counts(&next), n) == 1));
    assert!(
        nodes.iter().all(|n| n.closes().is_empty()),
        "nobody was closed"
    );
    held.extend(new.into_iter().chain(next));
    drop(held);
    proxy.assert_drained().await;
}
