//! Refusal bodies: how they are delimited and bounded.

use super::*;

#[tokio::test]
async fn content_length_refusal_body_is_read_exactly() {
    let wire = "HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\nX-Why: no\r\n\r\ngo awayTRAILING";
    for step in [usize::MAX, 1] {
        let res = refused(answer(wire, step).await);
        assert_eq!(res.status(), 403);
        assert_eq!(res.headers()["x-why"], "no");
        assert_eq!(&res.body()[..], b"go away", "step {step}");
    }
    let short = "HTTP/1.1 403 Forbidden\r\nContent-Length: 70\r\n\r\ngo away";
    let why = invalid_reason(answer(short, usize::MAX).await);
    assert!(why.contains("shorter"), "{why}");
}

#[tokio::test]
async fn bad_or_conflicting_content_length_is_invalid() {
    for cl in [
        "Content-Length: +5",
        "Content-Length: 5, 6",
        "Content-Length: x",
    ] {
        let wire = format!("HTTP/1.1 403 Forbidden\r\n{cl}\r\n\r\nhello");
        let why = invalid_reason(answer(wire, usize::MAX).await);
        assert!(why.contains("Content-Length"), "{cl}: {why}");
    }
    let same = "HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(
        &refused(answer(same, usize::MAX).await).body()[..],
        b"hello"
    );
}

#[tokio::test]
async fn chunked_refusal_body_is_decoded() {
    let wire = "HTTP/1.1 503 Unavailable\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
                5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    for step in [usize::MAX, 1, 4] {
        let res = refused(answer(wire, step).await);
        assert_eq!(res.status(), 503);
        assert_eq!(&res.body()[..], b"hello world", "step {step}");
    }
}

#[tokio::test]
async fn broken_chunking_is_invalid() {
    for chunks in [
        "5\r\nhelloXX0\r\n\r\n",
        "zz\r\nhello\r\n",
        "\r\n",
        "5\r\nhel",
    ] {
        let wire = format!("HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}");
        let why = invalid_reason(answer(wire, usize::MAX).await);
        assert!(why.contains("chunk"), "{chunks:?}: {why}");
    }
}

#[tokio::test]
async fn refusal_bodies_over_the_bound_are_dropped_not_fatal() {
    let big = "a".repeat(BODY_MAX + 1);
    let sized = format!(
        "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    let chunked = format!(
        "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let to_eof = format!("HTTP/1.1 404 Not Found\r\n\r\n{big}");
    for wire in [sized, chunked, to_eof] {
        let res = refused(answer(&wire, 1000).await);
        assert_eq!(res.status(), 404);
        assert!(res.body().is_empty());
    }
    // Exactly at the bound is relayed.
    let edge = "b".repeat(BODY_MAX);
    let res = refused(answer(format!("HTTP/1.1 404 Not Found\r\n\r\n{edge}"), 1000).await);
    assert_eq!(res.body().len(), BODY_MAX);
}

#[tokio::test]
async fn body_without_length_runs_to_close_and_204_has_none() {
    let res = refused(answer("HTTP/1.1 400 Bad\r\n\r\nuntil close", 2).await);
    assert_eq!(&res.body()[..], b"until close");
    let res = refused(answer("HTTP/1.1 204 No Content\r\n\r\nstray", usize::MAX).await);
    assert!(res.body().is_empty());
}
