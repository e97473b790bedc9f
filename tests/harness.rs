//! Tests of the test harness itself, so a harness bug is not mistaken for a wsgate bug.

mod support;

use support::frame::{self, BINARY, Frame, MASK};
use support::http;

#[test]
fn frame_codec_round_trips_every_length_format() {
    for len in [0usize, 1, 125, 126, 65535, 65536] {
        for mask in [None, Some(MASK)] {
            let mut frame = Frame::binary(vec![7u8; len]).fin(false).rsv(0b010);
            frame.mask = mask;
            let bytes = frame.encode();
            let (decoded, used) = frame::decode(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(decoded, frame);
            assert_eq!(frame::decode(&bytes[..bytes.len() - 1]).unwrap(), None);
        }
    }
}

#[test]
fn frame_codec_refuses_absurd_lengths() {
    let header = frame::header(true, 0, BINARY, None, i64::MAX as u64);
    assert_eq!(header.len(), 10);
    assert!(frame::decode(&header).is_err());
}

#[test]
fn masking_matches_rfc_6455_example() {
    // RFC 6455 §5.7: a masked "Hello" from a client.
    let bytes = Frame::text("Hello").masked().encode();
    assert_eq!(
        bytes,
        [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
}

#[test]
fn accept_key_matches_rfc_6455_example() {
    // RFC 6455 §1.3.
    assert_eq!(http::accept_key(http::KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn wire_close_check_rejects_reserved_codes() {
    frame::assert_wire_close(&Frame::close(4000, "bye"));
    for code in [1005u16, 1006, 1015] {
        let result = std::panic::catch_unwind(|| frame::assert_wire_close(&Frame::close(code, "")));
        assert!(result.is_err(), "{code} accepted");
    }
}
