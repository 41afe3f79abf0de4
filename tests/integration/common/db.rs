//! The store backends a test runs against: SQLite in a temp dir always, PostgreSQL when
//! `GAITKEEPER_TEST_POSTGRES_URL` is set (each test gets a fresh schema, dropped when the test
//! ends, pass or fail, so runs never collide). Part of `common`, and included by path from
//! the store-level tests, which need none of its HTTP harness.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::SystemTime;

use gaitkeeper::config::{Secret, StoreConfig};
use gaitkeeper::store::{Backend, Store};

pub const SECRET: &[u8] = b"test-secret-0123456789abcdef0123456789";

/// The store secret every test store is opened with.
pub fn secret() -> Secret {
    Secret::from_bytes(SECRET).unwrap()
}

/// One backend's database for one test.
pub struct TestDb {
    pub backend: Backend,
    pub config: StoreConfig,
    pub dir: tempfile::TempDir,
    /// Dropped with the test, and the schema with it.
    _schema: Option<PgSchema>,
}

impl TestDb {
    pub async fn open(&self) -> Store {
        self.open_with(&self.config).await
    }

    pub async fn open_with(&self, config: &StoreConfig) -> Store {
        Store::open(config, self.dir.path(), &secret())
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", self.backend))
    }

    pub fn url(&self) -> String {
        self.config.url_or_default(self.dir.path())
    }

    /// A raw connection to the same database, to look behind the store's API.
    pub async fn raw(&self) -> sqlx::AnyPool {
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&self.url())
            .await
            .unwrap()
    }
}

/// A PostgreSQL schema made for one test.
struct PgSchema {
    base_url: String,
    name: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let url = self.base_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a plain thread may block on its own one.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(pool) = sqlx::AnyPool::connect(&url).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {name} CASCADE"
                        )))
                        .execute(&pool)
                        .await;
                        pool.close().await;
                    }
                })
        })
        .join();
    }
}

/// The backends this run tests, each configured as `base`; PostgreSQL schemas are named
/// `{prefix}_{pid}_{time}_{n}`.
pub async fn backends(base: StoreConfig, prefix: &str) -> Vec<TestDb> {
    let mut dbs = vec![TestDb {
        backend: Backend::Sqlite,
        config: base.clone(),
        dir: tempfile::tempdir().unwrap(),
        _schema: None,
    }];
    dbs.extend(postgres(base, prefix).await);
    dbs
}

/// A fresh PostgreSQL schema configured as `base`, when `GAITKEEPER_TEST_POSTGRES_URL` is set
/// (said once per run when it is not).
pub async fn postgres(base: StoreConfig, prefix: &str) -> Option<TestDb> {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
    match std::env::var("GAITKEEPER_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let name = format!(
                "{prefix}_{}_{}_{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_micros(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            );
            let pool = sqlx::AnyPool::connect(&url).await.unwrap_or_else(|e| {
                panic!("GAITKEEPER_TEST_POSTGRES_URL={url} is set but unreachable: {e}")
            });
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            let sep = if url.contains('?') { '&' } else { '?' };
            Some(TestDb {
                backend: Backend::Postgres,
                config: StoreConfig {
                    url: Some(format!("{url}{sep}options=-c%20search_path%3D{name}")),
                    ..base
                },
                dir: tempfile::tempdir().unwrap(),
                _schema: Some(PgSchema {
                    base_url: url,
                    name,
                }),
            })
        }
        _ => {
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                println!("skipping PostgreSQL: GAITKEEPER_TEST_POSTGRES_URL not set");
            });
            None
        }
    }
}
