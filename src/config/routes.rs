//! The routes of the configuration: what each one matches, where it sends connections,
//! and the per-connection [`Tuning`] they inherit from `defaults` or override.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::parse::{duration, opt_duration, opt_file, opt_size, route_name, size};
use crate::config::pool::{self, AllUnhealthy, BackendConfig, HealthCheck, PoolConfig};

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
    /// Most frames one message may have, its first frame and continuations together (else
    /// close 1009): zero-length continuations never reach `max_message_bytes`. 0 disables.
    /// Default 4096 (a 64MiB message in 16KiB fragments).
    pub max_message_frames: u32,
    /// Check that text messages are UTF-8 (else close 1007). Default true.
    pub validate_utf8: bool,
    /// Messages per second a client may send (bursts up to one second's worth); over it the
    /// client gets close 1008. Every data frame counts, so a message in N fragments counts N
    /// and a message that never ends is limited too. 0 disables. Default 0.
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
            max_message_frames: 4096,
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
    max_message_frames: Option<u32>,
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
            max_message_frames: self.max_message_frames.unwrap_or(base.max_message_frames),
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
    Backends(crate::config::pool::PoolConfig),
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
    max_message_frames: Option<u32>,
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
        let path = crate::proto::path::normalize_path(&raw.path)
            .map_err(|e| format!("route `{name}`: path `{}`: {e}", raw.path))?;
        let target = match (raw.echo, raw.backends.is_empty()) {
            (true, true) => Target::Echo,
            (false, false) => Target::Backends(PoolConfig {
                balance: pool::balance(raw.balance.as_deref(), raw.hash_on.as_deref())
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
                max_message_frames: raw.max_message_frames,
                validate_utf8: raw.validate_utf8,
                max_message_rate: raw.max_message_rate,
            },
        })
    }
}
