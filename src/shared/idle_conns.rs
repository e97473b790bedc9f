//! A backend's idle keep-alive HTTP/1.1 connections (plain-HTTP forwarding), bounded in
//! number: hyper's ([`IdleConns`]), each closed by its own task when it has been idle too
//! long (`backend::http::pool`), and the bare streams of the hand-written path
//! ([`RawConns`]), closed by one sweeper task per backend. Kept here, beside the backend
//! they belong to, so a backend a reload keeps keeps its connections and a removed one
//! drops them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::shared::stream::Stream;

/// An error of a body on either hop of a plain request.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request wsgate sends to a backend (the client's, wrapped).
pub type ForwardBody = UnsyncBoxBody<Bytes, BoxError>;

/// One keep-alive connection to a backend, held by its user or by the idle list.
#[derive(Debug)]
pub struct HttpConn {
    /// hyper's handle to send requests on it.
    pub sender: SendRequest<ForwardBody>,
    /// Identifies it in the idle list (its task removes it by this id).
    pub id: u64,
    /// When it went idle, or in use; its task reads this when its timer fires.
    pub idle_since: Arc<IdleMark>,
}

/// When a connection went idle, set as it is put back and cleared as it is taken: plain
/// stores, which wake nobody (a channel its task watched cost a task switch, a timer set
/// and a timer cancelled per request); the task looks when its own timer fires.
#[derive(Debug)]
pub struct IdleMark {
    /// The connection's start, which the stored offsets count from.
    base: Instant,
    /// Nanoseconds from `base` to when it went idle, plus one; 0 while in use.
    since: AtomicU64,
}

impl IdleMark {
    /// A mark for a connection starting now, in use.
    pub fn new() -> Arc<IdleMark> {
        Arc::new(IdleMark {
            base: Instant::now(),
            since: AtomicU64::new(0),
        })
    }

    /// When it went idle, or `None` while in use.
    pub fn get(&self) -> Option<Instant> {
        match self.since.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }

    fn set(&self, idle: Option<Instant>) {
        let n = idle.map_or(0, |t| {
            // Saturates after 584 years of one connection.
            u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
                + 1
        });
        self.since.store(n, Ordering::Release);
    }
}

/// What [`IdleHandle::expire`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Idle for its timeout, or the backend is gone: taken off the list.
    Removed,
    /// In use (not on the list).
    InUse,
    /// Idle, and due to be closed at this instant.
    At(Instant),
}

/// A backend's idle connections, most recently used last.
#[derive(Debug, Default)]
pub struct IdleConns(Arc<Mutex<Vec<HttpConn>>>);

impl IdleConns {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HttpConn>> {
        // The list stays consistent whatever panicked while it was held.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the most recently used open connection, marking it in use; closed ones met on
    /// the way are dropped.
    pub fn take(&self) -> Option<HttpConn> {
        let mut list = self.lock();
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() {
                // Under the lock, so its task never sees it both idle and taken.
                conn.idle_since.set(None);
                return Some(conn);
            }
        }
        None
    }

    /// Puts a connection back, idle from now; beyond `max` the least recently used one is
    /// dropped (its task then closes it). Closed connections are not kept: this one is
    /// checked here, the others take themselves off when they end (their task's
    /// [`IdleHandle::remove_idle`]), rather than the whole list being checked on every
    /// request.
    pub fn put(&self, conn: HttpConn, max: usize) {
        let mut list = self.lock();
        if max == 0 || conn.sender.is_closed() {
            return;
        }
        conn.idle_since.set(Some(Instant::now()));
        list.push(conn);
        while list.len() > max {
            list.remove(0);
        }
    }

    /// A handle for a connection's task, which must not keep the backend alive.
    pub fn downgrade(&self) -> IdleHandle {
        IdleHandle(Arc::downgrade(&self.0))
    }
}

/// A connection task's way back to its backend's idle list.
#[derive(Debug, Clone)]
pub struct IdleHandle(Weak<Mutex<Vec<HttpConn>>>);

impl IdleHandle {
    /// Removes the connection `id` if it is idle; false when it is in use (or gone).
    pub fn remove_idle(&self, id: u64) -> bool {
        let Some(list) = self.0.upgrade() else {
            return true;
        };
        let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
        match list.iter().position(|c| c.id == id) {
            Some(i) => {
                list.remove(i);
                true
            }
            None => false,
        }
    }

    /// Removes the connection `id` if it has been idle for `timeout` by `now`; else says
    /// when it will have been, or that it is in use. Decided under the list's lock, where
    /// it is taken and put back, so a connection taken and put back since its task last
    /// looked is judged by its new idle period.
    pub fn expire(&self, id: u64, timeout: Duration, now: Instant) -> Expiry {
        let Some(list) = self.0.upgrade() else {
            return Expiry::Removed;
        };
        let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = list.iter().position(|c| c.id == id) else {
            return Expiry::InUse;
        };
        // On the list means idle; a mark not yet set reads as idle from now.
        let due = list[i].idle_since.get().unwrap_or(now) + timeout;
        if due > now {
            return Expiry::At(due);
        }
        list.remove(i);
        Expiry::Removed
    }
}

/// A backend's idle bare connections (the hand-written HTTP/1.1 path), most recently used
/// last. No task per connection: one sweeper per backend, running while the list is not
/// empty, closes those idle past their deadline, and all of them once shutdown begins; a
/// connection the backend closed meanwhile is found out when it is next taken.
#[derive(Debug, Default)]
pub struct RawConns(Arc<Mutex<RawList>>);

#[derive(Debug, Default)]
struct RawList {
    conns: VecDeque<RawIdle>,
    /// A sweeper task is running for this list.
    sweeping: bool,
}

struct RawIdle {
    stream: Stream,
    /// When it is closed unless taken first.
    expires: Instant,
}

impl std::fmt::Debug for RawIdle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawIdle")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

fn lock_raw(list: &Mutex<RawList>) -> std::sync::MutexGuard<'_, RawList> {
    // The list stays consistent whatever panicked while it was held.
    list.lock().unwrap_or_else(|p| p.into_inner())
}

impl RawConns {
    /// Takes the most recently used connection that is still open and not past its
    /// deadline; the others met on the way are dropped (closed).
    pub fn take(&self) -> Option<Stream> {
        let now = Instant::now();
        let mut list = lock_raw(&self.0);
        // Bounded by the list, at most `max` long.
        while let Some(idle) = list.conns.pop_back() {
            if idle.expires > now && !idle.stream.idle_readable() {
                return Some(idle.stream);
            }
        }
        None
    }

    /// Puts a connection back, to be closed `timeout` from now unless taken first; beyond
    /// `max` the least recently used one is closed, and after shutdown began none is kept.
    pub fn put(&self, stream: Stream, max: usize, timeout: Duration, shutdown: &CancellationToken) {
        if max == 0 || timeout.is_zero() || shutdown.is_cancelled() {
            return;
        }
        let expires = Instant::now() + timeout;
        let mut list = lock_raw(&self.0);
        list.conns.push_back(RawIdle { stream, expires });
        while list.conns.len() > max {
            list.conns.pop_front();
        }
        if !list.sweeping {
            list.sweeping = true;
            // Not on the connection tracker: shutdown need not wait for idle connections.
            tokio::spawn(sweep(Arc::downgrade(&self.0), shutdown.clone()));
        }
    }
}

/// Closes the connections of `list` as their deadlines pass, until none is left (a later
/// `put` starts another sweeper), and all of them at shutdown; ends with the backend.
async fn sweep(list: Weak<Mutex<RawList>>, shutdown: CancellationToken) {
    // Each turn closes at least the connection whose deadline it slept to, or ends.
    loop {
        let next = {
            let Some(list) = list.upgrade() else { return };
            let mut list = lock_raw(&list);
            let now = Instant::now();
            list.conns.retain(|c| c.expires > now);
            match list.conns.iter().map(|c| c.expires).min() {
                Some(next) => next,
                None => {
                    list.sweeping = false;
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.cancelled() => {
                if let Some(list) = list.upgrade() {
                    let mut list = lock_raw(&list);
                    list.conns.clear();
                    list.sweeping = false;
                }
                return;
            }
        }
    }
}
