//! Closing a group of connections (a route's, a backend's) with 1012, spread evenly over a
//! window so their clients do not all reconnect at the same moment.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When each connection of a retired group closes: slot `i` of `total` at `window * i / total`.
#[derive(Debug, Default)]
struct Schedule {
    window_ms: AtomicU64,
    total: AtomicUsize,
    next: AtomicUsize,
    /// The Close reason, when the retirement gave one (an operator's drain).
    why: std::sync::OnceLock<&'static str>,
    /// Set when the retirement starts, before its connections are told.
    retired: AtomicBool,
}

/// The group one connection belongs to, to learn whether it was retired. The
/// connection is told through its registry entry ([`Ending`]); this says whether the
/// retirement was of its own group (a later group of the same route or backend is not).
#[derive(Debug, Clone)]
pub struct RetireWatch {
    schedule: Arc<Schedule>,
}

impl RetireWatch {
    /// Whether the group was retired.
    pub fn is_retired(&self) -> bool {
        self.schedule.retired.load(Ordering::Acquire)
    }

    /// Once retired: this connection's place in the spread, as a delay from the start.
    pub fn delay(&self) -> Duration {
        let slot = self.schedule.next.fetch_add(1, Ordering::AcqRel) as u64;
        let total = (self.schedule.total.load(Ordering::Acquire) as u64).max(slot + 1);
        let window = self.schedule.window_ms.load(Ordering::Acquire);
        Duration::from_millis(window * slot / total)
    }

    /// Once retired: the Close reason the retirement gave, if it gave one.
    pub fn why(&self) -> Option<&'static str> {
        self.schedule.why.get().copied()
    }
}

/// A group of connections that can be retired (possibly again later, for new members).
#[derive(Debug)]
pub struct Retirement {
    current: Mutex<RetireWatch>,
}

impl Default for Retirement {
    fn default() -> Self {
        Retirement {
            current: Mutex::new(RetireWatch {
                schedule: Arc::default(),
            }),
        }
    }
}

impl Retirement {
    /// The watch a new member of the group keeps.
    pub fn watch(&self) -> RetireWatch {
        // A poisoned lock only means a panic elsewhere; the watch inside is still whole.
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Marks the current members (`count` of them) retired, to close over `window` with
    /// `why` as their Close reason when given (else the relay names the cause: reload,
    /// backend removed); later members form a new group. The members are told by
    /// `Registry::retire_route` and `Registry::retire_backend`, which call this.
    pub(crate) fn retire(&self, count: usize, window: Duration, why: Option<&'static str>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = why {
            let _ = current.schedule.why.set(why);
        }
        current
            .schedule
            .window_ms
            .store(window.as_millis() as u64, Ordering::Release);
        current
            .schedule
            .total
            .store(count.max(1), Ordering::Release);
        current.schedule.retired.store(true, Ordering::Release);
        *current = RetireWatch {
            schedule: Arc::default(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The members at the retirement are marked and spread over the window in the order
    /// they ask for their turn; a later member is in a new group, not marked.
    #[test]
    fn spreads_over_the_window_and_renews() {
        let r = Retirement::default();
        let watches: Vec<_> = (0..4).map(|_| r.watch()).collect();
        assert!(watches.iter().all(|w| !w.is_retired()));
        r.retire(4, Duration::from_secs(8), Some("drained"));
        let later = r.watch();
        assert!(watches.iter().all(RetireWatch::is_retired));
        assert!(!later.is_retired(), "new member unaffected");
        assert_eq!(later.why(), None);
        let at: Vec<u64> = watches.iter().map(|w| w.delay().as_secs()).collect();
        // Slots 0..4 of 8 s: 0, 2, 4, 6 s from the retirement.
        assert_eq!(at, [0, 2, 4, 6]);
        assert_eq!(watches[0].why(), Some("drained"));
    }
}
