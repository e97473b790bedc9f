//! HTTP/2 on one client connection (TLS with ALPN `h2`): the limits of the `http2`
//! section, extended CONNECT on (RFC 8441), every stream a task of its own, and graceful
//! shutdown that lets the WebSockets on the connection close before it ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::ingress::request;
use crate::shared::client::{ClientInfo, StreamCount, StreamHold};
use crate::shared::state::{ProxyState, Settings};
use crate::shared::stream::Stream;

/// hyper's executor for the connection's stream tasks: spawned in the connection's span
/// (so their logs name it) and tracked, so shutdown waits for them like for any connection.
#[derive(Clone)]
struct StreamTasks(TaskTracker);

impl<F> hyper::rt::Executor<F> for StreamTasks
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut.in_current_span());
    }
}

/// A response body that keeps its stream counted until hyper has sent it (or dropped it),
/// so a response still streaming counts as a stream of its connection.
struct Held<B> {
    body: B,
    _hold: StreamHold,
}

impl<B: Body + Unpin> Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's HTTP/2 server, set from `settings`.
fn builder(settings: &Settings, tasks: TaskTracker) -> http2::Builder<StreamTasks> {
    let h2 = &settings.http2;
    // In range: `Http2Config::check` bounds windows and frame size below 2^31.
    let window = |v: u64| u32::try_from(v).unwrap_or(u32::MAX >> 1);
    let mut b = http2::Builder::new(StreamTasks(tasks));
    b.timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(h2.max_concurrent_streams)
        .initial_stream_window_size(window(h2.initial_stream_window_bytes))
        .initial_connection_window_size(window(h2.initial_connection_window_bytes))
        .max_frame_size(window(h2.max_frame_bytes))
        .max_header_list_size(u32::try_from(settings.limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(h2.max_local_error_reset_streams);
    if !h2.keepalive_interval.is_zero() {
        b.keep_alive_interval(h2.keepalive_interval)
            .keep_alive_timeout(h2.keepalive_timeout);
    }
    b
}

/// Serves HTTP/2 on `stream` until the client ends the connection, or, once shutdown
/// began, until its streams are done: GOAWAY first, then the WebSockets on it close
/// (each relay sends its Close 1001), then `grace` for what else is left. A connection
/// without any stream for `limits.header_read_timeout` gets GOAWAY too (what the header
/// timeout is to HTTP/1.1: a connection that asks for nothing does not hold its place),
/// and is closed if it still has none `grace` later.
pub async fn serve(
    stream: Stream,
    client: ClientInfo,
    settings: &Settings,
    state: Arc<ProxyState>,
    grace: Duration,
) {
    let streams = Arc::new(StreamCount::default());
    let shared = state.clone();
    let holds = streams.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        // One hold for whatever takes the stream over (a relay moves it out of the
        // request), one for the response until hyper has sent it.
        req.extensions_mut().insert(holds.hold());
        let answering = holds.hold();
        let serving = request::serve(req, client.clone(), shared.clone());
        async move {
            let res = serving.await?;
            Ok::<_, std::convert::Infallible>(res.map(|body| Held {
                body,
                _hold: answering,
            }))
        }
    });
    let conn =
        builder(settings, state.tracker.clone()).serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let idle = streams.none_for(settings.limits.header_read_timeout);
    tokio::pin!(idle);
    let mut goaway_sent = false;
    // Three rounds at most: the idle GOAWAY, its deadline, and the end or shutdown.
    for _ in 0..3 {
        tokio::select! {
            res = conn.as_mut() => {
                match res {
                    Err(e) => tracing::debug!(error = %e, "HTTP/2 connection ended with an error"),
                    Ok(()) => tracing::debug!("HTTP/2 connection ended"),
                }
                return;
            }
            _ = &mut idle => {
                if goaway_sent {
                    // hyper's graceful close waits for the answer to its PING, which a
                    // client may never send.
                    return tracing::debug!("HTTP/2 connection still idle after its GOAWAY: closed");
                }
                tracing::debug!("HTTP/2 connection idle: GOAWAY");
                goaway_sent = true;
                conn.as_mut().graceful_shutdown();
                idle.set(streams.none_for(grace));
            }
            _ = state.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let deadline = async {
                    streams.none().await;
                    tokio::time::sleep(grace).await;
                };
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = deadline => {}
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;

    use super::*;

    #[tokio::test]
    async fn a_held_body_counts_its_stream_until_it_is_sent() {
        let streams = Arc::new(StreamCount::default());
        let body = Held {
            body: Full::new(Bytes::from_static(b"streaming")),
            _hold: streams.hold(),
        };
        let quiet = Duration::from_millis(20);
        assert!(tokio::time::timeout(quiet, streams.none()).await.is_err());
        assert_eq!(body.size_hint().exact(), Some(9));
        let sent = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&sent[..], b"streaming");
        // `collect` consumed (and dropped) the body: its stream is no longer counted.
        assert!(tokio::time::timeout(quiet, streams.none()).await.is_ok());
    }
}
