//! What a login's telemetry shows about itself, before any profile is asked: whether it
//! carries the evidence a real login of its kind produces, whether its timeline fits the time
//! the page was really open, and whether a machine made it. Pure code; the policy turns each
//! [`Flag`] into a risk floor, and a flagged login is never learnt from.
//!
//! The rules are meant to be cheap for a person and expensive for a forger: a person cannot
//! avoid producing keystrokes for a typed password, focus changes, a timeline within the
//! page's life and irregular timing; a forger must produce all of them consistently, after
//! which the per-user models and the replay check judge what was produced.

use crate::telemetry::{KeyClass, KeyDir, Telemetry, KEY_REPEAT, KEY_UNTRUSTED};

/// A rule that fired, with the detail that explains it (an audit reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    pub rule: Rule,
    pub detail: &'static str,
}

/// The rules of this module; each has its own risk floor in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// Less than a real login of this kind produces.
    InsufficientEvidence,
    /// Made by a machine.
    SyntheticInput,
    /// The payload claims more time than the page was open.
    TimelineMismatch,
}

impl Rule {
    pub fn code(self) -> &'static str {
        match self {
            Rule::InsufficientEvidence => "insufficient_evidence",
            Rule::SyntheticInput => "synthetic_input",
            Rule::TimelineMismatch => "timeline_mismatch",
        }
    }
}

/// Fewest keystrokes a typed password produces (shorter passwords are not accepted anywhere
/// worth protecting, and a forger who sends fewer is caught here).
pub(crate) const MIN_PASSWORD_KEYS: usize = 4;
/// Fewest intervals in a run of keys before its regularity is judged.
const MIN_RUN: usize = 5;
/// Coefficient of variation below which a run of key intervals, or the hold times, are a
/// metronome: typists' intervals vary by 20–60 % (docs/detection.md has the measured range).
pub(crate) const METRONOME_CV: f64 = 0.1;
/// Fewest mouse steps in one movement before its shape is judged.
const MIN_MOVE_STEPS: usize = 8;
/// A movement this straight after smoothing away a pixel of jitter is ruled, not drawn —
/// or, now and then, a person's quick straight flick (Balabit: 0.1 % of real actions reach
/// it). So it takes most of a login's movements being this straight.
pub(crate) const RULER_STRAIGHTNESS: f64 = 0.9995;
/// A movement whose speed varies less than this is driven at constant speed.
pub(crate) const CONSTANT_SPEED_CV: f64 = 0.05;
/// Share of identical intervals between mouse samples that betrays a timer, not a hand and
/// a display.
pub(crate) const GRID_SHARE: f64 = 0.9;
/// How long the page was open, as gaitkeeper saw it: the payload's own timeline must fit in
/// it, give or take `slack_ms` (timer coarsening and rounding; `capture.timeline_slack`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageOpen {
    /// From gaitkeeper issuing the page (its token) to the login arriving (ms).
    pub ms: f64,
    pub slack_ms: f64,
}

/// Every rule that fires for `t`; the timeline is checked when `page` is known.
pub fn check(t: &Telemetry, page: Option<PageOpen>) -> Vec<Flag> {
    let mut flags = Vec::new();
    let mut flag = |rule, detail| flags.push(Flag { rule, detail });
    if let Some(detail) = insufficient(t) {
        flag(Rule::InsufficientEvidence, detail);
    }
    if let Some(detail) = synthetic(t) {
        flag(Rule::SyntheticInput, detail);
    }
    if let Some(page) = page {
        if t.t1 - t.t0 > page.ms + page.slack_ms {
            flag(Rule::TimelineMismatch, "longer_than_the_page_was_open");
        }
    }
    flags
}

/// Whether the payload lacks what a real login produces, and what is missing.
fn insufficient(t: &Telemetry) -> Option<&'static str> {
    let password: Vec<usize> = (0..t.fields.len())
        .filter(|&i| t.fields[i].is_password)
        .collect();
    if password.is_empty() {
        return Some("no_password_field");
    }
    let in_password = |f: Option<usize>| f.is_some_and(|f| t.fields[f].is_password);
    let typed = t
        .keys
        .iter()
        .filter(|k| {
            k.dir == KeyDir::Down
                && k.flags & KEY_REPEAT == 0
                && k.class == KeyClass::PasswordChar
                && in_password(k.field)
        })
        .count();
    let filled_otherwise = password
        .iter()
        .any(|&i| t.fields[i].pastes > 0 || t.fields[i].autofill != 0);
    if typed < MIN_PASSWORD_KEYS && !filled_otherwise {
        return Some("password_not_typed");
    }
    if typed > 0 {
        // Typing into a field needs the field focused (by Tab, pointer, script or at load)
        // and makes it fire input events.
        let focused = t.focus.iter().any(|f| t.fields[f.field].is_password);
        if !focused {
            return Some("password_never_focused");
        }
        let inputs: u32 = password.iter().map(|&i| t.fields[i].inputs).sum();
        if (inputs as usize) < typed / 2 {
            return Some("keys_without_input");
        }
    }
    // What the script counted must cover what it sent.
    if (t.move_sampling.0 as usize) < t.moves.len() || (t.keys_seen as usize) < t.keys.len() {
        return Some("counts_inconsistent");
    }
    None
}

/// Whether a machine made the input, and by which tell.
fn synthetic(t: &Telemetry) -> Option<&'static str> {
    if t.untrusted > 0 || t.keys.iter().any(|k| k.flags & KEY_UNTRUSTED != 0) {
        return Some("untrusted_events");
    }
    if let Some(detail) = key_regularity(t) {
        return Some(detail);
    }
    if let Some(detail) = mouse_regularity(t) {
        return Some(detail);
    }
    None
}

fn cv(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    if mean > 0.0 {
        var.sqrt() / mean
    } else {
        f64::NAN
    }
}

/// Keys pressed at a metronome's pace, measured per run between fields, Tab and Enter (a bot
/// that pauses naturally at those is still regular inside each run), and hold times that do
/// not vary.
fn key_regularity(t: &Telemetry) -> Option<&'static str> {
    // Key presses in order: (time, class, field), and paired hold times.
    let mut presses = Vec::new();
    let mut holds = Vec::new();
    let mut open = std::collections::HashMap::new();
    for k in &t.keys {
        match k.dir {
            KeyDir::Down if k.flags & KEY_REPEAT == 0 => {
                open.insert(k.stroke, k.t);
                presses.push((k.t, k.class, k.field));
            }
            KeyDir::Down => {}
            KeyDir::Up => {
                if let Some(down) = open.remove(&k.stroke) {
                    holds.push(k.t - down);
                }
            }
        }
    }
    let typing = |c: KeyClass| {
        matches!(
            c,
            KeyClass::Letter | KeyClass::Digit | KeyClass::Space | KeyClass::PasswordChar
        )
    };
    let mut run: Vec<f64> = Vec::new();
    let mut metronome = false;
    let mut judge = |run: &mut Vec<f64>| {
        if run.len() >= MIN_RUN && cv(run) < METRONOME_CV {
            metronome = true;
        }
        run.clear();
    };
    for w in presses.windows(2) {
        let ((t0, c0, f0), (t1, c1, f1)) = (w[0], w[1]);
        let dt = t1 - t0;
        // A run is typing in one field: it ends at a field change, a non-typing key or a
        // pause longer than thinking takes.
        if f0 != f1 || !typing(c0) || !typing(c1) || dt > 1500.0 {
            judge(&mut run);
            continue;
        }
        run.push(dt);
    }
    judge(&mut run);
    if metronome {
        return Some("metronome_keys");
    }
    if holds.len() > MIN_RUN && cv(&holds) < METRONOME_CV * 0.8 {
        return Some("constant_key_holds");
    }
    None
}

/// Mouse movements that are ruler-straight or driven at constant speed once a pixel of
/// jitter is smoothed away, and samples on a timer's grid.
fn mouse_regularity(t: &Telemetry) -> Option<&'static str> {
    let moves = &t.moves;
    let mut steps_dt: Vec<i64> = Vec::new();
    let (mut judged, mut ruled) = (0usize, 0usize);
    let mut start = 0;
    for end in 1..=moves.len() {
        if end < moves.len() && moves[end].t - moves[end - 1].t <= crate::features::PAUSE_MS {
            continue;
        }
        let m = &moves[start..end];
        start = end;
        for w in m.windows(2) {
            steps_dt.push(((w[1].t - w[0].t) * 10.0).round() as i64);
        }
        if m.len() <= MIN_MOVE_STEPS {
            continue;
        }
        // Smooth over three samples: a pixel of jitter disappears, a hand's curve does not.
        let smooth: Vec<(f64, f64, f64)> = m
            .windows(3)
            .map(|w| {
                (
                    w[1].t,
                    (w[0].x + w[1].x + w[2].x) / 3.0,
                    (w[0].y + w[1].y + w[2].y) / 3.0,
                )
            })
            .collect();
        let path: f64 = smooth
            .windows(2)
            .map(|w| (w[1].1 - w[0].1).hypot(w[1].2 - w[0].2))
            .sum();
        let (a, b) = (smooth[0], smooth[smooth.len() - 1]);
        let chord = (b.1 - a.1).hypot(b.2 - a.2);
        if path > 150.0 {
            judged += 1;
            if chord / path > RULER_STRAIGHTNESS {
                ruled += 1;
            }
        }
        let speeds: Vec<f64> = smooth
            .windows(2)
            .filter(|w| w[1].0 > w[0].0)
            .map(|w| (w[1].1 - w[0].1).hypot(w[1].2 - w[0].2) / (w[1].0 - w[0].0))
            .collect();
        if speeds.len() >= MIN_MOVE_STEPS && path > 100.0 && cv(&speeds) < CONSTANT_SPEED_CV {
            return Some("constant_speed_mouse");
        }
    }
    // More than half of the movements (and at least one) ruled straight.
    if ruled > 0 && 2 * ruled > judged {
        return Some("ruler_straight_mouse");
    }
    if steps_dt.len() >= 12 {
        let mut counts = std::collections::HashMap::new();
        for dt in &steps_dt {
            *counts.entry(*dt).or_insert(0usize) += 1;
        }
        let top = counts.values().copied().max().unwrap_or(0);
        if top as f64 >= GRID_SHARE * steps_dt.len() as f64 {
            return Some("mouse_on_a_timer");
        }
    }
    None
}
