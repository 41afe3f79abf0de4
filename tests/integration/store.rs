//! The profile store and the model cache, against both backends: SQLite in a temp file always,
//! PostgreSQL when `GAITKEEPER_TEST_POSTGRES_URL` is set (each test gets a fresh schema that
//! is dropped afterwards, so runs never collide).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::common::db;

use db::{secret, TestDb};
use gaitkeeper::cache::ModelCache;
use gaitkeeper::config::{RetentionPeriod, Secret, StoreConfig};
use gaitkeeper::metrics::CacheMetrics;
use gaitkeeper::store::{
    Backend, Decision, Enrollment, FeatureBlob, NewLogin, Outcome, Store, StoreError, StoredModel,
    UserKey,
};
use sqlx::Row;

/// One backend to run a test against, with its own empty store.
fn config() -> StoreConfig {
    StoreConfig {
        max_connections: 4,
        ..StoreConfig::default()
    }
}

/// The backends this run tests: SQLite always, PostgreSQL when configured.
async fn backends() -> Vec<TestDb> {
    backends_with(config()).await
}

async fn backends_with(base: StoreConfig) -> Vec<TestDb> {
    db::backends(base, "gk_test").await
}

fn login(outcome: Outcome, risk: f64) -> NewLogin {
    NewLogin {
        at: SystemTime::now(),
        features: FeatureBlob {
            version: 3,
            bytes: (0..64u8).collect(),
        },
        risk,
        reasons: serde_json::json!([{"feature": "dwell", "z": 1.5}]),
        decision: Decision::Allow,
        outcome,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_round_trip() {
    for db in backends().await {
        let store = db.open().await;
        let recorded = store
            .record_login("alice", login(Outcome::Verified, 0.25))
            .await
            .unwrap();
        let key = recorded.user;
        assert_eq!(key, store.user_key("alice").unwrap());
        let saved = store.save_model(&key, 3, 7, vec![9; 1000]).await.unwrap();
        let loaded = store.load_model(&key).await.unwrap().unwrap();
        assert_eq!(loaded, saved, "{:?}", db.backend);
        assert_eq!((loaded.feature_version, loaded.model_version), (3, 7));

        let profile = store.profile(&key, 10).await.unwrap().unwrap();
        assert_eq!(
            profile.user.clear_name, None,
            "names are not kept by default"
        );
        assert_eq!(profile.user.verified_logins, 1);
        assert_eq!(profile.model.unwrap().bytes, 1000);
        assert!(!profile.has_totp);
        let session = &profile.recent[0];
        assert_eq!(session.risk, 0.25);
        assert_eq!(session.decision, Decision::Allow);
        assert_eq!(session.outcome, Outcome::Verified);
        assert_eq!(session.features.version, 3);
        assert_eq!(session.features.bytes, (0..64u8).collect::<Vec<_>>());
        assert_eq!(session.reasons[0]["feature"], "dwell");

        assert_eq!(
            store.user(&store.user_key("bob").unwrap()).await.unwrap(),
            None
        );
        assert!(matches!(
            store
                .save_model(&store.user_key("bob").unwrap(), 3, 1, vec![1])
                .await,
            Err(StoreError::UnknownUser { .. })
        ));
        store.close().await;

        let named = db
            .open_with(&StoreConfig {
                keep_clear_names: true,
                ..db.config.clone()
            })
            .await;
        named.ensure_user("carol").await.unwrap();
        let users = named.list_users(None, 100).await.unwrap();
        let names: Vec<_> = users.iter().map(|u| u.clear_name.clone()).collect();
        assert!(names.contains(&Some("carol".to_string())), "{names:?}");
        assert!(names.contains(&None), "alice was created without her name");
        named.ensure_user("alice").await.unwrap();
        let alice = named.user(&key).await.unwrap().unwrap();
        assert_eq!(
            alice.clear_name.as_deref(),
            Some("alice"),
            "named on her next login"
        );
        named.close().await;

        // Turning the setting off removes the names already kept.
        let unnamed = db.open().await;
        let users = unnamed.list_users(None, 100).await.unwrap();
        assert!(users.iter().all(|u| u.clear_name.is_none()), "{users:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_counts_only_verified_logins() {
    for db in backends_with(StoreConfig {
        enrollment_logins: 3,
        ..config()
    })
    .await
    {
        let store = db.open().await;
        let first = store
            .record_login("dave", login(Outcome::Verified, 0.1))
            .await
            .unwrap();
        assert_eq!(
            first.enrollment,
            Enrollment::Enrolling {
                verified: 1,
                needed: 3
            }
        );
        let failed = store
            .record_login("dave", login(Outcome::Failed, 0.9))
            .await
            .unwrap();
        assert_eq!(
            failed.enrollment, first.enrollment,
            "failed logins do not count"
        );
        let pending = store
            .record_login("dave", login(Outcome::Pending, 0.2))
            .await
            .unwrap();
        assert_eq!(
            pending.enrollment, first.enrollment,
            "pending logins do not count yet"
        );
        let now = store
            .set_outcome(pending.session, Outcome::Verified)
            .await
            .unwrap();
        assert_eq!(
            now,
            Enrollment::Enrolling {
                verified: 2,
                needed: 3
            }
        );
        assert!(
            store
                .set_outcome(pending.session, Outcome::Verified)
                .await
                .is_err(),
            "a login is settled once"
        );
        let last = store
            .record_login("dave", login(Outcome::Verified, 0.1))
            .await
            .unwrap();
        assert_eq!(last.enrollment, Enrollment::Enrolled { verified: 3 });

        store.reset(&last.user).await.unwrap();
        let user = store.user(&last.user).await.unwrap().unwrap();
        assert_eq!(
            user.enrollment,
            Enrollment::Enrolling {
                verified: 0,
                needed: 3
            },
            "reset starts enrollment over"
        );
        assert!(store
            .recent_logins(&last.user, 10)
            .await
            .unwrap()
            .is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_logins_are_never_offered_for_learning() {
    for db in backends().await {
        let store = db.open().await;
        let mut verified = login(Outcome::Verified, 0.1);
        verified.features.bytes = b"good".to_vec();
        let mut blocked = login(Outcome::Failed, 0.99);
        blocked.decision = Decision::Block;
        blocked.features.bytes = b"evil".to_vec();
        let mut unconfirmed = login(Outcome::Pending, 0.5);
        unconfirmed.features.bytes = b"unsure".to_vec();
        let key = store.record_login("erin", verified).await.unwrap().user;
        store.record_login("erin", blocked).await.unwrap();
        store.record_login("erin", unconfirmed).await.unwrap();
        let learnable = store.verified_features(&key, 100).await.unwrap();
        assert_eq!(
            learnable,
            vec![FeatureBlob {
                version: 3,
                bytes: b"good".to_vec()
            }],
            "{:?}",
            db.backend
        );
    }
}

/// Every (table, column, type) of the store's schema, from the database's own catalog.
async fn every_column(db: &TestDb, raw: &sqlx::AnyPool) -> Vec<(String, String, String)> {
    let sql = match db.backend {
        Backend::Sqlite => {
            "SELECT m.name AS t, p.name AS c, p.type AS ty FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'"
        }
        Backend::Postgres => {
            "SELECT CAST(table_name AS TEXT) AS t, CAST(column_name AS TEXT) AS c, CAST(data_type AS TEXT) AS ty FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations'"
        }
    };
    sqlx::query(sql)
        .fetch_all(raw)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<String, _>("t"),
                r.get::<String, _>("c"),
                r.get::<String, _>("ty"),
            )
        })
        .collect()
}

/// How many values in the whole store contain `needle` (as text or bytes), per column.
async fn occurrences(db: &TestDb, raw: &sqlx::AnyPool, needle: &[u8]) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for (table, column, ty) in every_column(db, raw).await {
        let sql = match db.backend {
            Backend::Sqlite => format!(
                "SELECT COUNT(*) FROM {table} WHERE instr(CAST({column} AS BLOB), $1) > 0"
            ),
            // Every value as its bytes: bytea as is, anything else as its UTF-8 text.
            Backend::Postgres if ty == "bytea" => {
                format!("SELECT COUNT(*) FROM {table} WHERE position($1 IN {column}) > 0")
            }
            Backend::Postgres => format!(
                "SELECT COUNT(*) FROM {table} WHERE position($1 IN convert_to(CAST({column} AS TEXT), 'UTF8')) > 0"
            ),
        };
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(needle.to_vec())
            .fetch_one(raw)
            .await
            .unwrap_or_else(|e| panic!("{table}.{column}: {e}"));
        if n > 0 {
            found.push((format!("{table}.{column}"), n));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_leaves_nothing_identifiable() {
    const NAME: &str = "frieda.forgettable@example.org";
    let totp = b"frieda-totp-secret-20".to_vec();
    for db in backends_with(StoreConfig {
        keep_clear_names: true,
        ..config()
    })
    .await
    {
        let store = db.open().await;
        let key = store
            .record_login(NAME, login(Outcome::Verified, 0.2))
            .await
            .unwrap()
            .user;
        store
            .record_login(NAME, login(Outcome::Failed, 0.8))
            .await
            .unwrap();
        store
            .save_model(&key, 3, 1, b"frieda-model".to_vec())
            .await
            .unwrap();
        store.set_totp_secret(NAME, &totp).await.unwrap();
        store
            .append_audit(
                Some(&key),
                "login.challenged",
                &serde_json::json!({"risk": 0.8}),
            )
            .await
            .unwrap();
        store
            .append_audit(
                Some(&key),
                "login.challenged",
                &serde_json::json!({"risk": 0.7}),
            )
            .await
            .unwrap();
        // Failed logins counted (and a ban) in the state several instances share.
        use gaitkeeper::shared::SharedState;
        let slot = gaitkeeper::shared::user_slot(&key.to_string());
        let minute = std::time::Duration::from_secs(60);
        store
            .count_failures(&[(slot.clone(), 5)], minute, minute)
            .await
            .unwrap();
        store
            .count_failures(&[(slot.clone(), 1)], minute, minute)
            .await
            .unwrap();
        store
            .set_recovery_codes(&key, &["abcdefghjk".to_string(), "mnpqrstuvw".to_string()])
            .await
            .unwrap();
        assert_eq!(store.recovery_codes_left(&key).await.unwrap(), 2);
        let (invited, _) = store
            .create_invitation(NAME, "default", SystemTime::now() + Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(invited, key);
        // A passkey, and when she was last offered to add a factor.
        let passkey = gaitkeeper::store::NewPasskey {
            credential_id: b"frieda-credential".to_vec(),
            rp_id: "localhost".into(),
            credential: "{\"cred\":\"frieda\"}".into(),
        };
        assert!(store.add_passkey(NAME, &passkey).await.unwrap());
        assert!(
            !store.add_passkey("bob", &passkey).await.unwrap(),
            "one user's only"
        );
        store.factor_offered(&key).await.unwrap();
        // And wrong TOTP codes, from everywhere and from one address.
        let totp_slots = gaitkeeper::shared::totp_slots(&key.to_string(), "127.0.0.9");
        let counted: Vec<_> = totp_slots.iter().map(|s| (s.clone(), u32::MAX)).collect();
        store
            .count_failures(&counted, minute, minute)
            .await
            .unwrap();
        assert_eq!(store.failure_counts(&totp_slots).await.unwrap(), [1, 1]);
        let bob = store
            .record_login("bob", login(Outcome::Verified, 0.1))
            .await
            .unwrap()
            .user;
        store
            .save_model(&bob, 3, 1, b"bob-model".to_vec())
            .await
            .unwrap();

        let raw = db.raw().await;
        let tables: std::collections::BTreeSet<_> = every_column(&db, &raw)
            .await
            .into_iter()
            .map(|(t, _, _)| t)
            .collect();
        assert_eq!(
            tables.into_iter().collect::<Vec<_>>(),
            [
                "audit_events",
                "audit_forgotten",
                // Settled hours of `audit_logins`, packed: a trigger deletes an hour's pack
                // with any of its rows (whatif::settled_hours_are_read_from_packs_...).
                "audit_login_packs",
                // The login records of `audit_events` as columns: deleted with them.
                "audit_logins",
                "factor_offers",
                // Aggregates over many users, holding no key, name or login of anyone
                // (docs/learning.md): a forgotten user's influence leaves at the next training.
                "global_models",
                "invitations",
                "login_sessions",
                "models",
                "passkeys",
                "recovery_codes",
                // What several instances share: used ids (random, anonymous), counters and
                // bans (keyed by user key: erased by `forget`).
                "shared_bans",
                "shared_counters",
                // Held logins of open challenges: sealed under the server key with nothing in
                // clear, keyed by the hash of a random id, gone within `mfa.challenge_ttl`.
                "shared_held",
                "shared_once",
                "store_meta",
                "totp_secrets",
                "users"
            ],
            "a new table must be added to `forget` and to this test"
        );
        assert!(!occurrences(&db, &raw, &key.as_bytes()[..]).await.is_empty());
        assert!(!occurrences(&db, &raw, NAME.as_bytes()).await.is_empty());

        let forgotten = store.forget(&key).await.unwrap();
        assert_eq!(forgotten.sessions, 2);
        assert_eq!(forgotten.models, 1);
        assert_eq!(forgotten.totp_secrets, 1);
        assert_eq!(forgotten.audit_events, 2);

        for needle in [
            &key.as_bytes()[..],
            NAME.as_bytes(),
            b"frieda-model",
            key.to_string().as_bytes(),
        ] {
            assert_eq!(
                occurrences(&db, &raw, needle).await,
                vec![],
                "{:?}: {:?} is still in the store",
                db.backend,
                String::from_utf8_lossy(needle)
            );
        }
        assert_eq!(store.user(&key).await.unwrap(), None);
        assert_eq!(
            store.forgotten_audit_counts().await.unwrap(),
            vec![("login.challenged".to_string(), 2)],
            "audit rows survive only as anonymous counts"
        );
        assert!(
            store.load_model(&bob).await.unwrap().is_some(),
            "others are untouched"
        );
        assert!(matches!(
            store.forget(&key).await,
            Err(StoreError::UnknownUser { .. })
        ));
        raw.close().await;
        store.close().await;

        if db.backend == Backend::Sqlite {
            // Not only unreachable by SQL: gone from the files.
            for entry in std::fs::read_dir(db.dir.path()).unwrap() {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                for needle in [&key.as_bytes()[..], NAME.as_bytes(), b"frieda-model"] {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle),
                        "{:?} found in the SQLite files",
                        String::from_utf8_lossy(needle)
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_are_append_only() {
    for db in backends().await {
        let store = db.open().await;
        let key = store.ensure_user("gina").await.unwrap();
        store
            .append_audit(
                Some(&key),
                "login.blocked",
                &serde_json::json!({"risk": 0.97}),
            )
            .await
            .unwrap();
        assert!(store
            .append_audit(Some(&key), "Not A Kind!", &serde_json::json!({}))
            .await
            .is_err());
        let raw = db.raw().await;
        let err = sqlx::query("UPDATE audit_events SET kind = 'login.allowed'")
            .execute(&raw)
            .await
            .expect_err("the database refuses to rewrite the audit trail");
        assert!(err.to_string().contains("append-only"), "{err}");
        let events = store.audit_events(&key, 10).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "login.blocked");
        assert_eq!(events[0].detail["risk"], 0.97);
        raw.close().await;
    }
}

/// The console reads the trail by period, newest first, one bounded page at a time, and
/// counts enrolled users; on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_are_read_by_period_in_pages_and_enrolled_users_counted() {
    for db in backends_with(StoreConfig {
        enrollment_logins: 2,
        ..config()
    })
    .await
    {
        let store = db.open().await;
        for n in 0..3 {
            store
                .append_audit(None, "login.decision", &serde_json::json!({ "n": n }))
                .await
                .unwrap();
        }
        let raw = db.raw().await;
        // A record of long ago, outside the period.
        sqlx::query("INSERT INTO audit_events (at, kind, detail) VALUES ($1, $2, $3)")
            .bind(1_000i64)
            .bind("login.decision")
            .bind("{\"n\":-1}")
            .execute(&raw)
            .await
            .unwrap();
        raw.close().await;
        let now = SystemTime::now();
        let (from, to) = (
            now - Duration::from_secs(3600),
            now + Duration::from_secs(60),
        );
        let first = store.audit_between(from, to, None, 2).await.unwrap();
        let seen: Vec<i64> = first
            .iter()
            .map(|e| e.detail["n"].as_i64().unwrap())
            .collect();
        assert_eq!(seen, [2, 1], "{:?}: newest first", db.backend);
        let rest = store
            .audit_between(from, to, Some(first[1].id), 2)
            .await
            .unwrap();
        assert_eq!(rest.len(), 1, "{:?}", db.backend);
        assert_eq!(rest[0].detail["n"], 0);
        assert!(store
            .audit_between(from, to, Some(rest[0].id), 2)
            .await
            .unwrap()
            .is_empty());
        let all = store
            .audit_between(SystemTime::UNIX_EPOCH, to, None, 100_000)
            .await
            .unwrap();
        assert_eq!(all.len(), 4, "the old record is in the whole trail");

        for _ in 0..2 {
            store
                .record_login("erin", login(Outcome::Verified, 0.1))
                .await
                .unwrap();
        }
        store
            .record_login("frank", login(Outcome::Verified, 0.1))
            .await
            .unwrap();
        assert_eq!(store.count_enrolled().await.unwrap(), 1, "{:?}", db.backend);
        assert_eq!(store.count_users().await.unwrap(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_secret_is_not_stored_in_clear() {
    let secret = b"0123456789abcdefghij".to_vec();
    for db in backends().await {
        let store = db.open().await;
        let key = store.set_totp_secret("hank", &secret).await.unwrap();
        assert_eq!(store.totp_secret(&key).await.unwrap(), Some(secret.clone()));
        let raw = db.raw().await;
        assert_eq!(
            occurrences(&db, &raw, &secret).await,
            vec![],
            "{:?}: the TOTP secret is readable in the store",
            db.backend
        );
        assert_eq!(occurrences(&db, &raw, &secret[..8]).await, vec![]);
        // Moving a sealed secret to another user does not open it.
        let other = store.ensure_user("ivan").await.unwrap();
        sqlx::query(
            "INSERT INTO totp_secrets (user_key, nonce, sealed, created_at) \
             SELECT $1, nonce, sealed, created_at FROM totp_secrets WHERE user_key = $2",
        )
        .bind(other.as_bytes().to_vec())
        .bind(key.as_bytes().to_vec())
        .execute(&raw)
        .await
        .unwrap();
        assert!(matches!(
            store.totp_secret(&other).await,
            Err(StoreError::Unseal { .. })
        ));
        assert!(store.set_totp_secret("hank", b"short").await.is_err());
        raw.close().await;
        store.close().await;

        let wrong = Secret::from_bytes(b"another-secret-0123456789abcdef012345").unwrap();
        match Store::open(&db.config, db.dir.path(), &wrong).await {
            Err(e @ StoreError::WrongKey { .. }) => {
                assert!(e.to_string().contains("secrets.key"), "{e}")
            }
            Err(e) => panic!("expected WrongKey, got {e}"),
            Ok(_) => panic!("a store opened with another secrets.key"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cold_loads_load_once() {
    // A slow loader makes the calls overlap for sure.
    let cache: ModelCache = ModelCache::new(&config(), CacheMetrics::new());
    let key = UserKey::from_hex(&"ab".repeat(32)).unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let cache = cache.clone();
        let loads = loads.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_load(&key, async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok(Some(StoredModel {
                        feature_version: 1,
                        model_version: 1,
                        blob: vec![1; 10],
                        updated_at: SystemTime::now(),
                    }))
                })
                .await
                .unwrap()
                .unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().blob, vec![1; 10]);
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "one load for 32 concurrent logins"
    );

    // And through the real store, on each backend.
    for db in backends().await {
        let store = db.open().await;
        let metrics = CacheMetrics::new();
        let cache: ModelCache = ModelCache::new(&db.config, metrics.clone());
        let key = store.ensure_user("judy").await.unwrap();
        store.save_model(&key, 3, 1, vec![7; 4096]).await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, store) = (cache.clone(), store.clone());
            tasks.push(tokio::spawn(async move { cache.get(&store, &key).await }));
        }
        for task in tasks {
            let model = task.await.unwrap().unwrap().unwrap();
            assert_eq!(model.model_version, 1);
        }
        assert_eq!(
            metrics.loads.with_label_values(&["ok"]).get(),
            1,
            "{:?}",
            db.backend
        );
        let hits = metrics.requests.with_label_values(&["hit"]).get();
        cache.get(&store, &key).await.unwrap();
        assert_eq!(metrics.requests.with_label_values(&["hit"]).get(), hits + 1);

        // A refit replaces the entry; no reload.
        let newer = store.save_model(&key, 3, 2, vec![8; 4096]).await.unwrap();
        cache.replace(&key, newer).await;
        let model = cache.get(&store, &key).await.unwrap().unwrap();
        assert_eq!(model.model_version, 2);
        assert_eq!(metrics.loads.with_label_values(&["ok"]).get(), 1);

        // A user without a model is remembered as such, until invalidated.
        let nobody = store.ensure_user("kim").await.unwrap();
        assert!(cache.get(&store, &nobody).await.unwrap().is_none());
        assert!(cache.get(&store, &nobody).await.unwrap().is_none());
        assert_eq!(metrics.loads.with_label_values(&["ok"]).get(), 2);
        cache.invalidate(&nobody).await;
        cache.get(&store, &nobody).await.unwrap();
        assert_eq!(metrics.loads.with_label_values(&["ok"]).get(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stays_within_its_size_bound() {
    let metrics = CacheMetrics::new();
    let cache: ModelCache = ModelCache::new(
        &StoreConfig {
            cache_mb: 1,
            ..config()
        },
        metrics.clone(),
    );
    for i in 0..100u8 {
        let key = UserKey::from_hex(&format!("{i:02x}").repeat(32)).unwrap();
        cache
            .get_or_load(&key, async {
                Ok(Some(StoredModel {
                    feature_version: 1,
                    model_version: 1,
                    blob: vec![i; 64 * 1024],
                    updated_at: SystemTime::now(),
                }))
            })
            .await
            .unwrap();
    }
    cache.run_pending_tasks().await;
    assert!(
        cache.weighted_bytes() <= 1024 * 1024,
        "{} bytes cached",
        cache.weighted_bytes()
    );
    assert!(metrics.evictions.with_label_values(&["size"]).get() > 0);
    assert_eq!(metrics.bytes.get() as u64, cache.weighted_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_profiles() {
    for db in backends().await {
        let store = db.open().await;
        let mut keys = Vec::new();
        for i in 0..20 {
            let name = format!("user{i}");
            let key = store
                .record_login(&name, login(Outcome::Verified, 0.1))
                .await
                .unwrap()
                .user;
            store
                .save_model(&key, 3, i, format!("model of {name}").into_bytes())
                .await
                .unwrap();
            keys.push(key);
        }
        store.close().await;

        let reopened = db.open().await;
        assert_eq!(reopened.count_users().await.unwrap(), 20);
        for (i, key) in keys.iter().enumerate() {
            let model = reopened.load_model(key).await.unwrap().unwrap();
            assert_eq!(model.blob, format!("model of user{i}").into_bytes());
            assert_eq!(model.model_version, i as u32);
            assert_eq!(
                reopened.user(key).await.unwrap().unwrap().verified_logins,
                1
            );
        }
        // Paging walks every user exactly once.
        let first = reopened.list_users(None, 15).await.unwrap();
        let rest = reopened
            .list_users(Some(&first.last().unwrap().key), 15)
            .await
            .unwrap();
        assert_eq!((first.len(), rest.len()), (15, 5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_features_and_keeps_models() {
    for db in backends_with(StoreConfig {
        retention: RetentionPeriod::days(30),
        ..config()
    })
    .await
    {
        let store = db.open().await;
        let mut old = login(Outcome::Verified, 0.1);
        old.at = SystemTime::now() - Duration::from_secs(40 * 86_400);
        let key = store.record_login("lena", old).await.unwrap().user;
        store
            .record_login("lena", login(Outcome::Verified, 0.2))
            .await
            .unwrap();
        store.save_model(&key, 3, 1, vec![1; 10]).await.unwrap();
        assert_eq!(store.prune(SystemTime::now()).await.unwrap(), 1);
        let left = store.recent_logins(&key, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].risk, 0.2);
        assert!(
            store.load_model(&key).await.unwrap().is_some(),
            "models survive"
        );
        assert_eq!(
            store.user(&key).await.unwrap().unwrap().verified_logins,
            2,
            "enrollment counts survive"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_values_are_refused() {
    for db in backends().await {
        let store = db.open().await;
        let mut huge = login(Outcome::Verified, 0.1);
        huge.features.bytes = vec![0; gaitkeeper::store::MAX_FEATURE_BYTES + 1];
        assert!(matches!(
            store.record_login("mia", huge).await,
            Err(StoreError::TooLarge { .. })
        ));
        assert!(store.user_key("").is_err());
        assert!(store.user_key(&"x".repeat(10_000)).is_err());
        let mut nan = login(Outcome::Verified, f64::NAN);
        nan.risk = f64::NAN;
        assert!(store.record_login("mia", nan).await.is_err());
    }
}

/// The writer that `crash_during_writes_leaves_a_consistent_store` runs in a child process and
/// kills: it records logins, refits models and appends audit events as fast as it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper process, started (and killed) by crash_during_writes_leaves_a_consistent_store"]
async fn crash_writer_child() {
    use std::io::Write;
    let Ok(url) = std::env::var("GK_CRASH_STORE_URL") else {
        return;
    };
    let store = Store::open(
        &StoreConfig {
            url: Some(url),
            ..config()
        },
        Path::new("."),
        &secret(),
    )
    .await
    .unwrap();
    for n in 0u32.. {
        let name = format!("crash{}", n % 10);
        let key = store
            .record_login(&name, login(Outcome::Verified, 0.1))
            .await
            .unwrap()
            .user;
        store
            .save_model(&key, 3, n, n.to_le_bytes().repeat(2048))
            .await
            .unwrap();
        store
            .append_audit(Some(&key), "model.refit", &serde_json::json!({ "n": n }))
            .await
            .unwrap();
        if n % 20 == 19 {
            println!("progress {n}");
            std::io::stdout().flush().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_during_writes_leaves_a_consistent_store() {
    use std::io::BufRead;
    for db in backends().await {
        // Create the schema first, so the kill lands in the writes, not in the migration.
        db.open().await.close().await;
        let url = db.config.url_or_default(db.dir.path());
        for round in 0..3 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    &crate::common::test_path(module_path!(), "crash_writer_child"),
                    "--exact",
                    "--include-ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("GK_CRASH_STORE_URL", &url)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
            // A writer that hangs is killed too, so this test fails instead of hanging.
            let child = Arc::new(std::sync::Mutex::new(child));
            let watchdog = Arc::downgrade(&child);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(120));
                if let Some(child) = watchdog.upgrade() {
                    let _ = child.lock().unwrap().kill();
                }
            });
            let mut progress = 0;
            for line in stdout.lines() {
                if line.unwrap().starts_with("progress ") {
                    progress += 1;
                    if progress == 2 + round {
                        break;
                    }
                }
            }
            {
                let mut child = child.lock().unwrap();
                child.kill().unwrap(); // SIGKILL: no destructor, no rollback, no checkpoint
                child.wait().unwrap();
            }
            assert_eq!(
                progress,
                2 + round,
                "the writer died, or hung, before it was killed"
            );

            let store = db.open().await;
            let raw = db.raw().await;
            if db.backend == Backend::Sqlite {
                let check: String = sqlx::query_scalar("PRAGMA integrity_check")
                    .fetch_one(&raw)
                    .await
                    .unwrap();
                assert_eq!(check, "ok");
            }
            // A login and its enrollment count are written in one transaction: they agree.
            let users = store.list_users(None, 100).await.unwrap();
            assert_eq!(users.len(), 10, "{:?}", db.backend);
            for user in &users {
                let logins = store.recent_logins(&user.key, 1000).await.unwrap();
                assert_eq!(
                    user.verified_logins,
                    logins.len() as u64,
                    "{:?}",
                    db.backend
                );
                // Every model is whole: 2048 copies of its version number.
                if let Some(model) = store.load_model(&user.key).await.unwrap() {
                    assert_eq!(model.blob, model.model_version.to_le_bytes().repeat(2048));
                }
            }
            // And the store takes writes again.
            store
                .record_login("after-crash", login(Outcome::Verified, 0.1))
                .await
                .unwrap();
            store
                .forget(&store.user_key("after-crash").unwrap())
                .await
                .unwrap();
            raw.close().await;
            store.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_do_not_trip_over_each_other() {
    for db in backends().await {
        let store = db.open().await;
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    let name = format!("writer{}", (t + i) % 4);
                    let pending = store
                        .record_login(&name, login(Outcome::Pending, 0.3))
                        .await?;
                    store
                        .set_outcome(pending.session, Outcome::Verified)
                        .await?;
                    if i % 10 == 0 {
                        store
                            .save_model(&pending.user, 3, i, vec![t as u8; 512])
                            .await?;
                    }
                    if i == 20 {
                        let transient = format!("transient{t}");
                        store
                            .record_login(&transient, login(Outcome::Verified, 0.1))
                            .await?;
                        store.forget(&store.user_key(&transient)?).await?;
                    }
                }
                Ok::<_, StoreError>(())
            }));
        }
        for task in tasks {
            task.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{:?}: {e}", db.backend));
        }
        for user in store.list_users(None, 100).await.unwrap() {
            let logins = store.recent_logins(&user.key, 1000).await.unwrap();
            assert_eq!(user.verified_logins, logins.len() as u64);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_users_history_is_bounded() {
    use gaitkeeper::store::MAX_SESSIONS_PER_USER;
    for db in backends().await {
        let store = db.open().await;
        let total = MAX_SESSIONS_PER_USER + 5;
        let mut first = None;
        for i in 0..total {
            let recorded = store
                .record_login("olga", login(Outcome::Verified, i as f64 / 10_000.0))
                .await
                .unwrap();
            first.get_or_insert(recorded);
        }
        let key = first.unwrap().user;
        let kept = store.recent_logins(&key, 5000).await.unwrap();
        let what = format!("{:?}", db.backend);
        assert!(
            (MAX_SESSIONS_PER_USER - 100..=MAX_SESSIONS_PER_USER).contains(&(kept.len() as i64)),
            "{what}: {} kept",
            kept.len()
        );
        assert_eq!(
            kept[0].risk,
            (total - 1) as f64 / 10_000.0,
            "the newest stays"
        );
        // Oldest first out: what is kept is the newest, without gaps.
        assert_eq!(
            kept.last().unwrap().risk,
            (total - kept.len() as i64) as f64 / 10_000.0,
            "{what}: the oldest go first"
        );
        assert_eq!(
            store.user(&key).await.unwrap().unwrap().verified_logins,
            total as u64,
            "the enrollment count is not trimmed"
        );

        // The same bound holds when one batch brings a whole history at once.
        let batch = (0..total)
            .map(|i| {
                (
                    "pavel".to_string(),
                    login(Outcome::Verified, i as f64 / 10_000.0),
                )
            })
            .collect();
        let recorded = store.record_logins(batch).await;
        assert!(recorded.iter().all(Result::is_ok), "{what}");
        let pavel = recorded[0].as_ref().unwrap().user;
        let kept = store.recent_logins(&pavel, 5000).await.unwrap();
        assert!(
            kept.len() as i64 <= MAX_SESSIONS_PER_USER,
            "{what}: {}",
            kept.len()
        );
        assert_eq!(kept[0].risk, (total - 1) as f64 / 10_000.0, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_runs_in_wal_mode() {
    let db = backends().await.remove(0);
    let store = db.open().await;
    assert_eq!(store.backend(), Backend::Sqlite);
    let raw = db.raw().await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    raw.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_from_a_newer_version_is_refused_with_a_reason() {
    for db in backends().await {
        db.open().await.close().await;
        let raw = db.raw().await;
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999, 'from the future', TRUE, $1, 0)",
        )
        .bind(vec![0u8; 48])
        .execute(&raw)
        .await
        .unwrap();
        raw.close().await;
        match Store::open(&db.config, db.dir.path(), &secret()).await {
            Err(e @ StoreError::NewerSchema { version: 999, .. }) => {
                assert!(e.to_string().contains("upgrade gaitkeeper"), "{e}")
            }
            Err(e) => panic!("{:?}: expected NewerSchema, got {e}", db.backend),
            Ok(_) => panic!("{:?}: opened a store from the future", db.backend),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_models_leave_the_cache() {
    let metrics = CacheMetrics::new();
    let cache: ModelCache = ModelCache::new(
        &StoreConfig {
            cache_idle: gaitkeeper::config::HumanDuration(Duration::from_millis(200)),
            ..config()
        },
        metrics.clone(),
    );
    let key = UserKey::from_hex(&"cd".repeat(32)).unwrap();
    cache.get_or_load(&key, async { Ok(None) }).await.unwrap();
    cache.run_pending_tasks().await;
    assert_eq!(cache.entries(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cache.run_pending_tasks().await;
    assert_eq!(cache.entries(), 0);
    assert_eq!(metrics.evictions.with_label_values(&["idle"]).get(), 1);
}

#[test]
fn cache_metrics_are_in_the_process_registry() {
    let metrics = gaitkeeper::metrics::Metrics::new();
    metrics
        .model_cache
        .requests
        .with_label_values(&["hit"])
        .inc();
    let text = String::from_utf8(metrics.render()).unwrap();
    for family in [
        "gaitkeeper_model_cache_requests_total{result=\"hit\"} 1",
        "gaitkeeper_model_cache_bytes",
        "gaitkeeper_model_cache_entries",
    ] {
        assert!(text.contains(family), "{family} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_records_every_valid_login_and_refuses_only_the_invalid() {
    for db in backends().await {
        let store = db.open().await;
        let results = store
            .record_logins(vec![
                ("pia".to_string(), login(Outcome::Verified, 0.1)),
                ("pia".to_string(), login(Outcome::Verified, f64::NAN)),
                ("quin".to_string(), login(Outcome::Failed, 0.9)),
                ("pia".to_string(), login(Outcome::Verified, 0.2)),
            ])
            .await;
        assert_eq!(results.len(), 4, "{:?}", db.backend);
        assert!(matches!(results[1], Err(StoreError::Invalid(_))));
        let pia = store.user_key("pia").unwrap();
        let recorded: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(recorded.len(), 3);
        assert_eq!(recorded[0].user, pia);
        assert_eq!(recorded[1].user, store.user_key("quin").unwrap());
        assert!(recorded[0].session < recorded[2].session, "kept in order");
        let kept = store.recent_logins(&pia, 10).await.unwrap();
        let risks: Vec<f64> = kept.iter().map(|s| s.risk).collect();
        assert_eq!(risks, [0.2, 0.1], "newest first, the NaN one not stored");
        assert_eq!(store.user(&pia).await.unwrap().unwrap().verified_logins, 2);

        // Models of several users in one transaction; one forgotten meanwhile is skipped.
        let ghost = store.user_key("ghost").unwrap();
        let saved = store
            .save_models(vec![
                (pia, 3, 1, vec![1; 10]),
                (ghost, 3, 1, vec![2; 10]),
                (store.user_key("quin").unwrap(), 3, 1, vec![3; 10]),
            ])
            .await
            .unwrap();
        assert_eq!(saved, [true, false, true]);
        assert_eq!(
            store.load_model(&pia).await.unwrap().unwrap().blob,
            vec![1; 10]
        );
        assert_eq!(store.load_model(&ghost).await.unwrap(), None);
        store.close().await;
    }
}

/// A profile stored under a name as it was typed (before names were normalised) moves to the
/// normalised name with everything it holds, once, and never over an existing profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_moves_to_its_normalised_name_once() {
    for db in backends().await {
        let store = db.open().await;
        let old = store.user_key("Alice ").unwrap();
        let new = store.user_key("Alice").unwrap();
        for _ in 0..3 {
            store
                .record_login("Alice ", login(Outcome::Verified, 0.1))
                .await
                .unwrap();
        }
        store.save_model(&old, 3, 1, vec![7; 40]).await.unwrap();
        let secret = b"0123456789abcdefghij".to_vec();
        store.set_totp_secret("Alice ", &secret).await.unwrap();

        assert!(
            store.rekey_user("Alice ", "Alice").await.unwrap(),
            "{:?}",
            db.backend
        );
        assert!(store.user(&old).await.unwrap().is_none());
        let moved = store.user(&new).await.unwrap().expect("the moved profile");
        assert_eq!(moved.verified_logins, 3);
        assert_eq!(store.verified_features(&new, 10).await.unwrap().len(), 3);
        assert_eq!(
            store.load_model(&new).await.unwrap().unwrap().blob,
            vec![7; 40]
        );
        assert_eq!(store.totp_secret(&new).await.unwrap(), Some(secret.clone()));
        assert_eq!(store.totp_secret(&old).await.unwrap(), None);
        // Once: nothing is left to move.
        assert!(!store.rekey_user("Alice ", "Alice").await.unwrap());
        // Never over an existing profile.
        store
            .record_login(" bob", login(Outcome::Verified, 0.1))
            .await
            .unwrap();
        store
            .record_login("bob", login(Outcome::Verified, 0.1))
            .await
            .unwrap();
        assert!(!store.rekey_user(" bob", "bob").await.unwrap());
        let bob = store
            .user(&store.user_key("bob").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bob.verified_logins, 1);
    }
}

/// A held-login row for the shared-state tests (the sealing is `decision::held`'s; here the
/// bytes are opaque).
fn held_row(n: u8, expires_in_ms: i64) -> gaitkeeper::shared::HeldRow {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    gaitkeeper::shared::HeldRow {
        key: [n; 32],
        sealed: vec![n; 100],
        bytes: 1000,
        attempts: 0,
        inline: 0,
        released: false,
        expires_ms: (now + expires_in_ms) as u64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_held_logins_are_taken_once_bounded_and_each_expired_one_settled_once() {
    use gaitkeeper::shared::SharedState;
    for db in backends().await {
        let store = Arc::new(db.open().await);
        // Taken by one of many concurrent takers.
        store.hold(&held_row(1, 60_000)).await.unwrap();
        let takers = (0..8).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.take_held(&[1; 32], false).await.unwrap() })
        });
        let mut got = 0;
        for taker in takers {
            got += usize::from(taker.await.unwrap().is_some());
        }
        assert_eq!(got, 1, "{:?}: one taker gets it", db.backend);

        // Totals before each hold; eviction keeps the newest within both bounds.
        for n in 10..16u8 {
            let before = store.hold(&held_row(n, 60_000)).await.unwrap();
            assert_eq!(before.count, u64::from(n - 10), "{:?}", db.backend);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let evicted = store.evict_held(4, 1_000_000).await.unwrap();
        let mut keys: Vec<u8> = evicted.iter().map(|r| r.key[0]).collect();
        keys.sort();
        assert_eq!(keys, [10, 11], "{:?}: the oldest go", db.backend);
        let evicted = store.evict_held(10, 2_500).await.unwrap();
        assert_eq!(evicted.len(), 2, "{:?}: over the byte bound", db.backend);
        assert_eq!(store.held_totals().await.unwrap().count, 2);

        // Attempts count on the row; a released row is not a challenge.
        assert_eq!(store.count_held_attempt(&[15; 32]).await.unwrap(), Some(1));
        assert_eq!(store.count_held_attempt(&[15; 32]).await.unwrap(), Some(2));
        let mut proof = held_row(99, 0);
        proof.sealed = vec![7; 10];
        assert!(store.release_held(&[15; 32], &proof).await.unwrap());
        assert!(
            !store.release_held(&[15; 32], &proof).await.unwrap(),
            "once"
        );
        assert!(store.held(&[99; 32], false).await.unwrap().is_none());
        let released = store.held(&[99; 32], true).await.unwrap().expect("moved");
        assert_eq!((released.attempts, released.sealed.len()), (2, 10));
        assert_eq!(store.count_held_attempt(&[99; 32]).await.unwrap(), None);

        // Expired rows are invisible, and two sweepers at once settle each exactly once.
        for n in 30..60u8 {
            store.hold(&held_row(n, -1)).await.unwrap();
        }
        assert!(store.held(&[30; 32], false).await.unwrap().is_none());
        let sweep = |store: Arc<Store>| async move {
            let mut seen = Vec::new();
            loop {
                let rows = store.expired_held(7).await.unwrap();
                if rows.is_empty() {
                    return seen;
                }
                seen.extend(rows.iter().map(|r| r.key[0]));
            }
        };
        let (a, b) = tokio::join!(
            tokio::spawn(sweep(store.clone())),
            tokio::spawn(sweep(store.clone()))
        );
        let mut settled: Vec<u8> = a.unwrap().into_iter().chain(b.unwrap()).collect();
        settled.sort();
        assert_eq!(settled, (30..60).collect::<Vec<u8>>(), "{:?}", db.backend);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recovery_code_is_used_once_even_when_tried_at_once() {
    for db in backends().await {
        let store = Arc::new(db.open().await);
        let key = store
            .record_login("rita", login(Outcome::Verified, 0.1))
            .await
            .unwrap()
            .user;
        let other = store
            .record_login("otto", login(Outcome::Verified, 0.1))
            .await
            .unwrap()
            .user;
        let codes = ["abcdefghjk".to_string(), "mnpqrstuvw".to_string()];
        store.set_recovery_codes(&key, &codes).await.unwrap();
        // Only its HMAC is kept.
        let raw = db.raw().await;
        assert!(occurrences(&db, &raw, b"abcdefghjk").await.is_empty());
        raw.close().await;
        assert_eq!(
            store.use_recovery_code(&other, "abcdefghjk").await.unwrap(),
            None,
            "{:?}: another user's code is not theirs",
            db.backend
        );
        let tries = (0..6).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.use_recovery_code(&key, "abcdefghjk").await.unwrap() })
        });
        let mut used = Vec::new();
        for t in tries {
            used.extend(t.await.unwrap());
        }
        assert_eq!(used, [1], "{:?}: used once, one left", db.backend);
        assert_eq!(
            store.use_recovery_code(&key, "mnpqrstuvw").await.unwrap(),
            Some(0)
        );
        assert_eq!(
            store.use_recovery_code(&key, "mnpqrstuvw").await.unwrap(),
            None
        );
    }
}
