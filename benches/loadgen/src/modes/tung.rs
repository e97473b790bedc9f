//! `echo --client tungstenite`: the echo mode on tokio-tungstenite instead of the
//! hand-written codec, kept only to show which client is cheaper (plain TCP only).

use tokio::time::Instant;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::{Common, Counter, FirstError, Flag, all_connected};
use crate::cpu::Sampler;

/// Runs the mode and returns its result line.
pub async fn run(c: &Common, conns: usize, inflight: usize, size: usize) -> Result<String, String> {
    if c.target.tls.is_some() {
        return Err("--client tungstenite is plain TCP only".into());
    }
    let (msgs, connected, errors, first, stop) = (
        Counter::default(),
        Counter::default(),
        Counter::default(),
        FirstError::default(),
        Flag::default(),
    );
    let payload = tokio_tungstenite::tungstenite::Bytes::from(vec![0x5A_u8; size]);
    for _ in 0..conns {
        let (addr, url) = (
            c.target.addr,
            format!("ws://{}{}", c.target.host, c.target.path),
        );
        let (msgs, connected, errors, first, stop, payload) = (
            msgs.clone(),
            connected.clone(),
            errors.clone(),
            first.clone(),
            stop.clone(),
            payload.clone(),
        );
        tokio::task::spawn_local(async move {
            let r: Result<(), Box<dyn std::error::Error>> = async {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let (ws, _) = tokio_tungstenite::client_async(url, tcp).await?;
                connected.add(1);
                let (mut tx, mut rx) = ws.split();
                for _ in 0..inflight {
                    tx.send(Message::Binary(payload.clone())).await?;
                }
                while let Some(m) = rx.next().await {
                    if m?.is_binary() {
                        msgs.add(1);
                        if stop.get() {
                            return Ok(());
                        }
                        tx.send(Message::Binary(payload.clone())).await?;
                    }
                }
                Err("server closed".into())
            }
            .await;
            if let Err(e) = r
                && !stop.get()
            {
                errors.add(1);
                first.record(e);
            }
        });
    }
    all_connected(conns, &connected, &errors, &first).await?;
    tokio::time::sleep(c.warmup).await;
    let (m0, t0, cpu) = (msgs.get(), Instant::now(), Sampler::start(&c.watch));
    tokio::time::sleep(c.duration).await;
    let (m1, secs, cpu) = (msgs.get(), t0.elapsed().as_secs_f64(), cpu.finish());
    stop.set();
    let rate = (m1 - m0) as f64 / secs;
    Ok(format!(
        "mode=echo client=tungstenite conns={conns} inflight={inflight} size={size} secs={secs:.3} msgs={} \
         msg_per_s={rate:.0} mb_per_s={:.1} {cpu} errors={}",
        m1 - m0,
        rate * size as f64 / 1e6,
        errors.get()
    ))
}
