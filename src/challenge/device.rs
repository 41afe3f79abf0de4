//! Device cookies (OWASP's defence against account lock-out): a browser that has completed a
//! login or a challenge for a user gets a signed cookie naming that user, and from then on the
//! user-wide limits — regulation's ban after failed logins, the TOTP guess limits — do not
//! stop it. An attacker who does not know the password can still make those limits trip for a
//! user, but only for browsers that never logged in as them; the user's own browser still gets
//! in.
//!
//! The cookie holds up to [`MAX_USERS`] entries (a tag of the user, the day it was issued),
//! signed with HMAC-SHA256 under a key derived from the server secret; a user's tag is itself
//! a keyed hash, so the cookie does not say who the user is. Pure: `now` is passed in.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::store::UserKey;

/// The cookie's name over plain HTTP.
const COOKIE: &str = "__gk_device";
/// Its name over HTTPS: `__Host-` makes browsers keep it `Secure`, host-only and on `/`, so
/// no sibling subdomain or plain-HTTP page can plant or overwrite it.
const COOKIE_HTTPS: &str = "__Host-gk_device";

/// The cookie's name for a client on HTTPS or not.
pub(crate) fn cookie_name(https: bool) -> &'static str {
    if https {
        COOKIE_HTTPS
    } else {
        COOKIE
    }
}

/// The names a device cookie may arrive under, preferred first: over HTTPS a cookie set
/// before the site moved to HTTPS still counts (its value is signed either way).
pub(crate) fn cookie_names(https: bool) -> &'static [&'static str] {
    if https {
        &[COOKIE_HTTPS, COOKIE]
    } else {
        &[COOKIE]
    }
}
/// How long an entry vouches for its browser (each login renews it).
pub(crate) const LIFETIME_DAYS: u64 = 180;
/// Users one browser is remembered for (a shared family computer, test accounts).
pub(crate) const MAX_USERS: usize = 5;

const TAG: usize = 8;
const ENTRY: usize = TAG + 4;
const SIGNATURE: usize = 16;

/// Issues and checks device cookies.
pub struct DeviceCookies {
    key: Vec<u8>,
}

impl DeviceCookies {
    /// `key`: a key derived from the server secret for this purpose only.
    pub fn new(key: Vec<u8>) -> DeviceCookies {
        DeviceCookies { key }
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    fn tag(&self, user: &UserKey) -> [u8; TAG] {
        let mut mac = self.mac();
        mac.update(b"device-user:");
        mac.update(user.as_bytes());
        let full = mac.finalize().into_bytes();
        full[..TAG].try_into().expect("TAG <= 32")
    }

    /// The entries of a cookie value whose signature holds, else none.
    fn entries(&self, value: &str) -> Vec<([u8; TAG], u32)> {
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let Ok(bytes) = engine.decode(value.trim()) else {
            return Vec::new();
        };
        if bytes.len() < SIGNATURE || !(bytes.len() - SIGNATURE).is_multiple_of(ENTRY) {
            return Vec::new();
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE);
        let mut mac = self.mac();
        mac.update(b"device-cookie:");
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        if !bool::from(expected[..SIGNATURE].ct_eq(signature)) {
            return Vec::new();
        }
        body.chunks(ENTRY)
            .map(|e| {
                let tag: [u8; TAG] = e[..TAG].try_into().expect("ENTRY > TAG");
                let day = u32::from_le_bytes(e[TAG..].try_into().expect("4 bytes"));
                (tag, day)
            })
            .collect()
    }

    /// Whether the cookie value vouches for `user` on day `today` (days since the epoch).
    pub(crate) fn vouches(&self, value: &str, user: &UserKey, today: u64) -> bool {
        let tag = self.tag(user);
        self.entries(value).iter().any(|(t, day)| {
            bool::from(t.ct_eq(&tag)) && today.saturating_sub(u64::from(*day)) <= LIFETIME_DAYS
        })
    }

    /// The cookie value after `user` logged in on `today`: their entry renewed, expired and
    /// surplus (oldest) entries dropped, the rest of `existing` kept.
    pub fn issue(&self, existing: Option<&str>, user: &UserKey, today: u64) -> String {
        let tag = self.tag(user);
        let mut entries: Vec<([u8; TAG], u32)> = existing
            .map(|v| self.entries(v))
            .unwrap_or_default()
            .into_iter()
            .filter(|(t, day)| *t != tag && today.saturating_sub(u64::from(*day)) <= LIFETIME_DAYS)
            .collect();
        entries.push((tag, today as u32));
        let extra = entries.len().saturating_sub(MAX_USERS);
        entries.drain(..extra);
        let mut body = Vec::with_capacity(entries.len() * ENTRY + SIGNATURE);
        for (t, day) in &entries {
            body.extend_from_slice(t);
            body.extend_from_slice(&day.to_le_bytes());
        }
        let mut mac = self.mac();
        mac.update(b"device-cookie:");
        mac.update(&body);
        body.extend_from_slice(&mac.finalize().into_bytes()[..SIGNATURE]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(body)
    }
}

/// Days since the epoch of `now`.
pub fn day(now: std::time::SystemTime) -> u64 {
    now.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u8) -> UserKey {
        UserKey([n; 32])
    }

    #[test]
    fn a_cookie_vouches_for_its_users_only_and_not_for_ever() {
        let cookies = DeviceCookies::new(b"device key for tests".to_vec());
        let v = cookies.issue(None, &user(1), 20_000);
        assert!(cookies.vouches(&v, &user(1), 20_000));
        assert!(cookies.vouches(&v, &user(1), 20_000 + LIFETIME_DAYS));
        assert!(!cookies.vouches(&v, &user(1), 20_001 + LIFETIME_DAYS));
        assert!(!cookies.vouches(&v, &user(2), 20_000));
        let both = cookies.issue(Some(&v), &user(2), 20_010);
        assert!(cookies.vouches(&both, &user(1), 20_010));
        assert!(cookies.vouches(&both, &user(2), 20_010));
        // At most MAX_USERS, the oldest dropped first.
        let mut many = both;
        for n in 3..10 {
            many = cookies.issue(Some(&many), &user(n), 20_020);
        }
        assert!(!cookies.vouches(&many, &user(1), 20_020));
        assert!(cookies.vouches(&many, &user(9), 20_020));
    }

    #[test]
    fn forged_and_foreign_cookies_vouch_for_nobody() {
        let cookies = DeviceCookies::new(b"device key for tests".to_vec());
        let other = DeviceCookies::new(b"another server's key".to_vec());
        let v = other.issue(None, &user(1), 20_000);
        assert!(!cookies.vouches(&v, &user(1), 20_000));
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cookies.issue(None, &user(1), 20_000))
            .unwrap();
        bytes[0] ^= 1;
        let tampered = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        assert!(!cookies.vouches(&tampered, &user(1), 20_000));
        for junk in ["", "!!!", "AAAA", &"A".repeat(5000)] {
            assert!(!cookies.vouches(junk, &user(1), 20_000));
        }
    }
}
