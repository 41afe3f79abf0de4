//! The model space: a [`FeatureVector`] as the dense, transformed input every detector reads.
//!
//! Durations, speeds and counts are compared as `ln(1 + x)` (timing noise is multiplicative);
//! fractions and flags as they are. The password's per-position rhythm is appended only when
//! this login typed the password straight through with the user's usual length, so the
//! fixed-text part is compared position by position or not at all. Missing values stay `NaN`
//! and every detector skips them.

use serde::{Deserialize, Serialize};

use crate::features::{FeatureVector, Scale, N, SCALES};

/// Which dimensions a user's model has: the named features plus, for a usual password length
/// `L > 0`, `L - 1` press-to-press latencies and `L` dwell times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub password_len: usize,
}

impl Layout {
    pub fn dims(&self) -> usize {
        N + self.password_dims()
    }

    pub(crate) fn password_dims(&self) -> usize {
        if self.password_len == 0 {
            0
        } else {
            2 * self.password_len - 1
        }
    }

    /// The usual password length of a user: the most common clean length among the logins
    /// (ties to the longer one), or 0 when none typed it.
    pub fn fit(logins: &[FeatureVector]) -> Layout {
        let mut counts = [0usize; crate::features::MAX_PASSWORD + 1];
        for fv in logins {
            if fv.password.clean && fv.password.len() >= 2 {
                counts[fv.password.len()] += 1;
            }
        }
        let best = (2..counts.len())
            .filter(|&l| counts[l] > 0)
            .max_by_key(|&l| (counts[l], l))
            .unwrap_or(0);
        Layout { password_len: best }
    }
}

fn log1p(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else {
        x.max(0.0).ln_1p()
    }
}

/// Writes the model-space input of `fv` into `out` (cleared first).
pub fn write(fv: &FeatureVector, layout: &Layout, out: &mut Vec<f64>) {
    out.clear();
    out.extend(fv.values.iter().zip(SCALES).map(|(&v, s)| match s {
        Scale::Log => log1p(v),
        Scale::Linear => v,
    }));
    let l = layout.password_len;
    if l == 0 {
        return;
    }
    let pw = &fv.password;
    if pw.clean && pw.len() == l && pw.press_press.len() + 1 == l {
        out.extend(pw.press_press.iter().map(|&v| log1p(v)));
        out.extend(pw.dwell.iter().map(|&v| log1p(v)));
    } else {
        out.extend(std::iter::repeat_n(f64::NAN, 2 * l - 1));
    }
}

/// The model-space input of `fv` as a new vector.
pub fn of(fv: &FeatureVector, layout: &Layout) -> Vec<f64> {
    let mut out = Vec::with_capacity(layout.dims());
    write(fv, layout, &mut out);
    out
}

/// What a model-space dimension is, for reasons and priors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Named(usize),
    PressPress(usize),
    Dwell(usize),
}

impl Layout {
    pub(crate) fn dim(&self, d: usize) -> Dim {
        if d < N {
            Dim::Named(d)
        } else if d < N + self.password_len.saturating_sub(1) {
            Dim::PressPress(d - N)
        } else {
            Dim::Dwell(d - N - self.password_len.saturating_sub(1))
        }
    }
}

/// Back from model space to the feature's own unit (for "usual range" in reasons).
pub(crate) fn to_unit(d: Dim, v: f64) -> f64 {
    match d {
        Dim::Named(i) if SCALES[i] == Scale::Linear => v,
        _ => v.exp_m1(),
    }
}
