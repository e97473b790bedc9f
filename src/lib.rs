//! wsgate: a WebSocket reverse proxy that terminates TLS, routes upgrades by host and path,
//! relays frames (not bytes) between client and backend, and reports every close.
//!
//! # Layout
//! One folder per layer; a module imports only from layers below its own (a test in
//! `tests/layers.rs` says so). From the bottom up, in the order a connection meets them:
//! 1. [`proto`]: RFC 6455 and HTTP on bytes, no I/O: [`proto::frame`] codec and masking,
//!    [`proto::close`] codes and payload rules, [`proto::utf8`] incremental checks,
//!    [`proto::handshake`] accept key, [`proto::headers`] tokens and forwarding rules,
//!    [`proto::path`] normalisation.
//! 2. [`config`]: the YAML schema with file:line:column errors, units, routes, pools,
//!    backend URLs, TLS files.
//! 3. [`shared`]: what every stage shares: [`shared::state`] (routes, settings, metrics,
//!    reports, counts), [`shared::routes`] table, [`shared::pool`] members,
//!    [`shared::occupancy`] counting, [`shared::retire`] retirement, [`shared::metrics`],
//!    [`shared::report`] (the close report), [`shared::tls`] configs, [`shared::stream`],
//!    [`shared::random`].
//! 4. [`backend`]: [`backend::dial`] TCP/TLS, [`backend::balance`] order of candidates,
//!    [`backend::client`] the HTTP/1.1 upgrade client, [`backend::open`] pick + retry,
//!    [`backend::health`] checks on that same client, [`backend::echo`] built-in backend,
//!    [`backend::error`] one `BackendError`.
//!    Beside it, not importing it: [`relay`]: the one-task relay over two hops
//!    ([`relay::hop`], [`relay::keepalive`], [`relay::message`], close rules, deadlines,
//!    rate limit, [`relay::violation`]).
//! 5. [`ingress`]: [`ingress::listener`] accept loop and TLS accept, [`ingress::upgrade`]
//!    the client handshake and the 101.
//! 6. [`control`]: wiring and [`run`], [`control::reload`] diffing, [`control::admin`]
//!    listener, [`control::shutdown`] signals, [`control::watch`] file watch,
//!    [`control::workers`] threads.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub(crate) mod backend;
pub(crate) mod config;
pub(crate) mod control;
pub(crate) mod ingress;
pub(crate) mod proto;
pub(crate) mod relay;
pub(crate) mod shared;

// The public API: what `main.rs` and the tests use; everything else is internal.
pub use config::{Config, ConfigError, LogConfig, LogFormat};
pub use control::shutdown::{Request, Signals};
pub use control::watch::{FileWatch, files as watched_files};
pub use control::{Running, StartError, run, run_here};
pub use shared::metrics::Metrics;
pub use shared::report::{CloseReport, ClosedBy, Outcome};
