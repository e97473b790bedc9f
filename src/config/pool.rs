//! Configuration of a route's backend pool: backends with weights, balancing, retries,
//! active health checks and passive ejection.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::config::BackendUrl;

/// A route's backends and how connections are spread over them.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// The backends, at least one.
    pub backends: Vec<BackendConfig>,
    /// How a backend is chosen for a new connection. Default round_robin.
    pub balance: Balance,
    /// Further backends tried when one fails before any 101 (refused, timeout, 5xx). Default 2.
    pub retries: u32,
    /// Active health checks; none by default.
    pub health_check: Option<HealthCheck>,
    /// Consecutive connect failures that eject a backend (passive check); 0 = off. Default 3.
    pub max_fails: u32,
    /// How long an ejected backend gets no new connections; 0 = an ejection that ends at
    /// once (`max_fails: 0` turns ejection off). Default 10s.
    pub fail_timeout: Duration,
    /// Close the connections of a backend that turns unhealthy (1012, spread over
    /// `reload.drain_window`). Default false.
    pub close_on_unhealthy: bool,
    /// With every backend unhealthy: `fail` (503) or `try` them anyway. Default fail.
    pub all_unhealthy: AllUnhealthy,
    /// A cookie wsgate sets to pin a client to the backend that served it, whatever the
    /// balance (an opaque backend id; Path=/, HttpOnly, SameSite=Lax, Secure over TLS).
    /// None by default.
    pub sticky_cookie: Option<String>,
    /// Local addresses backend connections are made from, taken in turn (a backend's own
    /// list replaces it); empty = the kernel's choice. Default empty.
    pub source_addresses: Vec<IpAddr>,
}

/// One backend of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Where it is.
    pub url: BackendUrl,
    /// Relative share of connections (1–1000). Default 1.
    pub weight: u32,
    /// Local addresses its connections are made from, instead of the pool's. Default none.
    pub source_addresses: Option<Vec<IpAddr>>,
}

impl BackendConfig {
    /// The local addresses connections to this backend are made from (empty: any).
    pub fn sources<'a>(&'a self, pool: &'a PoolConfig) -> &'a [IpAddr] {
        self.source_addresses
            .as_deref()
            .unwrap_or(&pool.source_addresses)
    }
}

/// Balancing strategies.
#[derive(Debug, Clone, PartialEq)]
pub enum Balance {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Fewest live connections per unit of weight.
    LeastConnections,
    /// Power of two choices: of two random backends, the one with fewer connections per weight.
    RandomTwo,
    /// Consistent hashing of a request key (sticky sessions; adding a backend moves few keys).
    Hash(HashOn),
}

/// What a `hash` balance keys on.
#[derive(Debug, Clone, PartialEq)]
pub enum HashOn {
    /// A request header (case-insensitive name).
    Header(String),
    /// A cookie.
    Cookie(String),
    /// A query parameter.
    Query(String),
    /// The client's IP address.
    ClientIp,
}

/// Active health check: a real WebSocket upgrade to `path` on each backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// Path (and query) of the probe upgrade. Default `/`.
    pub path: String,
    /// Time between probes; above 0 (0 would probe without pause). Default 5s.
    #[serde(deserialize_with = "crate::config::nonzero_probe_interval")]
    pub interval: Duration,
    /// A probe not upgraded within this fails; above 0 (0 would fail every probe).
    /// Default 2s.
    #[serde(deserialize_with = "crate::config::nonzero_probe_timeout")]
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy backend healthy. Default 2.
    pub rise: u32,
    /// Consecutive failures that make a healthy backend unhealthy. Default 3.
    pub fall: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }
}

/// The defaults of a pool's settings (its backends come from the route).
impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            backends: Vec::new(),
            balance: Balance::RoundRobin,
            retries: 2,
            health_check: None,
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
            close_on_unhealthy: false,
            all_unhealthy: AllUnhealthy::Fail,
            sticky_cookie: None,
            source_addresses: Vec::new(),
        }
    }
}

/// What to do when every backend of a pool is unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AllUnhealthy {
    /// Answer 503.
    #[default]
    Fail,
    /// Try the backends anyway, in the usual order.
    Try,
}

/// Parses `balance` with `hash_on` (checked together, so the error names the route).
pub fn balance(balance: Option<&str>, hash_on: Option<&str>) -> Result<Balance, String> {
    let hash = |key: Option<&str>| -> Result<HashOn, String> {
        let Some(key) = key else {
            return Ok(HashOn::ClientIp);
        };
        let (kind, name) = key.split_once(':').unwrap_or((key, ""));
        let name = name.trim();
        match (kind.trim(), name.is_empty()) {
            ("client_ip", true) => Ok(HashOn::ClientIp),
            ("header", false) => Ok(HashOn::Header(name.to_ascii_lowercase())),
            ("cookie", false) => Ok(HashOn::Cookie(name.to_string())),
            ("query", false) => Ok(HashOn::Query(name.to_string())),
            _ => Err(format!(
                "hash_on `{key}`: expected `client_ip`, `header:NAME`, `cookie:NAME` or `query:NAME`"
            )),
        }
    };
    match (balance.unwrap_or("round_robin"), hash_on) {
        ("hash", key) => Ok(Balance::Hash(hash(key)?)),
        (_, Some(_)) => Err("hash_on is only used with `balance: hash`".into()),
        ("round_robin", None) => Ok(Balance::RoundRobin),
        ("least_connections", None) => Ok(Balance::LeastConnections),
        ("random_two", None) => Ok(Balance::RandomTwo),
        (other, None) => Err(format!(
            "balance `{other}`: expected round_robin, least_connections, random_two or hash"
        )),
    }
}

impl<'de> Deserialize<'de> for BackendConfig {
    /// Either a URL string or `{url: ws://…, weight: N}`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BackendConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a backend URL, or {url: ws://…, weight: N}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BackendConfig, E> {
                let url = BackendUrl::parse(v).map_err(E::custom)?;
                Ok(BackendConfig {
                    url,
                    weight: 1,
                    source_addresses: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BackendConfig, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Full {
                    url: BackendUrl,
                    #[serde(default = "one")]
                    weight: u32,
                    #[serde(default, deserialize_with = "source_list")]
                    source_addresses: Option<Vec<IpAddr>>,
                }
                fn one() -> u32 {
                    1
                }
                let full = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if !(1..=1000).contains(&full.weight) {
                    return Err(de::Error::custom("weight: expected 1 to 1000"));
                }
                Ok(BackendConfig {
                    url: full.url,
                    weight: full.weight,
                    source_addresses: full.source_addresses,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `source_addresses`: a non-empty list of IP addresses, each once.
pub(crate) fn source_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<IpAddr>>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    let mut ips: Vec<IpAddr> = Vec::with_capacity(list.len());
    for text in &list {
        let ip: IpAddr = text.parse().map_err(|_| {
            de::Error::custom(format!(
                "source_addresses: `{text}`: expected an IP address (no port: the kernel picks it)"
            ))
        })?;
        if ip.is_unspecified() || ips.contains(&ip) {
            return Err(de::Error::custom(format!(
                "source_addresses: `{text}`: expected distinct, specified addresses"
            )));
        }
        ips.push(ip);
    }
    if ips.is_empty() {
        return Err(de::Error::custom(
            "source_addresses: expected at least one IP address (leave the key out for the kernel's choice)",
        ));
    }
    Ok(Some(ips))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_and_hash_keys() {
        assert_eq!(balance(None, None), Ok(Balance::RoundRobin));
        assert_eq!(
            balance(Some("hash"), None),
            Ok(Balance::Hash(HashOn::ClientIp))
        );
        assert_eq!(
            balance(Some("hash"), Some("header:X-User")),
            Ok(Balance::Hash(HashOn::Header("x-user".into())))
        );
        assert_eq!(
            balance(Some("hash"), Some("cookie:sid")),
            Ok(Balance::Hash(HashOn::Cookie("sid".into())))
        );
        assert!(balance(Some("hash"), Some("header:")).is_err());
        assert!(balance(Some("round_robin"), Some("client_ip")).is_err());
        assert!(balance(Some("fastest"), None).is_err());
    }
}
