//! Features: one validated [`Telemetry`] → one versioned [`FeatureVector`].
//!
//! Owns: every number the models see, computed server-side from the raw events (the browser's
//! own opinion of itself is never trusted). Mouse speed, direction, acceleration, turning and
//! the shape of each movement, clicks, key
//! dwell and flight, the password's per-position rhythm (the fixed-text part), corrections,
//! paste/autofill, navigation method, time to submit and bot signals. Pure code: no I/O, never
//! panics, linear time in the number of events. A feature that cannot be computed for a login
//! (no mouse, no keys) is `NaN`, never a made-up zero.

mod blob;
pub mod evidence;

use std::collections::HashMap;

use crate::telemetry::{FocusMethod, KeyClass, KeyDir, MouseMove, Telemetry, KEY_REPEAT};

pub use blob::{from_blob, to_blob, FeatureBlob};

/// Bumped whenever a feature's meaning or order changes; models fitted on another version are
/// refitted, never mixed.
pub const FEATURE_VERSION: u32 = 2;

/// How a feature is brought to a scale where differences are comparable (see `model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Durations, speeds, counts: compared as `ln(1 + x)`.
    Log,
    /// Fractions, angles, flags: compared as they are.
    Linear,
}

macro_rules! features {
    ($($idx:ident = $name:literal : $scale:ident),* $(,)?) => {
        /// Indices into [`FeatureVector::values`].
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum F { $($idx),* }
        /// Feature names, in vector order.
        pub(crate) const NAMES: &[&str] = &[$($name),*];
        /// Feature scales, in vector order.
        pub const SCALES: &[Scale] = &[$(Scale::$scale),*];
    };
}

features! {
    MouseSpeedMean = "mouse_speed_mean": Log,
    MouseSpeedSd = "mouse_speed_sd": Log,
    MouseSpeedP10 = "mouse_speed_p10": Log,
    MouseSpeedP50 = "mouse_speed_p50": Log,
    MouseSpeedP90 = "mouse_speed_p90": Log,
    MouseDir0 = "mouse_dir_e": Linear,
    MouseDir1 = "mouse_dir_se": Linear,
    MouseDir2 = "mouse_dir_s": Linear,
    MouseDir3 = "mouse_dir_sw": Linear,
    MouseDir4 = "mouse_dir_w": Linear,
    MouseDir5 = "mouse_dir_nw": Linear,
    MouseDir6 = "mouse_dir_n": Linear,
    MouseDir7 = "mouse_dir_ne": Linear,
    MouseCircVar = "mouse_dir_circular_variance": Linear,
    MouseAccMean = "mouse_acc_mean": Log,
    MouseAccSd = "mouse_acc_sd": Log,
    MouseAccSpikiness = "mouse_acc_spikiness": Log,
    MouseStraightness = "mouse_straightness": Linear,
    MousePath = "mouse_path_px": Log,
    MouseDuration = "mouse_duration_ms": Log,
    MousePauses = "mouse_pauses": Log,
    ClickIntervalMean = "click_interval_mean": Log,
    ClickIntervalSd = "click_interval_sd": Log,
    ClickHoldMean = "click_hold_mean": Log,
    KeyDwellMean = "key_dwell_mean": Log,
    KeyDwellSd = "key_dwell_sd": Log,
    KeyFlightMean = "key_flight_mean": Log,
    KeyFlightSd = "key_flight_sd": Log,
    KeyGapMean = "key_gap_mean": Log,
    KeyStrokes = "key_strokes": Log,
    Backspaces = "backspaces": Log,
    Pastes = "pastes": Log,
    PasswordPasted = "password_pasted": Linear,
    Autofill = "autofill": Linear,
    NavTabFraction = "nav_tab_fraction": Linear,
    NavUserTab = "nav_first_field_tab": Linear,
    NavPasswordTab = "nav_password_tab": Linear,
    TimeToSubmit = "time_to_submit_ms": Log,
    TypingToSubmit = "first_input_to_submit_ms": Log,
    BotKeyIntervalCv = "bot_key_interval_cv": Linear,
    BotSpeedCv = "bot_speed_cv": Linear,
    BotNoInput = "bot_no_input": Linear,
    BotSynthetic = "bot_synthetic": Linear,
    Untrusted = "untrusted_events": Log,
    // Version 2 appended these (how the hand turns and shapes a movement); a version-1 login
    // is a version-2 one with them unknown (see `blob`).
    MouseTurnMean = "mouse_turn_mean": Linear,
    MouseAngularSpeed = "mouse_angular_speed": Log,
    MouseAngularSpeedSd = "mouse_angular_speed_sd": Log,
    MouseCurvature = "mouse_curvature": Log,
    MouseJerkMean = "mouse_jerk_mean": Log,
    MouseAccelFraction = "mouse_accel_fraction": Linear,
    MouseDeviation = "mouse_max_deviation_px": Log,
    MousePeakAt = "mouse_peak_speed_at": Linear,
}

/// Number of named features.
pub const N: usize = NAMES.len();

/// Named features of version 1. Version 2 only appended features, so what was stored under
/// version 1 still counts: a login reads as a version-2 one with the appended features unknown
/// (`blob`), a user's learning window gains those dimensions empty (`learn::window`), and an
/// upgrade keeps every user's enrolment.
pub(crate) const V1_NAMED: usize = 44;

/// Longest password whose per-position rhythm is kept.
pub const MAX_PASSWORD: usize = 64;
/// Mouse samples further apart than this are a pause, not a movement (ms).
pub(crate) const PAUSE_MS: f64 = 1000.0;

/// The password field's keystrokes, position by position (the fixed-text part). Only
/// meaningful when the user typed it straight through: `clean` is false after a correction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PasswordRhythm {
    /// Press-to-press latency between position i and i+1 (ms); `len - 1` entries.
    pub press_press: Vec<f64>,
    /// Press-to-release of position i (ms); `NaN` when the release was not seen.
    pub dwell: Vec<f64>,
    pub clean: bool,
}

impl PasswordRhythm {
    /// Number of characters typed.
    pub fn len(&self) -> usize {
        self.dwell.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dwell.is_empty()
    }
}

/// One login as the models see it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureVector {
    pub version: u32,
    /// Indexed by [`F`]; `NaN` where a feature does not apply to this login.
    pub values: [f64; N],
    pub password: PasswordRhythm,
}

impl FeatureVector {
    /// A vector with nothing known.
    pub fn empty() -> Self {
        FeatureVector {
            version: FEATURE_VERSION,
            values: [f64::NAN; N],
            password: PasswordRhythm::default(),
        }
    }

    pub fn get(&self, f: F) -> f64 {
        self.values[f as usize]
    }

    fn set(&mut self, f: F, v: f64) {
        self.values[f as usize] = v;
    }
}

/// Mean and (population) standard deviation; `NaN` for no data.
pub(crate) fn mean_sd(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// An angle in (-2π, 4π) brought into [0, 2π]: the same value as `rem_euclid(2π)` there (one
/// exact subtraction or the same rounded addition), without its software `fmod`, which was ~2 %
/// of scoring a login.
fn wrap_to_turn(angle: f64) -> f64 {
    use std::f64::consts::TAU;
    if angle < 0.0 {
        angle + TAU
    } else if angle >= TAU {
        angle - TAU
    } else {
        angle
    }
}

/// Percentile by linear interpolation on a sorted slice.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Mean and spread of a stream of values without keeping them (per-step mouse values).
#[derive(Default)]
struct Running {
    n: u32,
    sum: f64,
    sum_sq: f64,
}

impl Running {
    fn push(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
    }

    /// `NaN` for no values.
    fn mean(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            self.sum / f64::from(self.n)
        }
    }

    /// Population standard deviation; `NaN` for no values.
    fn sd(&self) -> f64 {
        if self.n == 0 {
            // `NaN.max(0.0)` is 0: without this an empty stream would read as no spread.
            return f64::NAN;
        }
        let mean = self.mean();
        (self.sum_sq / f64::from(self.n) - mean * mean)
            .max(0.0)
            .sqrt()
    }
}

fn cv(xs: &[f64]) -> f64 {
    let (m, sd) = mean_sd(xs);
    if m > 0.0 {
        sd / m
    } else {
        f64::NAN
    }
}

/// Computes the feature vector of one validated login.
pub fn extract(t: &Telemetry) -> FeatureVector {
    let mut fv = FeatureVector::empty();
    let moves = mouse(&mut fv, &t.moves);
    movements(&mut fv, &t.moves);
    clicks(&mut fv, t);
    let key_cv = keys(&mut fv, t);
    fields(&mut fv, t);

    fv.set(F::TimeToSubmit, t.t1 - t.t0);
    let first_input = [
        t.keys.first().map(|k| k.t),
        t.moves.first().map(|m| m.t),
        t.clicks.first().map(|c| c.t),
        t.pointer.first().map(|p| p.t),
    ]
    .into_iter()
    .flatten()
    .fold(f64::INFINITY, f64::min);
    if first_input.is_finite() {
        fv.set(F::TypingToSubmit, (t.t1 - first_input).max(0.0));
    }

    let no_input = t.moves.is_empty() && t.pointer.is_empty() && t.keys.is_empty();
    fv.set(F::BotNoInput, f64::from(u8::from(no_input)));
    fv.set(F::BotKeyIntervalCv, key_cv);
    fv.set(F::BotSpeedCv, moves.speed_cv);
    // Synthetic: events the browser marks as script-made, a ruler-straight constant-speed
    // mouse path, or keys pressed at metronome intervals. Human hands do none of these.
    let straight_line =
        t.moves.len() >= 5 && fv.get(F::MouseStraightness) > 0.999 && moves.speed_cv < 0.02;
    let metronome = key_cv < 0.02;
    let synthetic = t.untrusted > 0 || straight_line || metronome;
    fv.set(F::BotSynthetic, f64::from(u8::from(synthetic)));
    fv.set(F::Untrusted, f64::from(t.untrusted));
    fv
}

struct MouseSummary {
    speed_cv: f64,
}

/// Mouse dynamics from the sampled move trace. Speeds in px/s, accelerations in px/s².
fn mouse(fv: &mut FeatureVector, moves: &[MouseMove]) -> MouseSummary {
    let mut speeds = Vec::with_capacity(moves.len());
    let mut accs = Vec::with_capacity(moves.len());
    let mut hist = [0u32; 8];
    let (mut sx, mut sy, mut angled) = (0.0, 0.0, 0u32);
    let mut path = 0.0;
    let mut duration = 0.0;
    let mut pauses = 0u32;
    // (speed, dt) of the previous step in the same movement.
    let mut prev: Option<(f64, f64)> = None;
    // Heading of the previous step in the same movement, and its acceleration.
    let mut prev_heading: Option<f64> = None;
    let mut prev_acc: Option<f64> = None;
    let (mut turns, mut turn_rates) = (Running::default(), Running::default());
    let (mut curvatures, mut jerks) = (Running::default(), Running::default());
    for w in moves.windows(2) {
        let (a, b) = (w[0], w[1]);
        let dt = b.t - a.t;
        if dt <= 0.0 || dt > PAUSE_MS {
            if dt > PAUSE_MS {
                pauses += 1;
            }
            prev = None;
            prev_heading = None;
            prev_acc = None;
            continue;
        }
        let (dx, dy) = (b.x - a.x, b.y - a.y);
        let dist = dx.hypot(dy);
        let v = dist / dt * 1000.0;
        path += dist;
        duration += dt;
        speeds.push(v);
        if dist > 0.0 {
            // Screen y grows downwards; angles are as seen on screen, 0 = east, clockwise.
            let ang = wrap_to_turn(dy.atan2(dx));
            let bin = ((ang / std::f64::consts::TAU * 8.0 + 0.5).floor() as usize) % 8;
            hist[bin] += 1;
            sx += dx / dist;
            sy += dy / dist;
            angled += 1;
            if let Some(h) = prev_heading {
                // Wrapped to [-π, π): a turn, not a heading.
                let turn = wrap_to_turn(ang - h + std::f64::consts::PI) - std::f64::consts::PI;
                turns.push(turn.abs());
                turn_rates.push(turn.abs() / dt * 1000.0);
                curvatures.push(turn.abs() / dist);
            }
            prev_heading = Some(ang);
        }
        if let Some((pv, pdt)) = prev {
            let a = (v - pv) / ((dt + pdt) / 2.0) * 1000.0;
            accs.push(a);
            if let Some(pa) = prev_acc {
                jerks.push(((a - pa) / dt * 1000.0).abs());
            }
            prev_acc = Some(a);
        }
        prev = Some((v, dt));
    }
    if !moves.is_empty() {
        fv.set(F::MousePauses, f64::from(pauses));
    }
    let speed_cv = cv(&speeds);
    if speeds.is_empty() {
        return MouseSummary { speed_cv };
    }
    let (mean, sd) = mean_sd(&speeds);
    fv.set(F::MouseSpeedMean, mean);
    fv.set(F::MouseSpeedSd, sd);
    let mut sorted = speeds;
    // Unstable is enough: values equal under `total_cmp` are the same bits.
    sorted.sort_unstable_by(f64::total_cmp);
    fv.set(F::MouseSpeedP10, percentile(&sorted, 0.1));
    fv.set(F::MouseSpeedP50, percentile(&sorted, 0.5));
    fv.set(F::MouseSpeedP90, percentile(&sorted, 0.9));
    fv.set(F::MousePath, path);
    fv.set(F::MouseDuration, duration);
    if angled > 0 {
        for (i, &c) in hist.iter().enumerate() {
            fv.values[F::MouseDir0 as usize + i] = f64::from(c) / f64::from(angled);
        }
        let r = sx.hypot(sy) / f64::from(angled);
        fv.set(F::MouseCircVar, 1.0 - r);
    }
    if path > 0.0 {
        let (first, last) = (moves[0], moves[moves.len() - 1]);
        fv.set(
            F::MouseStraightness,
            ((last.x - first.x).hypot(last.y - first.y) / path).min(1.0),
        );
    }
    if !accs.is_empty() {
        let abs: Vec<f64> = accs.iter().map(|a| a.abs()).collect();
        let (m, _) = mean_sd(&abs);
        let (_, sd) = mean_sd(&accs);
        fv.set(F::MouseAccMean, m);
        fv.set(F::MouseAccSd, sd);
        let max = abs.iter().copied().fold(0.0, f64::max);
        fv.set(F::MouseAccSpikiness, if m > 0.0 { max / m } else { 0.0 });
        let accelerating = accs.iter().filter(|&&a| a > 0.0).count();
        fv.set(
            F::MouseAccelFraction,
            accelerating as f64 / accs.len() as f64,
        );
    }
    fv.set(F::MouseTurnMean, turns.mean());
    fv.set(F::MouseAngularSpeed, turn_rates.mean());
    fv.set(F::MouseAngularSpeedSd, turn_rates.sd());
    fv.set(F::MouseCurvature, curvatures.mean());
    fv.set(F::MouseJerkMean, jerks.mean());
    MouseSummary { speed_cv }
}

/// The shape of each movement (the trace between pauses): how far it bows away from the
/// straight line between its ends, and when in it the hand reaches top speed.
fn movements(fv: &mut FeatureVector, moves: &[MouseMove]) {
    let (mut deviations, mut peaks) = (Running::default(), Running::default());
    let mut start = 0;
    for end in 1..=moves.len() {
        if end < moves.len() && moves[end].t - moves[end - 1].t <= PAUSE_MS {
            continue;
        }
        let m = &moves[start..end];
        start = end;
        if m.len() < 3 {
            continue;
        }
        let (a, b) = (m[0], m[m.len() - 1]);
        let (cx, cy) = (b.x - a.x, b.y - a.y);
        let chord = cx.hypot(cy);
        if chord > 0.0 {
            let deviation = m
                .iter()
                .map(|p| ((p.x - a.x) * cy - (p.y - a.y) * cx).abs() / chord)
                .fold(0.0, f64::max);
            deviations.push(deviation);
        }
        let span = b.t - a.t;
        // (speed, time) of the fastest step; distances compared per time, no square roots.
        let mut fastest: Option<(f64, f64)> = None;
        for w in m.windows(2) {
            let dt = w[1].t - w[0].t;
            if dt > 0.0 {
                let speed_sq = ((w[1].x - w[0].x).powi(2) + (w[1].y - w[0].y).powi(2)) / (dt * dt);
                if fastest.is_none_or(|(top, _)| speed_sq > top) {
                    fastest = Some((speed_sq, w[1].t));
                }
            }
        }
        if let (Some((_, at)), true) = (fastest, span > 0.0) {
            peaks.push((at - a.t) / span);
        }
    }
    fv.set(F::MouseDeviation, deviations.mean());
    fv.set(F::MousePeakAt, peaks.mean());
}

fn clicks(fv: &mut FeatureVector, t: &Telemetry) {
    let intervals: Vec<f64> = t.clicks.windows(2).map(|w| w[1].t - w[0].t).collect();
    let (m, sd) = mean_sd(&intervals);
    fv.set(F::ClickIntervalMean, m);
    fv.set(F::ClickIntervalSd, sd);
    let holds: Vec<f64> = t.clicks.iter().filter_map(|c| c.hold).collect();
    fv.set(F::ClickHoldMean, mean_sd(&holds).0);
}

/// Key dwell (press→release), flight (press→press), gap (release→next press), corrections and
/// the password rhythm. Returns the coefficient of variation of press intervals (bot signal).
fn keys(fv: &mut FeatureVector, t: &Telemetry) -> f64 {
    // Strokes in press order: (down time, up time, class, field).
    let mut strokes: Vec<(f64, f64, KeyClass, Option<usize>)> = Vec::with_capacity(t.keys.len());
    let mut open: HashMap<u32, usize> = HashMap::with_capacity(t.keys.len().min(64));
    let mut backspaces = 0u32;
    let mut pw_corrected = false;
    for k in &t.keys {
        match k.dir {
            KeyDir::Down if k.flags & KEY_REPEAT == 0 => {
                open.insert(k.stroke, strokes.len());
                strokes.push((k.t, f64::NAN, k.class, k.field));
                if k.class == KeyClass::Backspace {
                    backspaces += 1;
                    if k.field.is_some_and(|f| t.fields[f].is_password) {
                        pw_corrected = true;
                    }
                }
            }
            KeyDir::Down => {}
            KeyDir::Up => {
                if let Some(i) = open.remove(&k.stroke) {
                    strokes[i].1 = k.t;
                }
            }
        }
    }
    if !t.keys.is_empty() {
        fv.set(F::KeyStrokes, strokes.len() as f64);
        fv.set(F::Backspaces, f64::from(backspaces));
    }
    let dwell: Vec<f64> = strokes
        .iter()
        .filter(|s| s.1.is_finite())
        .map(|s| s.1 - s.0)
        .collect();
    let (m, sd) = mean_sd(&dwell);
    fv.set(F::KeyDwellMean, m);
    fv.set(F::KeyDwellSd, sd);
    let flight: Vec<f64> = strokes.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let (m, sd) = mean_sd(&flight);
    fv.set(F::KeyFlightMean, m);
    fv.set(F::KeyFlightSd, sd);
    let gaps: Vec<f64> = strokes
        .windows(2)
        .filter(|w| w[0].1.is_finite())
        .map(|w| w[1].0 - w[0].1)
        .collect();
    fv.set(F::KeyGapMean, mean_sd(&gaps).0);

    let pw: Vec<&(f64, f64, KeyClass, Option<usize>)> = strokes
        .iter()
        .filter(|s| s.2 == KeyClass::PasswordChar && s.3.is_some_and(|f| t.fields[f].is_password))
        .take(MAX_PASSWORD)
        .collect();
    fv.password = PasswordRhythm {
        press_press: pw.windows(2).map(|w| w[1].0 - w[0].0).collect(),
        dwell: pw.iter().map(|s| s.1 - s.0).collect(),
        clean: !pw_corrected,
    };
    if flight.len() >= 4 {
        cv(&flight)
    } else {
        f64::NAN
    }
}

/// Paste, autofill and how the user moved between fields.
fn fields(fv: &mut FeatureVector, t: &Telemetry) {
    if t.fields.is_empty() {
        return;
    }
    let pastes: u32 = t
        .fields
        .iter()
        .map(|f| f.pastes)
        .fold(0, u32::saturating_add);
    fv.set(F::Pastes, f64::from(pastes));
    let pw_pasted = t.fields.iter().any(|f| f.is_password && f.pastes > 0);
    fv.set(F::PasswordPasted, f64::from(u8::from(pw_pasted)));
    let autofill = t.fields.iter().any(|f| f.autofill != 0);
    fv.set(F::Autofill, f64::from(u8::from(autofill)));

    let tab_or_pointer = |m: FocusMethod| match m {
        FocusMethod::Tab => Some(1.0),
        FocusMethod::Mouse | FocusMethod::Pen | FocusMethod::Touch => Some(0.0),
        _ => None,
    };
    let navs: Vec<f64> = t
        .focus
        .iter()
        .filter_map(|f| tab_or_pointer(f.method))
        .collect();
    fv.set(F::NavTabFraction, mean_sd(&navs).0);
    let first_field = t.fields.iter().position(|f| !f.is_password);
    let last_nav = |want: &dyn Fn(usize) -> bool| {
        t.focus
            .iter()
            .rev()
            .filter(|f| want(f.field))
            .find_map(|f| tab_or_pointer(f.method))
            .unwrap_or(f64::NAN)
    };
    if let Some(user) = first_field {
        fv.set(F::NavUserTab, last_nav(&|f| f == user));
    }
    fv.set(F::NavPasswordTab, last_nav(&|f| t.fields[f].is_password));
}

#[cfg(test)]
mod tests;
