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
    /// Path of the URL when it has one; it replaces the route's matched prefix.
    pub path: Option<String>,
    /// Query of the URL when it has one; it goes before the client's query.
    pub query: Option<String>,
    /// The URL as written.
    pub url: String,
}

impl BackendUrl {
    /// Parses `ws://host[:port][/path][?query]` or `wss://…` (no user info, no fragment).
    ///
    /// The URL has a path when anything but a query follows the authority: `ws://h` and
    /// `ws://h?q=1` pass the client's path through, while `ws://h/` sends `/` in place of
    /// the route's prefix. `http::Uri` keeps the scheme and authority as written and
    /// requires `://` between them, so the rest of the input starts right after
    /// `scheme://authority`; that position decides, since the parser reports an empty path
    /// as `/`.
    pub fn parse(text: &str) -> Result<BackendUrl, String> {
        let err = |why: &str| {
            format!("invalid backend URL `{text}`: {why}; expected ws://host:port/path or wss://…")
        };
        // http::Uri drops a fragment silently; a WebSocket URL must not have one (RFC 6455 §3).
        if text.contains('#') {
            return Err(err("a fragment (`#…`) is not allowed"));
        }
        let uri: hyper::Uri = text.parse().map_err(|_| err("not a URL"))?;
        let scheme = uri.scheme_str().unwrap_or_default();
        let secure = match scheme {
            "ws" => false,
            "wss" => true,
            _ => return Err(err("scheme must be ws or wss")),
        };
        let authority = uri.authority().ok_or_else(|| err("no host"))?;
        if authority.as_str().contains('@') {
            return Err(err("user info is not supported"));
        }
        let host = authority.host();
        // Without user info the authority is the host and an optional `:port`.
        let port = match authority
            .as_str()
            .get(host.len()..)
            .unwrap_or_default()
            .strip_prefix(':')
        {
            None | Some("") => {
                if secure {
                    443
                } else {
                    80
                }
            }
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(err("port must be 1 to 65535")),
            },
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(err("no host"));
        }
        let rest = text
            .get(scheme.len() + "://".len() + authority.as_str().len()..)
            .ok_or_else(|| err("not a URL"))?;
        let has_path = !rest.is_empty() && !rest.starts_with('?');
        Ok(BackendUrl {
            secure,
            host,
            port,
            path: has_path.then(|| uri.path().to_string()),
            query: uri.query().map(str::to_string),
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

    /// The request target for the backend: the URL's path replaces the matched prefix
    /// (without one the client's whole path passes), the URL's query goes first.
    pub fn request_target(&self, remainder: &str, full_path: &str, query: Option<&str>) -> String {
        let mut target = match &self.path {
            None => full_path.to_string(),
            Some(base) => {
                let mut t = base.trim_end_matches('/').to_string();
                t.push_str(remainder);
                if t.is_empty() {
                    t.push('/');
                }
                t
            }
        };
        // The non-empty ones of both queries, joined by `&`.
        let mut sep = '?';
        for q in [self.query.as_deref(), query].into_iter().flatten() {
            if !q.is_empty() {
                target.push(sep);
                target.push_str(q);
                sep = '&';
            }
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
    /// The host as an IP address, when it is an IP literal (else it is a name to resolve).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.host.parse().ok()
    }

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

    #[test]
    fn a_host_that_also_appears_in_the_scheme_has_no_phantom_path() {
        // Bug: the authority was found with `text.find(host)`, which matched inside the
        // scheme, so `ws://ws` got the path `/` and replaced the client's path.
        for text in ["ws://ws", "wss://s", "ws://w:9000", "wss://ss:443"] {
            let u = BackendUrl::parse(text).unwrap();
            assert_eq!(u.path, None, "{text}");
            assert_eq!(
                u.request_target("/x", "/chat/x", Some("a=1")),
                "/chat/x?a=1"
            );
        }
        let u = BackendUrl::parse("ws://ws:80/ws").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("ws", 80));
        assert_eq!(u.path.as_deref(), Some("/ws"));
        assert_eq!(u.request_target("/room", "/chat/room", None), "/ws/room");
        assert_eq!(u.host_header(), "ws");
    }

    #[test]
    fn ipv6_literals() {
        let u = BackendUrl::parse("ws://[::1]:9001/ws").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9001));
        assert_eq!(u.host_header(), "[::1]:9001");
        assert_eq!(u.host_header_host(), "[::1]");
        let bare = BackendUrl::parse("wss://[2001:db8::1]").unwrap();
        assert_eq!((bare.port, bare.path.clone()), (443, None));
        assert_eq!(bare.request_target("", "/chat", None), "/chat");
    }

    #[test]
    fn user_info_fragments_and_bad_ports_are_refused() {
        for text in [
            "ws://u@x",
            "ws://u:p@x:80/ws",
            "ws://x/ws#frag",
            "ws://x:99999/",
            "ws://x:port/",
            "ws:///ws",
            "ws:x",
        ] {
            assert!(BackendUrl::parse(text).is_err(), "{text} accepted");
        }
    }

    #[test]
    fn the_query_is_kept() {
        let u = BackendUrl::parse("ws://h:9/ws?token=a").unwrap();
        assert_eq!(
            u.request_target("/r", "/chat/r", Some("b=2")),
            "/ws/r?token=a&b=2"
        );
        assert_eq!(u.request_target("", "/chat", None), "/ws?token=a");
        // A query without a path keeps the client's path and adds the query.
        let q = BackendUrl::parse("ws://h?token=a").unwrap();
        assert_eq!(q.path, None);
        assert_eq!(
            q.request_target("/r", "/chat/r", Some("b=2")),
            "/chat/r?token=a&b=2"
        );
    }
}
