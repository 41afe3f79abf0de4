//! The `gaitkeeper users` commands: an operator's view of the profile store — list, show,
//! reset, forget, enroll TOTP, prune. They open the same store the proxy uses and can run while it
//! does (SQLite in WAL mode waits up to `store.busy_timeout` for a lock).
//!
//! Owns: reading a user argument (a login name, or `key:HEX` for users stored without a name)
//! and printing for people. Never prints a TOTP secret except in the enrollment URI and QR code
//! meant for that user's authenticator, and never logs it.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sha2::Digest;

use crate::config::{AppConfig, Config};
use crate::runtime::utc;
use crate::store::{Enrollment, Store, StoreError, UserKey};

/// What `gaitkeeper users` can do.
#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// List users in key order: key, name (if kept), enrollment, verified logins, last login.
    List {
        /// At most this many users (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// Start after this user key (the last key of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one user: enrollment, login count, latest risks with reasons, model version.
    Show {
        /// The login name, or `key:HEX` as printed by `users list`.
        user: String,
        /// How many of the latest logins to show (at most 100).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(0..=100))]
        logins: u16,
    },
    /// Start the user's enrollment over: delete their logins and model (TOTP and audit stay).
    Reset {
        /// The login name, or `key:HEX`.
        user: String,
    },
    /// Erase every trace of the user; their audit events remain only as anonymous counts.
    Forget {
        /// The login name, or `key:HEX`.
        user: String,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Give the user a new TOTP secret; prints an otpauth:// URI and a QR code to scan, and,
    /// when it is their first factor (no recovery codes yet), ten recovery codes.
    EnrollTotp {
        /// The login name (the authenticator app shows it).
        user: String,
    },
    /// Give the user ten new recovery codes (their unused ones stop working); printed once.
    RecoveryCodes {
        /// The login name, or `key:HEX`.
        user: String,
    },
    /// A single-use link for the user to add an authenticator themselves (their first
    /// factor), valid for `--ttl`.
    Invite {
        /// The login name (the user need not have logged in yet).
        user: String,
        /// How long the link works: a number and s, m, h or d (e.g. 30m, 72h, 7d; at most 30d).
        #[arg(long, default_value = "72h", value_parser = invitation_ttl)]
        ttl: Duration,
        /// For a user who has a factor already: add another (a second passkey, say for a new
        /// phone; an authenticator app when they have none).
        #[arg(long)]
        another: bool,
    },
    /// List the user's second factors.
    Factors {
        /// The login name, or `key:HEX`.
        user: String,
    },
    /// Remove one of the user's second factors (audited).
    RemoveFactor {
        /// The login name, or `key:HEX`.
        user: String,
        /// Which: `totp` or `recovery-codes`.
        factor: crate::store::Factor,
    },
    /// Delete raw login features older than `store.retention` now (models are kept).
    Prune,
}

/// Runs one `users` command against the store `config` names, for the users of `app` (the
/// only app when the config has one), writing to `out`.
pub fn run(
    config: &Config,
    app: Option<&str>,
    command: UsersCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let app = which_app(config, app)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store =
            Store::open(&config.store, &config.server.data_dir, &config.secrets.key).await?;
        let prefix = &config.server.reserved_prefix.0;
        let result = execute(&store, app, prefix, command, out).await;
        store.close().await;
        result
    })
}

/// The app `--app` names, or the only one.
fn which_app<'a>(config: &'a Config, named: Option<&str>) -> anyhow::Result<&'a AppConfig> {
    let names = || {
        config
            .apps
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match named {
        Some(name) => config.app_named(name).ok_or_else(|| {
            anyhow::anyhow!("no app named {name:?} in the config; its apps are: {}", names())
        }),
        None if config.apps.len() == 1 => Ok(&config.apps[0]),
        None => anyhow::bail!(
            "the config lists {} apps ({}); say whose users with --app NAME (alice of one app is not alice of another)",
            config.apps.len(),
            names()
        ),
    }
}

/// A stored clear name as people read it: the login name, and its app when it is not the
/// `default` app's (stored as `\0APP\0NAME`, see `AppConfig::user_scope`).
pub(super) fn readable_name(stored: &str) -> String {
    match stored
        .strip_prefix('\0')
        .and_then(|rest| rest.split_once('\0'))
    {
        Some((app, name)) => format!("{name} (app {app})"),
        None => stored.to_string(),
    }
}

async fn execute(
    store: &Store,
    app: &AppConfig,
    prefix: &str,
    command: UsersCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        UsersCommand::List { limit, after } => {
            let after = match after {
                Some(text) => Some(parse_key(text.trim_start_matches("key:"))?),
                None => None,
            };
            let users = store.list_users(after.as_ref(), limit.into()).await?;
            let total = store.count_users().await?;
            writeln!(
                out,
                "{:<68} {:<24} {:<16} {:>8}  LAST LOGIN",
                "KEY", "NAME", "STATE", "VERIFIED"
            )?;
            for user in &users {
                writeln!(
                    out,
                    "key:{:<64} {:<24} {:<16} {:>8}  {}",
                    user.key,
                    user.clear_name
                        .as_deref()
                        .map(readable_name)
                        .unwrap_or_else(|| "-".into()),
                    state(user.enrollment),
                    user.verified_logins,
                    user.last_login_at
                        .map(utc)
                        .unwrap_or_else(|| "never".into())
                )?;
            }
            write!(out, "{} of {total} users", users.len())?;
            match users.last() {
                Some(last) if users.len() == usize::from(limit) => {
                    writeln!(out, "; next page: --after key:{}", last.key)?
                }
                _ => writeln!(out)?,
            }
        }
        UsersCommand::Show { user, logins } => {
            let key = user_key(store, app, &user)?;
            let profile = store
                .profile(&key, logins.into())
                .await?
                .ok_or_else(|| StoreError::UnknownUser { user: user.clone() })?;
            let u = &profile.user;
            writeln!(
                out,
                "user:      {}",
                u.clear_name
                    .as_deref()
                    .map(readable_name)
                    .unwrap_or_else(|| user.clone())
            )?;
            writeln!(out, "key:       key:{}", u.key)?;
            writeln!(out, "state:     {}", state_long(u.enrollment))?;
            writeln!(out, "verified:  {} logins", u.verified_logins)?;
            writeln!(out, "created:   {}", utc(u.created_at))?;
            writeln!(
                out,
                "last:      {}",
                u.last_login_at.map(utc).unwrap_or_else(|| "never".into())
            )?;
            match &profile.model {
                Some(m) => writeln!(
                    out,
                    "model:     version {} for features v{}, {} bytes, updated {}",
                    m.model_version,
                    m.feature_version,
                    m.bytes,
                    utc(m.updated_at)
                )?,
                None => writeln!(out, "model:     none yet")?,
            }
            writeln!(
                out,
                "totp:      {}",
                if profile.has_totp {
                    "enrolled"
                } else {
                    "not enrolled"
                }
            )?;
            writeln!(out, "passkeys:  {}", profile.passkeys)?;
            writeln!(out, "recovery:  {} codes left", profile.recovery_codes)?;
            if profile.recent.is_empty() {
                writeln!(out, "logins:    none stored")?;
            } else {
                writeln!(out, "latest logins (newest first):")?;
                for s in &profile.recent {
                    writeln!(
                        out,
                        "  {}  risk {:.3}  {:<9}  {:<8}  {}",
                        utc(s.at),
                        s.risk,
                        s.decision.as_str(),
                        s.outcome.as_str(),
                        s.reasons
                    )?;
                }
            }
        }
        UsersCommand::Reset { user } => {
            let key = user_key(store, app, &user)?;
            store.reset(&key).await.map_err(|e| named(e, &user))?;
            writeln!(
                out,
                "{user}: enrollment starts over (logins and model deleted; TOTP secret and audit trail kept)"
            )?;
        }
        UsersCommand::Forget { user, yes } => {
            if !yes {
                anyhow::bail!("`users forget` erases every trace of {user} and cannot be undone; run it again with --yes");
            }
            let key = user_key(store, app, &user)?;
            let gone = store.forget(&key).await.map_err(|e| named(e, &user))?;
            writeln!(
                out,
                "{user}: forgotten ({} logins, {} model, {} TOTP secret deleted; {} audit events kept only as anonymous counts)",
                gone.sessions, gone.models, gone.totp_secrets, gone.audit_events
            )?;
        }
        UsersCommand::Prune => {
            let deleted = store.prune(SystemTime::now()).await?;
            writeln!(
                out,
                "{deleted} logins older than store.retention deleted; models kept"
            )?;
        }
        UsersCommand::EnrollTotp { user } => {
            if user.starts_with("key:") {
                anyhow::bail!("enroll-totp needs the login name: the authenticator app shows it");
            }
            let secret = totp_rs::Secret::generate();
            let totp = totp_rs::Builder::new()
                .with_secret(secret.clone())
                .with_account_name(user.as_str())
                .with_issuer(Some(app.app_name.as_str()))
                .build()
                .and_then(|t| t.to_url().map(|url| (t, url)))
                .map_err(|e| anyhow::anyhow!("cannot make a TOTP URI for {user:?}: {e} (login names with ':' cannot be TOTP account names)"))?;
            let key = store
                .set_totp_secret(&app.user_scope(&user), secret.as_bytes())
                .await?;
            store
                .append_audit(Some(&key), "totp.enrolled", &serde_json::json!({}))
                .await?;
            let (_, url) = totp;
            let code = qrcode::QrCode::new(url.as_bytes())
                .context("the otpauth URI is too long for a QR code")?;
            let picture = code
                .render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .quiet_zone(true)
                .build();
            writeln!(out, "TOTP secret for {user} stored (sealed). Scan this with the user's authenticator app, or enter the URI:\n")?;
            writeln!(out, "{url}\n")?;
            writeln!(out, "{picture}")?;
            if store.recovery_codes_left(&key).await? == 0 {
                issue_recovery_codes(store, &key, &user, out).await?;
            }
            writeln!(
                out,
                "Anyone who sees this screen can generate the user's codes: clear it when done."
            )?;
        }
        UsersCommand::Invite { user, ttl, another } => {
            if user.starts_with("key:") {
                anyhow::bail!("invite needs the login name: the user is created if new");
            }
            let scoped = app.user_scope(&user);
            let key = store.user_key(&scoped)?;
            let factors = store.factors(&key).await?;
            if factors.any() && !another {
                let which = if factors.totp_since.is_some() {
                    "totp"
                } else {
                    "passkeys"
                };
                anyhow::bail!("{user} already has a second factor (see `gaitkeeper users factors {user}`); invitations are for a first one. To add another, invite with --another; to replace it, remove it first with `gaitkeeper users remove-factor {user} {which}`");
            }
            let expires = SystemTime::now() + ttl;
            let (key, id) = store.create_invitation(&scoped, &app.name, expires).await?;
            store
                .append_audit(
                    Some(&key),
                    "invitation.created",
                    &serde_json::json!({ "app": app.name, "expires": utc(expires) }),
                )
                .await?;
            let path = format!("{prefix}enrol/{id}");
            writeln!(
                out,
                "Invitation for {user} to add an authenticator, once, until {}:",
                utc(expires)
            )?;
            match app.hosts.first() {
                Some(host) => writeln!(out, "\n  https://{host}{path}\n")?,
                None => writeln!(
                    out,
                    "\n  {path}\n  (on the host the users reach {} at)\n",
                    app.app_name
                )?,
            }
            writeln!(
                out,
                "Send it to the user only: whoever opens it first adds their authenticator to this account."
            )?;
        }
        UsersCommand::Factors { user } => {
            let key = known_user(store, app, &user).await?;
            let factors = store.factors(&key).await?;
            match factors.totp_since {
                Some(since) => writeln!(out, "totp:            since {}", utc(since))?,
                None => writeln!(out, "totp:            none")?,
            }
            writeln!(out, "recovery codes:  {} left", factors.recovery_codes)?;
            if factors.passkeys.is_empty() {
                writeln!(out, "passkeys:        none")?;
            }
            for passkey in &factors.passkeys {
                let id = sha2::Sha256::digest(&passkey.credential_id);
                writeln!(
                    out,
                    "passkey:         {} for {}, added {}, last used {}",
                    &hex::encode(id)[..12],
                    passkey.rp_id,
                    utc(passkey.created),
                    passkey
                        .last_used
                        .map(utc)
                        .unwrap_or_else(|| "never".to_string())
                )?;
            }
        }
        UsersCommand::RemoveFactor { user, factor } => {
            let key = known_user(store, app, &user).await?;
            if !store.remove_factor(&key, factor).await? {
                anyhow::bail!("{user} has no {} to remove", factor.as_str());
            }
            store
                .append_audit(
                    Some(&key),
                    "factor.removed",
                    &serde_json::json!({ "factor": factor.as_str() }),
                )
                .await?;
            writeln!(out, "{user}: {} removed", factor.as_str())?;
        }
        UsersCommand::RecoveryCodes { user } => {
            let key = known_user(store, app, &user).await?;
            issue_recovery_codes(store, &key, &user, out).await?;
            writeln!(
                out,
                "Anyone who sees this screen can use these codes: clear it when done."
            )?;
        }
    }
    Ok(())
}

/// `--ttl` of `users invite`: a number and s, m, h or d, from 1s to 30 days.
fn invitation_ttl(text: &str) -> Result<Duration, String> {
    let expected =
        || format!("expected a number and s, m, h or d (such as 72h or 7d), found {text:?}");
    let (number, unit) = crate::config::number_and_unit(text).ok_or_else(expected)?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(expected()),
    };
    let ttl = Duration::from_secs(number.saturating_mul(unit));
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(30 * 86_400) {
        return Err(format!(
            "an invitation works from 1s to 30d, found {text:?}"
        ));
    }
    Ok(ttl)
}

/// Issues `user` ten new recovery codes (replacing any), audits it and prints them once.
async fn issue_recovery_codes(
    store: &Store,
    key: &UserKey,
    user: &str,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let codes = crate::challenge::recovery::generate();
    let stored = crate::challenge::recovery::stored_form(&codes);
    store.set_recovery_codes(key, &stored).await?;
    store
        .append_audit(
            Some(key),
            "recovery_codes.issued",
            &serde_json::json!({ "count": stored.len() }),
        )
        .await?;
    writeln!(
        out,
        "Recovery codes for {user} (each works once, instead of a code from the authenticator; give them to the user, they are not shown again):\n"
    )?;
    for code in &codes {
        writeln!(out, "  {code}")?;
    }
    writeln!(out)?;
    Ok(())
}

/// The key of a user the store knows (else an "unknown user" error naming them).
async fn known_user(store: &Store, app: &AppConfig, user: &str) -> anyhow::Result<UserKey> {
    let key = user_key(store, app, user)?;
    store
        .user(&key)
        .await?
        .ok_or_else(|| StoreError::UnknownUser {
            user: user.to_string(),
        })?;
    Ok(key)
}

fn user_key(store: &Store, app: &AppConfig, user: &str) -> anyhow::Result<UserKey> {
    match user.strip_prefix("key:") {
        Some(hex) => parse_key(hex),
        None => Ok(store.user_key(&app.user_scope(user))?),
    }
}

fn parse_key(hex: &str) -> anyhow::Result<UserKey> {
    UserKey::from_hex(hex).ok_or_else(|| {
        anyhow::anyhow!("{hex:?} is not a user key: expected 64 hex digits as printed by `gaitkeeper users list`")
    })
}

/// Names the user as the operator typed them in an "unknown user" error.
fn named(error: StoreError, user: &str) -> StoreError {
    match error {
        StoreError::UnknownUser { .. } => StoreError::UnknownUser {
            user: user.to_string(),
        },
        other => other,
    }
}

fn state(enrollment: Enrollment) -> String {
    match enrollment {
        Enrollment::Enrolling { verified, needed } => format!("enrolling {verified}/{needed}"),
        Enrollment::Enrolled { .. } => "enrolled".into(),
    }
}

pub(super) fn state_long(enrollment: Enrollment) -> String {
    match enrollment {
        Enrollment::Enrolling { verified, needed } => {
            format!("enrolling ({verified} of {needed} verified logins)")
        }
        Enrollment::Enrolled { .. } => "enrolled".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitation_lifetimes_are_bounded_and_read_with_their_unit() {
        assert_eq!(invitation_ttl("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(invitation_ttl("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(invitation_ttl("1s"), Ok(Duration::from_secs(1)));
        for bad in [
            "0s",
            "31d",
            "72",
            "h",
            "1.5h",
            "-1h",
            "99999999999999999999d",
            "",
        ] {
            assert!(invitation_ttl(bad).is_err(), "{bad}");
        }
    }
}
