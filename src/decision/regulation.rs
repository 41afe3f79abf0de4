//! Regulation (what forward-auth proxies call brute-force protection): failed logins, as the
//! app's own responses show them, counted per user and per client address within a window;
//! past a limit, that user's or client's next logins get `regulation.action` for the ban time.
//!
//! Counting windows are fixed (they start at the first failure and last `window`); memory is
//! bounded by `max_tracked` keys per table, the least recently used dropped first.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use moka::sync::Cache;

use crate::policy::Action;

pub(super) use crate::config::RegulationConfig;

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
    pub(crate) fn check_address(&self, config: &RegulationConfig, ip: &str) -> Option<Action> {
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
    pub(crate) fn failed_address(&self, config: &RegulationConfig, ip: &str) -> bool {
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
