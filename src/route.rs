//! Routing: the request path is normalised once, and routes match on exactly that path.

use std::sync::Arc;

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

/// A route ready for matching, with its effective tuning.
#[derive(Debug)]
pub struct Route {
    /// The route as configured.
    pub config: RouteConfig,
    /// `defaults` with this route's overrides applied.
    pub tuning: Tuning,
}

impl Route {
    /// The route's name (metric label and log field).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Where this route's connections go.
    pub fn target(&self) -> &Target {
        &self.config.target
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

/// All routes, in match order: routes with a host first, then longer prefixes first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Builds the table from the configured routes and defaults.
    pub fn new(routes: &[RouteConfig], defaults: &Tuning) -> RouteTable {
        let mut routes: Vec<Arc<Route>> = routes
            .iter()
            .map(|r| {
                Arc::new(Route {
                    tuning: r.tuning.apply(defaults),
                    config: r.clone(),
                })
            })
            .collect();
        routes.sort_by_key(|r| {
            (
                r.config.host.is_none(),
                !r.config.exact,
                std::cmp::Reverse(r.config.path.len()),
            )
        });
        RouteTable { routes }
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
        RouteTable::new(&cfg.routes, &cfg.defaults)
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
}
