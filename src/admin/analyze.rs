//! `POST /__gk/analyze` on the admin listener: the original prototype's API, for systems that
//! want a score without the proxy. The body is the prototype's JSON (`mouse_speed` px/s,
//! `click_interval` ms, `key_dwell_time` ms, `key_flight_time` ms, optional `user`); the answer
//! is the risk, the decision the top-level policy gives it, and the reasons. Only those four
//! features are known, so the user's model compares just them.
//!
//! A reason's `usual` range is the user's profile (mouse speed 106–247 px/s…): it is answered
//! only to an operator who proved `admin.auth`'s credential, never to an anonymous caller (a
//! profile oracle).

use serde::Deserialize;

use crate::features::{FeatureVector, F};
use crate::policy::{self, Finding, Policy};
use crate::services::LoginServices;

/// Largest request body read.
pub(super) const MAX_BODY: usize = 16 * 1024;
/// Longest wait for that body: the admin listener has one thread, a stalled client must not hold it.
pub(super) const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Deserialize)]
struct Request {
    mouse_speed: Option<f64>,
    click_interval: Option<f64>,
    key_dwell_time: Option<f64>,
    key_flight_time: Option<f64>,
    user: Option<String>,
}

/// Answers one analyze request: (HTTP status, JSON body).
pub(super) async fn analyze(
    body: &[u8],
    config: &crate::config::Config,
    services: &LoginServices,
    operator: bool,
) -> (u16, serde_json::Value) {
    let bad = |m: &str| (400, serde_json::json!({ "error": m }));
    let Ok(req) = serde_json::from_slice::<Request>(body) else {
        return bad("expected a JSON object with mouse_speed, click_interval, key_dwell_time, key_flight_time (numbers) and an optional user (string)");
    };
    let mut fv = FeatureVector::empty();
    for (value, feature, name) in [
        (req.mouse_speed, F::MouseSpeedMean, "mouse_speed"),
        (req.click_interval, F::ClickIntervalMean, "click_interval"),
        (req.key_dwell_time, F::KeyDwellMean, "key_dwell_time"),
        (req.key_flight_time, F::KeyFlightMean, "key_flight_time"),
    ] {
        match value {
            Some(v) if v.is_finite() && (0.0..=1e7).contains(&v) => fv.values[feature as usize] = v,
            Some(_) => return bad(&format!("{name} must be a number from 0 to 10000000")),
            None => {}
        }
    }
    let policy = Policy::resolve(&config.policy, &Default::default());
    let model = match &req.user {
        Some(user) => match services.store.user_key(user) {
            Ok(key) => match services.user_model(&key).await {
                Ok(model) => model.filter(|m| m.logins >= services.enrollment_logins),
                Err(_) => {
                    let v = policy::decide(&policy, Finding::StoreError);
                    return (
                        200,
                        serde_json::json!({"risk": null, "decision": v.decision.as_str(), "reasons": [{"code": "store_unavailable"}]}),
                    );
                }
            },
            Err(_) => return bad("user is not a usable login name"),
        },
        None => None,
    };
    let Some(model) = model else {
        let v = policy::decide(&policy, Finding::Enrolling);
        return (
            200,
            serde_json::json!({"risk": null, "decision": v.decision.as_str(), "reasons": [{"code": "no_profile"}]}),
        );
    };
    let assessment = crate::model::assess(&model, &services.global(), &fv);
    let risk = policy::floored(
        &policy.floors,
        assessment.risk,
        assessment.reasons.iter().map(|r| r.code),
    );
    let v = policy::decide(&policy, Finding::Scored { risk });
    let mut reasons = serde_json::to_value(&assessment.reasons).unwrap_or_default();
    if !operator {
        if let Some(items) = reasons.as_array_mut() {
            for item in items.iter_mut().filter_map(|i| i.as_object_mut()) {
                item.remove("usual");
            }
        }
    }
    (
        200,
        serde_json::json!({
            "risk": risk,
            "decision": v.decision.as_str(),
            "reasons": reasons,
        }),
    )
}
