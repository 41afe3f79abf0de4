//! The audit trail against a real store: records reach the store and the JSON-lines stream,
//! `gaitkeeper audit show` finds them, a locked store spools them without loss or duplicates,
//! and a process killed with SIGKILL mid-write loses nothing it had acknowledged.
//! SQLite always; PostgreSQL too for the round trip when `GAITKEEPER_TEST_POSTGRES_URL` is set.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::db::TestDb;
use gaitkeeper::audit::{kind, new_incident, AuditConfig, AuditRecord, AuditStream, Auditor};
use gaitkeeper::config::{HumanDuration, Secret, StoreConfig};
use gaitkeeper::metrics::Metrics;
use gaitkeeper::store::{Backend, Store};
use sqlx::Row;

fn secret() -> Secret {
    Secret::from_bytes(common::SECRET.as_bytes()).unwrap()
}

fn store_config() -> StoreConfig {
    StoreConfig {
        max_connections: 2,
        // Short, so that a locked store is noticed quickly.
        busy_timeout: HumanDuration(Duration::from_millis(100)),
        ..StoreConfig::default()
    }
}

fn audit_config(dir: &Path) -> AuditConfig {
    AuditConfig {
        stream: AuditStream::File(dir.join("audit.jsonl")),
        retry: HumanDuration(Duration::from_millis(100)),
        ..AuditConfig::default()
    }
}

async fn open_store(config: &StoreConfig, dir: &Path) -> Store {
    Store::open(config, dir, &secret()).await.unwrap()
}

fn decision(incident: &str, user_key: Option<String>) -> AuditRecord {
    let mut record = AuditRecord::new(kind::LOGIN_DECISION, incident);
    record.request_id = Some("req-1".into());
    record.route = Some("login".into());
    record.user_key = user_key;
    record.risk = Some(0.93);
    record.reasons = serde_json::json!([{ "feature": "dwell_mean", "z": 4.1 }]);
    record.decision = Some("block".into());
    record.policy = Some("risk>=0.9".into());
    record.mode = Some("enforce".into());
    record.outcome = Some("blocked".into());
    record.client_ip = Some("127.0.0.1".into());
    record
}

/// The stores to run against: SQLite, and PostgreSQL in a fresh schema when set (dropped when
/// the test ends). PostgreSQL waits longer for a connection than the SQLite store, whose short
/// wait is there to notice a locked file quickly.
async fn test_dbs() -> Vec<TestDb> {
    let mut dbs = common::db::backends(store_config(), "gk_audit").await;
    for db in &mut dbs {
        if db.backend == Backend::Postgres {
            db.config.busy_timeout = HumanDuration(Duration::from_secs(1));
        }
    }
    dbs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_store_and_the_jsonl_stream_and_forget_anonymises_them() {
    for db in test_dbs().await {
        let (config, dir) = (&db.config, &db.dir);
        let store = db.open().await;
        let metrics = Arc::new(Metrics::new());
        let auditor = Auditor::new(
            &audit_config(dir.path()),
            store.clone(),
            dir.path(),
            metrics.audit.clone(),
        )
        .unwrap();
        let alice = store.ensure_user("alice").await.unwrap();
        let incident = new_incident();
        auditor.record(decision(&incident, Some(alice.to_string())));
        let mut outcome = AuditRecord::new(kind::CHALLENGE_FAILED, &incident);
        outcome.user_key = Some(alice.to_string());
        outcome.challenge = Some("failed".into());
        auditor.record(outcome);
        auditor.flush().await;

        let events = store.audit_by_incident(&incident).await.unwrap();
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["login.decision", "challenge.failed"],
            "{:?}",
            config.url
        );
        let detail = &events[0].detail;
        assert_eq!(detail["route"], "login");
        assert_eq!(detail["risk"], 0.93);
        assert_eq!(detail["policy"], "risk>=0.9");
        assert_eq!(detail["user_key"], alice.to_string());
        assert_eq!(detail["reasons"][0]["feature"], "dwell_mean");
        assert_eq!(events[0].incident.as_deref(), Some(incident.as_str()));
        assert_eq!(store.audit_events(&alice, 10).await.unwrap().len(), 2);
        let tail = store.audit_tail(1, None).await.unwrap();
        assert_eq!(tail.len(), 1);
        assert_eq!(tail[0].kind, "challenge.failed", "the newest");
        let after = store.audit_tail(10, Some(events[0].id)).await.unwrap();
        assert_eq!(
            after.iter().map(|e| e.id).collect::<Vec<_>>(),
            [events[1].id]
        );
        assert_eq!(
            metrics.audit.records.with_label_values(&["stored"]).get(),
            2
        );

        let stream = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = stream
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["incident"], incident.as_str());
        assert_eq!(lines[1]["kind"], "challenge.failed");
        assert!(!stream.contains("alice"), "no login names in the stream");

        let forgotten = store.forget(&alice).await.unwrap();
        assert_eq!(forgotten.audit_events, 2);
        assert!(store.audit_by_incident(&incident).await.unwrap().is_empty());
        let counts = store.forgotten_audit_counts().await.unwrap();
        assert!(
            counts.contains(&("login.decision".to_string(), 1)),
            "{counts:?}"
        );
        store.close().await;
    }
}

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("gk.yaml");
    std::fs::write(
        &path,
        format!(
            "upstream:\n  address: \"127.0.0.1:3000\"\nserver:\n  data_dir: {:?}\nsecrets:\n  key: {{ env: GK_TEST_SECRET }}\naudit:\n  stream: off\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_show_finds_an_incident_and_fails_clearly_on_an_unknown_one() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path());
    std::env::set_var("GK_TEST_SECRET", common::SECRET);
    let config = gaitkeeper::config::Config::load(&config_path).unwrap();
    let store = Store::open(&config.store, dir.path(), &config.secrets.key)
        .await
        .unwrap();
    let auditor = Auditor::new(
        &config.audit,
        store.clone(),
        dir.path(),
        Metrics::new().audit,
    )
    .unwrap();
    let key = store.user_key("bob").unwrap().to_string();
    let incident = new_incident();
    auditor.record(decision(&incident, Some(key.clone())));
    auditor.record(decision(&new_incident(), None));
    auditor.flush().await;
    let config_arg = config_path.to_str().unwrap();

    let (ok, stdout, stderr) =
        common::run_cli(["audit", "show", "--config", config_arg, &incident]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(&format!("incident {incident}: 1 events")),
        "{stdout}"
    );
    for expected in [
        "login.decision",
        "risk>=0.9",
        "block",
        "127.0.0.1",
        &key,
        "dwell_mean",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected} missing from:\n{stdout}"
        );
    }
    // Read over the phone: lower case works too.
    let (ok, _, stderr) = common::run_cli([
        "audit",
        "show",
        "--config",
        config_arg,
        &incident.to_lowercase(),
    ]);
    assert!(ok, "{stderr}");

    let output = Command::new(common::binary())
        .args(["audit", "show", "--config", config_arg, "GK-NOSUCHTHNG"])
        .env("GK_TEST_SECRET", common::SECRET)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no audit events for incident \"GK-NOSUCHTHNG\""),
        "{stderr}"
    );

    let (ok, stdout, stderr) =
        common::run_cli(["audit", "tail", "--config", config_arg, "-n", "1"]);
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_ne!(
        lines[0]["incident"],
        incident.as_str(),
        "the newest is last"
    );
    let (ok, stdout, _) = common::run_cli(["audit", "tail", "--config", config_arg]);
    assert!(ok);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["incident"], incident.as_str());
    assert!(first["event_id"].is_i64());

    // --follow prints what is stored after it started.
    let mut follow = Command::new(common::binary())
        .args([
            "audit", "tail", "--config", config_arg, "-n", "1", "--follow",
        ])
        .env("GK_TEST_SECRET", common::SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, printed) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    printed
        .recv_timeout(Duration::from_secs(10))
        .expect("the newest event first");
    let later = new_incident();
    auditor.record(decision(&later, None));
    auditor.flush().await;
    let line = printed.recv_timeout(Duration::from_secs(10));
    let _ = follow.kill();
    let _ = follow.wait();
    let line: serde_json::Value = serde_json::from_str(&line.expect("the new event")).unwrap();
    assert_eq!(line["incident"], later.as_str());
    store.close().await;
}

/// Holds the SQLite file's write lock from another connection, as a second process would.
async fn lock_database(dir: &Path) -> sqlx::pool::PoolConnection<sqlx::Any> {
    sqlx::any::install_default_drivers();
    let url = store_config().url_or_default(dir);
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut *conn)
        .await
        .unwrap();
    conn
}

async fn count_rows(store_dir: &Path, incident_prefix: &str) -> (i64, i64) {
    let url = store_config().url_or_default(store_dir);
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT record_id) AS d FROM audit_events WHERE incident LIKE $1",
    )
    .bind(format!("{incident_prefix}%"))
    .fetch_one(&pool)
    .await
    .unwrap();
    let counts = (row.get::<i64, _>("n"), row.get::<i64, _>("d"));
    pool.close().await;
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_spools_records_and_delivers_them_in_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&store_config(), dir.path()).await;
    let metrics = Arc::new(Metrics::new());
    let config = audit_config(dir.path());
    let auditor = Auditor::new(&config, store.clone(), dir.path(), metrics.audit.clone()).unwrap();

    let mut lock = lock_database(dir.path()).await;
    let incidents: Vec<String> = (0..20).map(|i| format!("GK-LOCK{i:04}")).collect();
    for incident in &incidents {
        auditor.record(decision(incident, None));
    }
    auditor.flush().await;
    assert_eq!(
        metrics.audit.records.with_label_values(&["spooled"]).get(),
        20
    );
    assert_eq!(
        metrics.audit.records.with_label_values(&["stored"]).get(),
        0
    );
    let spools = spool_files(dir.path());
    assert_eq!(spools.len(), 1, "one spool file per process");
    let spooled = std::fs::read(&spools[0]).unwrap();
    assert_eq!(spooled.iter().filter(|&&b| b == b'\n').count(), 20);
    // The stream does not wait for the store.
    let stream = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(stream.lines().count(), 20);

    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);
    common::eventually(
        Duration::from_secs(10),
        "the spool is delivered",
        || async { count_rows(dir.path(), "GK-LOCK").await.0 == 20 },
    )
    .await;
    // The store's pool waits only `busy_timeout` (100 ms here) for a connection, and the
    // worker may still hold one while it empties the spool; on a loaded CI machine that read
    // can time out, so it is retried (the order is what this checks, not the pool).
    let order = std::sync::Mutex::new(Vec::new());
    common::eventually(
        Duration::from_secs(10),
        "the audit tail is read",
        || async {
            match store.audit_tail(100, None).await {
                Ok(tail) => {
                    *order.lock().unwrap() =
                        tail.iter().filter_map(|e| e.incident.clone()).collect();
                    true
                }
                Err(_) => false,
            }
        },
    )
    .await;
    assert_eq!(
        order.into_inner().unwrap(),
        incidents,
        "delivered in the order recorded"
    );
    // The worker empties the file, then sets the gauge: both are waited for.
    common::eventually(Duration::from_secs(5), "the spool is emptied", || async {
        spool_bytes(dir.path()) == 0 && metrics.audit.spool_bytes.get() == 0
    })
    .await;

    // A crash after delivery but before the spool was emptied: the next start delivers the
    // same records again (a spool whose process is gone), and the store keeps one of each.
    drop(auditor);
    let dead = dir.path().join("audit-spool-999999-dead.jsonl");
    std::fs::write(&dead, &spooled).unwrap();
    let restarted =
        Auditor::new(&config, store.clone(), dir.path(), metrics.audit.clone()).unwrap();
    restarted.flush().await;
    common::eventually(
        Duration::from_secs(5),
        "the old spool is redelivered and removed",
        || async { !dead.exists() },
    )
    .await;
    assert_eq!(count_rows(dir.path(), "GK-LOCK").await, (20, 20));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("audit.jsonl"))
            .unwrap()
            .lines()
            .count(),
        20,
        "records already streamed are not streamed again"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_sends_records_to_the_spool_instead_of_dropping_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&store_config(), dir.path()).await;
    let metrics = Arc::new(Metrics::new());
    let config = AuditConfig {
        queue: 1,
        ..audit_config(dir.path())
    };
    let auditor = Auditor::new(&config, store.clone(), dir.path(), metrics.audit.clone()).unwrap();
    // The worker waits on the locked store while the caller records on.
    let mut lock = lock_database(dir.path()).await;
    for i in 0..200 {
        auditor.record(decision(&format!("GK-FULL{i:04}"), None));
    }
    auditor.flush().await;
    assert!(spool_bytes(dir.path()) > 0);
    let stream = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        stream.lines().count() < 200,
        "some records skipped the queue (and are streamed when delivered)"
    );
    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);
    common::eventually(
        Duration::from_secs(10),
        "every record is stored",
        || async { count_rows(dir.path(), "GK-FULL").await == (200, 200) },
    )
    .await;
    common::eventually(Duration::from_secs(5), "the spool is emptied", || async {
        spool_bytes(dir.path()) == 0
    })
    .await;
    let stream = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let mut streamed: Vec<String> = stream
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["incident"].to_string())
        .collect();
    streamed.sort();
    streamed.dedup();
    assert_eq!(
        (stream.lines().count(), streamed.len()),
        (200, 200),
        "each record streamed once"
    );
    assert_eq!(metrics.audit.records.with_label_values(&["lost"]).get(), 0);
    store.close().await;
}

/// The spool files in `dir` (one per process that spooled and has not been delivered).
fn spool_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("audit-spool-") && name.ends_with(".jsonl")
        })
        .collect()
}

fn spool_bytes(dir: &Path) -> u64 {
    spool_files(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

const CHILD_DIR: &str = "GK_AUDIT_CRASH_CHILD_DIR";

/// Not a test of its own: the child process of the crash test (does nothing unless started
/// by it). Records and flushes in a loop, printing `ACK n` after each flush; halfway it locks
/// the store, so the later records go through the spool. Runs until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let store = open_store(&store_config(), &dir).await;
    let auditor = Auditor::new(&audit_config(&dir), store, &dir, Metrics::new().audit).unwrap();
    let mut lock = None;
    for i in 0u32.. {
        auditor.record(decision(&format!("GK-CRASH{i:06}"), None));
        if i % 5 == 4 {
            auditor.flush().await;
            println!("ACK {i}");
        }
        if i == 100 {
            lock = Some(lock_database(&dir).await);
        }
    }
    drop(lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_write_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            &common::test_path(module_path!(), "crash_child"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read acknowledgements on a thread; kill once enough went through both paths.
    let (acks, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("ACK ") {
                if acks.send(n.trim().parse::<u32>().unwrap()).is_err() {
                    break;
                }
            }
        }
    });
    let mut last = None;
    while let Ok(n) = seen.recv_timeout(Duration::from_secs(60)) {
        last = Some(n);
        if n >= 300 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements printed before the kill count too.
    while let Ok(n) = seen.recv_timeout(Duration::from_millis(200)) {
        last = Some(n);
    }
    let last = last.expect("the child acknowledged records");
    assert!(last >= 300, "the child got past the lock ({last})");

    let left = spool_bytes(dir.path());
    assert!(
        left > 0,
        "the later records were in the spool when the child died"
    );

    // Restart: the spool left behind is delivered first.
    let store = open_store(&store_config(), dir.path()).await;
    let auditor = Auditor::new(
        &audit_config(dir.path()),
        store.clone(),
        dir.path(),
        Metrics::new().audit,
    )
    .unwrap();
    auditor.flush().await;
    common::eventually(
        Duration::from_secs(10),
        "the spool is delivered",
        || async { spool_bytes(dir.path()) == 0 },
    )
    .await;
    for i in 0..=last {
        let incident = format!("GK-CRASH{i:06}");
        let events = store.audit_by_incident(&incident).await.unwrap();
        assert_eq!(events.len(), 1, "acknowledged record {incident}");
    }
    let (rows, distinct) = count_rows(dir.path(), "GK-CRASH").await;
    assert_eq!(rows, distinct, "no record stored twice");
    store.close().await;
}
