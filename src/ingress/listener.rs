//! Listening sockets (one per worker) and the accept loop; each accepted connection is
//! served by [`conn::serve`] in a task of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::runtime::Handle;

use crate::config::Cidr;
use crate::ingress::conn;
use crate::ingress::proxy_protocol::ProxySlot;
use crate::shared::state::ProxyState;

/// Pause after an accept error (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Pending connections the kernel queues per listening socket.
const BACKLOG: i32 = 4096;

/// The TLS config of a listener, swapped on reload (new handshakes use the new certificate;
/// open connections keep theirs). Empty for a plain listener.
#[derive(Default)]
pub struct TlsSlot(ArcSwapOption<ServerConfig>);

impl TlsSlot {
    /// The config in force.
    pub fn current(&self) -> Option<Arc<ServerConfig>> {
        self.0.load_full()
    }

    /// Replaces the config.
    pub fn set(&self, config: Option<Arc<ServerConfig>>) {
        self.0.store(config);
    }
}

/// One client-facing listener: a socket per worker, a swappable TLS config and PROXY
/// protocol setting, a stop switch.
pub struct Listener {
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
    tls: Arc<TlsSlot>,
    proxy: Arc<ProxySlot>,
    gateway: Arc<ProxyState>,
    stop: CancellationToken,
}

impl Listener {
    /// Binds the address once per worker (`workers` sockets); `tls` None means plain `ws`,
    /// `proxy` None no PROXY protocol (else the networks that may send the header).
    pub fn bind(
        bind: SocketAddr,
        tls: Option<Arc<ServerConfig>>,
        proxy: Option<Vec<Cidr>>,
        gateway: Arc<ProxyState>,
        workers: usize,
    ) -> std::io::Result<Listener> {
        let (addr, sockets) = bind_sockets(bind, workers)?;
        let slot = Arc::new(TlsSlot::default());
        slot.set(tls);
        let proxy_slot = Arc::new(ProxySlot::default());
        proxy_slot.set(proxy);
        let stop = gateway.shutdown.child_token();
        Ok(Listener {
            sockets,
            addr,
            tls: slot,
            proxy: proxy_slot,
            gateway,
            stop,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listener's swappable TLS config.
    pub fn tls_slot(&self) -> Arc<TlsSlot> {
        self.tls.clone()
    }

    /// The listener's swappable PROXY protocol setting.
    pub fn proxy_slot(&self) -> Arc<ProxySlot> {
        self.proxy.clone()
    }

    /// Cancelling it stops accepting (shutdown cancels it too).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Starts one accept loop per worker runtime, each on its own socket; `loops` tracks
    /// them, so shutdown can wait until every listening socket is closed.
    ///
    /// The loops share one cap, `limits.max_pending_connections`: a permit is taken before
    /// each `accept` and held by the connection until it upgrades or closes, so idle
    /// sockets cannot pile up; while none is free, connections wait in the kernel backlog.
    pub fn serve(self, workers: &[Handle], loops: &TaskTracker) {
        let cap = self.gateway.settings.load().limits.max_pending_connections;
        // At least one: a cap of 0 would never accept anything.
        let pending = Arc::new(Semaphore::new(cap.clamp(1, Semaphore::MAX_PERMITS)));
        for (socket, handle) in self.sockets.into_iter().zip(workers) {
            let (tls, gateway, stop) = (self.tls.clone(), self.gateway.clone(), self.stop.clone());
            let (proxy, pending) = (self.proxy.clone(), pending.clone());
            handle.spawn(loops.track_future(async move {
                // Registering with the reactor needs this worker's runtime, hence inside the task.
                match TcpListener::from_std(socket) {
                    Ok(tcp) => {
                        let slots = Slots { tls, proxy };
                        accept_loop(tcp, slots, gateway, stop, pending).await
                    }
                    Err(e) => tracing::error!(error = %e, "cannot register the listening socket"),
                }
            }));
        }
    }
}

/// Binds `count` listening sockets on `addr` with `SO_REUSEPORT`, one per worker (with port
/// 0 the first picks the port and the others join it), and returns the bound address.
///
/// `SO_REUSEPORT` would also let the sockets join a port that another process (another
/// wsgate, say) already listens on, splitting its connections silently. So the address is
/// first bound by a socket without the option: that fails with `EADDRINUSE` whenever anyone
/// holds the port, and is closed (it never listens) before the real sockets bind.
pub fn bind_sockets(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into())?;
    let mut bound = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("bound address is not an IP address"))?;
    drop(probe);
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(BACKLOG)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok((bound, sockets))
}

/// What a listener's connections read from its config when they are accepted.
struct Slots {
    tls: Arc<TlsSlot>,
    proxy: Arc<ProxySlot>,
}

/// Accepts until stopped, each connection only once a `pending` permit is free; one task
/// per connection, on this worker.
async fn accept_loop(
    tcp: TcpListener,
    slots: Slots,
    gateway: Arc<ProxyState>,
    stop: CancellationToken,
    pending: Arc<Semaphore>,
) {
    loop {
        let permit: OwnedSemaphorePermit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = pending.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // Never closed: the loops hold the semaphore until they return.
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = tcp.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE/ENFILE and the like: waiting frees descriptors, retrying at
                    // once would spin. The permit goes back and is taken again.
                    tracing::warn!(error = %e, "accept failed");
                    drop(permit);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let id = gateway.next_id.fetch_add(1, Ordering::Relaxed);
        // `client` is filled in once a PROXY header said who the client is.
        let span = tracing::info_span!("conn", id, %peer, client = tracing::field::Empty);
        let front = conn::Front {
            tls: slots.tls.current(),
            proxy_from: slots.proxy.current(),
        };
        // Boxed: tokio copies a task's future whole as it spawns it and again as the task
        // ends (it writes the task's stage over it), so a large future costs those copies
        // on every connection; a box is copied once, as it is made.
        let serve = Box::pin(conn::serve(
            stream,
            peer,
            id,
            front,
            gateway.clone(),
            permit,
        ));
        gateway.tracker.spawn(serve.instrument(span));
    }
}
