//! What every stage shares: the proxy's state, routes and pools, counting, retirement,
//! metrics, the close report, TLS configs, streams and randomness.

pub mod admission;
pub mod bucket;
pub mod budget;
pub mod client;
pub mod deadline;
pub mod forward_auth;
pub mod gate;
pub mod idle_conns;
pub mod jwks;
pub mod jws;
pub mod metrics;
pub mod occupancy;
pub mod pool;
pub mod random;
pub mod registry;
pub mod report;
pub mod retire;
pub mod routes;
pub mod state;
pub mod stream;
pub mod tally;
pub mod tls;
