//! The relay's frame decoder with the per-hop and per-message checks. The first byte picks
//! the hop (client or backend) and the frame limit; the rest is what that peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::fuzzing::{Frames, frames};

/// Frame limits around the length encodings' edges.
const LIMITS: [u64; 8] = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let client = sel & 1 != 0;
    let max_frame = LIMITS[(sel >> 1) as usize % LIMITS.len()];
    let first = frames(bytes, client, max_frame);
    if let Some((code, _)) = &first.violation {
        assert!(matches!(code, 1002 | 1007 | 1009), "close code {code}");
    }
    let mut text: Option<Vec<u8>> = None;
    for f in &first.frames {
        assert!(f.payload.len() as u64 <= max_frame);
        if f.opcode >= 8 {
            assert!(
                f.fin && f.payload.len() <= 125,
                "bad control frame forwarded"
            );
        }
        // Each forwarded frame is masked exactly when it goes to a backend.
        assert_eq!(f.wire[1] & 0x80 != 0, client);
        match f.opcode {
            1 => text = Some(f.payload.clone()),
            0 => {
                if let Some(t) = text.as_mut() {
                    t.extend_from_slice(&f.payload);
                }
            }
            2 => text = None,
            _ => {}
        }
        if f.fin && f.opcode < 8 {
            if let Some(t) = text.take() {
                assert!(
                    std::str::from_utf8(&t).is_ok(),
                    "invalid UTF-8 text forwarded"
                );
            }
        }
    }
    // What was forwarded decodes, on the next hop's rules, to the same frames.
    let wire: Vec<u8> = first
        .frames
        .iter()
        .flat_map(|f| f.wire.iter().copied())
        .collect();
    let again: Frames = frames(&wire, client, max_frame);
    assert!(again.violation.is_none() && !again.truncated, "{again:?}");
    assert_eq!(again.frames.len(), first.frames.len());
    for (a, b) in first.frames.iter().zip(&again.frames) {
        assert_eq!((a.fin, a.opcode, &a.payload), (b.fin, b.opcode, &b.payload));
    }
});
