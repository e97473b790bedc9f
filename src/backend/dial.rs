//! Opening a TCP or TLS connection to a backend.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::config::BackendUrl;
use crate::shared::stream::Stream;

/// Why a backend could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed (refused, unreachable).
    #[error("connect to {addr}: {source}")]
    Tcp {
        /// host:port tried.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The TLS handshake with the backend failed.
    #[error("TLS to {addr}: {source}")]
    Tls {
        /// host:port tried.
        addr: String,
        /// The TLS error.
        source: std::io::Error,
    },
    /// The host is not a valid TLS server name.
    #[error("invalid TLS server name `{0}`")]
    ServerName(String),
}

/// Opens a TCP (and for `wss://`, TLS) connection to a backend.
pub async fn connect(
    url: &BackendUrl,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Stream, ConnectError> {
    let addr = format!("{}:{}", url.host_header_host(), url.port);
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|source| ConnectError::Tcp {
            addr: addr.clone(),
            source,
        })?;
    // Frames are written whole and flushed; Nagle would only add latency.
    let _ = tcp.set_nodelay(true);
    if !url.secure {
        return Ok(Stream::Tcp(tcp));
    }
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| ConnectError::ServerName(url.host.clone()))?;
    let tls = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|source| ConnectError::Tls { addr, source })?;
    Ok(Stream::ClientTls(Box::new(tls)))
}
