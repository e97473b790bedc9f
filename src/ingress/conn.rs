//! One client connection: TCP options, the TLS handshake within its timeout, and the
//! HTTP/1.1 connection (hyper) whose requests are served by [`request::serve`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;

use crate::ingress::request;
use crate::shared::client::ClientInfo;
use crate::shared::state::ProxyState;
use crate::shared::stream::Stream;

/// After shutdown starts, an HTTP connection that has not upgraded gets this long to finish.
const HTTP_GRACE: Duration = Duration::from_secs(5);
/// hyper refuses a read buffer under 8 KiB.
const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Serves one accepted connection: TLS (when the listener has it), then HTTP/1.1 whose
/// requests go to the upgrade; ends when the connection does (hyper's connection ends
/// too once it upgraded, the relay going on in a task of its own), or after a grace
/// period once shutdown began. `_pending` is the listener's place for a connection that
/// does not relay yet, held until then.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    tls: Option<Arc<ServerConfig>>,
    state: Arc<ProxyState>,
    _pending: OwnedSemaphorePermit,
) {
    // Frames are written whole and flushed; Nagle would only add latency.
    let _ = tcp.set_nodelay(true);
    let limits = state.settings.load().limits.clone();
    let stream = match tls {
        None => Stream::Tcp(tcp),
        Some(config) => match tokio::time::timeout(
            limits.tls_handshake_timeout,
            TlsAcceptor::from(config).accept(tcp),
        )
        .await
        {
            Ok(Ok(s)) => Stream::ServerTls(Box::new(s)),
            Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake timed out"),
        },
    };
    let client = ClientInfo {
        id,
        peer,
        tls: matches!(stream, Stream::ServerTls(_)),
    };
    let shared = state.clone();
    let service = service_fn(move |req| request::serve(req, client, shared.clone()));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_header_bytes as usize).max(MIN_HEADER_BYTES))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        }
        _ = state.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HTTP_GRACE, conn).await;
        }
    }
}
