//! Close codes and the Close payload rules (RFC 6455 §5.5.1, §7.4).

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
