//! Hot reload: the running config lives in an [`ArcSwap`]; a file change or SIGHUP loads the
//! file again and swaps the new config in atomically. A request reads the config once at its
//! start, so in-flight requests finish with the config they began with and none is dropped.
//! An invalid file is logged and the running config keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::Watcher;
use tokio::sync::mpsc;

use super::{Config, ConfigError};
use prometheus::IntCounterVec;

/// The config every stage reads; swapped whole on reload.
pub type SharedConfig = Arc<ArcSwap<Config>>;

/// Watches the config file and applies valid changes to a [`SharedConfig`].
pub struct ConfigWatcher {
    path: PathBuf,
    shared: SharedConfig,
    /// `gaitkeeper_config_reloads_total`, by result.
    reloads: IntCounterVec,
}

/// Editors save in bursts (truncate, write, rename); wait this long for the burst to settle.
const SETTLE: Duration = Duration::from_millis(150);

impl ConfigWatcher {
    /// Reports each reload into `reloads` (labelled `ok` or `error`).
    pub fn new(path: &Path, shared: SharedConfig, reloads: IntCounterVec) -> Self {
        ConfigWatcher {
            path: path.to_path_buf(),
            shared,
            reloads,
        }
    }

    /// Loads the file and, if it is valid, makes it the running config.
    pub fn reload_now(&self) -> Result<(), ConfigError> {
        match Config::load(&self.path) {
            Ok(new) => {
                let old = self.shared.load();
                for setting in restart_only_changes(&old, &new) {
                    tracing::warn!(
                        setting,
                        "config reload: `{setting}` changed but only takes effect after a restart"
                    );
                }
                self.shared.store(Arc::new(new));
                self.reloads.with_label_values(&["ok"]).inc();
                tracing::info!(file = %self.path.display(), "config reloaded");
                Ok(())
            }
            Err(e) => {
                self.reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %e, "config reload rejected; the running config stays in force");
                Err(e)
            }
        }
    }

    /// Starts watching on a background thread: file changes and SIGHUP trigger a reload.
    pub fn spawn(self) -> std::io::Result<()> {
        let (tx, rx) = mpsc::unbounded_channel::<()>();
        let file_name = self.path.file_name().map(|n| n.to_os_string());
        // Watch the directory, not the file: editors replace files by rename, which would
        // orphan a watch on the old inode.
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let notify_tx = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if event.kind.is_access() {
                    return;
                }
                let touches_config = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == file_name);
                if touches_config {
                    let _ = notify_tx.send(());
                }
            })
            .map_err(std::io::Error::other)?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(std::io::Error::other)?;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Register SIGHUP now, before the thread runs, so an early SIGHUP cannot kill the
        // process through the default action.
        let mut hangup = runtime.block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        })?;
        std::thread::Builder::new()
            .name("gk-config-reload".into())
            .spawn(move || {
                let _watcher = watcher;
                runtime.block_on(self.run(rx, &mut hangup));
            })?;
        Ok(())
    }

    async fn run(
        self,
        mut changes: mpsc::UnboundedReceiver<()>,
        hangup: &mut tokio::signal::unix::Signal,
    ) {
        loop {
            tokio::select! {
                change = changes.recv() => {
                    if change.is_none() { return; }
                    tokio::time::sleep(SETTLE).await;
                    while changes.try_recv().is_ok() {}
                    tracing::info!("config file changed");
                }
                _ = hangup.recv() => tracing::info!("SIGHUP received"),
            }
            let _ = self.reload_now();
        }
    }
}

/// Settings that are read once at start: a reload accepts them but cannot apply them.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("listen");
    }
    if old.admin.listen != new.admin.listen {
        changed.push("admin.listen");
    }
    if old.admin.debug_telemetry != new.admin.debug_telemetry {
        changed.push("admin.debug_telemetry");
    }
    if old.server.threads != new.server.threads {
        changed.push("server.threads");
    }
    if old.server.data_dir != new.server.data_dir {
        changed.push("server.data_dir");
    }
    if old.server.shared_state != new.server.shared_state {
        changed.push("server.shared_state");
    }
    if old.server.background_priority != new.server.background_priority {
        changed.push("server.background_priority");
    }
    if old.logging.format != new.logging.format || old.logging.level != new.logging.level {
        changed.push("logging");
    }
    let ca_file = |c: &Config| c.apps.first().and_then(|a| a.upstream.ca_file.clone());
    if ca_file(old) != ca_file(new) {
        changed.push("upstream.ca_file");
    }
    if old.secrets.key != new.secrets.key {
        changed.push("secrets.key");
    }
    if old.store != new.store {
        changed.push("store");
    }
    if old.audit != new.audit {
        changed.push("audit");
    }
    if old.alerts != new.alerts {
        changed.push("alerts");
    }
    if old.learning != new.learning {
        changed.push("learning");
    }
    // The provider's client (and its discovered metadata) is built once at start.
    if old.mfa.oidc != new.mfa.oidc {
        changed.push("mfa.oidc");
    }
    changed
}
