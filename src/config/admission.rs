//! A route's admission section: caps on live WebSockets per client address and per
//! identity, and a token bucket for new ones; and the fraction deserializer of
//! `max_lifetime_jitter`.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// IPv6 clients are counted per network of this prefix length unless told otherwise: one
/// host usually holds a whole /64 (SLAAC with privacy addresses), so a cap per address
/// would be one fresh address away from useless.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// Who may open how many WebSockets on a route. Every key is optional; a route without
/// the section (or with an empty one) admits everyone.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Live WebSockets one client address may hold on this route; beyond → 429. Default
    /// unlimited.
    #[serde(deserialize_with = "opt_cap")]
    pub max_connections_per_ip: Option<u32>,
    /// IPv6 clients are counted per network of this prefix length (IPv4, and IPv4-mapped
    /// IPv6, per address). 1 to 128. Default 64.
    #[serde(deserialize_with = "ipv6_prefix")]
    pub ipv6_prefix: u8,
    /// Live WebSockets one identity (a JWT's `sub`, a forward-auth header) may hold on this
    /// route; beyond → 429. Connections without an identity are not counted. Default
    /// unlimited.
    #[serde(deserialize_with = "opt_cap")]
    pub max_connections_per_identity: Option<u32>,
    /// New WebSockets per second on this route (a token bucket); beyond → 429. Default
    /// unlimited.
    pub new_connections_rate: Option<RateConfig>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_connections_per_ip: None,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
            max_connections_per_identity: None,
            new_connections_rate: None,
        }
    }
}

impl AdmissionConfig {
    /// Whether any check is configured.
    pub fn is_on(&self) -> bool {
        self.max_connections_per_ip.is_some()
            || self.max_connections_per_identity.is_some()
            || self.new_connections_rate.is_some()
    }
}

/// A token bucket: `per_second` tokens come back each second, up to `burst`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRate")]
pub struct RateConfig {
    /// Tokens added per second; above 0 (may be fractional: 0.5 is one every 2 s).
    pub per_second: f64,
    /// Most tokens the bucket holds (the largest burst); at least 1. Default `per_second`
    /// rounded up (one second's worth).
    pub burst: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRate {
    per_second: f64,
    #[serde(default)]
    burst: Option<u32>,
}

impl TryFrom<RawRate> for RateConfig {
    type Error = String;
    fn try_from(raw: RawRate) -> Result<Self, String> {
        if !(raw.per_second.is_finite() && raw.per_second > 0.0) {
            return Err(format!(
                "new_connections_rate: per_second {} would admit nobody; expected a number \
                 above 0 like 100 (leave the key out for no limit)",
                raw.per_second
            ));
        }
        let burst = match raw.burst {
            Some(0) => {
                return Err(
                    "new_connections_rate: burst 0 would admit nobody; expected at least 1".into(),
                );
            }
            Some(b) => b,
            None => raw.per_second.ceil().min(u32::MAX as f64) as u32,
        };
        Ok(RateConfig {
            per_second: raw.per_second,
            burst,
        })
    }
}

/// A cap of at least 1 (0 would refuse everyone: leaving the key out is "no cap").
fn opt_cap<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(de::Error::custom(
            "0 would refuse every connection; expected at least 1 (leave the key out for no cap)",
        )),
        n => Ok(Some(n)),
    }
}

fn ipv6_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    match u8::deserialize(d)? {
        n @ 1..=128 => Ok(n),
        n => Err(de::Error::custom(format!(
            "ipv6_prefix {n}: expected a prefix length from 1 to 128 (default 64)"
        ))),
    }
}

/// A fraction from 0 to below 1, written `0.1` or `10%` (`max_lifetime_jitter`).
pub(crate) fn fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Fraction;
    impl Visitor<'_> for Fraction {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a fraction like 0.1 or 10%")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            checked(v, &v.to_string()).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            checked(v as f64, &v.to_string()).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            checked(v as f64, &v.to_string()).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            let parsed = match v.trim().strip_suffix('%') {
                Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
                None => v.trim().parse::<f64>(),
            };
            match parsed {
                Ok(f) => checked(f, v).map_err(E::custom),
                Err(_) => Err(E::custom(format!(
                    "`{v}`: expected a fraction like 0.1 or 10%"
                ))),
            }
        }
    }
    d.deserialize_any(Fraction)
}

fn checked(f: f64, text: &str) -> Result<f64, String> {
    if (0.0..1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!(
            "`{text}`: expected a fraction from 0 to below 1 (like 0.1 or 10%); 1 or more \
             would allow a lifetime of 0"
        ))
    }
}
