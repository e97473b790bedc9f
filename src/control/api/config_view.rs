//! `GET /api/config`: the configuration in force, each route with its effective tuning
//! (its keys over `defaults`), secrets redacted.
//!
//! Redacted: the admin token and where it comes from, private key paths, and query
//! strings of backend and auth URLs (where tokens travel). Written out by hand from the
//! typed config (it has no `Serialize`: its types are built for reading with line and
//! column), so a new secret-bearing key is shown only once someone adds it here.

use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use super::Body;
use crate::config::{BackendUrl, Config, Target, TlsConfig, Tuning};
use crate::shared::state::ProxyState;

/// What a redacted value reads as.
const REDACTED: &str = "<redacted>";

/// `GET /api/config`.
pub fn answer(state: &ProxyState) -> Response<Body> {
    let settings = state.settings.load();
    super::json(StatusCode::OK, &view(&settings.config))
}

fn url(u: &BackendUrl) -> String {
    match u.url.split_once('?') {
        Some((base, _)) => format!("{base}?{REDACTED}"),
        None => u.url.clone(),
    }
}

fn tuning(t: &Tuning) -> Value {
    let mut out = Map::new();
    for (key, value) in t.entries() {
        out.insert(key.to_string(), Value::String(value));
    }
    Value::Object(out)
}

fn debug(value: &impl std::fmt::Debug) -> Value {
    Value::String(format!("{value:?}"))
}

/// The redacted view of `config`.
pub fn view(config: &Config) -> Value {
    let listeners: Vec<Value> = config
        .listeners
        .iter()
        .map(|l| {
            let tls = match &l.tls {
                None => Value::Null,
                Some(TlsConfig::SelfSigned) => json!({ "self_signed": true }),
                Some(TlsConfig::Files { cert, .. }) => {
                    json!({ "cert": cert.display().to_string(), "key": REDACTED })
                }
            };
            json!({
                "bind": l.bind.to_string(),
                "tls": tls,
                "alpn": l.tls.as_ref().map(|_| debug(&l.alpn())),
                "client_auth": l.client_auth.as_ref().map(|c| json!({
                    "ca": c.ca.display().to_string(),
                    "mode": debug(&c.mode),
                })),
            })
        })
        .collect();
    let admin = config.admin.as_ref().map(|a| {
        json!({
            "bind": a.bind.to_string(),
            "ready_below": a.ready_below,
            "token": a.token().map(|_| REDACTED),
        })
    });
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|r| {
            let target = match &r.target {
                Target::Echo => json!("echo"),
                Target::Backends(pool) => json!({
                    "backends": pool.backends.iter()
                        .map(|b| json!({ "url": url(&b.url), "weight": b.weight }))
                        .collect::<Vec<_>>(),
                    "balance": debug(&pool.balance),
                    "retries": pool.retries,
                    "health_check": pool.health_check.as_ref().map(debug),
                    "max_fails": pool.max_fails,
                    "fail_timeout": debug(&pool.fail_timeout),
                    "close_on_unhealthy": pool.close_on_unhealthy,
                    "all_unhealthy": debug(&pool.all_unhealthy),
                    "sticky_cookie": pool.sticky_cookie,
                }),
            };
            json!({
                "name": r.name,
                "path": r.path,
                "exact": r.exact,
                "host": r.host,
                "target": target,
                "origins": r.origins,
                "tls_ca": r.tls_ca.as_ref().map(|p| p.display().to_string()),
                "max_connections": r.max_connections,
                "http": r.http,
                "preserve_host": r.preserve_host,
                "log_query": r.log_query,
                "admission": debug(&r.admission),
                "forward_auth": r.forward_auth.as_ref().map(|f| json!({
                    "url": url(&f.url),
                    "method": f.method.as_str(),
                    "timeout": debug(&f.timeout),
                    "request_headers": f.request_headers.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
                    "response_headers": f.response_headers.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
                    "identity_header": f.identity_header.as_ref().map(|h| h.as_str()),
                    "cache": f.cache.as_ref().map(|c| json!({
                        "ttl": debug(&c.ttl),
                        "max_entries": c.max_entries,
                    })),
                })),
                "client_cert": debug(&r.client_cert),
                "client_cert_header": r.client_cert_header.as_str(),
                "tuning": tuning(&r.tuning.apply(&config.defaults)),
            })
        })
        .collect();
    json!({
        "listeners": listeners,
        "admin": admin,
        "defaults": tuning(&config.defaults),
        "routes": routes,
        "limits": debug(&config.limits),
        "http2": debug(&config.http2),
        "reload": { "drain_window": debug(&config.reload.drain_window), "watch": config.reload.watch },
        "shutdown": { "drain_timeout": debug(&config.shutdown.drain_timeout) },
        "log": { "format": debug(&config.log.format), "level": config.log.level, "connection_open": config.log.connection_open },
        "metrics": { "per_frame": config.metrics.per_frame },
        "workers": config.workers,
    })
}
