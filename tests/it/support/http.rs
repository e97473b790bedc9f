//! Just enough HTTP/1.1 to write upgrade requests by hand and read what comes back.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

/// The `Sec-WebSocket-Key` the raw clients send (the sample nonce of RFC 6455 §1.3).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Largest request or response head we read; wsgate's own limit is far below.
const MAX_HEAD: usize = 256 * 1024;

/// A request or response head: its start line and headers, plus any body read.
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// `GET /path HTTP/1.1` or `HTTP/1.1 101 Switching Protocols`.
    pub start_line: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Head {
    /// The status code of a response head.
    pub fn status(&self) -> u16 {
        self.start_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {:?}", self.start_line))
    }

    /// The request target of a request head.
    pub fn target(&self) -> &str {
        self.start_line.split(' ').nth(1).unwrap_or_default()
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, by case-insensitive name.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses a head (everything before the blank line).
pub fn parse_head(text: &str) -> Head {
    let mut lines = text.split("\r\n");
    let start_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap_or((l, ""));
            (name.trim().to_string(), value.trim().to_string())
        })
        .collect();
    Head {
        start_line,
        headers,
        body: Vec::new(),
    }
}

/// Reads a head from `io`. Bytes read past the blank line stay in `buf`.
/// Returns `None` if the peer closed before a complete head.
pub async fn read_head<S: AsyncRead + Unpin>(io: &mut S, buf: &mut Vec<u8>) -> Option<Head> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse_head(&String::from_utf8_lossy(&buf[..end]));
            buf.drain(..end + 4);
            return Some(head);
        }
        assert!(
            buf.len() < MAX_HEAD,
            "HTTP head larger than {MAX_HEAD} bytes"
        );
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads a response body: `Content-Length` bytes, or until EOF when absent.
pub async fn read_body<S: AsyncRead + Unpin>(io: &mut S, head: &mut Head, mut buf: Vec<u8>) {
    let limit = head
        .header("content-length")
        .map(|v| v.parse::<usize>().expect("numeric Content-Length"));
    let mut chunk = [0u8; 4096];
    while limit.is_none_or(|l| buf.len() < l) && buf.len() < MAX_HEAD {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    head.body = buf;
}

/// An upgrade request for `path`, with `extra` header lines appended.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Writes `request` to `addr` and returns the response with its body.
///
/// The request is written from a separate task so that a server that answers
/// early (431) and stops reading does not block us; write errors are ignored.
pub async fn exchange(addr: SocketAddr, request: impl Into<Vec<u8>>) -> Head {
    let request = request.into();
    within("raw HTTP exchange", async move {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let (mut rd, mut wr) = stream.into_split();
        let writer = tokio::spawn(async move {
            for chunk in request.chunks(16 * 1024) {
                if wr.write_all(chunk).await.is_err() {
                    return wr;
                }
            }
            let _ = wr.flush().await;
            wr
        });
        let mut buf = Vec::new();
        let mut head = read_head(&mut rd, &mut buf)
            .await
            .expect("connection closed without an HTTP response");
        if head.status() != 101 {
            read_body(&mut rd, &mut head, buf).await;
        }
        drop(writer.await);
        head
    })
    .await
}

/// Writes a 101 answer to an upgrade with key `key` (plus `extra` header lines).
pub async fn write_101<S: AsyncWrite + Unpin>(io: &mut S, accept: &str, extra: &[(&str, &str)]) {
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n"
    );
    for (name, value) in extra {
        resp.push_str(&format!("{name}: {value}\r\n"));
    }
    resp.push_str("\r\n");
    let _ = io.write_all(resp.as_bytes()).await;
}

/// The `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    use sha1::{Digest as _, Sha1};
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}
