//! Unpredictable bytes from the operating system's secure source (via ring), for masking
//! keys, handshake nonces and keepalive payloads.

/// Fills `buf` from the operating system's secure random source (via ring).
pub fn fill(buf: &mut [u8]) {
    // ring's source directly: a rustls provider built per call allocates its cipher-suite
    // and key-exchange lists, twice per new connection.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf).is_err() {
        // The OS source failing is not recoverable in any useful way; fall back to the
        // clock so masking keys still vary (they only need to be unpredictable to web scripts).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
}

/// A random u64 (seed for per-connection masking keys).
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    fill(&mut b);
    u64::from_ne_bytes(b)
}
