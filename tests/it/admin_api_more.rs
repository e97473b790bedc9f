//! The admin API, continued: paging through many connections, the OpenAPI document
//! against the live router (and the event stream), the busiest connections, pushes to an
//! identity and the redacted config, and the token's config errors and rotation.

use std::time::Duration;

use tokio::time::Instant;

use crate::admin_api::{TOKEN, call, call_with, config, id_of, token_file};
use crate::support::backend::Backend;
use crate::support::frame::{self, Frame};
use crate::support::proxy::{Proxy, TEST_DEFAULTS, route};
use crate::support::{eventually, http, raw, within};

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
    drop(ws);
    within("the close event", async {
        while !String::from_utf8_lossy(&seen).contains("event: close") {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    drop(tcp);
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

/// The status page's files are served at `/` (and `/status.js`, `/status.css`) of the
/// admin listener once a token is configured, without the token, as text/html etc.; the
/// API calls it makes still need the token. With no token configured, 404.
#[tokio::test]
async fn the_status_page_is_served_only_with_a_token_configured() {
    let (_dir, token) = token_file();
    let proxy = Proxy::start(&config(
        &token,
        "  - { name: echo, path: /echo, echo: true }\n",
    ))
    .await;
    let admin = proxy.admin_addr();
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").into_bytes()
    };
    let page = http::exchange(admin, get("/")).await;
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body_text().contains("<title>wsgate status</title>"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("connect-src 'self'")
    );
    for (path, kind) in [
        ("/status.js", "text/javascript"),
        ("/status.css", "text/css"),
    ] {
        let file = http::exchange(admin, get(path)).await;
        assert_eq!(file.status(), 200, "{path}");
        assert!(
            file.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
    }
    // The page's data is not: the API still wants the token.
    let (status, _) = call_with(admin, None, "GET", "/api/routes", "", b"").await;
    assert_eq!(status, 401);

    let no_token = Proxy::start(&format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\nadmin: {{ bind: \"127.0.0.1:0\" }}\n{TEST_DEFAULTS}\
         routes:\n  - {{ name: echo, path: /echo, echo: true }}\n"
    ))
    .await;
    for path in ["/", "/status.js", "/status.css"] {
        let res = http::exchange(no_token.admin_addr(), get(path)).await;
        assert_eq!(res.status(), 404, "{path} without a token configured");
    }
    let metrics = http::exchange(no_token.admin_addr(), get("/metrics")).await;
    assert_eq!(metrics.status(), 200);
}
