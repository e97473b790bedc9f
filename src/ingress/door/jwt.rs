//! The JWT check: find the token (header, subprotocol, cookie, query), pick the key its
//! header asks for, verify it with that key's own algorithm, check its claims, and let the
//! request in with its `sub` as identity, chosen claims as headers, and its `exp` as the
//! connection's end. A refusal is a 401 with `WWW-Authenticate` (RFC 6750 §3) and never
//! carries the token, in the response or in a log.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::Request;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};

use crate::config::jwt::JwtConfig;
use crate::ingress::door::{Entry, Pass, Refusal};
use crate::shared::admission::EndOfLife;
use crate::shared::jwks::{JwtCheck, Lookup};
use crate::shared::report::Outcome;
use crate::shared::routes::Route;
use crate::shared::state::ProxyState;

/// The Close reason sent when a token expires.
const EXPIRED_REASON: &str = "token expired";

/// Checks the token of `req` against the route's keys.
pub(crate) async fn check<B>(
    route: &Route,
    jwt: &JwtCheck,
    req: &mut Request<B>,
    state: &ProxyState,
    entry: &mut Entry<'_>,
    pass: &mut Pass,
) -> Result<(), Refusal> {
    let config = &jwt.config;
    let offered = take_offered_token(config, req.headers_mut(), entry, pass);
    let token = find_token(config, req, offered).ok_or_else(|| refusal(config, "missing"))?;
    let header = decode_header(&token).map_err(|_| refusal(config, "malformed"))?;
    let mut keys = jwt.keys();
    let mut lookup_needs_fetch = keys.keys.is_empty()
        || matches!(
            keys.lookup(header.kid.as_deref(), header.alg),
            Lookup::UnknownKid
        );
    if let (true, Some(jwks)) = (lookup_needs_fetch, jwt.jwks()) {
        crate::backend::jwks::refetch_for_unknown_kid(jwks, route.name(), &state.metrics).await;
        keys = jwt.keys();
        lookup_needs_fetch = keys.keys.is_empty();
    }
    if lookup_needs_fetch && jwt.jwks().is_some() {
        return Err(Refusal {
            status: hyper::StatusCode::SERVICE_UNAVAILABLE,
            headers: plain_headers(),
            body: Bytes::from_static(b"token keys unavailable\n"),
            reason: "jwks_unavailable",
        });
    }
    let candidates = match keys.lookup(header.kid.as_deref(), header.alg) {
        Lookup::Found(c) => c,
        Lookup::UnknownKid => return Err(refusal(config, "unknown_kid")),
        Lookup::NoKeyForAlgorithm => return Err(refusal(config, "algorithm")),
    };
    let mut last = "bad_signature";
    let mut claims = None;
    for key in candidates {
        match decode::<Map<String, Value>>(&token, &key.key, &validation(config, key.algorithm)) {
            Ok(data) => {
                claims = Some(data.claims);
                break;
            }
            Err(e) => last = reason(e.kind()),
        }
    }
    let claims = claims.ok_or_else(|| refusal(config, last))?;
    set_claim_headers(config, &claims, req.headers_mut());
    pass.admitted.identity = claims
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_string);
    // An `exp` too far to be a moment of this clock (u64::MAX) never ends the connection.
    let end = claims
        .get("exp")
        .and_then(numeric_date)
        .and_then(|exp| tokio::time::Instant::now().checked_add(until(exp, config.leeway)));
    if let (Entry::Upgrade { .. }, Some(at)) = (entry, end) {
        pass.admitted.end_by(EndOfLife {
            at,
            code: config.expired_close_code,
            reason: EXPIRED_REASON.into(),
            outcome: Outcome::AuthExpired,
        });
    }
    Ok(())
}

/// A NumericDate as the check read it: whole seconds, or fractional ones rounded
/// (RFC 7519 §2 allows both), so every `exp` that passed also ends the connection.
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        let f = v.as_f64()?;
        (f.is_finite() && f >= 0.0 && f < u64::MAX as f64).then(|| f.round() as u64)
    })
}

/// The time left until `exp` plus the leeway (the same grace the check gave).
fn until(exp: u64, leeway: Duration) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(exp)
        .saturating_add(leeway)
        .saturating_sub(now)
}

fn validation(config: &JwtConfig, alg: jsonwebtoken::Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = config.leeway.as_secs();
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if config.audiences.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(&config.audiences);
        required.push("aud");
    }
    if !config.issuers.is_empty() {
        v.set_issuer(&config.issuers);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

/// The refusal reason (a metric label) of a failed verification.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "bad_signature",
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not_yet_valid",
        ErrorKind::InvalidAudience => "audience",
        ErrorKind::InvalidIssuer => "issuer",
        ErrorKind::InvalidAlgorithm => "algorithm",
        ErrorKind::MissingRequiredClaim(_) => "missing_claim",
        _ => "malformed",
    }
}

/// Takes the credential out of the offered subprotocols: every `<marker>.<token>` entry
/// (the first one's token is returned) and the marker itself, which wsgate answers with
/// if the backend picks nothing (a browser fails a 101 that names none of its offers).
/// The request's own offer lines are rewritten, so the backend never sees the token.
fn take_offered_token(
    config: &JwtConfig,
    headers: &mut HeaderMap,
    entry: &mut Entry<'_>,
    pass: &mut Pass,
) -> Option<String> {
    let (Some(marker), Entry::Upgrade { protocols }) = (&config.token.subprotocol, entry) else {
        return None;
    };
    let mut token = None;
    let before = protocols.len();
    protocols.retain(|p| {
        if p == marker {
            pass.subprotocol = Some(marker.clone());
            return false;
        }
        match p
            .strip_prefix(marker.as_str())
            .and_then(|r| r.strip_prefix('.'))
        {
            Some(t) => {
                token.get_or_insert_with(|| t.to_string());
                false
            }
            None => true,
        }
    });
    if protocols.len() != before {
        headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
        if let Ok(v) = HeaderValue::from_str(&protocols.join(", "))
            && !protocols.is_empty()
        {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
        }
    }
    token
}

/// The token, from the first configured place that has one.
fn find_token<B>(config: &JwtConfig, req: &Request<B>, offered: Option<String>) -> Option<String> {
    let sources = &config.token;
    let h = req.headers();
    let bearer = || {
        h.get_all(header::AUTHORIZATION).iter().find_map(|v| {
            let v = v.to_str().ok()?;
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        })
    };
    let cookie = |name: &str| {
        h.get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let query = |name: &str| {
        req.uri()
            .query()?
            .split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    sources
        .header
        .then(bearer)
        .flatten()
        .or(offered)
        .or_else(|| sources.cookie.as_deref().and_then(cookie))
        .or_else(|| sources.query.as_deref().and_then(query))
        .filter(|t| !t.is_empty())
}

/// Replaces the client's copies of the claim headers with the token's claims.
fn set_claim_headers(config: &JwtConfig, claims: &Map<String, Value>, headers: &mut HeaderMap) {
    for (claim, name) in &config.claim_headers {
        // Checked when the config was read.
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        headers.remove(&name);
        let value = match claims.get(claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => continue,
            Some(other) => other.to_string(),
        };
        // A value with a control character (a line break) is left out, never sent.
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

fn plain_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h
}

/// A 401 with its challenge: no `error` when no token came (RFC 6750 §3.1), else
/// `invalid_token` with the reason, which never quotes the token.
fn refusal(config: &JwtConfig, reason: &'static str) -> Refusal {
    let challenge = if reason == "missing" {
        format!("Bearer realm=\"{}\"", config.realm)
    } else {
        format!(
            "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
            config.realm,
            reason.replace('_', " ")
        )
    };
    let mut headers = plain_headers();
    // The realm was checked for quotes and control characters when the config was read.
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        headers.insert(header::WWW_AUTHENTICATE, v);
    }
    Refusal {
        status: hyper::StatusCode::UNAUTHORIZED,
        headers,
        body: Bytes::from(format!("invalid token: {}\n", reason.replace('_', " "))),
        reason,
    }
}
