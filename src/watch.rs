//! Watches the config file and certificate files, so that saving them triggers a reload.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::{Config, TlsConfig};

/// Changes closer together than this are one reload (editors write files in several steps).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// A running file watcher; dropped, it stops.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::Receiver<()>,
    dirs: BTreeSet<PathBuf>,
}

/// The folders to watch for a config: the config file's and every certificate file's.
///
/// Folders, not files: editors and Kubernetes replace files by renaming, which a watch on
/// the old file would miss.
pub fn folders(config_path: &Path, config: &Config) -> BTreeSet<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    for l in &config.listeners {
        if let Some(TlsConfig::Files { cert, key }) = &l.tls {
            files.extend([cert.clone(), key.clone()]);
        }
    }
    files.extend(config.routes.iter().filter_map(|r| r.tls_ca.clone()));
    files
        .iter()
        .map(|f| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect()
}

impl FileWatch {
    /// Starts watching `dirs`.
    pub fn new(dirs: BTreeSet<PathBuf>) -> notify::Result<FileWatch> {
        // Capacity 1: one pending "something changed" is all a debounced reload needs.
        let (tx, events) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.try_send(());
                }
            })?;
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        Ok(FileWatch {
            _watcher: watcher,
            events,
            dirs,
        })
    }

    /// The folders being watched.
    pub fn dirs(&self) -> &BTreeSet<PathBuf> {
        &self.dirs
    }

    /// Waits for a change, then for a quiet [`DEBOUNCE`] period.
    pub async fn changed(&mut self) {
        if self.events.recv().await.is_none() {
            return std::future::pending().await;
        }
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, self.events.recv()).await {}
    }
}
