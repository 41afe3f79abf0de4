//! The decision at login, end to end: the real gaitkeeper binary in front of the bundled legacy
//! app, logins with generated telemetry (tests/integration/common/behaviour.rs), a real SQLite store, TOTP
//! codes computed from the secret `users enroll-totp` printed.

use crate::common;

use std::time::Duration;

use common::behaviour::{payload, Rhythm, STEADY, STRANGER};
use common::legacy::{
    challenge_from, enroll_totp, location, login_page, post_code, set_cookie, submit, Challenge,
    LegacyApp, ALICE, BOB, LEGACY_ROUTES,
};
use common::receiver::Receiver;
use common::{client, eventually, Gaitkeeper};

async fn start(policy: &str) -> (LegacyApp, Gaitkeeper) {
    let app = LegacyApp::start().await;
    let more = format!("{LEGACY_ROUTES}store:\n  enrollment_logins: 5\n{policy}");
    let gk = Gaitkeeper::start_with(app.addr, "", &more).await;
    (app, gk)
}

/// One login through the form with `rhythm`; returns the response.
async fn login(
    gk: &Gaitkeeper,
    who: (&str, &str),
    rhythm: &Rhythm,
    seed: u64,
) -> reqwest::Response {
    let page = login_page(gk).await;
    let p = payload(&page.gk_token, rhythm, who.0.len(), who.1.len(), seed);
    submit(gk, &page, who.0, who.1, Some(&p)).await
}

/// Waits until `n` verified logins were settled and learnt from (both happen after the
/// response; the model a login is scored with is the learnt one).
async fn wait_verified(gk: &Gaitkeeper, n: u64) {
    eventually(
        Duration::from_secs(10),
        "logins settled and learnt",
        || async {
            gk.metric("gaitkeeper_login_outcomes_total{app=\"default\",outcome=\"verified\",route=\"login\"}")
                .await
                >= n as f64
                && gk
                    .metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
                    .await
                    >= n as f64
        },
    )
    .await;
}

/// Logs `who` in `n` times with the steady rhythm, each let through by the app.
async fn enroll(gk: &Gaitkeeper, who: (&str, &str), n: u64) {
    for i in 0..n {
        let r = login(gk, who, &STEADY, i).await;
        assert_eq!(r.status(), 303, "enrollment login {i}");
        assert_eq!(location(&r), "/account", "enrollment login {i}");
    }
    wait_verified(gk, n).await;
}

#[tokio::test]
async fn an_enrolled_user_passes_and_a_stranger_is_challenged() {
    let (_app, gk) = start("").await;
    enroll_totp(&gk, ALICE.0);
    enroll(&gk, ALICE, 8).await;

    // Normal behaviour: straight through, unnoticed.
    for seed in 100..103 {
        let r = login(&gk, ALICE, &STEADY, seed).await;
        assert_eq!(r.status(), 303, "{}", gk.log());
        assert_eq!(location(&r), "/account");
    }
    // The same password typed by somebody else: held, and the browser sent to the challenge.
    let r = login(&gk, ALICE, &STRANGER, 200).await;
    assert_eq!(r.status(), 303);
    assert!(
        location(&r).starts_with("/__gk/challenge/"),
        "{}",
        location(&r)
    );
}

#[tokio::test]
async fn a_challenged_login_is_replayed_after_the_right_totp_code() {
    let (app, gk) = start("policy:\n  on_missing_telemetry: challenge\n").await;
    let totp = enroll_totp(&gk, ALICE.0);
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, ALICE.0, ALICE.1, None).await;
    assert_eq!(r.status(), 303);
    let challenge = location(&r);
    assert!(challenge.starts_with("/__gk/challenge/"), "{challenge}");
    let binding = set_cookie(&r, "__gk_challenge").expect("a binding cookie");
    let logins_before = app.last_login().await;
    assert!(
        logins_before["username"].is_null(),
        "nothing reached the app yet"
    );

    // Another browser (no binding cookie) cannot even see the challenge.
    let r = client().get(gk.url(&challenge)).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let r = client()
        .get(gk.url(&challenge))
        .header("cookie", format!("__gk_challenge={binding}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("autocomplete=\"one-time-code\""), "{page}");
    assert!(
        !page.contains("<script"),
        "the challenge page works without JavaScript"
    );
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF field")
        .to_string();

    // A forged CSRF token is refused; nothing is replayed.
    let r = client()
        .post(gk.url(&challenge))
        .header("cookie", format!("__gk_challenge={binding}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf=forged&code={}", totp.generate_current()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(app.last_login().await, logins_before);

    // The right code: the held login is replayed and the app's own answer comes back.
    let held = Challenge {
        path: challenge.clone(),
        cookie: format!("__gk_challenge={binding}"),
        csrf: csrf.clone(),
        page: page.clone(),
    };
    let r = post_code(&gk, &held, totp.generate_current()).await;
    assert_eq!(r.status(), 303, "{}", gk.log());
    assert_eq!(location(&r), "/account");
    let session = set_cookie(&r, "legacy_session").expect("the app's own session cookie");
    let account = common::legacy::account_page(&gk, &session).await;
    assert!(account.contains("alice"), "{account}");
    // The replayed login reached the app with its CSRF field and without the telemetry.
    let seen = app.last_login().await;
    assert_eq!(seen["status"], 303);
    let fields: Vec<&str> = seen["field_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(fields, ["csrf_token", "username", "password"]);

    // A completed challenge cannot be used again.
    let r = post_code(&gk, &held, totp.generate_current()).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        gk.metric("gaitkeeper_challenges_total{event=\"passed\"}")
            .await,
        1.0
    );
}

/// `gaitkeeper audit show INCIDENT` on the running proxy's store: (success, stdout).
fn audit_show(gk: &Gaitkeeper, incident: &str) -> (bool, String) {
    gk.audit(&["show", incident])
}

/// An `alerts:` block for a webhook receiver on `port`, with its secret in `dir`.
fn alerts_to(port: u16, dir: &std::path::Path) -> String {
    let secret = dir.join("webhook.key");
    common::write_secret(&secret, WEBHOOK_SECRET);
    format!(
        "alerts:\n  webhook:\n    url: \"http://127.0.0.1:{port}/hook\"\n    secret: {{ file: {:?} }}\n    throttle: 0s\n    backoff: 100ms\n",
        secret.display().to_string()
    )
}

const WEBHOOK_SECRET: &str = "webhook-secret-0123456789abcdef0123";

/// Waits for an alert of `event` at the receiver and checks its signature.
async fn signed_alert(receiver: &Receiver, event: &str) -> serde_json::Value {
    let mut found = None;
    eventually(Duration::from_secs(10), "the alert webhook", || {
        let got = receiver
            .received()
            .into_iter()
            .find(|r| r.json()["alert"]["event"] == event);
        let done = got.is_some();
        found = got;
        async move { done }
    })
    .await;
    let alert = found.unwrap();
    let ts = alert.header("x-gaitkeeper-timestamp").unwrap().to_string();
    let expected = format!(
        "sha256={}",
        gaitkeeper::alert::sign(WEBHOOK_SECRET.as_bytes(), &ts, &alert.body)
    );
    assert_eq!(
        alert.header("x-gaitkeeper-signature"),
        Some(expected.as_str())
    );
    alert.json()["alert"].clone()
}

#[tokio::test]
async fn wrong_codes_block_the_login_with_an_incident_and_a_signed_alert() {
    let (receiver, port) = Receiver::start(&[], false).await;
    let keys = tempfile::tempdir().unwrap();
    let config = format!(
        "policy:\n  on_missing_telemetry: challenge\n{}",
        alerts_to(port, keys.path())
    );
    let (app, gk) = start(&config).await;
    enroll_totp(&gk, ALICE.0);
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, ALICE.0, ALICE.1, None).await;
    assert_eq!(r.status(), 303);
    let challenge = challenge_from(&gk, &r).await;
    let mut last = None;
    for _ in 0..5 {
        let r = post_code(&gk, &challenge, "000000").await;
        last = Some((
            r.status(),
            r.headers().get("x-gaitkeeper-incident").cloned(),
        ));
    }
    let (status, incident) = last.unwrap();
    assert_eq!(status, 403);
    let incident = incident.expect("the block page names its incident");
    let incident = incident.to_str().unwrap();
    let gone = client()
        .get(gk.url(&challenge.path))
        .header("cookie", &challenge.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404, "the held login is gone");
    assert_eq!(
        gk.metric("gaitkeeper_challenges_total{event=\"failed\"}")
            .await,
        1.0
    );
    // Nothing reached the app.
    let seen = app.last_login().await;
    assert!(seen.is_null() || seen["username"].is_null(), "{seen}");
    // The security team hears of it, signed; support finds the incident.
    let alert = signed_alert(&receiver, "challenge_failed").await;
    assert_eq!(alert["incident"], incident);
    let mut shown = (false, String::new());
    eventually(Duration::from_secs(10), "the audit record", || {
        shown = audit_show(&gk, incident);
        let done = shown.0 && shown.1.contains("challenge.failed");
        async move { done }
    })
    .await;
    assert!(!shown.1.contains(ALICE.1), "no password in the audit trail");
}

#[tokio::test]
async fn a_risk_at_block_at_is_blocked_audited_and_alerted() {
    let (receiver, port) = Receiver::start(&[], false).await;
    let keys = tempfile::tempdir().unwrap();
    let config = format!(
        "policy:\n  allow_below: 0.6\n  block_at: 0.6\n{}",
        alerts_to(port, keys.path())
    );
    let (app, gk) = start(&config).await;
    enroll(&gk, ALICE, 8).await;
    let r = login(&gk, ALICE, &STEADY, 100).await;
    assert_eq!(location(&r), "/account", "her own rhythm still passes");
    let before = app.last_login().await;
    let r = login(&gk, ALICE, &STRANGER, 200).await;
    assert_eq!(r.status(), 403, "{}", gk.log());
    assert_eq!(
        app.last_login().await,
        before,
        "the blocked login never reached the app"
    );
    let incident = r.headers()["x-gaitkeeper-incident"]
        .to_str()
        .unwrap()
        .to_string();
    let page = r.text().await.unwrap();
    assert!(page.contains(&incident));
    assert!(
        !page.contains("risk") && !page.contains("mouse"),
        "nothing about the model leaks"
    );
    let alert = signed_alert(&receiver, "block").await;
    assert_eq!(alert["incident"], incident.as_str());
    let mut shown = (false, String::new());
    eventually(Duration::from_secs(10), "the audit record", || {
        shown = audit_show(&gk, &incident);
        let done = shown.0 && shown.1.contains("block_at");
        async move { done }
    })
    .await;
}

#[tokio::test]
async fn missing_invalid_and_replayed_telemetry_each_get_their_configured_decision() {
    let policy = "policy:\n  on_missing_telemetry: block\n  on_invalid_telemetry: allow\n  on_replayed_token: challenge\n";
    let (_app, gk) = start(policy).await;
    enroll_totp(&gk, ALICE.0);

    let page = login_page(&gk).await;
    let r = submit(&gk, &page, BOB.0, BOB.1, None).await;
    assert_eq!(r.status(), 403, "missing telemetry is blocked");
    assert!(r.headers().contains_key("x-gaitkeeper-incident"));

    let page = login_page(&gk).await;
    let r = submit(
        &gk,
        &page,
        BOB.0,
        BOB.1,
        Some("{\"v\":1,\"tk\":\"forged\"}"),
    )
    .await;
    assert_eq!(r.status(), 303, "invalid telemetry is allowed");
    assert_eq!(location(&r), "/account");

    let page = login_page(&gk).await;
    let p = payload(&page.gk_token, &STEADY, 5, 13, 1);
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/account", "first use of the token");
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
    assert_eq!(r.status(), 303);
    assert!(
        location(&r).starts_with("/__gk/challenge/"),
        "a replayed token is challenged"
    );
    for (decision, n) in [("block", 1.0), ("allow", 2.0), ("challenge", 1.0)] {
        let sample =
            format!("gaitkeeper_login_decisions_total{{app=\"default\",decision=\"{decision}\",route=\"login\"}}");
        assert_eq!(gk.metric(&sample).await, n, "{sample}");
    }
}

#[tokio::test]
async fn shadow_mode_forwards_what_it_would_have_blocked_and_still_audits_and_learns() {
    let (_app, gk) =
        start("policy:\n  mode: shadow\n  on_missing_telemetry: block\n  enrolling: block\n").await;
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, BOB.0, BOB.1, None).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/account");
    for seed in 0..3 {
        let r = login(&gk, ALICE, &STEADY, seed).await;
        assert_eq!(
            location(&r),
            "/account",
            "forwarded although the policy says block"
        );
    }
    assert_eq!(
        gk.metric(
            "gaitkeeper_login_decisions_total{app=\"default\",decision=\"block\",route=\"login\"}"
        )
        .await,
        4.0,
        "the decisions are still recorded"
    );
    eventually(
        Duration::from_secs(10),
        "the logins settled and learnt",
        || async {
            gk.metric("gaitkeeper_login_outcomes_total{app=\"default\",outcome=\"verified\",route=\"login\"}")
                .await
                == 4.0
                && gk
                    .metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
                    .await
                    == 3.0
                && gk
                    .metric("gaitkeeper_audit_records_total{result=\"stored\"}")
                    .await
                    >= 4.0
        },
    )
    .await;
}

#[tokio::test]
async fn a_user_without_a_second_factor_gets_on_no_factor() {
    let (_app, gk) =
        start("policy:\n  on_missing_telemetry: challenge\n  on_no_factor: block\n").await;
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, BOB.0, BOB.1, None).await;
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn a_login_name_given_twice_is_not_guessed() {
    let (app, gk) = start("").await;
    let page = login_page(&gk).await;
    let p = payload(&page.gk_token, &STEADY, 5, 13, 1);
    let body = format!(
        "csrf_token={}&username=bob&username=alice&password=x&__gk={}",
        page.csrf_token,
        common::behaviour::form_encode(&p)
    );
    let r = client()
        .post(gk.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "refused as unreadable");
    assert!(r.headers().contains_key("x-gaitkeeper-incident"));
    let seen = app.last_login().await;
    assert!(seen.is_null() || seen["username"].is_null(), "{seen}");
}

/// The test MFA provider's signing side: RS256 assertions with the fixture key.
fn assertion(claims: serde_json::Value) -> String {
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mfa/rsa_private.pem"
    ))
    .unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap()
}

#[tokio::test]
async fn external_mfa_round_trip_replays_the_login_and_refuses_forged_or_reused_assertions() {
    let keys = tempfile::tempdir().unwrap();
    let request_secret = keys.path().join("request.key");
    common::write_secret(&request_secret, "request-secret-0123456789abcdef0123");
    let policy = format!(
        "policy:\n  on_missing_telemetry: challenge\nmfa:\n  external:\n    name: \"Test IdP\"\n    url: \"http://127.0.0.1:9/verify\"\n    issuer: \"test-idp\"\n    request_secret: {{ file: {:?} }}\n    assertion:\n      algorithm: RS256\n      public_key_file: {:?}\n",
        request_secret.display().to_string(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mfa/rsa_public.pem"),
    );
    let (_app, gk) = start(&policy).await;
    // Bob has no TOTP: the external provider is his second factor.
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, BOB.0, BOB.1, None).await;
    assert_eq!(r.status(), 303, "{}", gk.log());
    let challenge = location(&r);
    let binding = set_cookie(&r, "__gk_challenge").unwrap();
    let cookie = format!("__gk_challenge={binding}");
    let r = client()
        .get(gk.url(&challenge))
        .header("cookie", &cookie)
        .header("host", gk.addr.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "straight to the provider");
    let to_provider = location(&r);
    assert!(
        to_provider.starts_with("http://127.0.0.1:9/verify?request="),
        "{to_provider}"
    );
    // The provider reads the signed request.
    let request = to_provider.split("request=").nth(1).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["test-idp"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        request,
        &jsonwebtoken::DecodingKey::from_secret(b"request-secret-0123456789abcdef0123"),
        &validation,
    )
    .expect("a request signed with the shared secret")
    .claims;
    assert_eq!(claims["sub"], "bob");
    let cid = claims["cid"].as_str().unwrap().to_string();
    let return_url = claims["return_url"].as_str().unwrap().to_string();
    assert_eq!(
        return_url,
        format!("http://{}/__gk/challenge/callback", gk.addr)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims_for = |jti: &str, sub: &str, result: &str| {
        serde_json::json!({"iss": "test-idp", "aud": "gaitkeeper", "sub": sub, "cid": cid,
            "jti": jti, "iat": now, "exp": now + 120, "result": result})
    };
    let callback = |token: String| {
        let cookie = cookie.clone();
        let url = gk.url(&format!("/__gk/challenge/callback?assertion={token}"));
        async move {
            client()
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
        }
    };
    // Forged: alg none, and a token signed with another key.
    let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
    let body = base64_url(claims_for("j-0", "bob", "pass").to_string().as_bytes());
    assert_eq!(callback(format!("{header}.{body}.")).await.status(), 403);
    let other = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mfa/rsa_other_private.pem"
    ))
    .unwrap();
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims_for("j-1", "bob", "pass"),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&other).unwrap(),
    )
    .unwrap();
    assert_eq!(callback(forged).await.status(), 403);

    // Genuine: the held login is replayed and bob lands logged in.
    let good = assertion(claims_for("j-2", "bob", "pass"));
    let r = callback(good.clone()).await;
    assert_eq!(r.status(), 303, "{}", gk.log());
    assert_eq!(location(&r), "/account");
    assert!(set_cookie(&r, "legacy_session").is_some());
    // Reused: refused.
    assert_eq!(callback(good).await.status(), 403);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn repeated_failed_logins_are_regulated() {
    let (app, gk) = start(
        "regulation:\n  max_failures_per_user: 3\n  max_failures_per_ip: 0\n  action: block\n",
    )
    .await;
    for seed in 0..3 {
        let r = login(&gk, (ALICE.0, "not-her-password"), &STEADY, seed).await;
        assert_ne!(
            location(&r),
            "/account",
            "a wrong password fails at the app"
        );
    }
    eventually(Duration::from_secs(10), "failures counted", || async {
        gk.metric(
            "gaitkeeper_login_outcomes_total{app=\"default\",outcome=\"failed\",route=\"login\"}",
        )
        .await
            >= 3.0
    })
    .await;
    let before = app.last_login().await;
    let r = login(&gk, ALICE, &STEADY, 9).await;
    assert_eq!(
        r.status(),
        403,
        "the next login is regulated, even with the right password"
    );
    assert_eq!(app.last_login().await, before, "and never reaches the app");
    // Another user is not affected.
    let r = login(&gk, BOB, &STEADY, 10).await;
    assert_eq!(location(&r), "/account");
}

#[tokio::test]
async fn the_prototype_analyze_api_answers_on_the_admin_listener_only() {
    let (_app, gk) = start("").await;
    let analyze = format!("http://{}/__gk/analyze", gk.admin);
    let body = serde_json::json!({"mouse_speed": 420.0, "click_interval": 300.0,
        "key_dwell_time": 95.0, "key_flight_time": 140.0, "user": "nobody-yet"});
    let r = client().post(&analyze).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert!(answer["risk"].is_null(), "{answer}");
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["reasons"][0]["code"], "no_profile");

    for bad in [
        serde_json::json!({"mouse_speed": "fast"}),
        serde_json::json!({"key_dwell_time": -5.0}),
        serde_json::json!([1, 2]),
    ] {
        let r = client().post(&analyze).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    let r = client().get(&analyze).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let huge = vec![b' '; 20_000];
    let r = client().post(&analyze).body(huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
    // Not on the public listener: there it is a reserved path nobody answers.
    let r = client()
        .post(gk.url("/__gk/analyze"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn a_recovery_code_passes_a_challenge_once_and_is_audited_and_alerted() {
    use common::legacy::{enroll_totp_with_codes, recovery_codes_in, users_cli};
    let (receiver, port) = Receiver::start(&[], false).await;
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("webhook.key");
    common::write_secret(&secret, "webhook-secret-0123456789abcdef0123");
    let (_app, gk) = start(&format!(
        "policy:\n  on_missing_telemetry: challenge\nalerts:\n  webhook:\n    url: \"http://127.0.0.1:{port}/hook\"\n    secret: {{ file: {:?} }}\n    backoff: 100ms\n",
        secret.display().to_string()
    ))
    .await;
    let (totp, codes) = enroll_totp_with_codes(&gk, ALICE.0);
    assert_eq!(codes.len(), 10, "ten codes with the first factor");
    let challenged = |gk: &Gaitkeeper| {
        let gk = gk.url("");
        async move {
            let page = common::legacy::login_page_at(&client(), &gk).await;
            let r = common::legacy::submit_at(&client(), &gk, &page, ALICE.0, ALICE.1, None).await;
            common::legacy::challenge_at(&gk, &r).await
        }
    };

    // The page offers it; typed in capitals with a space, it passes and the login lands.
    let c = challenged(&gk).await;
    assert!(c.page.contains("Use a recovery code"), "{}", c.page);
    let typed = codes[0].to_uppercase().replace('-', " ");
    let r = post_code(&gk, &c, &typed).await;
    assert_eq!(location(&r), "/account", "passed with a recovery code");

    // Used: refused the second time, as a wrong code (attempts left).
    let c = challenged(&gk).await;
    let r = post_code(&gk, &c, &codes[0]).await;
    assert_eq!(r.status(), 401, "a used code is refused");
    assert!(gk.log().contains("wrong_recovery_code"));
    // Another of them still works on the same challenge.
    let r = post_code(&gk, &c, &codes[1]).await;
    assert_eq!(location(&r), "/account");

    let shown = users_cli(&gk, &["show", ALICE.0]);
    assert!(shown.contains("recovery:  8 codes left"), "{shown}");
    eventually(Duration::from_secs(10), "both uses audited", || async {
        let (_, trail) = gk.audit(&["tail", "--lines", "30"]);
        trail.matches("challenge.recovery_code_used").count() == 2
    })
    .await;
    eventually(Duration::from_secs(10), "the use alerted", || async {
        receiver
            .received()
            .iter()
            .any(|r| r.json()["alert"]["event"] == "recovery_code_used")
    })
    .await;
    assert!(
        !gk.log().contains(&codes[1]) && !gk.log().contains(&codes[1].replace('-', "")),
        "codes are never logged"
    );

    // A new set replaces the old: an unused old code stops working, a new one works; enrolling
    // TOTP again does not print codes while some are left.
    let fresh = recovery_codes_in(&users_cli(&gk, &["recovery-codes", ALICE.0]));
    assert_eq!(fresh.len(), 10);
    let c = challenged(&gk).await;
    assert_eq!(post_code(&gk, &c, &codes[2]).await.status(), 401);
    assert_eq!(location(&post_code(&gk, &c, &fresh[0]).await), "/account");
    let (_, again) = enroll_totp_with_codes(&gk, ALICE.0);
    assert!(
        again.is_empty(),
        "codes are printed with the first factor only"
    );
    let _ = totp;

    // The operator lists and removes factors; a removed code set stops working.
    let listed = users_cli(&gk, &["factors", ALICE.0]);
    assert!(listed.contains("totp:            since "), "{listed}");
    assert!(listed.contains("recovery codes:  9 left"), "{listed}");
    let removed = users_cli(&gk, &["remove-factor", ALICE.0, "recovery-codes"]);
    assert!(removed.contains("recovery_codes removed"), "{removed}");
    let c = challenged(&gk).await;
    assert_eq!(post_code(&gk, &c, &fresh[1]).await.status(), 401);
    let listed = users_cli(&gk, &["factors", ALICE.0]);
    assert!(listed.contains("recovery codes:  0 left"), "{listed}");
    let (_, trail) = gk.audit(&["tail", "--lines", "60"]);
    assert!(trail.contains("factor.removed"), "{trail}");
}

/// The enrolment page of an invitation link: (status, page).
async fn open_invitation(gk: &Gaitkeeper, path: &str) -> (u16, String) {
    let r = client().get(gk.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// Posts `code` to an invitation's enrolment page: (status, page).
async fn confirm_invitation(gk: &Gaitkeeper, path: &str, page: &str, code: &str) -> (u16, String) {
    let csrf = common::legacy::csrf_of(page);
    let r = client()
        .post(gk.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&code={code}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn an_invitation_enrols_an_authenticator_once_for_its_user_only_until_it_expires() {
    use common::legacy::{
        challenge_at, login_page_at, submit_at, users_cli, users_cli_result, BOB,
    };
    let (receiver, port) = Receiver::start(&[], false).await;
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("webhook.key");
    common::write_secret(&secret, "webhook-secret-0123456789abcdef0123");
    let (_app, gk) = start(&format!(
        "policy:\n  on_missing_telemetry: challenge\n  on_no_factor: block\nalerts:\n  webhook:\n    url: \"http://127.0.0.1:{port}/hook\"\n    secret: {{ file: {:?} }}\n    backoff: 100ms\n",
        secret.display().to_string()
    ))
    .await;
    let link = |out: &str| {
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with("/__gk/enrol/"))
            .expect("the link's path")
            .to_string()
    };
    let invited = link(&users_cli(&gk, &["invite", ALICE.0]));

    // The page shows the secret (QR code, and typed); a wrong code stores nothing.
    let (status, page) = open_invitation(&gk, &invited).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<svg") && !page.contains("<script"), "{page}");
    let totp = common::legacy::authenticator_of(&page);
    let (status, again) = confirm_invitation(&gk, &invited, &page, "000000").await;
    assert_eq!(status, 400, "{again}");
    assert!(users_cli(&gk, &["factors", ALICE.0]).contains("totp:            none"));

    // The right code: enrolled, ten recovery codes shown once.
    let (status, done) =
        confirm_invitation(&gk, &invited, &page, &totp.generate_current().to_string()).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done.matches("<li><code>").count(), 10, "{done}");
    let factors = users_cli(&gk, &["factors", ALICE.0]);
    assert!(
        factors.contains("totp:            since ") && factors.contains("10 left"),
        "{factors}"
    );
    // Used: the link is gone, on GET and on POST.
    assert_eq!(open_invitation(&gk, &invited).await.0, 404);
    assert_eq!(
        confirm_invitation(&gk, &invited, &page, "123456").await.0,
        404
    );
    // She now has a factor: her challenged login passes with the authenticator.
    let base = gk.url("");
    let login = login_page_at(&client(), &base).await;
    let r = submit_at(&client(), &base, &login, ALICE.0, ALICE.1, None).await;
    let c = challenge_at(&base, &r).await;
    let next = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs())
        + 30;
    let r = post_code(&gk, &c, totp.generate(next)).await;
    assert_eq!(
        location(&r),
        "/account",
        "passed with the enrolled authenticator"
    );
    // Audited and alerted; another invitation for her is refused (she has one).
    eventually(
        Duration::from_secs(10),
        "the new factor alerted",
        || async {
            receiver
                .received()
                .iter()
                .any(|r| r.json()["alert"]["event"] == "factor_added")
        },
    )
    .await;
    let (_, trail) = gk.audit(&["tail", "--lines", "30"]);
    assert!(trail.contains("factor.added"), "{trail}");
    let (ok, _, err) = users_cli_result(&gk, &["invite", ALICE.0]);
    assert!(!ok && err.contains("already has a second factor"), "{err}");

    // For its user only: bob's link enrols bob, and alice's authenticator is not his.
    let bobs = link(&users_cli(&gk, &["invite", BOB.0]));
    let (_, page) = open_invitation(&gk, &bobs).await;
    let bobs_totp = common::legacy::authenticator_of(&page);
    assert_ne!(
        bobs_totp.generate_current(),
        totp.generate_current(),
        "each invitation its own secret"
    );
    let login = login_page_at(&client(), &base).await;
    let r = submit_at(&client(), &base, &login, BOB.0, BOB.1, None).await;
    assert_eq!(
        r.status(),
        403,
        "bob has no factor yet: on_no_factor blocks"
    );
    let (status, _) =
        confirm_invitation(&gk, &bobs, &page, &bobs_totp.generate_current().to_string()).await;
    assert_eq!(status, 200);
    let login = login_page_at(&client(), &base).await;
    let r = submit_at(&client(), &base, &login, BOB.0, BOB.1, None).await;
    let c = challenge_at(&base, &r).await;
    let r = post_code(&gk, &c, totp.generate(next)).await;
    assert_ne!(
        location(&r),
        "/account",
        "alice's authenticator does not pass bob's challenge"
    );
    let r = post_code(&gk, &c, bobs_totp.generate(next)).await;
    assert_eq!(location(&r), "/account");

    // Expired: a link past its time opens nothing.
    let short = link(&users_cli(&gk, &["invite", "carol", "--ttl", "1s"]));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(open_invitation(&gk, &short).await.0, 404);
    // A made-up or mangled id opens nothing either.
    let mangled = format!("{}A", &short[..short.len() - 1]);
    assert_eq!(open_invitation(&gk, &mangled).await.0, 404);
    assert_eq!(
        open_invitation(&gk, "/__gk/enrol/../../etc/passwd").await.0,
        404
    );
}
