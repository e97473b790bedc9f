//! Who is on the client hop of a connection.

use std::net::SocketAddr;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::header::HeaderValue;
use tokio::sync::Notify;

use crate::proto::forwarded::Forwarding;

/// Who is on the client hop of this HTTP connection. Cheap to clone: the certificate
/// summary, when there is one, is shared.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Connection id.
    pub id: u64,
    /// The client hop's address: the socket's peer, or the address its PROXY header
    /// carried (on a `proxy_protocol` listener).
    pub peer: SocketAddr,
    /// Whether the client hop is TLS.
    pub tls: bool,
    /// The HTTP version the client speaks on this connection.
    pub protocol: ClientProtocol,
    /// The client certificate the TLS handshake verified (mTLS), if any.
    pub cert: Option<Arc<ClientCert>>,
    /// Who the request comes from when `peer` is a trusted proxy: the client address for
    /// policy and the chain to append to; set per request (`peer` alone until then).
    pub forwarding: Forwarding,
}

impl ClientInfo {
    /// The client address policy uses (caps, `hash_on: client_ip`, logs).
    pub fn ip(&self) -> std::net::IpAddr {
        self.forwarding.client
    }

    /// The client's address for reports: [`ClientInfo::ip`] with the peer's port when it
    /// is the peer, else port 0 (a forwarded hop carries none).
    pub fn addr(&self) -> SocketAddr {
        match self.ip() {
            ip if ip == self.peer.ip() => self.peer,
            ip => SocketAddr::new(ip, 0),
        }
    }
}

/// A verified client certificate, as the backend is told about it.
#[derive(Debug)]
pub struct ClientCert {
    /// Its subject and subject alternative names, as a header value:
    /// `Subject="CN=alice,O=Example";DNS="alice.example";URI="spiffe://…"`, every value
    /// quoted (`"` and `\` escaped, bytes outside printable ASCII as `\HH`).
    pub summary: HeaderValue,
}

impl ClientCert {
    /// The summary of a certificate (DER) rustls verified; `None` when it does not parse
    /// as X.509 (it cannot, having been verified, but nothing panics on a peer's bytes).
    pub fn from_der(der: &[u8]) -> Option<ClientCert> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut out = String::with_capacity(128);
        push_field(&mut out, "Subject", &cert.subject().to_string());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => push_field(&mut out, "DNS", d),
                    GeneralName::URI(u) => push_field(&mut out, "URI", u),
                    GeneralName::RFC822Name(e) => push_field(&mut out, "Email", e),
                    GeneralName::IPAddress(ip) => {
                        let ip = match ip.len() {
                            4 => <[u8; 4]>::try_from(*ip)
                                .ok()
                                .map(|b| std::net::IpAddr::from(b).to_string()),
                            16 => <[u8; 16]>::try_from(*ip)
                                .ok()
                                .map(|b| std::net::IpAddr::from(b).to_string()),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            push_field(&mut out, "IP", &ip);
                        }
                    }
                    _ => {}
                }
            }
        }
        // Only printable ASCII was written, which a header value always takes.
        let summary = HeaderValue::from_str(&out).ok()?;
        Some(ClientCert { summary })
    }
}

/// Appends `;Key="value"`, the value escaped so that it can add no field, header or line.
fn push_field(out: &mut String, key: &str, value: &str) {
    use std::fmt::Write;
    if !out.is_empty() {
        out.push(';');
    }
    out.push_str(key);
    out.push_str("=\"");
    for b in value.bytes() {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\{b:02X}");
            }
        }
    }
    out.push('"');
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

/// The streams of one HTTP/2 connection being served: a request from its headers until
/// it is dropped, a WebSocket until its relay ends. The connection waits on it at shutdown
/// and closes once it stayed at zero too long.
#[derive(Debug, Default)]
pub struct StreamCount {
    live: AtomicUsize,
    changed: Notify,
}

impl StreamCount {
    /// A hold on one stream, counted until dropped.
    pub fn hold(self: &Arc<Self>) -> StreamHold {
        self.live.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        StreamHold(self.clone())
    }

    /// Resolves once no stream is held.
    pub async fn none(&self) {
        // Bounded by the holds' own lives: each round waits for a change.
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.live.load(Ordering::SeqCst) == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Resolves once no stream was held for `quiet` in a row.
    pub async fn none_for(&self, quiet: Duration) {
        loop {
            self.none().await;
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.live.load(Ordering::SeqCst) == 0
                && tokio::time::timeout(quiet, changed).await.is_err()
            {
                return;
            }
        }
    }
}

/// Held by whatever serves one stream of an HTTP/2 connection (see [`StreamCount`]);
/// a clone is a hold of its own.
#[derive(Debug)]
pub struct StreamHold(Arc<StreamCount>);

impl Clone for StreamHold {
    fn clone(&self) -> Self {
        self.0.hold()
    }
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Subject and SANs reach the summary, and nothing a certificate holds can end a
    /// field early or add a line.
    #[test]
    fn the_summary_names_subject_and_sans_and_escapes_them() {
        let mut params = rcgen::CertificateParams::new(vec![
            "alice.example".to_string(),
            "10.0.0.1".to_string(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "al\"ice;\r\nX: é");
        params
            .subject_alt_names
            .push(rcgen::SanType::URI("spiffe://x/y".try_into().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let summary = ClientCert::from_der(cert.der()).unwrap().summary;
        let text = summary.to_str().unwrap();
        assert_eq!(
            text,
            "Subject=\"CN=al\\\"ice;\\0D\\0AX: \\C3\\A9\";DNS=\"alice.example\";IP=\"10.0.0.1\";URI=\"spiffe://x/y\""
        );
    }
}
