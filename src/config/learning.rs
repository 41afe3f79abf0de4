//! The `learning:` section: per-user model windows and refits, and the global model (the learning itself is `learn`'s).

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::config::HumanDuration;

/// Most logins a window holds (the upper bound for `learning.window`).
pub const MAX_WINDOW: usize = 1000;

/// Continuous learning: how much of each user's history their model follows, how often it
/// is refitted, and when the global model is retrained (restart to change).
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LearnConfig {
    /// A user's model follows their last this many verified logins (2 to 1000), so slow
    /// drift in how they type and move is followed and old habits fade out.
    #[serde(default = "defaults::window")]
    pub window: u32,
    /// Refit a user's model from the store after this many new verified logins (1 to 1000);
    /// in between, each login updates the model's running statistics on the spot.
    #[serde(default = "defaults::refit_every")]
    pub refit_every: u32,
    /// How often the global model is retrained from the store's verified logins (and newer
    /// models saved by other instances are picked up), at least 10s, e.g. `1h`.
    #[serde(default = "defaults::global_retrain")]
    pub global_retrain: HumanDuration,
    /// The global model is only trained once at least this many users (4 to 100000) have
    /// `global_min_logins_per_user` verified logins each; until then the per-user detectors
    /// decide alone.
    #[serde(default = "defaults::global_min_users")]
    pub global_min_users: u32,
    /// Verified logins a user needs to count towards `global_min_users` (4 to 1000).
    #[serde(default = "defaults::global_min_logins_per_user")]
    pub global_min_logins_per_user: u32,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            window: defaults::window(),
            refit_every: defaults::refit_every(),
            global_retrain: defaults::global_retrain(),
            global_min_users: defaults::global_min_users(),
            global_min_logins_per_user: defaults::global_min_logins_per_user(),
        }
    }
}

impl LearnConfig {
    /// Checks the section; the error names the offending key and what was expected.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let range = |key: &'static str, value: u32, lo: u32, hi: u32, what: &str| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err((key, format!("expected {lo} to {hi} {what}, found {value}")))
            }
        };
        range(
            "learning.window",
            self.window,
            2,
            MAX_WINDOW as u32,
            "logins",
        )?;
        range("learning.refit_every", self.refit_every, 1, 1000, "logins")?;
        range(
            "learning.global_min_users",
            self.global_min_users,
            4,
            100_000,
            "users",
        )?;
        range(
            "learning.global_min_logins_per_user",
            self.global_min_logins_per_user,
            4,
            1000,
            "logins",
        )?;
        if self.global_retrain.0 < Duration::from_secs(10) {
            return Err(("learning.global_retrain", "expected at least 10s".into()));
        }
        Ok(())
    }
}

mod defaults {
    use crate::config::HumanDuration;

    pub(super) fn window() -> u32 {
        50
    }
    pub(super) fn refit_every() -> u32 {
        50
    }
    pub(super) fn global_retrain() -> HumanDuration {
        HumanDuration::secs(60 * 60)
    }
    pub(super) fn global_min_users() -> u32 {
        10
    }
    pub(super) fn global_min_logins_per_user() -> u32 {
        10
    }
}
