//! The operator's YAML file: its schema, loading with precise errors, and hot reload.
//!
//! Owns: turning `gaitkeeper.yaml` into one validated [`Config`]. Every error names the file,
//! line, column and key, and says what was expected. Unknown keys are errors, because a typo
//! must never silently turn a protection off. The rest of the code trusts a `Config` and never
//! re-checks it. Never logs secret values (see [`Secret`]).

mod alerts;
mod audit;
mod learning;
mod mfa;
mod regulation;
mod reload;
mod types;

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

pub use crate::runtime::BackgroundPriority;
pub use alerts::{AlertConfig, AlertEvent, WebhookConfig, WebhookUrl, MAX_BACKOFF};
pub use audit::{AuditConfig, AuditStream};
pub use learning::{LearnConfig, MAX_WINDOW};
pub use mfa::{
    AssertionAlgorithm, AssertionConfig, ExternalMfaConfig, KeyError, MfaConfig, ProviderUrl,
    PublicKeyFile, TotpConfig,
};
pub use regulation::RegulationConfig;
pub use reload::{ConfigWatcher, SharedConfig};
pub use types::{
    Cidr, HumanDuration, ListenAddr, PathPrefix, RetentionPeriod, Secret, UpstreamAddr,
};

/// The whole config file. See `config/gaitkeeper.yaml` for a commented example.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public addresses the proxy listens on.
    #[serde(default = "defaults::listen")]
    pub listen: Vec<ListenAddr>,
    /// The one web app gaitkeeper protects.
    pub upstream: UpstreamConfig,
    /// The admin listener: health, readiness and metrics. Keep it private.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Process-wide settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Request logging.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Secrets, given as references to environment variables or files.
    pub secrets: SecretsConfig,
    /// The app's login routes: where to inject the capture script, where logins are posted.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// How the capture script hands its telemetry over, and the page token it carries.
    #[serde(default)]
    pub capture: CaptureConfig,
    /// Where user profiles live (SQLite or PostgreSQL) and how much of them stays in memory.
    #[serde(default)]
    pub store: StoreConfig,
    /// What to do with each login: thresholds, fail-open or fail-closed, shadow mode. Routes
    /// may override any key.
    #[serde(default)]
    pub policy: crate::policy::PolicyConfig,
    /// Brute-force protection: failed logins counted per user and per client address.
    #[serde(default)]
    pub regulation: RegulationConfig,
    /// Step-up MFA for logins policy wants confirmed: built-in TOTP and an external provider.
    #[serde(default)]
    pub mfa: MfaConfig,
    /// The audit trail: where its JSON lines go, and the spool that keeps records while the
    /// store is unavailable.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Security alerts to a webhook (blocks, failed challenges, replays). Absent: none sent.
    #[serde(default)]
    pub alerts: Option<AlertConfig>,
    /// Continuous learning: per-user model windows and refits, and the global model.
    #[serde(default)]
    pub learning: LearnConfig,
}

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

/// One login flow of the app: the page(s) showing the form and the request that submits it.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A short name for logs, metrics and page tokens (letters, digits, `-`, `_`).
    pub name: String,
    /// The login page(s) the capture script is injected into.
    pub page: PageMatch,
    /// The request that submits the login.
    pub submit: SubmitMatch,
    /// Where the login name is in the submitted body.
    #[serde(default)]
    pub username: UsernameSource,
    /// How the app's response shows that the login succeeded (every given condition must hold).
    #[serde(default)]
    pub success: SuccessSignal,
    /// Overrides of the top-level `policy:` for this route.
    #[serde(default)]
    pub policy: crate::policy::PolicyConfig,
    /// Where a fetch/XHR login replayed after its challenge sends the browser (a path on this
    /// site, e.g. `/account`). Default: back to the page the login came from. Only used when the
    /// page has no capture script to show the challenge itself (docs/configuration.md).
    #[serde(default)]
    pub return_to: Option<String>,
    /// Non-browser clients of the login (the app's CLI, deploy scripts): their logins are
    /// forwarded without telemetry, audited as `machine_client`, and still regulated.
    #[serde(default)]
    pub machine_clients: Option<MachineClients>,
}

/// Who counts as a machine client of a route. Every condition given must hold.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineClients {
    /// Client addresses (CIDR, e.g. `10.1.2.0/24` or `192.0.2.7/32`).
    #[serde(default)]
    pub addresses: Vec<Cidr>,
    /// A request header that must carry `secret` (e.g. `X-Deploy-Key`). It never reaches the
    /// app.
    #[serde(default)]
    pub header: Option<String>,
    /// The secret the header must carry: `{ env: NAME }` or `{ file: PATH }`.
    #[serde(default)]
    pub secret: Option<Secret>,
}

impl MachineClients {
    /// Whether a request from `ip` with `header_value` (of [`MachineClients::header`]) is one.
    pub fn admits(&self, ip: Option<std::net::IpAddr>, header_value: Option<&[u8]>) -> bool {
        let address_ok = self.addresses.is_empty()
            || ip.is_some_and(|ip| self.addresses.iter().any(|c| c.0.contains(&ip)));
        let secret_ok = match &self.secret {
            None => true,
            Some(secret) => header_value
                .is_some_and(|v| subtle::ConstantTimeEq::ct_eq(v, secret.expose()).into()),
        };
        address_ok && secret_ok
    }
}

/// Where the login name is: a form field (urlencoded or multipart) or, for JSON bodies, a
/// JSON pointer.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsernameSource {
    /// Form field name (urlencoded and multipart bodies).
    #[serde(default = "defaults::username_field")]
    pub field: String,
    /// JSON pointer into a JSON body, e.g. `/user/email` (RFC 6901). Default: the top-level
    /// key named `field`.
    #[serde(default)]
    pub json_pointer: Option<String>,
    /// How the app compares login names, applied in order: `trim` (surrounding whitespace),
    /// `nfkc` (Unicode compatibility forms: fullwidth letters, no-break spaces), `casefold`
    /// (for apps whose logins ignore case). The profile, regulation and the audit trail use
    /// the normalised name. Default `[trim, nfkc]`, what Django, Rails and most frameworks do.
    #[serde(default = "defaults::normalize")]
    pub normalize: Vec<NameNormalization>,
}

/// One step of login-name normalisation (see `routes[].username.normalize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NameNormalization {
    /// Remove leading and trailing Unicode whitespace.
    Trim,
    /// Unicode normalisation form NFKC.
    Nfkc,
    /// Unicode full case folding.
    Casefold,
}

impl Default for UsernameSource {
    fn default() -> Self {
        UsernameSource {
            field: defaults::username_field(),
            json_pointer: None,
            normalize: defaults::normalize(),
        }
    }
}

/// The app's answer to a successful login. By default any redirect (301, 302, 303, 307, 308).
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuccessSignal {
    /// Status codes of a successful login.
    #[serde(default = "defaults::success_status")]
    pub status: Vec<u16>,
    /// The `Location` header starts with this (e.g. `/account`).
    #[serde(default)]
    pub location_prefix: Option<String>,
    /// The response sets this cookie (e.g. the app's session cookie).
    #[serde(default)]
    pub set_cookie: Option<String>,
    /// The JSON answer has a value at this pointer (e.g. `/access_token`): for apps that answer
    /// 200 to every login, telling success by its body. The body is read up to 64 KiB.
    #[serde(default)]
    pub json_pointer_present: Option<String>,
    /// The JSON answer has exactly this value at this pointer (e.g. `{pointer: /ok, value:
    /// true}`).
    #[serde(default)]
    pub json_equals: Option<JsonEquals>,
}

/// A JSON value a successful login's answer holds at a pointer.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonEquals {
    /// RFC 6901 pointer into the answer, e.g. `/status`.
    pub pointer: String,
    /// The value it must have (any JSON value).
    pub value: serde_json::Value,
}

impl SuccessSignal {
    /// Whether telling success needs the answer's body.
    pub fn reads_body(&self) -> bool {
        self.json_pointer_present.is_some() || self.json_equals.is_some()
    }
}

impl Default for SuccessSignal {
    fn default() -> Self {
        SuccessSignal {
            status: defaults::success_status(),
            location_prefix: None,
            set_cookie: None,
            json_pointer_present: None,
            json_equals: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageMatch {
    /// Paths of the login page: exact (`/login`) or a prefix ending in `*` (`/auth/*`).
    pub paths: Vec<String>,
    /// Request methods whose responses are injected.
    #[serde(default = "defaults::page_methods")]
    pub methods: Vec<String>,
    /// Response content types that are injected.
    #[serde(default = "defaults::page_content_types")]
    pub content_types: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitMatch {
    /// Method of the login request.
    #[serde(default = "defaults::submit_method")]
    pub method: String,
    /// Path the login is posted to (matched after normalising, case-insensitively).
    pub path: String,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Name of the hidden form field that carries the telemetry in classic form posts.
    #[serde(default = "defaults::capture_field")]
    pub field: String,
    /// Name of the header that carries the telemetry in fetch/XHR logins.
    #[serde(default = "defaults::capture_header")]
    pub header: String,
    /// How long a page token stays valid after the page was served.
    #[serde(default = "defaults::token_ttl")]
    pub token_ttl: HumanDuration,
    /// Bind page tokens to the client's IP address as well as its User-Agent. Turn off when
    /// clients legitimately change address between page and submit (some mobile networks).
    #[serde(default = "defaults::yes")]
    pub bind_token_to_ip: bool,
    /// Largest telemetry payload accepted, in bytes (at most 1 MiB).
    #[serde(default = "defaults::max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Largest login request body gaitkeeper buffers to take the telemetry out, in bytes
    /// (at most 64 KiB); larger login bodies get 413. A compressed body is bounded by its
    /// decoded size.
    #[serde(default = "defaults::max_login_body_bytes")]
    pub max_login_body_bytes: usize,
    /// How long a client may take to send a login body; after it the request gets 408 and
    /// nothing reaches the app (a slowly trickled body would hold a connection for ever).
    #[serde(default = "defaults::body_timeout")]
    pub body_timeout: HumanDuration,
    /// How much longer than the page was open (from gaitkeeper issuing it to the login
    /// arriving) a payload's own timeline may claim before it is `timeline_mismatch`: clock
    /// coarsening and rounding. Raise it only for clients whose clocks are known to jump.
    #[serde(default = "defaults::timeline_slack")]
    pub timeline_slack: HumanDuration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            field: defaults::capture_field(),
            header: defaults::capture_header(),
            token_ttl: defaults::token_ttl(),
            bind_token_to_ip: true,
            max_payload_bytes: defaults::max_payload_bytes(),
            max_login_body_bytes: defaults::max_login_body_bytes(),
            body_timeout: defaults::body_timeout(),
            timeline_slack: defaults::timeline_slack(),
        }
    }
}

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
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: defaults::admin_listen(),
            debug_telemetry: false,
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

mod defaults {
    use super::*;

    pub fn listen() -> Vec<ListenAddr> {
        vec![ListenAddr("0.0.0.0:8080".parse().expect("valid literal"))]
    }
    pub fn admin_listen() -> ListenAddr {
        ListenAddr("127.0.0.1:9090".parse().expect("valid literal"))
    }
    pub fn yes() -> bool {
        true
    }
    pub fn connect_timeout() -> HumanDuration {
        HumanDuration::secs(3)
    }
    pub fn read_timeout() -> HumanDuration {
        HumanDuration::secs(30)
    }
    pub fn write_timeout() -> HumanDuration {
        HumanDuration::secs(30)
    }
    pub fn idle_timeout() -> HumanDuration {
        HumanDuration::secs(60)
    }
    pub fn grace_period() -> HumanDuration {
        HumanDuration::secs(10)
    }
    pub fn threads() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
    pub fn reserved_prefix() -> PathPrefix {
        PathPrefix("/__gk/".to_string())
    }
    pub fn data_dir() -> PathBuf {
        PathBuf::from("gaitkeeper-data")
    }
    pub fn app_name() -> String {
        "this application".to_string()
    }
    pub fn page_methods() -> Vec<String> {
        vec!["GET".to_string()]
    }
    pub fn page_content_types() -> Vec<String> {
        vec!["text/html".to_string(), "application/xhtml+xml".to_string()]
    }
    pub fn username_field() -> String {
        "username".into()
    }
    pub fn success_status() -> Vec<u16> {
        vec![301, 302, 303, 307, 308]
    }
    pub fn submit_method() -> String {
        "POST".to_string()
    }
    pub fn capture_field() -> String {
        "__gk".to_string()
    }
    pub fn capture_header() -> String {
        "X-Gaitkeeper-Telemetry".to_string()
    }
    pub fn token_ttl() -> HumanDuration {
        HumanDuration::secs(600)
    }
    pub fn max_payload_bytes() -> usize {
        64 * 1024
    }
    pub fn max_login_body_bytes() -> usize {
        64 * 1024
    }
    pub fn body_timeout() -> HumanDuration {
        HumanDuration::secs(10)
    }
    pub fn timeline_slack() -> HumanDuration {
        HumanDuration::secs(1)
    }
    pub fn normalize() -> Vec<NameNormalization> {
        vec![NameNormalization::Trim, NameNormalization::Nfkc]
    }
    pub fn enrollment_logins() -> u32 {
        5
    }
    pub fn retention() -> RetentionPeriod {
        RetentionPeriod::days(90)
    }
    pub fn cache_mb() -> u32 {
        64
    }
    pub fn cache_idle() -> HumanDuration {
        HumanDuration::secs(30 * 60)
    }
    pub fn store_max_connections() -> u32 {
        8
    }
    pub fn busy_timeout() -> HumanDuration {
        HumanDuration::secs(5)
    }
}

/// Why a config file was rejected. The Display form is what the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the config file: {reason}")]
    Read {
        file: String,
        reason: std::io::Error,
    },
    #[error("{}", fmt_invalid(file, *line, *column, key, message))]
    Invalid {
        file: String,
        line: u64,
        column: u64,
        /// Dotted path of the offending key, e.g. `upstream.connect_timeout`.
        key: String,
        message: String,
    },
}

fn fmt_invalid(file: &str, line: u64, column: u64, key: &str, message: &str) -> String {
    let place = if line > 0 {
        format!("{file}:{line}:{column}")
    } else {
        file.to_string()
    };
    if key.is_empty() || key == "." {
        format!("{place}: {message}")
    } else {
        format!("{place}: key `{key}`: {message}")
    }
}

/// The largest config file accepted; far above any real one.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let read_err = |reason| ConfigError::Read {
            file: file.clone(),
            reason,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid {
                file,
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("the file is {size} bytes; the limit is {MAX_CONFIG_BYTES}"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Config::parse(&text, &file)
    }

    /// Parses and validates config text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let key_path = RefCell::new(String::new());
        let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                *key_path.borrow_mut() = e.path().to_string();
                e.into_inner()
            })
        });
        let config = parsed.map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            ConfigError::Invalid {
                file: file.to_string(),
                line,
                column,
                key: key_path.into_inner(),
                message: friendly_message(&plain_message(&e), text, line, column),
            }
        })?;
        config.validate(text, file)?;
        Ok(config)
    }

    /// Checks that span several keys, after every value parsed on its own.
    fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| {
            let (line, column) = locate_key(text, key);
            ConfigError::Invalid {
                file: file.to_string(),
                line,
                column,
                key: key.to_string(),
                message,
            }
        };
        if self.listen.is_empty() {
            return Err(invalid(
                "listen",
                "at least one listen address is needed".into(),
            ));
        }
        if self.listen.len() > 16 {
            return Err(invalid("listen", "at most 16 listen addresses".into()));
        }
        let admin = self.admin.listen.0;
        if let Some(public) = self.listen.iter().find(|l| overlaps(l.0, admin)) {
            return Err(invalid(
                "admin.listen",
                format!("the admin listener {admin} would share a port with the public listener {public}; give it its own (private) address such as 127.0.0.1:9090"),
            ));
        }
        if !(1..=256).contains(&self.server.threads) {
            return Err(invalid(
                "server.threads",
                format!(
                    "expected 1 to 256 worker threads, found {}",
                    self.server.threads
                ),
            ));
        }
        if self.server.app_name.trim().is_empty() || self.server.app_name.len() > 100 {
            return Err(invalid(
                "server.app_name",
                "expected a name of 1 to 100 characters".into(),
            ));
        }
        if let Some(sni) = &self.upstream.sni {
            if sni.is_empty() || sni.len() > 253 || sni.contains(|c: char| c.is_whitespace()) {
                return Err(invalid(
                    "upstream.sni",
                    format!("expected a DNS name, found {sni:?}"),
                ));
            }
        }
        if let Some(ca_file) = &self.upstream.ca_file {
            let readable = std::fs::read_to_string(ca_file)
                .map(|pem| pem.contains("-----BEGIN CERTIFICATE-----"))
                .unwrap_or(false);
            if !readable {
                return Err(invalid(
                    "upstream.ca_file",
                    format!(
                        "{} is not a readable PEM file with at least one certificate",
                        ca_file.display()
                    ),
                ));
            }
        }
        if let HostHeader::Set(host) = &self.upstream.host_header {
            if host.is_empty()
                || host.len() > 255
                || http::HeaderValue::from_str(host).is_err()
                || host.contains(|c: char| c.is_whitespace() || c == '/')
            {
                return Err(invalid(
                    "upstream.host_header.set",
                    format!("expected a host name (and optional port), found {host:?}"),
                ));
            }
        }
        self.validate_routes(&invalid)?;
        crate::policy::Policy::resolve(&self.policy, &Default::default())
            .check()
            .map_err(|(key, m)| invalid(&format!("policy.{key}"), m))?;
        self.regulation
            .check()
            .map_err(|(key, m)| invalid(&format!("regulation.{key}"), m))?;
        self.validate_store(&invalid)?;
        self.mfa.validate(&invalid)?;
        self.audit
            .validate()
            .map_err(|(key, message)| invalid(&format!("audit.{key}"), message))?;
        if let Some(alerts) = &self.alerts {
            alerts
                .validate()
                .map_err(|(key, message)| invalid(&format!("alerts.webhook.{key}"), message))?;
        }
        self.learning
            .validate()
            .map_err(|(key, message)| invalid(key, message))?;
        if let Some(level) = &self.logging.level {
            if tracing_subscriber::EnvFilter::try_new(level).is_err() {
                return Err(invalid(
                    "logging.level",
                    format!("expected a level such as \"info\" or \"gaitkeeper=debug,info\", found {level:?}"),
                ));
            }
        }
        Ok(())
    }

    fn validate_store(
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

    fn validate_routes(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let token = |t: &str| {
            !t.is_empty()
                && t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let capture = &self.capture;
        if !token(&capture.field) {
            return Err(invalid(
                "capture.field",
                format!(
                    "expected a form field name of letters, digits, '-' or '_', found {:?}",
                    capture.field
                ),
            ));
        }
        if !token(&capture.header)
            || http::HeaderName::from_bytes(capture.header.as_bytes()).is_err()
        {
            return Err(invalid(
                "capture.header",
                format!("expected a header name, found {:?}", capture.header),
            ));
        }
        if !(1024..=1 << 20).contains(&capture.max_payload_bytes) {
            return Err(invalid(
                "capture.max_payload_bytes",
                format!(
                    "expected 1024 to 1048576, found {}",
                    capture.max_payload_bytes
                ),
            ));
        }
        if !(1024..=64 * 1024).contains(&capture.max_login_body_bytes) {
            return Err(invalid(
                "capture.max_login_body_bytes",
                format!(
                    "expected 1024 to 65536 (pingora buffers at most 64 KiB), found {}",
                    capture.max_login_body_bytes
                ),
            ));
        }
        if !(std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(600))
            .contains(&capture.body_timeout.0)
        {
            return Err(invalid(
                "capture.body_timeout",
                "expected 100ms to 10m".into(),
            ));
        }
        if capture.token_ttl.0 < std::time::Duration::from_secs(10) {
            return Err(invalid(
                "capture.token_ttl",
                "expected at least 10s: people need time to type".into(),
            ));
        }
        if self.routes.len() > 64 {
            return Err(invalid("routes", "at most 64 routes".into()));
        }
        let prefix = &self.server.reserved_prefix.0;
        let mut names = std::collections::HashSet::new();
        for route in &self.routes {
            if !token(&route.name) || !names.insert(route.name.as_str()) {
                return Err(invalid("routes", format!("route names must be unique and made of letters, digits, '-' or '_'; found {:?}", route.name)));
            }
            let path_ok = |p: &str| {
                p.starts_with('/')
                    && p.len() <= 512
                    && !p.contains(['?', '#', ' '])
                    && !p[..p.len().saturating_sub(1)].contains('*')
                    && !crate::paths::is_reserved_path(p.trim_end_matches('*'), prefix)
            };
            if route.page.paths.is_empty() || route.page.paths.len() > 32 {
                return Err(invalid(
                    "routes",
                    format!("route {:?}: `page.paths` needs 1 to 32 paths", route.name),
                ));
            }
            for p in route
                .page
                .paths
                .iter()
                .chain(std::iter::once(&route.submit.path))
            {
                if !path_ok(p) {
                    return Err(invalid("routes", format!("route {:?}: {p:?} is not a usable path: it must start with '/', have no query, '*' only at the end, and lie outside {prefix}", route.name)));
                }
            }
            if route.submit.path.ends_with('*') {
                return Err(invalid(
                    "routes",
                    format!(
                        "route {:?}: `submit.path` must be one exact path",
                        route.name
                    ),
                ));
            }
            let username = &route.username;
            if !token(&username.field) {
                return Err(invalid("routes", format!("route {:?}: `username.field` must be a form field name of letters, digits, '-' or '_', found {:?}", route.name, username.field)));
            }
            if let Some(pointer) = &username.json_pointer {
                if !(pointer.starts_with('/') && pointer.len() <= 256) {
                    return Err(invalid("routes", format!("route {:?}: `username.json_pointer` must be a JSON pointer such as \"/user/email\", found {pointer:?}", route.name)));
                }
            }
            let steps = &username.normalize;
            if steps.len() > 3 || (1..steps.len()).any(|i| steps[..i].contains(&steps[i])) {
                return Err(invalid("routes", format!("route {:?}: `username.normalize` lists each of trim, nfkc, casefold at most once", route.name)));
            }
            if username.field == capture.field {
                return Err(invalid("routes", format!("route {:?}: `username.field` is the telemetry field `capture.field` ({:?}); give the login name's field", route.name, capture.field)));
            }
            if let Some(machines) = &route.machine_clients {
                if machines.addresses.is_empty() && machines.header.is_none() {
                    return Err(invalid("routes", format!("route {:?}: `machine_clients` needs `addresses`, a `header` with its `secret`, or both", route.name)));
                }
                if machines.header.is_some() != machines.secret.is_some() {
                    return Err(invalid("routes", format!("route {:?}: `machine_clients.header` and `machine_clients.secret` go together", route.name)));
                }
                if let Some(h) = &machines.header {
                    if !token(h) || http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                        return Err(invalid("routes", format!("route {:?}: `machine_clients.header` must be a header name, found {h:?}", route.name)));
                    }
                }
                if machines.addresses.len() > 256 {
                    return Err(invalid(
                        "routes",
                        format!(
                            "route {:?}: at most 256 `machine_clients.addresses`",
                            route.name
                        ),
                    ));
                }
            }
            if let Some(to) = &route.return_to {
                if !to.starts_with('/')
                    || to.starts_with("//")
                    || to.contains(['\\', '\r', '\n'])
                    || to.len() > 512
                {
                    return Err(invalid("routes", format!("route {:?}: `return_to` must be a path on this site such as \"/account\", found {to:?}", route.name)));
                }
            }
            let success = &route.success;
            if success.status.is_empty()
                || success.status.len() > 16
                || success.status.iter().any(|s| !(100..=599).contains(s))
            {
                return Err(invalid(
                    "routes",
                    format!(
                        "route {:?}: `success.status` needs 1 to 16 HTTP status codes (100 to 599)",
                        route.name
                    ),
                ));
            }
            let pointers = success
                .json_pointer_present
                .iter()
                .chain(success.json_equals.as_ref().map(|e| &e.pointer));
            for pointer in pointers {
                if !(pointer.starts_with('/') && pointer.len() <= 256) {
                    return Err(invalid("routes", format!("route {:?}: a `success` JSON pointer must be like \"/access_token\", found {pointer:?}", route.name)));
                }
            }
            if let Some(cookie) = &success.set_cookie {
                if !token(cookie) {
                    return Err(invalid("routes", format!("route {:?}: `success.set_cookie` must be a cookie name, found {cookie:?}", route.name)));
                }
            }
            if let Some(prefix) = &success.location_prefix {
                if prefix.is_empty() || prefix.len() > 512 {
                    return Err(invalid(
                        "routes",
                        format!(
                            "route {:?}: `success.location_prefix` must be 1 to 512 characters",
                            route.name
                        ),
                    ));
                }
            }
            crate::policy::Policy::resolve(&self.policy, &route.policy)
                .check()
                .map_err(|(key, m)| {
                    invalid(
                        "routes",
                        format!("route {:?}: `policy.{key}`: {m}", route.name),
                    )
                })?;
            for m in route
                .page
                .methods
                .iter()
                .chain(std::iter::once(&route.submit.method))
            {
                if http::Method::from_bytes(m.as_bytes()).is_err()
                    || m.chars().any(|c| c.is_ascii_lowercase())
                {
                    return Err(invalid(
                        "routes",
                        format!(
                            "route {:?}: {m:?} is not an upper-case HTTP method",
                            route.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The JSON Schema of the file, for editors.
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(Config);
        serde_json::to_string_pretty(&schema).expect("a schema always serialises")
    }
}

/// A store URL must name a backend gaitkeeper has and must not carry a password (secrets never
/// sit in the config file).
fn validate_store_url(url: &str) -> Result<(), String> {
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

/// Two listen addresses conflict when they use the same port on the same or a wildcard IP.
fn overlaps(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// serde-saphyr's Display repeats the location and a snippet; the operator gets those from
/// our own prefix, so keep only the message itself.
fn plain_message(e: &serde_saphyr::Error) -> String {
    let rendered = e.without_snippet().to_string();
    let first = rendered.lines().next().unwrap_or("invalid value").trim();
    // Strip a trailing " at line X, column Y" the library may add.
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

/// Rewrites the parser's terse messages ("invalid u64") into what the operator should write,
/// quoting the value found at the error's position.
fn friendly_message(message: &str, text: &str, line: u64, column: u64) -> String {
    let found = || {
        let value = text
            .lines()
            .nth(line.saturating_sub(1) as usize)
            .and_then(|l| l.get(column.saturating_sub(1) as usize..))
            .map(|rest| rest.split(" #").next().unwrap_or(rest).trim())
            .unwrap_or("");
        if value.is_empty() {
            String::new()
        } else {
            let shown: String = value.chars().take(60).collect();
            format!(", found `{shown}`")
        }
    };
    let expected = match message {
        "invalid boolean" => "expected true or false",
        "expected sequence start" => {
            "expected a list, e.g. [\"0.0.0.0:8080\"] or lines starting with `- `"
        }
        "expected mapping start" | "expected mapping" => "expected a mapping of `key: value` lines",
        "expected string scalar" => "expected a single string value",
        m if m.starts_with("invalid u") || m.starts_with("invalid i") => "expected a whole number",
        m if m.starts_with("invalid f") => "expected a number",
        _ => return message.to_string(),
    };
    format!("{expected}{}", found())
}

/// Finds the line and column of a dotted key (`admin.listen`) in the YAML text, for checks that
/// run after parsing. Best effort: returns (0, 0) when the key is not written in the file
/// (a default was used), and the message still names the key.
fn locate_key(text: &str, dotted: &str) -> (u64, u64) {
    let mut wanted = dotted.split('.').peekable();
    let mut min_indent = 0usize;
    for (index, line) in text.lines().enumerate() {
        let Some(part) = wanted.peek() else { break };
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if content.starts_with('#') || content.is_empty() {
            continue;
        }
        if indent < min_indent {
            break;
        }
        let key = content.split(':').next().unwrap_or("").trim();
        if key == *part {
            wanted.next();
            if wanted.peek().is_none() {
                return (index as u64 + 1, indent as u64 + 1);
            }
            min_indent = indent + 1;
        }
    }
    (0, 0)
}

impl fmt::Display for HostHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostHeader::Preserve => f.write_str("preserve"),
            HostHeader::Upstream => f.write_str("upstream"),
            HostHeader::Set(h) => write!(f, "set {h}"),
        }
    }
}

#[cfg(test)]
mod tests;
