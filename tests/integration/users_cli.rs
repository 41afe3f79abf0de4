//! `gaitkeeper users …`, the real binary against a store that this test keeps open and writes
//! to at the same time, as the running proxy would: a temp SQLite file, and PostgreSQL (a fresh
//! schema) when `GAITKEEPER_TEST_POSTGRES_URL` is set.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use gaitkeeper::config::{Secret, StoreConfig};
use gaitkeeper::store::{Decision, FeatureBlob, NewLogin, Outcome, Store};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn users(config: &Path, args: &[&str]) -> Run {
    let output = Command::new(common::binary())
        .arg("users")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("GK_TEST_SECRET", common::SECRET)
        .output()
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn login(outcome: Outcome, risk: f64) -> NewLogin {
    NewLogin {
        at: SystemTime::now(),
        features: FeatureBlob {
            version: 2,
            bytes: vec![1, 2, 3],
        },
        risk,
        reasons: serde_json::json!([{"feature": "flight_time", "z": 2.5}]),
        decision: Decision::Challenge,
        outcome,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_commands_manage_profiles_while_the_store_is_in_use() {
    users_commands_on(None).await;
    match std::env::var("GAITKEEPER_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            sqlx::any::install_default_drivers();
            let schema = format!(
                "gk_cli_test_{}_{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_micros()
            );
            let admin = sqlx::AnyPool::connect(&url).await.unwrap();
            let ddl = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql));
            ddl(format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await
                .unwrap();
            let sep = if url.contains('?') { '&' } else { '?' };
            let result = tokio::spawn(users_commands_on(Some(format!(
                "{url}{sep}options=-c%20search_path%3D{schema}"
            ))))
            .await;
            ddl(format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&admin)
                .await
                .unwrap();
            if let Err(panic) = result {
                std::panic::resume_unwind(panic.into_panic());
            }
        }
        _ => println!("skipping PostgreSQL: GAITKEEPER_TEST_POSTGRES_URL not set"),
    }
}

async fn users_commands_on(url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("gk.yaml");
    let url_line = url
        .as_ref()
        .map(|u| format!("  url: {u:?}\n"))
        .unwrap_or_default();
    std::fs::write(
        &config,
        format!(
            "upstream:\n  address: \"127.0.0.1:3000\"\nsecrets:\n  key: {{ env: GK_TEST_SECRET }}\n\
             server:\n  data_dir: {:?}\n  app_name: \"Legacy CRM\"\nstore:\n  keep_clear_names: true\n{url_line}",
            data.display().to_string()
        ),
    )
    .unwrap();

    // An empty store is created on first use.
    let empty = users(&config, &["list"]);
    assert!(empty.ok, "{}", empty.stderr);
    assert!(empty.stdout.contains("0 of 0 users"), "{}", empty.stdout);
    assert_eq!(data.join("gaitkeeper.db").exists(), url.is_none());

    // The "proxy": a second process-worth of connections, open for the whole test.
    let store_config = StoreConfig {
        keep_clear_names: true,
        url,
        ..StoreConfig::default()
    };
    let secret = Secret::from_bytes(common::SECRET.as_bytes()).unwrap();
    let proxy = Store::open(&store_config, &data, &secret).await.unwrap();
    let key = proxy
        .record_login("alice", login(Outcome::Verified, 0.125))
        .await
        .unwrap()
        .user;
    proxy
        .record_login("alice", login(Outcome::Failed, 0.875))
        .await
        .unwrap();
    proxy.save_model(&key, 2, 4, vec![0; 300]).await.unwrap();

    let list = users(&config, &["list"]);
    assert!(list.ok, "{}", list.stderr);
    assert!(
        list.stdout.contains(&format!("key:{key}")),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("alice"), "{}", list.stdout);
    assert!(list.stdout.contains("enrolling 1/5"), "{}", list.stdout);

    let show = users(&config, &["show", "alice"]);
    assert!(show.ok, "{}", show.stderr);
    for expected in [
        "state:     enrolling (1 of 5 verified logins)",
        "model:     version 4 for features v2, 300 bytes",
        "totp:      not enrolled",
        "risk 0.875  challenge  failed",
        "risk 0.125  challenge  verified",
        "flight_time",
    ] {
        assert!(
            show.stdout.contains(expected),
            "{expected:?} in\n{}",
            show.stdout
        );
    }
    let by_key = users(&config, &["show", &format!("key:{key}")]);
    assert_eq!(by_key.stdout, show.stdout);

    let enroll = users(&config, &["enroll-totp", "alice"]);
    assert!(enroll.ok, "{}", enroll.stderr);
    let uri = enroll
        .stdout
        .lines()
        .find(|l| l.starts_with("otpauth://totp/"))
        .unwrap_or_else(|| panic!("no otpauth URI in\n{}", enroll.stdout));
    assert!(uri.contains("issuer=Legacy%20CRM"), "{uri}");
    assert!(enroll.stdout.contains('▀') || enroll.stdout.contains('▄'));
    let base32 = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    let shown = totp_rs::Secret::try_from_base32(base32).unwrap();
    assert_eq!(
        proxy.totp_secret(&key).await.unwrap().as_deref(),
        Some(shown.as_bytes()),
        "the proxy's store sees the secret the CLI printed"
    );

    let reset = users(&config, &["reset", "alice"]);
    assert!(reset.ok, "{}", reset.stderr);
    let after = users(&config, &["show", "alice"]);
    assert!(
        after.stdout.contains("enrolling (0 of 5"),
        "{}",
        after.stdout
    );
    assert!(
        after.stdout.contains("model:     none yet"),
        "{}",
        after.stdout
    );
    assert!(
        after.stdout.contains("totp:      enrolled"),
        "{}",
        after.stdout
    );

    let unconfirmed = users(&config, &["forget", "alice"]);
    assert!(!unconfirmed.ok);
    assert!(
        unconfirmed.stderr.contains("--yes"),
        "{}",
        unconfirmed.stderr
    );
    let forget = users(&config, &["forget", "alice", "--yes"]);
    assert!(forget.ok, "{}", forget.stderr);
    assert!(
        forget.stdout.contains("alice: forgotten"),
        "{}",
        forget.stdout
    );
    assert_eq!(proxy.user(&key).await.unwrap(), None);

    let gone = users(&config, &["show", "alice"]);
    assert!(!gone.ok);
    assert!(
        gone.stderr.contains("no user alice in the store"),
        "{}",
        gone.stderr
    );
    let bad_key = users(&config, &["show", "key:nothex"]);
    assert!(!bad_key.ok);
    assert!(
        bad_key.stderr.contains("64 hex digits"),
        "{}",
        bad_key.stderr
    );

    // The proxy keeps working on the same store afterwards.
    proxy
        .record_login("bob", login(Outcome::Verified, 0.5))
        .await
        .unwrap();
    let list = users(&config, &["list"]);
    assert!(list.stdout.contains("1 of 1 users"), "{}", list.stdout);
    let prune = users(&config, &["prune"]);
    assert!(prune.ok, "{}", prune.stderr);
    assert!(prune.stdout.starts_with("0 logins"), "{}", prune.stdout);
    proxy.close().await;
}

#[test]
fn users_reports_a_store_it_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gk.yaml");
    std::fs::write(
        &config,
        "upstream:\n  address: \"127.0.0.1:3000\"\nsecrets:\n  key: { env: GK_TEST_SECRET }\n\
         store:\n  url: \"postgres://nobody@127.0.0.1:1/none\"\n  busy_timeout: 500ms\n",
    )
    .unwrap();
    let run = users(&config, &["list"]);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("cannot open the store at postgres://nobody@127.0.0.1:1/none"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("store.url"), "{}", run.stderr);
}
