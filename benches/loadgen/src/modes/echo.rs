//! `echo`: N connections, each keeping K messages in flight, for a fixed window, or
//! (`--rounds R`) until each connection has had R replies, for counted measures
//! (benches/callgrind.sh) that need the same work in every run.
//!
//! The masked frame is built once; a reply triggers the next send, so each connection
//! always has exactly K messages on the way. Replies are counted by the streaming
//! parser without copying their payload anywhere.

use std::rc::Rc;
use tokio::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Common, Counter, FirstError, Flag, all_connected};
use crate::cpu::Sampler;
use crate::net::{self, Conn};
use crate::ws::{self, Header, Parser, Sink, opcode};

/// Read buffer per connection: several 64 KiB frames per read syscall.
const READ_BUF: usize = 256 * 1024;
/// Frames up to this size are sent several per write; bigger ones one per write.
const COALESCE_MAX: usize = 4096;

/// Counts complete data frames.
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

/// Shared state of one run.
#[derive(Clone, Default)]
struct Shared {
    msgs: Counter,
    connected: Counter,
    errors: Counter,
    first: FirstError,
    stop: Flag,
}

/// Runs the mode and returns its result line.
///
/// With `rounds`, each connection stops after `rounds` replies and the run ends when every
/// connection did (or after the window, an error); `msgs` is then the exact total.
pub async fn run(
    c: &Common,
    conns: usize,
    inflight: usize,
    size: usize,
    rounds: Option<u64>,
) -> Result<String, String> {
    let payload = vec![0x5A_u8; size];
    let frame = Rc::new(ws::client_frame(
        opcode::BINARY,
        &payload,
        [0x37, 0xFA, 0x21, 0x3D],
    ));
    let sh = Shared::default();
    for _ in 0..conns {
        tokio::task::spawn_local(connection(
            c.target.clone(),
            frame.clone(),
            inflight,
            rounds,
            sh.clone(),
        ));
    }
    all_connected(conns, &sh.connected, &sh.errors, &sh.first).await?;
    if let Some(r) = rounds {
        return counted(c, conns, size, r, &sh).await;
    }
    tokio::time::sleep(c.warmup).await;
    let (m0, t0, cpu) = (sh.msgs.get(), Instant::now(), Sampler::start(&c.watch));
    tokio::time::sleep(c.duration).await;
    let (m1, secs, cpu) = (sh.msgs.get(), t0.elapsed().as_secs_f64(), cpu.finish());
    sh.stop.set();
    super::no_failures(&sh.errors, &sh.first)?;
    let msgs = m1 - m0;
    let rate = msgs as f64 / secs;
    Ok(format!(
        "mode=echo conns={conns} inflight={inflight} size={size} secs={secs:.3} msgs={msgs} \
         msg_per_s={rate:.0} mb_per_s={:.1} {cpu} errors=0",
        rate * size as f64 / 1e6
    ))
}

/// The `--rounds` run: waits (at most warm-up + window) until every connection is done.
async fn counted(
    c: &Common,
    conns: usize,
    size: usize,
    rounds: u64,
    sh: &Shared,
) -> Result<String, String> {
    let want = rounds * conns as u64;
    let t0 = Instant::now();
    let all = super::wait_until(c.warmup + c.duration, || {
        sh.msgs.get() >= want || sh.errors.get() > 0
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    sh.stop.set();
    super::no_failures(&sh.errors, &sh.first)?;
    if !all {
        return Err(format!(
            "only {} of {want} replies in {secs:.1} s",
            sh.msgs.get()
        ));
    }
    Ok(format!(
        "mode=echo conns={conns} size={size} rounds={rounds} secs={secs:.3} msgs={} errors=0",
        sh.msgs.get()
    ))
}

async fn connection(
    t: net::Target,
    frame: Rc<Vec<u8>>,
    inflight: usize,
    rounds: Option<u64>,
    sh: Shared,
) {
    let stop = sh.stop.clone();
    if let Err(e) = pump(&t, &frame, inflight, rounds, &sh).await
        && !stop.get()
    {
        sh.errors.add(1);
        sh.first.record(e);
    }
}

async fn pump(
    t: &net::Target,
    frame: &[u8],
    inflight: usize,
    rounds: Option<u64>,
    sh: &Shared,
) -> std::io::Result<()> {
    // Replies still to send for (unbounded without --rounds).
    let mut unsent = rounds.unwrap_or(u64::MAX);
    let (mut conn, leftover) = net::connect_within(t, super::CONNECT_TIMEOUT).await?;
    sh.connected.add(1);
    let (mut parser, mut sink) = (Parser::new(), CountFrames::default());
    parser.feed(&leftover, &mut sink);
    let mut wbuf = Vec::new();
    let first = (inflight as u64).min(unsent);
    unsent -= first;
    send(&mut conn, frame, first, &mut wbuf).await?;
    let mut unanswered = first;
    let mut rbuf = vec![0u8; READ_BUF];
    loop {
        let n = conn.read(&mut rbuf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed",
            ));
        }
        sink.data = 0;
        parser.feed(&rbuf[..n], &mut sink);
        if sink.close {
            return Err(std::io::Error::other("server sent Close"));
        }
        sh.msgs.add(sink.data);
        unanswered = unanswered.saturating_sub(sink.data);
        // Counted runs end each connection once all its replies came back.
        if sh.stop.get() || (rounds.is_some() && unsent == 0 && unanswered == 0) {
            return Ok(());
        }
        let next = sink.data.min(unsent);
        unsent -= next;
        unanswered += next;
        send(&mut conn, frame, next, &mut wbuf).await?;
    }
}

/// Sends `count` copies of `frame`, small ones in one write.
async fn send(
    conn: &mut Conn,
    frame: &[u8],
    count: u64,
    wbuf: &mut Vec<u8>,
) -> std::io::Result<()> {
    if count == 0 {
        return Ok(());
    }
    if frame.len() <= COALESCE_MAX {
        wbuf.clear();
        for _ in 0..count {
            wbuf.extend_from_slice(frame);
        }
        conn.write_all(wbuf).await?;
    } else {
        for _ in 0..count {
            conn.write_all(frame).await?;
        }
    }
    conn.flush().await
}
