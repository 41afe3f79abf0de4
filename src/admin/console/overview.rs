//! The overview: one app (or all), one route (or all) and one period — logins by decision over
//! time, the risks of genuine and failed logins against the thresholds, the top reasons, how
//! challenges end, who is challenged most, enrolment, and the health of the store and the
//! audit trail.

use std::fmt::Write;
use std::time::SystemTime;

use http::{Response, StatusCode};

use super::stats::{self, Filter, Overview, DECISIONS};
use super::{charts, escape_html, in_store, Query, Site};
use crate::policy::Policy;

/// The periods offered, the default first.
const PERIODS: [(&str, &str); 4] = [
    ("24h", "last 24 hours"),
    ("1h", "last hour"),
    ("7d", "last 7 days"),
    ("30d", "last 30 days"),
];

/// What the store adds to the trail's numbers.
struct StoreState {
    users: u64,
    enrolled: u64,
    /// Clear names of the most challenged users, where the store keeps them.
    names: Vec<Option<String>>,
}

async fn page_for(site: &Site<'_>, query: &Query) -> Result<String, Response<Vec<u8>>> {
    let config = site.config;
    let bad = |message: String| {
        super::page(
            StatusCode::BAD_REQUEST,
            "Overview",
            &format!(
                "<p class=\"error\">{}</p><p><a href=\"/console/\">Back to the overview</a></p>",
                escape_html(&message)
            ),
            "overview",
        )
    };
    let app = match query.get("app") {
        Some(name) => Some(
            config
                .app_named(name)
                .ok_or_else(|| bad(format!("no app named {name:?} in the config")))?,
        ),
        None => None,
    };
    let route = match query.get("route") {
        Some(name) => {
            let known = config
                .apps
                .iter()
                .filter(|a| app.is_none_or(|app| app.name == a.name))
                .flat_map(|a| &a.routes)
                .any(|r| r.name == name);
            if !known {
                return Err(bad(format!("no route named {name:?} in the chosen app")));
            }
            Some(name.to_string())
        }
        None => None,
    };
    let period_name = query.get("period").unwrap_or(PERIODS[0].0);
    let (length, bins) = stats::period(period_name).ok_or_else(|| {
        bad(format!(
            "unknown period {period_name:?}: choose 1h, 24h, 7d or 30d"
        ))
    })?;
    let to = SystemTime::now();
    let filter = Filter {
        from: to - length,
        to,
        app: app.map(|a| a.name.clone()),
        route: route.clone(),
        bins,
    };

    let selection = crate::whatif::Selection {
        from_ms: crate::runtime::unix_millis(filter.from),
        to_ms: crate::runtime::unix_millis(filter.to),
        app: filter.app.clone(),
        route: filter.route.clone(),
    };
    // The what-if form's replay rides on the overview's one pass over the period.
    let (tried, unusable) = match super::what_if::tried(site, query) {
        Some(Ok(tried)) => (Some(tried), None),
        Some(Err(why)) => (None, Some(why)),
        None => (None, None),
    };
    let job = filter.clone();
    let (o, replayed) = match in_store(site, move |store| async move {
        let replayer = tried
            .as_ref()
            .map(|t| crate::whatif::Replayer::new(&selection, t));
        stats::overview(&store, &job, replayer).await
    })
    .await
    {
        Ok(o) => o,
        Err(e) => return Err(super::store_unavailable("the audit trail", &e)),
    };
    let replayed = replayed.or(unusable.map(Err));
    let keys: Vec<String> = o.challenged_users.iter().map(|(k, _)| k.clone()).collect();
    let keep_names = config.store.keep_clear_names;
    let state = match in_store(site, move |store| async move {
        let users = store.count_users().await?;
        let enrolled = store.count_enrolled().await?;
        let mut names = Vec::with_capacity(keys.len());
        for hex in &keys {
            let name = match crate::store::UserKey::from_hex(hex) {
                Some(key) if keep_names => store.user(&key).await?.and_then(|u| u.clear_name),
                _ => None,
            };
            names.push(name);
        }
        Ok(StoreState {
            users,
            enrolled,
            names,
        })
    })
    .await
    {
        Ok(s) => s,
        Err(e) => return Err(super::store_unavailable("users", &e)),
    };
    let store_answers = site.services.store_ready().await;

    // The thresholds drawn: the chosen app's (the first app's when all are shown), with the
    // chosen route's overrides.
    let shown_app = app.unwrap_or(&config.apps[0]);
    let route_policy = route
        .as_deref()
        .and_then(|r| shown_app.routes.iter().find(|x| x.name == r))
        .map(|r| r.policy.clone())
        .unwrap_or_default();
    let policy = Policy::resolve(&shown_app.policy, &route_policy);

    let mut html = String::new();
    filter_form(
        &mut html,
        site,
        app.map(|a| a.name.as_str()),
        route.as_deref(),
        period_name,
    );
    totals(&mut html, &o);
    let labels = (super::when(filter.from), super::when(filter.to));
    let _ = write!(
        html,
        r#"<section id="decisions"><h2>Logins by decision over time</h2>{}{}</section>"#,
        charts::decisions_over_time(&o.series, (&labels.0, &labels.1)),
        charts::legend(&[
            (charts::DECISION_COLOURS[0], "allow"),
            (charts::DECISION_COLOURS[1], "challenge"),
            (charts::DECISION_COLOURS[2], "block"),
        ]),
    );
    let _ = write!(
        html,
        r#"<section id="risk"><h2>Risk of genuine and failed logins</h2>{}{}<p class="note">Thresholds drawn: app {}{}, mode {}: allowed below <strong>{:.2}</strong>, blocked at <strong>{:.2}</strong> and above, challenged between. Not drawn: <span data-count="unscored">{}</span> genuine or failed logins without a risk (the user was still enrolling, or there was no telemetry to score).</p></section>"#,
        charts::risk_histogram(&o.genuine, &o.failed, policy.allow_below, policy.block_at),
        charts::risk_legend(),
        escape_html(&shown_app.name),
        route
            .as_deref()
            .map(|r| format!(", route {}", escape_html(r)))
            .unwrap_or_default(),
        policy.mode.as_str(),
        policy.allow_below,
        policy.block_at,
        o.unscored,
    );
    reasons_and_challenges(&mut html, &o);
    challenged_users(&mut html, &o, &state, filter.app.as_deref());
    enrolment_and_health(&mut html, site, &o, &state, store_answers);
    html.push_str(&super::what_if::section(
        query,
        &policy,
        (&o.genuine, &o.failed),
        replayed,
    ));
    Ok(html)
}

pub(super) async fn page(site: &Site<'_>, query: &Query) -> Response<Vec<u8>> {
    match page_for(site, query).await {
        Ok(body) => super::page(StatusCode::OK, "Overview", &body, "overview"),
        Err(response) => response,
    }
}

fn filter_form(
    html: &mut String,
    site: &Site<'_>,
    app: Option<&str>,
    route: Option<&str>,
    period: &str,
) {
    let option = |value: &str, label: &str, selected: bool| {
        format!(
            "<option value=\"{}\"{}>{}</option>",
            escape_html(value),
            if selected { " selected" } else { "" },
            escape_html(label)
        )
    };
    html.push_str(
        r#"<form class="filter" method="get" action="/console/"><label>App <select name="app">"#,
    );
    html.push_str(&option("", "every app", app.is_none()));
    for a in &site.config.apps {
        html.push_str(&option(&a.name, &a.name, app == Some(a.name.as_str())));
    }
    html.push_str(r#"</select></label><label>Route <select name="route">"#);
    html.push_str(&option("", "every route", route.is_none()));
    let mut names: Vec<&str> = site
        .config
        .apps
        .iter()
        .filter(|a| app.is_none_or(|name| a.name == name))
        .flat_map(|a| a.routes.iter().map(|r| r.name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        html.push_str(&option(name, name, route == Some(name)));
    }
    html.push_str(r#"</select></label><label>Period <select name="period">"#);
    for (value, label) in PERIODS {
        html.push_str(&option(value, label, value == period));
    }
    html.push_str("</select></label><button>Show</button></form>");
}

fn totals(html: &mut String, o: &Overview) {
    html.push_str(r#"<section id="totals"><h2>Logins</h2><dl class="cards">"#);
    let _ = write!(
        html,
        r#"<div><dt>logins</dt><dd data-count="logins">{}</dd></div>"#,
        o.logins
    );
    for (i, d) in DECISIONS.iter().enumerate() {
        let _ = write!(
            html,
            r#"<div class="{d}"><dt>{d}</dt><dd data-count="{d}">{}</dd></div>"#,
            o.decisions[i]
        );
    }
    html.push_str("</dl><h3>What became of them</h3><dl class=\"cards small\">");
    for (name, count) in &o.outcomes {
        let _ = write!(
            html,
            r#"<div><dt>{n}</dt><dd data-outcome="{n}">{count}</dd></div>"#,
            n = escape_html(name)
        );
    }
    html.push_str("</dl>");
    if o.truncated {
        let _ = write!(
            html,
            r#"<p class="note">The period holds more than {} audit records; these numbers add up the newest {}.</p>"#,
            stats::MAX_RECORDS,
            o.records
        );
    }
    html.push_str("</section>");
}

fn reasons_and_challenges(html: &mut String, o: &Overview) {
    html.push_str(r#"<div class="pair"><section id="reasons"><h2>Top reasons</h2>"#);
    if o.reasons.is_empty() {
        html.push_str("<p>No reasons recorded in this period.</p>");
    } else {
        html.push_str("<table><thead><tr><th>reason</th><th>logins</th></tr></thead><tbody>");
        for (reason, count) in &o.reasons {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{count}</td></tr>",
                escape_html(reason)
            );
        }
        html.push_str("</tbody></table>");
    }
    let c = &o.challenges;
    let rate = c
        .pass_rate()
        .map(|r| format!("{r:.0}%"))
        .unwrap_or_else(|| "–".into());
    let _ = write!(
        html,
        r#"</section><section id="challenges"><h2>Challenges</h2><p class="big" data-count="pass-rate">{rate}</p><p>passed of those that ended</p><table><tbody><tr><td>passed</td><td data-count="challenge-passed">{}</td></tr><tr><td>failed (too many wrong codes)</td><td data-count="challenge-failed">{}</td></tr><tr><td>abandoned (expired or pushed out)</td><td>{}</td></tr><tr><td>not ended</td><td>{}</td></tr></tbody></table></section></div>"#,
        c.passed, c.failed, c.abandoned, c.pending
    );
}

fn challenged_users(html: &mut String, o: &Overview, state: &StoreState, app: Option<&str>) {
    html.push_str(r#"<section id="challenged-users"><h2>Users challenged most</h2>"#);
    if o.challenged_users.is_empty() {
        html.push_str("<p>Nobody was challenged in this period.</p></section>");
        return;
    }
    html.push_str("<table><thead><tr><th>user</th><th>challenged logins</th></tr></thead><tbody>");
    for (i, (key, count)) in o.challenged_users.iter().enumerate() {
        let shown = match state.names.get(i).cloned().flatten() {
            Some(name) => escape_html(&super::super::users::readable_name(&name)),
            None => format!("key:{}…", escape_html(key.get(..16).unwrap_or(key))),
        };
        let app_param = app
            .map(|a| format!("&amp;app={}", escape_html(&encode(a))))
            .unwrap_or_default();
        let _ = write!(
            html,
            "<tr><td><a href=\"/console/user?key={}{app_param}\">{shown}</a></td><td>{count}</td></tr>",
            escape_html(key)
        );
    }
    html.push_str("</tbody></table></section>");
}

fn enrolment_and_health(
    html: &mut String,
    site: &Site<'_>,
    o: &Overview,
    state: &StoreState,
    store_answers: bool,
) {
    let enrolling = state.users.saturating_sub(state.enrolled);
    let share = if state.users > 0 {
        state.enrolled as f64 * 100.0 / state.users as f64
    } else {
        0.0
    };
    let _ = write!(
        html,
        r##"<div class="pair"><section id="enrolment"><h2>Enrolment</h2><p><span data-count="enrolled">{}</span> of <span data-count="users">{}</span> users enrolled, {enrolling} enrolling (fewer than {} verified logins).</p><svg class="bar" viewBox="0 0 100 8" preserveAspectRatio="none" role="img" aria-label="{share:.0}% enrolled"><rect width="100" height="8" fill="#e0e0e0"/><rect width="{share:.1}" height="8" fill="{green}"/></svg><p class="note">Across every app: the store keys users per app but does not record which.</p></section>"##,
        state.enrolled,
        state.users,
        site.config.store.enrollment_logins,
        green = charts::DECISION_COLOURS[0],
    );
    let audit = &site.metrics.audit;
    let records = |what: &str| audit.records.with_label_values(&[what]).get();
    let _ = write!(
        html,
        r#"<section id="health"><h2>Store and audit trail</h2><table><tbody><tr><td>store</td><td data-health="store">{}</td></tr><tr><td>backend</td><td>{}</td></tr><tr><td>audit records stored since start</td><td>{}</td></tr><tr><td>spooled (store was away; delivered later)</td><td>{}</td></tr><tr><td>refused by the store</td><td>{}</td></tr><tr><td>lost (spool full)</td><td>{}</td></tr><tr><td>waiting in the spool</td><td>{} bytes</td></tr><tr><td>newest record in this period</td><td>{}</td></tr></tbody></table></section></div>"#,
        if store_answers {
            "answers"
        } else {
            "<strong class=\"error\">does not answer</strong>"
        },
        match site.services.store.backend() {
            crate::store::Backend::Sqlite => "SQLite",
            crate::store::Backend::Postgres => "PostgreSQL",
        },
        records("stored"),
        records("spooled"),
        records("rejected"),
        records("lost"),
        audit.spool_bytes.get(),
        o.newest
            .map(|t| format!("{} ({})", super::when(t), super::ago(t)))
            .unwrap_or_else(|| "none".into()),
    );
}

/// Percent-encodes a query value.
pub(super) fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
