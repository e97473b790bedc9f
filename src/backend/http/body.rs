//! Bodies of plain requests as they pass through: never buffered, each frame handed on as
//! it comes. [`IdleBody`] cuts a body whose sender goes quiet; [`UploadBody`] says when the
//! request body was sent whole (the response-head deadline starts then); [`BackendBody`]
//! gives its connection back to the pool once the response was read to its end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::shared::idle_conns::{BoxError, ForwardBody, HttpConn};
use crate::shared::pool::Backend;

/// A body that moved no frame for its idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no body bytes for {0:?}")]
pub struct BodyIdle(pub Duration);

/// Whether `e` (a body or hyper error, with its sources) is an idle-body timeout.
pub fn is_idle_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    // Bounded by the error chain, which hyper keeps a few levels deep.
    for _ in 0..8 {
        match cur {
            Some(e) if e.is::<BodyIdle>() => return true,
            Some(e) => cur = e.source(),
            None => return false,
        }
    }
    false
}

/// `inner`, failing with [`BodyIdle`] when its sender sends nothing for `timeout` while it
/// is being read (0 = never). Time the reader spends not asking does not count: that is
/// backpressure from the other hop.
pub struct IdleBody<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, timeout: Duration) -> IdleBody<B> {
        IdleBody {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some(sleep) = &mut this.sleep {
                sleep.as_mut().reset(Instant::now() + this.timeout);
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.timeout.is_zero() {
            return Poll::Pending;
        }
        let timeout = this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdle(timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body on its way to the backend. `progress` ticks with every frame hyper
/// takes (value `false`) and turns `true` while hyper waits for the client's next bytes;
/// it is dropped (its receivers see the channel closed) once the body ended or was
/// dropped. So the exchange can tell a backend that stopped reading (no tick, hyper
/// blocked writing, value `false`) from a slow client (value `true`: the client side's
/// [`IdleBody`] judges it) and from a backend that has the body whole.
pub struct UploadBody {
    inner: ForwardBody,
    progress: Option<watch::Sender<bool>>,
}

impl UploadBody {
    /// Wraps `inner`; see the type's doc for the receiver. An empty body (most requests)
    /// gets none: there is nothing to wait for, and no channel is made for it.
    pub fn new(inner: ForwardBody) -> (UploadBody, Option<watch::Receiver<bool>>) {
        if inner.is_end_stream() {
            return (
                UploadBody {
                    inner,
                    progress: None,
                },
                None,
            );
        }
        let (tx, rx) = watch::channel(false);
        let progress = Some(tx);
        (UploadBody { inner, progress }, Some(rx))
    }
}

impl Body for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.progress = None,
            Poll::Ready(Some(_)) => {
                if let Some(p) = &self.progress {
                    p.send_replace(false);
                }
            }
            Poll::Pending => {
                if let Some(p) = &self.progress {
                    p.send_if_modified(|waiting| !std::mem::replace(waiting, true));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A backend's response body; at its end the connection goes back to the backend's idle
/// list (unless it may not be reused), dropped earlier it is closed (hyper cannot reuse a
/// connection whose response was not read whole).
pub struct BackendBody {
    inner: IdleBody<Incoming>,
    conn: Option<Reusable>,
}

/// A connection to give back, and where.
pub(crate) struct Reusable {
    pub(crate) conn: HttpConn,
    pub(crate) backend: Arc<Backend>,
    pub(crate) idle_max: usize,
    /// Once shutdown began a connection is not kept (idle ones are closed then).
    pub(crate) shutdown: CancellationToken,
}

impl Reusable {
    fn give_back(self) {
        if !self.shutdown.is_cancelled() {
            self.backend.http_idle.put(self.conn, self.idle_max);
        }
    }
}

impl BackendBody {
    /// Wraps a response body; `conn` is `None` when the connection must not be reused.
    pub(crate) fn new(body: Incoming, idle: Duration, conn: Option<Reusable>) -> BackendBody {
        let mut body = BackendBody {
            inner: IdleBody::new(body, idle),
            conn,
        };
        // A body that is over before it starts (HEAD, 204, 304, length 0) may never be read.
        if body.inner.is_end_stream()
            && let Some(conn) = body.conn.take()
        {
            conn.give_back();
        }
        body
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let over = match &polled {
            Poll::Ready(None) => true,
            // A length-framed body is over with its last byte; its reader need not ask again.
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                self.conn = None;
                false
            }
            Poll::Pending => false,
        };
        if over && let Some(conn) = self.conn.take() {
            conn.give_back();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
