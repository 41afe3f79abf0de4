//! Assembles and runs the process: the proxy service on the public listeners, the admin
//! service on its private one, and the config watcher. Everything that needs a socket or a
//! signal starts here; the stages themselves stay free of process concerns.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::admin::{AdminApp, Metrics};
use crate::alert::Alerter;
use crate::audit::Auditor;
use crate::challenge::{AssertionVerifier, TotpVerifier};
use crate::config::{BackgroundPriority, Config, ConfigWatcher};
use crate::decision::{HeldLogins, Regulator};
use crate::inject::PageTokens;
use crate::learn::{Learner, Recorder};
use crate::login::TelemetryInbox;
use crate::proxy::{spawn_every, GaitkeeperProxy, LoginServices, GAUGE_PERIOD};
use crate::store::Store;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {address} ({what}): {reason}. Is another process using it? Change `{key}` in the config.")]
    Listen {
        address: String,
        what: &'static str,
        key: &'static str,
        reason: std::io::Error,
    },
    #[error("cannot create the data directory {path}: {reason}. Set `server.data_dir` to a writable directory.")]
    DataDir {
        path: String,
        reason: std::io::Error,
    },
    #[error("cannot watch the config file for changes: {0}")]
    Watch(std::io::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Audit(crate::audit::AuditError),
    #[error(transparent)]
    Alerts(crate::alert::AlertError),
    #[error("cannot use the external MFA provider's key (mfa.external.assertion): {0}")]
    Mfa(crate::challenge::KeyError),
    #[error("cannot start the runtime that opens the profile store: {0}")]
    StoreRuntime(std::io::Error),
}

/// Logins remembered across all users for replay detection (a few hundred bytes each).
const POPULATION_MEMORY: usize = 50_000;

/// Loads `config_path`, starts every listener and serves until SIGINT/SIGTERM.
/// Logging must already be set up (see [`crate::logging`]).
pub fn run(config_path: &Path) -> Result<(), StartError> {
    let config = Config::load(config_path)?;
    check_listeners_free(&config)?;
    std::fs::create_dir_all(&config.server.data_dir).map_err(|reason| StartError::DataDir {
        path: config.server.data_dir.display().to_string(),
        reason,
    })?;
    // Files an older version (or another umask) left readable by others are made private.
    let changed = crate::files::make_private(&config.server.data_dir).map_err(|reason| {
        StartError::DataDir {
            path: config.server.data_dir.display().to_string(),
            reason,
        }
    })?;
    if !changed.is_empty() {
        tracing::warn!(
            files = changed.len(),
            data_dir = %config.server.data_dir.display(),
            "made files under data_dir readable by gaitkeeper's user only (they were readable by others)"
        );
    }

    set_background_priority(config.server.background_priority);
    let (background, store) = open_store(&config)?;

    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(ArcSwap::from_pointee(config.clone()));
    metrics.config_loaded.set(1);
    ConfigWatcher::new(config_path, shared.clone(), metrics.clone())
        .spawn()
        .map_err(StartError::Watch)?;

    let data_dir = config.server.data_dir.display().to_string();
    let server_conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(config.server.grace_period.0.as_secs().max(1)),
        // Keep enough idle connections to the app for every worker under load.
        upstream_keepalive_pool_size: 1024,
        work_stealing: false,
        ca_file: config
            .upstream
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string()),
        pid_file: format!("{data_dir}/gaitkeeper.pid"),
        upgrade_sock: format!("{data_dir}/gaitkeeper-upgrade.sock"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, server_conf);
    server.bootstrap();

    let inbox = Arc::new(TelemetryInbox::new(config.admin.debug_telemetry));
    if config.admin.debug_telemetry {
        tracing::warn!("admin.debug_telemetry is on: recent login telemetry is visible on the admin listener; turn it off in production");
    }
    let tokens = Arc::new(PageTokens::new(config.secrets.key.expose()));
    let mfa = &config.mfa;
    let external = match &mfa.external {
        Some(ext) => Some((
            ext.clone(),
            AssertionVerifier::new(ext, mfa.max_held).map_err(StartError::Mfa)?,
        )),
        None => None,
    };
    let auditor = Auditor::new(
        &config.audit,
        store.clone(),
        &config.server.data_dir,
        metrics.clone(),
    )
    .map_err(StartError::Audit)?;
    let alerter = match &config.alerts {
        Some(alerts) => {
            Alerter::new(alerts, auditor.clone(), metrics.clone()).map_err(StartError::Alerts)?
        }
        None => Alerter::off(),
    };
    let (dropped_tx, dropped_rx) = tokio::sync::mpsc::unbounded_channel();
    let learner = Learner::new(store.clone(), &config.learning, &config.store, &metrics);
    // Load the newest global model now and keep retraining on schedule, on `bg`.
    if let Err(e) = background.block_on(learner.load_global()) {
        tracing::warn!(error = %e, "cannot load the global model; the per-user detectors decide alone until it loads");
    }
    {
        let _inside = background.enter();
        learner.spawn_background();
    }
    let recorder = Recorder::start(
        store.clone(),
        learner.clone(),
        background.handle(),
        metrics.settle_dropped.clone(),
    );
    let services = Arc::new(LoginServices {
        store,
        learner,
        auditor: auditor.clone(),
        alerter,
        bg: background.handle().clone(),
        held: HeldLogins::new(
            mfa.max_held,
            mfa.max_held_bytes as u64,
            mfa.challenge_ttl.0,
            move |held, why| {
                // Never blocks: the receiver drains on the background runtime.
                let _ = dropped_tx.send((held, why));
            },
        ),
        regulator: Regulator::new(&config.regulation),
        enrollment_logins: config.store.enrollment_logins,
        csrf_key: derive_key(config.secrets.key.expose(), b"gaitkeeper challenge csrf"),
        max_attempts: mfa.totp.max_attempts,
        totp_enabled: mfa.totp.enabled,
        factors: Default::default(),
        totp: TotpVerifier::default(),
        external,
        challenge_ttl: mfa.challenge_ttl.0,
        recorder: recorder.clone(),
        devices: crate::challenge::DeviceCookies::new(derive_key(
            config.secrets.key.expose(),
            b"gaitkeeper device cookie",
        )),
        population: crate::model::replay::PopulationMemory::new(POPULATION_MEMORY),
        answers: Default::default(),
        no_success: metrics.route_without_success.clone(),
        carried_over: moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(std::time::Duration::from_secs(3600))
            .build(),
    });
    services.spawn_held_sweeper(dropped_rx, metrics.clone());
    let gauge = metrics.page_tokens_remembered.clone();
    spawn_every(background.handle(), &tokens, GAUGE_PERIOD, move |tokens| {
        gauge.set(tokens.remembered() as i64)
    });
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        GaitkeeperProxy::new(
            shared.clone(),
            metrics.clone(),
            tokens,
            inbox.clone(),
            services.clone(),
        ),
        "gaitkeeper proxy",
    );
    for address in &config.listen {
        proxy.add_tcp(&address.to_string());
    }
    let mut admin = Service::new(
        "gaitkeeper admin".to_string(),
        AdminApp::new(metrics, shared, inbox, services.clone()),
    );
    admin.add_tcp(&config.admin.listen.to_string());
    admin.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    tracing::info!(
        listen = ?config.listen.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        admin = %config.admin.listen,
        upstream = %format!("{}:{}", config.upstream.address.host, config.upstream.address.port),
        threads = config.server.threads,
        "gaitkeeper starting"
    );
    server.run(RunArgs::default());
    // Let recording, learning and audit work already handed off finish.
    background.block_on(recorder.flush());
    background.block_on(auditor.flush());
    background.shutdown_timeout(config.server.grace_period.0);
    tracing::info!("gaitkeeper stopped");
    Ok(())
}

/// Starts gaitkeeper's background runtime and opens the profile store on it: creates the
/// embedded SQLite file with its schema on first start (or migrates PostgreSQL) and checks it
/// was made with this server key, so a misconfigured store stops the start with a precise error
/// instead of failing logins. Everything that touches the store later runs on this runtime.
fn open_store(config: &Config) -> Result<(tokio::runtime::Runtime, Store), StartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gaitkeeper-bg")
        .on_thread_start(lower_thread_priority)
        .enable_all()
        .build()
        .map_err(StartError::StoreRuntime)?;
    // Opened on one of the runtime's threads, not this one: SQLite connections run on threads
    // of their own that inherit the opening thread's low priority.
    let (store_config, data_dir, key) = (
        config.store.clone(),
        config.server.data_dir.clone(),
        config.secrets.key.clone(),
    );
    let opening = runtime.spawn(async move {
        let store = Store::open(&store_config, &data_dir, &key).await?;
        tracing::info!(store = %store.url(), "profile store ready");
        Ok::<Store, StartError>(store)
    });
    let store = runtime
        .block_on(opening)
        .map_err(|e| StartError::StoreRuntime(std::io::Error::other(e.to_string())))??;
    Ok((runtime, store))
}

/// The background priority chosen in `server.background_priority`, set once at start before
/// any background thread exists (threads of the audit worker and the store read it as they
/// start, wherever they are spawned from).
static BACKGROUND_PRIORITY: AtomicU8 = AtomicU8::new(BackgroundPriority::Idle as u8);

fn set_background_priority(priority: BackgroundPriority) {
    BACKGROUND_PRIORITY.store(priority as u8, Ordering::Relaxed);
}

/// Lowers the calling thread's CPU priority so that background work (recording, learning,
/// audit writes) only uses CPU the request threads leave: under load it falls behind (bounded,
/// metered) instead of delaying logins.
///
/// `idle` (the default): Linux's `SCHED_IDLE` policy. A request thread that wakes up preempts
/// an idle-policy thread at once, while a nice +10 thread keeps its slice. Measured with
/// `bench/scored-logins.sh --rate 2000` (docs/benchmarks.md): the extra p99 of a scored login
/// fell from ~1.3–1.4 ms to ~0.65–0.8 ms. Any thread may lower itself to `SCHED_IDLE` without
/// privileges; should the kernel refuse anyway (a seccomp filter), nice +10 is the fallback.
/// `low`: nice +10 only, which keeps background work going under overload.
pub(crate) fn lower_thread_priority() {
    let idle = BACKGROUND_PRIORITY.load(Ordering::Relaxed) == BackgroundPriority::Idle as u8;
    // SAFETY: plain syscalls on the calling thread (pid 0 / its own tid); failure only leaves
    // the priority as it was.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if !idle || libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 10);
        }
    }
}

/// A purpose-specific key derived from `secrets.key`.
fn derive_key(secret: &[u8], purpose: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(purpose);
    mac.finalize().into_bytes().to_vec()
}

/// pingora aborts the process on a bind failure; check first so the operator gets a clear
/// message instead.
fn check_listeners_free(config: &Config) -> Result<(), StartError> {
    let public = config
        .listen
        .iter()
        .map(|l| (l, "public listener", "listen"));
    let admin = std::iter::once((&config.admin.listen, "admin listener", "admin.listen"));
    for (address, what, key) in public.chain(admin) {
        TcpListener::bind(address.0).map_err(|reason| StartError::Listen {
            address: address.to_string(),
            what,
            key,
            reason,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the calling thread's scheduling policy and nice value.
    fn priority_of_this_thread() -> (i32, i32) {
        // SAFETY: reads the calling thread's own scheduling policy and nice value.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, tid),
            )
        }
    }

    /// Background threads give way to request threads: the idle scheduling policy by default
    /// (or, where the kernel refuses it, nice +10), nice +10 under `low`; on the calling
    /// thread only. One test for both settings: the setting is process-wide.
    #[test]
    fn background_threads_run_at_the_configured_priority_and_only_they_do() {
        let before = priority_of_this_thread();
        let lowered = |priority| {
            set_background_priority(priority);
            std::thread::spawn(|| {
                lower_thread_priority();
                priority_of_this_thread()
            })
            .join()
            .unwrap()
        };
        let (policy, nice) = lowered(BackgroundPriority::Idle);
        assert!(
            policy == libc::SCHED_IDLE || nice == 10,
            "idle: policy {policy} nice {nice}"
        );
        assert_eq!(
            lowered(BackgroundPriority::Low),
            (libc::SCHED_OTHER, 10),
            "low: an ordinary thread at nice +10"
        );
        set_background_priority(BackgroundPriority::default());
        assert_eq!(
            priority_of_this_thread(),
            before,
            "the caller's thread is left alone"
        );
    }
}
