//! Plain requests over HTTP/2 forwarded to the HTTP/1.1 backend hop: what h2 allows but
//! HTTP/1.1 cannot carry as it is (split cookies, `te: trailers`, bodies without a
//! length) is translated, and what RFC 9113 §8 calls malformed (connection-specific
//! fields, a Content-Length that disagrees with the DATA, CR/LF/NUL in a value, an
//! uppercase name) never reaches the backend.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::support::ca::TestCa;
use crate::support::h2client::{h2_client, tls_yaml};
use crate::support::h2raw::{
    END_HEADERS, END_STREAM, GOAWAY, HEADERS, PROTOCOL_ERROR, RawH2, frame, literal,
};
use crate::support::http_backend::{self as hb, HttpBackend};
use crate::support::proxy::{Proxy, route};
use crate::support::{eventually, within};

/// DATA frame type (RFC 9113 §6.1).
const DATA: u8 = 0x0;
/// HPACK static table index 8 as an indexed field: `:status: 200`.
const STATUS_200: u8 = 0x88;

/// What a backend handler made of each request body: its length, or the error reading it.
type Bodies = Arc<Mutex<Vec<(String, Result<usize, String>)>>>;

/// A backend that reads every request body whole, records it, and answers 200 "ok".
async fn reading_backend() -> (HttpBackend, Bodies) {
    let bodies: Bodies = Arc::default();
    let seen = bodies.clone();
    let backend = HttpBackend::start(move |req: Request<Incoming>| {
        let seen = seen.clone();
        async move {
            let path = req.uri().path().to_string();
            let read = req.into_body().collect().await;
            let read = read.map(|b| b.to_bytes().len()).map_err(|e| e.to_string());
            seen.lock().unwrap().push((path, read));
            Response::new(hb::text("ok"))
        }
    })
    .await;
    (backend, bodies)
}

async fn proxy_to(ca: &TestCa, backend: &HttpBackend) -> Proxy {
    Proxy::start(&tls_yaml(
        ca,
        "",
        "",
        &route("app", "/app", &backend.url(""), ""),
    ))
    .await
}

/// The header block of a request `method path` to `localhost`, then `extra` fields.
fn block(method: &str, path: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(literal(":method", method.as_bytes()));
    b.push(0x87); // :scheme https (static table 7)
    b.extend(literal(":path", path.as_bytes()));
    b.extend(literal(":authority", b"localhost"));
    for (name, value) in extra {
        b.extend(literal(name, value));
    }
    b
}

/// A client GOAWAY (no stream processed, NO_ERROR): the server then ends the connection
/// once its streams are done, which is when [`RawH2::seen`] returns.
fn goaway() -> Vec<u8> {
    frame(GOAWAY, 0, 0, &[0; 8])
}

/// Sends `bad` on stream 1, then a good GET of `/app/good` on stream 3, and returns what
/// the server did; the good request must have reached the backend first.
async fn bad_then_good(proxy: &Proxy, ca: &TestCa, bodies: &Bodies, bad: &[Vec<u8>]) -> RawH2 {
    let mut raw = RawH2::connect(proxy.addr(), ca).await;
    for f in bad {
        assert!(raw.send(f).await, "server still there");
    }
    let good = block("GET", "/app/good", &[]);
    assert!(
        raw.send(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &good))
            .await
    );
    eventually("the good request reaches the backend", || {
        bodies.lock().unwrap().iter().any(|(p, _)| p == "/app/good")
    })
    .await;
    raw
}

#[tokio::test]
async fn connection_specific_fields_are_a_stream_error_and_reach_no_backend() {
    let ca = TestCa::new();
    let (backend, bodies) = reading_backend().await;
    let proxy = proxy_to(&ca, &backend).await;
    let fields: [(&str, &[u8]); 6] = [
        ("transfer-encoding", b"chunked"),
        ("connection", b"keep-alive"),
        ("keep-alive", b"timeout=5"),
        ("proxy-connection", b"keep-alive"),
        ("upgrade", b"h2c"),
        ("te", b"gzip"),
    ];
    for (name, value) in fields {
        let bad = block("POST", "/app/bad", &[(name, value)]);
        let frames = [
            frame(HEADERS, END_HEADERS, 1, &bad),
            frame(DATA, END_STREAM, 1, b"5\r\nhello\r\n0\r\n\r\n"),
        ];
        let mut raw = bad_then_good(&proxy, &ca, &bodies, &frames).await;
        assert!(raw.send(&goaway()).await);
        let seen = raw.seen().await;
        assert!(
            seen.resets.contains(&(1, PROTOCOL_ERROR)),
            "{name}: {seen:?}"
        );
        assert!(
            seen.headers.iter().all(|(s, _)| *s != 1),
            "{name}: {seen:?}"
        );
        assert!(
            seen.headers
                .iter()
                .any(|(s, b)| *s == 3 && b[0] == STATUS_200),
            "{name}: the other stream is answered: {seen:?}"
        );
        // The server's GOAWAY answers ours (NO_ERROR): a stream error only.
        assert!(matches!(seen.goaway, None | Some(0)), "{name}: {seen:?}");
    }
    let seen = backend.stats.seen();
    assert!(seen.iter().all(|s| s.target == "/app/good"), "{seen:?}");
    assert_eq!(seen.len(), fields.len());
    proxy.assert_drained().await;
}

#[tokio::test]
async fn a_content_length_that_disagrees_with_the_data_is_a_stream_error() {
    let ca = TestCa::new();
    let (backend, bodies) = reading_backend().await;
    let proxy = proxy_to(&ca, &backend).await;
    // Declared 10, 5 sent: too short. Declared 5, 10 sent: too long.
    for (declared, sent) in [(&b"10"[..], &b"hello"[..]), (b"5", b"hellohello")] {
        let bad = block("POST", "/app/bad", &[("content-length", declared)]);
        let frames = [
            frame(HEADERS, END_HEADERS, 1, &bad),
            frame(DATA, END_STREAM, 1, sent),
        ];
        let mut raw = bad_then_good(&proxy, &ca, &bodies, &frames).await;
        assert!(raw.send(&goaway()).await);
        let seen = raw.seen().await;
        let what = String::from_utf8_lossy(declared);
        assert!(
            seen.resets.contains(&(1, PROTOCOL_ERROR)),
            "content-length {what}: {seen:?}"
        );
        assert!(
            seen.headers
                .iter()
                .any(|(s, b)| *s == 3 && b[0] == STATUS_200),
            "{seen:?}"
        );
        assert!(
            matches!(seen.goaway, None | Some(0)),
            "a stream error only: {seen:?}"
        );
    }
    // The backend may have got the head (wsgate streams), never a whole body: its
    // connection was cut where the body would have ended.
    let done = bodies.lock().unwrap().clone();
    assert!(
        done.iter().all(|(p, r)| p == "/app/good" || r.is_err()),
        "{done:?}"
    );
    proxy.assert_drained().await;
}

#[tokio::test]
async fn cr_lf_nul_in_a_value_or_an_uppercase_name_end_that_connection_only() {
    let ca = TestCa::new();
    let (backend, bodies) = reading_backend().await;
    let proxy = proxy_to(&ca, &backend).await;
    // A connection opened before, with a request in flight on it, is untouched.
    let mut other = h2_client(proxy.addr(), &ca).await;
    let fields: [(&str, &[u8]); 5] = [
        ("x-a", b"1\r\nx-injected: 1"),
        ("x-a", b"1\rx"),
        ("x-a", b"1\nx"),
        ("x-a", b"1\0x"),
        ("X-Upper", b"1"),
    ];
    for (name, value) in fields {
        let mut raw = RawH2::connect(proxy.addr(), &ca).await;
        let bad = block("GET", "/app/bad", &[(name, value)]);
        raw.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &bad))
            .await;
        let seen = raw.seen().await;
        // h2 fails the header block's decoding (HPACK state is the connection's): a
        // connection error, where RFC 9113 §8.2.1 would allow a stream error.
        assert_eq!(
            seen.goaway,
            Some(PROTOCOL_ERROR),
            "{name:?}={value:?}: {seen:?}"
        );
        assert!(seen.headers.is_empty(), "{seen:?}");

        let req = Request::get(format!(
            "https://localhost:{}/app/good",
            proxy.addr().port()
        ))
        .body(())
        .unwrap();
        let client = within("ready", other.clone().ready()).await.expect("ready");
        other = client;
        let (res, _) = other.send_request(req, true).expect("send");
        let res = within("response", res).await.expect("answered");
        assert_eq!(res.status(), 200);
    }
    let seen = backend.stats.seen();
    assert!(seen.iter().all(|s| s.target == "/app/good"), "{seen:?}");
    assert_eq!(bodies.lock().unwrap().len(), fields.len());
    drop(other);
    proxy.assert_drained().await;
}

/// Sends `req` (with `body` chunks, if any) on a new h2 stream and reads the answer whole.
async fn exchange(
    client: &h2::client::SendRequest<Bytes>,
    req: Request<()>,
    body: &[&'static [u8]],
) -> (hyper::http::response::Parts, bool, Bytes) {
    let mut client = within("ready", client.clone().ready())
        .await
        .expect("ready");
    let (res, mut send) = client.send_request(req, body.is_empty()).expect("send");
    for (i, chunk) in body.iter().enumerate() {
        send.send_data(Bytes::from_static(chunk), i + 1 == body.len())
            .expect("send data");
    }
    let res = within("response", res).await.expect("answered");
    let (parts, mut recv) = res.into_parts();
    let empty = recv.is_end_stream();
    let mut got = Vec::new();
    for _ in 0..100_000 {
        let Some(data) = within("DATA", recv.data()).await else {
            break;
        };
        let data = data.expect("no stream error");
        let _ = recv.flow_control().release_capacity(data.len());
        got.extend_from_slice(&data);
    }
    (parts, empty, Bytes::from(got))
}

fn get(proxy: &Proxy, path: &str) -> hyper::http::request::Builder {
    Request::get(format!("https://localhost:{}{path}", proxy.addr().port()))
}

#[tokio::test]
async fn te_trailers_passes_and_split_cookies_are_joined_for_the_http11_hop() {
    let ca = TestCa::new();
    let (backend, _) = reading_backend().await;
    let proxy = proxy_to(&ca, &backend).await;
    let client = h2_client(proxy.addr(), &ca).await;
    let req = get(&proxy, "/app/c")
        .header("te", "trailers")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("cookie", "c=3")
        .body(())
        .unwrap();
    let (res, _, body) = exchange(&client, req, &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(&body[..], b"ok");
    let seen = backend.stats.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].all("cookie"), ["a=1; b=2; c=3"]);
    // TE is hop-by-hop: not sent on (the HTTP/1.1 hop would need `Connection: te`).
    assert_eq!(seen[0].all("te"), Vec::<String>::new());
    proxy.assert_drained().await;
}

#[tokio::test]
async fn request_bodies_arrive_chunked_or_length_framed_and_a_large_response_streams_back() {
    let ca = TestCa::new();
    const LARGE: usize = 4 << 20;
    let (backend, bodies) = {
        let bodies: Bodies = Arc::default();
        let seen = bodies.clone();
        let backend = HttpBackend::start(move |req: Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let path = req.uri().path().to_string();
                if path == "/app/large" {
                    let body: Vec<u8> = (0..LARGE).map(|i| (i % 251) as u8).collect();
                    return Response::new(hb::text(body));
                }
                let read = req.into_body().collect().await;
                let read = read.map(|b| b.to_bytes().len()).map_err(|e| e.to_string());
                seen.lock().unwrap().push((path, read));
                Response::new(hb::text("ok"))
            }
        })
        .await;
        (backend, bodies)
    };
    let proxy = proxy_to(&ca, &backend).await;
    let client = h2_client(proxy.addr(), &ca).await;

    let chunked = Request::post(format!(
        "https://localhost:{}/app/chunked",
        proxy.addr().port()
    ))
    .body(())
    .unwrap();
    let (res, _, _) = exchange(&client, chunked, &[b"hello ", b"h2 ", b"world"]).await;
    assert_eq!(res.status, 200);
    let sized = Request::post(format!(
        "https://localhost:{}/app/sized",
        proxy.addr().port()
    ))
    .header("content-length", "8")
    .body(())
    .unwrap();
    let (res, _, _) = exchange(&client, sized, &[b"abcd", b"efgh"]).await;
    assert_eq!(res.status, 200);
    let seen = backend.stats.seen();
    assert_eq!(seen[0].all("transfer-encoding"), ["chunked"], "{seen:?}");
    assert_eq!(seen[0].one("content-length"), None);
    assert_eq!(seen[1].one("content-length").as_deref(), Some("8"));
    assert_eq!(seen[1].one("transfer-encoding"), None);
    let done = bodies.lock().unwrap().clone();
    assert_eq!(
        done,
        [
            ("/app/chunked".into(), Ok(14)),
            ("/app/sized".into(), Ok(8))
        ]
    );

    // 4 MiB through the h2 client's 64 KiB default windows: wsgate sends only what
    // they allow, and the whole body arrives in order.
    let (res, _, body) = exchange(&client, get(&proxy, "/app/large").body(()).unwrap(), &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(body.len(), LARGE);
    assert!(body.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    proxy.assert_drained().await;
}

#[tokio::test]
async fn an_authority_that_disagrees_with_host_is_400() {
    let ca = TestCa::new();
    let (backend, _) = reading_backend().await;
    let proxy = proxy_to(&ca, &backend).await;
    let client = h2_client(proxy.addr(), &ca).await;
    let req = get(&proxy, "/app/x")
        .header("host", "elsewhere.example")
        .body(())
        .unwrap();
    let (res, _, _) = exchange(&client, req, &[]).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let port = proxy.addr().port();
    let same = get(&proxy, "/app/y")
        .header("host", format!("localhost:{port}"))
        .body(())
        .unwrap();
    let (res, _, _) = exchange(&client, same, &[]).await;
    assert_eq!(res.status, 200);
    let seen = backend.stats.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].target, "/app/y");
    proxy.assert_drained().await;
}

#[tokio::test]
async fn head_204_and_304_answers_carry_no_data_over_h2() {
    let ca = TestCa::new();
    let backend = HttpBackend::start(|req: Request<Incoming>| async move {
        let status = match req.uri().path() {
            "/app/204" => StatusCode::NO_CONTENT,
            "/app/304" => StatusCode::NOT_MODIFIED,
            _ => StatusCode::OK,
        };
        let mut res = Response::new(hb::text("hello"));
        *res.status_mut() = status;
        res
    })
    .await;
    let proxy = proxy_to(&ca, &backend).await;
    let client = h2_client(proxy.addr(), &ca).await;
    let head = Request::head(format!("https://localhost:{}/app/h", proxy.addr().port()))
        .body(())
        .unwrap();
    let (res, empty, body) = exchange(&client, head, &[]).await;
    assert_eq!(res.status, 200);
    assert!(empty, "HEADERS with END_STREAM, no DATA");
    assert!(body.is_empty());
    assert_eq!(res.headers.get("content-length").unwrap(), "5");
    for (path, status) in [("/app/204", 204), ("/app/304", 304)] {
        let (res, empty, body) = exchange(&client, get(&proxy, path).body(()).unwrap(), &[]).await;
        assert_eq!(res.status, status);
        assert!(empty && body.is_empty(), "{path}: no DATA");
    }
    proxy.assert_drained().await;
}
