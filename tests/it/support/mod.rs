//! The wsgate integration test harness, the one every test module uses.
//!
//! Everything binds 127.0.0.1:0 and is listening before its address is handed
//! out; nothing sleeps to wait for readiness. Waiting is bounded: [`within`]
//! for one step, [`eventually`] / [`eventually_some`] for a condition polled
//! until the patience runs out.
//!
//! Patience: `WSGATE_TEST_PATIENCE_MS` (default 5000) is how long [`within`] and
//! [`eventually`] wait before failing. Raise it on a slow or loaded machine; a
//! passing test never waits that long, so raising it costs nothing when green.
//!
//! - [`proxy`]: wsgate in-process, one type [`proxy::Proxy`] for every test:
//!   `Proxy::start(yaml)` / `Proxy::with_routes(routes)`, or [`proxy::Proxy::builder`]
//!   to choose `run` (worker threads) or `run_here` (the caller's runtime, for
//!   paused time); bound addresses, admin address, reports, [`wsgate::Running`]
//!   (reload, metrics), shutdown on drop. YAML helpers `yaml`, `route`.
//! - [`clock`]: paused-time tests: [`clock::Metronome`] keeps tokio's auto-advance
//!   to small steps so timers and real loopback sockets mix.
//! - [`metrics`]: the one Prometheus text reader, [`metrics::metric`].
//! - [`backend`]: scriptable backends (tungstenite-based and raw).
//! - [`pools`]: backend nodes that name themselves, for pool routes.
//! - [`client`]: tokio-tungstenite clients over ws and wss.
//! - [`raw`]: a raw frame peer and a hand-made upgrade.
//! - [`scripted`]: scripted raw peers for property tests, [`relay_cases`] the cases
//!   they run; [`strict`]: a strict
//!   checker of the frames wsgate writes.
//! - [`frame`]: a tiny frame codec; [`http`]: a tiny HTTP/1.1 head codec.
//! - [`ca`]: a throw-away CA: a default `localhost` leaf as PEM files, and
//!   leaves with chosen serial numbers.
//! - [`child`]: the real binary as a child process; files replaced as editors do.

// Not every test binary (see tests/memory.rs) uses every helper.
#![allow(dead_code)]

pub mod backend;
pub mod ca;
pub mod child;
pub mod client;
pub mod clock;
pub mod frame;
pub mod http;
pub mod http_backend;
pub mod metrics;
pub mod pools;
pub mod proxy;
pub mod raw;
pub mod relay_cases;
pub mod scripted;
pub mod strict;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

/// The default bound of any single network step of a test (a connect, one frame,
/// one report), for helpers that take a timeout. [`patience`] is the bound that
/// [`within`] and [`eventually`] apply.
pub const STEP: Duration = Duration::from_millis(DEFAULT_PATIENCE_MS);

const DEFAULT_PATIENCE_MS: u64 = 5_000;

/// The environment variable that sets [`patience`], in milliseconds.
pub const PATIENCE_VAR: &str = "WSGATE_TEST_PATIENCE_MS";

/// How often [`eventually`] polls.
const POLL: Duration = Duration::from_millis(5);

/// How long [`within`] and [`eventually`] wait before failing:
/// `WSGATE_TEST_PATIENCE_MS`, else 5 s. Generous, because a loaded CI box can
/// stall for a while.
pub fn patience() -> Duration {
    static PATIENCE: OnceLock<Duration> = OnceLock::new();
    *PATIENCE.get_or_init(|| {
        let ms = match std::env::var(PATIENCE_VAR) {
            Ok(v) => v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{PATIENCE_VAR}={v:?} is not a number of ms")),
            Err(_) => DEFAULT_PATIENCE_MS,
        };
        Duration::from_millis(ms)
    })
}

/// Runs `fut`, panicking with `what` if it takes longer than [`patience`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    let limit = patience();
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `cond` until it holds, panicking with `what` once [`patience`] is spent.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    eventually_some(what, || std::future::ready(cond().then_some(()))).await
}

/// Runs `probe` until it yields `Some`, returning that; panics with `what` once
/// [`patience`] is spent. For conditions that need I/O (a fresh upgrade, say).
pub async fn eventually_some<T, F>(what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let limit = patience();
    let deadline = tokio::time::Instant::now() + limit;
    let max_polls = limit.as_millis() / POLL.as_millis() + 1;
    for _ in 0..max_polls {
        if let Some(found) = probe().await {
            return found;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    match probe().await {
        Some(found) => found,
        None => panic!("not true within {limit:?}: {what}"),
    }
}

/// An address on 127.0.0.1 that refuses connections.
///
/// The port stays bound (not listening) until the process ends: released, it could
/// be handed to a listener of another test running in parallel in this binary.
pub async fn dead_addr() -> std::net::SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind a dead port");
    let addr = socket.local_addr().expect("local addr");
    // Kept open on purpose for the rest of the process (see above); a handful per run.
    std::mem::forget(socket);
    addr
}

/// This process's resident set size, in bytes (`VmRSS` of /proc/self/status).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}
