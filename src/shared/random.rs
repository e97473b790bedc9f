//! Unpredictable bytes for masking keys, handshake nonces and keepalive payloads: the
//! thread's ChaCha12 generator (`rand::rng`), seeded from the operating system's secure
//! source and reseeded from it after every 64 KiB of output.
//!
//! Read from the OS source itself, every new connection made two `getrandom(2)` calls
//! (its backend nonce and its masking key seed; `CG_MEASURE=conn bash
//! benches/callgrind.sh` counts system calls per connection). wsgate never forks, the one
//! case where a thread's generator would need reseeding by hand.

/// Fills `buf` with unpredictable bytes.
pub fn fill(buf: &mut [u8]) {
    rand::fill(buf);
}

/// An unpredictable u64 (seed for per-connection masking keys).
pub fn u64() -> u64 {
    rand::random()
}

#[cfg(test)]
mod tests {
    /// Two draws differ, and a filled buffer is not left as it was (each fails with
    /// probability 2^-64 or less for a working generator).
    #[test]
    fn draws_differ() {
        assert_ne!(super::u64(), super::u64());
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        super::fill(&mut a);
        super::fill(&mut b);
        assert_ne!(a, [0u8; 16]);
        assert_ne!(a, b);
    }
}
