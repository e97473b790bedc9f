//! Who is on the client hop of a connection.

use std::net::SocketAddr;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Who is on the client hop of this HTTP connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    /// Connection id.
    pub id: u64,
    /// Client socket address.
    pub peer: SocketAddr,
    /// Whether the client hop is TLS.
    pub tls: bool,
    /// The HTTP version the client speaks on this connection.
    pub protocol: ClientProtocol,
}

/// The HTTP version of the client hop: how its WebSocket was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientProtocol {
    /// HTTP/1.1, opened by `Upgrade` (RFC 6455).
    H1,
    /// HTTP/2, opened by an extended CONNECT on one stream (RFC 8441).
    H2,
}

impl ClientProtocol {
    /// Label value for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientProtocol::H1 => "h1",
            ClientProtocol::H2 => "h2",
        }
    }
}

/// The streams of one HTTP/2 connection being served: a request from its headers until
/// it is dropped, a WebSocket until its relay ends. The connection waits on it at shutdown
/// and closes once it stayed at zero too long.
#[derive(Debug, Default)]
pub struct StreamCount {
    live: AtomicUsize,
    changed: Notify,
}

impl StreamCount {
    /// A hold on one stream, counted until dropped.
    pub fn hold(self: &Arc<Self>) -> StreamHold {
        self.live.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        StreamHold(self.clone())
    }

    /// Resolves once no stream is held.
    pub async fn none(&self) {
        // Bounded by the holds' own lives: each round waits for a change.
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.live.load(Ordering::SeqCst) == 0 {
                return;
            }
            changed.await;
        }
    }

    /// Resolves once no stream was held for `quiet` in a row.
    pub async fn none_for(&self, quiet: Duration) {
        loop {
            self.none().await;
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.live.load(Ordering::SeqCst) == 0
                && tokio::time::timeout(quiet, changed).await.is_err()
            {
                return;
            }
        }
    }
}

/// Held by whatever serves one stream of an HTTP/2 connection (see [`StreamCount`]);
/// a clone is a hold of its own.
#[derive(Debug)]
pub struct StreamHold(Arc<StreamCount>);

impl Clone for StreamHold {
    fn clone(&self) -> Self {
        self.0.hold()
    }
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}
