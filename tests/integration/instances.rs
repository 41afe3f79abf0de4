//! Several instances acting as one (issue #21): two gaitkeeper processes with the same config
//! and one PostgreSQL store (`server.shared_state: store`, the default with PostgreSQL) behind
//! Debian's nginx balancing round-robin without stickiness; and the shared state's database
//! going away and coming back. Skipped, saying so, without `GAITKEEPER_TEST_POSTGRES_URL`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::balancers::Balancer;
use crate::common::behaviour::{payload, STEADY};
use crate::common::db::{postgres, TestDb};
use crate::common::legacy::{
    location, login_page, login_page_at, submit, submit_at, LegacyApp, ALICE, LEGACY_ROUTES,
};
use crate::common::{client, config_text, eventually, free_port, Gaitkeeper, HARNESS_CAPTURE};

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// One gaitkeeper in front of `app` with the store at `store_url`; `more` is appended.
async fn instance(app: &LegacyApp, store_url: &str, more: &str) -> Gaitkeeper {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, admin) = (addr(), addr());
    let text = config_text(proxy, admin, &dir.path().join("data"), app.addr, "")
        + HARNESS_CAPTURE
        + &format!("store:\n  url: \"{store_url}\"\n{LEGACY_ROUTES}{more}");
    Gaitkeeper::start_in(dir, proxy, admin, false, &text).await
}

/// Two instances in front of one bundled app with one PostgreSQL store (`more` appended to
/// both configs); `None` (said) without PostgreSQL. The database lives as long as the
/// returned `TestDb`.
async fn pair(prefix: &str, more: &str) -> Option<(TestDb, LegacyApp, Gaitkeeper, Gaitkeeper)> {
    let db = shared_db(prefix).await?;
    let app = LegacyApp::start().await;
    let url = db.url();
    let (a, b) = (
        instance(&app, &url, more).await,
        instance(&app, &url, more).await,
    );
    Some((db, app, a, b))
}

async fn shared_db(prefix: &str) -> Option<TestDb> {
    let db = postgres(Default::default(), prefix).await;
    if db.is_none() {
        println!("skipped: the shared state needs PostgreSQL (GAITKEEPER_TEST_POSTGRES_URL)");
    }
    db
}

#[tokio::test]
async fn a_page_token_used_through_one_instance_is_a_replay_through_the_other() {
    let Some((db, _app, a, b)) = pair("gk_shared_replay", "").await else {
        return;
    };
    let nginx = Balancer::nginx(db.dir.path(), |port| {
        format!(
            "upstream pair {{ server {}; server {}; }}\nserver {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://pair; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}",
            a.addr, b.addr
        )
    })
    .await;

    // Through A: the login is scored and let in.
    let page = login_page(&a).await;
    let p = payload(&page.gk_token, &STEADY, ALICE.0.len(), ALICE.1.len(), 1);
    let r = submit(&a, &page, ALICE.0, ALICE.1, Some(&p)).await;
    assert_eq!(location(&r), "/account");
    // The same page token and telemetry through B: a replay, refused.
    let r = submit(&b, &page, ALICE.0, ALICE.1, Some(&p)).await;
    assert_eq!(r.status(), 403, "the replay is blocked (on_replayed_token)");
    assert_eq!(b.last_telemetry_outcome().await, "replayed");

    // Through the balancer, alternating instances: each page's token works once, and its
    // replay is refused whichever instance it reaches.
    let base = format!("http://{}", nginx.addr);
    for seed in 2..6 {
        let page = login_page_at(&client(), &base).await;
        let p = payload(&page.gk_token, &STEADY, ALICE.0.len(), ALICE.1.len(), seed);
        let r = submit_at(&client(), &base, &page, ALICE.0, ALICE.1, Some(&p)).await;
        assert_eq!(location(&r), "/account", "login {seed}");
        let again = submit_at(&client(), &base, &page, ALICE.0, ALICE.1, Some(&p)).await;
        assert_eq!(again.status(), 403, "replay of login {seed}");
    }
}

/// A TCP forwarder to PostgreSQL that the test can cut (every connection dropped, new ones
/// refused) and restore: the database "going away" without stopping the shared server.
struct Cuttable {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    /// The forwarded connections, closed by [`Cuttable::close`].
    connections: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cuttable {
    async fn start(target: String) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let flag = down.clone();
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let live = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let (flag, target) = (flag.clone(), target.clone());
                let connection = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    let cut = async {
                        while !flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = cut => {} }
                });
                live.lock().unwrap().push(connection);
            }
        });
        Cuttable {
            addr,
            down,
            task,
            connections,
        }
    }

    /// Closes every forwarded connection and waits until they are: the database then sees its
    /// clients gone (and rolls back what they left open) before the test drops its schema —
    /// which would otherwise wait for them while the forwarding tasks cannot run.
    async fn close(self) {
        self.set_down(true);
        self.task.abort();
        let connections = std::mem::take(&mut *self.connections.lock().unwrap());
        for connection in connections {
            connection.abort();
            let _ = connection.await;
        }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_shared_state_away_decides_by_on_state_error_and_recovers() {
    let Some(db) = shared_db("gk_shared_away").await else {
        return;
    };
    let url = db.url();
    let target = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_string();
    let cut = Cuttable::start(target.clone()).await;
    let via_cut = url.replacen(&target, &cut.addr.to_string(), 1);
    let app = LegacyApp::start().await;
    let gk = instance(
        &app,
        &via_cut,
        // The shared state is in the store by default with PostgreSQL.
        "policy:\n  on_state_error: block\n",
    )
    .await;

    let login = |seed: u64| {
        let gk = &gk;
        async move {
            let page = login_page(gk).await;
            let p = payload(&page.gk_token, &STEADY, ALICE.0.len(), ALICE.1.len(), seed);
            submit(gk, &page, ALICE.0, ALICE.1, Some(&p)).await
        }
    };
    assert_eq!(location(&login(1).await), "/account");

    // The database away: whether a token was used is unknown, so on_state_error decides.
    cut.set_down(true);
    let r = login(2).await;
    assert_eq!(r.status(), 403, "on_state_error: block");
    assert_eq!(gk.last_telemetry_outcome().await, "state_error");
    assert!(gk.metric("gaitkeeper_shared_state_errors_total").await >= 1.0);
    assert!(gk.log().contains("policy.on_state_error decides"));

    // Back: gaitkeeper recovers by itself.
    cut.set_down(false);
    eventually(Duration::from_secs(20), "logins work again", || async {
        location(&login(3).await) == "/account"
    })
    .await;
    drop(gk);
    cut.close().await;
}

#[tokio::test]
async fn failed_logins_spread_over_instances_reach_the_limit_as_on_one() {
    let more = "policy:\n  on_missing_telemetry: allow\nregulation:\n  max_failures_per_user: 1000\n  max_failures_per_ip: 3\n  action: block\n";
    let Some((_db, _app, a, b)) = pair("gk_shared_regulation", more).await else {
        return;
    };
    let from = |ip: &str| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(crate::common::USER_AGENT)
            .local_address(Some(ip.parse().unwrap()))
            .build()
            .unwrap()
    };
    let attacker = from("127.0.0.2");
    // Three failures, alternating instances: the limit of one instance.
    for gk in [&a, &b, &a] {
        let base = gk.url("");
        let page = login_page_at(&attacker, &base).await;
        let r = submit_at(&attacker, &base, &page, ALICE.0, "not-her-password", None).await;
        assert_ne!(location(&r), "/account");
    }
    eventually(
        Duration::from_secs(10),
        "three failures counted",
        || async {
            a.metric("gaitkeeper_regulation_failures_total").await
                + b.metric("gaitkeeper_regulation_failures_total").await
                >= 3.0
        },
    )
    .await;
    // Banned on both instances, even with the right password, with telemetry (the ban read
    // with the page token, one round trip) or without.
    for (seed, gk) in [&b, &a].into_iter().enumerate() {
        let base = gk.url("");
        let page = login_page_at(&attacker, &base).await;
        let r = submit_at(&attacker, &base, &page, ALICE.0, ALICE.1, None).await;
        assert_eq!(r.status(), 403, "banned through {}", gk.addr);
        let page = login_page_at(&attacker, &base).await;
        let p = payload(
            &page.gk_token,
            &STEADY,
            ALICE.0.len(),
            ALICE.1.len(),
            seed as u64,
        );
        let r = submit_at(&attacker, &base, &page, ALICE.0, ALICE.1, Some(&p)).await;
        assert_eq!(
            r.status(),
            403,
            "banned through {}, with telemetry",
            gk.addr
        );
    }
    // Another client is not.
    let user = from("127.0.0.3");
    let base = b.url("");
    let page = login_page_at(&user, &base).await;
    let r = submit_at(&user, &base, &page, ALICE.0, ALICE.1, None).await;
    assert_eq!(location(&r), "/account");
}

#[tokio::test]
async fn a_totp_code_used_through_one_instance_is_refused_through_the_other() {
    use crate::common::legacy::{enroll_totp, post_code};
    let more = "policy:\n  enrolling: challenge\n";
    let Some((_db, _app, a, b)) = pair("gk_shared_totp", more).await else {
        return;
    };
    // One store: the secret enrolled through either is everybody's.
    let totp = enroll_totp(&a, ALICE.0);
    let code = totp.generate_current().to_string();

    let on_a = challenged(&a, 1).await;
    let r = post_code(&a, &on_a, &code).await;
    assert_eq!(
        location(&r),
        "/account",
        "the code passes on A, the login is replayed"
    );
    // Another held login of alice, on B, with the same code: reused, not accepted.
    let on_b = challenged(&b, 2).await;
    let r = post_code(&b, &on_b, &code).await;
    assert_ne!(location(&r), "/account", "the code was used on A");
    assert_eq!(r.status(), 401, "the code page again, with attempts left");
    assert!(b.log().contains("\"reason\":\"reused\""), "{}", b.log());
}

/// A login of alice through `gk`, challenged: its challenge page.
async fn challenged(gk: &Gaitkeeper, seed: u64) -> crate::common::legacy::Challenge {
    let page = login_page(gk).await;
    let p = payload(&page.gk_token, &STEADY, ALICE.0.len(), ALICE.1.len(), seed);
    let r = submit(gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
    crate::common::legacy::challenge_from(gk, &r).await
}

#[tokio::test]
async fn the_alert_throttle_holds_across_instances() {
    use crate::common::receiver::Receiver;
    let (receiver, port) = Receiver::start(&[], false).await;
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("webhook.key");
    crate::common::write_secret(&secret, "webhook-secret-0123456789abcdef0123");
    let more = format!(
        "policy:\n  on_missing_telemetry: block\nalerts:\n  webhook:\n    url: \"http://127.0.0.1:{port}/hook\"\n    secret: {{ file: {:?} }}\n    throttle: 1h\n    backoff: 100ms\n",
        secret.display().to_string()
    );
    let Some((_db, _app, a, b)) = pair("gk_shared_alerts", &more).await else {
        return;
    };
    // alice blocked through A: alerted.
    let page = login_page(&a).await;
    assert_eq!(
        submit(&a, &page, ALICE.0, ALICE.1, None).await.status(),
        403
    );
    eventually(
        Duration::from_secs(10),
        "the first alert delivered",
        || async { !receiver.received().is_empty() },
    )
    .await;
    // alice blocked through B within the throttle period: not alerted again.
    let page = login_page(&b).await;
    assert_eq!(
        submit(&b, &page, ALICE.0, ALICE.1, None).await.status(),
        403
    );
    eventually(
        Duration::from_secs(10),
        "the second alert throttled",
        || async {
            b.metric("gaitkeeper_alert_deliveries_total{result=\"throttled\"}")
                .await
                >= 1.0
        },
    )
    .await;
    assert_eq!(
        receiver.received().len(),
        1,
        "one alert between the two instances"
    );
}

/// A TOTP code for `step` steps of 30 s from now (0: the current one). Codes of the current
/// and the next step stay accepted across a step boundary, so a test using them cannot fail
/// by the clock.
fn code(totp: &totp_rs::Totp, step: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp.generate(now + 30 * step).to_string()
}

/// nginx balancing round-robin over `a` and `b`, with no stickiness.
async fn round_robin(db: &TestDb, a: &Gaitkeeper, b: &Gaitkeeper) -> Balancer {
    Balancer::nginx(db.dir.path(), |port| {
        format!(
            "upstream pair {{ server {}; server {}; }}\nserver {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://pair; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}",
            a.addr, b.addr
        )
    })
    .await
}

async fn passed(gk: &Gaitkeeper) -> f64 {
    gk.metric("gaitkeeper_challenges_total{event=\"passed\"}")
        .await
}

#[tokio::test]
async fn a_challenge_taken_by_one_instance_is_passed_through_the_other() {
    use crate::common::legacy::{challenge_at, enroll_totp, post_code, post_code_at};
    let Some((db, _app, a, b)) = pair("gk_shared_held", "policy:\n  enrolling: challenge\n").await
    else {
        return;
    };
    let totp = enroll_totp(&a, ALICE.0);

    // Held by A, answered through B: replayed, alice lands logged in.
    let on_a = challenged(&a, 1).await;
    let r = post_code(&b, &on_a, code(&totp, 0)).await;
    assert_eq!(location(&r), "/account", "passed through B");
    assert!(r.headers().get("set-cookie").is_some(), "the app's session");
    assert_eq!((passed(&a).await, passed(&b).await), (0.0, 1.0));
    // Used: gone for both.
    let again = post_code(&a, &on_a, code(&totp, 1)).await;
    assert_eq!(again.status(), 404, "single use across instances");

    // Through nginx with no stickiness: the login page, the submit, the challenge page and
    // the code each reach the next instance.
    let nginx = round_robin(&db, &a, &b).await;
    let base = format!("http://{}", nginx.addr);
    let page = login_page_at(&client(), &base).await;
    let p = payload(&page.gk_token, &STEADY, ALICE.0.len(), ALICE.1.len(), 2);
    let r = submit_at(&client(), &base, &page, ALICE.0, ALICE.1, Some(&p)).await;
    let challenge = challenge_at(&base, &r).await;
    let r = post_code_at(&base, &challenge, code(&totp, 1)).await;
    assert_eq!(location(&r), "/account", "passed through the balancer");
    assert_eq!(passed(&a).await + passed(&b).await, 2.0);
    eventually(Duration::from_secs(10), "both replays audited", || async {
        let (_, trail) = b.audit(&["tail", "--lines", "20"]);
        trail.matches("\"challenge\":\"passed\"").count() >= 2
    })
    .await;
    let (_, trail) = b.audit(&["tail", "--lines", "20"]);
    assert_eq!(
        trail.matches("\"challenge\":\"passed\"").count(),
        2,
        "{trail}"
    );
}

#[tokio::test]
async fn a_challenge_passed_on_both_instances_at_once_is_replayed_once() {
    use crate::common::legacy::{enroll_totp, post_code};
    let Some((_db, _app, a, b)) = pair("gk_shared_race", "policy:\n  enrolling: challenge\n").await
    else {
        return;
    };
    let totp = enroll_totp(&a, ALICE.0);
    let held = challenged(&a, 1).await;
    // Two right codes (the current and the next step, so the used-step check lets both
    // through): the held login itself must decide which request replays it.
    let (first, second) = tokio::join!(
        post_code(&a, &held, code(&totp, 0)),
        post_code(&b, &held, code(&totp, 1))
    );
    let landed = [&first, &second]
        .iter()
        .filter(|r| location(r) == "/account")
        .count();
    assert_eq!(landed, 1, "{} / {}", first.status(), second.status());
    let other = if location(&first) == "/account" {
        &second
    } else {
        &first
    };
    assert_eq!(other.status(), 404, "the other finds it gone");
    assert_eq!(passed(&a).await + passed(&b).await, 1.0);
    eventually(Duration::from_secs(10), "the replay audited", || async {
        let (_, trail) = b.audit(&["tail", "--lines", "20"]);
        trail.contains("\"challenge\":\"passed\"")
    })
    .await;
    let (_, trail) = b.audit(&["tail", "--lines", "20"]);
    assert_eq!(
        trail.matches("\"challenge\":\"passed\"").count(),
        1,
        "replayed to the app once: {trail}"
    );
}

#[tokio::test]
async fn after_kill_9_of_the_holding_instance_the_survivor_finishes_and_settles_its_challenges() {
    use crate::common::legacy::{enroll_totp, post_code};
    let more = "policy:\n  enrolling: challenge\nmfa:\n  challenge_ttl: 30s\n";
    let Some((_db, _app, a, b)) = pair("gk_shared_kill", more).await else {
        return;
    };
    let totp = enroll_totp(&a, ALICE.0);
    let answered = challenged(&a, 1).await;
    let abandoned = challenged(&a, 2).await;
    let status = std::process::Command::new("kill")
        .args(["-9", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(Duration::from_secs(10), "A is gone", || async {
        reqwest::get(a.url("/")).await.is_err()
    })
    .await;

    let r = post_code(&b, &answered, code(&totp, 0)).await;
    assert_eq!(
        location(&r),
        "/account",
        "the survivor replays A's held login"
    );

    // The challenge nobody answers expires on B's watch, and B settles and audits it.
    let _ = abandoned;
    eventually(
        Duration::from_secs(60),
        "the abandoned challenge settled as expired",
        || async {
            let (_, trail) = b.audit(&["tail", "--lines", "20"]);
            trail.contains("\"challenge_expired\"")
        },
    )
    .await;
}

#[tokio::test]
async fn wrong_codes_spread_over_instances_meet_one_guess_budget() {
    use crate::common::legacy::{enroll_totp, post_code, wrong_code};
    let more = "policy:\n  enrolling: challenge\nmfa:\n  totp:\n    max_attempts: 20\n";
    let Some((_db, _app, a, b)) = pair("gk_shared_guesses", more).await else {
        return;
    };
    let totp = enroll_totp(&a, ALICE.0);
    let held = challenged(&a, 1).await;
    // Ten wrong codes from one address (the budget of one instance), alternating: five on
    // each, which neither would stop by its own count.
    for (i, gk) in [&a, &b].into_iter().cycle().take(10).enumerate() {
        let r = post_code(gk, &held, wrong_code(&totp)).await;
        assert_eq!(r.status(), 401, "wrong code {i} checked");
    }
    // The budget is spent on both: even the right code is not looked at.
    let r = post_code(&b, &held, code(&totp, 0)).await;
    assert_eq!(r.status(), 403, "rate limited across instances");
    assert!(
        b.log().contains("\"reason\":\"rate_limited\""),
        "{}",
        b.log()
    );
}
