//! Telemetry payloads in the capture script's schema (docs/telemetry.md), played by a simulated
//! person with a given rhythm: how long keys are held, the gaps between them, how fast and how
//! straight the mouse moves, and whether the password field is reached with Tab or the mouse.
//! Random variation (seeded, so tests are deterministic) makes each login look like a
//! person's: no two alike, every key and mouse sample a little different.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};

/// How one person types and moves.
#[derive(Clone, Copy, Debug)]
pub struct Rhythm {
    /// Key held down (ms).
    pub dwell: f64,
    /// Gap from one key's release to the next key's press (ms).
    pub flight: f64,
    /// Mouse step length (px) per 16 ms sample.
    pub mouse_step: f64,
    /// Sideways wobble of the mouse path (px).
    pub wobble: f64,
    /// Reaches the password field with Tab (else with a mouse click).
    pub tab: bool,
    /// Relative jitter of every timing (0.05 = ±5 %).
    pub jitter: f64,
}

/// How much a person's keys vary around their usual hold and gap: a fixed, irregular cycle
/// (a spread of about a third; press-to-press intervals vary by 17 % or more in every
/// stretch, as typists' do), so tests know every time they played.
pub const HUMAN_VARIATION: [f64; 13] = [
    1.0, 0.55, 1.2, 1.5, 0.7, 0.9, 1.65, 0.6, 1.3, 0.8, 1.1, 1.45, 0.75,
];

/// A calm, steady typist: the enrolled user in tests.
pub const STEADY: Rhythm = Rhythm {
    dwell: 95.0,
    flight: 140.0,
    mouse_step: 9.0,
    wobble: 1.0,
    tab: true,
    jitter: 0.06,
};

/// Somebody else entirely: fast and jerky, mouse instead of Tab.
pub const STRANGER: Rhythm = Rhythm {
    dwell: 35.0,
    flight: 420.0,
    mouse_step: 60.0,
    wobble: 25.0,
    tab: false,
    jitter: 0.3,
};

/// [`payload`] as a fetch/XHR login hands it over (in the header): `hv` says `fetch`.
pub fn fetch_payload(
    token: &str,
    rhythm: &Rhythm,
    user_len: usize,
    password_len: usize,
    seed: u64,
) -> String {
    payload(token, rhythm, user_len, password_len, seed).replacen(
        "\"hv\":\"submit\"",
        "\"hv\":\"fetch\"",
        1,
    )
}

/// One login's payload (JSON text) carrying `token`, typing `user_len` characters of login
/// name and `password_len` of password. `seed` varies the login.
///
/// Like a person, not a machine: every key's hold and gap varies around the rhythm's values
/// (by about a quarter, as typists' do), the mouse travels a curve with a speed that rises and
/// falls and the display's irregular sampling, and times are on the browser's 0.1 ms grid. The
/// rhythm's `jitter` moves the whole login (a person's days differ), so logins of one person
/// differ but stay alike.
pub fn payload(
    token: &str,
    rhythm: &Rhythm,
    user_len: usize,
    password_len: usize,
    seed: u64,
) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // The whole login's tempo, then each key's variation around it.
    let day = 1.0 + rng.random_range(-rhythm.jitter..=rhythm.jitter);
    let vary = |v: f64, rng: &mut rand::rngs::StdRng| {
        // A log-normal-ish spread of about 25 % (sum of uniforms), never below a third.
        let u: f64 = (0..3).map(|_| rng.random_range(-0.25..=0.25)).sum();
        (v * day * (1.0 + u)).max(v / 3.0)
    };
    let tenth = |t: f64| (t * 10.0).round() / 10.0;
    let mut t = 400.0;
    let mut moves = Vec::new();
    let (mut x, mut y) = (100.0, 80.0);
    // One movement along a bowed curve: speed rises and falls (a hand's bell-shaped profile),
    // samples come at the display's irregular pace.
    let reach = |t: &mut f64,
                 x: &mut f64,
                 y: &mut f64,
                 dx: f64,
                 dy: f64,
                 steps: usize,
                 moves: &mut Vec<String>,
                 rng: &mut rand::rngs::StdRng| {
        let (x0, y0) = (*x, *y);
        let bow = rhythm.wobble * 4.0 * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        for i in 1..=steps {
            let f = i as f64 / steps as f64;
            // Minimum-jerk position along the path, with a sideways bow and a little tremor.
            let s = 10.0 * f.powi(3) - 15.0 * f.powi(4) + 6.0 * f.powi(5);
            let side = bow * (std::f64::consts::PI * s).sin();
            let len = dx.hypot(dy).max(1.0);
            *x = x0 + dx * s - dy / len * side + rng.random_range(-0.6..=0.6);
            *y = y0 + dy * s + dx / len * side + rng.random_range(-0.6..=0.6);
            *t += rng.random_range(14.5..=19.0);
            moves.push(format!(
                "[{:.1},{:.0},{:.0}]",
                tenth(*t),
                x.round(),
                y.round()
            ));
        }
    };
    // Mouse to the username field.
    let steps = 25;
    let travel = rhythm.mouse_step * steps as f64 * day;
    reach(
        &mut t,
        &mut x,
        &mut y,
        travel,
        travel * 0.35,
        steps,
        &mut moves,
        &mut rng,
    );
    let hold = vary(90.0, &mut rng);
    let mut clicks = vec![format!(
        "[{:.1},0,\"f\",{:.0},{:.0},{:.1}]",
        tenth(t + 10.0),
        x.round(),
        y.round(),
        tenth(hold)
    )];
    let mut focus = vec![format!("[{:.1},0,\"mouse\"]", tenth(t + 12.0))];
    let mut keys = Vec::new();
    let mut stroke = 0;
    t += 300.0;
    let type_keys = |t: &mut f64,
                     n: usize,
                     class: &str,
                     field: i64,
                     keys: &mut Vec<String>,
                     stroke: &mut i64,
                     rng: &mut rand::rngs::StdRng| {
        // A person's stretch of keys is never metronome-regular (typists' intervals vary by
        // 20–60 %): a stretch that comes out that regular by chance is drawn again.
        let timings = loop {
            let timings: Vec<(f64, f64)> = (0..n)
                .map(|_| (vary(rhythm.dwell, rng), vary(rhythm.flight, rng)))
                .collect();
            let intervals: Vec<f64> = timings.iter().map(|(hold, gap)| hold + gap).collect();
            let regular = |xs: &[f64]| xs.len() >= 4 && coefficient_of_variation(xs) < 0.12;
            if !regular(&intervals) && !regular(&intervals[..n.saturating_sub(1)]) {
                break timings;
            }
        };
        for (hold, gap) in timings {
            let down = tenth(*t);
            let up = tenth(down + hold);
            keys.push(format!("[{down:.1},\"d\",\"{class}\",{field},{stroke},0]"));
            keys.push(format!("[{up:.1},\"u\",\"{class}\",{field},{stroke},0]"));
            *stroke += 1;
            *t = up + gap;
        }
    };
    type_keys(&mut t, user_len, "l", 0, &mut keys, &mut stroke, &mut rng);
    if rhythm.tab {
        type_keys(&mut t, 1, "t", 0, &mut keys, &mut stroke, &mut rng);
        focus.push(format!("[{:.1},1,\"tab\"]", tenth(t - 20.0)));
    } else {
        t += 150.0;
        reach(
            &mut t,
            &mut x,
            &mut y,
            rhythm.wobble * 3.0,
            rhythm.mouse_step * 6.0 * day,
            12,
            &mut moves,
            &mut rng,
        );
        t += 20.0;
        let hold = vary(90.0, &mut rng);
        clicks.push(format!(
            "[{:.1},0,\"f\",{:.0},{:.0},{:.1}]",
            tenth(t),
            x.round(),
            y.round(),
            tenth(hold)
        ));
        focus.push(format!("[{:.1},1,\"mouse\"]", tenth(t + 2.0)));
        t += 200.0;
    }
    type_keys(
        &mut t,
        password_len,
        "c",
        1,
        &mut keys,
        &mut stroke,
        &mut rng,
    );
    type_keys(&mut t, 1, "e", 1, &mut keys, &mut stroke, &mut rng);
    let t1 = tenth(t + 50.0);
    format!(
        "{{\"v\":1,\"cv\":\"1.0.0\",\"tk\":\"{token}\",\"hv\":\"submit\",\"n\":1,\"t0\":100,\"t1\":{t1:.1},\"vis\":{vis:.1},\"vp\":[1280,720],\"u\":0,\"tr\":0,\
\"f\":[{{\"i\":0,\"fm\":0,\"n\":\"username\",\"y\":\"text\",\"p\":0,\"a\":0,\"ni\":{ni}}},{{\"i\":1,\"fm\":0,\"n\":\"password\",\"y\":\"password\",\"p\":0,\"a\":0,\"ni\":{pi}}}],\
\"fc\":[{focus}],\"k\":[{keys}],\"kn\":{kn},\"m\":[{moves}],\"mi\":[{mn},1],\"p\":[],\"pi\":[0,1],\"c\":[{clicks}],\"w\":[[100,\"v\"],[100,\"f\"]]}}",
        vis = tenth(t1 - 100.0),
        ni = user_len,
        pi = password_len,
        focus = focus.join(","),
        kn = keys.len(),
        keys = keys.join(","),
        mn = moves.len(),
        moves = moves.join(","),
        clicks = clicks.join(","),
    )
}

/// `application/x-www-form-urlencoded` encoding of `text`.
pub fn form_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A key stroke of a scripted payload: press and release times (ms), class, field index.
pub type Stroke = (f64, f64, &'static str, i64);

/// A payload with exactly the given key strokes and mouse samples (times in ms, rounded to the
/// 0.1 ms grid), over a username field (0) and a password field (1) both focused: what an
/// attacker writes by hand. `t1` is the hand-over time.
pub fn scripted_payload(
    token: &str,
    strokes: &[Stroke],
    moves: &[(f64, f64, f64)],
    t1: f64,
) -> String {
    let tenth = |t: f64| (t * 10.0).round() / 10.0;
    let mut keys: Vec<(f64, String)> = Vec::new();
    for (i, (down, up, class, field)) in strokes.iter().enumerate() {
        keys.push((
            tenth(*down),
            format!("[{:.1},\"d\",\"{class}\",{field},{i},0]", tenth(*down)),
        ));
        keys.push((
            tenth(*up),
            format!("[{:.1},\"u\",\"{class}\",{field},{i},0]", tenth(*up)),
        ));
    }
    keys.sort_by(|a, b| a.0.total_cmp(&b.0));
    let keys: Vec<String> = keys.into_iter().map(|k| k.1).collect();
    let typed = |f: i64| strokes.iter().filter(|s| s.3 == f).count();
    let first_key = strokes.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
    let focus_at = if first_key.is_finite() {
        tenth(first_key - 50.0).max(100.0)
    } else {
        100.0
    };
    let moves: Vec<String> = moves
        .iter()
        .map(|(t, x, y)| format!("[{:.1},{:.0},{:.0}]", tenth(*t), x, y))
        .collect();
    let t1 = tenth(t1);
    format!(
        "{{\"v\":1,\"cv\":\"1.0.0\",\"tk\":\"{token}\",\"hv\":\"submit\",\"n\":1,\"t0\":100,\"t1\":{t1:.1},\"vis\":{vis:.1},\"vp\":[1280,720],\"u\":0,\"tr\":0,\
\"f\":[{{\"i\":0,\"fm\":0,\"n\":\"username\",\"y\":\"text\",\"p\":0,\"a\":0,\"ni\":{ni}}},{{\"i\":1,\"fm\":0,\"n\":\"password\",\"y\":\"password\",\"p\":0,\"a\":0,\"ni\":{pi}}}],\
\"fc\":[[{focus_at:.1},0,\"programmatic\"],[{focus_at:.1},1,\"programmatic\"]],\"k\":[{keys}],\"kn\":{kn},\"m\":[{moves}],\"mi\":[{mn},1],\"p\":[],\"pi\":[0,1],\"c\":[],\"w\":[[100,\"v\"],[100,\"f\"]]}}",
        vis = tenth(t1 - 100.0),
        ni = typed(0),
        pi = typed(1),
        kn = keys.len(),
        keys = keys.join(","),
        mn = moves.len(),
        moves = moves.join(","),
    )
}

/// The same payload moved to another page token and with every event time shifted by up to
/// `jitter_ms` (order kept): a captured login replayed.
pub fn replayed(payload: &str, token: &str, jitter_ms: f64, seed: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v: serde_json::Value = serde_json::from_str(payload).unwrap();
    v["tk"] = token.into();
    let t1 = v["t1"].as_f64().unwrap();
    for stream in ["fc", "k", "m", "c", "w"] {
        let mut prev = f64::NEG_INFINITY;
        for e in v[stream].as_array_mut().unwrap() {
            let t = e[0].as_f64().unwrap();
            let moved = ((t + rng.random_range(0.0..=jitter_ms)) * 10.0).round() / 10.0;
            let moved = moved.max(prev).min(t1);
            e[0] = moved.into();
            prev = moved;
        }
    }
    v.to_string()
}

/// Standard deviation over mean.
fn coefficient_of_variation(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() / mean
}
