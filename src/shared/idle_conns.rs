//! A backend's idle keep-alive HTTP/1.1 connections (plain-HTTP forwarding), bounded in
//! number; each connection's own task closes it when it has been idle too long
//! (`backend::http::pool`). Kept here, beside the backend they belong to, so a backend a
//! reload keeps keeps its connections and a removed one drops them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;
use tokio::time::Instant;

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
