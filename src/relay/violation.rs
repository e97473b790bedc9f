//! What a peer can do that ends its connection: each kind knows the close code it is sent,
//! the reason text and the outcome it is reported with.

use crate::proto::close::code;
use crate::proto::frame::FrameError;
use crate::shared::report::Outcome;

/// A protocol violation or a broken limit by one peer.
///
/// The `Display` text is the reason sent in the Close frame, so it is part of the wire
/// behaviour: clients and tests match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A client frame without a mask (RFC 6455 §5.1).
    #[error("frame masking wrong for this peer")]
    UnmaskedClientFrame,
    /// A backend frame with a mask (RFC 6455 §5.1).
    #[error("frame masking wrong for this peer")]
    MaskedBackendFrame,
    /// RSV1-3 set without a negotiated extension.
    #[error("reserved bits set")]
    ReservedBits,
    /// Opcode 3-7 or 11-15.
    #[error("unknown opcode {0}")]
    BadOpcode(u8),
    /// A control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame payload over 125 bytes.
    #[error("control frame too long")]
    OversizedControl,
    /// A 64-bit payload length with the top bit set.
    #[error("invalid payload length")]
    BadLength,
    /// A continuation frame with no message in progress.
    #[error("continuation without a message")]
    OrphanContinuation,
    /// A Text or Binary frame while a fragmented message is in progress.
    #[error("new message inside a fragmented one")]
    DataInsideFragmented,
    /// A Close payload of one byte, with a code not allowed on the wire, or a non-UTF-8 reason.
    #[error("invalid close frame")]
    BadClosePayload,
    /// A frame payload over `max_frame_bytes` (its length, from the header).
    #[error("frame of {0} bytes over the limit")]
    FrameTooBig(u64),
    /// A message over `max_message_bytes` across its fragments.
    #[error("message too big")]
    MessageTooBig,
    /// A message in more than `max_message_frames` frames.
    #[error("message has too many fragments")]
    TooManyFragments,
    /// Text that is not UTF-8 (checked across fragments).
    #[error("invalid UTF-8 in text message")]
    InvalidUtf8,
    /// More data frames per second than `max_message_rate`.
    #[error("message rate exceeded")]
    RateLimit,
    /// A frame not complete within `frame_timeout` of its first byte.
    #[error("frame not finished within frame_timeout")]
    FrameTimeout,
}

impl Violation {
    /// The violation a decoding error stands for, `None` when the stream just ended or
    /// failed (that is a vanished peer, not a violation); `from_client` says which masking
    /// rule was broken.
    pub fn from_frame_error(error: &FrameError, from_client: bool) -> Option<Violation> {
        Some(match error {
            FrameError::Masking if from_client => Violation::UnmaskedClientFrame,
            FrameError::Masking => Violation::MaskedBackendFrame,
            FrameError::ReservedBits => Violation::ReservedBits,
            FrameError::UnknownOpcode(op) => Violation::BadOpcode(*op),
            FrameError::FragmentedControl => Violation::FragmentedControl,
            FrameError::ControlTooLong => Violation::OversizedControl,
            FrameError::BadLength => Violation::BadLength,
            FrameError::TooLarge(len) => Violation::FrameTooBig(*len),
            FrameError::Truncated | FrameError::Io(_) => return None,
        })
    }

    /// The close code the violating peer is sent.
    pub fn code(&self) -> u16 {
        match self {
            Violation::FrameTooBig(_) | Violation::MessageTooBig | Violation::TooManyFragments => {
                code::TOO_BIG
            }
            Violation::InvalidUtf8 => code::INVALID_DATA,
            Violation::RateLimit | Violation::FrameTimeout => code::POLICY,
            _ => code::PROTOCOL_ERROR,
        }
    }

    /// How the connection's end is reported: a broken limit or a broken protocol.
    pub fn outcome(&self) -> Outcome {
        match self.code() {
            code::TOO_BIG | code::POLICY => Outcome::Limit,
            _ => Outcome::ProtocolError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_outcomes() {
        let cases = [
            (Violation::UnmaskedClientFrame, 1002, Outcome::ProtocolError),
            (Violation::BadOpcode(3), 1002, Outcome::ProtocolError),
            (Violation::BadClosePayload, 1002, Outcome::ProtocolError),
            (Violation::InvalidUtf8, 1007, Outcome::ProtocolError),
            (Violation::FrameTooBig(9), 1009, Outcome::Limit),
            (Violation::MessageTooBig, 1009, Outcome::Limit),
            (Violation::TooManyFragments, 1009, Outcome::Limit),
            (Violation::RateLimit, 1008, Outcome::Limit),
            (Violation::FrameTimeout, 1008, Outcome::Limit),
        ];
        for (v, code, outcome) in cases {
            assert_eq!((v.code(), v.outcome()), (code, outcome), "{v:?}");
        }
    }

    #[test]
    fn reasons_match_the_frame_errors_they_replace() {
        for (e, from_client) in [
            (FrameError::Masking, true),
            (FrameError::Masking, false),
            (FrameError::ReservedBits, true),
            (FrameError::UnknownOpcode(11), false),
            (FrameError::FragmentedControl, true),
            (FrameError::ControlTooLong, true),
            (FrameError::BadLength, true),
            (FrameError::TooLarge(1 << 20), true),
        ] {
            let v = Violation::from_frame_error(&e, from_client).expect("a violation");
            assert_eq!(v.to_string(), e.to_string(), "{v:?}");
        }
        assert_eq!(
            Violation::from_frame_error(&FrameError::Truncated, true),
            None
        );
    }
}
