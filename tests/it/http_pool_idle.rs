//! When the keep-alive pool closes a backend connection: its idle timeout counts from its
//! last use, however often it was used before; one handed back after shutdown began is
//! not kept, and an idle one is closed when shutdown begins. (Each connection's task
//! looks at its idle mark only when its own timer fires, rather than being told of every
//! checkout and return, and polls its timer and shutdown only when one of them moved.)

use std::time::Duration;

use hyper::Response;

use crate::support::eventually;
use crate::support::http_backend::{self as hb, HttpBackend, fetch, get};
use crate::support::proxy::{Proxy, route, yaml};

#[tokio::test(start_paused = true)]
async fn a_reused_connection_is_closed_its_idle_timeout_after_its_last_use() {
    let backend = HttpBackend::start(|_req| async { Response::new(hb::text("hello")) }).await;
    let proxy = Proxy::builder(&yaml(&route(
        "app",
        "/app",
        &backend.url("/"),
        "    http_pool_idle_timeout: 10s\n",
    )))
    .paused()
    .start()
    .await;
    // t = 0: the connection opens; t = 8 s: it is reused, idle again from then.
    fetch(proxy.addr(), get("/app")).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    fetch(proxy.addr(), get("/app")).await;
    // t = 12 s: past 10 s from its opening and its first use, not from its last use.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        backend.stats.closed(),
        0,
        "closed by its first idle period, not its last"
    );
    assert_eq!(backend.stats.accepted(), 1);
    // t = 17 s: about a second before it is due (18 s); then it closes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(backend.stats.closed(), 0, "closed before it was due");
    eventually("the idle connection closed", || backend.stats.closed() == 1).await;
    fetch(proxy.addr(), get("/app")).await;
    assert_eq!(backend.stats.accepted(), 2);
}

#[tokio::test]
async fn a_connection_handed_back_after_shutdown_began_is_closed() {
    let (backend, _proxy, client) = hb::request_in_flight_at_shutdown().await;
    assert_eq!(client.await.unwrap().status, 200);
    eventually("the connection closed once its response was over", || {
        backend.stats.closed() == 1
    })
    .await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_when_shutdown_begins() {
    let backend = HttpBackend::start(|_req| async { Response::new(hb::text("hello")) }).await;
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/"), ""))).await;
    assert_eq!(fetch(proxy.addr(), get("/app")).await.status, 200);
    assert_eq!(backend.stats.closed(), 0, "kept idle in the pool");
    proxy.cancel();
    eventually("the idle connection closed at shutdown", || {
        backend.stats.closed() == 1
    })
    .await;
}
