//! JWS signature checks on `ring`, installed as `jsonwebtoken`'s crypto provider.
//!
//! Hand-written because `jsonwebtoken` (since 10) ships only RustCrypto and aws-lc-rs
//! providers: RustCrypto's P-256 verify cost 177 µs per connection in the `connauth`
//! benchmark (3.8k new connections/s against 13.1k without a check), and aws-lc-rs would
//! bring back the aws-lc-sys build the TLS choice avoids. `ring` is already wsgate's TLS
//! crypto. Each verifier is a thin call into `ring::signature` or `ring::hmac`, as in
//! the crate's own aws-lc-rs provider (whose API `ring`'s mirrors); wsgate never signs.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{self as sig, RsaParameters, UnparsedPublicKey, VerificationAlgorithm};

/// Installs the provider for this process (once; later calls do nothing).
pub fn install() {
    // Fails only when a provider is installed already: this one, or one a test chose.
    let _ = PROVIDER.install_default();
}

/// The provider: `ring` verifiers; signing and JWK derivation refuse (wsgate does neither).
static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |_| Err(unsupported()),
        rsa_pub_components_from_public_key: |_| Err(unsupported()),
        ec_pub_components_from_private_key: |_, _| Err(unsupported()),
        ed_pub_components_from_private_key: |_, _| Err(unsupported()),
        compute_digest: |_, _| Err(unsupported()),
    },
};

fn unsupported() -> Error {
    ErrorKind::Provider("not supported by wsgate's verify-only provider".into()).into()
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Err(unsupported())
}

/// The ring algorithm of each JWS algorithm wsgate accepts a key for.
enum Check {
    Rsa(&'static RsaParameters),
    Unparsed(&'static dyn VerificationAlgorithm),
    Hmac,
}

fn verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let (family, check) = match alg {
        Algorithm::RS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        ),
        Algorithm::PS256 => (
            AlgorithmFamily::Rsa,
            Check::Rsa(&sig::RSA_PSS_2048_8192_SHA256),
        ),
        Algorithm::ES256 => (
            AlgorithmFamily::Ec,
            Check::Unparsed(&sig::ECDSA_P256_SHA256_FIXED),
        ),
        Algorithm::EdDSA => (AlgorithmFamily::Ed, Check::Unparsed(&sig::ED25519)),
        Algorithm::HS256 => (AlgorithmFamily::Hmac, Check::Hmac),
        _ => return Err(ErrorKind::UnsupportedAlgorithm.into()),
    };
    // The key's own type must be the algorithm's: no HMAC keyed with an RSA key's bytes.
    if key.family() != family {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        check,
        key: key.clone(),
    }))
}

struct RingVerifier {
    alg: Algorithm,
    check: Check,
    key: DecodingKey,
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let ok = match (&self.check, self.key.kind()) {
            (Check::Rsa(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                sig::RsaPublicKeyComponents { n, e }
                    .verify(params, msg, signature)
                    .is_ok()
            }
            (Check::Rsa(params), DecodingKeyKind::SecretOrDer(der)) => {
                UnparsedPublicKey::new(*params, der)
                    .verify(msg, signature)
                    .is_ok()
            }
            (Check::Unparsed(alg), DecodingKeyKind::SecretOrDer(bytes)) => {
                UnparsedPublicKey::new(*alg, bytes)
                    .verify(msg, signature)
                    .is_ok()
            }
            (Check::Hmac, DecodingKeyKind::SecretOrDer(secret)) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
                ring::hmac::verify(&key, msg, signature).is_ok()
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(signature::Error::new())
        }
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key of one type never verifies another type's algorithm, whatever the bytes.
    #[test]
    fn a_key_verifies_only_its_own_family() {
        let secret = DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef").unwrap();
        assert!(verifier(&Algorithm::HS256, &secret).is_ok());
        for alg in [
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ] {
            assert!(
                verifier(&alg, &secret).is_err(),
                "{alg:?} on an HMAC secret"
            );
        }
        let rsa = DecodingKey::from_rsa_raw_components(&[0xc5; 256], &[1, 0, 1]);
        assert!(
            verifier(&Algorithm::HS256, &rsa).is_err(),
            "HMAC keyed with an RSA key"
        );
        assert!(
            verifier(&Algorithm::RS384, &rsa).is_err(),
            "an algorithm wsgate does not take"
        );
        let rs = verifier(&Algorithm::RS256, &rsa).unwrap();
        assert!(rs.verify(b"msg", &vec![0; 256]).is_err());
    }
}
