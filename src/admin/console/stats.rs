//! What the overview adds up: the logins of a period (one per incident reference), by decision
//! over time, their risks split by what became of them, reasons, challenges and the users
//! challenged most. Read from the audit trail's login records (`Store::each_login_record`: the
//! settled hours from their packs, so a week of a million records is read in well under a
//! second), at most [`MAX_RECORDS`]; the overview says when a period held more.
//!
//! The one place the console aggregates.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::store::{LoginRecord, LoginRecordQuery, Store, StoreError, REASON_SEPARATOR};
use crate::whatif::{Replayer, WhatIf};

/// Most audit records one overview reads.
pub(super) const MAX_RECORDS: usize = 20_000_000;
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

/// Why reading stopped early.
enum Stop {
    Store(StoreError),
    Full,
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Store(e)
    }
}

/// Reads the period's login records (at most [`MAX_RECORDS`]) and adds them up; in the same
/// pass, feeds those of its selection to `replayer` (the what-if form's). A replay that cannot
/// be finished (the period held more than either reads) answers why instead.
pub(super) async fn overview(
    store: &Store,
    filter: &Filter,
    mut replayer: Option<Replayer<'_>>,
) -> Result<(Overview, Option<Result<WhatIf, String>>), StoreError> {
    let query = LoginRecordQuery {
        from_ms: i64::try_from(millis(filter.from)).unwrap_or(i64::MAX),
        to_ms: i64::try_from(millis(filter.to)).unwrap_or(i64::MAX),
        // Filtered here, where a record without an app is the `default` app's.
        app: None,
        route: None,
    };
    let mut summary = Summary::new(filter);
    let mut replay_failed = None;
    let read = store
        .each_login_record(&query, |record| {
            if summary.records >= MAX_RECORDS {
                return Err(Stop::Full);
            }
            summary.add(record);
            if let Some(replayer) = replayer.as_mut().filter(|r| r.wants(record)) {
                if let Err(e) = replayer.add(record) {
                    replay_failed = Some(e.to_string());
                }
            }
            Ok(())
        })
        .await;
    let truncated = match read {
        Ok(_) => false,
        Err(Stop::Full) => true,
        Err(Stop::Store(e)) => return Err(e),
    };
    let mut overview = summary.finish();
    overview.truncated = truncated;
    let replayed = replayer.map(|r| match (replay_failed, truncated) {
        (Some(why), _) => Err(why),
        (None, true) => Err(format!(
            "the period holds more than {MAX_RECORDS} login records: try the what-if on a shorter period"
        )),
        (None, false) => Ok(r.finish()),
    });
    Ok((overview, replayed))
}

/// One login as its records tell it.
#[derive(Default)]
struct Login {
    first_at: u64,
    decision: Option<usize>,
    risk: Option<f64>,
    /// Labels separated by [`REASON_SEPARATOR`].
    reasons: Option<String>,
    outcome: Option<(u64, String)>,
    challenge: Option<String>,
    user: Option<Vec<u8>>,
}

/// What one login adds to the numbers, borrowed from its record (or its joined records).
struct Counted<'a> {
    first_at: u64,
    decision: Option<usize>,
    risk: Option<f64>,
    reasons: Option<&'a str>,
    outcome: Option<&'a str>,
    challenge: Option<&'a str>,
    user: Option<&'a [u8]>,
}

/// The period's numbers as its login records are added (any order): pure, so it is tested
/// without a store. A login of one record is counted at once; a challenged login's records
/// (which share an incident reference) are joined first.
pub(super) struct Summary<'f> {
    filter: &'f Filter,
    from: u64,
    to: u64,
    bins: usize,
    records: usize,
    challenged_logins: HashMap<String, Login>,
    o: Overview,
    outcomes: HashMap<String, u64>,
    reasons: HashMap<String, u64>,
    challenged: HashMap<Vec<u8>, u64>,
}

/// Adds one to `name`'s count, allocating only for a name not seen before.
fn bump(counts: &mut HashMap<String, u64>, name: &str) {
    match counts.get_mut(name) {
        Some(n) => *n += 1,
        None => {
            counts.insert(name.to_string(), 1);
        }
    }
}

impl<'f> Summary<'f> {
    pub(super) fn new(filter: &'f Filter) -> Summary<'f> {
        let from = millis(filter.from);
        let bins = filter.bins.clamp(1, 60);
        Summary {
            filter,
            from,
            to: millis(filter.to).max(from + 1),
            bins,
            records: 0,
            challenged_logins: HashMap::new(),
            o: Overview {
                series: vec![[0; 3]; bins],
                ..Overview::default()
            },
            outcomes: HashMap::new(),
            reasons: HashMap::new(),
            challenged: HashMap::new(),
        }
    }

    pub(super) fn add(&mut self, r: &LoginRecord<'_>) {
        self.records += 1;
        let Some(decision) = r.decision else {
            return; // an unanswered challenge's expiry: its decision record tells the login
        };
        let app = r.app.unwrap_or("default");
        let route = r.route.unwrap_or("");
        if self.filter.app.as_deref().is_some_and(|a| a != app)
            || self.filter.route.as_deref().is_some_and(|a| a != route)
        {
            return;
        }
        let at = u64::try_from(r.at_ms).unwrap_or(0);
        self.o.newest = self.o.newest.max(Some(at_millis(at)));
        let Some(incident) = r.incident else {
            // A login of one record: counted as it is, nothing copied (most of a week).
            self.count(Counted {
                first_at: at,
                decision: DECISIONS.iter().position(|d| *d == decision),
                risk: r.risk,
                reasons: r.reasons,
                outcome: r.outcome,
                challenge: r.challenge,
                user: r.user,
            });
            return;
        };
        let login = self
            .challenged_logins
            .entry(incident.to_string())
            .or_insert_with(|| Login {
                first_at: at,
                ..Login::default()
            });
        login.first_at = login.first_at.min(at);
        if login.decision.is_none() {
            login.decision = DECISIONS.iter().position(|d| *d == decision);
        }
        if login.risk.is_none() {
            login.risk = r.risk;
        }
        if login.reasons.is_none() {
            login.reasons = r.reasons.map(str::to_string);
        }
        if login.user.is_none() {
            login.user = r.user.map(<[u8]>::to_vec);
        }
        if let Some(challenge) = r.challenge {
            login.challenge = Some(challenge.to_string());
        }
        if let Some(outcome) = r.outcome {
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

    fn count(&mut self, login: Counted<'_>) {
        let Some(decision) = login.decision else {
            return;
        };
        let o = &mut self.o;
        o.logins += 1;
        o.decisions[decision] += 1;
        let bin = ((login.first_at.saturating_sub(self.from)) as u128 * self.bins as u128
            / (self.to - self.from) as u128) as usize;
        o.series[bin.min(self.bins - 1)][decision] += 1;
        let outcome = login.outcome.unwrap_or("pending");
        bump(&mut self.outcomes, outcome);
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
        for reason in login
            .reasons
            .into_iter()
            .flat_map(|r| r.split(REASON_SEPARATOR))
        {
            bump(&mut self.reasons, reason);
        }
        if DECISIONS[decision] == "challenge" {
            match login.challenge {
                Some("passed") => o.challenges.passed += 1,
                Some("failed") => o.challenges.failed += 1,
                Some("expired") | Some("evicted") => o.challenges.abandoned += 1,
                _ => o.challenges.pending += 1,
            }
            if let Some(user) = login.user {
                match self.challenged.get_mut(user) {
                    Some(n) => *n += 1,
                    None => {
                        self.challenged.insert(user.to_vec(), 1);
                    }
                }
            }
        }
    }

    pub(super) fn finish(mut self) -> Overview {
        for login in std::mem::take(&mut self.challenged_logins).into_values() {
            self.count(Counted {
                first_at: login.first_at,
                decision: login.decision,
                risk: login.risk,
                reasons: login.reasons.as_deref(),
                outcome: login.outcome.as_ref().map(|(_, o)| o.as_str()),
                challenge: login.challenge.as_deref(),
                user: login.user.as_deref(),
            });
        }
        let mut o = self.o;
        o.records = self.records;
        o.outcomes = top(self.outcomes.into_iter(), usize::MAX);
        o.reasons = top(self.reasons.into_iter(), TOP);
        o.challenged_users = top(
            self.challenged
                .into_iter()
                .map(|(k, n)| (hex::encode(k), n)),
            TOP,
        );
        o
    }
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

fn at_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
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

    /// A login record as `audit_logins` gives it: the incident only on a challenge's records.
    fn record(
        at: u64,
        kind: &'static str,
        incident: Option<&'static str>,
        decision: &'static str,
        outcome: &'static str,
    ) -> LoginRecord<'static> {
        LoginRecord {
            at_ms: at as i64,
            kind,
            incident,
            user: None,
            app: None,
            route: Some("login"),
            finding: None,
            regulation: None,
            risk: None,
            model_risk: None,
            floors: None,
            factor: None,
            unheld: false,
            decision: Some(decision),
            rule: None,
            mode: None,
            outcome: Some(outcome),
            challenge: None,
            reasons: None,
        }
    }

    fn summarise(records: &[LoginRecord<'_>], filter: &Filter) -> Overview {
        let mut summary = Summary::new(filter);
        for r in records {
            summary.add(r);
        }
        summary.finish()
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
        let user = [0xab; 32];
        let records = vec![
            // Allowed, verified by the app.
            LoginRecord {
                risk: Some(0.12),
                reasons: Some("deviation: key_flight"),
                ..record(t + 10, "login.outcome", None, "allow", "verified")
            },
            // Allowed, refused by the app.
            LoginRecord {
                risk: Some(0.33),
                ..record(t + 20, "login.outcome", None, "allow", "failed")
            },
            // Challenged (decision record), then passed.
            LoginRecord {
                risk: Some(0.55),
                user: Some(&user),
                ..record(
                    t + 30,
                    "login.decision",
                    Some("GK-C"),
                    "challenge",
                    "challenged",
                )
            },
            LoginRecord {
                risk: Some(0.55),
                user: Some(&user),
                challenge: Some("passed"),
                ..record(
                    t + 900_000,
                    "challenge.passed",
                    Some("GK-C"),
                    "challenge",
                    "verified",
                )
            },
            // Challenged, never answered yet.
            LoginRecord {
                user: Some(&user),
                route: Some("api"),
                ..record(
                    t + 40,
                    "login.decision",
                    Some("GK-D"),
                    "challenge",
                    "challenged",
                )
            },
            // Blocked.
            LoginRecord {
                risk: Some(0.97),
                reasons: Some("synthetic_input\u{1e}deviation: key_flight"),
                ..record(t + 3_599_999, "login.decision", None, "block", "blocked")
            },
            // An expiry record without a decision tells nothing of its own.
            LoginRecord {
                decision: None,
                outcome: None,
                challenge: Some("expired"),
                ..record(t + 50, "challenge.expired", Some("GK-F"), "", "")
            },
        ];
        let o = summarise(&records, &filter());
        assert_eq!(o.records, 7);
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
        assert_eq!(o.challenged_users, vec![("ab".repeat(32), 2)]);
        assert_eq!(
            o.reasons,
            vec![
                ("deviation: key_flight".to_string(), 2),
                ("synthetic_input".to_string(), 1)
            ]
        );
        assert_eq!(o.newest, Some(at_millis(t + 3_599_999)));

        let only_api = Filter {
            route: Some("api".into()),
            ..filter()
        };
        let o = summarise(&records, &only_api);
        assert_eq!((o.logins, o.decisions), (1, [0, 1, 0]));
        let default_app = Filter {
            app: Some("default".into()),
            ..filter()
        };
        assert_eq!(summarise(&records, &default_app).logins, 5);
        let other_app = Filter {
            app: Some("shop".into()),
            ..filter()
        };
        assert_eq!(summarise(&records, &other_app).logins, 0);
    }

    #[test]
    fn reason_labels_never_carry_values_or_ranges() {
        let reasons = json!([{"code": "deviation", "feature": "mouse_speed", "usual": [106.0, 247.0], "value": 400.0}, {"code": "no_input"}, 7]);
        let labels = crate::store::reason_labels(Some(&reasons));
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
