//! A minimal WebSocket codec, just enough for a load generator and an echo server.
//!
//! Nothing here validates the protocol beyond what is needed to find frame boundaries:
//! the peers under test are wsgate, nginx, HAProxy and our own echo backend, and the
//! point is to spend as little CPU per frame as possible on this side. Frames are
//! parsed as a stream ([`Parser`]): payload bytes are handed to a [`Sink`] as they
//! arrive and never buffered, so a 64 KiB frame costs the same as a 64 B one apart
//! from the copy the kernel makes.

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The `Sec-WebSocket-Key` every load-generator connection sends (the RFC 6455 example).
pub const CLIENT_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Opcodes used here (RFC 6455 §5.2).
pub mod opcode {
    /// Binary data frame.
    pub const BINARY: u8 = 0x2;
    /// Close control frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping control frame.
    pub const PING: u8 = 0x9;
    /// Pong control frame.
    pub const PONG: u8 = 0xA;
}

/// Largest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of mask.
pub const MAX_HEADER: usize = 14;

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The client's upgrade request; `extra` is more header lines, each ending in CRLF.
pub fn upgrade_request(host: &str, path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// Index just past the `\r\n\r\n` that ends an HTTP head, if it is complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Value of header `name` (ASCII case-insensitive) in an HTTP head.
pub fn header_value<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let head = std::str::from_utf8(head).ok()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Appends a frame header (FIN set) for `len` payload bytes, masked with `mask` if given.
pub fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    put_header_raw(out, 0x80 | opcode, len as u64, mask);
}

/// Appends a frame header whose first byte (FIN, RSV, opcode) is given as is.
pub fn put_header_raw(out: &mut Vec<u8>, first: u8, len: u64, mask: Option<[u8; 4]>) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    out.push(first);
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(key) = mask {
        out.extend_from_slice(&key);
    }
}

/// A whole client frame: header plus the payload masked with `key`.
pub fn client_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + MAX_HEADER);
    put_header(&mut out, opcode, payload.len(), Some(key));
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
    out
}

/// XORs `buf` with the mask `key`, `buf[0]` being payload byte number `offset`.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: u64) {
    let r = (offset % 4) as usize;
    let k = [key[r], key[(r + 1) % 4], key[(r + 2) % 4], key[(r + 3) % 4]];
    let wide = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("chunk of 8")) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    // chunks of 8 keep the key phase, so the tail starts at phase 0 of `k`.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i % 4];
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    /// First byte as sent: FIN, RSV bits and opcode.
    pub first: u8,
    /// Payload length.
    pub len: u64,
    /// Masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
}

impl Header {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.first & 0x0F
    }
}

/// Receives the pieces of frames as [`Parser::feed`] finds them.
pub trait Sink {
    /// A frame header is complete.
    fn header(&mut self, h: &Header);
    /// Raw (still masked) payload bytes; `offset` is the index of `data[0]` in the payload.
    fn payload(&mut self, h: &Header, data: &[u8], offset: u64);
    /// The frame is complete.
    fn end(&mut self, h: &Header);
}

/// Streaming frame parser: keeps at most one partial header (14 bytes), never payloads.
#[derive(Default)]
pub struct Parser {
    hdr: [u8; MAX_HEADER],
    have: usize,
    cur: Header,
    offset: u64,
    remaining: u64,
    in_payload: bool,
}

impl Parser {
    /// A parser at a frame boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `data`, calling `sink` for every header, payload piece and frame end.
    pub fn feed<S: Sink>(&mut self, mut data: &[u8], sink: &mut S) {
        while !data.is_empty() {
            if self.in_payload {
                let n = self.remaining.min(data.len() as u64) as usize;
                sink.payload(&self.cur, &data[..n], self.offset);
                self.offset += n as u64;
                self.remaining -= n as u64;
                data = &data[n..];
                if self.remaining == 0 {
                    self.in_payload = false;
                    sink.end(&self.cur);
                }
                continue;
            }
            let need = self.header_len();
            let take = (need - self.have).min(data.len());
            self.hdr[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            // The length fields may have just arrived and make the header longer.
            if self.have < self.header_len() {
                continue;
            }
            self.cur = self.decode();
            self.have = 0;
            self.offset = 0;
            self.remaining = self.cur.len;
            sink.header(&self.cur);
            if self.remaining == 0 {
                sink.end(&self.cur);
            } else {
                self.in_payload = true;
            }
        }
    }

    /// Header length as far as the bytes seen so far tell.
    fn header_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        let ext = match self.hdr[1] & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.hdr[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    fn decode(&self) -> Header {
        let h = &self.hdr;
        let (len, mut i) = match h[1] & 0x7F {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes(h[2..10].try_into().expect("8 bytes")),
                10,
            ),
            n => (u64::from(n), 2),
        };
        let mask = (h[1] & 0x80 != 0).then(|| {
            let k = [h[i], h[i + 1], h[i + 2], h[i + 3]];
            i += 4;
            k
        });
        debug_assert_eq!(i, self.header_len());
        Header {
            first: h[0],
            len,
            mask,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        frames: Vec<(u8, Vec<u8>)>,
        cur: Vec<u8>,
    }

    impl Sink for Collect {
        fn header(&mut self, _: &Header) {
            self.cur.clear();
        }
        fn payload(&mut self, h: &Header, data: &[u8], offset: u64) {
            let start = self.cur.len();
            self.cur.extend_from_slice(data);
            if let Some(k) = h.mask {
                apply_mask(&mut self.cur[start..], k, offset);
            }
        }
        fn end(&mut self, h: &Header) {
            self.frames
                .push((h.opcode(), std::mem::take(&mut self.cur)));
        }
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(accept_key(CLIENT_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn frames_survive_any_split() {
        let payloads: Vec<Vec<u8>> = [0usize, 1, 7, 125, 126, 65535, 65536, 70001]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 31 % 251) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            wire.extend(client_frame(opcode::BINARY, p, [1, 2, 3, (i as u8) | 0x40]));
        }
        for step in [1usize, 3, 13, 4096, wire.len()] {
            let (mut parser, mut sink) = (Parser::new(), Collect::default());
            for chunk in wire.chunks(step) {
                parser.feed(chunk, &mut sink);
            }
            let got: Vec<Vec<u8>> = sink.frames.into_iter().map(|f| f.1).collect();
            assert_eq!(got, payloads, "step {step}");
        }
    }

    #[test]
    fn mask_with_offset_equals_whole_mask() {
        let data: Vec<u8> = (0..100u8).collect();
        let key = [9, 8, 7, 6];
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        let mut parts = data.clone();
        let (a, b) = parts.split_at_mut(13);
        apply_mask(a, key, 0);
        apply_mask(b, key, 13);
        assert_eq!(whole, parts);
    }
}
