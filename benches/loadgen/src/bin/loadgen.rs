//! One-core WebSocket load generator. See `benches/README.md`.
//!
//! ```text
//! loadgen MODE --addr 127.0.0.1:PORT [--path /] [--tls-ca CA.pem --sni localhost]
//!              [--bearer-file TOKEN] [--watch PID,PID] [--warmup 0.5] [--duration 4] MODE-OPTIONS
//!   echo      --conns 50 --inflight 1 --size 64 [--client raw|tungstenite] [--rounds R]
//!   latency   --conns 50 --rate 5000 --size 64
//!   connrate  --concurrency 32
//!   conncycles --cycles 2000 --concurrency 8 --size 64   (a fixed count, no window)
//!   idle      --conns 9000 --concurrency 100 --hold 5 [--echo-first true]
//!   soak      --conns 50 --rate 10000 --size 64 --churn-rate 100 --churn-max 64
//!             --churn-msgs 3 --interval 60 --hold-after 0   (--duration: the whole soak)
//!   h2echo    --streams 50 --h2conns 1 --size 64   (TLS only: RFC 8441 over ALPN h2)
//!   h2idle    --streams 5000 --h2conns 50 --hold 5
//! ```
//! Prints one line `RESULT key=value …` on success (idle also prints `ALL_OPEN …` once
//! every connection is open, soak a `TICK …` line per interval); exits 1 with the reason on stderr otherwise.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use wsgate_loadgen::args::Args;
use wsgate_loadgen::modes::{self, Common};
use wsgate_loadgen::net::Target;

/// Slack added to a run's planned length before the watchdog ends it.
const WATCHDOG_SLACK: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(mode) = argv.next().filter(|m| !m.starts_with('-')) else {
        eprintln!(
            "usage: loadgen echo|latency|connrate|conncycles|idle|soak|h2echo|h2idle --addr 127.0.0.1:PORT [options] (see the source header)"
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(&mode, argv)) {
        Ok(line) => {
            println!("RESULT {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen {mode}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mode: &str, argv: impl Iterator<Item = String>) -> Result<String, String> {
    let mut a = Args::parse(argv)?;
    let addr: SocketAddr = a
        .opt("addr")
        .ok_or("--addr is required")?
        .parse()
        .map_err(|e| format!("--addr: {e}"))?;
    let path = a.get("path", "/".to_string())?;
    let ca = a.opt("tls-ca");
    let sni = a.get("sni", "localhost".to_string())?;
    let mut target = Target::new(addr, &path, ca.as_deref().map(|ca| (ca, sni.as_str())))
        .map_err(|e| e.to_string())?;
    // A token sent as `Authorization: Bearer` on every upgrade (the `connauth` measure).
    if let Some(file) = a.opt("bearer-file") {
        let token =
            std::fs::read_to_string(&file).map_err(|e| format!("--bearer-file {file}: {e}"))?;
        target.extra_headers = format!("Authorization: Bearer {}\r\n", token.trim());
    }
    let watch = a
        .opt("watch")
        .map(|w| w.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let c = Common {
        target,
        watch,
        warmup: a.secs("warmup", 0.5)?,
        duration: a.secs("duration", 4.0)?,
    };
    let planned = c.warmup + c.duration;
    let work = async {
        match mode {
            "echo" => {
                let (conns, inflight, size) = (
                    a.get("conns", 50)?,
                    a.get("inflight", 1)?,
                    a.get("size", 64)?,
                );
                let client = a.get("client", "raw".to_string())?;
                let rounds = a.opt("rounds").map(|r| r.parse::<u64>()).transpose();
                let rounds = rounds.map_err(|e| format!("--rounds: {e}"))?;
                a.finish()?;
                match client.as_str() {
                    "raw" => modes::echo::run(&c, conns, inflight, size, rounds).await,
                    #[cfg(feature = "tungstenite")]
                    "tungstenite" => modes::tung::run(&c, conns, inflight, size).await,
                    other => Err(format!(
                        "--client {other}: raw, or tungstenite when built with --features tungstenite"
                    )),
                }
            }
            "latency" => {
                let (conns, rate, size) = (
                    a.get("conns", 50)?,
                    a.get("rate", 5000.0)?,
                    a.get("size", 64)?,
                );
                a.finish()?;
                modes::latency::run(&c, conns, rate, size).await
            }
            "connrate" => {
                let concurrency = a.get("concurrency", 32)?;
                a.finish()?;
                modes::connrate::run(&c, concurrency).await
            }
            "conncycles" => {
                let (cycles, concurrency, size) = (
                    a.get("cycles", 2000)?,
                    a.get("concurrency", 8)?,
                    a.get("size", 64)?,
                );
                a.finish()?;
                modes::conncycles::run(&c, cycles, concurrency, size).await
            }
            "idle" => {
                let (conns, concurrency, hold) = (
                    a.get("conns", 9000)?,
                    a.get("concurrency", 100)?,
                    a.secs("hold", 5.0)?,
                );
                let echo_first = a.get("echo-first", false)?;
                a.finish()?;
                let r = modes::idle::run(&c, conns, concurrency, hold, echo_first);
                // Opening is bounded separately (3 minutes); the hold adds to it.
                return tokio::time::timeout(hold + Duration::from_secs(200), r)
                    .await
                    .unwrap_or_else(|_| Err("watchdog: idle run took too long".into()));
            }
            "h2echo" => {
                let (streams, conns, size) = (
                    a.get("streams", 50)?,
                    a.get("h2conns", 1)?,
                    a.get("size", 64)?,
                );
                a.finish()?;
                modes::h2ws::echo(&c, streams, conns, size).await
            }
            "h2idle" => {
                let (streams, conns, hold) = (
                    a.get("streams", 5000)?,
                    a.get("h2conns", 50)?,
                    a.secs("hold", 5.0)?,
                );
                a.finish()?;
                let r = modes::h2ws::idle(&c, streams, conns, hold);
                return tokio::time::timeout(hold + Duration::from_secs(200), r)
                    .await
                    .unwrap_or_else(|_| Err("watchdog: h2idle run took too long".into()));
            }
            "soak" => {
                let plan = modes::soak::Plan {
                    conns: a.get("conns", 50)?,
                    rate: a.get("rate", 10_000.0)?,
                    size: a.get("size", 64)?,
                    churn_rate: a.get("churn-rate", 100.0)?,
                    churn_max: a.get("churn-max", 64)?,
                    churn_msgs: a.get("churn-msgs", 3)?,
                    interval: a.secs("interval", 60.0)?,
                    hold_after: a.secs("hold-after", 0.0)?,
                };
                a.finish()?;
                let hold = plan.hold_after;
                let r = modes::soak::run(&c, &plan);
                return tokio::time::timeout(c.duration + hold + WATCHDOG_SLACK, r)
                    .await
                    .unwrap_or_else(|_| Err("watchdog: soak run took too long".into()));
            }
            other => Err(format!("unknown mode {other:?}")),
        }
    };
    tokio::time::timeout(planned + modes::CONNECT_TIMEOUT + WATCHDOG_SLACK, work)
        .await
        .unwrap_or_else(|_| Err("watchdog: run took too long".into()))
}
