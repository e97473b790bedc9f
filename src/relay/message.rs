//! Message-level checks on the frames of one direction: fragmentation order, message size,
//! UTF-8 of text across fragments, and Close payloads.

use crate::config::Tuning;
use crate::proto::close::{self, code};
use crate::proto::frame::{Frame, OpCode};
use crate::proto::utf8::Utf8Validator;

/// The message in progress in one direction.
pub struct Message {
    open: Option<OpCode>,
    size: u64,
    utf8: Utf8Validator,
    max_bytes: u64,
    validate_utf8: bool,
}

impl Message {
    /// No message in progress yet; limits from the route's tuning.
    pub fn new(tuning: &Tuning) -> Message {
        Message {
            open: None,
            size: 0,
            utf8: Utf8Validator::default(),
            max_bytes: tuning.max_message_bytes,
            validate_utf8: tuning.validate_utf8,
        }
    }

    /// Checks one frame against the message in progress; Err carries the close code and reason.
    pub fn check(&mut self, frame: &mut Frame) -> Result<(), (u16, &'static str)> {
        let len = frame.len() as u64;
        let fin = frame.fin;
        match frame.opcode {
            OpCode::Close => {
                return close::parse_close(frame.payload())
                    .map(drop)
                    .map_err(|_| (code::PROTOCOL_ERROR, "invalid close frame"));
            }
            OpCode::Ping | OpCode::Pong => return Ok(()),
            OpCode::Text | OpCode::Binary => {
                if self.open.is_some() {
                    return Err((code::PROTOCOL_ERROR, "new message inside a fragmented one"));
                }
                self.size = len;
                self.open = Some(frame.opcode);
            }
            OpCode::Continuation => {
                if self.open.is_none() {
                    return Err((code::PROTOCOL_ERROR, "continuation without a message"));
                }
                self.size += len;
            }
        }
        if self.size > self.max_bytes {
            return Err((code::TOO_BIG, "message too big"));
        }
        if self.open == Some(OpCode::Text)
            && self.validate_utf8
            && self.utf8.feed(frame.payload(), fin).is_err()
        {
            return Err((code::INVALID_DATA, "invalid UTF-8 in text message"));
        }
        if frame.fin {
            self.open = None;
            self.utf8 = Utf8Validator::default();
        }
        Ok(())
    }
}
