//! A fast small HTTP/1.1 server for the plain-HTTP benchmarks: one `current_thread`
//! runtime, hyper's HTTP/1.1 server with keep-alive, every request answered `200` with
//! the same `--size`-byte body (default 100), so what is measured is the proxy.
//!
//! ```text
//! http-backend --listen 127.0.0.1:PORT [--size 100]
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use wsgate_loadgen::args::Args;

/// Pause after a failed accept (EMFILE and the like) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

fn main() -> ExitCode {
    let parsed = Args::parse(std::env::args().skip(1)).and_then(|mut a| {
        let l: SocketAddr = a.get("listen", "127.0.0.1:9002".parse().expect("literal address"))?;
        let size: usize = a.get("size", 100)?;
        a.finish()?;
        Ok((l, size))
    });
    let (listen, size) = match parsed {
        Ok((l, s)) if l.ip().is_loopback() => (l, s),
        Ok((l, _)) => {
            eprintln!("http-backend: {l}: loopback only");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("http-backend: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let body = Bytes::from(vec![b'x'; size]);
    let result =
        runtime.and_then(|rt| tokio::task::LocalSet::new().block_on(&rt, serve(listen, body)));
    if let Err(e) = result {
        eprintln!("http-backend: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn serve(listen: SocketAddr, body: Bytes) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        tokio::task::spawn_local(async move {
            let answer = service_fn(move |_: Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), answer)
                .await;
        });
    }
}
