//! The bytes wsgate holds for large frames are bounded all together
//! (`limits.max_buffered_bytes`): a connection without room stops reading its large frame
//! instead of allocating, and gets room when another gives it back. The time wsgate
//! does not read a sender (no room, or the other hop not written yet) is not counted
//! against that sender's `frame_timeout`.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::support::backend::{Backend, RawBackend, RawConn};
use crate::support::frame::Frame;
use crate::support::proxy::{Proxy, TEST_DEFAULTS};
use crate::support::{eventually, raw, within};
use wsgate::Outcome;

fn config(limits: &str, backend: &str, extra: &str) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n{TEST_DEFAULTS}limits: {{ {limits} }}\n\
         routes:\n  - name: app\n    path: /app\n    backends: [\"{backend}\"]\n{extra}"
    )
}

/// A backend that stops reading for four seconds after its 101, then reads everything; it
/// reports how many bytes it got by the end of the stream.
async fn slow_reader() -> (RawBackend, tokio::sync::mpsc::UnboundedReceiver<usize>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let backend = RawBackend::start(move |mut conn: RawConn| {
        let tx = tx.clone();
        async move {
            conn.accept(&[]).await;
            // Well past frame_timeout: wsgate's writes to this hop block meanwhile.
            tokio::time::sleep(Duration::from_secs(4)).await;
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0;
            for _ in 0..1_000_000 {
                match conn.io.io().read(&mut buf).await {
                    Ok(n) if n > 0 => total += n,
                    _ => break,
                }
            }
            let _ = tx.send(total);
        }
    })
    .await;
    (backend, rx)
}

/// Bug: the frame clock ran while wsgate itself did not read the client because the
/// backend did not take what it had already forwarded, so a large frame towards a slow
/// reader was closed 1008 though the client sent it as fast as it could.
#[tokio::test]
async fn a_frame_held_up_by_a_slow_receiver_is_not_timed_out() {
    let (backend, mut got) = slow_reader().await;
    // Long enough for the transfer itself on a loaded machine in a debug build, far
    // shorter than the backend's stall.
    let extra = "    frame_timeout: 2s\n    max_frame_bytes: 64MiB\n";
    let mut proxy = Proxy::start(&config("", &backend.url("/ws"), extra)).await;
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    // Far more than the loopback socket buffers hold, so wsgate must wait for the backend.
    let len = 32 << 20;
    let wire = Frame::binary(vec![7u8; len]).masked().encode();
    let writer = tokio::spawn(async move {
        client.write_bytes(&wire).await;
        client
    });
    let client = within("the frame written", writer).await.expect("writer");
    drop(client);
    // The whole frame, then wsgate's Close for the client that went away.
    let total = within("the backend's count", got.recv()).await.unwrap_or(0);
    assert!(total > 14 + len, "the backend got {total} bytes");
    let report = proxy.next_report().await;
    assert_ne!(report.outcome, Outcome::Limit, "{report:?}");
    assert_ne!(report.close_code, Some(1008), "{report:?}");
    proxy.assert_drained().await;
}

/// Forty clients each inside a 60 KiB frame (buffered whole, so each needs 60 KiB of
/// room) with a 1 MiB budget: sixteen get room and the others stop reading; small
/// messages flow meanwhile; once the frames are finished every one is echoed whole and
/// the budget is all given back.
#[tokio::test]
async fn large_frames_wait_for_room_in_the_budget_and_small_ones_do_not() {
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&config("max_buffered_bytes: 1MiB", &backend.url("/ws"), "")).await;
    let len = 60 * 1024;
    let wires: Vec<Vec<u8>> = (0..40u8)
        .map(|i| Frame::binary(vec![i; len]).masked().encode())
        .collect();
    let mut clients = Vec::new();
    for wire in &wires {
        let mut client = raw::upgrade(proxy.addr(), "/app").await;
        client.write_bytes(&wire[..20 * 1024]).await;
        clients.push(client);
    }
    eventually("every large frame has asked for room", || {
        let used = proxy.metric("wsgate_buffered_bytes").unwrap_or(0.0);
        let waits = proxy.metric("wsgate_buffer_waits_total").unwrap_or(0.0);
        used > 15.0 * 60.0 * 1024.0 && waits >= 24.0
    })
    .await;
    let used = proxy.metric("wsgate_buffered_bytes").unwrap_or(0.0);
    assert!(
        used <= 1024.0 * 1024.0,
        "{used} bytes granted over a 1 MiB budget"
    );

    let mut small = raw::upgrade(proxy.addr(), "/app").await;
    for i in 0..10 {
        let text = format!("small {i}");
        small.send(Frame::text(text.as_str())).await;
        assert_eq!(small.recv_frame().await.payload, text.as_bytes());
    }

    for (client, wire) in clients.iter_mut().zip(&wires) {
        client.write_bytes(&wire[20 * 1024..]).await;
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let echo = client.recv_frame().await;
        assert_eq!(echo.payload.len(), len, "client {i}");
        assert!(echo.payload.iter().all(|&b| b == i as u8), "client {i}");
    }
    eventually("the budget is given back", || {
        proxy.metric("wsgate_buffered_bytes") == Some(0.0)
    })
    .await;
    drop(clients);
    drop(small);
    proxy.assert_drained().await;
}
