//! The keep-alive pool per backend, and plain requests on the route's balancing,
//! stickiness, seats, ejection, retries and timeouts.

use std::time::Duration;

use hyper::Response;
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use crate::support::http::{self, read_head};
use crate::support::http_backend::{self as hb, Gate, HttpBackend, fetch, get, with_body};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::{dead_addr, eventually, pools};

async fn hello() -> HttpBackend {
    HttpBackend::start(|_req| async { Response::new(hb::text("hello")) }).await
}

/// The route `app` on `/app` over `urls`, with `extra` keys.
fn pool_route(urls: &[String], extra: &[&str]) -> String {
    pools::pool_route("app", "/app", &pools::quoted(urls), extra)
}

/// Before the pool, nothing was forwarded at all (426): each request would have needed
/// its own backend connection.
#[tokio::test]
async fn sequential_requests_from_different_clients_share_one_backend_connection() {
    let backend = hello().await;
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/"), ""))).await;
    for _ in 0..5 {
        assert_eq!(fetch(proxy.addr(), get("/app")).await.status, 200);
    }
    assert_eq!(backend.stats.seen().len(), 5);
    assert_eq!(
        backend.stats.accepted(),
        1,
        "each request opened a connection"
    );
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_are_closed() {
    let gate = Gate::default();
    let g = gate.clone();
    let backend = HttpBackend::start(move |_req| {
        let g = g.clone();
        async move {
            g.pass().await;
            Response::new(hb::text("late"))
        }
    })
    .await;
    let proxy = Proxy::start(&yaml(&route(
        "app",
        "/app",
        &backend.url("/"),
        "    http_pool_idle_max: 2\n",
    )))
    .await;
    let addr = proxy.addr();
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { fetch(addr, get("/app")).await.status }))
        .collect();
    eventually("four requests at the backend", || {
        backend.stats.seen().len() == 4
    })
    .await;
    gate.open(4);
    for c in clients {
        assert_eq!(c.await.unwrap(), 200);
    }
    eventually("two idle connections closed", || {
        backend.stats.closed() == 2
    })
    .await;
    gate.open(2);
    for _ in 0..2 {
        fetch(addr, get("/app")).await;
    }
    assert_eq!(
        backend.stats.accepted(),
        4,
        "the two kept connections were reused"
    );
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_pool_idle_timeout() {
    let backend = hello().await;
    let proxy = Proxy::start(&yaml(&route(
        "app",
        "/app",
        &backend.url("/"),
        "    http_pool_idle_timeout: 100ms\n",
    )))
    .await;
    fetch(proxy.addr(), get("/app")).await;
    assert_eq!(backend.stats.closed(), 0);
    eventually("the idle connection closed", || backend.stats.closed() == 1).await;
    fetch(proxy.addr(), get("/app")).await;
    assert_eq!(backend.stats.accepted(), 2);
}

#[tokio::test]
async fn a_connection_that_announced_close_or_whose_response_was_cut_is_not_reused() {
    let backend = HttpBackend::start(|req: hyper::Request<Incoming>| async move {
        if req.uri().path() == "/close" {
            return Response::builder()
                .header("connection", "close")
                .body(hb::text("bye"))
                .unwrap();
        }
        let (tx, body) = hb::channel();
        tokio::spawn(async move {
            // Streams until the reader goes away (bounded by the test's patience).
            for _ in 0..10_000 {
                if tx.send(bytes::Bytes::from(vec![b'x'; 1024])).await.is_err() {
                    return;
                }
            }
        });
        Response::new(body)
    })
    .await;
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/"), ""))).await;
    assert_eq!(fetch(proxy.addr(), get("/app/close")).await.text(), "bye");
    fetch(proxy.addr(), get("/app/close")).await;
    assert_eq!(
        backend.stats.accepted(),
        2,
        "a connection that said close was reused"
    );

    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.write_all(b"GET /app/stream HTTP/1.1\r\nHost: wsgate.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_head(&mut tcp, &mut buf).await.unwrap().status(), 200);
    drop(tcp);
    eventually("the cut response's backend connection closed", || {
        backend.stats.closed() == 3
    })
    .await;
    assert_eq!(fetch(proxy.addr(), get("/app/close")).await.status, 200);
    assert_eq!(backend.stats.accepted(), 4);
    proxy.assert_drained().await;
}

/// A request in flight holds a seat on its backend, so least_connections sends the next
/// one elsewhere.
#[tokio::test]
async fn a_request_in_flight_counts_for_least_connections() {
    let gate = Gate::default();
    let slow = |gate: Gate| {
        move |_req| {
            let gate = gate.clone();
            async move {
                gate.pass().await;
                Response::new(hb::text("done"))
            }
        }
    };
    let a = HttpBackend::start(slow(gate.clone())).await;
    let b = HttpBackend::start(slow(gate.clone())).await;
    let routes = pool_route(&[a.url("/"), b.url("/")], &["balance: least_connections"]);
    let proxy = Proxy::start(&yaml(&routes)).await;
    let addr = proxy.addr();
    let first = tokio::spawn(async move { fetch(addr, get("/app")).await.status });
    eventually("the first request at a backend", || {
        a.stats.seen().len() + b.stats.seen().len() == 1
    })
    .await;
    let second = tokio::spawn(async move { fetch(addr, get("/app")).await.status });
    eventually("the second request at a backend", || {
        a.stats.seen().len() + b.stats.seen().len() == 2
    })
    .await;
    assert_eq!((a.stats.seen().len(), b.stats.seen().len()), (1, 1));
    gate.open(2);
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (200, 200));
}

/// `hash_on: query:sid`: Socket.IO's polling requests and its later upgrade land on one
/// backend.
#[tokio::test]
async fn hash_on_sid_keeps_polling_and_the_upgrade_on_one_backend() {
    let both = |req: hyper::Request<Incoming>| async move {
        hb::switch(&req).unwrap_or_else(|| Response::new(hb::text("poll")))
    };
    let nodes = [
        HttpBackend::start(both).await,
        HttpBackend::start(both).await,
        HttpBackend::start(both).await,
    ];
    let urls: Vec<String> = nodes.iter().map(|n| n.url("/")).collect();
    let proxy = Proxy::start(&yaml(&pool_route(
        &urls,
        &["balance: hash", "hash_on: query:sid"],
    )))
    .await;
    for sid in ["a1", "b2", "c3", "d4"] {
        let before: Vec<usize> = nodes.iter().map(|n| n.stats.seen().len()).collect();
        for _ in 0..3 {
            let path = format!("/app/socket.io/?EIO=4&transport=polling&sid={sid}");
            assert_eq!(fetch(proxy.addr(), get(&path)).await.status, 200);
        }
        let path = format!("/app/socket.io/?EIO=4&transport=websocket&sid={sid}");
        let head = http::exchange(
            proxy.addr(),
            http::upgrade_request(proxy.addr(), &path, &[]),
        )
        .await;
        assert_eq!(head.status(), 101);
        let grew: Vec<usize> = nodes
            .iter()
            .zip(&before)
            .map(|(n, b)| n.stats.seen().len() - b)
            .collect();
        assert!(
            grew.contains(&4) && grew.iter().sum::<usize>() == 4,
            "sid {sid}: {grew:?}"
        );
    }
}

#[tokio::test]
async fn a_failed_connect_is_retried_on_the_next_backend_with_the_body_intact() {
    let live = HttpBackend::start(|req: hyper::Request<Incoming>| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(hb::text(body))
    })
    .await;
    let dead = format!("ws://{}/", dead_addr().await);
    let routes = pool_route(&[dead.clone(), live.url("/")], &["max_fails: 0"]);
    let proxy = Proxy::start(&yaml(&routes)).await;
    for n in 0..4 {
        let body = format!("payload {n}");
        let res = fetch(
            proxy.addr(),
            with_body("POST", "/app", hb::text(body.clone())),
        )
        .await;
        assert_eq!((res.status, res.text()), (200, body));
    }
    assert!(proxy.connect_errors("app", &dead) >= 1.0);
}

#[tokio::test]
async fn an_unreachable_backend_is_502_and_its_failures_eject_it() {
    let dead = format!("ws://{}/", dead_addr().await);
    let routes = pool_route(
        std::slice::from_ref(&dead),
        &["max_fails: 2", "fail_timeout: 1h"],
    );
    let proxy = Proxy::start(&yaml(&routes)).await;
    for _ in 0..2 {
        assert_eq!(fetch(proxy.addr(), get("/app")).await.status, 502);
    }
    assert_eq!(proxy.healthy("app", &dead), Some(0.0), "two failures eject");
    assert_eq!(proxy.connect_errors("app", &dead), 2.0);
}

/// A backend that reads a request and closes without answering: a POST may have been
/// taken (502, no second backend); a GET is tried again on the next one.
#[tokio::test]
async fn only_idempotent_bodyless_requests_are_retried_after_they_may_have_been_sent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rude = listener.local_addr().unwrap();
    let _rude = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let _ = read_head(&mut tcp, &mut buf).await;
        }
    });
    let live = hello().await;
    // Round robin from a random start: both orders come up within a few requests.
    let routes = pool_route(&[format!("ws://{rude}/"), live.url("/")], &["max_fails: 0"]);
    let proxy = Proxy::start(&yaml(&routes)).await;
    let mut post_statuses = Vec::new();
    for _ in 0..6 {
        let res = fetch(proxy.addr(), with_body("POST", "/app", hb::text("once"))).await;
        post_statuses.push(res.status);
    }
    for _ in 0..6 {
        assert_eq!(
            fetch(proxy.addr(), get("/app")).await.status,
            200,
            "a GET was not retried"
        );
    }
    assert!(post_statuses.contains(&502), "{post_statuses:?}");
    let posts_at_live = live
        .stats
        .seen()
        .iter()
        .filter(|s| s.method == "POST")
        .count();
    assert_eq!(
        posts_at_live,
        post_statuses.iter().filter(|s| **s == 200).count()
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_response_head_is_504() {
    let backend = HttpBackend::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Response::new(hb::text("never"))
    })
    .await;
    let proxy = Proxy::builder(&yaml(&route(
        "app",
        "/app",
        &backend.url("/"),
        "    http_response_timeout: 2s\n",
    )))
    .paused()
    .start()
    .await;
    let res = hb::fetch_for(proxy.addr(), get("/app"), Duration::from_secs(30)).await;
    assert_eq!(res.status, 504);
}

#[tokio::test(start_paused = true)]
async fn a_response_body_idle_past_http_idle_timeout_is_cut() {
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    let backend = HttpBackend::start(move |_req| {
        let h = h.clone();
        async move {
            let (tx, body) = hb::channel();
            tx.send(bytes::Bytes::from_static(b"first")).await.unwrap();
            h.lock().unwrap().push(tx);
            Response::new(body)
        }
    })
    .await;
    let proxy = Proxy::builder(&yaml(&route(
        "app",
        "/app",
        &backend.url("/"),
        "    http_idle_timeout: 2s\n",
    )))
    .paused()
    .start()
    .await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.write_all(b"GET /app HTTP/1.1\r\nHost: wsgate.test\r\n\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncReadExt;
        tcp.read_to_end(&mut rest).await
    })
    .await;
    assert!(read.is_ok(), "the stalled response was not cut");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("first"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a cut body must not look complete: {text}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn a_response_head_over_max_header_bytes_is_502() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let _ = read_head(&mut tcp, &mut buf).await;
            let big = format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
                "a".repeat(20_000)
            );
            let _ = tcp.write_all(big.as_bytes()).await;
        }
    });
    let config = yaml(&route("app", "/app", &format!("ws://{addr}/"), "")).replace(
        "routes:\n",
        "limits: { max_header_bytes: 16KiB }\nroutes:\n",
    );
    let proxy = Proxy::start(&config).await;
    assert_eq!(fetch(proxy.addr(), get("/app")).await.status, 502);
}

/// Shutdown lets a plain request in flight finish (within the HTTP grace).
#[tokio::test]
async fn a_request_in_flight_at_shutdown_is_answered() {
    let (_backend, _proxy, client) = hb::request_in_flight_at_shutdown().await;
    let res = client.await.unwrap();
    assert_eq!((res.status, res.text().as_str()), (200, "finished"));
}

#[tokio::test]
async fn a_reload_drops_the_http_series_of_a_removed_route() {
    let backend = hello().await;
    let before = yaml(&format!(
        "{}{}",
        route("keep", "/keep", &backend.url("/"), ""),
        route("gone", "/gone", &backend.url("/"), "")
    ))
    .replace("routes:", "reload: { drain_window: 0s }\nroutes:");
    let after = yaml(&route("keep", "/keep", &backend.url("/"), ""))
        .replace("routes:", "reload: { drain_window: 0s }\nroutes:");
    let proxy = Proxy::start(&before).await;
    fetch(proxy.addr(), get("/keep")).await;
    fetch(proxy.addr(), get("/gone")).await;
    let series = |route: &str| {
        proxy
            .metric(&format!(
                r#"wsgate_http_requests_total{{route="{route}",code="2xx"}}"#
            ))
            .is_some()
            || proxy
                .metric(&format!(
                    r#"wsgate_http_request_duration_seconds_count{{route="{route}"}}"#
                ))
                .is_some()
    };
    assert!(series("gone") && series("keep"));
    proxy.reload_ok(&after).await;
    eventually("the removed route's HTTP series are gone", || {
        !series("gone")
    })
    .await;
    assert!(series("keep"));
}

/// A request still in flight when the HTTP grace after shutdown is over is cut.
#[tokio::test(start_paused = true)]
async fn a_request_still_in_flight_after_the_shutdown_grace_is_cut() {
    let backend = HttpBackend::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Response::new(hb::text("never"))
    })
    .await;
    let proxy = Proxy::builder(&yaml(&route("app", "/app", &backend.url("/"), "")))
        .paused()
        .start()
        .await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.write_all(b"GET /app HTTP/1.1\r\nHost: wsgate.test\r\n\r\n")
        .await
        .unwrap();
    eventually("the request at the backend", || {
        backend.stats.seen().len() == 1
    })
    .await;
    let started = tokio::time::Instant::now();
    proxy.cancel();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        use tokio::io::AsyncReadExt;
        tcp.read_to_end(&mut rest).await
    })
    .await;
    assert!(read.is_ok(), "the request outlived the shutdown grace");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "cut before the grace"
    );
    eventually("the backend connection closed", || {
        backend.stats.closed() == 1
    })
    .await;
}

/// A backend that closes each connection after its answer (without saying so): the pooled
/// connection it closed is not used again, so even a POST (never retried once it may have
/// been sent) reaches a backend.
#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_not_used_for_the_next_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let c = closed.clone();
    let _task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = Vec::new();
            if read_head(&mut tcp, &mut buf).await.is_some() {
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
            drop(tcp);
            c.fetch_add(1, Ordering::SeqCst);
        }
    });
    let proxy = Proxy::start(&yaml(&route("app", "/app", &format!("ws://{addr}/"), ""))).await;
    for n in 1..=3 {
        let res = fetch(proxy.addr(), with_body("POST", "/app", hb::text("x"))).await;
        assert_eq!(res.status, 200, "request {n}");
        eventually("the backend closed its side", || {
            closed.load(Ordering::SeqCst) == n
        })
        .await;
    }
}

/// A backend that stops reading the request body is given up on after
/// `http_idle_timeout` (504); a client that stops sending it gets 408. Neither waits for
/// the response-head deadline.
#[tokio::test(start_paused = true)]
async fn a_stalled_upload_is_cut_after_the_idle_timeout_on_either_side() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let deaf = listener.local_addr().unwrap();
    let _deaf = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let _ = read_head(&mut tcp, &mut buf).await;
            held.push(tcp);
        }
    });
    let patient = HttpBackend::start(|req: hyper::Request<Incoming>| async move {
        use http_body_util::BodyExt;
        let _ = req.into_body().collect().await;
        Response::new(hb::text("read"))
    })
    .await;
    let extra = "    http_idle_timeout: 2s\n    http_response_timeout: 1h\n";
    let routes = format!(
        "{}{}",
        route("deaf", "/deaf", &format!("ws://{deaf}/"), extra),
        route("patient", "/patient", &patient.url("/"), extra)
    );
    let proxy = Proxy::builder(&yaml(&routes)).paused().start().await;

    // 64 MiB: far more than the socket buffers between wsgate and a backend that reads nothing.
    let size = 64usize << 20;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let head =
        format!("POST /deaf HTTP/1.1\r\nHost: wsgate.test\r\nContent-Length: {size}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let _writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(60), read_head(&mut rd, &mut buf)).await;
    assert_eq!(answer.expect("an answer").expect("a head").status(), 504);

    let mut tcp = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.write_all(b"POST /patient HTTP/1.1\r\nHost: wsgate.test\r\nContent-Length: 10\r\n\r\nhalf")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let answer = tokio::time::timeout(Duration::from_secs(60), read_head(&mut tcp, &mut buf)).await;
    assert_eq!(answer.expect("an answer").expect("a head").status(), 408);
}

/// A backend whose TLS handshake never completes is given up on after
/// `http_connect_timeout`: the next backend gets the request, body intact; alone it is 504.
#[tokio::test(start_paused = true)]
async fn a_connect_past_http_connect_timeout_moves_on_then_is_504() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = format!("wss://localhost:{}/", listener.local_addr().unwrap().port());
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let live = HttpBackend::start(|req: hyper::Request<Incoming>| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        Response::new(hb::text(body))
    })
    .await;
    let extra = ["http_connect_timeout: 2s", "max_fails: 0"];
    let routes = format!(
        "{}{}",
        pool_route(&[silent.clone(), live.url("/")], &extra),
        pools::pool_route(
            "alone",
            "/alone",
            &pools::quoted(std::slice::from_ref(&silent)),
            &extra
        )
    );
    let proxy = Proxy::builder(&yaml(&routes)).paused().start().await;
    for n in 0..3 {
        let body = format!("kept {n}");
        let req = with_body("POST", "/app", hb::text(body.clone()));
        let res = hb::fetch_for(proxy.addr(), req, Duration::from_secs(60)).await;
        assert_eq!((res.status, res.text()), (200, body));
    }
    let res = hb::fetch_for(proxy.addr(), get("/alone"), Duration::from_secs(60)).await;
    assert_eq!(res.status, 504);
}
