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
use crate::shared::{address_slot as ip_slot, user_slot};
use crate::shared::{BansRead, SharedState, StateError};

pub(super) use crate::config::RegulationConfig;

/// Failure counters and bans: in this process's memory, or in the state several instances
/// share (`server.shared_state: store`), so that failures spread over instances count as on
/// one. Cheap to share behind an `Arc`.
pub struct Regulator {
    failures: Cache<String, Arc<AtomicU32>>,
    banned: Cache<String, ()>,
    shared: Option<Arc<dyn SharedState>>,
    /// `gaitkeeper_regulation_failures_total`: failures counted (where they are kept).
    counted: Option<prometheus::IntCounter>,
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
            shared: None,
            counted: None,
        }
    }

    /// Keeps the counters and bans in `shared` instead of memory (several instances).
    pub(crate) fn shared_in(mut self, shared: Option<Arc<dyn SharedState>>) -> Regulator {
        self.shared = shared;
        self
    }

    /// Counts every failure recorded into `counter`.
    pub(crate) fn counting(mut self, counter: prometheus::IntCounter) -> Regulator {
        self.counted = Some(counter);
        self
    }

    /// Whether failures are counted in the shared state (a round trip: the caller may count
    /// them off the request path).
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The shared-state slots whose bans decide a login of `user` from `ip` (none in memory).
    pub(crate) fn slots(
        &self,
        config: &RegulationConfig,
        user: &str,
        ip: &str,
        trusted_device: bool,
    ) -> Vec<String> {
        let mut slots = Vec::with_capacity(2);
        if self.shared.is_none() {
            return slots;
        }
        if config.max_failures_per_user > 0 && !trusted_device {
            slots.push(user_slot(user));
        }
        if config.max_failures_per_ip > 0 {
            slots.push(ip_slot(ip));
        }
        slots
    }

    /// [`Regulator::check`] where the counters are kept: the action for a login of `user`
    /// from `ip`, if either is regulated; an error when the shared state cannot be read.
    /// `known`: bans already read for this login (with its page token), used when they are
    /// the bans of the same slots instead of a second round trip.
    pub(crate) async fn regulated(
        &self,
        config: &RegulationConfig,
        user: &str,
        ip: &str,
        trusted_device: bool,
        known: Option<BansRead>,
    ) -> Result<Option<Action>, StateError> {
        let Some(shared) = &self.shared else {
            return Ok(self.check(config, user, ip, trusted_device));
        };
        let slots = self.slots(config, user, ip, trusted_device);
        let banned = match known {
            Some(known) if known.slots == slots => known.banned,
            _ => shared.banned(&slots).await?,
        };
        Ok((!banned.is_empty()).then_some(config.action))
    }

    /// [`Regulator::check_address`] where the counters are kept.
    pub(crate) async fn regulated_address(
        &self,
        config: &RegulationConfig,
        ip: &str,
    ) -> Result<Option<Action>, StateError> {
        match &self.shared {
            None => Ok(self.check_address(config, ip)),
            Some(shared) if config.max_failures_per_ip > 0 => {
                Ok((!shared.banned(&[ip_slot(ip)]).await?.is_empty()).then_some(config.action))
            }
            Some(_) => Ok(None),
        }
    }

    /// Counts one failed login of `user` (when known) from `ip` where the counters are kept;
    /// true when it put one over its limit.
    pub(crate) async fn count_failure(
        &self,
        config: &RegulationConfig,
        user: Option<&str>,
        ip: &str,
    ) -> Result<bool, StateError> {
        let newly = match (&self.shared, user) {
            (None, _) => return Ok(self.count_failure_in_memory(config, user, ip)),
            (Some(shared), _) => {
                let mut slots = vec![(ip_slot(ip), config.max_failures_per_ip)];
                if let Some(user) = user {
                    slots.push((user_slot(user), config.max_failures_per_user));
                }
                shared
                    .count_failures(&slots, config.window.0, config.ban.0)
                    .await?
            }
        };
        if let Some(counted) = &self.counted {
            counted.inc();
        }
        Ok(newly)
    }

    /// Counts one failed login in memory at once (a single instance); true when it put one
    /// over its limit.
    pub(crate) fn count_failure_in_memory(
        &self,
        config: &RegulationConfig,
        user: Option<&str>,
        ip: &str,
    ) -> bool {
        let newly = match user {
            Some(user) => self.failed(config, user, ip),
            None => self.failed_address(config, ip),
        };
        if let Some(counted) = &self.counted {
            counted.inc();
        }
        newly
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
