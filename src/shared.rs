//! State that several gaitkeeper instances must agree on, as the stages see it: "has this id
//! been used before?" (page tokens, TOTP steps, provider assertions, the alert throttle), and
//! the failed-login counters and bans of regulation (as the seam grows: held logins). One process keeps it in memory (the stages' own structures, the
//! default); instances behind one load balancer keep it in their PostgreSQL store
//! (`server.shared_state: store`), implemented by `store::SharedTables`. This trait is the
//! seam between the two, so the stages never know which they have.

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
}

/// The regulation slot of a user (their store key in hex): the same name in memory and in the
/// shared tables, which `store::Store::forget` erases with the user.
pub fn user_slot(user: &str) -> String {
    format!("u:{user}")
}

/// The regulation slot of a client address (scoped by app, see `AppConfig::user_scope`).
pub fn address_slot(ip: &str) -> String {
    format!("ip:{ip}")
}
