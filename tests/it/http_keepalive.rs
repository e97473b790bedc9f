//! Plain HTTP/1.1 keep-alive forwarding as seen on the wire: the common request shape
//! (`GET`/`HEAD`, origin form, no body) on one client connection, against raw scripted
//! backends answering with exact bytes. They hold the hand-written path
//! (`ingress::h1_plain`, `backend::http::raw`) to what hyper on both hops does with the
//! same requests: framing of each response shape, what is dropped or rewritten on the way (1xx, trailers,
//! hop-by-hop headers, header case, reason phrase, `Date`), pipelining, and when the
//! client connection is closed.
//!
//! This module holds pipelining and the framing of each response shape; `headers` what
//! is rewritten or dropped in the heads on either hop; `lifecycle` the client
//! connection's life (close, HTTP/1.0, idle timeout, a client gone, a cut body, TLS);
//! `wire` the harness.

mod headers;
mod lifecycle;
mod wire;

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::http::read_head;
use crate::support::within;

use wire::*;

#[tokio::test]
async fn three_pipelined_gets_are_answered_in_order_then_a_fourth_later() {
    let backend = echo_target().await;
    let (proxy, mut c) = proxy_and_client(&backend, "").await;
    c.send(&(get("/app/1", "") + &get("/app/2", "") + &get("/app/3", "")))
        .await;
    for n in 1..=3 {
        let a = c.answer(false).await;
        assert_eq!(a.status(), 200, "{a:?}");
        assert_eq!(a.framing, Framing::Length(2));
        assert_eq!(a.text(), format!("/{n}"));
    }
    ok_on(&mut c, "/app/4", "/4").await;
    assert_eq!(backend.targets(), ["/1", "/2", "/3", "/4"]);
    proxy.assert_drained().await;
}

/// Pipelined requests are served one at a time: the second reaches the backend only
/// once the first is answered, and the answers keep the requests' order.
#[tokio::test]
async fn a_pipelined_request_waits_for_the_slow_answer_before_it() {
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<String>(4);
    let (go_tx, mut go_rx) = tokio::sync::mpsc::channel::<()>(1);
    let backend_url = held_backend(|mut tcp| async move {
        let mut buf = Vec::new();
        for _ in 0..2 {
            let Some(head) = read_head(&mut tcp, &mut buf).await else {
                return;
            };
            let target = head.target().to_string();
            let _ = seen_tx.send(target.clone()).await;
            if target == "/slow" && go_rx.recv().await.is_none() {
                return;
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{target}",
                target.len()
            );
            if tcp.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
        hold_open(&mut tcp).await;
    })
    .await;
    let proxy = proxy_at(&backend_url, "").await;
    let mut c = Client::open(proxy.addr()).await;
    c.send(&(get("/app/slow", "") + &get("/app/fast", "")))
        .await;
    assert_eq!(
        within("the first request", seen_rx.recv()).await.unwrap(),
        "/slow"
    );
    // Held: the second request must not be at the backend yet (nor answered).
    let early = tokio::time::timeout(Duration::from_millis(300), seen_rx.recv()).await;
    assert!(
        early.is_err(),
        "the second request went on early: {early:?}"
    );
    go_tx.send(()).await.unwrap();
    assert_eq!(c.answer(false).await.text(), "/slow");
    assert_eq!(
        within("the second request", seen_rx.recv()).await.unwrap(),
        "/fast"
    );
    assert_eq!(c.answer(false).await.text(), "/fast");
}

const CHUNKED: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
                       5;ext=\"a b\"\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Sum: 12\r\n\r\n";

/// The chunks are re-framed by wsgate (the extension is gone) and the trailer
/// section is dropped, with or without `TE: trailers` from the client (the `Trailer`
/// header is hop-by-hop and stripped, and wsgate writes no trailers, as hyper's server writes only declared ones).
#[tokio::test]
async fn a_chunked_response_with_extension_and_trailer_is_rechunked_without_the_trailer() {
    let backend = Scripted::always(CHUNKED).await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    for te in ["", "TE: trailers\r\n"] {
        c.get("/app", te).await;
        let a = c.answer(false).await;
        assert_eq!(a.status(), 200, "{a:?}");
        assert_eq!(a.framing, Framing::Chunked, "{a:?}");
        assert_eq!(a.text(), "hello world!");
        let raw = String::from_utf8_lossy(&a.raw_chunked).into_owned();
        assert!(
            !raw.contains("ext="),
            "the chunk extension reached the client: {raw:?}"
        );
        assert!(
            a.trailers.is_empty(),
            "TE {te:?}: trailers {:?}",
            a.trailers
        );
        assert_eq!(a.head.header("trailer"), None, "{a:?}");
    }
    ok_on(&mut c, "/app", "hello world!").await;
    // Not pinned: each of these may take a new backend connection (a body ending in
    // trailers is not seen to end, so its connection is not given back to the pool).
    assert_eq!(backend.targets(), ["/", "/", "/"]);
}

/// A backend body ended by its close reaches an HTTP/1.1 client chunked, whole, and the
/// client connection stays open for the next request (served on a new backend connection).
#[tokio::test]
async fn a_close_delimited_response_reaches_the_client_chunked_and_the_connection_is_kept() {
    let backend = Scripted::start(|_| {
        Reply::then_close("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
    })
    .await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    for _ in 0..2 {
        c.get("/app", "").await;
        let a = c.answer(false).await;
        assert_eq!(a.status(), 200, "{a:?}");
        assert_eq!(a.framing, Framing::Chunked, "{a:?}");
        assert_eq!(a.text(), "until the end");
        assert_ne!(a.head.header("connection"), Some("close"), "{a:?}");
    }
    assert_eq!(backend.accepted(), 2);
}

/// `Content-Length` with `Transfer-Encoding: chunked` from a backend: read chunked
/// (RFC 9112 §6.3: TE wins), the length dropped, and the client gets the decoded body
/// re-chunked; the bytes past what the length claimed never show up as a response of
/// their own.
#[tokio::test]
async fn a_response_with_length_and_chunked_is_read_chunked_and_nothing_is_smuggled() {
    let fake = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled";
    let body = format!("{:x}\r\n{fake}\r\n0\r\n\r\n", fake.len());
    let reply =
        format!("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
    let backend = Scripted::start(move |head| {
        if head.target() == "/next" {
            Reply::keep(NEXT)
        } else {
            Reply::keep(reply.clone())
        }
    })
    .await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    c.get("/app", "").await;
    let a = c.answer(false).await;
    assert_eq!(a.status(), 200, "{a:?}");
    assert_eq!(a.framing, Framing::Chunked, "{a:?}");
    assert_eq!(a.text(), fake);
    assert_eq!(a.head.header("content-length"), None, "{a:?}");
    ok_on(&mut c, "/app/next", "next").await;
    // A backend that sends both framings is not trusted with another request on that
    // connection (the two framings read its next bytes differently): `/next` goes on a
    // new one.
    assert_eq!(backend.accepted(), 2);
}

/// A length-framed body dribbled by the backend reaches the client piece by piece: each
/// piece is read by the client before the backend writes the next.
#[tokio::test]
async fn a_dribbled_length_body_is_flushed_piece_by_piece() {
    let (next_tx, mut next_rx) = tokio::sync::mpsc::channel::<()>(1);
    let backend_url = held_backend(|mut tcp| async move {
        let mut buf = Vec::new();
        if read_head(&mut tcp, &mut buf).await.is_none() {
            return;
        }
        let _ = tcp
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n")
            .await;
        for piece in ["piece1|", "piece2|", "3"] {
            // The test says when: only once it has read the previous piece.
            if next_rx.recv().await.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = tcp.write_all(piece.as_bytes()).await;
        }
        hold_open(&mut tcp).await;
    })
    .await;
    let proxy = proxy_at(&backend_url, "").await;
    let mut c = Client::open(proxy.addr()).await;
    c.get("/app", "").await;
    let head = within("the head", read_head(&mut c.io, &mut c.buf))
        .await
        .expect("a head");
    assert_eq!(head.status(), 200, "{head:?}");
    assert_eq!(head.header("content-length"), Some("15"), "{head:?}");
    let mut got = String::new();
    for want in ["piece1|", "piece1|piece2|", "piece1|piece2|3"] {
        next_tx.send(()).await.unwrap();
        within("the next piece", async {
            while c.buf.len() < want.len() {
                assert!(c.fill().await, "EOF mid-body");
            }
        })
        .await;
        got = String::from_utf8_lossy(&c.buf).into_owned();
        assert_eq!(got, want);
    }
    assert_eq!(got.len(), 15);
}

/// HEAD answered as a chunked GET would be: the client gets neither a length (none is
/// known, and 0 would be false) nor a coding (a HEAD answer is never chunked), as hyper's
/// server writes it, and the next request is answered.
#[tokio::test]
async fn a_head_answer_that_says_chunked_gets_no_length_and_no_coding() {
    let backend =
        Scripted::head_or_next("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    c.send("HEAD /app HTTP/1.1\r\nHost: wsgate.test\r\n\r\n")
        .await;
    let a = c.answer(true).await;
    assert_eq!(a.status(), 200);
    assert_eq!(a.head.header("content-length"), None, "{a:?}");
    assert_eq!(a.head.header("transfer-encoding"), None, "{a:?}");
    ok_on(&mut c, "/app", "next").await;
}

/// HEAD: the backend's length is passed through and no body follows; the next response
/// starts right after the head.
#[tokio::test]
async fn head_keeps_the_backends_content_length_and_no_body_follows() {
    let backend = Scripted::head_or_next("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n").await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    c.send("HEAD /app HTTP/1.1\r\nHost: wsgate.test\r\n\r\n")
        .await;
    let a = c.answer(true).await;
    assert_eq!(a.status(), 200);
    assert_eq!(a.head.header("content-length"), Some("1234"), "{a:?}");
    assert_eq!(a.head.header("transfer-encoding"), None, "{a:?}");
    c.get("/app", "").await;
    within("the next head", async {
        while c.buf.len() < 9 {
            assert!(c.fill().await);
        }
    })
    .await;
    assert!(c.buf.starts_with(b"HTTP/1.1 "), "{:?}", c.buf);
    let a = c.answer(false).await;
    assert_eq!(a.text(), "next");
}

/// A 204 with a `Content-Length` (304 is covered in http_forward): no body and no length
/// reach the client, and the next request on the connection is answered.
#[tokio::test]
async fn a_204_with_a_content_length_carries_no_body_and_the_connection_goes_on() {
    let backend = Scripted::start(|head| {
        if head.target() == "/empty" {
            Reply::keep("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
        } else {
            Reply::keep(NEXT)
        }
    })
    .await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    c.get("/app/empty", "").await;
    let a = c.answer(false).await;
    assert_eq!(a.status(), 204, "{a:?}");
    assert_eq!(a.head.header("content-length"), None, "{a:?}");
    assert_eq!(a.head.header("transfer-encoding"), None, "{a:?}");
    ok_on(&mut c, "/app/next", "next").await;
    assert_eq!(backend.accepted(), 1);
}

/// A backend that writes a body where none belongs (after a 204, or to a HEAD), shaped as a
/// response: with the next request pipelined behind, the extra bytes are never read as
/// its response, on either connection.
#[tokio::test]
async fn a_body_after_a_204_or_to_a_head_never_reaches_the_next_response() {
    for (method, first) in [
        (
            "GET",
            "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
        ),
        (
            "HEAD",
            "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
        ),
    ] {
        let backend = Scripted::start(move |head| {
            if head.target() == "/next" {
                Reply::keep(NEXT)
            } else {
                Reply::keep(first)
            }
        })
        .await;
        let (_proxy, mut c) = proxy_and_client(&backend, "").await;
        for _ in 0..5 {
            c.send(
                &(format!("{method} /app HTTP/1.1\r\nHost: wsgate.test\r\n\r\n")
                    + &get("/app/next", "")),
            )
            .await;
            let a = c.answer(method == "HEAD").await;
            assert_eq!(
                a.status(),
                if method == "HEAD" { 200 } else { 204 },
                "{a:?}"
            );
            let b = c.answer(false).await;
            assert_eq!(
                (b.status(), b.text().as_str()),
                (200, "next"),
                "{method}: {b:?}"
            );
        }
        // The extra bytes end that backend connection (they follow no request), and each
        // round's `/next` needs a fresh one.
        assert!(backend.accepted() > 5, "{method}: {}", backend.accepted());
    }
}
