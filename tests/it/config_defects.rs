//! Config defects found in review: meaningless zero timeouts, listeners that would share
//! a port, and a port already taken when wsgate starts. Each is refused before anything
//! listens (so `--check` refuses it too), with the place in the file where serde knows it.

use wsgate::{Config, StartError};

use crate::support::proxy::{Proxy, route, yaml};
use crate::support::within;

/// The error text of a config that must be refused.
fn refused(yaml: &str) -> String {
    match Config::parse(yaml, "test.yaml") {
        Ok(_) => panic!("config accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts `err` starts with `test.yaml:LINE:` and a column.
fn assert_at(err: &str, line: usize) {
    let prefix = format!("test.yaml:{line}:");
    assert!(err.starts_with(&prefix), "expected {prefix}COL, got: {err}");
    let column = err[prefix.len()..].split(':').next().unwrap_or_default();
    assert!(column.parse::<usize>().is_ok(), "no column: {err}");
}

const HEAD: &str = "listeners:\n  - bind: \"127.0.0.1:0\"\n";
const ECHO: &str = "routes:\n  - { name: echo, path: /echo, echo: true }\n";

#[test]
fn zero_ping_timeout_with_pings_on_is_refused() {
    // Bug: `ping_timeout: 0s` with pings on closed every connection after one
    // ping_interval of silence (the pong deadline was the ping itself).
    let defaults = format!("{HEAD}defaults:\n  ping_interval: 20s\n  ping_timeout: 0s\n{ECHO}");
    let err = refused(&defaults);
    assert!(
        err.contains("ping_timeout") && err.contains("ping_interval"),
        "{err}"
    );

    let route =
        format!("{HEAD}routes:\n  - {{ name: chat, path: /c, echo: true, ping_timeout: 0s }}\n");
    let err = refused(&route);
    assert!(
        err.contains("chat") && err.contains("ping_timeout"),
        "{err}"
    );

    // A route that turns pings on inherits a zero timeout from the defaults.
    let inherited = format!(
        "{HEAD}defaults: {{ ping_interval: 0s, ping_timeout: 0s }}\n\
         routes:\n  - {{ name: chat, path: /c, echo: true, ping_interval: 5s }}\n"
    );
    let err = refused(&inherited);
    assert!(
        err.contains("chat") && err.contains("ping_timeout"),
        "{err}"
    );

    // With pings off the timeout is never used, so 0 is harmless.
    let off = format!("{HEAD}defaults: {{ ping_interval: 0s, ping_timeout: 0s }}\n{ECHO}");
    Config::parse(&off, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn zero_timeouts_that_cannot_mean_off_are_refused_at_their_line() {
    // Bug: `handshake_timeout: 0s` answered every upgrade 504; the others ended every
    // close handshake, TLS handshake, request or health probe at once.
    let cases = [
        (
            format!("{HEAD}defaults:\n  handshake_timeout: 0s\n{ECHO}"),
            4,
            "handshake_timeout",
        ),
        (
            format!("{HEAD}defaults:\n  close_timeout: 0s\n{ECHO}"),
            4,
            "close_timeout",
        ),
        (
            format!(
                "{HEAD}routes:\n  - name: e\n    path: /e\n    echo: true\n    handshake_timeout: 0s\n"
            ),
            7,
            "handshake_timeout",
        ),
        (
            format!("{HEAD}limits:\n  tls_handshake_timeout: 0s\n{ECHO}"),
            4,
            "tls_handshake_timeout",
        ),
        (
            format!("{HEAD}limits:\n  header_read_timeout: 0ms\n{ECHO}"),
            4,
            "header_read_timeout",
        ),
        (
            format!(
                "{HEAD}routes:\n  - name: b\n    path: /b\n    backends: [\"ws://127.0.0.1:9\"]\n\
                 \x20   health_check:\n      interval: 0s\n"
            ),
            8,
            "interval",
        ),
        (
            format!(
                "{HEAD}routes:\n  - name: b\n    path: /b\n    backends: [\"ws://127.0.0.1:9\"]\n\
                 \x20   health_check:\n      timeout: 0s\n"
            ),
            8,
            "timeout",
        ),
    ];
    for (yaml, line, key) in cases {
        let err = refused(&yaml);
        assert_at(&err, line);
        assert!(err.contains(key) && err.contains("above 0"), "{err}");
    }
}

#[test]
fn sizes_that_cannot_work_are_refused_at_their_line() {
    // Bug: `max_frame_bytes: 0` refused every frame with a payload (1009 on the first
    // message) and `max_header_bytes: 0` was quietly read as 8 KiB.
    let cases = [
        (
            format!("{HEAD}defaults:\n  max_frame_bytes: 0\n{ECHO}"),
            4,
            "max_frame_bytes",
        ),
        (
            format!("{HEAD}defaults:\n  max_message_bytes: 0B\n{ECHO}"),
            4,
            "max_message_bytes",
        ),
        (
            format!(
                "{HEAD}routes:\n  - name: e\n    path: /e\n    echo: true\n    max_frame_bytes: 0\n"
            ),
            7,
            "max_frame_bytes",
        ),
        (
            format!("{HEAD}limits:\n  max_header_bytes: 0\n{ECHO}"),
            4,
            "max_header_bytes",
        ),
        (
            format!("{HEAD}limits:\n  max_header_bytes: 4KiB\n{ECHO}"),
            4,
            "max_header_bytes",
        ),
        (
            format!("{HEAD}limits:\n  max_buffered_bytes: 0\n{ECHO}"),
            4,
            "max_buffered_bytes",
        ),
        (
            format!("{HEAD}limits:\n  max_buffered_bytes: 64KiB\n{ECHO}"),
            4,
            "max_buffered_bytes",
        ),
    ];
    for (yaml, line, key) in cases {
        let err = refused(&yaml);
        assert_at(&err, line);
        let floor = err.contains("above 0") || err.contains("at least");
        assert!(err.contains(key) && floor, "{err}");
    }
    let fine = format!(
        "{HEAD}defaults: {{ max_frame_bytes: 1, max_message_bytes: 1 }}\n\
         limits: {{ max_header_bytes: 8KiB, max_buffered_bytes: 1MiB }}\n{ECHO}"
    );
    Config::parse(&fine, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn zero_means_off_where_the_code_says_so() {
    let yaml = format!(
        "{HEAD}defaults: {{ ping_interval: 0s, idle_timeout: 0s, write_timeout: 0s }}\n\
         shutdown: {{ drain_timeout: 0s }}\nreload: {{ drain_window: 0s }}\n{ECHO}"
    );
    Config::parse(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_second_listener_on_the_same_address_is_refused_at_its_line() {
    // Bug: a plain and a TLS listener on one port both started and split its
    // connections through SO_REUSEPORT.
    let yaml = format!(
        "listeners:\n  - bind: \"127.0.0.1:18080\"\n  - bind: \"127.0.0.1:18080\"\n    tls: {{ self_signed: true }}\n{ECHO}"
    );
    let err = refused(&yaml);
    assert_at(&err, 3);
    assert!(err.contains("127.0.0.1:18080"), "{err}");
}

#[test]
fn listeners_the_kernel_would_let_share_a_port_are_refused() {
    for (first, second) in [
        ("0.0.0.0:18081", "127.0.0.1:18081"),
        ("127.0.0.1:18081", "0.0.0.0:18081"),
        ("[::]:18081", "127.0.0.1:18081"),
        ("0.0.0.0:18081", "[::]:18081"),
        ("[::]:18081", "[::1]:18081"),
        ("[::ffff:127.0.0.1]:18081", "127.0.0.1:18081"),
    ] {
        let yaml = format!("listeners:\n  - bind: \"{first}\"\n  - bind: \"{second}\"\n{ECHO}");
        let err = refused(&yaml);
        assert_at(&err, 3);
        assert!(err.contains(first) || err.contains(second), "{err}");
    }
}

#[test]
fn listeners_on_distinct_addresses_or_port_zero_are_fine() {
    for (first, second) in [
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("0.0.0.0:0", "127.0.0.1:0"),
        ("127.0.0.1:18082", "127.0.0.2:18082"),
        ("127.0.0.1:18082", "127.0.0.1:18083"),
        ("[::1]:18082", "127.0.0.1:18082"),
    ] {
        let yaml = format!("listeners:\n  - bind: \"{first}\"\n  - bind: \"{second}\"\n{ECHO}");
        Config::parse(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{first} + {second}: {e}"));
    }
}

#[tokio::test]
async fn run_fails_with_a_bind_error_on_a_port_held_by_a_plain_socket() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let yaml = format!("listeners:\n  - bind: \"{addr}\"\n{ECHO}");
    let config = Config::parse(&yaml, "test.yaml").unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    match within("run", wsgate::run(config, token.clone())).await {
        Ok(_) => panic!("wsgate started on {addr}, which another socket holds"),
        Err(StartError::Bind { addr: failed, .. }) => assert_eq!(failed, addr),
        Err(other) => panic!("expected StartError::Bind, got {other}"),
    }
    token.cancel();
    drop(held);
}

#[tokio::test]
async fn a_second_wsgate_on_the_port_of_a_running_one_fails_to_start() {
    // Bug: both wsgates set SO_REUSEPORT, so the second joined the first's port and
    // took half of its connections.
    let first = Proxy::with_routes(&route("echo", "/echo", "ws://127.0.0.1:9", "")).await;
    let addr = first.addr();
    let yaml = yaml(&route("echo", "/echo", "ws://127.0.0.1:9", ""))
        .replace("127.0.0.1:0", &addr.to_string());
    let config = Config::parse(&yaml, "test.yaml").unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    match within("second run", wsgate::run(config, token.clone())).await {
        Ok(_) => panic!("a second wsgate started on {addr}"),
        Err(StartError::Bind { addr: failed, .. }) => assert_eq!(failed, addr),
        Err(other) => panic!("expected StartError::Bind, got {other}"),
    }
    token.cancel();
    first.shutdown().await;
}

#[test]
fn zero_pending_connections_is_refused() {
    let err = refused(&format!(
        "{HEAD}limits: {{ max_pending_connections: 0 }}\n{ECHO}"
    ));
    assert!(err.contains("max_pending_connections"), "{err}");
}
