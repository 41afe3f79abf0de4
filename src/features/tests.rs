use super::*;
use crate::telemetry::tests::complete;
use crate::telemetry::{validate, Limits, Telemetry};
use proptest::prelude::*;

fn login() -> Telemetry {
    validate(
        crate::telemetry::tests::LOGIN.as_bytes(),
        &Limits::default(),
    )
    .unwrap()
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn a_known_mouse_trace_gives_hand_computed_speed_angle_and_acceleration() {
    // moves (ms, x, y): (500,0,0) (510,3,4) (520,6,8) (530,6,8): two 5 px steps in 10 ms, then
    // a stop. Speeds 500, 500, 0 px/s; both moving steps point 53° below east (south-east bin);
    // accelerations 0 and -50 000 px/s².
    let fv = extract(&login());
    close(fv.get(F::MouseSpeedMean), 1000.0 / 3.0);
    close(fv.get(F::MouseSpeedP50), 500.0);
    close(fv.get(F::MouseSpeedP10), 100.0);
    close(fv.get(F::MouseDir1), 1.0);
    close(fv.get(F::MouseDir0), 0.0);
    close(fv.get(F::MouseCircVar), 0.0);
    close(fv.get(F::MouseAccMean), 25_000.0);
    close(fv.get(F::MouseAccSpikiness), 2.0);
    close(fv.get(F::MouseStraightness), 1.0);
    close(fv.get(F::MousePath), 10.0);
}

#[test]
fn a_known_staircase_trace_gives_hand_computed_turns_jerk_and_shape() {
    // Steps of 10 px: east in 10 ms, south in 5 ms, east in 10 ms, south in 10 ms. Speeds
    // 1000, 2000, 1000, 1000 px/s; three right-angle turns after 5, 10 and 10 ms;
    // accelerations +133 333, −133 333, 0 px/s² (one of three speeding up), jerks over the
    // following steps' 10 ms: 26 666 667 and 13 333 333 px/s³. The chord runs (0,0)→(20,20);
    // the corners (10,0) and (20,10) lie 10/√2 px off it. Top speed is reached at 15 of 35 ms.
    let json =
        r#"{"v":1,"t0":0,"t1":100,"m":[[0,0,0],[10,10,0],[15,10,10],[25,20,10],[35,20,20]]}"#;
    let fv = extract(&validate(complete(json).as_bytes(), &Limits::default()).unwrap());
    let right = std::f64::consts::FRAC_PI_2;
    close(fv.get(F::MouseTurnMean), right);
    close(
        fv.get(F::MouseAngularSpeed),
        (right / 5.0 + 2.0 * right / 10.0) / 3.0 * 1000.0,
    );
    close(fv.get(F::MouseCurvature), right / 10.0);
    close(fv.get(F::MouseAccelFraction), 1.0 / 3.0);
    assert!((fv.get(F::MouseJerkMean) - 20_000_000.0).abs() < 1e-3);
    close(fv.get(F::MouseDeviation), 10.0 / 2f64.sqrt());
    close(fv.get(F::MousePeakAt), 15.0 / 35.0);
}

#[test]
fn a_single_mouse_step_has_a_speed_but_no_turn_or_jerk() {
    let json = r#"{"v":1,"t0":0,"t1":100,"m":[[0,0,0],[10,10,0]]}"#;
    let fv = extract(&validate(complete(json).as_bytes(), &Limits::default()).unwrap());
    close(fv.get(F::MouseSpeedMean), 1000.0);
    for f in [
        F::MouseTurnMean,
        F::MouseAngularSpeed,
        F::MouseAngularSpeedSd,
        F::MouseCurvature,
        F::MouseJerkMean,
        F::MouseDeviation,
        F::MousePeakAt,
    ] {
        assert!(fv.get(f).is_nan(), "{f:?} = {}", fv.get(f));
    }
}

#[test]
fn a_known_key_trace_gives_hand_computed_dwell_and_flight() {
    let fv = extract(&login());
    // dwell 80, 100, 50, 100, 50, 80; press→press 200, 600, 200, 200, 300
    close(fv.get(F::KeyDwellMean), 460.0 / 6.0);
    close(fv.get(F::KeyFlightMean), 300.0);
    close(fv.get(F::KeyFlightSd), 24_000f64.sqrt());
    close(fv.get(F::KeyGapMean), 224.0);
    close(fv.get(F::KeyStrokes), 6.0);
    close(fv.get(F::Backspaces), 0.0);
    assert_eq!(fv.password.press_press, vec![200.0, 300.0]);
    assert_eq!(fv.password.dwell, vec![100.0, 50.0, 80.0]);
    assert!(fv.password.clean);
}

#[test]
fn navigation_clicks_and_timing_are_read_from_the_events() {
    let fv = extract(&login());
    close(fv.get(F::NavTabFraction), 0.5);
    close(fv.get(F::NavUserTab), 0.0);
    close(fv.get(F::NavPasswordTab), 1.0);
    close(fv.get(F::ClickIntervalMean), 2100.0);
    close(fv.get(F::ClickHoldMean), 90.0);
    close(fv.get(F::TimeToSubmit), 4900.0);
    close(fv.get(F::TypingToSubmit), 4500.0);
    close(fv.get(F::BotNoInput), 0.0);
    close(fv.get(F::BotSynthetic), 0.0);
    close(fv.get(F::Autofill), 0.0);
}

#[test]
fn a_login_without_mouse_or_keys_is_flagged_and_has_no_made_up_features() {
    let t = validate(
        complete(r#"{"t0":0,"t1":100}"#).as_bytes(),
        &Limits::default(),
    )
    .unwrap();
    let fv = extract(&t);
    close(fv.get(F::BotNoInput), 1.0);
    assert!(fv.get(F::MouseSpeedMean).is_nan());

    assert!(fv.get(F::KeyDwellMean).is_nan());
}

#[test]
fn metronome_typing_and_a_ruler_straight_mouse_are_synthetic() {
    let keys: Vec<String> = (0..8)
        .flat_map(|i| {
            let t = 100 + i * 100;
            [
                format!(r#"[{t},"d","l",-1,{i},0]"#),
                format!(r#"[{},"u","l",-1,{i},0]"#, t + 50),
            ]
        })
        .collect();
    let json = format!(r#"{{"v":1,"t0":0,"t1":2000,"k":[{}]}}"#, keys.join(","));
    let fv = extract(&validate(complete(&json).as_bytes(), &Limits::default()).unwrap());
    close(fv.get(F::BotSynthetic), 1.0);
    let moves: Vec<String> = (0..10)
        .map(|i| format!("[{},{},0]", 10 * i, 5 * i))
        .collect();
    let json = format!(r#"{{"v":1,"t0":0,"t1":2000,"m":[{}]}}"#, moves.join(","));
    let fv = extract(&validate(complete(&json).as_bytes(), &Limits::default()).unwrap());
    close(fv.get(F::BotSynthetic), 1.0);
}

#[test]
fn a_corrected_password_is_not_clean() {
    let json = r#"{"v":1,"t0":0,"t1":2000,"f":[{"y":"password"}],
      "k":[[10,"d","c",0,0,0],[20,"u","c",0,0,0],[30,"d","b",0,1,0],[40,"u","b",0,1,0]]}"#;
    let fv = extract(&validate(complete(json).as_bytes(), &Limits::default()).unwrap());
    assert!(!fv.password.clean);
    close(fv.get(F::Backspaces), 1.0);
}

fn arb_payload() -> impl Strategy<Value = String> {
    // Times on the script's 0.1 ms grid, integer coordinates, flags where the script puts
    // them (repeat on keydowns, unpaired on keyups).
    let t = (0u32..100_000).prop_map(|t| f64::from(t) / 10.0);
    let keys = proptest::collection::vec(
        (
            t.clone(),
            prop_oneof!["d", "u"],
            prop_oneof!["l", "c", "b", "t", "m"],
            -1i64..3,
            0u32..20,
            prop_oneof![Just(0u8), Just(4), Just(8), Just(12)],
            any::<bool>(),
        ),
        0..60,
    );
    let moves = proptest::collection::vec((t.clone(), -2000i64..2000, -2000i64..2000), 0..80);
    let clicks = proptest::collection::vec(
        (
            t,
            -1i64..32,
            proptest::option::of((0u32..5000).prop_map(|h| f64::from(h) / 10.0)),
        ),
        0..10,
    );
    (keys, moves, clicks).prop_map(|(mut keys, mut moves, mut clicks)| {
        keys.sort_by(|a, b| a.0.total_cmp(&b.0));
        moves.sort_by(|a, b| a.0.total_cmp(&b.0));
        clicks.sort_by(|a, b| a.0.total_cmp(&b.0));
        let k: Vec<String> = keys
            .iter()
            .map(|(t, d, c, f, s, fl, odd)| {
                let fl = fl | if !odd { 0 } else if *d == "d" { 1 } else { 2 };
                format!(r#"[{t},"{d}","{c}",{f},{s},{fl}]"#)
            })
            .collect();
        let m: Vec<String> = moves.iter().map(|(t, x, y)| format!("[{t},{x},{y}]")).collect();
        let c: Vec<String> = clicks
            .iter()
            .map(|(t, b, h)| match h {
                Some(h) => format!(r#"[{t},{b},"o",1,1,{h}]"#),
                None => format!(r#"[{t},{b},"o",1,1,null]"#),
            })
            .collect();
        complete(&format!(
            r#"{{"v":1,"t0":0,"t1":20000,"f":[{{"y":"text"}},{{"y":"password","p":1,"a":2}},{{"y":"password"}}],
            "fc":[[1,0,"tab"],[2,1,"mouse"]],"k":[{}],"m":[{}],"c":[{}]}}"#,
            k.join(","),
            m.join(","),
            c.join(",")
        ))
    })
}

proptest! {
    // What validation lets through from a mangled login, extraction takes without panicking.
    #[test]
    fn mutated_payloads_that_validate_extract_without_panics(pos in 0usize..crate::telemetry::tests::LOGIN.len(), len in 0usize..16, fill in "[-0-9.e,\\[\\]\"dulcfbo ]{0,16}") {
        let mut s = crate::telemetry::tests::LOGIN.to_string();
        let pos = (0..=pos).rev().find(|&p| s.is_char_boundary(p)).unwrap_or(0);
        let end = (pos + len).min(s.len());
        let end = (end..=s.len()).find(|&p| s.is_char_boundary(p)).unwrap_or(s.len());
        s.replace_range(pos..end, &fill);
        if let Ok(t) = crate::telemetry::validate(s.as_bytes(), &crate::telemetry::Limits::default()) {
            let _ = extract(&t);
        }
    }

    #[test]
    fn arbitrary_valid_payloads_give_vectors_without_panics(json in arb_payload()) {
        let t = validate(complete(&json).as_bytes(), &Limits::default());
        prop_assert!(t.is_ok(), "{:?}", t.err());
        let fv = extract(&t.unwrap());
        prop_assert_eq!(fv.values.len(), NAMES.len());
        prop_assert!(fv.values.iter().all(|v| v.is_nan() || v.is_finite()));
        prop_assert!(fv.password.len() <= MAX_PASSWORD);
    }
}

#[test]
fn angle_wrapping_gives_exactly_what_rem_euclid_gives_on_the_range_it_is_used_on() {
    use std::f64::consts::{PI, TAU};
    // Headings are atan2 results (±π) wrapped once, turns a difference of two headings plus π:
    // everything lies in (-2π, 4π). Edges, their neighbours and a dense sweep, bit for bit.
    let mut inputs = vec![-PI, -0.0, 0.0, PI, TAU, 3.0 * PI, -1e-300, 1e-300];
    for edge in [-PI, 0.0, TAU, 3.0 * PI] {
        inputs.push(f64::from_bits(edge.to_bits() + 1));
        inputs.push(f64::from_bits(edge.to_bits().wrapping_sub(1)));
    }
    inputs.extend((0..=100_000).map(|i| -TAU + f64::from(i) * (3.0 * TAU / 100_000.0)));
    for x in inputs.into_iter().filter(|x| *x > -TAU && *x < 2.0 * TAU) {
        assert_eq!(
            wrap_to_turn(x).to_bits(),
            x.rem_euclid(TAU).to_bits(),
            "{x:e}"
        );
    }
    assert!(wrap_to_turn(f64::NAN).is_nan());
}
