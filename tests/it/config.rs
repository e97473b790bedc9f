//! The configuration file: the shipped one parses and runs, and every error
//! names `file:line:column` and what was expected.

use std::path::Path;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use wsgate::Config;

use crate::support::ca::TestCa;
use crate::support::client;
use crate::support::proxy::Proxy;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/wsgate.yaml");

/// 1-based number of the only line of `yaml` containing `marker`.
fn line_of(yaml: &str, marker: &str) -> usize {
    let lines: Vec<usize> = yaml
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(marker))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "marker {marker:?} must be on exactly one line"
    );
    lines[0]
}

/// Parses `yaml`, expects an error at the line holding `marker`, with a
/// column, mentioning every one of `words` (case-insensitive).
fn error_at(yaml: &str, marker: &str, words: &[&str]) -> String {
    let err = match Config::parse(yaml, "test.yaml") {
        Ok(_) => panic!("config accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    };
    let prefix = format!("test.yaml:{}:", line_of(yaml, marker));
    assert!(
        err.starts_with(&prefix),
        "expected `{prefix}COL: …`, got: {err}\n{yaml}"
    );
    let column = err[prefix.len()..].split(':').next().unwrap_or_default();
    assert!(
        column.parse::<usize>().is_ok_and(|c| c >= 1),
        "no column after {prefix}: {err}"
    );
    let lower = err.to_lowercase();
    for word in words {
        assert!(
            lower.contains(&word.to_lowercase()),
            "error lacks {word:?}: {err}"
        );
    }
    err
}

const HEAD: &str = "listeners:\n  - bind: \"127.0.0.1:0\"\n";
const ECHO_ROUTE: &str = "routes:\n  - { name: echo, path: /echo, echo: true }\n";

#[test]
fn shipped_config_parses() {
    Config::load(Path::new(SHIPPED)).unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
async fn shipped_config_runs_with_its_echo_route() {
    // The shipped file as is, but on free ports.
    let text = std::fs::read_to_string(SHIPPED).unwrap();
    let free = text.replace(":8080\"", ":0\"").replace(":8443\"", ":0\"");
    let replaced = free.matches(":0\"").count() - text.matches(":0\"").count();
    assert_eq!(replaced, 2, "both listener ports replaced");
    let text = free;
    let proxy = Proxy::start(&text).await;
    let (mut ws, _) = client::connect(proxy.url("/echo")).await;
    ws.send(Message::text("shipped")).await.unwrap();
    assert_eq!(client::next(&mut ws).await, Message::text("shipped"));
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    proxy.assert_drained().await;
}

#[test]
fn config_with_every_key_parses() {
    let ca = TestCa::new();
    let yaml = format!(
        "{HEAD}  - bind: \"127.0.0.1:0\"\n    tls: {{ self_signed: true }}\n\
         \x20 - bind: \"127.0.0.1:0\"\n    tls: {tls}\n\
         admin: {{ bind: \"127.0.0.1:0\" }}\n\
         defaults:\n  ping_interval: 20s\n  ping_timeout: 10s\n  idle_timeout: 0s\n  close_timeout: 1500ms\n\
         \x20 handshake_timeout: 1m\n  max_frame_bytes: 64KiB\n  max_message_bytes: 1048576\n  validate_utf8: false\n\
         routes:\n  - name: echo\n    path: /echo\n    exact: true\n    echo: true\n\
         \x20 - name: app\n    path: /app\n    host: Chat.Example.com\n    backends: [\"ws://127.0.0.1:9/ws\", \"wss://localhost:9/x\"]\n\
         \x20   tls_ca: {ca}\n    origins: [\"https://chat.example.com\"]\n    max_frame_bytes: 1MiB\n    ping_interval: 0s\n\
         log: {{ format: json, level: \"wsgate=debug\", connection_open: true }}\n\
         shutdown: {{ drain_timeout: 30s }}\n",
        tls = ca.listener_tls_yaml(),
        ca = ca.ca_pem().display(),
    );
    Config::parse(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
}

#[test]
fn unknown_keys_are_errors_at_their_line() {
    let top = format!("{HEAD}{ECHO_ROUTE}colour: blue\n");
    error_at(&top, "colour", &["colour"]);

    let listener =
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    backlog: 5\n".to_string() + ECHO_ROUTE;
    error_at(&listener, "backlog", &["backlog"]);

    let defaults =
        format!("{HEAD}defaults:\n  close_timeout: 1s\n  ping_intervall: 5s\n{ECHO_ROUTE}");
    error_at(&defaults, "ping_intervall", &["ping_intervall"]);

    let route = format!(
        "{HEAD}routes:\n  - name: echo\n    path: /echo\n    echo: true\n    colour: blue\n"
    );
    error_at(&route, "colour", &["colour"]);
}

#[test]
fn bad_durations_and_sizes_say_what_was_expected() {
    let duration = format!("{HEAD}defaults:\n  close_timeout: 5 parsecs\n{ECHO_ROUTE}");
    error_at(&duration, "parsecs", &["duration", "5 parsecs"]);

    let bare = format!("{HEAD}defaults:\n  ping_interval: 20\n{ECHO_ROUTE}");
    error_at(&bare, "ping_interval", &["duration"]);

    let size = format!("{HEAD}defaults:\n  max_frame_bytes: 12 potatoes\n{ECHO_ROUTE}");
    error_at(&size, "potatoes", &["size", "12 potatoes"]);

    let route = format!(
        "{HEAD}routes:\n  - name: echo\n    path: /echo\n    echo: true\n    handshake_timeout: later\n"
    );
    error_at(&route, "later", &["duration"]);
}

#[test]
fn duplicate_route_names_point_at_the_second() {
    let yaml = format!(
        "{HEAD}routes:\n  - {{ name: echo, path: /a, echo: true }}\n  - {{ name: other, path: /b, echo: true }}\n\
         \x20 - {{ name: echo, path: /c, echo: true }}\nlog: {{ format: json }}\n"
    );
    error_at(&yaml, "/c", &["duplicate", "echo"]);
}

#[test]
fn missing_certificate_file_is_named() {
    let yaml = format!(
        "{HEAD}  - bind: \"127.0.0.1:0\"\n    tls: {{ cert: /nonexistent/leaf.pem, key: /nonexistent/leaf.key }}\n{ECHO_ROUTE}"
    );
    error_at(&yaml, "leaf.pem", &["/nonexistent/leaf.pem", "cert"]);
}

#[test]
fn bad_routes_and_listeners_say_what_was_expected() {
    let both = format!(
        "{HEAD}routes:\n  - {{ name: x, path: /x, echo: true, backends: [\"ws://127.0.0.1:9\"] }}\n"
    );
    error_at(&both, "name: x", &["echo", "backends"]);

    let neither = format!("{HEAD}routes:\n  - {{ name: x, path: /x }}\n");
    error_at(&neither, "name: x", &["backends"]);

    let scheme =
        format!("{HEAD}routes:\n  - {{ name: x, path: /x, backends: [\"http://127.0.0.1:9\"] }}\n");
    error_at(&scheme, "http://", &["ws"]);

    let relative = format!("{HEAD}routes:\n  - {{ name: x, path: x, echo: true }}\n");
    error_at(&relative, "name: x", &["/"]);

    let bind = format!("listeners:\n  - bind: \"localhost:80\"\n{ECHO_ROUTE}");
    error_at(&bind, "localhost:80", &["localhost:80"]);

    let no_routes = format!("{HEAD}routes: []\n");
    error_at(&no_routes, "routes:", &["route"]);
}

#[test]
fn load_names_a_missing_file() {
    let err = match Config::load(Path::new("/nonexistent/wsgate.yaml")) {
        Ok(_) => panic!("missing file accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("/nonexistent/wsgate.yaml"), "{err}");
}

#[test]
fn load_uses_the_path_as_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, format!("{HEAD}{ECHO_ROUTE}colour: blue\n")).unwrap();
    let err = match Config::load(&path) {
        Ok(_) => panic!("broken file accepted"),
        Err(e) => e.to_string(),
    };
    let prefix = format!("{}:5:", path.display());
    assert!(err.starts_with(&prefix), "expected {prefix}COL, got {err}");
}

#[tokio::test]
async fn run_fails_cleanly_when_the_port_is_taken() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let yaml = format!("listeners:\n  - bind: \"{addr}\"\n{ECHO_ROUTE}");
    let config = Config::parse(&yaml, "test.yaml").unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let result = crate::support::within("run", wsgate::run(config, token.clone())).await;
    let err = match result {
        Ok(_) => panic!("run succeeded on a port already in use"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&addr.to_string()),
        "error should name {addr}: {err}"
    );
    token.cancel();
}
