//! Live reload in-process, through `Running::reload` and `Running::reload_from`:
//! 1012 spread over the drain window, a refused file with its file:line:column
//! and the error counter, certificate swaps seen by their serial number, and a
//! listener added while the first one's connections stay up.

mod support;

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use support::backend::Backend;
use support::lifecycle::{Authority, Gate, cert_paths, connect_tls, serial_of};
use support::proxy::{TEST_DEFAULTS, route};
use support::{STEP, client, eventually, http, raw};
use wsgate::{Config, Outcome};

const RELOADS_OK: &str = "wsgate_config_reloads_total{result=\"ok\"}";
const RELOADS_ERROR: &str = "wsgate_config_reloads_total{result=\"error\"}";

fn parse(yaml: &str) -> Config {
    Config::parse(yaml, "reload.yaml").unwrap_or_else(|e| panic!("{e}\n---\n{yaml}"))
}

fn plain(routes: &str, reload: &str) -> String {
    format!("listeners:\n  - bind: \"127.0.0.1:0\"\n{TEST_DEFAULTS}routes:\n{routes}{reload}")
}

async fn status_of(addr: std::net::SocketAddr, path: &str) -> u16 {
    http::exchange(addr, http::upgrade_request(addr, path, &[]))
        .await
        .status()
}

async fn round_trip<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, text: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text)).await.unwrap();
    let got = support::within("echo", ws.next()).await;
    assert_eq!(got.unwrap().unwrap(), Message::text(text));
}

/// Connections on the removed route.
const DOOMED: usize = 10;
/// The reload's drain window in the spread test.
const WINDOW: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_route_closes_with_1012_spread_over_the_drain_window() {
    let gone = Backend::echo().await;
    let kept = Backend::echo().await;
    let kept_route = route("kept", "/kept", &kept.url("/ws"), "");
    let reload = "reload: { drain_window: 1s, watch: false }\n";
    let both = route("gone", "/gone", &gone.url("/ws"), "") + &kept_route;
    let mut gate = Gate::run(parse(&plain(&both, reload))).await;
    let mut doomed = Vec::new();
    for _ in 0..DOOMED {
        doomed.push(raw::upgrade(gate.addr(), "/gone").await);
    }
    let (mut ws, _) = client::connect(format!("ws://{}/kept", gate.addr())).await;

    let reloaded = Instant::now();
    gate.running
        .reload(parse(&plain(&kept_route, reload)))
        .await
        .unwrap();
    let waits = doomed.into_iter().map(|mut c| async move {
        let close = c.recv_close().await;
        let at = reloaded.elapsed();
        c.send(support::frame::Frame::close(1012, "")).await;
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

    eventually("every backend connection closed", STEP, || {
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
        let report = gate.next_report().await;
        assert_eq!(
            (report.route.as_str(), report.outcome),
            ("gone", Outcome::Reload)
        );
    }
    round_trip(&mut ws, "kept route untouched").await;
    assert_eq!(status_of(gate.addr(), "/gone").await, 404);
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    gate.assert_drained().await;
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
    let gate = Gate::from_file(&path).await;
    let (mut ws, _) = client::connect(format!("ws://{}/app", gate.addr())).await;

    // Line 11 is `    ping_interval: soon`; the value starts at column 20.
    let bad = APP.to_string()
        + "  - name: new\n    path: /new\n    echo: true\n    ping_interval: soon\n";
    std::fs::write(&path, file_config(&bad)).unwrap();
    let err = gate
        .running
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
        gate.metric(RELOADS_ERROR),
        1.0,
        "{}",
        gate.running.metrics().render()
    );
    assert_eq!(gate.metric(RELOADS_OK), 0.0);
    round_trip(&mut ws, "old config serves").await;
    assert_eq!(status_of(gate.addr(), "/new").await, 404);
    assert_eq!(status_of(gate.addr(), "/app").await, 101);

    let good = APP.to_string() + "  - name: new\n    path: /new\n    echo: true\n";
    std::fs::write(&path, file_config(&good)).unwrap();
    gate.running.reload_from(&path).await.unwrap();
    assert_eq!(gate.metric(RELOADS_OK), 1.0);
    assert_eq!(status_of(gate.addr(), "/new").await, 101);
    round_trip(&mut ws, "still up").await;
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    gate.assert_drained().await;
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
    let ca = Authority::new();
    let (a, b) = (ca.issue(0x0a11), ca.issue(0x0b22));
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_paths(dir.path());
    a.write(&cert, &key);
    let path = dir.path().join("wsgate.yaml");
    std::fs::write(&path, tls_config(dir.path())).unwrap();
    let gate = Gate::from_file(&path).await;

    let (mut old, served) = connect_tls(gate.addr(), "/app", &ca).await;
    assert_eq!(serial_of(&served), 0x0a11);
    round_trip(&mut old, "on A").await;

    b.write(&cert, &key);
    gate.running.reload_from(&path).await.unwrap();
    let (mut new, served) = connect_tls(gate.addr(), "/app", &ca).await;
    assert_eq!(serial_of(&served), 0x0b22, "after the swap");
    assert_eq!(served, b.der);
    round_trip(&mut new, "on B").await;
    round_trip(&mut old, "A's connection untouched").await;

    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = gate
        .running
        .reload_from(&path)
        .await
        .expect_err("broken cert");
    println!("broken certificate refused: {err}");
    assert!(
        err.to_string().starts_with(&format!("{}:", path.display())),
        "{err}"
    );
    assert_eq!(
        (gate.metric(RELOADS_OK), gate.metric(RELOADS_ERROR)),
        (1.0, 1.0)
    );
    let (mut third, served) = connect_tls(gate.addr(), "/app", &ca).await;
    assert_eq!(serial_of(&served), 0x0b22, "after a refused reload");
    round_trip(&mut third, "B still served").await;
    round_trip(&mut old, "A's connection still untouched").await;
    for ws in [&mut old, &mut new, &mut third] {
        ws.close(None).await.unwrap();
        for _ in 0..10 {
            if support::within("close", ws.next()).await.is_none() {
                break;
            }
        }
    }
    gate.assert_drained().await;
}

#[tokio::test]
async fn listener_added_by_reload_accepts_while_the_first_keeps_its_connections() {
    let gate = Gate::run(parse(&plain(APP, ""))).await;
    let first = gate.addr();
    let (mut ws, _) = client::connect(format!("ws://{first}/app")).await;
    round_trip(&mut ws, "before").await;

    let two = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n  - bind: \"127.0.0.1:0\"\n\
         {TEST_DEFAULTS}routes:\n{APP}"
    );
    gate.running.reload(parse(&two)).await.unwrap();
    let addrs = gate.running.listener_addrs();
    println!("listeners after reload: {addrs:?}");
    assert_eq!(
        addrs.len(),
        2,
        "listener_addrs() after adding one: {addrs:?}"
    );
    assert_eq!(addrs[0], first, "the first listener was replaced");
    let (mut other, _) = client::connect(format!("ws://{}/app", addrs[1])).await;
    round_trip(&mut other, "second listener").await;
    round_trip(&mut ws, "first listener's connection").await;
    assert_eq!(status_of(first, "/app").await, 101);
    for ws in [&mut ws, &mut other] {
        ws.close(None).await.unwrap();
        client::drain(ws).await;
    }
    gate.assert_drained().await;
}
