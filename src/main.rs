//! The wsgate binary: parse flags, set up logging, load the config, run until a signal.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use wsgate::{FileWatch, LogFormat, Request, Signals};

/// WebSocket reverse proxy: wss termination, routing, frame relay, close reports.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file.
    #[arg(
        short,
        long,
        env = "WSGATE_CONFIG",
        default_value = "config/wsgate.yaml"
    )]
    config: PathBuf,
    /// Validate the configuration (including certificates) and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match wsgate::Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgate: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        println!("{}: configuration OK", cli.config.display());
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log);
    // Connections run on the worker threads (see `workers`); this runtime only handles
    // signals, reloads, health checks and the admin listener.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(&cli.config, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wsgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs until SIGTERM/SIGINT; SIGHUP and file changes reload.
async fn serve(path: &Path, config: wsgate::Config) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("installing signal handlers")?;
    let shutdown = CancellationToken::new();
    let mut watch = start_watch(path, &config, None);
    let running = wsgate::run(config, shutdown.clone())
        .await
        .context("starting wsgate")?;
    loop {
        let reason = tokio::select! {
            request = signals.next() => match request {
                Request::Shutdown => break,
                Request::Reload => "SIGHUP",
            },
            _ = async { match watch.as_mut() { Some(w) => w.changed().await, None => std::future::pending().await } } => "file change",
        };
        tracing::info!(reason, "reloading configuration");
        if running.reload_from(path).await.is_ok() {
            let config = running.config().await;
            watch = start_watch(path, &config, watch);
        }
    }
    tracing::info!("shutting down: refusing new upgrades, closing connections with 1001");
    shutdown.cancel();
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// Starts (or keeps) the file watch for `config`; a watch that cannot start is logged, not fatal.
fn start_watch(path: &Path, config: &wsgate::Config, old: Option<FileWatch>) -> Option<FileWatch> {
    if !config.reload.watch {
        return None;
    }
    let files = wsgate::watched_files(path, config);
    if let Some(old) = old.filter(|w| w.files() == files) {
        return Some(old);
    }
    match FileWatch::new(&files) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config files; reload with SIGHUP");
            None
        }
    }
}

fn init_logging(log: &wsgate::LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
