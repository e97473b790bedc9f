//! The routes of the configuration: what each one matches, where it sends connections,
//! and the per-connection tuning they inherit from `defaults` or override.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use hyper::header::HeaderName;

use super::forward_auth::{CLIENT_CERT_HEADER, ClientCertPolicy, ForwardAuthConfig, cert_header};
use super::parse::{opt_duration, opt_file, route_name};
use super::tuning::{TuningOverrides, key, tuning_keys};
use crate::config::admission::AdmissionConfig;
use crate::config::pool::{self, AllUnhealthy, BackendConfig, HealthCheck, PoolConfig};

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
    /// Forward plain (non-upgrade) HTTP requests to the backends; when false they get 426.
    /// Default true for routes with backends; always false on the built-in echo.
    pub http: bool,
    /// Send the client's `Host` to the backend (upgrades and plain requests) instead of the
    /// backend URL's. Default false.
    pub preserve_host: bool,
    /// Log a plain request's query string with its path. Default false (queries carry
    /// session ids and tokens).
    pub log_query: bool,
    /// Caps and rate of new WebSockets (`admission:`). Default none.
    pub admission: AdmissionConfig,
    /// The auth service asked before a request goes in; none when absent.
    pub forward_auth: Option<ForwardAuthConfig>,
    /// Whether requests need a verified client certificate (else 403). Default optional.
    pub client_cert: ClientCertPolicy,
    /// The header carrying a verified client certificate's subject and SANs to the
    /// backend (client-sent copies always removed). Default `X-Client-Cert-Subject`.
    pub client_cert_header: HeaderName,
    /// This route's overrides of `defaults`.
    pub tuning: TuningOverrides,
    /// JSON Web Tokens checked at the door. Default none.
    pub jwt: Option<crate::config::jwt::JwtConfig>,
}

/// Where a route sends its connections.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The built-in echo endpoint.
    Echo,
    /// A pool of backend WebSocket servers.
    Backends(crate::config::pool::PoolConfig),
}

/// Generates the raw route mapping: the route's own keys, then every tuning key as an
/// optional value read by that key's own deserializer.
macro_rules! raw_route {
    ({ $($fields:tt)* } $( $(#[$doc:meta])* $name:ident: $ty:ty = $default:expr, $de:tt; )*) => {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawRoute {
            $($fields)*
            $( #[serde(default, deserialize_with = "super::parse::some")] $name: Option<key::$name>, )*
        }

        impl RawRoute {
            /// The route's tuning keys, taken out of the raw mapping.
            fn take_tuning(&mut self) -> TuningOverrides {
                TuningOverrides { $( $name: self.$name.take().map(|k| k.0), )* }
            }
        }
    };
}

tuning_keys!(raw_route! {
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
    http: Option<bool>,
    #[serde(default)]
    preserve_host: bool,
    #[serde(default)]
    log_query: bool,
    #[serde(default)]
    sticky_cookie: Option<String>,
    #[serde(default, deserialize_with = "pool::source_list")]
    source_addresses: Option<Vec<std::net::IpAddr>>,
    #[serde(default)]
    admission: AdmissionConfig,
    forward_auth: Option<ForwardAuthConfig>,
    #[serde(default)]
    client_cert: ClientCertPolicy,
    #[serde(default, deserialize_with = "cert_header")]
    client_cert_header: Option<HeaderName>,
    jwt: Option<crate::config::jwt::JwtConfig>,
});

impl TryFrom<RawRoute> for RouteConfig {
    type Error = String;
    fn try_from(mut raw: RawRoute) -> Result<Self, String> {
        let tuning = raw.take_tuning();
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
            (true, true) if raw.source_addresses.is_some() => {
                return Err(format!(
                    "route `{name}`: `source_addresses` needs backends (the built-in echo opens no connection)"
                ));
            }
            (true, true) => Target::Echo,
            (false, false) => {
                let defaults = PoolConfig::default();
                if let Some(cookie) = &raw.sticky_cookie
                    && !crate::proto::headers::is_token(cookie.as_bytes())
                {
                    return Err(format!(
                        "route `{name}`: sticky_cookie `{cookie}` must be a cookie name (letters, digits, `-`, `_` …)"
                    ));
                }
                Target::Backends(PoolConfig {
                    balance: pool::balance(raw.balance.as_deref(), raw.hash_on.as_deref())
                        .map_err(|e| format!("route `{name}`: {e}"))?,
                    backends: raw.backends,
                    retries: raw.retries.unwrap_or(defaults.retries),
                    health_check: raw.health_check,
                    max_fails: raw.max_fails.unwrap_or(defaults.max_fails),
                    fail_timeout: raw.fail_timeout.unwrap_or(defaults.fail_timeout),
                    close_on_unhealthy: raw.close_on_unhealthy,
                    all_unhealthy: raw.all_unhealthy,
                    sticky_cookie: raw.sticky_cookie,
                    source_addresses: raw.source_addresses.unwrap_or_default(),
                })
            }
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
        let http = match (&target, raw.http) {
            (Target::Echo, Some(true)) => {
                return Err(format!(
                    "route `{name}`: `http: true` needs backends (the built-in echo serves only upgrades)"
                ));
            }
            (Target::Echo, _) => false,
            (Target::Backends(_), http) => http.unwrap_or(true),
        };
        if raw.log_query
            && let Some(param) = raw.jwt.as_ref().and_then(|j| j.token.query.as_ref())
        {
            return Err(format!(
                "route `{name}`: `log_query: true` would log the token of `jwt.token.query: {param}`; expected one of them"
            ));
        }
        Ok(RouteConfig {
            jwt: raw.jwt,
            http,
            preserve_host: raw.preserve_host,
            log_query: raw.log_query,
            name,
            path,
            exact: raw.exact,
            host: raw.host.map(|h| h.to_ascii_lowercase()),
            target,
            origins: raw.origins,
            tls_ca: raw.tls_ca,
            max_connections: raw.max_connections,
            admission: raw.admission,
            forward_auth: raw.forward_auth,
            client_cert: raw.client_cert,
            client_cert_header: raw.client_cert_header.unwrap_or(CLIENT_CERT_HEADER),
            tuning,
        })
    }
}
