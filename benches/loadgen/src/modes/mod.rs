//! The load generator's modes. Each returns one `key=value` result line.
//!
//! Every mode is bounded: connections are opened with a timeout, the measured window
//! has a fixed length, and `main` wraps the whole run in a watchdog.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use crate::net::Target;

pub mod conncycles;
pub mod connrate;
pub mod echo;
pub mod h2ws;
pub mod idle;
pub mod latency;
pub mod soak;
#[cfg(feature = "tungstenite")]
pub mod tung;

/// How long one connect + TLS + upgrade may take before it counts as an error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every mode needs.
pub struct Common {
    /// Where to connect.
    pub target: Target,
    /// PIDs whose CPU usage is reported with the result (proxy, backend).
    pub watch: Vec<String>,
    /// Time given to the load to settle before the window opens.
    pub warmup: Duration,
    /// Length of the measured window.
    pub duration: Duration,
}

/// A counter shared by the tasks of one (single-threaded) run.
#[derive(Clone, Default)]
pub struct Counter(Rc<Cell<u64>>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.set(self.0.get() + n);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A flag shared by the tasks of one run.
#[derive(Clone, Default)]
pub struct Flag(Rc<Cell<bool>>);

impl Flag {
    /// Raises the flag.
    pub fn set(&self) {
        self.0.set(true);
    }
    /// Whether it is raised.
    pub fn get(&self) -> bool {
        self.0.get()
    }
}

/// Remembers the first error of a run, to say why a run failed.
#[derive(Clone, Default)]
pub struct FirstError(Rc<std::cell::RefCell<Option<String>>>);

impl FirstError {
    /// Records `e` if it is the first.
    pub fn record(&self, e: impl std::fmt::Display) {
        let mut slot = self.0.borrow_mut();
        if slot.is_none() {
            *slot = Some(e.to_string());
        }
    }
    /// The first error, if any.
    pub fn get(&self) -> Option<String> {
        self.0.borrow().clone()
    }
}

/// Waits until `done()` holds, polling every 5 ms, for at most `limit`.
pub async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Fails when any connection failed, naming the first failure.
pub fn no_failures(errors: &Counter, first: &FirstError) -> Result<(), String> {
    match errors.get() {
        0 => Ok(()),
        e => Err(format!(
            "{e} connections failed; first: {}",
            first.get().unwrap_or_default()
        )),
    }
}

/// Waits until `n` connection attempts ended, then fails if any of them failed.
pub async fn all_connected(
    n: usize,
    connected: &Counter,
    errors: &Counter,
    first: &FirstError,
) -> Result<(), String> {
    let limit = CONNECT_TIMEOUT + Duration::from_secs(5);
    if !wait_until(limit, || connected.get() + errors.get() >= n as u64).await {
        return Err(format!(
            "only {} of {n} connections open after {limit:?}",
            connected.get()
        ));
    }
    match errors.get() {
        0 => Ok(()),
        e => Err(format!(
            "{e} of {n} connections failed; first: {}",
            first.get().unwrap_or_default()
        )),
    }
}
