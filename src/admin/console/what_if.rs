//! The overview's what-if form: thresholds to try (a GET form, so a result can be linked), the
//! period's logins replayed through them by a `whatif::Replayer` — the engine of
//! `gaitkeeper policy what-if` — fed in the overview's own pass over the period's records,
//! and the answer: the transition
//! table, the users and logins the change would affect, and the risk histogram redrawn with
//! the tried thresholds.

use std::fmt::Write;

use super::{charts, escape_html, Query, Site};
use crate::policy::{Action, Policy, PolicyConfig};
use crate::whatif::{PolicyOverrides, WhatIf};

/// The form's fields.
const ALLOW: &str = "try_allow_below";
const BLOCK: &str = "try_block_at";

/// The policy the form asks to try: `None` when the form was not sent; an error to show when
/// its thresholds are not numbers from 0 to 1 or make an unusable policy.
pub(super) fn tried(site: &Site<'_>, query: &Query) -> Option<Result<PolicyOverrides, String>> {
    if query.get(ALLOW).is_none() && query.get(BLOCK).is_none() {
        return None;
    }
    let (Ok(allow), Ok(block)) = (threshold(query.get(ALLOW)), threshold(query.get(BLOCK))) else {
        return Some(Err(
            "Thresholds are numbers from 0 to 1, such as 0.55.".to_string()
        ));
    };
    let keys = PolicyConfig {
        allow_below: allow,
        block_at: block,
        ..Default::default()
    };
    Some(
        PolicyOverrides::of(site.config)
            .with_keys(keys)
            .map_err(|e| e.to_string()),
    )
}

/// The what-if section of the overview, with `current` the thresholds drawn above and
/// `replayed` what the period's logins became under the tried ones (read in the same pass as
/// the overview); the form carries the overview's own filter (app, route, period).
pub(super) fn section(
    query: &Query,
    current: &Policy,
    histogram: (
        &[u64; super::stats::RISK_BINS],
        &[u64; super::stats::RISK_BINS],
    ),
    replayed: Option<Result<WhatIf, String>>,
) -> String {
    let tried = (threshold(query.get(ALLOW)), threshold(query.get(BLOCK)));
    let mut html = String::from(
        r#"<section id="what-if"><h2>What if the thresholds moved?</h2><p class="note">The period's logins replayed through the policy with the thresholds you try (the same replay as <code>gaitkeeper policy what-if</code>).</p>"#,
    );
    form(&mut html, query, current, tried);
    match replayed {
        Some(Ok(report)) => {
            let shown = (
                tried.0.ok().flatten().unwrap_or(current.allow_below),
                tried.1.ok().flatten().unwrap_or(current.block_at),
            );
            answer(&mut html, &report, shown, histogram);
        }
        Some(Err(e)) => {
            let _ = write!(html, r#"<p class="error">{}</p>"#, escape_html(&e));
        }
        None => {}
    }
    html.push_str("</section>");
    html
}

/// A tried threshold: absent, or a number from 0 to 1.
fn threshold(value: Option<&str>) -> Result<Option<f64>, ()> {
    match value {
        None => Ok(None),
        Some(text) => match text.parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(Some(v)),
            _ => Err(()),
        },
    }
}

fn form(
    html: &mut String,
    query: &Query,
    current: &Policy,
    tried: (Result<Option<f64>, ()>, Result<Option<f64>, ()>),
) {
    let value =
        |name: &str, tried: &Result<Option<f64>, ()>, now: f64| match (query.get(name), tried) {
            (Some(text), _) => escape_html(text),
            (None, _) => format!("{now}"),
        };
    let _ = write!(
        html,
        r#"<form method="get" action="/console/#what-if" class="what-if">"#
    );
    for keep in ["app", "route", "period"] {
        if let Some(v) = query.get(keep) {
            let _ = write!(
                html,
                r#"<input type="hidden" name="{keep}" value="{}">"#,
                escape_html(v)
            );
        }
    }
    let _ = write!(
        html,
        r#"<label>allow below <input name="{ALLOW}" inputmode="decimal" size="5" value="{}"></label> <label>block at <input name="{BLOCK}" inputmode="decimal" size="5" value="{}"></label> <button type="submit">Replay</button></form>"#,
        value(ALLOW, &tried.0, current.allow_below),
        value(BLOCK, &tried.1, current.block_at),
    );
}

fn answer(
    html: &mut String,
    r: &WhatIf,
    (allow, block): (f64, f64),
    (genuine, failed): (
        &[u64; super::stats::RISK_BINS],
        &[u64; super::stats::RISK_BINS],
    ),
) {
    let _ = write!(
        html,
        r#"<table class="transitions"><caption>{} logins replayed: decision then (rows) and with the tried thresholds (columns)</caption><tr><th></th><th>allow</th><th>challenge</th><th>block</th></tr>"#,
        r.logins
    );
    for from in [Action::Allow, Action::Challenge, Action::Block] {
        let _ = write!(html, "<tr><th>{}</th>", from.as_str());
        for to in [Action::Allow, Action::Challenge, Action::Block] {
            let n = r
                .transitions
                .iter()
                .find(|t| t.from == from && t.to == to)
                .map_or(0, |t| t.logins);
            let changed = if from != to && n > 0 {
                " class=\"changed\""
            } else {
                ""
            };
            let _ = write!(
                html,
                r#"<td{changed} data-transition="{}-{}">{n}</td>"#,
                from.as_str(),
                to.as_str()
            );
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    let _ = write!(
        html,
        r#"<ul class="what-if-effects"><li><strong data-count="more-often">{}</strong> users would be challenged more often, {} less often</li><li><strong data-count="newly-stopped">{}</strong> genuine logins allowed then would be challenged or blocked</li><li><strong data-count="newly-allowed">{}</strong> failed logins challenged or blocked then would be allowed</li></ul>"#,
        r.users.challenged_more_often,
        r.users.challenged_less_often,
        r.genuine.newly_stopped,
        r.failed.newly_allowed,
    );
    if r.fidelity.inferred + r.fidelity.unreplayable + r.fidelity.factor_assumed > 0 {
        let _ = write!(
            html,
            r#"<p class="note">{} logins recorded before every policy input was kept were replayed from their rule; {} could not be replayed; for {} now challenged, the user was taken to have a second factor (docs/what-if.md).</p>"#,
            r.fidelity.inferred, r.fidelity.unreplayable, r.fidelity.factor_assumed
        );
    }
    let _ = write!(
        html,
        "{}{}",
        charts::risk_histogram(genuine, failed, allow, block),
        charts::risk_legend()
    );
}
