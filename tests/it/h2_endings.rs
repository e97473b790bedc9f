//! How a WebSocket on an HTTP/2 stream ends: a client's RST_STREAM is an abort with an
//! outcome of its own (`client_reset`); a close handshake followed by END_STREAM is
//! orderly; either way the backend hop is closed properly. Driven with the h2 crate, so
//! the test chooses exactly which frames the client sends.

use bytes::Bytes;
use h2::Reason;

use crate::support::backend::{Backend, Handshake, record};
use crate::support::ca::TestCa;
use crate::support::frame::{CLOSE, Frame};
use crate::support::h2client::{data, h2_client, next_frame, open, tls_yaml};
use crate::support::proxy::{Proxy, route};
use crate::support::{eventually, within};
use wsgate::{ClosedBy, Outcome};

#[tokio::test]
async fn a_client_rst_stream_is_a_client_reset_and_the_backend_gets_1001() {
    for reason in [Reason::CANCEL, Reason::INTERNAL_ERROR] {
        let ca = TestCa::new();
        let backend = Backend::start(Handshake::Accept, None, record).await;
        let yaml = tls_yaml(&ca, "", "", &route("app", "/app", &backend.url("/ws"), ""));
        let mut proxy = Proxy::start(&yaml).await;
        let mut client = h2_client(proxy.addr(), &ca).await;
        let (mut send, _recv) = open(&mut client, proxy.addr().port()).await;
        send.send_data(data(Frame::text("hi")), false).unwrap();
        eventually("backend got hi", || !backend.log.data_messages().is_empty()).await;

        send.send_reset(reason);
        let report = proxy.next_report().await;
        assert_eq!(
            report.outcome,
            Outcome::ClientReset,
            "{reason:?}: {report:?}"
        );
        assert_eq!(report.closed_by, ClosedBy::Client, "{report:?}");
        assert_eq!(report.protocol.as_str(), "h2");
        eventually("the backend got its Close", || {
            backend.log.close().is_some()
        })
        .await;
        assert_eq!(backend.log.close().unwrap().0, 1001, "{reason:?}");
        let reset = r#"wsgate_connections_total{route="app",outcome="client_reset"}"#;
        assert_eq!(proxy.metric(reset), Some(1.0), "{reason:?}");
        proxy.assert_drained().await;
        // The connection outlives its stream.
        let (mut send, mut recv) = open(&mut client, proxy.addr().port()).await;
        send.send_data(data(Frame::close(1000, "")), false).unwrap();
        let mut buf = Vec::new();
        assert_eq!(next_frame(&mut recv, &mut buf).await.opcode, CLOSE);
    }
}

#[tokio::test]
async fn a_close_handshake_then_end_stream_is_orderly_both_ways() {
    let ca = TestCa::new();
    let backend = Backend::echo().await;
    let yaml = tls_yaml(&ca, "", "", &route("app", "/app", &backend.url("/ws"), ""));
    let mut proxy = Proxy::start(&yaml).await;
    let mut client = h2_client(proxy.addr(), &ca).await;
    let (mut send, mut recv) = open(&mut client, proxy.addr().port()).await;
    let mut buf = Vec::new();
    send.send_data(data(Frame::text("echo me")), false).unwrap();
    let echo = next_frame(&mut recv, &mut buf).await;
    assert_eq!(echo.payload, b"echo me");

    send.send_data(data(Frame::close(1000, "done")), false)
        .unwrap();
    let reply = next_frame(&mut recv, &mut buf).await;
    assert_eq!(reply.opcode, CLOSE);
    assert_eq!(reply.close_code(), Some(1000));
    // wsgate's write shutdown is the stream's END_STREAM: no more DATA, no reset.
    // (h2 may hand the END_STREAM flag over on an empty DATA frame first.)
    let mut end = within("END_STREAM", recv.data()).await;
    if matches!(&end, Some(Ok(b)) if b.is_empty()) {
        end = within("END_STREAM", recv.data()).await;
    }
    assert!(end.is_none(), "the stream ended cleanly: {end:?}");
    assert!(recv.is_end_stream());
    // The client's own END_STREAM may find the stream already closed: once its relay
    // ended, wsgate stops reading it with RST_STREAM(NO_ERROR) (RFC 9113 §8.1).
    if send.send_data(Bytes::new(), true).is_err() {
        let reset = within("the reset", std::future::poll_fn(|cx| send.poll_reset(cx))).await;
        assert_eq!(reset.ok(), Some(Reason::NO_ERROR));
    }

    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::Normal, "{report:?}");
    assert_eq!(report.closed_by, ClosedBy::Client, "{report:?}");
    assert_eq!(report.close_code, Some(1000), "{report:?}");
    proxy.assert_drained().await;
}
