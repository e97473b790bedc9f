//! Hand-made HTTP/2 frames over TLS, for what no well-behaved client library sends:
//! floods of HEADERS + RST_STREAM, header blocks that never end. Frames are written by
//! hand because the h2 crate (rightly) refuses to produce them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use super::ca::TestCa;
use super::h2client::tls;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types.
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
/// Error codes.
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK literal field without indexing, with a literal name (RFC 7541 §6.2.2).
pub fn literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    integer(&mut out, name.len(), 0);
    out.extend_from_slice(name.as_bytes());
    integer(&mut out, value.len(), 0);
    out.extend_from_slice(value);
    out
}

/// An HPACK integer with a 7-bit prefix, the first byte's top bit `high` (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, mut n: usize, high: u8) {
    if n < 127 {
        out.push(high | n as u8);
        return;
    }
    out.push(high | 127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// The header block of an extended CONNECT for `path` (RFC 8441) to `localhost`.
pub fn connect_block(path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    block.extend(literal(":method", b"CONNECT"));
    block.push(0x87); // :scheme https (static table 7)
    block.extend(literal(":path", path.as_bytes()));
    block.extend(literal(":authority", b"localhost"));
    block.extend(literal(":protocol", b"websocket"));
    block.extend(literal("sec-websocket-version", b"13"));
    block
}

/// What the server did on a raw connection, seen by its reader.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// The error code of the first GOAWAY, if one came.
    pub goaway: Option<u32>,
    /// Frames received.
    pub frames: usize,
    /// The parameters of the server's first SETTINGS frame (identifier, value).
    pub settings: Vec<(u16, u32)>,
    /// The increment of the first connection-level WINDOW_UPDATE.
    pub connection_window_increment: Option<u32>,
    /// PING frames the server sent before any GOAWAY (not ACKs).
    pub pings: usize,
    /// RST_STREAM frames the server sent: (stream, error code).
    pub resets: Vec<(u32, u32)>,
    /// HEADERS frames the server sent: (stream, the start of the header block; its
    /// first byte is the `:status` when that is in HPACK's static table, 0x88 for 200).
    pub headers: Vec<(u32, Vec<u8>)>,
    /// The server closed the connection (EOF or an error).
    pub closed: bool,
}

/// A raw HTTP/2 connection: the preface and an empty SETTINGS sent, a reader task
/// recording what the server sends.
pub struct RawH2 {
    pub writer: WriteHalf<TlsStream<TcpStream>>,
    /// Set by the reader once the server sent GOAWAY or closed.
    pub hung_up: Arc<AtomicBool>,
    reader: JoinHandle<Seen>,
}

impl RawH2 {
    /// TLS with ALPN `h2`, then the preface and SETTINGS.
    pub async fn connect(addr: SocketAddr, ca: &TestCa) -> RawH2 {
        let (io, chosen) = tls(addr, ca, &[b"h2"]).await;
        assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
        let (read, mut writer) = tokio::io::split(io);
        writer.write_all(PREFACE).await.expect("preface");
        writer
            .write_all(&frame(SETTINGS, 0, 0, &[]))
            .await
            .expect("settings");
        let hung_up = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_frames(read, hung_up.clone()));
        RawH2 {
            writer,
            hung_up,
            reader,
        }
    }

    /// Writes `bytes`; false once the connection is gone (or the server hung up).
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        !self.hung_up.load(Ordering::SeqCst) && self.writer.write_all(bytes).await.is_ok()
    }

    /// What the server sent until it closed the connection (within patience).
    pub async fn seen(self) -> Seen {
        drop(self.writer);
        super::within("the server closes the connection", self.reader)
            .await
            .expect("reader task")
    }

    /// Like [`RawH2::seen`], waiting up to `limit` (for closes that take longer than
    /// the patience by design).
    pub async fn seen_within(self, limit: std::time::Duration) -> Seen {
        drop(self.writer);
        match tokio::time::timeout(limit, self.reader).await {
            Ok(seen) => seen.expect("reader task"),
            Err(_) => panic!("the server did not close the connection within {limit:?}"),
        }
    }
}

async fn read_frames(mut read: ReadHalf<TlsStream<TcpStream>>, hung_up: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    // Bounded: a server that never closes is caught by `seen`'s patience.
    for _ in 0..1_000_000 {
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let kind = buf[3];
            if kind == GOAWAY && len >= 8 && seen.goaway.is_none() {
                let code = &buf[9 + 4..9 + 8];
                seen.goaway = Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
                hung_up.store(true, Ordering::SeqCst);
            }
            let (flags, stream) = (buf[4], u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]));
            let payload = &buf[9..9 + len];
            match kind {
                SETTINGS if flags & 1 == 0 && seen.settings.is_empty() => {
                    seen.settings = payload
                        .chunks_exact(6)
                        .map(|p| {
                            let id = u16::from_be_bytes([p[0], p[1]]);
                            (id, u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
                        })
                        .collect();
                }
                WINDOW_UPDATE if stream == 0 && len == 4 => {
                    let inc = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    seen.connection_window_increment.get_or_insert(inc);
                }
                PING if flags & 1 == 0 && seen.goaway.is_none() => seen.pings += 1,
                HEADERS => seen
                    .headers
                    .push((stream, payload.iter().take(16).copied().collect())),
                RST_STREAM if len == 4 => {
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    seen.resets.push((stream, code));
                }
                _ => {}
            }
            seen.frames += 1;
            buf.drain(..9 + len);
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    seen.closed = true;
    hung_up.store(true, Ordering::SeqCst);
    seen
}
