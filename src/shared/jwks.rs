//! The keys a route verifies JSON Web Tokens with: one key from a file or secret, or a
//! JWKS document kept fresh by a background fetch (`backend::jwks`). Each key carries the
//! one algorithm it verifies, fixed by the key itself (the JWK's `alg`, else its
//! `kty`/`crv`; the configured algorithm of a file key), never by a token's header.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

use crate::config::jwt::{
    JwksConfig, JwtAlgorithm, JwtConfig, JwtKeys, load_key_file, read_secret,
};
use crate::config::tls::PemError;
use crate::shared::tls::TlsError;

/// Most keys a token without a `kid` is tried against: each try is a signature check the
/// client makes wsgate pay for, and a key set rarely holds more keys of one algorithm.
pub const MAX_KEYS_TRIED: usize = 4;

/// A key and the one algorithm it verifies.
pub struct VerifyKey {
    /// Its `kid`, if the key set names it.
    pub kid: Option<String>,
    /// The algorithm a token must name to be checked against this key.
    pub algorithm: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

/// A set of keys, swapped whole when a JWKS is fetched anew.
#[derive(Default)]
pub struct KeySet {
    /// The keys, in the order of the document.
    pub keys: Vec<VerifyKey>,
}

/// What a token's header finds in a key set.
pub enum Lookup<'k> {
    /// The keys to try: the one its `kid` names, or the first [`MAX_KEYS_TRIED`] of its
    /// algorithm.
    Found(Vec<&'k VerifyKey>),
    /// The token names a `kid` the set does not have.
    UnknownKid,
    /// No key verifies the algorithm the token names.
    NoKeyForAlgorithm,
}

impl KeySet {
    /// The keys a token with this `kid` and header algorithm may be checked against.
    /// A single key without a `kid` (a file key) takes every token, whatever its `kid`.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let named = kid.and_then(|kid| self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)));
        let candidates: Vec<&VerifyKey> = match (named, kid) {
            (Some(key), _) => vec![key],
            (None, Some(_)) if self.keys.iter().any(|k| k.kid.is_some()) => {
                return Lookup::UnknownKid;
            }
            _ => self.keys.iter().collect(),
        };
        let fitting: Vec<_> = candidates
            .into_iter()
            .filter(|k| k.algorithm == alg)
            .take(MAX_KEYS_TRIED)
            .collect();
        if fitting.is_empty() {
            Lookup::NoKeyForAlgorithm
        } else {
            Lookup::Found(fitting)
        }
    }

    /// The signing keys of a JWKS document that wsgate can use; others (encryption keys,
    /// symmetric keys, other curves and algorithms) are left out. Fails only when the
    /// document is not a JWKS at all.
    pub fn from_jwks(json: &[u8]) -> Result<KeySet, String> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS: {e}"))?;
        let keys = set
            .keys
            .iter()
            .filter(|jwk| {
                matches!(
                    jwk.common.public_key_use,
                    None | Some(PublicKeyUse::Signature)
                )
            })
            .filter_map(|jwk| {
                let algorithm = jwk_algorithm(jwk.common.key_algorithm, &jwk.algorithm)?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                (key.family() == algorithm.family()).then(|| VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                })
            })
            .collect();
        Ok(KeySet { keys })
    }
}

/// The one algorithm of a JWK: its `alg` when it has one (and wsgate verifies it), else
/// the one its type implies (RSA → RS256, EC P-256 → ES256, OKP Ed25519 → EdDSA).
fn jwk_algorithm(alg: Option<KeyAlgorithm>, params: &AlgorithmParameters) -> Option<Algorithm> {
    let implied = match params {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        // Secrets are never taken from a key set; other curves are not verified.
        _ => return None,
    };
    let Some(alg) = alg else { return Some(implied) };
    let named = match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    };
    // `alg` may narrow an RSA key to PS256, never move a key to another family.
    (named.family() == implied.family()).then_some(named)
}

/// The `jsonwebtoken` algorithm of a configured one.
pub fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::HS256 => Algorithm::HS256,
    }
}

/// A JWKS URL's keys and the state of their fetching; kept across a reload by every
/// route that names the same URL with the same settings.
pub struct Jwks {
    /// The URL and its refresh settings.
    pub config: JwksConfig,
    /// TLS client config for an `https://` URL (its `tls_ca` re-read on reload).
    pub tls: ArcSwap<rustls::ClientConfig>,
    /// The keys of the last document fetched (empty until the first fetch succeeds);
    /// kept while the URL fails, so a short outage refuses nobody.
    pub keys: ArcSwap<KeySet>,
    /// When a token's unknown `kid` last caused a fetch; held while that fetch runs, so
    /// concurrent requests wait for it instead of fetching again.
    pub refetched: tokio::sync::Mutex<Option<Instant>>,
    /// Set when the background refresh was started.
    started: AtomicBool,
}

impl Jwks {
    /// Reads the `tls_ca` file anew, like every certificate on a reload.
    fn reread_ca(&self) -> Result<(), TlsError> {
        if let Some(ca) = &self.config.tls_ca {
            self.tls
                .store(crate::shared::tls::backend_client_config(Some(ca))?);
        }
        Ok(())
    }

    /// Claims the start of the background refresh: true once.
    pub fn claim_start(&self) -> bool {
        !self.started.swap(true, Ordering::AcqRel)
    }
}

/// Where a route's keys come from.
pub enum KeySource {
    /// A file key or secret, re-read on reload.
    Static(ArcSwap<KeySet>),
    /// A JWKS URL.
    Jwks(Arc<Jwks>),
}

/// A route's JWT check: its settings and its keys.
pub struct JwtCheck {
    /// The `jwt:` section.
    pub config: JwtConfig,
    /// Its keys.
    pub source: KeySource,
}

impl JwtCheck {
    /// Builds the check, reading a key file or secret now, and taking over `jwks` when it
    /// is for the same URL and settings (a reload keeps fetched keys).
    pub fn new(config: &JwtConfig, reuse: Option<&Arc<Jwks>>) -> Result<JwtCheck, TlsError> {
        crate::shared::jws::install();
        let source = match &config.keys {
            JwtKeys::Jwks(jwks) => match reuse.filter(|j| j.config == *jwks) {
                Some(j) => {
                    j.reread_ca()?;
                    KeySource::Jwks(j.clone())
                }
                None => KeySource::Jwks(Arc::new(Jwks {
                    config: jwks.clone(),
                    tls: ArcSwap::new(crate::shared::tls::backend_client_config(
                        jwks.tls_ca.as_deref(),
                    )?),
                    keys: ArcSwap::default(),
                    refetched: tokio::sync::Mutex::new(None),
                    started: AtomicBool::new(false),
                })),
            },
            _ => KeySource::Static(ArcSwap::from_pointee(static_keys(config)?)),
        };
        Ok(JwtCheck {
            config: config.clone(),
            source,
        })
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<KeySet> {
        match &self.source {
            KeySource::Static(keys) => keys.load_full(),
            KeySource::Jwks(jwks) => jwks.keys.load_full(),
        }
    }

    /// The JWKS this check fetches, if it uses one.
    pub fn jwks(&self) -> Option<&Arc<Jwks>> {
        match &self.source {
            KeySource::Jwks(j) => Some(j),
            KeySource::Static(_) => None,
        }
    }

    /// A file key or secret read anew (a reload of an otherwise unchanged route); a
    /// JWKS's `tls_ca` is re-read and used at once (the same file, newer contents).
    pub fn reread(&self) -> Result<Option<Arc<KeySet>>, TlsError> {
        match &self.source {
            KeySource::Static(_) => Ok(Some(Arc::new(static_keys(&self.config)?))),
            KeySource::Jwks(j) => j.reread_ca().map(|()| None),
        }
    }

    /// Installs keys read by [`JwtCheck::reread`].
    pub fn install(&self, keys: Arc<KeySet>) {
        if let KeySource::Static(k) = &self.source {
            k.store(keys);
        }
    }
}

/// The key of a `key_file` or `secret_file`.
fn static_keys(config: &JwtConfig) -> Result<KeySet, TlsError> {
    let pem_err = |path: &std::path::Path, what: String| {
        TlsError::Pem(PemError {
            path: path.display().to_string(),
            what,
        })
    };
    let key = match &config.keys {
        JwtKeys::File { path, algorithm: a } => VerifyKey {
            kid: None,
            algorithm: algorithm(*a),
            key: load_key_file(path, *a).map_err(|e| pem_err(path, e))?,
        },
        JwtKeys::Secret(path) => {
            let secret = read_secret(path).map_err(|e| pem_err(path, e))?;
            VerifyKey {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(&secret).map_err(|e| pem_err(path, e.to_string()))?,
            }
        }
        JwtKeys::Jwks(_) => return Ok(KeySet::default()),
    };
    Ok(KeySet { keys: vec![key] })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 public point (the generator), so the keys parse.
    const X: &str = "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY";
    const Y: &str = "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";

    fn set(keys: &str) -> KeySet {
        KeySet::from_jwks(format!("{{\"keys\": [{keys}]}}").as_bytes()).unwrap()
    }

    fn ec(extra: &str) -> String {
        format!(r#"{{"kty":"EC","crv":"P-256","x":"{X}","y":"{Y}"{extra}}}"#)
    }

    /// The key fixes the algorithm: `alg` may only name one of its own family, and keys
    /// wsgate cannot use (secrets, encryption keys, unknown types) are left out.
    #[test]
    fn each_key_verifies_one_algorithm_of_its_own_type() {
        let keys = set(&ec(r#","kid":"a""#));
        assert_eq!(keys.keys[0].algorithm, Algorithm::ES256);
        assert!(
            set(&ec(r#","alg":"RS256""#)).keys.is_empty(),
            "EC key named RS256"
        );
        assert!(
            set(&ec(r#","alg":"HS256""#)).keys.is_empty(),
            "EC key named HS256"
        );
        assert!(
            set(&ec(r#","use":"enc""#)).keys.is_empty(),
            "encryption key"
        );
        let oct = r#"{"kty":"oct","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}"#;
        assert!(set(oct).keys.is_empty(), "a secret from a key set");
        let unknown = r#"{"kty":"XYZ","kid":"u"}"#;
        assert_eq!(set(&format!("{unknown},{}", ec(""))).keys.len(), 1);
        assert!(KeySet::from_jwks(b"[]").is_err());
    }

    #[test]
    fn lookup_by_kid_and_algorithm() {
        let keys = set(&format!("{},{}", ec(r#","kid":"a""#), ec(r#","kid":"b""#)));
        assert!(
            matches!(keys.lookup(Some("b"), Algorithm::ES256), Lookup::Found(k) if k.len() == 1 && k[0].kid.as_deref() == Some("b"))
        );
        assert!(matches!(
            keys.lookup(Some("c"), Algorithm::ES256),
            Lookup::UnknownKid
        ));
        assert!(matches!(
            keys.lookup(Some("a"), Algorithm::HS256),
            Lookup::NoKeyForAlgorithm
        ));
        assert!(matches!(keys.lookup(None, Algorithm::ES256), Lookup::Found(k) if k.len() == 2));
        assert!(matches!(
            keys.lookup(None, Algorithm::RS256),
            Lookup::NoKeyForAlgorithm
        ));
        let many = set(&vec![ec(""); 10].join(","));
        assert!(
            matches!(many.lookup(None, Algorithm::ES256), Lookup::Found(k) if k.len() == MAX_KEYS_TRIED)
        );
    }
}
