//! Continuous learning against both backends: SQLite in a temp file always, PostgreSQL when
//! `GAITKEEPER_TEST_POSTGRES_URL` is set (each test gets a fresh schema, dropped afterwards).
//!
//! Every login here is recorded in the store first, with its outcome, exactly as the proxy
//! does, and only verified ones are handed to `Learner::learn`.

use std::time::{Duration, Instant, SystemTime};

use crate::common::db;

use db::{secret, TestDb, SECRET};
use gaitkeeper::config::{HumanDuration, StoreConfig};
use gaitkeeper::features::{
    to_blob, FeatureVector, PasswordRhythm, Scale, F, FEATURE_VERSION, SCALES,
};
use gaitkeeper::learn::{LearnConfig, Learner};
use gaitkeeper::metrics::Metrics;
use gaitkeeper::model::{UserModel, MODEL_VERSION};
use gaitkeeper::store::{Decision, FeatureBlob, NewLogin, Outcome, Store, UserKey};

/// Set in the child process of the crash test: the store URL it learns into.
const CHILD_ENV: &str = "GAITKEEPER_TEST_LEARN_CHILD_URL";

fn store_config() -> StoreConfig {
    StoreConfig {
        max_connections: 4,
        ..StoreConfig::default()
    }
}

/// The backends this run tests: SQLite always, PostgreSQL when configured.
async fn backends() -> Vec<TestDb> {
    db::backends(store_config(), "gk_learn").await
}

fn config(window: u32, refit_every: u32) -> LearnConfig {
    LearnConfig {
        window,
        refit_every,
        global_retrain: HumanDuration::secs(3600),
        global_min_users: 6,
        global_min_logins_per_user: 8,
    }
}

fn learner(store: &Store, config: &LearnConfig) -> Learner {
    {
        let metrics = Metrics::new();
        Learner::new(
            store.clone(),
            config,
            &store_config(),
            &metrics.learning,
            &metrics.model_cache,
        )
    }
}

/// One sample of the rendered metrics, e.g. `gaitkeeper_global_model_trained`.
fn metric(metrics: &Metrics, sample: &str) -> f64 {
    let text = String::from_utf8(metrics.render()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
}

/// A deterministic login of user `user`, number `i`; `scale` stretches every duration (a new
/// regime when it changes). Passwords are typed clean, 8 characters.
fn login(user: u64, i: u64, scale: f64) -> FeatureVector {
    let mut state = user
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(i.wrapping_mul(0xd1b5_4a32_d192_ed03))
        | 1;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let person = 1.0 + 0.35 * user as f64;
    let mut fv = FeatureVector::empty();
    for (f, v) in fv.values.iter_mut().enumerate() {
        *v = match SCALES[f] {
            Scale::Log => (20.0 + 7.0 * f as f64) * person * scale * (1.0 + 0.2 * noise()),
            Scale::Linear => (0.5 + 0.3 * noise()).clamp(0.0, 1.0),
        };
    }
    fv.password = PasswordRhythm {
        press_press: (0..7)
            .map(|p| (120.0 + 9.0 * p as f64) * person * scale * (1.0 + 0.2 * noise()))
            .collect(),
        dwell: (0..8)
            .map(|_| 85.0 * person * scale * (1.0 + 0.2 * noise()))
            .collect(),
        clean: true,
    };
    fv
}

fn new_login(features: FeatureBlob, outcome: Outcome) -> NewLogin {
    NewLogin {
        at: SystemTime::now(),
        features,
        risk: 0.1,
        reasons: serde_json::json!([]),
        decision: Decision::Allow,
        outcome,
    }
}

/// Records a verified login and learns from it, as the proxy does after the app said yes.
async fn verified(learner: &Learner, name: &str, fv: &FeatureVector) -> UserKey {
    let recorded = learner
        .store()
        .record_login(name, new_login(to_blob(fv), Outcome::Verified))
        .await
        .unwrap();
    learner.learn(&recorded.user, fv).await.unwrap();
    recorded.user
}

/// Mean, spread and mean absolute deviation agree with a batch fit within `f32` rounding.
fn assert_same_model(got: &UserModel, want: &UserModel, what: &str) {
    assert_eq!(got.layout, want.layout, "{what}: layout");
    assert_eq!(got.logins, want.logins, "{what}: logins");
    for (name, a, b) in [
        ("mean", &got.mean, &want.mean),
        ("spread", &got.spread, &want.spread),
        ("mad", &got.mad, &want.mad),
    ] {
        assert_eq!(a.len(), b.len(), "{what}: {name} dims");
        for (d, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            let ok =
                (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-4 * (1.0 + x.abs().max(y.abs()));
            assert!(ok, "{what}: {name}[{d}] = {x}, a full fit gives {y}");
        }
    }
    assert_eq!(got.kept.len(), want.kept.len(), "{what}: kept rows");
}

/// Waits for the refit a lookup scheduled; the user's model is then a full fit of `logins`.
async fn assert_refits_to(learner: &Learner, key: &UserKey, logins: &[FeatureVector], what: &str) {
    learner.wait_idle().await;
    let model = learner.user_model(key).await.unwrap().expect("refitted");
    let population = learner.global().population.clone();
    assert_same_model(&model, &UserModel::fit(logins, &population), what);
}

fn dwell_dim() -> usize {
    F::KeyDwellMean as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_update_equals_a_full_refit() {
    for db in backends().await {
        let store = db.open().await;
        // No scheduled refit: every model below is the incremental one.
        let learner = learner(&store, &config(50, 1000));
        let logins: Vec<FeatureVector> = (0..30).map(|i| login(1, i, 1.0)).collect();
        let mut key = None;
        for fv in &logins {
            key = Some(verified(&learner, "alice", fv).await);
        }
        let key = key.unwrap();
        let population = learner.global().population.clone();
        let incremental = learner.user_model(&key).await.unwrap().expect("a model");
        let batch = UserModel::fit(&logins, &population);
        assert_same_model(
            &incremental,
            &batch,
            &format!("{:?} incremental", db.backend),
        );

        // The refit from the store gives the same model, and a fresh learner loads it.
        assert!(learner.refit(&key).await.unwrap());
        let refitted = learner.user_model(&key).await.unwrap().unwrap();
        assert_same_model(&refitted, &batch, &format!("{:?} refit", db.backend));
        let other = self::learner(&store, &config(50, 1000));
        let loaded = other.user_model(&key).await.unwrap().unwrap();
        assert_same_model(&loaded, &batch, &format!("{:?} loaded", db.backend));
    }
}

/// A learnt model scores at once but is saved behind; one lost in a crash before its save is
/// rebuilt by the refit from the recorded logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_saved_behind_and_a_lost_save_is_rebuilt_by_a_refit() {
    for db in backends().await {
        let store = db.open().await;
        let learner = learner(&store, &config(50, 1000));
        let logins: Vec<FeatureVector> = (0..9).map(|i| login(3, i, 1.0)).collect();
        let mut key = None;
        for fv in &logins[..6] {
            key = Some(verified(&learner, "erin", fv).await);
        }
        let key = key.unwrap();
        let what = format!("{:?}", db.backend);
        assert_eq!(learner.user_model(&key).await.unwrap().unwrap().logins, 6);
        assert!(
            store.load_model(&key).await.unwrap().is_none(),
            "{what}: saved before its time"
        );
        learner.save_unsaved().await.unwrap();
        let other = self::learner(&store, &config(50, 1000));
        assert_eq!(other.user_model(&key).await.unwrap().unwrap().logins, 6);

        // Three more logins, then the process dies before saving them.
        for fv in &logins[6..] {
            verified(&learner, "erin", fv).await;
        }
        assert_eq!(learner.user_model(&key).await.unwrap().unwrap().logins, 9);
        drop(learner);
        let restarted = self::learner(&store, &config(50, 1000));
        assert_eq!(
            restarted.user_model(&key).await.unwrap().unwrap().logins,
            6,
            "{what}: the last saved state"
        );
        assert!(restarted.refit(&key).await.unwrap());
        let population = restarted.global().population.clone();
        assert_same_model(
            &restarted.user_model(&key).await.unwrap().unwrap(),
            &UserModel::fit(&logins, &population),
            &format!("{what}: rebuilt by the refit"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_follows_the_last_w_logins() {
    for db in backends().await {
        let store = db.open().await;
        let (w, k) = (20u32, 5u32);
        let learner = learner(&store, &config(w, k));
        let mut logins = Vec::new();
        for i in 0..20 {
            logins.push(login(2, i, 1.0));
        }
        // Then the user's rhythm slows to twice the durations, for W + 5 logins.
        for i in 20..45 {
            logins.push(login(2, i, 2.0));
        }
        let mut key = None;
        for fv in &logins {
            key = Some(verified(&learner, "bob", fv).await);
        }
        let key = key.unwrap();
        // Already on the spot, before any refit finished: the window slid.
        let now = learner.user_model(&key).await.unwrap().unwrap();
        assert_eq!(now.logins, w, "{:?}", db.backend);
        learner.wait_idle().await;
        let model = learner.user_model(&key).await.unwrap().unwrap();
        let population = learner.global().population.clone();
        let last_w = UserModel::fit(&logins[logins.len() - w as usize..], &population);
        assert_same_model(&model, &last_w, &format!("{:?} window", db.backend));
        let old = UserModel::fit(&logins[..20], &population);
        let d = dwell_dim();
        // Model space is ln(1 + ms): doubling moves the mean by about ln 2.
        let moved = f64::from(model.mean[d] - old.mean[d]);
        assert!(
            (moved - 2f64.ln()).abs() < 0.1,
            "{:?}: the dwell mean moved by {moved}, expected about ln 2",
            db.backend
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_a_refit_already_took_in_is_not_counted_twice() {
    for db in backends().await {
        let store = db.open().await;
        let learner = learner(&store, &config(50, 1000));
        let mut logins: Vec<FeatureVector> = (0..8).map(|i| login(5, i, 1.0)).collect();
        let mut key = None;
        for fv in &logins {
            key = Some(verified(&learner, "erin", fv).await);
        }
        let key = key.unwrap();
        // The proxy records the next login; a background refit runs before `learn` is called.
        let next = login(5, 8, 1.0);
        store
            .record_login("erin", new_login(to_blob(&next), Outcome::Verified))
            .await
            .unwrap();
        assert!(learner.refit(&key).await.unwrap());
        learner.learn(&key, &next).await.unwrap();
        logins.push(next);
        let model = learner.user_model(&key).await.unwrap().unwrap();
        let population = learner.global().population.clone();
        assert_same_model(
            &model,
            &UserModel::fit(&logins, &population),
            &format!("{:?} learn after refit", db.backend),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_logins_are_never_learnt() {
    for db in backends().await {
        let store = db.open().await;
        let learner = learner(&store, &config(50, 3));
        let genuine: Vec<FeatureVector> = (0..10).map(|i| login(3, i, 1.0)).collect();
        let mut key = None;
        for fv in &genuine {
            key = Some(verified(&learner, "carol", fv).await);
        }
        let key = key.unwrap();
        // An attacker's attempts at a very different rhythm: blocked, failed, never confirmed,
        // and pending ones settled as failed later.
        for i in 0..30 {
            let fv = login(9, 100 + i, 3.0);
            let outcome = [Outcome::Failed, Outcome::Pending][i as usize % 2];
            let recorded = store
                .record_login("carol", new_login(to_blob(&fv), outcome))
                .await
                .unwrap();
            if i % 4 == 1 {
                store
                    .set_outcome(recorded.session, Outcome::Failed)
                    .await
                    .unwrap();
            }
        }
        // A refit reads the store: still only the genuine logins.
        assert!(learner.refit(&key).await.unwrap());
        learner.wait_idle().await;
        let model = learner.user_model(&key).await.unwrap().unwrap();
        let population = learner.global().population.clone();
        assert_same_model(
            &model,
            &UserModel::fit(&genuine, &population),
            &format!("{:?} after attempts", db.backend),
        );
        // And one more genuine login (which schedules another refit) keeps it that way.
        let fv = login(3, 10, 1.0);
        verified(&learner, "carol", &fv).await;
        learner.wait_idle().await;
        let mut all = genuine.clone();
        all.push(fv);
        let model = learner.user_model(&key).await.unwrap().unwrap();
        assert_same_model(
            &model,
            &UserModel::fit(&all, &population),
            &format!("{:?} after one more", db.backend),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_version_change_refits_instead_of_failing() {
    for db in backends().await {
        let store = db.open().await;
        let learner = learner(&store, &config(50, 1000));
        let logins: Vec<FeatureVector> = (0..12).map(|i| login(4, i, 1.0)).collect();
        let mut key = None;
        for fv in &logins {
            let recorded = store
                .record_login("dave", new_login(to_blob(fv), Outcome::Verified))
                .await
                .unwrap();
            key = Some(recorded.user);
        }
        let key = key.unwrap();
        // Logins and a model from an older gaitkeeper whose features meant something else.
        for i in 0..5u8 {
            let old = FeatureBlob {
                version: FEATURE_VERSION + 1,
                bytes: vec![i; 40],
            };
            store
                .record_login("dave", new_login(old, Outcome::Verified))
                .await
                .unwrap();
        }
        for (fv_version, model_version) in [
            (FEATURE_VERSION + 1, MODEL_VERSION),
            (FEATURE_VERSION, MODEL_VERSION + 1),
        ] {
            store
                .save_model(&key, fv_version, model_version, b"an old model".to_vec())
                .await
                .unwrap();
            let fresh = self::learner(&store, &config(50, 1000));
            // Not an error: no usable model yet, and a refit on its way.
            assert!(
                fresh.user_model(&key).await.unwrap().is_none(),
                "{:?}",
                db.backend
            );
            let what = format!("{:?} refit after a version change", db.backend);
            assert_refits_to(&fresh, &key, &logins, &what).await;
            let stored = store.load_model(&key).await.unwrap().unwrap();
            assert_eq!(
                (stored.feature_version, stored.model_version),
                (FEATURE_VERSION, MODEL_VERSION)
            );
        }
        // Learning on top of an old model: accepted, and a refit brings in the other logins.
        store
            .save_model(
                &key,
                FEATURE_VERSION + 1,
                MODEL_VERSION,
                b"older still".to_vec(),
            )
            .await
            .unwrap();
        let fv = login(4, 12, 1.0);
        verified(&learner, "dave", &fv).await;
        learner.wait_idle().await;
        let model = learner.user_model(&key).await.unwrap().unwrap();
        assert_eq!(model.logins, 13, "{:?}", db.backend);
    }
}

/// Logins stored by a gaitkeeper of features version 1 (44 named features, the rest appended
/// by version 2) keep counting after an upgrade: a refit reads them with the appended features
/// unknown, so the user is not sent back to enrolment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_stored_under_features_version_1_are_learnt_after_an_upgrade() {
    const V1_NAMED: usize = 44;
    for db in backends().await {
        let store = db.open().await;
        let logins: Vec<FeatureVector> = (0..12)
            .map(|i| {
                let mut fv = login(5, i, 1.0);
                fv.values[V1_NAMED..].fill(f64::NAN);
                fv
            })
            .collect();
        let mut key = None;
        for fv in &logins {
            // Version 1's bytes: the same layout with 44 named values.
            let today = to_blob(fv).bytes;
            let mut bytes = vec![today[0], V1_NAMED as u8];
            bytes.extend_from_slice(&today[2..2 + 8 * V1_NAMED]);
            bytes.extend_from_slice(&today[2 + 8 * fv.values.len()..]);
            let old = FeatureBlob { version: 1, bytes };
            let recorded = store
                .record_login("erin", new_login(old, Outcome::Verified))
                .await
                .unwrap();
            key = Some(recorded.user);
        }
        let key = key.unwrap();
        store
            .save_model(&key, 1, MODEL_VERSION, b"damaged".to_vec())
            .await
            .unwrap();
        let learner = learner(&store, &config(50, 1000));
        assert!(learner.user_model(&key).await.unwrap().is_none());
        let what = format!("{:?} refit from version-1 logins", db.backend);
        assert_refits_to(&learner, &key, &logins, &what).await;
    }
}

/// Records `users` users with `logins` verified logins each (a person per user).
async fn population(learner: &Learner, users: u64, logins: u64) {
    for u in 0..users {
        for i in 0..logins {
            verified(learner, &format!("user{u}"), &login(10 + u, i, 1.0)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_model_is_trained_from_the_store_and_shared() {
    for db in backends().await {
        let store = db.open().await;
        let metrics = Metrics::new();
        let learner = Learner::new(
            store.clone(),
            &config(50, 1000),
            &store_config(),
            &metrics.learning,
            &metrics.model_cache,
        );
        population(&learner, 7, 10).await;
        assert!(!learner.global_trained());
        assert_eq!(metric(&metrics, "gaitkeeper_global_model_trained"), 0.0);
        let report = learner.train_global().await.unwrap();
        assert_eq!(metric(&metrics, "gaitkeeper_global_model_trained"), 1.0);
        assert_eq!(
            metric(
                &metrics,
                "gaitkeeper_global_model_trainings_total{result=\"trained\"}"
            ),
            1.0
        );
        assert_eq!(
            metric(&metrics, "gaitkeeper_learn_logins_total{result=\"ok\"}"),
            70.0
        );
        assert!(report.saved.is_some(), "{:?}: {report}", db.backend);
        assert_eq!((report.users, report.logins), (7, 70));
        assert!(report
            .to_string()
            .contains("7 users and 70 verified logins"));
        assert!(learner.global_trained());
        let trained = learner.global();
        assert!(trained.forest.is_some());

        // Another instance on the same store starts untrained and loads the saved model (and
        // the users' models once saved: the background saves them every SAVE_DELAY).
        learner.save_unsaved().await.unwrap();
        let second = self::learner(&store, &config(50, 1000));
        assert!(!second.global_trained());
        assert!(second.load_global().await.unwrap());
        assert!(second.global_trained());
        let loaded = second.global();
        // Debug forms: the fusion holds NaN where an input never occurred.
        assert_eq!(
            format!("{:?}", loaded.population),
            format!("{:?}", trained.population)
        );
        assert_eq!(
            format!("{:?}", loaded.fusion),
            format!("{:?}", trained.fusion)
        );
        assert!(loaded.forest.is_some());
        // Nothing newer: no reload.
        assert!(!second.load_global().await.unwrap());

        // A model for scoring comes out of the new prior too.
        let key = store.user_key("user0").unwrap();
        let model = second.user_model(&key).await.unwrap().unwrap();
        let a = gaitkeeper::model::assess(&model, &loaded, &login(10, 99, 1.0));
        let b = gaitkeeper::model::assess(&model, &loaded, &login(15, 99, 1.0));
        assert!(a.scores.forest.is_finite() && b.scores.forest.is_finite());

        // The background job of a third instance picks it up as well.
        let third = self::learner(&store, &config(50, 1000));
        third.spawn_background();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !third.global_trained() {
            assert!(
                Instant::now() < deadline,
                "the background job never loaded the model"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_small_population_leaves_the_global_model_untrained() {
    for db in backends().await {
        let store = db.open().await;
        let metrics = Metrics::new();
        let learner = Learner::new(
            store.clone(),
            &config(50, 1000),
            &store_config(),
            &metrics.learning,
            &metrics.model_cache,
        );
        // Three users with enough logins and two with too few: 3 of the 6 needed.
        population(&learner, 3, 10).await;
        for i in 0..5 {
            verified(&learner, "newcomer1", &login(30, i, 1.0)).await;
            verified(&learner, "newcomer2", &login(31, i, 1.0)).await;
        }
        let report = learner.train_global().await.unwrap();
        assert_eq!(report.saved, None, "{:?}", db.backend);
        assert_eq!((report.users, report.min_users), (3, 6));
        let text = report.to_string();
        assert!(
            text.contains("too small") && text.contains("per-user detectors decide alone"),
            "{text}"
        );
        assert!(!learner.global_trained());
        assert!(learner.global().forest.is_none());
        assert_eq!(metric(&metrics, "gaitkeeper_global_model_trained"), 0.0);
        assert_eq!(
            metric(
                &metrics,
                "gaitkeeper_global_model_trainings_total{result=\"too_small\"}"
            ),
            1.0
        );
        assert!(store
            .load_global_model(FEATURE_VERSION, MODEL_VERSION, None)
            .await
            .unwrap()
            .is_none());
    }
}

/// The child of `kill_during_learning_leaves_a_consistent_store`: learns into the store named
/// by the environment until it is killed. Does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_learns_until_killed() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        url: Some(url),
        ..store_config()
    };
    let store = Store::open(&config, dir.path(), &secret()).await.unwrap();
    let mut learn_config = config_for_crash();
    learn_config.refit_every = 3;
    let learner = learner(&store, &learn_config);
    for i in 0.. {
        for u in 0..CRASH_USERS {
            let fv = login(40 + u, i, 1.0 + (i % 7) as f64 * 0.1);
            verified(&learner, &format!("crash{u}"), &fv).await;
        }
        if i % 4 == 3 {
            learner.train_global().await.unwrap();
        }
    }
}

const CRASH_USERS: u64 = 5;

fn config_for_crash() -> LearnConfig {
    LearnConfig {
        global_min_users: 4,
        global_min_logins_per_user: 4,
        ..config(8, 1000)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_learning_leaves_a_consistent_store() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for db in backends().await {
        let store = db.open().await;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                &crate::common::test_path(module_path!(), "crash_child_learns_until_killed"),
                "--exact",
                "--nocapture",
            ])
            .env(CHILD_ENV, db.url())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Let it learn a good while, and train global models, then kill -9 mid-stride.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let users = store.list_users(None, 100).await.unwrap();
            let learnt: u64 = users.iter().map(|u| u.verified_logins).sum();
            let global = store
                .load_global_model(FEATURE_VERSION, MODEL_VERSION, None)
                .await
                .unwrap();
            if learnt >= 150 && global.is_some() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{:?}: the learning child exited early: {status}",
                    db.backend
                );
            }
            assert!(
                Instant::now() < deadline,
                "{:?}: the child learnt too slowly",
                db.backend
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        store.close().await;

        // The store opens, and every model and the global model decode and can be continued.
        let store = db.open().await;
        let learner = learner(&store, &config_for_crash());
        assert!(
            learner.load_global().await.unwrap(),
            "{:?}: global model",
            db.backend
        );
        let users = store.list_users(None, 100).await.unwrap();
        assert_eq!(users.len(), CRASH_USERS as usize);
        for (u, user) in users.iter().enumerate() {
            let model = learner
                .user_model(&user.key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{:?}: user {u} has no usable model", db.backend));
            assert_eq!(model.logins, 8, "{:?}: a full window", db.backend);
            assert!(model.mean.iter().take(10).all(|m| m.is_finite()));
        }
        // Learning goes on from the stored state (a fresh state would hold one login).
        let key = store.user_key("crash0").unwrap();
        let before = store.load_model(&key).await.unwrap().unwrap();
        let recorded = store
            .record_login(
                "crash0",
                new_login(to_blob(&login(40, 999, 1.0)), Outcome::Verified),
            )
            .await
            .unwrap();
        assert_eq!(recorded.user, key);
        learner.learn(&key, &login(40, 999, 1.0)).await.unwrap();
        assert_eq!(learner.user_model(&key).await.unwrap().unwrap().logins, 8);
        learner.save_unsaved().await.unwrap();
        assert_ne!(
            store.load_model(&key).await.unwrap().unwrap().blob,
            before.blob
        );
        learner.wait_idle().await;
    }
}

/// `gaitkeeper train -c FILE` as an operator runs it: says why it cannot train yet, then trains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_command_reports_what_it_used() {
    for db in backends().await {
        let config_file = db.dir.path().join("gk.yaml");
        std::fs::write(
            &config_file,
            format!(
                "upstream:\n  address: \"127.0.0.1:3000\"\nserver:\n  data_dir: {:?}\nsecrets:\n  key: {{ env: GK_TEST_SECRET }}\nstore:\n  url: {:?}\nlearning:\n  global_min_users: 4\n  global_min_logins_per_user: 6\n",
                db.dir.path().display().to_string(),
                db.url()
            ),
        )
        .unwrap();
        let train = || {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_gaitkeeper"))
                .args(["train", "-c"])
                .arg(&config_file)
                .env("GK_TEST_SECRET", std::str::from_utf8(SECRET).unwrap())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            assert!(output.status.success(), "{:?}: {stderr}", db.backend);
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let said = train();
        assert!(
            said.contains("too small") && said.contains("0 users") && said.contains("4 are needed"),
            "{said}"
        );

        let store = db.open().await;
        let learner = learner(&store, &config(50, 1000));
        population(&learner, 5, 6).await;
        store.close().await;
        let said = train();
        assert!(
            said.starts_with("trained global model #")
                && said.contains("on 5 users and 30 verified logins in"),
            "{said}"
        );
        let store = db.open().await;
        let saved = store
            .load_global_model(FEATURE_VERSION, MODEL_VERSION, None)
            .await
            .unwrap()
            .expect("saved");
        assert_eq!((saved.users, saved.logins), (5, 30));
        assert!(gaitkeeper::learn::decode_global(&saved.blob).is_some());
    }
}

#[test]
fn learning_settings_out_of_range_are_reported_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, SECRET).unwrap();
    // Secret files must be private (the config refuses others).
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let base = format!(
        "upstream:\n  address: \"127.0.0.1:3000\"\nsecrets:\n  key: {{ file: {:?} }}\n",
        key.display().to_string()
    );
    let base = base.as_str();
    let err =
        gaitkeeper::config::Config::parse(&format!("{base}learning:\n  window: 1\n"), "gk.yaml")
            .unwrap_err()
            .to_string();
    assert_eq!(
        err,
        "gk.yaml:6:3: key `learning.window`: expected 2 to 1000 logins, found 1"
    );
    let err = gaitkeeper::config::Config::parse(
        &format!("{base}learning:\n  global_retrain: 1s\n"),
        "gk.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("learning.global_retrain") && err.contains("at least 10s"),
        "{err}"
    );
    let defaults = gaitkeeper::config::Config::parse(base, "gk.yaml").unwrap();
    assert_eq!(defaults.learning, LearnConfig::default());
    assert_eq!(
        (defaults.learning.window, defaults.learning.refit_every),
        (50, 50)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_in_batches_equals_learning_one_by_one() {
    for db in backends().await {
        let store = db.open().await;
        let learner = learner(&store, &config(20, 1000));
        // Two users' logins interleaved, as a busy proxy hands them over; more than the window.
        let mut batch = Vec::new();
        let mut alone = Vec::new();
        for i in 0..25 {
            for (name, person) in [("ann", 1), ("ben", 2)] {
                let fv = login(person, i, 1.0);
                let recorded = store
                    .record_login(name, new_login(to_blob(&fv), Outcome::Verified))
                    .await
                    .unwrap();
                batch.push((recorded.user, fv.clone()));
                if name == "ann" {
                    alone.push(fv);
                }
            }
        }
        let ann = batch[0].0;
        learner.learn_many(batch.clone()).await.unwrap();
        let batched = learner.user_model(&ann).await.unwrap().expect("a model");
        let population = learner.global().population.clone();
        let one_by_one = UserModel::fit(&alone[alone.len() - 20..], &population);
        assert_same_model(&batched, &one_by_one, &format!("{:?} batch", db.backend));
        // The stored state continues from there: logins already in the window (a refit took
        // them in meanwhile) do not count twice.
        learner
            .learn_many(batch[batch.len() - 10..].to_vec())
            .await
            .unwrap();
        let again = learner.user_model(&ann).await.unwrap().unwrap();
        assert_same_model(&again, &one_by_one, &format!("{:?} again", db.backend));
    }
}
