//! Proxy glue for passkeys: the relying party of a request, the passkey part of the challenge
//! and enrolment pages (options, sealed ceremony state, script nonce), and reading the
//! browser's answer from a posted form. The ceremonies themselves are
//! `challenge::passkey`'s; which store rows they read and write is the services'.

use pingora::proxy::Session;

use super::RequestCtx;
use crate::challenge::passkey::{
    script, section, Ceremony, PasskeyError, RelyingParty, CREDENTIAL_FIELD, STATE_FIELD,
};
use crate::store::StoredPasskey;
use webauthn_rs::prelude::Passkey;

/// The passkey part of a page, and the CSP nonce its script runs under.
pub(super) struct PasskeyPart {
    pub html: String,
    pub nonce: String,
}

impl PasskeyPart {
    /// The page's Content-Security-Policy: `base` with the script's nonce allowed.
    pub(super) fn csp(&self, base: &str) -> String {
        format!("{base}; script-src 'nonce-{}'", self.nonce)
    }
}

/// The relying party of this request (`mfa.passkeys.rp_id`, else the host the browser used).
pub(super) fn relying_party(
    session: &Session,
    ctx: &RequestCtx,
) -> Result<RelyingParty, PasskeyError> {
    let authority = crate::wire::request_authority(session.req_header());
    RelyingParty::of_request(
        ctx.config.mfa.passkeys.rp_id.as_deref(),
        ctx.origin.scheme(),
        &authority,
    )
}

/// The stored passkeys registered for `rp`, as webauthn-rs reads them (unreadable rows are
/// skipped: a damaged row must not stop the others).
pub(super) fn usable(stored: &[StoredPasskey], rp: &RelyingParty) -> Vec<Passkey> {
    stored
        .iter()
        .filter(|p| p.rp_id == rp.id)
        .filter_map(|p| serde_json::from_str(&p.credential).ok())
        .collect()
}

/// The page part that runs `ceremony`: a button labelled `button`, the options and the sealed
/// state, posting to `action` with the CSRF field.
pub(super) fn part(
    ceremony: Ceremony,
    button: &str,
    action: &str,
    csrf: (&str, &str),
    options: &str,
    state: &str,
) -> PasskeyPart {
    let nonce = super::login::random_token();
    let mut html = section(button, action, csrf, options, state);
    html.push_str(&script(&nonce, ceremony));
    PasskeyPart { html, nonce }
}

/// The sealed state and the browser's answer of a posted passkey form, when it is one.
pub(super) fn answer(form: &[u8]) -> Option<(String, String)> {
    let state = super::challenge::field(form, STATE_FIELD)?;
    let credential = super::challenge::field(form, CREDENTIAL_FIELD)?;
    Some((state, credential))
}
