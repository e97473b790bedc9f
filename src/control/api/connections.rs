//! `/api/connections…` and `/api/identities/{identity}/messages`: list, show, close, and
//! messages pushed through each connection's own task.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{Body, error, json as answer, query};
use crate::proto::close;
use crate::shared::registry::{Command, Conn, Cursor, PostError};
use crate::shared::state::ProxyState;

/// Connections per page unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 100;
/// Most connections per page: a page is built in memory and sent whole.
const MAX_LIMIT: usize = 1000;
/// Registry entries one page looks at, at most: a filter that matches little still answers
/// soon (with a cursor to go on from) instead of walking every connection in one request.
const PAGE_SCAN: usize = 20_000;
/// Largest pushed message (the body of a `…/messages` request).
pub const MAX_PUSH_BYTES: usize = 1 << 20;
/// Longest Close reason (125 bytes of Close payload less the code).
const MAX_REASON_BYTES: usize = 123;

/// One connection as JSON.
pub fn view(conn: &Conn) -> Value {
    let counts = conn.counts();
    let age = conn.started.elapsed();
    let started = std::time::SystemTime::now()
        .checked_sub(age)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    let rtt = |us: u32| (us > 0).then(|| us as f64 / 1000.0);
    json!({
        "id": conn.id,
        "route": conn.route.name(),
        "backend": &*conn.backend,
        "client": conn.client_addr.to_string(),
        "protocol": conn.protocol.as_str(),
        "tls": conn.tls,
        "identity": conn.identity.as_deref(),
        "started_unix_ms": started,
        "age_ms": age.as_millis() as u64,
        "msgs_in": counts.msgs_in,
        "bytes_in": counts.bytes_in,
        "msgs_out": counts.msgs_out,
        "bytes_out": counts.bytes_out,
        "rtt_client_ms": rtt(counts.rtt_client_us),
        "rtt_backend_ms": rtt(counts.rtt_backend_us),
        "closing": conn.is_closing(),
    })
}

/// `GET /api/connections`: a page, filtered by route, backend, client (address or
/// `ip:port`) and identity.
pub fn list(req: &Request<Incoming>, state: &ProxyState) -> Response<Body> {
    let q = query(req);
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_limit",
                format!("limit: expected 1 to {MAX_LIMIT}"),
            );
        }
    };
    let cursor = match q.get("cursor") {
        None => Cursor::default(),
        Some(c) => match Cursor::decode(c) {
            Some(c) => c,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_cursor",
                    "cursor: expected the `next` of an earlier page",
                );
            }
        },
    };
    let (route, backend, client, identity) = (
        q.get("route"),
        q.get("backend"),
        q.get("client"),
        q.get("identity"),
    );
    let keep = |c: &Conn| {
        route.is_none_or(|r| c.route.name() == r)
            && backend.is_none_or(|b| &*c.backend == b)
            && identity.is_none_or(|i| c.identity.as_deref() == Some(i.as_str()))
            && client.is_none_or(|a| {
                c.client_addr.ip().to_string() == *a || c.client_addr.to_string() == *a
            })
    };
    let (page, next) = state.registry.page(cursor, limit, PAGE_SCAN, keep);
    let items: Vec<Value> = page.iter().map(|c| view(c)).collect();
    answer(
        StatusCode::OK,
        &json!({ "connections": items, "next": next.map(|c| c.encode()) }),
    )
}

/// Connections `GET /api/top` returns at most.
const MAX_TOP: usize = 100;

/// `GET /api/top?limit=`: the connections that moved the most payload bytes (both ways
/// together), most first. Walks every connection in registry pages (each shard locked
/// for a chunk at a time) keeping only the best `limit`.
pub fn top(req: &Request<Incoming>, state: &ProxyState) -> Response<Body> {
    let limit = match query(req).get("limit").map(|l| l.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (1..=MAX_TOP).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_limit",
                format!("limit: expected 1 to {MAX_TOP}"),
            );
        }
    };
    let traffic = |c: &Conn| {
        let [(_, bytes_in), (_, bytes_out)] = c.totals();
        bytes_in.saturating_add(bytes_out)
    };
    let mut best: Vec<(u64, Arc<Conn>)> = Vec::with_capacity(limit + 1);
    let mut cursor = Some(Cursor::default());
    // Bounded: each page moves the cursor on, and the registry is finite.
    for _ in 0..1_000_000 {
        let Some(at) = cursor else { break };
        let (page, next) = state.registry.page(at, MAX_LIMIT, PAGE_SCAN, |_| true);
        for conn in page {
            let t = traffic(&conn);
            if best.len() < limit || best.last().is_some_and(|(b, _)| t > *b) {
                let at = best.partition_point(|(b, _)| *b >= t);
                best.insert(at, (t, conn));
                best.truncate(limit);
            }
        }
        cursor = next;
    }
    let items: Vec<Value> = best.iter().map(|(_, c)| view(c)).collect();
    answer(StatusCode::OK, &json!({ "connections": items }))
}

// The error is the answer itself, built at most once per request.
#[allow(clippy::result_large_err)]
fn find(state: &ProxyState, id: &str) -> Result<Arc<Conn>, Response<Body>> {
    id.parse::<u64>()
        .ok()
        .and_then(|id| state.registry.get(id))
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "unknown_connection",
                format!("no live connection {id}"),
            )
        })
}

/// `GET /api/connections/{id}`.
pub fn show(state: &ProxyState, id: &str) -> Response<Body> {
    match find(state, id) {
        Ok(conn) => answer(StatusCode::OK, &view(&conn)),
        Err(res) => res,
    }
}

/// `DELETE /api/connections/{id}?code=&reason=`: a close handshake on both hops, run by
/// the connection's task (202: it has started).
pub fn close(req: &Request<Incoming>, state: &ProxyState, id: &str) -> Response<Body> {
    let q = query(req);
    let code = match q.get("code").map(|c| c.parse::<u16>()) {
        None => close::code::NORMAL,
        Some(Ok(c)) if close::is_valid_code(c) => c,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_code",
                "code: expected a Close code a peer may send (1000-1003, 1007-1014, 3000-4999)",
            );
        }
    };
    let reason = q.get("reason").cloned().unwrap_or_default();
    if reason.len() > MAX_REASON_BYTES {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_reason",
            format!("reason: at most {MAX_REASON_BYTES} bytes of UTF-8"),
        );
    }
    let conn = match find(state, id) {
        Ok(conn) => conn,
        Err(res) => return res,
    };
    match conn.close(code, reason) {
        Ok(()) => answer(
            StatusCode::ACCEPTED,
            &json!({ "id": conn.id, "closing": true, "code": code }),
        ),
        Err(e) => posted_error(e),
    }
}

fn posted_error(e: PostError) -> Response<Body> {
    match e {
        PostError::Closing => error(StatusCode::CONFLICT, "closing", e),
        PostError::Full => error(StatusCode::SERVICE_UNAVAILABLE, "queue_full", e),
    }
}

/// The message a push request asks for: its direction, kind and payload.
// The error is the answer itself, built at most once per request.
#[allow(clippy::result_large_err)]
async fn message(req: Request<Incoming>) -> Result<Command, Response<Body>> {
    let q = query(&req);
    let to_backend = match q.get("to").map(String::as_str) {
        None | Some("client") => false,
        Some("backend") => true,
        Some(_) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_to",
                "to: expected `client` or `backend`",
            ));
        }
    };
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    // The kind comes from the Content-Type alone, so a request can never ask for text and
    // carry bytes that are not UTF-8 under a binary type.
    let binary =
        !(content_type.starts_with("text/") || content_type.starts_with("application/json"));
    let payload = match Limited::new(req.into_body(), MAX_PUSH_BYTES)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("a pushed message holds at most {MAX_PUSH_BYTES} bytes"),
            ));
        }
    };
    if !binary && std::str::from_utf8(&payload).is_err() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "not_utf8",
            "a text message must be UTF-8 (send bytes as application/octet-stream)",
        ));
    }
    Ok(Command::Send {
        to_backend,
        binary,
        payload,
    })
}

/// `POST /api/connections/{id}/messages`.
pub async fn push_to_connection(
    req: Request<Incoming>,
    state: &ProxyState,
    id: &str,
) -> Response<Body> {
    let conn = match find(state, id) {
        Ok(conn) => conn,
        Err(res) => return res,
    };
    let command = match message(req).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    match conn.post(command) {
        Ok(()) => answer(StatusCode::ACCEPTED, &json!({ "id": conn.id, "queued": 1 })),
        Err(e) => posted_error(e),
    }
}

/// `POST /api/identities/{identity}/messages`: the message goes to every live connection
/// of that identity (each through its own task).
pub async fn push_to_identity(
    req: Request<Incoming>,
    state: &ProxyState,
    identity: &str,
) -> Response<Body> {
    let conns = state
        .registry
        .all(|c| c.identity.as_deref() == Some(identity));
    if conns.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_identity",
            "no live connection of that identity",
        );
    }
    let command = match message(req).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let Command::Send {
        to_backend,
        binary,
        payload,
    } = command;
    let (mut queued, mut closing, mut full) = (Vec::new(), 0, 0);
    for conn in &conns {
        let command = Command::Send {
            to_backend,
            binary,
            // A reference count, not a copy.
            payload: payload.clone(),
        };
        match conn.post(command) {
            Ok(()) => queued.push(conn.id),
            Err(PostError::Closing) => closing += 1,
            Err(PostError::Full) => full += 1,
        }
    }
    if queued.is_empty() {
        return error(
            StatusCode::CONFLICT,
            "closing",
            "every connection of that identity is closing (or has too many messages waiting)",
        );
    }
    answer(
        StatusCode::ACCEPTED,
        &json!({ "queued": queued.len(), "ids": queued, "closing": closing, "full": full }),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;
    use crate::shared::client::ClientProtocol;
    use crate::shared::registry::Registry;

    fn route() -> Arc<crate::shared::routes::Route> {
        crate::shared::routes::test_route("{name: echo, path: /echo, echo: true}")
    }

    fn conn(id: u64, route: &Arc<crate::shared::routes::Route>) -> Arc<Conn> {
        Arc::new(Conn::new(
            id,
            route.clone(),
            "ws://10.0.0.7:9001/ws".into(),
            format!(
                "10.1.{}.{}:{}",
                id >> 16 & 255,
                id >> 8 & 255,
                1024 + (id & 255)
            )
            .parse()
            .unwrap(),
            false,
            ClientProtocol::H1,
            Some(format!("user-{id}").into_boxed_str()),
            tokio::time::Instant::now(),
        ))
    }

    /// By hand (`cargo test --release --lib listing_100k -- --ignored --nocapture`): pages
    /// through 100,000 connections as `GET /api/connections` does (registry page and JSON
    /// text) while another thread opens and closes connections as relay threads do, and
    /// prints the listing time and the longest open or close meanwhile.
    #[test]
    #[ignore]
    fn listing_100k() {
        let r = route();
        let registry = Arc::new(Registry::default());
        for id in 0..100_000 {
            registry.insert(conn(id, &r));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let worst = Arc::new(AtomicU64::new(0));
        let churn = {
            let (registry, stop, worst, r) =
                (registry.clone(), stop.clone(), worst.clone(), r.clone());
            std::thread::spawn(move || {
                let mut id = 1_000_000u64;
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let c = conn(id, &r);
                    let t = tokio::time::Instant::now();
                    registry.insert(c);
                    registry.remove(id);
                    worst.fetch_max(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    id += 1;
                    ops += 1;
                }
                ops
            })
        };
        // What open+close costs at worst on this machine with nobody listing (the thread
        // is preempted now and then: that is the floor of what listing can be blamed for).
        std::thread::sleep(std::time::Duration::from_secs(2));
        println!(
            "no listing: longest open+close {} µs",
            worst.load(Ordering::Relaxed) / 1000
        );
        // Pages walked without building JSON: only the registry's own locking.
        worst.store(0, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let mut cursor = Some(Cursor::default());
        while let Some(at) = cursor {
            cursor = registry.page(at, 1000, PAGE_SCAN, |_| true).1;
        }
        println!(
            "registry pages only: {:?}; longest open+close meanwhile {} µs",
            started.elapsed(),
            worst.load(Ordering::Relaxed) / 1000
        );
        for limit in [100, 1000] {
            worst.store(0, Ordering::Relaxed);
            let started = tokio::time::Instant::now();
            let (mut cursor, mut listed, mut bytes, mut pages) = (Cursor::default(), 0, 0, 0);
            loop {
                let (page, next) = registry.page(cursor, limit, PAGE_SCAN, |_| true);
                let items: Vec<Value> = page.iter().map(|c| view(c)).collect();
                bytes += json!({ "connections": items, "next": next.map(|c| c.encode()) })
                    .to_string()
                    .len();
                listed += page.len();
                pages += 1;
                match next {
                    Some(n) => cursor = n,
                    None => break,
                }
            }
            println!(
                "limit {limit}: {listed} connections in {pages} pages, {} MiB of JSON, in {:?}; \
                 longest open+close meanwhile {} µs",
                bytes >> 20,
                started.elapsed(),
                worst.load(Ordering::Relaxed) / 1000
            );
            // The churning thread's connection may be caught on a page or not.
            assert!((100_000..=100_001).contains(&listed), "{listed}");
        }
        let started = tokio::time::Instant::now();
        let (page, _) = registry.page(Cursor::default(), 1000, PAGE_SCAN, |c| {
            c.identity.as_deref() == Some("user-99999")
        });
        println!(
            "a filter matching one: {} found in {:?} (one page, {PAGE_SCAN} looked at)",
            page.len(),
            started.elapsed()
        );
        stop.store(true, Ordering::Relaxed);
        println!("open+close pairs meanwhile: {}", churn.join().unwrap());
    }
}
