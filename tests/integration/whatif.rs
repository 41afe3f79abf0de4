//! `gaitkeeper policy what-if` against a small generated audit trail whose replay is worked out
//! by hand below (every transition kind present), on both backends (SQLite always, PostgreSQL
//! when `GAITKEEPER_TEST_POSTGRES_URL` is set); and the command line: its JSON, its errors.
//!
//! The trail, written through the real audit worker. Running policy: the defaults (allow below
//! 0.6, block at 0.95, missing telemetry challenged, replays blocked, enrolling allowed, floor of
//! insufficient_evidence 0.8), route `admin` blocking invalid telemetry. Tried: allow below
//! 0.5, block at 0.8, missing telemetry blocked, replays allowed, invalid telemetry challenged
//! (over the route's own), enrolling blocked, floor of insufficient_evidence 0.4.
//!
//! | login | user  | recorded                                   | outcome          | then → now |
//! |-------|-------|--------------------------------------------|------------------|------------|
//! | L1    | alice | scored 0.55                                | app verified     | allow → challenge (factor assumed) |
//! | L2    | bob   | scored 0.85, factor yes                    | challenge passed | challenge → block |
//! | L3    | carol | scored 0.4                                 | app refused      | allow → allow |
//! | L4    | dave  | scored 0.97                                | blocked          | block → block |
//! | L5    | alice | missing telemetry, factor yes              | challenge failed | challenge → block |
//! | L6    | bob   | model 0.2, insufficient_evidence → 0.8     | challenge failed | challenge → allow |
//! | L7    | carol | replayed token                             | blocked          | block → allow |
//! | L8    | dave  | invalid telemetry on route admin           | blocked          | block → challenge (factor assumed) |
//! | L9    | erin  | enrolling                                  | app verified     | allow → block |
//! | L10   | alice | scored 0.7, factor yes                     | challenge passed | challenge → challenge |
//! | L11   | erin  | an older record: rule allow_below, 0.3     | app verified     | allow → allow (inferred) |
//! | L12   | frank | an older record with a rule no one knows   | app verified     | not replayable |
//! | L13   | frank | scored 0.99 in shadow mode                 | app verified     | block → block (acted: allow → block) |
//! | L14   | carol | scored 0.7, no factor: on_no_factor        | blocked          | block → block |

use std::path::{Path, PathBuf};
use std::time::Duration;

use gaitkeeper::audit::{kind, new_incident, AuditRecord, Auditor};
use gaitkeeper::config::{AuditConfig, AuditStream, Config, StoreConfig};
use gaitkeeper::metrics::Metrics;
use gaitkeeper::policy::{Action, FloorsConfig, PolicyConfig};
use gaitkeeper::store::Store;
use gaitkeeper::whatif::{self, PolicyOverrides, Selection, WhatIf};

use crate::common;

fn config_text(dir: &Path) -> String {
    format!(
        "upstream:\n  address: \"127.0.0.1:3000\"\nserver:\n  data_dir: {:?}\nsecrets:\n  key: {{ env: GK_TEST_SECRET }}\naudit:\n  stream: off\n\
         routes:\n  - name: login\n    page: {{ paths: [\"/login\"] }}\n    submit: {{ path: \"/login\" }}\n\
         \x20 - name: admin\n    page: {{ paths: [\"/admin/login\"] }}\n    submit: {{ path: \"/admin/login\" }}\n    policy: {{ on_invalid_telemetry: block }}\n",
        dir.display().to_string()
    )
}

fn write_config(dir: &Path) -> PathBuf {
    let path = dir.join("gk.yaml");
    std::fs::write(&path, config_text(dir)).unwrap();
    path
}

/// The tried keys of the table above.
fn tried_keys() -> PolicyConfig {
    PolicyConfig {
        allow_below: Some(0.5),
        block_at: Some(0.8),
        on_missing_telemetry: Some(Action::Block),
        on_replayed_token: Some(Action::Allow),
        on_invalid_telemetry: Some(Action::Challenge),
        enrolling: Some(Action::Block),
        floors: Some(FloorsConfig {
            insufficient_evidence: Some(0.4),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The same keys on the command line.
const TRIED_FLAGS: &[&str] = &[
    "--allow-below",
    "0.5",
    "--block-at",
    "0.8",
    "--on-missing-telemetry",
    "block",
    "--on-replayed-token",
    "allow",
    "--on-invalid-telemetry",
    "challenge",
    "--enrolling",
    "block",
    "--floor",
    "insufficient_evidence=0.4",
];

/// One recorded login: what the proxy's `record_of` writes.
struct Rec {
    user: &'static str,
    route: &'static str,
    finding: Option<&'static str>,
    risk: Option<f64>,
    model_risk: Option<f64>,
    reasons: serde_json::Value,
    factor: Option<&'static str>,
    decision: &'static str,
    rule: &'static str,
    mode: &'static str,
}

impl Rec {
    fn new(
        user: &'static str,
        finding: &'static str,
        decision: &'static str,
        rule: &'static str,
    ) -> Rec {
        Rec {
            user,
            route: "login",
            finding: Some(finding),
            risk: None,
            model_risk: None,
            reasons: serde_json::json!([{ "code": finding }]),
            factor: None,
            decision,
            rule,
            mode: "enforce",
        }
    }

    fn scored(user: &'static str, risk: f64, decision: &'static str, rule: &'static str) -> Rec {
        Rec {
            risk: Some(risk),
            model_risk: Some(risk),
            reasons: serde_json::json!([{ "feature": "dwell_mean", "z": 1.5 }]),
            ..Rec::new(user, "scored", decision, rule)
        }
    }

    fn record(&self, store: &Store, incident: &str, kind: &str, outcome: &str) -> AuditRecord {
        let mut r = AuditRecord::new(kind, incident);
        r.app = Some("default".into());
        r.route = Some(self.route.into());
        r.user_key = Some(store.user_key(self.user).unwrap().to_string());
        r.risk = self.risk;
        r.reasons = self.reasons.clone();
        r.decision = Some(self.decision.into());
        r.policy = Some(self.rule.into());
        r.mode = Some(self.mode.into());
        r.finding = self.finding.map(String::from);
        r.model_risk = self.model_risk;
        r.factor = self.factor.map(String::from);
        r.outcome = Some(outcome.into());
        r.client_ip = Some("192.0.2.1".into());
        r
    }
}

/// How a login ended, as the proxy records it.
enum End {
    Verified,
    Refused,
    Blocked,
    Passed,
    ChallengeFailed,
}

/// Writes the trail of the table through the audit worker, now.
async fn write_trail(store: &Store, dir: &Path) {
    write_trail_at(store, dir, None).await
}

/// Writes the trail of the table through the audit worker, stamped `at` (Unix ms) when given.
async fn write_trail_at(store: &Store, dir: &Path, at: Option<u64>) {
    let auditor = Auditor::new(
        &AuditConfig {
            stream: AuditStream::Off,
            ..AuditConfig::default()
        },
        store.clone(),
        dir,
        Metrics::new().audit,
    )
    .unwrap();
    let with_factor = |mut r: Rec| {
        r.factor = Some("yes");
        r
    };
    let older = |mut r: Rec| {
        r.finding = None;
        r.model_risk = None;
        r
    };
    let logins = [
        (
            Rec::scored("alice", 0.55, "allow", "allow_below"),
            End::Verified,
        ),
        (
            with_factor(Rec::scored("bob", 0.85, "challenge", "between_thresholds")),
            End::Passed,
        ),
        (
            Rec::scored("carol", 0.4, "allow", "allow_below"),
            End::Refused,
        ),
        (Rec::scored("dave", 0.97, "block", "block_at"), End::Blocked),
        (
            with_factor(Rec::new(
                "alice",
                "missing_telemetry",
                "challenge",
                "on_missing_telemetry",
            )),
            End::ChallengeFailed,
        ),
        (
            Rec {
                model_risk: Some(0.2),
                reasons: serde_json::json!([
                    { "code": "insufficient_evidence", "detail": "no_password_keys" },
                    { "feature": "dwell_mean", "z": 0.5 }
                ]),
                ..with_factor(Rec::scored("bob", 0.8, "challenge", "between_thresholds"))
            },
            End::ChallengeFailed,
        ),
        (
            Rec::new("carol", "replayed_token", "block", "on_replayed_token"),
            End::Blocked,
        ),
        (
            Rec {
                route: "admin",
                ..Rec::new("dave", "invalid_telemetry", "block", "on_invalid_telemetry")
            },
            End::Blocked,
        ),
        (
            Rec::new("erin", "enrolling", "allow", "enrolling"),
            End::Verified,
        ),
        (
            with_factor(Rec::scored("alice", 0.7, "challenge", "between_thresholds")),
            End::Passed,
        ),
        (
            older(Rec::scored("erin", 0.3, "allow", "allow_below")),
            End::Verified,
        ),
        (
            older(Rec::scored("frank", 0.3, "allow", "risk<0.6")),
            End::Verified,
        ),
        (
            Rec {
                mode: "shadow",
                ..Rec::scored("frank", 0.99, "block", "block_at")
            },
            End::Verified,
        ),
        (
            Rec {
                factor: Some("no"),
                ..Rec::scored("carol", 0.7, "block", "on_no_factor")
            },
            End::Blocked,
        ),
    ];
    for (login, end) in logins {
        let incident = new_incident();
        let mut records = match end {
            End::Verified => vec![login.record(store, &incident, "login.outcome", "verified")],
            End::Refused => vec![login.record(store, &incident, "login.outcome", "failed")],
            End::Blocked => vec![login.record(store, &incident, kind::LOGIN_DECISION, "blocked")],
            End::Passed | End::ChallengeFailed => {
                let decided = login.record(store, &incident, kind::LOGIN_DECISION, "challenged");
                let mut ended = match end {
                    End::Passed => login.record(store, &incident, "challenge.passed", "verified"),
                    _ => login.record(store, &incident, kind::CHALLENGE_FAILED, "challenge_failed"),
                };
                ended.challenge = Some(
                    if matches!(end, End::Passed) {
                        "passed"
                    } else {
                        "failed"
                    }
                    .into(),
                );
                vec![decided, ended]
            }
        };
        // Not a login record: never counted.
        records.push(AuditRecord::new("factor.offered", &incident));
        for mut r in records {
            if let Some(at) = at {
                r.at = at;
            }
            auditor.record(r);
        }
    }
    auditor.flush().await;
}

fn last_hour() -> Selection {
    Selection::last(Duration::from_secs(3600))
}

/// The numbers of the table above, under the tried keys.
fn assert_hand_computed(r: &WhatIf) {
    assert_eq!(
        r.records, 18,
        "14 logins, 4 of them challenged (two records)"
    );
    assert_eq!(r.logins, 13);
    let f = r.fidelity;
    assert_eq!(
        (
            f.exact,
            f.inferred,
            f.unreplayable,
            f.factor_assumed,
            f.route_unknown
        ),
        (12, 1, 1, 2, 0)
    );
    let by = |b: whatif::ByAction| (b.allow, b.challenge, b.block);
    assert_eq!(by(r.decisions.then), (4, 4, 5));
    assert_eq!(by(r.decisions.now), (4, 3, 6));
    assert_eq!(
        by(r.actions.then),
        (5, 4, 4),
        "the shadow-mode block was forwarded"
    );
    assert_eq!(by(r.actions.now), (4, 3, 6));
    let cells: Vec<(Action, Action, u64)> = r
        .transitions
        .iter()
        .map(|t| (t.from, t.to, t.logins))
        .collect();
    use Action::{Allow as A, Block as B, Challenge as C};
    assert_eq!(
        cells,
        [
            (A, A, 2),
            (A, C, 1),
            (A, B, 1),
            (C, A, 1),
            (C, C, 1),
            (C, B, 2),
            (B, A, 1),
            (B, C, 1),
            (B, B, 3),
        ]
    );
    let u = r.users;
    assert_eq!(
        (
            u.seen,
            u.challenged_then,
            u.challenged_now,
            u.challenged_more_often,
            u.challenged_less_often
        ),
        (6, 2, 2, 1, 1),
        "dave more often (0 → 1), bob less (2 → 0), alice as often (2 → 2)"
    );
    let g = r.genuine;
    assert_eq!(
        (
            g.logins,
            g.challenged_then,
            g.challenged_now,
            g.blocked_then,
            g.blocked_now,
            g.newly_stopped
        ),
        (6, 2, 2, 1, 3, 2)
    );
    let f = r.failed;
    assert_eq!(
        (f.logins, f.allowed_then, f.allowed_now, f.newly_allowed),
        (3, 1, 2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_matches_a_hand_computed_replay_on_both_backends() {
    std::env::set_var("GK_TEST_SECRET", common::SECRET);
    for db in common::db::backends(StoreConfig::default(), "gk_whatif").await {
        let config = Config::parse(&config_text(db.dir.path()), "gk.yaml").unwrap();
        let store = db.open().await;
        let dave = store.ensure_user("dave").await.unwrap();
        write_trail(&store, db.dir.path()).await;

        let tried = PolicyOverrides::of(&config)
            .with_keys(tried_keys())
            .unwrap();
        let report = whatif::replay(&store, &last_hour(), &tried).await.unwrap();
        assert_hand_computed(&report);

        // The running policy gives back every recorded decision.
        let same = PolicyOverrides::of(&config)
            .with_keys(PolicyConfig::default())
            .unwrap();
        let report = whatif::replay(&store, &last_hour(), &same).await.unwrap();
        assert_eq!(
            report.decisions.now, report.decisions.then,
            "{:?}",
            db.backend
        );
        assert!(report
            .transitions
            .iter()
            .all(|t| t.from == t.to || t.logins == 0));
        assert_eq!(report.fidelity.factor_assumed, 0);

        // One route; and a window that holds none of it.
        let admin = Selection {
            route: Some("admin".into()),
            ..last_hour()
        };
        let report = whatif::replay(&store, &admin, &tried).await.unwrap();
        assert_eq!((report.records, report.logins), (1, 1));
        assert_eq!(report.decisions.now.challenge, 1);
        let before = Selection {
            from_ms: 0,
            to_ms: 1_000,
            app: None,
            route: None,
        };
        let report = whatif::replay(&store, &before, &tried).await.unwrap();
        assert_eq!((report.records, report.logins), (0, 0));

        // Forgetting a user takes their login rows with their audit events.
        store.forget(&dave).await.unwrap();
        let report = whatif::replay(&store, &last_hour(), &tried).await.unwrap();
        assert_eq!(report.logins, 11, "{:?}", db.backend);
        store.close().await;
    }
}

/// The hour packs (`audit_login_packs`) a settled hour is read from: the same numbers as the
/// rows, a late record or a forgotten user never answered from a stale pack, a damaged pack
/// never used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_hours_are_read_from_packs_that_never_go_stale() {
    use sqlx::Row;
    std::env::set_var("GK_TEST_SECRET", common::SECRET);
    for db in common::db::backends(StoreConfig::default(), "gk_packs").await {
        let config = Config::parse(&config_text(db.dir.path()), "gk.yaml").unwrap();
        let store = db.open().await;
        let raw = db.raw().await;
        let dave = store.ensure_user("dave").await.unwrap();
        let hour = 3_600_000u64;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // The middle of the hour three hours ago: settled, and whole inside the window.
        let then = (now / hour - 3) * hour + hour / 2;
        write_trail_at(&store, db.dir.path(), Some(then)).await;
        let window = Selection {
            from_ms: now - 5 * hour,
            to_ms: now + 1,
            app: None,
            route: None,
        };
        let tried = PolicyOverrides::of(&config)
            .with_keys(tried_keys())
            .unwrap();
        let packs = || async {
            sqlx::query("SELECT hour, records FROM audit_login_packs ORDER BY hour")
                .fetch_all(&raw)
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get::<i64, _>(0), r.get::<i64, _>(1)))
                .collect::<Vec<_>>()
        };
        assert!(packs().await.is_empty());

        // The first what-if packs the window's settled hours that have records ...
        let first = whatif::replay(&store, &window, &tried).await.unwrap();
        assert_hand_computed(&first);
        let packed_hour = (then / hour) as i64;
        assert_eq!(packs().await, [(packed_hour, 18)], "{:?}", db.backend);
        // ... and the next reads them, with the same numbers; so does one route of them.
        let again = whatif::replay(&store, &window, &tried).await.unwrap();
        assert_eq!(again, first, "{:?}", db.backend);
        let admin = Selection {
            route: Some("admin".into()),
            ..window.clone()
        };
        let report = whatif::replay(&store, &admin, &tried).await.unwrap();
        assert_eq!((report.records, report.logins), (1, 1));
        // Two years back: 17,500 hours without records cost an index probe, not a pack each.
        let long = Selection {
            from_ms: now - 2 * 365 * 24 * hour,
            ..window.clone()
        };
        let report = whatif::replay(&store, &long, &tried).await.unwrap();
        assert_eq!(report.logins, first.logins);
        assert_eq!(packs().await.len(), 1, "{:?}", db.backend);
        assert_eq!(
            store.pack_login_hours(0, (now + 1) as i64).await.unwrap(),
            0,
            "nothing left to pack"
        );

        // A record arriving late for a packed hour: its pack goes, the next read has it.
        let auditor_dir = tempfile::tempdir().unwrap();
        let auditor = Auditor::new(
            &AuditConfig {
                stream: AuditStream::Off,
                ..AuditConfig::default()
            },
            store.clone(),
            auditor_dir.path(),
            Metrics::new().audit,
        )
        .unwrap();
        let late = Rec::scored("grace", 0.1, "allow", "allow_below");
        let mut record = late.record(&store, &new_incident(), "login.outcome", "verified");
        record.at = then + 60_000;
        auditor.record(record);
        auditor.flush().await;
        assert!(!packs().await.iter().any(|(h, _)| *h == packed_hour));
        let report = whatif::replay(&store, &window, &tried).await.unwrap();
        assert_eq!(
            (report.records, report.logins),
            (19, first.logins + 1),
            "{:?}",
            db.backend
        );
        assert!(packs().await.contains(&(packed_hour, 19)));

        // Forgetting a user leaves no pack holding their records.
        store.forget(&dave).await.unwrap();
        let dave_key = store.user_key("dave").unwrap();
        for row in sqlx::query("SELECT pack FROM audit_login_packs")
            .fetch_all(&raw)
            .await
            .unwrap()
        {
            let pack: Vec<u8> = row.get(0);
            assert!(
                !pack.windows(32).any(|w| w == dave_key.as_bytes()),
                "{:?}: a pack still holds the forgotten user",
                db.backend
            );
        }
        let report = whatif::replay(&store, &window, &tried).await.unwrap();
        assert_eq!(report.logins, first.logins + 1 - 2, "{:?}", db.backend);

        // A damaged pack is never used: its hour is read from the rows and packed again.
        store.pack_login_hours(0, (now + 1) as i64).await.unwrap();
        sqlx::query("UPDATE audit_login_packs SET pack = $1 WHERE hour = $2")
            .bind(b"GKP1\xff".to_vec())
            .bind(packed_hour)
            .execute(&raw)
            .await
            .unwrap();
        let repaired = whatif::replay(&store, &window, &tried).await.unwrap();
        assert_eq!(repaired, report, "{:?}", db.backend);
        let (_, records) = packs()
            .await
            .into_iter()
            .find(|(h, _)| *h == packed_hour)
            .unwrap();
        assert_eq!(records, 17, "{:?}: packed again", db.backend);
        store.close().await;
    }
}

#[test]
fn tried_keys_that_make_an_unusable_policy_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("GK_TEST_SECRET", common::SECRET);
    let config = Config::parse(&config_text(dir.path()), "gk.yaml").unwrap();
    let error = PolicyOverrides::of(&config)
        .with_keys(PolicyConfig {
            allow_below: Some(0.97),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
    assert!(error.contains("allow_below"), "{error}");
    assert!(error.contains("block_at"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_the_same_numbers_as_json_and_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    std::env::set_var("GK_TEST_SECRET", common::SECRET);
    let config = Config::load(&path).unwrap();
    let store = Store::open(&config.store, dir.path(), &config.secrets.key)
        .await
        .unwrap();
    write_trail(&store, dir.path()).await;
    store.close().await;
    let config_arg = path.to_str().unwrap();

    let mut args = vec!["policy", "what-if", "--config", config_arg, "--since", "1h"];
    args.extend(TRIED_FLAGS);
    args.extend(["--format", "json"]);
    let (ok, out, err) = common::run_cli(args);
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["logins"], 13);
    assert_eq!(report["decisions"]["then"]["block"], 5);
    assert_eq!(report["decisions"]["now"]["block"], 6);
    assert_eq!(report["users"]["challenged_more_often"], 1);
    assert_eq!(report["genuine"]["newly_stopped"], 2);
    assert_eq!(report["failed"]["newly_allowed"], 1);
    let allow_to_block = report["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["from"] == "allow" && t["to"] == "block")
        .unwrap();
    assert_eq!(allow_to_block["logins"], 1);

    // The same keys from a tried file: its top level, over the route's own.
    let tried = dir.path().join("tried.yaml");
    let text = config_text(dir.path()).replace(
        "audit:\n",
        "policy:\n  allow_below: 0.5\n  block_at: 0.8\n  on_missing_telemetry: block\n  on_replayed_token: allow\n  enrolling: block\n  floors: { insufficient_evidence: 0.4 }\naudit:\n",
    );
    std::fs::write(&tried, text).unwrap();
    let (ok, out, err) = common::run_cli([
        "policy",
        "what-if",
        "--config",
        config_arg,
        "--since",
        "1h",
        "--try",
        tried.to_str().unwrap(),
        "--on-invalid-telemetry",
        "challenge",
        "--format",
        "json",
    ]);
    assert!(ok, "{err}");
    let from_file: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(from_file["transitions"], report["transitions"]);

    // The table, for people.
    let mut args = vec!["policy", "what-if", "--config", config_arg];
    args.extend(TRIED_FLAGS);
    let (ok, out, err) = common::run_cli(args);
    assert!(ok, "{err}");
    assert!(
        out.contains("13 logins replayed from 18 audit records"),
        "{out}"
    );
    assert!(out.contains("challenged more often 1"), "{out}");
    assert!(!out.contains("alice"), "never a login name: {out}");
}

#[test]
fn the_command_explains_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path());
    let config_arg = path.to_str().unwrap();
    let base = ["policy", "what-if", "--config", config_arg];
    let fails = |extra: &[&str], expected: &str| {
        let mut args = base.to_vec();
        args.extend(extra);
        let (ok, out, err) = common::run_cli(args);
        assert!(!ok, "{extra:?} succeeded: {out}");
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    fails(&["--since", "7x"], "expected a period such as");
    fails(&["--since", "0d"], "outside 1m to 3650d");
    fails(&["--from", "yesterday"], "expected an RFC 3339 time");
    fails(
        &["--from", "2025-03-02", "--to", "2025-03-01"],
        "must be before --to",
    );
    fails(
        &["--since", "7d", "--from", "2025-03-01"],
        "cannot be used with",
    );
    fails(&["--allow-bellow", "0.5"], "--allow-bellow");
    fails(&["--block-at", "1.5"], "expected a risk from 0 to 1");
    fails(
        &["--on-store-error", "maybe"],
        "expected allow, challenge or block",
    );
    fails(&["--floor", "made_up=0.5"], "the rules with a floor are");
    fails(
        &["--allow-below", "0.97"],
        "allow_below (0.97) must not be above block_at (0.95)",
    );
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "policy:\n  allow_below: [oops\n").unwrap();
    fails(&["--try", broken.to_str().unwrap()], "broken.yaml:");
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        config_text(dir.path()).replace("audit:\n", "policy:\n  allow_bellow: 0.5\naudit:\n"),
    )
    .unwrap();
    fails(&["--try", typo.to_str().unwrap()], "typo.yaml:");
    fails(&["--try", "/nonexistent/tried.yaml"], "cannot read");
}

/// The proxy itself records every input of the decision: logins through the real binary are
/// replayed exactly, and a tried key changes what it should.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_through_the_proxy_are_replayed_exactly() {
    use common::behaviour::{payload, STEADY};
    use common::legacy::{login_page, submit, LegacyApp, ALICE, LEGACY_ROUTES};
    let app = LegacyApp::start().await;
    let gk = common::Gaitkeeper::start_with(app.addr, "", LEGACY_ROUTES).await;
    for seed in 0..2 {
        let page = login_page(&gk).await;
        let p = payload(&page.gk_token, &STEADY, ALICE.0.len(), ALICE.1.len(), seed);
        let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
        assert_eq!(r.status(), 303, "an enrolling login is let through");
    }
    // No telemetry: challenged, and alice has no factor, so on_no_factor blocks it.
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, ALICE.0, ALICE.1, None).await;
    assert_eq!(r.status(), 403);
    let config = gk.config_path.to_str().unwrap().to_string();
    let what_if = |extra: &[&str]| {
        let mut args = vec!["policy", "what-if", "--config", &config, "--format", "json"];
        args.extend(extra);
        let (ok, out, err) = common::run_cli(args);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    common::eventually(
        Duration::from_secs(10),
        "the three logins audited",
        || async { what_if(&[])["logins"] == 3 },
    )
    .await;
    let same = what_if(&[]);
    assert_eq!(same["fidelity"]["exact"], 3, "{same}");
    assert_eq!(same["decisions"]["then"], same["decisions"]["now"]);
    assert_eq!(same["decisions"]["then"]["block"], 1);
    assert_eq!(
        same["genuine"]["logins"], 2,
        "the app accepted both enrolling logins"
    );

    let tried = what_if(&["--on-no-factor", "allow", "--enrolling", "challenge"]);
    let cell = |from: &str, to: &str| {
        tried["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["from"] == from && t["to"] == to)
            .unwrap()["logins"]
            .clone()
    };
    assert_eq!(cell("block", "allow"), 1, "{tried}");
    assert_eq!(cell("allow", "challenge"), 2, "{tried}");
    assert_eq!(tried["fidelity"]["factor_assumed"], 2, "{tried}");
    assert_eq!(tried["genuine"]["newly_stopped"], 2, "{tried}");
}
