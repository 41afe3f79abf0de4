//! External-MFA assertion verification (HS256 config) with arbitrary strings, and with tokens
//! signed by the right key whose claims come from the input. Never panics; a token accepted
//! is signed by our key with our issuer and audience, unexpired, and accepted only once.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use gaitkeeper::challenge::external::{AssertionVerifier, ExternalMfaConfig};
use libfuzzer_sys::fuzz_target;

const ASSERTION_SECRET: &str = "fuzz-assertion-secret-0123456789abcdef";
const NOW: u64 = 1_800_000_000;

static VERIFIER: LazyLock<AssertionVerifier> = LazyLock::new(|| {
    // The config reads secrets from the environment, as an operator's would.
    std::env::set_var(
        "GK_FUZZ_REQUEST_SECRET",
        "fuzz-request-secret-0123456789abcdef0",
    );
    std::env::set_var("GK_FUZZ_ASSERTION_SECRET", ASSERTION_SECRET);
    let config: ExternalMfaConfig = serde_json::from_value(serde_json::json!({
        "url": "https://mfa.example.com/verify",
        "issuer": "test-idp",
        "request_secret": { "env": "GK_FUZZ_REQUEST_SECRET" },
        "assertion": { "algorithm": "HS256", "secret": { "env": "GK_FUZZ_ASSERTION_SECRET" } }
    }))
    .expect("the fuzz config is valid");
    AssertionVerifier::new(&config, 64).expect("an HS256 verifier")
});

fuzz_target!(|data: &[u8]| {
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector & 1 == 0 {
        let token = String::from_utf8_lossy(rest);
        assert!(
            VERIFIER.verify(&token, now).is_err(),
            "an arbitrary string was accepted as an assertion"
        );
        return;
    }
    // Claims from the input, as JSON if it is JSON, else as a string `sub`; signed with our
    // key. Whatever is accepted must satisfy every claim rule.
    let claims: serde_json::Value = serde_json::from_slice(rest)
        .unwrap_or_else(|_| serde_json::json!({ "sub": String::from_utf8_lossy(rest) }));
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(ASSERTION_SECRET.as_bytes()),
    );
    let Ok(token) = token else { return };
    if let Ok(a) = VERIFIER.verify(&token, now) {
        assert_eq!(claims["iss"], "test-idp");
        assert_eq!(claims["aud"], "gaitkeeper");
        assert_eq!(claims["result"], "pass");
        let exp = a.expires_at.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(exp + 60 >= NOW && exp <= NOW + 15 * 60 + 60, "exp {exp}");
        assert!(VERIFIER.verify(&token, now).is_err(), "accepted twice");
    }
});
