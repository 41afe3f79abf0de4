//! The `store:` section: where profiles live and how much of them stays in memory.

use super::*;

/// The profile store and the in-memory model cache in front of it (restart to change).
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (embedded, one file) or `postgres://USER@HOST:PORT/DB` (several
    /// instances sharing profiles). Default: `sqlite://<server.data_dir>/gaitkeeper.db`.
    /// A PostgreSQL password never goes here: use `PGPASSWORD` or `~/.pgpass`.
    #[serde(default)]
    pub url: Option<String>,
    /// Also store each user's login name in clear (shown by `gaitkeeper users list`). Off:
    /// users are known only by a keyed hash of their login name.
    #[serde(default)]
    pub keep_clear_names: bool,
    /// Verified logins a new user needs before their profile counts as enrolled (1 to 100).
    #[serde(default = "defaults::enrollment_logins")]
    pub enrollment_logins: u32,
    /// How long raw login features are kept (fitted models are kept regardless), e.g. `90d`.
    #[serde(default = "defaults::retention")]
    pub retention: RetentionPeriod,
    /// Memory for cached user models, in MiB (1 to 65536).
    #[serde(default = "defaults::cache_mb")]
    pub cache_mb: u32,
    /// A cached model unused this long is dropped from memory (it stays in the store).
    #[serde(default = "defaults::cache_idle")]
    pub cache_idle: HumanDuration,
    /// Most connections open to the database at once (1 to 256).
    #[serde(default = "defaults::store_max_connections")]
    pub max_connections: u32,
    /// How long an operation waits for a locked SQLite file or a free connection before it
    /// fails (100ms to 60s).
    #[serde(default = "defaults::busy_timeout")]
    pub busy_timeout: HumanDuration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            keep_clear_names: false,
            enrollment_logins: defaults::enrollment_logins(),
            retention: defaults::retention(),
            cache_mb: defaults::cache_mb(),
            cache_idle: defaults::cache_idle(),
            max_connections: defaults::store_max_connections(),
            busy_timeout: defaults::busy_timeout(),
        }
    }
}

impl StoreConfig {
    /// The store's URL: the configured one, else the SQLite file under `data_dir`.
    pub fn url_or_default(&self, data_dir: &Path) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None => {
                const PATH: &percent_encoding::AsciiSet =
                    &percent_encoding::CONTROLS.add(b'%').add(b'?').add(b'#');
                let path = data_dir.join("gaitkeeper.db");
                let path = path.to_string_lossy();
                format!(
                    "sqlite://{}",
                    percent_encoding::utf8_percent_encode(&path, PATH)
                )
            }
        }
    }
}

impl Config {
    pub(super) fn validate_store(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let store = &self.store;
        if let Some(url) = &store.url {
            validate_store_url(url).map_err(|m| invalid("store.url", m))?;
        }
        if !(1..=100).contains(&store.enrollment_logins) {
            return Err(invalid(
                "store.enrollment_logins",
                format!(
                    "expected 1 to 100 verified logins, found {}",
                    store.enrollment_logins
                ),
            ));
        }
        if !(1..=65536).contains(&store.cache_mb) {
            return Err(invalid(
                "store.cache_mb",
                format!("expected 1 to 65536 MiB, found {}", store.cache_mb),
            ));
        }
        if store.cache_idle.0 < std::time::Duration::from_secs(1) {
            return Err(invalid("store.cache_idle", "expected at least 1s".into()));
        }
        if !(1..=256).contains(&store.max_connections) {
            return Err(invalid(
                "store.max_connections",
                format!(
                    "expected 1 to 256 connections, found {}",
                    store.max_connections
                ),
            ));
        }
        let busy = store.busy_timeout.0;
        if busy < std::time::Duration::from_millis(100) || busy > std::time::Duration::from_secs(60)
        {
            return Err(invalid(
                "store.busy_timeout",
                "expected 100ms to 60s".into(),
            ));
        }
        Ok(())
    }
}

/// A store URL must name a backend gaitkeeper has and must not carry a password (secrets never
/// sit in the config file).
pub(super) fn validate_store_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("the URL is longer than 2048 characters".into());
    }
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or("");
        if path.is_empty() || path == ":memory:" {
            return Err(format!(
                "expected a file, e.g. \"sqlite:///var/lib/gaitkeeper/gaitkeeper.db\" (an in-memory store would forget every profile on restart), found {url:?}"
            ));
        }
        return Ok(());
    }
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| {
            format!("expected a URL starting with sqlite:// or postgres://, found {url:?}")
        })?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        if userinfo.contains(':') {
            return Err("the URL contains a password; secrets never go in this file: remove it and set the PGPASSWORD environment variable or use ~/.pgpass".into());
        }
    }
    if authority.is_empty() || authority.ends_with('@') {
        return Err(format!(
            "expected a host, e.g. \"postgres://gaitkeeper@db.internal:5432/gaitkeeper\", found {url:?}"
        ));
    }
    Ok(())
}
