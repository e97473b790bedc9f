//! Turning YAML text into a [`Config`]: the deserialisers that check single values
//! (durations, sizes, addresses, readable files, unique route names) inside serde's
//! visitors, and the `file:line:column: message` errors built from serde's location.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
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
    /// Values that parse but do not fit together (see `Config::validate`).
    #[error("{origin}: {message}")]
    Rule {
        /// File name (or label) of the text.
        origin: String,
        /// Which route or section, which keys, and what is allowed.
        message: String,
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
        clear_binds();
        let parsed = serde_norway::from_str(text);
        clear_binds();
        let config: Config = parsed.map_err(|e| {
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
        })?;
        config.validate(origin)?;
        Ok(config)
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

/// A file path that must be readable now.
pub(super) fn file<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    scalar(d, "a file path", |text| {
        let path = PathBuf::from(text);
        readable_file(&path, "file")?;
        Ok(path)
    })
}

fn readable_file(path: &Path, what: &str) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("{what}: cannot open `{}`: {e}", path.display()))
}

/// Parses a scalar with `parse` inside serde's visitor, so a failure carries the scalar's own
/// line and column (an error raised after deserialising would only get the enclosing mapping's).
pub(super) fn scalar<'de, D, T>(
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

thread_local! {
    /// Addresses bound by the file being parsed, so far (`Config::parse` clears it around
    /// each parse). An address that overlaps an earlier one is refused while its own
    /// scalar is read, so the error points at the second one.
    static BINDS: RefCell<Vec<SocketAddr>> = const { RefCell::new(Vec::new()) };
}

/// Forgets the addresses of the previous parse.
pub(super) fn clear_binds() {
    BINDS.with(|binds| binds.borrow_mut().clear());
}

/// An address to listen on (a listener's or the admin's), refused when it overlaps one
/// bound earlier in the file.
pub(super) fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    scalar(d, "an address like 127.0.0.1:8443", |text| {
        let addr: SocketAddr = text.parse().map_err(|_| {
            format!("invalid address `{text}`: expected IP:PORT like 127.0.0.1:8443")
        })?;
        BINDS.with(|binds| {
            let mut binds = binds.borrow_mut();
            if let Some(earlier) = binds.iter().find(|&&earlier| overlaps(earlier, addr)) {
                return Err(format!(
                    "`{addr}` overlaps `{earlier}` bound earlier in this file (the same port on \
                     addresses that meet); expected every listener on its own address and port"
                ));
            }
            binds.push(addr);
            Ok(addr)
        })
    })
}

/// Whether two binds would take the same connections. Our listening sockets set
/// `SO_REUSEPORT`, so the kernel would let them share a port instead of refusing: the same
/// address, `0.0.0.0` with any IPv4 address, and `[::]` (dual-stack, as bound) with any
/// address. Port 0 never overlaps: each such bind gets a port of its own.
pub(super) fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() != b.port() || a.port() == 0 {
        return false;
    }
    let (a, b) = (canonical(a.ip()), canonical(b.ip()));
    a == b || covers(a, b) || covers(b, a)
}

/// An IPv4-mapped IPv6 address is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether a bind on `wild` takes the connections to `other` (same port).
fn covers(wild: IpAddr, other: IpAddr) -> bool {
    match wild {
        IpAddr::V4(w) => w.is_unspecified() && other.is_ipv4(),
        IpAddr::V6(w) => w.is_unspecified(),
    }
}

/// A duration field such as `20s` (also for config structs in other modules).
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    scalar(d, "a duration like 20s", parse_duration)
}

pub(super) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A size that must be at least `min` bytes (`floor` says so in words); `zero` says what a
/// smaller one would do, `like` is an example.
fn sized_from(text: &str, min: u64, floor: &str, zero: &str, like: &str) -> Result<u64, String> {
    let value = parse_size(text)?;
    if value < min {
        return Err(format!(
            "`{text}` {zero}; expected a size {floor}, like {like}"
        ));
    }
    Ok(value)
}

/// Declares deserializers of sizes with a floor, each saying what a value below it would do.
macro_rules! floored_sizes {
    ($( $(#[$doc:meta])* $name:ident: $min:expr, $floor:literal, $zero:literal, $like:literal; )*) => {$(
        $(#[$doc])*
        pub(crate) fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
            scalar(d, concat!("a size like ", $like), |t| sized_from(t, $min, $floor, $zero, $like))
        }
    )*};
}

floored_sizes! {
    /// `max_frame_bytes`.
    nonzero_frame: 1, "above 0", "would refuse every frame that carries a payload", "16MiB";
    /// `max_message_bytes`.
    nonzero_message: 1, "above 0", "would refuse every message that carries a payload", "64MiB";
    /// `limits.max_header_bytes`: hyper reads request heads into at least 8 KiB.
    header_size: 8 << 10, "of at least 8KiB", "is below the 8KiB that request heads are read into", "64KiB";
    /// `limits.max_buffered_bytes`: one connection's large frame takes up to 64 KiB of it.
    buffer_budget: 1 << 20, "of at least 1MiB", "would leave too little room for large frames to be relayed", "256MiB";
    /// `http2.initial_*_window_bytes`: HTTP/2's smallest window (RFC 9113 §6.9.2).
    h2_window: 65_535, "of at least 65535 bytes", "is below the smallest window HTTP/2 allows", "256KiB";
    /// `http2.max_frame_bytes`: HTTP/2's smallest largest-frame (RFC 9113 §6.5.2).
    h2_frame: 16 << 10, "of at least 16KiB", "is below the smallest frame size HTTP/2 allows", "16KiB";
}

/// A value read by its own `Deserialize` (the tuning table names a deserializer for every key).
pub(super) fn plain<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    T::deserialize(d)
}

/// An optional key read by `T`'s `Deserialize`; absent keys are `None` through `default`.
pub(super) fn some<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A duration that must be above 0; `zero` says what 0 would do, `like` is an example.
fn nonzero(text: &str, zero: &str, like: &str) -> Result<Duration, String> {
    let value = parse_duration(text)?;
    if value.is_zero() {
        return Err(format!(
            "`{text}` {zero}; expected a duration above 0, like {like}"
        ));
    }
    Ok(value)
}

/// Declares deserializers of durations that must be above 0, each saying what 0 would do.
macro_rules! nonzero_durations {
    ($( $(#[$doc:meta])* $name:ident: $zero:literal, $like:literal; )*) => {$(
        $(#[$doc])*
        pub(crate) fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            scalar(d, concat!("a duration above 0 like ", $like), |t| nonzero(t, $zero, $like))
        }
    )*};
}

nonzero_durations! {
    /// `close_timeout`.
    nonzero_close: "would drop the sockets before the peer could answer a Close", "5s";
    /// `handshake_timeout`.
    nonzero_handshake: "would answer every upgrade 504", "10s";
    /// `http_connect_timeout`.
    nonzero_http_connect: "would fail every new backend connection", "10s";
    /// `http_response_timeout`.
    nonzero_http_response: "would answer every plain request 504", "60s";
    /// `http_pool_idle_timeout` (`http_pool_idle_max: 0` turns reuse off).
    nonzero_http_pool_idle: "would close every idle connection at once (set http_pool_idle_max: 0 instead)", "60s";
    /// `limits.tls_handshake_timeout`.
    nonzero_tls_handshake: "would end every TLS handshake before it starts", "10s";
    /// `limits.header_read_timeout`.
    nonzero_header_read: "would close every connection before its request is read", "10s";
    /// `limits.proxy_header_timeout`.
    nonzero_proxy_header: "would close every connection before its PROXY header is read", "5s";
    /// `health_check.interval`.
    nonzero_probe_interval: "would probe without pause", "5s";
    /// `health_check.timeout`.
    nonzero_probe_timeout: "would fail every probe", "2s";
    /// `dns.min_interval`.
    nonzero_dns_interval: "would ask without pause", "1s";
    /// `dns.timeout`.
    nonzero_dns_timeout: "would fail every lookup", "5s";
}
