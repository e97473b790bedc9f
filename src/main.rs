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
        global = true,
        env = "WSGATE_CONFIG",
        default_value = "config/wsgate.yaml"
    )]
    config: PathBuf,
    /// Validate the configuration (including certificates) and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// What to do instead of serving.
#[derive(clap::Subcommand)]
enum Command {
    /// Ask the running wsgate's admin listener (`admin.bind` of the config) for a health
    /// path; exit 0 on a 200 answer, 1 otherwise. For container HEALTHCHECKs: no shell or
    /// curl needed in the image.
    Health(health::Args),
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
    if let Some(Command::Health(args)) = &cli.command {
        return health::run(&cli.config, args);
    }
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

/// `wsgate health`: one GET to the admin listener named by the config file.
///
/// A blocking std socket and a hand-written request line: the probe is one request on
/// one connection and must start fast, so it skips the runtime and hyper's client. Only
/// `admin.bind` is read from the file (leniently), so an edit elsewhere that the running
/// process refused on reload does not make a healthy process look unhealthy.
mod health {
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    use std::path::Path;
    use std::process::ExitCode;
    use std::time::Duration;

    /// Flags of `wsgate health`.
    #[derive(clap::Args)]
    pub struct Args {
        /// Admin path to ask (`/readyz` for readiness).
        #[arg(long, default_value = "/healthz")]
        path: String,
        /// Give up (unhealthy) when connecting or the answer takes longer than this.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    }

    /// The part of the config file the probe needs; every other key is ignored.
    #[derive(serde::Deserialize)]
    struct File {
        admin: Option<Admin>,
    }

    /// `admin:` of the config file.
    #[derive(serde::Deserialize)]
    struct Admin {
        bind: String,
    }

    /// Exit 0 when the admin listener answers `path` with 200, 1 (unhealthy) otherwise.
    pub fn run(config: &Path, args: &Args) -> ExitCode {
        match probe(config, args) {
            Ok(200) => {
                println!("healthy: {} answered 200", args.path);
                ExitCode::SUCCESS
            }
            Ok(status) => {
                println!("unhealthy: {} answered {status}", args.path);
                ExitCode::FAILURE
            }
            Err(e) => {
                println!("unhealthy: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn probe(config: &Path, args: &Args) -> Result<u16, String> {
        let addr = admin_addr(config)?;
        let mut tcp = TcpStream::connect_timeout(&addr, args.timeout)
            .map_err(|e| format!("cannot connect to the admin listener {addr}: {e}"))?;
        tcp.set_read_timeout(Some(args.timeout))
            .and_then(|()| tcp.set_write_timeout(Some(args.timeout)))
            .map_err(|e| format!("socket: {e}"))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            args.path
        );
        tcp.write_all(request.as_bytes())
            .map_err(|e| format!("sending to {addr}: {e}"))?;
        // The status line fits in the first read of any real answer; read a little more
        // only if the peer sends it in pieces, and never more than this.
        let mut head = Vec::with_capacity(64);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = tcp
                .read(&mut buf)
                .map_err(|e| format!("no answer from {addr} within {:?}: {e}", args.timeout))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        status_of(&head).ok_or_else(|| format!("{addr} did not answer with an HTTP status line"))
    }

    /// The admin address to connect to: a wildcard bind is reached on loopback.
    fn admin_addr(config: &Path) -> Result<SocketAddr, String> {
        let text = std::fs::read_to_string(config)
            .map_err(|e| format!("cannot read {}: {e}", config.display()))?;
        let file: File =
            serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
        let admin = file
            .admin
            .ok_or_else(|| format!("{}: no `admin:` listener to ask", config.display()))?;
        let mut addr: SocketAddr = admin
            .bind
            .parse()
            .map_err(|e| format!("{}: admin.bind {:?}: {e}", config.display(), admin.bind))?;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        Ok(addr)
    }

    /// `HTTP/1.1 200 OK` → 200.
    fn status_of(head: &[u8]) -> Option<u16> {
        let line = head.split(|&b| b == b'\n').next()?;
        let line = std::str::from_utf8(line).ok()?;
        let mut parts = line.split_ascii_whitespace();
        parts.next().filter(|v| v.starts_with("HTTP/"))?;
        parts.next()?.parse().ok()
    }
}
