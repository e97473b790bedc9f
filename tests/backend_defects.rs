//! Regression tests for defects on the backend side: health state across reloads, the
//! backend TLS trust re-read on reload, and no health check outliving a failed start.

mod support;

use support::pools::one_route::{FAST_CHECKS, PATH, ROUTE, proxy};
use support::pools::{Node, config, hit, pool_route, urls};
use support::{STEP, eventually};

/// Bug: removing `health_check` from a route in a reload left a backend that was
/// unhealthy out of rotation for good, since nothing marked it healthy again.
#[tokio::test]
async fn removing_health_checks_returns_an_unhealthy_backend_to_rotation() {
    let node = Node::start("b0").await;
    node.set_probes_failing(true);
    let proxy = proxy(&urls([&node]), &[FAST_CHECKS]).await;
    eventually("b0 unhealthy", STEP, || {
        proxy.healthy(ROUTE, &node.url()) == Some(0.0)
    })
    .await;
    assert_eq!(hit(proxy.addr(), PATH, &[]).await.status, 503);

    proxy
        .reload(&config("1s", &pool_route(ROUTE, PATH, &urls([&node]), &[])))
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
