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

mod error;
mod keys;
mod schema;

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
pub const MAX_LOGIN_NAME_BYTES: usize = 512;
/// Largest feature vector blob of one login.
pub const MAX_FEATURE_BYTES: usize = 64 * 1024;
/// Largest reasons document of one login (JSON).
pub const MAX_REASONS_BYTES: usize = 16 * 1024;
/// Largest fitted model of one user.
pub const MAX_MODEL_BYTES: usize = 16 * 1024 * 1024;
/// Largest global model (population prior, forest and fusion).
pub const MAX_GLOBAL_MODEL_BYTES: usize = 64 * 1024 * 1024;
/// Global models kept per store: the newest few, so an instance still running an older
/// gaitkeeper finds one of its own versions for a while after an upgrade.
pub const GLOBAL_MODELS_KEPT: i64 = 4;
/// Largest detail document of one audit event (JSON).
pub const MAX_AUDIT_DETAIL_BYTES: usize = 4 * 1024;
/// Most login sessions kept per user, newest first, whatever their age (past it, the oldest
/// are dropped, a few dozen at a time).
pub const MAX_SESSIONS_PER_USER: i64 = 1000;
/// Most rows any one listing returns.
pub const MAX_PAGE: usize = 1000;
/// Accepted TOTP secret sizes, in bytes (RFC 4226 asks for at least 128 bits).
pub const TOTP_SECRET_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

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
    pub async fn ping(&self) -> Result<(), StoreError> {
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

    /// The key a login name is stored under. Pure: nothing is read or written.
    pub fn user_key(&self, login: &str) -> Result<UserKey, StoreError> {
        check_login(login)?;
        Ok(self.keys.user_key(login))
    }

    /// Creates the user if they are new; returns their key either way.
    pub async fn ensure_user(&self, login: &str) -> Result<UserKey, StoreError> {
        let key = self.user_key(login)?;
        self.insert_user(&self.pool, &key, login, now()).await?;
        Ok(key)
    }

    async fn insert_user<'e, E>(
        &self,
        executor: E,
        key: &UserKey,
        login: &str,
        at: SystemTime,
    ) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let clear = self.keep_clear_names.then(|| login.to_string());
        sqlx::query(
            "INSERT INTO users (user_key, clear_name, created_at, verified_logins) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (user_key) DO UPDATE SET clear_name = excluded.clear_name \
             WHERE users.clear_name IS NULL AND excluded.clear_name IS NOT NULL",
        )
        .bind(key.0.to_vec())
        .bind(clear)
        .bind(millis(at))
        .execute(executor)
        .await
        .map_err(db("create user"))?;
        Ok(())
    }

    /// The user with this key, if the store has them.
    pub async fn user(&self, key: &UserKey) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(
            "SELECT user_key, clear_name, created_at, verified_logins, last_login_at FROM users WHERE user_key = $1",
        )
        .bind(key.0.to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read user"))?;
        row.map(|r| self.user_from_row(&r)).transpose()
    }

    /// Users in key order, starting after `after`; at most `limit` (capped at [`MAX_PAGE`]).
    pub async fn list_users(
        &self,
        after: Option<&UserKey>,
        limit: usize,
    ) -> Result<Vec<User>, StoreError> {
        let after = after.map(|k| k.0.to_vec()).unwrap_or_default();
        let rows = sqlx::query(
            "SELECT user_key, clear_name, created_at, verified_logins, last_login_at FROM users \
             WHERE user_key > $1 ORDER BY user_key LIMIT $2",
        )
        .bind(after)
        .bind(limit.min(MAX_PAGE) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("list users"))?;
        rows.iter().map(|r| self.user_from_row(r)).collect()
    }

    /// How many users the store has.
    pub async fn count_users(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(db("count users"))?;
        Ok(n as u64)
    }

    fn user_from_row(&self, row: &AnyRow) -> Result<User, StoreError> {
        let key_bytes: Vec<u8> = row.try_get("user_key").map_err(db("read user"))?;
        let key = UserKey::from_slice(&key_bytes)
            .ok_or_else(|| StoreError::Corrupt("a user key that is not 32 bytes".into()))?;
        let verified = row
            .try_get::<i64, _>("verified_logins")
            .map_err(db("read user"))? as u64;
        Ok(User {
            key,
            clear_name: row.try_get("clear_name").map_err(db("read user"))?,
            created_at: time(row.try_get("created_at").map_err(db("read user"))?),
            verified_logins: verified,
            last_login_at: row
                .try_get::<Option<i64>, _>("last_login_at")
                .map_err(db("read user"))?
                .map(time),
            enrollment: self.enrollment_of(verified),
        })
    }

    fn enrollment_of(&self, verified: u64) -> Enrollment {
        let needed = u64::from(self.enrollment_logins);
        if verified >= needed {
            Enrollment::Enrolled { verified }
        } else {
            Enrollment::Enrolling { verified, needed }
        }
    }

    /// Records one login (creating its user if new). A `Verified` outcome counts towards
    /// enrollment at once; a `Pending` one when [`Store::set_outcome`] verifies it.
    pub async fn record_login(&self, login: &str, new: NewLogin) -> Result<Recorded, StoreError> {
        let mut results = self.record_logins(vec![(login.to_string(), new)]).await;
        results
            .pop()
            .unwrap_or_else(|| Err(StoreError::Invalid("no login was recorded".to_string())))
    }

    /// Records many logins in one transaction (what a busy login path needs: one commit for a
    /// batch instead of one per login). Returns a result per login, in order: a login that is
    /// itself invalid is refused alone; if the store fails, every login of the batch fails with
    /// that error and none is recorded.
    pub async fn record_logins(
        &self,
        logins: Vec<(String, NewLogin)>,
    ) -> Vec<Result<Recorded, StoreError>> {
        let mut results: Vec<Option<Result<Recorded, StoreError>>> = Vec::new();
        let mut valid = Vec::with_capacity(logins.len());
        for (index, (login, new)) in logins.into_iter().enumerate() {
            match self.check_login(&login, &new) {
                Ok((key, reasons)) => {
                    valid.push((index, key, login, new, reasons));
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        if !valid.is_empty() {
            match self.insert_logins(valid).await {
                Ok(recorded) => {
                    for (index, one) in recorded {
                        results[index] = Some(Ok(one));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    for result in results.iter_mut().filter(|r| r.is_none()) {
                        *result = Some(Err(StoreError::BatchFailed(message.clone())));
                    }
                }
            }
        }
        results.into_iter().flatten().collect()
    }

    async fn insert_logins(
        &self,
        valid: Vec<(usize, UserKey, String, NewLogin, String)>,
    ) -> Result<Vec<(usize, Recorded)>, StoreError> {
        // Each user once: created or counted with one upsert row for all their logins here.
        let mut users: Vec<BatchUser> = Vec::new();
        let mut user_of = HashMap::new();
        for (_, key, login, new, _) in &valid {
            let at = millis(new.at);
            let verified = i64::from(new.outcome == Outcome::Verified);
            let i = *user_of.entry(*key).or_insert_with(|| {
                users.push(BatchUser {
                    key: *key,
                    clear_name: self.keep_clear_names.then(|| login.clone()),
                    created_at: at,
                    last_login_at: at,
                    verified: 0,
                    sessions: 0,
                });
                users.len() - 1
            });
            let user = &mut users[i];
            user.last_login_at = user.last_login_at.max(at);
            user.verified += verified;
            user.sessions += 1;
        }
        let mut tx = self.pool.begin().await.map_err(db("record login"))?;
        // Counts after this batch, per user: (verified logins, sessions).
        let mut counts: HashMap<UserKey, (i64, i64)> = HashMap::with_capacity(users.len());
        for chunk in users.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO users (user_key, clear_name, created_at, last_login_at, verified_logins, sessions) VALUES {} \
                 ON CONFLICT (user_key) DO UPDATE SET \
                 clear_name = COALESCE(users.clear_name, excluded.clear_name), \
                 last_login_at = CASE WHEN users.last_login_at IS NULL OR users.last_login_at < excluded.last_login_at \
                 THEN excluded.last_login_at ELSE users.last_login_at END, \
                 verified_logins = users.verified_logins + excluded.verified_logins, \
                 sessions = users.sessions + excluded.sessions \
                 RETURNING user_key, verified_logins, sessions",
                placeholders(self.backend, chunk.len(), 6)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for u in chunk {
                query = query
                    .bind(u.key.0.to_vec())
                    .bind(u.clear_name.clone())
                    .bind(u.created_at)
                    .bind(u.last_login_at)
                    .bind(u.verified)
                    .bind(u.sessions);
            }
            for row in query
                .fetch_all(&mut *tx)
                .await
                .map_err(db("record login"))?
            {
                let key: Vec<u8> = row.try_get(0).map_err(db("record login"))?;
                let key = UserKey::from_slice(&key)
                    .ok_or_else(|| StoreError::Corrupt("a user key that is not 32 bytes".into()))?;
                let verified: i64 = row.try_get(1).map_err(db("record login"))?;
                let sessions: i64 = row.try_get(2).map_err(db("record login"))?;
                counts.insert(key, (verified, sessions));
            }
        }
        // What the enrollment below needs; the rows themselves are moved into the statements.
        let logins: Vec<(usize, UserKey, bool)> = valid
            .iter()
            .map(|(index, key, _, new, _)| (*index, *key, new.outcome == Outcome::Verified))
            .collect();
        let mut ids = Vec::with_capacity(valid.len());
        let mut rows = valid.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
            let sql = format!(
                "INSERT INTO login_sessions (user_key, at, feature_version, features, risk, reasons, decision, outcome) \
                 VALUES {} RETURNING id",
                placeholders(self.backend, chunk.len(), 8)
            );
            let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
            let count = chunk.len();
            for (_, key, _, new, reasons) in chunk {
                query = query
                    .bind(key.0.to_vec())
                    .bind(millis(new.at))
                    .bind(i64::from(new.features.version))
                    .bind(new.features.bytes)
                    .bind(new.risk)
                    .bind(reasons)
                    .bind(new.decision.as_str())
                    .bind(new.outcome.as_str());
            }
            let mut chunk_ids = query
                .fetch_all(&mut *tx)
                .await
                .map_err(db("record login"))?;
            if chunk_ids.len() != count {
                return Err(StoreError::Corrupt(format!(
                    "recording {} logins returned {} ids",
                    count,
                    chunk_ids.len()
                )));
            }
            // RETURNING gives the rows in no promised order, but one statement's rows take
            // increasing ids in the order of its VALUES (SQLite AUTOINCREMENT under its single
            // writer; a PostgreSQL sequence is drawn row by row), so sorted ids line up.
            chunk_ids.sort_unstable();
            ids.extend(chunk_ids);
        }
        // Keep each user's history bounded whatever the retention: a user past the bound is
        // trimmed to TRIM_MARGIN below it, so a busy user costs a trim every TRIM_MARGIN
        // logins, not one each.
        for (key, (_, sessions)) in &counts {
            if *sessions > MAX_SESSIONS_PER_USER {
                trim_history(&mut tx, key).await?;
            }
        }
        tx.commit().await.map_err(db("record login"))?;

        // Each login's enrollment is its user's verified count just after it: the batch's
        // final count minus the user's verified logins that come later in the batch.
        let mut later: HashMap<UserKey, i64> = HashMap::new();
        let mut recorded = Vec::with_capacity(logins.len());
        for ((index, key, verified), id) in logins.into_iter().zip(ids).rev() {
            let seen_after = later.entry(key).or_insert(0);
            let count = counts.get(&key).map_or(0, |c| c.0) - *seen_after;
            *seen_after += i64::from(verified);
            recorded.push((
                index,
                Recorded {
                    session: id,
                    user: key,
                    enrollment: self.enrollment_of(count.max(0) as u64),
                },
            ));
        }
        recorded.reverse();
        Ok(recorded)
    }

    /// A login's user key and reasons text, or why the login cannot be stored.
    fn check_login(&self, login: &str, new: &NewLogin) -> Result<(UserKey, String), StoreError> {
        let key = self.user_key(login)?;
        check_size(
            "the feature vector",
            new.features.bytes.len(),
            MAX_FEATURE_BYTES,
        )?;
        let reasons = new.reasons.to_string();
        check_size("the reasons document", reasons.len(), MAX_REASONS_BYTES)?;
        if !new.risk.is_finite() {
            return Err(StoreError::Invalid(format!(
                "a login's risk must be a finite number, found {}",
                new.risk
            )));
        }
        Ok((key, reasons))
    }

    /// Settles a pending login. Only a pending login can be settled, once; a verified one
    /// counts towards its user's enrollment.
    pub async fn set_outcome(
        &self,
        session: i64,
        outcome: Outcome,
    ) -> Result<Enrollment, StoreError> {
        if outcome == Outcome::Pending {
            return Err(StoreError::Invalid(
                "a login can only be settled as verified or failed".into(),
            ));
        }
        let mut tx = self.pool.begin().await.map_err(db("settle login"))?;
        let key: Option<Vec<u8>> = sqlx::query_scalar(
            "UPDATE login_sessions SET outcome = $2 WHERE id = $1 AND outcome = 'pending' RETURNING user_key",
        )
        .bind(session)
        .bind(outcome.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("settle login"))?;
        let Some(key) = key else {
            return Err(StoreError::Invalid(format!(
                "login session {session} is unknown or already settled"
            )));
        };
        let count: i64 = sqlx::query_scalar(
            "UPDATE users SET verified_logins = verified_logins + $2 WHERE user_key = $1 RETURNING verified_logins",
        )
        .bind(key)
        .bind(i64::from(outcome == Outcome::Verified))
        .fetch_one(&mut *tx)
        .await
        .map_err(db("settle login"))?;
        tx.commit().await.map_err(db("settle login"))?;
        Ok(self.enrollment_of(count as u64))
    }

    /// The user's latest logins, newest first (at most `limit`, capped at [`MAX_PAGE`]).
    pub async fn recent_logins(
        &self,
        key: &UserKey,
        limit: usize,
    ) -> Result<Vec<LoginSession>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, feature_version, features, risk, reasons, decision, outcome FROM login_sessions \
             WHERE user_key = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(key.0.to_vec())
        .bind(limit.min(MAX_PAGE) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read logins"))?;
        rows.iter().map(session_from_row).collect()
    }

    /// The feature vectors of the user's latest verified logins, newest first: what learning
    /// may use. Failed, blocked and unconfirmed logins are never returned.
    pub async fn verified_features(
        &self,
        key: &UserKey,
        limit: usize,
    ) -> Result<Vec<FeatureBlob>, StoreError> {
        let rows = sqlx::query(
            "SELECT feature_version, features FROM login_sessions \
             WHERE user_key = $1 AND outcome = 'verified' ORDER BY id DESC LIMIT $2",
        )
        .bind(key.0.to_vec())
        .bind(limit.min(MAX_PAGE) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read verified logins"))?;
        rows.iter()
            .map(|r| {
                Ok(FeatureBlob {
                    version: r
                        .try_get::<i64, _>("feature_version")
                        .map_err(db("read features"))? as u32,
                    bytes: r.try_get("features").map_err(db("read features"))?,
                })
            })
            .collect()
    }

    /// Saves (replacing) the user's fitted model. The user must exist.
    pub async fn save_model(
        &self,
        key: &UserKey,
        feature_version: u32,
        model_version: u32,
        blob: Vec<u8>,
    ) -> Result<StoredModel, StoreError> {
        check_size("the model", blob.len(), MAX_MODEL_BYTES)?;
        let saved = Self::upsert_model(
            &self.pool,
            key,
            feature_version,
            model_version,
            blob.clone(),
        )
        .await?;
        Ok(StoredModel {
            feature_version,
            model_version,
            blob,
            updated_at: saved,
        })
    }

    /// Saves several users' models (each as [`Store::save_model`]) in one transaction.
    /// Returns, per model, whether it was saved: a user forgotten meanwhile is skipped.
    pub async fn save_models(
        &self,
        models: Vec<(UserKey, u32, u32, Vec<u8>)>,
    ) -> Result<Vec<bool>, StoreError> {
        for (_, _, _, blob) in &models {
            check_size("the model", blob.len(), MAX_MODEL_BYTES)?;
        }
        if models.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await.map_err(db("save model"))?;
        let mut saved = Vec::with_capacity(models.len());
        for (key, feature_version, model_version, blob) in models {
            match Self::upsert_model(&mut *tx, &key, feature_version, model_version, blob).await {
                Ok(_) => saved.push(true),
                Err(StoreError::UnknownUser { .. }) => saved.push(false),
                Err(e) => return Err(e),
            }
        }
        tx.commit().await.map_err(db("save model"))?;
        Ok(saved)
    }

    /// Inserts or replaces a user's model; returns when it was saved.
    async fn upsert_model<'e, E>(
        executor: E,
        key: &UserKey,
        feature_version: u32,
        model_version: u32,
        blob: Vec<u8>,
    ) -> Result<SystemTime, StoreError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let at = now();
        let done = sqlx::query(
            "INSERT INTO models (user_key, feature_version, model_version, model, updated_at) \
             SELECT user_key, $2, $3, $4, $5 FROM users WHERE user_key = $1 \
             ON CONFLICT (user_key) DO UPDATE SET feature_version = excluded.feature_version, \
             model_version = excluded.model_version, model = excluded.model, updated_at = excluded.updated_at",
        )
        .bind(key.0.to_vec())
        .bind(i64::from(feature_version))
        .bind(i64::from(model_version))
        .bind(blob)
        .bind(millis(at))
        .execute(executor)
        .await
        .map_err(db("save model"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownUser {
                user: format!("key:{key}"),
            });
        }
        Ok(time(millis(at)))
    }

    /// The user's fitted model, if they have one.
    pub async fn load_model(&self, key: &UserKey) -> Result<Option<StoredModel>, StoreError> {
        let row = sqlx::query(
            "SELECT feature_version, model_version, model, updated_at FROM models WHERE user_key = $1",
        )
        .bind(key.0.to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("load model"))?;
        row.map(|r| {
            Ok(StoredModel {
                feature_version: r
                    .try_get::<i64, _>("feature_version")
                    .map_err(db("load model"))? as u32,
                model_version: r
                    .try_get::<i64, _>("model_version")
                    .map_err(db("load model"))? as u32,
                blob: r.try_get("model").map_err(db("load model"))?,
                updated_at: time(r.try_get("updated_at").map_err(db("load model"))?),
            })
        })
        .transpose()
    }

    /// Saves a newly trained global model and trims the oldest beyond [`GLOBAL_MODELS_KEPT`];
    /// returns its id.
    pub async fn save_global_model(
        &self,
        feature_version: u32,
        model_version: u32,
        blob: Vec<u8>,
        users: u64,
        logins: u64,
    ) -> Result<i64, StoreError> {
        check_size("the global model", blob.len(), MAX_GLOBAL_MODEL_BYTES)?;
        let mut tx = self.pool.begin().await.map_err(db("save global model"))?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO global_models (feature_version, model_version, model, users, logins, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(i64::from(feature_version))
        .bind(i64::from(model_version))
        .bind(blob)
        .bind(i64::try_from(users).unwrap_or(i64::MAX))
        .bind(i64::try_from(logins).unwrap_or(i64::MAX))
        .bind(millis(now()))
        .fetch_one(&mut *tx)
        .await
        .map_err(db("save global model"))?;
        sqlx::query(
            "DELETE FROM global_models WHERE id <= \
             (SELECT id FROM global_models ORDER BY id DESC LIMIT 1 OFFSET $1)",
        )
        .bind(GLOBAL_MODELS_KEPT)
        .execute(&mut *tx)
        .await
        .map_err(db("trim global models"))?;
        tx.commit().await.map_err(db("save global model"))?;
        Ok(id)
    }

    /// The newest global model trained for these versions, if any. `newer_than` skips the
    /// read when the newest is the one the caller already has.
    pub async fn load_global_model(
        &self,
        feature_version: u32,
        model_version: u32,
        newer_than: Option<i64>,
    ) -> Result<Option<StoredGlobalModel>, StoreError> {
        let row = sqlx::query(
            "SELECT id, feature_version, model_version, model, users, logins, created_at FROM global_models \
             WHERE feature_version = $1 AND model_version = $2 AND id > $3 ORDER BY id DESC LIMIT 1",
        )
        .bind(i64::from(feature_version))
        .bind(i64::from(model_version))
        .bind(newer_than.unwrap_or(i64::MIN))
        .fetch_optional(&self.pool)
        .await
        .map_err(db("load global model"))?;
        row.map(|r| {
            let err = db("load global model");
            let int = |name: &str| r.try_get::<i64, _>(name);
            Ok(StoredGlobalModel {
                id: int("id").map_err(db("load global model"))?,
                feature_version: int("feature_version").map_err(db("load global model"))? as u32,
                model_version: int("model_version").map_err(db("load global model"))? as u32,
                blob: r.try_get("model").map_err(db("load global model"))?,
                users: int("users").map_err(db("load global model"))?.max(0) as u64,
                logins: int("logins").map_err(db("load global model"))?.max(0) as u64,
                created_at: time(int("created_at").map_err(err)?),
            })
        })
        .transpose()
    }

    /// Seals and stores the user's TOTP secret (creating the user if new), replacing any
    /// earlier one.
    pub async fn set_totp_secret(&self, login: &str, secret: &[u8]) -> Result<UserKey, StoreError> {
        if !TOTP_SECRET_BYTES.contains(&secret.len()) {
            return Err(StoreError::Invalid(format!(
                "a TOTP secret must be {} to {} bytes, found {}",
                TOTP_SECRET_BYTES.start(),
                TOTP_SECRET_BYTES.end(),
                secret.len()
            )));
        }
        let key = self.user_key(login)?;
        let (nonce, sealed) = self.keys.seal(&key, secret);
        let mut tx = self.pool.begin().await.map_err(db("store TOTP secret"))?;
        self.insert_user(&mut *tx, &key, login, now()).await?;
        sqlx::query(
            "INSERT INTO totp_secrets (user_key, nonce, sealed, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_key) DO UPDATE SET nonce = excluded.nonce, sealed = excluded.sealed, created_at = excluded.created_at",
        )
        .bind(key.0.to_vec())
        .bind(nonce)
        .bind(sealed)
        .bind(millis(now()))
        .execute(&mut *tx)
        .await
        .map_err(db("store TOTP secret"))?;
        tx.commit().await.map_err(db("store TOTP secret"))?;
        Ok(key)
    }

    /// Moves the profile stored under the name `as_sent` to the name `normalized` — logins,
    /// model, counts and TOTP secret (resealed for its new key) — when `normalized` has no
    /// profile yet. The audit trail stays under the old key (it is append-only). Returns
    /// whether a profile moved.
    ///
    /// Since login names are normalised (`routes[].username.normalize`), a user whose name was
    /// stored as typed (`Alice ` with its space) is looked up under the normalised name: this
    /// carries their profile over at their first login after the upgrade. User keys are HMACs,
    /// so a store cannot be re-keyed in bulk without the names.
    pub async fn rekey_user(&self, as_sent: &str, normalized: &str) -> Result<bool, StoreError> {
        let from = self.user_key(as_sent)?;
        let to = self.user_key(normalized)?;
        if from == to {
            return Ok(false);
        }
        let what = "move a profile to its normalised name";
        let mut tx = self.pool.begin().await.map_err(db(what))?;
        // Write first (see `forget`): the new user row, only if the old exists and the new not.
        let moved = sqlx::query(
            "INSERT INTO users (user_key, clear_name, created_at, verified_logins, last_login_at, sessions) \
             SELECT $1, $2, created_at, verified_logins, last_login_at, sessions FROM users \
             WHERE user_key = $3 AND NOT EXISTS (SELECT 1 FROM users WHERE user_key = $4)",
        )
        .bind(to.0.to_vec())
        .bind(self.keep_clear_names.then(|| normalized.to_string()))
        .bind(from.0.to_vec())
        .bind(to.0.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(db(what))?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        for table in ["login_sessions", "models"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET user_key = $1 WHERE user_key = $2"
            )))
            .bind(to.0.to_vec())
            .bind(from.0.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(db(what))?;
        }
        let sealed =
            sqlx::query("SELECT nonce, sealed, created_at FROM totp_secrets WHERE user_key = $1")
                .bind(from.0.to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db(what))?;
        if let Some(row) = sealed {
            let nonce: Vec<u8> = row.try_get("nonce").map_err(db(what))?;
            let old: Vec<u8> = row.try_get("sealed").map_err(db(what))?;
            let created = int_column(&row, "created_at")?;
            // The user key is the seal's associated data: open it for the old key, seal it
            // anew for the new one.
            let secret =
                self.keys
                    .unseal(&from, &nonce, &old)
                    .ok_or_else(|| StoreError::Unseal {
                        user: format!("key:{from}"),
                    })?;
            let (nonce, sealed) = self.keys.seal(&to, &secret);
            sqlx::query(
                "INSERT INTO totp_secrets (user_key, nonce, sealed, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(to.0.to_vec())
            .bind(nonce)
            .bind(sealed)
            .bind(created)
            .execute(&mut *tx)
            .await
            .map_err(db(what))?;
        }
        sqlx::query("DELETE FROM users WHERE user_key = $1")
            .bind(from.0.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(db(what))?;
        tx.commit().await.map_err(db(what))?;
        Ok(true)
    }

    /// The user's TOTP secret, unsealed. Keep it in memory only as long as needed.
    pub async fn totp_secret(&self, key: &UserKey) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT nonce, sealed FROM totp_secrets WHERE user_key = $1")
            .bind(key.0.to_vec())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("read TOTP secret"))?;
        let Some(row) = row else { return Ok(None) };
        let nonce: Vec<u8> = row.try_get("nonce").map_err(db("read TOTP secret"))?;
        let sealed: Vec<u8> = row.try_get("sealed").map_err(db("read TOTP secret"))?;
        self.keys
            .unseal(key, &nonce, &sealed)
            .map(Some)
            .ok_or_else(|| StoreError::Unseal {
                user: format!("key:{key}"),
            })
    }

    /// Appends an audit event, about a user or (with `None`) about the store. `kind` is a short
    /// lower-case name such as `login.blocked`; `detail` must not contain the login name (the
    /// user key stands for the user).
    pub async fn append_audit(
        &self,
        user: Option<&UserKey>,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        append_audit(&self.pool, user, kind, detail, now()).await
    }

    /// The user's audit events, newest first (at most `limit`, capped at [`MAX_PAGE`]).
    pub async fn audit_events(
        &self,
        user: &UserKey,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, incident, detail FROM audit_events WHERE user_key = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(user.0.to_vec())
        .bind(limit.min(MAX_PAGE) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read audit events"))?;
        rows.iter().map(audit_event_from_row).collect()
    }

    /// Appends one audit record unless a record with the same `record_id` is already there
    /// (a redelivery after a crash). Returns whether it was new.
    pub async fn append_audit_record(
        &self,
        record: &NewAuditRecord<'_>,
    ) -> Result<bool, StoreError> {
        let detail = check_audit_record(record)?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO audit_events (at, user_key, kind, detail, incident, record_id) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (record_id) DO NOTHING RETURNING id",
        )
        .bind(millis(record.at))
        .bind(record.user.map(|k| k.0.to_vec()))
        .bind(record.kind.to_string())
        .bind(detail)
        .bind(record.incident.to_string())
        .bind(record.record_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("append audit record"))?;
        Ok(id.is_some())
    }

    /// Appends many audit records in one transaction (one commit, however many records: what
    /// lets the audit trail keep up with a busy login path). Records the store refuses for
    /// themselves are left out and reported by index; `Err` means none was stored.
    pub async fn append_audit_records(
        &self,
        records: &[NewAuditRecord<'_>],
    ) -> Result<Vec<(usize, StoreError)>, StoreError> {
        let mut refused = Vec::new();
        let mut valid = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match check_audit_record(record) {
                Ok(detail) => valid.push((record, detail)),
                Err(e) => refused.push((i, e)),
            }
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("append audit records"))?;
        // Chunks taken by value: each detail moves into its statement instead of being copied.
        let mut valid = valid.into_iter().peekable();
        while valid.peek().is_some() {
            let chunk: Vec<_> = valid.by_ref().take(ROWS_PER_STATEMENT).collect();
            let sql = format!(
                "INSERT INTO audit_events (at, user_key, kind, detail, incident, record_id) \
                 VALUES {} ON CONFLICT (record_id) DO NOTHING",
                placeholders(self.backend, chunk.len(), 6)
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (record, detail) in chunk {
                query = query
                    .bind(millis(record.at))
                    .bind(record.user.map(|k| k.0.to_vec()))
                    .bind(record.kind.to_string())
                    .bind(detail)
                    .bind(record.incident.to_string())
                    .bind(record.record_id.to_string());
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(db("append audit records"))?;
        }
        tx.commit().await.map_err(db("append audit records"))?;
        Ok(refused)
    }

    /// Every audit event of one incident, oldest first (at most [`MAX_PAGE`]).
    pub async fn audit_by_incident(&self, incident: &str) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, incident, detail FROM audit_events WHERE incident = $1 ORDER BY id LIMIT $2",
        )
        .bind(incident.to_string())
        .bind(MAX_PAGE as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read an incident"))?;
        rows.iter().map(audit_event_from_row).collect()
    }

    /// Audit events of every kind, oldest first: the newest `limit` (capped at [`MAX_PAGE`]),
    /// or with `after`, the first `limit` whose id is greater (to follow the trail).
    pub async fn audit_tail(
        &self,
        limit: usize,
        after: Option<i64>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let limit = limit.min(MAX_PAGE) as i64;
        let query = match after {
            Some(after) => sqlx::query(
                "SELECT id, at, kind, incident, detail FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after),
            None => sqlx::query(
                "SELECT id, at, kind, incident, detail FROM \
                 (SELECT id, at, kind, incident, detail FROM audit_events ORDER BY id DESC LIMIT $1) AS newest \
                 ORDER BY id",
            ),
        };
        let rows = query
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db("read audit events"))?;
        rows.iter().map(audit_event_from_row).collect()
    }

    /// Anonymous counts of forgotten users' audit events, by kind.
    pub async fn forgotten_audit_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT kind, events FROM audit_forgotten ORDER BY kind LIMIT 1000")
            .fetch_all(&self.pool)
            .await
            .map_err(db("read forgotten counts"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("kind").map_err(db("read forgotten counts"))?,
                    r.try_get::<i64, _>("events")
                        .map_err(db("read forgotten counts"))? as u64,
                ))
            })
            .collect()
    }

    /// Everything `users show` prints, or `None` for an unknown user.
    pub async fn profile(
        &self,
        key: &UserKey,
        recent: usize,
    ) -> Result<Option<Profile>, StoreError> {
        let Some(user) = self.user(key).await? else {
            return Ok(None);
        };
        let model = sqlx::query(
            "SELECT feature_version, model_version, length(model) AS bytes, updated_at FROM models WHERE user_key = $1",
        )
        .bind(key.0.to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read model info"))?
        .map(|r| -> Result<ModelInfo, StoreError> {
            Ok(ModelInfo {
                feature_version: r.try_get::<i64, _>("feature_version").map_err(db("read model info"))? as u32,
                model_version: r.try_get::<i64, _>("model_version").map_err(db("read model info"))? as u32,
                bytes: int_column(&r, "bytes")? as u64,
                updated_at: time(r.try_get("updated_at").map_err(db("read model info"))?),
            })
        })
        .transpose()?;
        let totp: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM totp_secrets WHERE user_key = $1")
            .bind(key.0.to_vec())
            .fetch_one(&self.pool)
            .await
            .map_err(db("read TOTP state"))?;
        Ok(Some(Profile {
            user,
            model,
            has_totp: totp > 0,
            recent: self.recent_logins(key, recent).await?,
        }))
    }

    /// Starts the user's enrollment over: their logins and model are deleted and the verified
    /// count returns to zero. Their TOTP secret and audit trail stay.
    pub async fn reset(&self, key: &UserKey) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db("reset user"))?;
        let done = sqlx::query("UPDATE users SET verified_logins = 0 WHERE user_key = $1")
            .bind(key.0.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(db("reset user"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownUser {
                user: format!("key:{key}"),
            });
        }
        for table in [
            "DELETE FROM login_sessions WHERE user_key = $1",
            "DELETE FROM models WHERE user_key = $1",
        ] {
            sqlx::query(table)
                .bind(key.0.to_vec())
                .execute(&mut *tx)
                .await
                .map_err(db("reset user"))?;
        }
        append_audit(
            &mut *tx,
            Some(key),
            "profile.reset",
            &serde_json::json!({}),
            now(),
        )
        .await?;
        tx.commit().await.map_err(db("reset user"))?;
        Ok(())
    }

    /// Erases every trace of the user: their row, logins, model and TOTP secret are deleted,
    /// and their audit events are replaced by anonymous counts by kind. On SQLite the freed
    /// pages are overwritten and the write-ahead log is truncated, so the bytes are gone from
    /// the files too (PostgreSQL keeps dead rows until VACUUM; see docs/configuration.md).
    pub async fn forget(&self, key: &UserKey) -> Result<Forgotten, StoreError> {
        let user = key.0.to_vec();
        let mut tx = self.pool.begin().await.map_err(db("forget user"))?;
        // Write first: on SQLite a transaction that reads and then writes fails at once
        // (SQLITE_BUSY_SNAPSHOT) when another connection wrote in between; one that starts
        // with a write waits for the lock instead.
        let exists = sqlx::query("UPDATE users SET verified_logins = 0 WHERE user_key = $1")
            .bind(user.clone())
            .execute(&mut *tx)
            .await
            .map_err(db("forget user"))?
            .rows_affected();
        if exists == 0 {
            return Err(StoreError::UnknownUser {
                user: format!("key:{key}"),
            });
        }
        let kinds = sqlx::query(
            "SELECT kind, COUNT(*) AS events FROM audit_events WHERE user_key = $1 GROUP BY kind",
        )
        .bind(user.clone())
        .fetch_all(&mut *tx)
        .await
        .map_err(db("forget user"))?;
        let mut forgotten = Forgotten::default();
        for row in &kinds {
            let kind: String = row.try_get("kind").map_err(db("forget user"))?;
            let events = int_column(row, "events")?;
            forgotten.audit_events += events as u64;
            sqlx::query(
                "INSERT INTO audit_forgotten (kind, events) VALUES ($1, $2) \
                 ON CONFLICT (kind) DO UPDATE SET events = audit_forgotten.events + excluded.events",
            )
            .bind(kind)
            .bind(events)
            .execute(&mut *tx)
            .await
            .map_err(db("forget user"))?;
        }
        let mut deleted = [0u64; 5];
        for (count, sql) in deleted.iter_mut().zip([
            "DELETE FROM audit_events WHERE user_key = $1",
            "DELETE FROM login_sessions WHERE user_key = $1",
            "DELETE FROM models WHERE user_key = $1",
            "DELETE FROM totp_secrets WHERE user_key = $1",
            "DELETE FROM users WHERE user_key = $1",
        ]) {
            *count = sqlx::query(sql)
                .bind(user.clone())
                .execute(&mut *tx)
                .await
                .map_err(db("forget user"))?
                .rows_affected();
        }
        [forgotten.sessions, forgotten.models, forgotten.totp_secrets] =
            [deleted[1], deleted[2], deleted[3]];
        append_audit(
            &mut *tx,
            None,
            "user.forgotten",
            &serde_json::json!({
                "sessions": forgotten.sessions,
                "models": forgotten.models,
                "totp_secrets": forgotten.totp_secrets,
                "audit_events": forgotten.audit_events,
            }),
            now(),
        )
        .await?;
        tx.commit().await.map_err(db("forget user"))?;
        if self.backend == Backend::Sqlite {
            // Copy the overwritten pages into the main file and empty the log, so the
            // forgotten bytes do not live on in the -wal file. Readers may hold the log
            // open; then the truncation happens at a later checkpoint.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await
                .map_err(db("checkpoint after forget"))?;
        }
        Ok(forgotten)
    }

    /// Deletes raw login features older than `store.retention` (relative to `now`); models,
    /// users and enrollment counts are kept. Works in bounded batches; returns how many
    /// logins were deleted.
    pub async fn prune(&self, now: SystemTime) -> Result<u64, StoreError> {
        let cutoff = millis(now.checked_sub(self.retention).unwrap_or(UNIX_EPOCH));
        let mut total = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM login_sessions WHERE id IN (SELECT id FROM login_sessions WHERE at < $1 LIMIT 5000)",
            )
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(db("prune old logins"))?;
            total += done.rows_affected();
            if done.rows_affected() < 5000 {
                return Ok(total);
            }
        }
    }
}

/// Checks one audit record against the store's bounds; its detail as stored text.
fn check_audit_record(record: &NewAuditRecord<'_>) -> Result<String, StoreError> {
    check_audit_kind(record.kind)?;
    for (what, text) in [
        ("the incident", record.incident),
        ("the record id", record.record_id),
    ] {
        if text.is_empty() || text.len() > 64 {
            return Err(StoreError::Invalid(format!(
                "{what} of an audit record must be 1 to 64 bytes, found {}",
                text.len()
            )));
        }
    }
    let detail = record.detail.to_string();
    check_size("the audit detail", detail.len(), MAX_AUDIT_DETAIL_BYTES)?;
    Ok(detail)
}

async fn append_audit<'e, E>(
    executor: E,
    user: Option<&UserKey>,
    kind: &str,
    detail: &serde_json::Value,
    at: SystemTime,
) -> Result<i64, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    check_audit_kind(kind)?;
    let detail = detail.to_string();
    check_size("the audit detail", detail.len(), MAX_AUDIT_DETAIL_BYTES)?;
    sqlx::query_scalar(
        "INSERT INTO audit_events (at, user_key, kind, detail) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(millis(at))
    .bind(user.map(|k| k.0.to_vec()))
    .bind(kind.to_string())
    .bind(detail)
    .fetch_one(executor)
    .await
    .map_err(db("append audit event"))
}

fn check_audit_kind(kind: &str) -> Result<(), StoreError> {
    let kind_ok = !kind.is_empty()
        && kind.len() <= 64
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if !kind_ok {
        return Err(StoreError::Invalid(format!(
            "an audit event kind is 1 to 64 lower-case letters, digits, '_' or '.', found {kind:?}"
        )));
    }
    Ok(())
}

fn audit_event_from_row(r: &AnyRow) -> Result<AuditEvent, StoreError> {
    let detail: String = r.try_get("detail").map_err(db("read audit events"))?;
    Ok(AuditEvent {
        id: r.try_get("id").map_err(db("read audit events"))?,
        at: time(r.try_get("at").map_err(db("read audit events"))?),
        kind: r.try_get("kind").map_err(db("read audit events"))?,
        incident: r.try_get("incident").map_err(db("read audit events"))?,
        detail: serde_json::from_str(&detail)
            .map_err(|e| StoreError::Corrupt(format!("an audit detail: {e}")))?,
    })
}

fn session_from_row(row: &AnyRow) -> Result<LoginSession, StoreError> {
    let reasons: String = row.try_get("reasons").map_err(db("read logins"))?;
    let decision: String = row.try_get("decision").map_err(db("read logins"))?;
    let outcome: String = row.try_get("outcome").map_err(db("read logins"))?;
    Ok(LoginSession {
        id: row.try_get("id").map_err(db("read logins"))?,
        at: time(row.try_get("at").map_err(db("read logins"))?),
        features: FeatureBlob {
            version: row
                .try_get::<i64, _>("feature_version")
                .map_err(db("read logins"))? as u32,
            bytes: row.try_get("features").map_err(db("read logins"))?,
        },
        risk: row.try_get("risk").map_err(db("read logins"))?,
        reasons: serde_json::from_str(&reasons)
            .map_err(|e| StoreError::Corrupt(format!("a login's reasons: {e}")))?,
        decision: Decision::parse(&decision)
            .ok_or_else(|| StoreError::Corrupt(format!("decision {decision:?}")))?,
        outcome: Outcome::parse(&outcome)
            .ok_or_else(|| StoreError::Corrupt(format!("outcome {outcome:?}")))?,
    })
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

/// How far below [`MAX_SESSIONS_PER_USER`] a trim takes a user's history.
const TRIM_MARGIN: i64 = 50;

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

/// One user's part of a batch of logins.
struct BatchUser {
    key: UserKey,
    clear_name: Option<String>,
    created_at: i64,
    last_login_at: i64,
    verified: i64,
    sessions: i64,
}

/// Drops the user's oldest logins beyond [`MAX_SESSIONS_PER_USER`] − [`TRIM_MARGIN`] and
/// sets their session count to what is left.
async fn trim_history(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key: &UserKey,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM login_sessions WHERE user_key = $1 AND id <= \
         (SELECT id FROM login_sessions WHERE user_key = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
    )
    .bind(key.0.to_vec())
    .bind(MAX_SESSIONS_PER_USER - TRIM_MARGIN)
    .execute(&mut **tx)
    .await
    .map_err(db("trim login history"))?;
    sqlx::query(
        "UPDATE users SET sessions = (SELECT COUNT(*) FROM login_sessions WHERE user_key = $1) WHERE user_key = $1",
    )
    .bind(key.0.to_vec())
    .execute(&mut **tx)
    .await
    .map_err(db("trim login history"))?;
    Ok(())
}
