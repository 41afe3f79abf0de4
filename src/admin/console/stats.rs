//! What the overview adds up: the logins of a period (one per incident reference), by decision
//! over time, their risks split by what became of them, reasons, challenges and the users
//! challenged most. Read from the audit trail in bounded pages, at most [`MAX_RECORDS`] records
//! (newest first); the overview says when a period held more.
//!
//! The one place the console aggregates: when the audit trail gets a summary table, these
//! functions read it instead and the pages stay as they are.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::store::{AuditEvent, Store, StoreError};

/// Most audit records one overview reads.
pub(super) const MAX_RECORDS: usize = 20_000;
/// Histogram bins over risks 0 to 1.
pub(super) const RISK_BINS: usize = 20;
/// Longest lists (reasons, users).
const TOP: usize = 10;

/// Which logins an overview covers.
#[derive(Clone, Debug)]
pub(super) struct Filter {
    pub from: SystemTime,
    pub to: SystemTime,
    /// Only this app's logins (`None`: every app).
    pub app: Option<String>,
    /// Only this route's logins (`None`: every route).
    pub route: Option<String>,
    /// Time bins of the decisions chart (1 to 60).
    pub bins: usize,
}

/// The decisions, in the order the charts stack them.
pub(super) const DECISIONS: [&str; 3] = ["allow", "challenge", "block"];

/// One period's numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Overview {
    /// Audit records read, and whether the period held more than [`MAX_RECORDS`].
    pub records: usize,
    pub truncated: bool,
    /// Logins (incident references) in the period.
    pub logins: u64,
    /// Logins by decision, as [`DECISIONS`].
    pub decisions: [u64; 3],
    /// Per time bin, logins by decision.
    pub series: Vec<[u64; 3]>,
    /// What became of the logins: `verified`, `failed`, `blocked`, … (counts by name).
    pub outcomes: Vec<(String, u64)>,
    /// Risks of logins that proved genuine (verified by the app or a passed challenge).
    pub genuine: [u64; RISK_BINS],
    /// Risks of logins that failed (refused by the app, or a failed challenge).
    pub failed: [u64; RISK_BINS],
    /// Genuine and failed logins without a risk (still enrolling, or no telemetry to score).
    pub unscored: u64,
    /// The most frequent reasons (`code` or `code: feature`), most frequent first.
    pub reasons: Vec<(String, u64)>,
    pub challenges: Challenges,
    /// Users (hex store key) with the most challenged logins, most first.
    pub challenged_users: Vec<(String, u64)>,
    /// Time of the newest record read.
    pub newest: Option<SystemTime>,
}

/// How the period's challenges ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Challenges {
    pub passed: u64,
    pub failed: u64,
    /// Expired or pushed out unanswered.
    pub abandoned: u64,
    /// Not ended yet (or ended after the period's records were read).
    pub pending: u64,
}

impl Challenges {
    /// Passed of those that ended, in percent; `None` before any ended.
    pub fn pass_rate(&self) -> Option<f64> {
        let ended = self.passed + self.failed + self.abandoned;
        (ended > 0).then(|| self.passed as f64 * 100.0 / ended as f64)
    }
}

/// Reads the period's records (bounded) and adds them up.
pub(super) async fn overview(store: &Store, filter: &Filter) -> Result<Overview, StoreError> {
    let mut events = Vec::new();
    let mut before = None;
    let mut truncated = false;
    loop {
        let page = store
            .audit_between(filter.from, filter.to, before, crate::store::MAX_PAGE)
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        before = Some(last.id);
        let full = page.len() == crate::store::MAX_PAGE;
        events.extend(page);
        if events.len() >= MAX_RECORDS {
            truncated = full;
            events.truncate(MAX_RECORDS);
            break;
        }
        if !full {
            break;
        }
    }
    let mut overview = summarise(&events, filter);
    overview.truncated = truncated;
    Ok(overview)
}

/// One login as its records tell it.
#[derive(Default)]
struct Login {
    first_at: u64,
    decision: Option<usize>,
    risk: Option<f64>,
    reasons: Vec<String>,
    outcome: Option<(u64, String)>,
    challenge: Option<String>,
    user: Option<String>,
}

/// Adds up `events` (any order) for `filter`: pure, so it is tested without a store.
pub(super) fn summarise(events: &[AuditEvent], filter: &Filter) -> Overview {
    let from = millis(filter.from);
    let to = millis(filter.to).max(from + 1);
    let bins = filter.bins.clamp(1, 60);
    let mut logins: HashMap<&str, Login> = HashMap::new();
    let mut newest = None;
    for event in events {
        let d = &event.detail;
        let Some(decision) = d.get("decision").and_then(|v| v.as_str()) else {
            continue; // not about a login's decision (alert deliveries, enrolments)
        };
        let Some(incident) = event.incident.as_deref() else {
            continue;
        };
        let app = d.get("app").and_then(|v| v.as_str()).unwrap_or("default");
        let route = d.get("route").and_then(|v| v.as_str()).unwrap_or("");
        if filter.app.as_deref().is_some_and(|a| a != app)
            || filter.route.as_deref().is_some_and(|r| r != route)
        {
            continue;
        }
        let at = millis(event.at);
        newest = newest.max(Some(event.at));
        let login = logins.entry(incident).or_insert_with(|| Login {
            first_at: at,
            ..Login::default()
        });
        login.first_at = login.first_at.min(at);
        if login.decision.is_none() {
            login.decision = DECISIONS.iter().position(|d| *d == decision);
        }
        if login.risk.is_none() {
            login.risk = d
                .get("risk")
                .and_then(|v| v.as_f64())
                .filter(|r| r.is_finite());
        }
        if login.reasons.is_empty() {
            login.reasons = reason_labels(d.get("reasons"));
        }
        if login.user.is_none() {
            login.user = d
                .get("user_key")
                .and_then(|v| v.as_str())
                .map(str::to_string);
        }
        if let Some(challenge) = d.get("challenge").and_then(|v| v.as_str()) {
            login.challenge = Some(challenge.to_string());
        }
        if let Some(outcome) = d.get("outcome").and_then(|v| v.as_str()) {
            // `challenged` is where a held login stands, not how it ended.
            let ends = outcome != "challenged";
            let later = login
                .outcome
                .as_ref()
                .is_none_or(|(t, o)| ends && (o == "challenged" || at >= *t));
            if later {
                login.outcome = Some((at, outcome.to_string()));
            }
        }
    }

    let mut o = Overview {
        records: events.len(),
        series: vec![[0; 3]; bins],
        newest,
        ..Overview::default()
    };
    let mut outcomes: HashMap<String, u64> = HashMap::new();
    let mut reasons: HashMap<&str, u64> = HashMap::new();
    let mut challenged: HashMap<&str, u64> = HashMap::new();
    for login in logins.values() {
        let Some(decision) = login.decision else {
            continue;
        };
        o.logins += 1;
        o.decisions[decision] += 1;
        let bin = ((login.first_at.saturating_sub(from)) as u128 * bins as u128
            / (to - from) as u128) as usize;
        o.series[bin.min(bins - 1)][decision] += 1;
        let outcome = login
            .outcome
            .as_ref()
            .map(|(_, o)| o.as_str())
            .unwrap_or("pending");
        *outcomes.entry(outcome.to_string()).or_default() += 1;
        let histogram = match outcome {
            "verified" => Some(&mut o.genuine),
            "failed" | "challenge_failed" => Some(&mut o.failed),
            _ => None,
        };
        match (histogram, login.risk) {
            (Some(bins), Some(risk)) => {
                let bin = ((risk.clamp(0.0, 1.0) * RISK_BINS as f64) as usize).min(RISK_BINS - 1);
                bins[bin] += 1;
            }
            (Some(_), None) => o.unscored += 1,
            (None, _) => {}
        }
        for reason in &login.reasons {
            *reasons.entry(reason).or_default() += 1;
        }
        if DECISIONS[decision] == "challenge" {
            match login.challenge.as_deref() {
                Some("passed") => o.challenges.passed += 1,
                Some("failed") => o.challenges.failed += 1,
                Some("expired") | Some("evicted") => o.challenges.abandoned += 1,
                _ => o.challenges.pending += 1,
            }
            if let Some(user) = &login.user {
                *challenged.entry(user).or_default() += 1;
            }
        }
    }
    o.outcomes = top(outcomes.into_iter(), usize::MAX);
    o.reasons = top(reasons.into_iter().map(|(k, n)| (k.to_string(), n)), TOP);
    o.challenged_users = top(challenged.into_iter().map(|(k, n)| (k.to_string(), n)), TOP);
    o
}

/// The labels of a record's reasons: `code`, or `code: feature` for a feature's deviation.
/// Never a value or a user's range.
pub(super) fn reason_labels(reasons: Option<&serde_json::Value>) -> Vec<String> {
    let Some(items) = reasons.and_then(|r| r.as_array()) else {
        return Vec::new();
    };
    items
        .iter()
        .take(16)
        .filter_map(|r| {
            let code = r.get("code")?.as_str()?;
            let mut label: String = code.chars().take(48).collect();
            if let Some(feature) = r.get("feature").and_then(|f| f.as_str()) {
                if !feature.is_empty() {
                    label.push_str(": ");
                    label.extend(feature.chars().take(48));
                }
            }
            Some(label)
        })
        .collect()
}

/// The `n` largest counts, largest first (ties by name, so pages are stable).
fn top(counts: impl Iterator<Item = (String, u64)>, n: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = counts.collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

fn millis(at: SystemTime) -> u64 {
    crate::runtime::unix_millis(at)
}

/// The period ending now that `name` stands for, with its number of chart bins.
pub(super) fn period(name: &str) -> Option<(Duration, usize)> {
    Some(match name {
        "1h" => (Duration::from_secs(3600), 12),
        "24h" => (Duration::from_secs(86_400), 24),
        "7d" => (Duration::from_secs(7 * 86_400), 28),
        "30d" => (Duration::from_secs(30 * 86_400), 30),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    fn at_millis(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn event(
        id: i64,
        at: u64,
        kind: &str,
        incident: &str,
        detail: serde_json::Value,
    ) -> AuditEvent {
        AuditEvent {
            id,
            at: at_millis(at),
            kind: kind.into(),
            incident: Some(incident.into()),
            detail,
        }
    }

    fn filter() -> Filter {
        Filter {
            from: at_millis(1_000_000),
            to: at_millis(1_000_000 + 3_600_000),
            app: None,
            route: None,
            bins: 12,
        }
    }

    #[test]
    fn logins_are_counted_once_per_incident_with_how_they_ended() {
        let t = 1_000_000;
        let user = "ab".repeat(32);
        let events = vec![
            // Allowed, verified by the app.
            event(
                1,
                t + 10,
                "login.outcome",
                "GK-A",
                json!({"decision": "allow", "risk": 0.12, "outcome": "verified", "route": "login", "reasons": [{"code": "deviation", "feature": "key_flight", "usual": [1, 2], "value": 3}]}),
            ),
            // Allowed, refused by the app.
            event(
                2,
                t + 20,
                "login.outcome",
                "GK-B",
                json!({"decision": "allow", "risk": 0.33, "outcome": "failed", "route": "login"}),
            ),
            // Challenged (decision record), then passed.
            event(
                3,
                t + 30,
                "login.decision",
                "GK-C",
                json!({"decision": "challenge", "risk": 0.55, "outcome": "challenged", "route": "login", "user_key": user}),
            ),
            event(
                4,
                t + 900_000,
                "challenge.passed",
                "GK-C",
                json!({"decision": "challenge", "risk": 0.55, "outcome": "verified", "challenge": "passed", "route": "login", "user_key": user}),
            ),
            // Challenged, never answered yet.
            event(
                5,
                t + 40,
                "login.decision",
                "GK-D",
                json!({"decision": "challenge", "outcome": "challenged", "route": "api", "user_key": user}),
            ),
            // Blocked.
            event(
                6,
                t + 3_599_999,
                "login.decision",
                "GK-E",
                json!({"decision": "block", "risk": 0.97, "outcome": "blocked", "route": "login", "reasons": [{"code": "synthetic_input"}]}),
            ),
            // Not a login decision.
            event(
                7,
                t + 50,
                "alert.delivery_failed",
                "GK-F",
                json!({"event": "block"}),
            ),
        ];
        let o = summarise(&events, &filter());
        assert_eq!(o.logins, 5);
        assert_eq!(o.decisions, [2, 2, 1]);
        assert_eq!(o.series[0], [2, 2, 0], "the first 5 minutes");
        assert_eq!(o.series[11], [0, 0, 1], "the last bin");
        let outcome = |name: &str| o.outcomes.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
        assert_eq!(outcome("verified"), Some(2));
        assert_eq!(outcome("failed"), Some(1));
        assert_eq!(outcome("blocked"), Some(1));
        assert_eq!(outcome("pending"), None);
        assert_eq!(outcome("challenged"), Some(1));
        assert_eq!(o.genuine[2], 1, "risk 0.12");
        assert_eq!(o.genuine[11], 1, "risk 0.55");
        assert_eq!(o.failed[6], 1, "risk 0.33");
        assert_eq!(
            o.genuine.iter().sum::<u64>() + o.failed.iter().sum::<u64>(),
            3
        );
        assert_eq!(
            o.challenges,
            Challenges {
                passed: 1,
                failed: 0,
                abandoned: 0,
                pending: 1
            }
        );
        assert_eq!(o.challenges.pass_rate(), Some(100.0));
        assert_eq!(o.challenged_users, vec![(user, 2)]);
        assert!(o.reasons.contains(&("deviation: key_flight".into(), 1)));
        assert!(o.reasons.contains(&("synthetic_input".into(), 1)));

        let only_api = Filter {
            route: Some("api".into()),
            ..filter()
        };
        let o = summarise(&events, &only_api);
        assert_eq!((o.logins, o.decisions), (1, [0, 1, 0]));
        let other_app = Filter {
            app: Some("shop".into()),
            ..filter()
        };
        assert_eq!(summarise(&events, &other_app).logins, 0);
    }

    #[test]
    fn reason_labels_never_carry_values_or_ranges() {
        let reasons = json!([{"code": "deviation", "feature": "mouse_speed", "usual": [106.0, 247.0], "value": 400.0}, {"code": "no_input"}, 7]);
        let labels = reason_labels(Some(&reasons));
        assert_eq!(labels, vec!["deviation: mouse_speed", "no_input"]);
        assert!(!labels.concat().contains("106"));
    }

    #[test]
    fn only_known_periods_are_accepted() {
        assert_eq!(period("7d").map(|p| p.1), Some(28));
        for bad in ["", "8d", "1y", "24H", "-1h"] {
            assert!(period(bad).is_none(), "{bad}");
        }
    }
}
