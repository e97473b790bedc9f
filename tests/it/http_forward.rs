//! Plain HTTP on routes: routing first, forwarding to the route's pool with the upgrade's
//! header policy, bodies streamed both ways.

use hyper::Response;

use crate::support::http;
use crate::support::http_backend::{self as hb, HttpBackend, fetch, get};
use crate::support::proxy::{Proxy, route, yaml};

async fn hello() -> HttpBackend {
    HttpBackend::start(|_req| async { Response::new(hb::text("hello")) }).await
}

/// Before plain forwarding, every plain request (even to an unknown path) got 426.
#[tokio::test]
async fn routing_comes_first_unknown_path_is_404_and_a_routed_get_is_forwarded() {
    let backend = hello().await;
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/"), ""))).await;
    let res = fetch(proxy.addr(), get("/nope")).await;
    assert_eq!(res.status, 404);
    let res = fetch(proxy.addr(), get("/app/x")).await;
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
    let up = http::exchange(
        proxy.addr(),
        http::upgrade_request(proxy.addr(), "/nope", &[]),
    )
    .await;
    assert_eq!(up.status(), 404);
    assert_eq!(backend.stats.seen().len(), 1);
}
