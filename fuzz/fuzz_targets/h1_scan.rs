//! The HTTP/1.1 request scan beneath hyper: no panic on any bytes, and the same decision
//! whether the bytes come whole or in pieces (a head may arrive a byte at a time).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let whole = wsgate::fuzzing::h1_scan(bytes, bytes.len().max(1));
    let pieces = wsgate::fuzzing::h1_scan(bytes, usize::from(step % 16) + 1);
    assert_eq!(whole, pieces);
    if let Some(at) = whole.broken_at {
        assert!(at < bytes.len());
    }
});
