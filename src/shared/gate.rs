//! A route's admission state: live WebSockets per client network and per identity, and
//! its bucket of new connections. A reload that rebuilds the route hands this over, so
//! connections still open keep counting and an unchanged rate keeps its tokens.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::admission::AdmissionConfig;
use crate::shared::bucket::TokenBucket;
use crate::shared::tally::Tally;

/// What a route's admission checks count.
#[derive(Debug, Default)]
pub struct Gate {
    /// Live WebSockets per client key ([`client_key`]).
    pub per_ip: Tally<IpAddr>,
    /// Live WebSockets per identity.
    pub per_identity: Tally<String>,
    /// New connections' token bucket, when the route has a rate.
    pub rate: Option<Arc<TokenBucket>>,
}

impl Gate {
    /// The state for `config`, taking over from `previous` (the same route before a
    /// reload) the counts that still mean the same and a bucket of the same rate.
    pub fn new(config: &AdmissionConfig, previous: Option<(&Gate, &AdmissionConfig)>) -> Gate {
        let rate = config.new_connections_rate.as_ref().map(|r| {
            previous
                .and_then(|(g, _)| g.rate.clone())
                .filter(|b| b.config == *r)
                .unwrap_or_else(|| Arc::new(TokenBucket::new(r)))
        });
        Gate {
            per_ip: previous
                .filter(|(_, c)| c.ipv6_prefix == config.ipv6_prefix)
                .map(|(g, _)| g.per_ip.clone())
                .unwrap_or_default(),
            per_identity: previous
                .map(|(g, _)| g.per_identity.clone())
                .unwrap_or_default(),
            rate,
        }
    }
}

/// The key a client address is counted under: IPv4 (an IPv4-mapped IPv6 address being
/// the IPv4 address it maps) per address, IPv6 per network of `v6_prefix` bits.
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let keep = u32::from(v6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_keyed_by_address_or_v6_network() {
        let key = |s: &str, p| client_key(s.parse().unwrap(), p).to_string();
        assert_eq!(key("192.0.2.7", 64), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7", 64), "192.0.2.7", "mapped is IPv4");
        assert_eq!(
            key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64),
            "2001:db8:1:2::"
        );
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 48), "2001:db8:1::");
        assert_eq!(
            key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 128),
            "2001:db8:1:2:aaaa:bbbb:cccc:dddd"
        );
        assert_eq!(key("2001:db8::1", 1), "::");
    }
}
