//! The YAML configuration: schema, defaults in one place, and validation.
//!
//! Every check that can name a place in the file happens while deserialising, so
//! serde attaches the line and column; errors read `file:line:column: what was expected`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::pool_config::{self, AllUnhealthy, BackendConfig, HealthCheck, PoolConfig};
use crate::units::{parse_duration, parse_size};

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

/// The whole wsgate configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client-facing listeners (plain `ws` or TLS `wss`); at least one.
    #[serde(deserialize_with = "non_empty_listeners")]
    pub listeners: Vec<ListenerConfig>,
    /// Admin listener for metrics and health checks (optional; off when absent).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Per-connection settings that routes inherit unless they override them.
    #[serde(default)]
    pub defaults: Tuning,
    /// Routes, matched by host and longest path prefix.
    #[serde(deserialize_with = "unique_routes")]
    pub routes: Vec<RouteConfig>,
    /// Logging format and level.
    #[serde(default)]
    pub log: LogConfig,
    /// Graceful shutdown settings.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Live reload settings.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Process-wide connection limits and client-hop timeouts.
    #[serde(default)]
    pub limits: Limits,
    /// What is measured.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Worker threads, each a single-threaded runtime with its own accept socket per
    /// listener; 0 = one per available core. Default 0.
    #[serde(default)]
    pub workers: usize,
}

/// What is measured.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Count messages, frames and bytes per route and direction. Default true; turning it
    /// off exists to measure what it costs (the benchmark does).
    pub per_frame: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { per_frame: true }
    }
}

/// Process-wide limits and the timeouts of the client hop before the upgrade.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Relayed connections (and upgrades in progress) at most; beyond → 503. Default 10000.
    pub max_connections: usize,
    /// A client must finish its TLS handshake within this. Default 10s.
    #[serde(deserialize_with = "duration")]
    pub tls_handshake_timeout: Duration,
    /// A client must send its complete request headers within this (slowloris). Default 10s.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// Request headers larger than this are answered 431 (at least 8KiB). Default 64KiB.
    #[serde(deserialize_with = "size")]
    pub max_header_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 << 10,
        }
    }
}

/// Live reload settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Connections of a removed or changed route are closed with 1012 spread evenly over
    /// this window, so their clients do not all reconnect at once. Default 10s.
    #[serde(deserialize_with = "duration")]
    pub drain_window: Duration,
    /// Reload when the config file or a certificate file changes on disk. Default true.
    pub watch: bool,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig {
            drain_window: Duration::from_secs(10),
            watch: true,
        }
    }
}

/// One client-facing listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind, e.g. `0.0.0.0:8443` (port 0 picks a free port).
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
    /// TLS settings; plain WebSocket (`ws://`) when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// TLS for a listener: certificate files, or a certificate generated in memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawTls")]
pub enum TlsConfig {
    /// PEM certificate chain and private key files (paths relative to the working directory).
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key (PKCS#8, PKCS#1 or SEC1).
        key: PathBuf,
    },
    /// A throw-away certificate for `localhost` generated at start (local use only).
    SelfSigned,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default, deserialize_with = "opt_file")]
    cert: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt_file")]
    key: Option<PathBuf>,
    #[serde(default)]
    self_signed: bool,
}

impl TryFrom<RawTls> for TlsConfig {
    type Error = String;
    fn try_from(raw: RawTls) -> Result<Self, String> {
        match (raw.cert, raw.key, raw.self_signed) {
            (None, None, true) => Ok(TlsConfig::SelfSigned),
            (Some(cert), Some(key), false) => {
                let files = TlsConfig::Files { cert, key };
                // Load the pair now so a bad PEM or a key that does not match fails here, with a location.
                crate::tls::server_config(&files).map_err(|e| format!("tls: {e}"))?;
                Ok(files)
            }
            (_, _, true) => {
                Err("tls: expected either `self_signed: true` or `cert` and `key`, not both".into())
            }
            _ => Err(
                "tls: expected both `cert` and `key` file paths (or `self_signed: true`)".into(),
            ),
        }
    }
}

fn readable_file(path: &Path, what: &str) -> Result<(), String> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| format!("{what}: cannot open `{}`: {e}", path.display()))
}

/// The admin listener (metrics and health checks).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to bind, e.g. `127.0.0.1:9090`.
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
}

/// Per-connection timeouts and limits; every field has a default and every route may override it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tuning {
    /// Keepalive ping after this long without a frame from a peer; 0 disables. Default 20s.
    #[serde(deserialize_with = "duration")]
    pub ping_interval: Duration,
    /// A peer that does not answer our ping within this is dead. Default 10s.
    #[serde(deserialize_with = "duration")]
    pub ping_timeout: Duration,
    /// Close after this long without a data frame either way; 0 disables. Default 0s.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// How long to wait for the Close reply before dropping the sockets. Default 5s.
    #[serde(deserialize_with = "duration")]
    pub close_timeout: Duration,
    /// A frame that cannot be written to a peer within this closes the connection (the peer
    /// stopped reading); 0 disables. Default 30s.
    #[serde(deserialize_with = "duration")]
    pub write_timeout: Duration,
    /// Backend connect plus backend upgrade must finish within this (else 504). Default 10s.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Largest frame payload accepted from either peer (else close 1009). Default 16MiB.
    #[serde(deserialize_with = "size")]
    pub max_frame_bytes: u64,
    /// Largest message across its fragments (else close 1009). Default 64MiB.
    #[serde(deserialize_with = "size")]
    pub max_message_bytes: u64,
    /// Check that text messages are UTF-8 (else close 1007). Default true.
    pub validate_utf8: bool,
    /// Messages per second a client may send (bursts up to one second's worth); over it the
    /// client gets close 1008. 0 disables. Default 0.
    pub max_message_rate: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(10),
            idle_timeout: Duration::ZERO,
            close_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_frame_bytes: 16 << 20,
            max_message_bytes: 64 << 20,
            validate_utf8: true,
            max_message_rate: 0,
        }
    }
}

/// The optional per-route overrides of [`Tuning`] (same names, same units).
///
/// Its fields sit directly in the route's mapping; serde's `flatten` is avoided because it
/// buffers the input and loses the line and column of errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TuningOverrides {
    ping_interval: Option<Duration>,
    ping_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    close_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    handshake_timeout: Option<Duration>,
    max_frame_bytes: Option<u64>,
    max_message_bytes: Option<u64>,
    validate_utf8: Option<bool>,
    max_message_rate: Option<u32>,
}

impl TuningOverrides {
    /// The defaults with this route's overrides applied.
    pub fn apply(&self, base: &Tuning) -> Tuning {
        Tuning {
            ping_interval: self.ping_interval.unwrap_or(base.ping_interval),
            ping_timeout: self.ping_timeout.unwrap_or(base.ping_timeout),
            idle_timeout: self.idle_timeout.unwrap_or(base.idle_timeout),
            close_timeout: self.close_timeout.unwrap_or(base.close_timeout),
            write_timeout: self.write_timeout.unwrap_or(base.write_timeout),
            handshake_timeout: self.handshake_timeout.unwrap_or(base.handshake_timeout),
            max_frame_bytes: self.max_frame_bytes.unwrap_or(base.max_frame_bytes),
            max_message_bytes: self.max_message_bytes.unwrap_or(base.max_message_bytes),
            validate_utf8: self.validate_utf8.unwrap_or(base.validate_utf8),
            max_message_rate: self.max_message_rate.unwrap_or(base.max_message_rate),
        }
    }
}

/// One route: which requests it takes and where it sends them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRoute")]
pub struct RouteConfig {
    /// Unique name, used in logs and metric labels.
    pub name: String,
    /// Path prefix (segment boundary) or exact path, normalised.
    pub path: String,
    /// Match `path` exactly instead of as a prefix. Default false.
    pub exact: bool,
    /// Only requests for this host (case-insensitive, port ignored). Default any host.
    pub host: Option<String>,
    /// Where the connections go.
    pub target: Target,
    /// Allowed `Origin` values; any origin when empty.
    pub origins: Vec<String>,
    /// Extra CA certificates (PEM) trusted for `wss://` backends, besides the public roots.
    pub tls_ca: Option<PathBuf>,
    /// Connections on this route at most; beyond → 503. Default unlimited (only the global cap).
    pub max_connections: Option<usize>,
    /// This route's overrides of `defaults`.
    pub tuning: TuningOverrides,
}

/// Where a route sends its connections.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The built-in echo endpoint.
    Echo,
    /// A pool of backend WebSocket servers.
    Backends(crate::pool_config::PoolConfig),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(deserialize_with = "route_name")]
    name: String,
    path: String,
    #[serde(default)]
    exact: bool,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    backends: Vec<BackendConfig>,
    #[serde(default)]
    balance: Option<String>,
    #[serde(default)]
    hash_on: Option<String>,
    #[serde(default)]
    retries: Option<u32>,
    #[serde(default)]
    health_check: Option<HealthCheck>,
    #[serde(default)]
    max_fails: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    fail_timeout: Option<Duration>,
    #[serde(default)]
    close_on_unhealthy: bool,
    #[serde(default)]
    all_unhealthy: AllUnhealthy,
    #[serde(default)]
    origins: Vec<String>,
    #[serde(default, deserialize_with = "opt_file")]
    tls_ca: Option<PathBuf>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    max_message_rate: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    ping_interval: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    ping_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    close_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    write_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    handshake_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_size")]
    max_frame_bytes: Option<u64>,
    #[serde(default, deserialize_with = "opt_size")]
    max_message_bytes: Option<u64>,
    #[serde(default)]
    validate_utf8: Option<bool>,
}

impl TryFrom<RawRoute> for RouteConfig {
    type Error = String;
    fn try_from(raw: RawRoute) -> Result<Self, String> {
        let name = raw.name;
        if !raw.path.starts_with('/') {
            return Err(format!(
                "route `{name}`: path `{}` must start with `/`",
                raw.path
            ));
        }
        let path = crate::route::normalize_path(&raw.path)
            .map_err(|e| format!("route `{name}`: path `{}`: {e}", raw.path))?;
        let target = match (raw.echo, raw.backends.is_empty()) {
            (true, true) => Target::Echo,
            (false, false) => Target::Backends(PoolConfig {
                balance: pool_config::balance(raw.balance.as_deref(), raw.hash_on.as_deref())
                    .map_err(|e| format!("route `{name}`: {e}"))?,
                backends: raw.backends,
                retries: raw.retries.unwrap_or(2),
                health_check: raw.health_check,
                max_fails: raw.max_fails.unwrap_or(3),
                fail_timeout: raw.fail_timeout.unwrap_or(Duration::from_secs(10)),
                close_on_unhealthy: raw.close_on_unhealthy,
                all_unhealthy: raw.all_unhealthy,
            }),
            (true, false) => {
                return Err(format!(
                    "route `{name}`: expected `echo: true` or `backends`, not both"
                ));
            }
            (false, true) => {
                return Err(format!(
                    "route `{name}`: expected `backends: [ws://…]` or `echo: true`"
                ));
            }
        };
        Ok(RouteConfig {
            name,
            path,
            exact: raw.exact,
            host: raw.host.map(|h| h.to_ascii_lowercase()),
            target,
            origins: raw.origins,
            tls_ca: raw.tls_ca,
            max_connections: raw.max_connections,
            tuning: TuningOverrides {
                ping_interval: raw.ping_interval,
                ping_timeout: raw.ping_timeout,
                idle_timeout: raw.idle_timeout,
                close_timeout: raw.close_timeout,
                write_timeout: raw.write_timeout,
                handshake_timeout: raw.handshake_timeout,
                max_frame_bytes: raw.max_frame_bytes,
                max_message_bytes: raw.max_message_bytes,
                validate_utf8: raw.validate_utf8,
                max_message_rate: raw.max_message_rate,
            },
        })
    }
}

/// Log output settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`. Default text.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax, e.g. `info` or `wsgate=debug`. Default `info`.
    pub level: String,
    /// Also log a line when a connection opens. Default false.
    pub connection_open: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
            connection_open: false,
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable key=value lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Graceful shutdown settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long open connections get to finish their close handshakes. Default 30s.
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: Duration::from_secs(30),
        }
    }
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

fn non_empty_listeners<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ListenerConfig>, D::Error> {
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
fn unique_routes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RouteConfig>, D::Error> {
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

fn route_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
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
fn opt_file<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    scalar(d, "a file path", |text| {
        let path = PathBuf::from(text);
        readable_file(&path, "file")?;
        Ok(Some(path))
    })
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

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    scalar(d, "an address like 127.0.0.1:8443", |text| {
        text.parse()
            .map_err(|_| format!("invalid address `{text}`: expected IP:PORT like 127.0.0.1:8443"))
    })
}

/// A duration field such as `20s` (also for config structs in other modules).
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    scalar(d, "a duration like 20s", parse_duration)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    scalar(d, "a size like 1MiB", parse_size)
}

fn opt_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    size(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_are_valid() {
        for file in ["config/wsgate.yaml", "config/container.yaml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                config
                    .routes
                    .iter()
                    .any(|r| r.name == "echo" && r.target == Target::Echo)
            );
            assert!(config.admin.is_some());
        }
    }
}
