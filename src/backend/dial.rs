//! Opening a TCP or TLS connection to a backend: to the member's address, from one of its
//! source addresses when it has some, with the URL's host as the TLS name.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};

use crate::shared::pool::{Backend, Sources};
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
    /// Every local port towards this address is in use, from every source address: a
    /// limit of wsgate's host, not a fault of the backend.
    #[error("no source port left for {addr} (every local port towards it is in use)")]
    NoSourcePort {
        /// address:port tried.
        addr: SocketAddr,
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

/// Opens a TCP (and for `wss://`, TLS) connection to a backend. A resolved member is
/// reached at its address; its `Host` and TLS name are still the URL's host.
pub async fn connect(
    backend: &Backend,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<Stream, ConnectError> {
    let url = &backend.url;
    let addr = format!("{}:{}", url.host_header_host(), url.port);
    let targets: Vec<SocketAddr> = match backend.addr {
        Some(ip) => vec![SocketAddr::new(ip, url.port)],
        // Only a backend built outside a pool has a name and no address.
        None => tokio::net::lookup_host((url.host.as_str(), url.port))
            .await
            .map_err(|source| ConnectError::Tcp {
                addr: addr.clone(),
                source,
            })?
            .collect(),
    };
    let sources = backend.sources.load_full();
    let mut last = None;
    let mut tcp = None;
    for target in targets {
        match tcp_to(target, sources.as_deref()).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = match (tcp, last) {
        (Some(tcp), _) => tcp,
        (None, Some(e)) => return Err(e),
        (None, None) => {
            return Err(ConnectError::Tcp {
                addr,
                source: std::io::Error::new(ErrorKind::NotFound, "the name has no address"),
            });
        }
    };
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

/// Whether a connect failed for want of a local port (not because of the peer).
fn out_of_ports(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::AddrNotAvailable | ErrorKind::AddrInUse)
}

/// A TCP connection to `to`: from the kernel's choice of address without `sources`, else
/// from each of their addresses of `to`'s family in turn until one has a port left.
async fn tcp_to(to: SocketAddr, sources: Option<&Sources>) -> Result<TcpStream, ConnectError> {
    let tcp_error = |source| ConnectError::Tcp {
        addr: to.to_string(),
        source,
    };
    let Some(sources) = sources else {
        return match TcpStream::connect(to).await {
            Err(e) if out_of_ports(&e) => Err(ConnectError::NoSourcePort { addr: to }),
            other => other.map_err(tcp_error),
        };
    };
    let from = sources.order(to.ip());
    if from.is_empty() {
        return Err(tcp_error(std::io::Error::new(
            ErrorKind::AddrNotAvailable,
            "no source address of this address family",
        )));
    }
    for ip in from {
        match connect_from(ip, to).await {
            Err(e) if out_of_ports(&e) => continue,
            other => return other.map_err(tcp_error),
        }
    }
    Err(ConnectError::NoSourcePort { addr: to })
}

/// Connects from `ip` with `IP_BIND_ADDRESS_NO_PORT`: the bind takes the address only and
/// the port is chosen at connect time for the whole 4-tuple, so one source address serves
/// a full port range towards every backend address (a plain bind would pick the port
/// alone and share one range among all of them).
async fn connect_from(ip: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(target_os = "linux")]
    nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    )?;
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(to).await
}
