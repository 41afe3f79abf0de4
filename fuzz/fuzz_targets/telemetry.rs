//! Telemetry validation and feature extraction on arbitrary bytes: never panics, and whatever
//! validates yields no infinite feature (NaN means "does not apply"; an infinity would poison
//! every model downstream) and a bounded password rhythm.
#![no_main]

use gaitkeeper::{features, telemetry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = telemetry::Limits::default();
    if let Ok(t) = telemetry::validate(data, &limits) {
        let v = features::extract(&t);
        for (i, x) in v.values.iter().enumerate() {
            assert!(!x.is_infinite(), "feature {i} is {x} for a valid payload");
        }
        let rhythm = &v.password;
        assert!(rhythm.len() <= features::MAX_PASSWORD);
        assert!(rhythm.press_press.iter().all(|x| !x.is_infinite()));
        assert!(rhythm.dwell.iter().all(|x| !x.is_infinite()));
    }
});
