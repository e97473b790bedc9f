//! `soak`: a long run at a fixed message rate with connection churn, for finding leaks.
//!
//! Two kinds of load run side by side for `--duration`:
//! - `--conns` long-lived connections echo `--size` B messages at `--rate` messages/s in
//!   all (paced, not closed-loop, so the rate stays put while the target's state ages);
//!   each keeps at most [`MAX_INFLIGHT`] unanswered, and a connection that dies is
//!   counted as an error and reopened.
//! - a steady stream of short-lived connections, `--churn-rate` per second, at most
//!   `--churn-max` at once: each connects, echoes `--churn-msgs` messages one at a time,
//!   then ends in turn with a Close handshake (and waits for the server's FIN), with a
//!   plain TCP close and no Close frame, or with a reset (SO_LINGER 0).
//!
//! Every `--interval` one `TICK key=value …` line goes to stdout (flushed), counting
//! what happened in that interval, so a script can sample the target's memory and
//! descriptors next to each tick; the load goes on for `--hold-after` after the last
//! tick, so that sample too is taken under load. The first error of each interval goes to stderr.

use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, MissedTickBehavior};

use super::{Common, Counter, FirstError, Flag};
use crate::cpu::Sampler;
use crate::net::{self, Target};
use crate::ws::{self, Header, Parser, Sink, opcode};

/// Unanswered messages one long-lived connection may have; sends due beyond it are
/// skipped (and counted), so a target that falls behind is not buried in a backlog.
pub const MAX_INFLIGHT: u64 = 16;
/// Pause before reopening a long-lived connection that failed.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a normal close waits for the server's FIN after the Close reply.
const EOF_WAIT: Duration = Duration::from_secs(1);
/// Shortest pacing tick (tokio's timer resolution).
const MIN_TICK: Duration = Duration::from_millis(1);

/// What the run does, from the command line.
pub struct Plan {
    /// Long-lived echo connections.
    pub conns: usize,
    /// Messages per second over all long-lived connections.
    pub rate: f64,
    /// Payload size of every message.
    pub size: usize,
    /// Short-lived connections started per second.
    pub churn_rate: f64,
    /// Short-lived connections open at most at once; starts beyond it are skipped.
    pub churn_max: u64,
    /// Messages each short-lived connection echoes before it ends.
    pub churn_msgs: usize,
    /// Time between two `TICK` lines.
    pub interval: Duration,
    /// Load kept running after the last tick, so samples taken next to it see the load.
    pub hold_after: Duration,
}

/// Counts data frames and sees a Close.
#[derive(Default)]
struct Frames {
    data: u64,
    close: bool,
}

impl Sink for Frames {
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

/// How a short-lived connection ends.
#[derive(Clone, Copy)]
enum Ending {
    /// Close 1000, the Close reply, then the server's FIN.
    Close,
    /// TCP FIN from the client, no Close frame.
    Fin,
    /// TCP RST from the client (SO_LINGER 0), no Close frame.
    Reset,
}

/// Counters shared by the tasks of one run.
#[derive(Clone, Default)]
struct Shared {
    /// Echoes received on long-lived connections.
    msgs: Counter,
    /// Echoes received on short-lived connections.
    churn_msgs: Counter,
    /// Long-lived sends skipped because [`MAX_INFLIGHT`] were unanswered.
    skipped: Counter,
    /// Long-lived connections reopened after a failure.
    reopened: Counter,
    /// Short-lived connections completed, by ending.
    closed: Counter,
    fin: Counter,
    reset: Counter,
    /// Normal closes whose server FIN did not come within [`EOF_WAIT`].
    eof_timeouts: Counter,
    /// Short-lived starts skipped because `churn_max` were open.
    churn_skipped: Counter,
    /// Short-lived connections open now.
    churn_open: Counter,
    churn_ended: Counter,
    /// Failures of either kind.
    errors: Counter,
    /// The first error since the last tick.
    first: Rc<std::cell::RefCell<FirstError>>,
    stop: Flag,
}

impl Shared {
    fn fail(&self, e: impl std::fmt::Display) {
        if !self.stop.get() {
            self.errors.add(1);
            self.first.borrow().record(e);
        }
    }
}

/// The counters at one instant, to print differences per interval.
#[derive(Clone, Copy, Default)]
struct Snapshot {
    msgs: u64,
    churn_msgs: u64,
    skipped: u64,
    reopened: u64,
    closed: u64,
    fin: u64,
    reset: u64,
    eof_timeouts: u64,
    churn_skipped: u64,
    errors: u64,
}

impl Snapshot {
    fn of(sh: &Shared) -> Self {
        Self {
            msgs: sh.msgs.get(),
            churn_msgs: sh.churn_msgs.get(),
            skipped: sh.skipped.get(),
            reopened: sh.reopened.get(),
            closed: sh.closed.get(),
            fin: sh.fin.get(),
            reset: sh.reset.get(),
            eof_timeouts: sh.eof_timeouts.get(),
            churn_skipped: sh.churn_skipped.get(),
            errors: sh.errors.get(),
        }
    }
}

/// Runs the mode and returns its result line.
pub async fn run(c: &Common, p: &Plan) -> Result<String, String> {
    if p.conns == 0 || p.rate <= 0.0 || p.interval.is_zero() || c.duration.is_zero() {
        return Err("soak needs --conns > 0, --rate > 0, --interval > 0, --duration > 0".into());
    }
    let frame = Rc::new(ws::client_frame(
        opcode::BINARY,
        &vec![0x5A_u8; p.size],
        [0x37, 0xFA, 0x21, 0x3D],
    ));
    let sh = Shared::default();
    let per_conn = p.rate / p.conns as f64;
    let period = Duration::from_secs_f64(1.0 / per_conn).max(MIN_TICK);
    for i in 0..p.conns {
        let offset = period.mul_f64(i as f64 / p.conns as f64);
        tokio::task::spawn_local(long_lived(
            c.target.clone(),
            frame.clone(),
            per_conn,
            offset,
            sh.clone(),
        ));
    }
    if p.churn_rate > 0.0 {
        tokio::task::spawn_local(churn(
            c.target.clone(),
            frame.clone(),
            p.churn_rate,
            p.churn_max,
            p.churn_msgs,
            sh.clone(),
        ));
    }
    let t0 = Instant::now();
    let end = t0 + c.duration;
    let (first, mut last) = (Snapshot::of(&sh), Snapshot::of(&sh));
    let (mut cpu, mut since) = (Sampler::start(&c.watch), t0);
    let mut next = t0 + p.interval;
    loop {
        let at = next.min(end);
        tokio::time::sleep_until(at).await;
        let now = Snapshot::of(&sh);
        let secs = since.elapsed().as_secs_f64().max(1e-9);
        let d = |f: fn(&Snapshot) -> u64| f(&now) - f(&last);
        let churned = d(|s| s.closed) + d(|s| s.fin) + d(|s| s.reset);
        println!(
            "TICK elapsed_s={:.0} secs={secs:.3} msgs={} msg_per_s={:.0} churn_conns={churned} \
             churn_per_s={:.0} churn_close={} churn_fin={} churn_reset={} churn_msgs={} \
             churn_open={} churn_skipped={} eof_timeouts={} skipped={} reopened={} {} errors={}",
            t0.elapsed().as_secs_f64(),
            d(|s| s.msgs),
            d(|s| s.msgs) as f64 / secs,
            churned as f64 / secs,
            d(|s| s.closed),
            d(|s| s.fin),
            d(|s| s.reset),
            d(|s| s.churn_msgs),
            sh.churn_open.get() - sh.churn_ended.get(),
            d(|s| s.churn_skipped),
            d(|s| s.eof_timeouts),
            d(|s| s.skipped),
            d(|s| s.reopened),
            cpu.finish(),
            d(|s| s.errors),
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if let Some(e) = sh.first.replace(FirstError::default()).get() {
            eprintln!(
                "soak: at {:.0} s, first error of the interval: {e}",
                t0.elapsed().as_secs_f64()
            );
        }
        (last, since, cpu) = (now, Instant::now(), Sampler::start(&c.watch));
        if at >= end {
            break;
        }
        next += p.interval;
    }
    let secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(p.hold_after).await;
    sh.stop.set();
    let total = |f: fn(&Snapshot) -> u64| f(&last) - f(&first);
    Ok(format!(
        "mode=soak conns={} rate={:.0} size={} churn_rate={:.0} secs={secs:.1} msgs={} msg_per_s={:.0} \
         churn_conns={} churn_per_s={:.0} skipped={} reopened={} errors={}",
        p.conns,
        p.rate,
        p.size,
        p.churn_rate,
        total(|s| s.msgs),
        total(|s| s.msgs) as f64 / secs,
        total(|s| s.closed) + total(|s| s.fin) + total(|s| s.reset),
        (total(|s| s.closed) + total(|s| s.fin) + total(|s| s.reset)) as f64 / secs,
        total(|s| s.skipped),
        total(|s| s.reopened),
        total(|s| s.errors),
    ))
}

/// One long-lived connection slot: paced echo, reopened after a failure.
async fn long_lived(t: Target, frame: Rc<Vec<u8>>, rate: f64, offset: Duration, sh: Shared) {
    while !sh.stop.get() {
        match paced(&t, &frame, rate, offset, &sh).await {
            Ok(()) => return,
            Err(e) => {
                sh.fail(format!("long-lived: {e}"));
                sh.reopened.add(1);
                tokio::time::sleep(RECONNECT_BACKOFF).await;
            }
        }
    }
}

/// Sends `rate` messages/s on one connection and counts the echoes, until the stop flag.
async fn paced(
    t: &Target,
    frame: &[u8],
    rate: f64,
    offset: Duration,
    sh: &Shared,
) -> std::io::Result<()> {
    let (mut conn, leftover) = net::connect_within(t, super::CONNECT_TIMEOUT).await?;
    let (mut parser, mut sink) = (Parser::new(), Frames::default());
    parser.feed(&leftover, &mut sink);
    let period = Duration::from_secs_f64(1.0 / rate).max(MIN_TICK);
    let start = Instant::now() + offset;
    let mut ticks = tokio::time::interval_at(start, period);
    // Late ticks are not replayed: each tick sends whatever the schedule says is due.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let (mut scheduled, mut sent, mut received) = (0u64, 0u64, 0u64);
    let (mut rbuf, mut wbuf) = (vec![0u8; 64 * 1024], Vec::new());
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if sh.stop.get() {
                    return Ok(());
                }
                let due_total = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
                let due = due_total.saturating_sub(scheduled);
                scheduled = scheduled.max(due_total);
                let n = due.min(MAX_INFLIGHT.saturating_sub(sent - received));
                sh.skipped.add(due - n);
                if n > 0 {
                    wbuf.clear();
                    for _ in 0..n {
                        wbuf.extend_from_slice(frame);
                    }
                    conn.write_all(&wbuf).await?;
                    conn.flush().await?;
                    sent += n;
                }
            }
            // `read` is cancel-safe (plain TCP and tokio-rustls alike).
            n = conn.read(&mut rbuf) => {
                let n = n?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed"));
                }
                sink.data = 0;
                parser.feed(&rbuf[..n], &mut sink);
                if sink.close {
                    return Err(std::io::Error::other("server sent Close"));
                }
                received += sink.data;
                sh.msgs.add(sink.data);
            }
        }
    }
}

/// Starts short-lived connections at `rate` per second, at most `max` at once.
async fn churn(t: Target, frame: Rc<Vec<u8>>, rate: f64, max: u64, msgs: usize, sh: Shared) {
    let close = Rc::new(ws::client_frame(
        opcode::CLOSE,
        &1000u16.to_be_bytes(),
        [0x0F, 0x1E, 0x2D, 0x3C],
    ));
    let period = Duration::from_secs_f64(1.0 / rate).max(MIN_TICK);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut started = 0u64;
    while !sh.stop.get() {
        ticks.tick().await;
        let due_total = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
        while started < due_total {
            let ending = match started % 3 {
                0 => Ending::Close,
                1 => Ending::Fin,
                _ => Ending::Reset,
            };
            started += 1;
            if sh.churn_open.get() - sh.churn_ended.get() >= max {
                sh.churn_skipped.add(1);
                continue;
            }
            sh.churn_open.add(1);
            let (t, frame, close, sh) = (t.clone(), frame.clone(), close.clone(), sh.clone());
            tokio::task::spawn_local(async move {
                let life = short_lived(&t, &frame, &close, msgs, ending, &sh);
                match tokio::time::timeout(super::CONNECT_TIMEOUT, life).await {
                    Ok(Ok(())) => match ending {
                        Ending::Close => sh.closed.add(1),
                        Ending::Fin => sh.fin.add(1),
                        Ending::Reset => sh.reset.add(1),
                    },
                    Ok(Err(e)) => sh.fail(format!("short-lived: {e}")),
                    Err(_) => sh.fail("short-lived: timed out"),
                }
                sh.churn_ended.add(1);
            });
        }
    }
}

/// One short-lived connection: connect, `msgs` echoes one at a time, then `ending`.
async fn short_lived(
    t: &Target,
    frame: &[u8],
    close: &[u8],
    msgs: usize,
    ending: Ending,
    sh: &Shared,
) -> std::io::Result<()> {
    let (mut conn, leftover) = net::connect(t).await?;
    let (mut parser, mut sink) = (Parser::new(), Frames::default());
    parser.feed(&leftover, &mut sink);
    let mut buf = [0u8; 1024];
    for _ in 0..msgs {
        conn.write_all(frame).await?;
        conn.flush().await?;
        while sink.data == 0 {
            if sink.close {
                return Err(std::io::Error::other("server sent Close"));
            }
            net::read_frames(&mut conn, &mut buf, &mut parser, &mut sink, "server closed").await?;
        }
        sink.data -= 1;
        sh.churn_msgs.add(1);
    }
    match ending {
        Ending::Close => {
            conn.write_all(close).await?;
            conn.flush().await?;
            while !sink.close {
                net::read_frames(&mut conn, &mut buf, &mut parser, &mut sink, "server closed")
                    .await?;
            }
            let eof = async {
                // Ok(0), a TLS error for a missing close_notify, or a reset all mean "gone".
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            if tokio::time::timeout(EOF_WAIT, eof).await.is_err() {
                sh.eof_timeouts.add(1);
            }
        }
        Ending::Fin => drop(conn),
        Ending::Reset => {
            conn.tcp().set_zero_linger()?;
            drop(conn);
        }
    }
    Ok(())
}
