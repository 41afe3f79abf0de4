use super::*;
use proptest::prelude::*;

pub(crate) const LOGIN: &str = r#"{"v":1,"cv":"1.0.0","tk":"x","hv":"submit","n":1,"t0":100,"t1":5000,"vis":4900,
 "vp":[1280,720],"u":0,"tr":0,
 "f":[{"i":0,"fm":0,"n":"user","y":"text","p":0,"a":0,"ni":3},{"i":1,"fm":0,"n":"pw","y":"password","p":0,"a":0,"ni":3}],
 "fc":[[1000,0,"mouse"],[2000,1,"tab"]],
 "k":[[1100,"d","l",0,0,0],[1180,"u","l",0,0,0],[1300,"d","l",0,1,0],[1400,"u","l",0,1,0],
      [1900,"d","t",0,2,0],[1950,"u","t",0,2,0],
      [2100,"d","c",1,3,0],[2200,"u","c",1,3,0],[2300,"d","c",1,4,0],[2350,"u","c",1,4,0],
      [2600,"d","c",1,5,0],[2680,"u","c",1,5,0]],
 "kn":12,"m":[[500,0,0],[510,3,4],[520,6,8],[530,6,8]],"mi":[4,1],"p":[],"pi":[0,1],
 "c":[[900,0,"f",6,8,90],[3000,0,"b",10,10,null]],"w":[[100,"v"],[100,"f"]]}"#;

/// A complete v1 payload from a partial one: every key the tests leave out gets the value an
/// idle page would send (empty streams, `vis` the whole window, `kn` the keys given), and
/// field entries get their missing keys.
pub(crate) fn complete(partial: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(partial) else {
        return partial.to_string();
    };
    let Some(o) = v.as_object_mut() else {
        return partial.to_string();
    };
    let t0 = o.get("t0").and_then(|t| t.as_f64()).unwrap_or(0.0);
    let t1 = o.get("t1").and_then(|t| t.as_f64()).unwrap_or(t0);
    let keys = o.get("k").and_then(|k| k.as_array()).map_or(0, |k| k.len());
    let defaults = serde_json::json!({
        "v": 1, "cv": "1.0.0", "tk": "x", "hv": "submit", "n": 1, "t0": t0, "t1": t1,
        "vis": ((t1 - t0) * 10.0).round() / 10.0, "vp": [1280, 720], "u": 0, "tr": 0,
        "f": [], "fc": [], "k": [], "kn": keys, "m": [], "mi": [o.get("m").and_then(|m| m.as_array()).map_or(0, |m| m.len()), 1],
        "p": [], "pi": [0, 1], "c": [], "w": []
    });
    for (key, value) in defaults.as_object().unwrap() {
        o.entry(key.clone()).or_insert(value.clone());
    }
    if let Some(fields) = o.get_mut("f").and_then(|f| f.as_array_mut()) {
        for (i, f) in fields.iter_mut().enumerate() {
            let f = f.as_object_mut().expect("a field object");
            for (key, value) in [
                ("i", serde_json::json!(i)),
                ("fm", serde_json::json!(0)),
                ("n", serde_json::json!(format!("f{i}"))),
                ("y", serde_json::json!("text")),
                ("p", serde_json::json!(0)),
                ("a", serde_json::json!(0)),
                ("ni", serde_json::json!(0)),
            ] {
                f.entry(key).or_insert(value);
            }
        }
    }
    v.to_string()
}

#[test]
fn the_capture_scripts_payload_is_accepted() {
    let t = validate(LOGIN.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(t.keys.len(), 12);
    assert_eq!(t.fields.len(), 2);
    assert!(t.fields[1].is_password);
    assert_eq!(t.focus[1].method, FocusMethod::Tab);
    assert_eq!(t.clicks[0].hold, Some(90.0));
    assert_eq!(t.clicks[1].target, ClickTarget::Button);
}

fn reason_for(json: &str) -> &'static str {
    validate(complete(json).as_bytes(), &Limits::default())
        .unwrap_err()
        .reason()
}

#[test]
fn each_violation_has_its_reason_code() {
    assert_eq!(
        validate(
            LOGIN.as_bytes(),
            &Limits {
                max_bytes: 100,
                ..Limits::default()
            }
        )
        .unwrap_err()
        .reason(),
        "too_large"
    );
    assert_eq!(reason_for("[1,2]"), "malformed");
    assert_eq!(
        validate(br#"{"v":2,"t0":0,"t1":1}"#, &Limits::default())
            .unwrap_err()
            .reason(),
        "version"
    );
    assert_eq!(reason_for(r#"{"v":1,"t0":5,"t1":1}"#), "page_window");
    assert_eq!(
        reason_for(r#"{"v":1,"t0":0,"t1":100,"m":[[10,0,0],[5,1,1]]}"#),
        "not_monotone"
    );
    assert_eq!(
        reason_for(r#"{"v":1,"t0":0,"t1":100,"m":[[1000,0,0]]}"#),
        "out_of_window"
    );
    assert_eq!(
        reason_for(r#"{"v":1,"t0":0,"t1":100,"k":[[10,"x","l",-1,0,0]]}"#),
        "unknown_value"
    );
    assert_eq!(
        reason_for(r#"{"v":1,"t0":0,"t1":100,"k":[[10,"d","l",3,0,0]]}"#),
        "field_index"
    );
    assert_eq!(
        reason_for(r#"{"v":1,"t0":0,"t1":100,"m":[[10,1000000,0]]}"#),
        "bad_number"
    );
    assert_eq!(
        validate(br#"{"v":1,"t0":0,"t1":1e400}"#, &Limits::default())
            .unwrap_err()
            .reason(),
        "malformed"
    );
    let many = format!(
        r#"{{"v":1,"t0":0,"t1":100,"w":[{}]}}"#,
        vec![r#"[1,"v"]"#; MAX_WINDOW + 1].join(",")
    );
    assert_eq!(reason_for(&many), "too_many_events");
}

#[test]
fn every_rule_of_the_spec_is_checked() {
    // §3: exactly the 21 keys.
    assert_eq!(
        validate(br#"{"v":1,"t0":0,"t1":100}"#, &Limits::default())
            .unwrap_err()
            .reason(),
        "malformed"
    );
    let extra = complete(r#"{"t0":0,"t1":100}"#).replacen('{', r#"{"zz":1,"#, 1);
    assert_eq!(
        validate(extra.as_bytes(), &Limits::default())
            .unwrap_err()
            .reason(),
        "malformed"
    );
    // §2: the 0.1 ms grid, t ≤ t1, vis within the window, integer coordinates.
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"m":[[10.05,0,0]]}"#),
        "off_grid"
    );
    assert_eq!(reason_for(r#"{"t0":0.01,"t1":100}"#), "off_grid");
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"m":[[100.1,0,0]]}"#),
        "out_of_window"
    );
    assert_eq!(reason_for(r#"{"t0":0,"t1":100,"vis":100.1}"#), "bad_number");
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"m":[[10,1.5,0]]}"#),
        "malformed"
    );
    // §3 bounds: n ≥ 1, tr 0..127, cv ≤ 16 characters, vp multiples of 10, kn ≥ len(k),
    // strides powers of two.
    assert_eq!(reason_for(r#"{"t0":0,"t1":100,"n":0}"#), "unknown_value");
    assert_eq!(reason_for(r#"{"t0":0,"t1":100,"tr":128}"#), "unknown_value");
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"cv":"12345678901234567"}"#),
        "unknown_value"
    );
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"vp":[1281,720]}"#),
        "bad_number"
    );
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"k":[[1,"d","l",-1,0,0]],"kn":0}"#),
        "bad_number"
    );
    assert_eq!(reason_for(r#"{"t0":0,"t1":100,"mi":[9,3]}"#), "bad_number");
    assert_eq!(reason_for(r#"{"t0":0,"t1":100,"pi":[9,0]}"#), "bad_number");
    // §7.7–7.9: field references, field entries, flags in their place.
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"f":[{}],"fc":[[1,-1,"tab"]]}"#),
        "field_index"
    );
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"f":[{"i":-2}]}"#),
        "unknown_value"
    );
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"f":[{"zz":1}]}"#),
        "malformed"
    );
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"k":[[1,"u","l",-1,0,1]]}"#),
        "unknown_value"
    );
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"k":[[1,"d","l",-1,0,2]]}"#),
        "unknown_value"
    );
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"k":[[1,"d","l",-1,0,16]]}"#),
        "unknown_value"
    );
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"tr":64,"k":[[10,"d","c",1,0,0]]}"#),
        "field_index"
    );
    // §4.5: buttons -1..31 are what browsers send; others are not.
    for button in [-1, 0, 4, 5, 17, 31] {
        let json = complete(&format!(
            r#"{{"t0":0,"t1":100,"c":[[1,{button},"o",1,1,null]]}}"#
        ));
        assert!(
            validate(json.as_bytes(), &Limits::default()).is_ok(),
            "button {button}"
        );
    }
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"c":[[1,32,"o",1,1,null]]}"#),
        "unknown_value"
    );
    assert_eq!(
        reason_for(r#"{"t0":0,"t1":100,"c":[[1,-2,"o",1,1,null]]}"#),
        "unknown_value"
    );
    // §1: hv matches the carrier, and each carrier has its size bound.
    let form = complete(r#"{"t0":0,"t1":100,"hv":"submit"}"#);
    let header = complete(r#"{"t0":0,"t1":100,"hv":"xhr"}"#);
    let on = |carrier| Limits {
        max_bytes: 1 << 20,
        carrier,
    };
    assert!(validate(form.as_bytes(), &on(Carrier::FormField)).is_ok());
    assert!(validate(header.as_bytes(), &on(Carrier::Header)).is_ok());
    for (json, carrier) in [(&form, Carrier::Header), (&header, Carrier::FormField)] {
        assert_eq!(
            validate(json.as_bytes(), &on(carrier))
                .unwrap_err()
                .reason(),
            "handover_mismatch"
        );
    }
    let debug = complete(r#"{"t0":0,"t1":100,"hv":"debug"}"#);
    assert!(validate(debug.as_bytes(), &Limits::default()).is_err());
    // JSON allows trailing blanks: this payload is valid but for its size.
    let big = complete(r#"{"t0":0,"t1":100,"hv":"fetch"}"#) + &" ".repeat(MAX_HEADER_BYTES);
    assert_eq!(
        validate(big.as_bytes(), &on(Carrier::Header))
            .unwrap_err()
            .reason(),
        "too_large"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = validate(&bytes, &Limits::default());
    }

    #[test]
    fn mutated_payloads_never_panic(pos in 0usize..LOGIN.len(), len in 0usize..16, fill in "[-0-9.e,\\[\\]\"dulcfbo ]{0,16}") {
        let mut s = LOGIN.to_string();
        let pos = (0..=pos).rev().find(|&p| s.is_char_boundary(p)).unwrap_or(0);
        let end = (pos + len).min(s.len());
        let end = (end..=s.len()).find(|&p| s.is_char_boundary(p)).unwrap_or(s.len());
        s.replace_range(pos..end, &fill);
        let _ = validate(s.as_bytes(), &Limits::default());
    }
}
