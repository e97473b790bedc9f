//! The wsgate binary: parse flags, set up logging, load the config, run until a signal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use wsgate::config::LogFormat;

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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("wsgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: wsgate::Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let running = wsgate::run(config, shutdown.clone())
        .await
        .context("starting wsgate")?;
    wait_for_signal()
        .await
        .context("installing signal handlers")?;
    tracing::info!("shutting down: closing connections with 1001");
    shutdown.cancel();
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

fn init_logging(log: &wsgate::config::LogConfig) {
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
