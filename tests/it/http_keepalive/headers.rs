//! The heads on both hops of a plain request: what reaches the backend, and what of the
//! backend's response head is kept, rewritten (status line, header case, values, `Date`)
//! or dropped (1xx, hop-by-hop headers), and which heads are refused (502).

use super::wire::*;

/// 1xx responses are dropped (as hyper's client does without `on_informational`): the
/// client sees the 200 only, though RFC 9110 §15.2 has a proxy forward 1xx responses.
#[tokio::test]
async fn a_103_early_hints_is_dropped_and_the_200_with_its_body_arrives() {
    let backend = Scripted::always(
        "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
         HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints",
    )
    .await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    for _ in 0..2 {
        c.get("/app", "").await;
        let a = c.answer(false).await;
        assert!(a.informational.is_empty(), "{:?}", a.informational);
        assert_eq!((a.status(), a.text().as_str()), (200, "hints"), "{a:?}");
        assert_eq!(a.head.header("link"), None, "{a:?}");
    }
}

/// Header names reach the client lowercased (as hyper writes them), each `Set-Cookie` on
/// its own line, and the reason phrase is the canonical one, not the backend's.
#[tokio::test]
async fn header_names_are_written_lowercase_set_cookie_twice_and_the_reason_canonical() {
    let backend = Scripted::always(
        "HTTP/1.1 200 Fine Thanks\r\nX-Mixed-Case: v\r\nSet-Cookie: a=1; Path=/\r\n\
         Set-Cookie: b=2; HttpOnly\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    c.get("/app", "").await;
    let a = c.answer(false).await;
    assert_eq!(a.head.start_line, "HTTP/1.1 200 OK", "{a:?}");
    assert_eq!(a.head.header("X-MIXED-CASE"), Some("v"));
    assert_eq!(
        a.head.header_all("set-cookie"),
        ["a=1; Path=/", "b=2; HttpOnly"]
    );
    let raw = &a.raw_head;
    for line in [
        "\r\nx-mixed-case: v\r\n",
        "\r\nset-cookie: a=1; Path=/\r\nset-cookie: b=2; HttpOnly\r\n",
        "\r\ncontent-length: 2\r\n",
    ] {
        assert!(raw.contains(line), "{line:?} not in {raw:?}");
    }
    for (name, _) in &a.head.headers {
        assert_eq!(name, &name.to_ascii_lowercase(), "{raw:?}");
    }
}

/// The backend's `Connection` (close or keep-alive), `Keep-Alive` and a header it names in
/// `Connection` stay on the backend hop; the client's connection is kept either way.
#[tokio::test]
async fn hop_by_hop_headers_from_the_backend_stay_there_and_the_client_connection_is_kept() {
    let backend = Scripted::start(|head| {
        let answer = |connection: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nConnection: {connection}, X-Hop\r\nX-Hop: secret\r\n\
                 Keep-Alive: timeout=5\r\nX-End: 1\r\nContent-Length: 2\r\n\r\nok"
            )
        };
        if head.target() == "/close" {
            Reply::then_close(answer("close"))
        } else {
            Reply::keep(answer("keep-alive"))
        }
    })
    .await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    for path in ["/app/close", "/app/close", "/app/keep", "/app/keep"] {
        c.get(path, "").await;
        let a = c.answer(false).await;
        assert_eq!(
            (a.status(), a.text().as_str()),
            (200, "ok"),
            "{path}: {a:?}"
        );
        for gone in ["connection", "x-hop", "keep-alive"] {
            assert_eq!(
                a.head.header(gone),
                None,
                "{path}: {gone} reached the client"
            );
        }
        assert_eq!(a.head.header("x-end"), Some("1"));
    }
    // Two closed after their answer, then one kept for both keep-alive requests.
    assert_eq!(backend.accepted(), 3);
}

/// Bare LF line ends in a response head are accepted (as by hyper's client; and the head is
/// rewritten with CRLF); a header line without a colon is a 502. Either way the client's
/// connection goes on.
#[tokio::test]
async fn a_bare_lf_response_head_passes_and_an_invalid_header_line_is_502() {
    let backend = Scripted::start(|head| match head.target() {
        "/lf" => Reply::keep("HTTP/1.1 200 OK\nX-A: 1\nContent-Length: 2\n\nlf"),
        "/nocolon" => {
            Reply::then_close("HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 2\r\n\r\nno")
        }
        "/space" => {
            Reply::then_close("HTTP/1.1 200 OK\r\nX-Bad : 1\r\nContent-Length: 2\r\n\r\nsp")
        }
        _ => Reply::keep(NEXT),
    })
    .await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    c.get("/app/lf", "").await;
    let a = c.answer(false).await;
    assert_eq!((a.status(), a.text().as_str()), (200, "lf"), "{a:?}");
    assert_eq!(a.head.header("x-a"), Some("1"));
    let raw = &a.raw_head;
    assert!(!raw.replace("\r\n", "").contains('\n'), "{raw:?}");
    ok_on(&mut c, "/app/next", "next").await;
    for bad in ["/app/nocolon", "/app/space"] {
        c.get(bad, "").await;
        let a = c.answer(false).await;
        assert_eq!(a.status(), 502, "{bad}: {a:?}");
        ok_on(&mut c, "/app/next", "next").await;
    }
}

/// wsgate adds `date` (as hyper's server does) when the backend sent none, and keeps the backend's one.
#[tokio::test]
async fn date_is_added_when_missing_and_the_backends_kept() {
    const DATE: &str = "Tue, 15 Nov 1994 08:12:31 GMT";
    let backend = Scripted::start(|head| {
        if head.target() == "/dated" {
            Reply::keep(format!(
                "HTTP/1.1 200 OK\r\nDate: {DATE}\r\nContent-Length: 1\r\n\r\nd"
            ))
        } else {
            Reply::keep("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nu")
        }
    })
    .await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    c.get("/app/undated", "").await;
    let a = c.answer(false).await;
    let dates = a.head.header_all("date");
    assert_eq!(dates.len(), 1, "{a:?}");
    assert!(dates[0].ends_with(" GMT") && dates[0] != DATE, "{dates:?}");
    c.get("/app/dated", "").await;
    let a = c.answer(false).await;
    assert_eq!(a.head.header_all("date"), [DATE], "{a:?}");
}

/// What wsgate writes to the backend for a plain GET: origin form in HTTP/1.1, names
/// lowercased, a repeated header's values kept in order, no framing headers and no
/// `Connection`; the order below is hyper's too (its map groups a name's values, and
/// wsgate's headers, `host` last, follow the client's).
#[tokio::test]
async fn the_backends_request_head_is_lowercase_with_host_last_and_no_framing_headers() {
    let backend = Scripted::always("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    c.send(
        "GET /app/x?q=1 HTTP/1.1\r\nHost: wsgate.test\r\nAccept: a\r\nUser-Agent: UA\r\n\
         Accept: b\r\nX-Custom-Case: V\r\n\r\n",
    )
    .await;
    assert_eq!(c.answer(false).await.status(), 200);
    let head = backend.heads.lock().unwrap()[0].clone();
    assert_eq!(head.start_line, "GET /x?q=1 HTTP/1.1");
    let lines: Vec<String> = head
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect();
    let host = format!("host: {}", backend.addr);
    assert_eq!(
        lines,
        [
            "accept: a",
            "accept: b",
            "user-agent: UA",
            "x-custom-case: V",
            "x-forwarded-for: 127.0.0.1",
            "x-real-ip: 127.0.0.1",
            "x-forwarded-proto: http",
            "x-forwarded-host: wsgate.test",
            "forwarded: for=127.0.0.1;host=\"wsgate.test\";proto=http",
            host.as_str(),
        ]
    );
}

/// The status line is wsgate's (as hyper writes it), not the backend's: the canonical reason for a known code
/// (none given, or another one), `<none>` for a code without one, and HTTP/1.1 whatever
/// version the backend spoke. Header values lose their surrounding blanks; obs-text passes.
#[tokio::test]
async fn status_lines_are_rewritten_with_the_canonical_reason_or_none() {
    let backend = Scripted::start(|head| match head.target() {
        "/599" => Reply::keep("HTTP/1.1 599 Whatever\r\nContent-Length: 0\r\n\r\n"),
        "/bare" => Reply::keep("HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n"),
        "/old" => Reply::then_close("HTTP/1.0 200 Fine\r\nContent-Length: 2\r\n\r\nok"),
        _ => Reply::keep(
            b"HTTP/1.1 200 OK\r\nX-Pad:   spaced value  \r\nX-Obs: caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        ),
    })
    .await;
    let (_proxy, mut c) = proxy_and_client(&backend, "").await;
    for (path, line) in [
        ("/app/599", "HTTP/1.1 599 <none>"),
        ("/app/bare", "HTTP/1.1 404 Not Found"),
        ("/app/old", "HTTP/1.1 200 OK"),
        ("/app/old", "HTTP/1.1 200 OK"),
        ("/app/values", "HTTP/1.1 200 OK"),
    ] {
        c.get(path, "").await;
        let a = c.answer(false).await;
        assert_eq!(a.head.start_line, line, "{path}: {a:?}");
        if path == "/app/values" {
            let raw = &a.raw_head;
            assert!(raw.contains("\r\nx-pad: spaced value\r\n"), "{raw:?}");
            assert!(raw.contains("\r\nx-obs: café\r\n"), "{raw:?}");
        }
    }
    // The HTTP/1.0 backend's connections are not reused.
    assert_eq!(backend.accepted(), 3);
}
