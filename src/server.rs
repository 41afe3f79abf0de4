//! Assembles and runs the process: the proxy service on the public listeners, the admin
//! service on its private one, and the config watcher. Everything that needs a socket or a
//! signal starts here; the stages themselves stay free of process concerns.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::{Config, ConfigWatcher};
use crate::edge::{CertPool, ProxyProtocol, RedirectToHttps};
use crate::metrics::Metrics;
use crate::proxy::GaitkeeperProxy;
use crate::runtime::set_background_priority;
use crate::services::{AssembleError, Assembly};

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
    Services(#[from] AssembleError),
    #[error(transparent)]
    Certificates(#[from] crate::edge::CertPoolError),
}

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
    let metrics = Arc::new(Metrics::new());
    let assembly = Assembly::build(&config, metrics.clone())?;
    let shared = Arc::new(ArcSwap::from_pointee(config.clone()));
    metrics.config_loaded.set(1);
    ConfigWatcher::new(config_path, shared.clone(), metrics.config_reloads.clone())
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
        // One CA file for every app (checked when the config loads).
        ca_file: config.apps[0]
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

    let Assembly {
        background: _,
        services,
        tokens,
        inbox,
        ..
    } = &assembly;
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        GaitkeeperProxy::new(
            shared.clone(),
            metrics.clone(),
            tokens.clone(),
            inbox.clone(),
            services.clone(),
        ),
        "gaitkeeper proxy",
    );
    let certificates = CertPool::load(
        shared.clone(),
        metrics.tls_cert_expiry.clone(),
        metrics.tls_cert_reloads.clone(),
    )?;
    certificates.spawn_watcher()?;
    let proxy_protocol: Vec<_> = config
        .listen
        .iter()
        .filter(|l| l.proxy_protocol)
        .map(|l| l.address.0)
        .collect();
    if !proxy_protocol.is_empty() {
        proxy
            .endpoints()
            .set_pre_tls_callback(Arc::new(ProxyProtocol::new(shared.clone(), proxy_protocol)));
    }
    let https_port = config
        .listen
        .iter()
        .find(|l| l.tls.is_some())
        .map(|l| l.address.0.port());
    let mut redirect = Service::new(
        "gaitkeeper https redirect".to_string(),
        RedirectToHttps::new(https_port.unwrap_or(443)),
    );
    redirect.threads = Some(1);
    for listener in &config.listen {
        let address = listener.address.to_string();
        match &listener.tls {
            _ if listener.redirect_to_https => redirect.add_tcp(&address),
            None => proxy.add_tcp(&address),
            Some(files) => {
                let resolver = certificates.for_listener(files);
                let mut settings =
                    TlsSettings::intermediate("", "").expect("settings without files always build");
                settings.set_cert_resolver(resolver);
                settings.enable_h2();
                proxy.add_tls_with_settings(&address, None, settings);
            }
        }
    }
    let mut admin = Service::new(
        "gaitkeeper admin".to_string(),
        AdminApp::new(metrics, shared, inbox.clone(), services.clone()),
    );
    admin.add_tcp(&config.admin.listen.to_string());
    admin.threads = Some(1);

    server.add_service(proxy);
    server.add_service(admin);
    if config.listen.iter().any(|l| l.redirect_to_https) {
        server.add_service(redirect);
    }
    tracing::info!(
        listen = ?config.listen.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        admin = %config.admin.listen,
        apps = ?config
            .apps
            .iter()
            .map(|a| format!("{} -> {}:{}", a.name, a.upstream.address.host, a.upstream.address.port))
            .collect::<Vec<_>>(),
        threads = config.server.threads,
        "gaitkeeper starting"
    );
    server.run(RunArgs::default());
    assembly.shutdown(config.server.grace_period.0);
    tracing::info!("gaitkeeper stopped");
    Ok(())
}

/// pingora aborts the process on a bind failure; check first so the operator gets a clear
/// message instead.
fn check_listeners_free(config: &Config) -> Result<(), StartError> {
    let public = config
        .listen
        .iter()
        .map(|l| (l.address.0, "public listener", "listen"));
    let admin = std::iter::once((config.admin.listen.0, "admin listener", "admin.listen"));
    for (address, what, key) in public.chain(admin) {
        TcpListener::bind(address).map_err(|reason| StartError::Listen {
            address: address.to_string(),
            what,
            key,
            reason,
        })?;
    }
    Ok(())
}
