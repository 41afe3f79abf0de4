//! End to end in a real browser: headless Chromium (Debian's chromium + chromium-driver)
//! loads the bundled legacy app's login page through gaitkeeper, a person's input is played
//! with known timings, and the test checks what gaitkeeper received and what the app saw.

mod common;

use std::time::{Duration, Instant};

use common::legacy::{enroll_totp, LegacyApp, LEGACY_ROUTES};
use common::webdriver::{typing, ChromeDriver, Session, ENTER, TAB};
use common::Gaitkeeper;
use serde_json::{json, Value};

/// The legacy app's routes; a login whose capture script was sabotaged has no telemetry, and
/// these capture tests want it to reach the app (the decision tests cover blocking it).
const ROUTES: &str = "routes:\n  - name: login\n    page: { paths: [\"/login\"], methods: [GET, POST] }\n    submit: { path: \"/login\" }\n  - name: spa-login\n    page: { paths: [\"/spa-login\"] }\n    submit: { path: \"/api/login\" }\npolicy:\n  on_missing_telemetry: allow\n";

const USER: &str = "alice";
const PASSWORD: &str = "wonderland-42";
/// Timings played by the browser (ms): key held down, gap between keys.
const USER_DWELL: u64 = 80;
const USER_FLIGHT: u64 = 120;
const PASSWORD_DWELL: u64 = 70;
const PASSWORD_FLIGHT: u64 = 110;
/// How far the median measured time may stray from the played one (ms). Each key action also
/// costs chromedriver a dispatch round trip, a few ms on a busy machine; the exact comparison
/// is against the browser's own event times (see `install_truth_recorder`).
const MEDIAN_TOLERANCE: f64 = 15.0;
/// How far any single measured time may stray (ms): chromedriver's pauses overshoot when the
/// machine is busy, and the browser then (correctly) timestamps the later moment.
const SINGLE_TOLERANCE: f64 = 40.0;

/// One Chromium at a time: parallel browsers on a 2-core machine distort the timings.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn check_times(what: &str, measured: Vec<f64>, played: u64) {
    let played = played as f64;
    for m in &measured {
        assert!(
            (m - played).abs() <= SINGLE_TOLERANCE,
            "{what} {m} ms, played {played} ms: {measured:?}"
        );
    }
    let mid = median(measured.clone());
    assert!(
        (mid - played).abs() <= MEDIAN_TOLERANCE,
        "median {what} {mid} ms, played {played} ms: {measured:?}"
    );
}

/// Moves the mouse along a curve to the username field and clicks it.
async fn move_and_click(session: &Session, css: &str) {
    let target = session.element(css).await;
    let mut moves =
        vec![json!({"type": "pointerMove", "duration": 0, "x": 40, "y": 40, "origin": "viewport"})];
    for step in 1..=12 {
        let f = step as f64 / 12.0;
        moves.push(json!({
            "type": "pointerMove", "duration": 40, "origin": "viewport",
            "x": (40.0 + 300.0 * f) as i64, "y": (40.0 + 120.0 * f * f) as i64,
        }));
    }
    moves.push(json!({"type": "pointerMove", "duration": 120, "x": 0, "y": 0, "origin": target}));
    moves.push(json!({"type": "pointerDown", "button": 0}));
    moves.push(json!({"type": "pause", "duration": 90}));
    moves.push(json!({"type": "pointerUp", "button": 0}));
    session
        .actions(json!([{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": moves}]))
        .await;
}

/// Types the username, Tabs to the password and types it.
async fn type_credentials(session: &Session) {
    let mut keys = typing(USER, USER_DWELL, USER_FLIGHT);
    keys.extend(typing(TAB, 60, 150));
    keys.extend(typing(PASSWORD, PASSWORD_DWELL, PASSWORD_FLIGHT));
    session
        .actions(json!([{"type": "key", "id": "keyboard", "actions": keys}]))
        .await;
}

/// Presses Enter, which submits the form.
async fn press_enter(session: &Session) {
    session
        .actions(json!([{"type": "key", "id": "keyboard", "actions": typing(ENTER, 50, 0)}]))
        .await;
}

/// Records every key event's time as the browser itself stamps it, independently of the
/// capture script (read back with `read_truth` before the submit navigates away).
async fn install_truth_recorder(session: &Session) {
    session
        .execute(
            "window.__truth = [];
             for (const type of ['keydown', 'keyup']) {
               window.addEventListener(type, (e) => {
                 window.__truth.push([type === 'keydown' ? 'd' : 'u', e.timeStamp]);
               }, true);
             }",
        )
        .await;
}

async fn read_truth(session: &Session) -> Vec<Value> {
    session
        .execute("return window.__truth;")
        .await
        .as_array()
        .cloned()
        .unwrap()
}

/// The payload's key events must be exactly the browser's, to the 0.1 ms the schema keeps;
/// after them comes only the Enter that submitted the form.
fn check_against_truth(truth: &[Value], payload: &Value) {
    let keys = payload["k"].as_array().unwrap();
    assert_eq!(
        keys.len(),
        truth.len() + 1,
        "every key event, no more: {truth:?}"
    );
    let enter = &keys[truth.len()];
    assert_eq!(
        (&enter[1], &enter[2]),
        (&json!("d"), &json!("e")),
        "the submitting Enter"
    );
    for (key, seen) in keys.iter().zip(truth) {
        assert_eq!(key[1], seen[0], "event kind");
        let (t, expected) = (key[0].as_f64().unwrap(), seen[1].as_f64().unwrap());
        assert!(
            (t - expected).abs() <= 0.051,
            "payload time {t} ms, browser time {expected} ms"
        );
    }
}

async fn wait_for_url(session: &Session, suffix: &str) {
    wait_for_url_where(session, suffix, |url| url.ends_with(suffix)).await
}

async fn wait_for_url_where(session: &Session, what: &str, test: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if test(&session.current_url().await) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never reached {what}: at {}",
            session.current_url().await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The index of the named field in the payload's field table.
fn field(payload: &Value, name: &str) -> u64 {
    payload["f"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .find(|(_, f)| f["n"] == name)
        .map(|(i, _)| i as u64)
        .unwrap_or_else(|| panic!("no field {name} in {}", payload["f"]))
}

/// Checks the key events of one field: counts, classes, dwell and flight times.
fn check_typing(
    payload: &Value,
    field_index: u64,
    count: usize,
    class: &str,
    dwell: u64,
    flight: u64,
) {
    let keys: Vec<&Value> = payload["k"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k[3] == field_index && k[2] == class)
        .collect();
    let downs: Vec<&Value> = keys.iter().copied().filter(|k| k[1] == "d").collect();
    let ups: Vec<&Value> = keys.iter().copied().filter(|k| k[1] == "u").collect();
    assert_eq!(downs.len(), count, "key-downs of field {field_index}");
    assert_eq!(ups.len(), count, "key-ups of field {field_index}");
    let mut dwells = Vec::new();
    for (down, up) in downs.iter().zip(&ups) {
        assert_eq!(down[4], up[4], "down and up pair by stroke id");
        dwells.push(up[0].as_f64().unwrap() - down[0].as_f64().unwrap());
    }
    check_times("dwell", dwells, dwell);
    let flights: Vec<f64> = ups
        .iter()
        .zip(downs.iter().skip(1))
        .map(|(up, next)| next[0].as_f64().unwrap() - up[0].as_f64().unwrap())
        .collect();
    check_times("flight", flights, flight);
}

/// Nothing typed may appear in the payload: not the password, not the username, and no key
/// identity: every key event carries only a class code, and no object has a key-like member.
fn check_privacy(payload: &Value) {
    let text = payload.to_string();
    for secret in [PASSWORD, "wonderland", USER] {
        assert!(
            !text.contains(secret),
            "the payload contains {secret:?}: {text}"
        );
    }
    for key in payload["k"].as_array().unwrap() {
        let event = key.as_array().unwrap();
        assert_eq!(
            event.len(),
            6,
            "key events are [t, kind, class, field, stroke, flags]"
        );
        let class = event[2].as_str().unwrap();
        assert!(
            ["l", "d", "s", "m", "b", "t", "e", "o", "c"].contains(&class),
            "key class {class}"
        );
    }
    fn no_identity_members(value: &Value) {
        match value {
            Value::Object(map) => {
                for (name, inner) in map {
                    assert!(
                        !["key", "code", "char", "value", "which", "keyCode"]
                            .contains(&name.as_str()),
                        "member {name}"
                    );
                    no_identity_members(inner);
                }
            }
            Value::Array(items) => items.iter().for_each(no_identity_members),
            _ => {}
        }
    }
    no_identity_members(payload);
}

async fn start_stack() -> (
    LegacyApp,
    Gaitkeeper,
    ChromeDriver,
    Session,
    tempfile::TempDir,
) {
    let app = LegacyApp::start().await;
    let gk = Gaitkeeper::start_with(app.addr, "", ROUTES).await;
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver.session(profile.path()).await;
    (app, gk, driver, session, profile)
}

/// Plays a person logging in on `page`: the mouse along a curve to the username field, a
/// click, the credentials typed with a Tab between them, then Enter; waits for the app's
/// account page. `page_script`, if any, runs first on the loaded page. Returns the browser's
/// own key-event times up to the Enter (see `install_truth_recorder`).
async fn log_in(
    session: &Session,
    gk: &Gaitkeeper,
    page: &str,
    username_css: &str,
    page_script: Option<&str>,
) -> Vec<Value> {
    session.goto(&gk.url(page)).await;
    session
        .wait_for("window.__gaitkeeper", "the capture script")
        .await;
    if let Some(script) = page_script {
        session.execute(script).await;
    }
    install_truth_recorder(session).await;
    move_and_click(session, username_css).await;
    type_credentials(session).await;
    let truth = read_truth(session).await;
    press_enter(session).await;
    wait_for_url(session, "/account").await;
    truth
}

/// The most recent login submit gaitkeeper recorded for `route`.
async fn last_submit(gk: &Gaitkeeper, route: &str) -> Value {
    gk.telemetry()
        .await
        .into_iter()
        .rev()
        .find(|e| e["route"] == route)
        .expect("a login submit")
}

#[tokio::test]
async fn a_classic_form_login_carries_exact_behaviour_and_the_app_sees_its_own_form() {
    let _one = ONE_BROWSER.lock().await;
    let (app, gk, _driver, session, _profile) = start_stack().await;
    let truth = log_in(&session, &gk, "/login", "input[name=username]", None).await;
    assert!(
        session.source().await.contains("Welcome, alice"),
        "logged in through gaitkeeper"
    );

    let entry = last_submit(&gk, "login").await;
    assert_eq!(entry["outcome"], "ok", "{entry}");
    assert_eq!(entry["transport"], "form");
    let payload = &entry["payload"];
    assert_eq!(payload["v"], 1);

    check_against_truth(&truth, payload);
    let user = field(payload, "username");
    let password = field(payload, "password");
    check_typing(payload, user, USER.len(), "l", USER_DWELL, USER_FLIGHT);
    check_typing(
        payload,
        password,
        PASSWORD.len(),
        "c",
        PASSWORD_DWELL,
        PASSWORD_FLIGHT,
    );
    // Navigation: the mouse brought focus to the username, Tab to the password.
    let focus: Vec<(u64, &str)> = payload["fc"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f[1].as_u64().unwrap(), f[2].as_str().unwrap()))
        .collect();
    assert!(focus.contains(&(user, "mouse")), "{focus:?}");
    assert!(focus.contains(&(password, "tab")), "{focus:?}");
    assert!(
        payload["m"].as_array().unwrap().len() >= 10,
        "mouse path sampled"
    );
    assert!(
        !payload["c"].as_array().unwrap().is_empty(),
        "the click was seen"
    );
    check_privacy(payload);

    // The app got its own form: no telemetry field, its CSRF field intact.
    let login = app.last_login().await;
    assert_eq!(login["path"], "/login");
    assert_eq!(
        login["field_names"],
        json!(["username", "password", "csrf_token"])
    );
    assert_eq!(login["username"], "alice");
    // The legacy app has no favicon; that 404 is the app's own and not a script error.
    let errors: Vec<String> = session
        .console_errors()
        .await
        .into_iter()
        .filter(|e| !e.contains("/favicon.ico"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    session.quit().await;
}

#[tokio::test]
async fn a_fetch_login_carries_telemetry_in_the_header() {
    let _one = ONE_BROWSER.lock().await;
    let (app, gk, _driver, session, _profile) = start_stack().await;
    let truth = log_in(&session, &gk, "/spa-login", "#username", None).await;

    let entry = last_submit(&gk, "spa-login").await;
    assert_eq!(entry["outcome"], "ok", "{entry}");
    assert_eq!(entry["transport"], "header");
    let payload = &entry["payload"];
    check_against_truth(&truth, payload);
    check_typing(
        payload,
        field(payload, "username"),
        USER.len(),
        "l",
        USER_DWELL,
        USER_FLIGHT,
    );
    check_typing(
        payload,
        field(payload, "password"),
        PASSWORD.len(),
        "c",
        PASSWORD_DWELL,
        PASSWORD_FLIGHT,
    );
    check_privacy(payload);

    let login = app.last_login().await;
    assert_eq!(login["path"], "/api/login");
    assert_eq!(login["username"], "alice");
    let headers = login["headers"].as_object().unwrap();
    assert!(
        !headers.keys().any(|h| h.contains("gaitkeeper")),
        "{headers:?}"
    );
    session.quit().await;
}

#[tokio::test]
async fn a_failing_capture_script_never_stops_the_login() {
    let _one = ONE_BROWSER.lock().await;
    let (app, gk, _driver, session, _profile) = start_stack().await;
    // Break what the script needs to build its payload, as a hostile or buggy page might.
    let sabotage =
        "TextEncoder.prototype.encode = () => { throw new Error('broken by the page'); };";
    log_in(
        &session,
        &gk,
        "/login",
        "input[name=username]",
        Some(sabotage),
    )
    .await;
    assert!(session.source().await.contains("Welcome, alice"));

    // The login went through without telemetry, and the app got exactly its own form.
    let login = app.last_login().await;
    assert_eq!(
        login["field_names"],
        json!(["username", "password", "csrf_token"])
    );
    let entry = last_submit(&gk, "login").await;
    assert_eq!(entry["outcome"], "missing");
    session.quit().await;
}

/// Logs alice in on `page` while every login is challenged (`enrolling: challenge`): the
/// browser lands on the challenge page, the TOTP code is typed, and the held login is replayed
/// so the app's own session starts.
async fn challenged_login(page: &str, username_css: &str) {
    let _one = ONE_BROWSER.lock().await;
    let app = LegacyApp::start().await;
    let more = format!("{LEGACY_ROUTES}policy:\n  enrolling: challenge\n");
    let gk = Gaitkeeper::start_with(app.addr, "", &more).await;
    let totp = enroll_totp(&gk, USER);
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver.session(profile.path()).await;

    session.goto(&gk.url(page)).await;
    session
        .wait_for("window.__gaitkeeper", "the capture script")
        .await;
    move_and_click(&session, username_css).await;
    type_credentials(&session).await;
    press_enter(&session).await;
    wait_for_url_where(&session, "the challenge page", |url| {
        url.contains("/__gk/challenge/")
    })
    .await;
    assert_eq!(
        app.last_login().await["username"],
        Value::Null,
        "the login is held, not sent to the app"
    );
    let code = totp.generate_current().to_string();
    session
        .actions(json!([{"type": "key", "id": "keyboard", "actions": typing(&code, 50, 60)}]))
        .await;
    press_enter(&session).await;
    wait_for_url(&session, "/account").await;
    assert!(
        session.source().await.contains("Welcome, alice"),
        "logged in by the replayed login"
    );
    assert_eq!(app.last_login().await["username"], "alice");
    session.quit().await;
}

#[tokio::test]
async fn a_challenged_form_login_is_finished_with_a_totp_code() {
    challenged_login("/login", "input[name=username]").await;
}

#[tokio::test]
async fn a_challenged_fetch_login_is_finished_with_a_totp_code() {
    challenged_login("/spa-login", "#username").await;
}
