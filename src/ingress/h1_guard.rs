//! The client hop of an HTTP/1.1 connection, beneath hyper: every byte hyper reads is
//! followed by [`Scanner`] as it passes (nothing is copied or held), which finds the
//! request heads hyper would normalise silently (`Content-Length` beside
//! `Transfer-Encoding`, bare LF line ends, …) and tells [`request`](super::request) through
//! the connection's [`Inspection`]; and a write that stays blocked longer than
//! `http_idle_timeout` (a client that stopped reading) fails, so hyper ends the connection.
//!
//! After an upgrade the relay takes the bare stream back ([`recover`]): no guard, no cost
//! per frame.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::proto::h1_scan::{Refusal, Scanner, Stop};
use crate::shared::stream::Stream;

/// What the guard learned about its connection, shared with the requests hyper reads.
#[derive(Debug)]
pub(crate) struct Inspection {
    /// Requests handed to the service so far: the next one's index.
    served: AtomicU64,
    /// The index of the head where the scan stopped (`u64::MAX`: it has not).
    stopped_at: AtomicU64,
    /// Why: 0 for an upgrade, else a [`Refusal::code`].
    why: AtomicU8,
    /// A write stalled past the deadline.
    stalled: AtomicBool,
}

/// What the guard says of one request, in the order hyper reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadCheck {
    /// Inspected, nothing wrong.
    Clean,
    /// Refused: answer 400 and close, send it nowhere.
    Refused(Refusal),
    /// An upgrade request, after which the guard no longer follows the connection: unless
    /// the answer is a 101 the connection must close after it.
    Upgrade,
    /// A request after the guard stopped following the connection (no answer should
    /// have let one come): refused.
    Unseen,
}

impl Inspection {
    fn new() -> Inspection {
        Inspection {
            served: AtomicU64::new(0),
            stopped_at: AtomicU64::new(u64::MAX),
            why: AtomicU8::new(0),
            stalled: AtomicBool::new(false),
        }
    }

    /// The verdict on the next request hyper hands to the service (call once per request).
    pub(crate) fn next_request(&self) -> HeadCheck {
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        let stopped_at = self.stopped_at.load(Ordering::Acquire);
        if index < stopped_at {
            return HeadCheck::Clean;
        }
        if index > stopped_at {
            return HeadCheck::Unseen;
        }
        match Refusal::from_code(self.why.load(Ordering::Relaxed)) {
            Some(r) => HeadCheck::Refused(r),
            None => HeadCheck::Upgrade,
        }
    }

    /// Whether the client stopped reading and the connection was ended for it.
    pub(crate) fn client_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    fn stopped(&self, at: u64, stop: Stop) {
        let why = match stop {
            Stop::Upgrade => 0,
            Stop::Refused(r) => r.code(),
        };
        self.why.store(why, Ordering::Relaxed);
        self.stopped_at.store(at, Ordering::Release);
    }
}

/// The client's stream with the request scan and the write-stall deadline.
pub(crate) struct H1Guard {
    io: Stream,
    /// Bytes read from `io` before hyper took the connection over (by the HTTP/1.1 fast
    /// path, which hands on what is not an upgrade it serves), read first.
    read_ahead: BytesMut,
    scan: Scanner,
    inspection: Arc<Inspection>,
    /// The scan's stop was told to `inspection`.
    told: bool,
    /// A chunked body broke: the next read fails.
    broken: bool,
    /// 0 = no deadline.
    stall_after: Duration,
    /// Created on the first blocked write only, so a connection that never blocks costs
    /// nothing for it; kept afterwards and moved for each new stall.
    stall: Option<Pin<Box<Sleep>>>,
    /// The last write or flush was blocked (the deadline runs from its first block).
    stalling: bool,
}

impl H1Guard {
    /// Guards `io`, whose first bytes are `read_ahead` (already read from it); a write
    /// blocked for longer than `stall_after` (0: never) fails.
    pub(crate) fn new(io: Stream, read_ahead: BytesMut, stall_after: Duration) -> H1Guard {
        H1Guard {
            io,
            read_ahead,
            scan: Scanner::new(),
            inspection: Arc::new(Inspection::new()),
            told: false,
            broken: false,
            stall_after,
            stall: None,
            stalling: false,
        }
    }

    /// The connection's inspection, for the service.
    pub(crate) fn inspection(&self) -> Arc<Inspection> {
        self.inspection.clone()
    }

    /// Moves read-ahead bytes into `buf` (the first reads only: kept out of line, so the
    /// read every request takes stays as it was).
    #[inline(never)]
    fn take_read_ahead(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.read_ahead.len().min(buf.remaining());
        buf.put_slice(&self.read_ahead[..n]);
        self.read_ahead.advance(n);
        if self.read_ahead.is_empty() {
            // Its allocation is not kept for the connection's life.
            self.read_ahead = BytesMut::new();
        }
    }

    /// `polled`, a write-side poll of the stream, with the stall deadline applied.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() || self.stall_after.is_zero() {
            self.stalling = false;
            return polled;
        }
        if !std::mem::replace(&mut self.stalling, true) {
            let deadline = Instant::now() + self.stall_after;
            match &mut self.stall {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let Some(timer) = self.stall.as_mut() else {
            return Poll::Pending;
        };
        ready!(timer.as_mut().poll(cx));
        self.inspection.stalled.store(true, Ordering::Relaxed);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client stopped reading the response",
        )))
    }
}

impl AsyncRead for H1Guard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.broken {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed chunked body",
            )));
        }
        let before = buf.filled().len();
        if this.read_ahead.is_empty() {
            ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        } else {
            this.take_read_ahead(buf);
        }
        if let Err(e) = this.scan.feed(&buf.filled()[before..]) {
            // hyper gets the bytes before the break, and the error on its next read.
            this.broken = true;
            if e.at == 0 {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            buf.set_filled(before + e.at);
        }
        if !this.told
            && let Some((at, stop)) = this.scan.stop()
        {
            this.told = true;
            this.inspection.stopped(at, stop);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H1Guard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.deadline(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.deadline(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.deadline(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.deadline(cx, polled)
    }
}

/// The bare client stream and the bytes hyper read past the 101, from an upgraded HTTP/1.1
/// connection (`Err` gives back any other kind). The guard is dropped here: the relay
/// reads and writes the stream itself.
pub(crate) fn recover(upgraded: Upgraded) -> Result<(Stream, BytesMut), Upgraded> {
    let parts = upgraded.downcast::<TokioIo<H1Guard>>()?;
    let guard = parts.io.into_inner();
    // Copy the few early bytes and drop hyper's read buffer: kept, its 8 KiB allocation
    // would live as long as the connection. Read-ahead hyper did not take yet follows them.
    let mut leftover = BytesMut::with_capacity(parts.read_buf.len() + guard.read_ahead.len());
    leftover.extend_from_slice(&parts.read_buf);
    leftover.extend_from_slice(&guard.read_ahead);
    drop(parts.read_buf);
    Ok((guard.io, leftover))
}
