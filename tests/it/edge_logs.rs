//! What a peer controls never shapes wsgate's output: client strings are escaped in
//! both log formats (the real binary, its stderr read line by line), close codes are
//! labelled by a finite set, and a reload drops the series of what it removed.

use crate::support::backend::{Backend, Handshake, echo};
use crate::support::child::Child;
use crate::support::frame::Frame;
use crate::support::metrics::samples;
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::{eventually, raw};

/// A close reason that would forge a text line, a JSON line and terminal escapes if
/// written raw (at most 123 bytes, the most a Close reason can hold).
const HOSTILE_REASON: &str =
    "bye\n2030-01-01T00:00:00.000000Z  INFO wsgate: FORGED\r\n{\"FORGED\":1}\u{1b}[2J\u{85}\\\"";

/// A User-Agent and a subprotocol with quotes, backslashes and key=value lookalikes.
const HOSTILE_UA: &str = "ua\" outcome=\"FORGED\\";
const HOSTILE_PROTOCOL: &str = "p\"FORGED\\";

fn config(backend: &Backend, format: &str) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n\
         defaults: {{ close_timeout: 1s, handshake_timeout: 1s, ping_interval: 0s }}\n\
         routes:\n  - name: echo\n    path: /echo\n    echo: true\n\
         \x20 - name: proto\n    path: /proto\n    backends: [\"{}\"]\n\
         log: {{ format: {format}, level: info }}\nreload: {{ watch: false }}\n",
        backend.url("/ws")
    )
}

/// Runs the hostile session against the binary logging in `format`; returns its log.
async fn hostile_log(format: &str) -> Vec<String> {
    let backend = Backend::start(Handshake::Protocol(HOSTILE_PROTOCOL), None, echo).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsgate.yaml");
    std::fs::write(&path, config(&backend, format)).unwrap();
    let gate = Child::start(&path).await;

    // Hostile request heads: an unknown route, and a tunnel with a chosen subprotocol.
    let hostile_headers = [
        ("User-Agent", HOSTILE_UA),
        ("Sec-WebSocket-Protocol", HOSTILE_PROTOCOL),
    ];
    let (refused, _) = raw::upgrade_with(
        gate.addr,
        "/nowhere/%0aFORGED%22%5c?q=%0d%0a\"FORGED",
        &hostile_headers,
    )
    .await;
    assert_ne!(refused.status(), 101);
    let (head, mut tunnel) =
        raw::upgrade_with(gate.addr, "/proto/%0aFORGED", &hostile_headers).await;
    if head.status() == 101 {
        tunnel.expect_close_after_sending(4000, "x\ny").await;
    }

    let mut ws = raw::upgrade(gate.addr, "/echo").await;
    ws.expect_close_after_sending(4000, HOSTILE_REASON).await;
    eventually("the close report of the hostile reason", || {
        gate.log()
            .iter()
            .filter(|l| l.contains("connection closed"))
            .count()
            > usize::from(head.status() == 101)
    })
    .await;
    gate.log()
}

/// Every line is one event: nothing forged, no raw control character left.
fn assert_one_event_per_line(log: &[String]) {
    for line in log {
        assert!(
            !line.chars().any(char::is_control),
            "raw control character in log line {line:?}"
        );
    }
    let forged: Vec<_> = log.iter().filter(|l| l.contains("FORGED")).collect();
    assert!(
        forged
            .iter()
            .all(|l| l.contains("connection closed") || l.contains("upgrade refused")),
        "a peer's string started a line of its own: {forged:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_escapes_peer_strings() {
    let log = hostile_log("text").await;
    assert_one_event_per_line(&log);
    for line in &log {
        assert!(
            line.len() > 20 && line.as_bytes()[4] == b'-' && line.as_bytes()[10] == b'T',
            "not a timestamped event line: {line:?}"
        );
    }
    let report = log
        .iter()
        .find(|l| l.contains("connection closed") && l.contains("route=echo"))
        .expect("the close report");
    // Quoted and escaped like a Rust string literal, so the value ends where its quote does.
    assert!(
        report.contains(r#"close_reason="bye\n2030-01-01T00:00:00.000000Z  INFO wsgate: FORGED\r\n{\"FORGED\":1}\u{1b}[2J\u{85}\\\"""#),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_each_parse_and_keep_the_reason_exact() {
    let log = hostile_log("json").await;
    assert_one_event_per_line(&log);
    let events: Vec<serde_json::Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let reasons: Vec<_> = events
        .iter()
        .filter_map(|e| e.get("close_reason").and_then(|r| r.as_str()))
        .collect();
    assert!(reasons.contains(&HOSTILE_REASON), "{reasons:?}");
}

#[tokio::test]
async fn five_hundred_private_close_codes_make_one_series() {
    let proxy = Proxy::start(&yaml("  - name: echo\n    path: /echo\n    echo: true\n")).await;
    for code in 4000..4500 {
        let mut ws = raw::upgrade(proxy.addr(), "/echo").await;
        ws.expect_close_after_sending(code, "").await;
    }
    eventually("500 closes counted", || {
        proxy.metric(r#"wsgate_closes_total{route="echo",closed_by="client"}"#) == Some(500.0)
    })
    .await;
    let text = proxy.metrics_text();
    let series: Vec<_> = samples(&text)
        .into_iter()
        .filter(|s| s.name == "wsgate_closes_total")
        .collect();
    assert_eq!(series.len(), 1, "{series:#?}");
    assert!(
        series[0]
            .labels
            .contains(&("code".to_string(), "4xxx".to_string())),
        "{series:?}"
    );
    proxy.assert_drained().await;
}

/// The series of `text` whose labels include `label="value"`.
fn labelled(text: &str, label: &str, value: &str) -> Vec<String> {
    samples(text)
        .into_iter()
        .filter(|s| s.labels.iter().any(|(k, v)| k == label && v == value))
        .map(|s| format!("{}{:?}", s.name, s.labels))
        .collect()
}

#[tokio::test]
async fn reload_drops_series_of_removed_route_and_backend_once_their_connections_end() {
    let (a, b, c) = (
        Backend::echo().await,
        Backend::echo().await,
        Backend::echo().await,
    );
    let keep_both = format!(
        "    backends: [\"{}\", \"{}\"]\n",
        a.url("/ws"),
        b.url("/ws")
    );
    let before = yaml(&format!(
        "  - name: keep\n    path: /keep\n{keep_both}{}",
        route("gone", "/gone", &c.url("/ws"), "")
    ))
    .replace("routes:", "reload: { drain_window: 0s }\nroutes:");
    let after = yaml(&route("keep", "/keep", &a.url("/ws"), ""))
        .replace("routes:", "reload: { drain_window: 0s }\nroutes:");
    let proxy = Proxy::start(&before).await;
    let mut kept = raw::upgrade(proxy.addr(), "/keep").await;
    kept.send(Frame::text("hi")).await;
    assert_eq!(kept.recv_frame().await.payload, b"hi");
    kept.expect_close_after_sending(1000, "").await;
    let mut gone = raw::upgrade(proxy.addr(), "/gone").await;
    let b_url = b.url("/ws");
    eventually("the removed route's connection is counted", || {
        proxy.metric(r#"wsgate_connections_active{route="gone"}"#) == Some(1.0)
    })
    .await;
    assert!(!labelled(&proxy.metrics_text(), "backend", &b_url).is_empty());

    proxy.reload_ok(&after).await;
    // The removed route's connection is still open (its 1012 not answered yet): counted.
    let during = proxy.metrics_text();
    assert_eq!(
        crate::support::metrics::metric(&during, r#"wsgate_connections_active{route="gone"}"#),
        Some(1.0),
        "{during}"
    );
    let close = gone.recv_close().await;
    assert_eq!(close.close_code(), Some(1012));
    gone.send(Frame::close(1012, "")).await;
    gone.expect_eof().await;

    let left = |text: &str| {
        let mut left = labelled(text, "route", "gone");
        left.extend(labelled(text, "backend", &b_url));
        left
    };
    eventually("the removed route's and backend's series are gone", || {
        left(&proxy.metrics_text()).is_empty()
    })
    .await;
    let text = proxy.metrics_text();
    assert!(!labelled(&text, "route", "keep").is_empty(), "{text}");
    assert_eq!(
        crate::support::metrics::metric(&text, r#"wsgate_messages_total{route="keep"}"#),
        Some(2.0),
        "{text}"
    );
    assert!(
        !labelled(&text, "backend", &a.url("/ws")).is_empty(),
        "{text}"
    );
    // Nothing brings them back: a new connection on the kept route counts as before.
    let mut again = raw::upgrade(proxy.addr(), "/keep").await;
    again.expect_close_after_sending(1000, "").await;
    proxy.assert_drained().await;
    assert!(labelled(&proxy.metrics_text(), "route", "gone").is_empty());
}
