//! Backend pools: how connections spread over a route's backends for each balancing
//! strategy (round robin, weighted, least connections, random two, hash).
//!
//! Backends are real [`Node`]s on 127.0.0.1:0 that name themselves in `X-Backend`;
//! clients are raw upgrades, so a thousand connections take well under a second.

use crate::support::eventually;
use crate::support::pools::one_route::{PATH, hold, proxy, sequential};
use crate::support::pools::{Node, count, counts, held_counts, open, urls};
use crate::support::proxy::Proxy;
use crate::support::raw::RawClient;

/// Opens `n` connections one by one and keeps them; also the largest gap between the
/// most and the least loaded of `nodes` after each one.
async fn hold_watching_gap(
    proxy: &Proxy,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_each_backend_a_third() {
    let nodes = Node::many(3).await;
    let proxy = proxy(&urls(&nodes), &[]).await;
    let served = counts(&sequential(&proxy, 1000, &[]).await);
    eprintln!("1000 sequential: {served:?}");
    for node in &nodes {
        assert!((328..=338).contains(&count(&served, node)), "{served:?}");
    }
    proxy.assert_drained().await;
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
    proxy.assert_drained().await;
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
    eventually("b0's closed connections are gone", || {
        proxy.running().active_connections() == 240 && nodes[0].live() == 40
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
    proxy.assert_drained().await;
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
    proxy.assert_drained().await;
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
    proxy.assert_drained().await;
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
    proxy.assert_drained().await;
}
