//! New and pooled HTTP/1.1 connections to one backend.
//!
//! A connection is hyper's `client::conn::http1` pair: the [`HttpConn`] handle kept in the
//! backend's idle list while unused, and its `Connection` future driven by a task of its
//! own ([`drive`]), which also closes it once idle for `http_pool_idle_timeout` (or at
//! shutdown while idle).

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backend::dial;
use crate::backend::error::BackendError;
use crate::shared::idle_conns::{ForwardBody, HttpConn, IdleHandle};
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
    let (idle_since, watch) = watch::channel(None);
    let id = crate::shared::random::u64();
    // Not on the connection tracker: shutdown need not wait for idle backend connections.
    tokio::spawn(drive(
        conn,
        watch,
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

/// Drives one backend connection until hyper ends it (closed by either side, its handle
/// dropped), or until it has been idle for `timeout` or shutdown began while it is idle:
/// then it is taken off the idle list and dropped, which closes it.
async fn drive(
    conn: hyper::client::conn::http1::Connection<
        TokioIo<crate::shared::stream::Stream>,
        ForwardBody,
    >,
    mut idle: watch::Receiver<Option<Instant>>,
    list: IdleHandle,
    id: u64,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    tokio::pin!(conn);
    // Each turn waits for a state change; a turn that finds the connection taken waits
    // for the next change, so the loop sleeps between turns.
    loop {
        let since = *idle.borrow_and_update();
        let expiry = since.map_or_else(Instant::now, |t| t + timeout);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "backend HTTP connection ended with an error");
                }
                return;
            }
            changed = idle.changed() => {
                if changed.is_err() {
                    // Its handle is gone: hyper finishes what is in flight, then ends.
                    let _ = conn.await;
                    return;
                }
            }
            _ = tokio::time::sleep_until(expiry), if since.is_some() => {
                if list.remove_idle(id) {
                    tracing::debug!("idle backend HTTP connection closed");
                    return;
                }
            }
            _ = shutdown.cancelled(), if since.is_some() => {
                if list.remove_idle(id) {
                    return;
                }
            }
        }
    }
}
