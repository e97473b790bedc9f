//! Who is on the client hop of a connection.

use std::net::SocketAddr;

use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Who is on the client hop of this HTTP connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    /// Connection id.
    pub id: u64,
    /// Client socket address.
    pub peer: SocketAddr,
    /// Whether the client hop is TLS.
    pub tls: bool,
    /// The HTTP version the client speaks on this connection.
    pub protocol: ClientProtocol,
}

/// The HTTP version of the client hop: how its WebSocket was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientProtocol {
    /// HTTP/1.1, opened by `Upgrade` (RFC 6455).
    H1,
    /// HTTP/2, opened by an extended CONNECT on one stream (RFC 8441).
    H2,
}

impl ClientProtocol {
    /// Label value for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientProtocol::H1 => "h1",
            ClientProtocol::H2 => "h2",
        }
    }
}

/// Held by whatever serves one stream of an HTTP/2 connection (a WebSocket's relay, a
/// request): at shutdown the connection stays up, after its GOAWAY, until none is left.
#[derive(Debug, Clone)]
pub struct StreamHold {
    /// Counts as a task of the connection's tracker while held (never read).
    _token: TaskTrackerToken,
}

impl StreamHold {
    /// A hold on the connection whose streams `tracker` counts.
    pub fn new(tracker: &TaskTracker) -> StreamHold {
        StreamHold {
            _token: tracker.token(),
        }
    }
}
