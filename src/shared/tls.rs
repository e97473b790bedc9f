//! TLS: the listeners' rustls server configs (files or a self-signed certificate made at
//! start) and the client config used for `wss://` backends.
//!
//! Crypto provider: `ring` (see the README for the measurement behind the choice).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::tls::{
    ClientAuthConfig, ClientAuthMode, PemError, load_certs, load_key, load_roots,
};
use crate::config::{Alpn, TlsConfig};

/// A certificate or key that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or held nothing usable.
    #[error(transparent)]
    Pem(#[from] PemError),
    /// rustls refused the certificate/key pair.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
    /// Generating the self-signed certificate failed.
    #[error("self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    /// The client certificate verifier could not be built from the CA file.
    #[error("client_auth CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server config for a TLS listener that offers `alpn` (preferred first) and
/// asks for client certificates with `client_auth` (the CA file read anew).
pub fn server_config(
    tls: &TlsConfig,
    client_auth: Option<&ClientAuthConfig>,
    alpn: &[Alpn],
) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = match tls {
        TlsConfig::Files { cert, key } => (load_certs(cert)?, load_key(key)?),
        TlsConfig::SelfSigned => {
            let cert = rcgen::generate_simple_self_signed(vec![
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
            ])?;
            tracing::warn!(
                "TLS listener uses a self-signed certificate generated in memory (for local use only)"
            );
            let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
            (vec![cert.cert.der().clone()], key)
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_verifier(client_auth)?)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn_ids(alpn);
    Ok(Arc::new(config))
}

/// `config`'s certificate (a self-signed one is kept across reloads) with `alpn` offered
/// and client certificates checked against `client_auth`'s CA file, read anew.
pub fn with_alpn(
    config: &ServerConfig,
    client_auth: Option<&ClientAuthConfig>,
    alpn: &[Alpn],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(client_verifier(client_auth)?)
        .with_cert_resolver(config.cert_resolver.clone());
    config.alpn_protocols = alpn_ids(alpn);
    Ok(Arc::new(config))
}

/// The client certificate verifier: none asked for without `client_auth`, else WebPKI
/// chain validation to the CA file's certificates (`optional`: a client may send none).
fn client_verifier(
    client_auth: Option<&ClientAuthConfig>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let Some(auth) = client_auth else {
        return Ok(WebPkiClientVerifier::no_client_auth());
    };
    let roots = Arc::new(load_roots(&auth.ca)?);
    let builder = WebPkiClientVerifier::builder_with_provider(roots, provider());
    let builder = match auth.mode {
        ClientAuthMode::Required => builder,
        ClientAuthMode::Optional => builder.allow_unauthenticated(),
    };
    Ok(builder.build()?)
}

fn alpn_ids(alpn: &[Alpn]) -> Vec<Vec<u8>> {
    alpn.iter().map(|a| a.id().to_vec()).collect()
}

/// Builds the client config for `wss://` backends: public roots plus an optional extra CA file.
pub fn backend_client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in load_certs(path)? {
            roots.add(cert)?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
