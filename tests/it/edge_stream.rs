//! Large frames stream through in pieces instead of being buffered whole: the other
//! hop sees a frame's header and first bytes before its end has arrived, masking
//! continues across pieces, a violation found inside a frame cuts the hop that
//! already has part of it, and a frame that does not finish in time is closed 1008.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};

use crate::support::backend::{Backend, RawBackend, RawConn};
use crate::support::frame::{self, BINARY, Frame, TEXT};
use crate::support::proxy::{Proxy, route};
use crate::support::{patience, raw, within};
use wsgate::Outcome;

/// A payload whose bytes differ at every position mod 4, so a masking key applied at
/// the wrong offset shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// A backend that accepts and hands every byte it reads to the test; `None` at EOF.
async fn sink() -> (RawBackend, mpsc::UnboundedReceiver<Option<Vec<u8>>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backend = RawBackend::start(move |mut conn: RawConn| {
        let tx = tx.clone();
        async move {
            conn.accept(&[]).await;
            let mut buf = vec![0u8; 64 * 1024];
            for _ in 0..100_000 {
                match conn.io.io().read(&mut buf).await {
                    Ok(n) if n > 0 => {
                        let _ = tx.send(Some(buf[..n].to_vec()));
                    }
                    _ => break,
                }
            }
            let _ = tx.send(None);
        }
    })
    .await;
    (backend, rx)
}

/// Collects what the sink received until `got` holds at least `n` bytes; false at EOF.
async fn gather(
    rx: &mut mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    got: &mut Vec<u8>,
    n: usize,
) -> bool {
    while got.len() < n {
        match within("backend bytes", rx.recv()).await.flatten() {
            Some(bytes) => got.extend(bytes),
            None => return false,
        }
    }
    true
}

/// Header of a masked frame as wsgate sends it to a backend: 64-bit length, its key.
fn parse_masked_head(got: &[u8]) -> (u8, u64, [u8; 4]) {
    assert_eq!(
        got[1],
        0x80 | 127,
        "64-bit length, masked: {:02x?}",
        &got[..14]
    );
    let len = u64::from_be_bytes(got[2..10].try_into().unwrap());
    (got[0], len, got[10..14].try_into().unwrap())
}

/// A 1 MiB frame of which only 200 KiB arrived reaches the backend in part; once the
/// rest arrives the backend has exactly the client's payload (re-masked by position).
#[tokio::test]
async fn a_large_client_frame_reaches_the_backend_before_it_is_complete() {
    let (backend, mut rx) = sink().await;
    let proxy = Proxy::with_routes(&route("big", "/big", &backend.url("/ws"), "")).await;
    let mut client = raw::upgrade(proxy.addr(), "/big").await;
    let len = 1 << 20;
    let payload = pattern(len);
    let wire = Frame::binary(payload.clone()).masked().encode();
    let first = 14 + 200 * 1024;
    client.write_bytes(&wire[..first]).await;

    let mut got = Vec::new();
    assert!(
        gather(&mut rx, &mut got, 14 + 100 * 1024).await,
        "backend EOF"
    );
    let (b0, claimed, key) = parse_masked_head(&got);
    assert_eq!((b0, claimed), (0x80 | BINARY, len as u64));

    client.write_bytes(&wire[first..]).await;
    assert!(gather(&mut rx, &mut got, 14 + len).await, "backend EOF");
    let unmasked: Vec<u8> = got[14..14 + len]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    assert!(unmasked == payload, "payload differs after re-masking");
    drop(client);
    proxy.assert_drained().await;
}

/// Invalid UTF-8 in the middle of a streamed text frame: the client gets 1007; the
/// backend already has part of the frame, so it gets no Close (one would be read as
/// payload): its connection just ends.
#[tokio::test]
async fn invalid_utf8_inside_a_streamed_frame_closes_the_client_and_cuts_the_backend() {
    let (backend, mut rx) = sink().await;
    let mut proxy = Proxy::with_routes(&route("big", "/big", &backend.url("/ws"), "")).await;
    let mut client = raw::upgrade(proxy.addr(), "/big").await;
    let len = 1 << 20;
    let mut text = vec![b'a'; len];
    text[300 * 1024] = 0xff;
    let wire = Frame::new(TEXT, text).masked().encode();
    let first = 14 + 200 * 1024;
    client.write_bytes(&wire[..first]).await;
    let mut got = Vec::new();
    assert!(
        gather(&mut rx, &mut got, 14 + 100 * 1024).await,
        "backend EOF"
    );
    client.write_bytes(&wire[first..first + 200 * 1024]).await;

    let close = client.recv_close().await;
    assert_eq!(close.close_code(), Some(1007), "{close:?}");
    // EOF at the backend, and never more than the valid part of the frame.
    assert!(!gather(&mut rx, &mut got, usize::MAX).await);
    assert!(
        got.len() <= 14 + 300 * 1024,
        "{} bytes reached the backend",
        got.len()
    );
    client.send(Frame::close(1007, "")).await;
    client.expect_eof().await;
    let report = proxy.next_report().await;
    assert_eq!(report.close_code, Some(1007), "{report:?}");
    assert_eq!(report.outcome, Outcome::ProtocolError, "{report:?}");
    proxy.assert_drained().await;
}

/// A client that stalls inside a frame (large or small) is closed 1008 after
/// `frame_timeout`; a connection idle between frames is not.
#[tokio::test]
async fn a_frame_not_finished_within_frame_timeout_is_closed_1008() {
    let backend = Backend::echo().await;
    let extra = "    frame_timeout: 300ms\n";
    let mut proxy = Proxy::with_routes(&route("app", "/app", &backend.url("/ws"), extra)).await;
    for (what, len, sent) in [("streamed", 1usize << 20, 100 * 1024), ("small", 1000, 10)] {
        let mut client = raw::upgrade(proxy.addr(), "/app").await;
        let wire = Frame::binary(pattern(len)).masked().encode();
        client.write_bytes(&wire[..sent]).await;
        let started = tokio::time::Instant::now();
        let close = client.recv_close().await;
        assert_eq!(close.close_code(), Some(1008), "{what}: {close:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "{what}: after {waited:?}"
        );
        client.send(Frame::close(1008, "")).await;
        client.expect_eof().await;
        let report = proxy.next_report().await;
        assert_eq!(
            (report.close_code, report.outcome),
            (Some(1008), Outcome::Limit)
        );
    }
    let mut idle = raw::upgrade(proxy.addr(), "/app").await;
    idle.send(Frame::text("one")).await;
    assert_eq!(idle.recv_frame().await.payload, b"one");
    // Longer than frame_timeout between frames (an observation window, not a readiness wait).
    tokio::time::sleep(Duration::from_millis(700)).await;
    idle.send(Frame::text("two")).await;
    assert_eq!(idle.recv_frame().await.payload, b"two");
    drop(idle);
    proxy.assert_drained().await;
}

/// Shutdown while a backend's large frame is half forwarded: the client's Close 1001
/// waits for the end of that frame instead of landing inside its payload.
#[tokio::test]
async fn wsgates_own_close_waits_for_the_end_of_a_streamed_frame() {
    let go = Arc::new(Notify::new());
    let half = Arc::new(Notify::new());
    let (go2, half2) = (go.clone(), half.clone());
    let len = 1usize << 20;
    let backend = RawBackend::start(move |mut conn: RawConn| {
        let (go, half) = (go2.clone(), half2.clone());
        async move {
            conn.accept(&[]).await;
            // Only once the client has sent something: its upgrade is over, so nothing of
            // the frame is read along with the 101.
            let _ = conn.io.recv().await;
            let mut wire = frame::header(true, 0, BINARY, None, len as u64);
            wire.extend(pattern(len));
            let _ = conn.io.io().write_all(&wire[..300 * 1024]).await;
            half.notify_one();
            go.notified().await;
            let _ = conn.io.io().write_all(&wire[300 * 1024..]).await;
            conn.record_until_close().await;
        }
    })
    .await;
    let proxy = Proxy::with_routes(&route("big", "/big", &backend.url("/ws"), "")).await;
    let mut client = raw::upgrade(proxy.addr(), "/big").await;
    client.send(Frame::text("go")).await;
    within("backend wrote half", half.notified()).await;
    // Read some of the frame so it is known to be forwarded already.
    let mut first = vec![0u8; 64 * 1024];
    let n = within("first bytes", client.io().read(&mut first))
        .await
        .unwrap();
    assert!(n > 0);
    proxy.cancel();
    go.notify_one();
    let mut rest = first[..n].to_vec();
    let deadline = tokio::time::Instant::now() + patience();
    let mut chunk = vec![0u8; 64 * 1024];
    while rest.len() < 10 + len + 2 && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, client.io().read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => rest.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let (whole, used) = frame::decode(&rest).unwrap().expect("the whole frame");
    let want = pattern(len);
    let differs = whole.payload.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        whole.payload.len() == len && differs.is_none(),
        "frame payload differs at {differs:?} (len {}): {:02x?}",
        whole.payload.len(),
        differs.map(|i| &whole.payload[i..(i + 16).min(len)])
    );
    let (close, _) = frame::decode(&rest[used..])
        .unwrap()
        .expect("a Close after it");
    assert_eq!(close.close_code(), Some(1001), "{close:?}");
}
