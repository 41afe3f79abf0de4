//! The one place that builds the services from the config: the background runtime and the
//! profile store on it, audit, alerts, learning, the held logins and the regulation counters,
//! assembled into the [`LoginServices`] a login needs. `server` starts listeners around an
//! [`Assembly`]; `proxy` and `admin` receive what they need from it and know nothing of each
//! other.
//!
//! Everything that touches the database runs on gaitkeeper's own background runtime (`bg`),
//! so the proxy's worker threads never wait on a connection pool that belongs to another
//! runtime, and work done after a response (recording, learning, auditing) never delays a
//! request.

use std::sync::Arc;

use std::time::{Duration, SystemTime};

use crate::alert::{Alert, AlertEvent, Alerter};
use crate::audit::{self, AuditRecord, Auditor};
use crate::challenge::oidc::{FlowKeys, OidcError, OidcProvider, SignIn};
use crate::challenge::{
    AssertionError, AssertionVerifier, ExternalMfaConfig, TotpError, TotpVerifier,
};
use crate::config::Config;
use crate::decision::{
    ChallengeResult, HeldDropped, HeldLogin, HeldLogins, LoginAttempt, LoginOutcome, Regulator,
};
use crate::inject::PageTokens;
use crate::learn::{Learner, Recorder, Settle};
use crate::login::TelemetryInbox;
use crate::metrics::Metrics;
use crate::model::UserModel;
use crate::policy::Action;
use crate::runtime::lower_thread_priority;
use crate::shared::{HeldRow, HeldTotals, SharedState, StateError};
use crate::store::{Decision, NewLogin, Outcome, Store, UserKey};

/// Step-up through the operator's OpenID Connect provider (`mfa.oidc`): the provider and the
/// keys its flows' values are derived under.
pub struct OidcStepUp {
    pub provider: Arc<OidcProvider>,
    pub keys: Arc<FlowKeys>,
}

/// One login whose result is known, to be recorded, learnt from and audited.
pub struct Settled {
    pub attempt: LoginAttempt,
    pub outcome: LoginOutcome,
    /// How its challenge ended; none when there was no challenge.
    pub challenge: Option<ChallengeResult>,
}

/// Which factors users have (TOTP, passkeys), as read from the store in the last
/// [`FactorCache::TTL`]. Every challenged login asks; without it each one was a store read on
/// the background runtime, the slowest step of a challenged login. Enrolment happens in
/// another process (`gaitkeeper users enroll-totp`), so a new or removed factor counts for
/// challenges within the TTL. Bounded.
pub struct FactorCache(moka::sync::Cache<UserKey, HasFactors>);

/// Which factors a user has (what [`FactorCache`] remembers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HasFactors {
    pub totp: bool,
    pub passkeys: bool,
}

impl FactorCache {
    pub(crate) const TTL: Duration = Duration::from_secs(10);
    const MAX_USERS: u64 = 100_000;

    pub fn new() -> FactorCache {
        FactorCache(
            moka::sync::Cache::builder()
                .max_capacity(Self::MAX_USERS)
                .time_to_live(Self::TTL)
                .build(),
        )
    }
}

impl Default for FactorCache {
    fn default() -> Self {
        Self::new()
    }
}

pub struct LoginServices {
    pub store: Store,
    /// The state several instances share (`server.shared_state: store`); `None`: this
    /// process's memory (one instance).
    pub shared: Option<Arc<dyn crate::shared::SharedState>>,
    pub learner: Learner,
    pub auditor: Auditor,
    pub alerter: Alerter,
    pub bg: tokio::runtime::Handle,
    pub held: HeldLogins,
    pub regulator: Regulator,
    pub enrollment_logins: u32,
    /// Key for challenge CSRF tokens (derived from `secrets.key`).
    pub csrf_key: Vec<u8>,
    /// Key the enrolment secret of an invitation is derived under (from `secrets.key`).
    pub enrol_key: Vec<u8>,
    pub max_attempts: u32,
    pub totp_enabled: bool,
    pub passkeys_enabled: bool,
    /// Passkey ceremonies (keys from `secrets.key`).
    pub passkeys: crate::challenge::passkey::Ceremonies,
    /// Seals the app answers withheld during an offer to add a factor.
    pub offers: crate::challenge::offer::OfferSeal,
    /// Recent answers of [`LoginServices::has_factors`] (see [`FactorCache`]).
    pub factors: FactorCache,
    pub totp: TotpVerifier,
    /// The external MFA provider, when configured.
    pub external: Option<(ExternalMfaConfig, AssertionVerifier)>,
    /// Step-up through the operator's OpenID Connect provider, when configured.
    pub oidc: Option<OidcStepUp>,
    pub challenge_ttl: Duration,
    /// Records settled logins and learns from the verified ones (batched, in the background).
    pub recorder: Recorder,
    /// Device cookies: browsers that completed a login for a user are exempt from that user's
    /// user-wide limits (`challenge::device`).
    pub devices: crate::challenge::DeviceCookies,
    /// Recent logins of everybody, for replays of a login not yet learnt and for one trace
    /// used for several accounts (`model::replay`).
    pub population: crate::model::replay::PopulationMemory,
    /// What each route's login answers looked like, to warn about a success signal that
    /// never matches ([`LoginServices::note_answer`]).
    pub answers: std::sync::Mutex<std::collections::HashMap<(String, String), RouteAnswers>>,
    /// Set per route while its answers show no success at all.
    pub no_success: prometheus::IntGaugeVec,
    /// Login names as sent whose profile was already offered to their normalised name
    /// ([`LoginServices::carry_over_profile`]); bounded, an hour each.
    pub carried_over: moka::sync::Cache<UserKey, ()>,
}

impl LoginServices {
    /// The model to score `user` with; `Ok(None)` while they have none. Runs on the
    /// background runtime: a cold user's model is read from the store there, once however
    /// many logins ask at the same time.
    pub async fn user_model(&self, user: &UserKey) -> Result<Option<Arc<UserModel>>, String> {
        if let Some(cached) = self.learner.cached_user_model(user).await {
            return Ok(cached);
        }
        let learner = self.learner.clone();
        let user = *user;
        self.bg
            .spawn(async move { learner.user_model(&user).await })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    pub fn global(&self) -> Arc<crate::model::GlobalModel> {
        self.learner.global()
    }

    /// Whether a trained global model is in use (else the per-user detectors decide alone).
    pub fn global_trained(&self) -> bool {
        self.learner.global_trained()
    }

    pub(crate) fn csrf_key(&self) -> Vec<u8> {
        self.csrf_key.clone()
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether an external MFA provider is configured.
    pub(crate) fn external_mfa(&self) -> bool {
        self.external.is_some()
    }

    /// The external provider's URL for challenge `id` of `login`, when one is configured. The
    /// provider sends its answer back to `{prefix}challenge/callback` on the host the browser
    /// used.
    pub(crate) fn external_url(
        &self,
        login: &str,
        id: &str,
        session: &pingora::proxy::Session,
        prefix: &str,
    ) -> Option<(String, String)> {
        let (config, _) = self.external.as_ref()?;
        let headers = &session.req_header().headers;
        let host = headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '@']))?;
        let proto = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .filter(|p| *p == "https")
            .unwrap_or("http");
        let return_url = format!("{proto}://{host}{prefix}challenge/callback");
        let url = config.request_url(
            id,
            login,
            &return_url,
            SystemTime::now(),
            self.challenge_ttl,
        );
        Some((config.name.clone(), url))
    }

    /// Verifies an external provider's assertion: (challenge id, login name) it confirms, or
    /// `Err(Some(challenge id))` when it is genuine but says the user failed.
    /// Several instances also agree that each assertion is used once across all of them.
    pub(crate) async fn verify_assertion(
        &self,
        token: &str,
    ) -> Result<(String, String), Option<String>> {
        let Some((_, verifier)) = &self.external else {
            return Err(None);
        };
        match verifier.verify(token, SystemTime::now()) {
            Ok(a) => {
                if let Some(shared) = &self.shared {
                    let until = crate::runtime::unix_secs(a.expires_at) + 60;
                    match shared.first_use("assertion", a.id.as_bytes(), until).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::info!(reason = "reused", "external MFA assertion refused");
                            return Err(None);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot check an assertion against the shared state; refused");
                            return Err(None);
                        }
                    }
                }
                Ok((a.challenge_id, a.user))
            }
            Err(AssertionError::Failed { challenge_id }) => Err(Some(challenge_id)),
            Err(e) => {
                tracing::info!(reason = e.reason(), "external MFA assertion refused");
                Err(None)
            }
        }
    }

    /// The OpenID Connect provider's name for the challenge page, when one is configured.
    pub(crate) fn oidc_name(&self) -> Option<&str> {
        self.oidc
            .as_ref()
            .map(|o| o.provider.config().display_name.as_str())
    }

    /// Where to send the browser to sign in at the OpenID Connect provider for challenge `id`
    /// (discovery on the background runtime when the metadata is not cached).
    pub(crate) async fn oidc_authorization_url(
        &self,
        id: &str,
        redirect_uri: &str,
    ) -> Result<String, OidcError> {
        let step = self
            .oidc
            .as_ref()
            .ok_or_else(|| OidcError::Unavailable("mfa.oidc is not configured".into()))?;
        let (provider, keys) = (step.provider.clone(), step.keys.clone());
        let (id, redirect_uri) = (id.to_string(), redirect_uri.to_string());
        self.bg
            .spawn(async move { provider.authorization_url(&keys, &id, &redirect_uri).await })
            .await
            .map_err(|e| OidcError::Unavailable(e.to_string()))?
    }

    /// The challenge id an OpenID Connect `state` names, if this deployment made it.
    pub(crate) fn oidc_challenge_of(&self, state: &str) -> Option<String> {
        self.oidc.as_ref()?.keys.challenge_of(state)
    }

    /// Exchanges the provider's `code` for challenge `id` and verifies its ID token, on the
    /// background runtime: what the provider says about the sign-in.
    pub(crate) async fn oidc_sign_in(
        &self,
        id: &str,
        code: &str,
        redirect_uri: &str,
    ) -> Result<SignIn, OidcError> {
        let step = self
            .oidc
            .as_ref()
            .ok_or_else(|| OidcError::Unavailable("mfa.oidc is not configured".into()))?;
        let (provider, keys) = (step.provider.clone(), step.keys.clone());
        let (id, code, redirect_uri) = (id.to_string(), code.to_string(), redirect_uri.to_string());
        self.bg
            .spawn(async move { provider.sign_in(&keys, &id, &code, &redirect_uri).await })
            .await
            .map_err(|e| OidcError::Unavailable(e.to_string()))?
    }

    /// Audits a step-up through the OpenID Connect provider that was refused, with why.
    pub(crate) fn oidc_refused(&self, attempt: &LoginAttempt, error: &OidcError) {
        let mut record = Self::record_of(
            &Settled {
                attempt: attempt.clone(),
                outcome: LoginOutcome::Challenged,
                challenge: None,
            },
            audit::kind::OIDC_REFUSED,
        );
        record.reasons = serde_json::json!([{ "code": "oidc", "reason": error.reason() }]);
        self.auditor.record(record);
    }

    /// Checks a TOTP code: `Err` carries the reason code (`wrong_code`, `reused`, `malformed`,
    /// `rate_limited`, …).
    /// Several instances (`server.shared_state: store`) also agree that each step's code is
    /// used once across all of them (`unavailable` when that cannot be checked).
    pub(crate) async fn verify_totp(
        &self,
        user: &UserKey,
        secret: &[u8],
        code: &str,
        sender: crate::challenge::totp::Sender<'_>,
    ) -> Result<(), TotpError> {
        let Some(shared) = &self.shared else {
            return self
                .totp
                .verify_step(user, secret, code, SystemTime::now(), sender)
                .map(|_| ());
        };
        let unavailable = |e: StateError| {
            tracing::warn!(error = %e, "cannot check a TOTP code against the shared state");
            TotpError::Unavailable
        };
        // The guess budgets of every instance: this user's wrong codes from everywhere and
        // from this address, read before the code is looked at (one round trip).
        let slots = crate::shared::totp_slots(&user.to_string(), sender.address);
        if !sender.trusted_device {
            let counts = shared.failure_counts(&slots).await.map_err(unavailable)?;
            crate::challenge::totp::within_budget(counts[0], counts[1])?;
        }
        let step = match self
            .totp
            .verify_step(user, secret, code, SystemTime::now(), sender)
        {
            Ok(step) => step,
            Err(TotpError::WrongCode) => {
                if !sender.trusted_device {
                    let window = Duration::from_secs(crate::challenge::totp::FAILURE_WINDOW_SECS);
                    let counted = slots
                        .iter()
                        .map(|s| (s.clone(), u32::MAX))
                        .collect::<Vec<_>>();
                    if let Err(e) = shared.count_failures(&counted, window, window).await {
                        // The code was wrong either way; this instance still counted it.
                        tracing::warn!(error = %e, "cannot count a wrong TOTP code in the shared state");
                    }
                }
                return Err(TotpError::WrongCode);
            }
            Err(refused) => return Err(refused),
        };
        let mut id = user.0.to_vec();
        id.extend_from_slice(&step.to_be_bytes());
        let until = crate::challenge::totp::accepted_until(step);
        if !shared
            .first_use("totp_step", &id, until)
            .await
            .map_err(unavailable)?
        {
            return Err(TotpError::Reused);
        }
        // This address proved itself; the user-wide count stays (an attack may go on).
        if let Err(e) = shared.clear_failures(&slots[1..]).await {
            tracing::warn!(error = %e, "cannot clear an address's wrong TOTP codes in the shared state");
        }
        Ok(())
    }

    /// Whether the browser's device cookie (if any) vouches for `user`.
    pub(crate) fn trusted_device(&self, cookie: Option<&str>, user: &UserKey) -> bool {
        cookie.is_some_and(|c| {
            self.devices
                .vouches(c, user, crate::challenge::device::day(SystemTime::now()))
        })
    }

    /// The `Set-Cookie` value that marks this browser as `user`'s (after a verified login);
    /// `Secure` and `__Host-` when the client is on HTTPS.
    pub(crate) fn device_cookie(
        &self,
        existing: Option<&str>,
        user: &UserKey,
        https: bool,
    ) -> String {
        let value = self.devices.issue(
            existing,
            user,
            crate::challenge::device::day(SystemTime::now()),
        );
        format!(
            "{}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
            crate::challenge::device::cookie_name(https),
            crate::challenge::device::LIFETIME_DAYS * 86_400,
            if https { "; Secure" } else { "" }
        )
    }

    /// Carries the profile stored under a login name as it was sent (`Alice ` with its
    /// space, keyed before names were normalised) over to its normalised name, if that has no
    /// profile yet (`Store::rekey_user`). Tried once per spelling an hour, so spellings an
    /// attacker makes up cost one store write each at most; a store error is logged and the
    /// login goes on with the normalised name.
    pub(crate) async fn carry_over_profile(&self, as_sent: &str, name: &str) {
        let Ok(key) = self.store.user_key(as_sent) else {
            return;
        };
        if self.carried_over.get(&key).is_some() {
            return;
        }
        self.carried_over.insert(key, ());
        let (store, learner) = (self.store.clone(), self.learner.clone());
        let (as_sent, name) = (as_sent.to_string(), name.to_string());
        let moved = self
            .bg
            .spawn(async move {
                let moved = store.rekey_user(&as_sent, &name).await;
                if let Ok(true) = moved {
                    for key in [store.user_key(&as_sent), store.user_key(&name)]
                        .into_iter()
                        .flatten()
                    {
                        learner.forget_cached(&key).await;
                    }
                }
                moved
            })
            .await;
        match moved {
            Ok(Ok(true)) => tracing::info!("moved a profile to its user's normalised login name"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not move a profile to its normalised login name")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not move a profile to its normalised login name")
            }
        }
    }

    /// Counts one answered login of `route`; after [`NO_SUCCESS_AFTER`] answers without a
    /// single success, warns once (a log line naming the likely fix, and
    /// `gaitkeeper_route_without_success{app,route}` set to 1): the success signal probably does
    /// not match what the app answers, so users never enrol and are regulated.
    pub(crate) fn note_answer(&self, app: &str, route: &str, status: u16, succeeded: bool) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        let slot = (app.to_string(), route.to_string());
        if answers.len() >= 1024 && !answers.contains_key(&slot) {
            return;
        }
        let r = answers.entry(slot).or_default();
        r.answered += 1;
        if succeeded {
            r.succeeded += 1;
            if r.warned {
                r.warned = false;
                self.no_success.with_label_values(&[app, route]).set(0);
            }
            return;
        }
        if r.statuses.len() < 16 || r.statuses.contains_key(&status) {
            *r.statuses.entry(status).or_default() += 1;
        }
        if r.succeeded == 0 && r.answered >= NO_SUCCESS_AFTER && !r.warned {
            r.warned = true;
            self.no_success.with_label_values(&[app, route]).set(1);
            let common = r
                .statuses
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(s, _)| *s)
                .unwrap_or(0);
            let fix = if (200..300).contains(&common) {
                format!("the app answers {common} to logins: set routes[].success.status to [{common}] and tell success by the body (success.json_pointer_present, e.g. \"/access_token\", or success.json_equals)")
            } else {
                format!("the app answers mostly {common}: check routes[].success (status, location_prefix, set_cookie) against what a successful login returns")
            };
            tracing::warn!(
                route,
                answered = r.answered,
                most_common_status = common,
                "no login on this route has counted as successful; users will never enrol and will be regulated. Likely fix: {fix}"
            );
        }
    }

    /// Whether the store answers within a second (for `/readyz`).
    pub(crate) async fn store_ready(&self) -> bool {
        let store = self.store.clone();
        let ping = self
            .bg
            .spawn(async move { tokio::time::timeout(Duration::from_secs(1), store.ping()).await });
        matches!(ping.await, Ok(Ok(Ok(()))))
    }

    /// Which factors `user` has (of those turned on). Answered from [`FactorCache`] when it
    /// knows; else read from the store on the background runtime.
    pub async fn has_factors(&self, user: &UserKey) -> Result<HasFactors, String> {
        let known = match self.factors.0.get(user) {
            Some(known) => known,
            None => {
                let key = *user;
                let factors = self
                    .in_store(move |store| async move { store.factors(&key).await })
                    .await?;
                let known = HasFactors {
                    totp: factors.totp_since.is_some(),
                    passkeys: !factors.passkeys.is_empty(),
                };
                self.factors.0.insert(*user, known);
                known
            }
        };
        Ok(HasFactors {
            totp: known.totp && self.totp_enabled,
            passkeys: known.passkeys && self.passkeys_enabled,
        })
    }

    /// Whether `user` has a TOTP second factor enrolled (and TOTP is on).
    pub async fn has_totp(&self, user: &UserKey) -> Result<bool, String> {
        Ok(self.has_factors(user).await?.totp)
    }

    /// The user's passkeys, read now (a passkey removed a moment ago does not pass).
    pub async fn user_passkeys(
        &self,
        user: &UserKey,
    ) -> Result<Vec<crate::store::StoredPasskey>, String> {
        let user = *user;
        self.in_store(move |store| async move { store.passkeys(&user).await })
            .await
    }

    /// Records a passkey's use (and its moved counter).
    pub async fn passkey_used(
        &self,
        user: &UserKey,
        credential_id: Vec<u8>,
        updated: Option<String>,
    ) -> Result<(), String> {
        let user = *user;
        self.in_store(move |store| async move {
            store
                .passkey_used(&user, &credential_id, updated.as_deref())
                .await
        })
        .await
    }

    /// The user's TOTP secret, if enrolled.
    pub async fn totp_secret(&self, user: &UserKey) -> Result<Option<Vec<u8>>, String> {
        let user = *user;
        self.in_store(move |store| async move { store.totp_secret(&user).await })
            .await
    }

    /// Runs `job` on the store on the background runtime, where its connections live; errors
    /// as text (the caller logs them and answers).
    async fn in_store<T, Fut>(&self, job: impl FnOnce(Store) -> Fut) -> Result<T, String>
    where
        Fut: std::future::Future<Output = Result<T, crate::store::StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        self.bg
            .spawn(job(self.store.clone()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Uses one of `user`'s recovery codes (`code` normalised): how many are left, `None` when
    /// it is not one of theirs, `Err` when the store cannot tell.
    pub(crate) async fn use_recovery_code(
        &self,
        user: &UserKey,
        code: String,
    ) -> Result<Option<u32>, String> {
        let user = *user;
        self.in_store(move |store| async move { store.use_recovery_code(&user, &code).await })
            .await
    }

    /// Audits and alerts a challenge passed with a recovery code (the user may have lost their
    /// authenticator — or somebody has their codes), with how many are left.
    pub(crate) fn recovery_code_used(&self, attempt: &LoginAttempt, left: u32) {
        let mut record = Self::record_of(
            &Settled {
                attempt: attempt.clone(),
                outcome: LoginOutcome::Challenged,
                challenge: Some(ChallengeResult::Passed),
            },
            audit::kind::RECOVERY_CODE_USED,
        );
        record.reasons = serde_json::json!([{ "code": "recovery_code", "left": left }]);
        self.alerter
            .notify(Alert::for_record(AlertEvent::RecoveryCodeUsed, &record));
        self.auditor.record(record);
    }

    /// Audits a challenge passed with `factor` (a passkey; TOTP passes are the
    /// `challenge.passed` record alone).
    pub(crate) fn factor_used(&self, attempt: &LoginAttempt, factor: &str) {
        let mut record = Self::record_of(
            &Settled {
                attempt: attempt.clone(),
                outcome: LoginOutcome::Challenged,
                challenge: Some(ChallengeResult::Passed),
            },
            audit::kind::FACTOR_USED,
        );
        record.reasons = serde_json::json!([{ "code": factor }]);
        self.auditor.record(record);
    }

    /// The live invitation `id` (`users invite`), if any.
    pub(crate) async fn invitation(
        &self,
        id: &str,
    ) -> Result<Option<crate::store::Invitation>, String> {
        let id = id.to_string();
        self.in_store(move |store| async move { store.invitation(&id).await })
            .await
    }

    /// Enrols the user invited by `id` with `secret` (see `Store::enrol_invited`): the
    /// recovery codes issued with it (empty when they had some), or `None` when the
    /// invitation is used or expired. Audited and alerted.
    pub(crate) async fn enrol_invited(
        &self,
        id: &str,
        factor: crate::store::NewFactor,
        client_ip: &str,
    ) -> Result<Option<Vec<String>>, String> {
        let codes = crate::challenge::recovery::generate();
        let stored = crate::challenge::recovery::stored_form(&codes);
        let id = id.to_string();
        let code = match &factor {
            crate::store::NewFactor::Totp(_) => "totp",
            crate::store::NewFactor::Passkey(_) => "passkey",
        };
        let enrolled = self
            .in_store(move |store| async move { store.enrol_invited(&id, &factor, &stored).await })
            .await?;
        let Some((invitation, issued)) = enrolled else {
            return Ok(None);
        };
        self.factor_added(
            &invitation.user,
            &invitation.app,
            client_ip,
            code,
            "invitation",
        );
        Ok(Some(if issued { codes } else { Vec::new() }))
    }

    /// Adds `factor` for the user of an offer after a trusted login (see `Store::add_factor`):
    /// the recovery codes to show (empty when they had some), or `None` when it may not be
    /// added.
    pub(crate) async fn add_offered_factor(
        &self,
        withheld: &crate::challenge::offer::Withheld,
        factor: crate::store::NewFactor,
        client_ip: &str,
    ) -> Result<Option<Vec<String>>, String> {
        let codes = crate::challenge::recovery::generate();
        let stored = crate::challenge::recovery::stored_form(&codes);
        let code = match &factor {
            crate::store::NewFactor::Totp(_) => "totp",
            crate::store::NewFactor::Passkey(_) => "passkey",
        };
        let (login, app) = (withheld.scoped_login.clone(), withheld.app.clone());
        let added = self
            .in_store(move |store| async move {
                store
                    .add_factor(&login, &app, &factor, &stored, "offer")
                    .await
            })
            .await?;
        let Some((user, issued)) = added else {
            return Ok(None);
        };
        self.factor_added(&user, &withheld.app, client_ip, code, "offer");
        Ok(Some(if issued { codes } else { Vec::new() }))
    }

    /// Whether the user may be offered to add a factor now: always when `again_after` is
    /// `None` (required), else when they were not offered within it; the offer is noted.
    /// `false` when the store cannot tell (the login goes on unchanged).
    pub(crate) async fn offer_due(&self, user: &UserKey, again_after: Option<Duration>) -> bool {
        let key = *user;
        let due = self
            .in_store(move |store| async move {
                if let Some(again_after) = again_after {
                    if let Some(at) = store.factor_offered_at(&key).await? {
                        if at + again_after > SystemTime::now() {
                            return Ok(false);
                        }
                    }
                }
                store.factor_offered(&key).await?;
                Ok(true)
            })
            .await;
        due.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read or note a factor offer");
            false
        })
    }

    /// Audits that the user of `attempt` is being asked to add a factor.
    pub(crate) fn factor_offered(&self, attempt: &LoginAttempt, required: bool) {
        let mut record = AuditRecord::new(audit::kind::FACTOR_OFFERED, &attempt.incident);
        record.user_key = Some(attempt.user.to_string());
        record.app = Some(attempt.app.clone());
        record.route = Some(attempt.route.clone());
        record.request_id = Some(attempt.request_id.clone());
        record.client_ip = Some(attempt.client_ip.clone());
        record.reasons =
            serde_json::json!([{ "code": if required { "required" } else { "offered" } }]);
        self.auditor.record(record);
    }

    /// A factor was added: challenges offer it from now on; audited and alerted.
    fn factor_added(&self, user: &UserKey, app: &str, client_ip: &str, code: &str, via: &str) {
        self.factors.0.invalidate(user);
        let mut record = AuditRecord::new(audit::kind::FACTOR_ADDED, &audit::new_incident());
        record.user_key = Some(user.to_string());
        record.app = Some(app.to_string());
        record.client_ip = Some(client_ip.to_string());
        record.reasons = serde_json::json!([{ "code": code, "via": via }]);
        self.alerter
            .notify(Alert::for_record(AlertEvent::FactorAdded, &record));
        self.auditor.record(record);
    }

    /// The audit record of a login decision or outcome.
    pub(crate) fn record_of(s: &Settled, kind: &str) -> AuditRecord {
        let a = &s.attempt;
        let mut r = AuditRecord::new(kind, &a.incident);
        r.request_id = Some(a.request_id.clone());
        r.app = Some(a.app.clone());
        r.route = Some(a.route.clone());
        r.user_key = Some(a.user.to_string());
        r.risk = a.risk;
        r.reasons = a.reasons.clone();
        r.decision = Some(a.verdict.decision.as_str().to_string());
        r.policy = Some(a.verdict.rule.to_string());
        r.mode = Some(a.mode.as_str().to_string());
        if let Some(inputs) = &a.inputs {
            r.set_inputs(inputs);
        }
        r.outcome = Some(s.outcome.as_str().to_string());
        r.challenge = s.challenge.map(|c| c.as_str().to_string());
        r.client_ip = Some(a.client_ip.clone());
        r
    }

    /// Audits a decision whose outcome comes later (a challenge issued).
    pub(crate) fn audit_decision(&self, s: &Settled) {
        self.auditor
            .record(Self::record_of(s, audit::kind::LOGIN_DECISION));
    }

    /// Alerts the security team to a replayed page token (whatever the policy did with it).
    pub(crate) fn alert_replay(&self, s: &Settled) {
        let record = Self::record_of(s, audit::kind::TELEMETRY_REPLAYED);
        self.alerter
            .notify(Alert::for_record(AlertEvent::Replay, &record));
        self.auditor.record(record);
    }

    /// Audits something that is not tied to one user (an unreadable login name).
    pub fn audit(&self, record: AuditRecord) {
        self.auditor.record(record);
    }

    /// Records, learns from (when verified), audits and alerts on a settled login. Never on
    /// the request path: the store work runs on the background runtime, the audit record and
    /// the alert go to their own workers.
    pub(crate) fn settle(&self, s: Settled) {
        let kind = match s.outcome {
            LoginOutcome::Blocked => audit::kind::LOGIN_DECISION,
            LoginOutcome::ChallengeFailed => audit::kind::CHALLENGE_FAILED,
            LoginOutcome::ChallengeExpired | LoginOutcome::ChallengeEvicted => {
                audit::kind::CHALLENGE_EXPIRED
            }
            _ if s.challenge == Some(ChallengeResult::Passed) => audit::kind::CHALLENGE_PASSED,
            _ => audit::kind::LOGIN_OUTCOME,
        };
        let record = Self::record_of(&s, kind);
        let event = match s.outcome {
            LoginOutcome::Blocked => Some(AlertEvent::Block),
            LoginOutcome::ChallengeFailed => Some(AlertEvent::ChallengeFailed),
            _ => None,
        };
        if let Some(event) = event {
            self.alerter.notify(Alert::for_record(event, &record));
        }
        self.auditor.record(record);

        let verified = s.outcome == LoginOutcome::Verified;
        let a = s.attempt;
        let features = a.features.as_ref().map(crate::features::to_blob).unwrap_or(
            crate::features::FeatureBlob {
                version: crate::features::FEATURE_VERSION,
                bytes: Vec::new(),
            },
        );
        self.recorder.record(Settle {
            new: NewLogin {
                at: SystemTime::now(),
                features,
                risk: a.risk.unwrap_or(0.0),
                reasons: a.reasons,
                decision: match a.verdict.decision {
                    Action::Allow => Decision::Allow,
                    Action::Challenge => Decision::Challenge,
                    Action::Block => Decision::Block,
                },
                outcome: if verified {
                    Outcome::Verified
                } else {
                    Outcome::Failed
                },
            },
            login: a.login,
            features: a.features,
            request_id: a.request_id,
        });
    }

    /// Settles held logins that expired or were evicted, and sweeps expiry every few seconds
    /// (moka expires lazily; shared rows only carry their deadline, and the instance that
    /// sweeps one first settles it). The channel holds at most what the held-login bounds
    /// allow.
    pub(crate) fn spawn_held_sweeper(
        self: &Arc<Self>,
        mut dropped: tokio::sync::mpsc::UnboundedReceiver<(Arc<HeldLogin>, HeldDropped)>,
        metrics: Arc<crate::metrics::Metrics>,
    ) {
        let services = self.clone();
        self.bg.spawn(async move {
            while let Some((held, why)) = dropped.recv().await {
                let (outcome, challenge) = why.outcome();
                services.settle_held(&held, outcome, challenge);
            }
        });
        crate::runtime::spawn_every(&self.bg, self, GAUGE_PERIOD, move |services| {
            let metrics = metrics.clone();
            async move {
                let swept = services.held.sweep().await;
                if let Err(e) = swept.and(services.held.totals().await.map(|totals| {
                    metrics.held_logins.set(totals.count as i64);
                    metrics.held_login_bytes.set(totals.bytes as i64);
                })) {
                    metrics.state_errors.inc();
                    tracing::warn!(error = %e, "cannot settle expired held logins in the shared state; they are settled at a later sweep");
                }
            }
        });
    }

    /// Settles a held login whose challenge was failed or expired.
    pub(crate) fn settle_held(
        &self,
        held: &HeldLogin,
        outcome: LoginOutcome,
        challenge: ChallengeResult,
    ) {
        self.settle(Settled {
            attempt: held.attempt.clone(),
            outcome,
            challenge: Some(challenge),
        });
    }
}

/// Answered logins of a route without any success after which gaitkeeper warns.
pub(crate) const NO_SUCCESS_AFTER: u64 = 20;

/// What one route's login answers looked like.
#[derive(Default)]
pub struct RouteAnswers {
    answered: u64,
    succeeded: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
    warned: bool,
}

/// How often settled hours of the audit trail are packed, and how far back.
const PACK_PERIOD: Duration = Duration::from_secs(600);
const PACKED_SPAN: Duration = Duration::from_secs(31 * 86_400);
/// How often the gauges that need counting (held logins, the page-token replay memory) are set.
pub(crate) const GAUGE_PERIOD: Duration = Duration::from_secs(5);

/// Logins remembered across all users for replay detection (a few hundred bytes each).
const POPULATION_MEMORY: usize = 50_000;

/// Why the services could not be built from the config.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Audit(crate::audit::AuditError),
    #[error(transparent)]
    Alerts(crate::alert::AlertError),
    #[error("cannot use the external MFA provider's key (mfa.external.assertion): {0}")]
    Mfa(crate::challenge::KeyError),
    #[error(transparent)]
    Oidc(crate::challenge::oidc::OidcSetupError),
    #[error("cannot start the runtime that opens the profile store: {0}")]
    StoreRuntime(std::io::Error),
}

/// The services of one running gaitkeeper, built from its config; the listeners borrow from it.
pub(crate) struct Assembly {
    /// gaitkeeper's own runtime: the store, learning, audit and alert workers run on it.
    pub background: tokio::runtime::Runtime,
    pub services: Arc<LoginServices>,
    pub tokens: Arc<PageTokens>,
    pub inbox: Arc<TelemetryInbox>,
    /// The shared state's runtime (`server.shared_state: store`), at the request threads'
    /// priority.
    state_runtime: Option<tokio::runtime::Runtime>,
    recorder: Recorder,
    auditor: Auditor,
}

impl Assembly {
    /// Opens the store (creating or migrating it) and starts every background worker.
    pub(crate) fn build(config: &Config, metrics: Arc<Metrics>) -> Result<Assembly, AssembleError> {
        let (background, store) = open_store(config)?;
        let state_runtime = match config.shared_state_mode() {
            crate::config::SharedStateMode::Store => Some(open_shared_state(config)?),
            crate::config::SharedStateMode::Local => None,
        };
        let shared: Option<Arc<dyn crate::shared::SharedState>> =
            state_runtime.as_ref().map(|(runtime, store)| {
                Arc::new(OnBackground {
                    store: store.clone(),
                    bg: runtime.handle().clone(),
                }) as Arc<dyn crate::shared::SharedState>
            });
        if shared.is_some() {
            tracing::info!(store = %store.url(), "shared state in the store: instances using it act as one");
            let sweeper = store.clone();
            background.spawn(async move {
                let mut tick = tokio::time::interval(SHARED_SWEEP_PERIOD);
                loop {
                    tick.tick().await;
                    let now = crate::runtime::unix_secs(SystemTime::now());
                    if let Err(e) = sweeper.sweep_shared(now, 20).await {
                        tracing::warn!(error = %e, "cannot sweep expired shared state; it is ignored until the next sweep");
                    }
                }
            });
        }
        let inbox = Arc::new(TelemetryInbox::new(config.admin.debug_telemetry));
        if config.admin.debug_telemetry {
            tracing::warn!("admin.debug_telemetry is on: recent login telemetry is visible on the admin listener; turn it off in production");
        }
        let tokens = Arc::new(PageTokens::new(config.secrets.key.expose()));
        let mfa = &config.mfa;
        let external = match &mfa.external {
            Some(ext) => Some((
                ext.clone(),
                AssertionVerifier::new(ext, mfa.max_held).map_err(AssembleError::Mfa)?,
            )),
            None => None,
        };
        let oidc = match &mfa.oidc {
            Some(oidc) => Some(OidcStepUp {
                provider: Arc::new(OidcProvider::new(oidc).map_err(AssembleError::Oidc)?),
                keys: Arc::new(FlowKeys::derive(config.secrets.key.expose())),
            }),
            None => None,
        };
        let auditor = Auditor::new(
            &config.audit,
            store.clone(),
            &config.server.data_dir,
            metrics.audit.clone(),
        )
        .map_err(AssembleError::Audit)?;
        let alerter = match &config.alerts {
            Some(alerts) => Alerter::throttled_across(
                alerts,
                auditor.clone(),
                metrics.alerts.clone(),
                shared.clone(),
            )
            .map_err(AssembleError::Alerts)?,
            None => Alerter::off(),
        };
        let (dropped_tx, dropped_rx) = tokio::sync::mpsc::unbounded_channel();
        let learner = Learner::new(
            store.clone(),
            &config.learning,
            &config.store,
            &metrics.learning,
            &metrics.model_cache,
        );
        // Load the newest global model now and keep retraining on schedule, on `bg`.
        if let Err(e) = background.block_on(learner.load_global()) {
            tracing::warn!(error = %e, "cannot load the global model; the per-user detectors decide alone until it loads");
        }
        {
            let _inside = background.enter();
            learner.spawn_background();
        }
        let recorder = Recorder::start(
            store.clone(),
            learner.clone(),
            background.handle(),
            metrics.settle_dropped.clone(),
        );
        let services = Arc::new(LoginServices {
            store,
            shared: shared.clone(),
            learner,
            auditor: auditor.clone(),
            alerter,
            bg: background.handle().clone(),
            held: {
                // Never blocks: the receiver drains on the background runtime.
                let on_dropped = move |held, why| {
                    let _ = dropped_tx.send((held, why));
                };
                let (count, bytes, ttl) =
                    (mfa.max_held, mfa.max_held_bytes as u64, mfa.challenge_ttl.0);
                match &shared {
                    Some(state) => HeldLogins::shared(
                        state.clone(),
                        config.secrets.key.expose(),
                        count,
                        bytes,
                        ttl,
                        on_dropped,
                    ),
                    None => HeldLogins::new(count, bytes, ttl, on_dropped),
                }
            },
            regulator: Regulator::new(&config.regulation)
                .shared_in(shared.clone())
                .counting(metrics.regulation_failures.clone()),
            enrollment_logins: config.store.enrollment_logins,
            csrf_key: derive_key(config.secrets.key.expose(), b"gaitkeeper challenge csrf"),
            enrol_key: derive_key(config.secrets.key.expose(), b"gaitkeeper enrolment"),
            max_attempts: mfa.totp.max_attempts,
            totp_enabled: mfa.totp.enabled,
            passkeys_enabled: mfa.passkeys.enabled,
            passkeys: crate::challenge::passkey::Ceremonies::new(config.secrets.key.expose()),
            offers: crate::challenge::offer::OfferSeal::new(config.secrets.key.expose()),
            factors: Default::default(),
            totp: TotpVerifier::default(),
            external,
            oidc,
            challenge_ttl: mfa.challenge_ttl.0,
            recorder: recorder.clone(),
            devices: crate::challenge::DeviceCookies::new(derive_key(
                config.secrets.key.expose(),
                b"gaitkeeper device cookie",
            )),
            population: crate::model::replay::PopulationMemory::new(POPULATION_MEMORY),
            answers: Default::default(),
            no_success: metrics.route_without_success.clone(),
            carried_over: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(3600))
                .build(),
        });
        services.spawn_held_sweeper(dropped_rx, metrics.clone());
        // Settled hours of the audit trail packed as they close, so the console and
        // `policy what-if` find a week (or a month) read in a few hundred values.
        crate::runtime::spawn_every(background.handle(), &services, PACK_PERIOD, |services| {
            let store = services.store.clone();
            async move {
                let now = crate::runtime::unix_millis(SystemTime::now());
                let from = now.saturating_sub(PACKED_SPAN.as_millis() as u64);
                match store.pack_login_hours(from as i64, now as i64).await {
                    Ok(0) => {}
                    Ok(packed) => {
                        tracing::debug!(packed, "packed settled hours of the audit trail")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot pack settled hours of the audit trail; the console and what-if read their rows (slower) until a later attempt")
                    }
                }
            }
        });
        let gauge = metrics.page_tokens_remembered.clone();
        crate::runtime::spawn_every(background.handle(), &tokens, GAUGE_PERIOD, move |tokens| {
            gauge.set(tokens.remembered() as i64);
            async {}
        });
        Ok(Assembly {
            background,
            services,
            tokens,
            inbox,
            state_runtime: state_runtime.map(|(runtime, _)| runtime),
            recorder,
            auditor,
        })
    }

    /// Lets recording, learning and audit work already handed off finish, then stops the
    /// background runtime (waiting at most `grace` for its tasks).
    pub(crate) fn shutdown(self, grace: Duration) {
        self.background.block_on(self.recorder.flush());
        self.background.block_on(self.auditor.flush());
        self.background.shutdown_timeout(grace);
        if let Some(state) = self.state_runtime {
            state.shutdown_timeout(grace);
        }
    }
}

/// The shared state in the store, each call run on the runtime where its connections live
/// (`open_shared_state`), whichever thread asks.
struct OnBackground {
    store: Store,
    bg: tokio::runtime::Handle,
}

impl OnBackground {
    /// Runs `job` on the store's runtime.
    async fn run<T, Fut>(&self, job: impl FnOnce(Store) -> Fut) -> Result<T, StateError>
    where
        Fut: std::future::Future<Output = Result<T, StateError>> + Send + 'static,
        T: Send + 'static,
    {
        self.bg
            .spawn(job(self.store.clone()))
            .await
            .map_err(|e| StateError(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl SharedState for OnBackground {
    async fn first_use(
        &self,
        kind: &'static str,
        id: &[u8],
        until: u64,
    ) -> Result<bool, StateError> {
        let id = id.to_vec();
        self.run(move |store| async move { store.first_use(kind, &id, until).await })
            .await
    }

    async fn count_failures(
        &self,
        slots: &[(String, u32)],
        window: Duration,
        ban: Duration,
    ) -> Result<bool, StateError> {
        let slots = slots.to_vec();
        self.run(move |store| async move { store.count_failures(&slots, window, ban).await })
            .await
    }

    async fn banned(&self, slots: &[String]) -> Result<Vec<String>, StateError> {
        let slots = slots.to_vec();
        self.run(move |store| async move { store.banned(&slots).await })
            .await
    }

    async fn first_use_and_banned(
        &self,
        kind: &'static str,
        id: &[u8],
        until: u64,
        slots: &[String],
    ) -> Result<(bool, Vec<String>), StateError> {
        let (id, slots) = (id.to_vec(), slots.to_vec());
        self.run(
            move |store| async move { store.first_use_and_banned(kind, &id, until, &slots).await },
        )
        .await
    }

    async fn failure_counts(&self, slots: &[String]) -> Result<Vec<u32>, StateError> {
        let slots = slots.to_vec();
        self.run(move |store| async move { store.failure_counts(&slots).await })
            .await
    }

    async fn clear_failures(&self, slots: &[String]) -> Result<(), StateError> {
        let slots = slots.to_vec();
        self.run(move |store| async move { store.clear_failures(&slots).await })
            .await
    }

    async fn hold(&self, row: &HeldRow) -> Result<HeldTotals, StateError> {
        let row = row.clone();
        self.run(move |store| async move { store.hold(&row).await })
            .await
    }

    async fn held(&self, key: &[u8; 32], released: bool) -> Result<Option<HeldRow>, StateError> {
        let key = *key;
        self.run(move |store| async move { store.held(&key, released).await })
            .await
    }

    async fn take_held(
        &self,
        key: &[u8; 32],
        released: bool,
    ) -> Result<Option<HeldRow>, StateError> {
        let key = *key;
        self.run(move |store| async move { store.take_held(&key, released).await })
            .await
    }

    async fn count_held_attempt(&self, key: &[u8; 32]) -> Result<Option<u32>, StateError> {
        let key = *key;
        self.run(move |store| async move { store.count_held_attempt(&key).await })
            .await
    }

    async fn set_held_inline(&self, key: &[u8; 32], inline: u8) -> Result<(), StateError> {
        let key = *key;
        self.run(move |store| async move { store.set_held_inline(&key, inline).await })
            .await
    }

    async fn release_held(&self, key: &[u8; 32], released: &HeldRow) -> Result<bool, StateError> {
        let (key, released) = (*key, released.clone());
        self.run(move |store| async move { store.release_held(&key, &released).await })
            .await
    }

    async fn evict_held(&self, max_count: u64, max_bytes: u64) -> Result<Vec<HeldRow>, StateError> {
        self.run(move |store| async move { store.evict_held(max_count, max_bytes).await })
            .await
    }

    async fn expired_held(&self, limit: u32) -> Result<Vec<HeldRow>, StateError> {
        self.run(move |store| async move { store.expired_held(limit).await })
            .await
    }

    async fn held_totals(&self) -> Result<HeldTotals, StateError> {
        self.run(|store| async move { store.held_totals().await })
            .await
    }
}

/// How often expired shared-state rows are deleted (they are ignored from their deadline on).
const SHARED_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// Starts gaitkeeper's background runtime and opens the profile store on it: creates the
/// embedded SQLite file with its schema on first start (or migrates PostgreSQL) and checks it
/// was made with this server key, so a misconfigured store stops the start with a precise error
/// instead of failing logins. Everything that touches the store later runs on this runtime.
fn open_store(config: &Config) -> Result<(tokio::runtime::Runtime, Store), AssembleError> {
    open_store_on(config, "gaitkeeper-bg", 2, true)
}

/// Opens the store on a runtime of its own with `threads` workers, at the background priority
/// when `background` (else at the request threads' priority).
fn open_store_on(
    config: &Config,
    name: &str,
    threads: usize,
    background: bool,
) -> Result<(tokio::runtime::Runtime, Store), AssembleError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(threads).thread_name(name);
    if background {
        builder.on_thread_start(lower_thread_priority);
    }
    let runtime = builder
        .enable_all()
        .build()
        .map_err(AssembleError::StoreRuntime)?;
    // Opened on one of the runtime's threads, not this one: SQLite connections run on threads
    // of their own that inherit the opening thread's priority.
    let (store_config, data_dir, key) = (
        config.store.clone(),
        config.server.data_dir.clone(),
        config.secrets.key.clone(),
    );
    let opening = runtime.spawn(async move {
        let store = Store::open(&store_config, &data_dir, &key).await?;
        tracing::info!(store = %store.url(), "profile store ready");
        Ok::<Store, AssembleError>(store)
    });
    let store = runtime
        .block_on(opening)
        .map_err(|e| AssembleError::StoreRuntime(std::io::Error::other(e.to_string())))??;
    Ok((runtime, store))
}

/// The shared state's own connections, on a runtime of their own at the request threads'
/// priority: a login waits on these calls, so they must not queue behind the background work
/// (which runs at idle priority and starves, by design, when the proxy is busy).
fn open_shared_state(config: &Config) -> Result<(tokio::runtime::Runtime, Store), AssembleError> {
    open_store_on(config, "gaitkeeper-state", 1, false)
}

/// A purpose-specific key derived from `secrets.key`.
fn derive_key(secret: &[u8], purpose: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(purpose);
    mac.finalize().into_bytes().to_vec()
}
