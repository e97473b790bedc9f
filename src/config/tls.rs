//! TLS files named by the config: PEM certificates and keys, read and checked at load
//! time so a bad file fails `--check` and a reload with its location.

use std::path::Path;
use std::sync::Arc;

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
