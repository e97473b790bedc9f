//! Thread-per-core: one `current_thread` runtime per worker, each accepting on its own
//! `SO_REUSEPORT` socket of every listener (as nginx workers do).
//!
//! Measured on this machine kind (design §8): a single-threaded runtime per core beat
//! tokio's multi-thread scheduler on connection rate and tail latency, and two workers
//! sharing one pinned core hurt latency, so the count is configurable.
//!
//! The runtime keeps tokio's defaults. Tried against the p99 at 5,000 msg/s
//! (benches/README.md, "The tail and tokio's knobs": 7 alternating repeats, ratio of
//! p99s within each):
//! `event_interval` 1, 8 and 200, `global_queue_interval` 4, and a multi-thread runtime
//! with one worker gave medians of 0.79–0.84, 0.71–1.59, 1.05, 0.69 and 0.36–1.40 × the
//! defaults' p99, while four A/A runs (the same settings on both sides) gave 0.31–2.99:
//! nothing moved the tail beyond what the shared machine moves it.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The worker runtimes; dropping the last handle stops the threads wsgate started (their
/// tasks are dropped).
pub struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Workers {
    /// Starts `count` worker threads (0: one per available core).
    pub fn start(count: usize) -> std::io::Result<Arc<Workers>> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Self::start_with(count, "wsgate-worker", |_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        })
    }

    /// One worker: the runtime of the caller, so a test's paused clock drives the proxy.
    pub fn current() -> Arc<Workers> {
        Arc::new(Workers {
            handles: vec![Handle::current()],
            stop: CancellationToken::new(),
        })
    }

    /// Starts `count` threads named `{name}-{i}`, each running the runtime `build(i)` makes.
    /// If one cannot be made, the threads already started are stopped before the error
    /// is returned (the partly built `Workers` is dropped).
    fn start_with(
        count: usize,
        name: &str,
        build: impl Fn(usize) -> std::io::Result<tokio::runtime::Runtime>,
    ) -> std::io::Result<Arc<Workers>> {
        let mut workers = Workers {
            handles: Vec::with_capacity(count),
            stop: CancellationToken::new(),
        };
        for i in 0..count {
            let runtime = build(i)?;
            let handle = runtime.handle().clone();
            let stop = workers.stop.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    runtime.block_on(stop.cancelled());
                })?;
            workers.handles.push(handle);
        }
        Ok(Arc::new(workers))
    }

    /// The runtimes, one per worker.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of this process whose name starts with `prefix` (Linux: /proc/self/task).
    fn threads_named(prefix: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .filter(|comm| comm.starts_with(prefix))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Waits (at most 5 s) until `done` holds for the count of threads named `prefix…`.
    fn wait_for_threads(prefix: &str, what: &str, done: impl Fn(usize) -> bool) {
        let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        while !done(threads_named(prefix)) {
            assert!(std::time::SystemTime::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_start_that_fails_partway_stops_the_threads_it_started() {
        // Regression: the threads started before the failing one were never told to stop.
        let result = Workers::start_with(3, "wt-partial", |i| {
            if i == 2 {
                return Err(std::io::Error::other("no third runtime"));
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        });
        assert!(result.is_err());
        wait_for_threads(
            "wt-partial",
            "worker threads still running after a failed start",
            |n| n == 0,
        );
    }

    #[test]
    fn started_workers_run_until_dropped() {
        let workers = Workers::start_with(2, "wt-running", |_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        })
        .unwrap();
        assert_eq!(workers.handles().len(), 2);
        // A thread names itself once it runs, so wait for both.
        let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        while threads_named("wt-running") < 2 {
            assert!(
                std::time::SystemTime::now() < deadline,
                "workers did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(workers);
        let deadline = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        while threads_named("wt-running") > 0 {
            assert!(
                std::time::SystemTime::now() < deadline,
                "threads outlived their Workers"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
