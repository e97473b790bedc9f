//! The YAML configuration: schema, defaults in one place, and validation.
//!
//! Every check that can name a place in the file happens while deserialising, so
//! serde attaches the line and column; errors read `file:line:column: what was expected`.
//! What needs several values is checked once, by [`Config::validate`], after the file is read.
//! This file holds the top-level schema; `routes` holds the routes, `tuning` the
//! per-connection keys (each declared once), `parse` the deserialisers that check values,
//! [`Config::parse`] and [`Config::load`], and `validate` the checks across values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub mod admin_token;
pub mod admission;
mod backend_url;
pub mod cidr;
pub mod dns;
pub mod forward_auth;
mod http2;
pub mod jwt;
mod parse;
pub mod pool;
mod routes;
pub mod tls;
mod tuning;
pub mod units;
mod validate;

pub use backend_url::BackendUrl;
pub use cidr::Cidr;
pub use http2::{Alpn, DEFAULT_ALPN, Http2Config};
pub use parse::ConfigError;
use parse::{
    buffer_budget, header_size, non_empty_listeners, nonzero_header_read, nonzero_proxy_header,
    nonzero_tls_handshake, opt_file, socket_addr, unique_routes,
};
pub(crate) use parse::{duration, nonzero_probe_interval, nonzero_probe_timeout};
pub use routes::{RouteConfig, Target};
pub use tuning::Tuning;

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
    /// Limits of HTTP/2 client connections (TLS listeners that offer `h2`).
    #[serde(default)]
    pub http2: Http2Config,
    /// How backends given by host name are resolved and re-resolved.
    #[serde(default)]
    pub dns: dns::DnsConfig,
    /// Worker threads, each a single-threaded runtime with its own accept socket per
    /// listener; 0 = one per available core. Default 0.
    #[serde(default)]
    pub workers: usize,
    /// Peers whose `X-Forwarded-For` and `Forwarded` are believed and appended to (the
    /// client address for policy is then the first untrusted hop from the right); every
    /// other peer's are replaced. Default none.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
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
    /// Client connections each listener holds before they relay (TLS handshake, request
    /// headers, plain HTTP) at most; beyond, wsgate stops accepting and new connections
    /// wait in the kernel's backlog. A connection leaves this count when it upgrades
    /// (then `max_connections` counts it) or closes. Read when the listener starts.
    /// Default 10000.
    pub max_pending_connections: usize,
    /// A client must finish its TLS handshake within this; above 0 (0 would end every
    /// handshake at once). Default 10s.
    #[serde(deserialize_with = "nonzero_tls_handshake")]
    pub tls_handshake_timeout: Duration,
    /// A client must send its complete request headers within this (slowloris); above 0
    /// (0 would close every connection before its request). Default 10s.
    #[serde(deserialize_with = "nonzero_header_read")]
    pub header_read_timeout: Duration,
    /// Request headers larger than this are answered 431 (at least 8KiB). Default 64KiB.
    #[serde(deserialize_with = "header_size")]
    pub max_header_bytes: u64,
    /// The bytes all relayed connections together may hold for frames over 16 KiB (a
    /// frame buffered whole up to 64 KiB, or the chunk a larger one streams through);
    /// once it is used up, connections stop reading such frames until room comes back, so
    /// the peers' TCP windows fill instead of wsgate's memory. At least 1MiB. Default 256MiB.
    #[serde(deserialize_with = "buffer_budget")]
    pub max_buffered_bytes: u64,
    /// On a `proxy_protocol` listener, the whole PROXY header must arrive within this
    /// after the connection is accepted; above 0. Default 5s.
    #[serde(deserialize_with = "nonzero_proxy_header")]
    pub proxy_header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_pending_connections: 10_000,
            tls_handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 << 10,
            max_buffered_bytes: 256 << 20,
            proxy_header_timeout: Duration::from_secs(5),
        }
    }
}

/// Live reload settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Connections of a removed or changed route are closed with 1012 spread evenly over
    /// this window, so their clients do not all reconnect at once; 0 = all at once.
    /// Default 10s.
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
#[serde(try_from = "RawListener")]
pub struct ListenerConfig {
    /// Address to bind, e.g. `0.0.0.0:8443` (port 0 picks a free port).
    pub bind: SocketAddr,
    /// TLS settings; plain WebSocket (`ws://`) when absent.
    pub tls: Option<TlsConfig>,
    /// Protocols offered in TLS ALPN, preferred first (`h2`, `http/1.1`); TLS listeners
    /// only (a plain listener speaks HTTP/1.1). Default `[h2, http/1.1]`.
    pub alpn: Option<Vec<Alpn>>,
    /// Client certificates (mTLS); TLS listeners only. Off when absent.
    pub client_auth: Option<tls::ClientAuthConfig>,
    /// Every connection starts with a PROXY protocol header (v1 or v2, before TLS), whose
    /// source address becomes the client's; only peers in `proxy_protocol_from` may
    /// connect. Default false.
    pub proxy_protocol: bool,
    /// The networks of the balancers that send the PROXY header; required with
    /// `proxy_protocol`, with no default (why: beside the check in `try_from`).
    pub proxy_protocol_from: Vec<Cidr>,
}

/// A listener as written; [`ListenerConfig`] once its keys are checked together.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    #[serde(deserialize_with = "socket_addr")]
    bind: SocketAddr,
    #[serde(default)]
    tls: Option<TlsConfig>,
    #[serde(default, deserialize_with = "http2::alpn_list")]
    alpn: Option<Vec<Alpn>>,
    #[serde(default)]
    client_auth: Option<tls::ClientAuthConfig>,
    #[serde(default)]
    proxy_protocol: bool,
    #[serde(default)]
    proxy_protocol_from: Option<Vec<Cidr>>,
}

impl TryFrom<RawListener> for ListenerConfig {
    type Error = String;
    fn try_from(raw: RawListener) -> Result<Self, String> {
        // No default for the sources. Anyone would let every client that reaches the port
        // claim any address (past per-IP caps, into the logs); loopback only would make a
        // listener behind a real balancer close every connection, an outage instead of
        // this error. `0.0.0.0/0` and `::/0` stay possible, written out, where the network
        // itself lets only the balancer in.
        let from = match (raw.proxy_protocol, raw.proxy_protocol_from) {
            (true, None) => {
                return Err(format!(
                    "listener {}: `proxy_protocol: true` needs `proxy_protocol_from`, the \
                     networks of the balancers that send the header (like [10.0.0.0/8])",
                    raw.bind
                ));
            }
            (true, Some(from)) if from.is_empty() => {
                return Err(format!(
                    "listener {}: `proxy_protocol_from` is empty, so every connection would \
                     be refused; expected the balancers' networks",
                    raw.bind
                ));
            }
            (false, Some(_)) => {
                return Err(format!(
                    "listener {}: `proxy_protocol_from` without `proxy_protocol: true` has no \
                     effect",
                    raw.bind
                ));
            }
            (_, from) => from.unwrap_or_default(),
        };
        Ok(ListenerConfig {
            bind: raw.bind,
            tls: raw.tls,
            alpn: raw.alpn,
            client_auth: raw.client_auth,
            proxy_protocol: raw.proxy_protocol,
            proxy_protocol_from: from,
        })
    }
}

impl ListenerConfig {
    /// The protocols this listener offers in ALPN (the default when `alpn` is not given).
    pub fn alpn(&self) -> &[Alpn] {
        self.alpn.as_deref().unwrap_or(&DEFAULT_ALPN)
    }
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
                // Load the pair now so a bad PEM or a key that does not match fails here, with a location.
                tls::check_pair(&cert, &key).map_err(|e| format!("tls: {e}"))?;
                Ok(TlsConfig::Files { cert, key })
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

/// The admin listener (metrics and health checks).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to bind, e.g. `127.0.0.1:9090`.
    #[serde(deserialize_with = "socket_addr")]
    pub bind: SocketAddr,
    /// `/readyz` answers 503 while relayed connections (and upgrades in progress) are at
    /// or above this fraction of `limits.max_connections`, so a load balancer sends new
    /// clients elsewhere before the cap refuses them; from above 0 to 1. Default off: with
    /// a single instance, not ready would only turn away clients there is still room for.
    #[serde(default, deserialize_with = "opt_ready_below")]
    pub ready_below: Option<f64>,
    /// The admin API's bearer token, read from this file (at start and on reload); the API
    /// (`/api/…`) is off (404) without a token. At most one of `token_file` and
    /// `token_env`. Default none.
    #[serde(default, deserialize_with = "admin_token::token_file")]
    pub token_file: Option<admin_token::AdminToken>,
    /// The admin API's bearer token, read from this environment variable. Default none.
    #[serde(default, deserialize_with = "admin_token::token_env")]
    pub token_env: Option<admin_token::AdminToken>,
}

impl AdminConfig {
    /// The admin API's token, when one is configured.
    pub fn token(&self) -> Option<&admin_token::AdminToken> {
        self.token_file.as_ref().or(self.token_env.as_ref())
    }
}

fn opt_ready_below<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let f = f64::deserialize(d)?;
    if f > 0.0 && f <= 1.0 {
        Ok(Some(f))
    } else {
        Err(serde::de::Error::custom(format!(
            "ready_below {f}: expected a fraction of limits.max_connections above 0 and at \
             most 1, like 0.9 (leave it out to turn the check off)"
        )))
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
    /// How long open connections get to finish their close handshakes; 0 = drop them at
    /// once. Default 30s.
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

#[cfg(test)]
mod tests {
    use std::path::Path;

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
