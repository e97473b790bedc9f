//! Closing a group of connections (a route's, a backend's) with 1012, spread evenly over a
//! window so their clients do not all reconnect at the same moment.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// When each connection of a retired group closes: slot `i` of `total` at `window * i / total`.
#[derive(Debug, Default)]
struct Schedule {
    window_ms: AtomicU64,
    total: AtomicUsize,
    next: AtomicUsize,
    /// The Close reason, when the retirement gave one (an operator's drain).
    why: std::sync::OnceLock<&'static str>,
}

/// What one connection watches to learn that its group was retired.
#[derive(Debug, Clone)]
pub struct RetireWatch {
    token: CancellationToken,
    schedule: Arc<Schedule>,
}

impl RetireWatch {
    /// Cancelled when the retirement starts.
    pub fn token(&self) -> &CancellationToken {
        &self.token
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
                token: CancellationToken::new(),
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

    /// Retires the current members (`count` of them) over `window`; later members form a new group.
    pub fn retire(&self, count: usize, window: Duration) {
        self.retire_because(count, window, None);
    }

    /// Like [`Retirement::retire`], the members closing with `why` as their Close reason
    /// when given (else the relay names the cause it watched: reload, backend removed).
    pub fn retire_because(&self, count: usize, window: Duration, why: Option<&'static str>) {
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
        current.token.cancel();
        *current = RetireWatch {
            token: CancellationToken::new(),
            schedule: Arc::default(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the relay does with a watch: wait for the token, then for its turn.
    async fn turn(w: &RetireWatch) {
        w.token().cancelled().await;
        tokio::time::sleep(w.delay()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn spreads_over_the_window_and_renews() {
        let r = Retirement::default();
        let watches: Vec<_> = (0..4).map(|_| r.watch()).collect();
        r.retire(4, Duration::from_secs(8));
        let later = r.watch();
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = watches
            .into_iter()
            .map(|w| {
                tokio::spawn(async move {
                    turn(&w).await;
                    start.elapsed().as_secs()
                })
            })
            .collect();
        let mut at = Vec::new();
        for t in tasks {
            at.push(t.await.unwrap());
        }
        at.sort();
        // Each waits from the retirement: slots 0..4 of 8s → 0, 2, 4, 6 s.
        assert_eq!(at, [0, 2, 4, 6]);
        assert!(
            tokio::time::timeout(Duration::from_secs(60), turn(&later))
                .await
                .is_err(),
            "new member unaffected"
        );
    }
}
