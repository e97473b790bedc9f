//! Backend pools: how connections spread over a route's backends for each balancing
//! strategy, failover before the 101, active health checks and passive ejection,
//! draining with 1012, and scale-out by reload.
//!
//! Backends are real [`Node`]s on 127.0.0.1:0 that name themselves in `X-Backend` and
//! can be switched to answer 503 or to stop listening; clients are raw upgrades, so a
//! thousand connections take well under a second.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use support::frame::{Frame, TEXT};
use support::http;
use support::pools::{Node, PoolProxy, config, dead_addr, hit, open, pool_route, tally, urls};
use support::raw::RawClient;
use support::{STEP, eventually};

const ROUTE: &str = "p";
const PATH: &str = "/p";

/// Active checks fast enough to flip a backend within a few hundred milliseconds.
const FAST_CHECKS: &str =
    "health_check: {path: /health, interval: 100ms, timeout: 200ms, rise: 2, fall: 2}";

/// wsgate with the one route `p` over `backends` (YAML items) and `extra` route lines.
async fn proxy(backends: &[String], extra: &[&str]) -> PoolProxy {
    PoolProxy::start(&config("1s", &pool_route(ROUTE, PATH, backends, extra))).await
}

/// Connects and drops `n` times in a row (`extra` headers); the serving backend of each.
async fn sequential(proxy: &PoolProxy, n: usize, extra: &[(&str, &str)]) -> Vec<String> {
    let mut served = Vec::with_capacity(n);
    for _ in 0..n {
        served.push(open(proxy.addr(), PATH, extra).await.0);
    }
    served
}

/// Opens `n` connections and keeps them; with the serving backend of each.
async fn hold(proxy: &PoolProxy, n: usize) -> Vec<(String, RawClient)> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(open(proxy.addr(), PATH, &[]).await);
    }
    held
}

/// Opens `n` connections one by one and keeps them; also the largest gap between the
/// most and the least loaded of `nodes` after each one.
async fn hold_watching_gap(
    proxy: &PoolProxy,
    nodes: &[Node],
    n: usize,
) -> (Vec<(String, RawClient)>, usize) {
    let mut held = Vec::with_capacity(n);
    let mut gap = 0;
    for _ in 0..n {
        held.push(open(proxy.addr(), PATH, &[]).await);
        let levels = held_counts(&held);
        let level = |node: &Node| count(&levels, node);
        let (lo, hi) = (nodes.iter().map(level).min(), nodes.iter().map(level).max());
        gap = gap.max(hi.unwrap_or(0) - lo.unwrap_or(0));
    }
    (held, gap)
}

fn counts(served: &[String]) -> BTreeMap<String, usize> {
    tally(served.iter().map(String::as_str))
}

fn held_counts(held: &[(String, RawClient)]) -> BTreeMap<String, usize> {
    tally(held.iter().map(|(b, _)| b.as_str()))
}

fn count(counts: &BTreeMap<String, usize>, node: &Node) -> usize {
    counts.get(&node.name).copied().unwrap_or(0)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_each_backend_a_third() {
    let nodes = Node::many(3).await;
    let proxy = proxy(&urls(&nodes), &[]).await;
    let served = counts(&sequential(&proxy, 1000, &[]).await);
    eprintln!("1000 sequential: {served:?}");
    for node in &nodes {
        assert!((328..=338).contains(&count(&served, node)), "{served:?}");
    }
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_the_weights() {
    let nodes = Node::many(2).await;
    let backends = [
        format!("{{url: \"{}\", weight: 3}}", nodes[0].url()),
        format!("\"{}\"", nodes[1].url()),
    ];
    let proxy = proxy(&backends, &[]).await;
    let served = counts(&sequential(&proxy, 1000, &[]).await);
    eprintln!("1000 sequential: {served:?}");
    assert!(
        (730..=770).contains(&count(&served, &nodes[0])),
        "{served:?}"
    );
    assert!(
        (230..=270).contains(&count(&served, &nodes[1])),
        "{served:?}"
    );
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_keeps_held_connections_level() {
    let nodes = Node::many(3).await;
    let proxy = proxy(&urls(&nodes), &["balance: least_connections"]).await;
    let (held, gap) = hold_watching_gap(&proxy, &nodes, 300).await;
    eprintln!(
        "least_connections, 300 held: {:?}, largest gap {gap}",
        held_counts(&held)
    );
    assert!(gap <= 1, "levels drifted {gap} apart");
    assert!(held_counts(&held).values().all(|&c| c == 100));

    // b0 loses 60 connections; the next 60 all go to it, and the levels are even again.
    let mut to_close = 60;
    let (gone, mut held): (Vec<_>, Vec<_>) = held.into_iter().partition(|(b, _)| {
        let close = b == "b0" && to_close > 0;
        to_close -= usize::from(close);
        close
    });
    drop(gone);
    eventually("b0's closed connections are gone", STEP, || {
        proxy.gate.running.active_connections() == 240 && nodes[0].live() == 40
    })
    .await;
    let refill = hold(&proxy, 60).await;
    assert_eq!(
        held_counts(&refill).get("b0"),
        Some(&60),
        "{:?}",
        held_counts(&refill)
    );
    held.extend(refill);
    assert!(held_counts(&held).values().all(|&c| c == 100));
    drop(held);
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_fills_the_others_after_one_was_loaded() {
    let nodes = Node::many(3).await;
    let proxy = proxy(
        &urls(&nodes),
        &["balance: least_connections", "max_fails: 0"],
    )
    .await;
    // While b1 and b2 answer 503, every connection fails over to b0: it holds 10.
    nodes[1].set_refusing(true);
    nodes[2].set_refusing(true);
    let mut held = hold(&proxy, 10).await;
    assert_eq!(held_counts(&held).get("b0"), Some(&10));
    nodes[1].set_refusing(false);
    nodes[2].set_refusing(false);
    // The next 20 go to b1 and b2 until they reach b0's level, then all three share.
    let catch_up = hold(&proxy, 20).await;
    let levels = held_counts(&catch_up);
    assert_eq!(
        (count(&levels, &nodes[1]), count(&levels, &nodes[2])),
        (10, 10),
        "{levels:?}"
    );
    let shared = hold(&proxy, 3).await;
    assert!(
        nodes.iter().all(|n| count(&held_counts(&shared), n) == 1),
        "{:?}",
        held_counts(&shared)
    );
    held.extend(catch_up.into_iter().chain(shared));
    drop(held);
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_two_spreads_at_least_as_well_as_random() {
    let nodes = Node::many(3).await;
    let proxy = proxy(&urls(&nodes), &["balance: random_two"]).await;
    // Sequential: each backend between 20% and 47%, and within 4.5 standard deviations
    // of uniform random choice (333 ± 67), which random choice itself almost never leaves.
    let served = counts(&sequential(&proxy, 1000, &[]).await);
    eprintln!("random_two, 1000 sequential: {served:?}");
    for node in &nodes {
        assert!(
            (266..=400).contains(&count(&served, node)),
            "sequential: {served:?}"
        );
    }
    // Held open, the two choices see the load: the levels stay close all along (measured:
    // at most 4 to 7 apart), where choosing one at random drifts 13 to 42 apart.
    let (held, gap) = hold_watching_gap(&proxy, &nodes, 300).await;
    let levels = held_counts(&held);
    eprintln!("random_two, 300 held: {levels:?}, largest gap {gap}");
    assert!(gap <= 10, "levels drifted {gap} apart: {levels:?}");
    drop(held);
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_on_a_header_is_sticky_and_spreads() {
    let nodes = Node::many(3).await;
    let proxy = proxy(&urls(&nodes), &["balance: hash", "hash_on: header:X-User"]).await;
    let mut first = Vec::new();
    for round in 0..3 {
        for user in 0..100 {
            let name = format!("user-{user}");
            let (backend, _) = open(proxy.addr(), PATH, &[("X-User", &name)]).await;
            match round {
                0 => first.push(backend),
                _ => assert_eq!(backend, first[user], "{name} moved in round {round}"),
            }
        }
    }
    let spread = counts(&first);
    eprintln!("hash: 100 users over {spread:?}");
    assert!(
        nodes.iter().all(|n| count(&spread, n) >= 10),
        "users per backend: {spread:?}"
    );
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_backend_moves_few_hashed_users() {
    let nodes = Node::many(5).await;
    let opts = ["balance: hash", "hash_on: header:X-User"];
    let four = config("1s", &pool_route(ROUTE, PATH, &urls(&nodes[..4]), &opts));
    let proxy = PoolProxy::start(&four).await;
    let users: Vec<String> = (0..500).map(|u| format!("user-{u}")).collect();
    let mut before = Vec::new();
    for u in &users {
        before.push(open(proxy.addr(), PATH, &[("X-User", u)]).await.0);
    }
    proxy
        .reload(&config(
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
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_invisible_to_clients() {
    let node = Node::start("b0").await;
    let dead = format!("ws://{}", dead_addr().await);
    let backends = [format!("\"{}\"", node.url()), format!("\"{dead}\"")];
    let proxy = proxy(&backends, &[]).await;
    for _ in 0..100 {
        let got = hit(proxy.addr(), PATH, &[]).await;
        assert_eq!(
            (got.status, got.backend.as_deref()),
            (101, Some("b0")),
            "{:?}",
            got.head
        );
    }
    // Tried while it alternated with b0, until max_fails (3) ejected it for fail_timeout (10s).
    assert_eq!(proxy.connect_errors(ROUTE, &dead), 3.0);
    assert_eq!(proxy.healthy(ROUTE, &dead), Some(0.0));
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_dead_backend_costs_its_share() {
    let node = Node::start("b0").await;
    let dead = format!("ws://{}", dead_addr().await);
    let backends = [format!("\"{}\"", node.url()), format!("\"{dead}\"")];
    // p: never ejected, so it keeps its turn; q: ejected after the default 3 failures.
    let routes = pool_route("p", "/p", &backends, &["retries: 0", "max_fails: 0"])
        + &pool_route("q", "/q", &backends, &["retries: 0"]);
    let proxy = PoolProxy::start(&config("1s", &routes)).await;
    for (path, expected) in [("/p", 40..=60), ("/q", 3..=3)] {
        let mut failed = 0;
        for _ in 0..100 {
            let got = hit(proxy.addr(), path, &[]).await;
            match got.status {
                101 => assert_eq!(got.backend.as_deref(), Some("b0")),
                502 => failed += 1,
                other => panic!("{path}: unexpected {other}: {:?}", got.head),
            }
        }
        eprintln!("retries 0: {path}: {failed} of 100 got 502");
        assert!(
            expected.contains(&failed),
            "{path}: {failed} of 100 got 502"
        );
    }
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_503_is_passed_over() {
    let nodes = Node::many(2).await;
    let proxy = proxy(&urls(&nodes), &["max_fails: 0"]).await;
    nodes[0].set_refusing(true);
    let served = counts(&sequential(&proxy, 20, &[]).await);
    assert_eq!(count(&served, &nodes[1]), 20, "{served:?}");
    assert!(
        nodes[0].refused() >= 5,
        "b0 refused only {}",
        nodes[0].refused()
    );
    // When the last candidate refuses too, its answer reaches the client as it is.
    nodes[1].set_refusing(true);
    let request = http::upgrade_request(proxy.addr(), PATH, &[]);
    let got = http::exchange(proxy.addr(), request).await;
    assert_eq!(got.status(), 503, "{got:?}");
    assert!(
        got.header("x-backend").is_some(),
        "not the backend's own 503: {got:?}"
    );
    assert_eq!(got.body_text(), "node refusing\n");
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_down_is_one_502() {
    let (a, b) = (dead_addr().await, dead_addr().await);
    let backends = [format!("\"ws://{a}\""), format!("\"ws://{b}\"")];
    let proxy = proxy(&backends, &[]).await;
    let got = hit(proxy.addr(), PATH, &[]).await;
    assert_eq!(got.status, 502, "{:?}", got.head);
    for addr in [a, b] {
        assert_eq!(proxy.connect_errors(ROUTE, &format!("ws://{addr}")), 1.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_unhealthy_fails_with_503_or_tries_anyway() {
    let nodes = Node::many(2).await;
    for n in &nodes {
        n.set_probes_failing(true);
    }
    let routes = pool_route("p", "/p", &urls(&nodes), &[FAST_CHECKS])
        + &pool_route(
            "q",
            "/q",
            &urls(&nodes),
            &[FAST_CHECKS, "all_unhealthy: try"],
        );
    let proxy = PoolProxy::start(&config("1s", &routes)).await;
    eventually("every backend unhealthy on both routes", STEP, || {
        ["p", "q"].iter().all(|r| {
            nodes
                .iter()
                .all(|n| proxy.healthy(r, &n.url()) == Some(0.0))
        })
    })
    .await;
    let got = hit(proxy.addr(), "/p", &[]).await;
    assert_eq!((got.status, got.backend), (503, None), "{:?}", got.head);
    assert_eq!(nodes[0].served() + nodes[1].served(), 0);
    let mut tried = Vec::new();
    for _ in 0..10 {
        tried.push(open(proxy.addr(), "/q", &[]).await.0);
    }
    let spread = counts(&tried);
    assert!(nodes.iter().all(|n| count(&spread, n) > 0), "{spread:?}");
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_refusing_backend_out_and_back() {
    let nodes = Node::many(2).await;
    let proxy = proxy(&urls(&nodes), &[FAST_CHECKS]).await;
    let b1 = nodes[1].url();
    eventually("both probed twice", STEP, || {
        nodes.iter().all(|n| n.probes() >= 2)
    })
    .await;
    assert_eq!(proxy.healthy(ROUTE, &b1), Some(1.0));
    let served = counts(&sequential(&proxy, 10, &[]).await);
    assert_eq!(count(&served, &nodes[1]), 5, "{served:?}");

    nodes[1].set_refusing(true);
    let t0 = Instant::now();
    eventually("b1 unhealthy", STEP, || {
        proxy.healthy(ROUTE, &b1) == Some(0.0)
    })
    .await;
    let down_after = t0.elapsed();
    let served = counts(&sequential(&proxy, 20, &[]).await);
    assert_eq!(count(&served, &nodes[0]), 20, "{served:?}");
    assert_eq!(nodes[1].refused(), 0, "an unhealthy backend got an attempt");

    nodes[1].set_refusing(false);
    let t1 = Instant::now();
    eventually("b1 healthy again", STEP, || {
        proxy.healthy(ROUTE, &b1) == Some(1.0)
    })
    .await;
    let up_after = t1.elapsed();
    let served = counts(&sequential(&proxy, 20, &[]).await);
    assert!(count(&served, &nodes[1]) >= 8, "{served:?}");
    eprintln!("health: unhealthy after {down_after:?}, healthy again after {up_after:?}");
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_skips_a_dead_backend_for_fail_timeout() {
    let nodes = Node::many(2).await;
    let proxy = proxy(&urls(&nodes), &["max_fails: 2", "fail_timeout: 1s"]).await;
    let b1 = nodes[1].url();
    nodes[1].stop();
    // The ejection happens during the connection that sees the second failure, so it is
    // no earlier than that connection's start: time is measured from there.
    let mut ejected = Instant::now();
    for _ in 0..10 {
        ejected = Instant::now();
        assert_eq!(open(proxy.addr(), PATH, &[]).await.0, "b0");
        if proxy.connect_errors(ROUTE, &b1) >= 2.0 {
            break;
        }
    }
    assert_eq!(proxy.connect_errors(ROUTE, &b1), 2.0);
    assert_eq!(
        proxy.healthy(ROUTE, &b1),
        Some(0.0),
        "ejected after 2 failures"
    );
    // Alive again, but ejected: it gets nothing until fail_timeout has passed.
    nodes[1].resume().await;
    let mut back_after = None;
    for _ in 0..120 {
        if open(proxy.addr(), PATH, &[]).await.0 == "b1" {
            back_after = Some(ejected.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let back_after = back_after.expect("b1 never got a connection again");
    eprintln!("passive: b1 served again {back_after:?} after its ejection");
    assert!(
        back_after >= Duration::from_secs(1),
        "back after {back_after:?}"
    );
    // Slack for a loaded machine; without the timeout it would never come back.
    assert!(
        back_after <= Duration::from_millis(2500),
        "back after {back_after:?}"
    );
    assert_eq!(proxy.connect_errors(ROUTE, &b1), 2.0, "tried while ejected");
    assert_eq!(proxy.healthy(ROUTE, &b1), Some(1.0));
    proxy.gate.assert_drained().await;
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
async fn close_on_unhealthy_drains_the_backend_with_1012() {
    let nodes = Node::many(2).await;
    let route = pool_route(
        ROUTE,
        PATH,
        &urls(&nodes),
        &[FAST_CHECKS, "close_on_unhealthy: true"],
    );
    let proxy = PoolProxy::start(&config("800ms", &route)).await;
    let (doomed, mut kept) = split_off(hold(&proxy, 8).await, "b1");
    assert_eq!((doomed.len(), kept.len()), (4, 4));
    nodes[1].set_probes_failing(true);
    let closes = closes_of(doomed, Instant::now()).await;
    assert!(closes.iter().all(|&(code, _)| code == 1012), "{closes:?}");
    let span = closes[3].1 - closes[0].1;
    eprintln!("close_on_unhealthy: 1012 at {closes:?}, span {span:?}");
    assert!(span >= Duration::from_millis(300), "not spread: {closes:?}");
    eventually("b1 saw four 1012s", STEP, || nodes[1].closes() == [1012; 4]).await;
    for (i, ws) in kept.iter_mut().enumerate() {
        echoes(ws, &format!("still here {i}")).await;
    }
    assert!(nodes[0].closes().is_empty());
    drop(kept);
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_removed_by_reload_drains_over_the_window() {
    let nodes = Node::many(3).await;
    let proxy = PoolProxy::start(&config(
        "800ms",
        &pool_route(ROUTE, PATH, &urls(&nodes), &[]),
    ))
    .await;
    let (doomed, mut kept) = split_off(hold(&proxy, 24).await, "b2");
    assert_eq!((doomed.len(), kept.len()), (8, 16));
    proxy
        .reload(&config(
            "800ms",
            &pool_route(ROUTE, PATH, &urls(&nodes[..2]), &[]),
        ))
        .await;
    let watcher = tokio::spawn(closes_of(doomed, Instant::now()));
    // The others keep talking through the whole window.
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
    assert!(span >= Duration::from_millis(400), "not spread: {closes:?}");
    assert!(
        closes[7].1 <= Duration::from_millis(1800),
        "too slow: {closes:?}"
    );
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
    proxy.gate.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_sends_new_connections_to_the_new_backend() {
    let nodes = Node::many(3).await;
    let opts = ["balance: least_connections"];
    let two = config("1s", &pool_route(ROUTE, PATH, &urls(&nodes[..2]), &opts));
    let proxy = PoolProxy::start(&two).await;
    let mut held = hold(&proxy, 20).await;
    assert!(
        nodes[..2]
            .iter()
            .all(|n| count(&held_counts(&held), n) == 10)
    );
    proxy
        .reload(&config(
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
    proxy.gate.assert_drained().await;
}
