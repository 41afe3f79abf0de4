//! Proxy glue for enrolling an authenticator from an operator's invitation:
//! `{prefix}enrol/{id}` shows the secret to scan (GET) and takes the first code (POST), which
//! proves the user scanned it; only then is the factor stored, the invitation used (once, on
//! any instance) and the recovery codes shown. The invitation is for one user of one app: the
//! page answers on that app's hosts only. Never logs the id, the secret or a code.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::challenge::{field, read_form, unreadable_form};
use super::{pages, GaitkeeperProxy, RequestCtx};
use crate::challenge::enrol::{enrol_page, enrolled_page, otpauth, secret_for, EnrolPage};
use crate::challenge::{check_csrf, csrf_token, TotpError, CHALLENGE_CSP};
use crate::wire;

const CSRF_FIELD: &str = "csrf";
/// Every enrolment page: it may show a secret.
const NOT_CACHED_OR_FRAMED: [(&str, &str); 2] = [
    ("content-security-policy", CHALLENGE_CSP),
    ("cache-control", "no-store"),
];
/// What binds the enrolment form's CSRF token (the invitation id is the other half).
const CSRF_PURPOSE: &str = "enrol";

impl GaitkeeperProxy {
    /// Answers `{prefix}enrol/{id}`; returns the status sent.
    pub(super) async fn enrol_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
    ) -> Result<u16> {
        let method = session.req_header().method.clone();
        if method != http::Method::GET
            && method != http::Method::HEAD
            && method != http::Method::POST
        {
            return self
                .enrol_message(
                    session,
                    ctx,
                    405,
                    "Not allowed",
                    "Open the link you were given.",
                )
                .await;
        }
        let form = if method == http::Method::POST {
            match read_form(session, ctx).await? {
                wire::Body::Whole(form) => Some(form),
                refused => {
                    return Ok(match unreadable_form(session, ctx, refused).await? {
                        super::Handled::Answered(status) => status,
                        super::Handled::Forward => 400,
                    })
                }
            }
        } else {
            None
        };
        let invitation = if plausible_id(id) {
            self.services.invitation(id).await
        } else {
            Ok(None)
        };
        let invitation = match invitation {
            Ok(Some(invitation)) if invitation.app == ctx.app().name => invitation,
            Ok(_) => return self.used_or_expired(session, ctx).await,
            Err(e) => {
                tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot read an invitation from the store");
                return self
                    .try_again(session, ctx, "This page cannot be shown right now.")
                    .await;
            }
        };
        let secret = secret_for(&self.services.enrol_key, id);
        let Some(form) = form else {
            return self
                .show_enrol_page(
                    session,
                    ctx,
                    id,
                    &invitation.user,
                    &secret,
                    EnrolError::None,
                )
                .await;
        };
        let csrf = field(&form, CSRF_FIELD).unwrap_or_default();
        if !check_csrf(&self.services.csrf_key(), id, CSRF_PURPOSE, &csrf) {
            return self
                .enrol_message(
                    session,
                    ctx,
                    403,
                    "This page has expired",
                    "Open the link you were given again.",
                )
                .await;
        }
        let address = ctx.client_ip.clone();
        if let Some((state, credential)) = super::passkeys::answer(&form) {
            let registered = self.services.passkeys.finish_registration(
                &state,
                id,
                &credential,
                crate::runtime::unix_secs(std::time::SystemTime::now()),
            );
            let (passkey, rp) = match registered {
                Ok(registered) => registered,
                Err(refused) => {
                    tracing::info!(request_id = %ctx.request_id, reason = refused.reason(), "passkey registration refused");
                    return self
                        .show_enrol_page(
                            session,
                            ctx,
                            id,
                            &invitation.user,
                            &secret,
                            EnrolError::Passkey,
                        )
                        .await;
                }
            };
            let factor = crate::store::NewFactor::Passkey(crate::store::NewPasskey {
                credential_id: passkey.cred_id().to_vec(),
                rp_id: rp.id,
                credential: serde_json::to_string(&passkey).unwrap_or_default(),
            });
            return self.enrolled(session, ctx, id, factor, &address).await;
        }
        let code = field(&form, "code").unwrap_or_default();
        let sender = crate::challenge::totp::Sender {
            address: &address,
            trusted_device: false,
        };
        match self
            .services
            .verify_totp(&invitation.user, &secret, &code, sender)
            .await
        {
            Ok(()) => {}
            Err(TotpError::Unavailable) => {
                return self
                    .try_again(session, ctx, "The code cannot be checked right now.")
                    .await
            }
            Err(TotpError::RateLimited) => {
                return self
                    .enrol_message(
                        session,
                        ctx,
                        429,
                        "Too many tries",
                        "Wait a few minutes, then open the link again.",
                    )
                    .await
            }
            Err(refused) => {
                tracing::info!(request_id = %ctx.request_id, reason = refused.reason(), "enrolment code refused");
                return self
                    .show_enrol_page(
                        session,
                        ctx,
                        id,
                        &invitation.user,
                        &secret,
                        EnrolError::Code,
                    )
                    .await;
            }
        }
        self.enrolled(
            session,
            ctx,
            id,
            crate::store::NewFactor::Totp(secret),
            &address,
        )
        .await
    }

    /// Stores `factor` for the invited user and uses the invitation (one transaction), then
    /// shows the recovery codes.
    async fn enrolled(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        id: &str,
        factor: crate::store::NewFactor,
        address: &str,
    ) -> Result<u16> {
        let passkey = matches!(factor, crate::store::NewFactor::Passkey(_));
        match self.services.enrol_invited(id, factor, address).await {
            Ok(Some(codes)) => {
                tracing::info!(request_id = %ctx.request_id, passkey, "factor enrolled from an invitation");
                let html = enrolled_page(
                    &ctx.app().app_name,
                    passkey,
                    &codes,
                    "<p>You can close this page and sign in.</p>\n",
                );
                self.enrol_html(session, ctx, 200, html, None).await
            }
            Ok(None) => self.used_or_expired(session, ctx).await,
            Err(e) => {
                tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot store an enrolled authenticator");
                self.try_again(
                    session,
                    ctx,
                    "The authenticator could not be saved; nothing was changed.",
                )
                .await
            }
        }
    }

    async fn show_enrol_page(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        id: &str,
        user: &crate::store::UserKey,
        secret: &[u8],
        error: EnrolError,
    ) -> Result<u16> {
        let app_name = ctx.app().app_name.clone();
        let Some((uri, base32)) = otpauth(secret, &app_name) else {
            return self
                .enrol_message(
                    session,
                    ctx,
                    500,
                    "Something went wrong",
                    "This page cannot be shown.",
                )
                .await;
        };
        let prefix = &ctx.config.server.reserved_prefix.0;
        let action = format!("{prefix}enrol/{id}");
        let csrf = csrf_token(&self.services.csrf_key(), id, CSRF_PURPOSE);
        let passkey = self.registration_part(session, ctx, id, user, &action, &csrf, &app_name);
        let html = enrol_page(&EnrolPage {
            app_name: &app_name,
            action: &action,
            csrf_field: CSRF_FIELD,
            csrf_token: &csrf,
            uri: &uri,
            base32: &base32,
            wrong_code: error == EnrolError::Code,
            passkey: passkey.as_ref().map(|p| p.html.as_str()),
            passkey_error: (error == EnrolError::Passkey)
                .then_some("The passkey was not added. Try again, or add an authenticator app."),
        });
        let status = if error == EnrolError::None { 200 } else { 400 };
        self.enrol_html(session, ctx, status, html, passkey.as_ref())
            .await
    }

    /// The passkey button of an enrolment page for binding `id` (an invitation), when
    /// passkeys are on and this host can have them. The authenticator shows the account as
    /// `account` (the invitation does not keep the login name in clear).
    #[allow(clippy::too_many_arguments)]
    fn registration_part(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        id: &str,
        user: &crate::store::UserKey,
        action: &str,
        csrf: &str,
        account: &str,
    ) -> Option<super::passkeys::PasskeyPart> {
        if !self.services.passkeys_enabled {
            return None;
        }
        let rp = super::passkeys::relying_party(session, ctx).ok()?;
        let handle = self.services.passkeys.user_handle(&user.0);
        let (options, state) = self
            .services
            .passkeys
            .start_registration(
                &rp,
                &ctx.app().app_name,
                handle,
                account,
                &[],
                id,
                crate::runtime::unix_secs(std::time::SystemTime::now()),
            )
            .map_err(|e| tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot begin a passkey registration"))
            .ok()?;
        Some(super::passkeys::part(
            crate::challenge::passkey::Ceremony::Register,
            "Add a passkey",
            action,
            (CSRF_FIELD, csrf),
            &options,
            &state,
        ))
    }

    async fn used_or_expired(&self, session: &mut Session, ctx: &RequestCtx) -> Result<u16> {
        self.enrol_message(
            session,
            ctx,
            404,
            "This link has expired",
            "It was used already, or it is too old. Ask your administrator for a new one.",
        )
        .await
    }

    async fn enrol_message(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        status: u16,
        title: &str,
        text: &str,
    ) -> Result<u16> {
        super::challenge::titled_message(session, ctx, status, title, text, &NOT_CACHED_OR_FRAMED)
            .await?;
        Ok(status)
    }

    /// 503: the store cannot be reached; nothing was changed.
    async fn try_again(&self, session: &mut Session, ctx: &RequestCtx, text: &str) -> Result<u16> {
        self.enrol_message(session, ctx, 503, "Try again in a moment", text)
            .await
    }

    /// Sends an enrolment page: never cached (it shows a secret), never framed.
    async fn enrol_html(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        status: u16,
        html: String,
        passkey: Option<&super::passkeys::PasskeyPart>,
    ) -> Result<u16> {
        let csp = passkey.map(|p| p.csp(CHALLENGE_CSP));
        let headers = match &csp {
            Some(csp) => [
                ("content-security-policy", csp.as_str()),
                NOT_CACHED_OR_FRAMED[1],
            ],
            None => NOT_CACHED_OR_FRAMED,
        };
        pages::respond_with(
            session,
            status,
            &headers,
            "text/html; charset=utf-8",
            Bytes::from(html),
            ctx.reply(),
        )
        .await?;
        Ok(status)
    }
}

/// What went wrong with the last try on an enrolment page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EnrolError {
    None,
    /// The code typed was not right.
    Code,
    /// The passkey was not registered.
    Passkey,
}

/// Invitation ids are 32 characters of URL-safe base64; anything else is not looked up.
fn plausible_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
