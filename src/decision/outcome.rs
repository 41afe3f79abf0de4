//! What became of a login and of its challenge, as values: the audit trail, the alerts and
//! learning all branch on these, so a misspelt or renamed outcome is a compile error, not a
//! silently missing alert. The strings exist only where a record is written.

/// How a login ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The app accepted it (after a passed challenge, if there was one): learnt from.
    Verified,
    /// The app refused it, or it never answered.
    Failed,
    /// Refused by policy before it reached the app.
    Blocked,
    /// Its login name could not be read, and `policy.on_unreadable_login` let it through.
    ForwardedUnscored,
    /// Held for a second factor; how it ends is recorded later.
    Challenged,
    /// Its telemetry or page token had been used before (a replay).
    Replayed,
    /// Too many wrong codes: the held login was dropped.
    ChallengeFailed,
    /// Nobody answered the challenge in time.
    ChallengeExpired,
    /// The held login was pushed out by newer ones (the held-login bounds).
    ChallengeEvicted,
}

impl LoginOutcome {
    /// The name in audit records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginOutcome::Verified => "verified",
            LoginOutcome::Failed => "failed",
            LoginOutcome::Blocked => "blocked",
            LoginOutcome::ForwardedUnscored => "forwarded_unscored",
            LoginOutcome::Challenged => "challenged",
            LoginOutcome::Replayed => "replayed",
            LoginOutcome::ChallengeFailed => "challenge_failed",
            LoginOutcome::ChallengeExpired => "challenge_expired",
            LoginOutcome::ChallengeEvicted => "challenge_evicted",
        }
    }
}

/// How a challenge ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChallengeResult {
    Passed,
    Failed,
    Expired,
    Evicted,
}

impl ChallengeResult {
    /// The name in audit records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeResult::Passed => "passed",
            ChallengeResult::Failed => "failed",
            ChallengeResult::Expired => "expired",
            ChallengeResult::Evicted => "evicted",
        }
    }
}

/// Why a held login left the store without being answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeldDropped {
    /// Its challenge was not answered within `mfa.challenge_ttl`.
    Expired,
    /// Newer held logins pushed it out (`mfa.max_held`, `mfa.max_held_bytes`).
    Evicted,
}

impl HeldDropped {
    /// What the held login's challenge and login came to.
    pub fn outcome(self) -> (LoginOutcome, ChallengeResult) {
        match self {
            HeldDropped::Expired => (LoginOutcome::ChallengeExpired, ChallengeResult::Expired),
            HeldDropped::Evicted => (LoginOutcome::ChallengeEvicted, ChallengeResult::Evicted),
        }
    }
}
