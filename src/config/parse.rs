//! Turning YAML text into a [`Config`]: the deserialisers that check single values
//! (durations, sizes, addresses, readable files, unique route names) inside serde's
//! visitors, and the `file:line:column: message` errors built from serde's location.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{Config, ListenerConfig, RouteConfig};
use crate::config::units::{parse_duration, parse_size};

/// A configuration that could not be loaded, with the place in the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The file that was asked for.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The YAML did not match the schema; `line`/`column` are 1-based.
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        /// File name (or label) of the text.
        origin: String,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// What was wrong and what was expected.
        message: String,
    },
}

impl Config {
    /// Parses YAML text; `origin` names the text in error messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let mut message = e.to_string();
            if let Some(at) = message.rfind(" at line ") {
                message.truncate(at);
            }
            ConfigError::Invalid {
                origin: origin.to_string(),
                line,
                column,
                message,
            }
        })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }
}

pub(super) fn non_empty_listeners<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<ListenerConfig>, D::Error> {
    let listeners = Vec::<ListenerConfig>::deserialize(d)?;
    if listeners.is_empty() {
        return Err(de::Error::custom(
            "listeners: expected at least one listener",
        ));
    }
    Ok(listeners)
}

thread_local! {
    /// Names of the routes parsed so far in the list being deserialised. Parsing is
    /// synchronous on one thread, and `unique_routes` clears it around each list, so a
    /// repeated name is caught while its own scalar is read and the error points at it.
    static ROUTE_NAMES: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

/// Deserialises the route list (names are checked for uniqueness by [`route_name`]).
pub(super) fn unique_routes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RouteConfig>, D::Error> {
    struct Routes;
    impl<'de> Visitor<'de> for Routes {
        type Value = Vec<RouteConfig>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of routes")
        }
        // Inside the visitor, so an empty list is reported at its own line and column.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut routes = Vec::new();
            while let Some(route) = seq.next_element()? {
                routes.push(route);
            }
            if routes.is_empty() {
                return Err(de::Error::custom("routes: expected at least one route"));
            }
            Ok(routes)
        }
    }
    ROUTE_NAMES.with(|names| names.borrow_mut().clear());
    let routes = d.deserialize_seq(Routes);
    ROUTE_NAMES.with(|names| names.borrow_mut().clear());
    routes
}

pub(super) fn route_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    scalar(d, "a route name", |name| {
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if name.is_empty() || !name.chars().all(valid) {
            return Err(format!(
                "route name `{name}`: expected letters, digits, `-`, `_` or `.`"
            ));
        }
        if !ROUTE_NAMES.with(|names| names.borrow_mut().insert(name.to_string())) {
            return Err(format!(
                "duplicate route name `{name}`: expected every route name to be unique"
            ));
        }
        Ok(name.to_string())
    })
}

/// A file path that must be readable now (certificates, keys, CA files).
pub(super) fn opt_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    scalar(d, "a file path", |text| {
        let path = PathBuf::from(text);
        readable_file(&path, "file")?;
        Ok(Some(path))
    })
}

fn readable_file(path: &Path, what: &str) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("{what}: cannot open `{}`: {e}", path.display()))
}

/// Parses a scalar with `parse` inside serde's visitor, so a failure carries the scalar's own
/// line and column (an error raised after deserialising would only get the enclosing mapping's).
fn scalar<'de, D, T>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct Scalar<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for Scalar<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.parse)(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            (self.parse)(&v.to_string()).map_err(E::custom)
        }
    }
    d.deserialize_any(Scalar { expecting, parse })
}

pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    scalar(d, "an address like 127.0.0.1:8443", |text| {
        text.parse()
            .map_err(|_| format!("invalid address `{text}`: expected IP:PORT like 127.0.0.1:8443"))
    })
}

/// A duration field such as `20s` (also for config structs in other modules).
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    scalar(d, "a duration like 20s", parse_duration)
}

pub(super) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

pub(super) fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    scalar(d, "a size like 1MiB", parse_size)
}

pub(super) fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size(d).map(Some)
}
