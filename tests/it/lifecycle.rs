//! The real binary as a child process: SIGTERM drains every connection with
//! 1001 and exits 0 within the drain timeout; SIGHUP and an edit of the config
//! file reload it while open connections keep going.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::backend::Backend;
use crate::support::child::{Child, replace_file};
use crate::support::{STEP, client, eventually_some, http, raw, within};

/// Connections open when SIGTERM arrives.
const CLIENTS: usize = 100;
/// Messages each client sends and sees echoed before the signal.
const ACKED: usize = 20;
/// Messages each client sends right before the signal, without waiting for their echo.
const IN_FLIGHT: usize = 5;
/// The configured drain timeout of the shutdown test.
const DRAIN: Duration = Duration::from_secs(6);
/// The route's close timeout: how long the one silent client holds the drain open.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

fn config(backend: &Backend, extra_routes: &str, watch: bool) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n\
         defaults: {{ close_timeout: 2s, handshake_timeout: 2s, ping_interval: 0s }}\n\
         routes:\n  - name: app\n    path: /app\n    backends: [\"{}\"]\n{extra_routes}\
         shutdown: {{ drain_timeout: 6s }}\nreload: {{ watch: {watch} }}\n",
        backend.url("/ws")
    )
}

fn text(i: usize, j: usize) -> String {
    format!("c{i} m{j}")
}

/// Status of a fresh upgrade to `path`, or what happened instead of a response.
async fn attempt(addr: SocketAddr, path: &str) -> String {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return "connection refused".into();
    };
    let request = http::upgrade_request(addr, path, &[]);
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return "write failed".into();
    }
    let mut buf = Vec::new();
    match within("response head", http::read_head(&mut tcp, &mut buf)).await {
        Some(head) => head.status().to_string(),
        None => "closed without a response".into(),
    }
}

/// Polls until `path` answers 101 (bounded by the patience); returns how long it took.
async fn until_upgrades(addr: SocketAddr, path: &str) -> Duration {
    let started = Instant::now();
    eventually_some(&format!("{path} answers 101"), || async {
        (attempt(addr, path).await == "101").then_some(())
    })
    .await;
    started.elapsed()
}

/// Reads until the Close; returns the data messages before it and the close code.
async fn read_to_close(ws: &mut client::Client) -> (Vec<String>, Option<u16>) {
    let mut data = Vec::new();
    for _ in 0..(ACKED + IN_FLIGHT + 10) {
        match within("client read", ws.next()).await {
            Some(Ok(Message::Text(t))) => data.push(t.to_string()),
            Some(Ok(Message::Close(frame))) => {
                // Keep polling so tungstenite sends its Close reply.
                client::drain(ws).await;
                return (data, frame.map(|f| u16::from(f.code)));
            }
            Some(Ok(other)) => panic!("unexpected {other:?}"),
            Some(Err(e)) => panic!("no Close before the error {e}"),
            None => return (data, None),
        }
    }
    panic!("no Close after {data:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_100_connections_with_1001_and_exits_0() {
    let backend = Backend::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsgate.yaml");
    std::fs::write(&path, config(&backend, "", false)).unwrap();
    let mut gate = Child::start(&path).await;
    let url = format!("ws://{}/app", gate.addr);

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(client::connect(url.as_str()).await.0);
    }
    let clients = join_all(
        clients
            .into_iter()
            .enumerate()
            .map(|(i, mut ws)| async move {
                for j in 0..ACKED {
                    ws.send(Message::text(text(i, j))).await.unwrap();
                }
                for j in 0..ACKED {
                    assert_eq!(client::next(&mut ws).await, Message::text(text(i, j)));
                }
                for j in ACKED..ACKED + IN_FLIGHT {
                    ws.send(Message::text(text(i, j))).await.unwrap();
                }
                ws
            }),
    )
    .await;
    // Reads the Close 1001 but never answers it: holds the drain open for close_timeout.
    let mut silent = raw::upgrade(gate.addr, "/app").await;

    gate.signal("TERM");
    let signalled = Instant::now();
    let readers = join_all(clients.into_iter().map(|mut ws| async move {
        let out = read_to_close(&mut ws).await;
        (out, signalled.elapsed())
    }));
    let silent_close = silent.recv_close().await;
    assert_eq!(silent_close.close_code(), Some(1001), "{silent_close:?}");
    let refused = attempt(gate.addr, "/app").await;
    assert!(gate.running(), "wsgate exited before the drain was over");
    assert_ne!(refused, "101", "a new upgrade was accepted while draining");
    let results = readers.await;
    let status = gate.wait(DRAIN + Duration::from_secs(2)).await;
    let exited = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running {exited:?} after SIGTERM"));

    let mut late = Duration::ZERO;
    for (i, ((echoed, code), at)) in results.into_iter().enumerate() {
        assert_eq!(code, Some(1001), "client {i} close code");
        late = late.max(at);
        let expected: Vec<String> = (ACKED..ACKED + echoed.len()).map(|j| text(i, j)).collect();
        assert_eq!(echoed, expected, "client {i}: echoes after the signal");
    }
    let messages = backend.log.messages();
    let closes: Vec<u16> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Close(f) => Some(f.as_ref().map_or(0, |f| u16::from(f.code))),
            _ => None,
        })
        .collect();
    assert_eq!(
        closes,
        vec![1001; CLIENTS + 1],
        "closes the backend received"
    );
    let mut delivered = 0;
    for i in 0..CLIENTS {
        let prefix = format!("c{i} ");
        let got: Vec<String> = messages
            .iter()
            .filter_map(|m| match m {
                Message::Text(t) if t.starts_with(&prefix) => Some(t.to_string()),
                _ => None,
            })
            .collect();
        let expected: Vec<String> = (0..got.len()).map(|j| text(i, j)).collect();
        assert_eq!(got, expected, "client {i}: what the backend received");
        assert!(got.len() >= ACKED, "client {i}: acknowledged messages lost");
        delivered += got.len() - ACKED;
    }
    println!(
        "SIGTERM: {CLIENTS} clients got 1001 within {late:?}; in-flight messages delivered \
         {delivered}/{}; new upgrade while draining: {refused}; exit {status} after {exited:?}",
        CLIENTS * IN_FLIGHT
    );
    assert_eq!(status.code(), Some(0), "exit status");
    assert!(
        exited >= CLOSE_TIMEOUT - Duration::from_millis(300),
        "exited after {exited:?}, before the silent client's close timeout"
    );
    assert!(
        exited < DRAIN,
        "exited after {exited:?}, drain timeout {DRAIN:?}"
    );
    assert!(gate.logged("shutting down"), "{:?}", gate.log());
}

/// An echo client on `/app` that answers a round trip.
async fn round_trip(ws: &mut client::Client, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(client::next(ws).await, Message::text(text));
}

const EXTRA: &str = "  - { name: extra, path: /extra, echo: true }\n";

/// Stops the child with SIGTERM; it must exit 0.
async fn stop(mut gate: Child) {
    gate.signal("TERM");
    let status = gate.wait(STEP).await.expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{:?}", gate.log());
}

#[tokio::test]
async fn sighup_reloads_and_open_connections_keep_going() {
    let backend = Backend::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsgate.yaml");
    std::fs::write(&path, config(&backend, "", false)).unwrap();
    let gate = Child::start(&path).await;
    let (mut ws, _) = client::connect(format!("ws://{}/app", gate.addr)).await;
    round_trip(&mut ws, "before").await;

    std::fs::write(&path, config(&backend, EXTRA, false)).unwrap();
    // The watch is off: without the signal nothing changes.
    assert_eq!(attempt(gate.addr, "/extra").await, "404");
    gate.signal("HUP");
    let took = until_upgrades(gate.addr, "/extra").await;
    println!("SIGHUP: new route served after {took:?}");
    round_trip(&mut ws, "after").await;
    assert!(gate.logged("configuration reloaded"), "{:?}", gate.log());
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    stop(gate).await;
}

#[tokio::test]
async fn editing_the_config_file_reloads_and_a_broken_edit_is_refused() {
    let backend = Backend::echo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsgate.yaml");
    std::fs::write(&path, config(&backend, "", true)).unwrap();
    let gate = Child::start(&path).await;
    let (mut ws, _) = client::connect(format!("ws://{}/app", gate.addr)).await;
    round_trip(&mut ws, "before").await;

    // A broken edit: logged with file:line:column, the running config stays.
    let broken = config(
        &backend,
        "  - { name: extra, path: /extra, echo: maybe }\n",
        true,
    );
    replace_file(&path, broken.as_bytes());
    let at = format!("{}:8:40:", path.display());
    within_log(&gate, "reload rejected", &at).await;
    round_trip(&mut ws, "after a broken edit").await;
    assert_eq!(attempt(gate.addr, "/extra").await, "404");

    replace_file(&path, config(&backend, EXTRA, true).as_bytes());
    let took = until_upgrades(gate.addr, "/extra").await;
    println!("file watch: new route served {took:?} after the edit");
    round_trip(&mut ws, "after the fix").await;
    ws.close(None).await.unwrap();
    client::drain(&mut ws).await;
    stop(gate).await;
}

/// Waits (bounded) for a log line containing both `what` and `at`.
async fn within_log(gate: &Child, what: &str, at: &str) {
    crate::support::eventually(&format!("a log line with {what:?} and {at:?}"), || {
        gate.log()
            .iter()
            .any(|l| l.contains(what) && l.contains(at))
    })
    .await;
}
