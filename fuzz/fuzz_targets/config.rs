//! The configuration parser and validation: any text gives a config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = wsgate::fuzzing::config(text) {
        // Every error renders (file:line:column and what was expected).
        assert!(!e.to_string().is_empty());
    }
});
