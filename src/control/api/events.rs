//! `GET /api/events`: a live event stream (Server-Sent Events) for a status page:
//! `open` (a connection, as `/api/connections` shows it), `close` (its close report) and,
//! every second, `counts` (live connections per route).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Response;
use hyper::body::{Bytes, Frame};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::Body;
use super::connections::view;
use crate::shared::report::CloseReport;
use crate::shared::state::ProxyState;

/// How often the `counts` event goes out (and a silent stream notices its client left).
const TICK: Duration = Duration::from_secs(1);
/// Events buffered for a slow reader before the stream waits for it.
const BUFFER: usize = 64;

/// Takes the stream's subscription back when its task ends.
struct Watching(Arc<ProxyState>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.registry.unwatch_opens();
    }
}

fn event(kind: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

fn closed(r: &CloseReport) -> Value {
    json!({
        "id": r.id,
        "route": r.route,
        "backend": r.backend,
        "client": r.client_addr.to_string(),
        "identity": r.identity,
        "duration_ms": r.duration.as_millis() as u64,
        "msgs_in": r.msgs_in,
        "msgs_out": r.msgs_out,
        "bytes_in": r.bytes_in,
        "bytes_out": r.bytes_out,
        "close_code": r.close_code,
        "close_reason": r.close_reason,
        "closed_by": r.closed_by.as_str(),
        "outcome": r.outcome.as_str(),
    })
}

fn counts(state: &ProxyState) -> Value {
    let table = state.routes.load();
    let routes: Vec<Value> = table
        .routes()
        .iter()
        .map(|r| json!({ "name": r.name(), "active": r.active() }))
        .collect();
    json!({ "active": state.connections.count(), "routes": routes })
}

/// Starts an event stream; it ends when the client goes away or wsgate shuts down.
pub fn stream(state: &Arc<ProxyState>) -> Response<Body> {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes>::new(BUFFER);
    let mut opens = state.registry.watch_opens();
    let watching = Watching(state.clone());
    let mut closes = state.reports.subscribe();
    tokio::spawn(async move {
        let state = &watching.0;
        let mut tick = tokio::time::interval(TICK);
        loop {
            let next = tokio::select! {
                _ = state.shutdown.cancelled() => break,
                _ = tick.tick() => event("counts", &counts(state)),
                open = opens.recv() => match open {
                    Ok(conn) => event("open", &view(&conn)),
                    Err(RecvError::Lagged(n)) => event("lagged", &json!({ "missed": n })),
                    Err(RecvError::Closed) => break,
                },
                close = closes.recv() => match close {
                    Ok(report) => event("close", &closed(&report)),
                    Err(RecvError::Lagged(n)) => event("lagged", &json!({ "missed": n })),
                    Err(RecvError::Closed) => break,
                },
            };
            if tx.send(Frame::data(next)).await.is_err() {
                break;
            }
        }
    });
    let mut res = Response::new(body.boxed_unsync());
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
