//! What is learnt across users: the population's spreads, a global Random Forest over
//! user-normalised deviation vectors, and the logistic fusion that turns detector scores into a
//! calibrated risk.
//!
//! The forest is user-independent: it never sees raw features, only how far a login sits from
//! *its claimed user's* profile (signed z per feature, password-rhythm summaries, the per-user
//! detector scores). It is trained on other users' later logins (genuine) and on other users'
//! logins presented as this user's (impostor), so it helps a user from their first few logins.
//! Its probability is the fraction of trees voting impostor (smartcore's forest gives hard
//! labels, so the forest here is a list of one-tree smartcore forests with their own seeds).
//!
//! The fusion is a logistic regression on the detector scores, fitted on a different half of
//! the training users than the forest, with balanced classes: its output is a probability-like
//! risk whose meaning (0.5 = the odds of an impostor and a genuine login are even) is the same
//! for every user, so one threshold in the config means the same for everyone.

// Dimensions index several parallel arrays (input, mean, spread, …): index loops read best.
#![allow(clippy::needless_range_loop)]

use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

use super::input::Dim;
use super::user::{Population, UserModel, UserScores, TERM_CAP};
use crate::features::{FeatureVector, N};

/// Length of a deviation vector.
pub(crate) const DEVIATION_DIMS: usize = N + 9 + 2 * POSITIONS;
/// Password positions whose signed z enters the deviation vector one by one.
pub(crate) const POSITIONS: usize = 12;

/// Writes the user-normalised deviation vector of model-space input `x` into `out`.
pub fn deviation(
    user: &UserModel,
    x: &[f64],
    scores: &UserScores,
    out: &mut [f64; DEVIATION_DIMS],
) {
    out.fill(0.0);
    let (mut pw_sum, mut pw_max, mut pw_over, mut pw_sq, mut pw_n) =
        (0.0, 0.0f64, 0.0, 0.0, 0usize);
    for d in 0..x.len().min(user.mean.len()) {
        let m = f64::from(user.mean[d]);
        if x[d].is_nan() || m.is_nan() {
            continue;
        }
        let z = ((x[d] - m) / f64::from(user.spread[d])).clamp(-TERM_CAP, TERM_CAP);
        match user.layout.dim(d) {
            Dim::Named(i) => out[i] = z,
            pos => {
                match pos {
                    Dim::PressPress(p) if p < POSITIONS => out[N + 9 + p] = z,
                    Dim::Dwell(p) if p < POSITIONS => out[N + 9 + POSITIONS + p] = z,
                    _ => {}
                }
                pw_sum += z.abs();
                pw_max = pw_max.max(z.abs());
                pw_sq += z * z;
                if z.abs() > 2.0 {
                    pw_over += 1.0;
                }
                pw_n += 1;
            }
        }
    }
    if pw_n > 0 {
        let n = pw_n as f64;
        out[N] = 1.0;
        out[N + 1] = pw_sum / n;
        out[N + 2] = pw_max;
        out[N + 3] = pw_over / n;
        out[N + 4] = (pw_sq / n).sqrt();
    }
    let or0 = |v: f64| if v.is_finite() { v } else { 0.0 };
    out[N + 5] = or0(scores.manhattan);
    out[N + 6] = or0(scores.shrunk_z);
    out[N + 7] = or0(scores.nearest);
    out[N + 8] = f64::from(user.logins).ln_1p();
}

type Tree = RandomForestClassifier<f64, u32, DenseMatrix<f64>, Vec<u32>>;

/// A random forest whose output is the fraction of trees voting "impostor" (label 1).
#[derive(Debug, Serialize, Deserialize)]
pub struct Forest {
    dims: usize,
    trees: Vec<Tree>,
}

/// Size of the global forest: enough for smooth vote fractions, few enough for microsecond
/// scoring.
pub(crate) const TREES: u16 = 40;

impl Forest {
    /// Fits on `rows` (each `dims` long; NaN is read as -1, "not measured") with labels
    /// (1 = impostor).
    pub fn fit(
        rows: &[&[f64]],
        labels: &[u32],
        trees: u16,
        max_depth: u16,
        seed: u64,
    ) -> Option<Forest> {
        let dims = rows.first()?.len();
        if !labels.contains(&0) || !labels.contains(&1) || rows.iter().any(|r| r.len() != dims) {
            return None;
        }
        let flat: Vec<f64> = rows
            .iter()
            .flat_map(|r| r.iter().map(|&v| if v.is_nan() { -1.0 } else { v }))
            .collect();
        let x = DenseMatrix::new(rows.len(), dims, flat, false).ok()?;
        let y = labels.to_vec();
        let mut out = Vec::with_capacity(usize::from(trees));
        for t in 0..trees {
            let params = RandomForestClassifierParameters::default()
                .with_n_trees(1)
                .with_max_depth(max_depth)
                .with_min_samples_leaf(3)
                .with_seed(seed.wrapping_mul(1000).wrapping_add(u64::from(t)));
            out.push(RandomForestClassifier::fit(&x, &y, params).ok()?);
        }
        Some(Forest { dims, trees: out })
    }

    /// Fraction of trees voting impostor; 0.5 when `row` does not fit the forest.
    pub(crate) fn vote(&self, row: &[f64]) -> f64 {
        if row.len() != self.dims {
            return 0.5;
        }
        let clean: Vec<f64> = row
            .iter()
            .map(|&v| if v.is_nan() { -1.0 } else { v })
            .collect();
        let Ok(x) = DenseMatrix::new(1, self.dims, clean, false) else {
            return 0.5;
        };
        let votes = self
            .trees
            .iter()
            .filter(|t| t.predict(&x).is_ok_and(|y| y.first() == Some(&1)))
            .count();
        votes as f64 / self.trees.len().max(1) as f64
    }
}

/// Inputs of the fusion.
pub(crate) const FUSION_INPUTS: usize = 5;

/// Logistic regression on standardised detector scores, with balanced class weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fusion {
    pub center: [f64; FUSION_INPUTS],
    pub scale: [f64; FUSION_INPUTS],
    pub weights: [f64; FUSION_INPUTS],
    pub bias: f64,
}

impl Fusion {
    /// Equal weights on standardised inputs of a neutral scale (before any training).
    pub(crate) fn neutral() -> Self {
        Fusion {
            center: [1.0, 1.0, 1.0, 0.5, 0.5],
            scale: [1.0, 1.0, 1.0, 0.25, 0.25],
            weights: [1.0, 1.0, 1.0, 0.0, 0.0],
            bias: 0.0,
        }
    }

    /// The fusion's inputs: log detector scores (their spread is multiplicative), the global
    /// forest's vote and the contrast forest's vote (NaN when absent: it then adds nothing).
    pub fn inputs(scores: &UserScores, forest: f64) -> [f64; FUSION_INPUTS] {
        let l = |v: f64| {
            if v.is_finite() {
                v.max(0.0).ln_1p()
            } else {
                0.0
            }
        };
        [
            l(scores.manhattan),
            l(scores.shrunk_z),
            l(scores.nearest),
            if forest.is_finite() { forest } else { 0.5 },
            scores.contrast,
        ]
    }

    pub fn risk(&self, x: &[f64; FUSION_INPUTS]) -> f64 {
        let mut z = self.bias;
        for i in 0..FUSION_INPUTS {
            if x[i].is_finite() {
                z += self.weights[i] * (x[i] - self.center[i]) / self.scale[i];
            }
        }
        1.0 / (1.0 + (-z).exp())
    }

    /// Fits by gradient descent with a small L2 penalty; classes weighted to equal mass.
    pub fn fit(rows: &[[f64; FUSION_INPUTS]], labels: &[u32]) -> Fusion {
        let mut f = Fusion::neutral();
        if rows.is_empty() {
            return f;
        }
        for i in 0..FUSION_INPUTS {
            let col: Vec<f64> = rows
                .iter()
                .map(|r| r[i])
                .filter(|v| v.is_finite())
                .collect();
            let (m, sd) = crate::features::mean_sd(&col);
            f.center[i] = m;
            f.scale[i] = if sd > 1e-9 { sd } else { 1.0 };
        }
        let pos = labels.iter().filter(|&&l| l == 1).count().max(1) as f64;
        let neg = labels.iter().filter(|&&l| l == 0).count().max(1) as f64;
        let (wp, wn) = (0.5 / pos, 0.5 / neg);
        f.weights = [0.0; FUSION_INPUTS];
        for _ in 0..500 {
            let mut g = [0.0; FUSION_INPUTS];
            let mut gb = 0.0;
            for (r, &l) in rows.iter().zip(labels) {
                let p = f.risk(r);
                let w = if l == 1 { wp } else { wn };
                let e = w * (p - f64::from(l));
                for i in 0..FUSION_INPUTS {
                    if r[i].is_finite() {
                        g[i] += e * (r[i] - f.center[i]) / f.scale[i];
                    }
                }
                gb += e;
            }
            for i in 0..FUSION_INPUTS {
                f.weights[i] -= g[i] + 1e-3 * f.weights[i];
            }
            f.bias -= gb;
        }
        f
    }
}

/// Everything learnt across users, fitted once and shared by all users' scoring.
#[derive(Debug, Serialize, Deserialize)]
pub struct GlobalModel {
    pub version: u32,
    pub population: Population,
    pub forest: Option<Forest>,
    pub fusion: Fusion,
}

/// One training user: logins to enrol on, and later logins of the same person.
pub struct TrainingUser<'a> {
    pub enrol: &'a [FeatureVector],
    pub later: &'a [FeatureVector],
}

/// Impostor rows per genuine row when building training sets.
pub(crate) const IMPOSTOR_RATIO: usize = 2;

impl GlobalModel {
    /// A model with no cross-user knowledge: neutral prior, no forest, equal-weight fusion.
    pub fn untrained() -> Self {
        GlobalModel {
            version: super::MODEL_VERSION,
            population: Population::neutral(),
            forest: None,
            fusion: Fusion::neutral(),
        }
    }

    /// Trains the population prior, forest and fusion on `users` (never the users it will be
    /// evaluated on). Users are split in two halves: the forest learns on one, the fusion on the
    /// other, so the fusion sees the forest's honest out-of-sample votes.
    pub fn train(users: &[TrainingUser<'_>], seed: u64) -> GlobalModel {
        GlobalModel::train_with(users, seed, false)
    }

    /// As [`GlobalModel::train`]; with `contrast`, the fusion also learns to weigh per-user
    /// contrast forests (fitted for the fusion half's users against the forest half's logins,
    /// so the impostors the fusion sees were never the forests' negatives).
    pub(crate) fn train_with(users: &[TrainingUser<'_>], seed: u64, contrast: bool) -> GlobalModel {
        let enrol: Vec<&[FeatureVector]> = users.iter().map(|u| u.enrol).collect();
        let population = Population::fit(&enrol);
        let (a, b): (Vec<usize>, Vec<usize>) = if users.len() >= 4 {
            (0..users.len()).partition(|i| i % 2 == 0)
        } else {
            ((0..users.len()).collect(), (0..users.len()).collect())
        };
        let negatives: Vec<&FeatureVector> = a.iter().flat_map(|&u| users[u].enrol).collect();
        let models: Vec<UserModel> = users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                if contrast && b.contains(&i) && !a.contains(&i) {
                    UserModel::fit_contrasted(u.enrol, &population, &negatives, seed ^ i as u64)
                } else {
                    UserModel::fit(u.enrol, &population)
                }
            })
            .collect();
        let rows_for = |set: &[usize]| {
            let mut rows = Vec::new();
            let mut labels = Vec::new();
            let mut x = Vec::new();
            let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
            for &u in set {
                let model = &models[u];
                let mut push = |fv: &FeatureVector, label: u32| {
                    model.input(fv, &mut x);
                    let s = model.score(&x);
                    let mut dev = [0.0; DEVIATION_DIMS];
                    deviation(model, &x, &s, &mut dev);
                    rows.push((dev, s));
                    labels.push(label);
                };
                for fv in users[u].later {
                    push(fv, 0);
                }
                let others: Vec<usize> = set.iter().copied().filter(|&o| o != u).collect();
                let want = (users[u].later.len() * IMPOSTOR_RATIO).max(4);
                for _ in 0..want {
                    if others.is_empty() {
                        break;
                    }
                    rng = rng
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let o = others[(rng >> 33) as usize % others.len()];
                    let pool = users[o].enrol;
                    if pool.is_empty() {
                        continue;
                    }
                    let fv = &pool[(rng >> 17) as usize % pool.len()];
                    push(fv, 1);
                }
            }
            (rows, labels)
        };
        let (rows_a, labels_a) = rows_for(&a);
        let devs: Vec<&[f64]> = rows_a.iter().map(|r| &r.0[..]).collect();
        let forest = Forest::fit(&devs, &labels_a, TREES, 12, seed);
        let (rows_b, labels_b) = rows_for(&b);
        let fusion_rows: Vec<[f64; FUSION_INPUTS]> = rows_b
            .iter()
            .map(|(dev, s)| {
                let vote = forest.as_ref().map_or(f64::NAN, |f| f.vote(dev));
                Fusion::inputs(s, vote)
            })
            .collect();
        let fusion = Fusion::fit(&fusion_rows, &labels_b);
        GlobalModel {
            version: super::MODEL_VERSION,
            population,
            forest,
            fusion,
        }
    }
}
