//! A throw-away certificate authority: a CA and a default leaf for `localhost`
//! and 127.0.0.1 written as PEM files into a temporary directory, and more
//! leaves on demand with chosen serial numbers (to tell certificates apart).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tempfile::TempDir;
use tokio_tungstenite::Connector;

/// A CA, a server leaf signed by it, and their PEM files.
pub struct TestCa {
    dir: TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    leaf: Leaf,
}

/// A leaf certificate: its PEM files' contents, its DER and its key's DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "wsgate test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-sign CA");
        let issuer = Issuer::new(params, key);
        let leaf = sign_leaf(&issuer, None);

        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write ca.pem");
        leaf.write(&dir.path().join("leaf.pem"), &dir.path().join("leaf.key"));
        TestCa {
            dir,
            issuer,
            ca_der: cert.der().clone(),
            leaf,
        }
    }

    /// A new leaf for `localhost` and 127.0.0.1 with this serial number.
    pub fn issue(&self, serial: u64) -> Leaf {
        sign_leaf(&self.issuer, Some(serial))
    }

    /// A client leaf named `cn` (subject CN, and an `email` SAN `cn@example.test`).
    pub fn issue_client(&self, cn: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            format!("{cn}@example.test")
                .try_into()
                .expect("an email SAN"),
        ));
        let key = KeyPair::generate().expect("client key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign client leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// A rustls client config trusting only this CA and presenting `leaf` (mTLS), with
    /// ALPN `alpn`.
    pub fn client_config_as(&self, leaf: &Leaf, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA root");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![CertificateDer::from(leaf.der.clone())], key)
            .expect("client cert");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The default leaf certificate (PEM).
    pub fn cert_pem(&self) -> PathBuf {
        self.dir.path().join("leaf.pem")
    }

    /// The default leaf's private key (PKCS#8 PEM).
    pub fn key_pem(&self) -> PathBuf {
        self.dir.path().join("leaf.key")
    }

    /// The YAML flow mapping for a listener's `tls:` using the default leaf.
    pub fn listener_tls_yaml(&self) -> String {
        tls_yaml(&self.cert_pem(), &self.key_pem())
    }

    /// A rustls client config (ring provider) trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA root");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A tokio-tungstenite connector trusting only this CA.
    pub fn connector(&self) -> Connector {
        Connector::Rustls(self.client_config())
    }

    /// A rustls server config (ring provider) presenting the default leaf.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf.key_der.clone()));
        let der = CertificateDer::from(self.leaf.der.clone());
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .expect("server cert");
        Arc::new(config)
    }
}

impl Leaf {
    /// Writes the certificate and key to `cert` and `key`.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).expect("write cert");
        std::fs::write(key, &self.key_pem).expect("write key");
    }
}

fn sign_leaf(issuer: &Issuer<'static, KeyPair>, serial: Option<u64>) -> Leaf {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut params = CertificateParams::new(names).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.serial_number = serial.map(SerialNumber::from);
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    }
}

/// Paths `DIR/cert.pem` and `DIR/key.pem`.
pub fn cert_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The YAML flow mapping for a listener's `tls:` with these files.
pub fn tls_yaml(cert: &Path, key: &Path) -> String {
    format!("{{ cert: {}, key: {} }}", cert.display(), key.display())
}

/// The serial number of an X.509 certificate (DER).
pub fn serial_of(der: &[u8]) -> u64 {
    let (_, cert, _) = tlv(der);
    let (_, tbs, _) = tlv(cert);
    let (tag, first, rest) = tlv(tbs);
    // `[0] EXPLICIT version` comes first when present (v3 certificates).
    let (tag, serial, _) = if tag == 0xa0 {
        tlv(rest)
    } else {
        (tag, first, rest)
    };
    assert_eq!(tag, 0x02, "serialNumber is not an INTEGER");
    assert!(
        serial.len() <= 9,
        "serial wider than 64 bits: {serial:02x?}"
    );
    serial
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Splits one DER TLV off the front: (tag, content, rest).
fn tlv(buf: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = buf[0];
    let (len, head) = match buf[1] {
        n if n < 0x80 => (n as usize, 2),
        n => {
            let count = (n & 0x7f) as usize;
            let len = buf[2..2 + count]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, 2 + count)
        }
    };
    (tag, &buf[head..head + len], &buf[head + len..])
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
