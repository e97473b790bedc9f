//! The Grafana dashboard only queries metrics that wsgate really exposes.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Bound on every network step.
const STEP: Duration = Duration::from_secs(5);

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

/// Metric families in an exposition (from its `# TYPE` lines).
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_dashboard_metric_exists() {
    let wanted = dashboard_metrics();
    assert!(
        wanted.len() >= 10,
        "dashboard queries too few metrics: {wanted:?}"
    );
    // Families appear once they have a sample: make traffic of every kind.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = format!(
        "listeners: [{{bind: '127.0.0.1:0'}}]\nroutes:\n  - {{name: echo, path: /echo, echo: true, ping_interval: 50ms, ping_timeout: 2s}}\n  - {{name: dead, path: /dead, backends: ['ws://{dead}/']}}\n"
    );
    let shutdown = CancellationToken::new();
    let running = wsgate::run(
        wsgate::Config::parse(&yaml, "t.yaml").unwrap(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let base = format!("ws://{}", running.listener_addrs()[0]);
    assert!(
        tokio_tungstenite::connect_async(format!("{base}/dead"))
            .await
            .is_err(),
        "dead backend → 502"
    );
    assert!(
        tokio_tungstenite::connect_async(format!("{base}/nowhere"))
            .await
            .is_err(),
        "no route → 404"
    );
    let mut reports = running.subscribe_reports();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{base}/echo"))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    // Reading answers wsgate's keepalive pings (tungstenite replies to pings itself).
    let rtt_seen = async {
        loop {
            let _ = tokio::time::timeout(Duration::from_millis(60), ws.next()).await;
            if running
                .metrics()
                .render()
                .contains("wsgate_ping_rtt_seconds_count")
            {
                break;
            }
        }
    };
    tokio::time::timeout(STEP, rtt_seen)
        .await
        .expect("a keepalive round trip was measured");
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
    let same = wsgate::Config::parse(&yaml, "t.yaml").unwrap();
    running.reload(same).await.unwrap();
    tokio::time::timeout(STEP, reports.recv())
        .await
        .expect("close report")
        .unwrap();

    let have = exposed(&running.metrics().render());
    let missing: Vec<_> = wanted.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "dashboard queries metrics wsgate does not expose: {missing:?}\nexposed: {have:?}"
    );
    shutdown.cancel();
}
