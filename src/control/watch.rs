//! Watches the config file and certificate files, so that saving them triggers a reload.

use std::collections::BTreeSet;
use std::ffi::OsString;
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
    files: Vec<PathBuf>,
}

/// The files whose change triggers a reload: the config file and the certificate files.
pub fn files(config_path: &Path, config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config_path.to_path_buf()];
    for l in &config.listeners {
        if let Some(TlsConfig::Files { cert, key }) = &l.tls {
            files.extend([cert.clone(), key.clone()]);
        }
        if let Some(auth) = &l.client_auth {
            files.push(auth.ca.clone());
        }
    }
    files.extend(config.routes.iter().filter_map(|r| r.tls_ca.clone()));
    files.extend(
        config
            .routes
            .iter()
            .filter_map(|r| r.jwt.as_ref()?.key_file()),
    );
    files
}

fn folder(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether an event path is one of ours: a watched file's name, or a Kubernetes-style
/// `..data` link swap (mounted ConfigMaps and Secrets change that way).
fn relevant(path: &Path, names: &BTreeSet<OsString>) -> bool {
    path.file_name()
        .is_some_and(|n| names.contains(n) || n.to_string_lossy().starts_with(".."))
}

impl FileWatch {
    /// Starts watching `files`.
    ///
    /// Their folders are watched, not the files: editors and Kubernetes replace files by
    /// renaming, which a watch on the old file would miss. Other files there are ignored.
    pub fn new(files: &[PathBuf]) -> notify::Result<FileWatch> {
        let dirs: BTreeSet<PathBuf> = files.iter().map(|f| folder(f)).collect();
        let names: BTreeSet<OsString> = files
            .iter()
            .filter_map(|f| f.file_name().map(Into::into))
            .collect();
        // Capacity 1: one pending "something changed" is all a debounced reload needs.
        let (tx, events) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let ours = event.is_ok_and(|e| {
                    !e.kind.is_access() && e.paths.iter().any(|p| relevant(p, &names))
                });
                if ours {
                    let _ = tx.try_send(());
                }
            })?;
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        Ok(FileWatch {
            _watcher: watcher,
            events,
            files: files.to_vec(),
        })
    }

    /// The files being watched.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Waits for a change, then for a quiet period (300 ms) so one save is one reload.
    pub async fn changed(&mut self) {
        if self.events.recv().await.is_none() {
            return std::future::pending().await;
        }
        while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, self.events.recv()).await {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_files_count() {
        let names: BTreeSet<OsString> = ["wsgate.yaml", "server.pem"].map(OsString::from).into();
        assert!(relevant(Path::new("/etc/wsgate/wsgate.yaml"), &names));
        assert!(relevant(Path::new("/etc/wsgate/..data"), &names));
        assert!(!relevant(Path::new("/etc/wsgate/wsgate.log"), &names));
        assert_eq!(folder(Path::new("wsgate.yaml")), PathBuf::from("."));
    }
}
