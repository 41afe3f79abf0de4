//! Per-user detectors, fitted on that user's verified logins only.
//!
//! - **scaled Manhattan** (Killourhy & Maxion 2009): mean over dimensions of
//!   `|x - mean| / mean-absolute-deviation`;
//! - **shrunk z**: `|x - mean| / s` where the user's spread `s` is shrunk toward the
//!   population's typical within-user spread ([`Population`]), so a user with five logins that
//!   happened to agree closely is not judged by an impossibly tight range;
//! - **nearest neighbours**: the mean of the two smallest shrunk-scaled Manhattan distances to
//!   the user's stored logins (a few recent ones, as `f32`).
//!
//! - **contrast forest** (optional): a small Random Forest separating the user's logins from a
//!   sample of other people's logins, all expressed in this user's model space. It needs the
//!   population's logins at fit time, so it is fitted only where they are available.
//!
//! Every per-dimension term is capped at [`TERM_CAP`] so one wild value cannot dominate, and
//! dimensions missing on either side are skipped. Scoring allocates nothing.

// Dimensions index several parallel arrays (input, mean, spread, …): index loops read best.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};

use super::global::Forest;
use super::input::{self, Dim, Layout};
use crate::features::{FeatureVector, N};

/// Per-dimension deviation cap (in spreads).
pub(crate) const TERM_CAP: f64 = 10.0;
/// Logins kept for the nearest-neighbour detector.
pub(crate) const MAX_KEPT: usize = 20;
/// Weight of the population spread, in logins (empirical-Bayes style shrinkage).
pub(crate) const SHRINK_LOGINS: f64 = 4.0;
/// Smallest spread in model space (log units or fraction).
pub(crate) const MIN_SPREAD: f64 = 0.01;

/// The population's typical within-user spread per dimension (model space), learnt from other
/// users' logins. Password positions share one value per kind, since passwords differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Population {
    pub named: Vec<f64>,
    pub press_press: f64,
    pub dwell: f64,
}

/// The within-user spread assumed for a dimension nobody's logins have shown yet (model
/// space): the prior before any population data exists.
const PRIOR_SPREAD: f64 = 0.25;

impl Population {
    /// A neutral prior (used before any population data exists).
    pub(crate) fn neutral() -> Self {
        Population {
            named: vec![PRIOR_SPREAD; N],
            press_press: PRIOR_SPREAD,
            dwell: PRIOR_SPREAD,
        }
    }

    pub fn spread(&self, d: Dim) -> f64 {
        match d {
            Dim::Named(i) => self.named.get(i).copied().unwrap_or(PRIOR_SPREAD),
            Dim::PressPress(_) => self.press_press,
            Dim::Dwell(_) => self.dwell,
        }
    }

    /// Median over users of each user's own standard deviation per dimension.
    pub fn fit(users: &[&[FeatureVector]]) -> Self {
        let mut per_named: Vec<Vec<f64>> = vec![Vec::new(); N];
        let (mut pp, mut dw) = (Vec::new(), Vec::new());
        for logins in users {
            let layout = Layout::fit(logins);
            let rows: Vec<Vec<f64>> = logins.iter().map(|f| input::of(f, &layout)).collect();
            for d in 0..layout.dims() {
                let col: Vec<f64> = rows.iter().map(|r| r[d]).filter(|v| !v.is_nan()).collect();
                if col.len() < 2 {
                    continue;
                }
                let sd = sample_sd(&col);
                match layout.dim(d) {
                    Dim::Named(i) => per_named[i].push(sd),
                    Dim::PressPress(_) => pp.push(sd),
                    Dim::Dwell(_) => dw.push(sd),
                }
            }
        }
        let med = |v: &mut Vec<f64>| {
            if v.is_empty() {
                PRIOR_SPREAD
            } else {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2].max(MIN_SPREAD)
            }
        };
        Population {
            named: per_named.iter_mut().map(med).collect(),
            press_press: med(&mut pp),
            dwell: med(&mut dw),
        }
    }
}

fn sample_sd(col: &[f64]) -> f64 {
    let n = col.len() as f64;
    let m = col.iter().sum::<f64>() / n;
    (col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt()
}

/// One user's detectors. Small: a few hundred numbers, plus the contrast forest when fitted
/// (see `docs/detection.md`).
#[derive(Debug, Serialize, Deserialize)]
pub struct UserModel {
    pub layout: Layout,
    pub logins: u32,
    pub mean: Vec<f32>,
    /// Mean absolute deviation (scaled Manhattan).
    pub mad: Vec<f32>,
    /// Spread shrunk toward the population's.
    pub spread: Vec<f32>,
    /// Recent logins in model space, for nearest neighbours.
    pub kept: Vec<Vec<f32>>,
    /// User-versus-population forest, when fitted with negatives.
    pub contrast: Option<Forest>,
}

/// Contrast forest size: small, it is stored per user.
pub(crate) const CONTRAST_TREES: u16 = 40;
pub(crate) const CONTRAST_DEPTH: u16 = 10;
/// Caps on the contrast forest's training rows.
pub(crate) const CONTRAST_OWN: usize = 600;
pub(crate) const CONTRAST_NEGATIVES: usize = 1200;

/// The four per-user detector scores of one login (higher = less like the user).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct UserScores {
    pub manhattan: f64,
    pub shrunk_z: f64,
    pub nearest: f64,
    /// Fraction of the contrast forest's trees voting "someone else"; NaN without one.
    pub contrast: f64,
}

impl UserModel {
    /// Whether `fv` copies one of the user's kept logins (`replay::near_duplicate`).
    pub fn copies(&self, fv: &FeatureVector) -> bool {
        let x = input::of(fv, &self.layout);
        self.kept
            .iter()
            .any(|k| super::replay::near_duplicate(&self.layout, &x, k))
    }

    /// Fits a user's model on their verified logins (any number; more is better).
    pub fn fit(logins: &[FeatureVector], population: &Population) -> UserModel {
        let layout = Layout::fit(logins);
        let dims = layout.dims();
        let rows: Vec<Vec<f64>> = logins.iter().map(|f| input::of(f, &layout)).collect();
        let (mut mean, mut mad, mut spread) =
            (vec![f32::NAN; dims], vec![0f32; dims], vec![0f32; dims]);
        for d in 0..dims {
            let col: Vec<f64> = rows.iter().map(|r| r[d]).filter(|v| !v.is_nan()).collect();
            let prior = population.spread(layout.dim(d));
            if col.is_empty() {
                spread[d] = prior as f32;
                mad[d] = prior as f32;
                continue;
            }
            let n = col.len() as f64;
            let m = col.iter().sum::<f64>() / n;
            let a = col.iter().map(|x| (x - m).abs()).sum::<f64>() / n;
            let var = col.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            let k = SHRINK_LOGINS;
            let own = if col.len() >= 2 { var } else { 0.0 };
            let w = if col.len() >= 2 { n - 1.0 } else { 0.0 };
            let shrunk = ((w * own + k * prior * prior) / (w + k)).sqrt();
            mean[d] = m as f32;
            mad[d] = a.max(MIN_SPREAD) as f32;
            spread[d] = shrunk.max(MIN_SPREAD) as f32;
        }
        let kept = rows
            .iter()
            .rev()
            .take(MAX_KEPT)
            .map(|r| r.iter().map(|&v| v as f32).collect())
            .collect();
        UserModel {
            layout,
            logins: logins.len() as u32,
            mean,
            mad,
            spread,
            kept,
            contrast: None,
        }
    }

    /// Fits the user's model and a contrast forest against `negatives` (other people's logins).
    pub fn fit_contrasted(
        logins: &[FeatureVector],
        population: &Population,
        negatives: &[&FeatureVector],
        seed: u64,
    ) -> UserModel {
        let mut model = UserModel::fit(logins, population);
        let own = logins.iter().rev().take(CONTRAST_OWN);
        let stride = negatives.len().div_ceil(CONTRAST_NEGATIVES).max(1);
        let neg = negatives.iter().step_by(stride).copied();
        let mut rows: Vec<Vec<f64>> = Vec::new();
        let mut labels = Vec::new();
        for fv in own {
            rows.push(input::of(fv, &model.layout));
            labels.push(0);
        }
        for fv in neg {
            rows.push(input::of(fv, &model.layout));
            labels.push(1);
        }
        let refs: Vec<&[f64]> = rows.iter().map(|r| &r[..]).collect();
        model.contrast = Forest::fit(&refs, &labels, CONTRAST_TREES, CONTRAST_DEPTH, seed);
        model
    }

    /// Model-space input of a login for this user.
    pub fn input(&self, fv: &FeatureVector, out: &mut Vec<f64>) {
        input::write(fv, &self.layout, out);
    }

    /// Per-dimension |z| with the shrunk spread (NaN where not comparable).
    pub fn z(&self, x: &[f64], d: usize) -> f64 {
        let m = f64::from(self.mean[d]);
        (x[d] - m).abs() / f64::from(self.spread[d])
    }

    /// Scores a login's model-space input `x` (from [`UserModel::input`]).
    pub fn score(&self, x: &[f64]) -> UserScores {
        let (mut sm, mut sz, mut n) = (0.0, 0.0, 0usize);
        for d in 0..x.len().min(self.mean.len()) {
            let m = f64::from(self.mean[d]);
            if x[d].is_nan() || m.is_nan() {
                continue;
            }
            let diff = (x[d] - m).abs();
            sm += (diff / f64::from(self.mad[d])).min(TERM_CAP);
            sz += (diff / f64::from(self.spread[d])).min(TERM_CAP);
            n += 1;
        }
        if n == 0 {
            return UserScores {
                manhattan: f64::NAN,
                shrunk_z: f64::NAN,
                nearest: f64::NAN,
                contrast: f64::NAN,
            };
        }
        let (mut best, mut second) = (f64::INFINITY, f64::INFINITY);
        for k in &self.kept {
            let (mut dist, mut c) = (0.0, 0usize);
            for d in 0..x.len().min(k.len()) {
                let kv = f64::from(k[d]);
                if x[d].is_nan() || kv.is_nan() {
                    continue;
                }
                dist += ((x[d] - kv).abs() / f64::from(self.spread[d])).min(TERM_CAP);
                c += 1;
            }
            if c == 0 {
                continue;
            }
            let dist = dist / c as f64;
            if dist < best {
                second = best;
                best = dist;
            } else if dist < second {
                second = dist;
            }
        }
        let nearest = match (best.is_finite(), second.is_finite()) {
            (true, true) => (best + second) / 2.0,
            (true, false) => best,
            _ => f64::NAN,
        };
        UserScores {
            manhattan: sm / n as f64,
            shrunk_z: sz / n as f64,
            nearest,
            contrast: self.contrast.as_ref().map_or(f64::NAN, |f| f.vote(x)),
        }
    }

    /// The user's usual range of dimension `d` (mean ± 2 spreads) in the feature's own unit.
    pub(crate) fn usual_range(&self, d: usize) -> (f64, f64) {
        let m = f64::from(self.mean[d]);
        let s = f64::from(self.spread[d]);
        let dim = self.layout.dim(d);
        (
            input::to_unit(dim, m - 2.0 * s),
            input::to_unit(dim, m + 2.0 * s),
        )
    }
}

/// Dimension name for reasons.
pub(crate) fn dim_name(layout: &Layout, d: usize) -> String {
    match layout.dim(d) {
        Dim::Named(i) => crate::features::NAMES[i].to_string(),
        Dim::PressPress(p) => format!("password_press_press_{}", p + 1),
        Dim::Dwell(p) => format!("password_dwell_{}", p + 1),
    }
}
