//! One client connection: TCP options, the TLS handshake within its timeout, and the HTTP
//! connection (hyper) whose requests are served by [`request::serve`]: HTTP/2 when ALPN
//! chose `h2` ([`http2::serve`]), else HTTP/1.1. A plain listener speaks HTTP/1.1 only.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;

use crate::config::Cidr;
use crate::ingress::forward::ResponseBody;
use crate::ingress::h1_fast::{self, Handed, MIN_HEADER_BYTES, Then};
use crate::ingress::h1_guard::H1Guard;
use crate::ingress::{h1_plain, http2, proxy_protocol, request};
use crate::proto::forwarded::Forwarding;
use crate::shared::client::{ClientCert, ClientInfo, ClientProtocol};
use crate::shared::state::{ProxyState, Settings};
use crate::shared::stream::Stream;

/// After shutdown starts, an HTTP connection that has not upgraded gets this long to finish
/// (an HTTP/2 connection, this long after its last WebSocket closed).
const HTTP_GRACE: Duration = Duration::from_secs(5);

/// What the listener in force said about a connection when it was accepted.
pub struct Front {
    /// Its TLS config; `None` for plain `ws`.
    pub tls: Option<Arc<ServerConfig>>,
    /// Who may send it a PROXY header; `None` when the listener takes none.
    pub proxy_from: Option<Arc<Vec<Cidr>>>,
}

/// Serves one accepted connection: its PROXY header (when the listener takes one), TLS
/// (when the listener has it), then HTTP/1.1 or
/// HTTP/2 whose requests go to [`request::serve`]; ends when the connection does (an
/// HTTP/1.1 connection also once it upgraded, the relay going on in a task of its own;
/// an HTTP/2 connection carries its WebSockets, so it lasts as long as they do), or after
/// a grace period once shutdown began. A first request that is an upgrade is served by
/// [`h1_fast`], bodyless plain requests by [`h1_plain`] (until one of another shape),
/// anything else by hyper. `pending` is the listener's place for a connection
/// that does not relay yet, held until then (by an HTTP/2 connection for its whole life).
pub async fn serve(
    mut tcp: TcpStream,
    peer: SocketAddr,
    id: u64,
    front: Front,
    state: Arc<ProxyState>,
    pending: OwnedSemaphorePermit,
) {
    // Frames are written whole and flushed; Nagle would only add latency.
    let _ = tcp.set_nodelay(true);
    let settings = state.settings.load_full();
    // The header comes first, before the ClientHello; from here on its address is the
    // client's.
    let peer = match &front.proxy_from {
        None => peer,
        Some(from) => {
            let timeout = settings.limits.proxy_header_timeout;
            match proxy_protocol::admit(&mut tcp, peer, from, timeout, &state.metrics).await {
                Some(client) => {
                    tracing::Span::current().record("client", tracing::field::display(client));
                    client
                }
                None => return,
            }
        }
    };
    let stream = match front.tls {
        None => Stream::Tcp(tcp),
        // Boxed, as the HTTP servers below: this future is allocated, and copied as it is
        // boxed for its task, at the size of the largest state it could reach, so inline
        // these would make a WebSocket on plain TCP pay for a TLS handshake and two HTTP
        // servers it never runs.
        Some(config) => match Box::pin(tokio::time::timeout(
            settings.limits.tls_handshake_timeout,
            TlsAcceptor::from(config).accept(tcp),
        ))
        .await
        {
            Ok(Ok(s)) => Stream::ServerTls(Box::new(s)),
            Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake timed out"),
        },
    };
    let protocol = match &stream {
        Stream::ServerTls(s) if s.get_ref().1.alpn_protocol() == Some(b"h2") => ClientProtocol::H2,
        _ => ClientProtocol::H1,
    };
    let cert = match &stream {
        // rustls hands out only a chain its verifier accepted, leaf first.
        Stream::ServerTls(s) => s.get_ref().1.peer_certificates().and_then(|chain| {
            let leaf = chain.first()?;
            ClientCert::from_der(leaf).map(Arc::new)
        }),
        _ => None,
    };
    let client = ClientInfo {
        id,
        peer,
        tls: matches!(stream, Stream::ServerTls(_)),
        protocol,
        cert,
        forwarding: Forwarding::direct(peer.ip()),
    };
    match protocol {
        ClientProtocol::H1 => {
            let h = match h1_fast::serve(stream, client, settings, state.clone(), pending).await {
                None => return,
                Some(Handed::Hyper(h)) => h,
                // Boxed: its future is large, and inline it would make every connection's
                // task that much larger, a WebSocket's too (copied as the task is made).
                Some(Handed::Plain(p)) => match Box::pin(h1_plain::serve(p, state.clone())).await {
                    None => return,
                    Some(h) => h,
                },
            };
            Box::pin(serve_http1(h.stream, h.read, h.then, &h.settings, state)).await;
            drop(h.pending);
        }
        ClientProtocol::H2 => {
            let _pending = pending;
            Box::pin(http2::serve(stream, client, &settings, state, HTTP_GRACE)).await
        }
    }
}

/// HTTP/1.1 until the connection ends or upgrades, or `HTTP_GRACE` after shutdown began;
/// `read_ahead` is what was read of the connection already. hyper reads and writes
/// through an [`H1Guard`]: each request head is inspected as it passes, and a client that
/// stops reading is cut after `http_idle_timeout`.
pub(crate) async fn serve_http1(
    stream: Stream,
    read_ahead: BytesMut,
    then: Then,
    settings: &Settings,
    state: Arc<ProxyState>,
) {
    let shared = state.clone();
    let guard = H1Guard::new(stream, read_ahead, settings.http_idle_timeout);
    let inspection = guard.inspection();
    // One service per case, so the one serving every request stays the future
    // `request::serve_h1` is, with nothing wrapped around it.
    match then {
        Then::Serve(client) => {
            let service = service_fn(move |req| {
                let head = inspection.next_request();
                request::serve_h1(
                    req,
                    client.clone(),
                    shared.clone(),
                    head,
                    inspection.clone(),
                )
            });
            drive(guard, service, settings, &state).await;
        }
        Then::Answer(res) => {
            let answer = Mutex::new(Some(res));
            let service = service_fn(move |_req| {
                let head = inspection.next_request();
                let answer = answer.lock().unwrap_or_else(PoisonError::into_inner).take();
                std::future::ready(Ok::<_, Infallible>(request::answer_again(
                    head, answer, &shared,
                )))
            });
            drive(guard, service, settings, &state).await;
        }
    }
}

/// Runs hyper's HTTP/1.1 connection over `guard` with `service` until it ends (or
/// upgrades), or `HTTP_GRACE` after shutdown began.
async fn drive<S>(guard: H1Guard, service: S, settings: &Settings, state: &ProxyState)
where
    S: HttpService<Incoming, ResBody = ResponseBody, Error = Infallible>,
{
    let limits = &settings.limits;
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size((limits.max_header_bytes as usize).max(MIN_HEADER_BYTES))
        .serve_connection(TokioIo::new(guard), service)
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
