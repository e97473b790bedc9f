//! Drains (a route's or a backend's connections closed with 1012, spread over a window as
//! a reload does) and `GET /api/routes` with live counts.

use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use super::{Body, error, json as answer, query};
use crate::shared::state::ProxyState;

/// Longest drain window accepted: past a day an operator means something else.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The Close reason of a drained route's connections.
const ROUTE_REASON: &str = "route drained";
/// The Close reason of a drained backend's connections.
const BACKEND_REASON: &str = "backend drained";

/// The `window` parameter, or the configured `reload.drain_window`.
// The error is the answer itself, built at most once per request.
#[allow(clippy::result_large_err)]
fn window(req: &Request<Incoming>, state: &ProxyState) -> Result<Duration, Response<Body>> {
    match query(req).get("window") {
        None => Ok(state.settings.load().drain_window),
        Some(w) => match crate::config::units::parse_duration(w) {
            Ok(d) if d <= MAX_WINDOW => Ok(d),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "bad_window",
                "window: expected a duration up to 24h, like 30s",
            )),
        },
    }
}

/// `POST /api/routes/{name}/drain?window=`: the route's connections open now close with
/// 1012 over the window; new ones keep coming.
pub fn route(req: &Request<Incoming>, state: &ProxyState, name: &str) -> Response<Body> {
    let window = match window(req, state) {
        Ok(w) => w,
        Err(res) => return res,
    };
    let table = state.routes.load();
    let Some(route) = table.routes().iter().find(|r| r.name() == name) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!("no route `{name}`"),
        );
    };
    let count = route.active();
    tracing::info!(
        route = name,
        ?window,
        count,
        "route drained through the admin API"
    );
    state
        .registry
        .retire_route(route, window, Some(ROUTE_REASON));
    answer(
        StatusCode::ACCEPTED,
        &json!({ "route": name, "connections": count, "window_ms": window.as_millis() as u64 }),
    )
}

/// `POST /api/backends/drain?url=&window=`: the connections open now on every backend
/// with that URL (in any route) close with 1012 over the window.
pub fn backend(req: &Request<Incoming>, state: &ProxyState) -> Response<Body> {
    let window = match window(req, state) {
        Ok(w) => w,
        Err(res) => return res,
    };
    let Some(url) = query(req).get("url").cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_url",
            "url: expected a backend URL as configured",
        );
    };
    let table = state.routes.load();
    let mut found = 0usize;
    let mut count = 0usize;
    for route in table.routes() {
        let Some(pool) = route.pool() else { continue };
        for (backend, _) in pool.backends.iter().filter(|(b, _)| b.url.url == url) {
            found += 1;
            let active = backend.active();
            count += active;
            state
                .registry
                .retire_backend(backend, window, Some(BACKEND_REASON));
        }
    }
    if found == 0 {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_backend",
            format!("no backend {url}"),
        );
    }
    tracing::info!(%url, ?window, count, "backend drained through the admin API");
    answer(
        StatusCode::ACCEPTED,
        &json!({ "url": url, "connections": count, "window_ms": window.as_millis() as u64 }),
    )
}

/// `GET /api/routes`: every route with its live connections and its backends'.
pub fn routes(state: &ProxyState) -> Response<Body> {
    let table = state.routes.load();
    let routes: Vec<_> = table
        .routes()
        .iter()
        .map(|r| {
            let backends: Vec<_> = r
                .pool()
                .map(|p| {
                    p.backends
                        .iter()
                        .map(|(b, weight)| {
                            json!({
                                "url": b.url.url,
                                "weight": weight,
                                "active": b.active(),
                                "healthy": b.healthy(),
                                "usable": b.usable(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "name": r.name(),
                "path": r.config.path,
                "host": r.config.host,
                "echo": r.pool().is_none(),
                "active": r.active(),
                "backends": backends,
            })
        })
        .collect();
    answer(
        StatusCode::OK,
        &json!({
            "routes": routes,
            "active": state.connections.count(),
            "listed": state.registry.count(),
        }),
    )
}
