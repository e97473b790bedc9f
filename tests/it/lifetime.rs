//! `max_lifetime` with jitter: a WebSocket is closed with 1001 "lifetime" at a moment
//! drawn within the jitter of `max_lifetime`, both peers get that Close, and the report
//! says `lifetime`. Under tokio's paused clock with wsgate on the test's runtime.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::backend::Backend;
use crate::support::frame::Frame;
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::{eventually, raw};
use wsgate::{ClosedBy, Outcome};

/// Connections opened together in the bounds test: enough that equal draws would show.
const OPENED: usize = 8;

#[tokio::test(start_paused = true)]
async fn websockets_close_with_1001_lifetime_within_the_jitter() {
    let backend = Backend::echo().await;
    let extra = "    max_lifetime: 3s\n    max_lifetime_jitter: 20%\n";
    let mut proxy = Proxy::builder(&yaml(&route("app", "/app", &backend.url("/ws"), extra)))
        .paused()
        .start()
        .await;
    let opened = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..OPENED {
        clients.push(raw::upgrade(proxy.addr(), "/app").await);
    }
    let all_open = opened.elapsed();

    let waits = clients.into_iter().map(|mut c| async move {
        let close = c.recv_close().await;
        let at = opened.elapsed();
        c.send(Frame::close(1001, "")).await;
        c.expect_eof().await;
        (close.close_code(), close.close_reason(), at)
    });
    let closes = futures_util::future::join_all(waits).await;
    let mut times = Vec::new();
    for (code, reason, at) in closes {
        assert_eq!((code, reason.as_str()), (Some(1001), "lifetime"));
        // Each lifetime starts when its connection was admitted, between 0 and all_open.
        assert!(
            at >= Duration::from_millis(2400) && at <= Duration::from_millis(3600) + all_open,
            "closed after {at:?}, outside 3s ± 20% (opening took {all_open:?})"
        );
        times.push(at);
    }
    times.sort();
    assert!(
        times[OPENED - 1] - times[0] > Duration::from_millis(100),
        "connections opened together closed together: {times:?}"
    );
    for _ in 0..OPENED {
        let report = proxy.next_report().await;
        assert_eq!(report.outcome, Outcome::Lifetime, "{report:?}");
        assert_eq!(report.outcome.as_str(), "lifetime");
        assert_eq!(report.closed_by, ClosedBy::Proxy);
        assert_eq!(report.close_code, Some(1001));
    }
    eventually("the backend got 1001 lifetime", || {
        backend.log.close() == Some((1001, "lifetime".into()))
    })
    .await;
    proxy.assert_drained().await;
}

/// No jitter: exactly `max_lifetime` after the upgrade (within the clock's small steps);
/// and a route with its own `max_lifetime: 0s` is not closed at the default's.
#[tokio::test(start_paused = true)]
async fn without_jitter_the_lifetime_is_exact_and_a_route_can_turn_it_off() {
    let config = "listeners:\n  - bind: \"127.0.0.1:0\"\n\
        defaults: { close_timeout: 1s, handshake_timeout: 1s, ping_interval: 0s, \
        max_lifetime: 3s, max_lifetime_jitter: 0 }\nroutes:\n\
        \x20 - { name: timed, path: /timed, echo: true }\n\
        \x20 - { name: forever, path: /forever, echo: true, max_lifetime: 0s }\n";
    let proxy = Proxy::builder(config).paused().start().await;
    let mut forever = raw::upgrade(proxy.addr(), "/forever").await;
    let mut timed = raw::upgrade(proxy.addr(), "/timed").await;
    let opened = Instant::now();
    let close = timed.expect_close(1001).await;
    let at = opened.elapsed();
    assert_eq!(close.close_reason(), "lifetime");
    assert!(
        at >= Duration::from_millis(2990) && at <= Duration::from_millis(3100),
        "closed after {at:?}, expected 3s"
    );
    // Well past the default lifetime, the other route's connection still echoes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    forever.send(Frame::text("still here")).await;
    assert_eq!(forever.recv_frame().await.payload, b"still here".to_vec());
    forever.expect_close_after_sending(1000, "").await;
    proxy.assert_drained().await;
}

#[test]
fn a_jitter_of_one_or_more_is_refused_with_its_place() {
    for (value, col) in [("1.5", 57), ("100%", 57), ("-0.1", 57), ("lots", 57)] {
        let text = format!(
            "listeners: [{{bind: '127.0.0.1:0'}}]\nroutes:\n  - {{name: a, path: /, echo: true, max_lifetime_jitter: {value}}}\n"
        );
        let err = wsgate::Config::parse(&text, "j.yaml")
            .expect_err("jitter out of range")
            .to_string();
        assert!(
            err.starts_with(&format!("j.yaml:3:{col}:")) && err.contains("fraction"),
            "{value}: {err}"
        );
    }
    let ok = "listeners: [{bind: '127.0.0.1:0'}]\ndefaults: {max_lifetime: 1h, max_lifetime_jitter: '5%'}\nroutes:\n  - {name: a, path: /, echo: true}\n";
    wsgate::Config::parse(ok, "ok.yaml").expect("5% is a fraction");
}
