//! State that several gaitkeeper instances must agree on, as the stages see it: "has this id
//! been used before?" (page tokens, TOTP steps, provider assertions, the alert throttle), the
//! failed-login counters and bans of regulation, and the held logins of open challenges
//! (sealed by `decision::held` before they get here). One process keeps it in memory (the
//! stages' own structures, the default); instances behind one load balancer keep it in their
//! PostgreSQL store (`server.shared_state: store`, implemented in `store::shared`). This trait
//! is the seam between the two, so the stages never know which they have.

use std::time::Duration;

use async_trait::async_trait;

/// The shared state could not be read or written (the database is unreachable); the login's
/// decision follows `policy.on_state_error`.
#[derive(Debug, thiserror::Error)]
#[error("the shared state is unavailable: {0}")]
pub struct StateError(pub String);

/// What instances share.
#[async_trait]
pub trait SharedState: Send + Sync {
    /// Marks `id` of `kind` (e.g. `page_token`) used until `until` (Unix seconds). True when
    /// no instance had used it before (or its earlier use has expired): of two concurrent
    /// calls for one id, on any instances, exactly one gets true.
    async fn first_use(
        &self,
        kind: &'static str,
        id: &[u8],
        until: u64,
    ) -> Result<bool, StateError>;

    /// Counts one failure in each slot of `slots` (a slot's count lives `window` from its
    /// first failure); a slot whose count reaches its limit is banned for `ban` and its count
    /// starts over. True when a slot was newly banned.
    async fn count_failures(
        &self,
        slots: &[(String, u32)],
        window: Duration,
        ban: Duration,
    ) -> Result<bool, StateError>;

    /// Which of `slots` are banned now.
    async fn banned(&self, slots: &[String]) -> Result<Vec<String>, StateError>;

    /// [`SharedState::first_use`] and [`SharedState::banned`] in one round trip: a login's
    /// page token and the bans of its user and client, read together on the login path.
    async fn first_use_and_banned(
        &self,
        kind: &'static str,
        id: &[u8],
        until: u64,
        slots: &[String],
    ) -> Result<(bool, Vec<String>), StateError>;

    /// The live failure counts of `slots`, in order (0 for a slot with none in its window).
    async fn failure_counts(&self, slots: &[String]) -> Result<Vec<u32>, StateError>;

    /// Forgets the failure counts of `slots`.
    async fn clear_failures(&self, slots: &[String]) -> Result<(), StateError>;

    /// Keeps a held login until `row.expires_ms`; returns how many held logins, and how many
    /// bytes of them, every instance held just before (expired ones not counted).
    async fn hold(&self, row: &HeldRow) -> Result<HeldTotals, StateError>;

    /// The live held login under `key` (released or not, as asked), left in place.
    async fn held(&self, key: &[u8; 32], released: bool) -> Result<Option<HeldRow>, StateError>;

    /// Removes and returns the live held login under `key` (released or not, as asked): of
    /// concurrent calls on any instances, at most one gets it.
    async fn take_held(
        &self,
        key: &[u8; 32],
        released: bool,
    ) -> Result<Option<HeldRow>, StateError>;

    /// Counts one failed attempt on a live, unreleased held login; its attempts so far, or
    /// `None` when it is gone.
    async fn count_held_attempt(&self, key: &[u8; 32]) -> Result<Option<u32>, StateError>;

    /// Records how the challenge of a live held login is shown (`inline`, 0 for a page of its
    /// own).
    async fn set_held_inline(&self, key: &[u8; 32], inline: u8) -> Result<(), StateError>;

    /// Moves a live, unreleased held login from `key` to `released` (its new key, sealed for
    /// it, marked released). False when it was gone (another instance took it first).
    async fn release_held(&self, key: &[u8; 32], released: &HeldRow) -> Result<bool, StateError>;

    /// Removes the oldest live held logins until at most `max_count` of them, of at most
    /// `max_bytes`, remain; returns the removed ones (to be settled as evicted).
    async fn evict_held(&self, max_count: u64, max_bytes: u64) -> Result<Vec<HeldRow>, StateError>;

    /// Removes at most `limit` expired held logins and returns them (to be settled as
    /// expired); each goes to exactly one of the instances sweeping.
    async fn expired_held(&self, limit: u32) -> Result<Vec<HeldRow>, StateError>;

    /// Live held logins of every instance, and their bytes.
    async fn held_totals(&self) -> Result<HeldTotals, StateError>;
}

/// The bans read for some slots (with a page token's first use), for a later stage to use
/// instead of reading them again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BansRead {
    pub slots: Vec<String>,
    pub banned: Vec<String>,
}

/// A held login as the shared state keeps it: `sealed` is opaque here (authenticated
/// encryption under a key the database never sees, bound to `key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRow {
    /// SHA-256 of the challenge id (or, once released, of the resume proof): the id itself,
    /// which lets a browser answer the challenge, is never stored.
    pub key: [u8; 32],
    pub sealed: Vec<u8>,
    /// What it counts against `mfa.max_held_bytes`.
    pub bytes: u64,
    pub attempts: u32,
    pub inline: u8,
    pub released: bool,
    /// Unix milliseconds.
    pub expires_ms: u64,
}

/// How many held logins there are, and their bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldTotals {
    pub count: u64,
    pub bytes: u64,
}

/// The regulation slot of a user (their store key in hex): the same name in memory and in the
/// shared tables, which `store::Store::forget` erases with the user.
pub fn user_slot(user: &str) -> String {
    format!("u:{user}")
}

/// The slots of a user's wrong TOTP codes: from everywhere, and from one client address.
/// `store::Store::forget` erases every slot under the user's prefix.
pub fn totp_slots(user: &str, address: &str) -> [String; 2] {
    [format!("totp:{user}"), format!("totp:{user}:{address}")]
}

/// The regulation slot of a client address (scoped by app, see `AppConfig::user_scope`).
pub fn address_slot(ip: &str) -> String {
    format!("ip:{ip}")
}
