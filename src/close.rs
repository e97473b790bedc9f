//! Close codes, who closed, and the one report logged when a connection ends.

use std::net::SocketAddr;
use std::time::Duration;

/// Close codes wsgate sends itself (RFC 6455 §7.4.1, IANA registry).
pub mod code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The peer on the other hop went away (client gone, or shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Only in reports: no Close frame was received (never sent on the wire).
    pub const ABNORMAL: u16 = 1006;
    /// A client broke a policy (message rate).
    pub const POLICY: u16 = 1008;
    /// A text message was not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A frame or message over the configured size.
    pub const TOO_BIG: u16 = 1009;
    /// Configuration reload removed or changed the route.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The backend went away or broke the protocol.
    pub const BAD_GATEWAY: u16 = 1014;
}

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
    /// The backend disappeared without a Close, or its socket failed.
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
}

impl Outcome {
    /// Label value for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Normal => "normal",
            Outcome::ClientGone => "client_gone",
            Outcome::BackendError => "backend_error",
            Outcome::ProtocolError => "protocol_error",
            Outcome::Limit => "limit",
            Outcome::PingTimeout => "ping_timeout",
            Outcome::WriteTimeout => "write_timeout",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::Shutdown => "shutdown",
            Outcome::Reload => "reload",
        }
    }
}

/// A Close frame payload that breaks RFC 6455 §5.5.1 / §7.4.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClosePayloadError {
    /// A one-byte payload cannot hold a code.
    #[error("close payload of one byte")]
    OneByte,
    /// 1005, 1006, 1015, codes below 1000, 1004, 1016-2999 or 5000 and above.
    #[error("close code {0} is not allowed on the wire")]
    BadCode(u16),
    /// The reason is not UTF-8.
    #[error("close reason is not UTF-8")]
    BadReason,
}

/// Whether a peer may send this close code.
pub fn is_valid_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a received Close payload and returns its code and reason (`None` when empty).
pub fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, ClosePayloadError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ClosePayloadError::OneByte),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_code(code) {
                return Err(ClosePayloadError::BadCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ClosePayloadError::BadReason)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Builds a Close payload; the reason is cut (on a character boundary) to fit 125 bytes.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(2 + end);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
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
    /// Client's address.
    pub client_addr: SocketAddr,
    /// Whether the client hop was TLS.
    pub tls: bool,
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
}

impl CloseReport {
    /// Writes the close report line (text or JSON is the subscriber's choice).
    pub fn log(&self) {
        tracing::info!(
            target: "wsgate::close",
            conn = self.id,
            route = %self.route,
            backend = %self.backend,
            client_addr = %self.client_addr,
            tls = self.tls,
            subprotocol = self.subprotocol.as_deref().unwrap_or(""),
            duration_ms = self.duration.as_millis() as u64,
            msgs_in = self.msgs_in,
            msgs_out = self.msgs_out,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            close_code = self.close_code.unwrap_or(1005),
            close_reason = %self.close_reason,
            closed_by = self.closed_by.as_str(),
            outcome = self.outcome.as_str(),
            "connection closed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_payload_rules() {
        assert_eq!(parse_close(&[]), Ok(None));
        assert_eq!(parse_close(&[3]), Err(ClosePayloadError::OneByte));
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                parse_close(&bad.to_be_bytes()),
                Err(ClosePayloadError::BadCode(bad))
            );
        }
        assert_eq!(
            parse_close(&close_payload(4000, "bye")),
            Ok(Some((4000, "bye")))
        );
        assert_eq!(
            parse_close(&[0x03, 0xe8, 0xff]),
            Err(ClosePayloadError::BadReason)
        );
        let long = "é".repeat(100);
        assert!(close_payload(1000, &long).len() <= 125);
        assert!(parse_close(&close_payload(1000, &long)).is_ok());
    }
}
