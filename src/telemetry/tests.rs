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
    validate(json.as_bytes(), &Limits::default())
        .unwrap_err()
        .reason()
}

#[test]
fn each_violation_has_its_reason_code() {
    assert_eq!(
        validate(LOGIN.as_bytes(), &Limits { max_bytes: 100 })
            .unwrap_err()
            .reason(),
        "too_large"
    );
    assert_eq!(reason_for("[1,2]"), "malformed");
    assert_eq!(reason_for(r#"{"v":2,"t0":0,"t1":1}"#), "version");
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
        reason_for(r#"{"v":1,"t0":0,"t1":100,"m":[[10,1e6,0]]}"#),
        "bad_number"
    );
    assert_eq!(reason_for(r#"{"v":1,"t0":0,"t1":1e400}"#), "malformed");
    let many = format!(
        r#"{{"v":1,"t0":0,"t1":100,"w":[{}]}}"#,
        vec![r#"[1,"v"]"#; MAX_WINDOW + 1].join(",")
    );
    assert_eq!(reason_for(&many), "too_many_events");
}

#[test]
fn field_references_are_unknown_when_the_script_dropped_the_field_list() {
    let t = validate(
        br#"{"v":1,"t0":0,"t1":100,"tr":64,"k":[[10,"d","c",1,0,0]]}"#,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(t.keys[0].field, None);
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
        if let Ok(t) = validate(s.as_bytes(), &Limits::default()) {
            let _ = crate::features::extract(&t);
        }
    }
}
