//! The admin API (`/api/…` on the admin listener): the bearer token and its absence,
//! unknown ids, closing one connection among busy ones, pushed messages and fragmented
//! messages in flight, and drains spread over their window (more in `admin_api_more`).

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
pub(crate) const TOKEN: &str = "wsgate-test-token-3f9a1c0d5e7b2a48";

/// A token file in a directory that lives as long as the test holds it.
pub(crate) fn token_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    (dir, path)
}

/// A config with one listener, an admin listener reading its token from `token`, and `routes`.
pub(crate) fn config(token: &Path, routes: &str) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n\
         admin: {{ bind: \"127.0.0.1:0\", token_file: \"{}\" }}\n{TEST_DEFAULTS}routes:\n{routes}",
        token.display()
    )
}

/// Calls the API at `admin` with `token` (none: no Authorization header).
pub(crate) async fn call_with(
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
pub(crate) async fn call(admin: SocketAddr, method: &str, path: &str) -> (u16, Value) {
    call_with(admin, Some(TOKEN), method, path, "", b"").await
}

/// The id the API gives the connection whose client end is `client`.
pub(crate) async fn id_of(admin: SocketAddr, client: &mut RawClient) -> u64 {
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
