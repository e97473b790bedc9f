//! A waker that remembers it was called, so the relay polls only what woke it.
//!
//! The relay is one task polling both hops. A wake-up of the task alone does not say
//! which of them is ready, and polling both each time was most of the cost of a small
//! message (issue #17: the decoder polled ~10 times per 64 B echo round trip where 2
//! return a frame). Each hop is polled with its own [`Signal`] instead, which records the
//! wake-up and passes it on to the task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Wake, Waker};

use atomic_waker::AtomicWaker;

/// Records that what was polled with it woke, and wakes the task.
pub(super) struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Signal {
    /// A signal that starts as fired (`fired`), or not.
    pub(super) fn new(fired: bool) -> Arc<Signal> {
        Arc::new(Signal {
            fired: AtomicBool::new(fired),
            task: AtomicWaker::new(),
        })
    }

    /// Whether it fired since the last call, with `task` (the task's waker) handed to it
    /// first when `new_task` says that waker changed, or when it fired (a firing takes the
    /// waker out). Handed before the flag is read: a firing from then on wakes the task.
    pub(super) fn take(&self, task: &Waker, new_task: bool) -> bool {
        if new_task || self.fired.load(Ordering::Acquire) {
            self.task.register(task);
        }
        self.fired.swap(false, Ordering::AcqRel)
    }

    /// The waker to poll with (one per signal: tokio sees the same waker every time).
    pub(super) fn waker(self: &Arc<Self>) -> Waker {
        Waker::from(self.clone())
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A firing is seen once and wakes the task it was handed, also when it fires again
    /// after the first firing took the task's waker out.
    #[test]
    fn a_firing_is_taken_once_and_wakes_the_task_each_time() {
        let count = Arc::new(Count(Default::default()));
        let task = Waker::from(count.clone());
        let signal = Signal::new(false);
        assert!(!signal.take(&task, true));
        signal.waker().wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(signal.take(&task, false));
        assert!(!signal.take(&task, false));
        signal.waker().wake();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "woken again after a firing"
        );
        assert!(signal.take(&task, false));
    }
}
