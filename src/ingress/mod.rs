//! The client side up to the relay: accept, TLS, HTTP/1.1 serving, the client upgrade and the 101.

pub mod conn;
pub mod forward;
pub mod listener;
pub mod request;
pub mod upgrade;
