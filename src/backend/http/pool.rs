//! New and pooled HTTP/1.1 connections to one backend.
//!
//! A connection is hyper's `client::conn::http1` pair: the [`HttpConn`] handle kept in the
//! backend's idle list while unused, and its `Connection` future driven by a task of its
//! own ([`drive`]), which also closes it once idle for `http_pool_idle_timeout` (or at
//! shutdown while idle). Nothing wakes that task per request: it is woken by its socket,
//! by shutdown, and by a timer that looks at the connection's [`IdleMark`] at most once
//! per idle timeout while the connection is used.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::dial;
use crate::backend::error::BackendError;
use crate::shared::idle_conns::{Expiry, ForwardBody, HttpConn, IdleHandle, IdleMark};
use crate::shared::pool::Backend;

/// hyper refuses a read buffer under 8 KiB.
const MIN_BUF_BYTES: usize = 8 * 1024;

/// How connections to a route's backends are made and kept.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    /// New connection deadline (TCP + TLS).
    pub(crate) connect_timeout: Duration,
    /// Idle connections kept per backend.
    pub(crate) idle_max: usize,
    /// Idle connections are closed after this.
    pub(crate) idle_timeout: Duration,
    /// Largest response head accepted from the backend (else 502).
    pub(crate) max_header_bytes: usize,
}

/// A connection ready for a request: a pooled one when one is open and ready (`true`),
/// else a new one.
pub(crate) async fn checkout(
    backend: &Arc<Backend>,
    tls: &Arc<rustls::ClientConfig>,
    settings: &PoolSettings,
    shutdown: &CancellationToken,
) -> Result<(HttpConn, bool), BackendError> {
    // Bounded by the idle list, itself at most `idle_max` long.
    while let Some(mut conn) = backend.http_idle.take() {
        // Ready at once for an idle connection, unless it closed since it was put back.
        match tokio::time::timeout(settings.connect_timeout, conn.sender.ready()).await {
            Ok(Ok(())) => return Ok((conn, true)),
            _ => continue,
        }
    }
    let conn = tokio::time::timeout(
        settings.connect_timeout,
        connect(backend, tls, settings, shutdown),
    )
    .await
    .map_err(|_| BackendError::Timeout)??;
    Ok((conn, false))
}

async fn connect(
    backend: &Arc<Backend>,
    tls: &Arc<rustls::ClientConfig>,
    settings: &PoolSettings,
    shutdown: &CancellationToken,
) -> Result<HttpConn, BackendError> {
    let stream = dial::connect(backend, tls).await?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(settings.max_header_bytes.max(MIN_BUF_BYTES))
        .max_header_size(settings.max_header_bytes)
        .handshake::<_, ForwardBody>(TokioIo::new(stream))
        .await
        .map_err(BackendError::Exchange)?;
    let idle_since = IdleMark::new();
    let id = crate::shared::random::u64();
    // Not on the connection tracker: shutdown need not wait for idle backend connections.
    tokio::spawn(drive(
        conn,
        backend.http_idle.downgrade(),
        id,
        settings.idle_timeout,
        shutdown.clone(),
    ));
    Ok(HttpConn {
        sender,
        id,
        idle_since,
    })
}

/// What woke [`drive`].
enum Event {
    /// hyper ended the connection.
    Ended(Result<(), hyper::Error>),
    /// The idle timer fired.
    Timer,
    /// Shutdown began.
    Shutdown,
}

/// The waker given to [`drive`]'s timer and shutdown futures: it notes that one of them
/// moved, then wakes the task. Hand-written because `tokio::select!` polls every branch on
/// every wake, and this task wakes two or three times per request for its connection
/// alone: polling the shutdown future and the timer each time cost ~1,000 instructions
/// per proxied request (benches/callgrind.sh), for futures that move once a minute.
struct Moved {
    moved: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Moved {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.moved.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// Drives one backend connection until hyper ends it (closed by either side, or its
/// handle dropped and nothing in flight), or until it has been idle for `timeout` or
/// shutdown began while it is idle: then it is taken off the idle list and dropped, which
/// closes it. (A connection handed back after shutdown began is not kept: `give_back`.)
async fn drive(
    conn: hyper::client::conn::http1::Connection<
        TokioIo<crate::shared::stream::Stream>,
        ForwardBody,
    >,
    list: IdleHandle,
    id: u64,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    tokio::pin!(conn);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut shut = false;
    // In use now: the first look is a timeout from now, when it cannot be due before.
    let expiry = tokio::time::sleep_until(Instant::now() + timeout);
    tokio::pin!(expiry);
    // Set: the timer and shutdown futures are polled (and so registered) on the first turn.
    let moved = Arc::new(Moved {
        moved: AtomicBool::new(true),
        task: Mutex::new(None),
    });
    let moved_waker = Waker::from(moved.clone());
    // Each turn is an event: the connection's, a look when the timer fires (which moves
    // the timer at least `timeout` on, or ends the task), or shutdown (once).
    loop {
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                return Poll::Ready(Event::Ended(res));
            }
            if !moved.moved.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            {
                let mut task = moved.task.lock().unwrap_or_else(|p| p.into_inner());
                if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                    *task = Some(cx.waker().clone());
                }
            }
            let mut control = Context::from_waker(&moved_waker);
            if !shut && cancelled.as_mut().poll(&mut control).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            if expiry.as_mut().poll(&mut control).is_ready() {
                return Poll::Ready(Event::Timer);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Ended(res) => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "backend HTTP connection ended with an error");
                }
                // Ended while idle: off the list, so it counts no more against its limit.
                list.remove_idle(id);
                return;
            }
            Event::Timer => {
                let now = Instant::now();
                let next = match list.expire(id, timeout, now) {
                    Expiry::Removed => {
                        tracing::debug!("idle backend HTTP connection closed");
                        return;
                    }
                    Expiry::InUse => now + timeout,
                    Expiry::At(due) => due,
                };
                expiry.as_mut().reset(next);
            }
            Event::Shutdown => {
                shut = true;
                if list.remove_idle(id) {
                    return;
                }
            }
        }
        // What was handled changed a control future: poll them again next turn.
        moved.moved.store(true, Ordering::Release);
    }
}
