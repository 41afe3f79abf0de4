//! The shared state of several instances (`server.shared_state: store`) in the store's
//! PostgreSQL database: `shared_once`, ids used once across every instance; `shared_counters`
//! and `shared_bans`, regulation's failed-login counts and bans. Rows carry their
//! deadline; a lookup ignores expired rows, and [`Store::sweep_shared`] deletes them in bounded
//! batches (no cron).

use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::shared::{SharedState, StateError};

/// Rows deleted per sweep statement, so a sweep never holds long locks.
const SWEEP_BATCH: i64 = 5_000;

#[async_trait]
impl SharedState for Store {
    async fn first_use(
        &self,
        kind: &'static str,
        id: &[u8],
        until: u64,
    ) -> Result<bool, StateError> {
        // One round trip, atomic: a new id is inserted; an expired one is taken over; a live
        // one is left alone and nothing is returned (a replay).
        let now = now_secs();
        let inserted = sqlx::query(
            "INSERT INTO shared_once (kind, id, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (kind, id) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE shared_once.expires_at < $4 RETURNING 1",
        )
        .bind(kind)
        .bind(id.to_vec())
        .bind(until.min(i64::MAX as u64) as i64)
        .bind(now as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StateError(format!("recording a used {kind}: {e}")))?;
        Ok(inserted.is_some())
    }

    async fn count_failures(
        &self,
        slots: &[(String, u32)],
        window: Duration,
        ban: Duration,
    ) -> Result<bool, StateError> {
        let now = now_secs();
        let err = |e: sqlx::Error| StateError(format!("counting a failed login: {e}"));
        let mut newly_banned = false;
        for (slot, limit) in slots.iter().filter(|(_, limit)| *limit > 0) {
            // A count whose window ended starts over at 1, in the same statement.
            let count: i64 = sqlx::query_scalar(
                "INSERT INTO shared_counters (slot, count, expires_at) VALUES ($1, 1, $2)                  ON CONFLICT (slot) DO UPDATE SET                  count = CASE WHEN shared_counters.expires_at < $3 THEN 1 ELSE shared_counters.count + 1 END,                  expires_at = CASE WHEN shared_counters.expires_at < $3 THEN excluded.expires_at ELSE shared_counters.expires_at END                  RETURNING CAST(count AS BIGINT)",
            )
            .bind(slot)
            .bind((now + window.as_secs()) as i64)
            .bind(now as i64)
            .fetch_one(&self.pool)
            .await
            .map_err(err)?;
            if count >= i64::from(*limit) {
                let banned = sqlx::query(
                    "INSERT INTO shared_bans (slot, expires_at) VALUES ($1, $2)                      ON CONFLICT (slot) DO UPDATE SET expires_at = excluded.expires_at                      WHERE shared_bans.expires_at < $3 RETURNING 1",
                )
                .bind(slot)
                .bind((now + ban.as_secs()) as i64)
                .bind(now as i64)
                .fetch_optional(&self.pool)
                .await
                .map_err(err)?;
                sqlx::query("DELETE FROM shared_counters WHERE slot = $1")
                    .bind(slot)
                    .execute(&self.pool)
                    .await
                    .map_err(err)?;
                newly_banned |= banned.is_some();
            }
        }
        Ok(newly_banned)
    }

    async fn banned(&self, slots: &[String]) -> Result<Vec<String>, StateError> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let list = (0..slots.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql =
            format!("SELECT slot FROM shared_bans WHERE expires_at >= $1 AND slot IN ({list})");
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(now_secs() as i64);
        for slot in slots {
            query = query.bind(slot.clone());
        }
        query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StateError(format!("reading regulation bans: {e}")))
    }
}

fn now_secs() -> u64 {
    crate::runtime::unix_secs(std::time::SystemTime::now())
}

impl Store {
    /// Deletes shared-state rows whose deadline passed before `now` (Unix seconds), at most
    /// `max_batches` batches; returns how many went.
    pub async fn sweep_shared(&self, now: u64, max_batches: u32) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for sql in [
            "DELETE FROM shared_once WHERE (kind, id) IN \
             (SELECT kind, id FROM shared_once WHERE expires_at < $1 LIMIT $2)",
            "DELETE FROM shared_counters WHERE slot IN \
             (SELECT slot FROM shared_counters WHERE expires_at < $1 LIMIT $2)",
            "DELETE FROM shared_bans WHERE slot IN \
             (SELECT slot FROM shared_bans WHERE expires_at < $1 LIMIT $2)",
        ] {
            for _ in 0..max_batches {
                let gone = sqlx::query(sql)
                    .bind(now as i64)
                    .bind(SWEEP_BATCH)
                    .execute(&self.pool)
                    .await
                    .map_err(db("sweep the shared state"))?
                    .rows_affected();
                deleted += gone;
                if gone < SWEEP_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}
