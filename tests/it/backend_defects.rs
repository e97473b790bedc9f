//! Regression tests for defects on the backend side: health state across reloads, the
//! backend TLS trust re-read on reload, and no health check outliving a failed start.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::SinkExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::support::backend;
use crate::support::ca::TestCa;
use crate::support::child::replace_file;
use crate::support::client::{self, Client};
use crate::support::pools::one_route::{FAST_CHECKS, PATH, ROUTE};
use crate::support::pools::{Node, config, hit, pool_route, urls};
use crate::support::proxy::{self, Proxy};
use crate::support::{eventually, within};

/// Bug: removing `health_check` from a route in a reload left a backend that was
/// unhealthy out of rotation for good, since nothing marked it healthy again.
#[tokio::test]
async fn removing_health_checks_returns_an_unhealthy_backend_to_rotation() {
    let node = Node::start("b0").await;
    node.set_probes_failing(true);
    let proxy = crate::support::pools::one_route::proxy(&urls([&node]), &[FAST_CHECKS]).await;
    eventually("b0 unhealthy", || {
        proxy.healthy(ROUTE, &node.url()) == Some(0.0)
    })
    .await;
    assert_eq!(hit(proxy.addr(), PATH, &[]).await.status, 503);

    proxy
        .reload_ok(&config("1s", &pool_route(ROUTE, PATH, &urls([&node]), &[])))
        .await;
    let after = hit(proxy.addr(), PATH, &[]).await;
    assert_eq!(
        (after.status, after.backend.as_deref()),
        (101, Some("b0")),
        "{:?}",
        after.head
    );
    assert_eq!(proxy.healthy(ROUTE, &node.url()), Some(1.0));
}

/// A `wss://` echo backend on 127.0.0.1:0 whose certificate can be replaced while it
/// runs: each new connection gets the certificate in force when it is accepted.
struct SwappableTlsBackend {
    addr: SocketAddr,
    tls: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    task: JoinHandle<()>,
}

impl Drop for SwappableTlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SwappableTlsBackend {
    /// Most connections it accepts before its loop ends.
    const MAX_ACCEPTS: usize = 100;

    async fn start(tls: Arc<rustls::ServerConfig>) -> SwappableTlsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let tls = Arc::new(Mutex::new(tls));
        let current = tls.clone();
        let task = tokio::spawn(async move {
            for _ in 0..Self::MAX_ACCEPTS {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = TlsAcceptor::from(current.lock().unwrap().clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let io: Box<dyn backend::Io> = Box::new(tls);
                    if let Ok(ws) = tokio_tungstenite::accept_async(io).await {
                        backend::echo(ws, Arc::default()).await;
                    }
                });
            }
        });
        SwappableTlsBackend { addr, tls, task }
    }

    /// Presents `tls`'s certificate to every connection accepted from now on.
    fn replace(&self, tls: Arc<rustls::ServerConfig>) {
        *self.tls.lock().unwrap() = tls;
    }

    fn url(&self) -> String {
        format!("wss://localhost:{}/", self.addr.port())
    }
}

async fn round_trip(ws: &mut Client, text: &str) {
    within("send", ws.send(Message::text(text))).await.unwrap();
    assert_eq!(client::next(ws).await, Message::text(text));
}

/// Bug: a route's `tls_ca` file was never re-read, though a reload re-reads every
/// certificate: a backend moved to a certificate from a new CA stayed unreachable.
#[tokio::test]
async fn reload_rereads_a_routes_tls_ca_without_retiring_its_connections() {
    let (ca1, ca2) = (TestCa::new(), TestCa::new());
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("backend-ca.pem");
    std::fs::copy(ca1.ca_pem(), &trust).unwrap();
    let backend = SwappableTlsBackend::start(ca1.server_config()).await;
    let config = proxy::yaml(&proxy::route(
        "p",
        "/p",
        &backend.url(),
        &format!("    tls_ca: {}\n", trust.display()),
    ));
    let proxy = Proxy::start(&config).await;
    let (mut held, _) = client::connect(proxy.url("/p")).await;
    round_trip(&mut held, "before").await;

    backend.replace(ca2.server_config());
    replace_file(&trust, &std::fs::read(ca2.ca_pem()).unwrap());
    proxy.reload(&config).await.expect("reload");

    let (mut fresh, _) = client::try_connect(proxy.url("/p"))
        .await
        .unwrap_or_else(|e| panic!("new connection after the CA change: {e}"));
    round_trip(&mut fresh, "after").await;
    round_trip(&mut held, "still open").await;
    assert_eq!(proxy.active(), 2, "the reload retired no connection");
}

/// Bug: health-check tasks kept probing after `run()` failed on a later step, so a
/// proxy that never started went on loading its backends.
#[tokio::test]
async fn a_failed_start_leaves_no_health_check_running() {
    const INTERVAL: Duration = Duration::from_millis(20);
    let node = Node::start("b0").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap();
    let check = format!(
        "health_check: {{path: /health, interval: {}ms, timeout: 200ms}}",
        INTERVAL.as_millis()
    );
    let yaml = config("1s", &pool_route(ROUTE, PATH, &urls([&node]), &[&check]))
        .replace("127.0.0.1:0", &addr.to_string());
    let config = wsgate::Config::parse(&yaml, "taken.yaml").expect("valid config");
    let shutdown = CancellationToken::new();
    let started = within("wsgate::run", wsgate::run(config, shutdown.clone())).await;
    assert!(
        matches!(started, Err(wsgate::StartError::Bind { addr: a, .. }) if a == addr),
        "run() must fail on the taken port: {:?}",
        started.as_ref().err()
    );
    // An absence cannot be polled for: wait out several intervals, then count.
    tokio::time::sleep(INTERVAL * 10).await;
    assert_eq!(node.probes(), 0, "probes after a failed start");
    drop(taken);
    shutdown.cancel();
}
