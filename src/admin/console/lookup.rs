//! Looking one thing up: a user (by the login name the operator types, keyed as
//! `gaitkeeper users show` keys it, or by the store key the overview links) and an incident
//! (the `GK-…` reference of a block page or an audit record).

use std::fmt::Write;

use http::{Response, StatusCode};

use super::overview::encode;
use super::{ago, escape_html, in_store, page, when, Query, Site};
use crate::config::AppConfig;
use crate::store::reason_labels;
use crate::store::{AuditEvent, Factors, Profile, UserKey};

/// Latest logins and audit events shown on a user's page.
const SHOWN: usize = 20;

fn error_page(status: StatusCode, title: &str, message: &str, anchor: &str) -> Response<Vec<u8>> {
    page(
        status,
        title,
        &format!("<p class=\"error\">{}</p>", escape_html(message)),
        anchor,
    )
}

/// `/console/user?name=NAME[&app=APP]` or `?key=HEX`.
pub(super) async fn user_page(site: &Site<'_>, query: &Query, operator: bool) -> Response<Vec<u8>> {
    let config = site.config;
    let app: &AppConfig = match query.get("app") {
        Some(name) => match config.app_named(name) {
            Some(app) => app,
            None => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "User",
                    &format!("no app named {name:?} in the config"),
                    "user",
                )
            }
        },
        None if config.apps.len() == 1 || query.get("key").is_some() => &config.apps[0],
        None => {
            let names: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
            return error_page(
                StatusCode::BAD_REQUEST,
                "User",
                &format!("the config has {} apps ({}): add &app=NAME, alice of one app is not alice of another", names.len(), names.join(", ")),
                "user",
            );
        }
    };
    // The name the operator typed may be shown back to them; otherwise only what the store
    // keeps (a clear name with keep_clear_names) or the key.
    let (key, typed) = match (query.get("name"), query.get("key")) {
        (Some(name), _) => match site.services.store.user_key(&app.user_scope(name)) {
            Ok(key) => (key, Some(name.to_string())),
            Err(e) => return error_page(StatusCode::BAD_REQUEST, "User", &e.to_string(), "user"),
        },
        (None, Some(hex)) => match UserKey::from_hex(hex.trim_start_matches("key:")) {
            Some(key) => (key, None),
            None => {
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "User",
                    "a user key is 64 hex digits, as the overview links it",
                    "user",
                )
            }
        },
        (None, None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "User",
                "type a login name to look up",
                "user",
            )
        }
    };
    let loaded = in_store(site, move |store| async move {
        let Some(profile) = store.profile(&key, SHOWN).await? else {
            return Ok(None);
        };
        let factors = store.factors(&key).await?;
        let events = store.audit_events(&key, SHOWN).await?;
        Ok(Some((profile, factors, events)))
    })
    .await;
    let (profile, factors, events) = match loaded {
        Ok(Some(found)) => found,
        Ok(None) => {
            let who = typed
                .map(|n| format!("{n:?}"))
                .unwrap_or_else(|| format!("key:{key}"));
            return error_page(
                StatusCode::NOT_FOUND,
                "User",
                &format!("no user {who} in the store for app {:?}: check the spelling (names are compared exactly as `gaitkeeper users show` does) and the app", app.name),
                "user",
            );
        }
        Err(e) => return super::store_unavailable("the user", &e),
    };
    let shown = typed
        .or_else(|| {
            profile
                .user
                .clear_name
                .as_deref()
                .map(super::super::users::readable_name)
        })
        .unwrap_or_else(|| format!("key:{}…", &key.to_string()[..16]));
    let body = user_body(
        &profile,
        &factors,
        &events,
        operator,
        config.store.enrollment_logins,
    );
    page(StatusCode::OK, &format!("User {shown}"), &body, "user")
}

fn user_body(
    p: &Profile,
    f: &Factors,
    events: &[AuditEvent],
    operator: bool,
    needed: u32,
) -> String {
    let u = &p.user;
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<section id="profile"><dl class="facts"><dt>key</dt><dd><code>key:{}</code></dd><dt>enrolment</dt><dd data-user="enrolment">{}</dd><dt>verified logins</dt><dd>{} (enrolled after {needed})</dd><dt>first seen</dt><dd>{}</dd><dt>last login</dt><dd>{}</dd><dt>model</dt><dd data-user="model">{}</dd></dl></section>"#,
        u.key,
        escape_html(&super::super::users::state_long(u.enrollment)),
        u.verified_logins,
        when(u.created_at),
        u.last_login_at
            .map(|t| format!("{} ({})", when(t), ago(t)))
            .unwrap_or_else(|| "never".into()),
        match &p.model {
            Some(m) => format!(
                "updated {} ({}), model version {} for features v{}",
                when(m.updated_at),
                ago(m.updated_at),
                m.model_version,
                m.feature_version
            ),
            None => "none stored yet (a model is saved a few seconds after it is learnt)".into(),
        },
    );
    let _ = write!(
        html,
        r#"<section id="factors"><h2>Second factors</h2><ul><li>authenticator app (TOTP): {}</li><li>passkeys: {}</li><li>recovery codes left: {}</li></ul></section>"#,
        f.totp_since
            .map(|t| format!("since {}", when(t)))
            .unwrap_or_else(|| "none".into()),
        f.passkeys.len(),
        f.recovery_codes,
    );
    html.push_str(r#"<section id="logins"><h2>Latest logins</h2>"#);
    if p.recent.is_empty() {
        html.push_str("<p>No logins stored (they are kept for <code>store.retention</code>).</p>");
    } else {
        html.push_str("<div class=\"scroll\"><table><thead><tr><th>when</th><th>risk</th><th>decision</th><th>outcome</th><th>reasons</th></tr></thead><tbody>");
        for s in &p.recent {
            let _ = write!(
                html,
                r#"<tr><td class="t">{}</td><td>{}</td><td class="{d}">{d}</td><td>{}</td><td>{}</td></tr>"#,
                when(s.at),
                // The store keeps 0 for a login that was not scored (enrolling, no telemetry);
                // a fused risk of exactly 0 does not occur.
                if s.risk == 0.0 {
                    "–".to_string()
                } else {
                    format!("{:.3}", s.risk)
                },
                s.outcome.as_str(),
                reasons_text(&s.reasons, operator),
                d = s.decision.as_str(),
            );
        }
        html.push_str("</tbody></table></div>");
    }
    html.push_str("</section>");
    html.push_str(r#"<section id="events"><h2>Latest audit events</h2>"#);
    if events.is_empty() {
        html.push_str("<p>None.</p>");
    } else {
        html.push_str("<div class=\"scroll\"><table><thead><tr><th>when</th><th>event</th><th>decision</th><th>outcome</th><th>incident</th></tr></thead><tbody>");
        for e in events {
            let field = |name: &str| {
                e.detail
                    .get(name)
                    .and_then(|v| v.as_str())
                    .map(escape_html)
                    .unwrap_or_default()
            };
            let incident = e
                .incident
                .as_deref()
                .map(|i| {
                    format!(
                        "<a href=\"/console/incident?ref={}\">{}</a>",
                        escape_html(&encode(i)),
                        escape_html(i)
                    )
                })
                .unwrap_or_default();
            let _ = write!(
                html,
                "<tr><td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{incident}</td></tr>",
                when(e.at),
                escape_html(&e.kind),
                field("decision"),
                field("outcome"),
            );
        }
        html.push_str("</tbody></table></div>");
    }
    html.push_str("</section>");
    html
}

/// A login's reasons for the page: labels; an operator who proved `admin.auth`'s credential
/// also sees the value and the user's usual range (the profile), nobody else does.
fn reasons_text(reasons: &serde_json::Value, operator: bool) -> String {
    if !operator {
        return escape_html(&reason_labels(Some(reasons)).join(", "));
    }
    let Some(items) = reasons.as_array() else {
        return String::new();
    };
    let labels = reason_labels(Some(reasons));
    items
        .iter()
        .filter(|r| r.get("code").and_then(|c| c.as_str()).is_some())
        .zip(labels)
        .map(|(r, label)| {
            let value = r.get("value").and_then(|v| v.as_f64());
            let usual = r
                .get("usual")
                .and_then(|u| u.as_array())
                .and_then(|u| Some((u.first()?.as_f64()?, u.get(1)?.as_f64()?)));
            match (value, usual) {
                (Some(v), Some((lo, hi))) => {
                    format!("{} {v:.0} (usual {lo:.0}–{hi:.0})", escape_html(&label))
                }
                _ => escape_html(&label),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `text` is an incident reference: `GK-` and ten of the reference alphabet.
fn incident_ref(text: &str) -> Option<String> {
    let upper = text.trim().to_ascii_uppercase();
    let tail = upper.strip_prefix("GK-")?;
    (tail.len() == 10
        && tail
            .bytes()
            .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)))
    .then_some(upper)
}

/// `/console/incident?ref=GK-…`.
pub(super) async fn incident_page(
    site: &Site<'_>,
    query: &Query,
    operator: bool,
) -> Response<Vec<u8>> {
    let Some(reference) = query.get("ref").and_then(incident_ref) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Incident",
            "an incident reference is GK- and ten letters or digits, as the block page or the audit record shows it",
            "incident",
        );
    };
    let lookup = reference.clone();
    let events = match in_store(site, move |store| async move {
        store.audit_by_incident(&lookup).await
    })
    .await
    {
        Ok(events) => events,
        Err(e) => return super::store_unavailable("the incident", &e),
    };
    if events.is_empty() {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("Incident {reference}"),
            "no audit records carry this reference: check it, and that this gaitkeeper writes to the store the login went through",
            "incident",
        );
    }
    let mut html = String::from(
        r#"<section id="incident-events"><div class="scroll"><table><thead><tr><th>when</th><th>event</th><th>app / route</th><th>decision (rule, mode)</th><th>risk</th><th>outcome</th><th>challenge</th><th>reasons</th><th>client</th><th>user</th></tr></thead><tbody>"#,
    );
    for e in &events {
        let d = &e.detail;
        let field = |name: &str| {
            d.get(name)
                .and_then(|v| v.as_str())
                .map(escape_html)
                .unwrap_or_default()
        };
        let user = d
            .get("user_key")
            .and_then(|v| v.as_str())
            .filter(|k| UserKey::from_hex(k).is_some())
            .map(|k| {
                let app = d.get("app").and_then(|v| v.as_str()).unwrap_or("default");
                format!(
                    "<a href=\"/console/user?key={k}&amp;app={}\">key:{}…</a>",
                    escape_html(&encode(app)),
                    &k[..16]
                )
            })
            .unwrap_or_default();
        let _ = write!(
            html,
            r#"<tr><td class="t">{}</td><td>{}</td><td>{} / {}</td><td class="{dec}">{dec} ({}, {})</td><td>{}</td><td data-incident="outcome">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{user}</td></tr>"#,
            when(e.at),
            escape_html(&e.kind),
            field("app"),
            field("route"),
            field("policy"),
            field("mode"),
            d.get("risk")
                .and_then(|v| v.as_f64())
                .map(|r| format!("{r:.3}"))
                .unwrap_or_else(|| "–".into()),
            field("outcome"),
            field("challenge"),
            reasons_text(
                d.get("reasons").unwrap_or(&serde_json::Value::Null),
                operator
            ),
            field("client_ip"),
            dec = field("decision"),
        );
    }
    html.push_str("</tbody></table></div></section>");
    page(
        StatusCode::OK,
        &format!("Incident {reference}"),
        &html,
        "incident",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_references_are_read_in_any_case_and_nothing_else() {
        assert_eq!(
            incident_ref(" gk-7f3k9q2m4d "),
            Some("GK-7F3K9Q2M4D".into())
        );
        for bad in [
            "GK-",
            "GK-7F3K9Q2M4",
            "GK-7F3K9Q2M4DX",
            "XX-7F3K9Q2M4D",
            "GK-7F3K9Q2M4U",
            "GK-<script>a",
        ] {
            assert_eq!(incident_ref(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_are_shown_to_an_operator_only() {
        let reasons = serde_json::json!([{"code": "deviation", "feature": "mouse_speed", "usual": [106.0, 247.0], "value": 400.0}, {"code": "<b>"}]);
        let anonymous = reasons_text(&reasons, false);
        assert_eq!(anonymous, "deviation: mouse_speed, &lt;b&gt;");
        let operator = reasons_text(&reasons, true);
        assert!(operator.contains("400 (usual 106–247)"), "{operator}");
        assert!(operator.contains("&lt;b&gt;"));
    }
}
