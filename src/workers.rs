//! Thread-per-core: one `current_thread` runtime per worker, each accepting on its own
//! `SO_REUSEPORT` socket of every listener (as nginx workers do).
//!
//! Measured on this machine kind (design §8): a single-threaded runtime per core beat
//! tokio's multi-thread scheduler on connection rate and tail latency, and two workers
//! sharing one pinned core hurt latency, so the count is configurable.

use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Pending connections the kernel queues per listening socket.
const BACKLOG: i32 = 4096;

/// The worker threads; dropping the last handle stops them (their tasks are dropped).
pub struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Workers {
    /// Starts `count` workers (0: one per available core).
    pub fn start(count: usize) -> std::io::Result<Arc<Workers>> {
        let count = match count {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("wsgate-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(stop.cancelled());
                })?;
        }
        Ok(Arc::new(Workers { handles, stop }))
    }

    /// The runtimes, one per worker.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Binds one listening socket per worker on `addr` with `SO_REUSEPORT`; with port 0
    /// the first socket picks the port and the others join it. Returns the bound address.
    pub fn bind(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
        let mut sockets = Vec::with_capacity(self.handles.len());
        let mut bound = addr;
        for _ in &self.handles {
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
}
