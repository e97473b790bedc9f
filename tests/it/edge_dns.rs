//! Backends given by host name: a real DNS server on loopback (hickory-server, an
//! in-memory zone changed while the test runs) answers for `pool.wsgate.test`, and the
//! pool's members follow its A records, 127.0.0.2–4, each a [`Node`] on the same port.
//! Added members take connections, removed ones get 1012 within the drain window, and a
//! server that stops answering leaves the members as they were.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;

use crate::support::frame::{Frame, TEXT};
use crate::support::pools::{Node, config, counts, open, pool_route};
use crate::support::proxy::Proxy;
use crate::support::raw::RawClient;
use crate::support::{eventually, eventually_some, within};

const ZONE: &str = "wsgate.test.";
const HOST: &str = "pool.wsgate.test";
/// The A records' TTL: wsgate asks again this long after each answer.
const TTL: u32 = 1;
/// `reload.drain_window`, which removed members' connections get 1012 within.
const WINDOW: Duration = Duration::from_millis(600);

/// An authoritative server for [`ZONE`] on 127.0.0.1 (UDP and TCP, one port) whose A
/// records for [`HOST`] the test sets.
struct Dns {
    addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler<TokioRuntimeProvider>>,
    server: Server<Catalog>,
}

impl Dns {
    async fn start(addrs: &[Ipv4Addr]) -> Dns {
        let origin = Name::from_ascii(ZONE).unwrap();
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            Name::from_ascii("ns.wsgate.test.").unwrap(),
            Name::from_ascii("admin.wsgate.test.").unwrap(),
            1,
            60,
            60,
            60,
            0,
        );
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1));
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![zone.clone() as Arc<dyn ZoneHandler>],
        );
        // One port for both: a UDP port the kernel picked may be taken for TCP, so a few
        // picks are tried.
        let mut pick = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                pick = Some((udp, addr, tcp));
                break;
            }
        }
        let (udp, addr, tcp) = pick.expect("a port free for both UDP and TCP");
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        let dns = Dns { addr, zone, server };
        dns.set(addrs).await;
        dns
    }

    /// Makes `addrs` the A records of [`HOST`].
    async fn set(&self, addrs: &[Ipv4Addr]) {
        let name = Name::from_ascii(format!("{HOST}.")).unwrap();
        let mut set = RecordSet::with_ttl(name.clone(), RecordType::A, TTL);
        for ip in addrs {
            set.insert(Record::from_rdata(name.clone(), TTL, RData::A(A(*ip))), 1);
        }
        let key = RrKey::new(LowerName::new(&name), RecordType::A);
        let mut records = self.zone.records_mut().await;
        records.insert(key, Arc::new(set));
    }

    /// Stops answering: queries get nothing back (the port is closed).
    async fn stop(&mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

/// Nodes named `b2`, `b3`, `b4` on 127.0.0.2–4, all on one port; that port.
async fn nodes() -> (Vec<Node>, u16) {
    // A port free on 127.0.0.2 may be taken on .3 or .4; a few tries find one free on all.
    for _ in 0..20 {
        let first = Node::start_at("b2", "127.0.0.2:0".parse().unwrap())
            .await
            .expect("127.0.0.2 (all of 127.0.0.0/8 is loopback on Linux)");
        let port = first.addr.port();
        let mut nodes = vec![first];
        for i in 3..=4u8 {
            let at = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)), port);
            if let Ok(n) = Node::start_at(&format!("b{i}"), at).await {
                nodes.push(n);
            }
        }
        if nodes.len() == 3 {
            return (nodes, port);
        }
    }
    panic!("no port free on 127.0.0.2, .3 and .4 at once");
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

/// The config: one route over `ws://pool.wsgate.test:PORT`, names asked of `dns`.
fn dns_config(dns: SocketAddr, port: u16) -> String {
    let route = pool_route(
        "named",
        "/named",
        &[format!("\"ws://{HOST}:{port}\"")],
        &["max_fails: 0"],
    );
    let base = config(&format!("{}ms", WINDOW.as_millis()), &route);
    format!(
        "{base}dns: {{ nameservers: [\"{dns}\"], min_interval: 100ms, max_interval: 2s, timeout: 1s }}\n\
         admin: {{ bind: \"127.0.0.1:0\" }}\n"
    )
}

async fn echoes(ws: &mut RawClient, text: &str) {
    ws.send(Frame::text(text)).await;
    let reply = ws.recv_frame().await;
    assert_eq!(
        (reply.opcode, reply.payload.as_slice()),
        (TEXT, text.as_bytes())
    );
}

fn members(proxy: &Proxy, port: u16) -> Option<f64> {
    proxy.metric(&format!(
        "wsgate_dns_members{{route=\"named\",backend=\"ws://{HOST}:{port}\"}}"
    ))
}

fn lookups(proxy: &Proxy, port: u16, result: &str) -> f64 {
    proxy
        .metric(&format!(
            "wsgate_dns_resolutions_total{{route=\"named\",backend=\"ws://{HOST}:{port}\",result=\"{result}\"}}"
        ))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_follow_the_a_records_and_removed_ones_drain_with_1012() {
    let (nodes, port) = nodes().await;
    let mut dns = Dns::start(&[ip(2)]).await;
    let proxy = Proxy::start(&dns_config(dns.addr, port)).await;
    // The first lookup is over before wsgate takes connections.
    assert_eq!(members(&proxy, port), Some(1.0));
    let mut on_b2 = Vec::new();
    for _ in 0..4 {
        let (backend, ws) = open(proxy.addr(), "/named", &[]).await;
        assert_eq!(backend, "b2");
        on_b2.push(ws);
    }

    // One address becomes three: the new members take connections.
    dns.set(&[ip(2), ip(3), ip(4)]).await;
    eventually("three members", || members(&proxy, port) == Some(3.0)).await;
    let mut held = Vec::new();
    for _ in 0..9 {
        held.push(open(proxy.addr(), "/named", &[]).await);
    }
    let served = counts(&held.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>());
    assert_eq!(served.len(), 3, "every member served some: {served:?}");
    assert!(lookups(&proxy, port, "changed") >= 2.0);

    // Back to one, another: b2 and b4 leave, and their connections get 1012 within the
    // drain window; b3's go on.
    dns.set(&[ip(3)]).await;
    let since = Instant::now();
    eventually("one member", || members(&proxy, port) == Some(1.0)).await;
    let (leaving, mut staying): (Vec<_>, Vec<_>) = held.into_iter().partition(|(b, _)| b != "b3");
    let leaving: Vec<RawClient> = on_b2
        .into_iter()
        .chain(leaving.into_iter().map(|(_, ws)| ws))
        .collect();
    let n = leaving.len();
    let watchers: Vec<_> = leaving
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let close = ws.recv_close().await;
                ws.send(Frame::close(1012, "")).await;
                (close.close_code(), since.elapsed())
            })
        })
        .collect();
    for w in watchers {
        let (code, at) = within("1012 of a removed member", w).await.unwrap();
        assert_eq!(code, Some(1012));
        // The answer comes within a TTL, the 1012 within the window after it.
        let latest = Duration::from_secs(TTL.into()) + WINDOW + Duration::from_millis(500);
        assert!(at <= latest, "1012 after {at:?}, due within {latest:?}");
    }
    eprintln!("dns: {n} connections on removed members got 1012");
    for (i, (_, ws)) in staying.iter_mut().enumerate() {
        echoes(ws, &format!("still on b3 {i}")).await;
    }
    for _ in 0..4 {
        assert_eq!(open(proxy.addr(), "/named", &[]).await.0, "b3");
    }
    eventually("b2 and b4 saw 1012 for each connection they had", || {
        nodes[0].closes().len() + nodes[2].closes().len() == n
    })
    .await;
    assert!(
        nodes[0]
            .closes()
            .iter()
            .chain(&nodes[2].closes())
            .all(|&c| c == 1012),
        "{:?} {:?}",
        nodes[0].closes(),
        nodes[2].closes()
    );
    assert!(
        !nodes[1].closes().contains(&1012),
        "b3 untouched: {:?}",
        nodes[1].closes()
    );

    // The server stops answering: failures are counted, the member stays.
    dns.stop().await;
    let errors = lookups(&proxy, port, "error");
    eventually_some("a failed lookup counted", || async {
        (lookups(&proxy, port, "error") > errors).then_some(())
    })
    .await;
    assert_eq!(members(&proxy, port), Some(1.0));
    assert_eq!(open(proxy.addr(), "/named", &[]).await.0, "b3");
    drop(staying);
    proxy.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_no_answer_at_start_has_no_member_until_it_resolves() {
    let (_nodes, port) = nodes().await;
    let dns = Dns::start(&[]).await;
    let proxy = Proxy::start(&dns_config(dns.addr, port)).await;
    let hit = crate::support::pools::hit(proxy.addr(), "/named", &[]).await;
    assert_eq!(hit.status, 503, "no member: {:?}", hit.head);
    assert!(lookups(&proxy, port, "empty") >= 1.0);
    dns.set(&[ip(4)]).await;
    eventually("one member", || members(&proxy, port) == Some(1.0)).await;
    assert_eq!(open(proxy.addr(), "/named", &[]).await.0, "b4");
    proxy.assert_drained().await;
}
