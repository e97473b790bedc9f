//! A route's auth service at run time: its keep-alive connections (a [`Backend`] of its
//! own, so the plain-HTTP pool machinery serves it) and the cache of its positive answers.
//! Built with the route; a reload that keeps the route keeps both.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::{Arc, Mutex};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::config::forward_auth::{AuthCacheConfig, ForwardAuthConfig};
use crate::shared::pool::Backend;

/// A route's auth service and what wsgate remembers of its answers.
#[derive(Debug)]
pub struct ForwardAuth {
    /// How it is asked.
    pub config: ForwardAuthConfig,
    /// Its connections (the idle list of this one backend).
    pub backend: Arc<Backend>,
    /// Positive answers, when `cache` is configured.
    pub cache: Option<AuthCache>,
}

impl ForwardAuth {
    /// The live state for `config`.
    pub fn new(config: &ForwardAuthConfig) -> ForwardAuth {
        ForwardAuth {
            backend: Arc::new(Backend::new(config.url.clone())),
            cache: config.cache.as_ref().map(AuthCache::new),
            config: config.clone(),
        }
    }
}

/// What a positive answer let through: the headers it gave the backend and the identity.
#[derive(Debug, Clone)]
pub struct Granted {
    /// Copied onto the backend request (the configured `response_headers` present in it).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The value of `identity_header`, when the answer had one.
    pub identity: Option<String>,
}

#[derive(Debug)]
struct Entry {
    expires: Instant,
    granted: Granted,
}

/// Positive answers for a short TTL, at most `max_entries`, keyed by a keyed 128-bit hash
/// of the configured credentials (the key is random per cache, so a client cannot make
/// two credentials collide; the credentials themselves are not kept).
#[derive(Debug)]
pub struct AuthCache {
    config: AuthCacheConfig,
    key_headers: Vec<HeaderName>,
    secret: (u64, u64),
    entries: Mutex<HashMap<u128, Entry>>,
}

impl AuthCache {
    fn new(config: &AuthCacheConfig) -> AuthCache {
        AuthCache {
            key_headers: config.key_headers(),
            config: config.clone(),
            secret: (crate::shared::random::u64(), crate::shared::random::u64()),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u128, Entry>> {
        // Each entry is written whole under the lock: whatever panicked left it consistent.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key of a request, or `None` when it carries none of the key's credentials (an
    /// anonymous request is always asked about).
    pub fn key(&self, headers: &HeaderMap) -> Option<u128> {
        let mut h = siphasher::sip128::SipHasher13::new_with_keys(self.secret.0, self.secret.1);
        let mut any = false;
        for name in &self.key_headers {
            for value in headers.get_all(name) {
                any = true;
                h.write(name.as_str().as_bytes());
                h.write_u8(0);
                h.write(value.as_bytes());
                h.write_u8(0);
            }
        }
        if let Some(cookie) = &self.config.key_cookie {
            for value in cookie_values(headers, cookie) {
                any = true;
                h.write(b"cookie\0");
                h.write(value);
                h.write_u8(0);
            }
        }
        use siphasher::sip128::Hasher128;
        any.then(|| h.finish128().as_u128())
    }

    /// The answer cached for `key`, if it is still fresh.
    pub fn get(&self, key: u128) -> Option<Granted> {
        let mut entries = self.lock();
        match entries.get(&key) {
            Some(e) if Instant::now() < e.expires => Some(e.granted.clone()),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a positive answer for the TTL; when full, expired entries go first, then
    /// an arbitrary one, so the cache never grows past `max_entries`.
    pub fn put(&self, key: u128, granted: Granted) {
        if self.config.max_entries == 0 || self.config.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= self.config.max_entries && !entries.contains_key(&key) {
            entries.retain(|_, e| now < e.expires);
            if entries.len() >= self.config.max_entries
                && let Some(evict) = entries.keys().next().copied()
            {
                entries.remove(&evict);
            }
        }
        entries.insert(
            key,
            Entry {
                expires: now + self.config.ttl,
                granted,
            },
        );
    }

    /// Answers held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no answer is held.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The values of cookie `name` in the request's `Cookie` headers.
fn cookie_values<'h>(headers: &'h HeaderMap, name: &'h str) -> impl Iterator<Item = &'h [u8]> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(move |pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cache(max: usize, cookie: Option<&str>) -> AuthCache {
        AuthCache::new(&AuthCacheConfig {
            ttl: Duration::from_secs(10),
            key_headers: None,
            key_cookie: cookie.map(str::to_string),
            max_entries: max,
        })
    }

    fn granted() -> Granted {
        Granted {
            headers: Vec::new(),
            identity: Some("alice".into()),
        }
    }

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    /// A request without the key's credentials is never served from the cache, and
    /// different credentials have different keys.
    #[test]
    fn keys_come_from_credentials_only() {
        let c = cache(10, None);
        assert_eq!(c.key(&HeaderMap::new()), None);
        assert_eq!(
            c.key(&with("cookie", "a=1")),
            None,
            "only authorization by default"
        );
        let a = c.key(&with("authorization", "Bearer a")).unwrap();
        let b = c.key(&with("authorization", "Bearer b")).unwrap();
        assert_ne!(a, b);
        let c = cache(10, Some("sid"));
        assert_eq!(c.key(&with("cookie", "other=1")), None);
        let one = c.key(&with("cookie", "x=1; sid=abc")).unwrap();
        assert_eq!(Some(one), c.key(&with("cookie", "sid=abc")));
        assert_ne!(Some(one), c.key(&with("cookie", "sid=abd")));
    }

    /// However many credentials come, the cache holds at most `max_entries`.
    #[test]
    fn the_cache_is_bounded() {
        let c = cache(3, None);
        for k in 0..100u128 {
            c.put(k, granted());
            assert!(c.len() <= 3);
        }
        assert!(c.get(99).is_some(), "the newest answer is kept");
    }

    /// An answer older than the TTL is not served.
    #[tokio::test(start_paused = true)]
    async fn answers_expire() {
        let c = cache(3, None);
        c.put(1, granted());
        assert!(c.get(1).is_some());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(c.get(1).is_none());
        assert!(c.is_empty());
    }
}
