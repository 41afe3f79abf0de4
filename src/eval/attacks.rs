//! `gaitkeeper eval attacks`: attacks generated against the profiles of the public data sets,
//! run through the login path's own code — a [`Telemetry`] like the capture script's, then
//! `features::extract`, the rules of `features::evidence`, the user's model (`model::assess`,
//! which also looks for copies of the user's kept logins) and the policy's floors and
//! thresholds — and the genuine users' logins through the same code, to count what the rules
//! cost them.
//!
//! **Keystroke100** (password rhythm only: 8 key presses, 7 latencies): a sample becomes the
//! telemetry of a password typed into its field (focused at load, one input event per key, no
//! releases: the data has no hold times). Profiles enrol on samples 1–5 as in `eval
//! keystrokes`; genuine logins are samples 6–10. Attacks per user: a replay of each enrolled
//! sample, identical and with every key time moved by up to 5 ms; timings drawn position by
//! position from other users' samples (the population's distribution); a constant-rate typist
//! (one interval, ±3 ms); the sparse payload of the issue (one mouse sample, no keys).
//!
//! **Balabit** (mouse only): actions of a session become mouse-only telemetry (the evidence
//! rules about passwords do not apply to them); a login is the first 5 actions of a labelled
//! legal test session. Attacks per user: a replay of one of the user's kept (most recent)
//! training actions with every sample moved by up to 5 ms; and generated paths — straight
//! lines with a pixel of jitter, cubic Bézier curves with easing and jitter, and WindMouse
//! (B. J. Land's published algorithm) — five movements a login between random points, sampled
//! at a display's irregular pace (14.5–19 ms).
//!
//! A login is *caught* when the policy (default thresholds and floors) would not allow it.

use std::fmt::Write as _;
use std::path::Path;

use rand::{Rng, SeedableRng};

use crate::features::{self, evidence, FeatureVector};
use crate::model::{assess, GlobalModel, TrainingUser, UserModel};
use crate::policy::{self, Policy, DEFAULT_POLICY};
use crate::telemetry::{
    Field, Focus, FocusMethod, KeyClass, KeyDir, KeyEvent, MouseMove, Telemetry,
};

/// What the policy makes of one login: its floored risk and whether a new rule fired.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    risk: f64,
    flagged: bool,
    /// The first new rule that fired (its detail where the evidence check gives one).
    rule: Option<&'static str>,
}

impl Verdict {
    fn caught(&self, p: &Policy) -> bool {
        self.risk >= p.allow_below
    }
}

/// Rules added against cheap attacks; the model's own reasons stay out of "flagged".
const NEW_RULES: &[&str] = &[
    "insufficient_evidence",
    "synthetic_input",
    "timeline_mismatch",
    "replayed_pattern",
    "missing_usual_input",
];

/// Judges one login of `user` as the proxy does (without the population memory, which would
/// find the attacks' copies of each other too easily).
fn judge(
    user: &UserModel,
    global: &GlobalModel,
    t: &Telemetry,
    mouse_only: bool,
) -> (Verdict, FeatureVector) {
    let fv = features::extract(t);
    let found: Vec<evidence::Flag> = evidence::check(t, None)
        .into_iter()
        .filter(|f| !(mouse_only && f.rule == evidence::Rule::InsufficientEvidence))
        .collect();
    let flags: Vec<&str> = found.iter().map(|f| f.rule.code()).collect();
    let a = assess(user, global, &fv);
    let codes: Vec<&str> = flags
        .iter()
        .copied()
        .chain(a.reasons.iter().map(|r| r.code))
        .collect();
    let risk = policy::floored(&DEFAULT_POLICY.floors, a.risk, codes.iter().copied());
    let rule = found
        .first()
        .map(|f| f.detail)
        .or_else(|| codes.iter().copied().find(|c| NEW_RULES.contains(c)));
    (
        Verdict {
            risk,
            flagged: rule.is_some(),
            rule,
        },
        fv,
    )
}

/// One row of the report.
#[derive(Default)]
struct Tally {
    logins: usize,
    caught: usize,
    flagged: usize,
    by_rule: std::collections::BTreeMap<&'static str, usize>,
    risks: Vec<f64>,
}

impl Tally {
    fn add(&mut self, v: Verdict) {
        self.logins += 1;
        self.risks.push(v.risk);
        self.caught += usize::from(v.caught(&DEFAULT_POLICY));
        self.flagged += usize::from(v.flagged);
        if let Some(rule) = v.rule {
            *self.by_rule.entry(rule).or_default() += 1;
        }
    }

    fn rules(&self) -> String {
        if self.by_rule.is_empty() {
            return "none".into();
        }
        self.by_rule
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    fn share(n: usize, of: usize) -> f64 {
        if of == 0 {
            f64::NAN
        } else {
            n as f64 / of as f64
        }
    }
}

/// A password typed in its field: key presses at the given intervals after `start`.
fn typed(intervals: &[f64], start: f64) -> Telemetry {
    let mut t = start;
    let mut keys = Vec::with_capacity(intervals.len() + 1);
    for (i, gap) in std::iter::once(&0.0).chain(intervals).enumerate() {
        t += gap;
        keys.push(KeyEvent {
            t: (t * 10.0).round() / 10.0,
            dir: KeyDir::Down,
            class: KeyClass::PasswordChar,
            field: Some(0),
            stroke: i as u32,
            flags: 0,
        });
    }
    let t1 = t + 300.0;
    Telemetry {
        t0: 0.0,
        t1,
        visible_ms: t1,
        viewport: (1280.0, 720.0),
        untrusted: 0,
        truncated: 0,
        handovers: 1,
        keys_seen: keys.len() as u32,
        fields: vec![Field {
            is_password: true,
            pastes: 0,
            autofill: 0,
            inputs: keys.len() as u32,
        }],
        focus: vec![Focus {
            t: 0.0,
            field: 0,
            method: FocusMethod::Initial,
        }],
        keys,
        moves: Vec::new(),
        move_sampling: (0, 1),
        pointer: Vec::new(),
        clicks: Vec::new(),
        window: Vec::new(),
    }
}

/// Mouse-only telemetry from movement traces.
fn moved(moves: Vec<MouseMove>) -> Telemetry {
    let t0 = moves.first().map_or(0.0, |m| m.t);
    let t1 = moves.last().map_or(0.0, |m| m.t);
    Telemetry {
        t0,
        t1,
        visible_ms: t1 - t0,
        viewport: (1280.0, 720.0),
        untrusted: 0,
        truncated: 0,
        handovers: 1,
        keys_seen: 0,
        fields: Vec::new(),
        focus: Vec::new(),
        keys: Vec::new(),
        move_sampling: (moves.len() as u64, 1),
        moves,
        pointer: Vec::new(),
        clicks: Vec::new(),
        window: Vec::new(),
    }
}

/// The sparse payload: one mouse sample in five seconds, nothing else.
fn sparse() -> Telemetry {
    let mut t = moved(vec![MouseMove {
        t: 100.0,
        x: 1.0,
        y: 1.0,
    }]);
    t.t0 = 0.0;
    t.t1 = 5000.0;
    t.visible_ms = 5000.0;
    t
}

/// Runs the attack evaluation on whichever data sets are given; returns the report.
pub fn run(
    keystroke100: Option<&Path>,
    balabit: Option<&Path>,
    seed: u64,
) -> anyhow::Result<String> {
    let mut report = String::new();
    if let Some(dir) = keystroke100 {
        report.push_str(&keystroke100_attacks(dir, seed, false)?);
        report.push_str(&keystroke100_attacks(dir, seed, true)?);
    }
    if let Some(dir) = balabit {
        report.push_str(&balabit_attacks(dir, seed)?);
    }
    Ok(report)
}

/// Keystroke100's clock ticked every 15.6 ms (its latencies are multiples of it, give or take
/// a millisecond of rounding): two logins of a consistent typist can be identical to the
/// tick — 8 of its 70 users have an exact duplicate among their 10 samples — which no test
/// can tell from a replay. With `dequantize`, every key time is moved uniformly within its
/// tick, as a browser's 0.1 ms clock would have stamped the same typing.
const TICK_MS: f64 = 15.625;

fn keystroke100_attacks(dir: &Path, seed: u64, dequantize: bool) -> anyhow::Result<String> {
    let subjects = super::keystrokes::load_keystroke100(dir)?;
    let p = super::keystrokes::Protocol::KEYSTROKE100;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Each sample as the telemetry the capture script would send, and its features.
    let telemetry: Vec<Vec<Telemetry>> = subjects
        .iter()
        .map(|s| {
            s.samples
                .iter()
                .map(|fv| {
                    let mut t = typed(&fv.password.press_press, 500.0);
                    if dequantize {
                        for k in &mut t.keys {
                            let shift = rng.random_range(-TICK_MS / 2.0..TICK_MS / 2.0);
                            k.t = ((k.t + shift) * 10.0).round() / 10.0;
                        }
                        t.keys.sort_by(|a, b| a.t.total_cmp(&b.t));
                    }
                    t
                })
                .collect()
        })
        .collect();
    let vectors: Vec<Vec<FeatureVector>> = telemetry
        .iter()
        .map(|ts| ts.iter().map(features::extract).collect())
        .collect();
    let (mut genuine, mut genuine_before) = (Tally::default(), Tally::default());
    let mut replay_identical = Tally::default();
    let mut replay_jitter = Tally::default();
    let mut sampled = Tally::default();
    let mut constant = Tally::default();
    let mut sparse_tally = Tally::default();
    let folds = p.folds.clamp(2, subjects.len());
    for fold in 0..folds {
        let training: Vec<TrainingUser<'_>> = vectors
            .iter()
            .enumerate()
            .filter(|(i, _)| i % folds != fold)
            .map(|(_, s)| TrainingUser {
                enrol: &s[..p.train],
                later: &s[p.train..],
            })
            .collect();
        let global = GlobalModel::train(&training, seed.wrapping_add(fold as u64));
        // The population's intervals, position by position, from the training users only.
        let pool: Vec<Vec<f64>> = (0..7)
            .map(|i| {
                subjects
                    .iter()
                    .enumerate()
                    .filter(|(u, _)| u % folds != fold)
                    .flat_map(|(_, s)| s.samples.iter().map(move |fv| fv.password.press_press[i]))
                    .collect()
            })
            .collect();
        for u in (0..subjects.len()).filter(|u| u % folds == fold) {
            let user = UserModel::fit(&vectors[u][..p.train], &global.population);
            for t in &telemetry[u][p.train..] {
                let (v, fv) = judge(&user, &global, t, false);
                genuine.add(v);
                // What the same login got before the new rules: the model and the old floors.
                let a = assess(&user, &global, &fv);
                genuine_before.add(Verdict {
                    risk: super::risk(&a),
                    flagged: false,
                    rule: None,
                });
            }
            for t in &telemetry[u][..p.train] {
                replay_identical.add(judge(&user, &global, t, false).0);
                let mut copy = t.clone();
                let mut prev = f64::NEG_INFINITY;
                for k in &mut copy.keys {
                    k.t = (((k.t + rng.random_range(0.0..=5.0)) * 10.0).round() / 10.0).max(prev);
                    prev = k.t;
                }
                replay_jitter.add(judge(&user, &global, &copy, false).0);
            }
            for _ in 0..p.train {
                let intervals: Vec<f64> = pool
                    .iter()
                    .map(|values| values[rng.random_range(0..values.len())])
                    .collect();
                sampled.add(judge(&user, &global, &typed(&intervals, 500.0), false).0);
                let pace = rng.random_range(100.0..300.0);
                let intervals: Vec<f64> = (0..7)
                    .map(|_| pace + rng.random_range(-3.0..=3.0))
                    .collect();
                constant.add(judge(&user, &global, &typed(&intervals, 500.0), false).0);
                sparse_tally.add(judge(&user, &global, &sparse(), false).0);
            }
        }
    }
    let mut s = format!(
        "keystroke100{}: {} users, attacks against each user's profile (enrolled on samples 1-5)\n",
        if dequantize {
            ", key times spread within the data's 15.6 ms clock tick"
        } else {
            " as recorded (15.6 ms clock)"
        },
        subjects.len()
    );
    table(
        &mut s,
        &[
            ("replay, identical", &replay_identical, Some(0.99)),
            ("replay, <= 5 ms jitter", &replay_jitter, Some(0.99)),
            ("population-sampled timings", &sampled, Some(0.90)),
            ("constant-rate typist", &constant, Some(0.99)),
            ("sparse payload", &sparse_tally, Some(0.99)),
        ],
    );
    threshold_for(
        &mut s,
        "population-sampled timings",
        &sampled,
        &genuine,
        0.9,
    );
    genuine_rows(&mut s, &genuine, &genuine_before);
    Ok(s)
}

fn table(s: &mut String, rows: &[(&str, &Tally, Option<f64>)]) {
    let _ = writeln!(
        s,
        "{:<32} {:>7} {:>8} {:>9} {:>7}",
        "attack", "logins", "caught", "by rules", "target"
    );
    for (name, t, target) in rows {
        let _ = writeln!(
            s,
            "{:<32} {:>7} {:>7.1}% {:>8.1}% {:>7}",
            name,
            t.logins,
            100.0 * Tally::share(t.caught, t.logins),
            100.0 * Tally::share(t.flagged, t.logins),
            target.map_or("-".to_string(), |x| format!(">={:.0}%", 100.0 * x))
        );
    }
}

/// The `allow_below` that would catch `share` of `attack`, and the share of genuine logins it
/// would then not allow: the price of reaching a target through the threshold alone.
fn threshold_for(s: &mut String, name: &str, attack: &Tally, genuine: &Tally, share: f64) {
    let mut risks = attack.risks.clone();
    risks.sort_by(f64::total_cmp);
    if risks.is_empty() {
        return;
    }
    let at = risks[((1.0 - share) * (risks.len() - 1) as f64).floor() as usize];
    let denied = genuine.risks.iter().filter(|r| **r >= at).count();
    let _ = writeln!(
        s,
        "to catch {:.0}% of \"{name}\" by the threshold alone: allow_below {at:.3}, which would not allow {:.1}% of genuine logins",
        100.0 * share,
        100.0 * Tally::share(denied, genuine.risks.len())
    );
}

fn genuine_rows(s: &mut String, now: &Tally, before: &Tally) {
    let _ = writeln!(
        s,
        "genuine logins: {} — flagged by a new rule {:.2}% (target <= 1%; {}); not allowed (risk >= allow_below {}) {:.2}% now, {:.2}% with the model alone\n",
        now.logins,
        100.0 * Tally::share(now.flagged, now.logins),
        now.rules(),
        DEFAULT_POLICY.allow_below,
        100.0 * Tally::share(now.caught, now.logins),
        100.0 * Tally::share(before.caught, before.logins),
    );
}

// ---- Balabit ----

/// A movement from `a` to `b` along a generated path, sampled at a display's pace.
fn sample_path(points: &[(f64, f64)], start: f64, rng: &mut impl Rng) -> Vec<MouseMove> {
    let mut t = start;
    points
        .iter()
        .map(|&(x, y)| {
            t += rng.random_range(14.5..=19.0);
            MouseMove {
                t: (t * 10.0).round() / 10.0,
                x: x.round(),
                y: y.round(),
            }
        })
        .collect()
}

/// Ease-in-out position along a path after fraction `f` of its time.
fn ease(f: f64) -> f64 {
    if f < 0.5 {
        4.0 * f * f * f
    } else {
        1.0 - (-2.0 * f + 2.0).powi(3) / 2.0
    }
}

fn straight(a: (f64, f64), b: (f64, f64), rng: &mut impl Rng) -> Vec<(f64, f64)> {
    let steps = rng.random_range(15..45);
    (1..=steps)
        .map(|i| {
            let f = ease(i as f64 / steps as f64);
            (
                a.0 + (b.0 - a.0) * f + rng.random_range(-1.0..=1.0),
                a.1 + (b.1 - a.1) * f + rng.random_range(-1.0..=1.0),
            )
        })
        .collect()
}

fn bezier(a: (f64, f64), b: (f64, f64), rng: &mut impl Rng) -> Vec<(f64, f64)> {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len = dx.hypot(dy).max(1.0);
    let (nx, ny) = (-dy / len, dx / len);
    let mut control = |at: f64| {
        let off = rng.random_range(-0.3..=0.3) * len;
        (a.0 + dx * at + nx * off, a.1 + dy * at + ny * off)
    };
    let (c1, c2) = (control(0.3), control(0.7));
    let steps = rng.random_range(15..45);
    (1..=steps)
        .map(|i| {
            let t = ease(i as f64 / steps as f64);
            let u = 1.0 - t;
            let x =
                u * u * u * a.0 + 3.0 * u * u * t * c1.0 + 3.0 * u * t * t * c2.0 + t * t * t * b.0;
            let y =
                u * u * u * a.1 + 3.0 * u * u * t * c1.1 + 3.0 * u * t * t * c2.1 + t * t * t * b.1;
            (
                x + rng.random_range(-1.0..=1.0),
                y + rng.random_range(-1.0..=1.0),
            )
        })
        .collect()
}

/// WindMouse (B. J. Land): gravity towards the target, a random "wind", a speed cap that
/// shrinks near the target. Parameters as published: G=9, W=3, M=15, D=12.
fn wind_mouse(a: (f64, f64), b: (f64, f64), rng: &mut impl Rng) -> Vec<(f64, f64)> {
    let (g0, w0, mut m0, d0): (f64, f64, f64, f64) = (9.0, 3.0, 15.0, 12.0);
    let (s3, s5) = (3f64.sqrt(), 5f64.sqrt());
    let (mut x, mut y) = a;
    let (mut vx, mut vy, mut wx, mut wy) = (0.0, 0.0, 0.0, 0.0);
    let mut out = Vec::new();
    let mut last = (a.0.round(), a.1.round());
    while out.len() < 2000 {
        let dist = (b.0 - x).hypot(b.1 - y);
        if dist < 1.0 {
            break;
        }
        let wmag = w0.min(dist);
        if dist >= d0 {
            wx = wx / s3 + (2.0 * rng.random::<f64>() - 1.0) * wmag / s5;
            wy = wy / s3 + (2.0 * rng.random::<f64>() - 1.0) * wmag / s5;
        } else {
            wx /= s3;
            wy /= s3;
            if m0 < 3.0 {
                m0 = rng.random::<f64>() * 3.0 + 3.0;
            } else {
                m0 /= s5;
            }
        }
        vx += wx + g0 * (b.0 - x) / dist;
        vy += wy + g0 * (b.1 - y) / dist;
        let vmag = vx.hypot(vy);
        if vmag > m0 {
            let clip = m0 / 2.0 + rng.random::<f64>() * m0 / 2.0;
            vx = vx / vmag * clip;
            vy = vy / vmag * clip;
        }
        x += vx;
        y += vy;
        let p = (x.round(), y.round());
        if p != last {
            out.push(p);
            last = p;
        }
    }
    out
}

/// A generated path from one point to another (the points it passes through).
type PathGenerator = fn((f64, f64), (f64, f64), &mut rand::rngs::StdRng) -> Vec<(f64, f64)>;

/// Five generated movements between random points, as one login's actions.
fn generated_login(path: PathGenerator, rng: &mut rand::rngs::StdRng) -> Vec<Telemetry> {
    let mut at = (
        rng.random_range(50.0..1200.0),
        rng.random_range(50.0..650.0),
    );
    let mut t = 0.0;
    (0..5)
        .map(|_| {
            let to = (
                rng.random_range(50.0..1200.0),
                rng.random_range(50.0..650.0),
            );
            let points = path(at, to, rng);
            let moves = sample_path(&points, t, rng);
            t = moves.last().map_or(t, |m| m.t) + 1500.0;
            at = to;
            moved(moves)
        })
        .collect()
}

/// Judges a login of several actions: the model scores each action as `eval mouse` does (the
/// profile was fitted on single actions) and the login gets their mean; the rules see the
/// whole login at once, as the proxy does with a login's telemetry.
fn judge_actions(user: &UserModel, global: &GlobalModel, actions: &[Telemetry]) -> Verdict {
    let verdicts: Vec<Verdict> = actions
        .iter()
        .map(|t| judge(user, global, t, true).0)
        .collect();
    let n = verdicts.len().max(1) as f64;
    let model_risk = verdicts.iter().map(|v| v.risk).sum::<f64>() / n;
    // The login's whole trace: actions one after the other, a pause between them.
    let mut moves = Vec::new();
    let mut offset = 0.0;
    for t in actions {
        let Some(first) = t.moves.first() else {
            continue;
        };
        let shift = offset - first.t;
        moves.extend(t.moves.iter().map(|m| MouseMove {
            t: m.t + shift,
            ..*m
        }));
        offset = moves.last().map_or(offset, |m: &MouseMove| m.t) + 1500.0;
    }
    let login = moved(moves);
    let rule = evidence::check(&login, None)
        .into_iter()
        .find(|f| f.rule != evidence::Rule::InsufficientEvidence)
        .map(|f| f.detail)
        .or_else(|| {
            verdicts
                .iter()
                .find_map(|v| v.rule.filter(|r| *r == "replayed_pattern"))
        });
    let floors = DEFAULT_POLICY.floors;
    let risk = match rule {
        Some("replayed_pattern") => model_risk.max(floors.replayed_pattern),
        Some(_) => model_risk.max(floors.synthetic_input),
        None => model_risk,
    };
    Verdict {
        risk,
        flagged: rule.is_some(),
        rule,
    }
}

fn balabit_attacks(dir: &Path, seed: u64) -> anyhow::Result<String> {
    let data = super::mouse::load_actions(dir)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut genuine, mut genuine_before) = (Tally::default(), Tally::default());
    let mut genuine_actions = Tally::default();
    let mut replay = Tally::default();
    let mut lines = Tally::default();
    let mut curves = Tally::default();
    let mut wind = Tally::default();
    let mut per_rule: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let bar = super::progress(data.users.len() as u64, "users");
    for (u, (_, user)) in data.users.iter().enumerate() {
        let training: Vec<TrainingUser<'_>> = data
            .users
            .iter()
            .enumerate()
            .filter(|(o, _)| *o != u)
            .map(|(_, (_, other))| {
                let n = other.training.len();
                let enrol = (n * 3 / 4).min(super::mouse::GLOBAL_ENROL);
                TrainingUser {
                    enrol: &other.training[..enrol],
                    later: &other.training[enrol..n.min(enrol + super::mouse::GLOBAL_LATER)],
                }
            })
            .collect();
        let global = GlobalModel::train_with(&training, seed.wrapping_add(u as u64), true);
        let model = UserModel::fit(&user.training, &global.population);
        for (session, actions) in &user.tests {
            if data.labels.get(session) != Some(&false) {
                continue;
            }
            let first = &actions[..actions.len().min(5)];
            if first.is_empty() {
                continue;
            }
            genuine.add(judge_actions(&model, &global, first));
            let before: Vec<f64> = first
                .iter()
                .map(|t| super::risk(&assess(&model, &global, &features::extract(t))))
                .collect();
            genuine_before.add(Verdict {
                risk: before.iter().sum::<f64>() / before.len() as f64,
                flagged: false,
                rule: None,
            });
            for t in first {
                genuine_actions.add(judge(&model, &global, t, true).0);
                for f in evidence::check(t, None) {
                    if f.rule != evidence::Rule::InsufficientEvidence {
                        *per_rule.entry(f.detail).or_default() += 1;
                    }
                }
            }
        }
        // Replays of the user's most recent actions (what their profile keeps).
        let recent = &user.training_actions;
        for t in recent.iter().rev().take(20) {
            // Each sample up to 5 ms later, in its order (times stay non-decreasing, as a
            // payload must have them). Balabit's logger often gives several samples one time
            // stamp, which a browser's one-per-frame pointer events never do: samples that
            // share a time stay together.
            let mut copy = t.clone();
            let (mut prev, mut last_orig, mut shift) = (f64::NEG_INFINITY, f64::NAN, 0.0);
            for m in &mut copy.moves {
                if m.t != last_orig {
                    shift = rng.random_range(0.0..=5.0);
                    last_orig = m.t;
                }
                m.t = (((m.t + shift) * 10.0).round() / 10.0).max(prev);
                prev = m.t;
            }
            replay.add(judge(&model, &global, &copy, true).0);
        }
        for _ in 0..20 {
            lines.add(judge_actions(
                &model,
                &global,
                &generated_login(straight, &mut rng),
            ));
            curves.add(judge_actions(
                &model,
                &global,
                &generated_login(bezier, &mut rng),
            ));
            wind.add(judge_actions(
                &model,
                &global,
                &generated_login(wind_mouse, &mut rng),
            ));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut s = format!(
        "balabit: {} users, attacks against each user's profile (fitted on their training sessions); a login is 5 actions\n",
        data.users.len()
    );
    table(
        &mut s,
        &[
            ("replay of a kept action, <=5 ms", &replay, Some(0.99)),
            ("straight lines, 1 px jitter", &lines, Some(0.90)),
            ("Bezier curves with easing", &curves, Some(0.90)),
            ("WindMouse", &wind, Some(0.90)),
        ],
    );
    for (name, t) in [("Bezier curves", &curves), ("WindMouse", &wind)] {
        threshold_for(&mut s, name, t, &genuine, 0.9);
    }
    genuine_rows(&mut s, &genuine, &genuine_before);
    let _ = writeln!(
        s,
        "genuine actions, each judged alone: {}, flagged by a new rule {:.2}%; by rule: {}\n",
        genuine_actions.logins,
        100.0 * Tally::share(genuine_actions.flagged, genuine_actions.logins),
        per_rule
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(s)
}
