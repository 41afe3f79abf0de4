//! Telemetry payloads in the capture script's schema (docs/telemetry.md), played by a simulated
//! person with a given rhythm: how long keys are held, the gaps between them, how fast and how
//! straight the mouse moves, and whether the password field is reached with Tab or the mouse.
//! Small random jitter (seeded, so tests are deterministic) makes logins of one person vary
//! the way real ones do.

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
/// name and `password_len` of password. `seed` varies the jitter between logins.
pub fn payload(
    token: &str,
    rhythm: &Rhythm,
    user_len: usize,
    password_len: usize,
    seed: u64,
) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut jit = |v: f64| v * (1.0 + rng.random_range(-rhythm.jitter..=rhythm.jitter));
    let mut t = 400.0;
    let mut moves = Vec::new();
    let (mut x, mut y) = (100.0, 80.0);
    // Mouse to the username field.
    for i in 0..25 {
        t += 16.0;
        x += jit(rhythm.mouse_step);
        y += if i % 2 == 0 {
            rhythm.wobble
        } else {
            -rhythm.wobble
        } + 1.0;
        moves.push(format!("[{t:.1},{x:.0},{y:.0}]"));
    }
    let mut clicks = vec![format!(
        "[{:.1},0,\"f\",{x:.0},{y:.0},{:.1}]",
        t + 10.0,
        jit(90.0)
    )];
    let mut focus = vec![format!("[{:.1},0,\"mouse\"]", t + 12.0)];
    let mut keys = Vec::new();
    let mut stroke = 0;
    t += 300.0;
    let type_keys = |t: &mut f64,
                     n: usize,
                     class: &str,
                     field: i64,
                     keys: &mut Vec<String>,
                     stroke: &mut i64,
                     jit: &mut dyn FnMut(f64) -> f64| {
        for _ in 0..n {
            let down = *t;
            let up = down + jit(rhythm.dwell);
            keys.push(format!("[{down:.1},\"d\",\"{class}\",{field},{stroke},0]"));
            keys.push(format!("[{up:.1},\"u\",\"{class}\",{field},{stroke},0]"));
            *stroke += 1;
            *t = up + jit(rhythm.flight);
        }
    };
    type_keys(&mut t, user_len, "l", 0, &mut keys, &mut stroke, &mut jit);
    if rhythm.tab {
        type_keys(&mut t, 1, "t", 0, &mut keys, &mut stroke, &mut jit);
        focus.push(format!("[{:.1},1,\"tab\"]", t - 20.0));
    } else {
        for _ in 0..12 {
            t += 16.0;
            y += jit(rhythm.mouse_step) / 2.0;
            x += if stroke % 2 == 0 {
                rhythm.wobble
            } else {
                -rhythm.wobble
            };
            moves.push(format!("[{t:.1},{x:.0},{y:.0}]"));
        }
        t += 20.0;
        clicks.push(format!("[{t:.1},0,\"f\",{x:.0},{y:.0},{:.1}]", jit(90.0)));
        focus.push(format!("[{:.1},1,\"mouse\"]", t + 2.0));
        t += 200.0;
    }
    type_keys(
        &mut t,
        password_len,
        "c",
        1,
        &mut keys,
        &mut stroke,
        &mut jit,
    );
    type_keys(&mut t, 1, "e", 1, &mut keys, &mut stroke, &mut jit);
    let t1 = t + 50.0;
    format!(
        "{{\"v\":1,\"cv\":\"1.0.0\",\"tk\":\"{token}\",\"hv\":\"submit\",\"n\":1,\"t0\":100,\"t1\":{t1:.1},\"vis\":{vis:.1},\"vp\":[1280,720],\"u\":0,\"tr\":0,\
\"f\":[{{\"i\":0,\"fm\":0,\"n\":\"username\",\"y\":\"text\",\"p\":0,\"a\":0,\"ni\":{ni}}},{{\"i\":1,\"fm\":0,\"n\":\"password\",\"y\":\"password\",\"p\":0,\"a\":0,\"ni\":{pi}}}],\
\"fc\":[{focus}],\"k\":[{keys}],\"kn\":{kn},\"m\":[{moves}],\"mi\":[{mn},1],\"p\":[],\"pi\":[0,1],\"c\":[{clicks}],\"w\":[[100,\"v\"],[100,\"f\"]]}}",
        vis = t1 - 100.0,
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
