//! Proxy glue for step-up through the operator's OpenID Connect provider (`mfa.oidc`):
//! `{prefix}challenge/{id}/oidc` sends the browser that holds the challenge to the provider,
//! and `{prefix}challenge/oidc/callback` takes its answer: the state names the challenge, the
//! code is exchanged, the ID token checked against the held login (a fresh sign-in, after the
//! hold, of the same user), and the held login is replayed like after a right code.
//!
//! A refusal leaves the login held, is audited with its reason, counts against the challenge
//! like a wrong code when the browser presented an answer for it, and says what went wrong.
//! A provider that cannot be reached answers "try again in a moment" and counts nothing.
//! Never logs the code, the state, tokens or the name the provider signed in.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::challenge::field;
use super::{pages, GaitkeeperProxy, Handled, RequestCtx};
use crate::challenge::oidc::{check_sign_in, OidcError};
use crate::decision::HeldLogin;

/// Longest code taken from the provider's answer (real ones are well under 200 characters).
const MAX_CODE: usize = 2048;
/// Longest `error` code from the provider passed on to the audit trail.
const MAX_ERROR: usize = 64;

impl GaitkeeperProxy {
    /// `GET {prefix}challenge/{id}/oidc`: to the provider's authorization endpoint, for the
    /// browser holding challenge `id`.
    pub(super) async fn oidc_start(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
    ) -> Result<Handled> {
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            let status = pages::respond_method_not_allowed(session, ctx.reply()).await?;
            return Ok(Handled::Answered(status));
        }
        if self.services.oidc.is_none() {
            return self.expired(session, ctx).await;
        }
        match self.bound_held(session, ctx, id).await {
            Ok(Some(_)) => {}
            Ok(None) => return self.expired(session, ctx).await,
            Err(()) => return self.cannot_check_now(session, ctx).await,
        }
        let Some(redirect_uri) = redirect_uri(session, ctx) else {
            return self
                .message(
                    session,
                    ctx,
                    400,
                    "This address cannot be used",
                    "Open the sign-in page at its usual address and sign in again.",
                )
                .await;
        };
        match self
            .services
            .oidc_authorization_url(id, &redirect_uri)
            .await
        {
            Ok(url) => {
                self.metrics
                    .challenges
                    .with_label_values(&["oidc_started"])
                    .inc();
                pages::respond_with(
                    session,
                    303,
                    &[("location", &url)],
                    "text/plain; charset=utf-8",
                    Bytes::from_static(b"Continue with your sign-in provider.\n"),
                    ctx.reply(),
                )
                .await?;
                Ok(Handled::Answered(303))
            }
            Err(e) => {
                tracing::warn!(request_id = %ctx.request_id, reason = e.reason(), error = %e, "cannot send a challenge to the OpenID Connect provider");
                self.provider_unavailable(session, ctx).await
            }
        }
    }

    /// `GET {prefix}challenge/oidc/callback?state=…&code=…`: the provider's answer.
    pub(super) async fn oidc_callback(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Handled> {
        let method = &session.req_header().method;
        if method != http::Method::GET {
            let status = pages::respond_method_not_allowed(session, ctx.reply()).await?;
            return Ok(Handled::Answered(status));
        }
        let query = session
            .req_header()
            .uri
            .query()
            .unwrap_or("")
            .as_bytes()
            .to_vec();
        let id = field(&query, "state").and_then(|state| self.services.oidc_challenge_of(&state));
        let Some(id) = id else {
            // No challenge to count it against: whoever sent it has no challenge of ours.
            self.metrics
                .challenges
                .with_label_values(&["oidc_refused"])
                .inc();
            tracing::info!(request_id = %ctx.request_id, reason = OidcError::BadState.reason(), "OpenID Connect answer refused");
            return self
                .message(
                    session,
                    ctx,
                    403,
                    "Sign-in could not be confirmed",
                    "This answer from the sign-in provider is not for a sign-in here. Go back to the sign-in page and sign in again.",
                )
                .await;
        };
        let held = match self.bound_held(session, ctx, &id).await {
            Ok(Some(held)) => held,
            Ok(None) => return self.expired(session, ctx).await,
            Err(()) => return self.cannot_check_now(session, ctx).await,
        };
        if let Some(error) = field(&query, "error") {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(MAX_ERROR)
                .collect();
            return self
                .oidc_refused(session, ctx, &id, &held, OidcError::ProviderRefused(error))
                .await;
        }
        // RFC 9207: a provider that names itself must be ours (mix-up with another provider).
        if let Some(iss) = field(&query, "iss") {
            let ours = self
                .services
                .oidc
                .as_ref()
                .is_some_and(|o| o.provider.config().issuer.0 == iss);
            if !ours {
                return self
                    .oidc_refused(session, ctx, &id, &held, OidcError::WrongIssuer)
                    .await;
            }
        }
        let code = field(&query, "code").filter(|c| !c.is_empty() && c.len() <= MAX_CODE);
        let Some(code) = code else {
            return self
                .oidc_refused(session, ctx, &id, &held, OidcError::MissingCode)
                .await;
        };
        let Some(redirect_uri) = redirect_uri(session, ctx) else {
            return self.expired(session, ctx).await;
        };
        let sign_in = match self.services.oidc_sign_in(&id, &code, &redirect_uri).await {
            Ok(sign_in) => sign_in,
            Err(e @ OidcError::Unavailable(_)) => {
                tracing::warn!(request_id = %ctx.request_id, reason = e.reason(), error = %e, "cannot check an answer of the OpenID Connect provider");
                return self.provider_unavailable(session, ctx).await;
            }
            Err(e) => return self.oidc_refused(session, ctx, &id, &held, e).await,
        };
        let config = self
            .services
            .oidc
            .as_ref()
            .map(|o| o.provider.config().clone());
        let Some(config) = config else {
            return self.expired(session, ctx).await;
        };
        if let Err(e) = check_sign_in(&sign_in, held.held_at, &config) {
            return self.oidc_refused(session, ctx, &id, &held, e).await;
        }
        if !self.same_user(ctx, &held, sign_in.username.as_deref().unwrap_or("")) {
            return self
                .oidc_refused(session, ctx, &id, &held, OidcError::OtherUser)
                .await;
        }
        tracing::info!(request_id = %ctx.request_id, incident = %held.attempt.incident, "challenge passed with the OpenID Connect provider");
        self.metrics
            .challenges
            .with_label_values(&["oidc_passed"])
            .inc();
        let handled = self.passed(session, ctx, &id, &held).await?;
        // The replayed login's audit record (`challenge.passed`) names the factor.
        if let Some(login) = ctx.login.as_mut() {
            add_reason(
                &mut login.attempt.reasons,
                serde_json::json!({ "code": "factor", "factor": "oidc" }),
            );
        }
        Ok(handled)
    }

    /// Whether `name` (the provider's `username_claim`) is the held login's user: normalised
    /// as the login's route normalises names, scoped to the app and keyed as the store keys
    /// users, then compared with the held login's key in constant time.
    fn same_user(&self, ctx: &RequestCtx, held: &HeldLogin, name: &str) -> bool {
        let app = ctx.app();
        let Some(route) = app.routes.iter().find(|r| r.name == held.attempt.route) else {
            return false;
        };
        let name = crate::login::normalize(name, &route.username.normalize);
        let Ok(key) = self.services.store.user_key(&app.user_scope(&name)) else {
            return false;
        };
        subtle::ConstantTimeEq::ct_eq(&key.0[..], &held.attempt.user.0[..]).into()
    }

    /// A refused answer: audited with its reason, counted against the challenge when the
    /// browser presented one (past `mfa.totp.max_attempts` the challenge fails), and a page
    /// that says what went wrong and leads back to the challenge.
    async fn oidc_refused(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
        held: &HeldLogin,
        error: OidcError,
    ) -> Result<Handled> {
        tracing::info!(request_id = %ctx.request_id, incident = %held.attempt.incident, reason = error.reason(), "OpenID Connect answer refused");
        self.metrics
            .challenges
            .with_label_values(&["oidc_refused"])
            .inc();
        self.services.oidc_refused(&held.attempt, &error);
        if error.counts_as_attempt() {
            let attempts = match self.services.held.failed_attempt(id, held).await {
                Ok(Some(attempts)) => attempts,
                Ok(None) => return self.expired(session, ctx).await,
                Err(e) => return self.state_unavailable(session, ctx, e).await,
            };
            if attempts >= self.services.max_attempts() {
                return self.challenge_failed(session, ctx, id).await;
            }
        }
        let provider = self.services.oidc_name().unwrap_or("the sign-in provider");
        let text = match error {
            OidcError::OtherUser => format!(
                "You signed in at {provider} as someone else. Go back to the previous page and sign in there as the user you are signing in as here."
            ),
            OidcError::StaleSignIn | OidcError::NoAuthTime => format!(
                "{provider} did not ask you to sign in again, and a fresh sign-in is needed. Go back to the previous page, sign out at {provider} and try again."
            ),
            OidcError::AcrNotAccepted | OidcError::AmrMissing => format!(
                "Your sign-in at {provider} was not strong enough for this step. Go back to the previous page and sign in there with your second factor."
            ),
            OidcError::ProviderRefused(_) => format!(
                "The sign-in at {provider} did not complete. Go back to the previous page to try again or confirm another way."
            ),
            _ => format!(
                "Your sign-in at {provider} could not be confirmed. Go back to the previous page to try again or confirm another way."
            ),
        };
        self.message(session, ctx, 403, "Sign-in could not be confirmed", &text)
            .await
    }

    /// 503: the provider cannot be reached or answered unusably; nothing is counted.
    async fn provider_unavailable(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Handled> {
        self.message(
            session,
            ctx,
            503,
            "Try again in a moment",
            "The sign-in provider cannot be reached right now.",
        )
        .await
    }
}

/// The redirect URI registered at the provider: `{scheme}://{host}{prefix}challenge/oidc/callback`
/// on the host the browser used, https when the client is (`ClientOrigin`, which believes
/// forwarded headers only from `server.trusted_proxies`). `None` for a Host header that is no
/// host.
fn redirect_uri(session: &Session, ctx: &RequestCtx) -> Option<String> {
    let header = &session.req_header().headers;
    let host = header
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| session.req_header().uri.authority().map(|a| a.as_str()))?;
    let valid = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if !valid {
        return None;
    }
    let scheme = if ctx.origin.https { "https" } else { "http" };
    let prefix = &ctx.config.server.reserved_prefix.0;
    Some(format!("{scheme}://{host}{prefix}challenge/oidc/callback"))
}

/// Appends `reason` to a login's reasons (an array; anything else becomes one).
fn add_reason(reasons: &mut serde_json::Value, reason: serde_json::Value) {
    match reasons {
        serde_json::Value::Array(list) => list.push(reason),
        serde_json::Value::Null => *reasons = serde_json::Value::Array(vec![reason]),
        other => *other = serde_json::json!([other.take(), reason]),
    }
}
