//! Near-duplicate logins. A person never reproduces a login: every duration they type and
//! move varies by more than a few percent from one login to the next. A replayed payload —
//! captured from traffic, a browser extension or a debug page, re-pointed at fresh page tokens,
//! identical or with its times shifted by a few milliseconds — has almost every timing of an
//! earlier login. This module says when two logins are that close, and keeps the recent
//! logins of the whole population to compare with (a bot reusing one trace across accounts).
//!
//! Compared in model space (`ln(1 + x)` of durations, speeds and password positions), over the
//! timing dimensions only: counts and flags repeat between genuine logins and say nothing.
//! Pure comparisons; the population memory is bounded and in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::input::{self, Dim, Layout};
use crate::features::{FeatureVector, Scale, F, SCALES};

/// Two durations are "the same" within this many milliseconds: a replay jittered by up to
/// 5 ms stays inside, two logins of a person almost never do (browsers stamp events to
/// 0.1 ms; a typist's intervals vary by tens of milliseconds).
pub(crate) const CLOSE_MS: f64 = 6.0;
/// Other timings (speeds, distances, accelerations) are "the same" within this distance in
/// `ln(1 + x)`: about 4 %.
pub(crate) const CLOSE: f64 = 0.04;
/// Fewest timing dimensions both logins must have before they can be called duplicates.
pub(crate) const MIN_DIMS: usize = 6;
/// Share of those dimensions that must be close.
pub(crate) const MIN_SHARE: f64 = 0.9;

/// Named features not compared: counts and flags (equal across genuine logins) and the
/// mouse trace's derivatives and spreads (a few milliseconds of jitter on 16 ms samples move
/// them by more than [`CLOSE`], so a jittered replay would not match on them).
const NOT_COMPARED: &[F] = &[
    F::KeyStrokes,
    F::Backspaces,
    F::Pastes,
    F::MousePauses,
    F::Untrusted,
    F::MouseSpeedMean,
    F::MouseSpeedP50,
    F::MouseSpeedSd,
    F::MouseSpeedP10,
    F::MouseSpeedP90,
    F::MouseAccMean,
    F::MouseAccSd,
    F::MouseAccSpikiness,
    F::MouseJerkMean,
    F::MouseAngularSpeed,
    F::MouseAngularSpeedSd,
    F::MouseCurvature,
];
/// Named features in milliseconds, compared with [`CLOSE_MS`] (the password positions are too).
const MILLISECONDS: &[F] = &[
    F::KeyDwellMean,
    F::KeyDwellSd,
    F::KeyFlightMean,
    F::KeyFlightSd,
    F::KeyGapMean,
    F::ClickIntervalMean,
    F::ClickIntervalSd,
    F::ClickHoldMean,
    F::TimeToSubmit,
    F::TypingToSubmit,
    F::MouseDuration,
];

/// Whether two model-space values of dimension `d` are the same timing, give or take jitter.
fn same_timing(layout: &Layout, d: usize, x: f64, y: f64) -> bool {
    let in_ms = match layout.dim(d) {
        Dim::Named(i) => MILLISECONDS.iter().any(|f| *f as usize == i),
        Dim::PressPress(_) | Dim::Dwell(_) => true,
    };
    let shape = matches!(layout.dim(d), Dim::Named(i) if SHAPES.iter().any(|f| *f as usize == i));
    if in_ms {
        (x.exp_m1() - y.exp_m1()).abs() <= CLOSE_MS
    } else if shape {
        (x - y).abs() <= CLOSE_SHAPE
    } else {
        (x - y).abs() <= CLOSE
    }
}

/// Shapes of the mouse path that only its positions decide (a replay with shifted times keeps
/// them exactly), compared within [`CLOSE_SHAPE`].
const SHAPES: &[F] = &[F::MouseStraightness, F::MouseCircVar];
pub(crate) const CLOSE_SHAPE: f64 = 0.005;

/// Whether model-space dimension `d` of `layout` is compared: timings, distances and the
/// path's shape.
pub(crate) fn is_timing(layout: &Layout, d: usize) -> bool {
    match layout.dim(d) {
        Dim::Named(i) => {
            (SCALES[i] == Scale::Log && !NOT_COMPARED.iter().any(|f| *f as usize == i))
                || SHAPES.iter().any(|f| *f as usize == i)
        }
        Dim::PressPress(_) | Dim::Dwell(_) => true,
    }
}

/// Whether two model-space vectors under `layout` are the same login, give or take jitter.
pub(crate) fn near_duplicate(layout: &Layout, a: &[f64], b: &[f32]) -> bool {
    let (mut compared, mut close) = (0usize, 0usize);
    for d in 0..a.len().min(b.len()) {
        let (x, y) = (a[d], f64::from(b[d]));
        if x.is_nan() || y.is_nan() || !is_timing(layout, d) {
            continue;
        }
        compared += 1;
        if same_timing(layout, d, x, y) {
            close += 1;
        }
    }
    compared >= MIN_DIMS && close as f64 >= MIN_SHARE * compared as f64
}

/// A login as the population memory keeps it: under its own layout (its own clean password
/// length), so logins of different users compare position by position.
pub struct Signature {
    layout: Layout,
    x: Vec<f32>,
    key: Bucket,
}

impl Signature {
    pub fn of(fv: &FeatureVector) -> Signature {
        let layout = Layout::fit(std::slice::from_ref(fv));
        let x: Vec<f32> = input::of(fv, &layout).iter().map(|&v| v as f32).collect();
        // Coarse bucket: what a jittered replay cannot change.
        let strokes = fv.get(F::KeyStrokes);
        let submit = fv.get(F::TimeToSubmit);
        let key = (
            layout.password_len as u8,
            if strokes.is_finite() {
                strokes as u16
            } else {
                u16::MAX
            },
            if submit.is_finite() {
                (submit.max(0.0).ln_1p() / BUCKET_WIDTH).floor() as i32
            } else {
                i32::MIN
            },
        );
        Signature { layout, x, key }
    }
}

/// A bucket of similar logins: (password length, keystrokes, time-to-submit band).
type Bucket = (u8, u16, i32);

/// Width of the time-to-submit buckets in `ln(1 + ms)` (10 %); neighbours are searched too.
const BUCKET_WIDTH: f64 = 0.1;
/// Signatures kept in one bucket (the most recent).
const PER_BUCKET: usize = 32;

/// The most recent logins of everybody, to find one trace used for several accounts or a
/// replay of a login not yet learnt into its user's profile. Bounded: at most `capacity`
/// signatures (a few hundred bytes each), the oldest forgotten first.
pub struct PopulationMemory {
    capacity: usize,
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    buckets: HashMap<Bucket, VecDeque<(u64, Vec<f32>)>>,
    /// Insertion order, to forget the oldest: (sequence, bucket).
    order: VecDeque<(u64, Bucket)>,
    next: u64,
}

impl PopulationMemory {
    pub fn new(capacity: usize) -> PopulationMemory {
        PopulationMemory {
            capacity: capacity.max(1),
            inner: Mutex::new(Memory::default()),
        }
    }

    /// Whether `sig` duplicates a remembered login; remembers it either way.
    pub(crate) fn check_and_remember(&self, sig: Signature) -> bool {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (l, s, q) = sig.key;
        let x: Vec<f64> = sig.x.iter().map(|&v| f64::from(v)).collect();
        let duplicate = [q - 1, q, q + 1].iter().any(|&q| {
            m.buckets.get(&(l, s, q)).is_some_and(|bucket| {
                bucket
                    .iter()
                    .any(|(_, y)| near_duplicate(&sig.layout, &x, y))
            })
        });
        let seq = m.next;
        m.next += 1;
        let bucket = m.buckets.entry(sig.key).or_default();
        bucket.push_back((seq, sig.x));
        if bucket.len() > PER_BUCKET {
            bucket.pop_front();
        }
        m.order.push_back((seq, sig.key));
        while m.order.len() > self.capacity {
            let (old, key) = m.order.pop_front().expect("not empty");
            if let Some(bucket) = m.buckets.get_mut(&key) {
                bucket.retain(|(s, _)| *s != old);
                if bucket.is_empty() {
                    m.buckets.remove(&key);
                }
            }
        }
        duplicate
    }

    pub fn len(&self) -> usize {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        m.buckets.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::PasswordRhythm;

    fn login(seed: f64, jitter: f64) -> FeatureVector {
        let mut fv = FeatureVector::empty();
        for (i, v) in fv.values.iter_mut().enumerate() {
            *v = 100.0 + 37.0 * i as f64 * seed + jitter;
        }
        fv.values[F::KeyStrokes as usize] = 20.0;
        fv.values[F::TimeToSubmit as usize] = 5000.0;
        fv.password = PasswordRhythm {
            press_press: (0..7)
                .map(|i| 120.0 + 13.0 * i as f64 * seed + jitter)
                .collect(),
            dwell: (0..8)
                .map(|i| 80.0 + 7.0 * i as f64 * seed + jitter)
                .collect(),
            clean: true,
        };
        fv
    }

    #[test]
    fn a_replay_with_a_few_ms_of_jitter_is_a_duplicate_and_another_login_is_not() {
        let memory = PopulationMemory::new(100);
        assert!(!memory.check_and_remember(Signature::of(&login(1.0, 0.0))));
        assert!(
            memory.check_and_remember(Signature::of(&login(1.0, 0.0))),
            "identical"
        );
        assert!(
            memory.check_and_remember(Signature::of(&login(1.0, 4.0))),
            "4 ms later"
        );
        assert!(
            !memory.check_and_remember(Signature::of(&login(1.3, 0.0))),
            "another rhythm"
        );
    }

    #[test]
    fn the_memory_stays_within_its_bound() {
        let memory = PopulationMemory::new(50);
        for i in 0..500 {
            memory.check_and_remember(Signature::of(&login(1.0 + f64::from(i) * 0.1, 0.0)));
        }
        assert!(memory.len() <= 50);
        // The oldest are forgotten first.
        assert!(!memory.check_and_remember(Signature::of(&login(1.0, 0.0))));
    }
}
