//! Connecting: TCP (loopback only), optional TLS, and the client side of the upgrade.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::ws;

/// Longest HTTP response head accepted from the server.
const MAX_HEAD: usize = 16 * 1024;

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    /// Server address; must be a loopback address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request path.
    pub path: String,
    /// TLS on the client hop, with the name to verify.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The same TLS client offering only ALPN `h2`, for the HTTP/2 modes.
    pub tls_h2: Option<TlsConnector>,
    /// More header lines of the upgrade request (each ending in CRLF), such as a token.
    pub extra_headers: String,
}

impl Target {
    /// A target; refuses any address that is not loopback.
    pub fn new(addr: SocketAddr, path: &str, tls: Option<(&str, &str)>) -> io::Result<Self> {
        if !addr.ip().is_loopback() {
            return Err(io::Error::other(format!(
                "{addr}: only loopback targets are allowed"
            )));
        }
        let (tls, tls_h2) = match tls {
            None => (None, None),
            Some((ca, name)) => (
                Some((tls_connector(ca, Vec::new())?, server_name(name)?)),
                Some(tls_connector(ca, vec![b"h2".to_vec()])?),
            ),
        };
        Ok(Self {
            addr,
            host: addr.to_string(),
            path: path.to_owned(),
            tls,
            tls_h2,
            extra_headers: String::new(),
        })
    }
}

fn server_name(name: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).map_err(|e| io::Error::other(format!("{name}: {e}")))
}

/// A TLS client trusting only the CA certificates in `ca_file`, with session resumption
/// off so that every connection pays a full handshake (the same for every target).
fn tls_connector(ca_file: &str, alpn: Vec<Vec<u8>>) -> io::Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(io::Error::other)? {
        roots
            .add(cert.map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(io::Error::other)?;
    let verifier = Arc::new(CachedChainVerifier {
        inner,
        verified: Mutex::new(None),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = alpn;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Verifies the server's chain against the CA once and then trusts the same certificate
/// bytes for the same name without rebuilding the path; the handshake signature
/// (CertificateVerify, proof that the server holds the key) is still checked on every
/// connection. This halves the client's signature checks per handshake, so the load
/// generator has more headroom when measuring TLS connection rates.
#[derive(Debug)]
struct CachedChainVerifier {
    inner: Arc<WebPkiServerVerifier>,
    verified: Mutex<Option<(Vec<u8>, ServerName<'static>)>>,
}

impl ServerCertVerifier for CachedChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cert, name)) = verified.as_ref()
            && cert.as_slice() == end_entity.as_ref()
            && name == server_name
        {
            return Ok(ServerCertVerified::assertion());
        }
        let ok =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        *verified = Some((end_entity.to_vec(), server_name.to_owned()));
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client connection, plain or TLS.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

/// Connects, upgrades, and returns the connection with any bytes that followed the 101.
pub async fn connect(t: &Target) -> io::Result<(Conn, Vec<u8>)> {
    let tcp = TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    let mut conn = match &t.tls {
        None => Conn::Plain(tcp),
        Some((connector, name)) => Conn::Tls(Box::new(connector.connect(name.clone(), tcp).await?)),
    };
    conn.write_all(&ws::upgrade_request(&t.host, &t.path, &t.extra_headers))
        .await?;
    conn.flush().await?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during upgrade",
            ));
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = ws::head_end(&head) {
            if !head.starts_with(b"HTTP/1.1 101") {
                let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
                return Err(io::Error::other(format!(
                    "upgrade refused: {}",
                    String::from_utf8_lossy(line)
                )));
            }
            return Ok((conn, head.split_off(end)));
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("response head too long"));
        }
    }
}

/// A TLS connection that negotiated ALPN `h2` (no upgrade: the HTTP/2 modes speak next).
pub async fn connect_h2(t: &Target) -> io::Result<TlsStream<TcpStream>> {
    let (Some(connector), Some((_, name))) = (&t.tls_h2, &t.tls) else {
        return Err(io::Error::other("HTTP/2 modes need TLS (--tls-ca)"));
    };
    let tcp = TcpStream::connect(t.addr).await?;
    tcp.set_nodelay(true)?;
    let tls = connector.connect(name.clone(), tcp).await?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(io::Error::other("the server did not choose ALPN h2"));
    }
    Ok(tls)
}

/// [`connect`] bounded by `limit`.
pub async fn connect_within(t: &Target, limit: Duration) -> io::Result<(Conn, Vec<u8>)> {
    tokio::time::timeout(limit, connect(t))
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connect + upgrade timed out",
            ))
        })
}

/// One read from `conn` fed to `parser`; the end of the stream is an `UnexpectedEof`
/// error saying `closed` (what had not arrived yet).
pub async fn read_frames<S: crate::ws::Sink>(
    conn: &mut Conn,
    buf: &mut [u8],
    parser: &mut crate::ws::Parser,
    sink: &mut S,
    closed: &'static str,
) -> io::Result<()> {
    let n = conn.read(buf).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, closed));
    }
    parser.feed(&buf[..n], sink);
    Ok(())
}
