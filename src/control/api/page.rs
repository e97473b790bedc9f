//! The live status page at `/` of the admin listener: plain HTML, JS and CSS in `page/`,
//! embedded at build time (no build step). It exists only when the admin API does (a
//! token is configured); the files load without the token, and every API call the page
//! makes carries it (the operator types it once; the page keeps it in sessionStorage).

use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::{Body, full};

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/status.js");
const STYLE: &str = include_str!("page/status.css");

/// The page's files by path: `/`, `/status.js`, `/status.css`.
pub fn file(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "/status.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/status.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    }
}

/// One of the page's files, with headers that keep it to itself: its own scripts and
/// styles only, calls to this origin only, never framed, never cached.
pub fn answer(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut res = Response::new(full(body));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    res
}
