//! How a WebSocket on an HTTP/2 stream ends: a client's RST_STREAM is an abort with an
//! outcome of its own (`client_reset`); a close handshake followed by END_STREAM is
//! orderly; either way the backend hop is closed properly. Driven with the h2 crate, so
//! the test chooses exactly which frames the client sends.

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, RecvStream, SendStream};
use hyper::{Method, Request};

use crate::support::backend::{Backend, Handshake, record};
use crate::support::ca::TestCa;
use crate::support::frame::{self, CLOSE, Frame};
use crate::support::h2client::{tls, tls_yaml};
use crate::support::proxy::{Proxy, route};
use crate::support::{eventually, within};
use wsgate::{ClosedBy, Outcome};

/// An h2-crate client connection; its task runs beside.
async fn h2_client(proxy: &Proxy, ca: &TestCa) -> SendRequest<Bytes> {
    let (io, chosen) = tls(proxy.addr(), ca, &[b"h2"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
    let (client, conn) = within("h2 handshake", h2::client::handshake(io))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    client
}

/// Opens a WebSocket on a new stream: its send half and the response's body.
async fn open(client: &mut SendRequest<Bytes>, port: u16) -> (SendStream<Bytes>, RecvStream) {
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://localhost:{port}/app"))
        .header("sec-websocket-version", "13")
        .extension(h2::ext::Protocol::from_static("websocket"))
        .body(())
        .unwrap();
    let mut client = within("ready", client.clone().ready())
        .await
        .expect("ready");
    let (res, send) = client.send_request(req, false).expect("send CONNECT");
    let res = within("200", res).await.expect("response");
    assert_eq!(res.status(), 200);
    (send, res.into_body())
}

/// Reads the next whole WebSocket frame from `recv` (buffering across DATA frames).
async fn next_frame(recv: &mut RecvStream, buf: &mut Vec<u8>) -> Frame {
    for _ in 0..1_000 {
        if let Some((frame, used)) = frame::decode(buf).expect("valid frame") {
            buf.drain(..used);
            return frame;
        }
        let data = within("DATA", recv.data())
            .await
            .expect("stream still open")
            .expect("no stream error");
        let _ = recv.flow_control().release_capacity(data.len());
        buf.extend_from_slice(&data);
    }
    panic!("no frame in 1000 DATA frames");
}

fn data(frame: Frame) -> Bytes {
    Bytes::from(frame.masked().encode())
}

#[tokio::test]
async fn a_client_rst_stream_is_a_client_reset_and_the_backend_gets_1001() {
    for reason in [Reason::CANCEL, Reason::INTERNAL_ERROR] {
        let ca = TestCa::new();
        let backend = Backend::start(Handshake::Accept, None, record).await;
        let yaml = tls_yaml(&ca, "", "", &route("app", "/app", &backend.url("/ws"), ""));
        let mut proxy = Proxy::start(&yaml).await;
        let mut client = h2_client(&proxy, &ca).await;
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
    let mut client = h2_client(&proxy, &ca).await;
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
    send.send_data(Bytes::new(), true).unwrap();

    let report = proxy.next_report().await;
    assert_eq!(report.outcome, Outcome::Normal, "{report:?}");
    assert_eq!(report.closed_by, ClosedBy::Client, "{report:?}");
    assert_eq!(report.close_code, Some(1000), "{report:?}");
    proxy.assert_drained().await;
}
