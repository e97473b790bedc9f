//! wsgate's integration tests: one binary, one module per area, one harness
//! ([`support`]). Everything runs in this process against real sockets on
//! 127.0.0.1 port 0, except `lifecycle` and `health_cmd` (the real binary as a child process) and
//! `interop` (a third-party Python client). Memory measurements live in their own
//! binary, `tests/memory.rs`, because they read process-wide counters.

mod support;

mod admin_api;
mod admin_api_more;
mod admission;
mod auth_forward;
mod auth_jwt;
mod auth_mtls;
mod backend_defects;
mod close;
mod config;
mod config_defects;
mod dashboard;
mod edge_admin;
mod edge_budget;
mod edge_dns;
mod edge_handshake;
mod edge_keepalive;
mod edge_logs;
mod edge_proxy_haproxy;
mod edge_proxy_protocol;
mod edge_source;
mod edge_stream;
mod edge_trusted_proxies;
mod forwarding;
mod frames;
mod h1_fast;
mod h2_endings;
mod h2_floods;
mod h2_listener;
mod h2_plain;
mod h2_websocket;
mod handshake_backend;
mod handshake_client;
mod harness;
mod health_cmd;
mod http_forward;
mod http_guard;
mod http_keepalive;
mod http_pool;
mod http_pool_idle;
mod http_smuggling;
mod http_sticky;
mod interop;
mod keepalive;
mod lifecycle;
mod lifetime;
mod limits;
mod metrics;
mod pools_balance;
mod pools_drain;
mod pools_failover;
mod relay;
mod relay_defects;
mod relay_props;
mod reload;
