//! wsgate: a WebSocket reverse proxy that terminates TLS, routes upgrades by host and path,
//! relays frames (not bytes) between client and backend, and reports every close.
//!
//! # Layout
//! The life of a connection, one module per stage:
//! 1. [`listener`]: accept, TCP options, TLS ([`tls`]), the HTTP/1.1 connection.
//! 2. [`handshake`]: validate the client's upgrade, route it ([`route`]), connect the
//!    backend ([`upstream`]: a [`pool`] member over [`backend`], or the built-in [`echo`])
//!    and do its handshake first, then 101.
//! 3. [`relay`]: one task drives both hops ([`hop`], [`frame`] codec, [`utf8`] checks) until
//!    the close handshake.
//! 4. [`close`]: close codes and the close report; [`metrics`] counts it all.
//!
//! [`config`] is the YAML schema; [`server`] wires it together and [`run`] starts it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod backend;
pub mod close;
pub mod config;
pub mod echo;
pub mod frame;
pub mod handshake;
pub mod health;
pub mod hop;
pub mod keepalive;
pub mod listener;
pub mod message;
pub mod metrics;
pub mod occupancy;
pub mod pool;
pub mod pool_config;
pub mod relay;
pub mod retire;
pub mod route;
pub mod server;
pub mod shutdown;
pub mod stream;
pub mod tls;
pub mod units;
pub mod upgrade_client;
pub mod upstream;
pub mod utf8;
pub mod watch;
pub mod workers;

pub use close::{CloseReport, ClosedBy, Outcome};
pub use config::{Config, ConfigError};
pub use server::{Running, StartError, run};

/// Fills `buf` from the operating system's secure random source (via ring).
pub fn random_bytes(buf: &mut [u8]) {
    let provider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(buf).is_err() {
        // The OS source failing is not recoverable in any useful way; fall back to the
        // clock so masking keys still vary (they only need to be unpredictable to web scripts).
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8;
        }
    }
}

/// A random u64 (seed for per-connection masking keys).
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    random_bytes(&mut b);
    u64::from_ne_bytes(b)
}
