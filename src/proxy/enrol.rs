//! Proxy glue for adding a second factor at a trusted moment, the only moments it can be
//! added from the web:
//! - `{prefix}enrol/{id}`: an operator's invitation (`users invite`), for one user of one app
//!   (answers on that app's hosts only), used once;
//! - `{prefix}protect/{id}`: the offer after a trusted login (`routes[].enrol_factors`), whose
//!   app answer is withheld in a sealed cookie and delivered when the user continues.
//!
//! Both pages offer a passkey (registered in the browser) and an authenticator app (the secret
//! derived from the id under a key from `secrets.key`, so every instance shows the same and
//! nothing is stored before the first code proves the scan). Never logs an id, a secret, a
//! code or a withheld cookie.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::challenge::{cookie, field, read_form, unreadable_form};
use super::{pages, GaitkeeperProxy, RequestCtx};
use crate::challenge::enrol::{enrol_page, enrolled_page, otpauth, secret_for, EnrolPage};
use crate::challenge::offer::{self, Withheld, OFFER_COOKIE};
use crate::challenge::{check_csrf, csrf_token, TotpError, CHALLENGE_CSP};
use crate::config::OfferMode;
use crate::decision::ChallengeResult;
use crate::policy::Action;
use crate::store::{NewFactor, NewPasskey, UserKey};
use crate::wire;

const CSRF_FIELD: &str = "csrf";
/// Every enrolment page: it may show a secret.
const NOT_CACHED_OR_FRAMED: [(&str, &str); 2] = [
    ("content-security-policy", CHALLENGE_CSP),
    ("cache-control", "no-store"),
];

/// Where a factor is being added from.
enum Source {
    Invitation,
    Offer(Withheld),
}

/// One enrolment page being answered.
struct Enrolling {
    /// The invitation's or the offer's id (what the page's secrets and forms are bound to).
    id: String,
    user: UserKey,
    source: Source,
    /// The page's own path.
    action: String,
}

impl Enrolling {
    /// What binds the page's CSRF token (the id is the other half).
    fn csrf_purpose(&self) -> &'static str {
        match self.source {
            Source::Invitation => "enrol",
            Source::Offer(_) => "offer",
        }
    }

    /// The TOTP secret the page shows.
    fn secret(&self, key: &[u8]) -> Vec<u8> {
        match self.source {
            Source::Invitation => secret_for(key, &self.id),
            Source::Offer(_) => secret_for(key, &format!("offer\0{}", self.id)),
        }
    }

    /// The account name an authenticator shows (an invitation does not keep the login name
    /// in clear: the app's name stands in).
    fn account<'a>(&'a self, app_name: &'a str) -> &'a str {
        match &self.source {
            Source::Invitation => app_name,
            Source::Offer(withheld) => &withheld.login,
        }
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

impl GaitkeeperProxy {
    /// Answers `{prefix}enrol/{id}` (an invitation); returns the status sent.
    pub(super) async fn enrol_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
    ) -> Result<u16> {
        let form = match self.enrol_request(session, ctx).await? {
            Ok(form) => form,
            Err(answered) => return Ok(answered),
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
        let prefix = &ctx.config.server.reserved_prefix.0;
        let enrolling = Enrolling {
            id: id.to_string(),
            user: invitation.user,
            action: format!("{prefix}enrol/{id}"),
            source: Source::Invitation,
        };
        self.enrolment(session, ctx, enrolling, form).await
    }

    /// Answers `{prefix}protect/{id}` (the offer after a trusted login); returns the status.
    pub(super) async fn offer_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
    ) -> Result<u16> {
        let form = match self.enrol_request(session, ctx).await? {
            Ok(form) => form,
            Err(answered) => return Ok(answered),
        };
        let now = crate::runtime::unix_secs(std::time::SystemTime::now());
        let withheld = cookie(session, OFFER_COOKIE)
            .and_then(|sealed| self.services.offers.open(id, &sealed, now))
            .filter(|w| w.app == ctx.app().name);
        let Some(withheld) = withheld else {
            let html = offer::gone_page(&ctx.app().app_name);
            return self.enrol_html(session, ctx, 404, html, None).await;
        };
        let prefix = &ctx.config.server.reserved_prefix.0;
        let enrolling = Enrolling {
            id: id.to_string(),
            user: UserKey(withheld.user),
            action: format!("{prefix}protect/{id}"),
            source: Source::Offer(withheld),
        };
        self.enrolment(session, ctx, enrolling, form).await
    }

    /// The posted form of an enrolment request (`None` for GET/HEAD); `Err(status)` when
    /// this request was answered already (a wrong method, a form too large or too slow).
    async fn enrol_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<std::result::Result<Option<Vec<u8>>, u16>> {
        let method = session.req_header().method.clone();
        if method == http::Method::GET || method == http::Method::HEAD {
            return Ok(Ok(None));
        }
        if method != http::Method::POST {
            let status = self
                .enrol_message(
                    session,
                    ctx,
                    405,
                    "Not allowed",
                    "Open the link you were given.",
                )
                .await?;
            return Ok(Err(status));
        }
        match read_form(session, ctx).await? {
            wire::Body::Whole(form) => Ok(Ok(Some(form.to_vec()))),
            refused => Ok(Err(match unreadable_form(session, ctx, refused).await? {
                super::Handled::Answered(status) => status,
                super::Handled::Forward => 400,
            })),
        }
    }

    /// Shows the page (no `form`), or takes its answer: a passkey, a code, or (an offer's)
    /// "continue".
    async fn enrolment(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        enrolling: Enrolling,
        form: Option<Vec<u8>>,
    ) -> Result<u16> {
        let secret = enrolling.secret(&self.services.enrol_key);
        let Some(form) = form else {
            return self
                .show_enrol_page(session, ctx, &enrolling, &secret, EnrolError::None)
                .await;
        };
        let csrf = field(&form, CSRF_FIELD).unwrap_or_default();
        let purpose = enrolling.csrf_purpose();
        if !check_csrf(&self.services.csrf_key(), &enrolling.id, purpose, &csrf) {
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
        if let Source::Offer(withheld) = &enrolling.source {
            if field(&form, "continue").is_some() {
                return self.deliver_withheld(session, ctx, withheld).await;
            }
        }
        let address = ctx.client_ip.clone();
        if let Some((state, credential)) = super::passkeys::answer(&form) {
            let registered = self.services.passkeys.finish_registration(
                &state,
                &enrolling.id,
                &credential,
                crate::runtime::unix_secs(std::time::SystemTime::now()),
            );
            let (passkey, rp) = match registered {
                Ok(registered) => registered,
                Err(refused) => {
                    tracing::info!(request_id = %ctx.request_id, reason = refused.reason(), "passkey registration refused");
                    return self
                        .show_enrol_page(session, ctx, &enrolling, &secret, EnrolError::Passkey)
                        .await;
                }
            };
            let factor = NewFactor::Passkey(NewPasskey {
                credential_id: passkey.cred_id().to_vec(),
                rp_id: rp.id,
                credential: serde_json::to_string(&passkey).unwrap_or_default(),
            });
            return self
                .enrolled(session, ctx, &enrolling, factor, &address)
                .await;
        }
        let code = field(&form, "code").unwrap_or_default();
        let sender = crate::challenge::totp::Sender {
            address: &address,
            trusted_device: false,
        };
        match self
            .services
            .verify_totp(&enrolling.user, &secret, &code, sender)
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
                    .show_enrol_page(session, ctx, &enrolling, &secret, EnrolError::Code)
                    .await;
            }
        }
        self.enrolled(session, ctx, &enrolling, NewFactor::Totp(secret), &address)
            .await
    }

    /// Stores `factor` (for an invitation, in one transaction with using it), then shows the
    /// recovery codes (when new) and what comes next.
    async fn enrolled(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        enrolling: &Enrolling,
        factor: NewFactor,
        address: &str,
    ) -> Result<u16> {
        let passkey = matches!(factor, NewFactor::Passkey(_));
        let stored = match &enrolling.source {
            Source::Invitation => {
                self.services
                    .enrol_invited(&enrolling.id, factor, address)
                    .await
            }
            Source::Offer(withheld) => {
                self.services
                    .add_offered_factor(withheld, factor, address)
                    .await
            }
        };
        let app_name = ctx.app().app_name.clone();
        match stored {
            Ok(Some(codes)) => {
                tracing::info!(request_id = %ctx.request_id, passkey, "second factor added");
                let html = match &enrolling.source {
                    Source::Invitation => enrolled_page(
                        &app_name,
                        passkey,
                        &codes,
                        "<p>You can close this page and sign in.</p>\n",
                    ),
                    Source::Offer(_) => {
                        let csrf = csrf_token(
                            &self.services.csrf_key(),
                            &enrolling.id,
                            enrolling.csrf_purpose(),
                        );
                        offer::added_page(
                            &app_name,
                            passkey,
                            &codes,
                            &enrolling.action,
                            (CSRF_FIELD, &csrf),
                        )
                    }
                };
                self.enrol_html(session, ctx, 200, html, None).await
            }
            Ok(None) => self.used_or_expired(session, ctx).await,
            Err(e) => {
                tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot store a second factor");
                self.try_again(
                    session,
                    ctx,
                    "The second factor could not be saved; nothing was changed.",
                )
                .await
            }
        }
    }

    /// The app's withheld answer, as it gave it: its redirect and its cookies (and the offer
    /// cookie cleared).
    async fn deliver_withheld(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        withheld: &Withheld,
    ) -> Result<u16> {
        if withheld.required {
            // Required: only once a factor is there (a form posted without adding one).
            let has = self.services.has_factors(&UserKey(withheld.user)).await;
            if !matches!(has, Ok(h) if h.totp || h.passkeys) {
                return self
                    .enrol_message(
                        session,
                        ctx,
                        403,
                        "One more step",
                        "Add a passkey or an authenticator app to continue.",
                    )
                    .await;
            }
        }
        let prefix = &ctx.config.server.reserved_prefix.0;
        let clear =
            format!("{OFFER_COOKIE}=; Path={prefix}protect/; HttpOnly; SameSite=Lax; Max-Age=0");
        let mut headers: Vec<(&str, &str)> = vec![
            ("location", withheld.location.as_str()),
            ("cache-control", "no-store"),
            ("set-cookie", clear.as_str()),
        ];
        for set in &withheld.set_cookies {
            headers.push(("set-cookie", set.as_str()));
        }
        pages::respond_with(
            session,
            303,
            &headers,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"Continuing.\n"),
            ctx.reply(),
        )
        .await?;
        Ok(303)
    }

    async fn show_enrol_page(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        enrolling: &Enrolling,
        secret: &[u8],
        error: EnrolError,
    ) -> Result<u16> {
        let app_name = ctx.app().app_name.clone();
        let Some((uri, base32)) = otpauth(secret, enrolling.account(&app_name)) else {
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
        let csrf = csrf_token(
            &self.services.csrf_key(),
            &enrolling.id,
            enrolling.csrf_purpose(),
        );
        // A user invited to add another factor keeps what they have: their passkeys are
        // excluded (an authenticator holds one per account) and a TOTP secret is not offered
        // over theirs.
        let stored = self
            .services
            .user_passkeys(&enrolling.user)
            .await
            .unwrap_or_default();
        let has_totp = self
            .services
            .has_factors(&enrolling.user)
            .await
            .map(|h| h.totp)
            .unwrap_or(false);
        let passkey = self.registration_part(session, ctx, enrolling, &stored, &csrf, &app_name);
        let (lead, footer) = match &enrolling.source {
            Source::Invitation => (None, None),
            Source::Offer(withheld) => (
                Some(offer::lead(&app_name, withheld.required)),
                (!withheld.required)
                    .then(|| offer::not_now_form(&enrolling.action, (CSRF_FIELD, &csrf))),
            ),
        };
        let html = enrol_page(&EnrolPage {
            app_name: &app_name,
            action: &enrolling.action,
            csrf_field: CSRF_FIELD,
            csrf_token: &csrf,
            uri: &uri,
            base32: &base32,
            wrong_code: error == EnrolError::Code,
            passkey: passkey.as_ref().map(|p| p.html.as_str()),
            passkey_error: (error == EnrolError::Passkey)
                .then_some("The passkey was not added. Try again, or add an authenticator app."),
            lead: lead.as_deref(),
            footer: footer.as_deref(),
            totp: !has_totp,
        });
        let status = if error == EnrolError::None { 200 } else { 400 };
        self.enrol_html(session, ctx, status, html, passkey.as_ref())
            .await
    }

    /// The passkey button of an enrolment page, when passkeys are on and this host can have
    /// them (the user's passkeys are excluded: registered once).
    fn registration_part(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        enrolling: &Enrolling,
        stored: &[crate::store::StoredPasskey],
        csrf: &str,
        app_name: &str,
    ) -> Option<super::passkeys::PasskeyPart> {
        if !self.services.passkeys_enabled {
            return None;
        }
        let rp = super::passkeys::relying_party(session, ctx).ok()?;
        let handle = self.services.passkeys.user_handle(&enrolling.user.0);
        let existing = super::passkeys::usable(stored, &rp);
        let (options, state) = self
            .services
            .passkeys
            .start_registration(
                &rp,
                app_name,
                handle,
                enrolling.account(app_name),
                &existing,
                &enrolling.id,
                crate::runtime::unix_secs(std::time::SystemTime::now()),
            )
            .map_err(|e| tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot begin a passkey registration"))
            .ok()?;
        Some(super::passkeys::part(
            crate::challenge::passkey::Ceremony::Register,
            "Add a passkey",
            &enrolling.action,
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

    /// Sends an enrolment page: never cached (it shows a secret), never framed; a passkey
    /// button's script runs under its nonce.
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

/// Invitation ids are 32 characters of URL-safe base64; anything else is not looked up.
fn plausible_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl GaitkeeperProxy {
    /// After the app's answer to a login (response header phase): when the route asks users
    /// without a factor to add one and this was a trusted login — allowed with risk below
    /// `allow_below`, a passed challenge, or (with trust on first use) an enrolling login —
    /// that the app accepted with a redirect, the answer is withheld in a sealed cookie and
    /// the browser sent to the offer page (`{prefix}protect/{id}`) first.
    pub(super) async fn withhold_for_offer(
        &self,
        response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) {
        let Some(pending) = ctx.login.as_ref() else {
            return;
        };
        let route = &ctx.config.apps[ctx.app].routes[pending.route];
        let offer = &route.enrol_factors;
        if offer.mode == OfferMode::Off || pending.succeeded != Some(true) {
            return;
        }
        let verdict = &pending.attempt.verdict;
        let allowed = verdict.decision == Action::Allow;
        let trusted = pending.challenge == Some(ChallengeResult::Passed)
            || (allowed && verdict.rule == TRUSTED_RULE)
            || (allowed && verdict.rule == ENROLLING_RULE && offer.trust_on_first_use);
        if !trusted {
            return;
        }
        let location = match &pending.return_to {
            Some(to) => to.clone(),
            None if response.status.is_redirection() => {
                match response
                    .headers
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                {
                    Some(location) => location.to_string(),
                    None => return,
                }
            }
            // An answer with a body (a page, a fetch login's JSON) is not withheld.
            None => return,
        };
        let user = pending.attempt.user;
        match self.services.has_factors(&user).await {
            Ok(has) if !has.totp && !has.passkeys => {}
            _ => return,
        }
        let required = offer.mode == OfferMode::Require;
        let again_after = (!required).then_some(offer.reoffer_after.0);
        if !self.services.offer_due(&user, again_after).await {
            return;
        }
        let now = crate::runtime::unix_secs(std::time::SystemTime::now());
        let attempt = &pending.attempt;
        let withheld = Withheld {
            user: user.0,
            scoped_login: ctx.app().user_scope(&attempt.login).into_owned(),
            login: attempt.login.clone(),
            app: attempt.app.clone(),
            required,
            location,
            set_cookies: response
                .headers
                .get_all(http::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_string)
                .collect(),
            expires: now + offer::OFFER_TTL.as_secs(),
        };
        let id = super::login::random_token();
        let Some(sealed) = self.services.offers.seal(&id, &withheld) else {
            tracing::info!(request_id = %ctx.request_id, "the app's cookies do not fit the offer cookie; not offered");
            return;
        };
        self.services.factor_offered(attempt, required);
        let prefix = &ctx.config.server.reserved_prefix.0;
        let secure = if ctx.origin.https { "; Secure" } else { "" };
        let cookie = format!(
            "{OFFER_COOKIE}={sealed}; Path={prefix}protect/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
            offer::OFFER_TTL.as_secs()
        );
        response.set_status(303).ok();
        for name in [
            "set-cookie",
            "location",
            "content-type",
            "content-length",
            "transfer-encoding",
            "etag",
        ] {
            response.remove_header(name);
        }
        response
            .insert_header("location", format!("{prefix}protect/{id}"))
            .ok();
        response.insert_header("set-cookie", cookie).ok();
        response.insert_header("cache-control", "no-store").ok();
        response.insert_header("content-length", "0").ok();
        ctx.drop_response_body = true;
    }
}

/// The policy rule of a login allowed because its risk was below `allow_below`.
const TRUSTED_RULE: &str = "allow_below";
/// The policy rule of a login allowed while its user's profile is enrolling.
const ENROLLING_RULE: &str = "enrolling";
