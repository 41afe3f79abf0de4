//! Opening a store: which backend a URL names, connection settings per backend, and the
//! versioned migrations (`migrations/sqlite/`, `migrations/postgres/`), embedded in the binary
//! so a fresh store gets its schema on first start with nothing else installed.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::AnyPool;
use sqlx::{Executor, SqlSafeStr};

use super::error::{db, StoreError};

/// The database behind a store URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub(crate) fn of(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Invalid(format!(
                "store URL {} names no backend gaitkeeper has; use sqlite://PATH or postgres://USER@HOST/DB",
                shown_url(url)
            )))
        }
    }
}

/// Each backend's migrations, in order. Add a file and a line here; never edit an applied one
/// (its checksum is recorded and a changed file stops every instance at start).
const SQLITE: &[(i64, &str, &str)] = &[
    (
        1,
        "profiles",
        include_str!("../../migrations/sqlite/0001_profiles.sql"),
    ),
    (
        2,
        "global model",
        include_str!("../../migrations/sqlite/0002_global_model.sql"),
    ),
    (
        3,
        "audit",
        include_str!("../../migrations/sqlite/0003_audit.sql"),
    ),
    (
        4,
        "session counts",
        include_str!("../../migrations/sqlite/0004_session_counts.sql"),
    ),
    (
        5,
        "shared state",
        include_str!("../../migrations/sqlite/0005_shared_state.sql"),
    ),
    (
        6,
        "shared held logins",
        include_str!("../../migrations/sqlite/0006_shared_held.sql"),
    ),
    (
        7,
        "recovery codes",
        include_str!("../../migrations/sqlite/0007_recovery_codes.sql"),
    ),
    (
        8,
        "invitations",
        include_str!("../../migrations/sqlite/0008_invitations.sql"),
    ),
    (
        9,
        "passkeys",
        include_str!("../../migrations/sqlite/0009_passkeys.sql"),
    ),
    (
        10,
        "audit logins",
        include_str!("../../migrations/sqlite/0010_audit_logins.sql"),
    ),
    (
        11,
        "audit login packs",
        include_str!("../../migrations/sqlite/0011_audit_login_packs.sql"),
    ),
];
const POSTGRES: &[(i64, &str, &str)] = &[
    (
        1,
        "profiles",
        include_str!("../../migrations/postgres/0001_profiles.sql"),
    ),
    (
        2,
        "global model",
        include_str!("../../migrations/postgres/0002_global_model.sql"),
    ),
    (
        3,
        "audit",
        include_str!("../../migrations/postgres/0003_audit.sql"),
    ),
    (
        4,
        "session counts",
        include_str!("../../migrations/postgres/0004_session_counts.sql"),
    ),
    (
        5,
        "shared state",
        include_str!("../../migrations/postgres/0005_shared_state.sql"),
    ),
    (
        6,
        "shared held logins",
        include_str!("../../migrations/postgres/0006_shared_held.sql"),
    ),
    (
        7,
        "recovery codes",
        include_str!("../../migrations/postgres/0007_recovery_codes.sql"),
    ),
    (
        8,
        "invitations",
        include_str!("../../migrations/postgres/0008_invitations.sql"),
    ),
    (
        9,
        "passkeys",
        include_str!("../../migrations/postgres/0009_passkeys.sql"),
    ),
    (
        10,
        "audit logins",
        include_str!("../../migrations/postgres/0010_audit_logins.sql"),
    ),
    (
        11,
        "audit login packs",
        include_str!("../../migrations/postgres/0011_audit_login_packs.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    let files = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    Migrator::with_migrations(
        files
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The URL with any password replaced, for messages.
pub(crate) fn shown_url(url: &str) -> String {
    match url.parse::<url::Url>() {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

pub(crate) struct Opened {
    pub pool: AnyPool,
    pub backend: Backend,
}

/// Connects, switches SQLite to WAL, and applies any pending migrations.
pub(crate) async fn open(
    url: &str,
    max_connections: u32,
    busy_timeout: Duration,
) -> Result<Opened, StoreError> {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);

    let backend = Backend::of(url)?;
    let shown = shown_url(url);
    let mut url = url.to_string();
    let mut sqlite_file = None;
    if backend == Backend::Sqlite {
        let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        sqlite_file = Some(std::path::PathBuf::from(path.as_ref()));
        if let Some(dir) = Path::new(path.as_ref()).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                    dir: dir.display().to_string(),
                    source,
                })?;
            }
        }
        if !query.split('&').any(|p| p.starts_with("mode=")) {
            url.push(if query.is_empty() && !url.ends_with('?') {
                '?'
            } else {
                '&'
            });
            url.push_str("mode=rwc");
        }
    }

    let busy_ms = busy_timeout.as_millis().min(i32::MAX as u128) as i64;
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(busy_timeout)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // secure_delete: `forget` overwrites what it deletes instead of leaving it
                    // in free pages. foreign_keys: cascades are part of the schema.
                    // temp_store: the statement journals of the batched multi-row writes stay
                    // in memory (a temporary file cost a system call per page).
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "PRAGMA busy_timeout = {busy_ms}; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY"
                    )))
                    .await?;
                }
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(|source| StoreError::Connect {
            url: shown.clone(),
            source,
        })?;

    if backend == Backend::Sqlite {
        // WAL lets the admin CLI read and write while the proxy runs. The mode is stored in
        // the file, so it is only switched once (switching needs an exclusive lock).
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .map_err(db("read journal mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(db("switch to WAL mode"))?;
        }
    }

    if let Some(file) = &sqlite_file {
        // The database, its WAL and shared memory hold behavioural data and sealed secrets:
        // private to gaitkeeper's user, also when an older version left them readable.
        for suffix in ["", "-wal", "-shm"] {
            let mut path = file.clone().into_os_string();
            path.push(suffix);
            crate::files::make_private(Path::new(&path)).map_err(|source| {
                StoreError::CreateDir {
                    dir: Path::new(&path).display().to_string(),
                    source,
                }
            })?;
        }
    }

    let migrator = migrator(backend);
    migrator.run(&pool).await.map_err(|source| match source {
        sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::NewerSchema {
            url: shown.clone(),
            version,
        },
        source => StoreError::Migrate {
            url: shown.clone(),
            source,
        },
    })?;
    Ok(Opened { pool, backend })
}
