//! The `alerts:` section: the security team's webhook, which events go to it, retries.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{HumanDuration, Secret};

/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// A login was blocked.
    Block,
    /// A user failed the MFA challenge.
    ChallengeFailed,
    /// Telemetry or a page token was replayed.
    Replay,
    /// A challenge was passed with a recovery code (the authenticator lost, or the codes
    /// in somebody else's hands).
    RecoveryCodeUsed,
    /// A user added a second factor (from an invitation): a security team wants to know when
    /// an account gets a new way in.
    FactorAdded,
}

impl AlertEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertEvent::Block => "block",
            AlertEvent::ChallengeFailed => "challenge_failed",
            AlertEvent::Replay => "replay",
            AlertEvent::RecoveryCodeUsed => "recovery_code_used",
            AlertEvent::FactorAdded => "factor_added",
        }
    }
}

/// `alerts:` in the config file. Absent: no alerts are sent.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// The security team's webhook.
    pub webhook: WebhookConfig,
}

#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where alerts are POSTed: an `http://` or `https://` URL.
    pub url: WebhookUrl,
    /// Signs every request (HMAC-SHA256, header `X-Gaitkeeper-Signature`), so the receiver
    /// can tell gaitkeeper's alerts from forgeries: `{ env: NAME }` or `{ file: PATH }`.
    pub secret: Secret,
    /// Which events are sent: `block`, `challenge_failed`, `replay`, `recovery_code_used`,
    /// `factor_added` (default: all).
    #[serde(default = "defaults::events")]
    pub events: Vec<AlertEvent>,
    /// Limit for one delivery attempt, connecting included (100ms to 60s).
    #[serde(default = "defaults::timeout")]
    pub timeout: HumanDuration,
    /// Attempts per alert before it counts as failed (1 to 20).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one (with jitter, at most 60s).
    #[serde(default = "defaults::backoff")]
    pub backoff: HumanDuration,
    /// After an alert, the same event for the same user (or client address) is not sent again
    /// for this long (`0s`: every alert is sent).
    #[serde(default = "defaults::throttle")]
    pub throttle: HumanDuration,
    /// Alerts waiting for delivery (1 to 100000); beyond it they are dropped and counted.
    #[serde(default = "defaults::queue")]
    pub queue: usize,
}

mod defaults {
    use super::*;

    pub(super) fn events() -> Vec<AlertEvent> {
        vec![
            AlertEvent::Block,
            AlertEvent::ChallengeFailed,
            AlertEvent::Replay,
            AlertEvent::RecoveryCodeUsed,
            AlertEvent::FactorAdded,
        ]
    }
    pub(super) fn timeout() -> HumanDuration {
        HumanDuration::secs(5)
    }
    pub(super) fn max_attempts() -> u32 {
        5
    }
    pub(super) fn backoff() -> HumanDuration {
        HumanDuration::secs(1)
    }
    pub(super) fn throttle() -> HumanDuration {
        HumanDuration::secs(300)
    }
    pub(super) fn queue() -> usize {
        1024
    }
}

impl AlertConfig {
    /// Checks the values serde cannot; returns the offending key (below `alerts.webhook.`)
    /// and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let w = &self.webhook;
        if w.events.is_empty() {
            return Err((
                "events",
                "expected at least one of block, challenge_failed, replay (remove `alerts:` to send none)".into(),
            ));
        }
        if w.timeout.0 < Duration::from_millis(100) || w.timeout.0 > Duration::from_secs(60) {
            return Err(("timeout", "expected 100ms to 60s".into()));
        }
        if !(1..=20).contains(&w.max_attempts) {
            return Err((
                "max_attempts",
                format!("expected 1 to 20 attempts, found {}", w.max_attempts),
            ));
        }
        if w.backoff.0 < Duration::from_millis(10) || w.backoff.0 > MAX_BACKOFF {
            return Err(("backoff", "expected 10ms to 60s".into()));
        }
        if !(1..=100_000).contains(&w.queue) {
            return Err((
                "queue",
                format!("expected 1 to 100000 alerts, found {}", w.queue),
            ));
        }
        Ok(())
    }
}

/// A webhook URL, checked when the config is loaded: http or https, a host, no password.
#[derive(Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(
    with = "String",
    description = "An http:// or https:// URL, e.g. \"https://siem.internal/hooks/gaitkeeper\"."
)]
pub struct WebhookUrl(pub url::Url);

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_webhook_url(&text)
            .map(WebhookUrl)
            .map_err(serde::de::Error::custom)
    }
}

fn parse_webhook_url(text: &str) -> Result<url::Url, String> {
    let shown: String = text.chars().take(80).collect();
    let expected = || {
        format!("expected an http:// or https:// URL such as \"https://siem.internal/hooks/gaitkeeper\", found {shown:?}")
    };
    if text.len() > 2048 {
        return Err("the URL is longer than 2048 characters".into());
    }
    let url = url::Url::parse(text.trim()).map_err(|_| expected())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(expected());
    }
    if url.password().is_some() {
        return Err("the URL contains a password; secrets never go in this file: authenticate the receiver with `secret` (the signature header) instead".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked() {
        assert!(parse_webhook_url("https://siem.internal/hooks/gk?x=1").is_ok());
        assert!(parse_webhook_url("http://127.0.0.1:9999/").is_ok());
        for bad in [
            "",
            "siem.internal/hook",
            "ftp://x/",
            "https://",
            "file:///etc/passwd",
        ] {
            assert!(parse_webhook_url(bad).is_err(), "{bad:?}");
        }
        let err = parse_webhook_url("https://u:pw@siem.internal/").unwrap_err();
        assert!(err.contains("password") && !err.contains("pw@"), "{err}");
    }
}
