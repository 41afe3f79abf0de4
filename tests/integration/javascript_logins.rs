//! JavaScript logins end to end: the bundled legacy app's token portal (`/app` posts JSON by
//! `fetch`, `/app-xhr` form data by `XMLHttpRequest`, both keep the bearer token from the JSON
//! answer) behind gaitkeeper, in headless Chromium and with plain HTTP clients. A challenge is
//! passed inside the page and the page's own code gets the token; a typo is retried without a
//! reload; a page outlives its token; a block shows its reference; success is told by the JSON
//! answer; machine clients have their own way through.

use crate::common;

use std::time::{Duration, Instant};

use common::behaviour::{fetch_payload, STEADY};
use common::legacy::{enroll_totp, LegacyApp, ALICE, BOB};
use common::webdriver::{
    human_typing, move_and_click, press_enter, typing, ChromeDriver, Session, CODE_FIELD_FOCUSED,
    TAB,
};
use common::{b64, client, eventually, Gaitkeeper};
use serde_json::{json, Value};

/// The portal's login: both pages, one submit path; success is an `access_token` in the
/// JSON answer (the app answers 200 to a wrong password too).
const PORTAL: &str = "routes:\n  - name: portal\n    page: { paths: [\"/app\", \"/app-xhr\"] }\n    submit: { path: \"/api/token\" }\n    success: { status: [200], json_pointer_present: \"/access_token\" }\n";

/// One Chromium at a time: parallel browsers on a 2-core machine distort the timings.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A browser on the portal behind gaitkeeper (`more` after [`PORTAL`]).
struct Stack {
    app: LegacyApp,
    gk: Gaitkeeper,
    _driver: ChromeDriver,
    session: Session,
    _profile: tempfile::TempDir,
}

async fn stack(more: &str) -> Stack {
    let app = LegacyApp::start().await;
    let gk = Gaitkeeper::start_with(app.addr, "", &format!("{PORTAL}{more}")).await;
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver.session(profile.path()).await;
    Stack {
        app,
        gk,
        _driver: driver,
        session,
        _profile: profile,
    }
}

impl Stack {
    async fn open(&self, page: &str) {
        self.session.goto(&self.gk.url(page)).await;
        self.session
            .wait_for(
                "window.__gaitkeeper && document.getElementById('token-login')",
                "the portal's sign-in form and the capture script",
            )
            .await;
    }

    /// Moves to the name field, types `user`, Tabs, types `password`, presses Enter.
    async fn sign_in(&self, user: &str, password: &str, variation: usize) {
        move_and_click(&self.session, "#username").await;
        let (mut keys, _, _) = human_typing(user, 85, 125, variation);
        keys.extend(typing(TAB, 70, 160));
        keys.extend(human_typing(password, 75, 115, variation + 5).0);
        self.session
            .actions(json!([{"type": "key", "id": "keyboard", "actions": keys}]))
            .await;
        press_enter(&self.session).await;
    }

    /// Waits for the portal's protected view, which its own code shows only with a token
    /// that `/api/me` accepts.
    async fn wait_for_profile(&self) {
        self.session
            .wait_for(
                "!document.getElementById('profile').hidden",
                "the portal's protected view",
            )
            .await;
        let shown = self
            .session
            .execute("return [document.getElementById('who').textContent, localStorage.getItem('acme_token'), document.getElementById('status').textContent, !!document.querySelector('[data-gaitkeeper]')];")
            .await;
        assert_eq!(shown[0], "alice", "{shown}");
        assert!(
            shown[1].as_str().is_some_and(|t| t.len() >= 16),
            "the page kept its token: {shown}"
        );
        assert_eq!(shown[2], "", "the page's code saw no failure: {shown}");
        assert_eq!(shown[3], false, "no overlay left: {shown}");
    }

    async fn status_text(&self) -> String {
        self.session
            .execute("return document.getElementById('status').textContent;")
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// How many logins of the portal ended with `outcome`.
    async fn outcomes(&self, outcome: &str) -> f64 {
        outcomes(&self.gk, outcome).await
    }
}

async fn outcomes(gk: &Gaitkeeper, outcome: &str) -> f64 {
    gk.metric(&format!(
        "gaitkeeper_login_outcomes_total{{app=\"default\",outcome=\"{outcome}\",route=\"portal\"}}"
    ))
    .await
}

/// An enrolled user's unusual login (here every login: `enrolling: challenge`) is challenged
/// over the page; the TOTP code is typed into it, and the page's own code gets the app's
/// answer to the held login (the token) and shows the protected view.
async fn challenged_in_the_page(page: &str, shots: &str) {
    let _one = ONE_BROWSER.lock().await;
    let s = stack("policy:\n  enrolling: challenge\n").await;
    let totp = enroll_totp(&s.gk, ALICE.0);
    s.open(page).await;
    s.sign_in(ALICE.0, ALICE.1, 0).await;
    s.session
        .wait_for(CODE_FIELD_FOCUSED, "the challenge over the page")
        .await;
    assert!(
        s.session.current_url().await.ends_with(page),
        "no navigation"
    );
    assert_eq!(
        s.status_text().await,
        "",
        "the page's code never saw the 401"
    );
    assert_eq!(
        s.app.last_login().await["username"],
        Value::Null,
        "the login is held, not sent to the app"
    );
    let shot = s.session.screenshot(&format!("{shots}-challenge")).await;
    eprintln!("screenshot: {}", shot.display());

    let code = totp.generate_current().to_string();
    s.session
        .actions(json!([{"type": "key", "id": "keyboard", "actions": typing(&code, 50, 60)}]))
        .await;
    press_enter(&s.session).await;
    s.wait_for_profile().await;
    let shot = s.session.screenshot(&format!("{shots}-signed-in")).await;
    eprintln!("screenshot: {}", shot.display());
    assert!(
        s.session.current_url().await.ends_with(page),
        "no navigation"
    );
    let login = s.app.last_login().await;
    assert_eq!(login["username"], "alice");
    assert_eq!(login["path"], "/api/token");
    assert!(
        login["headers"].get("x-gaitkeeper-resume").is_none(),
        "the proof stays with gaitkeeper: {login}"
    );
    eventually(Duration::from_secs(5), "the login verified", || async {
        s.outcomes("verified").await >= 1.0
    })
    .await;
    s.session.quit().await;
}

#[tokio::test]
async fn a_challenged_fetch_login_is_finished_in_the_page_and_the_page_gets_its_token() {
    challenged_in_the_page("/app", "portal-fetch").await;
}

#[tokio::test]
async fn a_challenged_xhr_login_is_finished_in_the_page_and_the_page_gets_its_token() {
    challenged_in_the_page("/app-xhr", "portal-xhr").await;
}

/// The app's CSP forbids frames (`/app-strict`): the overlay offers the challenge in a window
/// of its own; the code is typed there, the window closes, and the page gets its token.
#[tokio::test]
async fn where_the_apps_csp_forbids_frames_the_challenge_opens_in_a_popup() {
    let _one = ONE_BROWSER.lock().await;
    let routes = common::edited(PORTAL, "\"/app-xhr\"", "\"/app-xhr\", \"/app-strict\"");
    let app = LegacyApp::start().await;
    let gk = Gaitkeeper::start_with(
        app.addr,
        "",
        &format!("{routes}policy:\n  enrolling: challenge\n"),
    )
    .await;
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver.session(profile.path()).await;
    let s = Stack {
        app,
        gk,
        _driver: driver,
        session,
        _profile: profile,
    };
    let totp = enroll_totp(&s.gk, ALICE.0);
    s.open("/app-strict").await;
    let page_window = s.session.window_handle().await;
    s.sign_in(ALICE.0, ALICE.1, 0).await;
    let button = "(() => { const h = document.querySelector('[data-gaitkeeper]'); const b = h && h.shadowRoot && [...h.shadowRoot.querySelectorAll('button')].find((b) => b.textContent === 'Continue'); if (!b) return null; const r = b.getBoundingClientRect(); return [Math.round(r.x + r.width / 2), Math.round(r.y + r.height / 2)]; })()";
    s.session
        .wait_for(button, "the overlay's button for a window")
        .await;
    assert!(
        s.session
            .execute("return !document.querySelector('[data-gaitkeeper]').shadowRoot.querySelector('iframe');")
            .await
            == Value::Bool(true),
        "the refused frame is gone"
    );
    let shot = s.session.screenshot("portal-strict-csp-offer").await;
    eprintln!("screenshot: {}", shot.display());
    let at = s.session.execute(&format!("return {button};")).await;
    s.session
        .click_at(at[0].as_i64().unwrap(), at[1].as_i64().unwrap())
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let popup = loop {
        let handles = s.session.window_handles().await;
        if let Some(h) = handles.into_iter().find(|h| *h != page_window) {
            break h;
        }
        assert!(Instant::now() < deadline, "no window opened");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    s.session.switch_to_window(&popup).await;
    s.session
        .wait_for(
            "document.activeElement && document.activeElement.id === 'code'",
            "the code field in the window",
        )
        .await;
    assert!(s.session.current_url().await.contains("inline=popup"));
    let code = totp.generate_current().to_string();
    s.session
        .actions(json!([{"type": "key", "id": "keyboard", "actions": typing(&code, 50, 60)}]))
        .await;
    press_enter(&s.session).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.session.window_handles().await.contains(&popup) {
        assert!(Instant::now() < deadline, "the window did not close");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    s.session.switch_to_window(&page_window).await;
    s.wait_for_profile().await;
    let shot = s.session.screenshot("portal-strict-csp-signed-in").await;
    eprintln!("screenshot: {}", shot.display());
    assert_eq!(s.app.last_login().await["username"], "alice");
    s.session.quit().await;
}

/// A wrong password, then the right one in the same page without a reload: the second submit
/// carries the fresh token gaitkeeper handed back with the first answer, and is judged as a
/// login, not as a replay.
async fn typo_then_right_password(page: &str) {
    let _one = ONE_BROWSER.lock().await;
    let s = stack("").await;
    s.open(page).await;
    s.sign_in(ALICE.0, "wonderland-24", 0).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !s.status_text().await.starts_with("Login failed") {
        assert!(Instant::now() < deadline, "the app's failure never showed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The person clears the password (select all, Backspace) and types it again.
    move_and_click(&s.session, "#password").await;
    let mut keys = vec![
        json!({"type": "keyDown", "value": "\u{E009}"}),
        json!({"type": "keyDown", "value": "a"}),
        json!({"type": "pause", "duration": 60}),
        json!({"type": "keyUp", "value": "a"}),
        json!({"type": "keyUp", "value": "\u{E009}"}),
        json!({"type": "pause", "duration": 150}),
    ];
    keys.extend(typing("\u{E003}", 70, 200));
    keys.extend(human_typing(ALICE.1, 75, 115, 3).0);
    s.session
        .actions(json!([{"type": "key", "id": "keyboard", "actions": keys}]))
        .await;
    press_enter(&s.session).await;
    s.wait_for_profile().await;
    eventually(Duration::from_secs(5), "both logins recorded", || async {
        s.outcomes("verified").await >= 1.0 && s.outcomes("failed").await >= 1.0
    })
    .await;
    assert_eq!(s.outcomes("invalid").await, 0.0, "no token refused");
    s.session.quit().await;
}

#[tokio::test]
async fn a_typo_then_the_right_password_works_without_a_reload_fetch() {
    typo_then_right_password("/app").await;
}

#[tokio::test]
async fn a_typo_then_the_right_password_works_without_a_reload_xhr() {
    typo_then_right_password("/app-xhr").await;
}

/// A page left open longer than `capture.token_ttl` (the shortest allowed, 10 s) logs in
/// normally: the capture script renewed its token before it expired.
async fn a_page_outlives_its_token(page: &str) {
    let _one = ONE_BROWSER.lock().await;
    let s = stack("capture:\n  token_ttl: 10s\n  timeline_slack: 1h\n").await;
    s.open(page).await;
    let opened = Instant::now();
    // Waiting for the clock is the point here: the token served with the page must be past
    // its expiry (plus the verifier's 5 s leeway) before the person signs in.
    tokio::time::sleep(Duration::from_secs(16).saturating_sub(opened.elapsed())).await;
    s.sign_in(ALICE.0, ALICE.1, 1).await;
    s.wait_for_profile().await;
    eventually(Duration::from_secs(5), "the login verified", || async {
        s.outcomes("verified").await >= 1.0
    })
    .await;
    assert_eq!(s.outcomes("invalid").await, 0.0, "the token was valid");
    s.session.quit().await;
}

#[tokio::test]
async fn a_page_left_open_past_the_token_ttl_still_logs_in_fetch() {
    a_page_outlives_its_token("/app").await;
}

#[tokio::test]
async fn a_page_left_open_past_the_token_ttl_still_logs_in_xhr() {
    a_page_outlives_its_token("/app-xhr").await;
}

/// A blocked login: the page's own code gets the refusal (and says "Login failed"), and the
/// person sees the incident reference to give the help desk, the same one the audit has.
async fn a_block_shows_its_reference(page: &str, shot: &str) {
    let _one = ONE_BROWSER.lock().await;
    let s = stack("policy:\n  enrolling: block\n").await;
    s.open(page).await;
    s.sign_in(ALICE.0, ALICE.1, 2).await;
    let overlay = "(() => { const h = document.querySelector('[data-gaitkeeper]'); const c = h && h.shadowRoot && h.shadowRoot.querySelector('code'); return c ? c.textContent : ''; })()";
    s.session
        .wait_for(overlay, "the incident reference over the page")
        .await;
    let reference = s.session.execute(&format!("return {overlay};")).await;
    let reference = reference.as_str().unwrap().to_string();
    assert!(reference.starts_with("GK-"), "{reference}");
    let shown = s
        .session
        .execute("return document.querySelector('[data-gaitkeeper]').shadowRoot.textContent;")
        .await;
    assert!(
        shown.as_str().unwrap().contains("contact support"),
        "{shown}"
    );
    let path = s.session.screenshot(shot).await;
    eprintln!("screenshot: {}", path.display());
    assert!(s.status_text().await.starts_with("Login failed"));
    assert_eq!(s.app.last_login().await["username"], Value::Null);
    eventually(Duration::from_secs(10), "the block audited", || async {
        let (ok, shown) = s.gk.audit(&["show", &reference]);
        ok && shown.contains("block")
    })
    .await;
    s.session.quit().await;
}

#[tokio::test]
async fn a_blocked_fetch_login_shows_its_incident_reference() {
    a_block_shows_its_reference("/app", "portal-fetch-blocked").await;
}

#[tokio::test]
async fn a_blocked_xhr_login_shows_its_incident_reference() {
    a_block_shows_its_reference("/app-xhr", "portal-xhr-blocked").await;
}

// ---- without a browser ----

/// The page token the portal page was served with.
async fn portal_token(gk: &Gaitkeeper) -> String {
    let page = gk.get_text("/app").await;
    page.split("data-gk-token=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a page token on the portal")
        .to_string()
}

/// Posts the portal's JSON login of alice with a person's telemetry from a fresh page.
async fn token_login(gk: &Gaitkeeper, password: &str, seed: u64) -> reqwest::Response {
    token_login_as(gk, ALICE.0, password, seed).await
}

async fn token_login_as(
    gk: &Gaitkeeper,
    user: &str,
    password: &str,
    seed: u64,
) -> reqwest::Response {
    let token = portal_token(gk).await;
    let telemetry = fetch_payload(&token, &STEADY, user.len(), password.len(), seed);
    client()
        .post(gk.url("/api/token"))
        .header("content-type", "application/json")
        .header("x-gaitkeeper-telemetry", b64(&telemetry))
        .body(json!({"username": user, "password": password}).to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_json_login_answered_200_is_told_by_its_body() {
    let app = LegacyApp::start().await;
    for (success, what) in [
        ("json_pointer_present: \"/access_token\"", "pointer present"),
        (
            "json_equals: { pointer: \"/token_type\", value: \"Bearer\" }",
            "value equals",
        ),
    ] {
        let routes = common::edited(PORTAL, "json_pointer_present: \"/access_token\"", success);
        let gk = Gaitkeeper::start_with(app.addr, "", &routes).await;
        let r = token_login(&gk, ALICE.1, 1).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert!(body["access_token"].is_string(), "{what}: {body}");
        let r = token_login(&gk, "wonderland-24", 2).await;
        assert_eq!(r.status(), 200, "the app answers 200 to a wrong password");
        assert_eq!(r.json::<Value>().await.unwrap()["ok"], false);
        eventually(Duration::from_secs(5), "both outcomes", || async {
            outcomes(&gk, "verified").await == 1.0 && outcomes(&gk, "failed").await == 1.0
        })
        .await;
        // The failure counts towards regulation; the success taught the model.
        eventually(Duration::from_secs(5), "the success learnt", || async {
            gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
                .await
                == 1.0
        })
        .await;
    }
}

#[tokio::test]
async fn a_route_whose_success_signal_never_matches_is_reported() {
    let app = LegacyApp::start().await;
    // The operator kept the default success signal (a redirect): every portal login, even
    // alice's right password, counts as failed.
    let routes = PORTAL.replace(
        "    success: { status: [200], json_pointer_present: \"/access_token\" }\n",
        "",
    );
    let more = format!(
        "{routes}regulation:\n  max_failures_per_user: 1000\n  max_failures_per_ip: 1000\n"
    );
    let gk = Gaitkeeper::start_with(app.addr, "", &more).await;
    let gauge = "gaitkeeper_route_without_success{app=\"default\",route=\"portal\"}";
    for seed in 0..19 {
        let r = token_login(&gk, ALICE.1, seed).await;
        let status = r.status();
        assert_eq!(status, 200, "login {seed}: {}", r.text().await.unwrap());
    }
    assert_eq!(gk.metric(gauge).await, 0.0, "not after 19 answers");
    assert!(!gk.log().contains("no login on this route"));
    assert_eq!(token_login(&gk, ALICE.1, 19).await.status(), 200);
    eventually(Duration::from_secs(5), "the warning", || async {
        gk.metric(gauge).await == 1.0
    })
    .await;
    let log = gk.log();
    let line = log
        .lines()
        .find(|l| l.contains("no login on this route has counted as successful"))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert!(line.contains("portal"), "{line}");
    assert!(
        line.contains("json_pointer_present") && line.contains("[200]"),
        "names the likely fix: {line}"
    );
    assert_eq!(outcomes(&gk, "verified").await, 0.0);
}

/// A client bound to `local` (a 127.0.0.x address), as a CLI on another host would be.
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(local.parse::<std::net::IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn machine_login(
    gk: &Gaitkeeper,
    from: &str,
    header: Option<(&str, &str)>,
    password: &str,
) -> reqwest::Response {
    let mut request = client_from(from)
        .post(gk.url("/api/token"))
        .header("content-type", "application/json")
        .body(json!({"username": ALICE.0, "password": password}).to_string());
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_machine_client_logs_in_without_telemetry_from_its_address_only() {
    let app = LegacyApp::start().await;
    let more = format!(
        "{PORTAL}    machine_clients: {{ addresses: [\"127.0.0.2/32\"] }}\nregulation:\n  max_failures_per_user: 3\n"
    );
    let gk = Gaitkeeper::start_with(app.addr, "", &more).await;
    // From its address, without telemetry: forwarded, and the CLI gets its token.
    let r = machine_login(&gk, "127.0.0.2", None, ALICE.1).await;
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["access_token"].is_string());
    assert_eq!(app.last_login().await["username"], "alice");
    eventually(Duration::from_secs(5), "audited as machine", || async {
        gk.metric(
            "gaitkeeper_login_decisions_total{app=\"default\",decision=\"allow\",route=\"portal\"}",
        )
        .await
            == 1.0
    })
    .await;
    eventually(Duration::from_secs(10), "audited as machine", || async {
        gk.audit(&["tail"]).1.contains("\"machine\"")
    })
    .await;
    // From anywhere else the same request is a login without telemetry: refused.
    let before = app.last_login().await;
    let r = machine_login(&gk, "127.0.0.3", None, ALICE.1).await;
    assert_ne!(r.status(), 200);
    assert_eq!(app.last_login().await, before, "not forwarded");
    // Still regulated: wrong passwords from the machine's address count, and then even the
    // right one is refused until the window passes.
    for _ in 0..3 {
        let r = machine_login(&gk, "127.0.0.2", None, "guess").await;
        assert_eq!(r.json::<Value>().await.unwrap()["ok"], false);
    }
    eventually(Duration::from_secs(5), "the failures counted", || async {
        outcomes(&gk, "failed").await == 3.0
    })
    .await;
    let r = machine_login(&gk, "127.0.0.2", None, ALICE.1).await;
    assert_ne!(r.status(), 200, "regulated");
}

#[tokio::test]
async fn a_machine_client_with_the_header_secret_gets_through_and_the_secret_stays_here() {
    let app = LegacyApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("deploy.key");
    common::write_secret(&secret, "k7Qp2vX9mZ4tR8wB3nL6yH1sJd5fG0aE2uC8");
    let more = format!(
        "{PORTAL}    machine_clients: {{ header: X-Deploy-Key, secret: {{ file: {:?} }} }}\n",
        secret.display().to_string()
    );
    let gk = Gaitkeeper::start_with(app.addr, "", &more).await;
    let good = Some(("x-deploy-key", "k7Qp2vX9mZ4tR8wB3nL6yH1sJd5fG0aE2uC8"));
    let r = machine_login(&gk, "127.0.0.1", good, ALICE.1).await;
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["access_token"].is_string());
    let login = app.last_login().await;
    assert_eq!(login["username"], "alice");
    assert!(
        login["headers"].get("x-deploy-key").is_none(),
        "the secret never reaches the app: {login}"
    );
    let before = app.last_login().await;
    for wrong in [
        Some(("x-deploy-key", "k7Qp2vX9mZ4tR8wB3nL6yH1sJd5fG0aE2uC9")),
        Some(("x-deploy-key", "")),
        Some(("x-other-key", "k7Qp2vX9mZ4tR8wB3nL6yH1sJd5fG0aE2uC8")),
        None,
    ] {
        let r = machine_login(&gk, "127.0.0.1", wrong, ALICE.1).await;
        assert_ne!(r.status(), 200, "{wrong:?}");
    }
    assert_eq!(app.last_login().await, before, "none forwarded");
}

/// A portal login that gaitkeeper challenges: the challenge URL its 401 names (for the
/// page's script) and the binding cookie.
async fn challenged_token_login(gk: &Gaitkeeper, seed: u64) -> (String, String) {
    challenged_token_login_as(gk, ALICE, seed).await
}

async fn challenged_token_login_as(
    gk: &Gaitkeeper,
    (user, password): (&str, &str),
    seed: u64,
) -> (String, String) {
    let r = token_login_as(gk, user, password, seed).await;
    assert_eq!(r.status(), 401);
    let url = r
        .headers()
        .get("x-gaitkeeper-challenge")
        .and_then(|v| v.to_str().ok())
        .expect("the challenge's URL for the script")
        .to_string();
    let cookie = common::legacy::set_cookie(&r, "__gk_challenge").expect("the binding cookie");
    (url, format!("__gk_challenge={cookie}"))
}

/// Passes a challenge the way the script's frame does (`?inline=frame`) and returns the
/// one-time proof the passed page hands to the script.
async fn pass_in_frame(gk: &Gaitkeeper, url: &str, cookie: &str, code: &str) -> String {
    let path = url.trim_start_matches(&gk.url(""));
    let path = path.split('?').next().unwrap().to_string();
    let page = client()
        .get(gk.url(&format!("{path}?inline=frame")))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("frame-ancestors 'self'"), "{csp}");
    let page = page.text().await.unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF field")
        .to_string();
    let passed = client()
        .post(gk.url(&path))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&code={code}"))
        .send()
        .await
        .unwrap();
    assert_eq!(passed.status(), 200, "the passed page, not a redirect");
    let html = passed.text().await.unwrap();
    html.split("resume: \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no proof in {html}"))
        .to_string()
}

async fn resume(gk: &Gaitkeeper, from: &str, proof: &str) -> reqwest::Response {
    client_from(from)
        .post(gk.url("/api/token"))
        .header("content-type", "application/json")
        .header("x-gaitkeeper-resume", proof)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_resume_proof_is_one_use_and_only_from_the_challenged_client() {
    let app = LegacyApp::start().await;
    let gk = Gaitkeeper::start_with(
        app.addr,
        "",
        &format!("{PORTAL}policy:\n  enrolling: challenge\n"),
    )
    .await;
    let totp = enroll_totp(&gk, ALICE.0);
    // Guessed proofs release nothing.
    for proof in ["", "x", &"A".repeat(43), &"z".repeat(5000)] {
        let r = resume(&gk, "127.0.0.1", proof).await;
        assert!(r.status().is_client_error(), "{proof:.8}: {}", r.status());
    }
    assert_eq!(app.last_login().await["username"], Value::Null);

    // The challenged client resumes once: the app's own answer (its token) comes back.
    let (url, cookie) = challenged_token_login(&gk, 1).await;
    assert_eq!(app.last_login().await["username"], Value::Null, "held");
    let code = totp.generate_current().to_string();
    let proof = pass_in_frame(&gk, &url, &cookie, &code).await;
    let r = resume(&gk, "127.0.0.1", &proof).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().contains_key("x-gaitkeeper-token"),
        "a fresh page token"
    );
    assert!(r.json::<Value>().await.unwrap()["access_token"].is_string());
    assert_eq!(app.last_login().await["username"], "alice");
    let r = resume(&gk, "127.0.0.1", &proof).await;
    assert_eq!(r.status(), 410, "used up");

    // A proof that leaks to another client is refused there (and burnt).
    let (url, cookie) = challenged_token_login(&gk, 2).await;
    let next = next_step_code(&totp);
    let proof = pass_in_frame(&gk, &url, &cookie, &next).await;
    let before = app.last_login().await;
    let r = resume(&gk, "127.0.0.3", &proof).await;
    assert_eq!(r.status(), 410);
    assert_eq!(
        app.last_login().await,
        before,
        "nothing replayed for the other client"
    );
    assert_eq!(resume(&gk, "127.0.0.1", &proof).await.status(), 410);
}

/// The code of the next 30-second step (a used code cannot be used again).
fn next_step_code(totp: &totp_rs::Totp) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp.generate(now + 30).to_string()
}

#[tokio::test]
async fn an_external_provider_in_the_frame_opens_in_its_own_window_and_the_login_resumes() {
    let app = LegacyApp::start().await;
    let keys = tempfile::tempdir().unwrap();
    let request_secret = keys.path().join("request.key");
    common::write_secret(&request_secret, "request-secret-0123456789abcdef0123");
    let more = format!(
        "{PORTAL}policy:\n  enrolling: challenge\nmfa:\n  external:\n    name: \"Test IdP\"\n    url: \"http://127.0.0.1:9/verify\"\n    issuer: \"test-idp\"\n    request_secret: {{ file: {:?} }}\n    assertion:\n      algorithm: RS256\n      public_key_file: {:?}\n",
        request_secret.display().to_string(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mfa/rsa_public.pem"),
    );
    let gk = Gaitkeeper::start_with(app.addr, "", &more).await;
    // Bob has no TOTP: the provider is his only factor. Shown in the page's frame, the
    // challenge does not send the frame to the provider (providers refuse to be framed): it
    // links to it in a new window that keeps its opener.
    let (url, cookie) = challenged_token_login_as(&gk, BOB, 1).await;
    let path = url.trim_start_matches(&gk.url("")).to_string();
    let framed = client()
        .get(gk.url(&format!("{path}?inline=frame")))
        .header("cookie", &cookie)
        .header("host", gk.addr.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        framed.status(),
        200,
        "a page, not a redirect to the provider"
    );
    let html = framed.text().await.unwrap();
    let link = html
        .split("<a href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a link to the provider")
        .replace("&amp;", "&");
    assert!(
        html.contains("target=\"_blank\" rel=\"opener\">Use Test IdP</a>"),
        "{html}"
    );
    // The link leads to the provider with a signed request.
    let to_provider = if link.starts_with("http://127.0.0.1:9/") {
        link
    } else {
        let r = client()
            .get(gk.url(&link))
            .header("cookie", &cookie)
            .header("host", gk.addr.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        common::legacy::location(&r)
    };
    let request = to_provider
        .split("request=")
        .nth(1)
        .expect("a signed request");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["test-idp"]);
    let claims = jsonwebtoken::decode::<Value>(
        request,
        &jsonwebtoken::DecodingKey::from_secret(b"request-secret-0123456789abcdef0123"),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "bob");
    // The provider confirms bob; its window comes back to gaitkeeper, which hands the page
    // a proof instead of replaying the login there.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mfa/rsa_private.pem"
    ))
    .unwrap();
    let assertion = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"iss": "test-idp", "aud": "gaitkeeper", "sub": "bob", "cid": claims["cid"],
            "jti": "j-1", "iat": now, "exp": now + 120, "result": "pass"}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    let back = client()
        .get(gk.url(&format!("/__gk/challenge/callback?assertion={assertion}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200, "the passed page for the script");
    let html = back.text().await.unwrap();
    assert!(
        html.contains("w.parent.postMessage"),
        "reaches the page: {html}"
    );
    let proof = html
        .split("resume: \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a proof")
        .to_string();
    assert_eq!(
        app.last_login().await["username"],
        Value::Null,
        "still held"
    );
    let r = resume(&gk, "127.0.0.1", &proof).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["user"], "bob");
    assert_eq!(app.last_login().await["username"], "bob");
}

/// Node-RED's editor (from npm), as a new operator would front it: its login dialog is built
/// by jQuery and posts `/auth/token` by XMLHttpRequest; success is 200 with an `access_token`,
/// a wrong password 403. A wrong password and then the right one in the same dialog, each
/// challenged in the page (every login is: `enrolling: challenge`): the first ends in the
/// editor's own "Login failed", the second opens the editor, whose WebSocket works too.
#[tokio::test]
async fn node_reds_editor_logs_in_through_an_in_page_challenge() {
    if !common::apps::installed("node_reds_editor_logs_in_through_an_in_page_challenge") {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let app = common::apps::RealApp::node_red(&[ALICE]);
    let gk = Gaitkeeper::start_with(
        app.addr,
        "",
        "routes:\n  - name: editor\n    page: { paths: [\"/\"] }\n    submit: { path: \"/auth/token\" }\n    success: { status: [200], json_pointer_present: \"/access_token\" }\npolicy:\n  enrolling: challenge\n",
    )
    .await;
    let totp = enroll_totp(&gk, ALICE.0);
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver.session(profile.path()).await;
    session.goto(&gk.url("/")).await;
    session
        .wait_for(
            "window.__gaitkeeper && document.getElementById('node-dialog-login-password')",
            "the editor's login dialog and the capture script",
        )
        .await;
    let type_code = |code: String| {
        let session = &session;
        async move {
            session
                .wait_for(CODE_FIELD_FOCUSED, "the challenge over the editor")
                .await;
            session
                .actions(
                    json!([{"type": "key", "id": "keyboard", "actions": typing(&code, 50, 60)}]),
                )
                .await;
            press_enter(session).await;
        }
    };

    // A typo: challenged, passed, and the editor's own code gets Node-RED's 403.
    move_and_click(&session, "#node-dialog-login-username").await;
    let (mut keys, _, _) = human_typing(ALICE.0, 85, 125, 0);
    keys.extend(typing(TAB, 70, 160));
    keys.extend(human_typing("wonderland-24", 75, 115, 5).0);
    session
        .actions(json!([{"type": "key", "id": "keyboard", "actions": keys}]))
        .await;
    press_enter(&session).await;
    type_code(totp.generate_current().to_string()).await;
    session
        .wait_for(
            "document.getElementById('node-dialog-login-failed') && getComputedStyle(document.getElementById('node-dialog-login-failed')).display !== 'none'",
            "the editor's own Login failed",
        )
        .await;
    assert!(session
        .execute("return !document.querySelector('[data-gaitkeeper]');")
        .await
        .as_bool()
        .unwrap());

    // The right password in the same dialog, without a reload: a login, not a replay.
    move_and_click(&session, "#node-dialog-login-password").await;
    let mut keys = vec![
        json!({"type": "keyDown", "value": "\u{E009}"}),
        json!({"type": "keyDown", "value": "a"}),
        json!({"type": "pause", "duration": 60}),
        json!({"type": "keyUp", "value": "a"}),
        json!({"type": "keyUp", "value": "\u{E009}"}),
        json!({"type": "pause", "duration": 150}),
    ];
    keys.extend(typing("\u{E003}", 70, 200));
    keys.extend(human_typing(ALICE.1, 75, 115, 3).0);
    session
        .actions(json!([{"type": "key", "id": "keyboard", "actions": keys}]))
        .await;
    press_enter(&session).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The next 30-second step's code: the one just used cannot be used again.
    let code = totp.generate(now + 30).to_string();
    type_code(code).await;
    let shot = session.screenshot("node-red-challenge-passed").await;
    eprintln!("screenshot: {}", shot.display());
    session
        .wait_for(
            "!document.getElementById('node-dialog-login') && localStorage.getItem('auth-tokens') && document.getElementById('red-ui-workspace')",
            "the editor, signed in",
        )
        .await;
    let tokens = session
        .execute("return JSON.parse(localStorage.getItem('auth-tokens'));")
        .await;
    assert!(tokens["access_token"].is_string(), "{tokens}");
    let shot = session.screenshot("node-red-signed-in").await;
    eprintln!("screenshot: {}", shot.display());
    let outcome = |o: &str| {
        format!(
            "gaitkeeper_login_outcomes_total{{app=\"default\",outcome=\"{o}\",route=\"editor\"}}"
        )
    };
    eventually(
        Duration::from_secs(5),
        "one failed, one verified",
        || async {
            gk.metric(&outcome("failed")).await == 1.0
                && gk.metric(&outcome("verified")).await == 1.0
        },
    )
    .await;
    session.quit().await;
    // The editor's WebSocket (comms) went through gaitkeeper: its access line is written when
    // it closes, with the browser.
    eventually(
        Duration::from_secs(15),
        "the editor's WebSocket",
        || async { gk.log().contains("\"path\":\"/comms\",\"status\":101") },
    )
    .await;
}
