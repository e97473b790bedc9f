//! Load generator and echo backend for benchmarking wsgate against nginx and HAProxy.
//!
//! Both binaries run on one `current_thread` runtime (one core, like one proxy
//! worker) and speak WebSocket through the small codec in [`ws`]: the load
//! generator prebuilds its masked frames and parses replies without buffering
//! payloads, so its cost per message is a read and a write syscall and little else.
//!
//! # Layout
//! - [`ws`]: frame header encode/decode, masking, the streaming [`ws::Parser`].
//! - [`net`]: loopback TCP, optional TLS (rustls), the client upgrade.
//! - [`modes`]: `echo`, `latency`, `connrate`, `idle`, `soak`, and `h2echo`/`h2idle`
//!   (WebSockets on HTTP/2 streams, RFC 8441).
//! - [`cpu`]: CPU time of this process and of the watched proxy/backend.
//! - [`args`]: `--key value` parsing.

pub mod args;
pub mod cpu;
pub mod modes;
pub mod net;
pub mod ws;
