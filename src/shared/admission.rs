//! What the door let a WebSocket in as: who it is, and when its admission runs out (a
//! token's `exp`, the route's `max_lifetime`), which the relay turns into a Close.

use tokio::time::Instant;

use crate::shared::report::Outcome;
use crate::shared::tally::KeySeat;

/// Who a connection was admitted as and until when; kept by the relay for its life.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The client's identity (a JWT's `sub`, a forward-auth header), for caps and reports.
    pub identity: Option<String>,
    /// When the connection must be closed, and how; the earliest of every limit.
    pub ends: Option<EndOfLife>,
    /// Places under the route's per-client and per-identity caps, held (never read) for
    /// the connection's life: dropped with it, they give the places back.
    pub seats: Vec<KeySeat>,
}

/// A moment at which the relay closes the connection itself, with its Close and outcome.
#[derive(Debug, Clone)]
pub struct EndOfLife {
    /// When.
    pub at: Instant,
    /// The Close code sent to both peers.
    pub code: u16,
    /// The Close reason sent to both peers (at most 123 bytes are sent).
    pub reason: String,
    /// The outcome in the close report.
    pub outcome: Outcome,
}

impl Admitted {
    /// Keeps `end` when it comes before the one already set (or none is).
    pub fn end_by(&mut self, end: EndOfLife) {
        if self.ends.as_ref().is_none_or(|e| end.at < e.at) {
            self.ends = Some(end);
        }
    }

    /// Nothing to keep: no identity, no end and no seat.
    pub fn is_empty(&self) -> bool {
        self.identity.is_none() && self.ends.is_none() && self.seats.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn end(after: u64, outcome: Outcome) -> EndOfLife {
        EndOfLife {
            at: Instant::now() + Duration::from_secs(after),
            code: 1008,
            reason: String::new(),
            outcome,
        }
    }

    /// Whatever order the limits are found in, the earliest one ends the connection.
    #[test]
    fn the_earliest_end_is_kept() {
        let mut a = Admitted::default();
        assert!(a.is_empty());
        a.end_by(end(60, Outcome::Lifetime));
        a.end_by(end(30, Outcome::AuthExpired));
        a.end_by(end(90, Outcome::Lifetime));
        assert_eq!(a.ends.map(|e| e.outcome), Some(Outcome::AuthExpired));
    }
}
