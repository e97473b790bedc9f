//! Source addresses for backend connections, where the ephemeral port range runs out:
//! each test runs itself again inside a network namespace of its own (`unshare --net`,
//! as root), where `net.ipv4.ip_local_port_range` is 60000–60099, so one source address
//! has 100 ports towards the backend. With one, the 101st connection gets a fast 503
//! "no source port" (upgrade and plain HTTP alike) and is counted; with three, 300 fit.
//!
//! The namespace is the test's, not the host's: the sysctl is per namespace, and the
//! test fails (never skips) when it cannot make one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use crate::support::http;
use crate::support::pools::{Node, hit, pool_route};
use crate::support::proxy::Proxy;

/// Set in the child that runs inside the namespace.
const INSIDE: &str = "WSGATE_TEST_IN_NETNS";
/// Ports one source address has towards one backend address in the namespace.
const PORTS: usize = 100;

/// Runs the ignored test `name` of this binary again inside a new network namespace, and
/// fails unless it passed there.
fn in_namespace(name: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("unshare")
        .args(["--net", "--", "sh", "-c"])
        // Several hundred sockets on each hop: more descriptors than the usual 1024.
        .arg(r#"ulimit -n 16384 2>/dev/null || ulimit -n 4096; exec "$0" "$@""#)
        .arg(&exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INSIDE, "1")
        .output()
        .expect("run `unshare` (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} inside a new network namespace (needs root and `unshare`): {}\n{stdout}\n{stderr}",
        out.status
    );
}

/// Inside the namespace: loopback up, and a port range of [`PORTS`] ports.
fn set_up_namespace() {
    assert_eq!(
        std::env::var(INSIDE).as_deref(),
        Ok("1"),
        "runs only inside the namespace its outer test makes (it changes sysctls)"
    );
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("run `ip` (iproute2)");
    assert!(up.success(), "ip link set lo up: {up}");
    std::fs::write(
        "/proc/sys/net/ipv4/ip_local_port_range",
        format!("60000 {}", 60000 + PORTS - 1),
    )
    .expect("set the namespace's ip_local_port_range");
}

/// A backend and wsgate in front of it: connections to the backend from `sources`.
/// Clients reach wsgate at four addresses, so their own ports do not run out first.
/// Every listener has a fixed port below the range (the namespace is the test's own):
/// a listener on a port of the range would take it from every connection.
async fn gate(sources: &[&str]) -> (Vec<Node>, Proxy, Vec<SocketAddr>) {
    gate_over(sources, 1).await
}

/// [`gate`] over `backends` nodes (ports 40001, 40004, …), balanced round robin.
async fn gate_over(sources: &[&str], backends: u16) -> (Vec<Node>, Proxy, Vec<SocketAddr>) {
    let mut nodes = Vec::new();
    for i in 0..backends {
        let at = SocketAddr::from(([127, 0, 0, 1], if i == 0 { 40001 } else { 40003 + i }));
        let node = Node::start_at(&format!("b{i}"), at)
            .await
            .expect("listen in the namespace");
        nodes.push(node);
    }
    let list = sources
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let route = pool_route(
        "src",
        "/src",
        &nodes
            .iter()
            .map(|n| format!("\"{}\"", n.url()))
            .collect::<Vec<_>>(),
        &[&format!("source_addresses: [{list}]"), "max_fails: 0"],
    );
    let yaml = format!(
        "listeners:\n  - bind: \"0.0.0.0:40002\"\n\
         defaults: {{ close_timeout: 1s, handshake_timeout: 5s, ping_interval: 0s }}\n\
         reload: {{ watch: false }}\n\
         limits: {{ max_connections: 2000 }}\n\
         admin: {{ bind: \"127.0.0.1:40003\" }}\n\
         routes:\n{route}"
    );
    let proxy = Proxy::start(&yaml).await;
    let port = proxy.addr().port();
    let doors = (10..14)
        .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)), port))
        .collect();
    (nodes, proxy, doors)
}

/// Opens `n` WebSockets through wsgate, each of which must upgrade.
async fn hold(doors: &[SocketAddr], n: usize) -> Vec<crate::support::raw::RawClient> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let h = hit(doors[i % doors.len()], "/src", &[]).await;
        assert_eq!(h.status, 101, "connection {i}: {:?}", h.head);
        held.push(h.ws);
    }
    held
}

fn exhausted(proxy: &Proxy) -> f64 {
    let text = proxy.metrics_text();
    crate::support::metrics::samples(&text)
        .iter()
        .filter(|s| s.name == "wsgate_backend_source_exhausted_total")
        .map(|s| s.value)
        .sum()
}

#[test]
fn one_source_address_refuses_the_101st_connection_fast() {
    in_namespace("edge_source::inside_one_source_address");
}

#[test]
fn three_source_addresses_hold_three_times_the_connections() {
    in_namespace("edge_source::inside_three_source_addresses");
}

#[test]
fn one_source_address_has_a_port_range_per_backend_address() {
    in_namespace("edge_source::inside_one_source_two_backends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by one_source_address_has_a_port_range_per_backend_address in a namespace"]
async fn inside_one_source_two_backends() {
    set_up_namespace();
    // IP_BIND_ADDRESS_NO_PORT: the port is chosen per 4-tuple at connect, so one source
    // address holds 100 connections to each backend (a plain bind: 100 in all).
    let (_nodes, proxy, doors) = gate_over(&["127.0.0.2"], 2).await;
    let held = hold(&doors, 2 * PORTS).await;
    assert_eq!(exhausted(&proxy), 0.0);
    eprintln!("one source address, two backends: {} held", held.len());
    drop(held);
    proxy.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by one_source_address_refuses_the_101st_connection_fast in a namespace"]
async fn inside_one_source_address() {
    set_up_namespace();
    let (_node, proxy, doors) = gate(&["127.0.0.2"]).await;
    let held = hold(&doors, PORTS).await;
    // Every port from 127.0.0.2 towards the backend is taken: the next gets 503 at once.
    let started = Instant::now();
    let refused = http::exchange(doors[0], http::upgrade_request(doors[0], "/src", &[])).await;
    let took = started.elapsed();
    assert_eq!(refused.status(), 503, "{refused:?}");
    assert!(took < Duration::from_millis(500), "503 after {took:?}");
    assert!(
        refused.body_text().contains("no source port"),
        "{refused:?}"
    );
    // Plain HTTP needs a new backend connection too: the same 503.
    let plain = http::exchange(
        doors[1],
        "GET /src/page HTTP/1.1\r\nHost: gate\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(plain.status(), 503, "{plain:?}");
    assert!(plain.body_text().contains("no source port"), "{plain:?}");
    assert!(exhausted(&proxy) >= 2.0, "counted: {}", exhausted(&proxy));
    eprintln!("one source address: {PORTS} held, the next refused 503 in {took:?}");
    drop(held);
    proxy.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by three_source_addresses_hold_three_times_the_connections in a namespace"]
async fn inside_three_source_addresses() {
    set_up_namespace();
    let (_node, proxy, doors) = gate(&["127.0.0.2", "127.0.0.3", "127.0.0.4"]).await;
    let held = hold(&doors, 3 * PORTS).await;
    assert_eq!(exhausted(&proxy), 0.0);
    let refused = http::exchange(doors[0], http::upgrade_request(doors[0], "/src", &[])).await;
    assert_eq!(refused.status(), 503, "all three used up: {refused:?}");
    eprintln!("three source addresses: {} held", held.len());
    drop(held);
    proxy.assert_drained().await;
}
