//! A strict checker of the frames wsgate writes on one hop (RFC 6455 §5), for tests that
//! must see every rule kept, not just the frames they expect.
//!
//! [`super::frame::decode`] judges nothing; [`WireCheck`] judges each decoded frame in
//! order: masking for the direction, RSV bits, opcodes, control frame size and FIN, Close
//! payloads, continuation order, and nothing after the Close.

use super::frame::{CLOSE, CONT, Frame};

/// The rules of one direction of one hop, with the state that continuation order and the
/// Close need.
#[derive(Debug)]
pub struct WireCheck {
    /// Frames on this wire go to a server (the backend hop): they must be masked.
    to_server: bool,
    /// A fragmented data message is in progress.
    open: bool,
    /// A Close was seen: nothing may follow it.
    closed: bool,
}

impl WireCheck {
    /// The rules for frames going to a server (`to_server`: masked) or to a client (unmasked).
    pub fn new(to_server: bool) -> WireCheck {
        WireCheck {
            to_server,
            open: false,
            closed: false,
        }
    }

    /// Checks the next frame on this wire; `encoded_len` is how many bytes it took there,
    /// so a length not in its shortest form (RFC 6455 §5.2) is caught too.
    pub fn check(&mut self, frame: &Frame, encoded_len: usize) -> Result<(), String> {
        if self.closed {
            return Err("frame after the Close".into());
        }
        if frame.mask.is_some() != self.to_server {
            return Err(if self.to_server {
                "unmasked frame to a server".into()
            } else {
                "masked frame to a client".into()
            });
        }
        if frame.rsv != 0 {
            return Err(format!("RSV bits {:03b} set", frame.rsv));
        }
        if encoded_len != frame.encode().len() {
            return Err("payload length not in its shortest form".into());
        }
        match frame.opcode {
            CONT if !self.open => return Err("continuation without a message".into()),
            CONT => self.open = !frame.fin,
            1 | 2 if self.open => return Err("new message inside a fragmented one".into()),
            1 | 2 => self.open = !frame.fin,
            0x8..=0xA => {
                if !frame.fin {
                    return Err("fragmented control frame".into());
                }
                if frame.payload.len() > 125 {
                    return Err(format!("control frame of {} bytes", frame.payload.len()));
                }
                if frame.opcode == CLOSE {
                    self.closed = true;
                    return close_payload_ok(&frame.payload);
                }
            }
            op => return Err(format!("unknown opcode {op}")),
        }
        Ok(())
    }
}

/// Whether a Close payload may be sent: empty, or a code a peer may send (never
/// 1004-1006, 1015, below 1000 or unassigned) and a UTF-8 reason.
pub fn close_payload_ok(payload: &[u8]) -> Result<(), String> {
    match payload {
        [] => Ok(()),
        [_] => Err("Close payload of one byte".into()),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
                return Err(format!("Close code {code} is not allowed on the wire"));
            }
            std::str::from_utf8(reason)
                .map(drop)
                .map_err(|_| format!("Close reason is not UTF-8: {reason:02x?}"))
        }
    }
}
