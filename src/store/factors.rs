//! Second factors: each user's TOTP secret, sealed at rest, and their recovery codes, of which
//! only an HMAC is kept.

use super::*;

impl Store {
    /// Seals and stores the user's TOTP secret (creating the user if new), replacing any
    /// earlier one.
    pub async fn set_totp_secret(&self, login: &str, secret: &[u8]) -> Result<UserKey, StoreError> {
        let key = self.user_key(login)?;
        let mut tx = self.pool.begin().await.map_err(db("store TOTP secret"))?;
        self.insert_user(&mut *tx, &key, login, now()).await?;
        self.insert_totp(&mut *tx, &key, secret).await?;
        tx.commit().await.map_err(db("store TOTP secret"))?;
        Ok(key)
    }

    pub(super) async fn insert_totp<'e, E>(
        &self,
        executor: E,
        key: &UserKey,
        secret: &[u8],
    ) -> Result<(), StoreError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        if !TOTP_SECRET_BYTES.contains(&secret.len()) {
            return Err(StoreError::Invalid(format!(
                "a TOTP secret must be {} to {} bytes, found {}",
                TOTP_SECRET_BYTES.start(),
                TOTP_SECRET_BYTES.end(),
                secret.len()
            )));
        }
        let (nonce, sealed) = self.keys.seal(key, secret);
        sqlx::query(
            "INSERT INTO totp_secrets (user_key, nonce, sealed, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_key) DO UPDATE SET nonce = excluded.nonce, sealed = excluded.sealed, created_at = excluded.created_at",
        )
        .bind(key.0.to_vec())
        .bind(nonce)
        .bind(sealed)
        .bind(millis(now()))
        .execute(executor)
        .await
        .map_err(db("store TOTP secret"))?;
        Ok(())
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

    /// Replaces the user's recovery codes with `codes` (normalised, see
    /// `challenge::recovery`); only their HMACs are stored.
    pub async fn set_recovery_codes(
        &self,
        key: &UserKey,
        codes: &[String],
    ) -> Result<(), StoreError> {
        let what = "store recovery codes";
        let mut tx = self.pool.begin().await.map_err(db(what))?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_key = $1")
            .bind(key.0.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(db(what))?;
        self.insert_recovery_codes(&mut tx, key, codes).await?;
        tx.commit().await.map_err(db(what))
    }

    /// Adds the HMACs of `codes` to the user's recovery codes, in `tx`.
    pub(super) async fn insert_recovery_codes(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        key: &UserKey,
        codes: &[String],
    ) -> Result<(), StoreError> {
        for code in codes {
            sqlx::query(
                "INSERT INTO recovery_codes (user_key, code_hash, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_key, code_hash) DO NOTHING",
            )
            .bind(key.0.to_vec())
            .bind(self.keys.recovery_hash(key, code).to_vec())
            .bind(millis(now()))
            .execute(&mut **tx)
            .await
            .map_err(db("store recovery codes"))?;
        }
        Ok(())
    }

    /// Uses one of the user's recovery codes: deleted in the same statement that finds it, so
    /// of two concurrent uses (on any instances) one succeeds. How many are left after it, or
    /// `None` when `code` is not one of theirs (or was used).
    pub async fn use_recovery_code(
        &self,
        key: &UserKey,
        code: &str,
    ) -> Result<Option<u32>, StoreError> {
        let used = sqlx::query("DELETE FROM recovery_codes WHERE user_key = $1 AND code_hash = $2")
            .bind(key.0.to_vec())
            .bind(self.keys.recovery_hash(key, code).to_vec())
            .execute(&self.pool)
            .await
            .map_err(db("use a recovery code"))?
            .rows_affected();
        if used == 0 {
            return Ok(None);
        }
        Ok(Some(self.recovery_codes_left(key).await?))
    }

    /// How many unused recovery codes the user has.
    pub async fn recovery_codes_left(&self, key: &UserKey) -> Result<u32, StoreError> {
        count_recovery_codes(&self.pool, key).await
    }

    /// The user's second factors: when their TOTP secret was set (if they have one) and how
    /// many recovery codes are left.
    pub async fn factors(&self, key: &UserKey) -> Result<Factors, StoreError> {
        let totp_since: Option<i64> =
            sqlx::query_scalar("SELECT created_at FROM totp_secrets WHERE user_key = $1")
                .bind(key.0.to_vec())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("read factors"))?;
        Ok(Factors {
            totp_since: totp_since.map(time),
            recovery_codes: self.recovery_codes_left(key).await?,
        })
    }

    /// Removes one of the user's factors; whether there was one to remove.
    pub async fn remove_factor(&self, key: &UserKey, factor: Factor) -> Result<bool, StoreError> {
        let sql = match factor {
            Factor::Totp => "DELETE FROM totp_secrets WHERE user_key = $1",
            Factor::RecoveryCodes => "DELETE FROM recovery_codes WHERE user_key = $1",
        };
        let gone = sqlx::query(sql)
            .bind(key.0.to_vec())
            .execute(&self.pool)
            .await
            .map_err(db("remove a factor"))?
            .rows_affected();
        Ok(gone > 0)
    }
}

/// A user's second factors, as `users factors` lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Factors {
    /// When their TOTP secret was set; `None`: no TOTP.
    pub totp_since: Option<SystemTime>,
    pub recovery_codes: u32,
}

/// A kind of second factor the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Factor {
    /// The authenticator app's secret.
    Totp,
    /// Every unused recovery code.
    RecoveryCodes,
}

impl Factor {
    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Totp => "totp",
            Factor::RecoveryCodes => "recovery_codes",
        }
    }
}

/// How many unused recovery codes the user has, read through `executor` (a pool or the
/// transaction that is about to add some).
pub(super) async fn count_recovery_codes<'e, E>(
    executor: E,
    key: &UserKey,
) -> Result<u32, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let left: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM recovery_codes WHERE user_key = $1",
    )
    .bind(key.0.to_vec())
    .fetch_one(executor)
    .await
    .map_err(db("count recovery codes"))?;
    Ok(left.clamp(0, i64::from(u32::MAX)) as u32)
}
