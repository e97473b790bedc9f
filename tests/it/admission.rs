//! Admission: the per-client cap and the new-connection rate of a route under 1,000
//! concurrent attempts (exact counts admitted and refused, 429 with `Retry-After`,
//! counted by reason, places given back), the bucket's `Retry-After` and refill, plain
//! requests left out, state kept across a reload, and `/readyz` under load.

use std::time::Duration;

use hyper::{Request, Response};
use tokio::io::AsyncReadExt;

use crate::support::frame::Frame;
use crate::support::http_backend::{self as hb, HttpBackend};
use crate::support::proxy::{Proxy, TEST_DEFAULTS, route, yaml};
use crate::support::raw::{self, RawClient};
use crate::support::{eventually, http, within};

/// Concurrent attempts in the load tests.
const ATTEMPTS: usize = 1_000;

/// An echo route named `r` at `/r` with `admission` (a YAML flow mapping).
fn echo_route(admission: &str) -> String {
    format!("  - {{ name: r, path: /r, echo: true, admission: {admission} }}\n")
}

/// `ATTEMPTS` upgrades to `/r` at once; the admitted ones (still open) and the refusals'
/// heads.
async fn storm(proxy: &Proxy) -> (Vec<RawClient>, Vec<http::Head>) {
    let addr = proxy.addr();
    let attempts = (0..ATTEMPTS).map(|_| tokio::spawn(raw::upgrade_with(addr, "/r", &[])));
    let mut admitted = Vec::new();
    let mut refused = Vec::new();
    for attempt in futures_util::future::join_all(attempts).await {
        let (head, client) = attempt.expect("attempt task");
        if head.status() == 101 {
            admitted.push(client);
        } else {
            refused.push(head);
        }
    }
    (admitted, refused)
}

/// Closes every client cleanly (Close, its reply, EOF), all at once.
async fn close_all(clients: Vec<RawClient>) {
    let closes = clients
        .into_iter()
        .map(|mut c| async move { c.expect_close_after_sending(1000, "").await });
    within(
        "closing the admitted",
        futures_util::future::join_all(closes),
    )
    .await;
}

fn refusals(proxy: &Proxy, reason: &str) -> f64 {
    refusals_on(proxy, "r", reason)
}

fn refusals_on(proxy: &Proxy, route: &str, reason: &str) -> f64 {
    proxy
        .metric(&format!(
            "wsgate_admission_refusals_total{{route=\"{route}\",reason=\"{reason}\"}}"
        ))
        .unwrap_or(0.0)
}

/// 1,000 upgrades from one address against a cap of 100: exactly 100 get through and
/// 900 get 429 with `Retry-After`; once they close, the places are all back (another
/// 100 get through), so no count outlives its connections.
#[tokio::test]
async fn the_per_ip_cap_admits_exactly_its_count_of_1000_attempts() {
    const CAP: usize = 100;
    let proxy = Proxy::with_routes(&echo_route("{ max_connections_per_ip: 100 }")).await;
    for round in 0..2 {
        let (admitted, refused) = storm(&proxy).await;
        assert_eq!(
            (admitted.len(), refused.len()),
            (CAP, ATTEMPTS - CAP),
            "round {round}"
        );
        for head in &refused {
            assert_eq!(head.status(), 429, "{head:?}");
            assert_eq!(head.header("retry-after"), Some("10"), "{head:?}");
        }
        assert_eq!(proxy.active(), CAP);
        assert_eq!(
            refusals(&proxy, "per_ip"),
            ((round + 1) * (ATTEMPTS - CAP)) as f64
        );
        close_all(admitted).await;
        proxy.assert_drained().await;
    }
    assert_eq!(refusals(&proxy, "rate"), 0.0);
}

/// 1,000 upgrades at once against a bucket of 50 that refills once every 1,000 s: exactly
/// 50 get through, and every refusal says when the next token comes.
#[tokio::test]
async fn the_rate_admits_exactly_its_burst_of_1000_attempts() {
    let proxy = Proxy::with_routes(&echo_route(
        "{ new_connections_rate: { per_second: 0.001, burst: 50 } }",
    ))
    .await;
    let (admitted, refused) = storm(&proxy).await;
    assert_eq!((admitted.len(), refused.len()), (50, ATTEMPTS - 50));
    for head in &refused {
        assert_eq!(head.status(), 429, "{head:?}");
        let secs: u64 = head
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After in seconds: {head:?}"));
        assert!((990..=1000).contains(&secs), "Retry-After {secs}");
    }
    assert_eq!(refusals(&proxy, "rate"), (ATTEMPTS - 50) as f64);
    close_all(admitted).await;
    proxy.assert_drained().await;
}

/// Under the paused clock: `Retry-After` is the wait for the next token, rounded up, and
/// after that wait the next upgrade is admitted.
#[tokio::test(start_paused = true)]
async fn retry_after_is_when_the_bucket_has_a_token_again() {
    let proxy = Proxy::builder(&yaml(&echo_route(
        "{ new_connections_rate: { per_second: 0.4, burst: 2 } }",
    )))
    .paused()
    .start()
    .await;
    let mut open = Vec::new();
    for _ in 0..2 {
        open.push(raw::upgrade(proxy.addr(), "/r").await);
    }
    let (head, _) = raw::upgrade_with(proxy.addr(), "/r", &[]).await;
    assert_eq!(head.status(), 429);
    // One token every 2.5 s, and a few ms of virtual time have passed: 3 s, rounded up.
    assert_eq!(head.header("retry-after"), Some("3"), "{head:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    open.push(raw::upgrade(proxy.addr(), "/r").await);
    close_all(open).await;
    proxy.assert_drained().await;
}

/// A backend that answers plain requests and holds every WebSocket it accepts open
/// (reading until the tunnel ends), so a test can hold one without an echo.
async fn holding_backend() -> HttpBackend {
    HttpBackend::start(|mut req: Request<hyper::body::Incoming>| async move {
        let Some(res) = hb::switch(&req) else {
            return Response::new(hb::text("page"));
        };
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = hyper_util::rt::TokioIo::new(up);
                let mut buf = [0u8; 256];
                while io.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            }
        });
        res
    })
    .await
}

/// Plain requests are short and not connections: they neither take a place under the
/// per-client cap nor draw from the route's rate; only upgrades do.
#[tokio::test]
async fn plain_requests_are_not_limited_by_admission() {
    let backend = holding_backend().await;
    let extra = "    admission: { max_connections_per_ip: 1, \
                 new_connections_rate: { per_second: 0.001, burst: 2 } }\n";
    let proxy = Proxy::with_routes(&route("r", "/r", &backend.url(""), extra)).await;
    let (head, mut held) = raw::upgrade_with(proxy.addr(), "/r", &[]).await;
    assert_eq!(head.status(), 101);
    for _ in 0..20 {
        let res = hb::fetch(proxy.addr(), hb::get("/r/page")).await;
        assert_eq!((res.status, res.text().as_str()), (200, "page"));
    }
    let (second, _) = raw::upgrade_with(proxy.addr(), "/r", &[]).await;
    assert_eq!(second.status(), 429, "the one place is taken: {second:?}");
    assert_eq!(refusals(&proxy, "per_ip"), 1.0);
    // The refused upgrade took no token either: the bucket's second one is still there.
    held.send(Frame::close(1000, "")).await;
    drop(held);
    proxy.assert_drained().await;
    let (third, _) = raw::upgrade_with(proxy.addr(), "/r", &[]).await;
    assert_eq!(third.status(), 101, "{third:?}");
    assert_eq!(refusals(&proxy, "rate"), 0.0);
}

/// A config with a 60 s drain window (connections of a changed route stay open during
/// the test) and `routes`.
fn reloadable(routes: &str) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n{TEST_DEFAULTS}\
         reload: {{ drain_window: 60s, watch: false }}\nroutes:\n{routes}"
    )
}

/// A reload that changes a route in other ways rebuilds it but keeps its admission
/// state: the places of its connections still open (`r`), and the tokens of an
/// unchanged rate (`q`); a changed rate starts with a full bucket.
#[tokio::test]
async fn admission_state_survives_a_reload_of_its_route() {
    let routes = |origins: &str, burst: u32| {
        format!(
            "  - {{ name: r, path: /r, echo: true, origins: [{origins}], \
             admission: {{ max_connections_per_ip: 2 }} }}\n\
             \x20 - {{ name: q, path: /q, echo: true, origins: [{origins}], \
             admission: {{ new_connections_rate: {{ per_second: 0.001, burst: {burst} }} }} }}\n"
        )
    };
    let proxy = Proxy::start(&reloadable(&routes("", 2))).await;
    let held = [
        raw::upgrade(proxy.addr(), "/r").await,
        raw::upgrade(proxy.addr(), "/r").await,
    ];
    close_all(vec![raw::upgrade(proxy.addr(), "/q").await]).await;
    eventually("the /q connection ended", || proxy.active() == 2).await;

    // Other origins: both routes are rebuilt. The 60 s window closes one of r's two
    // connections at once (1012) and the other in 30 s.
    proxy
        .reload_ok(&reloadable(&routes("'https://a.test'", 2)))
        .await;
    eventually("one of r's connections retired", || proxy.active() == 1).await;
    let taken = raw::upgrade(proxy.addr(), "/r").await;
    let (head, _) = raw::upgrade_with(proxy.addr(), "/r", &[]).await;
    assert_eq!(
        head.status(),
        429,
        "the connection still open from before the reload counts: {head:?}"
    );
    assert_eq!(refusals_on(&proxy, "r", "per_ip"), 1.0);

    let spent = raw::upgrade(proxy.addr(), "/q").await;
    let (head, _) = raw::upgrade_with(proxy.addr(), "/q", &[]).await;
    assert_eq!(
        head.status(),
        429,
        "the token spent before the reload stays spent: {head:?}"
    );
    assert_eq!(refusals_on(&proxy, "q", "rate"), 1.0);

    proxy
        .reload_ok(&reloadable(&routes("'https://a.test'", 3)))
        .await;
    let fresh = raw::upgrade(proxy.addr(), "/q").await;
    drop((held, taken, spent, fresh));
    proxy.assert_drained().await;
}

/// `/readyz` says 503 while connections fill `admin.ready_below` of `max_connections`,
/// and ready again once they drop below it; off by default.
#[tokio::test]
async fn readyz_is_not_ready_above_the_occupancy_threshold() {
    let config = |admin_extra: &str| {
        format!(
            "listeners:\n  - bind: \"127.0.0.1:0\"\nadmin: {{ bind: \"127.0.0.1:0\"{admin_extra} }}\n\
             limits: {{ max_connections: 4 }}\n{TEST_DEFAULTS}routes:\n\
             \x20 - {{ name: r, path: /r, echo: true }}\n"
        )
    };
    let proxy = Proxy::start(&config(", ready_below: 0.5")).await;
    let admin = proxy.admin_addr();
    let readyz = || async move {
        http::exchange(
            admin,
            "GET /readyz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
    };
    assert_eq!(readyz().await.status(), 200);
    let first = raw::upgrade(proxy.addr(), "/r").await;
    assert_eq!(readyz().await.status(), 200, "1 of 4 is below half");
    let second = raw::upgrade(proxy.addr(), "/r").await;
    let full = readyz().await;
    assert_eq!((full.status(), full.body_text().as_str()), (503, "full\n"));
    // Not ready is advice to the load balancer; the proxy still admits up to its cap.
    let third = raw::upgrade(proxy.addr(), "/r").await;
    close_all(vec![second, third]).await;
    eventually("one connection left", || proxy.active() == 1).await;
    assert_eq!(readyz().await.status(), 200);

    // Reloaded without the threshold: ready however full.
    proxy.reload_ok(&config("")).await;
    let more = vec![
        raw::upgrade(proxy.addr(), "/r").await,
        raw::upgrade(proxy.addr(), "/r").await,
        first,
    ];
    assert_eq!(readyz().await.status(), 200);
    close_all(more).await;
    proxy.assert_drained().await;
}

/// Values that would refuse everyone are refused at load, with their place.
#[test]
fn admission_keys_are_checked_with_their_place() {
    let cases = [
        ("{ max_connections_per_ip: 0 }", "at least 1"),
        ("{ max_connections_per_identity: 0 }", "at least 1"),
        ("{ ipv6_prefix: 129 }", "1 to 128"),
        ("{ new_connections_rate: { per_second: 0 } }", "above 0"),
        (
            "{ new_connections_rate: { per_second: 5, burst: 0 } }",
            "burst 0",
        ),
        ("{ per_ip: 3 }", "unknown field"),
    ];
    for (admission, expected) in cases {
        let text = format!(
            "listeners: [{{bind: '127.0.0.1:0'}}]\nroutes:\n{}",
            echo_route(admission)
        );
        let err = wsgate::Config::parse(&text, "a.yaml")
            .expect_err(admission)
            .to_string();
        assert!(
            err.starts_with("a.yaml:3:") && err.contains(expected),
            "{admission}: {err}"
        );
    }
    let text = "listeners: [{bind: '127.0.0.1:0'}]\nadmin: {bind: '127.0.0.1:0', ready_below: 1.5}\nroutes:\n  - {name: r, path: /, echo: true}\n";
    let err = wsgate::Config::parse(text, "a.yaml")
        .expect_err("1.5")
        .to_string();
    assert!(
        err.starts_with("a.yaml:2:") && err.contains("at most 1"),
        "{err}"
    );
}

/// One client is one client whichever socket family it arrives on: 127.0.0.1 on an IPv4
/// listener and on a dual-stack one (where it shows as `::ffff:127.0.0.1`) shares one
/// place, while `::1` is another client.
#[tokio::test]
async fn an_ipv4_mapped_client_is_counted_as_its_ipv4_address() {
    let config = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n  - bind: \"[::]:0\"\n{TEST_DEFAULTS}routes:\n{}",
        echo_route("{ max_connections_per_ip: 1 }")
    );
    let proxy = Proxy::start(&config).await;
    let dual_port = proxy.addrs[1].port();
    let held = raw::upgrade(proxy.addr(), "/r").await;
    let mapped: std::net::SocketAddr = ([127, 0, 0, 1], dual_port).into();
    let (head, _) = raw::upgrade_with(mapped, "/r", &[]).await;
    assert_eq!(head.status(), 429, "the same client through IPv6: {head:?}");
    let v6: std::net::SocketAddr = (std::net::Ipv6Addr::LOCALHOST, dual_port).into();
    let other = raw::upgrade(v6, "/r").await;
    close_all(vec![held, other]).await;
    proxy.assert_drained().await;
    assert_eq!(refusals(&proxy, "per_ip"), 1.0);
}
