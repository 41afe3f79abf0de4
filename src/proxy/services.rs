//! What the login path reaches beyond the request: the profile store and the stages behind it
//! (learning, audit, alerts), the held logins and the regulation counters. Everything that
//! touches the database runs on gaitkeeper's own background runtime (`bg`), so the proxy's
//! worker threads never wait on a connection pool that belongs to another runtime, and work
//! done after a response (recording, learning, auditing) never delays a request.

use std::sync::Arc;

use std::time::{Duration, SystemTime};

use crate::challenge::{AssertionError, AssertionVerifier, ExternalMfaConfig, TotpVerifier};
use crate::decision::{HeldLogin, HeldLogins, Regulator};
use crate::features::FeatureVector;
use crate::model::UserModel;
use crate::policy::Action;
use crate::store::{Decision, NewLogin, Outcome, Store, UserKey};

/// One login whose result is known, to be recorded, learnt from and audited.
pub struct Settled {
    pub route: String,
    pub login: String,
    pub user: UserKey,
    pub features: Option<FeatureVector>,
    pub risk: Option<f64>,
    pub reasons: serde_json::Value,
    pub decision: Action,
    pub rule: &'static str,
    pub mode: &'static str,
    /// `verified` (the app confirmed it), `failed` (the app refused it), `blocked`,
    /// `challenge_failed`, `challenge_expired`.
    pub outcome: &'static str,
    /// `passed`, `failed`, `expired`, or none when there was no challenge.
    pub challenge: Option<&'static str>,
    pub incident: String,
    pub request_id: String,
    pub client_ip: String,
}

pub struct LoginServices {
    pub store: Store,
    pub bg: tokio::runtime::Handle,
    pub held: HeldLogins,
    pub regulator: Regulator,
    pub enrollment_logins: u32,
    /// Key for challenge CSRF tokens (derived from `secrets.key`).
    pub csrf_key: Vec<u8>,
    pub max_attempts: u32,
    pub totp_enabled: bool,
    pub totp: TotpVerifier,
    /// The external MFA provider, when configured.
    pub external: Option<(ExternalMfaConfig, AssertionVerifier)>,
    pub challenge_ttl: Duration,
}

impl LoginServices {
    /// The model to score `user` with; `Ok(None)` while they have none.
    pub async fn user_model(&self, _user: &UserKey) -> Result<Option<Arc<UserModel>>, String> {
        Ok(None)
    }

    pub fn global(&self) -> Arc<crate::model::GlobalModel> {
        Arc::new(crate::model::GlobalModel::untrained())
    }

    pub fn csrf_key(&self) -> Vec<u8> {
        self.csrf_key.clone()
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Whether an external MFA provider is configured.
    pub fn external_mfa(&self) -> bool {
        self.external.is_some()
    }

    /// The external provider's URL for challenge `id` of `login`, when one is configured. The
    /// provider sends its answer back to `{prefix}challenge/callback` on the host the browser
    /// used.
    pub fn external_url(
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
    pub fn verify_assertion(&self, token: &str) -> Result<(String, String), Option<String>> {
        let Some((_, verifier)) = &self.external else {
            return Err(None);
        };
        match verifier.verify(token, SystemTime::now()) {
            Ok(a) => Ok((a.challenge_id, a.user)),
            Err(AssertionError::Failed { challenge_id }) => Err(Some(challenge_id)),
            Err(e) => {
                tracing::info!(reason = e.reason(), "external MFA assertion refused");
                Err(None)
            }
        }
    }

    /// Checks a TOTP code: `Err` carries the reason code (`wrong_code`, `reused`, `malformed`,
    /// `rate_limited`, …).
    pub fn verify_totp(
        &self,
        user: &UserKey,
        secret: &[u8],
        code: &str,
    ) -> Result<(), &'static str> {
        self.totp
            .verify(user, secret, code, SystemTime::now())
            .map_err(|e| e.reason())
    }

    /// Whether the store answers within a second (for `/readyz`).
    pub async fn store_ready(&self) -> bool {
        let store = self.store.clone();
        let ping = self
            .bg
            .spawn(async move { tokio::time::timeout(Duration::from_secs(1), store.ping()).await });
        matches!(ping.await, Ok(Ok(Ok(()))))
    }

    /// Whether `user` has a TOTP second factor enrolled (and TOTP is on).
    pub async fn has_totp(&self, user: &UserKey) -> Result<bool, String> {
        if !self.totp_enabled {
            return Ok(false);
        }
        let store = self.store.clone();
        let user = *user;
        self.bg
            .spawn(async move { store.totp_secret(&user).await })
            .await
            .map_err(|e| e.to_string())?
            .map(|s| s.is_some())
            .map_err(|e| e.to_string())
    }

    /// The user's TOTP secret, if enrolled.
    pub async fn totp_secret(&self, user: &UserKey) -> Result<Option<Vec<u8>>, String> {
        let store = self.store.clone();
        let user = *user;
        self.bg
            .spawn(async move { store.totp_secret(&user).await })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Records, learns from (when verified) and audits a login, in the background.
    pub fn settle(&self, s: Settled) {
        let store = self.store.clone();
        self.bg.spawn(async move {
            let outcome = if s.outcome == "verified" {
                Outcome::Verified
            } else {
                Outcome::Failed
            };
            let features = crate::store::FeatureBlob {
                version: crate::features::FEATURE_VERSION,
                bytes: Vec::new(),
            };
            let new = NewLogin {
                at: std::time::SystemTime::now(),
                features,
                risk: s.risk.unwrap_or(0.0),
                reasons: s.reasons.clone(),
                decision: match s.decision {
                    Action::Allow => Decision::Allow,
                    Action::Challenge => Decision::Challenge,
                    Action::Block => Decision::Block,
                },
                outcome,
            };
            if let Err(e) = store.record_login(&s.login, new).await {
                tracing::warn!(error = %e, request_id = %s.request_id, "cannot record the login");
            }
            let record = serde_json::json!({
                "incident": s.incident,
                "request_id": s.request_id,
                "route": s.route,
                "user_key": s.user.to_string(),
                "risk": s.risk,
                "reasons": s.reasons,
                "decision": s.decision.as_str(),
                "policy": s.rule,
                "mode": s.mode,
                "outcome": s.outcome,
                "challenge": s.challenge,
                "client_ip": s.client_ip,
            });
            if let Err(e) = store.append_audit(Some(&s.user), "login", &record).await {
                tracing::warn!(error = %e, request_id = %s.request_id, "cannot audit the login");
            }
            tracing::info!(target: "gaitkeeper::audit", record = %record, "login");
        });
    }

    /// Settles held logins that expired or were evicted, and sweeps expiry every few seconds
    /// (moka expires lazily). The channel holds at most what the held-login bounds allow.
    pub fn spawn_held_sweeper(
        self: &Arc<Self>,
        mut dropped: tokio::sync::mpsc::UnboundedReceiver<(Arc<HeldLogin>, &'static str)>,
        metrics: Arc<crate::admin::Metrics>,
    ) {
        let services = self.clone();
        self.bg.spawn(async move {
            while let Some((held, why)) = dropped.recv().await {
                let outcome = if why == "expired" {
                    "challenge_expired"
                } else {
                    "challenge_evicted"
                };
                services.settle_held(&held, outcome, why);
            }
        });
        let weak = Arc::downgrade(self);
        self.bg.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                let Some(services) = weak.upgrade() else {
                    return;
                };
                services.held.sweep();
                metrics.held_logins.set(services.held.len() as i64);
                metrics
                    .held_login_bytes
                    .set(services.held.weighted_bytes() as i64);
            }
        });
    }

    /// Settles a held login whose challenge was failed or expired.
    pub fn settle_held(&self, held: &HeldLogin, outcome: &'static str, challenge: &'static str) {
        self.settle(Settled {
            route: held.route.clone(),
            login: held.login.clone(),
            user: held.user,
            features: held.features.clone(),
            risk: held.risk,
            reasons: held.reasons.clone(),
            decision: held.verdict.decision,
            rule: held.verdict.rule,
            mode: "enforce",
            outcome,
            challenge: Some(challenge),
            incident: held.incident.clone(),
            request_id: held.request_id.clone(),
            client_ip: held.client_ip.clone(),
        });
    }
}
