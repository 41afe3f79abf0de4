//! Second factors: each user's TOTP secret, sealed at rest.

use super::*;

impl Store {
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
}
