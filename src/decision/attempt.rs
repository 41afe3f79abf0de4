//! One login as it is judged: who, from where, what the scoring stages found and what the
//! policy decided. Made once per submit and carried whole into the held login, the login
//! waiting for the app's answer and the settled record, instead of being copied field by field.

use crate::features::FeatureVector;
use crate::policy::{Inputs, Mode, Verdict};
use crate::store::UserKey;

#[derive(Clone, Debug)]
pub struct LoginAttempt {
    /// The app's name (`apps[].name`; `default` in the single-app form).
    pub app: String,
    /// The route's name (the config may be reloaded while the login waits).
    pub route: String,
    /// The login name as the app reads it (normalised); never logged.
    pub login: String,
    pub user: UserKey,
    /// The client's address as text (empty when unknown).
    pub client_ip: String,
    /// The incident reference every record of this login shares (shown on a block page).
    pub incident: String,
    pub request_id: String,
    /// The login's features while it may still be learnt from; dropped once a rule says it
    /// must not be.
    pub features: Option<FeatureVector>,
    pub risk: Option<f64>,
    /// Why the risk is what it is (audited).
    pub reasons: serde_json::Value,
    pub verdict: Verdict,
    /// What the policy was asked (audited, so `policy what-if` can ask another policy);
    /// `None` only for a held login sealed by an older gaitkeeper.
    pub inputs: Option<Inputs>,
    pub mode: Mode,
}
