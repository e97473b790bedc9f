//! Networks given as CIDRs (`10.0.0.0/8`, `2001:db8::/32`, or one address): who may send a
//! PROXY protocol header (`proxy_protocol_from`) and whose forwarding headers are believed
//! (`trusted_proxies`).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserializer;

use super::parse::scalar;

/// One network of a list of trusted peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Whether `ip` is in this network; an IPv4-mapped IPv6 address (a dual-stack listener's
    /// IPv4 peer) counts as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }

    /// `text` as a network: `ADDR/BITS` with no host bits set, or one address (all bits).
    fn parse(text: &str) -> Result<Cidr, String> {
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match text.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "`{text}`: expected a network like 10.0.0.0/8 or 2001:db8::/32, or one \
                         address like 192.0.2.7"
                    ));
                }
            },
        };
        // `10.0.0.1/8` is most likely a typo for an address or for `10.0.0.0/8`: refused
        // rather than guessed, since either guess trusts the wrong peers.
        if net.trunc() != net {
            return Err(format!(
                "`{text}` has host bits set: expected `{}` for the network, or the address \
                 alone",
                net.trunc()
            ));
        }
        Ok(Cidr(net))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A scalar of its own, so a bad entry is reported at its line and column.
        scalar(d, "a CIDR like 10.0.0.0/8", Cidr::parse)
    }
}

/// Whether any network of `list` holds `ip`.
pub fn any_contains(list: &[Cidr], ip: IpAddr) -> bool {
    list.iter().any(|c| c.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_single_addresses_parse_and_match() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.1.2.3")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "mapped IPv4 is IPv4");
        assert!(!net.contains(ip("11.0.0.1")));
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert_eq!(one.to_string(), "192.0.2.7/32");
    }

    #[test]
    fn typos_and_host_bits_are_refused() {
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "ten",
            "",
            "10.0.0.0/",
            "::1/200",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        let why = Cidr::parse("10.0.0.1/8").unwrap_err();
        assert!(why.contains("`10.0.0.0/8`"), "{why}");
    }
}
