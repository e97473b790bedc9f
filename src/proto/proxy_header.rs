//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, v1 text and v2 binary) that
//! an L4 balancer sends before the client's own bytes: how long it may be, and the address
//! it carries. Parsing is `ppp`'s; what is here is what `ppp` leaves to the caller: how
//! many bytes to read so that none of the TLS ClientHello or HTTP request behind the
//! header is taken, and the bounds on a header's size.

use std::net::SocketAddr;

use ppp::v1;
use ppp::v2;

/// The longest v1 line, `\r\n` included (the spec's bound for `TCP6` with the longest
/// addresses).
pub const V1_MAX_BYTES: usize = 107;
/// What every v1 header starts with.
pub const V1_PREFIX: &[u8] = b"PROXY ";
/// The fixed part of a v2 header: the 12-byte signature, version and command, family and
/// protocol, and the big-endian length of what follows.
pub const V2_FIXED_BYTES: usize = 16;
/// The most a v2 header may carry after its fixed part. Addresses take at most 216 bytes
/// (two Unix paths); the TLVs real balancers send (AWS's VPC endpoint, HAProxy's ALPN,
/// authority, unique id, a client certificate's names) stay well within the rest, which
/// bounds what a peer can make wsgate read before it says who the client is. TLVs are
/// not looked at.
pub const V2_MAX_PAYLOAD_BYTES: usize = 2048;

/// Why a header was refused; each is a value of the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Neither `PROXY ` nor the v2 signature: the peer speaks something else.
    #[error("not a PROXY protocol header")]
    BadSignature,
    /// A v1 line past 107 bytes, or a v2 payload past [`V2_MAX_PAYLOAD_BYTES`].
    #[error("PROXY header too long")]
    TooLong,
    /// The right signature, but the rest does not parse (a bad address, a v2 length too
    /// short for its family, an unknown version or command).
    #[error("malformed PROXY header")]
    Malformed,
}

impl HeaderError {
    /// The `reason` label value.
    pub fn reason(self) -> &'static str {
        match self {
            HeaderError::BadSignature => "bad_signature",
            HeaderError::TooLong => "too_long",
            HeaderError::Malformed => "malformed",
        }
    }
}

/// What a well-formed header says about the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// The client's address and port (`PROXY` with TCP over IPv4 or IPv6).
    Client(SocketAddr),
    /// No client address: a v2 `LOCAL` (the balancer's own health check), v1 `UNKNOWN`,
    /// or a family without one (unspecified, Unix). The socket's peer stays the client.
    Local,
}

/// The header's version, once its first byte is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Text, one line.
    V1,
    /// Binary, [`V2_FIXED_BYTES`] then a payload of the length they give.
    V2,
}

impl Version {
    /// From the first byte: `P` starts v1, `\r` the v2 signature, anything else neither.
    pub fn of(first: u8) -> Result<Version, HeaderError> {
        match first {
            b'P' => Ok(Version::V1),
            b'\r' => Ok(Version::V2),
            _ => Err(HeaderError::BadSignature),
        }
    }

    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// Where a v1 header stands after `line`, the bytes read so far: `Ok(Some(n))` when it
/// ends within them after `n` bytes (its `\n` included), `Ok(None)` while more may come.
pub fn v1_end(line: &[u8]) -> Result<Option<usize>, HeaderError> {
    let checked = line.len().min(V1_PREFIX.len());
    if line[..checked] != V1_PREFIX[..checked] {
        return Err(HeaderError::BadSignature);
    }
    match line.iter().position(|&b| b == b'\n') {
        Some(at) if at < V1_MAX_BYTES => Ok(Some(at + 1)),
        Some(_) => Err(HeaderError::TooLong),
        None if line.len() >= V1_MAX_BYTES => Err(HeaderError::TooLong),
        None => Ok(None),
    }
}

/// The address a whole v1 line carries.
pub fn parse_v1(line: &[u8]) -> Result<Carried, HeaderError> {
    let header = v1::Header::try_from(line).map_err(|_| HeaderError::Malformed)?;
    // ppp stops at the first `\r\n`; a line with more before its `\n` is not one header.
    if header.header.len() != line.len() {
        return Err(HeaderError::Malformed);
    }
    Ok(match header.addresses {
        v1::Addresses::Tcp4(a) => {
            Carried::Client(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        v1::Addresses::Tcp6(a) => {
            Carried::Client(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        v1::Addresses::Unknown => Carried::Local,
    })
}

/// The length of the payload after a v2 header's fixed part, once its signature is checked.
pub fn v2_payload_len(fixed: &[u8; V2_FIXED_BYTES]) -> Result<usize, HeaderError> {
    if fixed[..v2::PROTOCOL_PREFIX.len()] != *v2::PROTOCOL_PREFIX {
        return Err(HeaderError::BadSignature);
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    if len > V2_MAX_PAYLOAD_BYTES {
        return Err(HeaderError::TooLong);
    }
    Ok(len)
}

/// The address a whole v2 header (fixed part and payload) carries.
pub fn parse_v2(header: &[u8]) -> Result<Carried, HeaderError> {
    let header = v2::Header::try_from(header).map_err(|_| HeaderError::Malformed)?;
    if header.command == v2::Command::Local {
        return Ok(Carried::Local);
    }
    Ok(match header.addresses {
        v2::Addresses::IPv4(a) => {
            Carried::Client(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        v2::Addresses::IPv6(a) => {
            Carried::Client(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => Carried::Local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = v2::PROTOCOL_PREFIX.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn v2_whole(bytes: &[u8]) -> Result<Carried, HeaderError> {
        let fixed: [u8; V2_FIXED_BYTES] = bytes[..V2_FIXED_BYTES].try_into().unwrap();
        let len = v2_payload_len(&fixed)?;
        assert_eq!(bytes.len(), V2_FIXED_BYTES + len);
        parse_v2(bytes)
    }

    #[test]
    fn v1_lines_carry_the_source_address() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n";
        assert_eq!(v1_end(&line[..3]), Ok(None));
        assert_eq!(v1_end(&line[..]), Ok(Some(line.len())));
        assert_eq!(
            parse_v1(line),
            Ok(Carried::Client("192.0.2.7:51000".parse().unwrap()))
        );
        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n";
        assert_eq!(
            parse_v1(six),
            Ok(Carried::Client("[2001:db8::7]:51000".parse().unwrap()))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(Carried::Local));
    }

    #[test]
    fn v1_lines_that_are_not_headers_are_refused() {
        assert_eq!(v1_end(b"POST / HTTP/1.1"), Err(HeaderError::BadSignature));
        assert_eq!(v1_end(b"PROXX"), Err(HeaderError::BadSignature));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 100]].concat();
        assert_eq!(v1_end(&long), Err(HeaderError::TooLong));
        let late = [long.as_slice(), b"\r\n"].concat();
        assert_eq!(v1_end(&late), Err(HeaderError::TooLong));
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 51000\r\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 51000 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 443\r\n",
            b"PROXY TCP5 192.0.2.7 10.0.0.1 51000 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\rx\n",
        ] {
            assert_eq!(
                parse_v1(bad),
                Err(HeaderError::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn v2_headers_carry_the_source_address_or_none() {
        let mut four = vec![192, 0, 2, 7, 10, 0, 0, 1];
        four.extend_from_slice(&51000u16.to_be_bytes());
        four.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(
            v2_whole(&v2(1, 0x11, &four)),
            Ok(Carried::Client("192.0.2.7:51000".parse().unwrap()))
        );
        // TLVs after the addresses are ignored.
        let tlvs = [four.as_slice(), &[0x04, 0x00, 0x01, 0x00]].concat();
        assert_eq!(
            v2_whole(&v2(1, 0x11, &tlvs)),
            Ok(Carried::Client("192.0.2.7:51000".parse().unwrap()))
        );
        let mut six = [0u8; 36];
        six[..16].copy_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        six[32..34].copy_from_slice(&51000u16.to_be_bytes());
        assert_eq!(
            v2_whole(&v2(1, 0x21, &six)),
            Ok(Carried::Client("[2001:db8::7]:51000".parse().unwrap()))
        );
        assert_eq!(v2_whole(&v2(0, 0x11, &four)), Ok(Carried::Local), "LOCAL");
        assert_eq!(v2_whole(&v2(0, 0x00, &[])), Ok(Carried::Local));
    }

    #[test]
    fn v2_headers_that_do_not_add_up_are_refused() {
        let short = v2(1, 0x11, &[192, 0, 2, 7]);
        assert_eq!(
            v2_whole(&short),
            Err(HeaderError::Malformed),
            "IPv4 in 4 bytes"
        );
        assert_eq!(
            v2_whole(&v2(1, 0x21, &[0; 12])),
            Err(HeaderError::Malformed)
        );
        assert_eq!(
            v2_whole(&v2(2, 0x11, &[0; 12])),
            Err(HeaderError::Malformed)
        );
        let mut version1 = v2(1, 0x11, &[0; 12]);
        version1[12] = 0x11;
        assert_eq!(v2_whole(&version1), Err(HeaderError::Malformed));
        let mut signature = v2(1, 0x11, &[0; 12]);
        signature[4] = b'X';
        assert_eq!(v2_whole(&signature), Err(HeaderError::BadSignature));
        let mut huge = v2(1, 0x11, &[0; 12]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        let fixed: [u8; V2_FIXED_BYTES] = huge[..16].try_into().unwrap();
        assert_eq!(v2_payload_len(&fixed), Err(HeaderError::TooLong));
    }
}
