//! The PROXY protocol header read before TLS or HTTP: no panic on any bytes, the same
//! decision however the bytes arrive, and never a byte taken past the header (those are
//! the client's ClientHello or request).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, bytes)) = data.split_first() else {
        return;
    };
    let whole = wsgate::fuzzing::proxy_header(bytes, bytes.len().max(1));
    let pieces = wsgate::fuzzing::proxy_header(bytes, usize::from(step % 16) + 1);
    assert_eq!(whole.carried, pieces.carried, "{bytes:?}");
    assert!(whole.consumed <= bytes.len());
    if whole.carried.is_ok() {
        assert_eq!(whole.consumed, pieces.consumed);
        // A header is at most a v1 line or a v2 fixed part and its bounded payload.
        assert!(whole.consumed <= 16 + 2048, "{} bytes taken", whole.consumed);
        // Whatever follows the header does not change what the header says.
        let mut longer = bytes[..whole.consumed].to_vec();
        longer.extend_from_slice(b"\x16\x03\x01GET / HTTP/1.1\r\n");
        let again = wsgate::fuzzing::proxy_header(&longer, usize::from(step % 16) + 1);
        assert_eq!(again, whole, "{bytes:?}");
    }
});
