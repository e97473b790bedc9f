//! HTTP/2 clients for wsgate's TLS listeners: a TLS connection with a chosen ALPN offer,
//! hyper's HTTP/2 client on it, and WebSockets by extended CONNECT (RFC 8441) run with
//! tokio-tungstenite over the upgraded stream.

use std::net::SocketAddr;

use bytes::Bytes;
use h2::client::SendRequest as H2SendRequest;
use h2::{RecvStream, SendStream};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::ca::TestCa;
use super::frame::{self, Frame};
use super::within;

/// A WebSocket on one HTTP/2 stream.
pub type H2Ws = WebSocketStream<TokioIo<Upgraded>>;

/// TLS to `addr` (SNI `localhost`) offering `alpn`; returns the stream and the protocol
/// the server chose.
pub async fn tls(
    addr: SocketAddr,
    ca: &TestCa,
    alpn: &[&[u8]],
) -> (TlsStream<TcpStream>, Option<Vec<u8>>) {
    let (tls, chosen, _) = tls_with_handle(addr, ca, alpn).await;
    (tls, chosen)
}

/// Like [`tls`], plus a duplicate of the socket to cut the connection with, whatever
/// the client library on it still holds open.
pub async fn tls_with_handle(
    addr: SocketAddr,
    ca: &TestCa,
    alpn: &[&[u8]],
) -> (TlsStream<TcpStream>, Option<Vec<u8>>, std::net::TcpStream) {
    let mut config = (*ca.client_config()).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    within("TLS connect", async {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let std = tcp.into_std().expect("std socket");
        let handle = std.try_clone().expect("dup socket");
        let tcp = TcpStream::from_std(std).expect("tokio socket");
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake failed: {e}"));
        let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        (tls, chosen, handle)
    })
    .await
}

/// One HTTP/2 connection to wsgate.
pub struct H2Conn {
    /// Sends requests on the connection.
    pub sender: SendRequest<Empty<Bytes>>,
    /// The connection's task; ends with the connection.
    pub task: JoinHandle<Result<(), hyper::Error>>,
    port: u16,
    socket: std::net::TcpStream,
}

impl Drop for H2Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl H2Conn {
    /// TLS with ALPN `h2` only, then the HTTP/2 handshake.
    pub async fn connect(addr: SocketAddr, ca: &TestCa) -> H2Conn {
        let (tls, chosen, socket) = tls_with_handle(addr, ca, &[b"h2"]).await;
        assert_eq!(chosen.as_deref(), Some(&b"h2"[..]), "server chose h2");
        let (sender, conn) = within(
            "h2 handshake",
            hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(tls)),
        )
        .await
        .expect("h2 handshake");
        let task = tokio::spawn(conn);
        H2Conn {
            sender,
            task,
            port: addr.port(),
            socket,
        }
    }

    /// The client's own address of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("a connected socket")
    }

    /// Cuts the TCP connection under the client, as a client that vanished.
    pub fn cut(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// An extended CONNECT for `path` with version 13 and `headers`, not yet sent.
    pub fn request(&self, path: &str, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(format!("https://localhost:{}{path}", self.port))
            .header("sec-websocket-version", "13")
            .extension(hyper::ext::Protocol::from_static("websocket"));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(Empty::new()).expect("request")
    }

    /// Sends `req`; the response head and its body read whole.
    pub async fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> Result<(Response<()>, Bytes), hyper::Error> {
        within("h2 request", async {
            self.sender.ready().await?;
            let res = self.sender.send_request(req).await?;
            let (parts, body) = res.into_parts();
            let body = if parts.status == StatusCode::OK {
                // The tunnel's body is the WebSocket; not read here.
                Bytes::new()
            } else {
                body.collect().await?.to_bytes()
            };
            Ok((Response::from_parts(parts, ()), body))
        })
        .await
    }

    /// Opens a WebSocket on a new stream; the 200 (with its headers) and the socket, or
    /// the refusal with its body.
    pub async fn try_websocket(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Response<()>, H2Ws), (Response<()>, Bytes)> {
        let req = self.request(path, headers);
        let res = within("h2 websocket", async {
            self.sender.ready().await.expect("connection ready");
            self.sender.send_request(req).await.expect("response")
        })
        .await;
        if res.status() != StatusCode::OK {
            let (parts, body) = res.into_parts();
            let body = within("refusal body", body.collect())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err((Response::from_parts(parts, ()), body));
        }
        let mut res = res;
        let upgraded = within("h2 upgrade", hyper::upgrade::on(&mut res))
            .await
            .expect("upgraded stream");
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
        let (parts, _) = res.into_parts();
        Ok((Response::from_parts(parts, ()), ws))
    }

    /// Opens a WebSocket on a new stream, which must succeed.
    pub async fn websocket(&mut self, path: &str) -> H2Ws {
        match self.try_websocket(path, &[]).await {
            Ok((_, ws)) => ws,
            Err((res, body)) => panic!("extended CONNECT refused: {} {body:?}", res.status()),
        }
    }
}

/// A config with one TLS listener (the CA's default leaf) plus `listener_extra` lines
/// (indented 4), the test defaults, `top` sections, and `routes`.
pub fn tls_yaml(ca: &TestCa, listener_extra: &str, top: &str, routes: &str) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {}\n{listener_extra}{}{top}routes:\n{routes}",
        ca.listener_tls_yaml(),
        super::proxy::TEST_DEFAULTS,
    )
}

// The h2 crate's client, for tests that choose each frame (resets, END_STREAM).

/// An h2-crate client connection over TLS (ALPN h2); its task runs beside.
pub async fn h2_client(addr: SocketAddr, ca: &TestCa) -> H2SendRequest<Bytes> {
    let (io, chosen) = tls(addr, ca, &[b"h2"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
    let (client, conn) = within("h2 handshake", h2::client::handshake(io))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    client
}

/// Opens a WebSocket on a new stream: its send half and the response's body.
pub async fn open_path(
    client: &mut H2SendRequest<Bytes>,
    port: u16,
    path: &str,
) -> (SendStream<Bytes>, RecvStream) {
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://localhost:{port}{path}"))
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
pub async fn next_frame(recv: &mut RecvStream, buf: &mut Vec<u8>) -> Frame {
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

/// `frame` masked, as a client sends it, for `send_data`.
pub fn data(frame: Frame) -> Bytes {
    Bytes::from(frame.masked().encode())
}

/// [`open_path`] on `/app`.
pub async fn open(client: &mut H2SendRequest<Bytes>, port: u16) -> (SendStream<Bytes>, RecvStream) {
    open_path(client, port, "/app").await
}
