//! `connrate`: C workers, each looping connect (+ TLS) → upgrade → Close → Close reply
//! → wait for the server's FIN, counting the cycles that end inside the window.
//!
//! The server closes TCP first (RFC 6455 §7.1.1), so TIME_WAIT stays on the server's
//! side and the load generator does not run out of ephemeral ports. A server that does
//! not close within [`EOF_WAIT`] is counted in `eof_timeouts` (and the cycle still
//! counts: the WebSocket close handshake did complete).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Common, Counter, FirstError, Flag};
use crate::cpu::Sampler;
use crate::net::{self, Target};
use crate::ws::{self, Header, Parser, Sink, opcode};

/// How long to wait for the server to close TCP after the close handshake.
const EOF_WAIT: Duration = Duration::from_secs(1);
/// Pause after a failed cycle, so a refusing target is not hammered in a hot loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);

#[derive(Default)]
struct SeeClose {
    close: bool,
}

impl Sink for SeeClose {
    fn header(&mut self, _: &Header) {}
    fn payload(&mut self, _: &Header, _: &[u8], _: u64) {}
    fn end(&mut self, h: &Header) {
        self.close |= h.opcode() == opcode::CLOSE;
    }
}

#[derive(Clone)]
struct Shared {
    window: Rc<std::cell::Cell<(Instant, Instant)>>,
    done: Counter,
    errors: Counter,
    eof_timeouts: Counter,
    first: FirstError,
    stop: Flag,
    cycle_time: Rc<RefCell<Histogram<u64>>>,
}

/// Runs the mode and returns its result line.
pub async fn run(c: &Common, concurrency: usize) -> Result<String, String> {
    let far = Instant::now() + Duration::from_secs(86_400);
    let sh = Shared {
        window: Rc::new(std::cell::Cell::new((far, far))),
        done: Counter::default(),
        errors: Counter::default(),
        eof_timeouts: Counter::default(),
        first: FirstError::default(),
        stop: Flag::default(),
        cycle_time: Rc::new(RefCell::new(
            Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds are valid"),
        )),
    };
    for _ in 0..concurrency {
        tokio::task::spawn_local(worker(c.target.clone(), sh.clone()));
    }
    tokio::time::sleep(c.warmup).await;
    let (t0, cpu) = (Instant::now(), Sampler::start(&c.watch));
    sh.window.set((t0, t0 + c.duration));
    let e0 = sh.errors.get();
    tokio::time::sleep(c.duration).await;
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu.finish());
    sh.stop.set();
    let (done, errors) = (sh.done.get(), sh.errors.get() - e0);
    if done == 0 {
        return Err(format!(
            "no connection completed; first error: {}",
            sh.first.get().unwrap_or_default()
        ));
    }
    let h = sh.cycle_time.borrow();
    let us = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Ok(format!(
        "mode=connrate concurrency={concurrency} tls={} secs={secs:.3} conns={done} conn_per_s={:.0} \
         cycle_p50_us={:.1} cycle_p99_us={:.1} eof_timeouts={} {cpu} errors={errors}{}",
        c.target.tls.is_some(),
        done as f64 / secs,
        us(0.5),
        us(0.99),
        sh.eof_timeouts.get(),
        sh.first
            .get()
            .map(|e| format!(" first_error={:?}", e))
            .unwrap_or_default(),
    ))
}

async fn worker(t: Target, sh: Shared) {
    let close = ws::client_frame(
        opcode::CLOSE,
        &1000u16.to_be_bytes(),
        [0x0F, 0x1E, 0x2D, 0x3C],
    );
    while !sh.stop.get() {
        let t0 = Instant::now();
        match tokio::time::timeout(super::CONNECT_TIMEOUT, cycle(&t, &close)).await {
            Ok(Ok(eof_in_time)) => {
                let t1 = Instant::now();
                let (from, to) = sh.window.get();
                if t1 >= from && t1 <= to {
                    sh.done.add(1);
                    sh.eof_timeouts.add(u64::from(!eof_in_time));
                    let _ = sh
                        .cycle_time
                        .borrow_mut()
                        .record((t1 - t0).as_nanos().max(1) as u64);
                }
            }
            Ok(Err(e)) => {
                sh.errors.add(1);
                sh.first.record(e);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
            Err(_) => {
                sh.errors.add(1);
                sh.first.record("cycle timed out");
            }
        }
    }
}

/// One connection's life; returns whether the server closed TCP within [`EOF_WAIT`].
async fn cycle(t: &Target, close: &[u8]) -> std::io::Result<bool> {
    let (mut conn, leftover) = net::connect(t).await?;
    conn.write_all(close).await?;
    conn.flush().await?;
    let (mut parser, mut sink) = (Parser::new(), SeeClose::default());
    parser.feed(&leftover, &mut sink);
    let mut buf = [0u8; 512];
    while !sink.close {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before the Close reply",
            ));
        }
        parser.feed(&buf[..n], &mut sink);
    }
    let eof = async {
        // Ok(0), a TLS error for a missing close_notify, or a reset all mean "gone".
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    Ok(tokio::time::timeout(EOF_WAIT, eof).await.is_ok())
}
