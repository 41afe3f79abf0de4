//! Step-up MFA: the pure pieces the proxy uses when policy decides a login must be confirmed.
//!
//! Owns: checking a built-in TOTP code ([`totp`]), recovery codes ([`recovery`]), device
//! cookies ([`device`]), the signed JWTs exchanged with an operator's
//! external MFA provider ([`external`]), step-up through the operator's OpenID Connect
//! provider ([`oidc`]), the challenge page, its CSRF token and challenge ids
//! ([`page`]), and the `mfa` section of the config ([`MfaConfig`]). The held-login store, the
//! `/__gk/challenge/…` endpoints and the replay of a confirmed login live in the proxy.
//!
//! No I/O on the request path and no clock of its own: every check takes `now`, so expiry and
//! reuse are tested without waiting. The one exception is [`oidc::provider`], which talks to
//! the OpenID Connect provider (bounded in time and size; the services run it on the
//! background runtime). Never logs codes, TOTP secrets, assertions or keys.

pub mod device;
pub mod enrol;
pub mod external;
pub mod offer;
pub mod oidc;
pub mod page;
pub mod passkey;
pub mod recovery;
pub mod sealed;
pub mod totp;

pub use device::DeviceCookies;
pub use external::{
    Assertion, AssertionAlgorithm, AssertionConfig, AssertionError, AssertionVerifier,
    ExternalMfaConfig, KeyError,
};
pub use page::{
    challenge_page, check_csrf, csrf_token, message_page, new_challenge_id, resume_page,
    ChallengePage, ExternalLink, CHALLENGE_CSP, CHALLENGE_CSP_INLINE, CODE_FIELD,
};
pub use totp::{TotpError, TotpVerifier};

pub use crate::config::{MfaConfig, TotpConfig};
