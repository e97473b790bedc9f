//! A token bucket shared by a route's new connections (`admission.new_connections_rate`).
//!
//! Hand-written rather than `governor`: it must run on tokio's clock (the paused-time
//! tests drive it), and one bucket per route is a dozen lines under a mutex.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::admission::RateConfig;

/// `per_second` tokens a second, at most `burst` saved up; starts full.
#[derive(Debug)]
pub struct TokenBucket {
    /// What it was built from (a reload keeps the bucket while this is unchanged).
    pub config: RateConfig,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(config: &RateConfig) -> TokenBucket {
        TokenBucket {
            config: config.clone(),
            state: Mutex::new((config.burst as f64, Instant::now())),
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn take(&self) -> Result<(), Duration> {
        let now = Instant::now();
        // Nothing between lock and unlock can panic, so a poisoned lock is as good as any.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = &mut *state;
        let rate = self.config.per_second;
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate)
            .min(self.config.burst as f64);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_refills_at_the_rate() {
        let bucket = TokenBucket::new(&RateConfig {
            per_second: 2.0,
            burst: 3,
        });
        for _ in 0..3 {
            assert_eq!(bucket.take(), Ok(()));
        }
        let wait = bucket.take().expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(500), "one token every 1/2 s");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(bucket.take(), Ok(()));
        assert!(bucket.take().is_err());
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(bucket.take(), Ok(()), "refilled up to the burst only");
        }
        assert!(bucket.take().is_err());
    }
}
