//! Routing: the request path is normalised once, and routes match on exactly that path.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::tls::TlsError;

use crate::config::{RouteConfig, Target, Tuning};

/// Why a request path was refused before routing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding")]
    BadEncoding,
    /// `..` segments climbing above the root.
    #[error("path escapes the root")]
    EscapesRoot,
    /// Not an absolute path.
    #[error("path must start with `/`")]
    NotAbsolute,
}

/// Normalises a request path (RFC 3986 §6.2.2): decodes percent-encoded unreserved
/// characters, upper-cases the hex of the rest, collapses `//`, and resolves `.`/`..`.
///
/// `%2F` stays encoded, so it is never a separator; the result is what is routed and forwarded.
pub fn normalize_path(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path)?;
    let mut segments: Vec<&str> = Vec::new();
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
            let (h, l) = (hex_val(hex[0])?, hex_val(hex[1])?);
            let c = (h << 4) | l;
            if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(hex[0].to_ascii_uppercase() as char);
                out.push(hex[1].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // Copy the run up to the next `%` in one go (keeps multi-byte UTF-8 intact).
            let end = path[i..].find('%').map_or(bytes.len(), |p| i + p);
            out.push_str(&path[i..end]);
            i = end;
        }
    }
    Ok(out)
}

fn hex_val(b: u8) -> Result<u8, PathError> {
    (b as char)
        .to_digit(16)
        .map(|d| d as u8)
        .ok_or(PathError::BadEncoding)
}

/// A route ready for matching, with its effective tuning and its live state.
pub struct Route {
    /// The route as configured.
    pub config: RouteConfig,
    /// `defaults` with this route's overrides applied.
    pub tuning: Tuning,
    /// TLS client config for this route's `wss://` backends.
    pub backend_tls: Arc<rustls::ClientConfig>,
    /// Cancelled when a reload removed or changed this route: its connections close with 1012.
    pub retired: CancellationToken,
    /// Connections on this route now (including upgrades in progress).
    active: AtomicUsize,
    /// Spreading of the 1012 closes after retirement: window, connections to spread, next slot.
    retire_window_ms: AtomicU64,
    retire_total: AtomicUsize,
    retire_next: AtomicUsize,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.config.name)
            .field("path", &self.config.path)
            .finish()
    }
}

/// Holds one place on a route (and in the global count) until dropped.
pub struct RouteSlot {
    route: Arc<Route>,
}

impl Drop for RouteSlot {
    fn drop(&mut self) {
        self.route.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Route {
    /// Builds a route from its config and the defaults.
    pub fn new(config: &RouteConfig, defaults: &Tuning) -> Result<Route, TlsError> {
        Ok(Route {
            tuning: config.tuning.apply(defaults),
            backend_tls: crate::tls::backend_client_config(config.tls_ca.as_deref())?,
            config: config.clone(),
            retired: CancellationToken::new(),
            active: AtomicUsize::new(0),
            retire_window_ms: AtomicU64::new(0),
            retire_total: AtomicUsize::new(0),
            retire_next: AtomicUsize::new(0),
        })
    }

    /// The route's name (metric label and log field).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Where this route's connections go.
    pub fn target(&self) -> &Target {
        &self.config.target
    }

    /// Takes a place on this route, unless its `max_connections` is reached.
    pub fn reserve(self: &Arc<Self>) -> Option<RouteSlot> {
        let now = self.active.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = RouteSlot {
            route: self.clone(),
        };
        match self.config.max_connections {
            Some(max) if now > max => None,
            _ => Some(slot),
        }
    }

    /// Marks the route removed or changed: its connections close with 1012 spread over `window`.
    pub fn retire(&self, window: Duration) {
        self.retire_window_ms
            .store(window.as_millis() as u64, Ordering::Release);
        self.retire_total.store(
            self.active.load(Ordering::Acquire).max(1),
            Ordering::Release,
        );
        self.retired.cancel();
    }

    /// After retirement: how long this connection waits before its 1012, so that the
    /// route's connections are closed evenly over the window, not all at once.
    pub fn retire_delay(&self) -> Duration {
        let slot = self.retire_next.fetch_add(1, Ordering::AcqRel) as u64;
        let total = (self.retire_total.load(Ordering::Acquire) as u64).max(slot + 1);
        let window = self.retire_window_ms.load(Ordering::Acquire);
        Duration::from_millis(window * slot / total)
    }

    /// The part of `path` after this route's prefix (always empty or starting with `/`).
    pub fn remainder<'p>(&self, path: &'p str) -> &'p str {
        let prefix = self.config.path.trim_end_matches('/');
        &path[prefix.len().min(path.len())..]
    }

    fn matches_path(&self, path: &str) -> bool {
        let p = &self.config.path;
        if self.config.exact {
            return path == p;
        }
        let prefix = p.trim_end_matches('/');
        path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
    }
}

/// All routes, in match order: routes with a host first, then exact ones, then longer prefixes.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Builds the table; a route whose definition is unchanged from `previous` is carried
    /// over as is (its connections are untouched). Also returns the routes of `previous`
    /// that were not carried over, which the caller retires.
    pub fn build(
        configs: &[RouteConfig],
        defaults: &Tuning,
        previous: Option<&RouteTable>,
    ) -> Result<(RouteTable, Vec<Arc<Route>>), TlsError> {
        let mut routes = Vec::with_capacity(configs.len());
        for config in configs {
            let kept = previous.and_then(|p| {
                p.routes
                    .iter()
                    .find(|r| r.config == *config && r.tuning == config.tuning.apply(defaults))
            });
            routes.push(match kept {
                Some(route) => route.clone(),
                None => Arc::new(Route::new(config, defaults)?),
            });
        }
        routes.sort_by_key(|r| {
            (
                r.config.host.is_none(),
                !r.config.exact,
                std::cmp::Reverse(r.config.path.len()),
            )
        });
        let dropped = previous
            .map(|p| {
                p.routes
                    .iter()
                    .filter(|old| !routes.iter().any(|r| Arc::ptr_eq(r, old)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok((RouteTable { routes }, dropped))
    }

    /// The route for a normalised path and the request's host (port and case ignored).
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<Arc<Route>> {
        let host = host.map(strip_port).map(str::to_ascii_lowercase);
        self.routes
            .iter()
            .find(|r| {
                let host_ok = match (&r.config.host, &host) {
                    (None, _) => true,
                    (Some(want), Some(got)) => want == got,
                    (Some(_), None) => false,
                };
                host_ok && r.matches_path(path)
            })
            .cloned()
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_tricks() {
        assert_eq!(normalize_path("/a//b/./c/../d").unwrap(), "/a/b/d");
        assert_eq!(normalize_path("/%2e%2E/x"), Err(PathError::EscapesRoot));
        assert_eq!(normalize_path("/chat/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(normalize_path("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(normalize_path("/%7euser/").unwrap(), "/~user/");
        assert_eq!(normalize_path("/x%zz"), Err(PathError::BadEncoding));
        assert_eq!(normalize_path("/x%4"), Err(PathError::BadEncoding));
        assert_eq!(normalize_path("/").unwrap(), "/");
        assert_eq!(normalize_path("/caf\u{e9}").unwrap(), "/caf\u{e9}");
        assert_eq!(normalize_path("x"), Err(PathError::NotAbsolute));
    }

    fn table(yaml: &str) -> RouteTable {
        let text = format!("listeners: [{{bind: '127.0.0.1:0'}}]\nroutes:\n{yaml}");
        let cfg = crate::Config::parse(&text, "t").unwrap();
        RouteTable::build(&cfg.routes, &cfg.defaults, None)
            .unwrap()
            .0
    }

    #[test]
    fn longest_prefix_on_segment_boundary() {
        let t = table(
            "  - {name: a, path: /chat, echo: true}\n  - {name: b, path: /chat/admin, echo: true}\n  - {name: c, path: /x, exact: true, echo: true}\n  - {name: d, path: /, host: Example.com, echo: true}\n",
        );
        let name = |h: Option<&str>, p: &str| t.find(h, p).map(|r| r.name().to_string());
        assert_eq!(name(None, "/chat"), Some("a".into()));
        assert_eq!(name(None, "/chat/room"), Some("a".into()));
        assert_eq!(name(None, "/chat/admin/1"), Some("b".into()));
        assert_eq!(name(None, "/chatty"), None);
        assert_eq!(name(None, "/x"), Some("c".into()));
        assert_eq!(name(None, "/x/y"), None);
        assert_eq!(name(Some("example.COM:8443"), "/chatty"), Some("d".into()));
        assert_eq!(name(Some("example.com"), "/chat"), Some("d".into()));
        assert_eq!(
            t.find(None, "/chat/room").unwrap().remainder("/chat/room"),
            "/room"
        );
    }

    #[test]
    fn reload_keeps_unchanged_routes_and_spreads_retirement() {
        let parse = |routes: &str| {
            let text = format!("listeners: [{{bind: '127.0.0.1:0'}}]\nroutes:\n{routes}");
            crate::Config::parse(&text, "t").unwrap()
        };
        let a = parse("  - {name: a, path: /a, echo: true}\n  - {name: b, path: /b, echo: true}\n");
        let (old, dropped) = RouteTable::build(&a.routes, &a.defaults, None).unwrap();
        assert!(dropped.is_empty());
        let b = parse(
            "  - {name: a, path: /a, echo: true}\n  - {name: b, path: /b2, echo: true}\n  - {name: c, path: /c, echo: true}\n",
        );
        let (new, dropped) = RouteTable::build(&b.routes, &b.defaults, Some(&old)).unwrap();
        let (old_a, new_a) = (old.find(None, "/a").unwrap(), new.find(None, "/a").unwrap());
        assert!(
            Arc::ptr_eq(&old_a, &new_a),
            "unchanged route is carried over"
        );
        assert_eq!(dropped.iter().map(|r| r.name()).collect::<Vec<_>>(), ["b"]);

        let b_route = old.find(None, "/b").unwrap();
        let slots: Vec<_> = (0..4).map(|_| b_route.reserve().unwrap()).collect();
        b_route.retire(Duration::from_secs(8));
        let delays: Vec<_> = (0..4).map(|_| b_route.retire_delay().as_secs()).collect();
        assert_eq!(delays, [0, 2, 4, 6]);
        drop(slots);
    }
}
