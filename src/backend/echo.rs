//! The built-in echo backend: a fastwebsockets server on an in-memory pipe.
//!
//! The relay talks to it exactly as to a remote backend (handshake, masking, checks,
//! close report), so `/echo` exercises the whole proxy with nothing else running.

use std::convert::Infallible;

use fastwebsockets::{FragmentCollector, OpCode, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::shared::stream::Stream;

/// Capacity of the in-memory pipe in each direction (bytes buffered before backpressure).
const PIPE_BYTES: usize = 64 * 1024;

/// Largest message the echo endpoint collects; the relay's own limits apply first.
const MAX_MESSAGE: usize = 1 << 30;

/// Starts an echo server task and returns the stream to talk to it.
pub fn connect() -> Stream {
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(async move {
        let service = service_fn(handle);
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(theirs), service)
            .with_upgrades();
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "echo backend connection ended");
        }
    });
    Stream::Memory(ours)
}

async fn handle(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    let (response, fut) = match upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(_) => {
            let mut bad = Response::new(Empty::new());
            *bad.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(bad);
        }
    };
    tokio::spawn(async move {
        if let Err(e) = echo(fut).await {
            tracing::debug!(error = %e, "echo backend stopped");
        }
    });
    Ok(response)
}

async fn echo(fut: upgrade::UpgradeFut) -> Result<(), fastwebsockets::WebSocketError> {
    let mut ws = fut.await?;
    ws.set_max_message_size(MAX_MESSAGE);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}
