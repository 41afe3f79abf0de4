//! Proxy glue for the decision at login: after capture has taken the telemetry out of a login
//! submit, score it, ask the policy, and carry the verdict out — forward it, hold it and send
//! the browser to the challenge, or refuse it. Once the app has answered a forwarded login, its
//! response says whether the login succeeded; that settles the login for the store, learning,
//! regulation and the audit trail, after the response has gone out.

use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{pages, GaitkeeperProxy, Handled, RequestCtx};
use crate::audit::new_incident;
use crate::config::RouteConfig;
use crate::decision::{self, scored, ChallengeResult, LoginAttempt, LoginOutcome, Scored};
use crate::features;
use crate::login::{self, TelemetryStatus};
use crate::model;
use crate::policy::{self, Action, FactorCheck, Finding, Policy};
use crate::services::Settled;
use crate::store::UserKey;
use crate::telemetry;

/// A login on its way to the app, waiting for the app's answer to be settled.
pub(super) struct PendingLogin {
    /// The route's index in the config snapshot of this request.
    pub route: usize,
    pub attempt: LoginAttempt,
    /// `Passed` when this is a held login replayed after its challenge.
    pub challenge: Option<ChallengeResult>,
    /// The app's verdict, once its response header arrived.
    pub succeeded: Option<bool>,
    /// The browser's device cookie as it came, renewed for this user on success.
    pub device_cookie: Option<String>,
    /// The app's answer body while it is read to tell success (`success.json_*`).
    pub answer: Option<AnswerBody>,
    /// The status the app answered with (before any rewrite).
    pub app_status: Option<u16>,
    /// For a fetch/XHR login replayed after its challenge: the page to send the browser back
    /// to. The browser navigated to the challenge, so the app's JSON answer is turned into a
    /// redirect there (its cookies kept).
    pub return_to: Option<String>,
}

/// Most of a login answer's body read to tell its success.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A login answer's body being read, and how it is coded.
pub(super) struct AnswerBody {
    bytes: Vec<u8>,
    coding: Vec<String>,
}

/// 144 random bits (18 bytes), URL-safe base64.
pub(super) fn random_token() -> String {
    use base64::Engine;
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl GaitkeeperProxy {
    /// Decides a login submit whose body capture has read: answered here (challenge or block)
    /// or forwarded to the app.
    pub(super) async fn decide_login(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route_index: usize,
    ) -> Result<Handled> {
        let config = ctx.config.clone();
        let app = &config.apps[ctx.app];
        let route = &app.routes[route_index];
        let policy = Policy::resolve(&app.policy, &route.policy);
        let body = ctx.capture.app_body.clone().unwrap_or_default();
        let ip = ctx.client_ip.clone();
        let name = ctx
            .capture
            .name
            .take()
            .unwrap_or(Err(login::Unreadable::MissingName));
        let (login, user) = match name.and_then(|login::LoginName { name, as_sent }| {
            // One name is one user per app: the store keys the name with the app's scope.
            let (name, as_sent) = (
                app.user_scope(&name).into_owned(),
                app.user_scope(&as_sent).into_owned(),
            );
            // The name is normalised and bounded, so the store accepts it.
            let key = self
                .services
                .store
                .user_key(&name)
                .map_err(|_| login::Unreadable::NameTooLong)?;
            Ok((name, as_sent, key))
        }) {
            Ok((name, as_sent, key)) => {
                if as_sent != name {
                    self.services.carry_over_profile(&as_sent, &name).await;
                }
                (name, key)
            }
            Err(why) => {
                return self
                    .refuse_unreadable(session, ctx, route_index, &policy, why, ip)
                    .await
            }
        };
        let device_cookie = super::challenge::device_cookie(session, ctx);
        let trusted = self
            .services
            .trusted_device(device_cookie.as_deref(), &user);
        let mut scored = self
            .findings(session, ctx, route, &policy, &user, &ip, trusted)
            .await;
        let (verdict, factor) = self.verdict(&policy, &user, &mut scored).await;
        self.metrics
            .decisions
            .with_label_values(&[&app.name, &route.name, verdict.decision.as_str()])
            .inc();
        if let Some(risk) = scored.risk {
            self.metrics.risk.observe(risk);
        }
        let incident = new_incident();
        let finding = scored.finding;
        let attempt = LoginAttempt {
            app: app.name.clone(),
            route: route.name.clone(),
            login,
            user,
            client_ip: ip,
            incident: incident.clone(),
            request_id: ctx.request_id.clone(),
            features: scored.features,
            risk: scored.risk,
            reasons: scored.reasons,
            verdict,
            inputs: Some(policy::Inputs {
                finding,
                model_risk: scored.model_risk,
                factor,
                unheld: false,
            }),
            mode: policy.mode,
        };
        // Audited and alerted without the features: what is not learnt is not recorded.
        let settled =
            |attempt: &LoginAttempt, outcome: LoginOutcome, keep_features: bool| Settled {
                attempt: LoginAttempt {
                    features: attempt.features.clone().filter(|_| keep_features),
                    ..attempt.clone()
                },
                outcome,
                challenge: None,
            };
        if finding == Finding::ReplayedToken {
            self.services
                .alert_replay(&settled(&attempt, LoginOutcome::Replayed, false));
        }
        let mut attempt = attempt;
        loop {
            match attempt.verdict.action {
                Action::Allow => {
                    ctx.login = Some(PendingLogin {
                        route: route_index,
                        attempt,
                        challenge: None,
                        succeeded: None,
                        device_cookie,
                        answer: None,
                        app_status: None,
                        return_to: None,
                    });
                    return Ok(Handled::Forward);
                }
                Action::Block => {
                    self.services
                        .settle(settled(&attempt, LoginOutcome::Blocked, true));
                    let fresh = self.fresh_token(session, ctx);
                    let json = wants_json(session, ctx);
                    pages::respond_blocked(
                        session,
                        &config.apps[ctx.app].app_name,
                        &incident,
                        ctx.reply(),
                        pages::Refusal {
                            json,
                            headers: &fresh,
                        },
                    )
                    .await?;
                    return Ok(Handled::Answered(403));
                }
                Action::Challenge => {
                    match self
                        .hold_for_challenge(session, ctx, attempt.clone(), body.clone())
                        .await?
                    {
                        Some(handled) => {
                            self.services.audit_decision(&settled(
                                &attempt,
                                LoginOutcome::Challenged,
                                false,
                            ));
                            return Ok(handled);
                        }
                        // The login cannot be held (the shared state is away): forwarded or
                        // refused as `policy.on_state_error` says; never left hanging.
                        None => {
                            attempt.verdict = policy::without_state(&policy);
                            if let Some(inputs) = attempt.inputs.as_mut() {
                                inputs.unheld = true;
                            }
                            if let serde_json::Value::Array(reasons) = &mut attempt.reasons {
                                reasons.push(serde_json::json!({ "code": "state_error" }));
                            }
                        }
                    }
                }
            }
        }
    }

    /// What is known of this login before the policy: a user or client address over its
    /// failure limit, an admitted machine client (no browser, no telemetry), or the score of
    /// its telemetry.
    #[allow(clippy::too_many_arguments)]
    async fn findings(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        route: &RouteConfig,
        policy: &Policy,
        user: &UserKey,
        ip: &str,
        trusted: bool,
    ) -> Scored {
        let config = ctx.config.clone();
        let machine = route.machine_clients.as_ref().is_some_and(|m| {
            let header = m
                .header
                .as_ref()
                .and_then(|h| session.req_header().headers.get(h.as_str()))
                .map(|v| v.as_bytes());
            m.admits(ip.parse().ok(), header)
        });
        let regulated = self
            .services
            .regulator
            .regulated(
                &config.regulation,
                &user.to_string(),
                &ctx.regulated_as,
                trusted,
                ctx.capture.bans.take(),
            )
            .await;
        if let Err(e) = &regulated {
            self.metrics.state_errors.inc();
            tracing::warn!(error = %e, "cannot read regulation from the shared state; policy.on_state_error decides");
        }
        if let Ok(Some(action)) = regulated {
            Scored::unscored(Finding::Regulated { action }, "too_many_failures")
        } else if regulated.is_err() {
            Scored::unscored(Finding::StateError, "state_error")
        } else if machine {
            // A CLI or script of the app's: no browser, no telemetry; audited, regulated.
            Scored::unscored(Finding::MachineClient, "machine")
        } else {
            self.score(ctx, user, policy).await
        }
    }

    /// The policy's verdict on `scored`; a challenge for a user who cannot answer one becomes
    /// `on_no_factor`'s verdict, and when the store cannot tell, the operator's fail-open or
    /// fail-closed choice decides, not `on_no_factor`. With it, what was found when asking
    /// (`None` when nobody asked): `policy::replay` retraces these steps for `what-if`.
    async fn verdict(
        &self,
        policy: &Policy,
        user: &UserKey,
        scored: &mut Scored,
    ) -> (policy::Verdict, Option<FactorCheck>) {
        let verdict = policy::decide(policy, scored.finding);
        if verdict.decision != Action::Challenge {
            return (verdict, None);
        }
        match self.has_factor(user).await {
            Ok(true) => (verdict, Some(FactorCheck::Has)),
            Ok(false) => (policy::without_factor(policy), Some(FactorCheck::None)),
            Err(()) => {
                scored.add_reason("store_unavailable");
                (
                    policy::decide(policy, Finding::StoreError),
                    Some(FactorCheck::Unknown),
                )
            }
        }
    }

    /// A login whose name cannot be read exactly once: there is no user to score, challenge or
    /// count it against, so `policy.on_unreadable_login` decides (or regulation, when the
    /// client address is over its limit). Audited and counted against the client address
    /// either way; forwarded unscored only when the policy allows it.
    async fn refuse_unreadable(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route_index: usize,
        policy: &Policy,
        why: login::Unreadable,
        ip: String,
    ) -> Result<Handled> {
        let config = ctx.config.clone();
        let app = &config.apps[ctx.app];
        let route = &app.routes[route_index];
        self.metrics
            .unreadable_logins
            .with_label_values(&[&app.name, &route.name, why.reason()])
            .inc();
        // Refused or decided whatever regulation says; it only picks the stronger action.
        let regulated = self
            .services
            .regulator
            .regulated_address(&config.regulation, &ctx.regulated_as)
            .await
            .unwrap_or_else(|e| {
                self.metrics.state_errors.inc();
                tracing::warn!(error = %e, "cannot read regulation from the shared state");
                None
            });
        let finding = match regulated {
            Some(action) => Finding::Regulated { action },
            None => Finding::UnreadableLogin,
        };
        let verdict = policy::decide(policy, finding);
        self.metrics
            .decisions
            .with_label_values(&[&app.name, &route.name, verdict.decision.as_str()])
            .inc();
        self.count_failure(ctx, None, &ctx.regulated_as);
        let incident = new_incident();
        let mut record =
            crate::audit::AuditRecord::new(crate::audit::kind::LOGIN_DECISION, &incident);
        record.request_id = Some(ctx.request_id.clone());
        record.app = Some(app.name.clone());
        record.route = Some(route.name.clone());
        record.reasons = serde_json::json!([{"code": "unreadable_login", "detail": why.reason()}]);
        record.decision = Some(verdict.decision.as_str().to_string());
        record.policy = Some(verdict.rule.to_string());
        record.set_inputs(&policy::Inputs::of(finding));
        record.mode = Some(policy.mode.as_str().to_string());
        let outcome = if verdict.action == Action::Allow && why.forwardable() {
            LoginOutcome::ForwardedUnscored
        } else {
            LoginOutcome::Blocked
        };
        record.outcome = Some(outcome.as_str().to_string());
        record.client_ip = Some(ip);
        self.services.audit(record);
        if outcome == LoginOutcome::ForwardedUnscored {
            return Ok(Handled::Forward);
        }
        let status = if verdict.rule == "regulation" && why.forwardable() {
            403
        } else {
            why.status()
        };
        let fresh = self.fresh_token(session, ctx);
        let json = wants_json(session, ctx);
        pages::respond_unreadable(
            session,
            status,
            &config.apps[ctx.app].app_name,
            &incident,
            ctx.reply(),
            pages::Refusal {
                json,
                headers: &fresh,
            },
        )
        .await?;
        Ok(Handled::Answered(status))
    }

    /// Validates the telemetry, extracts features, checks them against the rules (evidence,
    /// timeline, bots, replays) and scores them with the user's model. A login a rule flags
    /// scores at least the rule's floor and is never learnt from (its features are dropped).
    async fn score(&self, ctx: &mut RequestCtx, user: &UserKey, policy: &Policy) -> Scored {
        let unscored = Scored::unscored;
        let Some(outcome) = ctx.capture.telemetry.take() else {
            return unscored(Finding::MissingTelemetry, "missing_telemetry");
        };
        let payload = match (outcome.status, outcome.payload) {
            (TelemetryStatus::Ok, Some(payload)) => payload,
            (TelemetryStatus::Ok | TelemetryStatus::Missing, _) => {
                return unscored(Finding::MissingTelemetry, "missing_telemetry")
            }
            (TelemetryStatus::Replayed, _) => {
                return unscored(Finding::ReplayedToken, "replayed_token")
            }
            (TelemetryStatus::Refused(reason), _) => {
                return unscored(Finding::InvalidTelemetry, reason)
            }
            (TelemetryStatus::StateError, _) => {
                return unscored(Finding::StateError, "state_error")
            }
        };
        let limits = telemetry::Limits {
            max_bytes: ctx.config.capture.max_payload_bytes,
            carrier: match outcome.transport {
                Some(login::Transport::Header) => telemetry::Carrier::Header,
                _ => telemetry::Carrier::FormField,
            },
        };
        let parsed = match telemetry::validate(&payload, &limits) {
            Ok(t) => t,
            Err(e) => return unscored(Finding::InvalidTelemetry, e.reason()),
        };
        let fv = features::extract(&parsed);
        // How long the page was really open: from gaitkeeper issuing it to the submit arriving.
        let page = outcome.issued_ms.map(|issued| {
            let now = crate::runtime::unix_millis(std::time::SystemTime::now()) as f64;
            features::evidence::PageOpen {
                ms: now - issued as f64,
                slack_ms: ctx.config.capture.timeline_slack.0.as_millis() as f64,
            }
        });
        let mut flags: Vec<scored::Flag> = features::evidence::check(&parsed, page)
            .iter()
            .map(|f| (f.rule.code(), f.detail))
            .collect();
        // One trace for several accounts, or a replay of a login not learnt yet.
        if self
            .services
            .population
            .check_and_remember(model::replay::Signature::of(&fv))
        {
            flags.push(("replayed_pattern", "seen_recently"));
        }
        self.count_flags(&flags);
        let model = match self.services.user_model(user).await {
            Ok(m) => m,
            Err(_) => return Scored::store_unavailable(&flags, fv),
        };
        let model = match scored::enrolment(model.as_deref(), self.services.enrollment_logins) {
            scored::Enrolment::Enrolled(model) => model,
            scored::Enrolment::Enrolling => {
                if let Some(flag) = scored::copies_an_earlier_login(model.as_deref(), &fv) {
                    self.count_flags(&[flag]);
                    flags.push(flag);
                }
                return scored::enrolling(&flags, fv);
            }
        };
        let global = self.services.global();
        let started = std::time::Instant::now();
        // Scoring is pure code that never panics by design; if it ever does, the policy's
        // on_scoring_error decides instead of the worker thread dying mid-login.
        let assessed =
            std::panic::catch_unwind(AssertUnwindSafe(|| model::assess(model, &global, &fv)));
        self.metrics
            .scoring_latency
            .observe(started.elapsed().as_secs_f64());
        let Ok(assessment) = assessed else {
            return Scored::scoring_failed();
        };
        for r in &assessment.reasons {
            if matches!(r.code, "replayed_pattern" | "missing_usual_input") {
                self.count_flags(&[(r.code, "profile")]);
            }
        }
        scored::assessed(
            &flags,
            &assessment,
            fv,
            policy,
            self.services.global_trained(),
        )
    }

    fn count_flags(&self, flags: &[scored::Flag]) {
        for (rule, detail) in flags {
            self.metrics
                .rule_flags
                .with_label_values(&[rule, detail])
                .inc();
        }
    }

    /// Whether `user` can answer a challenge; `Err` when the store cannot tell.
    async fn has_factor(&self, user: &UserKey) -> std::result::Result<bool, ()> {
        // Every user can sign in at the operator's providers (the OpenID Connect one checks
        // the name it signs in matches).
        if self.services.external_mfa() || self.services.oidc.is_some() {
            return Ok(true);
        }
        match self.services.has_factors(user).await {
            Ok(has) => Ok(has.totp || has.passkeys),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read whether a challenged user has a second factor");
                Err(())
            }
        }
    }

    /// Reads the app's answer to a forwarded login (upstream response header phase).
    pub(super) fn observe_login_response(
        &self,
        response: &mut pingora::http::ResponseHeader,
        ctx: &mut RequestCtx,
    ) {
        let Some(pending) = ctx.login.as_mut() else {
            return;
        };
        let route = &ctx.config.apps[ctx.app].routes[pending.route];
        pending.app_status = Some(response.status.as_u16());
        let succeeded = decision::login_succeeded(&route.success, response);
        if succeeded && route.success.reads_body() {
            // Told by the body: read (bounded) as it streams to the client.
            pending.answer = Some(AnswerBody {
                bytes: Vec::new(),
                coding: response
                    .headers
                    .get_all(http::header::CONTENT_ENCODING)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::to_string)
                    .collect(),
            });
        } else {
            pending.succeeded = Some(succeeded);
        }
        // Known from the header alone (a body decides too late to set a cookie).
        if succeeded && !route.success.reads_body() {
            // This browser logged in as the user: their user-wide limits no longer stop it.
            let cookie = self.services.device_cookie(
                pending.device_cookie.as_deref(),
                &pending.attempt.user,
                ctx.origin.https,
            );
            response.append_header("set-cookie", cookie).ok();
        }
        if let Some(to) = &pending.return_to {
            response.set_status(303).ok();
            for name in [
                "content-type",
                "content-length",
                "transfer-encoding",
                "location",
            ] {
                response.remove_header(name);
            }
            response.insert_header("location", to.as_str()).ok();
            response.insert_header("content-length", "0").ok();
            ctx.drop_response_body = true;
        }
    }

    /// Reads the app's answer body to a login whose success its body tells (`success.json_*`),
    /// at most [`MAX_ANSWER_BYTES`]; decides at its end. Runs before the body is rewritten or
    /// dropped.
    pub(super) fn read_login_answer(
        &self,
        body: &Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) {
        let Some(pending) = ctx.login.as_mut() else {
            return;
        };
        let Some(answer) = pending.answer.as_mut() else {
            return;
        };
        if let Some(chunk) = body {
            if answer.bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                // Too long to judge: not a success (counted as a failure, never learnt).
                pending.answer = None;
                pending.succeeded = Some(false);
                return;
            }
            answer.bytes.extend_from_slice(chunk);
        }
        if end_of_stream {
            let coding: Vec<&str> = answer.coding.iter().map(String::as_str).collect();
            let decoded = login::decode_body(&coding, &answer.bytes, MAX_ANSWER_BYTES);
            let route = &ctx.config.apps[ctx.app].routes[pending.route];
            let succeeded = match decoded {
                Ok(Some(plain)) => decision::body_succeeded(&route.success, &plain),
                Ok(None) => decision::body_succeeded(&route.success, &answer.bytes),
                Err(_) => false,
            };
            pending.succeeded = Some(succeeded);
            pending.answer = None;
        }
    }

    /// Settles a forwarded login once its response has gone out (logging phase).
    pub(super) fn settle_login(&self, ctx: &mut RequestCtx) {
        let Some(p) = ctx.login.take() else {
            return;
        };
        // No answer from the app (it failed or the client left): the login is not verified.
        let succeeded = p.succeeded.unwrap_or(false);
        let mut attempt = p.attempt;
        if let Some(status) = p.app_status {
            self.services
                .note_answer(&attempt.app, &attempt.route, status, succeeded);
        }
        if !succeeded {
            let ip = crate::config::app_scoped(&attempt.app, &attempt.client_ip).into_owned();
            self.count_failure(ctx, Some(attempt.user.to_string()), &ip);
        }
        let outcome = if succeeded {
            LoginOutcome::Verified
        } else {
            LoginOutcome::Failed
        };
        self.metrics
            .login_outcomes
            .with_label_values(&[&attempt.app, &attempt.route, outcome.as_str()])
            .inc();
        // The request that reached the app: after a challenge, the replay, not the submit.
        attempt.request_id = ctx.request_id.clone();
        self.services.settle(Settled {
            attempt,
            outcome,
            challenge: p.challenge,
        });
    }
}

/// A fetch/XHR login gets a JSON challenge instead of a redirect it could not follow visibly.
pub(super) fn wants_json(session: &Session, ctx: &RequestCtx) -> bool {
    let headers = &session.req_header().headers;
    if headers.contains_key(ctx.config.capture.header.as_str()) {
        return true;
    }
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    !accept.contains("text/html") && (accept.contains("json") || content_type.contains("json"))
}

impl GaitkeeperProxy {
    /// Counts a failed login for regulation: at once in memory, or in the shared state off the
    /// request path (on the background runtime; an error is counted and logged).
    pub(super) fn count_failure(&self, ctx: &RequestCtx, user: Option<String>, ip: &str) {
        let regulator = &self.services.regulator;
        if !regulator.is_shared() {
            regulator.count_failure_in_memory(&ctx.config.regulation, user.as_deref(), ip);
            return;
        }
        let (services, config, ip) = (self.services.clone(), ctx.config.clone(), ip.to_string());
        let errors = self.metrics.state_errors.clone();
        self.services.bg.spawn(async move {
            let counted = services
                .regulator
                .count_failure(&config.regulation, user.as_deref(), &ip)
                .await;
            if let Err(e) = counted {
                errors.inc();
                tracing::warn!(error = %e, "cannot count a failed login in the shared state");
            }
        });
    }
}
