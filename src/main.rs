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

/// The process allocator. mimalloc over glibc's malloc because glibc kept what bursts
/// freed: in `benches/soak.sh`, each 5 s stall of the proxy (a busy machine, a paused
/// process) left RSS about 230 KiB higher for good, while mimalloc gave it back (RSS fell
/// 14% over the same forced stalls). Rates and idle memory per connection were within a
/// few percent either way (`benches/compare.sh`, both builds interleaved); the price is
/// about 8 MiB more RSS at start.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            tracing::error!(error = format!("{e:#}"), "wsgate stopped");
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

/// Peer strings are recorded as `&str` fields, which the text format quotes and escapes
/// like Rust string literals and JSON serialises; [`LineGuard`] is the backstop for any
/// `%` field or message that still carries a control character.
fn init_logging(log: &wsgate::LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = log.format == LogFormat::Json;
    let guard = LineGuard {
        json,
        ansi: ansi && !json,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(guard)
        .with_ansi(guard.ansi);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// Writes each formatted event to stderr as exactly one line: every control character
/// but the final newline (and U+2028/U+2029, line breaks to some readers) is escaped,
/// `\u{85}` in text, `\u0085` in JSON (where such characters only occur inside strings).
#[derive(Clone, Copy)]
struct LineGuard {
    json: bool,
    /// Terminal colours on: ESC belongs to the formatter's own colour codes.
    ansi: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineGuard {
    type Writer = LineGuard;

    fn make_writer(&'a self) -> LineGuard {
        *self
    }
}

impl std::io::Write for LineGuard {
    /// The formatter hands over one whole event per call, its newline last.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let body = text.strip_suffix('\n').unwrap_or(&text);
        let mut line = String::with_capacity(text.len() + 1);
        for c in body.chars() {
            let breaks = c.is_control() || c == '\u{2028}' || c == '\u{2029}';
            if !breaks || (self.ansi && c == '\u{1b}') {
                line.push(c);
            } else if self.json {
                line.push_str(&format!("\\u{:04x}", c as u32));
            } else {
                line.push_str(&c.escape_unicode().to_string());
            }
        }
        line.push('\n');
        std::io::stderr().write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
