//! The shared state of several instances (`server.shared_state: store`) in the store's
//! PostgreSQL database: `shared_once`, ids used once across every instance; `shared_counters`
//! and `shared_bans`, regulation's failed-login counts and bans; `shared_held`, the sealed held
//! logins of open challenges (single use by `DELETE … RETURNING`). Rows carry their
//! deadline; a lookup ignores expired rows, and [`Store::sweep_shared`] deletes them in bounded
//! batches (no cron).

use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::shared::{HeldRow, HeldTotals, SharedState, StateError};

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
        let sql = format!(
            "SELECT slot FROM shared_bans WHERE expires_at >= $1 AND slot IN ({})",
            numbered(2, slots.len())
        );
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(now_secs() as i64);
        for slot in slots {
            query = query.bind(slot.clone());
        }
        query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StateError(format!("reading regulation bans: {e}")))
    }

    async fn first_use_and_banned(
        &self,
        kind: &'static str,
        id: &[u8],
        until: u64,
        slots: &[String],
    ) -> Result<(bool, Vec<String>), StateError> {
        if self.backend != Backend::Postgres {
            // SQLite (one instance, never shared in production): the two statements.
            let fresh = self.first_use(kind, id, until).await?;
            return Ok((fresh, self.banned(slots).await?));
        }
        // One statement: an empty slot name (no slot has one) marks the token's first use.
        let mut sql = "WITH used AS (INSERT INTO shared_once (kind, id, expires_at) \
             VALUES ($2, $3, $4) ON CONFLICT (kind, id) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE shared_once.expires_at < $1 RETURNING 1) \
             SELECT CAST('' AS TEXT) AS slot FROM used"
            .to_string();
        if !slots.is_empty() {
            sql.push_str(&format!(
                " UNION ALL SELECT slot FROM shared_bans WHERE expires_at >= $1 AND slot IN ({})",
                numbered(5, slots.len())
            ));
        }
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(now_secs() as i64)
            .bind(kind)
            .bind(id.to_vec())
            .bind(until.min(i64::MAX as u64) as i64);
        for slot in slots {
            query = query.bind(slot.clone());
        }
        let rows: Vec<String> = query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StateError(format!("recording a used {kind} and reading bans: {e}")))?;
        let fresh = rows.iter().any(String::is_empty);
        Ok((fresh, rows.into_iter().filter(|s| !s.is_empty()).collect()))
    }

    async fn failure_counts(&self, slots: &[String]) -> Result<Vec<u32>, StateError> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT slot, CAST(count AS BIGINT) AS count FROM shared_counters \
             WHERE expires_at >= $1 AND slot IN ({})",
            numbered(2, slots.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_secs() as i64);
        for slot in slots {
            query = query.bind(slot.clone());
        }
        let read = |e: sqlx::Error| StateError(format!("reading failure counts: {e}"));
        let rows = query.fetch_all(&self.pool).await.map_err(read)?;
        let mut counts = vec![0; slots.len()];
        for row in rows {
            let slot: String = row.try_get("slot").map_err(read)?;
            let count: i64 = row.try_get("count").map_err(read)?;
            if let Some(i) = slots.iter().position(|s| *s == slot) {
                counts[i] = count.clamp(0, i64::from(u32::MAX)) as u32;
            }
        }
        Ok(counts)
    }

    async fn clear_failures(&self, slots: &[String]) -> Result<(), StateError> {
        if slots.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM shared_counters WHERE slot IN ({})",
            numbered(1, slots.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for slot in slots {
            query = query.bind(slot.clone());
        }
        query
            .execute(&self.pool)
            .await
            .map_err(|e| StateError(format!("clearing failure counts: {e}")))?;
        Ok(())
    }

    async fn hold(&self, row: &HeldRow) -> Result<HeldTotals, StateError> {
        let insert = "INSERT INTO shared_held \
             (held_key, released, sealed, weight, attempts, shown_inline, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
        let bind = |sql| {
            sqlx::query(sql)
                .bind(row.key.to_vec())
                .bind(row.released)
                .bind(row.sealed.clone())
                .bind(clamp(row.bytes))
                .bind(row.attempts as i32)
                .bind(i32::from(row.inline))
                .bind(millis(now()))
                .bind(clamp(row.expires_ms))
        };
        let read = held_error("holding a login");
        if self.backend == Backend::Postgres {
            // One round trip: the insert, and the totals as they were before it (a
            // statement's parts share one snapshot).
            let sql = format!(
                "WITH inserted AS ({insert} RETURNING 1) {}",
                totals_sql("$7")
            );
            let totals = bind(sqlx::AssertSqlSafe(sql))
                .fetch_one(&self.pool)
                .await
                .map_err(&read)?;
            return totals_of(&totals, "holding a login");
        }
        // SQLite has no data-modifying CTE (and serves one instance anyway): the insert, then
        // the totals without the new row.
        bind(sqlx::AssertSqlSafe(insert.to_string()))
            .execute(&self.pool)
            .await
            .map_err(&read)?;
        let after = self.held_totals().await?;
        Ok(HeldTotals {
            count: after.count.saturating_sub(1),
            bytes: after.bytes.saturating_sub(row.bytes),
        })
    }

    async fn held(&self, key: &[u8; 32], released: bool) -> Result<Option<HeldRow>, StateError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {HELD_COLUMNS} FROM shared_held \
             WHERE held_key = $1 AND released = $2 AND expires_ms > $3"
        )))
        .bind(key.to_vec())
        .bind(released)
        .bind(millis(now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(held_error("reading a held login"))?;
        row.map(|r| held_row(&r)).transpose()
    }

    async fn take_held(
        &self,
        key: &[u8; 32],
        released: bool,
    ) -> Result<Option<HeldRow>, StateError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM shared_held \
             WHERE held_key = $1 AND released = $2 AND expires_ms > $3 RETURNING {HELD_COLUMNS}"
        )))
        .bind(key.to_vec())
        .bind(released)
        .bind(millis(now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(held_error("taking a held login"))?;
        row.map(|r| held_row(&r)).transpose()
    }

    async fn count_held_attempt(&self, key: &[u8; 32]) -> Result<Option<u32>, StateError> {
        let attempts: Option<i32> = sqlx::query_scalar(
            "UPDATE shared_held SET attempts = attempts + 1 \
             WHERE held_key = $1 AND NOT released AND expires_ms > $2 \
             RETURNING CAST(attempts AS INTEGER)",
        )
        .bind(key.to_vec())
        .bind(millis(now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(held_error("counting a challenge attempt"))?;
        Ok(attempts.map(|a| a.max(0) as u32))
    }

    async fn set_held_inline(&self, key: &[u8; 32], inline: u8) -> Result<(), StateError> {
        sqlx::query(
            "UPDATE shared_held SET shown_inline = $2 \
             WHERE held_key = $1 AND NOT released AND expires_ms > $3",
        )
        .bind(key.to_vec())
        .bind(i32::from(inline))
        .bind(millis(now()))
        .execute(&self.pool)
        .await
        .map_err(held_error("marking a challenge as shown in the page"))?;
        Ok(())
    }

    async fn release_held(&self, key: &[u8; 32], released: &HeldRow) -> Result<bool, StateError> {
        // One statement: of two instances releasing the same challenge, one moves the row.
        let moved = sqlx::query(
            "UPDATE shared_held SET held_key = $2, released = TRUE, sealed = $3 \
             WHERE held_key = $1 AND NOT released AND expires_ms > $4",
        )
        .bind(key.to_vec())
        .bind(released.key.to_vec())
        .bind(released.sealed.clone())
        .bind(millis(now()))
        .execute(&self.pool)
        .await
        .map_err(held_error("releasing a passed challenge"))?
        .rows_affected();
        Ok(moved == 1)
    }

    async fn evict_held(&self, max_count: u64, max_bytes: u64) -> Result<Vec<HeldRow>, StateError> {
        // The newest are kept: a row goes when more rows, or more bytes, are newer than it.
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM shared_held WHERE held_key IN (SELECT held_key FROM ( \
               SELECT held_key, \
                 ROW_NUMBER() OVER (ORDER BY created_ms DESC, held_key) AS newer, \
                 SUM(weight) OVER (ORDER BY created_ms DESC, held_key) AS newer_bytes \
               FROM shared_held WHERE expires_ms > $1) ranked \
             WHERE newer > $2 OR newer_bytes > $3) RETURNING {HELD_COLUMNS}"
        )))
        .bind(millis(now()))
        .bind(clamp(max_count))
        .bind(clamp(max_bytes))
        .fetch_all(&self.pool)
        .await
        .map_err(held_error("evicting held logins over mfa.max_held"))?;
        rows.iter().map(held_row).collect()
    }

    async fn expired_held(&self, limit: u32) -> Result<Vec<HeldRow>, StateError> {
        // SKIP LOCKED: instances sweeping at once each get their own rows.
        let lock = if self.backend == Backend::Postgres {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM shared_held WHERE held_key IN (SELECT held_key FROM shared_held \
             WHERE expires_ms <= $1 LIMIT $2{lock}) RETURNING {HELD_COLUMNS}"
        )))
        .bind(millis(now()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(held_error("settling expired held logins"))?;
        rows.iter().map(held_row).collect()
    }

    async fn held_totals(&self) -> Result<HeldTotals, StateError> {
        let totals = sqlx::query(sqlx::AssertSqlSafe(totals_sql("$1")))
            .bind(millis(now()))
            .fetch_one(&self.pool)
            .await
            .map_err(held_error("counting held logins"))?;
        totals_of(&totals, "counting held logins")
    }
}

/// The live held logins and their bytes, with the time bound as `now_param`.
fn totals_sql(now_param: &str) -> String {
    format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS held, CAST(COALESCE(SUM(weight), 0) AS BIGINT) AS bytes \
         FROM shared_held WHERE expires_ms > {now_param}"
    )
}

fn totals_of(row: &sqlx::any::AnyRow, what: &'static str) -> Result<HeldTotals, StateError> {
    let count: i64 = row.try_get("held").map_err(held_error(what))?;
    let bytes: i64 = row.try_get("bytes").map_err(held_error(what))?;
    Ok(HeldTotals {
        count: count.max(0) as u64,
        bytes: bytes.max(0) as u64,
    })
}

/// `n` numbered parameters from `$first` on (`$2, $3, …` for slots bound after the time).
fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns a [`HeldRow`] is read from.
const HELD_COLUMNS: &str = "held_key, CAST(CASE WHEN released THEN 1 ELSE 0 END AS INTEGER) AS released, sealed, CAST(weight AS BIGINT) AS weight, \
    CAST(attempts AS INTEGER) AS attempts, CAST(shown_inline AS INTEGER) AS shown_inline, \
    CAST(expires_ms AS BIGINT) AS expires_ms";

fn held_row(row: &sqlx::any::AnyRow) -> Result<HeldRow, StateError> {
    let read = held_error("reading a held login");
    let key: Vec<u8> = row.try_get("held_key").map_err(read)?;
    let read = held_error("reading a held login");
    Ok(HeldRow {
        key: key
            .try_into()
            .map_err(|_| StateError("a held login's key is not 32 bytes".into()))?,
        released: row.try_get::<i32, _>("released").map_err(&read)? != 0,
        sealed: row.try_get("sealed").map_err(&read)?,
        bytes: row.try_get::<i64, _>("weight").map_err(&read)?.max(0) as u64,
        attempts: row.try_get::<i32, _>("attempts").map_err(&read)?.max(0) as u32,
        inline: row
            .try_get::<i32, _>("shown_inline")
            .map_err(&read)?
            .clamp(0, 255) as u8,
        expires_ms: row.try_get::<i64, _>("expires_ms").map_err(&read)?.max(0) as u64,
    })
}

fn held_error(what: &'static str) -> impl Fn(sqlx::Error) -> StateError {
    move |e| StateError(format!("{what}: {e}"))
}

/// A count or time as the database's BIGINT.
fn clamp(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
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
