//! Forwarding headers from a peer: no panic on any values; an untrusted peer is always the
//! client and its headers are never believed; the client wsgate settles on is the peer or
//! an address its headers carry.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    // Lines are cut at `\n`; the first half of them are X-Forwarded-For, the rest Forwarded.
    let lines: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let (xff, fwd) = lines.split_at(lines.len() / 2);
    let peer = if control & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, control))
    } else {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(control)))
    };
    // Trust depends on the address's last bits, so chains mix trusted and untrusted hops.
    let salt = control >> 1;
    let trusted = move |ip: IpAddr| {
        let last = match ip {
            IpAddr::V4(v4) => v4.octets()[3],
            IpAddr::V6(v6) => v6.octets()[15],
        };
        (last ^ salt) % 3 != 0
    };
    let (client, prior) = wsgate::fuzzing::forwarded(xff, fwd, peer, trusted);
    if !trusted(peer) {
        assert_eq!(client, peer);
        assert!(!prior);
        return;
    }
    // Another client than the peer can only come from headers the peer sent.
    if client != peer {
        assert!(prior, "{client} without any forwarding header");
    }
});
