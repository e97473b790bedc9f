//! The Grafana dashboard only queries metrics that wsgate really exposes.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::metrics::{families, metric};
use crate::support::proxy::Proxy;
use crate::support::{client, within};

/// Every `wsgate_…` metric family named in the dashboard's queries (histogram suffixes removed).
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/wsgate.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in json["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let mut names = BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("wsgate_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            names.insert(family.to_string());
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test]
async fn every_dashboard_metric_exists() {
    let wanted = dashboard_metrics();
    assert!(
        wanted.len() >= 10,
        "dashboard queries too few metrics: {wanted:?}"
    );
    // Families appear once they have a sample: make traffic of every kind.
    let dead = crate::support::dead_addr().await;
    let yaml = format!(
        "listeners: [{{bind: '127.0.0.1:0'}}]\nroutes:\n  - {{name: echo, path: /echo, echo: true, ping_interval: 50ms, ping_timeout: 2s}}\n  - {{name: dead, path: /dead, backends: ['ws://{dead}/']}}\n"
    );
    let mut proxy = Proxy::start(&yaml).await;
    assert!(
        client::try_connect(proxy.url("/dead")).await.is_err(),
        "dead backend → 502"
    );
    assert!(
        client::try_connect(proxy.url("/nowhere")).await.is_err(),
        "no route → 404"
    );
    let plain = "GET /dead HTTP/1.1\r\nHost: wsgate.test\r\n\r\n";
    assert_eq!(
        crate::support::http::exchange(proxy.addr(), plain)
            .await
            .status(),
        502
    );
    let (mut ws, _) = client::connect(proxy.url("/echo")).await;
    ws.send(Message::text("hello")).await.unwrap();
    // Reading answers wsgate's keepalive pings (tungstenite replies to pings itself).
    within("a keepalive round trip was measured", async {
        for _ in 0..1_000 {
            let _ = tokio::time::timeout(Duration::from_millis(60), ws.next()).await;
            if metric(&proxy.metrics_text(), "wsgate_ping_rtt_seconds_count").is_some() {
                return;
            }
        }
        panic!("no keepalive round trip measured in 1000 reads");
    })
    .await;
    client::close(&mut ws).await;
    proxy.reload_ok(&yaml).await;
    proxy.next_report().await;

    let have = families(&proxy.metrics_text());
    let missing: Vec<_> = wanted.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "dashboard queries metrics wsgate does not expose: {missing:?}\nexposed: {have:?}"
    );
}
