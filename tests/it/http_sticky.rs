//! `sticky_cookie`: wsgate pins a client to the backend that first served it with a
//! cookie of its own, for plain requests and upgrades alike, whatever the balance. This is
//! what keeps a Socket.IO session on one backend from its first polling request (which has
//! no `sid` yet) to its upgrade.

use hyper::Response;
use hyper::body::Incoming;

use crate::support::http;
use crate::support::http_backend::{self as hb, HttpBackend, fetch, get};
use crate::support::pools::pool_route;
use crate::support::proxy::{Proxy, yaml};

/// Route `app` on `/app` over `nodes` with `extra` route lines.
fn app_route(nodes: &[HttpBackend], extra: &[&str]) -> String {
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("\"{}\"", n.url("/")))
        .collect();
    pool_route("app", "/app", &urls, extra)
}

async fn three() -> [HttpBackend; 3] {
    let both = |req: hyper::Request<Incoming>| async move {
        hb::switch(&req).unwrap_or_else(|| Response::new(hb::text("poll")))
    };
    [
        HttpBackend::start(both).await,
        HttpBackend::start(both).await,
        HttpBackend::start(both).await,
    ]
}

/// Requests each backend saw since `before`.
fn grown(nodes: &[HttpBackend], before: &[usize]) -> Vec<usize> {
    nodes
        .iter()
        .zip(before)
        .map(|(n, b)| n.stats.seen().len() - b)
        .collect()
}

fn with_cookie(path: &str, cookie: &str) -> hyper::Request<hb::Body> {
    let mut req = get(path);
    req.headers_mut()
        .insert("cookie", cookie.parse().expect("a valid cookie header"));
    req
}

/// Round robin alone would spread these over three backends; the cookie the first answer
/// set keeps every later request and the upgrade on the backend that answered it.
#[tokio::test]
async fn the_cookie_set_on_the_first_answer_keeps_requests_and_the_upgrade_on_one_backend() {
    let nodes = three().await;
    let proxy = Proxy::start(&yaml(&app_route(&nodes, &["sticky_cookie: srv"]))).await;
    let mut pinned_to = Vec::new();
    for session in 0..3 {
        let before: Vec<usize> = nodes.iter().map(|n| n.stats.seen().len()).collect();
        let first = fetch(proxy.addr(), get("/app/socket.io/?EIO=4&transport=polling")).await;
        assert_eq!(first.status, 200);
        let set = first.all("set-cookie");
        assert_eq!(set.len(), 1, "session {session}: {set:?}");
        let cookie = set[0].split(';').next().unwrap_or_default().to_string();
        assert!(cookie.starts_with("srv="), "{set:?}");
        assert!(
            set[0].contains("Path=/") && set[0].contains("HttpOnly") && !set[0].contains("Secure"),
            "{set:?}"
        );
        for _ in 0..4 {
            let again = fetch(proxy.addr(), with_cookie("/app/socket.io/?EIO=4", &cookie)).await;
            assert_eq!(again.status, 200);
            assert!(
                again.all("set-cookie").is_empty(),
                "a pinned client is not told again"
            );
        }
        let upgrade = http::upgrade_request(
            proxy.addr(),
            "/app/socket.io/?transport=websocket",
            &[("Cookie", &cookie)],
        );
        let head = http::exchange(proxy.addr(), upgrade).await;
        assert_eq!(head.status(), 101, "{head:?}");
        assert_eq!(head.header("set-cookie"), None, "{head:?}");
        let grew = grown(&nodes, &before);
        assert!(
            grew.contains(&6) && grew.iter().sum::<usize>() == 6,
            "session {session}: {grew:?}"
        );
        pinned_to.push(grew.iter().position(|&g| g == 6));
    }
    pinned_to.sort();
    pinned_to.dedup();
    assert!(
        pinned_to.len() > 1,
        "new sessions are still balanced: {pinned_to:?}"
    );
}

/// A cookie that names no backend of the route (forged, or from a backend a reload
/// removed) is ignored: the balance picks, and the answer sets the right cookie. An
/// upgrade without a cookie gets one on its 101.
#[tokio::test]
async fn a_cookie_naming_no_backend_is_replaced_and_a_101_sets_one() {
    let nodes = three().await;
    let proxy = Proxy::start(&yaml(&app_route(&nodes, &["sticky_cookie: srv"]))).await;
    let res = fetch(
        proxy.addr(),
        with_cookie("/app", "srv=0123456789abcdef; other=1"),
    )
    .await;
    assert_eq!(res.status, 200);
    let set = res.all("set-cookie");
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(!set[0].starts_with("srv=0123456789abcdef;"), "{set:?}");
    let head = http::exchange(
        proxy.addr(),
        http::upgrade_request(proxy.addr(), "/app", &[]),
    )
    .await;
    assert_eq!(head.status(), 101, "{head:?}");
    let on_101 = head.header("set-cookie").unwrap_or_default().to_string();
    assert!(on_101.starts_with("srv="), "{head:?}");
}

#[test]
fn a_sticky_cookie_that_is_not_a_cookie_name_is_refused() {
    let yaml = yaml(&pool_route(
        "app",
        "/app",
        &["\"ws://127.0.0.1:9/\"".to_string()],
        &["sticky_cookie: \"a b\""],
    ));
    let err = match wsgate::Config::parse(&yaml, "test.yaml") {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("sticky_cookie"), "{err}");
}
