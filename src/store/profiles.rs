//! A user's whole profile: reading it for the operator, resetting it, forgetting the user, and retention.

use super::audit::append_audit;
use super::*;

impl Store {
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
            recovery_codes: self.recovery_codes_left(key).await?,
            passkeys: self.passkeys(key).await?.len(),
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
        let mut deleted = [0u64; 9];
        for (count, sql) in deleted.iter_mut().zip([
            "DELETE FROM audit_events WHERE user_key = $1",
            "DELETE FROM login_sessions WHERE user_key = $1",
            "DELETE FROM models WHERE user_key = $1",
            "DELETE FROM totp_secrets WHERE user_key = $1",
            "DELETE FROM recovery_codes WHERE user_key = $1",
            "DELETE FROM invitations WHERE user_key = $1",
            "DELETE FROM passkeys WHERE user_key = $1",
            "DELETE FROM factor_offers WHERE user_key = $1",
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
        // The user's failed-login count and ban in the state instances share (keyed by the
        // user key, so identifying for as long as they live).
        for sql in [
            "DELETE FROM shared_counters WHERE slot = $1",
            "DELETE FROM shared_bans WHERE slot = $1",
        ] {
            sqlx::query(sql)
                .bind(crate::shared::user_slot(&key.to_string()))
                .execute(&mut *tx)
                .await
                .map_err(db("forget user"))?;
        }
        // Their wrong TOTP codes, from everywhere and per address (`shared::totp_slots`).
        let [totp_slots, _] = crate::shared::totp_slots(&key.to_string(), "");
        sqlx::query("DELETE FROM shared_counters WHERE slot = $1 OR slot LIKE $2")
            .bind(totp_slots.clone())
            .bind(format!("{totp_slots}:%"))
            .execute(&mut *tx)
            .await
            .map_err(db("forget user"))?;
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
