//! TLS files named by the config: PEM certificates and keys, read and checked at load
//! time so a bad file fails `--check` and a reload with its location.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A PEM file that could not be read, held nothing usable, or does not fit its pair.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}")]
pub struct PemError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub what: String,
}

/// Reads a certificate chain and its key and checks that the key is usable and matches
/// the first certificate.
pub fn check_pair(cert: &Path, key: &Path) -> Result<(), PemError> {
    let certs = load_certs(cert)?;
    let der = load_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair_err = |e: rustls::Error| PemError {
        path: key.display().to_string(),
        what: format!("key does not fit {}: {e}", cert.display()),
    };
    CertifiedKey::from_der(certs, der, &provider).map_err(pair_err)?;
    Ok(())
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem_err = |what: String| PemError {
        path: path.display().to_string(),
        what,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err(
            "expected at least one PEM CERTIFICATE block".into(),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| PemError {
        path: path.display().to_string(),
        what: format!("expected a PEM private key: {e}"),
    })
}

/// Client certificates on a TLS listener (mTLS): the CA they must chain to, and whether a
/// client without one may connect.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawClientAuth")]
pub struct ClientAuthConfig {
    /// PEM file of the CA certificates client certificates must chain to; re-read on every
    /// reload (and when the file changes), like the listener's own certificate.
    pub ca: PathBuf,
    /// Whether a certificate is required at the TLS handshake. Default `required`.
    pub mode: ClientAuthMode,
}

/// Whether a listener's TLS handshake requires a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// A client without a valid certificate fails the handshake.
    #[default]
    Required,
    /// A client may present none (routes with `client_cert: required` then refuse it with
    /// 403); one it presents must be valid.
    Optional,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientAuth {
    #[serde(deserialize_with = "super::parse::file")]
    ca: PathBuf,
    #[serde(default)]
    mode: ClientAuthMode,
}

impl TryFrom<RawClientAuth> for ClientAuthConfig {
    type Error = String;
    fn try_from(raw: RawClientAuth) -> Result<Self, String> {
        // Loaded now so a bad CA file fails here, with a location, not at the handshake.
        load_roots(&raw.ca).map_err(|e| format!("client_auth: {e}"))?;
        Ok(ClientAuthConfig {
            ca: raw.ca,
            mode: raw.mode,
        })
    }
}

/// The CA certificates of a PEM file as trust anchors (every one must be usable).
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| PemError {
            path: path.display().to_string(),
            what: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()])
            .expect("rcgen makes a self-signed certificate");
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    #[test]
    fn a_key_that_does_not_fit_its_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("wsgate-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_a, key_a) = write_pair(&dir, "a");
        let (_, key_b) = write_pair(&dir, "b");
        assert!(check_pair(&cert_a, &key_a).is_ok());
        let err = check_pair(&cert_a, &key_b).unwrap_err();
        assert!(err.what.contains("does not fit"), "{err}");
        assert!(
            load_certs(&key_a).is_err(),
            "a key file holds no certificate"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
