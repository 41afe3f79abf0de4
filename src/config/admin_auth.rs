//! `admin.auth`: who may use the admin listener. A bearer token (for scripts and scrapers) and
//! or a basic-auth user and password (what a browser asks for), both read like every other
//! secret (`{ env: NAME }` or `{ file: PATH }`), never written in the YAML itself.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::Secret;

/// `admin.auth` in the config file.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminAuthConfig {
    /// A token that operators' tools send as `Authorization: Bearer TOKEN`.
    #[serde(default)]
    pub bearer: Option<Secret>,
    /// A user name and password for HTTP basic authentication (a browser asks for them).
    #[serde(default)]
    pub basic: Option<BasicAuthConfig>,
    /// `protected` (default: `/metrics` needs the credential too) or `open` (a Prometheus
    /// scraper without credentials may read `/metrics`; nothing else opens).
    #[serde(default)]
    pub metrics: MetricsAccess,
}

/// `admin.auth.basic`.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    /// The user name the browser sends (1 to 64 printable characters, no `:`).
    pub user: String,
    /// The password, from an environment variable or a file (at least 32 characters).
    pub password: Secret,
}

/// Whether `/metrics` needs `admin.auth`'s credential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricsAccess {
    #[default]
    Protected,
    Open,
}

impl AdminAuthConfig {
    /// Checks what serde cannot; returns the offending key (below `admin.auth.`) and why.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.bearer.is_none() && self.basic.is_none() {
            return Err((
                "",
                "give a credential: `bearer: { env: NAME }` (a token for tools) and/or `basic: { user: NAME, password: { env: NAME } }` (for a browser)".into(),
            ));
        }
        if let Some(basic) = &self.basic {
            let user = &basic.user;
            if user.is_empty()
                || user.chars().count() > 64
                || user.contains(':')
                || user.chars().any(char::is_control)
            {
                return Err((
                    "basic.user",
                    format!("expected 1 to 64 printable characters without ':', found {user:?}"),
                ));
            }
        }
        Ok(())
    }
}
