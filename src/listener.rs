//! Accept loop: TCP options, TLS handshake, and the HTTP/1.1 connection that carries the upgrade.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::config::ListenerConfig;
use crate::handshake::{self, ClientInfo};
use crate::server::{Gateway, StartError};
use crate::stream::Stream;

/// A client that has not finished its TLS handshake in this long is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send its complete request headers within this (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers larger than this are answered 431 (hyper's minimum is 8 KiB).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Pause after an accept error (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One bound client-facing listener.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    gateway: Arc<Gateway>,
}

impl Listener {
    /// Binds the address and prepares TLS.
    pub async fn bind(
        config: &ListenerConfig,
        gateway: Arc<Gateway>,
    ) -> Result<Listener, StartError> {
        let tls = match &config.tls {
            Some(t) => Some(TlsAcceptor::from(crate::tls::server_config(t)?)),
            None => None,
        };
        let tcp = TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        Ok(Listener { tcp, tls, gateway })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound listener always has a local address; fall back to unspecified defensively.
        self.tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Accepts until shutdown; one task per connection.
    pub async fn serve(self) {
        let shutdown = self.gateway.shutdown.clone();
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = self.tcp.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let id = self.gateway.next_id.fetch_add(1, Ordering::Relaxed);
            let span = tracing::info_span!("conn", id, %peer);
            let (gw, tls) = (self.gateway.clone(), self.tls.clone());
            self.gateway
                .tracker
                .spawn(serve_connection(tcp, peer, id, tls, gw).instrument(span));
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    tls: Option<TlsAcceptor>,
    gw: Arc<Gateway>,
) {
    let _ = tcp.set_nodelay(true);
    let stream = match tls {
        None => Stream::Tcp(tcp),
        Some(acceptor) => {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => Stream::ServerTls(Box::new(s)),
                Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            }
        }
    };
    let client = ClientInfo {
        id,
        peer,
        tls: matches!(stream, Stream::ServerTls(_)),
    };
    let gw2 = gw.clone();
    let service = service_fn(move |req| handshake::serve(req, client, gw2.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = gw.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}
