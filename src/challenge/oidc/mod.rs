//! Step-up through the operator's OpenID Connect provider (`mfa.oidc`): the user signs in
//! there again, and a fresh sign-in by the same person passes the challenge.
//!
//! The flow is the authorization code flow with PKCE (S256), `state` and `nonce`. Nothing of a
//! flow is stored: the PKCE verifier and the nonce are HMACs of the challenge id under a key
//! derived from `secrets.key`, and `state` is the challenge id sealed (XChaCha20-Poly1305)
//! under another — so any instance with the same config finishes a flow another started, and
//! a `state` that was not made here does not open. The held login itself (in memory or in the
//! shared state) stays the one thing that makes a flow single-use.
//!
//! This module owns those values and the checks of what the provider's ID token says against
//! the held login ([`check_sign_in`]); [`provider`] owns the talking to the provider
//! (discovery, the code exchange, the ID token's signature). Matching the claimed name to the
//! held login's user is the caller's (it keys names as the store does). Never logs codes,
//! tokens, the client secret, or the derived values.

pub mod provider;

use std::time::{Duration, SystemTime};

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::config::OidcConfig;
pub use provider::{OidcProvider, OidcSetupError};

/// Longest `state` looked at (a real one is 96 characters).
const MAX_STATE: usize = 256;
const STATE_NONCE: usize = 24;
/// What a sealed `state` is bound to, so no other sealed value of gaitkeeper's opens as one.
const STATE_AAD: &[u8] = b"gaitkeeper oidc state v1";

/// The keys a flow's values are derived under (from `secrets.key`, the same on every instance).
pub struct FlowKeys {
    mac: Hmac<Sha256>,
    seal: XChaCha20Poly1305,
}

impl FlowKeys {
    pub fn derive(secret: &[u8]) -> FlowKeys {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"gaitkeeper oidc"), secret);
        let (mut mac, mut seal) = ([0u8; 32], [0u8; 32]);
        hkdf.expand(b"gaitkeeper/oidc-derive/v1", &mut mac)
            .expect("32 bytes is a valid HKDF length");
        hkdf.expand(b"gaitkeeper/oidc-state/v1", &mut seal)
            .expect("32 bytes is a valid HKDF length");
        FlowKeys {
            mac: <Hmac<Sha256> as Mac>::new_from_slice(&mac).expect("HMAC takes any key size"),
            seal: XChaCha20Poly1305::new(&seal.into()),
        }
    }

    /// base64url HMAC of `challenge_id` for `purpose`: 43 characters of the PKCE alphabet.
    fn derived(&self, purpose: &[u8], challenge_id: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(purpose);
        mac.update(&(challenge_id.len() as u64).to_be_bytes());
        mac.update(challenge_id.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The PKCE code verifier of the flow for `challenge_id` (256 bits, RFC 7636 §4.1).
    pub(crate) fn pkce_verifier(&self, challenge_id: &str) -> String {
        self.derived(b"pkce\0", challenge_id)
    }

    /// The nonce the ID token of the flow for `challenge_id` must carry.
    pub(crate) fn nonce(&self, challenge_id: &str) -> String {
        self.derived(b"nonce\0", challenge_id)
    }

    /// The `state` of a flow for `challenge_id`: the id sealed, base64url.
    pub fn state(&self, challenge_id: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .seal
            .encrypt(
                &nonce,
                Payload {
                    msg: challenge_id.as_bytes(),
                    aad: STATE_AAD,
                },
            )
            .expect("encrypting a short buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// The challenge id a `state` names, if this process's keys made it (the tag check is
    /// constant time). `None` for anything else, of any size.
    pub fn challenge_of(&self, state: &str) -> Option<String> {
        if state.len() > MAX_STATE {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(state)
            .ok()?;
        if bytes.len() <= STATE_NONCE {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(STATE_NONCE);
        let id = self
            .seal
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: STATE_AAD,
                },
            )
            .ok()?;
        String::from_utf8(id).ok()
    }
}

/// What the provider's verified ID token says about the sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    /// The value of `username_claim` (not yet normalised); never logged.
    pub username: Option<String>,
    /// `email_verified`, read when `username_claim` is `email`.
    pub email_verified: Option<bool>,
    /// When the user authenticated at the provider (`auth_time`).
    pub auth_time: Option<SystemTime>,
    pub acr: Option<String>,
    pub amr: Vec<String>,
}

/// Why a step-up through the provider did not pass. The `reason` codes are audit and metric
/// labels; none carries a token, a code or a claim's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the state does not name a challenge of this gaitkeeper (forged, damaged or from another deployment)")]
    BadState,
    #[error("the provider answered with an error instead of a code: {0}")]
    ProviderRefused(String),
    #[error("the provider's answer has no code")]
    MissingCode,
    #[error("the answer names another issuer than mfa.oidc.issuer (RFC 9207)")]
    WrongIssuer,
    #[error("the provider cannot be reached or answered unusably: {0}")]
    Unavailable(String),
    #[error("the provider refused to exchange the code: {0}")]
    ExchangeRefused(String),
    #[error("the provider's token response has no ID token")]
    NoIdToken,
    #[error("the ID token does not verify: {0}")]
    BadIdToken(&'static str),
    #[error("the ID token has no auth_time; register gaitkeeper's client with require_auth_time, or check the provider honours max_age")]
    NoAuthTime,
    #[error("the user signed in at the provider before the login was held (an older session)")]
    StaleSignIn,
    #[error("the ID token's acr is not one of mfa.oidc.required_acr")]
    AcrNotAccepted,
    #[error("the ID token's amr lacks a method of mfa.oidc.required_amr")]
    AmrMissing,
    #[error("the ID token has no usable value for mfa.oidc.username_claim")]
    NoUsername,
    #[error("the ID token's email is not verified")]
    EmailUnverified,
    #[error("the provider signed in another user than the one whose login is held")]
    OtherUser,
}

impl OidcError {
    pub fn reason(&self) -> &'static str {
        match self {
            OidcError::BadState => "bad_state",
            OidcError::ProviderRefused(_) => "provider_refused",
            OidcError::MissingCode => "missing_code",
            OidcError::WrongIssuer => "wrong_issuer",
            OidcError::Unavailable(_) => "unavailable",
            OidcError::ExchangeRefused(_) => "exchange_refused",
            OidcError::NoIdToken => "no_id_token",
            OidcError::BadIdToken(_) => "bad_id_token",
            OidcError::NoAuthTime => "no_auth_time",
            OidcError::StaleSignIn => "stale_sign_in",
            OidcError::AcrNotAccepted => "acr_not_accepted",
            OidcError::AmrMissing => "amr_missing",
            OidcError::NoUsername => "no_username",
            OidcError::EmailUnverified => "email_unverified",
            OidcError::OtherUser => "other_user",
        }
    }

    /// Whether the refusal counts against the challenge like a wrong code: the browser
    /// presented an answer for this challenge that did not hold. Not when the provider cannot
    /// be reached, nor when the user cancelled at the provider (nothing was presented).
    pub fn counts_as_attempt(&self) -> bool {
        !matches!(
            self,
            OidcError::BadState | OidcError::Unavailable(_) | OidcError::ProviderRefused(_)
        )
    }
}

/// Checks what the ID token says about the sign-in against the held login (held at
/// `held_at`) and the config: a sign-in at or after the hold (`clock_skew` allowed: the
/// provider's clock stamps `auth_time`, ours `held_at`; `auth_time` has whole seconds), an
/// accepted `acr`, every required `amr`, a verified email when the name is an email. The
/// name's match to the held user is the caller's.
pub fn check_sign_in(
    sign_in: &SignIn,
    held_at: SystemTime,
    config: &OidcConfig,
) -> Result<(), OidcError> {
    let auth_time = sign_in.auth_time.ok_or(OidcError::NoAuthTime)?;
    // Whole seconds on both sides: a sign-in in the second the login was held is after it.
    let held_secs = crate::runtime::unix_secs(held_at);
    let earliest = held_secs.saturating_sub(config.clock_skew.0.as_secs());
    if crate::runtime::unix_secs(auth_time) < earliest {
        return Err(OidcError::StaleSignIn);
    }
    if !config.required_acr.is_empty()
        && !sign_in
            .acr
            .as_ref()
            .is_some_and(|acr| config.required_acr.contains(acr))
    {
        return Err(OidcError::AcrNotAccepted);
    }
    if !config
        .required_amr
        .iter()
        .all(|needed| sign_in.amr.contains(needed))
    {
        return Err(OidcError::AmrMissing);
    }
    if sign_in.username.as_deref().is_none_or(str::is_empty) {
        return Err(OidcError::NoUsername);
    }
    if config.username_claim == "email" && sign_in.email_verified != Some(true) {
        return Err(OidcError::EmailUnverified);
    }
    Ok(())
}

/// The `auth_time` a provider states, as a time (whole seconds since the epoch).
pub(crate) fn from_unix(secs: i64) -> Option<SystemTime> {
    let secs = u64::try_from(secs).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn config() -> OidcConfig {
        OidcConfig {
            display_name: "SSO".into(),
            issuer: crate::config::IssuerUrl("https://idp.example".into()),
            client_id: "gk".into(),
            client_secret: crate::config::Secret::for_tests(b"client-secret-0123456789abcdefghij"),
            scopes: None,
            acr_values: vec![],
            max_age: HumanDuration::secs(0),
            username_claim: "preferred_username".into(),
            required_acr: vec![],
            required_amr: vec![],
            clock_skew: HumanDuration::secs(5),
            timeout: HumanDuration::secs(10),
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn sign_in(auth_time: u64) -> SignIn {
        SignIn {
            username: Some("bob".into()),
            email_verified: None,
            auth_time: Some(at(auth_time)),
            acr: Some("urn:pwd".into()),
            amr: vec!["pwd".into()],
        }
    }

    #[test]
    fn state_round_trips_and_refuses_anything_else() {
        let keys = FlowKeys::derive(b"a secret key of at least 32 bytes!!");
        let id = "AbCdEfGhIjKlMnOpQrStUvWxYz012345";
        let state = keys.state(id);
        assert_eq!(keys.challenge_of(&state).as_deref(), Some(id));
        assert_ne!(keys.state(id), state, "a fresh seal each time");
        let other = FlowKeys::derive(b"another secret key of 32 bytes!!!!");
        assert_eq!(other.challenge_of(&state), None);
        let mut bytes = state.into_bytes();
        bytes[40] = if bytes[40] == b'A' { b'B' } else { b'A' };
        assert_eq!(keys.challenge_of(&String::from_utf8(bytes).unwrap()), None);
        for junk in ["", "x", "!!!!", &"A".repeat(10_000), &"A".repeat(200)] {
            assert_eq!(keys.challenge_of(junk), None, "{junk:.20}");
        }
    }

    #[test]
    fn verifier_and_nonce_are_per_challenge_and_pkce_shaped() {
        let keys = FlowKeys::derive(b"a secret key of at least 32 bytes!!");
        let v = keys.pkce_verifier("one");
        assert_eq!(v.len(), 43);
        assert!(v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(
            v,
            keys.pkce_verifier("one"),
            "any instance derives the same"
        );
        assert_ne!(v, keys.pkce_verifier("two"));
        assert_ne!(v, keys.nonce("one"));
    }

    #[test]
    fn a_sign_in_must_follow_the_hold_within_the_skew() {
        let c = config();
        assert_eq!(check_sign_in(&sign_in(1000), at(1000), &c), Ok(()));
        assert_eq!(check_sign_in(&sign_in(995), at(1000), &c), Ok(()));
        assert_eq!(
            check_sign_in(&sign_in(994), at(1000), &c),
            Err(OidcError::StaleSignIn)
        );
        let mut s = sign_in(1000);
        s.auth_time = None;
        assert_eq!(check_sign_in(&s, at(1000), &c), Err(OidcError::NoAuthTime));
    }

    #[test]
    fn acr_amr_and_email_rules() {
        let mut c = config();
        c.required_acr = vec!["urn:mfa".into()];
        assert_eq!(
            check_sign_in(&sign_in(1000), at(1000), &c),
            Err(OidcError::AcrNotAccepted)
        );
        let mut s = sign_in(1000);
        s.acr = Some("urn:mfa".into());
        assert_eq!(check_sign_in(&s, at(1000), &c), Ok(()));
        c.required_amr = vec!["pwd".into(), "otp".into()];
        assert_eq!(check_sign_in(&s, at(1000), &c), Err(OidcError::AmrMissing));
        s.amr.push("otp".into());
        assert_eq!(check_sign_in(&s, at(1000), &c), Ok(()));
        c.username_claim = "email".into();
        assert_eq!(
            check_sign_in(&s, at(1000), &c),
            Err(OidcError::EmailUnverified)
        );
        s.email_verified = Some(true);
        assert_eq!(check_sign_in(&s, at(1000), &c), Ok(()));
        s.username = Some(String::new());
        assert_eq!(check_sign_in(&s, at(1000), &c), Err(OidcError::NoUsername));
    }
}
