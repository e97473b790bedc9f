//! The HTTP/1.1 client hop's guard beneath hyper: request heads inspected as they pass
//! (the smuggling shapes hyper normalises away are refused with 400 and the connection
//! closed, nothing sent to a backend), framing followed exactly under pipelining and in
//! chunked bodies, and a client that stops reading cut after `http_idle_timeout`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Response;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::child::Child;
use crate::support::http::{self, Head, read_head};
use crate::support::http_backend::{self as hb, HttpBackend};
use crate::support::proxy::{Proxy, route, yaml};
use crate::support::{dead_addr, eventually, within};

/// A backend answering each request with its body, and the trailers it got as `x-trailers`.
async fn echo() -> HttpBackend {
    HttpBackend::start(|req: hyper::Request<Incoming>| async move {
        let Ok(body) = req.into_body().collect().await else {
            return Response::new(hb::text("body failed"));
        };
        let trailers = body
            .trailers()
            .map(|t| format!("{t:?}"))
            .unwrap_or_default();
        let mut res = Response::new(hb::text(body.to_bytes()));
        if let Ok(v) = trailers.parse() {
            res.headers_mut().insert("x-trailers", v);
        }
        res
    })
    .await
}

async fn setup() -> (Proxy, HttpBackend) {
    let backend = echo().await;
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/"), ""))).await;
    (proxy, backend)
}

/// Writes `bytes` at once and reads every answer until the proxy closes (bounded).
async fn answers(proxy: &Proxy, bytes: &[u8]) -> Vec<Head> {
    let mut tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    read_answers(&mut tcp).await
}

/// Every answer on `tcp` until it closes (each with a Content-Length body).
async fn read_answers(tcp: &mut TcpStream) -> Vec<Head> {
    within("the answers and the close", async {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for _ in 0..8 {
            let Some(mut head) = read_head(tcp, &mut buf).await else {
                return out;
            };
            let len: usize = head
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            while buf.len() < len {
                let mut chunk = [0u8; 4096];
                match tcp.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let rest = buf.split_off(len.min(buf.len()));
            head.body = std::mem::replace(&mut buf, rest);
            out.push(head);
        }
        out
    })
    .await
}

/// hyper alone reads these as one chunked request (the length dropped) and forwards it;
/// the guard refuses both orders before any backend.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_closed_in_either_order() {
    let (proxy, backend) = setup().await;
    for head in [
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 30\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n",
    ] {
        let req = format!("{head}0\r\n\r\nGET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
        let got = answers(&proxy, req.as_bytes()).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].status(), 400);
        assert_eq!(got[0].header("connection"), Some("close"));
        assert!(got[0].body_text().contains("Transfer-Encoding"), "{got:?}");
    }
    assert_eq!(backend.stats.accepted(), 0, "a backend was contacted");
}

/// hyper alone reads bare LF as a line end, and equal duplicate lengths and
/// codings before `chunked` as valid, and forwards each; the guard refuses them.
#[tokio::test]
async fn bare_lf_and_the_other_shapes_hyper_accepts_are_400() {
    let (proxy, backend) = setup().await;
    for head in [
        "GET /app HTTP/1.1\nHost: a\r\n\r\n",
        "GET /app HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n",
        "GET /app HTTP/1.1\r\nHost: a\r\nX-A: 1\n\r\n",
        "GET /app HTTP/1.1\nHost: a\nX-A: 1\n\n",
        "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let got = answers(&proxy, head.as_bytes()).await;
        assert_eq!(got.len(), 1, "{head:?}: {got:?}");
        assert_eq!(got[0].status(), 400, "{head:?}");
        assert_eq!(got[0].header("connection"), Some("close"), "{head:?}");
    }
    assert_eq!(backend.stats.accepted(), 0, "a backend was contacted");
    let refused = proxy.metric("wsgate_http_requests_total{route=\"\",code=\"4xx\"}");
    assert_eq!(refused, Some(7.0), "{}", proxy.metrics_text());
}

/// Bare LF (and CR) inside a body is data: forwarded intact, the connection kept.
#[tokio::test]
async fn bare_lf_inside_a_body_is_forwarded() {
    let (proxy, backend) = setup().await;
    let req = "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\na\nb\rc\n\n\
               POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nd\ne\r\n0\r\n\r\n\
               GET /app HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let got = answers(&proxy, req.as_bytes()).await;
    let bodies: Vec<_> = got.iter().map(|h| (h.status(), h.body_text())).collect();
    assert_eq!(
        bodies,
        [
            (200, "a\nb\rc\n\n".to_string()),
            (200, "d\ne".to_string()),
            (200, String::new())
        ]
    );
    assert_eq!(backend.stats.seen().len(), 3);
}

/// The scan carries its state across reads: the same CL+TE head, one byte per write.
#[tokio::test]
async fn a_head_dribbled_one_byte_per_write_is_still_inspected() {
    let (proxy, backend) = setup().await;
    let req = "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";
    let mut tcp = TcpStream::connect(proxy.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let head_end = req.find("\r\n\r\n").map(|i| i + 4).unwrap_or(req.len());
    for (i, b) in req.as_bytes().iter().enumerate() {
        // Once the head is whole the 400 may close the connection before the body's last
        // bytes are written: a write failing then is the refusal, not the test's fault.
        let wrote = tcp.write_all(std::slice::from_ref(b)).await;
        if i >= head_end && wrote.is_err() {
            break;
        }
        wrote.unwrap();
        tcp.flush().await.unwrap();
        // Lets the proxy read each byte on its own (no wait for anything).
        tokio::task::yield_now().await;
    }
    let got = read_answers(&mut tcp).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].status(), 400);
    assert_eq!(backend.stats.accepted(), 0);
}

/// Verdicts follow the heads in order: the first request is answered, the second refused.
#[tokio::test]
async fn pipelined_good_then_bad_answers_the_first_then_400_and_close() {
    let (proxy, backend) = setup().await;
    let req = "POST /app/one HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
               POST /app/two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
               GET /app/three HTTP/1.1\r\nHost: a\r\n\r\n";
    let got = answers(&proxy, req.as_bytes()).await;
    let statuses: Vec<_> = got.iter().map(Head::status).collect();
    assert_eq!(statuses, [200, 400], "{got:?}");
    assert_eq!(got[0].body_text(), "abc");
    assert_eq!(got[1].header("connection"), Some("close"));
    let seen: Vec<_> = backend
        .stats
        .seen()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(seen, ["/one"]);
}

/// A chunked body whose bytes look like a CL+TE head is body: forwarded intact, and the
/// request after it is served.
#[tokio::test]
async fn a_chunked_body_holding_a_fake_head_is_forwarded_intact() {
    let (proxy, backend) = setup().await;
    let fake = "POST /app/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    let req = format!(
        "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{fake}\r\n0\r\n\r\n\
         GET /app/next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        fake.len()
    );
    let got = answers(&proxy, req.as_bytes()).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[0].status(), got[0].body_text()),
        (200, fake.to_string())
    );
    assert_eq!(got[1].status(), 200);
    let seen: Vec<_> = backend
        .stats
        .seen()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(seen, ["/", "/next"]);
}

/// A chunked body with extensions and trailers is forwarded, and the framing is followed
/// past its trailers to the next request.
#[tokio::test]
async fn a_chunked_body_with_trailers_is_forwarded() {
    let (proxy, backend) = setup().await;
    let req = "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
               5;name=\"a b\"\r\nhello\r\n1\r\n!\r\n0\r\nX-Sum: 6\r\n\r\n\
               GET /app/next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let got = answers(&proxy, req.as_bytes()).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[0].status(), got[0].body_text()),
        (200, "hello!".to_string())
    );
    assert_eq!(got[1].status(), 200);
    assert_eq!(backend.stats.seen().len(), 2);
}

/// A chunk-syntax error (a bare LF after a chunk size) mid-body ends the connection; the
/// backend never gets a complete request.
#[tokio::test]
async fn a_broken_chunk_line_ends_the_connection() {
    let (proxy, backend) = setup().await;
    let req = "POST /app HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
               3;x=1\nabc\r\n0\r\n\r\nGET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let got = answers(&proxy, req.as_bytes()).await;
    assert!(got.iter().all(|h| h.status() != 200), "{got:?}");
    assert!(
        backend.stats.seen().iter().all(|s| s.target != "/smuggled"),
        "the smuggled request was forwarded"
    );
}

/// The guard stops inspecting at an upgrade head (what follows may be frames), so a
/// refused upgrade must end the connection. hyper closes after refusing an HTTP/1.1
/// upgrade itself; an HTTP/1.0 one with `keep-alive` it would keep open, so every non-101
/// answer to an upgrade head carries `Connection: close` and the CL+TE request behind it
/// never reaches a backend.
#[tokio::test]
async fn a_refused_upgrade_followed_by_a_smuggled_request_gets_nothing_through() {
    let backend = echo().await;
    let extra = "    origins: [\"https://good.example\"]\n";
    let proxy = Proxy::start(&yaml(&route("app", "/app", &backend.url("/"), extra))).await;
    let smuggled = "POST /app HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
                    GET /app/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let refused_origin =
        http::upgrade_request(proxy.addr(), "/app", &[("Origin", "https://evil.example")]);
    let http10 =
        "GET /app HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n\r\n";
    for (upgrade, status) in [(refused_origin.as_str(), 403), (http10, 400)] {
        let got = answers(&proxy, format!("{upgrade}{smuggled}").as_bytes()).await;
        assert_eq!(got.len(), 1, "{upgrade:?}: {got:?}");
        assert_eq!(got[0].status(), status, "{upgrade:?}");
        // (hyper appends `keep-alive` to an HTTP/1.0 answer's `close`, and closes.)
        let connection = got[0].header("connection").unwrap_or("");
        assert!(connection.starts_with("close"), "{upgrade:?}: {connection}");
    }
    assert_eq!(backend.stats.accepted(), 0, "a backend was contacted");
}

/// A config file for the binary: one route to `backend` (plus `extra` route lines), JSON
/// logs, `defaults` given.
fn child_config(dir: &tempfile::TempDir, backends: &str, defaults: &str) -> std::path::PathBuf {
    let path = dir.path().join("wsgate.yaml");
    let config = format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\ndefaults: {{ {defaults} }}\nroutes:\n  - name: app\n    path: /app\n    backends: [{backends}]\nlog: {{ format: json, level: info }}\nreload: {{ watch: false }}\n"
    );
    std::fs::write(&path, config).unwrap();
    path
}

/// The access-log lines of `gate`, parsed.
fn access_lines(gate: &Child) -> Vec<serde_json::Value> {
    gate.log()
        .iter()
        .filter(|l| l.contains("http request"))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn field(v: &serde_json::Value, k: &str) -> Option<serde_json::Value> {
    v.get(k).or_else(|| v["fields"].get(k)).cloned()
}

/// A client that stops reading is not held by TCP backpressure alone: the write deadline cuts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_after_http_idle_timeout() {
    const CHUNK: usize = 64 * 1024;
    let backend = HttpBackend::start(|_req| async move {
        let (tx, body) = hb::channel();
        tokio::spawn(async move {
            // 64 MiB, until the proxy stops taking it.
            for _ in 0..1024 {
                if tx.send(Bytes::from(vec![b'x'; CHUNK])).await.is_err() {
                    return;
                }
            }
        });
        Response::new(body)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let backends = format!("\"{}\"", backend.url("/"));
    let gate = Child::start(&child_config(&dir, &backends, "http_idle_timeout: 1s")).await;
    let mut tcp = TcpStream::connect(gate.addr).await.unwrap();
    tcp.write_all(b"GET /app/big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // Never read: the proxy's writes block once the socket buffers are full.
    let started = tokio::time::Instant::now();
    eventually("the access log says the client stalled", || {
        access_lines(&gate)
            .iter()
            .any(|l| field(l, "outcome").is_some_and(|o| o == "client_stalled"))
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "cut before the deadline"
    );
    eventually("the backend's request ended", || {
        backend.stats.closed() == 1
    })
    .await;
    let line = access_lines(&gate).pop().unwrap();
    assert_eq!(field(&line, "status").unwrap(), 200);
    assert!(field(&line, "bytes_out").unwrap().as_u64().unwrap() < 64 << 20);
    drop(tcp);
}

/// The line names the last backend tried even when every backend failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_every_backend_failed_logs_the_last_backend_tried() {
    let (a, b) = (dead_addr().await, dead_addr().await);
    let dir = tempfile::tempdir().unwrap();
    let backends = format!("\"ws://{a}/\", \"ws://{b}/\"");
    let gate = Child::start(&child_config(&dir, &backends, "http_connect_timeout: 1s")).await;
    let res = hb::fetch(gate.addr, hb::get("/app/x")).await;
    assert_eq!(res.status, 502);
    eventually("one access-log line", || access_lines(&gate).len() == 1).await;
    let line = &access_lines(&gate)[0];
    let tried: Vec<String> = gate
        .log()
        .iter()
        .filter(|l| l.contains("backend attempt failed"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|l| field(&l, "backend").and_then(|b| b.as_str().map(String::from)))
        .collect();
    let last = tried.last().expect("an attempt was logged");
    assert_eq!(field(line, "backend").unwrap(), last.as_str(), "{line}");
    assert!(last.contains(&a.to_string()) || last.contains(&b.to_string()));
}
