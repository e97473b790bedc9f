//! Message-level checks on the frames of one direction: fragmentation order, message size,
//! frames per message, UTF-8 of text across fragments, and Close payloads.

use crate::config::Tuning;
use crate::proto::close;
use crate::proto::frame::{Frame, OpCode};
use crate::proto::utf8::Utf8Validator;
use crate::relay::violation::Violation;

/// The route's limits on a message, read from its tuning where a frame is checked: a
/// copy in each hop cost every connection 32 bytes, and its relay's allocator bin.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    max_bytes: u64,
    max_frames: u32,
    validate_utf8: bool,
}

impl Limits {
    /// The limits of a route with this tuning.
    pub fn of(tuning: &Tuning) -> Limits {
        Limits {
            max_bytes: tuning.max_message_bytes,
            max_frames: tuning.max_message_frames,
            validate_utf8: tuning.validate_utf8,
        }
    }
}

/// The message in progress in one direction.
#[derive(Default)]
pub struct Message {
    open: Option<OpCode>,
    size: u64,
    /// Frames of the message in progress: zero-length continuations never grow `size`.
    frames: u32,
    utf8: Utf8Validator,
}

impl Message {
    /// Checks one frame, or one piece of a streamed frame, against the message in
    /// progress: the header's checks on the piece that carries it, UTF-8 on every piece
    /// (a character may be split across pieces as across fragments).
    pub fn check(&mut self, frame: &mut Frame, limits: Limits) -> Result<(), Violation> {
        let len = frame.frame_len();
        let fin = frame.fin && frame.ends();
        if frame.opcode.is_control() {
            // Always whole (at most 125 bytes), and not part of the message in progress.
            return self.check_start(frame, len, limits);
        }
        if frame.starts() {
            self.check_start(frame, len, limits)?;
        }
        if self.open == Some(OpCode::Text)
            && limits.validate_utf8
            && self.utf8.feed(frame.payload(), fin).is_err()
        {
            return Err(Violation::InvalidUtf8);
        }
        if fin {
            self.open = None;
            self.utf8 = Utf8Validator::default();
        }
        Ok(())
    }

    /// The checks made once per frame, from its header (and a Close's payload).
    fn check_start(
        &mut self,
        frame: &mut Frame,
        len: u64,
        limits: Limits,
    ) -> Result<(), Violation> {
        match frame.opcode {
            OpCode::Close => {
                return close::parse_close(frame.payload())
                    .map(drop)
                    .map_err(|_| Violation::BadClosePayload);
            }
            OpCode::Ping | OpCode::Pong => return Ok(()),
            OpCode::Text | OpCode::Binary => {
                if self.open.is_some() {
                    return Err(Violation::DataInsideFragmented);
                }
                self.size = len;
                self.frames = 1;
                self.open = Some(frame.opcode);
            }
            OpCode::Continuation => {
                if self.open.is_none() {
                    return Err(Violation::OrphanContinuation);
                }
                self.size += len;
                self.frames = self.frames.saturating_add(1);
            }
        }
        if self.size > limits.max_bytes {
            return Err(Violation::MessageTooBig);
        }
        if limits.max_frames != 0 && self.frames > limits.max_frames {
            return Err(Violation::TooManyFragments);
        }
        Ok(())
    }
}
