//! `latency`: a fixed aggregate rate spread evenly over N connections; round-trip times
//! go into an HDR histogram.
//!
//! Each message carries its send time (nanoseconds since the run's base instant) in its
//! first 8 payload bytes, so replies need no bookkeeping on this side. The send time is
//! taken just before the write, not the scheduled tick: tokio's timer has 1 ms
//! granularity, and charging that lag to the target would swamp sub-millisecond round
//! trips. `send_lag_p99_us` reports how late sends were against their schedule, so a
//! load generator that fell behind (coordinated omission) shows up in the result.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::MissedTickBehavior;

use super::{Common, Counter, FirstError, Flag, all_connected};
use crate::cpu::Sampler;
use crate::net;
use crate::ws::{self, Header, Parser, Sink, opcode};

/// Histograms cover 1 ns to 60 s with 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds are valid")
}

/// Collects the send-time stamps of complete data frames.
#[derive(Default)]
struct Stamps {
    cur: [u8; 8],
    done: Vec<u64>,
    close: bool,
}

impl Sink for Stamps {
    fn header(&mut self, _: &Header) {
        self.cur = [0; 8];
    }
    fn payload(&mut self, _: &Header, data: &[u8], offset: u64) {
        if offset < 8 {
            let o = offset as usize;
            let n = (8 - o).min(data.len());
            self.cur[o..o + n].copy_from_slice(&data[..n]);
        }
    }
    fn end(&mut self, h: &Header) {
        match h.opcode() {
            opcode::CLOSE => self.close = true,
            op if op < 0x8 => self.done.push(u64::from_le_bytes(self.cur)),
            _ => {}
        }
    }
}

#[derive(Clone)]
struct Shared {
    base: Instant,
    /// Replies to messages sent before this many ns after `base` are not recorded.
    record_from_ns: Rc<std::cell::Cell<u64>>,
    rtt: Rc<RefCell<Histogram<u64>>>,
    lag: Rc<RefCell<Histogram<u64>>>,
    sent: Counter,
    received: Counter,
    connected: Counter,
    errors: Counter,
    first: FirstError,
    go: Rc<tokio::sync::Notify>,
    started: Flag,
    stop: Flag,
}

/// Runs the mode and returns its result line.
pub async fn run(c: &Common, conns: usize, rate: f64, size: usize) -> Result<String, String> {
    if rate <= 0.0 || size < 8 {
        return Err("latency needs --rate > 0 and --size >= 8".into());
    }
    let sh = Shared {
        base: Instant::now(),
        record_from_ns: Rc::new(std::cell::Cell::new(u64::MAX)),
        rtt: Rc::new(RefCell::new(histogram())),
        lag: Rc::new(RefCell::new(histogram())),
        sent: Counter::default(),
        received: Counter::default(),
        connected: Counter::default(),
        errors: Counter::default(),
        first: FirstError::default(),
        go: Rc::new(tokio::sync::Notify::new()),
        started: Flag::default(),
        stop: Flag::default(),
    };
    let period = Duration::from_secs_f64(conns as f64 / rate);
    for i in 0..conns {
        let offset = period.mul_f64(i as f64 / conns as f64);
        tokio::task::spawn_local(connection(
            c.target.clone(),
            size,
            period,
            offset,
            sh.clone(),
        ));
    }
    all_connected(conns, &sh.connected, &sh.errors, &sh.first).await?;
    sh.started.set();
    sh.go.notify_waiters();
    tokio::time::sleep(c.warmup).await;
    sh.record_from_ns.set(sh.base.elapsed().as_nanos() as u64);
    let (s0, t0, cpu) = (sh.sent.get(), Instant::now(), Sampler::start(&c.watch));
    tokio::time::sleep(c.duration).await;
    let (s1, secs, cpu) = (sh.sent.get(), t0.elapsed().as_secs_f64(), cpu.finish());
    sh.stop.set();
    super::no_failures(&sh.errors, &sh.first)?;
    let (h, lag) = (sh.rtt.borrow(), sh.lag.borrow());
    let us = |ns: u64| ns as f64 / 1000.0;
    let q = |p: f64| us(h.value_at_quantile(p));
    let in_flight = sh.sent.get().saturating_sub(sh.received.get());
    Ok(format!(
        "mode=latency conns={conns} rate={rate:.0} size={size} secs={secs:.3} sent_per_s={:.0} samples={} \
         p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} mean_us={:.1} \
         send_lag_p99_us={:.1} in_flight_at_end={in_flight} {cpu} errors=0",
        (s1 - s0) as f64 / secs,
        h.len(),
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        us(h.max()),
        h.mean() / 1000.0,
        us(lag.value_at_quantile(0.99)),
    ))
}

async fn connection(t: net::Target, size: usize, period: Duration, offset: Duration, sh: Shared) {
    if let Err(e) = pump(&t, size, period, offset, &sh).await
        && !sh.stop.get()
    {
        sh.errors.add(1);
        sh.first.record(e);
    }
}

async fn pump(
    t: &net::Target,
    size: usize,
    period: Duration,
    offset: Duration,
    sh: &Shared,
) -> std::io::Result<()> {
    let (mut conn, leftover) = net::connect_within(t, super::CONNECT_TIMEOUT).await?;
    sh.connected.add(1);
    let (mut parser, mut sink) = (Parser::new(), Stamps::default());
    parser.feed(&leftover, &mut sink);
    if !sh.started.get() {
        sh.go.notified().await;
    }
    let key = [0x5C, 0x11, 0xA7, 0x42];
    let mut payload = vec![0x5A_u8; size];
    let mut frame = Vec::with_capacity(size + ws::MAX_HEADER);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut rbuf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            scheduled = ticks.tick() => {
                if sh.stop.get() {
                    return Ok(());
                }
                let now = Instant::now();
                let lag = now.saturating_duration_since(scheduled);
                let _ = sh.lag.borrow_mut().record(lag.as_nanos().max(1) as u64);
                let stamp = now.duration_since(sh.base).as_nanos() as u64;
                payload[..8].copy_from_slice(&stamp.to_le_bytes());
                frame.clear();
                ws::put_header(&mut frame, opcode::BINARY, size, Some(key));
                let start = frame.len();
                frame.extend_from_slice(&payload);
                ws::apply_mask(&mut frame[start..], key, 0);
                conn.write_all(&frame).await?;
                conn.flush().await?;
                sh.sent.add(1);
            }
            // `read` is cancel-safe (plain TCP and tokio-rustls alike): losing the race
            // to a tick consumes nothing.
            n = conn.read(&mut rbuf) => {
                let n = n?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "server closed"));
                }
                parser.feed(&rbuf[..n], &mut sink);
                if sink.close {
                    return Err(std::io::Error::other("server sent Close"));
                }
                let now = sh.base.elapsed().as_nanos() as u64;
                let from = sh.record_from_ns.get();
                let mut rtt = sh.rtt.borrow_mut();
                for &stamp in &sink.done {
                    if stamp >= from {
                        let _ = rtt.record(now.saturating_sub(stamp).max(1));
                    }
                }
                sh.received.add(sink.done.len() as u64);
                sink.done.clear();
            }
        }
    }
}
