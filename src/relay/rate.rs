//! The client's message rate limit.

/// A token bucket: `rate` messages per second, bursts up to one second's worth.
pub(super) struct RateLimit {
    rate: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl RateLimit {
    /// A full bucket for `rate` messages per second.
    pub(super) fn new(rate: u32) -> RateLimit {
        RateLimit {
            rate: rate as f64,
            tokens: rate as f64,
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes one message's token; false when the client is over its rate.
    pub(super) fn allow(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}
