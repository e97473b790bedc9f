//! The client side up to the relay: accept, TLS, HTTP/1.1 and HTTP/2 serving, the client
//! upgrade (or extended CONNECT) and the 101 (or 200).

pub mod conn;
pub mod connect;
pub mod door;
pub mod forward;
pub mod h1_fast;
pub mod h1_guard;
pub mod h1_plain;
pub mod hello;
pub mod http2;
pub mod listener;
pub mod proxy_protocol;
pub mod request;
pub mod upgrade;
