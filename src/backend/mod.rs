//! The backend side: dial, balance, the HTTP/1.1 upgrade client, open (pick + retry),
//! health checks, backends found through DNS and the built-in echo backend.

pub mod balance;
pub mod client;
pub mod dial;
pub mod discovery;
pub mod echo;
pub mod error;
pub mod health;
pub mod http;
pub mod jwks;
pub mod open;
