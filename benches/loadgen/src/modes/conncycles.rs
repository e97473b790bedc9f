//! `conncycles`: a fixed number of whole connection lives, for counting what one costs
//! (benches/callgrind.sh `conn`): C workers share N cycles, each cycle connect (+ TLS) →
//! upgrade → one binary message of `size` bytes and its echo → Close → Close reply → the
//! server's FIN. Unlike `connrate` (a timed window) every cycle is counted, so the work a
//! proxy did for the run is exactly N connections.
//!
//! A cycle that fails counts in `errors` (the run fails if every cycle did); a server
//! that does not close TCP within [`EOF_WAIT`] counts in `eof_timeouts`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Common, Counter, FirstError};
use crate::net::{self, Target};
use crate::ws::{self, Header, Parser, Sink, opcode};

/// How long to wait for the server to close TCP after the close handshake.
const EOF_WAIT: Duration = Duration::from_secs(1);
/// Longest one cycle may take before it counts as an error.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Sees the echoed data frame and the Close.
#[derive(Default)]
struct SeeFrames {
    data: bool,
    close: bool,
}

impl Sink for SeeFrames {
    fn header(&mut self, _: &Header) {}
    fn payload(&mut self, _: &Header, _: &[u8], _: u64) {}
    fn end(&mut self, h: &Header) {
        match h.opcode() {
            opcode::CLOSE => self.close = true,
            op if op < 0x8 => self.data = true,
            _ => {}
        }
    }
}

#[derive(Clone, Default)]
struct Shared {
    started: Counter,
    done: Counter,
    errors: Counter,
    eof_timeouts: Counter,
    first: FirstError,
}

/// Runs `cycles` connection lives on `concurrency` workers; returns the result line.
pub async fn run(
    c: &Common,
    cycles: u64,
    concurrency: usize,
    size: usize,
) -> Result<String, String> {
    let message = ws::client_frame(opcode::BINARY, &vec![0x5A; size], [0x37, 0xFA, 0x21, 0x3D]);
    let close = ws::client_frame(
        opcode::CLOSE,
        &1000u16.to_be_bytes(),
        [0x0F, 0x1E, 0x2D, 0x3C],
    );
    let sh = Shared::default();
    let t0 = tokio::time::Instant::now();
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (t, sh) = (c.target.clone(), sh.clone());
            let (message, close) = (message.clone(), close.clone());
            tokio::task::spawn_local(async move {
                while sh.started.get() < cycles {
                    sh.started.add(1);
                    match tokio::time::timeout(CYCLE_TIMEOUT, cycle(&t, &message, &close)).await {
                        Ok(Ok(eof_in_time)) => {
                            sh.done.add(1);
                            sh.eof_timeouts.add(u64::from(!eof_in_time));
                        }
                        Ok(Err(e)) => {
                            sh.errors.add(1);
                            sh.first.record(e);
                        }
                        Err(_) => {
                            sh.errors.add(1);
                            sh.first.record("cycle timed out");
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let done = sh.done.get();
    if done == 0 {
        return Err(format!(
            "no connection completed; first error: {}",
            sh.first.get().unwrap_or_default()
        ));
    }
    Ok(format!(
        "mode=conncycles concurrency={concurrency} tls={} size={size} secs={secs:.3} conns={done} \
         conn_per_s={:.0} eof_timeouts={} errors={}{}",
        c.target.tls.is_some(),
        done as f64 / secs,
        sh.eof_timeouts.get(),
        sh.errors.get(),
        sh.first
            .get()
            .map(|e| format!(" first_error={e:?}"))
            .unwrap_or_default(),
    ))
}

/// What a connection that ends early had not delivered yet.
const GONE: &str = "closed before the echo and the Close reply";

/// One connection's life; returns whether the server closed TCP within [`EOF_WAIT`].
async fn cycle(t: &Target, message: &[u8], close: &[u8]) -> std::io::Result<bool> {
    let (mut conn, leftover) = net::connect(t).await?;
    let (mut parser, mut sink) = (Parser::new(), SeeFrames::default());
    parser.feed(&leftover, &mut sink);
    let mut buf = [0u8; 4096];
    conn.write_all(message).await?;
    conn.flush().await?;
    while !sink.data {
        net::read_frames(&mut conn, &mut buf, &mut parser, &mut sink, GONE).await?;
    }
    conn.write_all(close).await?;
    conn.flush().await?;
    while !sink.close {
        net::read_frames(&mut conn, &mut buf, &mut parser, &mut sink, GONE).await?;
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
