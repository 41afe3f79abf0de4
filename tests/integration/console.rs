//! The operator's console and the admin listener's authentication, end to end: the real
//! gaitkeeper binary in front of the bundled legacy app, real logins (allowed, challenged,
//! blocked, failed) through the public listener, and headless Chromium reading the console on
//! the admin listener; `admin.auth` answering 401; the public listener serving none of it.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::behaviour::{payload, STEADY};
use common::legacy::{
    challenge_from, enroll_totp, location, login_page, post_code, submit, LegacyApp, ALICE,
    LEGACY_ROUTES,
};
use common::webdriver::ChromeDriver;
use common::{client, config_text, eventually, free_port, write_secret, EchoApp, Gaitkeeper};

const TOKEN: &str = "console-admin-token-7Hq2Lm9Xv4Rt8Kp3Wz6";
const PASSWORD: &str = "console-basic-password-Jd5Nf8Qs2Vb7Yc4Mx";

/// Starts gaitkeeper before `upstream` with `admin.auth` (a bearer token and a basic-auth
/// password, each from a secret file) and `more` top-level YAML.
async fn start_with_auth(
    upstream: std::net::SocketAddr,
    auth_extra: &str,
    more: &str,
) -> Gaitkeeper {
    let dir = tempfile::tempdir().unwrap();
    let (token, password) = (
        dir.path().join("admin.token"),
        dir.path().join("admin.password"),
    );
    write_secret(&token, TOKEN);
    write_secret(&password, PASSWORD);
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = config_text(addr, admin, &dir.path().join("data"), upstream, "").replace(
        "  debug_telemetry: true\n",
        &format!(
            "  debug_telemetry: true\n  auth:\n    bearer: {{ file: {token:?} }}\n    basic: {{ user: ops, password: {{ file: {password:?} }} }}\n{auth_extra}"
        ),
    ) + common::HARNESS_CAPTURE
        + more;
    Gaitkeeper::start_in(dir, addr, admin, false, &text).await
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn with_admin_auth_the_console_analyze_and_debug_answer_401_without_the_credential() {
    let app = EchoApp::start("app").await;
    let gk = start_with_auth(app.addr, "", "").await;
    let admin = |path: &str| format!("http://{}{path}", gk.admin);
    let http = client();

    // Probes stay open.
    for open in ["/healthz", "/readyz"] {
        let r = http.get(admin(open)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{open}");
    }
    // Everything else needs the credential, in every spelling.
    let analyze = serde_json::json!({"mouse_speed": 420.0, "user": "alice"});
    for path in [
        "/console/",
        "/console",
        "/console/user?name=alice",
        "/console/incident?ref=GK-0123456789",
        "/console/docs",
        "/console/console.css",
        "/CONSOLE/",
        "/debug/telemetry",
        "/metrics",
        "/HEALTHZ",
        "//healthz",
        "/nothing-here",
    ] {
        for credential in [
            None,
            Some("Bearer wrong-token"),
            Some(basic("ops", TOKEN).as_str()),
        ] {
            let mut request = http.get(admin(path));
            if let Some(c) = credential {
                request = request.header("authorization", c);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 401, "GET {path} with {credential:?}");
            let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
            assert_eq!(challenges.len(), 2, "basic and bearer offered");
            let body = r.text().await.unwrap();
            assert!(!body.contains(TOKEN) && !body.contains(PASSWORD), "{body}");
        }
    }
    let r = http
        .post(admin("/__gk/analyze"))
        .json(&analyze)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // With the token or the password, the operator is let in.
    let bearer = format!("Bearer {TOKEN}");
    for credential in [bearer.as_str(), &basic("ops", PASSWORD)] {
        let r = http
            .get(admin("/console/"))
            .header("authorization", credential)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("default-src 'none'") && !csp.contains("unsafe"),
            "{csp}"
        );
        let page = r.text().await.unwrap();
        assert!(
            page.contains("gaitkeeper console") && page.contains("What if the thresholds moved?"),
            "{page}"
        );
    }
    let r = http
        .post(admin("/__gk/analyze"))
        .header("authorization", &bearer)
        .json(&analyze)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(admin("/debug/telemetry"))
        .header("authorization", &bearer)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-gaitkeeper-warning"));
    assert!(r.text().await.unwrap().contains("Sensitive."));
    // A form that would change something does not exist: the console takes GET only.
    let r = http
        .post(admin("/console/"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(!gk.log().contains(TOKEN), "the token never reaches the log");
}

#[tokio::test]
async fn a_new_admin_token_takes_effect_on_reload_and_the_old_one_stops_working() {
    let app = EchoApp::start("app").await;
    let gk = start_with_auth(app.addr, "", "").await;
    let console = format!("http://{}/console/", gk.admin);
    let status = |token: &'static str| {
        let console = console.clone();
        async move {
            client()
                .get(&console)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(status(TOKEN).await, 200);
    const NEW: &str = "rotated-admin-token-Qw8Er5Ty2Ui9Op4As7";
    write_secret(&gk.dir.path().join("admin.token"), NEW);
    gk.rewrite_config(&std::fs::read_to_string(&gk.config_path).unwrap());
    eventually(
        Duration::from_secs(10),
        "the new token accepted",
        || async { status(NEW).await == 200 },
    )
    .await;
    assert_eq!(status(TOKEN).await, 401, "the old token is refused");
}

#[tokio::test]
async fn an_operator_opens_the_console_in_chromium_with_the_basic_password() {
    let _one = crate::browser::ONE_BROWSER.lock().await;
    let app = EchoApp::start("app").await;
    let gk = start_with_auth(app.addr, "", "").await;
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver.session(profile.path()).await;
    // The credentials in the address stand for what the operator types into the browser's
    // prompt; the stylesheet and icon then load with them (no console errors).
    open(
        &session,
        &format!("http://ops:{PASSWORD}@{}/console/", gk.admin),
        "[data-count=logins]",
    )
    .await;
    assert_eq!(session.console_errors().await, Vec::<String>::new());
    let styled = session
        .execute("return getComputedStyle(document.querySelector('header')).display;")
        .await;
    assert_eq!(styled, "flex", "the stylesheet loaded behind the password");
    session.quit().await;
}

#[tokio::test]
async fn metrics_open_for_a_scraper_opens_nothing_else() {
    let app = EchoApp::start("app").await;
    let gk = start_with_auth(app.addr, "    metrics: open\n", "").await;
    let r = client()
        .get(format!("http://{}/metrics", gk.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for path in ["/console/", "/debug/telemetry"] {
        let r = client()
            .get(format!("http://{}{path}", gk.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
}

#[tokio::test]
async fn the_public_listener_never_serves_the_console_analyze_or_debug_in_any_spelling() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "").await;
    let http = client();
    // The app's own namespace: forwarded to the app (which answers for itself), never answered
    // with gaitkeeper's console or telemetry.
    for path in [
        "/console/",
        "/console",
        "/CONSOLE/",
        "//console/",
        "/%63onsole/",
        "/./console/",
        "/x/../console/",
        "/console/user?name=alice",
        "/console/incident?ref=GK-0123456789",
        "/console/docs",
        "/debug/telemetry",
        "/DEBUG/telemetry",
        "//debug//telemetry",
        "/debug/%74elemetry",
        "/debug/./telemetry",
    ] {
        let r = http.get(gk.url(path)).send().await.unwrap();
        assert_eq!(
            r.headers().get("x-echo-app").map(|v| v.to_str().unwrap()),
            Some("app"),
            "{path} is the app's"
        );
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("gaitkeeper console") && !body.contains("\"payload\""),
            "{path}: {body}"
        );
    }
    // The analyze API sits under the reserved prefix: answered 404 by gaitkeeper in every
    // spelling, never scored, never forwarded.
    let seen_before = app.seen().len();
    let body = serde_json::json!({"mouse_speed": 420.0, "user": "alice"});
    for path in [
        "/__gk/analyze",
        "/__GK/analyze",
        "/__gk/ANALYZE",
        "//__gk/analyze",
        "/%5F%5Fgk/analyze",
        "/__gk%2fanalyze",
        "/./__gk/analyze",
        "/x/../__gk/analyze",
        "/__gk//analyze",
    ] {
        let r = http.post(gk.url(path)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(!r.text().await.unwrap().contains("risk"), "{path}");
    }
    assert_eq!(app.seen().len(), seen_before, "none reached the app");
}

/// One login through the form: `payload` (None: no telemetry) as the capture script would.
async fn log_in(
    gk: &Gaitkeeper,
    who: (&str, &str),
    telemetry: Option<&str>,
    seed: u64,
) -> reqwest::Response {
    let page = login_page(gk).await;
    let generated;
    let p = match telemetry {
        Some("steady") => {
            generated = payload(&page.gk_token, &STEADY, who.0.len(), who.1.len(), seed);
            Some(generated.as_str())
        }
        other => other,
    };
    submit(gk, &page, who.0, who.1, p).await
}

/// Loads `url` and waits until an element `ready` is on it.
async fn open(session: &common::webdriver::Session, url: &str, ready: &str) {
    session.goto(url).await;
    session
        .wait_for(&format!("document.querySelector('{ready}')"), url)
        .await;
}

/// The trail's logins as `gaitkeeper audit tail` prints them: per incident, its decision and
/// how it ended (the last outcome that is not `challenged`).
fn logins_in_trail(gk: &Gaitkeeper) -> HashMap<String, (String, String)> {
    let (ok, out) = gk.audit(&["tail", "-n", "1000"]);
    assert!(ok, "{out}");
    let mut logins: HashMap<String, (String, String)> = HashMap::new();
    for line in out.lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let (Some(incident), Some(decision)) =
            (record["incident"].as_str(), record["decision"].as_str())
        else {
            continue;
        };
        let outcome = record["outcome"].as_str().unwrap_or("pending").to_string();
        let entry = logins
            .entry(incident.to_string())
            .or_insert_with(|| (decision.to_string(), outcome.clone()));
        if outcome != "challenged" {
            entry.1 = outcome;
        }
    }
    logins
}

fn count<'a>(values: impl Iterator<Item = &'a str>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v.to_string()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn the_console_in_chromium_shows_what_the_audit_trail_holds() {
    let _one = crate::browser::ONE_BROWSER.lock().await;
    let app = LegacyApp::start().await;
    let more = format!(
        "{LEGACY_ROUTES}store:\n  enrollment_logins: 5\n  keep_clear_names: true\npolicy:\n  on_missing_telemetry: challenge\n  on_invalid_telemetry: block\n"
    );
    let gk = Gaitkeeper::start_with(app.addr, "", &more).await;
    let totp = enroll_totp(&gk, ALICE.0);

    // Five logins enrol her (allowed while enrolling, verified by the app, learnt from).
    for seed in 0..5 {
        let r = log_in(&gk, ALICE, Some("steady"), seed).await;
        assert_eq!(location(&r), "/account", "enrolment login {seed}");
    }
    eventually(Duration::from_secs(15), "five logins learnt", || async {
        gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
            .await
            >= 5.0
    })
    .await;
    // Scored now: her usual rhythm is allowed, and the app lets her in.
    let r = log_in(&gk, ALICE, Some("steady"), 5).await;
    assert_eq!(location(&r), "/account", "{}", gk.log());
    // Her rhythm with the wrong password: allowed, and refused by the app.
    let r = log_in(&gk, (ALICE.0, "wonderland-24"), Some("steady"), 6).await;
    assert!(
        !location(&r).starts_with("/__gk/"),
        "allowed: {}",
        location(&r)
    );
    assert_ne!(location(&r), "/account");
    // Challenged (no telemetry), passed with her code: the app lets her in.
    let r = log_in(&gk, ALICE, None, 0).await;
    let challenge = challenge_from(&gk, &r).await;
    let r = post_code(&gk, &challenge, totp.generate_current()).await;
    assert_eq!(location(&r), "/account", "{}", gk.log());
    // Blocked: telemetry that is not a payload.
    let r = log_in(&gk, ALICE, Some("{not telemetry"), 0).await;
    assert_eq!(r.status(), 403);
    let block_page = r.text().await.unwrap();
    let at = block_page
        .find("GK-")
        .expect("an incident reference on the block page");
    let incident = block_page[at..at + 13].to_string();

    // Every login reaches the trail with how it ended (audit records are written after the
    // responses, by a background worker).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let logins = logins_in_trail(&gk);
        if logins.len() == 9
            && logins
                .values()
                .all(|(_, o)| o != "challenged" && o != "pending")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nine settled logins never reached the trail: {logins:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trail = logins_in_trail(&gk);
    let decisions = count(trail.values().map(|(d, _)| d.as_str()));
    let outcomes = count(trail.values().map(|(_, o)| o.as_str()));
    assert_eq!(
        decisions,
        BTreeMap::from([
            ("allow".into(), 7),
            ("block".into(), 1),
            ("challenge".into(), 1)
        ])
    );
    assert_eq!(
        outcomes,
        BTreeMap::from([
            ("blocked".into(), 1),
            ("failed".into(), 1),
            ("verified".into(), 7)
        ])
    );

    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let session = driver.session(profile.path()).await;
    let console = format!("http://{}/console/", gk.admin);
    session.set_window_size(1100, 1500).await;
    open(
        &session,
        &format!("{console}?period=1h"),
        "[data-count=logins]",
    )
    .await;
    let read = |selector: String| {
        let session = &session;
        async move {
            let text = session
                .execute(&format!(
                    "const e = document.querySelector('{selector}'); return e ? e.textContent : null;"
                ))
                .await;
            text.as_str()
                .unwrap_or_else(|| panic!("no {selector} on the page"))
                .trim()
                .to_string()
        }
    };
    assert_eq!(
        read("[data-count=logins]".into()).await,
        trail.len().to_string()
    );
    for (decision, n) in &decisions {
        assert_eq!(
            read(format!("[data-count={decision}]")).await,
            n.to_string(),
            "{decision}"
        );
    }
    for (outcome, n) in &outcomes {
        assert_eq!(
            read(format!("[data-outcome={outcome}]")).await,
            n.to_string(),
            "{outcome}"
        );
    }
    assert_eq!(read("[data-count=challenge-passed]".into()).await, "1");
    assert_eq!(read("[data-count=pass-rate]".into()).await, "100%");
    assert_eq!(read("[data-health=store]".into()).await, "answers");
    // The two scored logins are drawn (one genuine, one failed); of the others, the five
    // enrolment logins and the challenged one without telemetry had no risk to draw.
    let bars = session
        .execute("return document.querySelectorAll('#risk svg.chart rect').length;")
        .await;
    assert_eq!(bars, 2, "{}", read("#risk".into()).await);
    assert_eq!(read("[data-count=unscored]".into()).await, "6");
    let histogram = read("#risk".into()).await;
    assert!(
        histogram.contains("allow_below 0.60") && histogram.contains("block_at 0.95"),
        "{histogram}"
    );
    // The what-if form: with allow_below moved to 0.0001, the two scored logins (allowed
    // then) would be challenged; the enrolment logins, the challenged and the blocked one
    // keep their decisions.
    session
        .execute(
            "const f = document.querySelector('form.what-if'); \
             f.querySelector('input[name=try_allow_below]').value = '0.0001'; f.submit();",
        )
        .await;
    session
        .wait_for(
            "document.querySelector('[data-transition=allow-challenge]')",
            "the what-if answer",
        )
        .await;
    assert_eq!(read("[data-transition=allow-challenge]".into()).await, "2");
    assert_eq!(read("[data-transition=allow-allow]".into()).await, "5");
    assert_eq!(read("[data-transition=block-block]".into()).await, "1");
    assert_eq!(
        read("[data-transition=challenge-challenge]".into()).await,
        "1"
    );
    assert_eq!(read("[data-count=newly-stopped]".into()).await, "1");
    assert_eq!(read("[data-count=newly-allowed]".into()).await, "0");
    assert_ne!(read("[data-count=more-often]".into()).await, "0");
    session.screenshot("console-what-if").await;
    open(
        &session,
        &format!("{console}?period=1h"),
        "[data-count=logins]",
    )
    .await;
    // The most challenged user is shown by name: keep_clear_names is on.
    assert!(read("#challenged-users".into()).await.contains("alice"));
    // Nothing the CSP refused, no script errors.
    assert_eq!(session.console_errors().await, Vec::<String>::new());
    let shot = session.screenshot("console-overview").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    session
        .execute("window.scrollTo(0, document.body.scrollHeight);")
        .await;
    session.screenshot("console-overview-lower").await;

    // The analyze API on this listener (no admin.auth: an anonymous caller) scores alice but
    // never answers her usual ranges.
    let r = client()
        .post(format!("http://{}/__gk/analyze", gk.admin))
        .json(&serde_json::json!({"mouse_speed": 2000.0, "click_interval": 5.0, "key_dwell_time": 400.0, "key_flight_time": 900.0, "user": "alice"}))
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = r.json().await.unwrap();
    assert!(answer["risk"].is_number(), "{answer}");
    assert!(
        !answer["reasons"].as_array().unwrap().is_empty(),
        "{answer}"
    );
    for reason in answer["reasons"].as_array().unwrap() {
        assert!(reason.get("usual").is_none(), "{answer}");
    }

    // On a phone: one column, nothing wider than the screen.
    session.set_window_size(375, 800).await;
    open(
        &session,
        &format!("{console}?period=1h"),
        "[data-count=logins]",
    )
    .await;
    let overflow = session
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        )
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "wider than a phone by {overflow} px"
    );
    session.screenshot("console-overview-phone").await;
    session.set_window_size(1100, 1100).await;

    // A user page, searched by name from the header's form.
    session.goto(&console).await;
    session
        .execute("document.querySelector('input[name=name]').value = 'alice'; document.querySelector('form[action=\"/console/user\"]').submit();")
        .await;
    session
        .wait_for("document.querySelector('#logins')", "alice's page")
        .await;
    let user = read("main".into()).await;
    assert!(user.contains("User alice"), "{user}");
    assert_eq!(read("[data-user=enrolment]".into()).await, "enrolled");
    // The model learnt from her logins is saved behind (every few seconds): reloaded until
    // the page shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !read("[data-user=model]".into())
        .await
        .contains("model version")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "her model never showed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        session.execute("location.reload();").await;
        session
            .wait_for(
                "document.querySelector('[data-user=model]')",
                "alice's page",
            )
            .await;
    }
    assert!(user.contains("authenticator app (TOTP): since"), "{user}");
    let rows = session
        .execute("return document.querySelectorAll('#logins tbody tr').length;")
        .await;
    assert!(rows.as_u64().unwrap() >= 3, "her logins: {rows}");
    assert!(!user.contains(common::legacy::ALICE.1), "never a password");
    session.screenshot("console-user").await;

    // The incident of the blocked login, from its reference.
    session
        .goto(&format!(
            "{console}incident?ref={}",
            incident.to_lowercase()
        ))
        .await;
    session
        .wait_for(
            "document.querySelector('#incident-events')",
            "the incident page",
        )
        .await;
    let page = read("main".into()).await;
    assert!(page.contains(&format!("Incident {incident}")), "{page}");
    assert!(
        page.contains("block (invalid_telemetry") || page.contains("block ("),
        "{page}"
    );
    assert_eq!(read("[data-incident=outcome]".into()).await, "blocked");
    session.screenshot("console-incident").await;

    // Each page links the guide's section, and the guide is there.
    let docs = session
        .execute("return document.querySelector('p.docs a').getAttribute('href');")
        .await;
    assert_eq!(docs, "/console/docs#incident");
    session
        .goto(&format!("http://{}/console/docs#incident", gk.admin))
        .await;
    session
        .wait_for("document.getElementById('incident')", "the guide's section")
        .await;
    session.screenshot("console-docs").await;
    session.quit().await;
}

/// GETs `path` on the admin listener (no credential): the status and the body.
async fn admin_page(gk: &Gaitkeeper, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("http://{}{path}", gk.admin))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The number an overview page shows in the element marked `attribute="name"`.
fn shown(page: &str, attribute: &str, name: &str) -> String {
    let marker = format!("{attribute}=\"{name}\">");
    let at = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in the page"))
        + marker.len();
    page[at..].split('<').next().unwrap().to_string()
}

#[tokio::test]
async fn the_console_reads_a_postgresql_trail() {
    let Some(db) = common::db::postgres(Default::default(), "gk_console").await else {
        println!("skipped: needs PostgreSQL (GAITKEEPER_TEST_POSTGRES_URL)");
        return;
    };
    let app = LegacyApp::start().await;
    let more = format!(
        "store:\n  url: \"{}\"\n{LEGACY_ROUTES}policy:\n  on_invalid_telemetry: block\n",
        db.url()
    );
    let gk = Gaitkeeper::start_with(app.addr, "", &more).await;
    let r = log_in(&gk, ALICE, Some("steady"), 1).await;
    assert_eq!(location(&r), "/account");
    let r = log_in(&gk, ALICE, Some("{not telemetry"), 2).await;
    assert_eq!(r.status(), 403);
    // Audit records and the recorded login are written after the responses: polled.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let page = loop {
        let (_, page) = admin_page(&gk, "/console/?period=1h").await;
        if shown(&page, "data-count", "logins") == "2" && page.contains("data-outcome=\"verified\"")
        {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(shown(&page, "data-count", "allow"), "1");
    assert_eq!(shown(&page, "data-count", "block"), "1");
    assert_eq!(shown(&page, "data-outcome", "blocked"), "1");
    assert!(page.contains("PostgreSQL"));
    let user = loop {
        let (status, page) = admin_page(&gk, "/console/user?name=alice").await;
        if status == 200 {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alice was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        user.contains("User alice") && user.contains("Latest logins"),
        "{user}"
    );
    let (status, _) = admin_page(&gk, "/console/user?name=nobody-here").await;
    assert_eq!(status, 404);
}
