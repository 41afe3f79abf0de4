//! The operator's YAML file: its schema, loading with precise errors, and hot reload.
//!
//! Owns: turning `gaitkeeper.yaml` into one validated [`Config`]. Every error names the file,
//! line, column and key, and says what was expected. Unknown keys are errors, because a typo
//! must never silently turn a protection off. The rest of the code trusts a `Config` and never
//! re-checks it. Never logs secret values (see [`Secret`]).

mod admin_auth;
mod alerts;
mod apps;
mod audit;
mod edge;
mod learning;
mod mfa;
mod oidc;
mod process;
mod regulation;
mod reload;
mod routes;
mod store;
mod types;

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Deserialize;

pub use crate::runtime::BackgroundPriority;
pub use admin_auth::{AdminAuthConfig, BasicAuthConfig, MetricsAccess};
pub use alerts::{AlertConfig, AlertEvent, WebhookConfig, WebhookUrl, MAX_BACKOFF};
pub use apps::{app_scoped, host_matches, request_host, AppConfig, DEFAULT_APP};
pub use audit::{AuditConfig, AuditStream};
pub use edge::{read_chain, read_key, Listener, TlsFileError, TlsFiles};
pub use learning::{LearnConfig, MAX_WINDOW};
pub use mfa::{
    AssertionAlgorithm, AssertionConfig, ExternalMfaConfig, KeyError, MfaConfig, PasskeysConfig,
    ProviderUrl, PublicKeyFile, TotpConfig,
};
pub use oidc::{IssuerUrl, OidcConfig};
pub use process::{
    AdminConfig, HostHeader, LogFormat, LoggingConfig, SecretsConfig, ServerConfig,
    SharedStateMode, UpstreamConfig,
};
pub use regulation::RegulationConfig;
pub use reload::{ConfigWatcher, SharedConfig};
pub use routes::{
    CaptureConfig, FactorOffer, JsonEquals, MachineClients, NameNormalization, OfferMode,
    PageMatch, RouteConfig, SubmitMatch, SuccessSignal, UsernameSource,
};
pub use store::StoreConfig;
pub(crate) use types::number_and_unit;
pub use types::{
    Cidr, HumanDuration, ListenAddr, PathPrefix, RetentionPeriod, Secret, UpstreamAddr,
};

/// The whole config file. See `config/gaitkeeper.yaml` for a commented example.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Public listeners: `"ADDR:PORT"` for plain HTTP, or `{ address, tls: { cert_file,
    /// key_file } }` for HTTPS (HTTP/2 and HTTP/1.1), `{ address, redirect_to_https: true }`
    /// for a listener that only redirects, `proxy_protocol: true` behind a TCP balancer.
    #[serde(default = "defaults::listen")]
    pub listen: Vec<Listener>,
    /// The one web app gaitkeeper protects (the single-app form; with `apps:` leave it out).
    #[serde(default)]
    upstream: Option<UpstreamConfig>,
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
    /// The app's login routes: where to inject the capture script, where logins are posted
    /// (the single-app form; with `apps:` each app has its own).
    #[serde(default)]
    routes: Vec<RouteConfig>,
    /// Several apps in one process, each on its own host names with its own upstream, routes,
    /// policy overrides and certificate. Without it, `upstream` and `routes` are one app
    /// (named `default`) that answers every host. After loading, always at least one app.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
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

mod defaults {
    use super::*;

    pub(super) fn listen() -> Vec<Listener> {
        vec![Listener::plain(ListenAddr(
            "0.0.0.0:8080".parse().expect("valid literal"),
        ))]
    }
    pub(super) fn admin_listen() -> ListenAddr {
        ListenAddr("127.0.0.1:9090".parse().expect("valid literal"))
    }
    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn connect_timeout() -> HumanDuration {
        HumanDuration::secs(3)
    }
    pub(super) fn read_timeout() -> HumanDuration {
        HumanDuration::secs(30)
    }
    pub(super) fn write_timeout() -> HumanDuration {
        HumanDuration::secs(30)
    }
    pub(super) fn idle_timeout() -> HumanDuration {
        HumanDuration::secs(60)
    }
    pub(super) fn grace_period() -> HumanDuration {
        HumanDuration::secs(10)
    }
    pub(super) fn threads() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
    pub(super) fn reserved_prefix() -> PathPrefix {
        PathPrefix("/__gk/".to_string())
    }
    pub(super) fn data_dir() -> PathBuf {
        PathBuf::from("gaitkeeper-data")
    }
    pub(super) fn app_name() -> String {
        "this application".to_string()
    }
    pub(super) fn page_methods() -> Vec<String> {
        vec!["GET".to_string()]
    }
    pub(super) fn page_content_types() -> Vec<String> {
        vec!["text/html".to_string(), "application/xhtml+xml".to_string()]
    }
    pub(super) fn username_field() -> String {
        "username".into()
    }
    pub(super) fn success_status() -> Vec<u16> {
        vec![301, 302, 303, 307, 308]
    }
    pub(super) fn submit_method() -> String {
        "POST".to_string()
    }
    pub(super) fn capture_field() -> String {
        "__gk".to_string()
    }
    pub(super) fn capture_header() -> String {
        "X-Gaitkeeper-Telemetry".to_string()
    }
    pub(super) fn token_ttl() -> HumanDuration {
        HumanDuration::secs(600)
    }
    pub(super) fn max_payload_bytes() -> usize {
        64 * 1024
    }
    pub(super) fn max_login_body_bytes() -> usize {
        64 * 1024
    }
    pub(super) fn body_timeout() -> HumanDuration {
        HumanDuration::secs(10)
    }
    pub(super) fn timeline_slack() -> HumanDuration {
        HumanDuration::secs(1)
    }
    pub(super) fn normalize() -> Vec<NameNormalization> {
        vec![NameNormalization::Trim, NameNormalization::Nfkc]
    }
    pub(super) fn enrollment_logins() -> u32 {
        5
    }
    pub(super) fn retention() -> RetentionPeriod {
        RetentionPeriod::days(90)
    }
    pub(super) fn cache_mb() -> u32 {
        64
    }
    pub(super) fn cache_idle() -> HumanDuration {
        HumanDuration::secs(30 * 60)
    }
    pub(super) fn store_max_connections() -> u32 {
        8
    }
    pub(super) fn busy_timeout() -> HumanDuration {
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
        let mut config = config;
        config.validate(text, file)?;
        Ok(config)
    }

    /// Checks that span several keys, after every value parsed on its own.
    fn validate(&mut self, text: &str, file: &str) -> Result<(), ConfigError> {
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
        self.settle_apps(&invalid)?;
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
        if let Some(public) = self.listen.iter().find(|l| overlaps(l.address.0, admin)) {
            return Err(invalid(
                "admin.listen",
                format!("the admin listener {admin} would share a port with the public listener {public}; give it its own (private) address such as 127.0.0.1:9090"),
            ));
        }
        self.validate_admin_auth(text, file, &invalid)?;
        for (i, a) in self.listen.iter().enumerate() {
            if let Some(b) = self.listen[..i]
                .iter()
                .find(|b| overlaps(a.address.0, b.address.0))
            {
                return Err(invalid(
                    "listen",
                    format!("{a} and {b} would share a port; give each listener its own"),
                ));
            }
        }
        if self.listen.iter().any(|l| l.redirect_to_https)
            && !self.listen.iter().any(|l| l.tls.is_some())
        {
            return Err(invalid(
                "listen",
                "a listener redirects to HTTPS but no listener has `tls`; add one with a certificate".into(),
            ));
        }
        if let Some(app) = self.apps.iter().find(|a| a.tls.is_some()) {
            if !self.listen.iter().any(|l| l.tls.is_some()) {
                return Err(invalid(
                    &app.key_of("tls"),
                    format!("app {:?} has a certificate but no listener serves HTTPS; add a `listen` entry with `tls`", app.name),
                ));
            }
        }
        if self.server.shared_state == Some(SharedStateMode::Store) && !self.store_is_postgres() {
            return Err(invalid(
                "server.shared_state",
                "`store` keeps the shared state in a PostgreSQL store; set `store.url` to postgres://… (several instances need one database), or use `local`".into(),
            ));
        }
        if self.server.trusted_proxies.len() > 256 {
            return Err(invalid(
                "server.trusted_proxies",
                "at most 256 networks; list whole networks (10.0.0.0/8) rather than hosts".into(),
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
        for app in &self.apps {
            if let Some(sni) = &app.upstream.sni {
                if sni.is_empty() || sni.len() > 253 || sni.contains(|c: char| c.is_whitespace()) {
                    return Err(invalid(
                        &app.key_of("upstream.sni"),
                        format!("expected a DNS name, found {sni:?}"),
                    ));
                }
            }
            if let Some(ca_file) = &app.upstream.ca_file {
                let readable = std::fs::read_to_string(ca_file)
                    .map(|pem| pem.contains("-----BEGIN CERTIFICATE-----"))
                    .unwrap_or(false);
                if !readable {
                    return Err(invalid(
                        &app.key_of("upstream.ca_file"),
                        format!(
                            "{} is not a readable PEM file with at least one certificate",
                            ca_file.display()
                        ),
                    ));
                }
            }
            if let HostHeader::Set(host) = &app.upstream.host_header {
                if host.is_empty()
                    || host.len() > 255
                    || http::HeaderValue::from_str(host).is_err()
                    || host.contains(|c: char| c.is_whitespace() || c == '/')
                {
                    return Err(invalid(
                        &app.key_of("upstream.host_header.set"),
                        format!("expected a host name (and optional port), found {host:?}"),
                    ));
                }
            }
        }
        if let Some(app) = self
            .apps
            .iter()
            .find(|a| a.upstream.ca_file != self.apps[0].upstream.ca_file)
        {
            return Err(invalid(
                &app.key_of("upstream.ca_file"),
                "every app must name the same `upstream.ca_file` (one CA file is read per process); put every app's CA in one PEM file".into(),
            ));
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

    /// `admin.auth`: well formed, and present whenever the admin listener is reachable from
    /// other hosts (anything that reaches it could otherwise read profiles and telemetry).
    fn validate_admin_auth(
        &self,
        text: &str,
        file: &str,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let admin = self.admin.listen.0;
        match &self.admin.auth {
            Some(auth) => auth.validate().map_err(|(key, message)| {
                let key = if key.is_empty() {
                    "admin.auth".to_string()
                } else {
                    format!("admin.auth.{key}")
                };
                invalid(&key, message)
            }),
            None if !admin.ip().is_loopback() => {
                // The key to add is `admin.auth`; point at `admin.listen`, which is written.
                let (line, column) = locate_key(text, "admin.listen");
                Err(ConfigError::Invalid {
                    file: file.to_string(),
                    line,
                    column,
                    key: "admin.auth".into(),
                    message: format!("the admin listener {admin} is not a loopback address, so `admin.auth` is required: add `auth: {{ bearer: {{ env: GK_ADMIN_TOKEN }} }}` (or `basic: {{ user: NAME, password: {{ env: NAME }} }}`) under `admin:`, or listen on 127.0.0.1"),
                })
            }
            None => Ok(()),
        }
    }

    /// Whether the store is PostgreSQL (else the embedded SQLite file).
    pub fn store_is_postgres(&self) -> bool {
        self.store
            .url
            .as_deref()
            .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
    }

    /// Where the state instances share lives: as configured, else in the store when it is
    /// PostgreSQL (several instances may use it), else in memory.
    pub fn shared_state_mode(&self) -> SharedStateMode {
        self.server
            .shared_state
            .unwrap_or(if self.store_is_postgres() {
                SharedStateMode::Store
            } else {
                SharedStateMode::Local
            })
    }

    /// The JSON Schema of the file, for editors.
    pub fn json_schema() -> String {
        let schema = schemars::schema_for!(Config);
        serde_json::to_string_pretty(&schema).expect("a schema always serialises")
    }
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

/// Finds the line and column of a dotted key (`admin.listen`, `apps[1].hosts`) in the YAML
/// text, for checks that run after parsing. Best effort: returns (0, 0) when the key is not
/// written in the file (a default was used), and the message still names the key.
fn locate_key(text: &str, dotted: &str) -> (u64, u64) {
    let lines: Vec<&str> = text.lines().collect();
    // A line's key and the column it starts at; a list item's first key is after its dash.
    let key_of = |line: &str| -> Option<(usize, String, Option<usize>)> {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            return None;
        }
        let indent = line.len() - content.len();
        let (key_indent, content, dash) = match content.strip_prefix('-') {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                let inner = rest.trim_start();
                (indent + 1 + (rest.len() - inner.len()), inner, Some(indent))
            }
            _ => (indent, content, None),
        };
        let key = content.split(':').next().unwrap_or("").trim().to_string();
        Some((key_indent, key, dash))
    };
    let (mut from, mut min_indent, mut found) = (0usize, 0usize, (0u64, 0u64));
    // Inside a list item: its dash's column (the next item at that column ends it).
    let mut in_item: Option<usize> = None;
    for part in dotted.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(from) {
            let Some((indent, key, dash)) = key_of(line) else {
                continue;
            };
            let next_item = i != from && dash.is_some_and(|d| Some(d) <= in_item);
            if indent < min_indent || next_item {
                break;
            }
            if key == name {
                hit = Some((i, indent));
                break;
            }
        }
        let Some((line, indent)) = hit else {
            return (0, 0);
        };
        found = (line as u64 + 1, indent as u64 + 1);
        from = line + 1;
        min_indent = indent + 1;
        in_item = None;
        if let Some(wanted) = index {
            // The items of the list under this key: lines starting with a dash at one indent.
            let mut items = lines
                .iter()
                .enumerate()
                .skip(line + 1)
                .filter_map(|(i, l)| {
                    let content = l.trim_start();
                    let dash = l.len() - content.len();
                    (content.starts_with('-') && dash >= indent).then_some((i, dash))
                });
            let Some((first, dash)) = items.next() else {
                return found;
            };
            let item = std::iter::once((first, dash))
                .chain(items.filter(|(_, d)| *d == dash))
                .nth(wanted);
            let Some((item_line, item_dash)) = item else {
                return found;
            };
            found = (item_line as u64 + 1, item_dash as u64 + 1);
            from = item_line;
            min_indent = item_dash + 1;
            in_item = Some(item_dash);
        }
    }
    found
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
