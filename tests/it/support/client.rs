//! Well-behaved clients: tokio-tungstenite over ws and wss.

use std::net::SocketAddr;

use futures_util::StreamExt;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::ca::TestCa;
use super::within;

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Client limits above anything the tests send, so only wsgate's limits apply.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(64 << 20))
        .max_message_size(Some(64 << 20))
}

/// Connects to `request` (a URL or a built request), returning the error.
pub async fn try_connect(
    request: impl IntoClientRequest + Unpin,
) -> Result<(Client, Response), Error> {
    within(
        "client connect",
        tokio_tungstenite::connect_async_with_config(request, Some(config()), true),
    )
    .await
}

/// Connects to `request`, which must succeed.
pub async fn connect(request: impl IntoClientRequest + Unpin) -> (Client, Response) {
    try_connect(request)
        .await
        .unwrap_or_else(|e| panic!("client connect failed: {e}"))
}

/// Connects over TLS to `addr` with `req` (`wss://localhost:PORT/…` or a request built
/// from one) and the rustls client `config`; the handshake's failure as text.
pub async fn try_connect_tls(
    addr: SocketAddr,
    req: impl IntoClientRequest + Unpin,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<Client, String> {
    within("wss connect", async {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        tokio_tungstenite::client_async_tls_with_config(
            req,
            tcp,
            Some(config()),
            Some(tokio_tungstenite::Connector::Rustls(tls)),
        )
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
    })
    .await
}

/// Connects over TLS to `addr` as `wss://localhost:PORT{path}`, trusting `ca`.
/// The TCP connection goes to `addr` itself (no name resolution); SNI is `localhost`.
pub async fn connect_tls(addr: SocketAddr, path: &str, ca: &TestCa) -> (Client, Response) {
    let url = format!("wss://localhost:{}{path}", addr.port());
    within("wss connect", async {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        tokio_tungstenite::client_async_tls_with_config(
            url,
            tcp,
            Some(config()),
            Some(ca.connector()),
        )
        .await
        .unwrap_or_else(|e| panic!("wss connect failed: {e}"))
    })
    .await
}

/// Like [`connect_tls`], but also returns the leaf certificate (DER) the server
/// presented, to tell which certificate is served.
pub async fn connect_tls_cert(addr: SocketAddr, path: &str, ca: &TestCa) -> (Client, Vec<u8>) {
    within("wss connect", async {
        let tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let connector = tokio_rustls::TlsConnector::from(ca.client_config());
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS handshake failed: {e}"));
        let leaf = tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec();
        let url = format!("wss://localhost:{}{path}", addr.port());
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            url,
            MaybeTlsStream::Rustls(tls),
            Some(config()),
        )
        .await
        .unwrap_or_else(|e| panic!("upgrade over TLS failed: {e}"));
        (ws, leaf)
    })
    .await
}

/// The next message, which must arrive within [`super::patience`].
pub async fn next(client: &mut Client) -> Message {
    within("client message", client.next())
        .await
        .expect("client stream ended")
        .unwrap_or_else(|e| panic!("client read error: {e}"))
}

/// Sends a Close and reads until the stream ends (bounded): a clean goodbye.
pub async fn close(client: &mut Client) -> Vec<Result<Message, Error>> {
    let _ = client.close(None).await;
    drain(client).await
}

/// Reads until the stream ends (bounded), returning what arrived.
pub async fn drain(client: &mut Client) -> Vec<Result<Message, Error>> {
    let mut out = Vec::new();
    for _ in 0..100 {
        match within("client drain", client.next()).await {
            Some(item) => {
                let end = item.is_err();
                out.push(item);
                if end {
                    break;
                }
            }
            None => break,
        }
    }
    out
}
