//! Who is on the client hop of a connection.

use std::net::SocketAddr;

/// Who is on the client hop of this HTTP connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    /// Connection id.
    pub id: u64,
    /// Client socket address.
    pub peer: SocketAddr,
    /// Whether the client hop is TLS.
    pub tls: bool,
}
