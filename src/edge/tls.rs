//! Certificates of the TLS listeners: loaded at start, chosen per connection by SNI,
//! reloaded when their files change or on SIGHUP without dropping a connection (a handshake
//! takes whichever certificate is current; live connections keep theirs), and watched for
//! expiry. A new file that cannot be used is logged with the reason and the old certificate
//! stays in service, as an invalid config does.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGaugeVec};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{TlsFileError, TlsFiles};

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

/// The files of one certificate and how they looked when last read.
struct Source {
    files: TlsFiles,
    stamp: Mutex<Option<FileStamp>>,
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

/// Every listener certificate of the process.
pub struct CertPool {
    sources: Vec<Source>,
    current: ArcSwap<Vec<Arc<Loaded>>>,
    expiry: IntGaugeVec,
    reloads: IntCounterVec,
    last_warned: Mutex<HashMap<usize, SystemTime>>,
}

impl CertPool {
    /// Loads every distinct certificate of `files`; the pool's index of a file is its position
    /// among the distinct ones ([`CertPool::index_of`]).
    pub fn load(
        files: &[TlsFiles],
        expiry: IntGaugeVec,
        reloads: IntCounterVec,
    ) -> Result<Arc<CertPool>, CertPoolError> {
        let mut sources: Vec<Source> = Vec::new();
        let mut loaded = Vec::new();
        for f in files {
            if sources.iter().any(|s| s.files == *f) {
                continue;
            }
            let before = stamp(f);
            loaded.push(Arc::new(read(f)?));
            sources.push(Source {
                files: f.clone(),
                stamp: Mutex::new(before),
            });
        }
        let pool = Arc::new(CertPool {
            sources,
            current: ArcSwap::from_pointee(loaded),
            expiry,
            reloads,
            last_warned: Mutex::new(HashMap::new()),
        });
        for (i, cert) in pool.current.load().iter().enumerate() {
            tracing::info!(
                cert = %pool.sources[i].files.cert_file.display(),
                serial = %cert.serial,
                names = ?cert.names,
                "listener certificate loaded"
            );
        }
        pool.watch_expiry();
        Ok(pool)
    }

    /// The pool index of `files`, as loaded.
    pub fn index_of(&self, files: &TlsFiles) -> Option<usize> {
        self.sources.iter().position(|s| s.files == *files)
    }

    /// The resolver of a listener whose own certificate is `files`.
    pub fn for_listener(self: &Arc<Self>, files: &TlsFiles) -> Option<Arc<ListenerCerts>> {
        let default = self.index_of(files)?;
        Some(Arc::new(ListenerCerts {
            pool: self.clone(),
            default,
        }))
    }

    /// Reloads certificates whose files changed (every one when `force`, as on SIGHUP).
    pub fn check(&self, force: bool) {
        let mut next: Option<Vec<Arc<Loaded>>> = None;
        for (i, source) in self.sources.iter().enumerate() {
            let now = stamp(&source.files);
            let mut last = source.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if !force && (now.is_none() || now == *last) {
                // Unchanged, or mid-replacement (a file missing for a moment).
                continue;
            }
            *last = now;
            drop(last);
            match read(&source.files) {
                Ok(fresh) => {
                    tracing::info!(
                        cert = %source.files.cert_file.display(),
                        serial = %fresh.serial,
                        names = ?fresh.names,
                        "listener certificate reloaded"
                    );
                    self.reloads.with_label_values(&["ok"]).inc();
                    let list = next.get_or_insert_with(|| self.current.load().to_vec());
                    list[i] = Arc::new(fresh);
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
        if let Some(list) = next {
            self.current.store(Arc::new(list));
            self.last_warned
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        self.watch_expiry();
    }

    /// Exports each certificate's time left and warns (daily) about those close to expiry.
    fn watch_expiry(&self) {
        let now = SystemTime::now();
        let unix_now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut warned = self.last_warned.lock().unwrap_or_else(|p| p.into_inner());
        for (i, cert) in self.current.load().iter().enumerate() {
            let file = self.sources[i].files.cert_file.display().to_string();
            let left = cert.not_after - unix_now;
            self.expiry.with_label_values(&[&file]).set(left);
            if left > EXPIRY_WARNING.as_secs() as i64 {
                continue;
            }
            let due = warned
                .get(&i)
                .is_none_or(|at| now.duration_since(*at).unwrap_or_default() >= WARN_EVERY);
            if due {
                warned.insert(i, now);
                tracing::warn!(
                    cert = %file,
                    serial = %cert.serial,
                    days_left = left / 86_400,
                    "listener certificate expires within 14 days; replace the files (they are reloaded without a restart)"
                );
            }
        }
    }

    /// Checks the files every second and on SIGHUP, on a thread of its own.
    pub fn spawn_watcher(self: &Arc<Self>) -> Result<(), CertPoolError> {
        if self.sources.is_empty() {
            return Ok(());
        }
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

/// The certificate resolver of one TLS listener: the certificate whose names match the SNI
/// host name, else the listener's own.
#[derive(Debug)]
pub struct ListenerCerts {
    pool: Arc<CertPool>,
    default: usize,
}

impl std::fmt::Debug for CertPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPool")
            .field("certificates", &self.sources.len())
            .finish()
    }
}

impl ListenerCerts {
    fn choose(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let current = self.pool.current.load();
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            let matching = current
                .iter()
                .find(|c| c.names.iter().any(|n| n == &name))
                .or_else(|| {
                    current
                        .iter()
                        .find(|c| c.names.iter().any(|n| wildcard_matches(n, &name)))
                });
            if let Some(cert) = matching {
                return Some(cert.key.clone());
            }
        }
        current.get(self.default).map(|c| c.key.clone())
    }
}

impl ResolvesServerCert for ListenerCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.choose(hello.server_name())
    }
}

/// `*.example.com` covers `a.example.com`, not `example.com` nor `a.b.example.com`.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => false,
    }
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
