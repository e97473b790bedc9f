//! A route's `jwt:` section: where the token is read from, which key verifies it (a key
//! file, a shared secret file or a JWKS URL), which claims are checked and which become
//! headers for the backend, and how a connection ends when its token expires.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::parse::{duration, opt_file};

/// The algorithms wsgate verifies. Each key has exactly one (RFC 8725 §3.1): a token
/// whose header names another is refused, whatever its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
    /// HMAC with SHA-256 (a shared secret, `secret_file` only).
    HS256,
}

impl JwtAlgorithm {
    /// Its name in a JOSE header.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::EdDSA => "EdDSA",
            JwtAlgorithm::HS256 => "HS256",
        }
    }
}

/// How a route checks JSON Web Tokens before the upgrade (or plain request).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawJwt")]
pub struct JwtConfig {
    /// Which key verifies the tokens.
    pub keys: JwtKeys,
    /// Accepted `iss` values; when set, a token without one of them is refused. Default any.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; when set, a token must name one of them. Default any.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30s.
    pub leeway: Duration,
    /// Where the token is looked for.
    pub token: TokenSources,
    /// Claims copied into request headers for the backend (claim → header name); a
    /// client's own headers of those names are always removed. Default none.
    pub claim_headers: BTreeMap<String, String>,
    /// The Close code sent to both peers when the token expires. Default 1008.
    pub expired_close_code: u16,
    /// The `realm` of the `WWW-Authenticate` challenge. Default `wsgate`.
    pub realm: String,
}

impl JwtConfig {
    /// The file holding the key (a key file, a secret, or a JWKS URL's extra CA), which a
    /// change on disk reloads like a certificate.
    pub fn key_file(&self) -> Option<PathBuf> {
        match &self.keys {
            JwtKeys::File { path, .. } | JwtKeys::Secret(path) => Some(path.clone()),
            JwtKeys::Jwks(j) => j.tls_ca.clone(),
        }
    }
}

/// Where a route's tokens are verified from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwtKeys {
    /// A PEM public key (RSA, EC P-256 or Ed25519) and the one algorithm it verifies.
    File {
        /// The PEM file (re-read on reload).
        path: PathBuf,
        /// The algorithm tokens must name.
        algorithm: JwtAlgorithm,
    },
    /// A file holding an HS256 shared secret (its bytes, a trailing newline dropped).
    Secret(PathBuf),
    /// A JWKS document fetched over HTTP(S).
    Jwks(JwksConfig),
}

/// A JWKS URL and how it is kept fresh.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// `http://` or `https://` URL of the key set.
    #[serde(deserialize_with = "jwks_url")]
    pub url: String,
    /// Time between background refreshes. Default 5m.
    #[serde(default = "default_refresh", deserialize_with = "duration")]
    pub refresh: Duration,
    /// One fetch must finish within this. Default 5s.
    #[serde(default = "default_fetch_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Extra CA certificates (PEM) trusted for an `https://` URL, besides the public roots.
    #[serde(default, deserialize_with = "opt_file")]
    pub tls_ca: Option<PathBuf>,
}

/// The places a token is read from, tried in this order: header, subprotocol, cookie, query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSources {
    /// `Authorization: Bearer <token>`. Default true.
    pub header: bool,
    /// A `Sec-WebSocket-Protocol` entry `<marker>.<token>`, for browsers (which cannot
    /// set headers); the client also offers `<marker>` itself, which wsgate answers with
    /// when the backend picks no subprotocol. Both are taken out of the backend's offer.
    /// Default none.
    pub subprotocol: Option<String>,
    /// A cookie of this name. Default none.
    pub cookie: Option<String>,
    /// A query parameter of this name. Default none.
    pub query: Option<String>,
}

impl Default for TokenSources {
    fn default() -> Self {
        TokenSources {
            header: true,
            subprotocol: None,
            cookie: None,
            query: None,
        }
    }
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}

fn jwks_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    match url.parse::<hyper::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Ok(url),
        _ => Err(serde::de::Error::custom(format!(
            "jwks url `{url}`: expected an http:// or https:// URL with a host"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    #[serde(default, deserialize_with = "opt_file")]
    key_file: Option<PathBuf>,
    #[serde(default)]
    algorithm: Option<JwtAlgorithm>,
    #[serde(default, deserialize_with = "opt_file")]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    jwks: Option<JwksConfig>,
    #[serde(default)]
    issuers: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default, deserialize_with = "super::parse::opt_duration")]
    leeway: Option<Duration>,
    #[serde(default)]
    token: TokenSources,
    #[serde(default)]
    claim_headers: BTreeMap<String, String>,
    #[serde(default)]
    expired_close_code: Option<u16>,
    #[serde(default)]
    realm: Option<String>,
}

impl TryFrom<RawJwt> for JwtConfig {
    type Error = String;
    fn try_from(raw: RawJwt) -> Result<Self, String> {
        let keys = match (raw.key_file, raw.secret_file, raw.jwks) {
            (Some(path), None, None) => {
                let algorithm = raw.algorithm.ok_or(
                    "jwt: `key_file` needs `algorithm` (RS256, PS256, ES256 or EdDSA), the one its tokens must name",
                )?;
                check_key_file(&path, algorithm)?;
                JwtKeys::File { path, algorithm }
            }
            (None, Some(path), None) => {
                if raw.algorithm.is_some_and(|a| a != JwtAlgorithm::HS256) {
                    return Err("jwt: `secret_file` verifies HS256 only".into());
                }
                read_secret(&path)?;
                JwtKeys::Secret(path)
            }
            (None, None, Some(jwks)) => {
                if raw.algorithm.is_some() {
                    return Err("jwt: with `jwks` each key's algorithm comes from the key set (`alg`, or `kty`/`crv`); expected no `algorithm`".into());
                }
                JwtKeys::Jwks(jwks)
            }
            _ => {
                return Err(
                    "jwt: expected exactly one of `key_file`, `secret_file` or `jwks`".into(),
                );
            }
        };
        let sources = &raw.token;
        if !sources.header
            && sources.subprotocol.is_none()
            && sources.cookie.is_none()
            && sources.query.is_none()
        {
            return Err("jwt.token: expected at least one place to read the token from".into());
        }
        if let Some(marker) = &sources.subprotocol
            && !crate::proto::headers::is_token(marker.as_bytes())
        {
            return Err(format!(
                "jwt.token.subprotocol `{marker}`: expected a subprotocol token (letters, digits, `.`, `-` …)"
            ));
        }
        for header in raw.claim_headers.values() {
            if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                return Err(format!(
                    "jwt.claim_headers: `{header}` is not a header name"
                ));
            }
        }
        let code = raw.expired_close_code.unwrap_or(1008);
        if !(matches!(code, 1000..=1003 | 1007..=1014) || (3000..=4999).contains(&code)) {
            return Err(format!(
                "jwt.expired_close_code {code}: expected a code a Close may carry (1000-1003, 1007-1014, 3000-4999)"
            ));
        }
        let realm = raw.realm.unwrap_or_else(|| "wsgate".into());
        if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
            return Err("jwt.realm: expected no quotes, backslashes or control characters".into());
        }
        Ok(JwtConfig {
            keys,
            issuers: raw.issuers,
            audiences: raw.audiences,
            leeway: raw.leeway.unwrap_or(Duration::from_secs(30)),
            token: raw.token,
            claim_headers: raw.claim_headers,
            expired_close_code: code,
            realm,
        })
    }
}

/// Reads a PEM public key and checks it verifies `algorithm`, so a key of the wrong type
/// fails at start rather than at the first token.
pub fn load_key_file(
    path: &std::path::Path,
    algorithm: JwtAlgorithm,
) -> Result<jsonwebtoken::DecodingKey, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("jwt: cannot read `{}`: {e}", path.display()))?;
    use jsonwebtoken::DecodingKey;
    let key = match algorithm {
        JwtAlgorithm::RS256 | JwtAlgorithm::PS256 => DecodingKey::from_rsa_pem(&pem),
        JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(&pem),
        JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
        JwtAlgorithm::HS256 => {
            return Err("jwt: HS256 takes its key from `secret_file`, not `key_file`".into());
        }
    };
    key.map_err(|e| {
        format!(
            "jwt: `{}` is not a PEM public key for {}: {e}",
            path.display(),
            algorithm.as_str()
        )
    })
}

fn check_key_file(path: &std::path::Path, algorithm: JwtAlgorithm) -> Result<(), String> {
    load_key_file(path, algorithm).map(drop)
}

/// Reads an HS256 secret: the file's bytes, without one trailing newline; at least 32
/// bytes (RFC 7518 §3.2: a key as long as the hash output).
pub fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("jwt: cannot read `{}`: {e}", path.display()))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.len() < 32 {
        return Err(format!(
            "jwt: secret in `{}` is {} bytes; expected at least 32 (RFC 7518 §3.2)",
            path.display(),
            bytes.len()
        ));
    }
    Ok(bytes)
}
