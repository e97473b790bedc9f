//! The PROXY protocol on a listener (`proxy_protocol: true`): before TLS or HTTP, the
//! connection's first bytes are a v1 or v2 header from a balancer in `proxy_protocol_from`,
//! and the address it carries is the client's from then on. Anything else closes the
//! connection: a peer outside those networks (before a byte is read), a header that is
//! malformed, truncated, too long, or not complete within `limits.proxy_header_timeout`.
//! Each refusal is counted in `wsgate_proxy_protocol_refusals_total{reason}` and logged at
//! debug.
//!
//! The header is read by hand rather than through a buffered reader because nothing
//! behind it may be taken: the TLS acceptor and hyper read the socket next, and no stream
//! type carries bytes read ahead. So a v1 line is peeked and only its own bytes consumed,
//! and a v2 header read to the length it gives; `ppp` parses what was read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::config::Cidr;
use crate::config::cidr::any_contains;
use crate::proto::proxy_header::{
    Carried, HeaderError, V1_MAX_BYTES, V2_FIXED_BYTES, Version, parse_v1, parse_v2, v1_end,
    v2_payload_len,
};
use crate::shared::metrics::Metrics;

/// A listener's PROXY protocol setting, swapped on reload: the networks that may send the
/// header, or nothing when the listener does not take one.
#[derive(Default)]
pub struct ProxySlot(ArcSwapOption<Vec<Cidr>>);

impl ProxySlot {
    /// The networks in force (`None`: no PROXY protocol on this listener).
    pub fn current(&self) -> Option<Arc<Vec<Cidr>>> {
        self.0.load_full()
    }

    /// Replaces the setting (new connections read it; open ones are past their header).
    pub fn set(&self, from: Option<Vec<Cidr>>) {
        self.0.store(from.map(Arc::new));
    }
}

/// Why a connection was closed before its header was taken.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("peer is not in proxy_protocol_from")]
    Untrusted,
    #[error("no complete PROXY header within the timeout")]
    Timeout,
    #[error("connection ended inside the PROXY header")]
    Truncated,
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("reading the PROXY header: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for Refused {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Refused::Truncated,
            _ => Refused::Io(e),
        }
    }
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::Untrusted => "untrusted_peer",
            Refused::Timeout => "timeout",
            Refused::Truncated => "truncated",
            Refused::Header(e) => e.reason(),
            Refused::Io(_) => "io",
        }
    }
}

/// Reads the PROXY header of a connection from `peer`, which must be in `from`: the
/// client's address (the peer's own for a `LOCAL` or `UNKNOWN` header), or `None` when
/// the connection is to be closed (counted and logged here).
pub async fn admit(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    from: &[Cidr],
    timeout: Duration,
    metrics: &Metrics,
) -> Option<SocketAddr> {
    let read = async {
        if !any_contains(from, peer.ip()) {
            return Err(Refused::Untrusted);
        }
        tokio::time::timeout(timeout, read_header(tcp))
            .await
            .unwrap_or(Err(Refused::Timeout))
    };
    match read.await {
        Ok((version, carried)) => {
            metrics.proxy_protocol_accepted(version.as_str());
            Some(match carried {
                Carried::Client(addr) => addr,
                Carried::Local => peer,
            })
        }
        Err(e) => {
            metrics.proxy_protocol_refused(e.reason());
            tracing::debug!(error = %e, reason = e.reason(), "PROXY header refused");
            None
        }
    }
}

/// The header at the start of `tcp`, and nothing after it.
async fn read_header(tcp: &mut TcpStream) -> Result<(Version, Carried), Refused> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(Refused::Truncated);
    }
    let version = Version::of(first[0])?;
    let carried = match version {
        Version::V1 => read_v1(tcp).await?,
        Version::V2 => read_v2(tcp).await?,
    };
    Ok((version, carried))
}

/// A v1 line: what is peeked before its `\n` is all header, so it is consumed and the
/// next peek waits for more; the bytes after the `\n` stay in the socket.
async fn read_v1(tcp: &mut TcpStream) -> Result<Carried, Refused> {
    let mut line = [0u8; V1_MAX_BYTES];
    let mut have = 0;
    // Each round consumes at least one byte of a line of at most V1_MAX_BYTES.
    for _ in 0..V1_MAX_BYTES {
        let n = tcp.peek(&mut line[have..]).await?;
        if n == 0 {
            return Err(Refused::Truncated);
        }
        match v1_end(&line[..have + n])? {
            Some(end) => {
                tcp.read_exact(&mut line[have..end]).await?;
                return Ok(parse_v1(&line[..end])?);
            }
            None => {
                tcp.read_exact(&mut line[have..have + n]).await?;
                have += n;
            }
        }
    }
    Err(HeaderError::TooLong.into())
}

/// A v2 header: the fixed part, then exactly the length it gives (bounded).
async fn read_v2(tcp: &mut TcpStream) -> Result<Carried, Refused> {
    let mut fixed = [0u8; V2_FIXED_BYTES];
    tcp.read_exact(&mut fixed).await?;
    let len = v2_payload_len(&fixed)?;
    let mut whole = vec![0u8; V2_FIXED_BYTES + len];
    whole[..V2_FIXED_BYTES].copy_from_slice(&fixed);
    tcp.read_exact(&mut whole[V2_FIXED_BYTES..]).await?;
    Ok(parse_v2(&whole)?)
}
