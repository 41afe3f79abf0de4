//! Fitted models: each user's, saved singly or in batches, and the global model's versions.

use super::*;

impl Store {
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
    pub(super) async fn upsert_model<'e, E>(
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
    pub(crate) async fn save_global_model(
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
}
