//! Reload, in-process through `Running::reload` and `Running::reload_from`:
//! unchanged routes keep their connections; removed or changed routes close
//! theirs with 1012 spread over the drain window; a refused reload (a port that
//! cannot bind, a file that does not parse, a broken certificate) changes nothing
//! and is counted; swapped certificates serve new handshakes only, seen by their
//! serial number; a listener added by reload accepts while the first keeps its
//! connections.
//!
//! Tests that watch time (the drain window, "nothing arrives for a while") run on
//! tokio's paused clock with wsgate on the test's runtime (see `support::clock`).

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::backend::Backend;
use crate::support::ca::{TestCa, cert_paths, serial_of};
use crate::support::proxy::{Proxy, TEST_DEFAULTS, parse, route, yaml};
use crate::support::{client, eventually, http, raw};
use wsgate::{ClosedBy, Outcome};

const RELOADS_OK: &str = "wsgate_config_reloads_total{result=\"ok\"}";
const RELOADS_ERROR: &str = "wsgate_config_reloads_total{result=\"error\"}";

/// Reload settings for the tests: a short drain window, no file watching.
const RELOAD: &str = "reload: { drain_window: 100ms, watch: false }\n";

fn config(routes: &str) -> String {
    yaml(routes) + RELOAD
}

fn plain(routes: &str, reload: &str) -> String {
    format!("listeners:\n  - bind: \"127.0.0.1:0\"\n{TEST_DEFAULTS}routes:\n{routes}{reload}")
}

/// Echo round trip on an open client.
async fn still_echoes(ws: &mut client::Client, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(client::next(ws).await, Message::text(text));
}

/// Nothing arrives on `ws` for longer than the drain window.
async fn stays_quiet(ws: &mut client::Client) {
    let got = tokio::time::timeout(Duration::from_millis(400), ws.next()).await;
    assert!(got.is_err(), "unexpected after reload: {got:?}");
}

async fn status_of(addr: std::net::SocketAddr, path: &str) -> u16 {
    http::exchange(addr, http::upgrade_request(addr, path, &[]))
        .await
        .status()
}

/// The counters of accepted and refused reloads.
fn reloads(proxy: &Proxy) -> (f64, f64) {
    (
        proxy.metric(RELOADS_OK).unwrap_or(0.0),
        proxy.metric(RELOADS_ERROR).unwrap_or(0.0),
    )
}

#[tokio::test(start_paused = true)]
async fn adding_a_route_leaves_open_connections_untouched() {
    let backend = Backend::echo().await;
    let app = route("app", "/app", &backend.url("/ws"), "");
    let mut proxy = Proxy::builder(&config(&app)).paused().start().await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    still_echoes(&mut ws, "before").await;

    let added = app.clone() + "  - { name: echo, path: /echo, echo: true }\n";
    proxy.reload(&config(&added)).await.unwrap();
    stays_quiet(&mut ws).await;
    still_echoes(&mut ws, "after").await;
    assert!(proxy.reports.try_recv().is_err(), "a connection was closed");
    assert_eq!(
        status_of(proxy.addr(), "/echo").await,
        101,
        "the new route serves"
    );
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    proxy.assert_drained().await;
}

/// Connections on the removed route.
const DOOMED: usize = 10;
/// The reload's drain window in the spread test.
const WINDOW: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn removed_route_closes_with_1012_spread_over_the_drain_window() {
    let gone = Backend::echo().await;
    let kept = Backend::echo().await;
    let kept_route = route("kept", "/kept", &kept.url("/ws"), "");
    let reload = "reload: { drain_window: 1s, watch: false }\n";
    let both = route("gone", "/gone", &gone.url("/ws"), "") + &kept_route;
    let mut proxy = Proxy::builder(&plain(&both, reload)).paused().start().await;
    let mut doomed = Vec::new();
    for _ in 0..DOOMED {
        doomed.push(raw::upgrade(proxy.addr(), "/gone").await);
    }
    let (mut ws, _) = client::connect(proxy.url("/kept")).await;

    let reloaded = Instant::now();
    proxy.reload_ok(&plain(&kept_route, reload)).await;
    let waits = doomed.into_iter().map(|mut c| async move {
        let close = c.recv_close().await;
        let at = reloaded.elapsed();
        c.send(crate::support::frame::Frame::close(1012, "")).await;
        c.expect_eof().await;
        (close.close_code(), at)
    });
    let mut closes = futures_util::future::join_all(waits).await;
    closes.sort_by_key(|(_, at)| *at);
    let times: Vec<u128> = closes.iter().map(|(_, at)| at.as_millis()).collect();
    println!("1012 arrival times after reload (ms): {times:?}");
    assert!(
        closes.iter().all(|(code, _)| *code == Some(1012)),
        "{closes:?}"
    );
    let span = closes[DOOMED - 1].1 - closes[0].1;
    assert!(span >= WINDOW / 2, "1012s span {span:?}, window {WINDOW:?}");
    assert!(
        closes[DOOMED - 1].1 < WINDOW + Duration::from_millis(500),
        "last 1012 after {:?}, window {WINDOW:?}",
        closes[DOOMED - 1].1
    );
    let spaced = closes
        .windows(2)
        .filter(|w| w[1].1 - w[0].1 >= WINDOW / 25)
        .count();
    assert!(spaced >= DOOMED / 2, "not spread out: {times:?}");

    eventually("every backend connection closed", || {
        gone.log.messages().iter().filter(|m| m.is_close()).count() == DOOMED
    })
    .await;
    for m in gone.log.messages().iter().filter(|m| m.is_close()) {
        let Message::Close(Some(f)) = m else {
            panic!("{m:?}")
        };
        assert_eq!(u16::from(f.code), 1012, "backend got {f:?}");
    }
    for _ in 0..DOOMED {
        let report = proxy.next_report().await;
        assert_eq!(
            (report.route.as_str(), report.outcome),
            ("gone", Outcome::Reload)
        );
        assert!(matches!(report.closed_by, ClosedBy::Proxy), "{report:?}");
    }
    still_echoes(&mut ws, "kept route untouched").await;
    assert_eq!(status_of(proxy.addr(), "/gone").await, 404);
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn changing_a_route_moves_new_connections_and_closes_old_ones() {
    let old = Backend::echo().await;
    let new = Backend::echo().await;
    let proxy = Proxy::start(&config(&route("app", "/app", &old.url("/ws"), ""))).await;
    let mut before = raw::upgrade(proxy.addr(), "/app").await;

    proxy
        .reload(&config(&route("app", "/app", &new.url("/ws"), "")))
        .await
        .unwrap();
    before.expect_close(1012).await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    still_echoes(&mut ws, "new backend").await;
    assert_eq!(old.log.requests().len(), 1);
    assert_eq!(new.log.requests().len(), 1);
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    proxy.assert_drained().await;
}

#[tokio::test(start_paused = true)]
async fn rejected_reload_changes_nothing() {
    let backend = Backend::echo().await;
    let app = route("app", "/app", &backend.url("/ws"), "");
    let proxy = Proxy::builder(&config(&app)).paused().start().await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;

    // A new route plus a listener that cannot bind: the whole reload must be refused.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n  - bind: \"{}\"\n{TEST_DEFAULTS}routes:\n{app}  \
         - {{ name: new, path: /new, echo: true }}\n{RELOAD}",
        taken.local_addr().unwrap()
    );
    let err = proxy
        .reload(&bad)
        .await
        .expect_err("reload with a taken port");
    assert!(
        err.contains(&taken.local_addr().unwrap().to_string()),
        "{err}"
    );

    stays_quiet(&mut ws).await;
    still_echoes(&mut ws, "old config in force").await;
    assert_eq!(
        status_of(proxy.addr(), "/new").await,
        404,
        "half of a rejected reload applied"
    );
    assert_eq!(status_of(proxy.addr(), "/app").await, 101);
    assert_eq!(reloads(&proxy), (0.0, 1.0), "the refusal is counted");
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    proxy.assert_drained().await;
}

fn file_config(routes: &str) -> String {
    plain(routes, "reload: { watch: false }\n")
}

const APP: &str = "  - name: app\n    path: /app\n    echo: true\n";

#[tokio::test]
async fn invalid_file_on_reload_is_refused_with_its_place_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsgate.yaml");
    std::fs::write(&path, file_config(APP)).unwrap();
    let proxy = Proxy::from_file(&path).await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;

    // Line 11 is `    ping_interval: soon`; the value starts at column 20.
    let bad = APP.to_string()
        + "  - name: new\n    path: /new\n    echo: true\n    ping_interval: soon\n";
    std::fs::write(&path, file_config(&bad)).unwrap();
    let err = proxy
        .running()
        .reload_from(&path)
        .await
        .expect_err("bad duration")
        .to_string();
    println!("refused reload: {err}");
    let place = format!("{}:11:20: ", path.display());
    assert!(
        err.starts_with(&place),
        "error {err:?} does not start with {place:?}"
    );
    assert_eq!(
        proxy.metric(RELOADS_ERROR).unwrap_or(0.0),
        1.0,
        "{}",
        proxy.running().metrics().render()
    );
    assert_eq!(proxy.metric(RELOADS_OK).unwrap_or(0.0), 0.0);
    still_echoes(&mut ws, "old config serves").await;
    assert_eq!(status_of(proxy.addr(), "/new").await, 404);
    assert_eq!(status_of(proxy.addr(), "/app").await, 101);

    let good = APP.to_string() + "  - name: new\n    path: /new\n    echo: true\n";
    std::fs::write(&path, file_config(&good)).unwrap();
    proxy.running().reload_from(&path).await.unwrap();
    assert_eq!(proxy.metric(RELOADS_OK).unwrap_or(0.0), 1.0);
    assert_eq!(status_of(proxy.addr(), "/new").await, 101);
    still_echoes(&mut ws, "still up").await;
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    proxy.assert_drained().await;
}

fn tls_config(dir: &Path) -> String {
    let (cert, key) = cert_paths(dir);
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {{ cert: {}, key: {} }}\n\
         {TEST_DEFAULTS}routes:\n{APP}reload: {{ watch: false }}\n",
        cert.display(),
        key.display()
    )
}

#[tokio::test]
async fn certificate_swap_serves_the_new_serial_and_a_broken_one_is_refused() {
    let ca = TestCa::new();
    let (a, b) = (ca.issue(0x0a11), ca.issue(0x0b22));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_paths(dir.path());
    a.write(&cert, &key);
    let path = dir.path().join("wsgate.yaml");
    std::fs::write(&path, tls_config(dir.path())).unwrap();
    let proxy = Proxy::from_file(&path).await;

    let (mut old, served) = client::connect_tls_cert(proxy.addr(), "/app", &ca).await;
    assert_eq!(serial_of(&served), 0x0a11);
    still_echoes(&mut old, "on A").await;

    b.write(&cert, &key);
    proxy.running().reload_from(&path).await.unwrap();
    let (mut new, served) = client::connect_tls_cert(proxy.addr(), "/app", &ca).await;
    assert_eq!(serial_of(&served), 0x0b22, "after the swap");
    assert_eq!(served, b.der);
    still_echoes(&mut new, "on B").await;
    still_echoes(&mut old, "A's connection untouched").await;

    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = proxy
        .running()
        .reload_from(&path)
        .await
        .expect_err("broken cert");
    println!("broken certificate refused: {err}");
    assert!(
        err.to_string().starts_with(&format!("{}:", path.display())),
        "{err}"
    );
    assert_eq!(reloads(&proxy), (1.0, 1.0));
    let (mut third, served) = client::connect_tls_cert(proxy.addr(), "/app", &ca).await;
    assert_eq!(serial_of(&served), 0x0b22, "after a refused reload");
    still_echoes(&mut third, "B still served").await;
    still_echoes(&mut old, "A's connection still untouched").await;
    for ws in [&mut old, &mut new, &mut third] {
        ws.close(None).await.unwrap();
        for _ in 0..10 {
            if crate::support::within("close", ws.next()).await.is_none() {
                break;
            }
        }
    }
    proxy.assert_drained().await;
}

#[tokio::test]
async fn listener_added_by_reload_accepts_while_the_first_keeps_its_connections() {
    let proxy = Proxy::start(&plain(APP, "")).await;
    let first = proxy.addr();
    let (mut ws, _) = client::connect(format!("ws://{first}/app")).await;
    still_echoes(&mut ws, "before").await;

    let two = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n  - bind: \"127.0.0.1:0\"\n\
         {TEST_DEFAULTS}routes:\n{APP}"
    );
    proxy
        .running()
        .reload(parse(&two, "reload.yaml"))
        .await
        .unwrap();
    let addrs = proxy.running().listener_addrs();
    println!("listeners after reload: {addrs:?}");
    assert_eq!(
        addrs.len(),
        2,
        "listener_addrs() after adding one: {addrs:?}"
    );
    assert_eq!(addrs[0], first, "the first listener was replaced");
    let (mut other, _) = client::connect(format!("ws://{}/app", addrs[1])).await;
    still_echoes(&mut other, "second listener").await;
    still_echoes(&mut ws, "first listener's connection").await;
    assert_eq!(status_of(first, "/app").await, 101);
    for ws in [&mut ws, &mut other] {
        ws.close(None).await.unwrap();
        client::drain(ws).await;
    }
    proxy.assert_drained().await;
}
