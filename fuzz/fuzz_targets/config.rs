//! The config loader on arbitrary UTF-8: never panics, and every error names the file.
#![no_main]

use std::sync::Once;

use gaitkeeper::config::Config;
use libfuzzer_sys::fuzz_target;

static ENV: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // The secrets the example config and the tests name, so inputs get past them.
    ENV.call_once(|| {
        for var in [
            "GK_TEST_SECRET",
            "GAITKEEPER_SECRET",
            "GK_MFA_REQUEST_SECRET",
        ] {
            std::env::set_var(var, "fuzz-secret-0123456789abcdef0123456789");
        }
    });
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::parse(text, "fuzz.yaml") {
        assert!(e.to_string().starts_with("fuzz.yaml"), "{e}");
    }
});
