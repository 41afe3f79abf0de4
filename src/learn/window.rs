//! A user's learning state: the last W verified logins in model space with running statistics
//! over them, the [`UserModel`] they give, and the stored form of both.
//!
//! The running mean and sum of squared deviations are updated in O(dims) per login (Welford's
//! update, and its inverse for the login leaving the window); the mean absolute deviation is
//! recomputed from the window's rows. The result is the model [`UserModel::fit`] gives on the
//! same logins, up to `f32` rounding of the stored rows. A login whose usual password length
//! differs from the window's layout cannot be placed in it: the window then asks for a refit
//! from the store instead.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::features::{FeatureVector, FEATURE_VERSION, MAX_PASSWORD, N, V1_NAMED};
use crate::model::input::{self, Layout};
use crate::model::user::{MAX_KEPT, MIN_SPREAD, SHRINK_LOGINS};
use crate::model::{Population, UserModel, MODEL_VERSION};
use crate::store::StoredModel;

pub use crate::config::MAX_WINDOW;

/// One login in the window.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Row {
    /// The password length this login typed cleanly (0: none, or corrected): what decides the
    /// layout, as in [`Layout::fit`].
    clean_len: u8,
    /// Model-space input under the window's layout.
    x: Vec<f32>,
}

/// Running statistics over the last logins of one user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Window {
    layout: Layout,
    /// Oldest first.
    rows: VecDeque<Row>,
    /// Per dimension: how many rows have a value, their mean, and the sum of squared
    /// deviations from it (Welford).
    n: Vec<u32>,
    mean: Vec<f64>,
    m2: Vec<f64>,
    /// Logins learnt incrementally since the last full refit.
    pub since_refit: u32,
}

impl Window {
    /// An empty window for `layout`.
    pub(super) fn new(layout: Layout) -> Window {
        let dims = layout.dims();
        Window {
            layout,
            rows: VecDeque::new(),
            n: vec![0; dims],
            mean: vec![0.0; dims],
            m2: vec![0.0; dims],
            since_refit: 0,
        }
    }

    /// The window a full refit gives: `logins` (oldest first), the last `window` of them.
    pub(super) fn fit(logins: &[FeatureVector], window: usize) -> Window {
        let logins = &logins[logins.len().saturating_sub(window)..];
        let mut w = Window::new(Layout::fit(logins));
        for fv in logins {
            w.push(fv, window);
        }
        w.since_refit = 0;
        w
    }

    /// The window a user's first login starts.
    pub(super) fn first(fv: &FeatureVector) -> Window {
        Window::new(Layout {
            password_len: usize::from(clean_len(fv)),
        })
    }

    /// Whether a login with exactly these features (bit for bit, in this layout) is already in
    /// the window: then a refit that ran between the caller recording the login and learning
    /// from it took it in already, and it must not count twice.
    pub(super) fn contains(&self, fv: &FeatureVector) -> bool {
        let x = input::of(fv, &self.layout);
        let bits = |v: f64| (v as f32).to_bits();
        self.rows.iter().rev().any(|r| {
            r.clean_len == clean_len(fv) && r.x.iter().zip(&x).all(|(a, &b)| a.to_bits() == bits(b))
        })
    }

    /// Adds a login, dropping the oldest beyond `window`. Returns false when the logins now in
    /// the window call for another layout (the user's usual password length changed): only a
    /// refit can rebuild the rows then.
    pub(super) fn push(&mut self, fv: &FeatureVector, window: usize) -> bool {
        let clean_len = clean_len(fv);
        let x: Vec<f32> = input::of(fv, &self.layout)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        for (d, &v) in x.iter().enumerate() {
            if !v.is_nan() {
                self.n[d] += 1;
                let v = f64::from(v);
                let delta = v - self.mean[d];
                self.mean[d] += delta / f64::from(self.n[d]);
                self.m2[d] += delta * (v - self.mean[d]);
            }
        }
        self.rows.push_back(Row { clean_len, x });
        while self.rows.len() > window.clamp(1, MAX_WINDOW) {
            if let Some(old) = self.rows.pop_front() {
                self.remove(&old.x);
            }
        }
        self.since_refit = self.since_refit.saturating_add(1);
        self.layout_of_rows() == self.layout
    }

    /// Takes a row's values out of the running statistics (Welford in reverse).
    fn remove(&mut self, x: &[f32]) {
        for (d, &v) in x.iter().enumerate() {
            if v.is_nan() || self.n[d] == 0 {
                continue;
            }
            self.n[d] -= 1;
            if self.n[d] == 0 {
                self.mean[d] = 0.0;
                self.m2[d] = 0.0;
                continue;
            }
            let v = f64::from(v);
            let delta = v - self.mean[d];
            self.mean[d] -= delta / f64::from(self.n[d]);
            self.m2[d] = (self.m2[d] - delta * (v - self.mean[d])).max(0.0);
        }
    }

    /// [`Layout::fit`] over the rows in the window.
    fn layout_of_rows(&self) -> Layout {
        let mut counts = [0usize; MAX_PASSWORD + 1];
        for r in &self.rows {
            counts[usize::from(r.clean_len).min(MAX_PASSWORD)] += 1;
        }
        let best = (2..counts.len())
            .filter(|&l| counts[l] > 0)
            .max_by_key(|&l| (counts[l], l))
            .unwrap_or(0);
        Layout { password_len: best }
    }

    /// The user's detectors from the window, with `population`'s spreads as the prior: the
    /// same arithmetic as [`UserModel::fit`], from the running statistics.
    pub(super) fn model(&self, population: &Population) -> UserModel {
        let dims = self.layout.dims();
        let (mut mean, mut mad, mut spread) =
            (vec![f32::NAN; dims], vec![0f32; dims], vec![0f32; dims]);
        for d in 0..dims {
            let prior = population.spread(self.layout.dim(d));
            let n = self.n[d];
            if n == 0 {
                spread[d] = prior as f32;
                mad[d] = prior as f32;
                continue;
            }
            let m = self.mean[d];
            let nf = f64::from(n);
            let var = self.m2[d] / (nf - 1.0).max(1.0);
            let (own, w) = if n >= 2 { (var, nf - 1.0) } else { (0.0, 0.0) };
            let k = SHRINK_LOGINS;
            let shrunk = ((w * own + k * prior * prior) / (w + k)).sqrt();
            let abs: f64 = self
                .rows
                .iter()
                .map(|r| f64::from(r.x[d]))
                .filter(|v| !v.is_nan())
                .map(|v| (v - m).abs())
                .sum();
            mean[d] = m as f32;
            mad[d] = (abs / nf).max(MIN_SPREAD) as f32;
            spread[d] = shrunk.max(MIN_SPREAD) as f32;
        }
        UserModel {
            layout: self.layout,
            logins: self.rows.len() as u32,
            mean,
            mad,
            spread,
            kept: self
                .rows
                .iter()
                .rev()
                .take(MAX_KEPT)
                .map(|r| r.x.clone())
                .collect(),
            contrast: None,
        }
    }

    /// Approximate memory of the window (for cache weights).
    pub(super) fn approx_bytes(&self) -> usize {
        128 + self.layout.dims() * (20 + 4 * self.rows.len())
    }

    /// A window stored under features version 1, in today's model space: the dimensions
    /// version 2 appended to the named features are inserted, empty, before the password's.
    /// Vectors too short to hold version 1's features are left alone for `is_sound` to refuse.
    fn widen_from_v1(&mut self) {
        fn insert_empty<T: Copy>(v: &mut Vec<T>, empty: T) {
            if v.len() >= V1_NAMED {
                v.splice(V1_NAMED..V1_NAMED, std::iter::repeat_n(empty, N - V1_NAMED));
            }
        }
        for row in &mut self.rows {
            insert_empty(&mut row.x, f32::NAN);
        }
        insert_empty(&mut self.n, 0);
        insert_empty(&mut self.mean, 0.0);
        insert_empty(&mut self.m2, 0.0);
    }

    /// Whether a decoded window is internally consistent (every length matches its layout).
    fn is_sound(&self) -> bool {
        let dims = self.layout.dims();
        self.layout.password_len <= MAX_PASSWORD
            && self.n.len() == dims
            && self.mean.len() == dims
            && self.m2.len() == dims
            && self.rows.len() <= MAX_WINDOW
            && self.rows.iter().all(|r| r.x.len() == dims)
    }
}

/// The password length a login typed cleanly, as [`Layout::fit`] counts it (0: none, or
/// corrected, or longer than features are ever extracted).
fn clean_len(fv: &FeatureVector) -> u8 {
    let len = fv.password.len();
    if fv.password.clean && (2..=MAX_PASSWORD).contains(&len) {
        len as u8
    } else {
        0
    }
}

/// Marks a blob as a gaitkeeper user model, so bytes of anything else never decode.
const MAGIC: &[u8; 4] = b"GKUM";
/// Bumped if the blob's framing changes (the model itself is versioned by [`MODEL_VERSION`]).
const FORMAT: u8 = 1;
const HEADER: usize = MAGIC.len() + 1 + 4;

/// The stored form: header, the model's length, the model, then the window. The model comes
/// first so that loading it for scoring never decodes the window.
pub(super) fn encode(
    model: &UserModel,
    window: &Window,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let model = rmp_serde::to_vec(model)?;
    let window = rmp_serde::to_vec(window)?;
    let mut blob = Vec::with_capacity(HEADER + model.len() + window.len());
    blob.extend_from_slice(MAGIC);
    blob.push(FORMAT);
    blob.extend_from_slice(&(model.len() as u32).to_le_bytes());
    blob.extend_from_slice(&model);
    blob.extend_from_slice(&window);
    Ok(blob)
}

/// The two parts of a stored model of this gaitkeeper's model version and of its feature
/// version or version 1 (whose window can be widened); `None` for anything else.
fn split(stored: &StoredModel) -> Option<(&[u8], &[u8])> {
    let features_known = stored.feature_version == FEATURE_VERSION || stored.feature_version == 1;
    if !features_known || stored.model_version != MODEL_VERSION {
        return None;
    }
    let rest = stored.blob.strip_prefix(MAGIC)?;
    let (&format, rest) = rest.split_first()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    if format != FORMAT || len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

/// The model to score with, if the stored model is one this gaitkeeper can use as it is (not
/// one of features version 1: its window is, see [`decode_window`]).
pub(super) fn decode_model(stored: &StoredModel) -> Option<UserModel> {
    if stored.feature_version != FEATURE_VERSION {
        return None;
    }
    let (model, _) = split(stored)?;
    let model: UserModel = rmp_serde::from_slice(model).ok()?;
    model_is_sound(&model).then_some(model)
}

/// The learning state, if the stored model is one this gaitkeeper can continue (one of
/// features version 1 is widened to today's model space).
pub(super) fn decode_window(stored: &StoredModel) -> Option<Window> {
    let (_, window) = split(stored)?;
    let mut window: Window = rmp_serde::from_slice(window).ok()?;
    if stored.feature_version != FEATURE_VERSION {
        window.widen_from_v1();
    }
    window.is_sound().then_some(window)
}

/// Scoring indexes these arrays by dimension: a model whose lengths disagree is unusable.
fn model_is_sound(m: &UserModel) -> bool {
    let dims = m.layout.dims();
    m.layout.password_len <= MAX_PASSWORD
        && m.mean.len() == dims
        && m.mad.len() == dims
        && m.spread.len() == dims
        && m.kept.iter().all(|k| k.len() == dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{PasswordRhythm, N};
    use std::time::SystemTime;

    fn login(i: usize, pw_len: usize) -> FeatureVector {
        let mut fv = FeatureVector::empty();
        for (f, v) in fv.values.iter_mut().enumerate() {
            // Deterministic, varied, with some features missing now and then.
            if !(i + f).is_multiple_of(7) {
                *v = 50.0 + (f as f64) * 3.0 + ((i * 31 + f * 17) % 23) as f64;
            }
        }
        fv.password = PasswordRhythm {
            press_press: (1..pw_len).map(|p| 100.0 + ((i + p) % 9) as f64).collect(),
            dwell: (0..pw_len)
                .map(|p| 80.0 + ((i * 3 + p) % 5) as f64)
                .collect(),
            clean: !i.is_multiple_of(5),
        };
        fv
    }

    fn stored(blob: Vec<u8>) -> StoredModel {
        StoredModel {
            feature_version: FEATURE_VERSION,
            model_version: MODEL_VERSION,
            blob,
            updated_at: SystemTime::now(),
        }
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-4 * (1.0 + x.abs().max(y.abs()))
            })
    }

    #[test]
    fn a_window_stored_under_features_version_1_is_widened_to_the_same_model() {
        let pop = Population::neutral();
        // Logins as version 1 saw them: the features version 2 appended are unknown.
        let logins: Vec<FeatureVector> = (0..20)
            .map(|i| {
                let mut fv = login(i, 8);
                fv.values[V1_NAMED..].fill(f64::NAN);
                fv
            })
            .collect();
        let today = Window::fit(&logins, 50);
        let mut old = today.clone();
        for row in &mut old.rows {
            row.x.drain(V1_NAMED..N);
        }
        old.n.drain(V1_NAMED..N);
        old.mean.drain(V1_NAMED..N);
        old.m2.drain(V1_NAMED..N);
        let blob = encode(&today.model(&pop), &old).unwrap();
        let v1 = StoredModel {
            feature_version: 1,
            ..stored(blob)
        };
        assert!(decode_model(&v1).is_none(), "not usable as it is");
        let widened = decode_window(&v1).expect("a version-1 window is widened");
        let (got, want) = (widened.model(&pop), today.model(&pop));
        assert_eq!(got.layout, want.layout);
        assert!(close(&got.mean, &want.mean));
        assert!(close(&got.spread, &want.spread));
        assert!(close(&got.mad, &want.mad));
        for (a, b) in got.kept.iter().zip(&want.kept) {
            assert!(close(a, b));
        }
        // Other old versions are still not read.
        let v0 = StoredModel {
            feature_version: 0,
            ..v1
        };
        assert!(decode_window(&v0).is_none());
    }

    #[test]
    fn incremental_model_matches_a_full_fit() {
        let pop = Population::neutral();
        let logins: Vec<FeatureVector> = (0..30).map(|i| login(i, 8)).collect();
        let mut w = Window::new(Layout { password_len: 8 });
        for fv in &logins {
            w.push(fv, 50);
        }
        assert_eq!(w.layout_of_rows(), w.layout);
        let inc = w.model(&pop);
        let full = UserModel::fit(&logins, &pop);
        assert_eq!(inc.layout, full.layout);
        assert_eq!(inc.logins, full.logins);
        assert!(close(&inc.mean, &full.mean));
        assert!(close(&inc.spread, &full.spread));
        assert!(close(&inc.mad, &full.mad));
        assert_eq!(inc.kept.len(), full.kept.len());
        for (a, b) in inc.kept.iter().zip(&full.kept) {
            assert!(close(a, b));
        }
    }

    #[test]
    fn sliding_window_equals_a_fit_of_its_last_logins() {
        let pop = Population::neutral();
        let logins: Vec<FeatureVector> = (0..70).map(|i| login(i, 8)).collect();
        let mut w = Window::new(Layout { password_len: 8 });
        for fv in &logins {
            w.push(fv, 20);
        }
        assert_eq!(w.rows.len(), 20);
        let full = UserModel::fit(&logins[50..], &pop);
        let inc = w.model(&pop);
        assert!(close(&inc.mean, &full.mean));
        assert!(close(&inc.spread, &full.spread));
        assert!(close(&inc.mad, &full.mad));
    }

    #[test]
    fn a_login_already_in_the_window_is_recognised() {
        let logins: Vec<FeatureVector> = (0..6).map(|i| login(i, 8)).collect();
        let w = Window::fit(&logins, 50);
        assert!(logins.iter().all(|fv| w.contains(fv)));
        assert!(!w.contains(&login(6, 8)));
        let mut missing = FeatureVector::empty();
        missing.values[0] = 1.0;
        assert!(!w.contains(&missing));
    }

    #[test]
    fn a_new_password_length_asks_for_a_refit() {
        let mut w = Window::new(Layout { password_len: 8 });
        for i in 1..5 {
            assert!(w.push(&login(i, 8), 6));
        }
        let mut changed = false;
        for i in 5..12 {
            changed |= !w.push(&login(i, 11), 6);
        }
        assert!(changed);
    }

    #[test]
    fn stored_form_round_trips_and_rejects_other_versions() {
        let pop = Population::neutral();
        let logins: Vec<FeatureVector> = (0..12).map(|i| login(i, 6)).collect();
        let w = Window::fit(&logins, 50);
        let model = w.model(&pop);
        let blob = encode(&model, &w).unwrap();
        let back = decode_model(&stored(blob.clone())).expect("decodes");
        assert!(close(&back.mean, &model.mean));
        assert_eq!(decode_window(&stored(blob.clone())).unwrap().rows.len(), 12);
        let mut other = stored(blob.clone());
        other.feature_version += 1;
        assert!(decode_model(&other).is_none() && decode_window(&other).is_none());
        let mut other = stored(blob);
        other.model_version += 1;
        assert!(decode_model(&other).is_none());
        assert_eq!(model.mean.len(), N + 11);
    }

    #[test]
    fn corrupt_blobs_decode_to_none() {
        let logins: Vec<FeatureVector> = (0..5).map(|i| login(i, 4)).collect();
        let w = Window::fit(&logins, 50);
        let blob = encode(&w.model(&Population::neutral()), &w).unwrap();
        for cut in 0..blob.len() {
            let s = stored(blob[..cut].to_vec());
            // Any prefix: no panic; a prefix cut inside the model never gives a model.
            let _ = decode_window(&s);
            if cut < HEADER + 8 {
                assert!(decode_model(&s).is_none());
            }
        }
        let mut flipped = blob.clone();
        flipped[HEADER + 3] ^= 0xff;
        let _ = decode_model(&stored(flipped));
    }
}
