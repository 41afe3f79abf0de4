//! A small test provider signs assertions with the keys in tests/fixtures/mfa/ (or a shared
//! secret) and every refusal is checked for its reason code.

use super::*;
use crate::config::{HumanDuration, Secret};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::PathBuf;

const NOW: u64 = 1_800_000_000;
const REQUEST_SECRET: &[u8] = b"request-secret-0123456789abcdef-request";
const ASSERTION_SECRET: &[u8] = b"assertion-secret-0123456789abcdef-assert";
const ISSUER: &str = "https://mfa.test";
const AUDIENCE: &str = "gaitkeeper-test";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/mfa/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn config(algorithm: AssertionAlgorithm) -> ExternalMfaConfig {
    let public_key = |name: &str| PublicKeyFile {
        path: PathBuf::from(name),
        pem: fixture(name),
    };
    let (secret, public_key_file) = match algorithm {
        AssertionAlgorithm::HS256 => (Some(Secret::for_tests(ASSERTION_SECRET)), None),
        AssertionAlgorithm::RS256 => (None, Some(public_key("rsa_public.pem"))),
        AssertionAlgorithm::ES256 => (None, Some(public_key("ec_public.pem"))),
    };
    ExternalMfaConfig {
        name: "Test MFA".into(),
        url: ProviderUrl(url::Url::parse("https://mfa.test/verify?tenant=7").unwrap()),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        request_secret: Secret::for_tests(REQUEST_SECRET),
        assertion: AssertionConfig {
            algorithm,
            secret,
            public_key_file,
        },
        leeway: HumanDuration::secs(30),
    }
}

fn verifier(algorithm: AssertionAlgorithm) -> AssertionVerifier {
    AssertionVerifier::new(&config(algorithm), 1000).unwrap()
}

/// The claims a well-behaved provider sends for challenge `c1` and user `alice`.
fn claims(jti: &str) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "cid": "c1",
        "jti": jti,
        "iat": NOW,
        "exp": NOW + 120,
        "result": "pass",
    })
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(ASSERTION_SECRET),
        claims,
    )
}

fn rs(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap();
    sign(Algorithm::RS256, &key, claims)
}

fn es(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).unwrap();
    sign(Algorithm::ES256, &key, claims)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn reason(result: Result<Assertion, AssertionError>) -> &'static str {
    match result {
        Ok(a) => panic!("accepted: {a:?}"),
        Err(e) => e.reason(),
    }
}

#[test]
fn valid_assertions_pass_for_each_algorithm() {
    for (alg, token) in [
        (AssertionAlgorithm::HS256, hs(&claims("j1"))),
        (AssertionAlgorithm::RS256, rs(&claims("j1"))),
        (AssertionAlgorithm::ES256, es(&claims("j1"))),
    ] {
        let a = verifier(alg).verify(&token, now()).unwrap();
        assert_eq!(a.challenge_id, "c1");
        assert_eq!(a.user, "alice");
        assert_eq!(a.id, "j1");
        assert_eq!(a.expires_at, UNIX_EPOCH + Duration::from_secs(NOW + 120));
    }
}

#[test]
fn a_reused_assertion_is_refused() {
    let v = verifier(AssertionAlgorithm::RS256);
    let token = rs(&claims("once"));
    assert!(v.verify(&token, now()).is_ok());
    assert_eq!(reason(v.verify(&token, now())), "reused");
    // A different token carrying the same jti is the same assertion.
    let mut again = claims("once");
    again["cid"] = json!("c2");
    assert_eq!(reason(v.verify(&rs(&again), now())), "reused");
}

#[test]
fn a_forged_payload_is_refused() {
    let v = verifier(AssertionAlgorithm::RS256);
    let token = rs(&claims("j"));
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims("j");
    forged["sub"] = json!("mallory");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(reason(v.verify(&forged, now())), "bad_signature");
    // Signature bytes flipped.
    let mut sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .unwrap();
    sig[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&sig));
    assert_eq!(reason(v.verify(&flipped, now())), "bad_signature");
}

#[test]
fn a_token_signed_with_the_wrong_key_is_refused() {
    let other_rsa = EncodingKey::from_rsa_pem(&fixture("rsa_other_private.pem")).unwrap();
    let token = sign(Algorithm::RS256, &other_rsa, &claims("j"));
    assert_eq!(
        reason(verifier(AssertionAlgorithm::RS256).verify(&token, now())),
        "bad_signature"
    );
    let other_ec = EncodingKey::from_ec_pem(&fixture("ec_other_private.pem")).unwrap();
    let token = sign(Algorithm::ES256, &other_ec, &claims("j"));
    assert_eq!(
        reason(verifier(AssertionAlgorithm::ES256).verify(&token, now())),
        "bad_signature"
    );
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"some-other-secret-0123456789abcdef"),
        &claims("j"),
    );
    assert_eq!(
        reason(verifier(AssertionAlgorithm::HS256).verify(&token, now())),
        "bad_signature"
    );
    // The request secret is ours, not the provider's: it cannot make an assertion.
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(REQUEST_SECRET),
        &claims("j"),
    );
    assert_eq!(
        reason(verifier(AssertionAlgorithm::HS256).verify(&token, now())),
        "bad_signature"
    );
}

#[test]
fn alg_none_is_refused_in_every_spelling() {
    let payload = b64(claims("j").to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2ln"),
        ] {
            for v in [
                verifier(AssertionAlgorithm::HS256),
                verifier(AssertionAlgorithm::RS256),
            ] {
                assert_eq!(reason(v.verify(&token, now())), "wrong_algorithm", "{alg}");
            }
        }
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused_by_an_rs256_config() {
    // The classic confusion: the attacker knows the provider's public key and uses its PEM
    // bytes as an HMAC secret, hoping the verifier takes HS256 from the header.
    for (alg, public) in [
        (AssertionAlgorithm::RS256, "rsa_public.pem"),
        (AssertionAlgorithm::ES256, "ec_public.pem"),
    ] {
        let token = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(&fixture(public)),
            &claims("j"),
        );
        assert_eq!(
            reason(verifier(alg).verify(&token, now())),
            "wrong_algorithm"
        );
    }
}

#[test]
fn asymmetric_tokens_are_refused_by_an_hs256_config_and_by_each_other() {
    let hs_verifier = verifier(AssertionAlgorithm::HS256);
    assert_eq!(
        reason(hs_verifier.verify(&rs(&claims("j")), now())),
        "wrong_algorithm"
    );
    assert_eq!(
        reason(hs_verifier.verify(&es(&claims("j")), now())),
        "wrong_algorithm"
    );
    assert_eq!(
        reason(verifier(AssertionAlgorithm::RS256).verify(&es(&claims("j")), now())),
        "wrong_algorithm"
    );
    // RS384 with the right RSA key is still not the configured algorithm.
    let key = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).unwrap();
    let token = sign(Algorithm::RS384, &key, &claims("j"));
    assert_eq!(
        reason(verifier(AssertionAlgorithm::RS256).verify(&token, now())),
        "wrong_algorithm"
    );
}

#[test]
fn expiry_is_enforced_with_the_leeway() {
    let v = verifier(AssertionAlgorithm::HS256);
    let mut c = claims("late");
    c["exp"] = json!(NOW - 31);
    assert_eq!(reason(v.verify(&hs(&c), now())), "expired");
    let mut c = claims("in-leeway");
    c["exp"] = json!(NOW - 29);
    assert!(v.verify(&hs(&c), now()).is_ok());
    // The same valid token is refused once the caller's clock passes its expiry.
    let token = hs(&claims("clock"));
    let later = now() + Duration::from_secs(120 + 31);
    assert_eq!(reason(v.verify(&token, later)), "expired");
}

#[test]
fn not_yet_valid_and_too_long_lived_assertions_are_refused() {
    let v = verifier(AssertionAlgorithm::HS256);
    let mut c = claims("nbf");
    c["nbf"] = json!(NOW + 60);
    assert_eq!(reason(v.verify(&hs(&c), now())), "not_yet_valid");
    let mut c = claims("iat");
    c["iat"] = json!(NOW + 60);
    assert_eq!(reason(v.verify(&hs(&c), now())), "not_yet_valid");
    let mut c = claims("long");
    c["exp"] = json!(NOW + 24 * 3600);
    assert_eq!(reason(v.verify(&hs(&c), now())), "too_long_lived");
}

#[test]
fn wrong_issuer_and_wrong_audience_are_refused() {
    let v = verifier(AssertionAlgorithm::ES256);
    let mut c = claims("iss");
    c["iss"] = json!("https://evil.test");
    assert_eq!(reason(v.verify(&es(&c), now())), "wrong_issuer");
    let mut c = claims("aud");
    c["aud"] = json!("another-gaitkeeper");
    assert_eq!(reason(v.verify(&es(&c), now())), "wrong_audience");
    // Our own request JWT (iss = us, aud = provider) is not an assertion.
    let mut c = claims("swap");
    c["iss"] = json!(AUDIENCE);
    c["aud"] = json!(ISSUER);
    assert_eq!(reason(v.verify(&es(&c), now())), "wrong_issuer");
}

#[test]
fn missing_claims_are_refused_by_name() {
    let v = verifier(AssertionAlgorithm::HS256);
    for (i, claim) in ["iss", "aud", "sub", "cid", "jti", "exp", "result"]
        .into_iter()
        .enumerate()
    {
        let mut c = claims(&format!("missing-{i}"));
        c.as_object_mut().unwrap().remove(claim);
        match v.verify(&hs(&c), now()) {
            Err(AssertionError::MissingClaim(name)) => assert_eq!(name, claim),
            other => panic!("{claim}: {other:?}"),
        }
        let mut c = claims(&format!("empty-{i}"));
        if c[claim].is_string() {
            c[claim] = json!("");
            let r = v.verify(&hs(&c), now());
            assert!(r.is_err(), "empty {claim} accepted");
        }
    }
}

#[test]
fn a_result_other_than_pass_is_a_failed_challenge() {
    let v = verifier(AssertionAlgorithm::HS256);
    for (i, result) in ["fail", "PASS", "passed", "denied"].into_iter().enumerate() {
        let mut c = claims(&format!("r{i}"));
        c["result"] = json!(result);
        let token = hs(&c);
        assert_eq!(
            v.verify(&token, now()),
            Err(AssertionError::Failed {
                challenge_id: "c1".into()
            })
        );
        // A failed answer is used up too: replaying it is a reuse, not another failure.
        assert_eq!(reason(v.verify(&token, now())), "reused");
    }
    let mut c = claims("bool");
    c["result"] = json!(true);
    assert_eq!(reason(v.verify(&hs(&c), now())), "malformed");
}

#[test]
fn oversized_and_garbage_tokens_are_refused() {
    let v = verifier(AssertionAlgorithm::RS256);
    assert_eq!(reason(v.verify("", now())), "too_large");
    let mut big = claims("big");
    big["pad"] = json!("x".repeat(MAX_ASSERTION_BYTES));
    assert_eq!(reason(v.verify(&rs(&big), now())), "too_large");
    for garbage in [
        "abc",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "....",
        "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",
        "eyJhbGciOiJSUzI1NiJ9..",
    ] {
        let r = reason(v.verify(garbage, now()));
        assert!(
            ["malformed", "bad_signature"].contains(&r),
            "{garbage}: {r}"
        );
    }
}

#[test]
fn remembered_ids_are_bounded_and_fail_closed() {
    let v = AssertionVerifier::new(&config(AssertionAlgorithm::HS256), 1).unwrap();
    assert!(v.verify(&hs(&claims("a")), now()).is_ok());
    assert_eq!(reason(v.verify(&hs(&claims("b")), now())), "busy");
    // Once the first assertion has expired its id is forgotten to make room.
    let later = now() + Duration::from_secs(200);
    let mut c = claims("b");
    c["exp"] = json!(NOW + 300);
    assert!(v.verify(&hs(&c), later).is_ok());
}

#[test]
fn a_provider_round_trip_confirms_the_challenge() {
    // gaitkeeper sends the browser to the provider with a signed request…
    let cfg = config(AssertionAlgorithm::ES256);
    let url = cfg.request_url(
        "cid-123",
        "alice",
        "https://app.test/__gk/challenge/callback",
        now(),
        Duration::from_secs(300),
    );
    let request = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "request")
        .unwrap()
        .1
        .into_owned();
    // …the test provider checks it, confirms the user, and answers with an assertion…
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[ISSUER]);
    validation.validate_exp = false;
    let asked = jsonwebtoken::decode::<Value>(
        &request,
        &jsonwebtoken::DecodingKey::from_secret(REQUEST_SECRET),
        &validation,
    )
    .unwrap()
    .claims;
    let answer = es(&json!({
        "iss": ISSUER,
        "aud": asked["iss"],
        "sub": asked["sub"],
        "cid": asked["cid"],
        "jti": "round-trip-1",
        "iat": NOW + 20,
        "exp": NOW + 80,
        "result": "pass",
    }));
    // …which gaitkeeper accepts once, for exactly that challenge and user.
    let v = AssertionVerifier::new(&cfg, 10).unwrap();
    let later = now() + Duration::from_secs(20);
    let assertion = v.verify(&answer, later).unwrap();
    assert!(assertion.answers("cid-123", "alice"));
    assert!(!assertion.answers("cid-124", "alice"));
    assert!(!assertion.answers("cid-123", "bob"));
    assert!(!assertion.answers("cid-12", "alice"));
    assert_eq!(reason(v.verify(&answer, later)), "reused");
}

#[test]
fn the_request_url_carries_a_signed_request() {
    let cfg = config(AssertionAlgorithm::RS256);
    let url = cfg.request_url(
        "c1",
        "alice",
        "https://app.test/__gk/challenge/callback",
        now(),
        Duration::from_secs(300),
    );
    let parsed = url::Url::parse(&url).unwrap();
    assert_eq!(parsed.host_str(), Some("mfa.test"));
    assert_eq!(parsed.path(), "/verify");
    let pairs: HashMap<String, String> = parsed.query_pairs().into_owned().collect();
    assert_eq!(pairs["tenant"], "7", "the provider's own query is kept");
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[ISSUER]);
    validation.set_issuer(&[AUDIENCE]);
    validation.validate_exp = false;
    let token = jsonwebtoken::decode::<Value>(
        &pairs["request"],
        &jsonwebtoken::DecodingKey::from_secret(REQUEST_SECRET),
        &validation,
    )
    .unwrap();
    let c = token.claims;
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["cid"], "c1");
    assert_eq!(c["return_url"], "https://app.test/__gk/challenge/callback");
    assert_eq!(c["iat"], NOW);
    assert_eq!(c["exp"], NOW + 300);
    assert!(c["jti"].as_str().unwrap().len() >= 22);
    // Each request is distinct.
    assert_ne!(
        url,
        cfg.request_url("c1", "alice", "x", now(), Duration::from_secs(300))
    );
}

proptest::proptest! {
    #[test]
    fn any_input_is_refused_without_panicking(token in "[A-Za-z0-9_.=-]{0,300}|.{0,100}") {
        let v = verifier(AssertionAlgorithm::HS256);
        proptest::prop_assert!(v.verify(&token, now()).is_err());
    }

    #[test]
    fn any_header_and_payload_json_is_refused_without_panicking(
        header in ".{0,60}", payload in ".{0,120}", sig in "[A-Za-z0-9_-]{0,50}"
    ) {
        let token = format!("{}.{}.{sig}", b64(header.as_bytes()), b64(payload.as_bytes()));
        proptest::prop_assert!(verifier(AssertionAlgorithm::RS256).verify(&token, now()).is_err());
    }
}

mod config_file {
    use crate::config::{Config, ConfigError};
    use std::io::Write;

    struct Files {
        _dir: tempfile::TempDir,
        server_key: String,
        request: String,
        assertion: String,
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, value: &str| {
            use std::os::unix::fs::OpenOptionsExt;
            let path = dir.path().join(name);
            // Secret files must be private (the config refuses others).
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap()
                .write_all(value.as_bytes())
                .unwrap();
            path.display().to_string()
        };
        Files {
            server_key: write("server", "server-key-0123456789abcdef0123456789"),
            request: write("request", "request-key-0123456789abcdef0123456789"),
            assertion: write("assertion", "assertion-key-0123456789abcdef01234567"),
            _dir: dir,
        }
    }

    fn yaml(f: &Files, assertion: &str) -> String {
        format!(
            "upstream:\n  address: \"127.0.0.1:3000\"\nsecrets:\n  key: {{ file: \"{}\" }}\nmfa:\n  external:\n    url: \"https://mfa.example.com/verify\"\n    issuer: \"https://mfa.example.com\"\n    request_secret: {{ file: \"{}\" }}\n    assertion:\n{assertion}",
            f.server_key, f.request
        )
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/mfa/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn error(text: &str) -> (u64, String, String) {
        match Config::parse(text, "t.yaml") {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_need_no_mfa_section() {
        let f = files();
        let text = format!(
            "upstream:\n  address: \"127.0.0.1:3000\"\nsecrets:\n  key: {{ file: \"{}\" }}\n",
            f.server_key
        );
        let config = Config::parse(&text, "t.yaml").unwrap();
        assert!(config.mfa.totp.enabled);
        assert_eq!(config.mfa.totp.max_attempts, 5);
        assert_eq!(config.mfa.challenge_ttl.0.as_secs(), 300);
        assert_eq!(config.mfa.max_held, 10_000);
        assert_eq!(config.mfa.max_held_bytes, 64 << 20);
        assert!(config.mfa.external.is_none());
    }

    #[test]
    fn each_algorithm_loads_with_its_own_key() {
        let f = files();
        let hs = yaml(
            &f,
            &format!(
                "      algorithm: HS256\n      secret: {{ file: \"{}\" }}\n",
                f.assertion
            ),
        );
        let config = Config::parse(&hs, "t.yaml").unwrap();
        let external = config.mfa.external.unwrap();
        assert_eq!(external.audience, "gaitkeeper");
        assert_eq!(external.leeway.0.as_secs(), 30);
        assert!(super::AssertionVerifier::new(&external, 10).is_ok());
        for (alg, file) in [("RS256", "rsa_public.pem"), ("ES256", "ec_public.pem")] {
            let text = yaml(
                &f,
                &format!(
                    "      algorithm: {alg}\n      public_key_file: \"{}\"\n",
                    fixture(file)
                ),
            );
            let config = Config::parse(&text, "t.yaml").unwrap();
            assert!(super::AssertionVerifier::new(&config.mfa.external.unwrap(), 10).is_ok());
        }
    }

    #[test]
    fn a_key_that_does_not_fit_the_algorithm_is_a_located_error() {
        let f = files();
        let secret = format!("      secret: {{ file: \"{}\" }}\n", f.assertion);
        let rsa = format!("      public_key_file: \"{}\"\n", fixture("rsa_public.pem"));
        let ec = format!("      public_key_file: \"{}\"\n", fixture("ec_public.pem"));
        for (assertion, wanted_key, wanted) in [
            (
                format!("      algorithm: RS256\n{secret}"),
                "mfa.external.assertion",
                "remove `secret`",
            ),
            (
                format!("      algorithm: HS256\n{rsa}"),
                "mfa.external.assertion",
                "remove `public_key_file`",
            ),
            (
                "      algorithm: ES256\n".to_string(),
                "mfa.external.assertion",
                "needs `public_key_file`",
            ),
            (
                format!("      algorithm: HS256\n{secret}{rsa}"),
                "mfa.external.assertion",
                "remove `public_key_file`",
            ),
            (
                format!("      algorithm: RS256\n{ec}"),
                "mfa.external.assertion.public_key_file",
                "RSA public key",
            ),
            (
                format!("      algorithm: ES256\n{rsa}"),
                "mfa.external.assertion.public_key_file",
                "EC public key",
            ),
            (
                format!(
                    "      algorithm: ES256\n      public_key_file: \"{}\"\n",
                    fixture("ec_p384_public.pem")
                ),
                "mfa.external.assertion.public_key_file",
                "P-256",
            ),
        ] {
            let (line, key, message) = error(&yaml(&f, &assertion));
            assert_eq!(key, wanted_key, "{message}");
            assert!(message.contains(wanted), "{message}");
            assert!(line >= 10, "located at line {line}: {message}");
        }
    }

    #[test]
    fn bad_values_are_refused_where_they_are_written() {
        let f = files();
        let good = format!(
            "      algorithm: HS256\n      secret: {{ file: \"{}\" }}\n",
            f.assertion
        );
        let (line, key, message) = error(&yaml(&f, "      algorithm: none\n"));
        assert_eq!(
            (line, key.as_str()),
            (11, "mfa.external.assertion.algorithm")
        );
        assert!(message.contains("HS256"), "{message}");
        let text =
            yaml(&f, &good).replace("https://mfa.example.com/verify", "ftp://mfa.example.com/");
        let (line, key, message) = error(&text);
        assert_eq!((line, key.as_str()), (7, "mfa.external.url"), "{message}");
        let text = yaml(
            &f,
            "      algorithm: RS256\n      public_key_file: \"/nonexistent/key.pem\"\n",
        );
        let (line, _, message) = error(&text);
        assert_eq!(line, 12, "{message}");
        assert!(message.contains("/nonexistent/key.pem"), "{message}");
        let text = yaml(
            &f,
            &format!(
                "      algorithm: HS256\n      secret: {{ file: \"{}\" }}\n",
                f.request
            ),
        );
        let (_, key, message) = error(&text);
        assert_eq!(key, "mfa.external.assertion.secret");
        assert!(message.contains("must differ"), "{message}");
        let text = format!("{}    leeway: 1h\n", yaml(&f, &good));
        let (_, key, _) = error(&text);
        assert_eq!(key, "mfa.external.leeway");
        let text = format!("{}  totp:\n    max_attempts: 0\n", yaml(&f, &good));
        let (_, key, _) = error(&text);
        assert_eq!(key, "mfa.totp.max_attempts");
        let text = format!("{}  challenge_ttl: 5s\n", yaml(&f, &good));
        let (_, key, _) = error(&text);
        assert_eq!(key, "mfa.challenge_ttl");
    }
}
