//! The global budget of buffered bytes (`limits.max_buffered_bytes`): room for the frames
//! too large for a connection's small buffer, shared by every relayed connection.
//!
//! A hop asks for the room a large frame needs before reading it; with none to spare it
//! stops reading, so the peer's TCP window fills instead of wsgate's memory, and it is
//! woken when another connection gives room back (tokio's semaphore queues the waiters in
//! order, so a large request is not starved by small ones).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use prometheus::{IntCounter, IntGauge};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use crate::proto::room::Room;

/// Permits are KiB: a 64-bit byte budget fits the semaphore's permit count, and a
/// request's count fits its `u32`.
const UNIT: u64 = 1024;

/// The proxy's budget of buffered bytes.
pub struct Budget {
    permits: Arc<Semaphore>,
    /// The budget in force, in permits.
    total: AtomicU64,
    /// Bytes granted now.
    used: IntGauge,
    /// Times a hop had to wait for room.
    waits: IntCounter,
}

impl Budget {
    /// A budget of `bytes`, reported through `used` and `waits`.
    pub fn new(bytes: u64, used: IntGauge, waits: IntCounter) -> Arc<Budget> {
        let total = permits_for(bytes);
        Arc::new(Budget {
            permits: Arc::new(Semaphore::new(total as usize)),
            total: AtomicU64::new(total),
            used,
            waits,
        })
    }

    /// Applies a new budget (a reload). A smaller one takes back free room now and the
    /// rest as connections give it back.
    pub fn resize(&self, bytes: u64) {
        let new = permits_for(bytes);
        let old = self.total.swap(new, Ordering::AcqRel);
        if new > old {
            self.permits.add_permits((new - old) as usize);
        } else if new < old {
            let owed = (old - new) as usize;
            let taken = self.permits.forget_permits(owed);
            if taken < owed {
                let permits = self.permits.clone();
                let rest = (owed - taken) as u32;
                tokio::spawn(async move {
                    if let Ok(p) = permits.acquire_many_owned(rest).await {
                        p.forget();
                    }
                });
            }
        }
    }

    /// A hop's lease on the budget, holding nothing yet.
    pub fn lease(self: &Arc<Self>) -> Lease {
        Lease {
            budget: self.clone(),
            held: 0,
            wait: None,
        }
    }
}

fn permits_for(bytes: u64) -> u64 {
    bytes.div_ceil(UNIT)
}

/// A wait for room, and how many permits it asks for; boxed, so only a hop that found the
/// budget used up pays for it (a lease is in every hop of every connection).
struct Wait {
    acquire: Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>,
    need: u32,
}

/// The room one hop holds, given back when dropped.
pub struct Lease {
    budget: Arc<Budget>,
    /// Permits held.
    held: u32,
    /// The wait for more.
    wait: Option<Box<Wait>>,
}

impl Lease {
    /// The hop waits for room (wsgate, not the peer, holds its frame up).
    pub fn waiting(&self) -> bool {
        self.wait.is_some()
    }

    fn add(&mut self, permits: u32) {
        self.held += permits;
        self.budget.used.add(i64::from(permits) * UNIT as i64);
    }
}

impl Room for Lease {
    fn poll_grant(&mut self, bytes: usize, cx: &mut Context<'_>) -> Poll<()> {
        if self.wait.is_none() {
            let want = permits_for(bytes as u64).min(u64::from(u32::MAX)) as u32;
            let need = want.saturating_sub(self.held);
            if need == 0 {
                return Poll::Ready(());
            }
            let taken = self
                .budget
                .permits
                .try_acquire_many(need)
                .map(|permit| permit.forget());
            if taken.is_ok() {
                self.add(need);
                return Poll::Ready(());
            }
            self.budget.waits.inc();
            let permits = self.budget.permits.clone();
            self.wait = Some(Box::new(Wait {
                acquire: Box::pin(permits.acquire_many_owned(need)),
                need,
            }));
        }
        let Some(wait) = self.wait.as_mut() else {
            return Poll::Ready(());
        };
        let need = wait.need;
        match wait.acquire.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(got) => {
                self.wait = None;
                // The semaphore is never closed; were it, the frame goes on without room.
                if let Ok(permit) = got {
                    permit.forget();
                    self.add(need);
                }
                Poll::Ready(())
            }
        }
    }

    fn release(&mut self) {
        if self.held > 0 {
            self.budget.permits.add_permits(self.held as usize);
            self.budget.used.sub(i64::from(self.held) * UNIT as i64);
            self.held = 0;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: u64) -> Arc<Budget> {
        let used = IntGauge::new("used", "used").expect("static metric definition");
        let waits = IntCounter::new("waits", "waits").expect("static metric definition");
        Budget::new(bytes, used, waits)
    }

    fn poll(lease: &mut Lease, bytes: usize) -> Poll<()> {
        let waker = std::task::Waker::noop();
        lease.poll_grant(bytes, &mut Context::from_waker(waker))
    }

    #[tokio::test]
    async fn room_is_granted_until_used_up_then_waits_and_comes_back() {
        let b = budget(100 * 1024);
        let (mut first, mut second) = (b.lease(), b.lease());
        assert!(poll(&mut first, 64 * 1024).is_ready());
        // What is held counts: asking again for the same room takes nothing more.
        assert!(poll(&mut first, 64 * 1024).is_ready());
        assert_eq!(b.used.get(), 64 * 1024);
        assert!(poll(&mut second, 64 * 1024).is_pending());
        assert!(second.waiting());
        assert_eq!(b.waits.get(), 1);
        first.release();
        assert!(poll(&mut second, 64 * 1024).is_ready());
        assert!(!second.waiting());
        drop(second);
        assert_eq!(b.used.get(), 0);
        assert_eq!(b.permits.available_permits(), 100);
    }

    #[tokio::test]
    async fn a_smaller_budget_takes_back_room_as_it_is_given_back() {
        let b = budget(100 * 1024);
        let mut lease = b.lease();
        assert!(poll(&mut lease, 80 * 1024).is_ready());
        b.resize(50 * 1024);
        assert_eq!(b.permits.available_permits(), 0);
        drop(lease);
        // The spawned task takes the 30 permits still owed once they are free.
        for _ in 0..100 {
            if b.permits.available_permits() == 50 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(b.permits.available_permits(), 50);
        b.resize(60 * 1024);
        assert_eq!(b.permits.available_permits(), 60);
    }
}
