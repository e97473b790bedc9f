//! The admin API under `/api/` on the admin listener: live connections (list, show,
//! close, push messages), drains, routes and the effective config, behind a bearer token.
//!
//! Without a token configured the API does not exist (404, like any unknown path). With
//! one, every `/api/` request must carry `Authorization: Bearer <token>` (else 401); the
//! token is compared in constant time and never logged. Every command for a connection
//! goes to its own task through its mailbox (`shared::registry`); nothing here touches
//! relay state.

mod config_view;
mod connections;
mod drain;
mod events;
pub mod page;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use sha1::Digest;
use subtle::ConstantTimeEq;

use crate::config::admin_token::Secret;
use crate::shared::state::ProxyState;

/// The body of every admin answer: whole, or a live event stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The OpenAPI 3 document of this API, served at `/api/openapi.json` (hand-written: the
/// API is small, and a test holds the document and the router to each other).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every endpoint the router answers, as `METHOD /path` with `{…}` for a path parameter;
/// a test checks the OpenAPI document lists exactly these.
pub const ENDPOINTS: &[&str] = &[
    "GET /api/openapi.json",
    "GET /api/connections",
    "GET /api/connections/{id}",
    "GET /api/top",
    "DELETE /api/connections/{id}",
    "POST /api/connections/{id}/messages",
    "POST /api/identities/{identity}/messages",
    "POST /api/routes/{name}/drain",
    "POST /api/backends/drain",
    "GET /api/routes",
    "GET /api/config",
    "GET /api/events",
];

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut res = Response::new(full(value.to_string()));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// A JSON error: `{"error": kind, "message": …}`.
pub fn error(status: StatusCode, kind: &str, message: impl std::fmt::Display) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "error": kind, "message": message.to_string() }),
    )
}

/// Whether `req` carries the token. Both sides are hashed first, so the comparison takes
/// the same time whatever the given token's length and content.
fn authorized(req: &Request<Incoming>, token: &Secret) -> bool {
    let Some(given) = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = given.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let a = sha1::Sha1::digest(given.trim().as_bytes());
    let b = sha1::Sha1::digest(token.expose());
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// The query string's parameters (percent-decoded; a repeated one keeps its last value).
pub fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Answers a request under `/api/` (404 when the API is off: no token configured).
pub async fn answer(req: Request<Incoming>, state: Arc<ProxyState>) -> Response<Body> {
    let Some(token) = state.settings.load().admin_token.clone() else {
        return error(StatusCode::NOT_FOUND, "no_such_endpoint", "not found");
    };
    // The path only: a query string may carry anything, a token pasted there included.
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let res = if authorized(&req, &token) {
        route(req, &state).await
    } else {
        unauthorized()
    };
    tracing::debug!(%method, path, status = res.status().as_u16(), "admin api request");
    res
}

/// 401, naming the scheme expected.
fn unauthorized() -> Response<Body> {
    let mut res = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "expected `Authorization: Bearer <admin token>`",
    );
    res.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

async fn route(req: Request<Incoming>, state: &Arc<ProxyState>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path
        .trim_start_matches("/api/")
        .split('/')
        .collect::<Vec<_>>();
    let method = req.method().clone();
    match (&method, parts.as_slice()) {
        (&Method::GET, ["openapi.json"]) => {
            let mut res = Response::new(full(OPENAPI));
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res
        }
        (&Method::GET, ["connections"]) => connections::list(&req, state),
        (&Method::GET, ["connections", id]) => connections::show(state, id),
        (&Method::GET, ["top"]) => connections::top(&req, state),
        (&Method::DELETE, ["connections", id]) => connections::close(&req, state, id),
        (&Method::POST, ["connections", id, "messages"]) => {
            let id = id.to_string();
            connections::push_to_connection(req, state, &id).await
        }
        (&Method::POST, ["identities", identity, "messages"]) => {
            let identity = percent_decoded(identity);
            connections::push_to_identity(req, state, &identity).await
        }
        (&Method::POST, ["routes", name, "drain"]) => {
            drain::route(&req, state, &percent_decoded(name))
        }
        (&Method::POST, ["backends", "drain"]) => drain::backend(&req, state),
        (&Method::GET, ["routes"]) => drain::routes(state),
        (&Method::GET, ["config"]) => config_view::answer(state),
        (&Method::GET, ["events"]) => events::stream(state),
        (_, shape) if !allowed(shape).is_empty() => {
            let allow = allowed(shape).join(", ");
            let mut res = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path} (only {allow})"),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                res.headers_mut().insert(hyper::header::ALLOW, v);
            }
            res
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no_such_endpoint",
            format!("no endpoint {path} (see /api/openapi.json)"),
        ),
    }
}

/// The methods of the endpoints with this path (none: no such path).
fn allowed(parts: &[&str]) -> Vec<&'static str> {
    ENDPOINTS
        .iter()
        .filter_map(|e| {
            let (method, pattern) = e.split_once(' ')?;
            let pattern: Vec<&str> = pattern.trim_start_matches("/api/").split('/').collect();
            let fits = pattern.len() == parts.len()
                && pattern
                    .iter()
                    .zip(parts)
                    .all(|(p, s)| p.starts_with('{') || p == s);
            fits.then_some(method)
        })
        .collect()
}

/// A path segment, percent-decoded (an identity or a route name may hold any character).
fn percent_decoded(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OpenAPI document lists exactly the router's endpoints, each with an answer
    /// described.
    #[test]
    fn the_openapi_document_lists_every_endpoint() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut listed = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().unwrap() {
                if method == "parameters" {
                    continue;
                }
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path} has no responses"
                );
                listed.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        listed.sort();
        let mut routed: Vec<String> = ENDPOINTS.iter().map(|e| e.to_string()).collect();
        routed.sort();
        assert_eq!(listed, routed);
    }

    #[test]
    fn the_methods_of_a_path_are_known() {
        assert_eq!(allowed(&["connections", "17"]), ["GET", "DELETE"]);
        assert_eq!(allowed(&["backends", "drain"]), ["POST"]);
        assert!(allowed(&["connections", "17", "nothing"]).is_empty());
    }
}
