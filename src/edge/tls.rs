//! Certificates of the TLS listeners: loaded at start, chosen per connection by SNI,
//! reloaded when their files change or on SIGHUP without dropping a connection (a handshake
//! takes whichever certificate is current; live connections keep theirs), and watched for
//! expiry. A new file that cannot be used is logged with the reason and the old certificate
//! stays in service, as an invalid config does.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGaugeVec};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{host_matches, Config, SharedConfig, TlsFileError, TlsFiles};

/// Certificates expiring within this long are warned about.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
/// How often the files are looked at for changes.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often an expiry warning is repeated.
const WARN_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Why the certificate pool could not start.
#[derive(Debug, thiserror::Error)]
pub enum CertPoolError {
    #[error("listener certificate: {0}. Fix the file named in `listen[].tls` and start again.")]
    File(#[from] TlsFileError),
    #[error("cannot start the certificate watcher: {0}")]
    Watch(std::io::Error),
}

/// One certificate in service and what was read off it.
struct Loaded {
    key: Arc<CertifiedKey>,
    /// DNS names of its subject alternative names (and common name when it has none),
    /// lower-case; `*.example.com` for wildcards.
    names: Vec<String>,
    not_after: i64,
    serial: String,
}

/// A certificate the config names: a listener's own, or an app's (offered for its hosts).
struct Entry {
    files: TlsFiles,
    /// The hosts of the apps that name it: SNI names it is chosen for besides its own.
    hosts: Vec<String>,
    stamp: Mutex<Option<FileStamp>>,
    loaded: ArcSwap<Loaded>,
}

impl Entry {
    fn serves(&self, name: &str) -> bool {
        let loaded = self.loaded.load();
        loaded.names.iter().chain(&self.hosts).any(|n| n == name)
    }

    fn serves_by_wildcard(&self, name: &str) -> bool {
        let loaded = self.loaded.load();
        loaded
            .names
            .iter()
            .chain(&self.hosts)
            .any(|n| wildcard_matches(n, name))
    }
}

/// Enough of two files' metadata to notice a replacement (rename or rewrite).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileStamp([(u64, u64, i64, i64); 2]);

fn stamp(files: &TlsFiles) -> Option<FileStamp> {
    let one = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
    };
    Some(FileStamp([one(&files.cert_file)?, one(&files.key_file)?]))
}

/// The certificates the config names, each once: the listeners' own first, then the apps'
/// with the hosts they are for.
fn wanted(config: &Config) -> Vec<(TlsFiles, Vec<String>)> {
    let mut list: Vec<(TlsFiles, Vec<String>)> = Vec::new();
    let listeners = config.listen.iter().filter_map(|l| l.tls.clone());
    let apps = config
        .apps
        .iter()
        .filter_map(|a| a.tls.clone().map(|t| (t, a.hosts.clone())));
    for (files, hosts) in listeners.map(|t| (t, Vec::new())).chain(apps) {
        match list.iter_mut().find(|(f, _)| *f == files) {
            Some((_, known)) => known.extend(hosts),
            None => list.push((files, hosts)),
        }
    }
    list
}

/// Every certificate of the process.
pub struct CertPool {
    config: SharedConfig,
    entries: ArcSwap<Vec<Arc<Entry>>>,
    expiry: IntGaugeVec,
    reloads: IntCounterVec,
    last_warned: Mutex<HashMap<std::path::PathBuf, SystemTime>>,
}

impl CertPool {
    /// Loads every certificate the running config names; an unusable one stops the start.
    pub fn load(
        config: SharedConfig,
        expiry: IntGaugeVec,
        reloads: IntCounterVec,
    ) -> Result<Arc<CertPool>, CertPoolError> {
        let mut entries = Vec::new();
        for (files, hosts) in wanted(&config.load()) {
            let entry = new_entry(files, hosts)?;
            log_loaded(&entry, "listener certificate loaded");
            entries.push(Arc::new(entry));
        }
        let pool = Arc::new(CertPool {
            config,
            entries: ArcSwap::from_pointee(entries),
            expiry,
            reloads,
            last_warned: Mutex::new(HashMap::new()),
        });
        pool.watch_expiry();
        Ok(pool)
    }

    /// The resolver of a listener whose own certificate is `files`.
    pub fn for_listener(self: &Arc<Self>, files: &TlsFiles) -> Arc<ListenerCerts> {
        Arc::new(ListenerCerts {
            pool: self.clone(),
            default: files.clone(),
        })
    }

    /// Takes in the certificates a reloaded config adds or drops, and reloads certificates
    /// whose files changed (every one when `force`, as on SIGHUP).
    pub fn check(&self, force: bool) {
        self.sync_with_config();
        for entry in self.entries.load().iter() {
            let now = stamp(&entry.files);
            let mut last = entry.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if !force && (now.is_none() || now == *last) {
                // Unchanged, or mid-replacement (a file missing for a moment).
                continue;
            }
            *last = now;
            drop(last);
            match read(&entry.files) {
                Ok(fresh) => {
                    entry.loaded.store(Arc::new(fresh));
                    self.reloads.with_label_values(&["ok"]).inc();
                    log_loaded(entry, "listener certificate reloaded");
                    self.last_warned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&entry.files.cert_file);
                }
                Err(e) => {
                    self.reloads.with_label_values(&["error"]).inc();
                    tracing::error!(
                        error = %e,
                        "listener certificate not reloaded; the one in service stays until the files are fixed"
                    );
                }
            }
        }
        self.watch_expiry();
    }

    /// Makes the pool hold what the running config names: an app added by a reload gets its
    /// certificate, a removed one's goes. (An unusable new certificate was refused with the
    /// config itself, so this only fails if the files changed since.)
    fn sync_with_config(&self) {
        let wanted = wanted(&self.config.load());
        let current = self.entries.load();
        let same = wanted.len() == current.len()
            && wanted
                .iter()
                .zip(current.iter())
                .all(|((f, h), e)| *f == e.files && *h == e.hosts);
        if same {
            return;
        }
        let mut next = Vec::with_capacity(wanted.len());
        for (files, hosts) in wanted {
            let known = current.iter().find(|e| e.files == files);
            match known {
                Some(e) if e.hosts == hosts => next.push(e.clone()),
                Some(e) => next.push(Arc::new(Entry {
                    files,
                    hosts,
                    stamp: Mutex::new(*e.stamp.lock().unwrap_or_else(|p| p.into_inner())),
                    loaded: ArcSwap::new(e.loaded.load_full()),
                })),
                None => match new_entry(files, hosts) {
                    Ok(entry) => {
                        log_loaded(&entry, "certificate of a new app loaded");
                        next.push(Arc::new(entry));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "certificate of an app not loaded; its hosts get the listener's certificate")
                    }
                },
            }
        }
        for gone in current
            .iter()
            .filter(|e| !next.iter().any(|n| n.files == e.files))
        {
            let _ = self
                .expiry
                .remove_label_values(&[&gone.files.cert_file.display().to_string()]);
        }
        self.entries.store(Arc::new(next));
    }

    /// Exports each certificate's time left and warns (daily) about those close to expiry.
    fn watch_expiry(&self) {
        let now = SystemTime::now();
        let unix_now = crate::runtime::unix_secs(now) as i64;
        let mut warned = self.last_warned.lock().unwrap_or_else(|p| p.into_inner());
        for entry in self.entries.load().iter() {
            let cert = entry.loaded.load();
            let file = entry.files.cert_file.display().to_string();
            let left = cert.not_after - unix_now;
            self.expiry.with_label_values(&[&file]).set(left);
            if left > EXPIRY_WARNING.as_secs() as i64 {
                continue;
            }
            let due = warned
                .get(&entry.files.cert_file)
                .is_none_or(|at| now.duration_since(*at).unwrap_or_default() >= WARN_EVERY);
            if due {
                warned.insert(entry.files.cert_file.clone(), now);
                tracing::warn!(
                    cert = %file,
                    serial = %cert.serial,
                    days_left = left / 86_400,
                    "listener certificate expires within 14 days; replace the files (they are reloaded without a restart)"
                );
            }
        }
    }

    /// Checks the files (and the config's list) every second and on SIGHUP, on a thread of
    /// its own.
    pub fn spawn_watcher(self: &Arc<Self>) -> Result<(), CertPoolError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CertPoolError::Watch)?;
        let mut hangup = runtime
            .block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            })
            .map_err(CertPoolError::Watch)?;
        let pool = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("gk-tls-reload".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut tick = tokio::time::interval(CHECK_EVERY);
                    loop {
                        let force = tokio::select! {
                            _ = tick.tick() => false,
                            _ = hangup.recv() => true,
                        };
                        let Some(pool) = pool.upgrade() else { return };
                        pool.check(force);
                    }
                })
            })
            .map_err(CertPoolError::Watch)?;
        Ok(())
    }
}

fn new_entry(files: TlsFiles, hosts: Vec<String>) -> Result<Entry, TlsFileError> {
    let before = stamp(&files);
    let loaded = read(&files)?;
    Ok(Entry {
        files,
        hosts,
        stamp: Mutex::new(before),
        loaded: ArcSwap::from_pointee(loaded),
    })
}

fn log_loaded(entry: &Entry, what: &'static str) {
    let loaded = entry.loaded.load();
    tracing::info!(
        cert = %entry.files.cert_file.display(),
        serial = %loaded.serial,
        names = ?loaded.names,
        hosts = ?entry.hosts,
        "{what}"
    );
}

fn read(files: &TlsFiles) -> Result<Loaded, TlsFileError> {
    let key = files.load()?;
    let leaf = key.cert.first().map(|c| c.as_ref()).unwrap_or(&[]);
    let (names, not_after, serial) = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => {
            let mut names: Vec<String> = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            x509_parser::extensions::GeneralName::DNSName(d) => {
                                Some(d.to_ascii_lowercase())
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            if names.is_empty() {
                names.extend(
                    cert.subject()
                        .iter_common_name()
                        .filter_map(|cn| cn.as_str().ok())
                        .map(|cn| cn.to_ascii_lowercase()),
                );
            }
            (
                names,
                cert.validity().not_after.timestamp(),
                cert.raw_serial_as_string(),
            )
        }
        // rustls accepted it, so it is usable; without its dates it is never warned about.
        Err(_) => (Vec::new(), i64::MAX / 2, String::new()),
    };
    Ok(Loaded {
        key,
        names,
        not_after,
        serial,
    })
}

/// The certificate resolver of one TLS listener: the certificate whose names (or whose
/// apps' hosts) match the SNI host name, else the listener's own.
#[derive(Debug)]
pub struct ListenerCerts {
    pool: Arc<CertPool>,
    default: TlsFiles,
}

impl std::fmt::Debug for CertPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPool")
            .field("certificates", &self.entries.load().len())
            .finish()
    }
}

impl ListenerCerts {
    fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let entries = self.pool.entries.load();
        let by_name = server_name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            entries
                .iter()
                .find(|e| e.serves(&name))
                .or_else(|| entries.iter().find(|e| e.serves_by_wildcard(&name)))
        });
        by_name
            .or_else(|| entries.iter().find(|e| e.files == self.default))
            .map(|e| e.loaded.load().key.clone())
    }
}

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

/// `*.example.com` covers `a.example.com`, not `example.com` nor `a.b.example.com`; a name
/// without a wildcard is no wildcard (exact names are matched first, on their own).
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    pattern.starts_with("*.") && host_matches(pattern, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(wildcard_matches("*.example.com", "a.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(!wildcard_matches("*.example.com", "a.b.example.com"));
        assert!(!wildcard_matches("a.example.com", "a.example.com"));
    }
}
