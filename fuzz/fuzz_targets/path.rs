//! Path normalisation: never panics, and what it returns is a normal form.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let Ok(p) = wsgate::fuzzing::path(s) else {
        return;
    };
    assert!(p.starts_with('/'), "{s:?} -> {p:?}");
    assert!(!p.contains("//"), "{s:?} -> {p:?}");
    for seg in p.split('/') {
        assert!(seg != "." && seg != "..", "dot segment: {s:?} -> {p:?}");
    }
    // Only `%` + two upper-case hex digits of a reserved or non-ASCII byte remain encoded.
    let b = p.as_bytes();
    for (i, _) in p.match_indices('%') {
        let hex = &b[i + 1..i + 3];
        assert!(
            hex.iter()
                .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c)),
            "{s:?} -> {p:?}"
        );
        let c = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        assert!(
            !(c.is_ascii_alphanumeric() || b"-._~".contains(&c)),
            "unreserved left encoded: {s:?} -> {p:?}"
        );
    }
    assert_eq!(
        wsgate::fuzzing::path(&p).as_deref(),
        Ok(p.as_str()),
        "not idempotent: {s:?}"
    );
});
