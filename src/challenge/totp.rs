//! The built-in TOTP check: is this the code the user's authenticator shows right now?
//!
//! Uses exactly the parameters `gaitkeeper users enroll-totp` writes into the otpauth URI
//! (totp-rs defaults): HMAC-SHA1, 6 digits, 30-second steps. A code is accepted for the current
//! step and one step either side (RFC 6238's recommended network delay, so a code typed just as
//! it rolls over still works); codes two steps away are refused. Each code works once: after a
//! code for step `s` is accepted, codes for steps `≤ s` are refused for that user, so a code
//! seen over a shoulder or in a log cannot be replayed within its window.
//!
//! Owns the memory of the last accepted step and of recent wrong codes (bounded), which caps
//! guesses across challenges without letting a stranger lock the user out:
//! - wrong codes count against the client (its address) that sent them: at most
//!   [`MAX_FAILURES`] per [`FAILURE_WINDOW_SECS`] from one address;
//! - wrong codes also count for the user as a whole; once a user has had [`USER_SLOWDOWN`]
//!   in the window, every other address gets only [`SLOW_CLIENT_FAILURES`] — a user under
//!   attack slows guessing down, but a new address's first codes (the real user in a new
//!   browser) are still checked;
//! - a browser with the user's device cookie (`challenge::device`) is exempt from both.
//!
//! Limiting attempts per challenge is the caller's (`mfa.totp.max_attempts`). Never logs codes
//! or secrets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::runtime::unix_secs;

use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::store::UserKey;

/// Digits in a code (as enrolled by `users enroll-totp`).
pub(crate) const DIGITS: usize = 6;
/// Seconds per TOTP step (as enrolled by `users enroll-totp`).
pub(crate) const STEP_SECS: u64 = 30;
/// Steps accepted either side of the current one.
pub(crate) const SKEW_STEPS: u64 = 1;

/// Longest input looked at; anything longer is malformed without further work.
const MAX_INPUT_BYTES: usize = 32;
/// Users remembered at once by default (an entry matters for at most 15 minutes).
pub(crate) const DEFAULT_REMEMBERED_USERS: usize = 100_000;
/// Wrong codes checked per user and client address per [`FAILURE_WINDOW_SECS`], over all
/// their challenges. Ten guesses in fifteen minutes give one address about one chance in
/// 33,000 per window.
pub(crate) const MAX_FAILURES: u32 = 10;
/// Wrong codes for a user (from all addresses) in the window after which each address gets
/// only [`SLOW_CLIENT_FAILURES`].
pub(crate) const USER_SLOWDOWN: u32 = 10;
pub(crate) const SLOW_CLIENT_FAILURES: u32 = 3;
/// Client addresses remembered per user (the oldest forgotten first).
const MAX_CLIENTS: usize = 16;
/// The window wrong codes are counted in.
pub(crate) const FAILURE_WINDOW_SECS: u64 = 15 * 60;

/// Why a code was not accepted. The `reason` codes are metric labels and audit codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TotpError {
    #[error("the code is not a {DIGITS}-digit number")]
    Malformed,
    #[error("the code does not match the user's authenticator")]
    WrongCode,
    #[error("the code was already used")]
    Reused,
    #[error("the user's stored TOTP secret is unusable (shorter than 128 bits); enroll them again with `gaitkeeper users enroll-totp`")]
    UnusableSecret,
    #[error("too many wrong codes for this user from this address recently; try again later")]
    RateLimited,
    #[error(
        "too many users answering TOTP challenges at once to remember them all; try again shortly"
    )]
    Busy,
    #[error("whether the code was used on another instance cannot be checked (the shared state is unavailable)")]
    Unavailable,
}

impl TotpError {
    pub fn reason(&self) -> &'static str {
        match self {
            TotpError::Malformed => "malformed",
            TotpError::WrongCode => "wrong_code",
            TotpError::Reused => "reused",
            TotpError::UnusableSecret => "unusable_secret",
            TotpError::RateLimited => "rate_limited",
            TotpError::Busy => "busy",
            TotpError::Unavailable => "unavailable",
        }
    }
}

/// Checks TOTP codes and remembers, per user, the last step whose code was accepted and the
/// recent wrong codes.
pub struct TotpVerifier {
    users: Mutex<HashMap<UserKey, UserState>>,
    capacity: usize,
}

/// Who sends a code: its address, and whether the browser carries the user's device cookie.
#[derive(Clone, Copy, Debug)]
pub struct Sender<'a> {
    pub address: &'a str,
    pub trusted_device: bool,
}

/// Wrong codes in a window.
#[derive(Clone, Copy, Default)]
struct Count {
    failures: u32,
    window_start: u64,
}

impl Count {
    fn current(&mut self, now_secs: u64) -> u32 {
        if now_secs >= self.window_start.saturating_add(FAILURE_WINDOW_SECS) {
            self.failures = 0;
            self.window_start = now_secs;
        }
        self.failures
    }

    fn live(&self, now_secs: u64) -> bool {
        self.failures > 0 && now_secs < self.window_start.saturating_add(FAILURE_WINDOW_SECS)
    }
}

/// What is remembered of one user.
#[derive(Clone, Default)]
struct UserState {
    /// The step of the last accepted code: codes for it or earlier steps are refused.
    last_step: Option<u64>,
    /// Wrong codes for the user, from every untrusted address.
    user: Count,
    /// Wrong codes per address (the most recent [`MAX_CLIENTS`] addresses).
    clients: Vec<(String, Count)>,
}

impl UserState {
    /// Whether forgetting this entry could change an answer: a code within the window may
    /// still be refused as reused, or wrong codes are still being counted.
    fn is_live(&self, current_step: u64, now_secs: u64) -> bool {
        let reuse_live = self
            .last_step
            .is_some_and(|s| s.saturating_add(2 * SKEW_STEPS) >= current_step);
        let failures_live =
            self.user.live(now_secs) || self.clients.iter().any(|(_, c)| c.live(now_secs));
        reuse_live || failures_live
    }
}

impl Default for TotpVerifier {
    fn default() -> Self {
        TotpVerifier::new(DEFAULT_REMEMBERED_USERS)
    }
}

impl TotpVerifier {
    /// A verifier remembering at most `capacity` users (at least 1). Entries that can no
    /// longer change an answer are dropped when room is needed; if every entry is still live
    /// the check fails closed with [`TotpError::Busy`] rather than forget one.
    pub fn new(capacity: usize) -> Self {
        TotpVerifier {
            users: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Accepts `code` if it is the user's code for the step of `now` or one step either side,
    /// and newer than the last code accepted for this user. Spaces and dashes in the code are
    /// ignored ("123 456"). The comparison takes the same time whichever candidate matches.
    ///
    /// Across all of a user's challenges, at most [`MAX_FAILURES`] wrong codes are checked per
    /// [`FAILURE_WINDOW_SECS`] from one address (fewer once the user has had many from
    /// everywhere); beyond that the address's codes are refused as `rate_limited` without
    /// being looked at, so opening challenge after challenge does not buy more guesses. A
    /// sender with the user's device cookie is not limited here.
    pub fn verify(
        &self,
        user: &UserKey,
        secret: &[u8],
        code: &str,
        now: SystemTime,
        sender: Sender<'_>,
    ) -> Result<(), TotpError> {
        self.verify_step(user, secret, code, now, sender)
            .map(|_| ())
    }

    /// [`TotpVerifier::verify`], saying which step's code it was (several instances also
    /// check that step against their shared state).
    pub(crate) fn verify_step(
        &self,
        user: &UserKey,
        secret: &[u8],
        code: &str,
        now: SystemTime,
        sender: Sender<'_>,
    ) -> Result<u64, TotpError> {
        let code = normalise(code)?;
        let totp = totp_rs::Builder::new()
            .with_secret(secret.to_vec())
            .build()
            .map_err(|_| TotpError::UnusableSecret)?;
        let now_secs = unix_secs(now);
        let current = now_secs / STEP_SECS;
        // One lock for check and update, so concurrent guesses cannot overrun the limit and
        // two concurrent uses of one code cannot both succeed. The work inside is three HMACs.
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !users.contains_key(user) && users.len() >= self.capacity {
            users.retain(|_, state| state.is_live(current, now_secs));
            if users.len() >= self.capacity {
                return Err(TotpError::Busy);
            }
        }
        let state = users.entry(*user).or_default();
        let user_failures = state.user.current(now_secs);
        let client = match state.clients.iter().position(|(a, _)| a == sender.address) {
            Some(i) => i,
            None => {
                if state.clients.len() >= MAX_CLIENTS {
                    state.clients.remove(0);
                }
                state
                    .clients
                    .push((sender.address.to_string(), Count::default()));
                state.clients.len() - 1
            }
        };
        let client_failures = state.clients[client].1.current(now_secs);
        if !sender.trusted_device {
            within_budget(user_failures, client_failures)?;
        }
        // Compare against every candidate step, without an early exit, and keep the newest
        // that matches: which one matched must not show in the timing.
        let mut matched = 0u8;
        let mut matched_step = 0u64;
        for step in current.saturating_sub(SKEW_STEPS)..=current.saturating_add(SKEW_STEPS) {
            let expected = totp.generate(step.saturating_mul(STEP_SECS)).to_string();
            let hit = expected.as_bytes().ct_eq(&code);
            matched |= hit.unwrap_u8();
            matched_step.conditional_assign(&step, hit);
        }
        if matched == 0 {
            if !sender.trusted_device {
                state.user.failures += 1;
                state.clients[client].1.failures += 1;
            }
            return Err(TotpError::WrongCode);
        }
        if state.last_step.is_some_and(|seen| matched_step <= seen) {
            return Err(TotpError::Reused);
        }
        state.last_step = Some(matched_step);
        // This address proved itself; the user-wide count stays (an attack may go on).
        state.clients[client].1.failures = 0;
        Ok(matched_step)
    }
}

/// Whether an address with `client_failures` wrong codes for a user who has had
/// `user_failures` from everywhere (both in the window) may have another code checked.
pub(crate) fn within_budget(user_failures: u32, client_failures: u32) -> Result<(), TotpError> {
    let budget = if user_failures >= USER_SLOWDOWN {
        SLOW_CLIENT_FAILURES
    } else {
        MAX_FAILURES
    };
    if client_failures >= budget {
        return Err(TotpError::RateLimited);
    }
    Ok(())
}

/// Until when (Unix seconds) a code of `step` could still be accepted: past it, its use need
/// not be remembered.
pub(crate) fn accepted_until(step: u64) -> u64 {
    step.saturating_add(SKEW_STEPS + 1)
        .saturating_mul(STEP_SECS)
}

/// The code's digits, or `Malformed`. Never panics, whatever the input.
fn normalise(code: &str) -> Result<Vec<u8>, TotpError> {
    if code.len() > MAX_INPUT_BYTES {
        return Err(TotpError::Malformed);
    }
    let digits: Vec<u8> = code
        .bytes()
        .filter(|b| !matches!(b, b' ' | b'-' | b'\t'))
        .collect();
    if digits.len() != DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return Err(TotpError::Malformed);
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;
    use std::time::UNIX_EPOCH;

    const SECRET: &[u8] = b"12345678901234567890"; // RFC 6238's SHA-1 test secret
    /// A sender without a device cookie, from one address.
    const ANON: Sender<'static> = Sender {
        address: "192.0.2.1",
        trusted_device: false,
    };

    fn user(n: u8) -> UserKey {
        UserKey([n; 32])
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn code_at(secs: u64) -> String {
        totp_rs::Builder::new()
            .with_secret(SECRET.to_vec())
            .build()
            .unwrap()
            .generate(secs)
            .to_string()
    }

    #[test]
    fn rfc6238_vectors_are_accepted() {
        // RFC 6238 Appendix B, SHA-1, last 6 of the 8 digits.
        for (secs, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            let v = TotpVerifier::default();
            assert_eq!(
                v.verify(&user(1), SECRET, code, at(secs), ANON),
                Ok(()),
                "{secs}"
            );
        }
    }

    #[test]
    fn the_current_code_passes_and_spaces_are_ignored() {
        let now = 1_800_000_015;
        let v = TotpVerifier::default();
        assert_eq!(
            v.verify(&user(1), SECRET, &code_at(now), at(now), ANON),
            Ok(())
        );
        let spaced = {
            let c = code_at(now + 30);
            format!("{} {}", &c[..3], &c[3..])
        };
        assert_eq!(v.verify(&user(1), SECRET, &spaced, at(now), ANON), Ok(()));
    }

    #[test]
    fn one_step_either_side_passes_two_steps_fail() {
        let now: u64 = 1_800_000_015;
        for offset in [-30i64, 30] {
            let v = TotpVerifier::default();
            let c = code_at(now.saturating_add_signed(offset));
            assert_eq!(
                v.verify(&user(1), SECRET, &c, at(now), ANON),
                Ok(()),
                "{offset}"
            );
        }
        for offset in [-60i64, 60, -90, 90] {
            let v = TotpVerifier::default();
            let c = code_at(now.saturating_add_signed(offset));
            assert_eq!(
                v.verify(&user(1), SECRET, &c, at(now), ANON),
                Err(TotpError::WrongCode),
                "{offset}"
            );
        }
    }

    #[test]
    fn a_code_cannot_be_reused_within_its_window() {
        let now = 1_800_000_015;
        let v = TotpVerifier::default();
        let c = code_at(now);
        assert_eq!(v.verify(&user(1), SECRET, &c, at(now), ANON), Ok(()));
        assert_eq!(
            v.verify(&user(1), SECRET, &c, at(now), ANON),
            Err(TotpError::Reused)
        );
        // Still refused 30 s later, while the code is inside the ±1 window.
        assert_eq!(
            v.verify(&user(1), SECRET, &c, at(now + 30), ANON),
            Err(TotpError::Reused)
        );
        // An older code (previous step) is refused too once a newer one was accepted.
        assert_eq!(
            v.verify(&user(1), SECRET, &code_at(now - 30), at(now), ANON),
            Err(TotpError::Reused)
        );
        // Another user with the same secret is not affected.
        assert_eq!(v.verify(&user(2), SECRET, &c, at(now), ANON), Ok(()));
        // The next step's code still works for the first user.
        assert_eq!(
            v.verify(&user(1), SECRET, &code_at(now + 30), at(now + 30), ANON),
            Ok(())
        );
        assert_eq!(TotpError::Reused.reason(), "reused");
    }

    #[test]
    fn wrong_codes_are_rate_limited_per_user_across_challenges() {
        let now = 1_800_000_015;
        let v = TotpVerifier::default();
        let right = code_at(now);
        let wrong = if right == "000000" {
            "111111"
        } else {
            "000000"
        };
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                v.verify(&user(1), SECRET, wrong, at(now), ANON),
                Err(TotpError::WrongCode)
            );
        }
        // Even the right code is not looked at any more.
        assert_eq!(
            v.verify(&user(1), SECRET, &right, at(now), ANON),
            Err(TotpError::RateLimited)
        );
        assert_eq!(TotpError::RateLimited.reason(), "rate_limited");
        // Other users are not affected; malformed input does not count as a guess.
        assert_eq!(
            v.verify(&user(2), SECRET, "12ab", at(now), ANON),
            Err(TotpError::Malformed)
        );
        assert_eq!(v.verify(&user(2), SECRET, &right, at(now), ANON), Ok(()));
        // After the window the user may try again.
        let later = now + FAILURE_WINDOW_SECS;
        assert_eq!(
            v.verify(&user(1), SECRET, &code_at(later), at(later), ANON),
            Ok(())
        );
    }

    #[test]
    fn a_success_clears_the_wrong_code_count() {
        let now = 1_800_000_015;
        let v = TotpVerifier::default();
        let wrong = if code_at(now) == "000000" {
            "111111"
        } else {
            "000000"
        };
        for _ in 0..MAX_FAILURES - 1 {
            let _ = v.verify(&user(1), SECRET, wrong, at(now), ANON);
        }
        assert_eq!(
            v.verify(&user(1), SECRET, &code_at(now), at(now), ANON),
            Ok(())
        );
        assert_eq!(
            v.verify(&user(1), SECRET, wrong, at(now + 30), ANON),
            Err(TotpError::WrongCode)
        );
    }

    #[test]
    fn malformed_codes_are_refused_with_their_reason() {
        let v = TotpVerifier::default();
        for bad in [
            "",
            "12345",
            "1234567",
            "12a456",
            "１２３４５６",
            "123456\0",
            &"9".repeat(10_000),
        ] {
            let err = v.verify(&user(1), SECRET, bad, at(1_800_000_000), ANON);
            assert_eq!(err, Err(TotpError::Malformed), "{bad:?}");
        }
        assert_eq!(TotpError::Malformed.reason(), "malformed");
        assert_eq!(TotpError::WrongCode.reason(), "wrong_code");
    }

    #[test]
    fn a_short_secret_is_reported_not_panicked_on() {
        let v = TotpVerifier::default();
        assert_eq!(
            v.verify(&user(1), b"short", "123456", at(1_800_000_000), ANON),
            Err(TotpError::UnusableSecret)
        );
    }

    #[test]
    fn memory_is_bounded_and_fails_closed_when_full_of_live_entries() {
        let now = 1_800_000_015;
        let v = TotpVerifier::new(2);
        let c = code_at(now);
        assert_eq!(v.verify(&user(1), SECRET, &c, at(now), ANON), Ok(()));
        assert_eq!(v.verify(&user(2), SECRET, &c, at(now), ANON), Ok(()));
        assert_eq!(
            v.verify(&user(3), SECRET, &c, at(now), ANON),
            Err(TotpError::Busy)
        );
        // Two minutes later the old entries are out of the window and make room.
        let later = now + 120;
        assert_eq!(
            v.verify(&user(3), SECRET, &code_at(later), at(later), ANON),
            Ok(())
        );
        assert!(v.users.lock().unwrap().len() <= 2);
    }

    proptest! {
        #[test]
        fn any_input_is_refused_without_panicking(code in ".{0,64}", secs in any::<u64>()) {
            let v = TotpVerifier::default();
            let now = UNIX_EPOCH.checked_add(Duration::from_secs(secs)).unwrap_or(UNIX_EPOCH);
            let result = v.verify(&user(1), SECRET, &code, now, ANON);
            // A random string is a valid current code one time in a million at best.
            if result.is_ok() {
                prop_assert!(code.bytes().filter(u8::is_ascii_digit).count() == DIGITS);
            }
        }

        #[test]
        fn any_secret_is_handled_without_panicking(secret in proptest::collection::vec(any::<u8>(), 0..100), code in "[0-9]{6}") {
            let v = TotpVerifier::default();
            let _ = v.verify(&user(1), &secret, &code, at(1_800_000_000), ANON);
        }
    }
}
