//! The audit trail: append-only events, read back by incident or as a tail.

use super::audit_logins::{insert_login_rows, login_columns};
use super::*;

impl Store {
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
    pub(crate) async fn append_audit_record(
        &self,
        record: &NewAuditRecord<'_>,
    ) -> Result<bool, StoreError> {
        let detail = check_audit_record(record)?;
        let mut tx = self.pool.begin().await.map_err(db("append audit record"))?;
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
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("append audit record"))?;
        if id.is_some() {
            if let Some(columns) = login_columns(record) {
                insert_login_rows(&mut *tx, self.backend, &[(record, columns)]).await?;
            }
        }
        tx.commit().await.map_err(db("append audit record"))?;
        Ok(id.is_some())
    }

    /// Appends many audit records in one transaction (one commit, however many records: what
    /// lets the audit trail keep up with a busy login path). Records the store refuses for
    /// themselves are left out and reported by index; `Err` means none was stored.
    pub(crate) async fn append_audit_records(
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
            let logins: Vec<_> = chunk
                .iter()
                .filter_map(|(record, _)| Some((*record, login_columns(record)?)))
                .collect();
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
            insert_login_rows(&mut *tx, self.backend, &logins).await?;
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
}

/// Checks one audit record against the store's bounds; its detail as stored text.
pub(super) fn check_audit_record(record: &NewAuditRecord<'_>) -> Result<String, StoreError> {
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

pub(super) fn check_audit_kind(kind: &str) -> Result<(), StoreError> {
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

pub(super) fn audit_event_from_row(r: &AnyRow) -> Result<AuditEvent, StoreError> {
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

pub(super) async fn append_audit<'e, E>(
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
