//! A backend's idle keep-alive HTTP/1.1 connections (plain-HTTP forwarding), bounded in
//! number; each connection's own task closes it when it has been idle too long
//! (`backend::http::pool`). Kept here, beside the backend they belong to, so a backend a
//! reload keeps keeps its connections and a removed one drops them.

use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::watch;
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
    /// When it went idle (`Some`), or `None` while in use; its task watches this.
    pub idle_since: watch::Sender<Option<Instant>>,
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
                conn.idle_since.send_replace(None);
                return Some(conn);
            }
        }
        None
    }

    /// Puts a connection back, idle from now; beyond `max` the least recently used one is
    /// dropped (its task then closes it). Closed connections are not kept.
    pub fn put(&self, conn: HttpConn, max: usize) {
        let mut list = self.lock();
        list.retain(|c| !c.sender.is_closed());
        if max == 0 || conn.sender.is_closed() {
            return;
        }
        conn.idle_since.send_replace(Some(Instant::now()));
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
}
