//! RFC 6455 and HTTP on bytes, with no I/O.

pub mod close;
pub mod forwarded;
pub mod frame;
pub mod h1_scan;
pub mod handshake;
pub mod headers;
pub mod path;
pub mod proxy_header;
pub mod room;
pub mod utf8;
