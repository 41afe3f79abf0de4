//! Policy: what the operator's YAML says to do with a login, given what the earlier stages
//! found. Pure: no I/O, no clocks; the proxy asks, this module answers.
//!
//! Owns: the `policy:` config (defaults, and per-route overrides), resolving the two into the
//! policy that applies to a login, and [`decide`], which turns a [`Finding`] (a risk, or the
//! reason there is none) into a [`Verdict`]: the action, the rule that chose it, and whether
//! shadow mode turned it into a plain forward.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What to do with a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forward it to the app.
    Allow,
    /// Hold it and ask for a second factor first.
    Challenge,
    /// Answer 403 and never forward it.
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Challenge => "challenge",
            Action::Block => "block",
        }
    }
}

/// `enforce` acts on decisions; `shadow` scores, audits and learns but always forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    Shadow,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// The `policy:` block, at the top level (defaults for every route) or in a route (overrides).
/// Every key is optional; what is not set falls back to the top level, then to the built-in
/// default shown in `config/gaitkeeper.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `enforce` (act on decisions) or `shadow` (score, audit and learn, but always forward).
    pub mode: Option<Mode>,
    /// Risks below this are let through (0 to 1).
    pub allow_below: Option<f64>,
    /// Risks at or above this are blocked; in between, the user is challenged (0 to 1).
    pub block_at: Option<f64>,
    /// What users still enrolling (fewer verified logins than `store.enrollment_logins`) get.
    pub enrolling: Option<Action>,
    /// A login submitted without telemetry (no capture script ran: a bot, or a client with
    /// JavaScript off).
    pub on_missing_telemetry: Option<Action>,
    /// Telemetry that is malformed, oversized, implausible, or whose page token is forged,
    /// expired or for another client or route.
    pub on_invalid_telemetry: Option<Action>,
    /// A page token that was already used (a replayed login).
    pub on_replayed_token: Option<Action>,
    /// The profile store could not be read (fail-open `allow`, or fail-closed).
    pub on_store_error: Option<Action>,
    /// Scoring failed (fail-open `allow`, or fail-closed).
    pub on_scoring_error: Option<Action>,
    /// The state instances share (`server.shared_state: store`) could not be read or
    /// written, so whether the page token was used before is unknown.
    pub on_state_error: Option<Action>,
    /// A login that should be challenged, from a user with no second factor: `allow` or
    /// `block` (`challenge` is read as `block`).
    pub on_no_factor: Option<Action>,
    /// A submit whose login name cannot be read exactly once (unknown content type or coding,
    /// a body that does not parse or parses two ways, no name or two): `block` (answered
    /// 400/415 with an incident reference) or `allow`. `allow` forwards it unscored — a hole
    /// an attacker can use to skip scoring; only for apps known to accept no such request.
    pub on_unreadable_login: Option<Action>,
    /// What a still-enrolling user's login gets when a rule flags it (a bot, too little
    /// evidence, a replayed pattern, a timeline that does not fit). It is never learnt from.
    pub enrolling_bot: Option<Action>,
    /// Risk floors of the rules: a login a rule flags scores at least this (0 to 1).
    pub floors: Option<FloorsConfig>,
}

/// `policy.floors`: the lowest risk a login gets when a rule flags it. Set one at or above
/// `block_at` to block what it flags, between the thresholds to challenge it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FloorsConfig {
    /// Less evidence than a real login produces (no password keystrokes without paste or
    /// autofill, keys never focused, counts that do not add up).
    pub insufficient_evidence: Option<f64>,
    /// Input a machine made: script-made events, metronome keys, ruler-straight or
    /// constant-speed mouse paths, mouse samples on a timer's grid.
    pub synthetic_input: Option<f64>,
    /// No keys, mouse or touch at all.
    pub no_input: Option<f64>,
    /// The payload claims more time than the page was open.
    pub timeline_mismatch: Option<f64>,
    /// The login's timings copy an earlier login's (a replay, or one trace used for several
    /// accounts).
    pub replayed_pattern: Option<f64>,
    /// An input group the user always has (mouse, keys, password rhythm) is missing.
    pub missing_usual_input: Option<f64>,
}

/// The floors that apply, every value settled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Floors {
    pub insufficient_evidence: f64,
    pub synthetic_input: f64,
    pub no_input: f64,
    pub timeline_mismatch: f64,
    pub replayed_pattern: f64,
    pub missing_usual_input: f64,
}

impl Floors {
    /// The floor of the rule named `code`, if it is one.
    pub fn of(&self, code: &str) -> Option<f64> {
        Some(match code {
            "insufficient_evidence" => self.insufficient_evidence,
            "synthetic_input" => self.synthetic_input,
            "no_input" => self.no_input,
            "timeline_mismatch" => self.timeline_mismatch,
            "replayed_pattern" => self.replayed_pattern,
            "missing_usual_input" => self.missing_usual_input,
            _ => return None,
        })
    }

    fn entries(&self) -> [(&'static str, f64); 6] {
        [
            ("insufficient_evidence", self.insufficient_evidence),
            ("synthetic_input", self.synthetic_input),
            ("no_input", self.no_input),
            ("timeline_mismatch", self.timeline_mismatch),
            ("replayed_pattern", self.replayed_pattern),
            ("missing_usual_input", self.missing_usual_input),
        ]
    }
}

/// `risk` raised to the highest floor among the rules in `codes`.
pub(crate) fn floored<'a>(
    floors: &Floors,
    risk: f64,
    codes: impl IntoIterator<Item = &'a str>,
) -> f64 {
    codes
        .into_iter()
        .filter_map(|c| floors.of(c))
        .fold(risk, f64::max)
}

/// The policy that applies to one login, every value settled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub mode: Mode,
    pub allow_below: f64,
    pub block_at: f64,
    pub enrolling: Action,
    pub on_missing_telemetry: Action,
    pub on_invalid_telemetry: Action,
    pub on_replayed_token: Action,
    pub on_store_error: Action,
    pub on_scoring_error: Action,
    pub on_state_error: Action,
    pub on_no_factor: Action,
    pub on_unreadable_login: Action,
    pub enrolling_bot: Action,
    pub floors: Floors,
}

/// The built-in defaults: challenge what cannot be scored, block replays, keep logins working
/// when gaitkeeper's own store or scoring fails (fail-open), block a challenge nobody can answer.
pub(crate) const DEFAULT_POLICY: Policy = Policy {
    mode: Mode::Enforce,
    allow_below: 0.6,
    block_at: 0.95,
    enrolling: Action::Allow,
    on_missing_telemetry: Action::Challenge,
    on_invalid_telemetry: Action::Challenge,
    on_replayed_token: Action::Block,
    on_store_error: Action::Allow,
    on_scoring_error: Action::Allow,
    // Unknown whether the page token was used before: neither let a possible replay in nor
    // lock everyone out while the database is away.
    on_state_error: Action::Challenge,
    on_no_factor: Action::Block,
    on_unreadable_login: Action::Block,
    enrolling_bot: Action::Challenge,
    floors: Floors {
        insufficient_evidence: 0.8,
        synthetic_input: 0.95,
        no_input: 0.9,
        timeline_mismatch: 0.95,
        replayed_pattern: 1.0,
        missing_usual_input: 0.7,
    },
};

impl PolicyConfig {
    /// These keys over `under`'s: what an app's `policy:` makes of the top-level block (its
    /// routes then override the result).
    pub fn over(&self, under: &PolicyConfig) -> PolicyConfig {
        macro_rules! pick {
            ($f:ident) => {
                self.$f.or(under.$f)
            };
        }
        let floors = match (&self.floors, &under.floors) {
            (Some(o), Some(u)) => Some(FloorsConfig {
                insufficient_evidence: o.insufficient_evidence.or(u.insufficient_evidence),
                synthetic_input: o.synthetic_input.or(u.synthetic_input),
                no_input: o.no_input.or(u.no_input),
                timeline_mismatch: o.timeline_mismatch.or(u.timeline_mismatch),
                replayed_pattern: o.replayed_pattern.or(u.replayed_pattern),
                missing_usual_input: o.missing_usual_input.or(u.missing_usual_input),
            }),
            (o, u) => o.clone().or_else(|| u.clone()),
        };
        PolicyConfig {
            mode: pick!(mode),
            allow_below: pick!(allow_below),
            block_at: pick!(block_at),
            enrolling: pick!(enrolling),
            on_missing_telemetry: pick!(on_missing_telemetry),
            on_invalid_telemetry: pick!(on_invalid_telemetry),
            on_replayed_token: pick!(on_replayed_token),
            on_store_error: pick!(on_store_error),
            on_scoring_error: pick!(on_scoring_error),
            on_state_error: pick!(on_state_error),
            on_no_factor: pick!(on_no_factor),
            on_unreadable_login: pick!(on_unreadable_login),
            enrolling_bot: pick!(enrolling_bot),
            floors,
        }
    }
}

impl Policy {
    /// The route's overrides on top of the top-level block on top of [`DEFAULT_POLICY`].
    pub(crate) fn resolve(top: &PolicyConfig, route: &PolicyConfig) -> Policy {
        let d = DEFAULT_POLICY;
        let set = route.over(top);
        macro_rules! pick {
            ($f:ident) => {
                set.$f.unwrap_or(d.$f)
            };
        }
        Policy {
            mode: pick!(mode),
            allow_below: pick!(allow_below),
            block_at: pick!(block_at),
            enrolling: pick!(enrolling),
            on_missing_telemetry: pick!(on_missing_telemetry),
            on_invalid_telemetry: pick!(on_invalid_telemetry),
            on_replayed_token: pick!(on_replayed_token),
            on_store_error: pick!(on_store_error),
            on_scoring_error: pick!(on_scoring_error),
            on_state_error: pick!(on_state_error),
            on_no_factor: pick!(on_no_factor),
            on_unreadable_login: pick!(on_unreadable_login),
            enrolling_bot: pick!(enrolling_bot),
            floors: {
                let set = set.floors.clone().unwrap_or_default();
                let f = d.floors;
                macro_rules! floor {
                    ($k:ident) => {
                        set.$k.unwrap_or(f.$k)
                    };
                }
                Floors {
                    insufficient_evidence: floor!(insufficient_evidence),
                    synthetic_input: floor!(synthetic_input),
                    no_input: floor!(no_input),
                    timeline_mismatch: floor!(timeline_mismatch),
                    replayed_pattern: floor!(replayed_pattern),
                    missing_usual_input: floor!(missing_usual_input),
                }
            },
        }
    }

    /// Why this policy is unusable, if it is (the message names the key's last part).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [
            ("allow_below", self.allow_below),
            ("block_at", self.block_at),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err((key, format!("expected a risk from 0 to 1, found {v}")));
            }
        }
        for (key, v) in self.floors.entries() {
            if !(0.0..=1.0).contains(&v) {
                return Err((
                    "floors",
                    format!("expected a risk from 0 to 1 for floors.{key}, found {v}"),
                ));
            }
        }
        if self.on_unreadable_login == Action::Challenge {
            return Err((
                "on_unreadable_login",
                "expected `allow` or `block`: a login without a readable name has no user to challenge".into(),
            ));
        }
        if self.allow_below > self.block_at {
            return Err((
                "allow_below",
                format!(
                    "allow_below ({}) must not be above block_at ({}); risks in between are challenged",
                    self.allow_below, self.block_at
                ),
            ));
        }
        Ok(())
    }
}

/// What the earlier stages found about a login.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Finding {
    /// Scored against an enrolled profile.
    Scored {
        risk: f64,
    },
    /// The user has too few verified logins for their profile to be relied on.
    Enrolling,
    /// Enrolling, and a rule flagged the login (a bot, too little evidence, a replay).
    EnrollingFlagged,
    MissingTelemetry,
    InvalidTelemetry,
    ReplayedToken,
    StoreError,
    ScoringError,
    /// The shared state (several instances) could not be read or written.
    StateError,
    /// The login name cannot be read exactly once (`login::Unreadable`).
    UnreadableLogin,
    /// A route's `machine_clients` (a CLI, a deploy script): forwarded without telemetry.
    MachineClient,
    /// Too many failed logins recently (per user or per client); the action is regulation's.
    Regulated {
        action: Action,
    },
}

impl Finding {
    /// The finding's name in audit records (`finding`); a regulated login's action is kept
    /// apart (`regulation`), and a scored login's risk in `risk`.
    pub fn code(&self) -> &'static str {
        match self {
            Finding::Scored { .. } => "scored",
            Finding::Enrolling => "enrolling",
            Finding::EnrollingFlagged => "enrolling_flagged",
            Finding::MissingTelemetry => "missing_telemetry",
            Finding::InvalidTelemetry => "invalid_telemetry",
            Finding::ReplayedToken => "replayed_token",
            Finding::StoreError => "store_error",
            Finding::ScoringError => "scoring_error",
            Finding::StateError => "state_error",
            Finding::UnreadableLogin => "unreadable_login",
            Finding::MachineClient => "machine_client",
            Finding::Regulated { .. } => "regulated",
        }
    }

    /// The finding an audit record names with [`Finding::code`]: `risk` for a scored one,
    /// `regulation` (the regulator's action) for a regulated one; `None` when the code is
    /// unknown or what it needs is missing.
    pub fn from_code(code: &str, risk: Option<f64>, regulation: Option<Action>) -> Option<Finding> {
        Some(match code {
            "scored" => Finding::Scored { risk: risk? },
            "enrolling" => Finding::Enrolling,
            "enrolling_flagged" => Finding::EnrollingFlagged,
            "missing_telemetry" => Finding::MissingTelemetry,
            "invalid_telemetry" => Finding::InvalidTelemetry,
            "replayed_token" => Finding::ReplayedToken,
            "store_error" => Finding::StoreError,
            "scoring_error" => Finding::ScoringError,
            "state_error" => Finding::StateError,
            "unreadable_login" => Finding::UnreadableLogin,
            "machine_client" => Finding::MachineClient,
            "regulated" => Finding::Regulated {
                action: regulation?,
            },
            _ => return None,
        })
    }
}

/// Whether the user could answer a challenge, as far as the proxy asked (it asks only when
/// the policy decides to challenge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FactorCheck {
    /// The user has a second factor (or the operator's provider answers for everyone).
    Has,
    /// The user has none: `on_no_factor` decided.
    None,
    /// The store could not tell: `on_store_error` decided.
    Unknown,
}

impl FactorCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            FactorCheck::Has => "yes",
            FactorCheck::None => "no",
            FactorCheck::Unknown => "unknown",
        }
    }

    pub fn named(text: &str) -> Option<FactorCheck> {
        match text {
            "yes" => Some(FactorCheck::Has),
            "no" => Some(FactorCheck::None),
            "unknown" => Some(FactorCheck::Unknown),
            _ => None,
        }
    }
}

/// Everything the policy was asked about one login: the finding [`decide`] was given, the
/// model's risk before the floors raised it, and what turned a challenge into something else
/// (no factor, a store error on asking, a login that could not be held). Kept in the audit
/// record so that [`replay`] can ask another policy the same questions (`policy what-if`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Inputs {
    pub finding: Finding,
    /// The model's risk before [`Policy::floors`] (scored logins only): a tried policy's
    /// floors are applied to it again.
    pub model_risk: Option<f64>,
    /// `None` when nobody asked (the login was not challenged).
    pub factor: Option<FactorCheck>,
    /// A challenge that could not be held (the shared state was away): `on_state_error`.
    pub unheld: bool,
}

impl Inputs {
    /// The inputs of a login nothing turned: the finding alone.
    pub fn of(finding: Finding) -> Inputs {
        Inputs {
            finding,
            model_risk: None,
            factor: None,
            unheld: false,
        }
    }
}

/// Names of the rules that have a risk floor (`policy.floors`), as reasons name them.
pub const FLOOR_RULES: [&str; 6] = [
    "insufficient_evidence",
    "synthetic_input",
    "no_input",
    "timeline_mismatch",
    "replayed_pattern",
    "missing_usual_input",
];

/// What a replayed login comes to under another policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Replayed {
    pub verdict: Verdict,
    /// The verdict is a challenge and nobody asked then whether the user has a factor: it was
    /// taken that they do.
    pub factor_assumed: bool,
}

/// The verdict `policy` gives a login with `inputs`, the way the proxy reaches it: the
/// model's risk raised to `policy`'s floors of the rules in `floor_codes`, [`decide`], then a
/// challenge turned by what the proxy found when it asked (no factor, a store error, a login
/// that could not be held). A login nobody asked about is taken to have a factor.
pub fn replay<'a>(
    policy: &Policy,
    inputs: &Inputs,
    floor_codes: impl IntoIterator<Item = &'a str>,
) -> Replayed {
    let finding = match (inputs.finding, inputs.model_risk) {
        (Finding::Scored { .. }, Some(model)) if model.is_finite() => Finding::Scored {
            risk: floored(&policy.floors, model, floor_codes),
        },
        (finding, _) => finding,
    };
    let verdict = decide(policy, finding);
    if verdict.decision != Action::Challenge {
        return Replayed {
            verdict,
            factor_assumed: false,
        };
    }
    let (verdict, factor_assumed) = match inputs.factor {
        Some(FactorCheck::None) => (without_factor(policy), false),
        Some(FactorCheck::Unknown) => (decide(policy, Finding::StoreError), false),
        Some(FactorCheck::Has) => (verdict, false),
        None => (verdict, true),
    };
    let verdict = if inputs.unheld && verdict.action == Action::Challenge {
        without_state(policy)
    } else {
        verdict
    };
    Replayed {
        verdict,
        factor_assumed: factor_assumed && verdict.decision == Action::Challenge,
    }
}

/// The policy's answer for one login.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// What the policy decided (recorded and audited, in shadow mode too).
    pub decision: Action,
    /// What gaitkeeper actually does: the decision, or `Allow` in shadow mode.
    pub action: Action,
    /// The rule that chose it, for the audit trail.
    pub rule: &'static str,
}

/// Applies `policy` to `finding`.
pub fn decide(policy: &Policy, finding: Finding) -> Verdict {
    let (decision, rule) = match finding {
        Finding::Scored { risk } if risk.is_nan() => (policy.on_scoring_error, "on_scoring_error"),
        Finding::Scored { risk } if risk >= policy.block_at => (Action::Block, "block_at"),
        Finding::Scored { risk } if risk < policy.allow_below => (Action::Allow, "allow_below"),
        Finding::Scored { .. } => (Action::Challenge, "between_thresholds"),
        Finding::Enrolling => (policy.enrolling, "enrolling"),
        Finding::EnrollingFlagged => (policy.enrolling_bot, "enrolling_bot"),
        Finding::MissingTelemetry => (policy.on_missing_telemetry, "on_missing_telemetry"),
        Finding::InvalidTelemetry => (policy.on_invalid_telemetry, "on_invalid_telemetry"),
        Finding::ReplayedToken => (policy.on_replayed_token, "on_replayed_token"),
        Finding::StoreError => (policy.on_store_error, "on_store_error"),
        Finding::ScoringError => (policy.on_scoring_error, "on_scoring_error"),
        Finding::StateError => (policy.on_state_error, "on_state_error"),
        Finding::UnreadableLogin => (policy.on_unreadable_login, "on_unreadable_login"),
        Finding::MachineClient => (Action::Allow, "machine"),
        Finding::Regulated { action } => (action, "regulation"),
    };
    let action = match policy.mode {
        Mode::Enforce => decision,
        Mode::Shadow => Action::Allow,
    };
    Verdict {
        decision,
        action,
        rule,
    }
}

/// Every rule a [`Verdict`] can name.
const RULES: &[&str] = &[
    "on_scoring_error",
    "block_at",
    "allow_below",
    "between_thresholds",
    "enrolling",
    "enrolling_bot",
    "on_missing_telemetry",
    "on_invalid_telemetry",
    "on_replayed_token",
    "on_store_error",
    "on_state_error",
    "on_unreadable_login",
    "machine",
    "regulation",
    "on_no_factor",
];

/// The rule called `name`, for a verdict read back from where it was kept (a held login in
/// the shared state); `None` for a name no verdict has.
pub(crate) fn rule_named(name: &str) -> Option<&'static str> {
    RULES.iter().find(|rule| **rule == name).copied()
}

/// What a challenge that nobody can answer (the user has no second factor) becomes.
pub(crate) fn without_factor(policy: &Policy) -> Verdict {
    instead_of_challenge(policy, policy.on_no_factor, "on_no_factor")
}

/// What a challenge becomes when its login cannot be held for it (the shared state is
/// unreachable): forwarded when `on_state_error` allows, else refused.
pub(crate) fn without_state(policy: &Policy) -> Verdict {
    instead_of_challenge(policy, policy.on_state_error, "on_state_error")
}

/// `choice` where a challenge cannot be made: there is nothing to challenge with, so a
/// challenge is refused.
fn instead_of_challenge(policy: &Policy, choice: Action, rule: &'static str) -> Verdict {
    let decision = match choice {
        Action::Allow => Action::Allow,
        Action::Challenge | Action::Block => Action::Block,
    };
    Verdict {
        decision,
        action: match policy.mode {
            Mode::Enforce => decision,
            Mode::Shadow => Action::Allow,
        },
        rule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        DEFAULT_POLICY
    }

    #[test]
    fn thresholds_split_risk_into_three_actions() {
        let p = Policy {
            allow_below: 0.4,
            block_at: 0.8,
            ..policy()
        };
        let at = |risk| decide(&p, Finding::Scored { risk }).decision;
        assert_eq!(at(0.0), Action::Allow);
        assert_eq!(at(0.399), Action::Allow);
        assert_eq!(at(0.4), Action::Challenge);
        assert_eq!(at(0.799), Action::Challenge);
        assert_eq!(at(0.8), Action::Block);
        assert_eq!(at(1.0), Action::Block);
        assert_eq!(
            decide(&p, Finding::Scored { risk: f64::NAN }).rule,
            "on_scoring_error"
        );
    }

    #[test]
    fn each_failure_takes_its_own_configured_action() {
        let p = Policy {
            on_missing_telemetry: Action::Block,
            on_invalid_telemetry: Action::Allow,
            on_replayed_token: Action::Challenge,
            on_store_error: Action::Block,
            on_scoring_error: Action::Challenge,
            on_state_error: Action::Block,
            enrolling: Action::Challenge,
            ..policy()
        };
        let cases = [
            (
                Finding::MissingTelemetry,
                Action::Block,
                "on_missing_telemetry",
            ),
            (
                Finding::InvalidTelemetry,
                Action::Allow,
                "on_invalid_telemetry",
            ),
            (
                Finding::ReplayedToken,
                Action::Challenge,
                "on_replayed_token",
            ),
            (Finding::StoreError, Action::Block, "on_store_error"),
            (Finding::ScoringError, Action::Challenge, "on_scoring_error"),
            (Finding::StateError, Action::Block, "on_state_error"),
            (Finding::Enrolling, Action::Challenge, "enrolling"),
        ];
        for (finding, action, rule) in cases {
            let v = decide(&p, finding);
            assert_eq!((v.decision, v.action, v.rule), (action, action, rule));
        }
    }

    /// One finding of every kind: scored at `risk`, regulated to `regulated`.
    fn every_kind_of_finding(risk: f64, regulated: Action) -> [Finding; 12] {
        [
            Finding::Scored { risk },
            Finding::Enrolling,
            Finding::EnrollingFlagged,
            Finding::MissingTelemetry,
            Finding::InvalidTelemetry,
            Finding::ReplayedToken,
            Finding::StoreError,
            Finding::ScoringError,
            Finding::StateError,
            Finding::UnreadableLogin,
            Finding::MachineClient,
            Finding::Regulated { action: regulated },
        ]
    }

    #[test]
    fn every_rule_a_verdict_names_can_be_read_back() {
        let p = policy();
        let scored = [f64::NAN, 1.0, 0.0].map(|risk| Finding::Scored { risk });
        for finding in scored
            .into_iter()
            .chain(every_kind_of_finding(0.7, Action::Block))
        {
            let rule = decide(&p, finding).rule;
            assert_eq!(rule_named(rule), Some(rule), "{finding:?}");
        }
        assert_eq!(rule_named(without_factor(&p).rule), Some("on_no_factor"));
        assert_eq!(rule_named("made_up"), None);
    }

    #[test]
    fn shadow_mode_records_the_decision_but_forwards() {
        let p = Policy {
            mode: Mode::Shadow,
            ..policy()
        };
        let v = decide(&p, Finding::Scored { risk: 1.0 });
        assert_eq!(v.decision, Action::Block);
        assert_eq!(v.action, Action::Allow);
        let v = without_factor(&p);
        assert_eq!((v.decision, v.action), (Action::Block, Action::Allow));
    }

    #[test]
    fn route_overrides_beat_top_level_which_beats_defaults() {
        let top = PolicyConfig {
            allow_below: Some(0.3),
            on_store_error: Some(Action::Block),
            ..Default::default()
        };
        let route = PolicyConfig {
            allow_below: Some(0.2),
            mode: Some(Mode::Shadow),
            ..Default::default()
        };
        let p = Policy::resolve(&top, &route);
        assert_eq!(p.allow_below, 0.2);
        assert_eq!(p.mode, Mode::Shadow);
        assert_eq!(p.on_store_error, Action::Block);
        assert_eq!(p.block_at, DEFAULT_POLICY.block_at);
    }

    #[test]
    fn every_finding_reads_back_from_its_code() {
        for finding in every_kind_of_finding(0.25, Action::Challenge) {
            let back = Finding::from_code(finding.code(), Some(0.25), Some(Action::Challenge));
            assert_eq!(back, Some(finding));
        }
        assert_eq!(Finding::from_code("scored", None, None), None);
        assert_eq!(Finding::from_code("regulated", None, None), None);
        assert_eq!(Finding::from_code("made_up", None, None), None);
        for check in [FactorCheck::Has, FactorCheck::None, FactorCheck::Unknown] {
            assert_eq!(FactorCheck::named(check.as_str()), Some(check));
        }
    }

    #[test]
    fn replay_retraces_floors_factor_and_holding_as_the_proxy_does() {
        let p = policy();
        let scored = |model_risk| Inputs {
            finding: Finding::Scored { risk: 0.9 },
            model_risk: Some(model_risk),
            factor: Some(FactorCheck::Has),
            unheld: false,
        };
        // The model said 0.1, the no_input floor (0.9) made it a challenge.
        let v = replay(&p, &scored(0.1), ["no_input"]).verdict;
        assert_eq!(
            (v.decision, v.rule),
            (Action::Challenge, "between_thresholds")
        );
        // A tried floor below allow_below lets it through.
        let lower = Policy {
            floors: Floors {
                no_input: 0.3,
                ..p.floors
            },
            ..p
        };
        let v = replay(&lower, &scored(0.1), ["no_input"]).verdict;
        assert_eq!(v.decision, Action::Allow);
        // A challenge for a user without a factor is on_no_factor's; a store error asking is
        // on_store_error's; one that could not be held is on_state_error's.
        let no_factor = Inputs {
            factor: Some(FactorCheck::None),
            ..scored(0.7)
        };
        assert_eq!(replay(&p, &no_factor, []).verdict, without_factor(&p));
        let unknown = Inputs {
            factor: Some(FactorCheck::Unknown),
            ..scored(0.7)
        };
        assert_eq!(replay(&p, &unknown, []).verdict.rule, "on_store_error");
        let unheld = Inputs {
            unheld: true,
            ..scored(0.7)
        };
        assert_eq!(replay(&p, &unheld, []).verdict, without_state(&p));
        // Nobody asked about a factor: taken that there is one, and said so.
        let unasked = Inputs {
            factor: None,
            ..scored(0.7)
        };
        let r = replay(&p, &unasked, []);
        assert_eq!(
            (r.verdict.decision, r.factor_assumed),
            (Action::Challenge, true)
        );
        let r = replay(&p, &unasked, []);
        assert!(r.factor_assumed);
        let r = replay(
            &p,
            &Inputs {
                factor: None,
                ..scored(0.1)
            },
            [],
        );
        assert_eq!(
            (r.verdict.decision, r.factor_assumed),
            (Action::Allow, false)
        );
        // Without the model's risk (an older record), the recorded risk is replayed.
        let old = Inputs {
            model_risk: None,
            ..scored(0.1)
        };
        assert_eq!(replay(&p, &old, []).verdict.decision, Action::Challenge);
    }

    #[test]
    fn inverted_or_out_of_range_thresholds_are_rejected() {
        let p = Policy {
            allow_below: 0.9,
            block_at: 0.5,
            ..policy()
        };
        assert_eq!(p.check().unwrap_err().0, "allow_below");
        let p = Policy {
            block_at: 1.5,
            ..policy()
        };
        assert_eq!(p.check().unwrap_err().0, "block_at");
        assert!(policy().check().is_ok());
    }
}
