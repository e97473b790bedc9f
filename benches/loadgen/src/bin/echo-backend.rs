//! A fast WebSocket echo server for benchmarks: one `current_thread` runtime, raw TCP,
//! the server side of the upgrade, and a streaming echo that unmasks payload bytes as
//! they arrive (no per-connection read buffer: reads go into one scratch buffer per
//! thread, so an idle connection costs a task and a socket). Pings get Pongs, a Close
//! is echoed and then the server closes TCP first.
//!
//! ```text
//! echo-backend --listen 127.0.0.1:PORT
//! ```

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use wsgate_loadgen::args::Args;
use wsgate_loadgen::ws::{self, Header, Parser, Sink, opcode};

/// Scratch read buffer shared by all connections of the thread.
const SCRATCH: usize = 256 * 1024;
/// Longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// An output buffer that grew past this is released after use.
const KEEP_OUT: usize = 1024 * 1024;
/// Pause after a failed accept (EMFILE and the like) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

fn main() -> ExitCode {
    let listen = Args::parse(std::env::args().skip(1)).and_then(|mut a| {
        let l: SocketAddr = a.get("listen", "127.0.0.1:9001".parse().expect("literal address"))?;
        a.finish()?;
        Ok(l)
    });
    let listen = match listen {
        Ok(l) if l.ip().is_loopback() => l,
        Ok(l) => {
            eprintln!("echo-backend: {l}: loopback only");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("echo-backend: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime.and_then(|rt| tokio::task::LocalSet::new().block_on(&rt, serve(listen)));
    if let Err(e) = result {
        eprintln!("echo-backend: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn serve(addr: SocketAddr) -> io::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    eprintln!("echo-backend: listening on {addr}");
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(async move {
                    let _ = connection(stream).await;
                });
            }
            Err(e) => {
                eprintln!("echo-backend: accept: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Turns client frames into server frames: same FIN/opcode (Ping → Pong), unmasked.
#[derive(Default)]
struct Echo {
    out: Vec<u8>,
    closed: bool,
}

impl Sink for Echo {
    fn header(&mut self, h: &Header) {
        let mut first = h.first & 0x8F;
        if h.opcode() == opcode::PING {
            first = (first & 0xF0) | opcode::PONG;
        }
        ws::put_header_raw(&mut self.out, first, h.len, None);
    }
    fn payload(&mut self, h: &Header, data: &[u8], offset: u64) {
        let start = self.out.len();
        self.out.extend_from_slice(data);
        if let Some(key) = h.mask {
            ws::apply_mask(&mut self.out[start..], key, offset);
        }
    }
    fn end(&mut self, h: &Header) {
        self.closed |= h.opcode() == opcode::CLOSE;
    }
}

async fn connection(mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    let leftover = handshake(&mut s).await?;
    let (mut parser, mut echo) = (Parser::new(), Echo::default());
    parser.feed(&leftover, &mut echo);
    drop(leftover);
    loop {
        if !echo.out.is_empty() {
            s.write_all(&echo.out).await?;
            echo.out.clear();
            if echo.out.capacity() > KEEP_OUT {
                echo.out = Vec::new();
            }
        }
        if echo.closed {
            return s.shutdown().await;
        }
        s.readable().await?;
        let got = READ_BUF.with_borrow_mut(|buf| match s.try_read(buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                parser.feed(&buf[..n], &mut echo);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        })?;
        if !got {
            return Ok(());
        }
    }
}

/// Reads the upgrade request, answers 101, returns the bytes that followed the head.
async fn handshake(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let end = loop {
        if s.read_buf(&mut head).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed during upgrade",
            ));
        }
        if let Some(end) = ws::head_end(&head) {
            break end;
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("request head too long"));
        }
    };
    let Some(key) = ws::header_value(&head[..end], "sec-websocket-key") else {
        s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Err(io::Error::other("not a WebSocket upgrade"));
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        ws::accept_key(key)
    );
    s.write_all(response.as_bytes()).await?;
    Ok(head.split_off(end))
}
