//! Forward auth: a loopback auth service records every subrequest it gets and answers
//! 200 (with the identity), 401 or 302 by the client's token; wsgate must never leak the
//! upgrade's headers into the subrequest, must relay refusals as they are, must copy the
//! granted headers over any the client forged, and gives 503 when the service is away.

use std::time::Duration;

use hyper::{Request, Response};
use tokio::net::TcpListener;

use crate::support::backend::Backend;
use crate::support::client;
use crate::support::http::{self, upgrade_request};
use crate::support::http_backend::{self as hb, HttpBackend, fetch, with_body};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::{eventually, eventually_some, raw, within};

/// The auth service: `Bearer good` → 200 with `X-User: alice` and `X-Roles: admin`,
/// `Bearer login` → 302 to a login page, anything else → 401 with a challenge and a body.
async fn auth_service() -> HttpBackend {
    HttpBackend::start(|req: Request<hyper::body::Incoming>| async move {
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut res = Response::new(hb::text(""));
        match token.as_str() {
            "Bearer good" => {
                let h = res.headers_mut();
                h.insert("x-user", "alice".parse().unwrap());
                h.append("x-roles", "admin".parse().unwrap());
                h.append("x-roles", "ops".parse().unwrap());
                h.insert("x-not-copied", "1".parse().unwrap());
            }
            "Bearer login" => {
                res = Response::new(hb::text("go log in"));
                *res.status_mut() = hyper::StatusCode::FOUND;
                let h = res.headers_mut();
                h.insert(
                    "location",
                    "https://login.example/?next=/chat".parse().unwrap(),
                );
                h.insert("set-cookie", "flow=1; Path=/".parse().unwrap());
            }
            _ => {
                res = Response::new(hb::text("who are you?"));
                *res.status_mut() = hyper::StatusCode::UNAUTHORIZED;
                let h = res.headers_mut();
                h.insert("www-authenticate", "Bearer realm=\"chat\"".parse().unwrap());
                h.insert("x-auth-detail", "no token".parse().unwrap());
            }
        }
        res
    })
    .await
}

fn auth_keys(url: &str, extra: &str) -> String {
    format!(
        "    forward_auth:\n      url: {url}\n      response_headers: [x-user, x-roles]\n      identity_header: x-user\n{extra}"
    )
}

/// The upgrade's own headers never reach the auth service; the forwarding headers say
/// what the client asked for; the backend gets the granted headers and none the client
/// forged; the close report names the identity.
#[tokio::test]
async fn a_granted_upgrade_sends_no_upgrade_headers_to_the_auth_service_and_forwards_the_identity()
{
    let auth = auth_service().await;
    let backend = Backend::echo().await;
    let auth_url = format!("http://{}/verify?app=chat", auth.addr);
    let routes = route(
        "chat",
        "/chat",
        &backend.url("/ws"),
        &auth_keys(&auth_url, ""),
    );
    let mut proxy = Proxy::start(&yaml(&routes)).await;
    let req = upgrade_request(
        proxy.addr(),
        "/chat/./room?x=1",
        &[
            ("Authorization", "Bearer good"),
            ("Cookie", "sid=abc"),
            ("X-User", "mallory"),
            ("X-Roles", "root"),
            ("Sec-WebSocket-Protocol", "chat.v1"),
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
            ("Origin", "http://example.test"),
        ],
    );
    let res = http::exchange(proxy.addr(), req).await;
    assert_eq!(res.status(), 101, "{res:?}");

    let seen = auth.stats.seen();
    assert_eq!(seen.len(), 1, "one subrequest");
    let sub = &seen[0];
    assert_eq!(sub.method, "GET");
    assert_eq!(sub.target, "/verify?app=chat");
    for leaked in [
        "upgrade",
        "connection",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "content-length",
        "transfer-encoding",
        "origin",
        "x-user",
    ] {
        assert!(
            sub.all(leaked).is_empty(),
            "{leaked} reached the auth service"
        );
    }
    assert_eq!(sub.one("authorization").as_deref(), Some("Bearer good"));
    assert_eq!(sub.one("cookie").as_deref(), Some("sid=abc"));
    assert_eq!(sub.one("x-forwarded-method").as_deref(), Some("GET"));
    assert_eq!(sub.one("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(sub.one("x-forwarded-host"), Some(proxy.addr().to_string()));
    assert_eq!(
        sub.one("x-forwarded-uri").as_deref(),
        Some("/chat/room?x=1")
    );
    assert_eq!(sub.one("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(sub.one("host"), Some(auth.addr.to_string()));

    let at_backend = within("backend request", async {
        eventually("the backend saw the upgrade", || {
            backend.log.accepted() == 1
        })
        .await;
        backend.log.request()
    })
    .await;
    assert_eq!(at_backend.header_all("x-user"), ["alice"]);
    assert_eq!(at_backend.header_all("x-roles"), ["admin", "ops"]);
    assert!(at_backend.header("x-not-copied").is_none());
    drop(res);
    let report = proxy.next_report().await;
    assert_eq!(report.identity.as_deref(), Some("alice"));
    proxy.assert_drained().await;
}

/// A real client through forward auth: the WebSocket works end to end.
#[tokio::test]
async fn a_granted_client_gets_its_websocket() {
    let auth = auth_service().await;
    let backend = Backend::echo().await;
    let auth_url = format!("http://{}/verify", auth.addr);
    let routes = route(
        "chat",
        "/chat",
        &backend.url("/"),
        &auth_keys(&auth_url, ""),
    );
    let proxy = Proxy::start(&yaml(&routes)).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        proxy.url("/chat"),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer good".parse().unwrap());
    let (mut ws, _) = client::connect(req).await;
    use futures_util::SinkExt;
    ws.send("hi".into()).await.unwrap();
    assert_eq!(client::next(&mut ws).await, "hi".into());
    client::close(&mut ws).await;
    proxy.assert_drained().await;
}

/// A 401 and a 302 go back to the client with their headers and body, the backend is
/// never contacted, and each refusal is counted; refusals are never cached.
#[tokio::test]
async fn refusals_are_relayed_as_they_are_and_never_cached() {
    let auth = auth_service().await;
    let backend = Backend::echo().await;
    let auth_url = format!("http://{}/verify", auth.addr);
    let cache = "      cache: { ttl: 60s }\n";
    let routes = route(
        "chat",
        "/chat",
        &backend.url("/"),
        &auth_keys(&auth_url, cache),
    );
    let proxy = Proxy::start(&yaml(&routes)).await;

    for _ in 0..2 {
        let res = http::exchange(
            proxy.addr(),
            upgrade_request(proxy.addr(), "/chat", &[("Authorization", "Bearer bad")]),
        )
        .await;
        assert_eq!(res.status(), 401);
        assert_eq!(
            res.header("www-authenticate"),
            Some("Bearer realm=\"chat\"")
        );
        assert_eq!(res.header("x-auth-detail"), Some("no token"));
        assert_eq!(res.body_text(), "who are you?");
    }
    let res = http::exchange(
        proxy.addr(),
        upgrade_request(proxy.addr(), "/chat", &[("Authorization", "Bearer login")]),
    )
    .await;
    assert_eq!(res.status(), 302);
    assert_eq!(
        res.header("location"),
        Some("https://login.example/?next=/chat")
    );
    assert_eq!(res.header("set-cookie"), Some("flow=1; Path=/"));
    assert_eq!(res.body_text(), "go log in");
    assert_eq!(
        auth.stats.seen().len(),
        3,
        "no refusal was served from the cache"
    );
    assert_eq!(backend.log.accepted(), 0, "the backend was never contacted");
    assert_eq!(
        proxy.metric(r#"wsgate_auth_failures_total{route="chat",reason="forward_denied"}"#),
        Some(3.0)
    );
    assert_eq!(
        proxy.metric(r#"wsgate_handshake_failures_total{route="chat",reason="forward_denied"}"#),
        Some(3.0)
    );
    proxy.assert_drained().await;
}

/// A positive answer is reused for the same token within its TTL; another token is asked
/// about, and so is a request without any.
#[tokio::test]
async fn positive_answers_are_cached_by_the_configured_credentials() {
    let auth = auth_service().await;
    let backend = HttpBackend::start(|_req| async { Response::new(hb::text("ok")) }).await;
    let auth_url = format!("http://{}/verify", auth.addr);
    let cache = "      cache: { ttl: 60s, key_headers: [authorization] }\n";
    let routes = route(
        "app",
        "/app",
        &backend.url("/"),
        &auth_keys(&auth_url, cache),
    );
    let proxy = Proxy::start(&yaml(&routes)).await;
    let get_as = |token: &'static str| {
        let mut req = with_body("GET", "/app/x", hb::text(""));
        if !token.is_empty() {
            req.headers_mut()
                .insert("authorization", token.parse().unwrap());
        }
        req
    };
    for _ in 0..3 {
        let res = fetch(proxy.addr(), get_as("Bearer good")).await;
        assert_eq!(res.status, 200);
    }
    assert_eq!(auth.stats.seen().len(), 1, "the grant was cached");
    let seen = backend.stats.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(
            s.one("x-user").as_deref(),
            Some("alice"),
            "cached grants carry the headers"
        );
    }
    assert_eq!(
        fetch(proxy.addr(), get_as("Bearer other")).await.status,
        401
    );
    assert_eq!(fetch(proxy.addr(), get_as("")).await.status, 401);
    assert_eq!(auth.stats.seen().len(), 3);
}

/// A plain request is asked about with its own method, and its body stays with it (the
/// subrequest has none).
#[tokio::test]
async fn a_plain_request_keeps_its_method_and_body_and_the_subrequest_has_none() {
    let auth = auth_service().await;
    let backend = HttpBackend::start(|req: Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(hb::text(body))
    })
    .await;
    let auth_url = format!("http://{}/verify", auth.addr);
    let routes = route("app", "/app", &backend.url("/"), &auth_keys(&auth_url, ""));
    let proxy = Proxy::start(&yaml(&routes)).await;
    let mut req = with_body("POST", "/app/upload", hb::text("payload"));
    req.headers_mut()
        .insert("authorization", "Bearer good".parse().unwrap());
    let res = fetch(proxy.addr(), req).await;
    assert_eq!((res.status, res.text().as_str()), (200, "payload"));
    let sub = &auth.stats.seen()[0];
    assert_eq!(sub.method, "GET");
    assert_eq!(sub.one("x-forwarded-method").as_deref(), Some("POST"));
    assert!(sub.all("content-length").is_empty());
    assert!(sub.all("transfer-encoding").is_empty());
}

/// An auth service that refuses connections, or never answers, gives 503 within the
/// timeout, and the backend is never contacted.
#[tokio::test]
async fn an_unreachable_or_silent_auth_service_gives_503() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let silent = HttpBackend::start(|_req| async {
        std::future::pending::<()>().await;
        Response::new(hb::text(""))
    })
    .await;
    let backend = Backend::echo().await;
    let routes = format!(
        "{}{}",
        route(
            "down",
            "/down",
            &backend.url("/"),
            &format!("    forward_auth: {{ url: \"http://{closed}/\" }}\n"),
        ),
        route(
            "slow",
            "/slow",
            &backend.url("/"),
            &format!(
                "    forward_auth: {{ url: \"http://{}/\", timeout: 200ms }}\n",
                silent.addr
            ),
        )
    );
    let proxy = Proxy::start(&yaml(&routes)).await;
    for path in ["/down", "/slow"] {
        let started = tokio::time::Instant::now();
        let res = http::exchange(proxy.addr(), upgrade_request(proxy.addr(), path, &[])).await;
        assert_eq!(res.status(), 503, "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} within its timeout"
        );
    }
    assert_eq!(backend.log.accepted(), 0);
    assert_eq!(
        proxy.metric(r#"wsgate_auth_failures_total{reason="forward_unavailable"}"#),
        Some(2.0)
    );
    proxy.assert_drained().await;
}

/// Keys that cannot work are refused with their place in the file.
#[test]
fn bad_forward_auth_keys_are_refused_at_their_line() {
    let head = "listeners:\n  - bind: \"127.0.0.1:0\"\nroutes:\n  - name: a\n    path: /a\n    echo: true\n    forward_auth:\n";
    for (keys, want) in [
        ("      url: ftp://auth/\n", "http://"),
        (
            "      url: http://auth/\n      request_headers: [authorization, upgrade]\n",
            "never passed",
        ),
        (
            "      url: http://auth/\n      response_headers: [sec-websocket-accept]\n",
            "never passed",
        ),
        (
            "      url: http://auth/\n      method: DELETE\n",
            "GET, HEAD or POST",
        ),
        (
            "      url: http://auth/\n      cache: { ttl: 1s, key_cookie: \"a b\" }\n",
            "cookie name",
        ),
    ] {
        let text = format!("{head}{keys}");
        let err = wsgate::Config::parse(&text, "test.yaml")
            .err()
            .unwrap_or_else(|| panic!("accepted:\n{text}"))
            .to_string();
        assert!(
            err.starts_with("test.yaml:8:") || err.starts_with("test.yaml:9:"),
            "{err}"
        );
        assert!(err.contains(want), "{want}: {err}");
    }
}

/// The identity the auth service names is what `max_connections_per_identity` counts:
/// two WebSockets for alice get through, her third gets 429 before any backend contact,
/// and once one closes she has a place again; a client the service does not know is
/// refused by the service, not by her cap.
#[tokio::test]
async fn the_identity_from_the_auth_service_is_capped_across_connections() {
    let auth = auth_service().await;
    let backend = Backend::echo().await;
    let auth_url = format!("http://{}/verify", auth.addr);
    let keys = auth_keys(
        &auth_url,
        "    admission: { max_connections_per_identity: 2 }\n",
    );
    let proxy = Proxy::start(&yaml(&route("chat", "/chat", &backend.url("/ws"), &keys))).await;
    let good = [("Authorization", "Bearer good")];
    let (first, mut a) = raw::upgrade_with(proxy.addr(), "/chat", &good).await;
    let (second, _b) = raw::upgrade_with(proxy.addr(), "/chat", &good).await;
    assert_eq!((first.status(), second.status()), (101, 101));
    let (third, _) = raw::upgrade_with(proxy.addr(), "/chat", &good).await;
    assert_eq!(third.status(), 429, "{third:?}");
    assert!(third.header("retry-after").is_some(), "{third:?}");
    let refused = proxy
        .metric("wsgate_admission_refusals_total{route=\"chat\",reason=\"per_identity\"}")
        .unwrap_or(0.0);
    assert_eq!(refused, 1.0);
    let (stranger, _) = raw::upgrade_with(proxy.addr(), "/chat", &[]).await;
    assert_eq!(
        stranger.status(),
        401,
        "refused by the service, not the cap"
    );

    a.expect_close_after_sending(1000, "").await;
    let addr = proxy.addr();
    eventually_some("alice has a place again", || async move {
        let (head, client) = raw::upgrade_with(addr, "/chat", &good).await;
        (head.status() == 101).then_some(client)
    })
    .await;
}
