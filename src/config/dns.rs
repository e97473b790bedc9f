//! How backends given by host name are resolved: the name servers asked and how often a
//! name is asked again (`dns:`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

/// The `dns` section: where backend names are resolved and how often again.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Name servers asked, in order (`IP` or `IP:port`, port 53 by default); empty = the
    /// system's (`/etc/resolv.conf`, with its search list and `ndots`). Default empty.
    #[serde(deserialize_with = "nameservers")]
    pub nameservers: Vec<SocketAddr>,
    /// A name is asked again no sooner than this after an answer, whatever its TTL (a TTL
    /// of 0 would ask without pause), and this long after a failed lookup. Default 1s.
    #[serde(deserialize_with = "super::parse::nonzero_dns_interval")]
    pub min_interval: Duration,
    /// A name is asked again at least this often, whatever its TTL. Default 300s.
    #[serde(deserialize_with = "super::parse::duration")]
    pub max_interval: Duration,
    /// One lookup (every server and retry) fails after this. Default 5s.
    #[serde(deserialize_with = "super::parse::nonzero_dns_timeout")]
    pub timeout: Duration,
    /// Which records make members. Default `ipv4_then_ipv6`.
    pub family: Family,
}

/// Which address records of a name make pool members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// The A records; the AAAA records only when the name has no A record (as a client
    /// connecting by name would reach it: `localhost` is 127.0.0.1, not also `::1`).
    #[default]
    Ipv4ThenIpv6,
    /// Every A and AAAA record (a dual-stack backend listening on both).
    Ipv4AndIpv6,
    /// The A records only.
    Ipv4,
    /// The AAAA records only.
    Ipv6,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            min_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
            family: Family::default(),
        }
    }
}

impl DnsConfig {
    /// The wait before asking again after an answer valid for `ttl`.
    pub fn next_after(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min_interval, self.max_interval)
    }
}

/// `dns.nameservers`: each `IP` or `IP:port` (port 53 by default).
fn nameservers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    struct Addr(SocketAddr);
    impl<'de> Deserialize<'de> for Addr {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Addr, D::Error> {
            let s = String::deserialize(d)?;
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map(Addr)
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "dns.nameservers: `{s}`: expected an IP address or IP:port"
                    ))
                })
        }
    }
    Ok(Vec::<Addr>::deserialize(d)?
        .into_iter()
        .map(|a| a.0)
        .collect())
}

impl DnsConfig {
    /// What one value cannot show: `max_interval` below `min_interval`.
    pub fn check(&self) -> Result<(), String> {
        if self.max_interval < self.min_interval {
            return Err(format!(
                "dns.max_interval {} is below dns.min_interval {}; expected max_interval >= \
                 min_interval",
                humantime::format_duration(self.max_interval),
                humantime::format_duration(self.min_interval),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<crate::Config, crate::ConfigError> {
        let text = format!(
            "listeners: [{{bind: '127.0.0.1:0'}}]\nroutes: [{{name: e, path: /, echo: true}}]\n{yaml}"
        );
        crate::Config::parse(&text, "t")
    }

    #[test]
    fn defaults_ports_and_bounds() {
        let c = parse("").unwrap();
        assert_eq!(c.dns, DnsConfig::default());
        let c = parse("dns: {nameservers: ['127.0.0.1:5353', '10.96.0.10'], min_interval: 2s, max_interval: 1m}\n").unwrap();
        assert_eq!(
            c.dns.nameservers,
            [
                "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
                "10.96.0.10:53".parse().unwrap()
            ]
        );
        assert_eq!(
            c.dns.next_after(Duration::from_secs(0)),
            Duration::from_secs(2)
        );
        assert_eq!(
            c.dns.next_after(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        for bad in [
            "dns: {nameservers: [nope]}\n",
            "dns: {min_interval: 0s}\n",
            "dns: {timeout: 0s}\n",
            "dns: {ttl: 5s}\n",
            "dns: {family: ipv5}\n",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("t:3:") && !e.starts_with("t:3:1:"),
                "{bad}: {e}"
            );
        }
        let e = parse("dns: {min_interval: 10s, max_interval: 5s}\n").unwrap_err();
        assert!(
            e.to_string().contains("dns.max_interval 5s is below"),
            "{e}"
        );
    }
}
