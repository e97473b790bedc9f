//! Backend pools: failover before the 101, active health checks and passive ejection.
//!
//! Backends are real [`Node`]s on 127.0.0.1:0 that name themselves in `X-Backend` and
//! can be switched to answer 503 or to stop listening.
//!
//! The tests that wait on a configured duration (health-check interval and thresholds,
//! `fail_timeout`) run on tokio's paused clock with wsgate on the test's runtime (see
//! `support::clock`), so those durations are virtual time and checked to within [`SLACK`].

use std::time::Duration;

use tokio::time::Instant;

use crate::support::http;
use crate::support::pools::one_route::{
    FAST_CHECKS, FAST_FALL, FAST_INTERVAL, FAST_RISE, PATH, ROUTE, paused_proxy, proxy, sequential,
};
use crate::support::pools::{Node, config, count, counts, hit, open, pool_route, urls};
use crate::support::proxy::Proxy;
use crate::support::{dead_addr, eventually};

/// What the paused clock adds to a configured duration: each loopback hop on the way
/// costs up to one 1 ms tick of the metronome, and a probe or an upgrade takes a handful.
const SLACK: Duration = Duration::from_millis(30);

/// Asserts that a backend flipped `after` a change in its answers, as `threshold`
/// probes `FAST_INTERVAL` apart allow: the first of them comes at once or up to an
/// interval later, each further one an interval after the one before.
fn assert_flipped_in_time(what: &str, after: Duration, threshold: u32) {
    let (earliest, latest) = (
        FAST_INTERVAL * (threshold - 1),
        FAST_INTERVAL * threshold + SLACK,
    );
    assert!(
        (earliest..=latest).contains(&after),
        "{what} after {after:?}, due within {earliest:?}..={latest:?}"
    );
}

#[test]
fn the_timed_health_checks_are_the_configured_ones() {
    // The timing checks below read FAST_INTERVAL, FAST_RISE and FAST_FALL; they must be
    // what FAST_CHECKS configures.
    for part in [
        format!("interval: {}ms", FAST_INTERVAL.as_millis()),
        format!("rise: {FAST_RISE}"),
        format!("fall: {FAST_FALL}"),
    ] {
        assert!(FAST_CHECKS.contains(&part), "{FAST_CHECKS} lacks {part}");
    }
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
    proxy.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_a_dead_backend_costs_its_share() {
    let node = Node::start("b0").await;
    let dead = format!("ws://{}", dead_addr().await);
    let backends = [format!("\"{}\"", node.url()), format!("\"{dead}\"")];
    // p: never ejected, so it keeps its turn; q: ejected after the default 3 failures.
    let routes = pool_route("p", "/p", &backends, &["retries: 0", "max_fails: 0"])
        + &pool_route("q", "/q", &backends, &["retries: 0"]);
    let proxy = Proxy::start(&config("1s", &routes)).await;
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
    proxy.assert_drained().await;
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
    proxy.assert_drained().await;
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

#[tokio::test(start_paused = true)]
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
    let started = Instant::now();
    let proxy = Proxy::builder(&config("1s", &routes))
        .paused()
        .start()
        .await;
    eventually("every backend unhealthy on both routes", || {
        ["p", "q"].iter().all(|r| {
            nodes
                .iter()
                .all(|n| proxy.healthy(r, &n.url()) == Some(0.0))
        })
    })
    .await;
    // The first probes run at the start: FAST_FALL failures take FAST_FALL - 1 intervals.
    let down_after = started.elapsed();
    eprintln!("all unhealthy after {down_after:?}");
    assert!(
        down_after <= FAST_INTERVAL * (FAST_FALL - 1) + SLACK,
        "all unhealthy only after {down_after:?}"
    );
    let got = hit(proxy.addr(), "/p", &[]).await;
    assert_eq!((got.status, got.backend), (503, None), "{:?}", got.head);
    assert_eq!(nodes[0].served() + nodes[1].served(), 0);
    let mut tried = Vec::new();
    for _ in 0..10 {
        tried.push(open(proxy.addr(), "/q", &[]).await.0);
    }
    let spread = counts(&tried);
    assert!(nodes.iter().all(|n| count(&spread, n) > 0), "{spread:?}");
    proxy.assert_drained().await;
}

#[tokio::test(start_paused = true)]
async fn health_checks_take_a_refusing_backend_out_and_back() {
    let nodes = Node::many(2).await;
    let proxy = paused_proxy(&urls(&nodes), &[FAST_CHECKS]).await;
    let b1 = nodes[1].url();
    eventually("both probed twice", || {
        nodes.iter().all(|n| n.probes() >= 2)
    })
    .await;
    assert_eq!(proxy.healthy(ROUTE, &b1), Some(1.0));
    let served = counts(&sequential(&proxy, 10, &[]).await);
    assert_eq!(count(&served, &nodes[1]), 5, "{served:?}");

    nodes[1].set_refusing(true);
    let t0 = Instant::now();
    eventually("b1 unhealthy", || proxy.healthy(ROUTE, &b1) == Some(0.0)).await;
    let down_after = t0.elapsed();
    assert_flipped_in_time("b1 unhealthy", down_after, FAST_FALL);
    let served = counts(&sequential(&proxy, 20, &[]).await);
    assert_eq!(count(&served, &nodes[0]), 20, "{served:?}");
    assert_eq!(nodes[1].refused(), 0, "an unhealthy backend got an attempt");

    nodes[1].set_refusing(false);
    let t1 = Instant::now();
    eventually("b1 healthy again", || {
        proxy.healthy(ROUTE, &b1) == Some(1.0)
    })
    .await;
    let up_after = t1.elapsed();
    assert_flipped_in_time("b1 healthy again", up_after, FAST_RISE);
    let served = counts(&sequential(&proxy, 20, &[]).await);
    assert!(count(&served, &nodes[1]) >= 8, "{served:?}");
    eprintln!("health: unhealthy after {down_after:?}, healthy again after {up_after:?}");
    proxy.assert_drained().await;
}

/// The `fail_timeout` of the passive ejection test, and how often it tries while waiting.
const FAIL_TIMEOUT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(25);

#[tokio::test(start_paused = true)]
async fn passive_ejection_skips_a_dead_backend_for_fail_timeout() {
    let nodes = Node::many(2).await;
    let proxy = paused_proxy(
        &urls(&nodes),
        &[
            "max_fails: 2",
            &format!("fail_timeout: {}ms", FAIL_TIMEOUT.as_millis()),
        ],
    )
    .await;
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
    // Up to three fail_timeouts of tries, POLL apart.
    for _ in 0..(3 * FAIL_TIMEOUT.as_millis() / POLL.as_millis()) {
        if open(proxy.addr(), PATH, &[]).await.0 == "b1" {
            back_after = Some(ejected.elapsed());
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let back_after = back_after.expect("b1 never got a connection again");
    eprintln!("passive: b1 served again {back_after:?} after its ejection");
    assert!(back_after >= FAIL_TIMEOUT, "back after {back_after:?}");
    // Round robin gives b1 the first or the second try after the timeout, each up to POLL
    // apart; without the timeout it would never come back.
    assert!(
        back_after <= FAIL_TIMEOUT + 2 * POLL + SLACK,
        "back after {back_after:?}"
    );
    assert_eq!(proxy.connect_errors(ROUTE, &b1), 2.0, "tried while ejected");
    assert_eq!(proxy.healthy(ROUTE, &b1), Some(1.0));
    proxy.assert_drained().await;
}
