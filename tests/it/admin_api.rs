//! The admin API (`/api/…` on the admin listener): the bearer token and its absence,
//! unknown ids, closing one connection among busy ones, pushed messages and fragmented
//! messages in flight, drains spread over their window, and paging through many
//! connections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::support::backend::{Backend, RawBackend, RawConn};
use crate::support::child::Child;
use crate::support::frame::{self, Frame};
use crate::support::proxy::{Proxy, TEST_DEFAULTS, route};
use crate::support::raw::{self, RawClient};
use crate::support::{eventually, http, within};

/// The token the tests' proxies are given (long enough to be accepted).
const TOKEN: &str = "wsgate-test-token-3f9a1c0d5e7b2a48";

/// A token file in a directory that lives as long as the test holds it.
fn token_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    (dir, path)
}

/// A config with one listener, an admin listener reading its token from `token`, and `routes`.
fn config(token: &Path, routes: &str) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n\
         admin: {{ bind: \"127.0.0.1:0\", token_file: \"{}\" }}\n{TEST_DEFAULTS}routes:\n{routes}",
        token.display()
    )
}

/// Calls the API at `admin` with `token` (none: no Authorization header).
async fn call_with(
    admin: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Value) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !content_type.is_empty() {
        req.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let head = http::exchange(admin, bytes).await;
    let json = serde_json::from_str(&head.body_text()).unwrap_or(Value::Null);
    (head.status(), json)
}

/// Calls the API with the right token and no body.
async fn call(admin: SocketAddr, method: &str, path: &str) -> (u16, Value) {
    call_with(admin, Some(TOKEN), method, path, "", b"").await
}

/// The id the API gives the connection whose client end is `client`.
async fn id_of(admin: SocketAddr, client: &mut RawClient) -> u64 {
    let local = client.io().local_addr().unwrap();
    // Listed once its relay runs, a moment after the 101: polled, bounded.
    within("the connection is listed", async {
        loop {
            let (status, page) =
                call(admin, "GET", &format!("/api/connections?client={local}")).await;
            assert_eq!(status, 200, "{page}");
            if let [one] = page["connections"].as_array().unwrap().as_slice() {
                return one["id"].as_u64().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// The admin address the child logged (`admin listening addr=Some(…)`).
async fn child_admin_addr(child: &Child) -> SocketAddr {
    let mut addr = None;
    eventually("wsgate logged `admin listening`", || {
        addr = child.log().iter().find_map(|l| {
            let rest = &l[l.find("admin listening")?..];
            let start = rest.find("Some(")? + 5;
            let end = rest[start..].find(')')? + start;
            rest[start..end].parse().ok()
        });
        addr.is_some()
    })
    .await;
    addr.unwrap()
}

#[tokio::test]
async fn the_api_wants_its_token_and_never_logs_it() {
    let (_dir, token) = token_file();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsgate.yaml");
    let yaml = config(&token, "  - { name: echo, path: /echo, echo: true }\n")
        + "log: { level: debug, connection_open: true }\nreload: { watch: false }\n";
    std::fs::write(&path, yaml).unwrap();
    let gate = Child::start(&path).await;
    let admin = child_admin_addr(&gate).await;
    let mut ws = raw::upgrade(gate.addr, "/echo").await;
    ws.send(Frame::text("hello")).await;
    assert_eq!(ws.recv_frame().await.payload, b"hello");

    let wrong = "wsgate-test-token-3f9a1c0d5e7b2a49";
    for (token, want) in [
        (None, 401),
        (Some(wrong), 401),
        (Some("short"), 401),
        (Some(TOKEN), 200),
    ] {
        let (status, body) = call_with(admin, token, "GET", "/api/connections", "", b"").await;
        assert_eq!(status, want, "token {token:?}: {body}");
    }
    // A token in the query string or as another scheme is not one.
    let (status, _) = call_with(
        admin,
        None,
        "GET",
        &format!("/api/connections?token={TOKEN}"),
        "",
        b"",
    )
    .await;
    assert_eq!(status, 401);
    let basic = format!(
        "GET /api/routes HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nAuthorization: Basic {TOKEN}\r\n\r\n"
    );
    assert_eq!(http::exchange(admin, basic).await.status(), 401);
    // What the API was handed and did is logged; the token is not.
    let (status, _) = call(admin, "DELETE", "/api/connections/1?code=4000&reason=bye").await;
    assert_eq!(status, 202);
    ws.expect_close(4000).await;
    eventually("the close report", || {
        gate.log()
            .iter()
            .any(|l| l.contains("outcome") && l.contains("admin") && l.contains("4000"))
    })
    .await;
    let log = gate.log();
    assert!(
        log.iter().filter(|l| l.contains("admin api")).count() >= 6,
        "every API request is logged: {log:?}"
    );
    for line in &log {
        assert!(!line.contains(TOKEN), "the token was logged: {line}");
        assert!(!line.contains(wrong), "a wrong token was logged: {line}");
    }
}

#[tokio::test]
async fn without_a_token_the_api_is_off_and_the_rest_unchanged() {
    let yaml = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\nadmin: {{ bind: \"127.0.0.1:0\" }}\n\
         {TEST_DEFAULTS}routes:\n  - {{ name: echo, path: /echo, echo: true }}\n"
    );
    let proxy = Proxy::start(&yaml).await;
    let admin = proxy.admin_addr();
    for path in ["/api/connections", "/api/openapi.json", "/api/routes"] {
        let (status, _) = call(admin, "GET", path).await;
        assert_eq!(status, 404, "{path} with no token configured");
    }
    for (path, want) in [("/metrics", 200), ("/healthz", 200), ("/readyz", 200)] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
        assert_eq!(http::exchange(admin, req).await.status(), want, "{path}");
    }
}

#[tokio::test]
async fn unknown_ids_get_404() {
    let (_dir, token) = token_file();
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&config(
        &token,
        &route("app", "/app", &backend.url("/ws"), ""),
    ))
    .await;
    let admin = proxy.admin_addr();
    let mut ws = raw::upgrade(proxy.addr(), "/app").await;
    let live = id_of(admin, &mut ws).await;
    let (status, shown) = call(admin, "GET", &format!("/api/connections/{live}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["route"], "app");
    assert_eq!(shown["backend"], backend.url("/ws"));
    for (method, path) in [
        ("GET", "/api/connections/987654321".to_string()),
        ("GET", "/api/connections/not-a-number".to_string()),
        ("DELETE", "/api/connections/987654321".to_string()),
        ("POST", "/api/connections/987654321/messages".to_string()),
        ("POST", "/api/identities/nobody/messages".to_string()),
        ("POST", "/api/routes/nowhere/drain".to_string()),
        (
            "POST",
            "/api/backends/drain?url=ws://127.0.0.1:1/".to_string(),
        ),
        ("GET", "/api/no-such-thing".to_string()),
    ] {
        let (status, body) = call(admin, method, &path).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(body["error"].is_string(), "{method} {path}: {body}");
    }
    // A bad close code or a reason over 123 bytes is refused before anything is sent.
    for query in [
        "code=1005",
        "code=999",
        "code=x",
        &format!("reason={}", "r".repeat(124)),
    ] {
        let (status, _) = call(admin, "DELETE", &format!("/api/connections/{live}?{query}")).await;
        assert_eq!(status, 400, "{query}");
    }
    drop(ws);
    proxy.assert_drained().await;
    let (status, _) = call(admin, "GET", &format!("/api/connections/{live}")).await;
    assert_eq!(status, 404, "a connection that ended is unknown");
}

/// Messages each busy client sends while one connection is closed.
const BUSY_MESSAGES: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_connection_under_heavy_traffic_loses_nothing_on_the_others() {
    let (_dir, token) = token_file();
    let backend = Backend::echo().await;
    let mut proxy = Proxy::start(&config(
        &token,
        &route("app", "/app", &backend.url("/ws"), ""),
    ))
    .await;
    let admin = proxy.admin_addr();
    let mut victim = raw::upgrade(proxy.addr(), "/app").await;
    let victim_id = id_of(admin, &mut victim).await;
    let mut busy = Vec::new();
    for n in 0..6 {
        let mut c = raw::upgrade(proxy.addr(), "/app").await;
        busy.push(tokio::spawn(async move {
            // Writes and reads in turn, a few messages in flight: every echo must come
            // back, in order.
            let (mut sent, mut got) = (0, 0);
            while got < BUSY_MESSAGES {
                while sent < BUSY_MESSAGES && sent - got < 16 {
                    c.send(Frame::text(format!("{n}:{sent}"))).await;
                    sent += 1;
                }
                let f = c.recv_frame().await;
                assert_eq!(f.opcode, frame::TEXT, "{f:?}");
                assert_eq!(f.payload, format!("{n}:{got}").as_bytes());
                got += 1;
            }
            c.expect_close_after_sending(1000, "done").await;
        }));
    }
    // Let the traffic build up (an observation window, not a readiness wait).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, body) = call(
        admin,
        "DELETE",
        &format!("/api/connections/{victim_id}?code=4001&reason=closed%20by%20ops"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let close = victim.recv_close().await;
    assert_eq!(close.close_code(), Some(4001));
    assert_eq!(close.close_reason(), "closed by ops");
    // Closing again, or pushing, while the handshake runs (the client has not answered
    // the Close yet): 409.
    let (status, _) = call(admin, "DELETE", &format!("/api/connections/{victim_id}")).await;
    assert_eq!(status, 409);
    let push = format!("/api/connections/{victim_id}/messages");
    let (status, _) = call_with(admin, Some(TOKEN), "POST", &push, "text/plain", b"late").await;
    assert_eq!(status, 409);
    victim.send(Frame::close(4001, "closed by ops")).await;
    let report = proxy.next_report().await;
    assert_eq!(report.id, victim_id);
    assert_eq!(report.outcome, wsgate::Outcome::Admin, "{report:?}");
    assert_eq!(report.close_code, Some(4001));
    // The backend got its Close too, with the same code and reason.
    eventually("the backend's Close", || {
        backend.log.close() == Some((4001, "closed by ops".into()))
    })
    .await;
    for task in busy {
        within("busy client", task).await.unwrap();
    }
    proxy.assert_drained().await;
}

/// A backend that sends the first fragment of a text message, waits for the test's
/// signal, then sends its last fragment and echoes what it receives after that.
async fn fragmenting_backend(go: std::sync::Arc<tokio::sync::Notify>) -> RawBackend {
    RawBackend::start(move |mut conn: RawConn| {
        let go = go.clone();
        async move {
            conn.accept(&[]).await;
            conn.io.send(Frame::text("first half, ").fin(false)).await;
            go.notified().await;
            conn.io.send(Frame::cont("second half")).await;
            conn.record_until_close().await;
        }
    })
    .await
}

#[tokio::test]
async fn pushed_messages_stay_in_order_while_fragmented_messages_are_in_flight() {
    let (_dir, token) = token_file();
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let backend = fragmenting_backend(go.clone()).await;
    let mut proxy = Proxy::start(&config(
        &token,
        &route("app", "/app", &backend.url("/ws"), ""),
    ))
    .await;
    let admin = proxy.admin_addr();
    let mut client = raw::upgrade(proxy.addr(), "/app").await;
    let first = client.recv_frame().await;
    assert!(!first.fin, "the backend's message is open: {first:?}");
    let id = id_of(admin, &mut client).await;
    // Three pushes to the client while its message is open, text and binary, and one to
    // the backend while the client has a message of its own open toward it.
    client
        .send(Frame::binary(&b"client: a"[..]).fin(false))
        .await;
    let pushes: [(&str, &str, &[u8]); 4] = [
        ("", "text/plain", b"push 1"),
        ("", "application/octet-stream", b"push 2"),
        ("", "application/octet-stream", &[0, 1, 2]),
        ("?to=backend", "text/plain", b"to the backend"),
    ];
    for (query, content_type, body) in pushes {
        let path = format!("/api/connections/{id}/messages{query}");
        let (status, answer) =
            call_with(admin, Some(TOKEN), "POST", &path, content_type, body).await;
        assert_eq!(status, 202, "{answer}");
    }
    // Give the relay the commands while both messages are still open (an observation
    // window: nothing else tells from outside that its task has looked at its mailbox).
    tokio::time::sleep(Duration::from_millis(200)).await;
    go.notify_one();
    let rest = client.recv_frame().await;
    assert_eq!(
        (rest.opcode, rest.fin, rest.payload.as_slice()),
        (frame::CONT, true, &b"second half"[..]),
        "the backend's message ends before any push"
    );
    let got: Vec<(u8, Vec<u8>)> = [
        client.recv_frame().await,
        client.recv_frame().await,
        client.recv_frame().await,
    ]
    .into_iter()
    .map(|f| {
        assert!(f.fin, "{f:?}");
        (f.opcode, f.payload)
    })
    .collect();
    assert_eq!(
        got,
        [
            (frame::TEXT, b"push 1".to_vec()),
            (frame::BINARY, b"push 2".to_vec()),
            (frame::BINARY, vec![0, 1, 2]),
        ]
    );
    client.send(Frame::cont(&b" b"[..])).await;
    client.expect_close_after_sending(1000, "").await;
    let _ = proxy.next_report().await;
    let frames = backend.log.frames();
    let data: Vec<(u8, bool, Vec<u8>)> = frames
        .iter()
        .filter(|f| !f.is_control())
        .map(|f| (f.opcode, f.fin, f.payload.clone()))
        .collect();
    assert_eq!(
        data,
        [
            (frame::BINARY, false, b"client: a".to_vec()),
            (frame::CONT, true, b" b".to_vec()),
            (frame::TEXT, true, b"to the backend".to_vec()),
        ],
        "the backend gets the push after the client's message ends: {frames:?}"
    );
    // Pushing to a connection that ended: 404.
    let (status, _) = call_with(
        admin,
        Some(TOKEN),
        "POST",
        &format!("/api/connections/{id}/messages"),
        "text/plain",
        b"late",
    )
    .await;
    assert_eq!(status, 404);
}

/// Connections drained in the drain test, and the window they are spread over.
const DRAINED: usize = 8;
const WINDOW: Duration = Duration::from_millis(1600);

/// Opens `DRAINED` clients on `path`, posts `drain`, and returns when each got its Close
/// (code, reason) as offsets from the drain.
async fn drained(proxy: &Proxy, path: &str, drain: &str) -> Vec<(Duration, u16, String)> {
    let mut clients = Vec::new();
    for _ in 0..DRAINED {
        clients.push(raw::upgrade(proxy.addr(), path).await);
    }
    let (status, body) = call(proxy.admin_addr(), "POST", drain).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["connections"], DRAINED, "{body}");
    let start = Instant::now();
    let waits = clients.into_iter().map(|mut c| async move {
        let close = c.recv_close().await;
        let at = start.elapsed();
        c.send(Frame::new(frame::CLOSE, close.payload.clone()))
            .await;
        (at, close.close_code().unwrap_or(0), close.close_reason())
    });
    let mut at = within(
        "every drained client's Close",
        futures_util::future::join_all(waits),
    )
    .await;
    at.sort();
    at
}

/// Checks that closes at offsets `at` are spread over [`WINDOW`] with `reason`.
fn assert_spread(at: &[(Duration, u16, String)], reason: &str) {
    println!("closes at {:?}", at.iter().map(|a| a.0).collect::<Vec<_>>());
    for (_, code, why) in at {
        assert_eq!((*code, why.as_str()), (1012, reason));
    }
    // Slot i of n at window * i / n: the first at once, the last near the end, none
    // bunched (each gap about window / n).
    let slot = WINDOW / DRAINED as u32;
    assert!(at[0].0 < slot, "first close at {:?}", at[0].0);
    let last = at[DRAINED - 1].0;
    assert!(
        last >= WINDOW - slot * 2 && last < WINDOW + slot * 2,
        "last close at {last:?} for a {WINDOW:?} window"
    );
    let apart = at
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 >= slot / 2)
        .count();
    assert!(apart >= DRAINED - 3, "closes bunched together: {at:?}");
}

#[tokio::test]
async fn drains_are_spread_over_their_window() {
    let (_dir, token) = token_file();
    let (a, b) = (Backend::echo().await, Backend::echo().await);
    let routes =
        route("app", "/app", &a.url("/ws"), "") + &route("other", "/other", &b.url("/ws"), "");
    let proxy = Proxy::start(&config(&token, &routes)).await;
    let admin = proxy.admin_addr();
    let ms = WINDOW.as_millis();
    let mut bystander = raw::upgrade(proxy.addr(), "/other").await;
    let at = drained(
        &proxy,
        "/app",
        &format!("/api/routes/app/drain?window={ms}ms"),
    )
    .await;
    assert_spread(&at, "route drained");
    // The other route was not touched.
    bystander.send(Frame::text("still here")).await;
    assert_eq!(bystander.recv_frame().await.payload, b"still here");
    drop(bystander);
    eventually("the bystander is gone", || proxy.active() == 0).await;
    let drain = format!("/api/backends/drain?url={}&window={ms}ms", b.url("/ws"));
    let at = drained(&proxy, "/other", &drain).await;
    assert_spread(&at, "backend drained");
    let (status, _) = call(admin, "POST", "/api/routes/app/drain?window=25h").await;
    assert_eq!(status, 400, "a window over a day");
    proxy.assert_drained().await;
}

/// Connections opened for the listing test (each is two sockets of this process).
const MANY: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_page_through_completely_with_filters() {
    let (_dir, token) = token_file();
    let routes = "  - { name: echo, path: /echo, echo: true }\n  - { name: echo2, path: /two, echo: true }\n";
    let proxy = Proxy::start(&config(&token, routes)).await;
    let admin = proxy.admin_addr();
    let mut clients = Vec::new();
    for i in 0..MANY {
        let path = if i % 4 == 0 { "/two" } else { "/echo" };
        clients.push(raw::upgrade(proxy.addr(), path).await);
    }
    // Each is listed once its relay runs, a moment after its 101.
    within("all listed", async {
        while call(admin, "GET", "/api/routes").await.1["listed"] != MANY {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    for _ in 0..MANY {
        let (status, page) =
            call(admin, "GET", &format!("/api/connections?limit=300{cursor}")).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let list = page["connections"].as_array().unwrap();
        assert!(list.len() <= 300);
        ids.extend(list.iter().map(|c| c["id"].as_u64().unwrap()));
        match page["next"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    println!(
        "{MANY} connections listed in {pages} pages in {:?}",
        started.elapsed()
    );
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!((total, ids.len()), (MANY, MANY), "each connection once");
    let (status, page) = call(admin, "GET", "/api/connections?route=echo2&limit=1000").await;
    assert_eq!(status, 200);
    assert_eq!(page["connections"].as_array().unwrap().len(), MANY / 4);
    assert!(page["next"].is_null(), "{}", page["next"]);
    let (status, _) = call(admin, "GET", "/api/connections?limit=0").await;
    assert_eq!(status, 400);
    let (status, _) = call(admin, "GET", "/api/connections?cursor=garbage").await;
    assert_eq!(status, 400);
    drop(clients);
    proxy.assert_drained().await;
}

#[tokio::test]
async fn every_endpoint_of_the_openapi_document_answers() {
    let (_dir, token) = token_file();
    let backend = Backend::echo().await;
    let proxy = Proxy::start(&config(
        &token,
        &route("app", "/app", &backend.url("/ws"), ""),
    ))
    .await;
    let admin = proxy.admin_addr();
    let (status, doc) = call(admin, "GET", "/api/openapi.json").await;
    assert_eq!(status, 200);
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if path == "/api/events" {
                continue; // A stream that does not end: checked below.
            }
            let concrete = path
                .replace("{id}", "424242")
                .replace("{identity}", "nobody")
                .replace("{name}", "nowhere")
                + if path.ends_with("/backends/drain") {
                    "?url=ws://x/"
                } else {
                    ""
                };
            let (status, body) = call(admin, &method.to_uppercase(), &concrete).await;
            let documented = op["responses"].as_object().unwrap();
            assert!(
                documented.contains_key(&status.to_string()),
                "{method} {concrete}: {status} is not documented ({body})"
            );
            assert_ne!(body["error"], "no_such_endpoint", "{method} {concrete}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked}");
    // The event stream answers with its content type and a first `counts` event.
    let mut tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tcp.write_all(
        format!("GET /api/events HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    within("the first counts event", async {
        while !String::from_utf8_lossy(&seen).contains("event: counts") {
            let mut buf = [0u8; 1024];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("text/event-stream"), "{text}");
    // An opened connection shows up on the stream.
    let ws = raw::upgrade(proxy.addr(), "/app").await;
    within("the open event", async {
        while !String::from_utf8_lossy(&seen).contains("event: open") {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    drop((ws, tcp));
}

/// The error text of a config that must be refused.
fn refused(yaml: &str) -> String {
    match wsgate::Config::parse(yaml, "test.yaml") {
        Ok(_) => panic!("config accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_missing_short_or_doubled_token_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.token");
    std::fs::write(&short, "abc\n").unwrap();
    let head = "listeners:\n  - bind: \"127.0.0.1:0\"\nadmin:\n  bind: \"127.0.0.1:0\"\n";
    let echo = "routes:\n  - { name: echo, path: /echo, echo: true }\n";
    let missing = dir.path().join("none.token");
    for (admin, want) in [
        (
            format!("  token_file: \"{}\"\n", missing.display()),
            "cannot read",
        ),
        (
            format!("  token_file: \"{}\"\n", short.display()),
            "at least 16",
        ),
        (
            "  token_env: WSGATE_TEST_NO_SUCH_VARIABLE\n".to_string(),
            "WSGATE_TEST_NO_SUCH_VARIABLE",
        ),
    ] {
        let err = refused(&format!("{head}{admin}{echo}"));
        assert!(err.starts_with("test.yaml:5:"), "the key's line: {err}");
        assert!(err.contains(want), "{err}");
    }
    let (_tdir, token) = token_file();
    // PATH is set wherever tests run, and long enough to pass as a token.
    let both = format!(
        "{head}  token_file: \"{}\"\n  token_env: PATH\n{echo}",
        token.display()
    );
    let err = refused(&both);
    assert!(err.contains("not both"), "{err}");
}

#[tokio::test]
async fn a_reload_rotates_the_token() {
    let (dir, token) = token_file();
    let yaml = config(&token, "  - { name: echo, path: /echo, echo: true }\n");
    let proxy = Proxy::start(&yaml).await;
    let admin = proxy.admin_addr();
    assert_eq!(call(admin, "GET", "/api/routes").await.0, 200);
    let next = "wsgate-test-token-rotated-000000001";
    crate::support::child::replace_file(&token, next.as_bytes());
    proxy.reload_ok(&yaml).await;
    assert_eq!(
        call(admin, "GET", "/api/routes").await.0,
        401,
        "the old token"
    );
    let (status, _) = call_with(admin, Some(next), "GET", "/api/routes", "", b"").await;
    assert_eq!(status, 200, "the new token");
    // Without a token after the reload the API is off again.
    let off = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\nadmin: {{ bind: \"{admin}\" }}\n\
         {TEST_DEFAULTS}routes:\n  - {{ name: echo, path: /echo, echo: true }}\n"
    );
    proxy.reload_ok(&off).await;
    let (status, _) = call_with(admin, Some(next), "GET", "/api/routes", "", b"").await;
    assert_eq!(status, 404);
    drop(dir);
}

/// An auth service naming the client after its bearer token (`Bearer alice` → alice).
async fn naming_auth() -> crate::support::http_backend::HttpBackend {
    use crate::support::http_backend::{HttpBackend, text};
    HttpBackend::start(|req: hyper::Request<hyper::body::Incoming>| async move {
        let who = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string();
        let mut res = hyper::Response::new(text(""));
        res.headers_mut().insert("x-user", who.parse().unwrap());
        res
    })
    .await
}

#[tokio::test]
async fn an_identity_gets_its_message_on_every_connection_and_the_config_hides_secrets() {
    let (_dir, token) = token_file();
    let auth = naming_auth().await;
    let backend = Backend::echo().await;
    let extra = format!(
        "    forward_auth:\n      url: http://{}/verify?app=chat&key=AUTH-SECRET\n      \
         identity_header: x-user\n    ping_interval: 7s\n",
        auth.addr
    );
    let proxy = Proxy::start(&config(
        &token,
        &route("chat", "/chat", &backend.url("/ws"), &extra),
    ))
    .await;
    let admin = proxy.admin_addr();
    let mut conns = Vec::new();
    for who in ["alice", "bob", "alice"] {
        let auth = format!("Bearer {who}");
        let (head, c) = raw::upgrade_with(proxy.addr(), "/chat", &[("Authorization", &auth)]).await;
        assert_eq!(head.status(), 101, "{head:?}");
        conns.push(c);
    }
    eventually("three listed", || proxy.active() == 3).await;
    let (status, page) = within("listing", async {
        loop {
            let answer = call(admin, "GET", "/api/connections?identity=alice").await;
            if answer.1["connections"]
                .as_array()
                .is_some_and(|l| l.len() == 2)
            {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page["connections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["identity"] == "alice")
    );
    let (status, answer) = call_with(
        admin,
        Some(TOKEN),
        "POST",
        "/api/identities/alice/messages",
        "application/json",
        br#"{"notice":"maintenance"}"#,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["queued"], 2, "{answer}");
    for i in [0, 2] {
        let f = conns[i].recv_frame().await;
        assert_eq!(
            (f.opcode, f.payload.as_slice()),
            (frame::TEXT, &br#"{"notice":"maintenance"}"#[..])
        );
    }
    // Bob got nothing: his next frame is the echo of what he sends now.
    conns[1].send(Frame::text("bob here")).await;
    assert_eq!(conns[1].recv_frame().await.payload, b"bob here");

    let (status, config) = call(admin, "GET", "/api/config").await;
    assert_eq!(status, 200);
    let text = config.to_string();
    for secret in [TOKEN, "AUTH-SECRET", &token.display().to_string()] {
        assert!(!text.contains(secret), "{secret} shown in {text}");
    }
    let chat = &config["routes"][0];
    assert_eq!(
        chat["tuning"]["ping_interval"], "7s",
        "the route's own value"
    );
    assert_eq!(chat["tuning"]["close_timeout"], "1s", "from defaults");
    assert_eq!(config["admin"]["token"], "<redacted>");
    assert!(
        chat["forward_auth"]["url"]
            .as_str()
            .unwrap()
            .ends_with("?<redacted>")
    );
    drop(conns);
    proxy.assert_drained().await;
}

#[tokio::test]
async fn top_lists_the_busiest_connections_first() {
    let (_dir, token) = token_file();
    let proxy = Proxy::start(&config(
        &token,
        "  - { name: echo, path: /echo, echo: true }\n",
    ))
    .await;
    let admin = proxy.admin_addr();
    let mut conns = Vec::new();
    for size in [10usize, 3000, 200, 0] {
        let mut c = raw::upgrade(proxy.addr(), "/echo").await;
        if size > 0 {
            c.send(Frame::binary(vec![7u8; size])).await;
            assert_eq!(c.recv_frame().await.payload.len(), size);
        }
        let id = id_of(admin, &mut c).await;
        conns.push((id, c));
    }
    let (status, top) = call(admin, "GET", "/api/top?limit=2").await;
    assert_eq!(status, 200, "{top}");
    let ids: Vec<u64> = top["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [conns[1].0, conns[2].0], "{top}");
    assert_eq!(top["connections"][0]["bytes_in"], 3000);
    assert_eq!(top["connections"][0]["bytes_out"], 3000);
    assert_eq!(call(admin, "GET", "/api/top?limit=101").await.0, 400);
    drop(conns);
    proxy.assert_drained().await;
}
