//! Live connections counted per key (a client's address or network, an identity), with
//! seats that give their place back when dropped, like [`crate::shared::occupancy`]'s.
//!
//! A key's entry exists only while some seat holds it: the last seat to leave removes it,
//! so the map never holds more entries than there are live seats, whoever connects.
//! A mutex around a map, not a concurrent map: each critical section is one lookup, the
//! workers are few (one per core), and a check-then-add under one lock is what makes the
//! cap exact when many connections race for the last place.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// Counts per key of the seats held now.
#[derive(Debug)]
pub struct Tally<K: Eq + Hash> {
    counts: Arc<Mutex<HashMap<K, u32>>>,
}

impl<K: Eq + Hash> Default for Tally<K> {
    fn default() -> Self {
        Tally {
            counts: Arc::default(),
        }
    }
}

/// One connection's place under a key of a [`Tally`], released when dropped.
pub struct KeySeat {
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl std::fmt::Debug for KeySeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySeat")
    }
}

impl Drop for KeySeat {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// Locks a tally's map; a panic while it was held cannot leave a count half-written (each
/// update is one statement), so a poisoned lock is taken over as it is.
fn lock<K>(m: &Mutex<HashMap<K, u32>>) -> MutexGuard<'_, HashMap<K, u32>> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<K: Eq + Hash + Clone + Send + Sync + 'static> Tally<K> {
    /// Takes a seat under `key` unless `max` seats are held under it already.
    pub fn try_enter(&self, key: K, max: u32) -> Option<KeySeat> {
        {
            let mut counts = lock(&self.counts);
            let count = counts.entry(key.clone()).or_insert(0);
            if *count >= max {
                if *count == 0 {
                    // Only with `max` 0, which the config refuses; never leave an empty entry.
                    counts.remove(&key);
                }
                return None;
            }
            *count += 1;
        }
        let counts = self.counts.clone();
        Some(KeySeat {
            release: Some(Box::new(move || {
                let mut counts = lock(&counts);
                if let Some(count) = counts.get_mut(&key) {
                    *count -= 1;
                    if *count == 0 {
                        counts.remove(&key);
                    }
                }
            })),
        })
    }

    /// Seats held under `key` now.
    #[cfg(test)]
    pub fn count(&self, key: &K) -> u32 {
        lock(&self.counts).get(key).copied().unwrap_or(0)
    }

    /// Keys with at least one seat now (the map's size).
    #[cfg(test)]
    pub fn keys(&self) -> usize {
        lock(&self.counts).len()
    }
}

impl<K: Eq + Hash> Clone for Tally<K> {
    /// The same tally (shared counts), for a route rebuilt by a reload.
    fn clone(&self) -> Self {
        Tally {
            counts: self.counts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_key_and_forgets_keys_at_zero() {
        let tally = Tally::<&'static str>::default();
        let a1 = tally.try_enter("a", 2).expect("first");
        let a2 = tally.try_enter("a", 2).expect("second");
        assert!(tally.try_enter("a", 2).is_none(), "third is over the cap");
        let b = tally
            .try_enter("b", 2)
            .expect("another key has its own count");
        assert_eq!(
            (tally.count(&"a"), tally.count(&"b"), tally.keys()),
            (2, 1, 2)
        );
        drop(a1);
        let a3 = tally.try_enter("a", 2).expect("a place came back");
        drop((a2, a3, b));
        assert_eq!(tally.keys(), 0, "no entry outlives its last seat");
    }

    /// Many threads racing for a cap of 10 under one key: exactly 10 win.
    #[test]
    fn the_cap_is_exact_under_contention() {
        let tally = Tally::<u8>::default();
        let held = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..100)
                            .filter_map(|_| tally.try_enter(7, 10))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("no panic"))
                .collect::<Vec<_>>()
        });
        assert_eq!(held.len(), 10);
        drop(held);
        assert_eq!(tally.keys(), 0);
    }
}
