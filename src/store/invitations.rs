//! Operator invitations to enrol a second factor: a random id (only its SHA-256 stored) for
//! one user of one app, used once, until it expires.

use sha2::{Digest, Sha256};

use super::*;

/// A live invitation: whose, for which app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub user: UserKey,
    pub app: String,
}

fn id_hash(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

impl Store {
    /// Invites `login` (created if new) of `app` to enrol a factor until `expires`; returns
    /// the user's key and the invitation's id (shown once: only its hash is kept).
    pub async fn create_invitation(
        &self,
        login: &str,
        app: &str,
        expires: SystemTime,
    ) -> Result<(UserKey, String), StoreError> {
        use base64::Engine;
        let key = self.user_key(login)?;
        let id =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
        let what = "create an invitation";
        let mut tx = self.pool.begin().await.map_err(db(what))?;
        self.insert_user(&mut *tx, &key, login, now()).await?;
        sqlx::query(
            "INSERT INTO invitations (id_hash, user_key, app, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_hash(&id))
        .bind(key.0.to_vec())
        .bind(app)
        .bind(millis(now()))
        .bind(millis(expires))
        .execute(&mut *tx)
        .await
        .map_err(db(what))?;
        tx.commit().await.map_err(db(what))?;
        Ok((key, id))
    }

    /// The live invitation `id`, left in place.
    pub async fn invitation(&self, id: &str) -> Result<Option<Invitation>, StoreError> {
        let row = sqlx::query(
            "SELECT user_key, app FROM invitations WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash(id))
        .bind(millis(now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(db("read an invitation"))?;
        row.map(|r| invitation_of(&r)).transpose()
    }
}

impl Store {
    /// Adds `factor` to the user with login name `login` (created if new) at a trusted moment
    /// (`via`, e.g. `offer`), and `codes` as their recovery codes when they have none (`true`
    /// then). `None`: not added — a TOTP secret when they have one (never replaced from the
    /// web), or a passkey registered already or beyond the most.
    pub async fn add_factor(
        &self,
        login: &str,
        app: &str,
        factor: &NewFactor,
        codes: &[String],
        via: &str,
    ) -> Result<Option<(UserKey, bool)>, StoreError> {
        let key = self.user_key(login)?;
        let what = "add a second factor";
        let mut tx = self.pool.begin().await.map_err(db(what))?;
        self.insert_user(&mut *tx, &key, login, now()).await?;
        let Some(issue) = self
            .insert_factor(&mut tx, &key, factor, codes, via, app)
            .await?
        else {
            return Ok(None);
        };
        tx.commit().await.map_err(db(what))?;
        Ok(Some((key, issue)))
    }

    /// Adds `factor` (and `codes` when the user has no recovery codes) in `tx`, audited; the
    /// recovery codes were issued (`Some(true)`), or nothing may be added (`None`).
    async fn insert_factor(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        key: &UserKey,
        factor: &NewFactor,
        codes: &[String],
        via: &str,
        app: &str,
    ) -> Result<Option<bool>, StoreError> {
        let kind = match factor {
            NewFactor::Totp(secret) => {
                let has: Option<i64> =
                    sqlx::query_scalar("SELECT created_at FROM totp_secrets WHERE user_key = $1")
                        .bind(key.0.to_vec())
                        .fetch_optional(&mut **tx)
                        .await
                        .map_err(db("add a second factor"))?;
                if has.is_some() {
                    return Ok(None);
                }
                self.insert_totp(&mut **tx, key, secret).await?;
                "totp.enrolled"
            }
            NewFactor::Passkey(passkey) => {
                if !super::factors::insert_passkey(tx, key, passkey).await? {
                    return Ok(None);
                }
                "passkey.enrolled"
            }
        };
        let issue = super::factors::count_recovery_codes(&mut **tx, key).await? == 0;
        if issue {
            self.insert_recovery_codes(tx, key, codes).await?;
        }
        super::audit::append_audit(
            &mut **tx,
            Some(key),
            kind,
            &serde_json::json!({ "via": via, "app": app, "recovery_codes_issued": issue }),
            now(),
        )
        .await?;
        Ok(Some(issue))
    }

    /// Enrols the invited user in one transaction: the invitation `id` is used (once, on
    /// any instance), `factor` becomes theirs, and `codes` their recovery codes when they
    /// have none (`true` then). `None`: the invitation is used or expired, or the passkey
    /// cannot be added (registered already, or they have the most).
    pub async fn enrol_invited(
        &self,
        id: &str,
        factor: &NewFactor,
        codes: &[String],
    ) -> Result<Option<(Invitation, bool)>, StoreError> {
        let what = "enrol an invited user";
        let mut tx = self.pool.begin().await.map_err(db(what))?;
        let row = sqlx::query(
            "DELETE FROM invitations WHERE id_hash = $1 AND expires_at > $2 RETURNING user_key, app",
        )
        .bind(id_hash(id))
        .bind(millis(now()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db(what))?;
        let Some(invitation) = row.map(|r| invitation_of(&r)).transpose()? else {
            return Ok(None);
        };
        let app = invitation.app.clone();
        let Some(issue) = self
            .insert_factor(&mut tx, &invitation.user, factor, codes, "invitation", &app)
            .await?
        else {
            return Ok(None);
        };
        tx.commit().await.map_err(db(what))?;
        Ok(Some((invitation, issue)))
    }
}

/// A factor being added.
#[derive(Clone, Debug)]
pub enum NewFactor {
    /// A TOTP secret (the authenticator app's).
    Totp(Vec<u8>),
    Passkey(super::NewPasskey),
}

fn invitation_of(row: &sqlx::any::AnyRow) -> Result<Invitation, StoreError> {
    let key: Vec<u8> = row.try_get("user_key").map_err(db("read an invitation"))?;
    Ok(Invitation {
        user: UserKey::from_slice(&key).ok_or_else(|| {
            StoreError::Invalid("an invitation's user key is not 32 bytes".into())
        })?,
        app: row.try_get("app").map_err(db("read an invitation"))?,
    })
}
