//! Attacks on the login path, end to end: the real gaitkeeper binary in front of the bundled
//! legacy app. Each test plays one attack and fails if it works: a login reaching the app that
//! gaitkeeper should have stopped (the app's `/__debug/last-login` says what it saw), a forged
//! or reused token or assertion accepted, a held login replayed for the wrong person, a
//! redirect off the site. docs/threat-model.md maps each claim to its test here.

use crate::common;
use crate::support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::behaviour::{payload, STEADY, STRANGER};
use common::legacy::{login_page, set_cookie, submit};
use common::{b64, client, Gaitkeeper};
use support::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_replayed_payload_is_refused() {
    let (app, gk) = start(STRICT).await;
    assert!(app.last_login().await.is_null());
    let page = login_page(&gk).await;
    let p = payload(&page.gk_token, &STEADY, 5, 13, 1);
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
    assert_eq!(location(&r), "/account", "the first use is a normal login");
    // The same bytes again, e.g. captured on the wire or from a browser's history.
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(gk.last_telemetry_outcome().await, "replayed");
    assert!(set_cookie(&r, "legacy_session").is_none());
}

#[tokio::test]
async fn a_page_token_from_another_client_is_refused() {
    let (app, gk) = start(STRICT).await;
    // The token was issued to the browser with the test User-Agent; another client uses it.
    let page = login_page(&gk).await;
    let p = payload(&page.gk_token, &STEADY, 5, 13, 1);
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("another-browser/2.0")
        .build()
        .unwrap()
        .post(gk.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
        .body(form(&page, ALICE.0, ALICE.1, Some(&p)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(gk.last_telemetry_outcome().await, "wrong_client");
    assert!(!app_logged_in(&app).await);
}

#[tokio::test]
async fn forged_page_tokens_are_refused() {
    let (app, gk) = start(STRICT).await;
    let genuine = login_page(&gk).await.gk_token;
    let claims_of = |token: &str| -> serde_json::Value {
        use base64::Engine;
        let body = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .unwrap(),
        )
        .unwrap()
    };
    let claims = claims_of(&genuine);
    let sign = |header: jsonwebtoken::Header, claims: &serde_json::Value, key: &[u8]| {
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    let mut fresh = claims.clone();
    fresh["jti"] = "forged-id-1".into();
    let rsa_private = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mfa/rsa_private.pem"
    ))
    .unwrap();
    let client = gaitkeeper::inject::Client {
        ip: "127.0.0.1",
        user_agent: common::USER_AGENT,
    };
    let ours = gaitkeeper::inject::PageTokens::new(common::SECRET.as_bytes());
    let forgeries = [
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(fresh.to_string().as_bytes())
            ),
            &["bad_signature", "malformed"][..],
        ),
        (
            "another key",
            sign(
                jsonwebtoken::Header::default(),
                &fresh,
                b"not-the-server-secret-0123456789abcdef",
            ),
            &["bad_signature", "malformed"][..],
        ),
        (
            "the raw server secret instead of the derived key",
            sign(
                jsonwebtoken::Header::default(),
                &fresh,
                common::SECRET.as_bytes(),
            ),
            &["bad_signature", "malformed"][..],
        ),
        (
            "RS256 instead of HS256",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
                &fresh,
                &jsonwebtoken::EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
            )
            .unwrap(),
            &["bad_signature", "malformed"][..],
        ),
        (
            "expired (signed with the right key an hour ago)",
            ours.issue_at(
                "login",
                &client,
                true,
                Duration::from_secs(600),
                now() - 3600,
            ),
            &["expired"][..],
        ),
        (
            "issued for another route",
            ours.issue("spa-login", &client, true, Duration::from_secs(600)),
            &["wrong_route"][..],
        ),
        (
            "the genuine token with its signature cut off",
            genuine.rsplit_once('.').unwrap().0.to_string() + ".",
            &["bad_signature", "malformed"][..],
        ),
    ];
    for (what, token, reason) in forgeries {
        let page = login_page(&gk).await;
        let p = payload(&token, &STEADY, 5, 13, 1);
        let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
        assert_eq!(r.status(), 403, "{what}");
        let outcome = gk.last_telemetry_outcome().await;
        assert!(reason.contains(&outcome.as_str()), "{what}: {outcome}");
        assert!(!app_logged_in(&app).await, "{what}");
    }
}

/// An RS256 assertion signed with `key` (a PEM in tests/fixtures/mfa).
fn rs256(claims: &serde_json::Value, key: &str) -> String {
    let pem = std::fs::read(format!(
        "{}/tests/fixtures/mfa/{key}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

const PUBLIC_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/mfa/rsa_public.pem"
);

async fn start_external() -> (common::legacy::LegacyApp, Gaitkeeper, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let request_secret = keys.path().join("request.key");
    common::write_secret(&request_secret, "request-secret-0123456789abcdef0123");
    let policy = format!(
        "policy:\n  on_missing_telemetry: challenge\nmfa:\n  external:\n    name: \"Test IdP\"\n    url: \"http://127.0.0.1:9/verify\"\n    issuer: \"test-idp\"\n    request_secret: {{ file: {:?} }}\n    assertion:\n      algorithm: RS256\n      public_key_file: {PUBLIC_KEY:?}\n",
        request_secret.display().to_string(),
    );
    let (app, gk) = start(&policy).await;
    (app, gk, keys)
}

#[tokio::test]
async fn forged_assertions_are_refused_and_the_held_login_is_not_replayed() {
    let (app, gk, _keys) = start_external().await;
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, BOB.0, BOB.1, None).await;
    assert_eq!(r.status(), 303);
    let challenge = location(&r);
    let cookie = format!(
        "__gk_challenge={}",
        set_cookie(&r, "__gk_challenge").unwrap()
    );
    let r = client()
        .get(gk.url(&challenge))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let to_provider = location(&r);
    let request = to_provider.split("request=").nth(1).expect("a request JWT");
    let request_claims: serde_json::Value = {
        use base64::Engine;
        let body = request.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .unwrap(),
        )
        .unwrap()
    };
    let cid = request_claims["cid"].as_str().unwrap().to_string();
    let t = now();
    let claims = |jti: &str| {
        serde_json::json!({"iss": "test-idp", "aud": "gaitkeeper", "sub": "bob", "cid": cid,
            "jti": jti, "iat": t, "exp": t + 120, "result": "pass"})
    };
    let with = |jti: &str, key: &str, value: serde_json::Value| {
        let mut c = claims(jti);
        c[key] = value;
        c
    };
    let public_pem = std::fs::read(PUBLIC_KEY).unwrap();
    let forgeries = [
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(claims("f-1").to_string().as_bytes())
            ),
        ),
        (
            "HS256 keyed with the provider's public key (HS/RS confusion)",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims("f-2"),
                &jsonwebtoken::EncodingKey::from_secret(&public_pem),
            )
            .unwrap(),
        ),
        (
            "another key",
            rs256(&claims("f-3"), "rsa_other_private.pem"),
        ),
        (
            "expired",
            rs256(&with("f-4", "exp", (t - 600).into()), "rsa_private.pem"),
        ),
        (
            "wrong audience",
            rs256(&with("f-5", "aud", "another-app".into()), "rsa_private.pem"),
        ),
        (
            "wrong issuer",
            rs256(&with("f-6", "iss", "evil-idp".into()), "rsa_private.pem"),
        ),
        (
            "another challenge",
            rs256(&with("f-7", "cid", "guessed-id".into()), "rsa_private.pem"),
        ),
        (
            "the signed request JWT sent back as the assertion",
            request.to_string(),
        ),
    ];
    for (what, token) in forgeries {
        let r = client()
            .get(gk.url(&format!("/__gk/challenge/callback?assertion={token}")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert!(
            r.status() == 403 || r.status() == 404,
            "{what}: {}",
            r.status()
        );
        assert!(set_cookie(&r, "legacy_session").is_none(), "{what}");
        assert!(
            app.last_login().await.is_null(),
            "{what}: the app saw a login"
        );
    }
    // The held login is intact: the genuine assertion still completes it (so the refusals
    // above were the checks working, not the login having vanished).
    let r = client()
        .get(gk.url(&format!(
            "/__gk/challenge/callback?assertion={}",
            rs256(&claims("good"), "rsa_private.pem")
        )))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", gk.log());
    assert_eq!(location(&r), "/account");
}

#[tokio::test]
async fn an_assertion_for_another_user_does_not_release_the_held_login() {
    let (app, gk, _keys) = start_external().await;
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, BOB.0, BOB.1, None).await;
    let challenge = location(&r);
    let cookie = format!(
        "__gk_challenge={}",
        set_cookie(&r, "__gk_challenge").unwrap()
    );
    let cid = challenge.rsplit('/').next().unwrap().to_string();
    let t = now();
    // A genuine assertion, but the provider confirmed mallory, not bob.
    let token = rs256(
        &serde_json::json!({"iss": "test-idp", "aud": "gaitkeeper", "sub": "mallory",
            "cid": cid, "jti": "m-1", "iat": t, "exp": t + 120, "result": "pass"}),
        "rsa_private.pem",
    );
    let r = client()
        .get(gk.url(&format!("/__gk/challenge/callback?assertion={token}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(app.last_login().await.is_null());
}

#[tokio::test]
async fn guessed_challenge_ids_get_404_and_release_nothing() {
    let (app, gk) = start("policy:\n  on_missing_telemetry: challenge\n").await;
    let totp = enroll_totp(&gk, ALICE.0);
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, ALICE.0, ALICE.1, None).await;
    let real = challenge_from(&gk, &r).await;
    let real_id = real.path.rsplit('/').next().unwrap().to_string();
    // Guesses: random ids, the real id with a character changed, the real id with a suffix,
    // each with the attacker's own valid binding cookie and a correct code.
    let mut flipped = real_id.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let guesses = [
        "AAAAAAAAAAAAAAAAAAAAAAAA".to_string(),
        "0".to_string(),
        String::from_utf8(flipped).unwrap(),
        format!("{real_id}x"),
        format!("{real_id}/"),
        real_id[..real_id.len() - 1].to_string(),
        "..%2f..%2flogin".to_string(),
    ];
    for guess in &guesses {
        let path = format!("/__gk/challenge/{guess}");
        let r = client()
            .get(gk.url(&path))
            .header("cookie", &real.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "GET {path}");
        let r = client()
            .post(gk.url(&path))
            .header("cookie", &real.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "csrf={}&code={}",
                real.csrf,
                totp.generate_current()
            ))
            .send()
            .await
            .unwrap();
        // `..%2f..%2flogin` normalises to the login submit path: judged as a login (and
        // refused, having no login name) rather than passed to the app.
        let expected = if guess.contains("%2f") { 400 } else { 404 };
        assert_eq!(r.status(), expected, "POST {path}");
    }
    // The real id without its binding cookie (another browser that learnt the URL).
    let r = client()
        .post(gk.url(&real.path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={}&code={}",
            real.csrf,
            totp.generate_current()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(app.last_login().await.is_null(), "nothing was replayed");
    // Ids are long random tokens: 128 bits or more, URL-safe.
    assert!(real_id.len() >= 22, "{real_id}");
}

#[tokio::test]
async fn a_completed_challenge_cannot_be_used_again() {
    let (_app, gk) = start("policy:\n  on_missing_telemetry: challenge\n").await;
    let totp = enroll_totp(&gk, ALICE.0);
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, ALICE.0, ALICE.1, None).await;
    let c = challenge_from(&gk, &r).await;
    let r = post_code(&gk, &c, &totp.generate_current()).await;
    assert_eq!(location(&r), "/account");
    // Again, by POST with the same code and by GET: gone.
    let r = post_code(&gk, &c, &totp.generate_current()).await;
    assert_eq!(r.status(), 404);
    assert!(set_cookie(&r, "legacy_session").is_none());
    let r = client()
        .get(gk.url(&c.path))
        .header("cookie", &c.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        gk.metric("gaitkeeper_challenges_total{event=\"passed\"}")
            .await,
        1.0,
        "replayed once only"
    );
}

/// Holds a fetch() login of bob sent with `referer`, completes it with a genuine provider
/// assertion, and returns where the browser is sent.
async fn replay_xhr_login_with_referer(gk: &Gaitkeeper, referer: &str, jti: &str) -> String {
    let r = client()
        .post(gk.url("/api/login"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("referer", referer)
        .body(format!(
            r#"{{"username":"{}","password":"{}"}}"#,
            BOB.0, BOB.1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "{referer}: {}", gk.log());
    let path = r
        .headers()
        .get("x-gaitkeeper-challenge")
        .expect("a challenge")
        .to_str()
        .unwrap()
        .to_string();
    let cookie = format!(
        "__gk_challenge={}",
        set_cookie(&r, "__gk_challenge").unwrap()
    );
    let cid = path.rsplit('/').next().unwrap();
    let t = now();
    let token = rs256(
        &serde_json::json!({"iss": "test-idp", "aud": "gaitkeeper", "sub": "bob",
            "cid": cid, "jti": jti, "iat": t, "exp": t + 120, "result": "pass"}),
        "rsa_private.pem",
    );
    let r = client()
        .get(gk.url(&format!("/__gk/challenge/callback?assertion={token}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{referer}: {}", gk.log());
    location(&r)
}

#[tokio::test]
async fn no_return_url_leads_off_the_site() {
    let (_app, gk, _keys) = start_external().await;
    let host = gk.addr.to_string();
    // A fetch() login's replay sends the browser back to its Referer: only if same-origin.
    let referers = [
        "http://evil.example/phish".to_string(),
        format!("http://{host}@evil.example/"),
        "//evil.example/x".to_string(),
        format!("http://evil.example/{host}/"),
        "javascript:alert(1)".to_string(),
        format!("http://{host}.evil.example/"),
        format!("https://evil.example:{}/", gk.addr.port()),
    ];
    for (i, referer) in referers.iter().enumerate() {
        let to = replay_xhr_login_with_referer(&gk, referer, &format!("r-{i}")).await;
        assert_eq!(to, "/", "{referer} led to {to}");
    }
    // A same-origin Referer is honoured, so the check above is not just "always /"; a path
    // that browsers would read as another host is not.
    let to = replay_xhr_login_with_referer(
        &gk,
        &format!("http://{host}/spa-login?next=1"),
        "same-origin",
    )
    .await;
    assert_eq!(to, "/spa-login?next=1");
    let to =
        replay_xhr_login_with_referer(&gk, &format!("http://{host}//evil.example/"), "dbl").await;
    assert!(!to.starts_with("//"), "led to {to}");
}

#[tokio::test]
async fn the_external_provider_return_url_is_never_built_from_a_hostile_host() {
    let (_app, gk, _keys) = start_external().await;
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, BOB.0, BOB.1, None).await;
    let challenge = location(&r);
    let cookie = format!(
        "__gk_challenge={}",
        set_cookie(&r, "__gk_challenge").unwrap()
    );
    for host in ["evil.example/x", "user@evil.example", "a b"] {
        let r = client()
            .get(gk.url(&challenge))
            .header("cookie", &cookie)
            .header("host", host)
            .send()
            .await
            .unwrap();
        let to = location(&r);
        assert!(!to.contains("evil"), "Host {host:?} led to {to}");
        assert!(
            !to.starts_with("http://127.0.0.1:9/"),
            "Host {host:?}: {to}"
        );
    }
}

/// Posts the login form with a valid CSRF pair and the right password, but no telemetry,
/// to `path` with `method` and extra headers; returns the status.
async fn post_login_to(
    gk: &Gaitkeeper,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::StatusCode {
    let page = login_page(gk).await;
    let mut request = client()
        .request(method, gk.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
        .body(form(&page, ALICE.0, ALICE.1, None) + "&_method=POST");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let r = request.send().await.unwrap();
    assert!(
        set_cookie(&r, "legacy_session").is_none(),
        "{path}: the app logged the user in"
    );
    r.status()
}

#[tokio::test]
async fn posting_straight_to_the_login_path_is_decided() {
    let (app, gk) = start(STRICT).await;
    // No page load, no token: the request a credential-stuffing script sends.
    let r = client()
        .post(gk.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("username={}&password={}", ALICE.0, ALICE.1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // With the app's CSRF pair (a script that scrapes the page) but no telemetry.
    let status = post_login_to(&gk, reqwest::Method::POST, "/login", &[]).await;
    assert_eq!(status, 403);
    // With made-up telemetry.
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(r#"{"v":1,"tk":"x"}"#)).await;
    assert_eq!(r.status(), 403);
    assert!(!app_logged_in(&app).await);
    assert!(app.last_login().await.is_null(), "nothing reached the app");
}

#[tokio::test]
async fn path_spellings_and_method_overrides_cannot_skip_the_check() {
    let (app, gk) = start(STRICT).await;
    for path in [
        "//login",
        "/login/",
        "/LOGIN",
        "/Login",
        "/%6Cogin",
        "/%6c%6f%67%69%6e",
        "/login?x=1",
        "/login?username=bob",
        "/./login",
        "/x/../login",
        "/login//",
        "/login#frag",
        "/login;jsessionid=x",
        "/login;/",
    ] {
        let status = post_login_to(&gk, reqwest::Method::POST, path, &[]).await;
        let seen = app.last_login().await;
        // Either gaitkeeper decided it (403), or the app did not route it to its login.
        assert!(
            status == 403 || (seen.is_null() || seen["status"] != 303),
            "{path}: {status}, the app saw {seen}"
        );
        assert!(!app_logged_in(&app).await, "{path}");
    }
    for (method, headers) in [
        ("PUT", vec![("x-http-method-override", "POST")]),
        ("PATCH", vec![("x-http-method", "POST")]),
        ("GET", vec![("x-method-override", "POST")]),
        ("post", vec![]),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let status = post_login_to(&gk, method.clone(), "/login", &headers).await;
        assert!(!app_logged_in(&app).await, "{method}: {status}");
    }
    // The same form, reaching the app's login handler through a different content type.
    let page = login_page(&gk).await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded; charset=utf-8",
        "APPLICATION/X-WWW-FORM-URLENCODED",
        " application/x-www-form-urlencoded",
    ] {
        let r = client()
            .post(gk.url("/login"))
            .header("content-type", content_type)
            .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
            .body(form(&page, ALICE.0, ALICE.1, None))
            .send()
            .await
            .unwrap();
        assert!(set_cookie(&r, "legacy_session").is_none(), "{content_type}");
        assert!(!app_logged_in(&app).await, "{content_type}");
    }
}

#[tokio::test]
async fn a_name_changed_after_typing_is_judged_against_the_submitted_name() {
    let (_app, gk) = start("policy:\n  on_invalid_telemetry: block\n").await;
    enroll_totp(&gk, ALICE.0);
    // Alice enrolls her rhythm, then logs in normally a few times.
    for seed in (0..8).chain(100..103) {
        let page = login_page(&gk).await;
        let p = payload(&page.gk_token, &STEADY, 5, 13, seed);
        let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
        assert_eq!(location(&r), "/account");
    }
    // Learning runs behind the decision: wait until all of them are in her profile, or the
    // impostor below could meet a profile still enrolling.
    common::eventually(Duration::from_secs(10), "alice's logins learnt", || async {
        gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
            .await
            >= 11.0
    })
    .await;
    // An impostor with alice's password types a name of the same length on the page (his
    // own profile is empty, so he would pass as "enrolling"), then changes the field to
    // alice before submitting: the telemetry is judged against alice's profile.
    let page = login_page(&gk).await;
    let p = payload(&page.gk_token, &STRANGER, 5, 13, 200);
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
    assert!(
        location(&r).starts_with("/__gk/challenge/"),
        "{} {}",
        r.status(),
        location(&r)
    );
}

#[tokio::test]
async fn two_login_names_in_one_submit_are_refused() {
    let (app, gk) = start("policy:\n  on_invalid_telemetry: block\n").await;
    // Two names in one JSON login, with genuine telemetry: serde_json alone would read the
    // last name (mallory, a new user, so "enrolling" and let through) while the app logs in
    // the first (alice). gaitkeeper cannot know which the app uses, so it trusts neither.
    let spa = client()
        .get(gk.url("/spa-login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = spa
        .split("data-gk-token=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a token on the SPA page")
        .to_string();
    let telemetry = b64(payload(&token, &STEADY, 5, 13, 1).as_bytes());
    let r = client()
        .post(gk.url("/api/login"))
        .header("content-type", "application/json")
        .header("x-gaitkeeper-telemetry", telemetry)
        .body(format!(
            r#"{{"username":"{}","username":"mallory","password":"{}"}}"#,
            ALICE.0, ALICE.1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(set_cookie(&r, "legacy_session").is_none());
    assert_ne!(app.last_login().await["username"], ALICE.0);
    // And in a form, spelled differently.
    let page = login_page(&gk).await;
    let body = format!(
        "csrf_token={}&user%6Eame=mallory&username={}&password={}",
        page.csrf_token, ALICE.0, ALICE.1
    );
    let r = client()
        .post(gk.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(!app_logged_in(&app).await);
}

#[tokio::test]
async fn a_login_split_across_pipelined_requests_is_decided_each_time() {
    let (app, gk) = start(STRICT).await;
    let page = login_page(&gk).await;
    let body = form(&page, ALICE.0, ALICE.1, None);
    let login = format!(
        "POST /login HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nCookie: legacy_csrf={c}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {n}\r\n\r\n{body}",
        host = gk.addr,
        ua = common::USER_AGENT,
        c = page.csrf_cookie,
        n = body.len()
    );
    let harmless = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\n\r\n",
        gk.addr,
        common::USER_AGENT
    );
    // A harmless request first, then the login in the same write; then two logins; then a
    // login whose body is followed by a second login head inside the declared length.
    let cases = [
        format!("{harmless}{login}"),
        format!("{login}{login}"),
        format!("{login}{harmless}{login}"),
    ];
    for (i, requests) in cases.iter().enumerate() {
        let mut stream = tokio::net::TcpStream::connect(gk.addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        stream.write_all(requests.as_bytes()).await.unwrap();
        let expected = requests.matches(" HTTP/1.1\r\n").count();
        let out = read_responses(&mut stream, expected, Duration::from_secs(5)).await;
        let got = statuses(&out);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("legacy_session="), "case {i}: {text}");
        // Every login answered was refused. Pingora does not serve requests pipelined behind
        // one it answered itself; those are dropped unanswered, never forwarded undecided.
        assert!(
            got.iter().all(|s| *s == 200 || *s == 403),
            "case {i}: {got:?}"
        );
        assert!(!got.is_empty(), "case {i}: nothing answered");
        assert!(
            app.last_login().await.is_null(),
            "case {i}: a pipelined login reached the app undecided"
        );
        eprintln!("case {i}: {} requests, answers {got:?}", expected);
    }
    // The body-smuggling variant: a declared length that swallows a second request.
    let inner = login.clone();
    let outer_body = format!("{body}&pad=");
    let smuggle = format!(
        "POST /login HTTP/1.1\r\nHost: {host}\r\nCookie: legacy_csrf={c}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n{outer_body}{inner}",
        host = gk.addr,
        c = page.csrf_cookie,
        n = outer_body.len() + inner.len(),
    );
    let out = raw(gk.addr, smuggle.as_bytes(), Duration::from_secs(5)).await;
    assert!(!String::from_utf8_lossy(&out).contains("legacy_session="));
    assert!(!app_logged_in(&app).await);
}

#[tokio::test]
async fn totp_guessing_is_rate_limited_per_address_and_logged() {
    let (app, gk) = start("policy:\n  on_missing_telemetry: challenge\n").await;
    let totp = enroll_totp(&gk, ALICE.0);
    let wrong = wrong_code(&totp);
    // Guess across several challenges from one address, each ended by its own attempt limit,
    // until the address's limit is reached (the user's own browser is not stopped by it: see
    // browser.rs::a_stranger_without_the_password_cannot_lock_the_user_out).
    let mut guesses = 0;
    let mut blocked = 0;
    while guesses < 12 {
        let page = login_page(&gk).await;
        let r = submit(&gk, &page, ALICE.0, ALICE.1, None).await;
        if r.status() == 403 {
            // Regulation after repeated failures refuses the login outright: also a stop.
            blocked += 1;
            break;
        }
        let c = challenge_from(&gk, &r).await;
        loop {
            let r = post_code(&gk, &c, &wrong).await;
            guesses += 1;
            if r.status() == 403 {
                break;
            }
            assert_eq!(r.status(), 401, "a wrong code re-shows the page");
        }
    }
    // Now the right code on a fresh challenge from the same address does not get in either:
    // the limit holds.
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, ALICE.0, ALICE.1, None).await;
    if r.status() == 303 {
        let c = challenge_from(&gk, &r).await;
        let r = post_code(&gk, &c, &totp.generate_current()).await;
        assert_eq!(
            r.status(),
            403,
            "the right code after {guesses} guesses got in"
        );
    } else {
        assert_eq!(r.status(), 403);
    }
    assert!(!app_logged_in(&app).await);
    assert!(guesses + blocked > 0);
    // Every guess is counted and logged with its reason, never with the code.
    assert!(
        gk.metric("gaitkeeper_challenges_total{event=\"wrong_code\"}")
            .await
            >= 10.0
    );
    let log = gk.log();
    assert!(log.contains("challenge code refused"), "{log}");
    if guesses > 10 {
        assert!(log.contains("rate_limited"), "{log}");
    }
    assert!(!log.contains(&wrong), "a guessed code was logged");
}

// ---- A score an attacker cannot game cheaply (docs/threat-model.md) ----

/// Enrols alice with `n` logins of her own (human-like, each typed anew) and gives her TOTP.
async fn enrol_alice(gk: &Gaitkeeper, n: u64) -> totp_rs::Totp {
    let totp = enroll_totp(gk, ALICE.0);
    for seed in 0..n {
        let page = login_page(gk).await;
        let p = payload(&page.gk_token, &STEADY, 5, 13, 100 + seed);
        let r = submit(gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
        assert_eq!(
            location(&r),
            "/account",
            "enrolment login {seed}: {}",
            gk.log()
        );
    }
    common::eventually(Duration::from_secs(10), "alice's logins learnt", || async {
        gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
            .await
            >= n as f64
    })
    .await;
    totp
}

/// Whether gaitkeeper let the login through to the app.
fn allowed(r: &reqwest::Response) -> bool {
    location(r) == "/account" || r.status() == 401
}

/// Whether `rule` flagged at least one login (`gaitkeeper_login_rule_flags_total`).
async fn flagged(gk: &Gaitkeeper, rule: &str, detail: &str) -> bool {
    gk.metric(&format!(
        "gaitkeeper_login_rule_flags_total{{detail=\"{detail}\",rule=\"{rule}\"}}"
    ))
    .await
        >= 1.0
}

#[tokio::test]
async fn a_sparse_payload_is_not_evidence_enough() {
    let (_app, gk) = start(STRICT).await;
    enrol_alice(&gk, 6).await;
    // One mouse sample in five seconds, no keys: the issue's payload, with every key the
    // schema requires present (and empty).
    let page = login_page(&gk).await;
    let sparse = format!(
        r#"{{"v":1,"cv":"1.0.0","tk":"{}","hv":"submit","n":1,"t0":0,"t1":5000,"vis":5000,"vp":[1280,720],"u":0,"tr":0,"f":[],"fc":[],"k":[],"kn":0,"m":[[100,1,1]],"mi":[1,1],"p":[],"pi":[0,1],"c":[],"w":[]}}"#,
        page.gk_token
    );
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&sparse)).await;
    assert!(!allowed(&r), "a sparse payload passed: {}", location(&r));
    assert!(flagged(&gk, "insufficient_evidence", "no_password_field").await);
    // The same with the fields, but nothing typed into the password.
    let page = login_page(&gk).await;
    let keys: Vec<common::behaviour::Stroke> = (0..5)
        .map(|i| {
            (
                500.0 + 230.0 * i as f64 + (i * 37 % 50) as f64,
                590.0 + 230.0 * i as f64,
                "l",
                0,
            )
        })
        .collect();
    let untyped = common::behaviour::scripted_payload(&page.gk_token, &keys, &[], 5000.0);
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&untyped)).await;
    assert!(!allowed(&r));
    assert!(flagged(&gk, "insufficient_evidence", "password_not_typed").await);
}

#[tokio::test]
async fn replayed_genuine_telemetry_is_refused_and_never_learnt() {
    let (app, gk) = start(STRICT).await;
    enrol_alice(&gk, 6).await;
    let learnt = gk
        .metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
        .await;
    // One genuine login, captured.
    let page = login_page(&gk).await;
    let genuine = payload(&page.gk_token, &STEADY, 5, 13, 900);
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&genuine)).await;
    assert_eq!(location(&r), "/account");
    common::eventually(
        Duration::from_secs(10),
        "the genuine login learnt",
        || async {
            gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
                .await
                > learnt
        },
    )
    .await;
    let learnt = gk
        .metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
        .await;
    // Replayed six times on fresh page tokens: identical, and shifted by up to 2 ms.
    for (i, jitter) in [0.0, 0.0, 2.0, 2.0, 2.0, 2.0].into_iter().enumerate() {
        let page = login_page(&gk).await;
        let copy = common::behaviour::replayed(&genuine, &page.gk_token, jitter, i as u64);
        let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&copy)).await;
        assert!(!allowed(&r), "replay {i} (jitter {jitter} ms) passed");
        assert_eq!(
            gk.last_telemetry_outcome().await,
            "ok",
            "a fresh token each time"
        );
    }
    assert!(
        app.last_login().await["status"] == 303,
        "only the genuine login reached the app"
    );
    // Nothing of the replays was learnt.
    let settled_wait = gk
        .metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
        .await;
    assert_eq!(settled_wait, learnt, "the replays were learnt");
}

#[tokio::test]
async fn replays_let_through_in_shadow_mode_are_still_not_learnt() {
    let (_app, gk) = start("policy:\n  mode: shadow\n").await;
    enrol_alice(&gk, 6).await;
    let page = login_page(&gk).await;
    let genuine = payload(&page.gk_token, &STEADY, 5, 13, 901);
    submit(&gk, &page, ALICE.0, ALICE.1, Some(&genuine)).await;
    common::eventually(
        Duration::from_secs(10),
        "the genuine login learnt",
        || async {
            gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
                .await
                >= 7.0
        },
    )
    .await;
    for i in 0..3 {
        let page = login_page(&gk).await;
        let copy = common::behaviour::replayed(&genuine, &page.gk_token, 2.0, 10 + i);
        let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&copy)).await;
        assert_eq!(location(&r), "/account", "shadow mode forwards it");
    }
    // The replays were verified by the app and settled, but not learnt.
    common::eventually(Duration::from_secs(10), "the replays settled", || async {
        gk.metric(
            "gaitkeeper_login_outcomes_total{app=\"default\",outcome=\"verified\",route=\"login\"}",
        )
        .await
            >= 10.0
    })
    .await;
    assert_eq!(
        gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
            .await,
        7.0
    );
    assert!(flagged(&gk, "replayed_pattern", "seen_recently").await);
}

#[tokio::test]
async fn a_timeline_longer_than_the_page_was_open_is_refused() {
    // A real slack: generated logins claim seconds of typing the moment their page arrives.
    let (app, gk) = start("capture:\n  timeline_slack: 1s\n").await;
    let page = login_page(&gk).await;
    // Eight seconds of typing, submitted well under a second after the page was served.
    let keys: Vec<common::behaviour::Stroke> = (0..18)
        .map(|i| {
            let t = 500.0 + 420.0 * i as f64 + ((i * 53) % 97) as f64;
            (
                t,
                t + 80.0 + ((i * 31) % 40) as f64,
                if i < 5 { "l" } else { "c" },
                if i < 5 { 0 } else { 1 },
            )
        })
        .collect();
    let lie = common::behaviour::scripted_payload(&page.gk_token, &keys, &[], 8200.0);
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&lie)).await;
    assert!(!allowed(&r), "{}", location(&r));
    assert!(flagged(&gk, "timeline_mismatch", "longer_than_the_page_was_open").await);
    assert!(app.last_login().await.is_null(), "nothing reached the app");
}

/// Keystrokes of a bot: `intervals` between presses in each run, holds of `hold` ms, and the
/// natural pauses of a person at Tab and Enter.
fn bot_keys(
    pace: impl Fn(usize) -> f64,
    hold: impl Fn(usize) -> f64,
) -> Vec<common::behaviour::Stroke> {
    let mut t = 600.0;
    let mut out = Vec::new();
    for i in 0..5 {
        out.push((t, t + hold(i), "l", 0));
        t += pace(i);
    }
    out.push((t + 300.0, t + 300.0 + hold(5), "t", 0));
    t += 900.0;
    for i in 0..13 {
        out.push((t, t + hold(6 + i), "c", 1));
        t += pace(6 + i);
    }
    out.push((t + 400.0, t + 400.0 + hold(20), "e", 1));
    out
}

/// A bot's login: its name, the rule detail that must catch it, its keys and mouse samples.
type BotLogin = (
    &'static str,
    &'static str,
    Vec<common::behaviour::Stroke>,
    Vec<(f64, f64, f64)>,
);

/// A mouse that glides along a ruler to the field, speeding up and slowing down like a hand,
/// a pixel of jitter on each sample, at a display's pace.
fn ruler_mouse() -> Vec<(f64, f64, f64)> {
    (0..30)
        .map(|i| {
            let g = i as f64 / 29.0;
            let f = 10.0 * g.powi(3) - 15.0 * g.powi(4) + 6.0 * g.powi(5);
            let t = 150.0 + 16.7 * i as f64 + ((i * 7) % 3) as f64 * 0.3;
            (
                t,
                100.0 + 400.0 * f + (i % 2) as f64,
                80.0 + 150.0 * f - (i % 3) as f64 * 0.5,
            )
        })
        .collect()
}

#[tokio::test]
async fn bots_that_add_a_little_noise_are_still_bots() {
    let (app, gk) = start(STRICT).await;
    enrol_alice(&gk, 6).await;
    let human_mouse: Vec<(f64, f64, f64)> = (0..25)
        .map(|i| {
            let f = i as f64 / 24.0;
            let s = 10.0 * f.powi(3) - 15.0 * f.powi(4) + 6.0 * f.powi(5);
            (
                150.0 + 17.0 * i as f64 + ((i * 13) % 5) as f64,
                100.0 + 300.0 * s,
                80.0 + 90.0 * s + 25.0 * (std::f64::consts::PI * s).sin(),
            )
        })
        .collect();
    let human_hold = |i: usize| 70.0 + ((i * 37) % 61) as f64;
    let human_pace = |i: usize| 160.0 + ((i * 71) % 150) as f64;
    let attacks: Vec<BotLogin> = vec![
        // Exactly 90 ms holds and 150 ms gaps, pausing at Tab and Enter like a person.
        (
            "metronome",
            "metronome_keys",
            bot_keys(|_| 240.0, |_| 90.0),
            human_mouse.clone(),
        ),
        // Intervals varied by 3 % (uniform jitter).
        (
            "3 % jitter",
            "metronome_keys",
            bot_keys(
                |i| 240.0 * (1.0 + 0.05 * (((i * 7919) % 100) as f64 / 50.0 - 1.0)),
                human_hold,
            ),
            human_mouse.clone(),
        ),
        // Human-like keys, a ruler-straight mouse with a pixel of jitter.
        (
            "ruler mouse",
            "ruler_straight_mouse",
            bot_keys(human_pace, human_hold),
            ruler_mouse(),
        ),
    ];
    for (name, detail, keys, moves) in attacks {
        let page = login_page(&gk).await;
        let end = keys.iter().map(|k| k.1).fold(0.0, f64::max) + 300.0;
        let p = common::behaviour::scripted_payload(&page.gk_token, &keys, &moves, end);
        let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
        assert!(!allowed(&r), "{name} passed");
        assert!(
            flagged(&gk, "synthetic_input", detail).await,
            "{name}: {detail}: {}",
            gk.metrics()
                .await
                .lines()
                .filter(|l| l.contains("rule_flags"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(!app_logged_in(&app).await || app.last_login().await["username"] == ALICE.0);
}

#[tokio::test]
async fn a_bot_cannot_enrol_a_profile() {
    // Bob has no profile yet: the bot's logins would have been let through and become it.
    let (app, gk) = start("").await;
    for i in 0..6u64 {
        let page = login_page(&gk).await;
        let keys = bot_keys(|_| 200.0 + i as f64, |_| 85.0);
        let end = keys.iter().map(|k| k.1).fold(0.0, f64::max) + 300.0;
        let p = common::behaviour::scripted_payload(&page.gk_token, &keys, &ruler_mouse(), end);
        let r = submit(&gk, &page, BOB.0, BOB.1, Some(&p)).await;
        // policy.enrolling_bot: challenge; bob has no factor, so on_no_factor blocks.
        assert_eq!(r.status(), 403, "bot login {i}");
    }
    assert!(
        app.last_login().await.is_null(),
        "no bot login reached the app"
    );
    assert_eq!(
        gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
            .await,
        0.0,
        "nothing was learnt"
    );
}
