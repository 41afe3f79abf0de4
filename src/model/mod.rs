//! Models: a login's [`FeatureVector`] and its claimed user's [`UserModel`] → an
//! [`Assessment`]: a calibrated risk in [0, 1] and the top reasons.
//!
//! Owns: the per-user detectors (`user`), what is learnt across users (`global`: population
//! spreads, Random Forest, fusion), the model space (`input`), the prototype's rules as named
//! reasons, and the final risk. Pure code: no I/O, never logs features, never panics; scoring a
//! login from fitted models is a few microseconds (benches/scoring.rs).

pub mod global;
pub mod input;
pub mod replay;
pub mod user;

use std::borrow::Cow;

use serde::Serialize;

use crate::features::{FeatureVector, F};
pub use global::{GlobalModel, TrainingUser};
pub use user::{Population, UserModel, UserScores};

/// Bumped whenever a model's serialised shape or meaning changes.
pub const MODEL_VERSION: u32 = 1;

/// Why a login looks risky, for audit and alerts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    /// `deviation` for a feature far from the user's usual range, else the rule's name.
    pub code: &'static str,
    pub feature: Cow<'static, str>,
    /// The user's usual range (mean ± 2 spreads), in the feature's unit.
    pub usual: (f64, f64),
    /// This login's value, in the feature's unit.
    pub value: f64,
}

/// Detector outputs of one login (higher = riskier).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DetectorScores {
    pub manhattan: f64,
    pub shrunk_z: f64,
    pub nearest: f64,
    /// The user's contrast forest's vote; NaN without one.
    pub contrast: f64,
    /// Fraction of the global forest's trees voting impostor; NaN without a forest.
    pub forest: f64,
}

/// The verdict on one login.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    /// Calibrated risk in [0, 1], from the detectors alone: the rules' floors (`reasons` with
    /// a rule's code) are the policy's to apply (`policy::floored`).
    pub risk: f64,
    pub scores: DetectorScores,
    /// Most important first; at most [`MAX_REASONS`] deviations plus any rules that fired.
    pub reasons: Vec<Reason>,
}

pub(crate) const MAX_REASONS: usize = 3;
/// A deviation is a reason from this many (shrunk) spreads away.
pub(crate) const REASON_Z: f64 = 2.0;
/// Rule threshold for "far outside the user's range".
pub(crate) const RULE_Z: f64 = 3.0;
/// An input group (mouse, keys, password rhythm) is one the user always has when this share
/// of their kept logins has it (and at least [`USUAL_MIN_LOGINS`] are kept).
pub(crate) const USUAL_SHARE: f64 = 0.9;
pub(crate) const USUAL_MIN_LOGINS: usize = 5;

/// Scores one login of `user`. Allocation: the model-space input and the reasons.
pub fn assess(user: &UserModel, global: &GlobalModel, fv: &FeatureVector) -> Assessment {
    let mut x = Vec::with_capacity(user.layout.dims());
    user.input(fv, &mut x);
    let s = user.score(&x);
    let forest = match &global.forest {
        Some(f) => {
            let mut dev = [0.0; global::DEVIATION_DIMS];
            global::deviation(user, &x, &s, &mut dev);
            f.vote(&dev)
        }
        None => f64::NAN,
    };
    let mut risk = if s.manhattan.is_nan() {
        // Nothing comparable with the user's profile: no evidence either way.
        0.5
    } else {
        global.fusion.risk(&global::Fusion::inputs(&s, forest))
    };
    let mut reasons = deviations(user, &x);
    rules(user, &x, fv, &mut reasons);
    if let Some(twin) = user
        .kept
        .iter()
        .find(|k| replay::near_duplicate(&user.layout, &x, k))
    {
        // The nearest kept login is the one this one copies; name the first timing it shares.
        let d = (0..x.len())
            .find(|&d| replay::is_timing(&user.layout, d) && !x[d].is_nan() && !twin[d].is_nan())
            .unwrap_or(0);
        reasons.push(reason(user, &x, d, "replayed_pattern"));
    }
    missing_groups(user, &x, &mut reasons);
    if risk.is_nan() {
        risk = 0.5;
    }
    Assessment {
        risk: risk.clamp(0.0, 1.0),
        scores: DetectorScores {
            manhattan: s.manhattan,
            shrunk_z: s.shrunk_z,
            nearest: s.nearest,
            contrast: s.contrast,
            forest,
        },
        reasons,
    }
}

/// The dimensions furthest from the user's profile, beyond [`REASON_Z`].
fn deviations(user: &UserModel, x: &[f64]) -> Vec<Reason> {
    let mut top: [(f64, usize); MAX_REASONS] = [(0.0, usize::MAX); MAX_REASONS];
    for d in 0..x.len().min(user.mean.len()) {
        let z = user.z(x, d);
        if z.is_nan() || z <= REASON_Z {
            continue;
        }
        if let Some(slot) = top.iter().position(|t| z > t.0) {
            top[slot..].rotate_right(1);
            top[slot] = (z, d);
        }
    }
    top.iter()
        .filter(|t| t.1 != usize::MAX)
        .map(|&(_, d)| reason(user, x, d, "deviation"))
        .collect()
}

fn reason(user: &UserModel, x: &[f64], d: usize, code: &'static str) -> Reason {
    let feature = match user.layout.dim(d) {
        input::Dim::Named(i) => Cow::Borrowed(crate::features::NAMES[i]),
        _ => Cow::Owned(user::dim_name(&user.layout, d)),
    };
    Reason {
        code,
        feature,
        usual: user.usual_range(d),
        value: input::to_unit(user.layout.dim(d), x[d]),
    }
}

/// Input groups the user always produces (by their kept logins) that this login lacks: a
/// missing group counts against the login instead of being skipped as unknown.
fn missing_groups(user: &UserModel, x: &[f64], reasons: &mut Vec<Reason>) {
    if user.kept.len() < USUAL_MIN_LOGINS {
        return;
    }
    let password_dim =
        (input::Layout::dims(&user.layout) > crate::features::N).then_some(crate::features::N);
    let groups = [
        Some(F::MouseSpeedMean as usize),
        Some(F::KeyDwellMean as usize),
        password_dim,
    ];
    for d in groups.into_iter().flatten() {
        let usual = user.kept.iter().filter(|k| !k[d].is_nan()).count();
        if usual as f64 >= USUAL_SHARE * user.kept.len() as f64 && x[d].is_nan() {
            reasons.push(Reason {
                code: "missing_usual_input",
                feature: Cow::Owned(match user.layout.dim(d) {
                    input::Dim::Named(i) => crate::features::NAMES[i].to_string(),
                    _ => "password_rhythm".to_string(),
                }),
                usual: user.usual_range(d),
                value: f64::NAN,
            });
        }
    }
}

/// The original prototype's rules, as named reasons (the policy floors the bot rules).
fn rules(user: &UserModel, x: &[f64], fv: &FeatureVector, reasons: &mut Vec<Reason>) {
    let signed = |f: F| {
        let d = f as usize;
        (x[d] - f64::from(user.mean[d])) / f64::from(user.spread[d])
    };
    let fire = |f: F, code: &'static str, reasons: &mut Vec<Reason>| {
        reasons.push(reason(user, x, f as usize, code));
    };
    if signed(F::MouseSpeedMean).abs() > RULE_Z {
        fire(F::MouseSpeedMean, "mouse_speed_out_of_range", reasons);
    }
    if signed(F::MouseCircVar) > RULE_Z {
        fire(F::MouseCircVar, "erratic_direction", reasons);
    }
    if signed(F::MouseAccSpikiness) > RULE_Z {
        fire(F::MouseAccSpikiness, "spiky_acceleration", reasons);
    }
    let usual_tab = f64::from(user.mean[F::NavPasswordTab as usize]);
    let now_tab = fv.get(F::NavPasswordTab);
    if (usual_tab > 0.8 && now_tab == 0.0) || (usual_tab < 0.2 && now_tab == 1.0) {
        fire(F::NavPasswordTab, "navigation_changed", reasons);
    }
    if fv.get(F::PasswordPasted) == 1.0 {
        fire(F::PasswordPasted, "password_pasted", reasons);
    }
    if fv.get(F::Autofill) == 1.0 {
        fire(F::Autofill, "autofilled", reasons);
    }
    if fv.get(F::BotSynthetic) == 1.0 {
        fire(F::BotSynthetic, "synthetic_input", reasons);
    }
    if fv.get(F::BotNoInput) == 1.0 {
        fire(F::BotNoInput, "no_input", reasons);
    }
}

#[cfg(test)]
mod tests;
