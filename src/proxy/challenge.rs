//! Proxy glue for the step-up challenge: the endpoints under `{prefix}challenge/`. A held login
//! is answered from the browser that was sent there (a per-browser binding cookie, and a CSRF
//! token derived from it); a correct second factor replays the held login to the app, whose
//! own response (redirect, session cookie) goes back to the browser as if nothing happened.
//! Wrong codes count; past the limit the login is blocked, audited and alerted on.

use std::sync::Arc;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::login::{random_token, wants_json, PendingLogin};
use super::{pages, GaitkeeperProxy, Handled, RequestCtx};
use crate::challenge::{
    challenge_page, check_csrf, csrf_token, message_page, ChallengePage, ExternalLink, TotpError,
    CHALLENGE_CSP, CHALLENGE_CSP_INLINE, CODE_FIELD,
};
use crate::decision::{ChallengeResult, HeldLogin, Inline, LoginAttempt, LoginOutcome};
use crate::wire;

/// The cookie binding a challenge to the browser it was issued to.
pub(super) const BINDING_COOKIE: &str = "__gk_challenge";
/// Largest challenge or enrolment form body read: a code and a CSRF token, or a passkey's
/// answer and its sealed ceremony (a few KiB, URL-encoded).
const MAX_FORM_BYTES: usize = 32 * 1024;
const CSRF_FIELD: &str = "csrf";

impl GaitkeeperProxy {
    /// Holds `attempt`'s login for a second factor and sends the browser to its challenge: a
    /// 303 to the challenge page, or for a fetch/XHR login a 401 with the challenge's URL in
    /// JSON for the capture script to show in the page. The per-browser binding cookie ties
    /// the challenge to this browser. `None`, with nothing answered, when the login cannot be
    /// held (the shared state is unreachable; counted and logged here).
    pub(super) async fn hold_for_challenge(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        attempt: LoginAttempt,
        body: Bytes,
    ) -> Result<Option<Handled>> {
        let config = ctx.config.clone();
        let xhr = wants_json(session, ctx);
        let id = crate::challenge::new_challenge_id();
        let binding = random_token();
        let held = HeldLogin::new(
            attempt,
            &session.req_header().as_owned_parts(),
            body,
            binding.clone(),
            xhr,
        );
        if let Err(e) = self.services.held.hold(id.clone(), held).await {
            self.metrics.state_errors.inc();
            tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot hold a challenged login in the shared state; policy.on_state_error decides");
            return Ok(None);
        }
        self.metrics.challenges.with_label_values(&["issued"]).inc();
        let prefix = &config.server.reserved_prefix.0;
        let location = format!("{prefix}challenge/{id}");
        // Not `__Host-`: that prefix needs `Path=/`, and this cookie is for the challenge only.
        let cookie = format!(
            "{BINDING_COOKIE}={binding}; Path={prefix}challenge/; HttpOnly; SameSite=Lax; Max-Age={}{}",
            config.mfa.challenge_ttl.0.as_secs(),
            if ctx.origin.https { "; Secure" } else { "" }
        );
        if xhr {
            // The shape the capture script shows in the page (docs/telemetry.md §1.3).
            let body = serde_json::json!({
                "gaitkeeper": { "challenge_url": location },
            })
            .to_string();
            let fresh = self.fresh_token(session, ctx);
            let mut headers: Vec<(&str, &str)> = vec![
                ("set-cookie", &cookie),
                ("x-gaitkeeper-challenge", &location),
            ];
            headers.extend(fresh.iter().map(|(n, v)| (*n, v.as_str())));
            pages::respond_with(
                session,
                401,
                &headers,
                "application/json",
                Bytes::from(body),
                ctx.reply(),
            )
            .await?;
            Ok(Some(Handled::Answered(401)))
        } else {
            pages::respond_with(
                session,
                303,
                &[("location", &location), ("set-cookie", &cookie)],
                "text/plain; charset=utf-8",
                Bytes::from_static(b"A second step is needed to sign in.\n"),
                ctx.reply(),
            )
            .await?;
            Ok(Some(Handled::Answered(303)))
        }
    }

    /// Answers `{prefix}challenge/{rest}`, or puts the held login in place of this request
    /// (`Handled::Forward`) to be proxied to the app.
    pub(super) async fn challenge_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rest: &str,
    ) -> Result<Handled> {
        let method = session.req_header().method.clone();
        if rest == "callback" {
            return self.external_callback(session, ctx).await;
        }
        if rest == "oidc/callback" {
            return self.oidc_callback(session, ctx).await;
        }
        if let Some(id) = rest.strip_suffix("/oidc") {
            return self.oidc_start(session, ctx, id).await;
        }
        let id = rest.to_string();
        if method == http::Method::GET || method == http::Method::HEAD {
            let held = match self.bound_held(session, ctx, &id).await {
                Ok(Some(held)) => held,
                Ok(None) => return self.expired(session, ctx).await,
                Err(()) => return self.cannot_check_now(session, ctx).await,
            };
            // Shown inside the page (the capture script's overlay frame or popup): once
            // passed, the page resumes the login itself.
            if let Some(how) = inline_mode(session).filter(|_| held.xhr) {
                if let Err(e) = self.services.held.set_inline(&id, &held, how).await {
                    return self.state_unavailable(session, ctx, e).await;
                }
            }
            let status = self.show_challenge(session, ctx, &id, &held, None).await?;
            return Ok(Handled::Answered(status));
        }
        if method != http::Method::POST {
            let status = pages::respond_method_not_allowed(session, ctx.reply()).await?;
            return Ok(Handled::Answered(status));
        }
        let form = match read_form(session, ctx).await? {
            wire::Body::Whole(form) => form,
            refused => return unreadable_form(session, ctx, refused).await,
        };
        let held = match self.bound_held(session, ctx, &id).await {
            Ok(Some(held)) => held,
            Ok(None) => return self.expired(session, ctx).await,
            Err(()) => return self.cannot_check_now(session, ctx).await,
        };
        let key = self.services.csrf_key();
        let csrf = field(&form, CSRF_FIELD).unwrap_or_default();
        if !check_csrf(&key, &id, &held.binding, &csrf) {
            return self
                .message(
                    session,
                    ctx,
                    403,
                    "This page has expired",
                    "Reload the page and try again.",
                )
                .await;
        }
        if let Some((state, credential)) = super::passkeys::answer(&form) {
            return self
                .passkey_answer(session, ctx, &id, &held, &state, &credential)
                .await;
        }
        let code = field(&form, CODE_FIELD).unwrap_or_default();
        if let Some(recovery) = crate::challenge::recovery::normalise(&code) {
            return self.recovery_code(session, ctx, &id, &held, recovery).await;
        }
        let secret = match self.services.totp_secret(&held.attempt.user).await {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                return self
                    .message(
                        session,
                        ctx,
                        403,
                        "No code is set up",
                        "This account has no authenticator set up. Contact support.",
                    )
                    .await
            }
            Err(_) => return self.cannot_check_now(session, ctx).await,
        };
        let address = ctx.client_ip.clone();
        let device = device_cookie(session, ctx);
        let sender = crate::challenge::totp::Sender {
            address: &address,
            trusted_device: self
                .services
                .trusted_device(device.as_deref(), &held.attempt.user),
        };
        match self
            .services
            .verify_totp(&held.attempt.user, &secret, &code, sender)
            .await
        {
            Ok(()) => self.passed(session, ctx, &id, &held).await,
            // Not the user's fault: no attempt is counted.
            Err(TotpError::Unavailable) => {
                self.metrics.state_errors.inc();
                self.cannot_check_now(session, ctx).await
            }
            Err(refused) => {
                self.wrong_code(
                    session,
                    ctx,
                    &id,
                    &held,
                    refused.reason(),
                    refused == TotpError::RateLimited,
                )
                .await
            }
        }
    }

    /// A code that was not accepted: counted against the challenge (past
    /// `mfa.totp.max_attempts`, or when `give_up`, the challenge fails), and the page shown
    /// again with the attempts left.
    async fn wrong_code(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
        held: &HeldLogin,
        reason: &'static str,
        give_up: bool,
    ) -> Result<Handled> {
        tracing::info!(request_id = %ctx.request_id, incident = %held.attempt.incident, reason, "challenge code refused");
        self.metrics
            .challenges
            .with_label_values(&["wrong_code"])
            .inc();
        let attempts = match self.services.held.failed_attempt(id, held).await {
            Ok(Some(attempts)) => attempts,
            // Taken meanwhile (passed, failed or expired through another request).
            Ok(None) => return self.expired(session, ctx).await,
            Err(e) => return self.state_unavailable(session, ctx, e).await,
        };
        let max = self.services.max_attempts();
        if attempts >= max || give_up {
            return self.challenge_failed(session, ctx, id).await;
        }
        let status = self
            .show_challenge(session, ctx, id, held, Some(max - attempts))
            .await?;
        Ok(Handled::Answered(status))
    }

    /// A recovery code instead of the authenticator's: one of the user's unused ones passes the
    /// challenge (and is gone; audited and alerted), anything else is a wrong code.
    async fn recovery_code(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
        held: &HeldLogin,
        code: String,
    ) -> Result<Handled> {
        match self
            .services
            .use_recovery_code(&held.attempt.user, code)
            .await
        {
            Ok(Some(left)) => {
                tracing::info!(request_id = %ctx.request_id, incident = %held.attempt.incident, left, "challenge passed with a recovery code");
                self.metrics
                    .challenges
                    .with_label_values(&["recovery_code"])
                    .inc();
                self.services.recovery_code_used(&held.attempt, left);
                self.passed(session, ctx, id, held).await
            }
            Ok(None) => {
                self.wrong_code(session, ctx, id, held, "wrong_recovery_code", false)
                    .await
            }
            Err(_) => self.cannot_check_now(session, ctx).await,
        }
    }

    /// A passkey's answer: one of the user's passkeys (read now, so a removed one fails),
    /// signing this challenge's ceremony, passes; anything else is a wrong code.
    async fn passkey_answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
        held: &HeldLogin,
        state: &str,
        credential: &str,
    ) -> Result<Handled> {
        let user = held.attempt.user;
        let stored = match self.services.user_passkeys(&user).await {
            Ok(stored) => stored,
            Err(_) => return self.cannot_check_now(session, ctx).await,
        };
        let rp = super::passkeys::relying_party(session, ctx);
        let passkeys = match &rp {
            Ok(rp) if self.services.passkeys_enabled => super::passkeys::usable(&stored, rp),
            _ => Vec::new(),
        };
        let checked = self.services.passkeys.finish_authentication(
            state,
            id,
            credential,
            &passkeys,
            crate::runtime::unix_secs(std::time::SystemTime::now()),
        );
        match checked {
            Ok(used) => {
                tracing::info!(request_id = %ctx.request_id, incident = %held.attempt.incident, "challenge passed with a passkey");
                self.metrics
                    .challenges
                    .with_label_values(&["passkey"])
                    .inc();
                let updated = used.updated.and_then(|p| serde_json::to_string(&p).ok());
                if let Err(e) = self
                    .services
                    .passkey_used(&user, used.credential_id, updated)
                    .await
                {
                    // The pass stands; only the last-used time (and counter) is not kept.
                    tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot record a passkey's use");
                }
                self.services.factor_used(&held.attempt, "passkey");
                self.passed(session, ctx, id, held).await
            }
            Err(refused) => {
                self.wrong_code(session, ctx, id, held, refused.reason(), false)
                    .await
            }
        }
    }

    /// 503: the code cannot be checked now (the store or the shared state is away); no
    /// attempt is counted against the user.
    pub(super) async fn cannot_check_now(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
    ) -> Result<Handled> {
        self.message(
            session,
            ctx,
            503,
            "Try again in a moment",
            "The code cannot be checked right now.",
        )
        .await
    }

    /// 503 after a failed operation on the shared state (counted and logged).
    pub(super) async fn state_unavailable(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        error: crate::shared::StateError,
    ) -> Result<Handled> {
        self.metrics.state_errors.inc();
        tracing::warn!(request_id = %ctx.request_id, error = %error, "cannot reach the shared state for a challenge");
        self.cannot_check_now(session, ctx).await
    }

    /// The held login `id`, if it exists, is a login of this request's app and this browser
    /// holds its binding cookie. `Err` when the shared state cannot be read (counted and
    /// logged).
    pub(super) async fn bound_held(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        id: &str,
    ) -> std::result::Result<Option<Arc<HeldLogin>>, ()> {
        // The cookie first: a request without one costs no lookup.
        let Some(presented) = cookie(session, BINDING_COOKIE) else {
            return Ok(None);
        };
        let held = match self.services.held.get(id).await {
            Ok(held) => held,
            Err(e) => {
                self.metrics.state_errors.inc();
                tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot read a held login from the shared state");
                return Err(());
            }
        };
        let Some(held) = held.filter(|held| held.attempt.app == ctx.app().name) else {
            return Ok(None);
        };
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(presented.as_bytes(), held.binding.as_bytes()).into();
        Ok(same.then_some(held))
    }

    /// The code form, or straight to the external provider when the user has no TOTP.
    async fn show_challenge(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        id: &str,
        held: &HeldLogin,
        attempts_left: Option<u32>,
    ) -> Result<u16> {
        let prefix = &ctx.config.server.reserved_prefix.0;
        let external = self
            .services
            .external_url(&held.attempt.login, id, session, prefix);
        let has = self
            .services
            .has_factors(&held.attempt.user)
            .await
            .unwrap_or_default();
        let has_totp = has.totp;
        // In the overlay's frame the provider opens in a window of its own: providers refuse
        // to be framed, and the page stays as it is.
        let in_frame = held.inline() == Some(Inline::Frame);
        // With OpenID Connect as well, the page offers both.
        let oidc = self.services.oidc_name();
        if !has_totp && !has.passkeys && !in_frame && oidc.is_none() {
            if let Some((_, url)) = &external {
                pages::respond_with(
                    session,
                    303,
                    &[("location", url)],
                    "text/plain; charset=utf-8",
                    Bytes::from_static(b"Continue with your sign-in provider.\n"),
                    ctx.reply(),
                )
                .await?;
                return Ok(303);
            }
        }
        let key = self.services.csrf_key();
        let csrf = csrf_token(&key, id, &held.binding);
        let action = format!("{prefix}challenge/{id}");
        let passkey = if has.passkeys {
            self.passkey_part(session, ctx, id, held, &action, &csrf)
                .await
        } else {
            None
        };
        let oidc_href = format!("{prefix}challenge/{id}/oidc");
        let html = challenge_page(&ChallengePage {
            app_name: &ctx.app().app_name,
            action: &action,
            csrf_field: CSRF_FIELD,
            csrf_token: &csrf,
            show_code_form: has_totp,
            passkey: passkey.as_ref().map(|p| p.html.as_str()),
            wrong_code: attempts_left,
            external: external.as_ref().map(|(name, href)| ExternalLink {
                name,
                href,
                new_window: in_frame,
            }),
            oidc: oidc.map(|name| ExternalLink {
                name,
                href: &oidc_href,
                new_window: in_frame,
            }),
        });
        let status = if attempts_left.is_some() { 401 } else { 200 };
        // Inside the page's overlay frame it must be frameable by its own origin only.
        let csp = if held.is_inline() {
            CHALLENGE_CSP_INLINE
        } else {
            CHALLENGE_CSP
        };
        let csp = match &passkey {
            Some(part) => part.csp(csp),
            None => csp.to_string(),
        };
        pages::respond_with(
            session,
            status,
            &[("content-security-policy", &csp)],
            "text/html; charset=utf-8",
            Bytes::from(html),
            ctx.reply(),
        )
        .await?;
        Ok(status)
    }

    /// The passkey button of challenge `id`, offering the user's passkeys registered for this
    /// host; `None` when they have none here (or the store cannot say).
    async fn passkey_part(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        id: &str,
        held: &HeldLogin,
        action: &str,
        csrf: &str,
    ) -> Option<super::passkeys::PasskeyPart> {
        let rp = super::passkeys::relying_party(session, ctx).ok()?;
        let stored = self.services.user_passkeys(&held.attempt.user).await.ok()?;
        let passkeys = super::passkeys::usable(&stored, &rp);
        if passkeys.is_empty() {
            return None;
        }
        let (options, state) = self
            .services
            .passkeys
            .start_authentication(&rp, &passkeys, id, crate::runtime::unix_secs(std::time::SystemTime::now()))
            .map_err(|e| tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot begin a passkey ceremony"))
            .ok()?;
        Some(super::passkeys::part(
            crate::challenge::passkey::Ceremony::Authenticate,
            "Use a passkey",
            action,
            (CSRF_FIELD, csrf),
            &options,
            &state,
        ))
    }

    pub(super) async fn expired(&self, session: &mut Session, ctx: &RequestCtx) -> Result<Handled> {
        self.message(
            session,
            ctx,
            404,
            "This sign-in step has expired",
            "Go back to the sign-in page and sign in again.",
        )
        .await
    }

    pub(super) async fn message(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        status: u16,
        title: &str,
        text: &str,
    ) -> Result<Handled> {
        let headers = [("content-security-policy", CHALLENGE_CSP_INLINE)];
        titled_message(session, ctx, status, title, text, &headers).await?;
        Ok(Handled::Answered(status))
    }

    /// Too many wrong codes: the held login is dropped, blocked, audited and alerted on.
    pub(super) async fn challenge_failed(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        id: &str,
    ) -> Result<Handled> {
        let held = match self.services.held.take(id).await {
            Ok(Some(held)) => held,
            Ok(None) => return self.expired(session, ctx).await,
            Err(e) => return self.state_unavailable(session, ctx, e).await,
        };
        self.metrics.challenges.with_label_values(&["failed"]).inc();
        // Against the address only: whoever failed the second factor may not know the
        // password either, and must not be able to get the user banned.
        self.count_failure(ctx, None, &ctx.regulated_as);
        self.services.settle_held(
            &held,
            LoginOutcome::ChallengeFailed,
            ChallengeResult::Failed,
        );
        pages::respond_blocked(
            session,
            &ctx.app().app_name,
            &held.attempt.incident,
            ctx.reply(),
            pages::Refusal {
                json: false,
                headers: &[],
            },
        )
        .await?;
        Ok(Handled::Answered(403))
    }

    /// Puts the held login in place of this request, to be proxied to the app.
    async fn replay(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        held: Arc<HeldLogin>,
    ) -> Result<Handled> {
        let Some(route) = ctx
            .app()
            .routes
            .iter()
            .position(|r| r.name == held.attempt.route)
        else {
            // The route was removed by a reload while the login waited.
            self.services
                .settle_held(&held, LoginOutcome::Failed, ChallengeResult::Passed);
            return self.expired(session, ctx).await;
        };
        self.metrics.challenges.with_label_values(&["passed"]).inc();
        let path = held.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut request = RequestHeader::build(held.method.clone(), path.as_bytes(), None)?;
        for (name, value) in &held.headers {
            request.append_header(name.clone(), value.clone())?;
        }
        *session.req_header_mut() = request;
        ctx.capture.replacement_body = Some(held.body.clone());
        ctx.capture.replacement_sent = false;
        ctx.capture.page_route = None;
        ctx.login = Some(PendingLogin {
            route,
            attempt: held.attempt.clone(),
            challenge: Some(ChallengeResult::Passed),
            succeeded: None,
            device_cookie: device_cookie(session, ctx),
            answer: None,
            app_status: None,
            return_to: held.xhr.then(|| {
                ctx.app().routes[route]
                    .return_to
                    .clone()
                    .unwrap_or_else(|| return_path(&held))
            }),
        });
        Ok(Handled::Forward)
    }

    /// `{prefix}challenge/callback?assertion=JWT` (GET or POST form): the external provider's
    /// signed answer.
    async fn external_callback(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Handled> {
        let method = session.req_header().method.clone();
        let params = if method == http::Method::POST {
            match read_form(session, ctx).await? {
                wire::Body::Whole(form) => form,
                refused => return unreadable_form(session, ctx, refused).await,
            }
        } else {
            session
                .req_header()
                .uri
                .query()
                .unwrap_or("")
                .as_bytes()
                .to_vec()
        };
        let assertion = field(&params, "assertion").unwrap_or_default();
        let (id, user) = match self.services.verify_assertion(&assertion).await {
            Ok(answer) => answer,
            Err(failed_id) => {
                self.metrics
                    .challenges
                    .with_label_values(&["bad_assertion"])
                    .inc();
                if let Some(id) = failed_id {
                    // A genuine "did not pass" from the provider ends the challenge.
                    if let Ok(Some(_)) = self.bound_held(session, ctx, &id).await {
                        return self.challenge_failed(session, ctx, &id).await;
                    }
                }
                return self
                    .message(
                        session,
                        ctx,
                        403,
                        "Sign-in could not be confirmed",
                        "Go back to the sign-in page and sign in again.",
                    )
                    .await;
            }
        };
        let held = match self.bound_held(session, ctx, &id).await {
            Ok(Some(held)) => held,
            Ok(None) => return self.expired(session, ctx).await,
            Err(()) => return self.cannot_check_now(session, ctx).await,
        };
        // The provider confirmed somebody: it must be the user whose login is held.
        let same_user: bool =
            subtle::ConstantTimeEq::ct_eq(user.as_bytes(), held.attempt.login.as_bytes()).into();
        if !same_user {
            return self.challenge_failed(session, ctx, &id).await;
        }
        self.passed(session, ctx, &id, &held).await
    }

    /// A passed challenge: replayed here (the browser navigated to the challenge), or, when it
    /// is shown inside the page, released to the page's script with a one-time proof.
    pub(super) async fn passed(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
        held: &HeldLogin,
    ) -> Result<Handled> {
        if !held.is_inline() {
            return match self.services.held.take(id).await {
                Ok(Some(held)) => self.replay(session, ctx, held).await,
                // Another request completed this challenge first: single use.
                Ok(None) => self.expired(session, ctx).await,
                Err(e) => self.state_unavailable(session, ctx, e).await,
            };
        }
        let proof = match self.services.held.release(id, held).await {
            Ok(Some(proof)) => proof,
            Ok(None) => return self.expired(session, ctx).await,
            Err(e) => return self.state_unavailable(session, ctx, e).await,
        };
        self.metrics
            .challenges
            .with_label_values(&["released"])
            .inc();
        let nonce = super::login::random_token();
        let html = crate::challenge::resume_page(&ctx.app().app_name, &proof, &nonce);
        let csp = format!(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; frame-ancestors 'self'; base-uri 'none'"
        );
        pages::respond_with(
            session,
            200,
            &[("content-security-policy", &csp)],
            "text/html; charset=utf-8",
            Bytes::from(html),
            ctx.reply(),
        )
        .await?;
        Ok(Handled::Answered(200))
    }

    /// `X-Gaitkeeper-Resume: PROOF` on a login submit: the page's script resumes a login whose
    /// challenge it showed and that was passed. The held login takes this request's place and
    /// goes to the app, whose answer — its JSON, its cookies — reaches the page's own code.
    /// Answered here (410) when the proof is unknown, used or from another client.
    pub(super) async fn resume_login(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        proof: &str,
    ) -> Result<Handled> {
        let held = match self.services.held.resume(proof).await {
            Ok(held) => held.filter(|held| {
                held.attempt.client_ip == ctx.client_ip && held.attempt.app == ctx.app().name
            }),
            Err(e) => return self.state_unavailable(session, ctx, e).await,
        };
        let Some(held) = held else {
            self.metrics
                .challenges
                .with_label_values(&["bad_resume"])
                .inc();
            let body = serde_json::json!({"gaitkeeper": {"expired": true}}).to_string();
            pages::respond(
                session,
                410,
                "application/json",
                Bytes::from(body),
                ctx.reply(),
            )
            .await?;
            return Ok(Handled::Answered(410));
        };
        // The request's own body (normally empty) is not read: the held one replaces it.
        let handled = self.replay(session, ctx, held).await?;
        if let Some(login) = ctx.login.as_mut() {
            // The page's own code receives the app's answer as it is.
            login.return_to = None;
        }
        Ok(handled)
    }
}

/// A page of gaitkeeper's own with just a title and a sentence (expired, refused, try
/// again), with `headers`.
pub(super) async fn titled_message(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    title: &str,
    text: &str,
    headers: &[(&str, &str)],
) -> Result<()> {
    let html = message_page(title, text, &ctx.app().app_name);
    pages::respond_with(
        session,
        status,
        headers,
        "text/html; charset=utf-8",
        Bytes::from(html),
        ctx.reply(),
    )
    .await
}

/// `?inline=frame` or `?inline=popup` on a challenge URL: the capture script shows it inside
/// the page.
fn inline_mode(session: &Session) -> Option<Inline> {
    let query = session.req_header().uri.query()?;
    query.split('&').find_map(|p| match p {
        "inline=frame" => Some(Inline::Frame),
        "inline=popup" => Some(Inline::Popup),
        _ => None,
    })
}

/// Reads an urlencoded form body of at most [`MAX_FORM_BYTES`], within the login body
/// deadline (`capture.body_timeout`). Retry buffering keeps the body for pingora, which must
/// see it to send a replayed login's body.
pub(super) async fn read_form(session: &mut Session, ctx: &RequestCtx) -> Result<wire::Body> {
    session.enable_retry_buffering();
    let deadline = tokio::time::Instant::now() + ctx.config.capture.body_timeout.0;
    wire::read_body(session, MAX_FORM_BYTES, deadline).await
}

/// Answers a challenge form that was too large (413) or too slow (408).
pub(super) async fn unreadable_form(
    session: &mut Session,
    ctx: &RequestCtx,
    refused: wire::Body,
) -> Result<Handled> {
    let status = if refused == wire::Body::TimedOut {
        408
    } else {
        413
    };
    pages::write_error_page(session, status, ctx.reply()).await?;
    Ok(Handled::Answered(status))
}

/// One field of an urlencoded body (the first one; these forms are gaitkeeper's own).
pub(super) fn field(form: &[u8], name: &str) -> Option<String> {
    form.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        if k != name.as_bytes() {
            return None;
        }
        String::from_utf8(crate::login::form_decode(v)?).ok()
    })
}

/// Where a fetch/XHR login came from (its same-origin `Referer`), else the site's root.
fn return_path(held: &HeldLogin) -> String {
    let header = |name: http::header::HeaderName| {
        held.headers
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.to_str().ok())
    };
    let host = header(http::header::HOST).unwrap_or("");
    header(http::header::REFERER)
        .and_then(|r| url::Url::parse(r).ok())
        .filter(|u| {
            let origin = match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
                None => u.host_str().unwrap_or("").to_string(),
            };
            !host.is_empty() && origin.eq_ignore_ascii_case(host)
        })
        // `http://host//evil.example/` has the path `//evil.example/`, which a browser reads
        // in a Location as another host: only a path with one leading slash is a path.
        .filter(|u| !u.path().starts_with("//") && !u.path().starts_with("/\\"))
        .map(|u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        })
        .unwrap_or_else(|| "/".to_string())
}

/// The device cookie the browser sent, under the name for its scheme (see
/// `challenge::device::cookie_names`).
pub(super) fn device_cookie(session: &Session, ctx: &RequestCtx) -> Option<String> {
    crate::challenge::device::cookie_names(ctx.origin.https)
        .iter()
        .find_map(|name| cookie(session, name))
}

/// A cookie's value from the request's `Cookie` headers.
pub(super) fn cookie(session: &Session, name: &str) -> Option<String> {
    session
        .req_header()
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
}
