//! A deadline moved often and reached rarely (a keep-alive connection's wait for its next
//! request head, a response head's): the time it is due is a plain field, and the one
//! timer beneath it is only moved when it fires early or must fire sooner.
//!
//! Hand-written because a fresh `tokio::time::sleep` per request, or a `reset` per
//! request, puts the timer into tokio's wheel and takes it out again every time: about
//! 650 instructions per keep-alive GET on the hand-written HTTP/1.1 path
//! (benches/callgrind.sh `http1`), for deadlines that almost never pass.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// How far off the timer sits while nothing is due.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// A deadline that may be set, moved and cleared at the cost of a field write.
#[derive(Debug)]
pub struct LazyDeadline {
    /// Fires at or before `due` (or far off): then `due` is looked at.
    timer: Pin<Box<Sleep>>,
    /// When it is due; `None` while nothing is.
    due: Option<Instant>,
}

impl Default for LazyDeadline {
    fn default() -> LazyDeadline {
        LazyDeadline {
            timer: Box::pin(tokio::time::sleep_until(Instant::now() + FAR)),
            due: None,
        }
    }
}

impl LazyDeadline {
    /// Due `after` from now; zero: never.
    pub fn set_after(&mut self, after: Duration) {
        if after.is_zero() {
            self.due = None;
            return;
        }
        let due = Instant::now() + after;
        // Only a deadline sooner than the timer's moves it; a later one is looked at when
        // the timer fires.
        if self.timer.deadline() > due {
            self.timer.as_mut().reset(due);
        }
        self.due = Some(due);
    }

    /// Nothing is due any more.
    pub fn clear(&mut self) {
        self.due = None;
    }

    /// Ready once the deadline passed (then it is cleared); pending while nothing is due.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // At most twice round: a timer that fired early is moved to the deadline once.
        for _ in 0..2 {
            let Some(due) = self.due else {
                return Poll::Pending;
            };
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= due {
                self.due = None;
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(due);
        }
        Poll::Pending
    }

    /// Waits until the deadline passed (forever while nothing is due).
    #[cfg(test)]
    pub async fn passed(&mut self) {
        std::future::poll_fn(|cx| self.poll_passed(cx)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_latest_deadline_set_not_an_earlier_one() {
        let mut d = LazyDeadline::default();
        let start = Instant::now();
        d.set_after(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(6)).await;
        // Moved later: the timer still sits at 10 s, and is moved on when it fires.
        d.set_after(Duration::from_secs(10));
        d.passed().await;
        assert_eq!(start.elapsed(), Duration::from_secs(16));
        // Sooner than the timer: moved at once.
        d.set_after(Duration::from_secs(1));
        d.passed().await;
        assert_eq!(start.elapsed(), Duration::from_secs(17));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_due_never_fires() {
        let mut d = LazyDeadline::default();
        d.set_after(Duration::from_secs(1));
        d.clear();
        let waited = tokio::time::timeout(Duration::from_secs(100), d.passed()).await;
        assert!(waited.is_err());
        d.set_after(Duration::ZERO);
        let waited = tokio::time::timeout(Duration::from_secs(100), d.passed()).await;
        assert!(waited.is_err());
    }
}
