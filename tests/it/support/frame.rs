//! A tiny WebSocket frame codec (RFC 6455 §5.2) for hostile test peers.
//!
//! It encodes exactly what it is told (any opcode, RSV bits, masked or not,
//! any length field) and decodes what it receives without judging it, so the
//! tests can see every frame wsgate puts on the wire.

/// Continuation frame.
pub const CONT: u8 = 0x0;
/// Text frame.
pub const TEXT: u8 = 0x1;
/// Binary frame.
pub const BINARY: u8 = 0x2;
/// Close frame.
pub const CLOSE: u8 = 0x8;
/// Ping frame.
pub const PING: u8 = 0x9;
/// Pong frame.
pub const PONG: u8 = 0xA;

/// The masking key the hostile peers use (the one from RFC 6455 §5.7).
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Largest payload the decoder accepts: wsgate never forwards more than the
/// configured frame limit, and a bigger claim means the stream is garbage.
const MAX_DECODED_PAYLOAD: u64 = 64 << 20;

/// One frame, as written or as read from the wire (payload unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// The three RSV bits, RSV1 as 0b100.
    pub rsv: u8,
    pub opcode: u8,
    /// The masking key, if the frame is (to be) masked.
    pub mask: Option<[u8; 4]>,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A final, unmasked frame with the given opcode and payload.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> Frame {
        Frame {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            payload: payload.into(),
        }
    }

    pub fn text(text: impl Into<Vec<u8>>) -> Frame {
        Frame::new(TEXT, text)
    }

    pub fn binary(data: impl Into<Vec<u8>>) -> Frame {
        Frame::new(BINARY, data)
    }

    pub fn cont(data: impl Into<Vec<u8>>) -> Frame {
        Frame::new(CONT, data)
    }

    pub fn ping(data: impl Into<Vec<u8>>) -> Frame {
        Frame::new(PING, data)
    }

    /// A Close frame with a status code and reason.
    pub fn close(code: u16, reason: &str) -> Frame {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        Frame::new(CLOSE, payload)
    }

    /// Sets the FIN bit.
    pub fn fin(mut self, fin: bool) -> Frame {
        self.fin = fin;
        self
    }

    /// Sets the RSV bits (RSV1 = 0b100).
    pub fn rsv(mut self, rsv: u8) -> Frame {
        self.rsv = rsv;
        self
    }

    /// Masks the frame with [`MASK`].
    pub fn masked(mut self) -> Frame {
        self.mask = Some(MASK);
        self
    }

    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// The status code of a Close frame (None for an empty payload).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// The reason of a Close frame, lossily decoded.
    pub fn close_reason(&self) -> String {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        String::from_utf8_lossy(self.payload.get(2..).unwrap_or_default()).into_owned()
    }

    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = header(
            self.fin,
            self.rsv,
            self.opcode,
            self.mask,
            self.payload.len() as u64,
        );
        match self.mask {
            Some(mask) => out.extend(apply_mask(&self.payload, mask)),
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

/// A frame header claiming `len` payload bytes (any value, even absurd ones).
pub fn header(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | ((rsv & 0b111) << 4) | (opcode & 0x0f)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
    out
}

fn apply_mask(data: &[u8], mask: [u8; 4]) -> Vec<u8> {
    data.iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect()
}

/// Decodes one frame from the front of `buf`.
///
/// `Ok(None)` means more bytes are needed; on success returns the frame and
/// how many bytes it used. Errors only for a length we refuse to buffer.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let rsv = (buf[0] >> 4) & 0b111;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut pos) = match buf[1] & 0x7f {
        126 if buf.len() < 4 => return Ok(None),
        126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() < 10 => return Ok(None),
        127 => {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(bytes), 10)
        }
        short => (u64::from(short), 2),
    };
    if len > MAX_DECODED_PAYLOAD {
        return Err(format!(
            "frame claims {len} payload bytes (first bytes {:02x?})",
            &buf[..buf.len().min(16)]
        ));
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&buf[pos..pos + 4]);
        pos += 4;
        Some(key)
    } else {
        None
    };
    let end = pos + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let payload = match mask {
        Some(key) => apply_mask(&buf[pos..end], key),
        None => buf[pos..end].to_vec(),
    };
    let frame = Frame {
        fin,
        rsv,
        opcode,
        mask,
        payload,
    };
    Ok(Some((frame, end)))
}

/// Panics unless `frame` is a Close frame that may legally appear on the wire:
/// no 1005/1006/1015 (RFC 6455 §7.4.1), no 1-byte payload, a UTF-8 reason.
pub fn assert_wire_close(frame: &Frame) {
    assert_eq!(frame.opcode, CLOSE, "expected a Close frame, got {frame:?}");
    assert_ne!(
        frame.payload.len(),
        1,
        "Close frame with a 1-byte payload on the wire"
    );
    if let Some(code) = frame.close_code() {
        assert!(
            !matches!(code, 1005 | 1006 | 1015) && (1000..5000).contains(&code),
            "Close code {code} must never appear on the wire"
        );
        assert!(
            std::str::from_utf8(&frame.payload[2..]).is_ok(),
            "Close reason is not UTF-8: {:02x?}",
            &frame.payload[2..]
        );
    }
}
