//! Per-user profiles on disk: users, their login sessions, fitted models, sealed TOTP secrets
//! and the audit trail, in SQLite (embedded, the default) or PostgreSQL (shared by several
//! instances), through one [`Store`] and one SQL code path (sqlx's `Any` driver).
//!
//! Owns: the schema and its migrations, keying users by an HMAC of their login name, enrollment
//! counting, retention, and erasing a user (`forget`). Models and feature vectors are opaque,
//! versioned blobs here: what they mean belongs to the scoring stages.
//!
//! Never stores a login name unless `store.keep_clear_names` asks for it, never stores a TOTP
//! secret unsealed, never logs either, and offers no way to change or delete an audit event
//! except `forget`, which turns a user's events into anonymous counts. Every value it accepts
//! and every list it returns is bounded.
//!
//! One file per thing kept: `users`, `logins`, `models`, `factors` (TOTP secrets), `audit`
//! (and `audit_period`, the trail read by time; `audit_logins`, login records as columns for
//! what-if and the console; `audit_packs`, their settled hours packed),
//! and `profiles` (a user's whole profile: show, reset, forget, retention); `schema` creates
//! and migrates the tables, `keys` derives user keys and seals secrets.

mod audit;
mod audit_logins;
mod audit_packs;
pub use audit_logins::{reason_labels, LoginRecord, LoginRecordQuery, REASON_SEPARATOR};
mod audit_period;
mod error;
mod factors;
mod invitations;
pub use factors::{Factor, Factors, NewPasskey, StoredPasskey, MAX_PASSKEYS};
pub use invitations::{Invitation, NewFactor};
mod keys;
mod logins;
mod models;
mod profiles;
mod schema;
mod shared;
mod users;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::config::{Secret, StoreConfig};

pub use error::StoreError;
pub use keys::UserKey;
pub use schema::Backend;

use error::db;
use keys::StoreKeys;

/// Longest login name accepted, in bytes.
/// A login name (512 bytes at most) with the scope of its app (`\0APP\0`, an app name has
/// at most 64 bytes).
pub(crate) const MAX_LOGIN_NAME_BYTES: usize = 512 + 66;
/// Largest feature vector blob of one login.
pub const MAX_FEATURE_BYTES: usize = 64 * 1024;
/// Largest reasons document of one login (JSON).
pub(crate) const MAX_REASONS_BYTES: usize = 16 * 1024;
/// Largest fitted model of one user.
pub(crate) const MAX_MODEL_BYTES: usize = 16 * 1024 * 1024;
/// Largest global model (population prior, forest and fusion).
pub(crate) const MAX_GLOBAL_MODEL_BYTES: usize = 64 * 1024 * 1024;
/// Global models kept per store: the newest few, so an instance still running an older
/// gaitkeeper finds one of its own versions for a while after an upgrade.
pub(crate) const GLOBAL_MODELS_KEPT: i64 = 4;
/// Largest detail document of one audit event (JSON).
pub(crate) const MAX_AUDIT_DETAIL_BYTES: usize = 4 * 1024;
/// Most login sessions kept per user, newest first, whatever their age (past it, the oldest
/// are dropped, a few dozen at a time).
pub const MAX_SESSIONS_PER_USER: i64 = 1000;
/// Most rows any one listing returns.
pub(crate) const MAX_PAGE: usize = 1000;
/// Accepted TOTP secret sizes, in bytes (RFC 4226 asks for at least 128 bits).
pub(crate) const TOTP_SECRET_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// The profile store. Cheap to clone; clones share one connection pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    keys: Arc<StoreKeys>,
    url: Arc<str>,
    keep_clear_names: bool,
    enrollment_logins: u32,
    retention: Duration,
}

/// A login's features as the store keeps them: encoded and decoded by `features` only; the
/// store never looks inside.
pub use crate::features::FeatureBlob;

/// A user's fitted model as stored: opaque bytes, with the feature and model versions it was
/// fitted for.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredModel {
    pub feature_version: u32,
    pub model_version: u32,
    pub blob: Vec<u8>,
    pub updated_at: SystemTime,
}

/// A global model as stored: opaque bytes with the versions it was trained for and what it
/// was trained on.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredGlobalModel {
    /// Increases with every save: a larger id is a newer model.
    pub id: i64,
    pub feature_version: u32,
    pub model_version: u32,
    pub blob: Vec<u8>,
    /// Users and verified logins it was trained on.
    pub users: u64,
    pub logins: u64,
    pub created_at: SystemTime,
}

/// What the policy decided for a login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Challenge,
    Block,
}

/// What became of a login. Only `Verified` logins count towards enrollment and may be learned
/// from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not known yet (waiting for the app's answer or the MFA challenge).
    Pending,
    /// The app confirmed the login, or the user passed MFA.
    Verified,
    /// The app rejected it, MFA failed, or it was blocked.
    Failed,
}

/// One login to record.
#[derive(Clone, Debug)]
pub struct NewLogin {
    pub at: SystemTime,
    pub features: FeatureBlob,
    pub risk: f64,
    /// Why the risk is what it is (JSON, at most [`MAX_REASONS_BYTES`]).
    pub reasons: serde_json::Value,
    pub decision: Decision,
    pub outcome: Outcome,
}

/// One recorded login.
#[derive(Clone, Debug, PartialEq)]
pub struct LoginSession {
    pub id: i64,
    pub at: SystemTime,
    pub features: FeatureBlob,
    pub risk: f64,
    pub reasons: serde_json::Value,
    pub decision: Decision,
    pub outcome: Outcome,
}

/// Whether a user's profile has seen enough verified logins to be relied on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enrollment {
    Enrolling { verified: u64, needed: u64 },
    Enrolled { verified: u64 },
}

/// A user as the store knows them.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub key: UserKey,
    /// Only with `store.keep_clear_names: true`.
    pub clear_name: Option<String>,
    pub created_at: SystemTime,
    pub verified_logins: u64,
    pub last_login_at: Option<SystemTime>,
    pub enrollment: Enrollment,
}

/// Everything `users show` prints.
#[derive(Clone, Debug)]
pub struct Profile {
    pub user: User,
    pub model: Option<ModelInfo>,
    pub has_totp: bool,
    /// Unused recovery codes.
    pub recovery_codes: u32,
    /// Registered passkeys.
    pub passkeys: usize,
    /// Newest first.
    pub recent: Vec<LoginSession>,
}

/// A stored model's versions and size, without its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub feature_version: u32,
    pub model_version: u32,
    pub bytes: u64,
    pub updated_at: SystemTime,
}

/// One audit event.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEvent {
    pub id: i64,
    pub at: SystemTime,
    pub kind: String,
    /// The incident reference of a login's audit records (`gaitkeeper audit show`).
    pub incident: Option<String>,
    pub detail: serde_json::Value,
}

/// One audit record of a login, as the audit stage hands it over.
#[derive(Clone, Debug)]
pub struct NewAuditRecord<'a> {
    pub at: SystemTime,
    pub user: Option<&'a UserKey>,
    pub kind: &'a str,
    pub incident: &'a str,
    /// Unique per record: the same record delivered twice is stored once.
    pub record_id: &'a str,
    pub detail: &'a serde_json::Value,
}

/// What `forget` erased.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub sessions: u64,
    pub models: u64,
    pub totp_secrets: u64,
    /// Audit events turned into anonymous counts.
    pub audit_events: u64,
}

/// A recorded login and where its user now stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub session: i64,
    pub user: UserKey,
    pub enrollment: Enrollment,
}

impl Store {
    /// Opens (creating on first start, with its schema) the store that `config` names;
    /// `data_dir` holds the default SQLite file, `secret` is `secrets.key`.
    pub async fn open(
        config: &StoreConfig,
        data_dir: &Path,
        secret: &Secret,
    ) -> Result<Store, StoreError> {
        let url = config.url_or_default(data_dir);
        let opened = schema::open(&url, config.max_connections, config.busy_timeout.0).await?;
        let store = Store {
            pool: opened.pool,
            backend: opened.backend,
            keys: Arc::new(StoreKeys::derive(secret.expose())),
            url: schema::shown_url(&url).into(),
            keep_clear_names: config.keep_clear_names,
            enrollment_logins: config.enrollment_logins,
            retention: config.retention.0,
        };
        store.check_key().await?;
        if !store.keep_clear_names {
            // The config says no names: make that true of the file too, also for names kept
            // while the setting was on.
            sqlx::query("UPDATE users SET clear_name = NULL WHERE clear_name IS NOT NULL")
                .execute(&store.pool)
                .await
                .map_err(db("drop clear names"))?;
        }
        Ok(store)
    }

    /// Which database this store is in.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The store's URL (without any password), for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes every connection; pending writes are complete when this returns.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers a trivial query (readiness checks).
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("ping"))
    }

    /// Stores the key's check value in a new store, and compares it in an existing one.
    async fn check_key(&self) -> Result<(), StoreError> {
        let check = self.keys.check_value().to_vec();
        sqlx::query(
            "INSERT INTO store_meta (name, value) VALUES ('key_check', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(check.clone())
        .execute(&self.pool)
        .await
        .map_err(db("record the key check"))?;
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM store_meta WHERE name = 'key_check'")
                .fetch_one(&self.pool)
                .await
                .map_err(db("read the key check"))?;
        if subtle::ConstantTimeEq::ct_eq(&stored[..], &check[..]).into() {
            Ok(())
        } else {
            Err(StoreError::WrongKey {
                url: self.url.to_string(),
            })
        }
    }
}

/// An integer computed by SQL (COUNT, length): BIGINT on PostgreSQL, INTEGER on SQLite, but
/// `length()` is INT4 on PostgreSQL.
fn int_column(row: &AnyRow, name: &str) -> Result<i64, StoreError> {
    row.try_get::<i64, _>(name)
        .or_else(|_| row.try_get::<i32, _>(name).map(i64::from))
        .map_err(db("read a count"))
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Challenge => "challenge",
            Decision::Block => "block",
        }
    }

    fn parse(text: &str) -> Option<Decision> {
        [Decision::Allow, Decision::Challenge, Decision::Block]
            .into_iter()
            .find(|d| d.as_str() == text)
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Verified => "verified",
            Outcome::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Outcome> {
        [Outcome::Pending, Outcome::Verified, Outcome::Failed]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

fn check_login(login: &str) -> Result<(), StoreError> {
    if login.is_empty() || login.len() > MAX_LOGIN_NAME_BYTES {
        return Err(StoreError::Invalid(format!(
            "a login name must be 1 to {MAX_LOGIN_NAME_BYTES} bytes, found {}",
            login.len()
        )));
    }
    Ok(())
}

fn check_size(what: &'static str, size: usize, limit: usize) -> Result<(), StoreError> {
    if size > limit {
        return Err(StoreError::TooLarge { what, size, limit });
    }
    Ok(())
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

fn time(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64)
}

/// Rows per multi-row statement. One statement per batch instead of one per row is what keeps
/// recording cheap (each statement is a round trip to SQLite's worker thread or to the
/// server); the bound keeps the parameters far under SQLite's 32,766 and PostgreSQL's 65,535.
const ROWS_PER_STATEMENT: usize = 64;

/// `(?, ?), (?, ?)` (SQLite) or `($1, $2), ($3, $4)` (PostgreSQL) for `rows` rows of `columns`
/// values.
fn placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            // SQLite gets anonymous `?`: sqlx looks each numbered parameter's name up in a list
            // as long as the statement, which made binding a 64-row insert quadratic.
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    use std::fmt::Write;
                    let _ = write!(sql, "${}", r * columns + c + 1);
                }
            }
        }
        sql.push(')');
    }
    sql
}
