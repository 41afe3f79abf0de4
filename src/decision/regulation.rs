//! Regulation (what forward-auth proxies call brute-force protection): failed logins, as the
//! app's own responses show them, counted per user and per client address within a window;
//! past a limit, that user's or client's next logins get `regulation.action` for the ban time.
//!
//! Counting windows are fixed (they start at the first failure and last `window`); memory is
//! bounded by `max_tracked` keys per table, the least recently used dropped first.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use moka::sync::Cache;
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
    pub fn max_failures_per_user() -> u32 {
        5
    }
    pub fn max_failures_per_ip() -> u32 {
        20
    }
    pub fn window() -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(600))
    }
    pub fn ban() -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(900))
    }
    pub fn action() -> Action {
        Action::Challenge
    }
    pub fn max_tracked() -> u64 {
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

/// Failure counters and bans. Cheap to share behind an `Arc`.
pub struct Regulator {
    failures: Cache<String, Arc<AtomicU32>>,
    banned: Cache<String, ()>,
}

impl Regulator {
    pub fn new(config: &RegulationConfig) -> Regulator {
        Regulator {
            failures: Cache::builder()
                .max_capacity(config.max_tracked * 2)
                .time_to_live(config.window.0)
                .build(),
            banned: Cache::builder()
                .max_capacity(config.max_tracked * 2)
                .time_to_live(config.ban.0)
                .build(),
        }
    }

    /// The action for a login of `user` (a store user key in hex) from `ip`, if either is
    /// currently regulated. A browser with the user's device cookie (`trusted_device`) is not
    /// stopped by the user's ban: a stranger's failures must not lock the user out of their
    /// own browser.
    pub fn check(
        &self,
        config: &RegulationConfig,
        user: &str,
        ip: &str,
        trusted_device: bool,
    ) -> Option<Action> {
        let user_banned = !trusted_device
            && config.max_failures_per_user > 0
            && self.banned.contains_key(&user_slot(user));
        let ip_banned = config.max_failures_per_ip > 0 && self.banned.contains_key(&ip_slot(ip));
        (user_banned || ip_banned).then_some(config.action)
    }

    /// The action for a login from `ip` whose user is unknown (its name could not be read),
    /// if the address is regulated.
    pub fn check_address(&self, config: &RegulationConfig, ip: &str) -> Option<Action> {
        (config.max_failures_per_ip > 0 && self.banned.contains_key(&ip_slot(ip)))
            .then_some(config.action)
    }

    /// Counts one failed login. Returns true when this failure put the user or client over a
    /// limit (the caller audits it).
    pub fn failed(&self, config: &RegulationConfig, user: &str, ip: &str) -> bool {
        self.count(&[
            (user_slot(user), config.max_failures_per_user),
            (ip_slot(ip), config.max_failures_per_ip),
        ])
    }

    /// Counts a failure against the client address only (a login whose name could not be
    /// read: there is no user to count it against).
    pub fn failed_address(&self, config: &RegulationConfig, ip: &str) -> bool {
        self.count(&[(ip_slot(ip), config.max_failures_per_ip)])
    }

    fn count(&self, slots: &[(String, u32)]) -> bool {
        let mut newly_banned = false;
        for (slot, limit) in slots.iter().cloned() {
            if limit == 0 {
                continue;
            }
            let count = self
                .failures
                .get_with(slot.clone(), || Arc::new(AtomicU32::new(0)));
            let n = count.fetch_add(1, Ordering::Relaxed) + 1;
            if n >= limit && !self.banned.contains_key(&slot) {
                self.banned.insert(slot.clone(), ());
                self.failures.invalidate(&slot);
                newly_banned = true;
            }
        }
        newly_banned
    }
}

fn user_slot(user: &str) -> String {
    format!("u:{user}")
}

fn ip_slot(ip: &str) -> String {
    format!("ip:{ip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_the_limit_is_regulated_and_others_are_not() {
        let config = RegulationConfig {
            max_failures_per_user: 3,
            max_failures_per_ip: 0,
            ..Default::default()
        };
        let r = Regulator::new(&config);
        assert!(!r.failed(&config, "alice", "10.0.0.1"));
        assert!(!r.failed(&config, "alice", "10.0.0.2"));
        assert_eq!(r.check(&config, "alice", "10.0.0.3", false), None);
        assert!(r.failed(&config, "alice", "10.0.0.4"));
        assert_eq!(
            r.check(&config, "alice", "10.0.0.9", false),
            Some(Action::Challenge)
        );
        assert_eq!(
            r.check(&config, "alice", "10.0.0.9", true),
            None,
            "her own browser"
        );
        assert_eq!(r.check(&config, "bob", "10.0.0.1", false), None);
    }

    #[test]
    fn a_client_address_over_the_limit_is_regulated_for_every_user() {
        let config = RegulationConfig {
            max_failures_per_user: 0,
            max_failures_per_ip: 2,
            action: Action::Block,
            ..Default::default()
        };
        let r = Regulator::new(&config);
        r.failed(&config, "a", "192.0.2.7");
        r.failed(&config, "b", "192.0.2.7");
        assert_eq!(
            r.check(&config, "zed", "192.0.2.7", true),
            Some(Action::Block)
        );
        assert_eq!(r.check(&config, "zed", "192.0.2.8", false), None);
    }

    #[test]
    fn allow_is_not_a_regulation_action() {
        let config = RegulationConfig {
            action: Action::Allow,
            ..Default::default()
        };
        assert_eq!(config.check().unwrap_err().0, "action");
    }
}
