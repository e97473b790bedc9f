//! `h2echo` and `h2idle`: WebSockets over HTTP/2 (RFC 8441), each an extended CONNECT
//! stream (`:protocol websocket`), spread over a few TLS connections that negotiated
//! ALPN `h2`, on the h2 crate.
//!
//! `h2echo` keeps one masked 64 B (or `--size`) message in flight per stream, like
//! `echo --inflight 1` does per TCP connection; `h2idle` opens the streams, prints
//! `ALL_OPEN …`, holds them so the proxy's RSS can be read, then drops them.

use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{Method, Request, StatusCode};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Common, Counter, FirstError, Flag, all_connected, wait_until};
use crate::cpu::Sampler;
use crate::net::{self, Target};
use crate::ws::{self, Header, Parser, Sink, opcode};

/// Longest wait for the server's SETTINGS to allow extended CONNECT.
const SETTINGS_LIMIT: Duration = Duration::from_secs(5);
/// Longest time allowed for opening every stream of an `h2idle` run.
const OPEN_LIMIT: Duration = Duration::from_secs(180);

/// One WebSocket on an HTTP/2 stream.
type Stream = (SendStream<Bytes>, RecvStream);

/// Counts complete data frames and sees a Close.
#[derive(Default)]
struct CountFrames {
    data: u64,
    close: bool,
}

impl Sink for CountFrames {
    fn header(&mut self, _: &Header) {}
    fn payload(&mut self, _: &Header, _: &[u8], _: u64) {}
    fn end(&mut self, h: &Header) {
        match h.opcode() {
            opcode::CLOSE => self.close = true,
            op if op < 0x8 => self.data += 1,
            _ => {}
        }
    }
}

/// An HTTP/2 connection whose server allows extended CONNECT, and its driving task.
async fn open_conn(t: &Target) -> Result<(SendRequest<Bytes>, JoinHandle<()>), String> {
    let io = net::connect_h2(t).await.map_err(|e| e.to_string())?;
    let (send, conn) = h2::client::Builder::new()
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let task = tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let mut send = send.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
    // The flag arrives with the server's SETTINGS, read by the connection task.
    if !wait_until(SETTINGS_LIMIT, || {
        send.is_extended_connect_protocol_enabled()
    })
    .await
    {
        task.abort();
        return Err("the server does not allow extended CONNECT (RFC 8441)".into());
    }
    send = send.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
    Ok((send, task))
}

/// Opens one WebSocket stream on `send`.
async fn open_stream(t: &Target, send: &mut SendRequest<Bytes>) -> Result<Stream, String> {
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://localhost{}", t.path))
        .header("sec-websocket-version", "13")
        .extension(h2::ext::Protocol::from_static("websocket"))
        .body(())
        .map_err(|e| e.to_string())?;
    let ready = send
        .clone()
        .ready()
        .await
        .map_err(|e| format!("h2 ready: {e}"))?;
    *send = ready;
    let (resp, stream) = send
        .send_request(req, false)
        .map_err(|e| format!("CONNECT: {e}"))?;
    let resp = resp.await.map_err(|e| format!("CONNECT response: {e}"))?;
    if resp.status() != StatusCode::OK {
        return Err(format!("CONNECT refused: {}", resp.status()));
    }
    Ok((stream, resp.into_body()))
}

/// Shared state of one `h2echo` run.
#[derive(Clone, Default)]
struct Shared {
    msgs: Counter,
    connected: Counter,
    errors: Counter,
    first: FirstError,
    stop: Flag,
}

/// Runs `h2echo`: `streams` WebSockets over `conns` connections, one message in flight each.
pub async fn echo(c: &Common, streams: usize, conns: usize, size: usize) -> Result<String, String> {
    let conns = conns.clamp(1, streams.max(1));
    let frame = Bytes::from(ws::client_frame(
        opcode::BINARY,
        &vec![0x5A_u8; size],
        [0x37, 0xFA, 0x21, 0x3D],
    ));
    let sh = Shared::default();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (mut send, task) = open_conn(&c.target).await?;
        tasks.push(task);
        // Streams spread evenly: the first `streams % conns` connections get one more.
        let n = streams / conns + usize::from(i < streams % conns);
        for _ in 0..n {
            let stream = open_stream(&c.target, &mut send).await?;
            sh.connected.add(1);
            tasks.push(tokio::task::spawn_local(pump(
                stream,
                frame.clone(),
                sh.clone(),
            )));
        }
    }
    all_connected(streams, &sh.connected, &sh.errors, &sh.first).await?;
    tokio::time::sleep(c.warmup).await;
    let (m0, t0, cpu) = (sh.msgs.get(), Instant::now(), Sampler::start(&c.watch));
    tokio::time::sleep(c.duration).await;
    let (m1, secs, cpu) = (sh.msgs.get(), t0.elapsed().as_secs_f64(), cpu.finish());
    sh.stop.set();
    tasks.iter().for_each(JoinHandle::abort);
    if sh.errors.get() > 0 {
        return Err(format!(
            "{} streams failed; first: {}",
            sh.errors.get(),
            sh.first.get().unwrap_or_default()
        ));
    }
    let msgs = m1 - m0;
    let rate = msgs as f64 / secs;
    Ok(format!(
        "mode=h2echo streams={streams} h2conns={conns} size={size} secs={secs:.3} msgs={msgs} \
         msg_per_s={rate:.0} mb_per_s={:.1} {cpu} errors=0",
        rate * size as f64 / 1e6
    ))
}

async fn pump(stream: Stream, frame: Bytes, sh: Shared) {
    if let Err(e) = echo_loop(stream, &frame, &sh).await
        && !sh.stop.get()
    {
        sh.errors.add(1);
        sh.first.record(e);
    }
}

async fn echo_loop((mut send, mut recv): Stream, frame: &Bytes, sh: &Shared) -> Result<(), String> {
    let (mut parser, mut sink) = (Parser::new(), CountFrames::default());
    send.send_data(frame.clone(), false)
        .map_err(|e| e.to_string())?;
    loop {
        let chunk = match recv.data().await {
            None => return Err("server ended the stream".into()),
            Some(c) => c.map_err(|e| e.to_string())?,
        };
        let _ = recv.flow_control().release_capacity(chunk.len());
        sink.data = 0;
        parser.feed(&chunk, &mut sink);
        if sink.close {
            return Err("server sent Close".into());
        }
        sh.msgs.add(sink.data);
        if sh.stop.get() {
            return Ok(());
        }
        for _ in 0..sink.data {
            send.send_data(frame.clone(), false)
                .map_err(|e| e.to_string())?;
        }
    }
}

/// Runs `h2idle`: opens `streams` WebSockets over `conns` connections, holds them.
pub async fn idle(
    c: &Common,
    streams: usize,
    conns: usize,
    hold: Duration,
) -> Result<String, String> {
    let conns = conns.clamp(1, streams.max(1));
    let (opened, errors, first) = (
        Counter::default(),
        Counter::default(),
        FirstError::default(),
    );
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let n = streams / conns + usize::from(i < streams % conns);
        let (t, opened, errors, first) = (
            c.target.clone(),
            opened.clone(),
            errors.clone(),
            first.clone(),
        );
        tasks.push(tokio::task::spawn_local(async move {
            let mut held = Vec::with_capacity(n);
            let mut conn_task = None;
            let r = async {
                let (mut send, task) = open_conn(&t).await?;
                conn_task = Some(task);
                // Beyond the server's limit a stream would wait for one to end: fail now.
                let max = send.current_max_send_streams();
                if n > max {
                    return Err(format!(
                        "{n} streams per connection, the server allows {max}"
                    ));
                }
                for _ in 0..n {
                    held.push(open_stream(&t, &mut send).await?);
                    opened.add(1);
                }
                // Keeps the streams and the connection until this task is aborted.
                std::future::pending::<()>().await;
                Ok::<_, String>(send)
            };
            if let Err(e) = r.await {
                errors.add((n - held.len()) as u64);
                first.record(e);
            }
            if let Some(task) = conn_task {
                task.abort();
            }
        }));
    }
    let total = || opened.get() + errors.get();
    let finished = wait_until(OPEN_LIMIT, || total() >= streams as u64).await;
    let (n, secs) = (opened.get(), t0.elapsed().as_secs_f64());
    println!(
        "ALL_OPEN open={n} errors={} secs={secs:.2} finished={finished}",
        errors.get()
    );
    let _ = std::io::stdout().flush();
    tokio::time::sleep(hold).await;
    tasks.iter().for_each(JoinHandle::abort);
    if n < streams as u64 {
        let why = first.get().unwrap_or_default();
        return Err(format!(
            "opened {n} of {streams} streams; first error: {why}"
        ));
    }
    Ok(format!(
        "mode=h2idle streams={n} h2conns={conns} open_secs={secs:.2} open_per_s={:.0} errors=0",
        n as f64 / secs
    ))
}
