//! The `regulation:` section: brute-force protection limits (the counting is `decision`'s).

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::HumanDuration;
use crate::policy::Action;

/// The `regulation:` block.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegulationConfig {
    /// Failed logins of one user within `window` before their next logins are regulated
    /// (0 turns per-user counting off).
    #[serde(default = "defaults::max_failures_per_user")]
    pub max_failures_per_user: u32,
    /// Failed logins from one client address within `window` (0 turns it off).
    #[serde(default = "defaults::max_failures_per_ip")]
    pub max_failures_per_ip: u32,
    /// How long failures are counted.
    #[serde(default = "defaults::window")]
    pub window: HumanDuration,
    /// How long a user or client stays regulated once over a limit.
    #[serde(default = "defaults::ban")]
    pub ban: HumanDuration,
    /// What regulated logins get: `challenge` or `block`.
    #[serde(default = "defaults::action")]
    pub action: Action,
    /// Most users and most addresses tracked at once.
    #[serde(default = "defaults::max_tracked")]
    pub max_tracked: u64,
}

mod defaults {
    use super::*;
    pub(super) fn max_failures_per_user() -> u32 {
        5
    }
    pub(super) fn max_failures_per_ip() -> u32 {
        20
    }
    pub(super) fn window() -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(600))
    }
    pub(super) fn ban() -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(900))
    }
    pub(super) fn action() -> Action {
        Action::Challenge
    }
    pub(super) fn max_tracked() -> u64 {
        100_000
    }
}

impl Default for RegulationConfig {
    fn default() -> Self {
        RegulationConfig {
            max_failures_per_user: defaults::max_failures_per_user(),
            max_failures_per_ip: defaults::max_failures_per_ip(),
            window: defaults::window(),
            ban: defaults::ban(),
            action: defaults::action(),
            max_tracked: defaults::max_tracked(),
        }
    }
}

impl RegulationConfig {
    /// Why these settings are unusable, if they are (key, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.action == Action::Allow {
            return Err((
                "action",
                "expected `challenge` or `block`; to turn regulation off set both limits to 0"
                    .into(),
            ));
        }
        if self.window.0.as_secs() < 1 || self.window.0.as_secs() > 86_400 {
            return Err(("window", "expected 1s to 24h".into()));
        }
        if self.ban.0.as_secs() < 1 || self.ban.0.as_secs() > 7 * 86_400 {
            return Err(("ban", "expected 1s to 7d".into()));
        }
        if !(100..=10_000_000).contains(&self.max_tracked) {
            return Err(("max_tracked", "expected 100 to 10000000".into()));
        }
        Ok(())
    }
}
