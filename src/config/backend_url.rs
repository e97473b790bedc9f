//! Backend URLs: `ws://` or `wss://`, host, port, and the path that replaces a route's prefix.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer};

/// A backend WebSocket server, from a `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// `wss://`.
    pub secure: bool,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port (default 80/443).
    pub port: u16,
    /// Path and query of the URL when it has one; it replaces the route's matched prefix.
    pub path: Option<String>,
    /// The URL as written.
    pub url: String,
}

impl BackendUrl {
    /// Parses `ws://host[:port][/path]` or `wss://…`.
    pub fn parse(text: &str) -> Result<BackendUrl, String> {
        let err = |why: &str| {
            format!("invalid backend URL `{text}`: {why}; expected ws://host:port/path or wss://…")
        };
        let uri: hyper::Uri = text.parse().map_err(|_| err("not a URL"))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(err("scheme must be ws or wss")),
        };
        let authority = uri.authority().ok_or_else(|| err("no host"))?;
        if authority.as_str().contains('@') {
            return Err(err("user info is not supported"));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(err("no host"));
        }
        let port = authority
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        let after_authority = &text[text
            .find(authority.as_str())
            .map_or(text.len(), |i| i + authority.as_str().len())..];
        let path = if after_authority.is_empty() {
            None
        } else {
            uri.path_and_query().map(|p| p.to_string())
        };
        Ok(BackendUrl {
            secure,
            host,
            port,
            path,
            url: text.to_string(),
        })
    }

    /// The value for the `Host` header sent to the backend.
    pub fn host_header(&self) -> String {
        let host = self.host_header_host();
        let default_port = if self.secure { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The request target for the backend: the URL's path replaces the matched prefix.
    pub fn request_target(&self, remainder: &str, full_path: &str, query: Option<&str>) -> String {
        let (mut target, base_query) = match &self.path {
            None => (full_path.to_string(), None),
            Some(p) => {
                let (base, q) = p
                    .split_once('?')
                    .map_or((p.as_str(), None), |(b, q)| (b, Some(q)));
                let mut t = base.trim_end_matches('/').to_string();
                t.push_str(remainder);
                if t.is_empty() {
                    t.push('/');
                }
                (t, q.map(str::to_string))
            }
        };
        let query: Vec<&str> = base_query
            .as_deref()
            .into_iter()
            .chain(query)
            .filter(|q| !q.is_empty())
            .collect();
        if !query.is_empty() {
            target.push('?');
            target.push_str(&query.join("&"));
        }
        target
    }
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl<'de> Deserialize<'de> for BackendUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Url;
        impl de::Visitor<'_> for Url {
            type Value = BackendUrl;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a ws:// or wss:// URL")
            }
            // Parsed inside the visitor so an error carries the URL's own line and column.
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BackendUrl, E> {
                BackendUrl::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Url)
    }
}

impl BackendUrl {
    /// The host as it appears in a URL authority (IPv6 literals in brackets).
    pub fn host_header_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_maps_paths() {
        let u = BackendUrl::parse("ws://127.0.0.1:9001/ws").unwrap();
        assert_eq!(
            (u.secure, u.host.as_str(), u.port),
            (false, "127.0.0.1", 9001)
        );
        assert_eq!(
            u.request_target("/room", "/chat/room", Some("a=1")),
            "/ws/room?a=1"
        );
        assert_eq!(u.request_target("", "/chat", None), "/ws");
        let bare = BackendUrl::parse("wss://example.com").unwrap();
        assert_eq!((bare.port, bare.path.clone()), (443, None));
        assert_eq!(bare.request_target("/x", "/chat/x", None), "/chat/x");
        assert_eq!(bare.host_header(), "example.com");
        let root = BackendUrl::parse("ws://[::1]:80/").unwrap();
        assert_eq!(root.request_target("", "/chat", None), "/");
        assert_eq!(root.host_header(), "[::1]");
        assert!(BackendUrl::parse("http://x").is_err());
        assert!(BackendUrl::parse("ws://u@x").is_err());
    }
}
