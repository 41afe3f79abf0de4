//! The `audit:` section: where the audit trail's JSON lines go and the spool's bounds.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::HumanDuration;

/// `audit:` in the config file.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where every audit record is also written as one JSON line: `stdout` (the default, so
    /// the demo and container logs show it; gaitkeeper's own logs go to stderr), `off`, or
    /// `{ file: PATH }` (appended to).
    #[serde(default)]
    pub stream: AuditStream,
    /// Directory of the spool that keeps records while the store is unavailable (default:
    /// `server.data_dir`).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Largest spool, in MiB (1 to 65536); records beyond it are lost and counted.
    #[serde(default = "defaults::max_spool_mb")]
    pub max_spool_mb: u32,
    /// Records waiting for the audit worker (1 to 1000000); when it is full, records go
    /// straight to the spool.
    #[serde(default = "defaults::queue")]
    pub queue: usize,
    /// How often delivering the spool to the store is retried while the store is unavailable
    /// (100ms to 10m).
    #[serde(default = "defaults::retry")]
    pub retry: HumanDuration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            stream: AuditStream::default(),
            spool_dir: None,
            max_spool_mb: defaults::max_spool_mb(),
            queue: defaults::queue(),
            retry: defaults::retry(),
        }
    }
}

/// Where the JSON lines of the audit trail go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditStream {
    #[default]
    Stdout,
    Off,
    /// Append to this file (created if missing).
    File(PathBuf),
}

mod defaults {
    use super::*;

    pub(super) fn max_spool_mb() -> u32 {
        256
    }
    pub(super) fn queue() -> usize {
        4096
    }
    pub(super) fn retry() -> HumanDuration {
        HumanDuration::secs(2)
    }
}

impl AuditConfig {
    /// Checks the values serde cannot; returns the offending key (below `audit.`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(1..=65536).contains(&self.max_spool_mb) {
            return Err((
                "max_spool_mb",
                format!("expected 1 to 65536 MiB, found {}", self.max_spool_mb),
            ));
        }
        if !(1..=1_000_000).contains(&self.queue) {
            return Err((
                "queue",
                format!("expected 1 to 1000000 records, found {}", self.queue),
            ));
        }
        let retry = self.retry.0;
        if retry < Duration::from_millis(100) || retry > Duration::from_secs(600) {
            return Err(("retry", "expected 100ms to 10m".into()));
        }
        if let AuditStream::File(path) = &self.stream {
            if path.as_os_str().is_empty() {
                return Err(("stream", "expected a file path".into()));
            }
        }
        Ok(())
    }
}
