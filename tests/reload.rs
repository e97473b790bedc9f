//! Reload: unchanged routes keep their connections, removed or changed routes
//! close theirs with 1012, a rejected reload changes nothing, and replaced
//! certificates serve new handshakes only.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use support::backend::Backend;
use support::ca::TestCa;
use support::http;
use support::proxy::{Proxy, TEST_DEFAULTS, route, yaml};
use support::{STEP, client, eventually, raw};
use wsgate::{ClosedBy, Outcome};

/// Reload settings for the tests: a short drain window, no file watching.
const RELOAD: &str = "reload: { drain_window: 100ms, watch: false }\n";

fn config(routes: &str) -> String {
    yaml(routes) + RELOAD
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

async fn status_of(proxy: &Proxy, path: &str) -> u16 {
    let request = http::upgrade_request(proxy.addr(), path, &[]);
    http::exchange(proxy.addr(), request).await.status()
}

#[tokio::test]
async fn adding_a_route_leaves_open_connections_untouched() {
    let backend = Backend::echo().await;
    let app = route("app", "/app", &backend.url("/ws"), "");
    let mut proxy = Proxy::start(&config(&app)).await;
    let (mut ws, _) = client::connect(proxy.url("/app")).await;
    still_echoes(&mut ws, "before").await;

    let added = app.clone() + "  - { name: echo, path: /echo, echo: true }\n";
    proxy.reload(&config(&added)).await.unwrap();
    stays_quiet(&mut ws).await;
    still_echoes(&mut ws, "after").await;
    assert!(proxy.reports.try_recv().is_err(), "a connection was closed");
    assert_eq!(
        status_of(&proxy, "/echo").await,
        101,
        "the new route serves"
    );
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn removing_a_route_closes_its_connections_with_1012() {
    let gone = Backend::echo().await;
    let kept = Backend::echo().await;
    let kept_route = route("kept", "/kept", &kept.url("/ws"), "");
    let both = route("gone", "/gone", &gone.url("/ws"), "") + &kept_route;
    let mut proxy = Proxy::start(&config(&both)).await;
    let mut doomed = raw::upgrade(proxy.addr(), "/gone").await;
    let (mut ws, _) = client::connect(proxy.url("/kept")).await;

    proxy.reload(&config(&kept_route)).await.unwrap();
    doomed.expect_close(1012).await;
    eventually("backend of the removed route closed", STEP, || {
        gone.log.close().is_some()
    })
    .await;
    let (code, _) = gone.log.close().unwrap();
    assert!(matches!(code, 1001 | 1012), "backend got close {code}");
    let report = proxy.next_report().await;
    assert_eq!(report.route, "gone");
    assert_eq!(report.outcome, Outcome::Reload, "{report:?}");
    assert!(matches!(report.closed_by, ClosedBy::Proxy), "{report:?}");

    still_echoes(&mut ws, "kept route lives").await;
    assert_eq!(status_of(&proxy, "/gone").await, 404);
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

#[tokio::test]
async fn rejected_reload_changes_nothing() {
    let backend = Backend::echo().await;
    let app = route("app", "/app", &backend.url("/ws"), "");
    let proxy = Proxy::start(&config(&app)).await;
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
        status_of(&proxy, "/new").await,
        404,
        "half of a rejected reload applied"
    );
    assert_eq!(status_of(&proxy, "/app").await, 101);
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    proxy.assert_drained().await;
}

#[tokio::test]
async fn replaced_certificate_serves_new_handshakes_only() {
    let first = TestCa::new();
    let second = TestCa::new();
    let yaml = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {}\n{TEST_DEFAULTS}\
         routes:\n  - {{ name: echo, path: /echo, echo: true }}\n{RELOAD}",
        first.listener_tls_yaml()
    );
    let proxy = Proxy::start(&yaml).await;
    let (mut old, _) = client::connect_tls(proxy.addr(), "/echo", &first).await;
    still_echoes(&mut old, "first cert").await;

    // Replace the files in place, then reload the same configuration.
    std::fs::copy(second.cert_pem(), first.cert_pem()).unwrap();
    std::fs::copy(second.key_pem(), first.key_pem()).unwrap();
    proxy.reload(&yaml).await.unwrap();

    let (mut new, _) = client::connect_tls(proxy.addr(), "/echo", &second).await;
    still_echoes(&mut new, "second cert").await;
    still_echoes(&mut old, "old connection untouched").await;
    let url = format!("wss://localhost:{}/echo", proxy.addr().port());
    let tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let stale =
        tokio_tungstenite::client_async_tls_with_config(url, tcp, None, Some(first.connector()))
            .await;
    assert!(stale.is_err(), "the old certificate is still served");
    for ws in [&mut old, &mut new] {
        ws.close(None).await.unwrap();
        client::drain(ws).await;
    }
    proxy.assert_drained().await;
}
