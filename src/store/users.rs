//! Users: keying by login name, creating, listing, and moving a profile to a normalised name.

use super::*;

impl Store {
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

    pub(super) async fn insert_user<'e, E>(
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

    pub(super) fn user_from_row(&self, row: &AnyRow) -> Result<User, StoreError> {
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

    pub(super) fn enrollment_of(&self, verified: u64) -> Enrollment {
        let needed = u64::from(self.enrollment_logins);
        if verified >= needed {
            Enrollment::Enrolled { verified }
        } else {
            Enrollment::Enrolling { verified, needed }
        }
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
}
