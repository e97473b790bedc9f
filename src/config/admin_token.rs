//! The admin API's bearer token: read from a file or an environment variable while the
//! config is read (so a missing or empty one fails with the key's line and column), and
//! never shown by `Debug`.

use std::fmt;
use std::path::PathBuf;

use serde::Deserializer;

use super::parse::scalar;

/// A secret that prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret's bytes, for a constant-time comparison.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the token came from, and the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// The file (`admin.token_file`) or the variable's name (`admin.token_env`).
    pub source: TokenSource,
    /// The token, surrounding whitespace removed.
    pub token: Secret,
}

/// Where an admin token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file holding the token.
    File(PathBuf),
    /// An environment variable holding the token.
    Env(String),
}

/// Shortest token accepted: a guessable token would make the API open to anyone who
/// reaches the admin port.
const MIN_TOKEN_BYTES: usize = 16;

fn checked(token: &str, what: &str) -> Result<Secret, String> {
    let token = token.trim();
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "{what}: the token has {} bytes; expected at least {MIN_TOKEN_BYTES} (like the \
             output of `openssl rand -hex 32`)",
            token.len()
        ));
    }
    if token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "{what}: the token must be printable ASCII without spaces (it travels in an \
             `Authorization: Bearer` header)"
        ));
    }
    Ok(Secret(token.to_string()))
}

/// `admin.token_file`: a file path whose contents are the token.
pub(super) fn token_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AdminToken>, D::Error> {
    scalar(d, "a file path", |text| {
        let path = PathBuf::from(text);
        let contents = std::fs::read_to_string(&path)
            .map_err(|e| format!("token_file: cannot read `{}`: {e}", path.display()))?;
        let token = checked(&contents, "token_file")?;
        Ok(Some(AdminToken {
            source: TokenSource::File(path),
            token,
        }))
    })
}

/// `admin.token_env`: the name of an environment variable whose value is the token.
pub(super) fn token_env<'de, D: Deserializer<'de>>(d: D) -> Result<Option<AdminToken>, D::Error> {
    scalar(d, "an environment variable name", |name| {
        let value =
            std::env::var(name).map_err(|e| format!("token_env: variable `{name}`: {e}"))?;
        let token = checked(&value, "token_env")?;
        Ok(Some(AdminToken {
            source: TokenSource::Env(name.to_string()),
            token,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_spaced_tokens_are_refused_and_debug_hides_the_token() {
        assert!(checked("short", "t").is_err());
        assert!(checked("0123456789abcdef 0123", "t").is_err());
        let ok = checked("  0123456789abcdef0123\n", "t").unwrap();
        assert_eq!(ok.expose(), b"0123456789abcdef0123");
        assert_eq!(format!("{ok:?}"), "<redacted>");
    }
}
