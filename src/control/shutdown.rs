//! Process signals: SIGTERM/SIGINT drain and exit, SIGHUP reloads.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks wsgate to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGHUP: reload the configuration and certificates.
    Reload,
    /// SIGTERM or SIGINT: stop accepting, close every connection with 1001, exit.
    Shutdown,
}

/// The installed signal handlers.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers (from then on these signals no longer kill the process).
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> Request {
        tokio::select! {
            _ = self.term.recv() => Request::Shutdown,
            _ = self.int.recv() => Request::Shutdown,
            _ = self.hup.recv() => Request::Reload,
        }
    }
}
