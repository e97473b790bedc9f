//! The PROXY protocol on a listener (HAProxy in front: `edge_proxy_haproxy`): hand-made headers (good ones with the request in the same segment,
//! malformed, truncated, too long, too slow, from a peer outside `proxy_protocol_from`),
//! and the carried address used by forwarding headers, close reports, per-IP caps and
//! `hash_on: client_ip`, over HTTP/1.1 and HTTP/2.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::backend::Backend;
use crate::support::frame::Frame;
use crate::support::http::{self, Head};
use crate::support::proxy::{Proxy, TEST_DEFAULTS, route};
use crate::support::raw::{FrameStream, RawClient};
use crate::support::{eventually, pools, within};

/// A plain listener that takes PROXY headers from 127.0.0.1 only, with a short header
/// timeout, `top` sections and `routes`.
pub(crate) fn pp_yaml(top: &str, routes: &str) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    proxy_protocol: true\n    \
         proxy_protocol_from: [127.0.0.1/32]\nlimits: {{ proxy_header_timeout: 500ms }}\n\
         {TEST_DEFAULTS}{top}routes:\n{routes}"
    )
}

/// A TCP connection to `to` from `from` (any 127/8 address is loopback on Linux).
pub(crate) async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .expect("bind source");
    within("connect", socket.connect(to))
        .await
        .expect("connect")
}

/// A v2 PROXY header (command PROXY, TCP over IPv4) from `src`, with `tlvs` after the
/// addresses.
fn v2_header(src: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(src) = src else {
        panic!("IPv4 only")
    };
    let mut payload = src.ip().octets().to_vec();
    payload.extend_from_slice(&[127, 0, 0, 1]);
    payload.extend_from_slice(&src.port().to_be_bytes());
    payload.extend_from_slice(&80u16.to_be_bytes());
    payload.extend_from_slice(tlvs);
    v2_raw(0x21, 0x11, &payload)
}

/// A v2 header with a chosen version/command byte, family byte and payload.
fn v2_raw(ver_cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(ver_cmd);
    out.push(family);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Writes `header` and the upgrade request for `path` in one write (so that a reader
/// taking more than its header would eat the request), and reads the answer.
pub(crate) async fn upgrade_after(
    mut io: TcpStream,
    header: &[u8],
    path: &str,
) -> (Head, RawClient) {
    let addr = io.peer_addr().unwrap();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(http::upgrade_request(addr, path, &[]).as_bytes());
    io.write_all(&bytes).await.expect("write");
    let mut buf = Vec::new();
    let head = within("upgrade answer", http::read_head(&mut io, &mut buf))
        .await
        .expect("connection closed before the upgrade response");
    (head, FrameStream::new(io, buf, true))
}

/// Echo one message, then close cleanly.
pub(crate) async fn echo_and_close(mut ws: RawClient) {
    ws.send(Frame::text("hello")).await;
    assert_eq!(ws.recv_frame().await.payload, b"hello");
    ws.send(Frame::close(1000, "")).await;
    ws.recv_close().await;
}

/// Waits until the connection is closed with nothing written to it: EOF, or a reset
/// (wsgate closing with unread bytes in its buffer resets).
async fn closed_without_answer(io: &mut TcpStream, what: &str) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    within(what, async {
        loop {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        got.is_empty(),
        "{what}: wsgate answered {:?}",
        String::from_utf8_lossy(&got)
    );
}

fn refusals(proxy: &Proxy, reason: &str) -> f64 {
    proxy
        .metric(&format!(
            "wsgate_proxy_protocol_refusals_total{{reason=\"{reason}\"}}"
        ))
        .unwrap_or(0.0)
}

/// The address a backend was told: X-Forwarded-For, X-Real-IP and Forwarded's `for`.
pub(crate) fn told(head: &Head) -> (String, String, String) {
    (
        head.header("x-forwarded-for").unwrap_or("").to_string(),
        head.header("x-real-ip").unwrap_or("").to_string(),
        head.header("forwarded").unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn a_header_and_the_request_in_one_segment_both_arrive() {
    let backend = Backend::echo().await;
    let mut proxy = Proxy::start(&pp_yaml("", &route("r", "/r", &backend.url("/"), ""))).await;
    let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 80\r\n";
    let (head, ws) = upgrade_after(connect_from("127.0.0.1", proxy.addr()).await, v1, "/r").await;
    assert_eq!(head.status(), 101, "{head:?}");
    echo_and_close(ws).await;
    let report = proxy.next_report().await;
    assert_eq!(report.client_addr, "192.0.2.7:51000".parse().unwrap());

    // v2 with TLVs after the addresses (ignored), the request right behind them.
    let tlvs = [0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x00];
    let v2 = v2_header("198.51.100.9:40000".parse().unwrap(), &tlvs);
    let (head, ws) = upgrade_after(connect_from("127.0.0.1", proxy.addr()).await, &v2, "/r").await;
    assert_eq!(head.status(), 101, "{head:?}");
    echo_and_close(ws).await;
    assert_eq!(
        proxy.next_report().await.client_addr,
        "198.51.100.9:40000".parse().unwrap()
    );
    let seen = backend.log.requests();
    let (xff, real_ip, forwarded) = told(&seen[0]);
    assert_eq!((xff.as_str(), real_ip.as_str()), ("192.0.2.7", "192.0.2.7"));
    assert!(forwarded.starts_with("for=192.0.2.7;"), "{:?}", seen[0]);
    assert_eq!(told(&seen[1]).0, "198.51.100.9");

    // LOCAL (a balancer's own check) and UNKNOWN keep the socket's address.
    let local = v2_raw(0x20, 0x00, &[]);
    let (head, ws) =
        upgrade_after(connect_from("127.0.0.1", proxy.addr()).await, &local, "/r").await;
    assert_eq!(head.status(), 101, "{head:?}");
    echo_and_close(ws).await;
    assert_eq!(
        proxy.next_report().await.client_addr.ip().to_string(),
        "127.0.0.1"
    );
    let unknown = b"PROXY UNKNOWN\r\n";
    let (head, ws) =
        upgrade_after(connect_from("127.0.0.1", proxy.addr()).await, unknown, "/r").await;
    assert_eq!(head.status(), 101, "{head:?}");
    echo_and_close(ws).await;
    assert_eq!(
        proxy.next_report().await.client_addr.ip().to_string(),
        "127.0.0.1"
    );
    assert_eq!(
        proxy.metric("wsgate_proxy_protocol_headers_total{version=\"v1\"}"),
        Some(2.0)
    );
    assert_eq!(
        proxy.metric("wsgate_proxy_protocol_headers_total{version=\"v2\"}"),
        Some(2.0)
    );
    proxy.assert_drained().await;
}

#[tokio::test]
async fn bad_headers_close_the_connection_and_are_counted_by_reason() {
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&pp_yaml("", &route("r", "/r", &backend.url("/"), ""))).await;
    let mut long = b"PROXY TCP4 ".to_vec();
    long.extend_from_slice(&[b'1'; 120]);
    let mut huge = v2_header("192.0.2.7:1".parse().unwrap(), &[]);
    huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    huge.extend_from_slice(&[0; 4096]);
    let request = http::upgrade_request(proxy.addr(), "/r", &[]);
    let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
        // (what, bytes, then shut the write side, reason)
        (
            "no header",
            request.clone().into_bytes(),
            false,
            "bad_signature",
        ),
        (
            "v1 cut short",
            b"PROXY TCP4 192.0.2.7 127.0.0".to_vec(),
            true,
            "truncated",
        ),
        (
            "v2 cut short",
            v2_header("192.0.2.7:1".parse().unwrap(), &[])[..20].to_vec(),
            true,
            "truncated",
        ),
        ("v1 line too long", long, false, "too_long"),
        (
            "v1 bad address",
            b"PROXY TCP4 192.0.2.777 127.0.0.1 1 80\r\n".to_vec(),
            false,
            "malformed",
        ),
        (
            "v1 IPv6 in TCP4",
            b"PROXY TCP4 2001:db8::1 127.0.0.1 1 80\r\n".to_vec(),
            false,
            "malformed",
        ),
        (
            "v2 IPv4 in 4 bytes",
            v2_raw(0x21, 0x11, &[192, 0, 2, 7]),
            false,
            "malformed",
        ),
        (
            "v2 IPv6 in 12 bytes",
            v2_raw(0x21, 0x21, &[0; 12]),
            false,
            "malformed",
        ),
        (
            "v2 version 3",
            v2_raw(0x31, 0x11, &[0; 12]),
            false,
            "malformed",
        ),
        (
            "v2 bad signature",
            {
                let mut h = v2_header("192.0.2.7:1".parse().unwrap(), &[]);
                h[5] = b'X';
                h
            },
            false,
            "bad_signature",
        ),
        ("v2 oversized", huge, false, "too_long"),
    ];
    for (what, bytes, shut, reason) in &cases {
        let before = refusals(&proxy, reason);
        let mut io = connect_from("127.0.0.1", proxy.addr()).await;
        let _ = io.write_all(bytes).await;
        if *shut {
            let _ = io.shutdown().await;
        }
        closed_without_answer(&mut io, what).await;
        eventually(&format!("{what}: counted as {reason}"), || {
            refusals(&proxy, reason) == before + 1.0
        })
        .await;
    }
    assert!(
        backend.log.requests().is_empty(),
        "nothing reached the backend"
    );
    assert_eq!(
        proxy.metric("wsgate_proxy_protocol_headers_total"),
        None,
        "no header was taken"
    );
    proxy.assert_drained().await;
}

#[tokio::test]
async fn a_slow_header_is_closed_at_the_timeout_and_a_stranger_at_once() {
    let proxy = Proxy::start(&pp_yaml("", "  - { name: e, path: /, echo: true }\n")).await;
    let started = tokio::time::Instant::now();
    let mut slow = connect_from("127.0.0.1", proxy.addr()).await;
    slow.write_all(b"PROXY TCP4 192.0.2.7 ").await.unwrap();
    closed_without_answer(&mut slow, "slow header").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "closed after {took:?}, before the 500ms timeout"
    );
    assert_eq!(refusals(&proxy, "timeout"), 1.0);

    // 127.0.0.9 is not in proxy_protocol_from: a good header does not help it.
    let mut stranger = connect_from("127.0.0.9", proxy.addr()).await;
    let _ = stranger
        .write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 51000 80\r\n")
        .await;
    closed_without_answer(&mut stranger, "peer outside proxy_protocol_from").await;
    eventually("counted as untrusted_peer", || {
        refusals(&proxy, "untrusted_peer") == 1.0
    })
    .await;
    // Nothing was read from it: wsgate closed with the header unread, which resets.
    proxy.assert_drained().await;
}

/// The carried address is the one per-IP caps count and `hash_on: client_ip` hashes:
/// every connection comes from 127.0.0.1, so counting the socket would refuse the
/// second and hash them all alike.
#[tokio::test]
async fn caps_and_hashing_use_the_carried_address() {
    let nodes = pools::Node::many(2).await;
    let urls: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.url())).collect();
    let routes = format!(
        "  - name: r\n    path: /r\n    backends: [{}]\n    balance: hash\n    hash_on: client_ip\n    \
         admission: {{ max_connections_per_ip: 1 }}\n",
        urls.join(", ")
    );
    let proxy = Proxy::start(&pp_yaml("", &routes)).await;
    let mut held = Vec::new();
    for i in 1..=16 {
        let v1 = format!("PROXY TCP4 192.0.2.{i} 127.0.0.1 5000 80\r\n");
        let io = connect_from("127.0.0.1", proxy.addr()).await;
        let (head, ws) = upgrade_after(io, v1.as_bytes(), "/r").await;
        assert_eq!(head.status(), 101, "client 192.0.2.{i}: {head:?}");
        held.push(ws);
    }
    let io = connect_from("127.0.0.1", proxy.addr()).await;
    let (head, _) = upgrade_after(io, b"PROXY TCP4 192.0.2.3 127.0.0.1 5001 80\r\n", "/r").await;
    assert_eq!(
        head.status(),
        429,
        "192.0.2.3 holds its one place: {head:?}"
    );
    let served: Vec<usize> = nodes.iter().map(|n| n.served()).collect();
    assert!(
        served.iter().all(|&n| n > 0),
        "16 client addresses hash onto both backends: {served:?}"
    );
    drop(held);
    proxy.assert_drained().await;
}

/// A listener that would take PROXY headers from anyone, or a setting that does nothing,
/// is refused at load with its place in the file.
#[test]
fn proxy_protocol_and_trusted_proxies_are_checked_with_their_place() {
    let routes = "routes:\n  - {name: e, path: /, echo: true}\n";
    let cases = [
        (
            "listeners:\n  - bind: \"127.0.0.1:0\"\n    proxy_protocol: true\n",
            "t:2:3:",
            "needs `proxy_protocol_from`",
        ),
        (
            "listeners:\n  - bind: \"127.0.0.1:0\"\n    proxy_protocol: true\n    proxy_protocol_from: []\n",
            "t:2:3:",
            "is empty",
        ),
        (
            "listeners:\n  - bind: \"127.0.0.1:0\"\n    proxy_protocol_from: [10.0.0.0/8]\n",
            "t:2:3:",
            "has no effect",
        ),
        (
            "listeners:\n  - bind: \"127.0.0.1:0\"\n    proxy_protocol: true\n    proxy_protocol_from: [10.0.0.1/8]\n",
            "t:4:27:",
            "expected `10.0.0.0/8`",
        ),
        (
            "listeners:\n  - bind: \"127.0.0.1:0\"\ntrusted_proxies: [10.0.0.0/8, nope]\n",
            "t:3:31:",
            "expected a network like 10.0.0.0/8",
        ),
        (
            "listeners:\n  - bind: \"127.0.0.1:0\"\nlimits: { proxy_header_timeout: 0s }\n",
            "t:3:33:",
            "would close every connection before its PROXY header",
        ),
    ];
    for (yaml, place, what) in cases {
        let text = format!("{yaml}{routes}");
        let err = wsgate::Config::parse(&text, "t")
            .expect_err(&text)
            .to_string();
        assert!(
            err.starts_with(place) && err.contains(what),
            "{err}\n---\n{text}"
        );
    }
    let ok = "listeners:\n  - bind: \"127.0.0.1:0\"\n    proxy_protocol: true\n    \
              proxy_protocol_from: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.7]\n\
              trusted_proxies: [\"::1\", 127.0.0.1]\n";
    wsgate::Config::parse(&format!("{ok}{routes}"), "t").expect("a valid config");
}

/// A reload turns the PROXY protocol on for a kept listener (new connections need the
/// header from then on) and changes `trusted_proxies` for the next requests.
#[tokio::test]
async fn a_reload_applies_to_new_connections() {
    let backend = Backend::echo().await;
    let routes = route("r", "/r", &backend.url("/"), "");
    let plain = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n{TEST_DEFAULTS}reload: {{ watch: false }}\nroutes:\n{routes}"
    );
    let proxy = Proxy::start(&plain).await;
    let (head, ws) = crate::support::raw::upgrade_with(proxy.addr(), "/r", &[]).await;
    assert_eq!(head.status(), 101, "{head:?}");
    let top = "reload: { watch: false }\ntrusted_proxies: [10.0.0.0/8]\n";
    proxy.reload_ok(&pp_yaml(top, &routes)).await;
    // The connection from before goes on.
    echo_and_close(ws).await;
    let mut bare = connect_from("127.0.0.1", proxy.addr()).await;
    let _ = bare
        .write_all(http::upgrade_request(proxy.addr(), "/r", &[]).as_bytes())
        .await;
    closed_without_answer(&mut bare, "no header after the reload").await;
    let mut io = connect_from("127.0.0.1", proxy.addr()).await;
    let mut bytes = b"PROXY TCP4 10.9.9.9 127.0.0.1 5000 80\r\n".to_vec();
    let xff = [("X-Forwarded-For", "203.0.113.9")];
    bytes.extend_from_slice(http::upgrade_request(proxy.addr(), "/r", &xff).as_bytes());
    io.write_all(&bytes).await.unwrap();
    let mut buf = Vec::new();
    let head = within("answer", http::read_head(&mut io, &mut buf))
        .await
        .expect("an answer");
    assert_eq!(head.status(), 101, "{head:?}");
    let (xff, real_ip, _) = told(&backend.log.requests().pop().unwrap());
    assert_eq!(
        (xff.as_str(), real_ip.as_str()),
        ("203.0.113.9, 10.9.9.9", "203.0.113.9")
    );
    echo_and_close(FrameStream::new(io, buf, true)).await;
    proxy.assert_drained().await;
}
