//! Unit tests of the backend hop's HTTP/1.1 client, against canned backend answers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncReadExt, ReadBuf};

use super::*;

mod body;

/// A backend connection that hands out its canned answer `step` bytes per read and
/// records what was written to it.
struct Canned {
    answer: Vec<u8>,
    pos: usize,
    step: usize,
    written: Vec<u8>,
    reads: usize,
}

impl Canned {
    fn new(answer: impl AsRef<[u8]>, step: usize) -> Self {
        Canned {
            answer: answer.as_ref().to_vec(),
            pos: 0,
            step,
            written: Vec::new(),
            reads: 0,
        }
    }
}

impl AsyncRead for Canned {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .step
            .min(buf.remaining())
            .min(self.answer.len() - self.pos);
        let pos = self.pos;
        buf.put_slice(&self.answer[pos..pos + n]);
        self.pos += n;
        self.reads += 1;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Canned {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn ok101(extra: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n"
    )
}

async fn answer(bytes: impl AsRef<[u8]>, step: usize) -> Result<Reply, BackendError> {
    exchange(&mut Canned::new(bytes, step), b"GET / HTTP/1.1\r\n\r\n").await
}

fn refused(a: Result<Reply, BackendError>) -> Response<Bytes> {
    match a {
        Ok(Reply::Refused(res)) => res,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn invalid_reason(a: Result<Reply, BackendError>) -> String {
    match a {
        Err(BackendError::Invalid(why)) => why,
        other => panic!("expected BackendInvalid, got {other:?}"),
    }
}

#[test]
fn request_is_serialised_in_order_and_bad_values_are_left_out() {
    let mut req = RequestHead::get("/chat?room=1", 0);
    req.header("host", b"example.com:8080");
    req.header("x-evil", b"a\r\nInjected: 1");
    req.header("sec-websocket-key", KEY.as_bytes());
    assert_eq!(
        String::from_utf8(req.finish()).unwrap(),
        format!(
            "GET /chat?room=1 HTTP/1.1\r\nhost: example.com:8080\r\nsec-websocket-key: {KEY}\r\n\r\n"
        )
    );
}

#[test]
fn unusable_targets_fall_back_to_slash() {
    for target in ["/a b", "/a\r\nX: y", "", "*", "relative"] {
        let line = RequestHead::get(target, 0).finish();
        assert!(
            line.starts_with(b"GET / HTTP/1.1\r\n"),
            "{target:?}: {:?}",
            String::from_utf8_lossy(&line)
        );
    }
    // A fragment never goes on the wire.
    assert!(
        RequestHead::get("/p?q#frag", 0)
            .finish()
            .starts_with(b"GET /p?q HTTP/1.1\r\n")
    );
}

#[tokio::test]
async fn request_goes_out_whole_in_one_write() {
    let mut io = Canned::new(ok101(""), usize::MAX);
    let request = b"GET /x HTTP/1.1\r\nhost: h\r\n\r\n";
    exchange(&mut io, request).await.unwrap();
    assert_eq!(io.written, request);
}

#[tokio::test]
async fn head_arriving_byte_by_byte_is_parsed() {
    let mut io = Canned::new(ok101("X-Backend: one\r\n"), 1);
    let a = exchange(&mut io, b"GET / HTTP/1.1\r\n\r\n").await;
    let Ok(Reply::Switching { head, leftover }) = a else {
        panic!("expected a 101, got {a:?}");
    };
    let one = |name| head.get_all(name).collect::<Vec<_>>();
    assert_eq!(one("x-backend"), [b"one"]);
    assert_eq!(one("sec-websocket-accept"), [ACCEPT.as_bytes()]);
    assert!(leftover.is_empty());
    // One byte per read, and not a read past the head.
    assert_eq!(io.reads, ok101("X-Backend: one\r\n").len());
}

#[tokio::test]
async fn bytes_after_the_101_are_kept_as_leftover() {
    let frame = [0x81, 0x02, b'h', b'i'];
    let head_len = ok101("").len();
    let mut wire = ok101("").into_bytes();
    wire.extend_from_slice(&frame);
    // Whole in one read: every frame byte is leftover.
    let Ok(Reply::Switching { leftover, .. }) = answer(&wire, usize::MAX).await else {
        panic!("expected a 101");
    };
    assert_eq!(&leftover[..], &frame);
    // In 5-byte reads the last one straddles the head's end: its tail is leftover too.
    let read = head_len.div_ceil(5) * 5;
    assert!(
        read > head_len && read < wire.len(),
        "test needs a straddling read"
    );
    let Ok(Reply::Switching { leftover, .. }) = answer(&wire, 5).await else {
        panic!("expected a 101");
    };
    assert_eq!(&leftover[..], &wire[head_len..read]);
}

#[tokio::test]
async fn interim_heads_are_skipped() {
    let wire = format!(
        "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n{}",
        ok101("")
    );
    for step in [usize::MAX, 1] {
        let Ok(Reply::Switching { head, .. }) = answer(&wire, step).await else {
            panic!("expected the 101 after the 103");
        };
        assert!(head.get_all("link").next().is_none());
        assert_eq!(head.get_all("upgrade").count(), 1);
    }
}

#[tokio::test]
async fn oversize_head_is_invalid() {
    let big = format!("X-Big: {}\r\n", "a".repeat(HEAD_MAX));
    let why = invalid_reason(answer(ok101(&big), usize::MAX).await);
    assert!(why.contains("over 16 KiB"), "{why}");
    // Just under the cap is fine.
    let fits = format!(
        "X-Big: {}\r\n",
        "a".repeat(HEAD_MAX - ok101("X-Big: \r\n").len())
    );
    assert!(matches!(
        answer(ok101(&fits), 100).await,
        Ok(Reply::Switching { .. })
    ));
}

#[tokio::test]
async fn too_many_headers_is_invalid() {
    let many: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    let why = invalid_reason(answer(ok101(&many), usize::MAX).await);
    assert!(why.contains("more than 64 headers"), "{why}");
}

#[tokio::test]
async fn bad_status_lines_are_invalid() {
    for wire in [
        "HTTP/1.1 abc Nope\r\n\r\n",
        "HTTP/2 101 Switching Protocols\r\n\r\n",
        "SSH-2.0-OpenSSH_9.6\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1 600 Beyond\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 999 Beyond\r\n\r\n",
        "HTTP/1.1 101 OK\r\nBad Header: x\r\n\r\n",
    ] {
        let why = invalid_reason(answer(wire, usize::MAX).await);
        assert!(
            why.starts_with("malformed answer head") || why.contains("status code"),
            "{wire:?}: {why}"
        );
    }
}

#[tokio::test]
async fn closed_mid_head_is_an_io_failure_not_an_invalid_answer() {
    // Regression: a backend whose connection ended during the upgrade was counted as
    // `backend_invalid`, as if it had answered something that is not HTTP.
    for wire in ["HTTP/1.1 101 Switching", ""] {
        match answer(wire, 3).await {
            Err(e @ BackendError::Io { .. }) => {
                assert_eq!(e.reason(), "backend_io");
                assert!(e.retryable());
            }
            other => panic!("expected an I/O failure, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_failed_read_is_an_io_failure() {
    struct Broken;
    impl AsyncRead for Broken {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
        }
    }
    impl AsyncWrite for Broken {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    let r = exchange(&mut Broken, b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(
        matches!(&r, Err(BackendError::Io { source, .. }) if source.kind() == io::ErrorKind::ConnectionReset),
        "{r:?}"
    );
}

async fn handshake_with(answer: String, offered: &[&str]) -> Result<Answer, BackendError> {
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        theirs.write_all(answer.as_bytes()).await.unwrap();
        // Keep the pipe open until the client is done with it.
        let mut sink = Vec::new();
        let _ = theirs.read_to_end(&mut sink).await;
    });
    let offered: Vec<String> = offered.iter().map(|s| s.to_string()).collect();
    handshake(
        Stream::Memory(ours),
        b"GET / HTTP/1.1\r\n\r\n",
        KEY,
        &offered,
    )
    .await
}

fn handshake_error(r: Result<Answer, BackendError>) -> String {
    match r {
        Err(BackendError::Invalid(why)) => why,
        Err(e) => panic!("expected BackendInvalid, got {e}"),
        Ok(_) => panic!("expected BackendInvalid, got an answer"),
    }
}

#[tokio::test]
async fn correct_101_upgrades_and_keeps_only_forwardable_headers() {
    let r = handshake_with(
        ok101("Sec-WebSocket-Protocol: b\r\nX-Id: 7\r\n"),
        &["a", "b"],
    )
    .await;
    let Ok(Answer::Upgraded { headers, .. }) = r else {
        panic!("expected an upgrade");
    };
    assert_eq!(headers["sec-websocket-protocol"], "b");
    assert_eq!(headers["x-id"], "7");
    assert!(headers.get("sec-websocket-accept").is_none());
    assert!(headers.get("upgrade").is_none());
    // A field the 101's own `Connection` names is for this hop only, in any case; names
    // come out lowercase, values as sent.
    let wire = ok101("X-Hop: 1\r\nX-KEPT: Two Words\r\n")
        .replace("Connection: Upgrade", "Connection: Upgrade, x-HOP");
    let Ok(Answer::Upgraded { headers, .. }) = handshake_with(wire, &[]).await else {
        panic!("expected an upgrade");
    };
    assert!(headers.get("x-hop").is_none(), "{headers:?}");
    assert_eq!(headers["x-kept"], "Two Words");
    assert_eq!(headers.len(), 1, "{headers:?}");
}

#[tokio::test]
async fn missing_or_wrong_accept_is_invalid() {
    let missing =
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let why = handshake_error(handshake_with(missing.into(), &[]).await);
    assert_eq!(why, "wrong Sec-WebSocket-Accept");
    let wrong = missing.replace("\r\n\r\n", "\r\nSec-WebSocket-Accept: AAAA\r\n\r\n");
    let why = handshake_error(handshake_with(wrong, &[]).await);
    assert_eq!(why, "wrong Sec-WebSocket-Accept");
}

#[tokio::test]
async fn other_101_violations_are_invalid() {
    let cases = [
        (
            ok101("").replace("Upgrade: websocket", "Upgrade: h2c"),
            &[][..],
            "Upgrade",
        ),
        (
            ok101("").replace("Connection: Upgrade", "Connection: close"),
            &[],
            "Connection",
        ),
        (
            ok101("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            &[],
            "extension",
        ),
        (
            ok101("Sec-WebSocket-Protocol: chat\r\n"),
            &[],
            "subprotocol",
        ),
        (
            ok101("Sec-WebSocket-Protocol: a, b\r\n"),
            &["a", "b"],
            "subprotocol",
        ),
    ];
    for (wire, offered, expect) in cases {
        let why = handshake_error(handshake_with(wire.clone(), offered).await);
        assert!(why.contains(expect), "{wire:?}: {why}");
    }
}

#[tokio::test]
async fn a_second_accept_is_invalid_whichever_comes_first() {
    for extra in [
        "Sec-WebSocket-Accept: AAAA\r\n".to_string(),
        format!("Sec-WebSocket-Accept: {ACCEPT}\r\n"),
    ] {
        let why = handshake_error(handshake_with(ok101(&extra), &[]).await);
        assert!(why.contains("Sec-WebSocket-Accept"), "{extra:?}: {why}");
    }
    let wrong_first = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: AAAA\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\r\n"
    );
    let why = handshake_error(handshake_with(wrong_first, &[]).await);
    assert!(why.contains("Sec-WebSocket-Accept"), "{why}");
}

#[tokio::test]
async fn subprotocols_that_are_empty_or_not_tokens_are_invalid() {
    let none: &[&str] = &[];
    let cases: [(&[u8], &[&str]); 7] = [
        (b"Sec-WebSocket-Protocol: \r\n", none),
        (b"Sec-WebSocket-Protocol: \r\n", &["a"]),
        (b"Sec-WebSocket-Protocol: \xc3\xa9\r\n", none),
        (b"Sec-WebSocket-Protocol: \xff\r\n", &["a"]),
        (b"Sec-WebSocket-Protocol: ,\r\n", none),
        (
            b"Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: a\r\n",
            &["a"],
        ),
        (b"Sec-WebSocket-Protocol: \"a\"\r\n", &["\"a\""]),
    ];
    for (extra, offered) in cases {
        let mut wire = ok101("").into_bytes();
        wire.truncate(wire.len() - 2);
        wire.extend_from_slice(extra);
        wire.extend_from_slice(b"\r\n");
        // Non-UTF-8 bytes cannot go through `handshake_with`'s String.
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            theirs.write_all(&wire).await.unwrap();
            let mut sink = Vec::new();
            let _ = theirs.read_to_end(&mut sink).await;
        });
        let offered: Vec<String> = offered.iter().map(|s| s.to_string()).collect();
        let r = handshake(
            Stream::Memory(ours),
            b"GET / HTTP/1.1\r\n\r\n",
            KEY,
            &offered,
        )
        .await;
        let why = handshake_error(r);
        assert!(
            why.contains("subprotocol"),
            "{:?}: {why}",
            String::from_utf8_lossy(extra)
        );
    }
}
