//! Step-up MFA: the pure pieces the proxy uses when policy decides a login must be confirmed.
//!
//! Owns: checking a built-in TOTP code ([`totp`]), device cookies ([`device`]), the signed JWTs exchanged with an operator's
//! external MFA provider ([`external`]), the challenge page, its CSRF token and challenge ids
//! ([`page`]), and the `mfa` section of the config ([`MfaConfig`]). The held-login store, the
//! `/__gk/challenge/…` endpoints and the replay of a confirmed login live in the proxy.
//!
//! No I/O on the request path and no clock of its own: every check takes `now`, so expiry and
//! reuse are tested without waiting. Never logs codes, TOTP secrets, assertions or keys.

pub mod device;
pub mod external;
pub mod page;
pub mod totp;

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::{ConfigError, HumanDuration};

pub use device::DeviceCookies;
pub use external::{
    Assertion, AssertionAlgorithm, AssertionConfig, AssertionError, AssertionVerifier,
    ExternalMfaConfig, KeyError,
};
pub use page::{
    challenge_page, check_csrf, csrf_token, message_page, new_challenge_id, resume_page,
    ChallengePage, ExternalLink, CHALLENGE_CSP, CHALLENGE_CSP_INLINE, CODE_FIELD,
};
pub use totp::{TotpError, TotpVerifier};

/// Step-up MFA: how a login that policy wants confirmed is challenged.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaConfig {
    /// The built-in TOTP check (codes from an authenticator app, enrolled with
    /// `gaitkeeper users enroll-totp`).
    #[serde(default)]
    pub totp: TotpConfig,
    /// An external MFA provider the browser is sent to, answering with a signed assertion.
    #[serde(default)]
    pub external: Option<ExternalMfaConfig>,
    /// How long a held login waits for its challenge to be answered (30s to 1h).
    #[serde(default = "defaults::challenge_ttl")]
    pub challenge_ttl: HumanDuration,
    /// Most logins held for a challenge at once (1 to 1000000); more are refused.
    #[serde(default = "defaults::max_held")]
    pub max_held: usize,
    /// Most memory the held logins (their request bodies and headers) may take, in bytes
    /// (1 MiB to 4 GiB).
    #[serde(default = "defaults::max_held_bytes")]
    pub max_held_bytes: usize,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            totp: TotpConfig::default(),
            external: None,
            challenge_ttl: defaults::challenge_ttl(),
            max_held: defaults::max_held(),
            max_held_bytes: defaults::max_held_bytes(),
        }
    }
}

/// The built-in TOTP check.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfig {
    /// Offer the TOTP code form to users who have a TOTP secret enrolled.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Wrong codes allowed per challenge before it is used up (1 to 20).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
}

impl Default for TotpConfig {
    fn default() -> Self {
        TotpConfig {
            enabled: true,
            max_attempts: defaults::max_attempts(),
        }
    }
}

mod defaults {
    use super::*;

    pub fn yes() -> bool {
        true
    }
    pub fn max_attempts() -> u32 {
        5
    }
    pub fn challenge_ttl() -> HumanDuration {
        HumanDuration::secs(5 * 60)
    }
    pub fn max_held() -> usize {
        10_000
    }
    pub fn max_held_bytes() -> usize {
        64 << 20
    }
}

impl MfaConfig {
    /// Checks that span several keys; `invalid(key, message)` places the error in the file.
    pub(crate) fn validate(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if !(1..=20).contains(&self.totp.max_attempts) {
            return Err(invalid(
                "mfa.totp.max_attempts",
                format!(
                    "expected 1 to 20 attempts, found {}",
                    self.totp.max_attempts
                ),
            ));
        }
        let ttl = self.challenge_ttl.0;
        if ttl < Duration::from_secs(30) || ttl > Duration::from_secs(3600) {
            return Err(invalid(
                "mfa.challenge_ttl",
                "expected 30s to 1h: long enough to open an authenticator app, short enough that a held login does not linger".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_held) {
            return Err(invalid(
                "mfa.max_held",
                format!("expected 1 to 1000000 held logins, found {}", self.max_held),
            ));
        }
        if !((1u64 << 20)..=(4u64 << 30)).contains(&(self.max_held_bytes as u64)) {
            return Err(invalid(
                "mfa.max_held_bytes",
                format!(
                    "expected 1048576 (1 MiB) to 4294967296 (4 GiB) bytes, found {}",
                    self.max_held_bytes
                ),
            ));
        }
        if let Some(external) = &self.external {
            external.validate(invalid)?;
        }
        Ok(())
    }
}
