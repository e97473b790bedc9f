//! Paused time with real sockets.
//!
//! Under `tokio::time::pause()` the runtime jumps the clock to the next timer
//! whenever it has nothing to run, even when the readiness of a loopback socket
//! arrives in the same park: with one hop in flight and a timer 300 ms away, the
//! timer fires as if 300 ms had passed on the wire. A [`Metronome`] keeps a timer
//! due every [`TICK`], so each such jump is at most one tick: the clock moves in
//! small steps, as fast as the CPU goes, and a multi-hop round trip costs a few
//! ticks of virtual time instead of reaching whichever deadline is next.
//!
//! Use it only when every peer runs on the test's own runtime (the proxy started
//! with `run_here`, backends and clients spawned there): anything outside it (a
//! child process, a watcher thread) would see virtual seconds pass in real
//! milliseconds.

use std::time::Duration;

use tokio::task::JoinHandle;

/// The largest step the clock takes at a time while a [`Metronome`] runs.
pub const TICK: Duration = Duration::from_millis(1);

/// Most ticks a metronome gives: ten virtual minutes, far beyond any test.
const MAX_TICKS: u32 = 600_000;

/// A task that keeps a timer due every [`TICK`]; stops when dropped.
pub struct Metronome {
    task: JoinHandle<()>,
}

impl Metronome {
    /// Starts ticking on the current runtime.
    pub fn start() -> Metronome {
        let task = tokio::spawn(async {
            for _ in 0..MAX_TICKS {
                tokio::time::sleep(TICK).await;
            }
        });
        Metronome { task }
    }
}

impl Drop for Metronome {
    fn drop(&mut self) {
        self.task.abort();
    }
}
