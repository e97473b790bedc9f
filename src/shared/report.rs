//! Who closed, why, and the one report logged when a connection ends.

use std::net::SocketAddr;
use std::time::Duration;

use crate::shared::client::ClientProtocol;

/// Which side ended the connection first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// The client sent the first Close, or vanished.
    Client,
    /// The backend sent the first Close, or vanished.
    Backend,
    /// wsgate closed it (protocol violation, limit, timeout, shutdown).
    Proxy,
}

impl ClosedBy {
    /// Label value for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ClosedBy::Client => "client",
            ClosedBy::Backend => "backend",
            ClosedBy::Proxy => "proxy",
        }
    }
}

/// Why the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A close handshake started by a peer.
    Normal,
    /// The client disappeared without a Close.
    ClientGone,
    /// The client reset its HTTP/2 stream (RST_STREAM) without a Close.
    ClientReset,
    /// The backend ended its stream cleanly (FIN between frames) without a Close.
    BackendGone,
    /// The backend's socket failed (reset, I/O error) or its stream was cut inside a frame.
    BackendError,
    /// A peer broke the protocol (1002, 1007).
    ProtocolError,
    /// A peer went over a size or rate limit (1009, 1008).
    Limit,
    /// A peer did not answer keepalive pings.
    PingTimeout,
    /// A peer stopped reading: a frame waited for it longer than `write_timeout`.
    WriteTimeout,
    /// No data frame within the idle timeout.
    IdleTimeout,
    /// wsgate was shutting down.
    Shutdown,
    /// The route was removed or changed by a reload.
    Reload,
    /// The client's credentials expired (a token's `exp`).
    AuthExpired,
    /// The connection reached the route's `max_lifetime`.
    Lifetime,
    /// An operator closed it through the admin API.
    Admin,
}

impl Outcome {
    /// Label value for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Normal => "normal",
            Outcome::ClientGone => "client_gone",
            Outcome::ClientReset => "client_reset",
            Outcome::BackendGone => "backend_gone",
            Outcome::BackendError => "backend_error",
            Outcome::ProtocolError => "protocol_error",
            Outcome::Limit => "limit",
            Outcome::PingTimeout => "ping_timeout",
            Outcome::WriteTimeout => "write_timeout",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::Shutdown => "shutdown",
            Outcome::Reload => "reload",
            Outcome::AuthExpired => "auth_expired",
            Outcome::Lifetime => "lifetime",
            Outcome::Admin => "admin",
        }
    }
}

/// Everything worth knowing about one relayed connection, logged once when it ends.
#[derive(Debug, Clone)]
pub struct CloseReport {
    /// Connection id (also on the connection's log span).
    pub id: u64,
    /// Route name.
    pub route: String,
    /// Backend URL (or `echo`).
    pub backend: String,
    /// Client's address: the PROXY header's on such a listener, the first untrusted hop
    /// behind a trusted proxy (port 0, which forwarding headers do not carry).
    pub client_addr: SocketAddr,
    /// Whether the client hop was TLS.
    pub tls: bool,
    /// The client hop's HTTP version (`h1` or `h2`).
    pub protocol: ClientProtocol,
    /// Subprotocol the backend chose.
    pub subprotocol: Option<String>,
    /// From the client's 101 to the end.
    pub duration: Duration,
    /// Messages client → backend.
    pub msgs_in: u64,
    /// Messages backend → client.
    pub msgs_out: u64,
    /// Data payload bytes client → backend.
    pub bytes_in: u64,
    /// Data payload bytes backend → client.
    pub bytes_out: u64,
    /// Code of the first Close (1006 in the report when a peer vanished; `None` for an empty Close).
    pub close_code: Option<u16>,
    /// Reason of the first Close.
    pub close_reason: String,
    /// Who closed first.
    pub closed_by: ClosedBy,
    /// Why it ended.
    pub outcome: Outcome,
    /// Who the client was admitted as (a JWT's `sub`, a forward-auth header), if anyone.
    pub identity: Option<String>,
}

impl CloseReport {
    /// Writes the close report line (text or JSON is the subscriber's choice).
    ///
    /// Strings a peer controls (subprotocol, close reason) are recorded as `&str`, never
    /// with `%`: the text format then quotes and escapes them (`"bye\n…"`), JSON
    /// serialises them, so a reason can neither break the line nor add a field.
    pub fn log(&self) {
        tracing::info!(
            target: "wsgate::close",
            conn = self.id,
            route = %self.route,
            backend = %self.backend,
            client_addr = %self.client_addr,
            tls = self.tls,
            protocol = self.protocol.as_str(),
            subprotocol = self.subprotocol.as_deref().unwrap_or(""),
            duration_ms = self.duration.as_millis() as u64,
            msgs_in = self.msgs_in,
            msgs_out = self.msgs_out,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            close_code = self.close_code.unwrap_or(1005),
            close_reason = self.close_reason.as_str(),
            closed_by = self.closed_by.as_str(),
            outcome = self.outcome.as_str(),
            identity = self.identity.as_deref().unwrap_or(""),
            "connection closed"
        );
    }
}
