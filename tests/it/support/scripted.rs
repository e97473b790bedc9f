//! Scripted raw WebSocket peers, for property tests of the relay.
//!
//! A peer writes its [`Script`] at its own pace while it reads, and checks with
//! [`WireCheck`], everything that arrives; a script can stop the reading for a while, so
//! that wsgate's writes to that peer block and backpressure reaches the other peer. Both
//! peers' sockets have small buffers ([`SMALL_BUFFER`]), so a few large frames are enough
//! to fill them. Everything a peer waits for is bounded by the case's deadline, so a run
//! always ends with a [`PeerLog`] saying what was sent, what came back and what was wrong.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use super::frame::{self, CLOSE, Frame, MASK};
use super::http;
use super::strict::WireCheck;
use super::within;

/// Send and receive buffer of the scripted peers' sockets: small, so that a paused reader
/// fills them (and then wsgate's) with a few large frames.
pub const SMALL_BUFFER: u32 = 16 * 1024;

/// Most reads one peer makes in a case (the deadline bounds it long before).
const MAX_READS: usize = 1_000_000;

/// One thing a scripted peer does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Writes this frame exactly as it is (masked or not as it says).
    Send(Frame),
    /// Writes bytes that break the protocol or a limit, then sends nothing more but, when
    /// `reply`, the answer to the Close it receives.
    Violate {
        /// The offending bytes.
        bytes: Vec<u8>,
        /// Whether the peer still answers wsgate's Close.
        reply: bool,
    },
    /// Stops reading for this long, from now.
    PauseReading(Duration),
    /// Waits this long before the next action.
    Sleep(Duration),
}

/// How a script ends once its actions are done.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Sends a Close with this payload.
    Close(Vec<u8>),
    /// Ends its TCP stream (FIN) without a Close, and reads on until wsgate closes.
    Vanish,
    /// Waits for the other side's Close and answers it.
    Await,
}

/// What a peer does, in order.
#[derive(Debug, Clone)]
pub struct Script {
    pub actions: Vec<Action>,
    pub finish: Finish,
}

/// How a peer's sending ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It sent its own Close with this payload (before it received one, or crossing it).
    Closed(Vec<u8>),
    /// It received a Close and answered with the same payload.
    Replied(Vec<u8>),
    /// It ended its stream without a Close.
    Vanished,
    /// It broke the protocol or a limit (its script's last action).
    Violated,
    /// It could not go on: why.
    Unfinished(String),
}

/// What one peer sent and received.
#[derive(Debug)]
pub struct PeerLog {
    /// The frames it wrote whole, in order (not its Close nor a violation).
    pub sent: Vec<Frame>,
    pub ended: Ended,
    /// Every frame it received, in order.
    pub received: Vec<Frame>,
    /// Its stream from wsgate ended cleanly.
    pub eof: bool,
    /// Rules wsgate broke on this peer's wire, and anything else that went wrong.
    pub faults: Vec<String>,
}

impl PeerLog {
    /// The Close payload this peer sent, if it sent a valid Close.
    pub fn close_sent(&self) -> Option<&[u8]> {
        match &self.ended {
            Ended::Closed(p) | Ended::Replied(p) => Some(p),
            _ => None,
        }
    }
}

/// What the reader has heard, for the writer.
#[derive(Debug, Clone)]
enum Heard {
    Nothing,
    /// The first Close received, its payload.
    Close(Vec<u8>),
    /// The stream ended (or failed) with no Close.
    End,
}

/// A socket with [`SMALL_BUFFER`] buffers.
fn small_socket() -> TcpSocket {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(SMALL_BUFFER)
        .expect("SO_RCVBUF");
    socket
        .set_send_buffer_size(SMALL_BUFFER)
        .expect("SO_SNDBUF");
    socket
}

/// Upgrades a small-buffered connection to wsgate at `path` by hand; the stream and the
/// bytes read past the 101.
pub async fn connect_client(addr: SocketAddr, path: &str) -> (TcpStream, Vec<u8>) {
    within("scripted client upgrade", async {
        let mut io = small_socket().connect(addr).await.expect("connect");
        let request = http::upgrade_request(addr, path, &[]);
        io.write_all(request.as_bytes())
            .await
            .expect("write upgrade");
        let mut buf = Vec::new();
        let head = http::read_head(&mut io, &mut buf)
            .await
            .expect("no upgrade response");
        assert_eq!(head.status(), 101, "upgrade refused: {head:?}");
        (io, buf)
    })
    .await
}

/// A backend listener whose connections have small buffers and answer the upgrade with a
/// correct 101, then belong to the test.
pub struct ScriptedBackend {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl ScriptedBackend {
    /// Listens on 127.0.0.1:0.
    pub fn bind() -> ScriptedBackend {
        let socket = small_socket();
        socket
            .bind("127.0.0.1:0".parse().expect("a literal address"))
            .expect("bind backend");
        let listener = socket.listen(16).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        ScriptedBackend { listener, addr }
    }

    /// Accepts one connection and answers its upgrade; the stream and the bytes read past
    /// the request head.
    pub async fn accept(&self) -> (TcpStream, Vec<u8>) {
        within("scripted backend accept", async {
            let (mut io, _) = self.listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let request = http::read_head(&mut io, &mut buf)
                .await
                .expect("no upgrade request");
            let key = request.header("sec-websocket-key").unwrap_or_default();
            http::write_101(&mut io, &http::accept_key(key), &[]).await;
            (io, buf)
        })
        .await
    }
}

/// Runs `script` on `io` (the client's side when `is_client`) until the stream from wsgate
/// ends or `deadline` passes.
pub async fn run(
    io: TcpStream,
    leftover: Vec<u8>,
    is_client: bool,
    script: Script,
    deadline: Instant,
) -> PeerLog {
    let (read, write) = io.into_split();
    let (heard_tx, heard_rx) = watch::channel(Heard::Nothing);
    let pause = Arc::new(Mutex::new(None));
    let wire = WireCheck::new(!is_client);
    let reader = read_all(read, leftover, wire, heard_tx, pause.clone(), deadline);
    let writer = write_script(write, is_client, script, heard_rx, pause, deadline);
    let ((received, eof, faults), (sent, ended)) = tokio::join!(reader, writer);
    PeerLog {
        sent,
        ended,
        received,
        eof,
        faults,
    }
}

/// Reads and checks frames until EOF (true), a failure or the deadline (false).
async fn read_all(
    mut io: OwnedReadHalf,
    mut buf: Vec<u8>,
    mut wire: WireCheck,
    heard: watch::Sender<Heard>,
    pause: Arc<Mutex<Option<Instant>>>,
    deadline: Instant,
) -> (Vec<Frame>, bool, Vec<String>) {
    let mut received = Vec::new();
    let mut faults = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut eof = false;
    'reading: for _ in 0..MAX_READS {
        loop {
            match frame::decode(&buf) {
                Ok(Some((frame, used))) => {
                    if let Err(e) = wire.check(&frame, used) {
                        faults.push(format!("frame #{}: {e}: {frame:?}", received.len()));
                    }
                    if frame.opcode == CLOSE {
                        heard.send_if_modified(|h| match h {
                            Heard::Nothing => {
                                *h = Heard::Close(frame.payload.clone());
                                true
                            }
                            _ => false,
                        });
                    }
                    buf.drain(..used);
                    received.push(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    faults.push(format!("undecodable bytes: {e}"));
                    break 'reading;
                }
            }
        }
        // Poisoned only if the writer panicked, and then the case fails anyway.
        let paused = *pause.lock().unwrap();
        if let Some(until) = paused {
            tokio::time::sleep_until(until.min(deadline)).await;
        }
        match timeout_at(deadline, io.read(&mut chunk)).await {
            Err(_) => {
                faults.push("wsgate did not end the stream before the case deadline".into());
                break;
            }
            Ok(Ok(0)) => {
                if !buf.is_empty() {
                    faults.push(format!("stream ended inside a frame ({} bytes)", buf.len()));
                }
                eof = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => {
                faults.push(format!("read failed: {e}"));
                break;
            }
        }
    }
    heard.send_if_modified(|h| match h {
        Heard::Nothing => {
            *h = Heard::End;
            true
        }
        _ => false,
    });
    (received, eof, faults)
}

/// Writes the script; stops early (answering it) when a Close arrives.
async fn write_script(
    mut io: OwnedWriteHalf,
    is_client: bool,
    script: Script,
    mut heard: watch::Receiver<Heard>,
    pause: Arc<Mutex<Option<Instant>>>,
    deadline: Instant,
) -> (Vec<Frame>, Ended) {
    let mut sent = Vec::new();
    for action in script.actions {
        let now = heard.borrow().clone();
        match now {
            Heard::Close(payload) => {
                let ended = reply(&mut io, is_client, payload, deadline).await;
                return (sent, ended);
            }
            Heard::End => return (sent, Ended::Unfinished("stream ended mid-script".into())),
            Heard::Nothing => {}
        }
        match action {
            Action::Send(frame) => {
                if let Err(e) = write(&mut io, &frame.encode(), deadline).await {
                    return (sent, Ended::Unfinished(e));
                }
                sent.push(frame);
            }
            Action::Violate {
                bytes,
                reply: answer,
            } => {
                if let Err(e) = write(&mut io, &bytes, deadline).await {
                    return (sent, Ended::Unfinished(e));
                }
                if answer && let Some(payload) = wait_close(&mut heard, deadline).await {
                    reply(&mut io, is_client, payload, deadline).await;
                }
                return (sent, Ended::Violated);
            }
            Action::PauseReading(d) => *pause.lock().unwrap() = Some(Instant::now() + d),
            Action::Sleep(d) => tokio::time::sleep(d).await,
        }
    }
    let ended = match script.finish {
        Finish::Close(payload) => {
            let now = heard.borrow().clone();
            if let Heard::Close(theirs) = now {
                reply(&mut io, is_client, theirs, deadline).await
            } else {
                let close = masked(Frame::new(CLOSE, payload.clone()), is_client);
                match write(&mut io, &close.encode(), deadline).await {
                    Ok(()) => Ended::Closed(payload),
                    Err(e) => Ended::Unfinished(e),
                }
            }
        }
        Finish::Vanish => {
            let _ = timeout_at(deadline, io.shutdown()).await;
            Ended::Vanished
        }
        Finish::Await => match wait_close(&mut heard, deadline).await {
            Some(payload) => reply(&mut io, is_client, payload, deadline).await,
            None => Ended::Unfinished("no Close came to answer".into()),
        },
    };
    (sent, ended)
}

/// The first Close's payload, once it arrives (None if the stream ends or the deadline
/// passes first).
async fn wait_close(heard: &mut watch::Receiver<Heard>, deadline: Instant) -> Option<Vec<u8>> {
    let seen = timeout_at(deadline, heard.wait_for(|h| !matches!(h, Heard::Nothing))).await;
    match seen.ok()?.ok()?.clone() {
        Heard::Close(payload) => Some(payload),
        _ => None,
    }
}

/// Answers a Close with the same payload.
async fn reply(
    io: &mut OwnedWriteHalf,
    is_client: bool,
    payload: Vec<u8>,
    deadline: Instant,
) -> Ended {
    let close = masked(Frame::new(CLOSE, payload.clone()), is_client);
    match write(io, &close.encode(), deadline).await {
        Ok(()) => Ended::Replied(payload),
        Err(e) => Ended::Unfinished(e),
    }
}

/// Masks a frame of ours when we are the client.
fn masked(mut frame: Frame, is_client: bool) -> Frame {
    if is_client {
        frame.mask = Some(MASK);
    }
    frame
}

/// Writes all of `bytes` before the deadline.
async fn write(io: &mut OwnedWriteHalf, bytes: &[u8], deadline: Instant) -> Result<(), String> {
    match timeout_at(deadline, io.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err("write still blocked at the case deadline".into()),
    }
}
