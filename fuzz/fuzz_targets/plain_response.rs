//! The hand-written HTTP/1.1 path's reading of a backend's response: the head's framing
//! and forwarded fields, and a chunked body followed in pieces, which must agree with the
//! body followed whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::fuzzing::plain_response;

/// Fields that describe one hop, or that wsgate writes itself: never forwarded as read.
const NEVER: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let head_only = first & 1 == 1;
    let step = usize::from(first >> 1) + 1;
    let whole = plain_response(bytes, head_only, usize::MAX);
    let stepped = plain_response(bytes, head_only, step);
    assert_eq!(
        whole, stepped,
        "the body followed in pieces of {step} differs"
    );
    if let Ok((status, framing, names, _)) = &whole.head {
        assert!((200..=999).contains(status), "status {status} taken");
        if head_only || matches!(status, 204 | 304) {
            assert_eq!(framing, "Empty");
        }
        for n in names {
            assert!(!NEVER.contains(&n.as_str()), "forwarded {n}");
        }
    }
    if let Some(Ok((body, end))) = &whole.chunked {
        assert!(body.len() <= bytes.len());
        assert!(end.is_none_or(|e| e <= bytes.len()));
    }
});
