//! The wsgate integration test harness.
//!
//! Everything binds 127.0.0.1:0 and is listening before its address is handed
//! out; nothing sleeps to wait for readiness. Waiting is bounded: [`within`]
//! for one step, [`eventually`] for a condition polled until a deadline.
//!
//! - [`proxy`]: wsgate in-process (`Proxy::start`), YAML helpers.
//! - [`backend`]: scriptable backends (tungstenite-based and raw).
//! - [`client`]: tokio-tungstenite clients over ws and wss.
//! - [`raw`]: a raw frame peer and a hand-made upgrade.
//! - [`frame`]: a tiny frame codec; [`http`]: a tiny HTTP/1.1 head codec.
//! - [`ca`]: a throw-away CA and server certificate.

// Each test crate uses its own subset of the harness.
#![allow(dead_code)]

pub mod backend;
pub mod ca;
pub mod client;
pub mod frame;
pub mod http;
pub mod lifecycle;
pub mod pools;
pub mod proxy;
pub mod raw;

use std::future::Future;
use std::time::Duration;

/// Upper bound for any single network step of a test (a connect, one frame,
/// one report). Generous, because a loaded CI box can stall for a while; a
/// passing test never waits this long.
pub const STEP: Duration = Duration::from_secs(5);

/// How often [`eventually`] polls.
const POLL: Duration = Duration::from_millis(5);

/// Runs `fut`, panicking with `what` if it takes longer than [`STEP`].
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(STEP, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {STEP:?}: {what}"),
    }
}

/// Polls `cond` until it holds, panicking with `what` after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    let max_polls = timeout.as_millis() / POLL.as_millis() + 1;
    for _ in 0..max_polls {
        if cond() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(cond(), "not true within {timeout:?}: {what}");
}
