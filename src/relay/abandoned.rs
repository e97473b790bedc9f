//! A client that went away between the backend's 101 and its own upgrade: the backend,
//! already upgraded, is told with a Close (1001) like any client that vanishes, and the
//! connection is reported and counted like any other.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use tokio::time::Instant;

use super::closing::{FirstClose, publish, report};
use super::{Pending, SHUTDOWN_WRITE_TIMEOUT};
use crate::proto::close::{self, code};
use crate::proto::frame::OpCode;
use crate::relay::hop::Hop;
use crate::shared::report::{ClosedBy, Outcome};

/// Frames read from the backend in one poll while waiting for its Close reply, before the
/// task yields (the wait itself is bounded by `close_timeout`).
const MAX_FRAMES_PER_POLL: usize = 64;

/// Closes the backend of a connection whose client never took its 101 (bounded by the
/// route's `close_timeout`), then reports it: outcome `client_gone`, closed by the client.
pub(super) async fn client_never_upgraded(pending: Box<Pending>) {
    let Pending {
        session,
        backend,
        state,
    } = *pending;
    let started = Instant::now();
    // Never listed: the client never took its 101.
    let (conn, kept) = session.split(started);
    let per_frame = state.settings.load().per_frame_metrics;
    let mut live =
        state
            .metrics
            .connection_opened(conn.route.name(), per_frame, &conn.route.metrics);
    let tuning = &conn.route.tuning;
    let mut hop = Hop::new(backend.0, backend.1, false, tuning, state.budget.lease());
    hop.queue_close(&close::close_payload(code::GOING_AWAY, "client went away"));
    // Our Close out, then whatever the backend still sends up to its Close reply or the
    // end of its stream, dropped: there is no one to forward it to.
    let handshake = poll_fn(|cx| {
        // No write timeout: the close timeout below bounds the whole exchange.
        match hop.poll_write_out(cx, Duration::ZERO) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => {}
        }
        for _ in 0..MAX_FRAMES_PER_POLL {
            match std::task::ready!(hop.poll_frame(cx)) {
                Ok(Some(frame)) if frame.opcode != OpCode::Close => {}
                _ => return Poll::Ready(()),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    });
    if tokio::time::timeout(tuning.close_timeout, handshake)
        .await
        .is_err()
    {
        tracing::debug!("close handshake timed out");
    }
    let _ = tokio::time::timeout(SHUTDOWN_WRITE_TIMEOUT, poll_fn(|cx| hop.poll_shutdown(cx))).await;
    drop(hop);
    let first = FirstClose {
        closed_by: ClosedBy::Client,
        code: Some(code::ABNORMAL),
        reason: String::new(),
        outcome: Outcome::ClientGone,
    };
    let report = report(kept.subprotocol.map(String::from), &conn, first);
    publish(&state, &conn.route, &mut live, report);
}
