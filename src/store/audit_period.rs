//! Reading the audit trail by time, for the operator's console: the events of a period page by
//! page (newest first), and how many users are enrolled. Plain reads of what `audit` and
//! `users` keep; what they add up to is the console's business.

use super::*;

impl Store {
    /// Audit events stored at `from` or later and before `to`, newest first: at most `limit`
    /// (capped at [`MAX_PAGE`]) whose id is below `before` (the last id of the previous page),
    /// so a caller walks a period one bounded page at a time.
    pub async fn audit_between(
        &self,
        from: SystemTime,
        to: SystemTime,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, incident, detail FROM audit_events \
             WHERE at >= $1 AND at < $2 AND id < $3 ORDER BY id DESC LIMIT $4",
        )
        .bind(millis(from))
        .bind(millis(to))
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit.min(MAX_PAGE) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db("read audit events of a period"))?;
        rows.iter().map(audit::audit_event_from_row).collect()
    }

    /// Users with at least `store.enrollment_logins` verified logins (the rest are enrolling).
    pub async fn count_enrolled(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE verified_logins >= $1")
            .bind(i64::from(self.enrollment_logins))
            .fetch_one(&self.pool)
            .await
            .map_err(db("count enrolled users"))?;
        Ok(int_column(&row, "n")?.max(0) as u64)
    }
}
