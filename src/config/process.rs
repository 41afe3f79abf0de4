//! The process sections: `upstream:`, `admin:`, `server:`, `logging:` and `secrets:`.

use super::*;

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The app's HOST:PORT.
    pub address: UpstreamAddr,
    /// Connect to the app over TLS.
    #[serde(default)]
    pub tls: bool,
    /// TLS server name to send and verify; defaults to the host part of `address`.
    #[serde(default)]
    pub sni: Option<String>,
    /// Verify the app's TLS certificate (only turn off for a self-signed test app).
    #[serde(default = "defaults::yes")]
    pub verify_certificate: bool,
    /// PEM file of the CA(s) that sign the app's certificate, for a private PKI; default:
    /// the system's roots (restart to change).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Which Host header the app receives.
    #[serde(default)]
    pub host_header: HostHeader,
    /// How long to wait for a TCP (and TLS) connection to the app.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// How long to wait for each read from the app (also the idle limit of a WebSocket).
    #[serde(default = "defaults::read_timeout")]
    pub read_timeout: HumanDuration,
    /// How long to wait for each write to the app.
    #[serde(default = "defaults::write_timeout")]
    pub write_timeout: HumanDuration,
    /// How long an idle keep-alive connection to the app is kept for reuse.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: HumanDuration,
}

impl UpstreamConfig {
    /// The TLS server name: the configured `sni`, else the host of `address`.
    pub fn server_name(&self) -> &str {
        self.sni.as_deref().unwrap_or(&self.address.host)
    }
}

/// Which Host header the app receives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HostHeader {
    /// The Host the browser sent (what most apps expect behind a proxy).
    #[default]
    Preserve,
    /// The upstream's own HOST:PORT from `upstream.address`.
    Upstream,
    /// A fixed value: `host_header: { set: "app.example.com" }`.
    Set(String),
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`). Must differ from
    /// every public `listen` address.
    #[serde(default = "defaults::admin_listen")]
    pub listen: ListenAddr,
    /// Show the last 16 login submits' telemetry at `/debug/telemetry` on this listener, to
    /// check a deployment. Off in production (restart to change).
    #[serde(default)]
    pub debug_telemetry: bool,
    /// The credential the admin listener asks for on everything but `/healthz` and `/readyz`
    /// (the console, `/__gk/analyze`, `/debug/telemetry`, and `/metrics` unless opened).
    /// Required when `listen` is not a loopback address.
    #[serde(default)]
    pub auth: Option<AdminAuthConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: defaults::admin_listen(),
            debug_telemetry: false,
            auth: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads of the proxy (restart to change).
    #[serde(default = "defaults::threads")]
    pub threads: usize,
    /// Path prefix of gaitkeeper's own endpoints; requests under it never reach the app.
    #[serde(default = "defaults::reserved_prefix")]
    pub reserved_prefix: PathPrefix,
    /// Directory for gaitkeeper's state (the embedded SQLite store, spool files).
    #[serde(default = "defaults::data_dir")]
    pub data_dir: PathBuf,
    /// How long a graceful shutdown waits for in-flight requests.
    #[serde(default = "defaults::grace_period")]
    pub grace_period: HumanDuration,
    /// Name of the protected app, shown on gaitkeeper's own pages.
    #[serde(default = "defaults::app_name")]
    pub app_name: String,
    /// CPU priority of the work done after a login is answered (recording, learning, audit
    /// writes): `idle` (default) or `low` (restart to change).
    #[serde(default)]
    pub background_priority: BackgroundPriority,
    /// Load balancers and proxies in front of gaitkeeper whose `X-Forwarded-For`,
    /// `X-Forwarded-Proto`, `Forwarded` and PROXY protocol headers are believed (CIDR or
    /// address). Empty (default): trust nobody, the TCP peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// Where the state instances must agree on lives (used page tokens; more to come):
    /// `local` (this process's memory: one instance) or `store` (the PostgreSQL store, shared
    /// by every instance using it). Default: `store` when `store.url` is PostgreSQL, else
    /// `local` (restart to change).
    #[serde(default)]
    pub shared_state: Option<SharedStateMode>,
}

/// Where the state instances share lives (`server.shared_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharedStateMode {
    /// This process's memory: right for one instance.
    Local,
    /// The PostgreSQL store: several instances behind one load balancer act as one.
    Store,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: defaults::threads(),
            reserved_prefix: defaults::reserved_prefix(),
            data_dir: defaults::data_dir(),
            grace_period: defaults::grace_period(),
            app_name: defaults::app_name(),
            background_priority: BackgroundPriority::default(),
            trusted_proxies: Vec::new(),
            shared_state: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// `auto` (human on a terminal, JSON otherwise), `human` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// Log level filter, e.g. `info` or `gaitkeeper=debug,info`. `RUST_LOG` overrides it.
    #[serde(default)]
    pub level: Option<String>,
    /// Log one line per proxied request.
    #[serde(default = "defaults::yes")]
    pub access_log: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::default(),
            level: None,
            access_log: true,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Auto,
    Human,
    Json,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// The server key: signs page tokens and keys user identifiers. At least 32 bytes.
    pub key: Secret,
}
