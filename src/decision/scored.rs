//! What a login's evidence comes to before the policy sees it: the rules' flags, enrolment,
//! the model's assessment with the policy's risk floors, and whether the login may be learnt
//! from. Pure rules: the proxy gathers the evidence (telemetry, features, the user's model)
//! and hands it here.

use crate::features::FeatureVector;
use crate::model::{Assessment, UserModel};
use crate::policy::{self, Finding, Policy};

/// Rules whose logins are never learnt from: what they flag was not typed by the user.
const NEVER_LEARNT: &[&str] = &[
    "insufficient_evidence",
    "synthetic_input",
    "no_input",
    "timeline_mismatch",
    "replayed_pattern",
];

/// A rule that flagged a login: its code and which of its checks fired.
pub type Flag = (&'static str, &'static str);

/// What scoring produced for a login. `features` is `None` when the login must not be learnt
/// from (not scored, or flagged by a rule).
pub struct Scored {
    pub finding: Finding,
    pub features: Option<FeatureVector>,
    pub risk: Option<f64>,
    /// The model's risk before the policy's floors raised it (audited, for `policy what-if`).
    pub model_risk: Option<f64>,
    pub reasons: serde_json::Value,
}

impl Scored {
    /// A login there is nothing to score of, for the reason `code`.
    pub(crate) fn unscored(finding: Finding, code: &str) -> Scored {
        Scored {
            finding,
            features: None,
            risk: None,
            model_risk: None,
            reasons: serde_json::json!([{ "code": code }]),
        }
    }

    /// The user's model could not be read: the operator's `on_store_error` decides. The
    /// features are kept (to be learnt once the store is back) unless a rule flagged them.
    pub(crate) fn store_unavailable(flags: &[Flag], fv: FeatureVector) -> Scored {
        let mut reasons = flag_reasons(flags);
        reasons.push(serde_json::json!({"code": "store_unavailable"}));
        Scored {
            finding: Finding::StoreError,
            features: flags.is_empty().then_some(fv),
            risk: None,
            model_risk: None,
            reasons: reasons.into(),
        }
    }

    /// Scoring itself failed (it never should): `on_scoring_error` decides.
    pub(crate) fn scoring_failed() -> Scored {
        Scored::unscored(Finding::ScoringError, "scoring_failed")
    }

    /// Adds a reason (e.g. `store_unavailable` when the user's factors cannot be read).
    pub(crate) fn add_reason(&mut self, code: &str) {
        if let serde_json::Value::Array(items) = &mut self.reasons {
            items.push(serde_json::json!({ "code": code }));
        }
    }
}

/// Where a user stands with their model.
pub enum Enrolment<'a> {
    /// Enough logins learnt: their model scores the login.
    Enrolled(&'a UserModel),
    /// Still learning who they are (fewer than `store.enrollment_logins` verified logins).
    Enrolling,
}

/// Whether `model` (the user's, if any) has learnt `enrollment_logins` logins yet.
pub fn enrolment(model: Option<&UserModel>, enrollment_logins: u32) -> Enrolment<'_> {
    match model {
        Some(m) if m.logins >= enrollment_logins => Enrolment::Enrolled(m),
        _ => Enrolment::Enrolling,
    }
}

/// The flag for an enrolling user's login that copies one of the few logins learnt so far.
pub(crate) fn copies_an_earlier_login(
    model: Option<&UserModel>,
    fv: &FeatureVector,
) -> Option<Flag> {
    model
        .is_some_and(|m| m.copies(fv))
        .then_some(("replayed_pattern", "own_earlier_login"))
}

/// An enrolling user's login: nothing to compare it with. A flagged login neither enrols the
/// user nor is let through as enrolling.
pub fn enrolling(flags: &[Flag], fv: FeatureVector) -> Scored {
    let mut reasons = flag_reasons(flags);
    reasons.push(serde_json::json!({"code": "enrolling"}));
    Scored {
        finding: if flags.is_empty() {
            Finding::Enrolling
        } else {
            Finding::EnrollingFlagged
        },
        features: flags.is_empty().then_some(fv),
        risk: None,
        model_risk: None,
        reasons: reasons.into(),
    }
}

/// An enrolled user's login as their model assessed it: the risk raised to the floor of every
/// rule that fired (the evidence rules' and the model's own), and learnable only when none of
/// the rules that mean "not typed by the user" fired.
pub(crate) fn assessed(
    flags: &[Flag],
    assessment: &Assessment,
    fv: FeatureVector,
    policy: &Policy,
    global_trained: bool,
) -> Scored {
    if !assessment.risk.is_finite() {
        return Scored::scoring_failed();
    }
    let codes: Vec<&str> = flags
        .iter()
        .map(|f| f.0)
        .chain(assessment.reasons.iter().map(|r| r.code))
        .collect();
    let risk = policy::floored(&policy.floors, assessment.risk, codes.iter().copied());
    let learnable = !codes.iter().any(|c| NEVER_LEARNT.contains(c));
    let mut reasons = flag_reasons(flags);
    // The model's own reasons, but not a rule the evidence check already named.
    for r in &assessment.reasons {
        if !flags.iter().any(|f| f.0 == r.code) {
            reasons.push(serde_json::to_value(r).unwrap_or_default());
        }
    }
    if !global_trained {
        reasons.push(serde_json::json!({"code": "per_user_detectors_only"}));
    }
    Scored {
        finding: Finding::Scored { risk },
        reasons: reasons.into(),
        risk: Some(risk),
        model_risk: Some(assessment.risk),
        features: learnable.then_some(fv),
    }
}

fn flag_reasons(flags: &[Flag]) -> Vec<serde_json::Value> {
    flags
        .iter()
        .map(|(code, detail)| serde_json::json!({"code": code, "detail": detail}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DetectorScores;
    use crate::policy::DEFAULT_POLICY;

    fn assessment(risk: f64, codes: &[&'static str]) -> Assessment {
        Assessment {
            risk,
            scores: DetectorScores {
                manhattan: 0.0,
                shrunk_z: 0.0,
                nearest: 0.0,
                contrast: f64::NAN,
                forest: f64::NAN,
            },
            reasons: codes
                .iter()
                .map(|&code| crate::model::Reason {
                    code,
                    feature: "".into(),
                    usual: (0.0, 0.0),
                    value: 0.0,
                })
                .collect(),
        }
    }

    #[test]
    fn a_flagged_login_is_raised_to_the_rules_floor_and_never_learnt() {
        let fv = FeatureVector::empty();
        let clean = assessed(
            &[],
            &assessment(0.1, &[]),
            fv.clone(),
            &DEFAULT_POLICY,
            true,
        );
        assert_eq!(clean.risk, Some(0.1));
        assert!(clean.features.is_some(), "a clean login is learnt");

        let flags = [("synthetic_input", "metronome_keys")];
        let bot = assessed(
            &flags,
            &assessment(0.1, &[]),
            fv.clone(),
            &DEFAULT_POLICY,
            true,
        );
        assert_eq!(bot.risk, Some(DEFAULT_POLICY.floors.synthetic_input));
        assert!(
            bot.features.is_none(),
            "not typed by the user: never learnt"
        );

        // The model's own replay finding counts the same, and is named once.
        let replay = assessed(
            &[],
            &assessment(0.1, &["replayed_pattern"]),
            fv.clone(),
            &DEFAULT_POLICY,
            false,
        );
        assert!(replay.features.is_none());
        assert!(replay.risk.unwrap() >= DEFAULT_POLICY.floors.replayed_pattern);
        let codes: Vec<&str> = replay
            .reasons
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, ["replayed_pattern", "per_user_detectors_only"]);

        let broken = assessed(&[], &assessment(f64::NAN, &[]), fv, &DEFAULT_POLICY, true);
        assert_eq!(broken.finding, Finding::ScoringError);
    }

    #[test]
    fn an_enrolling_login_enrols_only_when_no_rule_flagged_it() {
        let fv = FeatureVector::empty();
        let clean = enrolling(&[], fv.clone());
        assert_eq!(clean.finding, Finding::Enrolling);
        assert!(clean.features.is_some());
        let flagged = enrolling(&[("no_input", "empty")], fv.clone());
        assert_eq!(flagged.finding, Finding::EnrollingFlagged);
        assert!(flagged.features.is_none());
        assert!(matches!(enrolment(None, 5), Enrolment::Enrolling));

        let mut away = Scored::store_unavailable(&[], fv);
        assert_eq!(away.finding, Finding::StoreError);
        assert!(away.features.is_some(), "learnt once the store is back");
        away.add_reason("extra");
        assert_eq!(away.reasons.as_array().unwrap().len(), 2);
    }
}
