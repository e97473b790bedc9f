//! Helpers for the backend pool tests: a switchable backend node that names itself in
//! its 101, a raw client that reports which backend served it, and pool route YAML.
//! [`one_route`] has the one-route proxy the pool tests share and the helpers that
//! open connections through it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::eventually_some;
use super::frame::{self, Frame};
use super::http::{self, read_head};
use super::raw::{self, FrameStream, RawClient};

pub mod one_route;

/// The path health checks probe; a [`Node`] counts and answers it apart.
pub const PROBE_PATH: &str = "/health";

/// Most connections a node accepts before its accept loop ends.
const MAX_ACCEPTS: usize = 5_000;

/// Most frames one node session handles.
const MAX_FRAMES: usize = 100_000;

/// How long a node session waits for the next frame before giving up on a silent peer
/// (longer than any test holds a connection).
const SESSION_QUIET: Duration = Duration::from_secs(60);

/// What a node saw and how it answers now.
#[derive(Default)]
pub struct NodeState {
    /// Answer every upgrade (proxied and probe) with 503.
    refusing: AtomicBool,
    /// Answer only the health probes with 503.
    probes_failing: AtomicBool,
    /// Proxied upgrades answered 101.
    served: AtomicUsize,
    /// Proxied upgrades answered 503.
    refused: AtomicUsize,
    /// Health probes received.
    probes: AtomicUsize,
    /// Proxied sessions open now.
    live: AtomicUsize,
    /// Close codes received from wsgate, in order.
    closes: Mutex<Vec<u16>>,
}

/// A backend whose answer can be switched while it runs: 101 (naming itself in
/// `X-Backend`), 503, or nothing at all (not listening). Sessions echo data frames.
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    pub state: Arc<NodeState>,
    accept_loop: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Node {
    /// Starts a node listening on 127.0.0.1:0.
    pub async fn start(name: &str) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind node");
        let addr = listener.local_addr().unwrap();
        let node = Node {
            name: name.to_string(),
            addr,
            state: Arc::default(),
            accept_loop: Mutex::new(None),
        };
        node.serve(listener);
        node
    }

    /// Starts a node listening on `addr` (another loopback address, a chosen port).
    pub async fn start_at(name: &str, addr: SocketAddr) -> std::io::Result<Node> {
        let listener = TcpListener::bind(addr).await?;
        let node = Node {
            name: name.to_string(),
            addr: listener.local_addr()?,
            state: Arc::default(),
            accept_loop: Mutex::new(None),
        };
        node.serve(listener);
        Ok(node)
    }

    /// Starts `n` nodes named `b0`, `b1`, …
    pub async fn many(n: usize) -> Vec<Node> {
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            nodes.push(Node::start(&format!("b{i}")).await);
        }
        nodes
    }

    fn serve(&self, listener: TcpListener) {
        let (state, name) = (self.state.clone(), self.name.clone());
        let task = tokio::spawn(async move {
            for _ in 0..MAX_ACCEPTS {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(session(tcp, state.clone(), name.clone()));
            }
        });
        *self.accept_loop.lock().unwrap() = Some(task);
    }

    /// Stops listening: new connects are refused; open sessions go on.
    pub fn stop(&self) {
        if let Some(task) = self.accept_loop.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same address (after [`Node::stop`]).
    pub async fn resume(&self) {
        // The aborted accept loop drops its listener at its next poll.
        let listener = eventually_some(&format!("listening on {} again", self.addr), || async {
            TcpListener::bind(self.addr).await.ok()
        })
        .await;
        self.serve(listener);
    }

    /// `ws://127.0.0.1:PORT` (no path: the client's path is forwarded as is).
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn set_refusing(&self, on: bool) {
        self.state.refusing.store(on, Ordering::SeqCst);
    }

    pub fn set_probes_failing(&self, on: bool) {
        self.state.probes_failing.store(on, Ordering::SeqCst);
    }

    pub fn served(&self) -> usize {
        self.state.served.load(Ordering::SeqCst)
    }

    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    pub fn probes(&self) -> usize {
        self.state.probes.load(Ordering::SeqCst)
    }

    pub fn live(&self) -> usize {
        self.state.live.load(Ordering::SeqCst)
    }

    pub fn closes(&self) -> Vec<u16> {
        self.state.closes.lock().unwrap().clone()
    }
}

/// One connection to a node: read the upgrade, answer it, echo until Close or EOF.
async fn session(mut tcp: TcpStream, state: Arc<NodeState>, name: String) {
    let mut buf = Vec::new();
    let Some(request) = read_head(&mut tcp, &mut buf).await else {
        return;
    };
    let probe = request.target().starts_with(PROBE_PATH);
    if probe {
        state.probes.fetch_add(1, Ordering::SeqCst);
    }
    let refuse = state.refusing.load(Ordering::SeqCst)
        || (probe && state.probes_failing.load(Ordering::SeqCst));
    if refuse {
        if !probe {
            state.refused.fetch_add(1, Ordering::SeqCst);
        }
        let body = "node refusing\n";
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             X-Backend: {name}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tcp.write_all(head.as_bytes()).await;
        let _ = tcp.shutdown().await;
        return;
    }
    let key = request.header("sec-websocket-key").unwrap_or_default();
    http::write_101(&mut tcp, &http::accept_key(key), &[("X-Backend", &name)]).await;
    if probe {
        // A probe closes right away; it is not a proxied session.
        let mut io = FrameStream::new(tcp, buf, false);
        let _ = io.try_recv(super::STEP).await;
        return;
    }
    state.served.fetch_add(1, Ordering::SeqCst);
    state.live.fetch_add(1, Ordering::SeqCst);
    echo(FrameStream::new(tcp, buf, false), &state).await;
    state.live.fetch_sub(1, Ordering::SeqCst);
}

async fn echo(mut io: FrameStream<TcpStream>, state: &NodeState) {
    for _ in 0..MAX_FRAMES {
        let Ok(Some(f)) = io.try_recv(SESSION_QUIET).await else {
            return;
        };
        match f.opcode {
            frame::TEXT | frame::BINARY | frame::CONT => {
                io.send(Frame::new(f.opcode, f.payload).fin(f.fin)).await
            }
            frame::PING => io.send(Frame::new(frame::PONG, f.payload)).await,
            frame::CLOSE => {
                let code = f.close_code().unwrap_or(1005);
                state.closes.lock().unwrap().push(code);
                io.send(Frame::new(frame::CLOSE, f.payload)).await;
                return;
            }
            _ => {}
        }
    }
}

/// What one upgrade through wsgate got: the status, the backend that answered (its
/// `X-Backend`), the response head and the open stream.
pub struct Hit {
    pub status: u16,
    pub backend: Option<String>,
    pub head: http::Head,
    pub ws: RawClient,
}

/// Upgrades to `path` on `addr` with `extra` headers, whatever the answer.
pub async fn hit(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Hit {
    let (head, ws) = raw::upgrade_with(addr, path, extra).await;
    Hit {
        status: head.status(),
        backend: head.header("x-backend").map(str::to_string),
        head,
        ws,
    }
}

/// Upgrades to `path`, which must succeed; returns the serving backend and the stream.
pub async fn open(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> (String, RawClient) {
    let hit = hit(addr, path, extra).await;
    assert_eq!(hit.status, 101, "upgrade refused: {:?}", hit.head);
    let backend = hit.backend.expect("101 without X-Backend");
    (backend, hit.ws)
}

/// How many times each backend name occurs.
pub fn tally<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for name in names {
        *counts.entry(name.to_string()).or_insert(0) += 1;
    }
    counts
}

/// How many of `served` (backend names) each backend served.
pub fn counts(served: &[String]) -> BTreeMap<String, usize> {
    tally(served.iter().map(String::as_str))
}

/// How many of the `held` connections each backend holds.
pub fn held_counts(held: &[(String, RawClient)]) -> BTreeMap<String, usize> {
    tally(held.iter().map(|(b, _)| b.as_str()))
}

/// `node`'s entry in `counts` (0 when absent).
pub fn count(counts: &BTreeMap<String, usize>, node: &Node) -> usize {
    counts.get(&node.name).copied().unwrap_or(0)
}

/// A config with one plain listener, short test timeouts, `reload` settings, and
/// `routes` (a YAML sequence indented by two spaces).
pub fn config(drain_window: &str, routes: &str) -> String {
    format!(
        "listeners:\n  - bind: \"127.0.0.1:0\"\n\
         defaults: {{ close_timeout: 1s, handshake_timeout: 1s, ping_interval: 0s }}\n\
         reload: {{ drain_window: {drain_window}, watch: false }}\n\
         routes:\n{routes}"
    )
}

/// A pool route `name` on `path` over `backends` (YAML items), plus `extra` lines.
pub fn pool_route(name: &str, path: &str, backends: &[String], extra: &[&str]) -> String {
    let mut out = format!(
        "  - name: {name}\n    path: {path}\n    backends: [{}]\n",
        backends.join(", ")
    );
    for line in extra {
        out.push_str(&format!("    {line}\n"));
    }
    out
}

/// `urls` as backend items, each quoted.
pub fn quoted(urls: &[String]) -> Vec<String> {
    urls.iter().map(|u| format!("\"{u}\"")).collect()
}

/// Backend items for `nodes`, each as a quoted URL.
pub fn urls<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<String> {
    nodes
        .into_iter()
        .map(|n| format!("\"{}\"", n.url()))
        .collect()
}
