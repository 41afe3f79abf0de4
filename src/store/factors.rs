//! Second factors: each user's TOTP secret, sealed at rest, their recovery codes, of which
//! only an HMAC is kept, their passkeys (public keys, as the passkey stage serialises them),
//! and when each was last offered to add one.

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

    /// The user's passkeys, oldest first.
    pub async fn passkeys(&self, key: &UserKey) -> Result<Vec<StoredPasskey>, StoreError> {
        let what = "read passkeys";
        let rows = sqlx::query(
            "SELECT credential_id, rp_id, credential, created_at, last_used_at FROM passkeys \
             WHERE user_key = $1 ORDER BY created_at, credential_id",
        )
        .bind(key.0.to_vec())
        .fetch_all(&self.pool)
        .await
        .map_err(db(what))?;
        rows.iter()
            .map(|r| {
                Ok(StoredPasskey {
                    credential_id: r.try_get("credential_id").map_err(db(what))?,
                    rp_id: r.try_get("rp_id").map_err(db(what))?,
                    credential: r.try_get("credential").map_err(db(what))?,
                    created: time(r.try_get("created_at").map_err(db(what))?),
                    last_used: r
                        .try_get::<Option<i64>, _>("last_used_at")
                        .map_err(db(what))?
                        .map(time),
                })
            })
            .collect()
    }

    /// Adds a passkey for the user (creating the user if new). `Ok(false)`: they have
    /// [`MAX_PASSKEYS`] already, or this credential is registered (to anyone) already.
    pub async fn add_passkey(&self, login: &str, passkey: &NewPasskey) -> Result<bool, StoreError> {
        let key = self.user_key(login)?;
        let what = "store a passkey";
        let mut tx = self.pool.begin().await.map_err(db(what))?;
        self.insert_user(&mut *tx, &key, login, now()).await?;
        let added = insert_passkey(&mut tx, &key, passkey).await?;
        tx.commit().await.map_err(db(what))?;
        Ok(added)
    }

    /// Records a passkey's use: when, and its credential anew when its counter moved.
    pub async fn passkey_used(
        &self,
        key: &UserKey,
        credential_id: &[u8],
        updated: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE passkeys SET last_used_at = $3, credential = COALESCE($4, credential) \
             WHERE user_key = $1 AND credential_id = $2",
        )
        .bind(key.0.to_vec())
        .bind(credential_id.to_vec())
        .bind(millis(now()))
        .bind(updated.map(str::to_string))
        .execute(&self.pool)
        .await
        .map_err(db("record a passkey's use"))?;
        Ok(())
    }

    /// When the user was last offered to add a factor after a trusted login.
    pub async fn factor_offered_at(&self, key: &UserKey) -> Result<Option<SystemTime>, StoreError> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT offered_at FROM factor_offers WHERE user_key = $1")
                .bind(key.0.to_vec())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("read a factor offer"))?;
        Ok(at.map(time))
    }

    /// Notes that the user is being offered to add a factor now.
    pub async fn factor_offered(&self, key: &UserKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO factor_offers (user_key, offered_at) VALUES ($1, $2) \
             ON CONFLICT (user_key) DO UPDATE SET offered_at = excluded.offered_at",
        )
        .bind(key.0.to_vec())
        .bind(millis(now()))
        .execute(&self.pool)
        .await
        .map_err(db("note a factor offer"))?;
        Ok(())
    }

    /// The user's second factors: when their TOTP secret was set (if they have one), how
    /// many recovery codes are left, and their passkeys.
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
            passkeys: self.passkeys(key).await?,
        })
    }

    /// Removes one of the user's factors; whether there was one to remove.
    pub async fn remove_factor(&self, key: &UserKey, factor: Factor) -> Result<bool, StoreError> {
        let sql = match factor {
            Factor::Totp => "DELETE FROM totp_secrets WHERE user_key = $1",
            Factor::RecoveryCodes => "DELETE FROM recovery_codes WHERE user_key = $1",
            Factor::Passkeys => "DELETE FROM passkeys WHERE user_key = $1",
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
    pub passkeys: Vec<StoredPasskey>,
}

impl Factors {
    /// Whether they have anything but recovery codes (which only stand in for another).
    pub fn any(&self) -> bool {
        self.totp_since.is_some() || !self.passkeys.is_empty()
    }
}

/// Most passkeys one user may have.
pub const MAX_PASSKEYS: usize = 10;

/// A registered passkey as kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPasskey {
    pub credential_id: Vec<u8>,
    /// The relying party id (host name) it was registered for.
    pub rp_id: String,
    /// The credential as the passkey stage serialised it (public key, counter).
    pub credential: String,
    pub created: SystemTime,
    pub last_used: Option<SystemTime>,
}

/// A passkey to add.
#[derive(Clone, Debug)]
pub struct NewPasskey {
    pub credential_id: Vec<u8>,
    pub rp_id: String,
    pub credential: String,
}

/// Adds `passkey` to the user's in `tx`, unless they have [`MAX_PASSKEYS`] or the credential
/// is registered already (whether it was added).
pub(super) async fn insert_passkey(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    key: &UserKey,
    passkey: &NewPasskey,
) -> Result<bool, StoreError> {
    let what = "store a passkey";
    let (have, taken): (i64, i64) = {
        let row = sqlx::query(
            "SELECT (SELECT CAST(COUNT(*) AS BIGINT) FROM passkeys WHERE user_key = $1) AS have, \
                    (SELECT CAST(COUNT(*) AS BIGINT) FROM passkeys WHERE credential_id = $2) AS taken",
        )
        .bind(key.0.to_vec())
        .bind(passkey.credential_id.clone())
        .fetch_one(&mut **tx)
        .await
        .map_err(db(what))?;
        (
            row.try_get("have").map_err(db(what))?,
            row.try_get("taken").map_err(db(what))?,
        )
    };
    if have >= MAX_PASSKEYS as i64 || taken > 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO passkeys (user_key, credential_id, rp_id, credential, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key.0.to_vec())
    .bind(passkey.credential_id.clone())
    .bind(passkey.rp_id.clone())
    .bind(passkey.credential.clone())
    .bind(millis(now()))
    .execute(&mut **tx)
    .await
    .map_err(db(what))?;
    Ok(true)
}

/// A kind of second factor the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Factor {
    /// The authenticator app's secret.
    Totp,
    /// Every unused recovery code.
    RecoveryCodes,
    /// Every registered passkey.
    Passkeys,
}

impl Factor {
    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Totp => "totp",
            Factor::RecoveryCodes => "recovery_codes",
            Factor::Passkeys => "passkeys",
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
