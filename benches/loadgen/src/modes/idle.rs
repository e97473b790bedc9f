//! `idle`: opens N upgraded connections, prints `ALL_OPEN …` once they all are, holds
//! them for a while (so the proxy's RSS can be read), then resets them all.
//!
//! With `--echo-first true` each connection first sends one 64 B message and waits for
//! its echo, so the proxy's per-connection buffers have been used once: the memory of a
//! connection that has talked and is now quiet, rather than of one that never did.

use std::cell::RefCell;
use std::io::Write as _;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::{Common, Counter, FirstError, wait_until};
use crate::net::{self, Conn, Target};
use crate::ws::{self, Header, Parser, Sink, opcode};

/// Longest time allowed for opening all connections.
const OPEN_LIMIT: Duration = Duration::from_secs(180);

/// Runs the mode and returns its result line.
pub async fn run(
    c: &Common,
    conns: usize,
    concurrency: usize,
    hold: Duration,
    echo_first: bool,
) -> Result<String, String> {
    let open: Rc<RefCell<Vec<Conn>>> = Rc::new(RefCell::new(Vec::with_capacity(conns)));
    let (claimed, errors, first) = (
        Counter::default(),
        Counter::default(),
        FirstError::default(),
    );
    let t0 = Instant::now();
    for _ in 0..concurrency.min(conns) {
        let (t, open, claimed, errors, first) = (
            c.target.clone(),
            open.clone(),
            claimed.clone(),
            errors.clone(),
            first.clone(),
        );
        tokio::task::spawn_local(async move {
            while claimed.get() < conns as u64 {
                claimed.add(1);
                let opened = tokio::time::timeout(super::CONNECT_TIMEOUT, open_one(&t, echo_first));
                match opened.await {
                    Ok(Ok(conn)) => open.borrow_mut().push(conn),
                    Ok(Err(e)) => {
                        errors.add(1);
                        first.record(e);
                    }
                    Err(_) => {
                        errors.add(1);
                        first.record("connect (+ echo) timed out");
                    }
                }
            }
        });
    }
    let total = || open.borrow().len() as u64 + errors.get();
    let finished = wait_until(OPEN_LIMIT, || total() >= conns as u64).await;
    let (n, secs) = (open.borrow().len(), t0.elapsed().as_secs_f64());
    println!(
        "ALL_OPEN open={n} errors={} secs={secs:.2} finished={finished}",
        errors.get()
    );
    let _ = std::io::stdout().flush();
    tokio::time::sleep(hold).await;
    reset_all(&open.borrow());
    open.borrow_mut().clear();
    if n < conns {
        let why = first.get().unwrap_or_default();
        return Err(format!("opened {n} of {conns}; first error: {why}"));
    }
    Ok(format!(
        "mode=idle conns={n} echo_first={echo_first} open_secs={secs:.2} open_per_s={:.0} errors=0",
        n as f64 / secs
    ))
}

/// Sees the end of the first data frame.
#[derive(Default)]
struct FirstData {
    done: bool,
}

impl Sink for FirstData {
    fn header(&mut self, _: &Header) {}
    fn payload(&mut self, _: &Header, _: &[u8], _: u64) {}
    fn end(&mut self, h: &Header) {
        self.done |= h.opcode() < 0x8;
    }
}

/// One upgraded connection, after one echoed message if `echo_first`.
async fn open_one(t: &Target, echo_first: bool) -> std::io::Result<Conn> {
    let (mut conn, leftover) = net::connect(t).await?;
    if !echo_first {
        return Ok(conn);
    }
    let frame = ws::client_frame(opcode::BINARY, &[0x5A; 64], [0x21, 0x43, 0x65, 0x87]);
    conn.write_all(&frame).await?;
    conn.flush().await?;
    let (mut parser, mut sink) = (Parser::new(), FirstData::default());
    parser.feed(&leftover, &mut sink);
    let mut buf = [0u8; 256];
    while !sink.done {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            let e =
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the echo");
            return Err(e);
        }
        parser.feed(&buf[..n], &mut sink);
    }
    Ok(conn)
}

/// SO_LINGER 0: closing sends RST, so 9,000 client ports do not sit in TIME_WAIT.
fn reset_all(conns: &[Conn]) {
    for c in conns {
        let _ = c.tcp().set_zero_linger();
    }
}
