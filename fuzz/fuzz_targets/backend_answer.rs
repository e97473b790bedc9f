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
            assert!(data.ends_with(&leftover));
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
