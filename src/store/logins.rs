//! Login sessions: recording settled logins in batches, outcomes, recent history and the verified features learning reads.

use super::*;

impl Store {
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

    pub(super) async fn insert_logins(
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
    pub(super) fn check_login(
        &self,
        login: &str,
        new: &NewLogin,
    ) -> Result<(UserKey, String), StoreError> {
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
}

pub(super) fn session_from_row(row: &AnyRow) -> Result<LoginSession, StoreError> {
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

/// How far below [`MAX_SESSIONS_PER_USER`] a trim takes a user's history.
pub(super) const TRIM_MARGIN: i64 = 50;

/// One user's part of a batch of logins.
pub(super) struct BatchUser {
    key: UserKey,
    clear_name: Option<String>,
    created_at: i64,
    last_login_at: i64,
    verified: i64,
    sessions: i64,
}

/// Drops the user's oldest logins beyond [`MAX_SESSIONS_PER_USER`] − [`TRIM_MARGIN`] and
/// sets their session count to what is left.
pub(super) async fn trim_history(
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
