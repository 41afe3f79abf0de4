//! Adding a second factor at a trusted moment, over HTTP as a browser and an attacker would:
//! the offer after a trusted login (`routes[].enrol_factors`) withholds the app's answer until
//! the user adds a factor or (when only offered) says "not now"; an unusual login never
//! reaches it. The passkey side is in `browser` (it needs a real authenticator).

use crate::common;

use std::time::Duration;

use common::behaviour::{payload, Rhythm, STEADY, STRANGER};
use common::legacy::{
    authenticator_of, csrf_of, location, login_page, set_cookie, submit, LegacyApp, ALICE,
    LEGACY_ROUTES,
};
use common::{client, eventually, Gaitkeeper};

/// The bundled app's routes with `enrol_factors` set on the form login.
fn routes_with(enrol_factors: &str) -> String {
    let anchor = "set_cookie: legacy_session }\n  - name: spa-login";
    assert!(LEGACY_ROUTES.contains(anchor));
    LEGACY_ROUTES.replacen(
        anchor,
        &format!(
            "set_cookie: legacy_session }}\n    enrol_factors: {enrol_factors}\n  - name: spa-login"
        ),
        1,
    )
}

async fn start(enrol_factors: &str, more: &str) -> (LegacyApp, Gaitkeeper) {
    let app = LegacyApp::start().await;
    let config = format!(
        "{}store:\n  enrollment_logins: 5\n{more}",
        routes_with(enrol_factors)
    );
    let gk = Gaitkeeper::start_with(app.addr, "", &config).await;
    (app, gk)
}

async fn login(gk: &Gaitkeeper, rhythm: &Rhythm, seed: u64) -> reqwest::Response {
    let page = login_page(gk).await;
    let p = payload(&page.gk_token, rhythm, ALICE.0.len(), ALICE.1.len(), seed);
    submit(gk, &page, ALICE.0, ALICE.1, Some(&p)).await
}

/// Alice's `n` enrolment logins, each let through (and not offered anything: no profile
/// vouches for them yet), learnt.
async fn enrol(gk: &Gaitkeeper, n: u64) {
    for seed in 0..n {
        let r = login(gk, &STEADY, seed).await;
        assert_eq!(location(&r), "/account", "enrolment login {seed}");
    }
    eventually(Duration::from_secs(15), "the logins learnt", || async {
        gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
            .await
            >= n as f64
    })
    .await;
}

/// An offer the browser was sent to: its path and the withheld answer's cookie.
struct Offer {
    path: String,
    cookie: String,
}

impl Offer {
    fn of(r: &reqwest::Response) -> Offer {
        assert_eq!(r.status(), 303);
        let path = location(r);
        assert!(path.starts_with("/__gk/protect/"), "{path}");
        let cookie = set_cookie(r, "__gk_offer").expect("the withheld answer's cookie");
        Offer { path, cookie }
    }

    async fn get(&self, gk: &Gaitkeeper) -> (u16, String) {
        let r = client()
            .get(gk.url(&self.path))
            .header("cookie", format!("__gk_offer={}", self.cookie))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, gk: &Gaitkeeper, body: &str) -> reqwest::Response {
        client()
            .post(gk.url(&self.path))
            .header("cookie", format!("__gk_offer={}", self.cookie))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_trusted_login_without_a_factor_is_offered_one_and_not_now_delivers_the_app_answer() {
    let (_app, gk) = start("{ mode: offer, reoffer_after: 24h }", "").await;
    enrol(&gk, 5).await;
    // A usual login: the app accepted it, and its answer (redirect, session cookie) waits
    // behind the offer.
    let r = login(&gk, &STEADY, 100).await;
    assert_eq!(set_cookie(&r, "legacy_session"), None, "withheld");
    let offer = Offer::of(&r);
    let (status, page) = offer.get(&gk).await;
    assert_eq!(status, 200);
    assert!(page.contains("Protect your account"), "{page}");
    assert!(page.contains("Not now, continue"));
    assert!(
        !page.contains("passkey-button"),
        "no passkeys on an IP address"
    );
    // A form from elsewhere (no CSRF token) is refused.
    assert_eq!(offer.post(&gk, "continue=1").await.status(), 403);
    // "Not now": the app's own answer, unchanged.
    let csrf = csrf_of(&page).to_string();
    let r = offer.post(&gk, &format!("csrf={csrf}&continue=1")).await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "/account");
    let session = set_cookie(&r, "legacy_session").expect("the app's session cookie");
    assert!(!session.is_empty());
    let page = common::legacy::account_page(&gk, &session).await;
    assert!(page.contains("Welcome, alice"), "{page}");
    // Not offered again within reoffer_after.
    let r = login(&gk, &STEADY, 101).await;
    assert_eq!(location(&r), "/account");
    assert!(set_cookie(&r, "legacy_session").is_some());
    let (_, trail) = gk.audit(&["tail", "--lines", "60"]);
    assert_eq!(trail.matches("factor.offered").count(), 1, "{trail}");
    // Another offer's id, or a damaged cookie, opens nothing.
    let forged = Offer {
        path: "/__gk/protect/AAAAAAAAAAAAAAAAAAAAAAAA".into(),
        cookie: offer.cookie.clone(),
    };
    assert_eq!(forged.get(&gk).await.0, 404);
    let damaged = Offer {
        path: offer.path.clone(),
        cookie: format!("x{}", &offer.cookie[1..]),
    };
    assert_eq!(damaged.get(&gk).await.0, 404);
}

#[tokio::test]
async fn a_required_factor_must_be_added_before_the_app_answer_is_delivered() {
    let (_app, gk) = start("{ mode: require }", "").await;
    enrol(&gk, 5).await;
    let offer = Offer::of(&login(&gk, &STEADY, 100).await);
    let (status, page) = offer.get(&gk).await;
    assert_eq!(status, 200);
    assert!(!page.contains("Not now"), "no way round: {page}");
    let csrf = csrf_of(&page).to_string();
    // Continuing without a factor is refused, and the app's cookie is not given.
    let r = offer.post(&gk, &format!("csrf={csrf}&continue=1")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(set_cookie(&r, "legacy_session"), None);
    // A wrong code stores nothing.
    let totp = authenticator_of(&page);
    let wrong = common::legacy::wrong_code(&totp);
    let r = offer.post(&gk, &format!("csrf={csrf}&code={wrong}")).await;
    assert_eq!(r.status(), 400);
    let factors = common::legacy::users_cli(&gk, &["factors", ALICE.0]);
    assert!(factors.contains("totp:            none"), "{factors}");
    // The right one adds the authenticator, shows the recovery codes once, and continuing
    // delivers the app's answer.
    let code = totp.generate_current().to_string();
    let r = offer.post(&gk, &format!("csrf={csrf}&code={code}")).await;
    assert_eq!(r.status(), 200);
    let added = r.text().await.unwrap();
    assert_eq!(added.matches("<li><code>").count(), 10, "{added}");
    assert!(added.contains("Continue to"));
    let r = offer
        .post(&gk, &format!("csrf={}&continue=1", csrf_of(&added)))
        .await;
    assert_eq!(location(&r), "/account");
    assert!(set_cookie(&r, "legacy_session").is_some());
    let factors = common::legacy::users_cli(&gk, &["factors", ALICE.0]);
    assert!(factors.contains("totp:            since "), "{factors}");
    // The same page cannot replace the authenticator it added.
    let again = totp.generate(totp_rs_step_later()).to_string();
    let r = offer.post(&gk, &format!("csrf={csrf}&code={again}")).await;
    assert_eq!(r.status(), 404, "never replaced from the web");
    // With a factor, the next trusted login goes straight to the app.
    let r = login(&gk, &STEADY, 101).await;
    assert_eq!(location(&r), "/account");
    let (_, trail) = gk.audit(&["tail", "--lines", "80"]);
    assert!(
        trail.contains("factor.added") && trail.contains("\"via\":\"offer\""),
        "{trail}"
    );
}

/// A time one TOTP step from now (a code not yet used).
fn totp_rs_step_later() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 30
}

#[tokio::test]
async fn an_unusual_login_of_a_user_without_a_factor_never_reaches_an_enrolment_page() {
    // The impostor who knows the password, let through by on_no_factor: allow, is never
    // offered to add a factor, whether offered (here with trust on first use) or required.
    let (_app, gk) = start(
        "{ mode: offer, trust_on_first_use: true }",
        "policy:\n  on_no_factor: allow\n",
    )
    .await;
    // Trust on first use: the very first (enrolling) login is offered; later ones not again
    // within reoffer_after.
    let r = login(&gk, &STEADY, 0).await;
    assert!(location(&r).starts_with("/__gk/protect/"));
    enrol(&gk, 5).await;
    let r = login(&gk, &STRANGER, 200).await;
    assert_eq!(location(&r), "/account", "let through by on_no_factor");
    assert!(set_cookie(&r, "__gk_offer").is_none(), "never an offer");

    let (_app, gk) = start("{ mode: require }", "policy:\n  on_no_factor: allow\n").await;
    // Without trust on first use, enrolling logins are not offered.
    enrol(&gk, 5).await;
    let r = login(&gk, &STRANGER, 200).await;
    assert_eq!(location(&r), "/account", "let through by on_no_factor");
    assert!(set_cookie(&r, "__gk_offer").is_none(), "never required");
    // Her own usual login is.
    let r = login(&gk, &STEADY, 100).await;
    assert!(location(&r).starts_with("/__gk/protect/"));
}

#[tokio::test]
async fn forged_passkey_answers_count_as_wrong_codes_and_the_login_stays_held() {
    use common::legacy::{challenge_from, enroll_totp, post_code, post_form};
    let (_app, gk) = start("{ mode: off }", "policy:\n  enrolling: challenge\n").await;
    let totp = enroll_totp(&gk, ALICE.0);
    let held = challenge_from(&gk, &login(&gk, &STEADY, 0).await).await;
    // What an attacker without her authenticator can send: no ceremony of this challenge, a
    // made-up credential, a huge one.
    let credential = "%7B%22id%22%3A%22AAAA%22%2C%22rawId%22%3A%22AAAA%22%2C%22type%22%3A%22public-key%22%2C%22response%22%3A%7B%22clientDataJSON%22%3A%22AAAA%22%2C%22authenticatorData%22%3A%22AAAA%22%2C%22signature%22%3A%22AAAA%22%7D%2C%22extensions%22%3A%7B%7D%7D";
    let huge = "A".repeat(20_000);
    for (i, fields) in [
        format!("passkey_state=AAAA&passkey_credential={credential}"),
        format!("passkey_state={huge}&passkey_credential={credential}"),
        "passkey_state=&passkey_credential=".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let r = post_form(&gk, &held, fields).await;
        assert_eq!(r.status(), 401, "forgery {i} counted as a wrong code");
        let page = r.text().await.unwrap();
        assert!(
            page.contains(&format!("{} attempts are left", 4 - i)),
            "{page}"
        );
    }
    // Still held: her code passes it.
    let r = post_code(&gk, &held, totp.generate_current()).await;
    assert_eq!(location(&r), "/account");
}
