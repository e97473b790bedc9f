//! The fast path's parsing against hyper's, and against the guard's scan.

use super::read::{Parsed, may_be_get, parse, take};
use super::*;
use crate::proto::h1_scan::{Scanner, Stop};
use hyper::Version;
use proptest::prelude::*;

fn parsed(head: &str) -> Option<Request<()>> {
    let buf = BytesMut::from(head.as_bytes());
    match parse(&buf) {
        Parsed::Complete(lines) => match take(buf, &lines) {
            First::Upgrade(req, _, _) => Some(req),
            _ => None,
        },
        _ => None,
    }
}

const UPGRADE: &str = "GET /chat?x=1 HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

#[test]
fn an_upgrade_head_becomes_the_request_hyper_would_build() {
    let req = parsed(UPGRADE).expect("served here");
    assert_eq!(req.uri().path(), "/chat");
    assert_eq!(req.uri().query(), Some("x=1"));
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(req.headers()["host"], "a.test");
    assert_eq!(req.headers().len(), 5);
}

#[test]
fn heads_hyper_must_judge_are_not_served_here() {
    for head in [
        UPGRADE.replace("GET", "POST"),
        UPGRADE.replace("HTTP/1.1", "HTTP/1.0"),
        UPGRADE.replace("/chat?x=1", "http://a.test/chat"),
        UPGRADE.replace("websocket", "h2c"),
        UPGRADE.replace("Host:", "Content-Length: 0\r\nHost:"),
        UPGRADE.replace("Host:", "Transfer-Encoding: chunked\r\nHost:"),
        UPGRADE.replace("Host:", "Expect: 100-continue\r\nHost:"),
        UPGRADE.replace("\r\nHost", "\nHost"),
        UPGRADE.replace("Upgrade: websocket\r\n", ""),
    ] {
        assert!(parsed(&head).is_none(), "{head:?}");
    }
}

/// Bytes that make or break a head, with a few of the names the scan tells apart.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "\r",
        "\n",
        "\r\n",
        " ",
        "\t",
        ":",
        "a",
        "\0",
        "\r\n ",
        "\r\nX: y",
        "\r\nContent-Length: 1",
        "\r\nUpgrade: websocket",
        "\r\nTransfer-Encoding: x",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the fast path serves, the guard's scan would have let through as an
    /// upgrade at the connection's first head.
    #[test]
    fn what_is_served_here_the_scan_passes_as_an_upgrade(
        edits in prop::collection::vec((0usize..200, piece()), 1..4)
    ) {
        let mut head = UPGRADE.as_bytes().to_vec();
        for (at, piece) in edits {
            let at = at.min(head.len() - 4);
            head.splice(at..at, piece.bytes());
        }
        let buf = BytesMut::from(&head[..]);
        let Parsed::Complete(lines) = parse(&buf) else { return Ok(()) };
        let len = lines.len;
        if let First::Upgrade(..) = take(buf, &lines) {
            let mut scan = Scanner::new();
            prop_assert!(scan.feed(&head[..len]).is_ok());
            prop_assert_eq!(scan.stop(), Some((0, Stop::Upgrade)), "{:?}", String::from_utf8_lossy(&head));
        }
    }
}

#[test]
fn only_the_start_of_a_get_is_waited_for() {
    assert!(may_be_get(b""));
    assert!(may_be_get(b"\r\nGE"));
    assert!(may_be_get(b"GET /x"));
    assert!(!may_be_get(b"POST /"));
    assert!(!may_be_get(b"PRI * HTTP/2.0"));
}
