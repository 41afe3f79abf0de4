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
            return self.show_enrol_page(session, ctx, id, &secret, false).await;
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
        let code = field(&form, "code").unwrap_or_default();
        let address = ctx.client_ip.clone();
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
                return self.show_enrol_page(session, ctx, id, &secret, true).await;
            }
        }
        match self.services.enrol_invited(id, secret, &address).await {
            Ok(Some(codes)) => {
                tracing::info!(request_id = %ctx.request_id, user = %invitation.user, "authenticator enrolled from an invitation");
                let html = enrolled_page(&ctx.app().app_name, &codes);
                self.enrol_html(session, ctx, 200, html).await
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
        secret: &[u8],
        wrong_code: bool,
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
        let html = enrol_page(&EnrolPage {
            app_name: &app_name,
            action: &action,
            csrf_field: CSRF_FIELD,
            csrf_token: &csrf,
            uri: &uri,
            base32: &base32,
            wrong_code,
        });
        self.enrol_html(session, ctx, if wrong_code { 400 } else { 200 }, html)
            .await
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
    ) -> Result<u16> {
        pages::respond_with(
            session,
            status,
            &NOT_CACHED_OR_FRAMED,
            "text/html; charset=utf-8",
            Bytes::from(html),
            ctx.reply(),
        )
        .await?;
        Ok(status)
    }
}

/// Invitation ids are 32 characters of URL-safe base64; anything else is not looked up.
fn plausible_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
