//! Live connections of a group (the whole proxy, a route, a backend), counted by seats
//! that give their place back when dropped, however the connection ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many connections a group holds now.
#[derive(Debug, Default)]
pub struct Occupancy(Arc<AtomicUsize>);

/// One connection's place in an [`Occupancy`], released when dropped.
#[derive(Debug)]
pub struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Occupancy {
    /// Connections in the group now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Takes a seat unconditionally.
    pub fn enter(&self) -> Seat {
        self.0.fetch_add(1, Ordering::AcqRel);
        Seat(self.0.clone())
    }

    /// Takes a seat unless that would exceed `max` (no limit when `None`).
    ///
    /// The seat is taken first and given back on refusal, so two racing connections can
    /// never both get the last one.
    pub fn try_enter(&self, max: Option<usize>) -> Option<Seat> {
        let seat = self.enter();
        match max {
            Some(max) if self.count() > max => None,
            _ => Some(seat),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_come_back_when_dropped_or_refused() {
        let group = Occupancy::default();
        let a = group.try_enter(Some(1)).expect("first seat");
        assert!(group.try_enter(Some(1)).is_none(), "over the limit");
        assert_eq!(group.count(), 1, "a refused seat is given back");
        drop(a);
        assert_eq!(group.count(), 0);
        let _b = group.enter();
        assert!(group.try_enter(None).is_some());
    }
}
