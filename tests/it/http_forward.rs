//! Plain HTTP on routes: routing first, forwarding to the route's pool with the upgrade's
//! header policy, bodies streamed both ways.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Response;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::backend::Backend;
use crate::support::ca::TestCa;
use crate::support::child::Child;
use crate::support::http::{self, read_head};
use crate::support::http_backend::{self as hb, HttpBackend, fetch, get, with_body};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::within;

async fn hello() -> HttpBackend {
    HttpBackend::start(|_req| async { Response::new(hb::text("hello")) }).await
}

async fn proxy_to(backend: &HttpBackend, extra: &str) -> Proxy {
    Proxy::start(&yaml(&route("app", "/app", &backend.url("/base"), extra))).await
}

/// Before plain forwarding, every plain request (even to an unknown path) got 426.
#[tokio::test]
async fn routing_comes_first_unknown_path_is_404_and_a_routed_get_is_forwarded() {
    let backend = hello().await;
    let proxy = proxy_to(&backend, "").await;
    let res = fetch(proxy.addr(), get("/nope")).await;
    assert_eq!(res.status, 404);
    let res = fetch(proxy.addr(), get("/app/x")).await;
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
    let up = http::exchange(
        proxy.addr(),
        http::upgrade_request(proxy.addr(), "/nope", &[]),
    )
    .await;
    assert_eq!(up.status(), 404);
    assert_eq!(backend.stats.seen().len(), 1);
    assert_eq!(
        proxy.metric(r#"wsgate_http_requests_total{route="app",code="2xx"}"#),
        Some(1.0)
    );
    assert_eq!(
        proxy.metric(r#"wsgate_http_request_duration_seconds_count{route="app"}"#),
        Some(1.0)
    );
}

/// An absolute-form target is routed by its authority (RFC 9112 §3.2.2) and reaches the
/// backend in origin form.
#[tokio::test]
async fn an_absolute_form_target_is_routed_by_its_authority_and_sent_in_origin_form() {
    let backend = hello().await;
    let routes = route(
        "app",
        "/app",
        &backend.url("/base"),
        "    host: chat.example\n",
    );
    let proxy = Proxy::start(&yaml(&routes)).await;
    let req = "GET http://chat.example/app/x?y=1 HTTP/1.1\r\nHost: other.example\r\n\r\n";
    let res = http::exchange(proxy.addr(), req).await;
    assert_eq!(res.status(), 200, "{res:?}");
    let seen = &backend.stats.seen()[0];
    assert_eq!(seen.target, "/base/x?y=1");
    assert_eq!(
        seen.one("x-forwarded-host").as_deref(),
        Some("chat.example")
    );
}

#[tokio::test]
async fn a_missing_invalid_or_duplicate_host_is_400_for_a_plain_request() {
    let backend = hello().await;
    let proxy = proxy_to(&backend, "").await;
    for head in [
        "GET /app HTTP/1.1\r\n\r\n",
        "GET /app HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET /app HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /app/%2e%2e/%2e%2e/etc HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        let res = http::exchange(proxy.addr(), head).await;
        assert!(matches!(res.status(), 400 | 404), "{head:?}: {res:?}");
        if !head.contains("%2e") {
            assert_eq!(res.status(), 400, "{head:?}");
        }
    }
    assert_eq!(backend.stats.accepted(), 0, "the backend was contacted");
}

#[tokio::test]
async fn echo_route_and_http_false_answer_426_and_the_backend_sees_nothing() {
    let backend = hello().await;
    let routes = format!(
        "  - {{name: echo, path: /echo, echo: true}}\n{}",
        route("ws_only", "/app", &backend.url("/"), "    http: false\n")
    );
    let proxy = Proxy::start(&yaml(&routes)).await;
    for path in ["/echo", "/app/x"] {
        let res = fetch(proxy.addr(), get(path)).await;
        assert_eq!(res.status, 426, "{path}");
        assert_eq!(res.all("upgrade"), ["websocket"]);
    }
    assert_eq!(backend.stats.accepted(), 0);
    assert_eq!(
        proxy.metric(r#"wsgate_http_requests_total{route="ws_only",code="4xx"}"#),
        Some(1.0)
    );
}

#[test]
fn http_true_on_the_echo_route_is_a_config_error() {
    let text = yaml("  - {name: echo, path: /echo, echo: true, http: true}\n");
    let err = wsgate::Config::parse(&text, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs backends"), "{err}");
}

/// The backend's request and the client's response, with every header policy applied.
#[tokio::test]
async fn headers_hop_by_hop_removed_forwarding_headers_set_cookies_and_cors_kept() {
    let backend = HttpBackend::start(|_req| async {
        Response::builder()
            .header("set-cookie", "a=1; Path=/")
            .header("set-cookie", "b=2; HttpOnly")
            .header("access-control-allow-origin", "https://app.example")
            .header("access-control-allow-credentials", "true")
            .header("connection", "x-internal")
            .header("x-internal", "secret")
            .header("keep-alive", "timeout=5")
            .body(hb::text("ok"))
            .unwrap()
    })
    .await;
    let proxy = proxy_to(&backend, "").await;
    let req = "GET /app/x/y?sid=1&t=2 HTTP/1.1\r\nHost: wsgate.test\r\n\
               X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\
               X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\
               Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
               Proxy-Authorization: x\r\nOrigin: https://app.example\r\nCookie: io=abc\r\n\r\n";
    let res = http::exchange(proxy.addr(), req).await;
    assert_eq!(res.status(), 200, "{res:?}");
    assert_eq!(
        res.header_all("set-cookie"),
        ["a=1; Path=/", "b=2; HttpOnly"]
    );
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
    for gone in ["x-internal", "keep-alive"] {
        assert_eq!(res.header(gone), None, "{gone} reached the client");
    }
    let seen = &backend.stats.seen()[0];
    assert_eq!(seen.target, "/base/x/y?sid=1&t=2");
    assert_eq!(seen.one("host"), Some(backend.addr.to_string()));
    assert_eq!(seen.one("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.one("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(seen.one("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(seen.one("x-forwarded-host").as_deref(), Some("wsgate.test"));
    assert_eq!(
        seen.one("forwarded").as_deref(),
        Some("for=127.0.0.1;host=\"wsgate.test\";proto=http")
    );
    for gone in [
        "x-drop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
        "expect",
    ] {
        assert!(seen.all(gone).is_empty(), "{gone} reached the backend");
    }
    assert_eq!(seen.one("cookie").as_deref(), Some("io=abc"));
    assert_eq!(seen.one("origin").as_deref(), Some("https://app.example"));
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host_on_plain_requests_and_upgrades() {
    let backend = hello().await;
    let ws = Backend::echo().await;
    let routes = format!(
        "{}{}",
        route(
            "app",
            "/app",
            &backend.url("/"),
            "    preserve_host: true\n"
        ),
        route("ws", "/ws", &ws.url("/ws"), "    preserve_host: true\n")
    );
    let proxy = Proxy::start(&yaml(&routes)).await;
    fetch(proxy.addr(), get("/app")).await;
    assert_eq!(
        backend.stats.seen()[0].one("host").as_deref(),
        Some("wsgate.test")
    );
    let mut up = http::upgrade_request(proxy.addr(), "/ws", &[]);
    up = up.replace(
        &format!("Host: {}", proxy.addr()),
        "Host: chat.example:8443",
    );
    let head = http::exchange(proxy.addr(), up).await;
    assert_eq!(head.status(), 101);
    assert_eq!(ws.log.request().header("host"), Some("chat.example:8443"));
}

/// A backend answering with the request body it read, length-framed.
async fn echo_body() -> HttpBackend {
    HttpBackend::start(|req: hyper::Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        Response::new(hb::text(body.unwrap_or_default()))
    })
    .await
}

#[tokio::test]
async fn request_bodies_pass_length_framed_and_chunked() {
    let backend = echo_body().await;
    let proxy = proxy_to(&backend, "").await;
    let res = fetch(
        proxy.addr(),
        with_body("POST", "/app", hb::text("x".repeat(100_000))),
    )
    .await;
    assert_eq!(res.body.len(), 100_000);
    let (tx, body) = hb::channel();
    let sender = tokio::spawn(async move {
        for i in 0..5 {
            tx.send(Bytes::from(format!("part{i};"))).await.unwrap();
        }
    });
    let res = fetch(proxy.addr(), with_body("PUT", "/app", body)).await;
    sender.await.unwrap();
    assert_eq!(res.text(), "part0;part1;part2;part3;part4;");
    let seen = backend.stats.seen();
    assert_eq!(seen[0].one("content-length").as_deref(), Some("100000"));
    assert_eq!(seen[1].one("transfer-encoding").as_deref(), Some("chunked"));
}

/// `Expect: 100-continue` is met by wsgate's server (the 100 is sent when the body is
/// first read, that is once a backend takes it); the expectation itself stays on this hop.
#[tokio::test]
async fn expect_100_continue_gets_a_100_before_the_body_is_sent() {
    let backend = echo_body().await;
    let proxy = proxy_to(&backend, "").await;
    let mut tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.write_all(
        b"POST /app HTTP/1.1\r\nHost: wsgate.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let head = within("the 100", read_head(&mut tcp, &mut buf))
        .await
        .unwrap();
    assert_eq!(head.status(), 100, "{head:?}");
    tcp.write_all(b"hello").await.unwrap();
    let mut head = within("the answer", read_head(&mut tcp, &mut buf))
        .await
        .unwrap();
    http::read_body(&mut tcp, &mut head, buf).await;
    assert_eq!((head.status(), head.body_text().as_str()), (200, "hello"));
    assert!(backend.stats.seen()[0].all("expect").is_empty());
}

#[tokio::test]
async fn any_other_expectation_is_417_and_the_backend_sees_nothing() {
    let backend = echo_body().await;
    let proxy = proxy_to(&backend, "").await;
    let res = http::exchange(
        proxy.addr(),
        "POST /app HTTP/1.1\r\nHost: wsgate.test\r\nContent-Length: 0\r\nExpect: magic\r\n\r\n",
    )
    .await;
    assert_eq!(res.status(), 417);
    assert_eq!(backend.stats.accepted(), 0);
}

/// A raw backend answering every request on a connection with `answer`.
async fn raw_backend(answer: &'static str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_head(&mut tcp, &mut buf).await.is_some() {
                    if tcp.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Sends `req` on one raw connection, then `GET /app/next`, and returns both answers:
/// a body where none belongs would show up as a broken second answer.
async fn twice(proxy: &Proxy, req: &str) -> (http::Head, http::Head) {
    within("two requests on one connection", async {
        let mut tcp = TcpStream::connect(proxy.addr()).await.unwrap();
        tcp.write_all(req.as_bytes()).await.unwrap();
        tcp.write_all(b"GET /app/next HTTP/1.1\r\nHost: wsgate.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let first = read_head(&mut tcp, &mut buf).await.expect("first answer");
        let second = read_head(&mut tcp, &mut buf).await.expect("second answer");
        (first, second)
    })
    .await
}

#[tokio::test]
async fn informational_204_304_and_head_responses_carry_no_body() {
    let cases = [
        (
            "GET",
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            204,
            None,
        ),
        (
            "GET",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n",
            304,
            None,
        ),
        (
            "HEAD",
            "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n",
            200,
            Some("42"),
        ),
    ];
    for (method, answer, status, length) in cases {
        let (addr, _task) = raw_backend(answer).await;
        let proxy = Proxy::start(&yaml(&route("app", "/app", &format!("ws://{addr}/"), ""))).await;
        let req = format!("{method} /app HTTP/1.1\r\nHost: wsgate.test\r\n\r\n");
        let (first, second) = twice(&proxy, &req).await;
        assert_eq!(first.status(), status, "{answer:?}: {first:?}");
        // hyper's server writes no Content-Length on a 304 (it may, RFC 9110 §8.6).
        assert_eq!(first.header("content-length"), length, "{answer:?}");
        assert_eq!(first.header("transfer-encoding"), None);
        assert_eq!(second.status(), if method == "HEAD" { 200 } else { status });
    }
}

/// Server-sent events: each event reaches the client before the backend writes the next.
#[tokio::test]
async fn server_sent_events_are_flushed_one_by_one() {
    let (feed_tx, mut feed_rx) = tokio::sync::mpsc::channel::<tokio::sync::mpsc::Sender<Bytes>>(1);
    let feed_tx = std::sync::Arc::new(feed_tx);
    let backend = HttpBackend::start(move |_req| {
        let feed_tx = feed_tx.clone();
        async move {
            let (tx, body) = hb::channel();
            feed_tx.send(tx).await.unwrap();
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(body)
                .unwrap()
        }
    })
    .await;
    let proxy = proxy_to(&backend, "").await;
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = within("the SSE head", send.send_request(get("/app/events")))
        .await
        .unwrap();
    let mut body = res.into_body();
    let events = within("the backend's stream", feed_rx.recv())
        .await
        .unwrap();
    for n in 0..5 {
        let event = format!("id: {n}\ndata: event {n}\n\n");
        events.send(Bytes::from(event.clone())).await.unwrap();
        // Event n must arrive while event n+1 is not written yet.
        let frame = within("event n", body.frame()).await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), Bytes::from(event));
    }
}

/// A long-poll held 25 s (Socket.IO's default is 25 s) stays open and then answers.
#[tokio::test(start_paused = true)]
async fn a_long_poll_held_25_seconds_is_answered() {
    let backend = HttpBackend::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(25)).await;
        Response::new(hb::text("6"))
    })
    .await;
    let proxy = Proxy::builder(&yaml(&route("app", "/app", &backend.url("/"), "")))
        .paused()
        .start()
        .await;
    let started = tokio::time::Instant::now();
    let poll = get("/app/socket.io/?EIO=4&transport=polling");
    let res = hb::fetch_for(proxy.addr(), poll, Duration::from_secs(60)).await;
    assert_eq!((res.status, res.text().as_str()), (200, "6"));
    assert!(started.elapsed() >= Duration::from_secs(25));
}

/// `wss://` backends are reached as `https://` with the route's `tls_ca`; a TLS listener.
#[tokio::test]
async fn tls_listener_to_a_wss_backend_reached_as_https() {
    let ca = TestCa::new();
    let backend = HttpBackend::start_tls(
        |req: hyper::Request<hyper::body::Incoming>| async move {
            Response::new(hb::text(format!("over tls to {}", req.uri())))
        },
        ca.server_config(),
    )
    .await;
    let config = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n    tls: {}\n{}routes:\n{}",
        ca.listener_tls_yaml(),
        crate::support::proxy::TEST_DEFAULTS,
        route(
            "app",
            "/app",
            &backend.url("/b"),
            &format!("    tls_ca: {}\n", ca.ca_pem().display())
        )
    );
    let proxy = Proxy::start(&config).await;
    let tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(ca.client_config())
        .connect(name, tcp)
        .await
        .expect("TLS to wsgate");
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = within("answer", send.send_request(get("/app/x")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "over tls to /b/x");
    let seen = &backend.stats.seen()[0];
    assert_eq!(seen.one("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        seen.one("host"),
        Some(format!("localhost:{}", backend.addr.port()))
    );
}

/// The access log: one line per request, the path without its query (unless
/// `log_query`), escaped, with status, bytes, backend and outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_access_log_line_per_request_escaped_and_without_the_query() {
    let backend = echo_body().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsgate.yaml");
    let config = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\nroutes:\n{}{}log: {{ format: json, level: info }}\nreload: {{ watch: false }}\n",
        route("app", "/app", &backend.url("/"), ""),
        route(
            "q",
            "/q",
            &backend.url("/"),
            "    log_query: true\n    http: true\n"
        ),
    )
    .replace(
        "log:",
        &format!("{}log:", route("ws_only", "/ws", &backend.url("/"), "    http: false\n")),
    );
    std::fs::write(&path, config).unwrap();
    let gate = Child::start(&path).await;
    let res = fetch(
        gate.addr,
        with_body("POST", "/app/%0aFORGED%22?sid=secret", hb::text("12345")),
    )
    .await;
    assert_eq!(res.status, 200);
    fetch(gate.addr, get("/q/x?sid=shown")).await;
    assert_eq!(fetch(gate.addr, get("/ws/x")).await.status, 426);
    let lines = |gate: &Child| -> Vec<serde_json::Value> {
        gate.log()
            .iter()
            .filter(|l| l.contains("http request"))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    crate::support::eventually("two access-log lines", || lines(&gate).len() == 2).await;
    let lines = lines(&gate);
    let first = &lines[0];
    let field = |v: &serde_json::Value, k: &str| v.get(k).or_else(|| v["fields"].get(k)).cloned();
    assert_eq!(
        field(first, "path").unwrap(),
        "/app/%0AFORGED%22",
        "{first}"
    );
    assert_eq!(field(first, "method").unwrap(), "POST");
    assert_eq!(field(first, "status").unwrap(), 200);
    assert_eq!(field(first, "bytes_in").unwrap(), 5);
    assert_eq!(field(first, "bytes_out").unwrap(), 5);
    assert_eq!(field(first, "outcome").unwrap(), "ok");
    assert_eq!(field(first, "backend").unwrap(), backend.url("/"));
    assert!(
        !gate.log().iter().any(|l| l.contains("secret")),
        "the query was logged"
    );
    assert_eq!(field(&lines[1], "path").unwrap(), "/q/x?sid=shown");
    crate::support::eventually("the 426 logged with its route", || {
        gate.log()
            .iter()
            .any(|l| l.contains("request refused") && l.contains("ws_only") && l.contains("426"))
    })
    .await;
}
