//! wsgate: a WebSocket reverse proxy that terminates TLS, routes upgrades by host and path,
//! relays frames (not bytes) between client and backend, and reports every close.
//!
//! # Layout
//! One folder per layer; a module imports only from layers below its own, `backend` and
//! `relay` never from each other, and no modules import each other in a circle
//! (`tests/layers.rs` reads the sources and fails otherwise). From the bottom up, in the
//! order a connection meets them:
//!
//! 1. `proto`: RFC 6455 and HTTP on bytes, no I/O.
//!    - `proto::frame`: the frame codec, masking and re-masking, per-hop checks.
//!    - `proto::close`: close codes and Close payload rules.
//!    - `proto::utf8`: incremental UTF-8 of text across fragments.
//!    - `proto::handshake`: the `Sec-WebSocket-Accept` key.
//!    - `proto::headers`: header tokens, hop-by-hop and forwarding rules.
//!    - `proto::path`: path normalisation (what is routed is what is forwarded).
//! 2. `config`: the YAML file.
//!    - `config` (mod): the schema; `config::parse`: deserialisers with file:line:column;
//!      `config::validate`: the one cross-field check; `config::units`: durations, sizes.
//!    - `config::tuning`: each per-connection key declared once (struct, default, override, merge).
//!    - `config::routes`, `config::pool`: routes and their backend pools;
//!      `config::backend_url`: `ws://`/`wss://` URLs; `config::tls`: PEM files checked at load.
//! 3. `shared`: what every stage shares.
//!    - `shared::state`: `ProxyState` (routes, settings, metrics, reports, counts, tokens).
//!    - `shared::routes`: the route table; `shared::pool`: a pool's live members.
//!    - `shared::occupancy`: seats counted per group; `shared::retire`: 1012 spread over a window.
//!    - `shared::metrics`: Prometheus handles; `shared::report`: the close report.
//!    - `shared::tls`: rustls configs built from files; `shared::stream`: one stream type;
//!      `shared::client`: who is on the client hop; `shared::random`: OS randomness.
//! 4. `backend`: the backend hop up to its 101.
//!    - `backend::dial`: TCP/TLS connect; `backend::balance`: the order of candidates.
//!    - `backend::client`: the HTTP/1.1 upgrade client (`client::body`: refusal bodies).
//!    - `backend::open`: pick + retry; `backend::error`: one `BackendError`.
//!    - `backend::health`: health checks on that same client; `backend::echo`: built-in backend.
//!
//!    `relay`, beside it: the tunnel after 101.
//!    - `relay` (mod): one task drives both hops; `relay::hop`: one side's stream and queue.
//!    - `relay::message`: fragmentation and size rules; `relay::violation`: what ends a
//!      connection, with its close code and outcome; `relay::rate`: the message rate.
//!    - `relay::keepalive`: wsgate's pings; `relay::deadlines`: the one timer, shutdown, retirement.
//!    - `relay::closing`: close rules and the report; `relay::abandoned`: a client gone
//!      before its upgrade completed.
//! 5. `ingress`: the client side.
//!    - `ingress::listener`: sockets per worker and the accept loop; `ingress::conn`: TLS
//!      and the HTTP connection; `ingress::request`: the service entry;
//!      `ingress::upgrade`: the client's upgrade, the backend first, then the 101.
//! 6. `control`: running it.
//!    - `control` (mod): [`run`], [`run_here`], [`Running`]; `control::reload`: reload diffing;
//!    - `control::admin`: the admin listener; `control::shutdown`: signals;
//!      `control::watch`: file watch; `control::workers`: worker threads.

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
