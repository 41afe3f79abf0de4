//! The replay memory of page tokens: which token ids were used, until those tokens expire.
//!
//! Exact, and bounded: an id is kept until its token's expiry (plus the clock leeway) has
//! passed, after which the token is refused as expired anyway. At capacity the ids whose
//! tokens expire soonest are forgotten first, so the only replays the bound can let through
//! are of tokens about to expire, and only while more than [`CAPACITY`] tokens were used
//! within one token lifetime. (A general cache would be wrong here: its admission policy may
//! drop a just-used id at once, and it costs several times the memory per id.)
//!
//! About 50 bytes per id: a million ids take ~50 MiB. Sharded so that concurrent logins
//! rarely wait on each other.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

/// The raw 16 random bytes of a token id.
pub(crate) type TokenId = [u8; 16];

/// Most token ids remembered at once. At the default 10-minute token lifetime this covers
/// about 1,600 logins per second.
pub(super) const CAPACITY: usize = 1_000_000;
/// Ids are grouped by expiry in buckets this many seconds wide.
const BUCKET_SECS: u64 = 10;
const SHARDS: usize = 16;

pub(super) struct UsedIds {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

#[derive(Default)]
struct Shard {
    ids: HashSet<TokenId>,
    /// The same ids by expiry bucket (end of the bucket, in seconds since the epoch).
    by_expiry: BTreeMap<u64, Vec<TokenId>>,
}

impl UsedIds {
    pub(super) fn new(capacity: usize) -> UsedIds {
        UsedIds {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// Marks `id` used until `forget_after` (seconds since the epoch; it must already include
    /// any leeway). Returns false if it was used before: a replay. `now` is the current time.
    pub(super) fn first_use(&self, id: TokenId, forget_after: u64, now: u64) -> bool {
        let mut shard = self.shards[usize::from(id[0]) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shard.forget_expired(now);
        if shard.ids.contains(&id) {
            return false;
        }
        while shard.ids.len() >= self.per_shard {
            shard.forget_soonest();
        }
        shard.ids.insert(id);
        shard
            .by_expiry
            .entry(forget_after.div_ceil(BUCKET_SECS) * BUCKET_SECS)
            .or_default()
            .push(id);
        true
    }

    /// Whether `id` was used (and is still remembered) at `now`, without marking it.
    pub(super) fn was_used(&self, id: TokenId, now: u64) -> bool {
        let mut shard = self.shards[usize::from(id[0]) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        shard.forget_expired(now);
        shard.ids.contains(&id)
    }

    /// How many ids are remembered at `now` (forgetting those expired in every shard: a shard
    /// nobody used for a while still holds them).
    pub(super) fn count(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut shard = s.lock().unwrap_or_else(|p| p.into_inner());
                shard.forget_expired(now);
                shard.ids.len()
            })
            .sum()
    }
}

impl Shard {
    /// Drops every bucket that ended before `now`.
    fn forget_expired(&mut self, now: u64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() >= now {
                return;
            }
            for id in entry.remove() {
                self.ids.remove(&id);
            }
        }
    }

    /// Drops one id of the bucket that expires soonest.
    fn forget_soonest(&mut self) {
        let Some(mut entry) = self.by_expiry.first_entry() else {
            // Unreachable while `ids` and `by_expiry` agree; never loop on a disagreement.
            self.ids.clear();
            return;
        };
        match entry.get_mut().pop() {
            Some(id) => {
                self.ids.remove(&id);
                if entry.get().is_empty() {
                    entry.remove();
                }
            }
            None => {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> TokenId {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_le_bytes());
        id
    }

    #[test]
    fn a_second_use_is_a_replay_until_the_token_expires() {
        let used = UsedIds::new(100);
        assert!(used.first_use(id(1), 1_000, 500));
        assert!(!used.first_use(id(1), 1_000, 999));
        assert!(used.first_use(id(2), 1_000, 999));
        assert_eq!(used.count(999), 2);
        // Past the expiry (rounded up to the bucket end) the ids are gone.
        assert!(used.first_use(id(3), 2_000, 1_011));
        assert_eq!(used.count(1_011), 1);
        assert!(used.first_use(id(1), 2_000, 1_011), "no longer remembered");
    }

    #[test]
    fn at_capacity_the_soonest_to_expire_are_forgotten_first() {
        // One shard's worth: ids with the same first byte land in the same shard.
        let used = UsedIds::new(SHARDS * 3);
        let same_shard = |n: u8| {
            let mut id = [0u8; 16];
            id[1] = n;
            id
        };
        assert!(used.first_use(same_shard(1), 5_000, 0));
        assert!(used.first_use(same_shard(2), 1_000, 0));
        assert!(used.first_use(same_shard(3), 3_000, 0));
        assert!(used.first_use(same_shard(4), 4_000, 0));
        assert_eq!(used.count(0), 3);
        // The one expiring at 1,000 made room; the others are still refused.
        assert!(used.first_use(same_shard(2), 1_000, 0), "forgotten");
        assert!(!used.first_use(same_shard(1), 5_000, 0));
        assert!(!used.first_use(same_shard(4), 4_000, 0));
    }

    #[test]
    fn memory_stays_within_the_bound_under_a_flood() {
        let used = UsedIds::new(10_000);
        for n in 0..100_000 {
            assert!(used.first_use(id(n), 10_000 + u64::from(n), 1));
        }
        assert!(used.count(1) <= 10_000 + SHARDS, "{}", used.count(1));
        // The newest are still remembered.
        assert!(!used.first_use(id(99_999), 109_999, 1));
    }
}
