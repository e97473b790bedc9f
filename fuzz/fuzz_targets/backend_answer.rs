//! The backend client's answer reading and 101 checks, over an in-memory stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::fuzzing::{BackendAnswer, backend_answer};

/// Headers of a 101 that describe the backend hop only and must not reach the client.
const NEVER: &[&str] = &[
    "connection",
    "keep-alive",
    "upgrade",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "sec-websocket-accept",
    "sec-websocket-extensions",
];

fuzz_target!(|data: &[u8]| {
    match backend_answer(data) {
        BackendAnswer::Upgraded { headers, leftover } => {
            assert!(
                leftover.len() < data.len(),
                "the 101 head itself is not leftover"
            );
            // What was read past the 101's head: a run of the input that starts right
            // after the head's blank line (the rest may still be unread in the stream).
            assert!(
                leftover.is_empty()
                    || (1..=data.len() - leftover.len())
                        .any(|p| data[p - 1] == b'\n' && data[p..].starts_with(&leftover)),
                "leftover is not a run of the input after a head"
            );
            for name in headers.keys() {
                assert!(!NEVER.contains(&name.as_str()), "passed on {name}");
            }
            let protocols: Vec<_> = headers.get_all("sec-websocket-protocol").iter().collect();
            assert!(protocols.len() <= 1);
        }
        BackendAnswer::Refused {
            status, body_len, ..
        } => {
            assert!(
                status >= 200 && status != 101,
                "refusal with status {status}"
            );
            assert!(body_len <= 64 * 1024 && body_len <= data.len());
        }
        BackendAnswer::Failed(why) => assert!(!why.is_empty()),
    }
});
