//! HAProxy from Debian in front of wsgate, in TCP mode with `send-proxy` and
//! `send-proxy-v2`: the client's address reaches the backend, the close report and the
//! per-IP cap, over plain HTTP/1.1 and over TLS with HTTP/2 behind.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::edge_proxy_protocol::{connect_from, echo_and_close, pp_yaml, upgrade_after};
use crate::support::backend::Backend;
use crate::support::ca::TestCa;
use crate::support::h2client::{H2Conn, tls_yaml};
use crate::support::proxy::{Proxy, route};
use crate::support::{eventually, within};

/// Where HAProxy is (Debian's package, installed by scripts/test.sh).
const HAPROXY: &str = "/usr/sbin/haproxy";

/// HAProxy in TCP mode, one frontend per PROXY version, each on a port picked by binding
/// port 0 and letting it go (HAProxy cannot report a port 0 bind back).
struct Haproxy {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    v1: SocketAddr,
    v2: SocketAddr,
}

impl Haproxy {
    async fn start(server: SocketAddr) -> Haproxy {
        assert!(
            Path::new(HAPROXY).exists(),
            "{HAPROXY} is missing: scripts/test.sh installs Debian's haproxy"
        );
        // A port picked this way could be taken before HAProxy binds it: try again then.
        for _ in 0..5 {
            let (v1, v2) = (free_port(), free_port());
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("haproxy.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
                     timeout client 30s\n  timeout server 30s\n\
                     frontend v1\n  bind {v1}\n  default_backend wsgate_v1\n\
                     frontend v2\n  bind {v2}\n  default_backend wsgate_v2\n\
                     backend wsgate_v1\n  server w {server} send-proxy source 127.0.0.1\n\
                     backend wsgate_v2\n  server w {server} send-proxy-v2 source 127.0.0.1\n"
                ),
            )
            .unwrap();
            let mut child = tokio::process::Command::new(HAPROXY)
                .args(["-db", "-f"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start haproxy");
            let mut up = false;
            // Polled like `eventually`, but HAProxy exiting (its port taken) ends it early.
            for _ in 0..crate::support::patience().as_millis() / 10 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(v1).await.is_ok() && TcpStream::connect(v2).await.is_ok() {
                    up = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if up {
                return Haproxy {
                    child,
                    _dir: dir,
                    v1,
                    v2,
                };
            }
        }
        panic!("haproxy did not start in 5 tries");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn haproxy_send_proxy_and_send_proxy_v2_carry_the_client_address() {
    let backend = Backend::echo().await;
    let routes = route(
        "r",
        "/r",
        &backend.url("/"),
        "    admission: { max_connections_per_ip: 1 }\n",
    );
    let mut proxy = Proxy::start(&pp_yaml("", &routes)).await;
    let haproxy = Haproxy::start(proxy.addr()).await;
    // Readiness probes above went through HAProxy too: only what follows is counted.
    eventually("probes settled", || proxy.active() == 0).await;
    for (front, client, version) in [
        (haproxy.v1, "127.0.0.5", "v1"),
        (haproxy.v2, "127.0.0.6", "v2"),
    ] {
        let before = proxy
            .metric(&format!(
                "wsgate_proxy_protocol_headers_total{{version=\"{version}\"}}"
            ))
            .unwrap_or(0.0);
        let io = connect_from(client, front).await;
        let port = io.local_addr().unwrap().port();
        let (head, ws) = upgrade_after(io, b"", "/r").await;
        assert_eq!(head.status(), 101, "{version}: {head:?}");
        // The cap is per client address: a second client behind the same HAProxy gets
        // in, the same client again does not.
        let other = connect_from("127.0.0.7", front).await;
        let (other_head, other_ws) = upgrade_after(other, b"", "/r").await;
        assert_eq!(
            other_head.status(),
            101,
            "{version}, another client: {other_head:?}"
        );
        let again = connect_from(client, front).await;
        let (again_head, _) = upgrade_after(again, b"", "/r").await;
        assert_eq!(
            again_head.status(),
            429,
            "{version}, same client: {again_head:?}"
        );
        echo_and_close(ws).await;
        let mut reports = vec![proxy.next_report().await];
        echo_and_close(other_ws).await;
        reports.push(proxy.next_report().await);
        assert!(
            reports
                .iter()
                .any(|r| r.client_addr == SocketAddr::new(client.parse().unwrap(), port)),
            "{version}: {reports:?}"
        );
        let after = proxy
            .metric(&format!(
                "wsgate_proxy_protocol_headers_total{{version=\"{version}\"}}"
            ))
            .unwrap_or(0.0);
        assert!(after >= before + 3.0, "{version}: {before} → {after}");
    }
    let seen: Vec<String> = backend
        .log
        .requests()
        .iter()
        .map(|h| h.header("x-forwarded-for").unwrap_or("").to_string())
        .collect();
    for client in ["127.0.0.5", "127.0.0.6", "127.0.0.7"] {
        assert!(seen.iter().any(|x| x == client), "{client} in {seen:?}");
    }
    assert!(!seen.iter().any(|x| x == "127.0.0.1"), "{seen:?}");
    proxy.assert_drained().await;
}

/// TLS behind the header: HAProxy passes the TLS bytes through, the header comes first,
/// and an HTTP/2 extended CONNECT carries the client address like an upgrade does.
#[tokio::test]
async fn haproxy_in_front_of_tls_and_http2() {
    let ca = TestCa::new();
    let backend = Backend::echo().await;
    let yaml = tls_yaml(
        &ca,
        "    proxy_protocol: true\n    proxy_protocol_from: [127.0.0.1]\n",
        "",
        &route("r", "/r", &backend.url("/"), ""),
    );
    let mut proxy = Proxy::start(&yaml).await;
    let haproxy = Haproxy::start(proxy.addr()).await;
    eventually("probes settled", || proxy.active() == 0).await;
    for front in [haproxy.v1, haproxy.v2] {
        let mut conn = H2Conn::connect(front, &ca).await;
        let client = conn.local_addr();
        let mut ws = conn.websocket("/r").await;
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        ws.send(Message::text("over h2")).await.unwrap();
        let echo = within("echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(echo, Message::text("over h2"));
        ws.close(None).await.unwrap();
        let report = proxy.next_report().await;
        assert_eq!(report.protocol.as_str(), "h2");
        // HAProxy connects to wsgate from 127.0.0.1 as well, so the port tells them
        // apart: the report has the client's, not HAProxy's own.
        assert_eq!(report.client_addr, client);
    }
    let _ = haproxy;
    proxy.assert_drained().await;
}
