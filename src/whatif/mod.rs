//! Policy what-if: what another policy would have done to the logins the audit trail holds.
//! Every recorded login is asked again, through the same [`policy::replay`] (and so
//! [`policy::decide`]) the proxy decides with, of the policy the tried settings give its app
//! and route; the answers are counted against what was decided then.
//!
//! Owns: reading a window of the trail's login records (`Store::each_login_record`, the
//! `audit_logins` table), joining a challenged login's decision and outcome by incident,
//! rebuilding what the policy was asked from a record (inferring it from the rule for records
//! written before gaitkeeper kept it), resolving the tried policy per app and route, and the
//! counts of the [`WhatIf`] report. Never names a user: users are counted, not listed.
//!
//! The library API, for the CLI (`gaitkeeper policy what-if`, [`cli`]) and the console:
//!
//! ```no_run
//! # async fn example(store: &gaitkeeper::store::Store, config: &gaitkeeper::config::Config)
//! # -> Result<(), gaitkeeper::whatif::WhatIfError> {
//! use gaitkeeper::whatif::{replay, PolicyOverrides, Selection};
//! let selection = Selection::last(std::time::Duration::from_secs(7 * 86_400));
//! let tried = PolicyOverrides::of(config).with_keys(gaitkeeper::policy::PolicyConfig {
//!     allow_below: Some(0.5),
//!     ..Default::default()
//! })?;
//! let report = replay(store, &selection, &tried).await?; // serialisable: serde_json::to_string
//! println!("{} logins would be challenged", report.decisions.now.challenge);
//! # Ok(()) }
//! ```
//!
//! What counts as proof: a login is *genuine* when the app accepted it (`outcome: verified`)
//! or its user passed a challenge; it *failed* when the app refused it or the challenge
//! failed. Blocked, expired and unanswered logins are neither.

pub mod cli;

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Config;
use crate::policy::{self, Action, FactorCheck, Finding, Inputs, Mode, Policy, PolicyConfig};
use crate::runtime::unix_millis;
use crate::store::{LoginRecord, LoginRecordQuery, Store, StoreError};

/// Most login records one what-if reads: past it, it stops and asks for a narrower window
/// (the join of challenged logins and the per-user counts grow with the window).
pub const MAX_RECORDS: u64 = 20_000_000;

/// Which logins to replay: a time window, optionally one app and one route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// Unix milliseconds, inclusive.
    pub from_ms: u64,
    /// Unix milliseconds, exclusive.
    pub to_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

impl Selection {
    /// The last `period` up to now, every app and route.
    pub fn last(period: Duration) -> Selection {
        let now = unix_millis(SystemTime::now());
        Selection {
            from_ms: now.saturating_sub(period.as_millis().min(u128::from(u64::MAX)) as u64),
            to_ms: now.saturating_add(1),
            app: None,
            route: None,
        }
    }
}

/// Why a what-if could not be answered. The Display form says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum WhatIfError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the tried policy is unusable for {place}: `policy.{key}`: {message}")]
    Policy {
        place: String,
        key: &'static str,
        message: String,
    },
    #[error("the window holds more than {MAX_RECORDS} login records; narrow it with --since, --from/--to, --app or --route")]
    TooMany,
}

/// A policy's keys, per app and route, as a config sets them.
#[derive(Clone, Debug)]
struct Policies {
    top: PolicyConfig,
    /// Each app's block (already over the top level), and its routes' blocks by name.
    apps: HashMap<String, (PolicyConfig, HashMap<String, PolicyConfig>)>,
}

/// The policy to try: a config's policies (the running one, or a whole tried file's), with
/// keys over every route's.
#[derive(Clone, Debug)]
pub struct PolicyOverrides {
    policies: Policies,
    keys: PolicyConfig,
}

impl PolicyOverrides {
    /// `config`'s policies unchanged (the top level, each app's, each route's), resolved as
    /// the proxy resolves them. With the running config this replays what was decided
    /// (modulo changes since); with a tried file (`--try`), that file's.
    pub fn of(config: &Config) -> PolicyOverrides {
        let apps = config
            .apps
            .iter()
            .map(|app| {
                let routes = app
                    .routes
                    .iter()
                    .map(|r| (r.name.clone(), r.policy.clone()))
                    .collect();
                (app.name.clone(), (app.policy.clone(), routes))
            })
            .collect();
        PolicyOverrides {
            policies: Policies {
                top: config.policy.clone(),
                apps,
            },
            keys: PolicyConfig::default(),
        }
    }

    /// These keys over every app's and route's settings (`--allow-below 0.5`: every route
    /// tries 0.5, also one that sets its own). Checked against every app and route.
    pub fn with_keys(mut self, keys: PolicyConfig) -> Result<PolicyOverrides, WhatIfError> {
        self.keys = keys;
        let p = &self.policies;
        let check = |policy: Policy, place: String| {
            policy
                .check()
                .map_err(|(key, message)| WhatIfError::Policy {
                    place,
                    key,
                    message,
                })
        };
        check(
            Policy::resolve(&p.top, &self.keys),
            "the top level".to_string(),
        )?;
        for (app, (app_policy, routes)) in &p.apps {
            for (route, route_policy) in routes {
                check(
                    Policy::resolve(app_policy, &self.keys.over(route_policy)),
                    format!("app {app:?}, route {route:?}"),
                )?;
            }
        }
        Ok(self)
    }

    /// The policy for a login of `app` and `route`, and whether the config has that route (a
    /// route it lacks gets its app's, or the top level's, policy).
    pub fn policy_for(&self, app: Option<&str>, route: Option<&str>) -> (Policy, bool) {
        let p = &self.policies;
        // Records written before apps existed are all the `default` app's.
        let Some((app_policy, routes)) = p.apps.get(app.unwrap_or("default")) else {
            return (Policy::resolve(&p.top, &self.keys), false);
        };
        match route.and_then(|r| routes.get(r)) {
            Some(route_policy) => (
                Policy::resolve(app_policy, &self.keys.over(route_policy)),
                true,
            ),
            None => (Policy::resolve(app_policy, &self.keys), false),
        }
    }
}

/// Logins by decision (or by action).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ByAction {
    pub allow: u64,
    pub challenge: u64,
    pub block: u64,
}

impl ByAction {
    fn add(&mut self, action: Action) {
        *match action {
            Action::Allow => &mut self.allow,
            Action::Challenge => &mut self.challenge,
            Action::Block => &mut self.block,
        } += 1;
    }

    pub fn of(&self, action: Action) -> u64 {
        match action {
            Action::Allow => self.allow,
            Action::Challenge => self.challenge,
            Action::Block => self.block,
        }
    }
}

/// The same logins, then (as recorded) and now (as the tried policy would have it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ThenNow {
    pub then: ByAction,
    pub now: ByAction,
}

/// One cell of the transition table: logins decided `from` then and `to` now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub from: Action,
    pub to: Action,
    pub logins: u64,
}

/// How faithfully the logins could be replayed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Fidelity {
    /// Replayed from what the policy was asked, as recorded.
    pub exact: u64,
    /// Recorded before gaitkeeper kept what the policy was asked: replayed from the rule that
    /// decided them and the (floored) risk. Exact unless the tried policy changes
    /// `floors` or the login would now be challenged (whether the user had a factor was not
    /// kept: taken that they had).
    pub inferred: u64,
    /// Could not be replayed at all (no decision or an unknown rule or finding in the
    /// record): left out of every other count.
    pub unreplayable: u64,
    /// Would now be challenged where nobody asked then whether the user has a second factor:
    /// taken that they have (else `on_no_factor` would decide).
    pub factor_assumed: u64,
    /// Of an app or route the tried config does not have: replayed with its app's (or the
    /// top-level) policy.
    pub route_unknown: u64,
}

/// Distinct users, by how often they would be challenged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Users {
    /// Users with at least one replayed login.
    pub seen: u64,
    pub challenged_then: u64,
    pub challenged_now: u64,
    /// Users with more challenged logins now than then.
    pub challenged_more_often: u64,
    pub challenged_less_often: u64,
}

/// Logins that proved genuine: the app accepted them or their user passed a challenge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Genuine {
    pub logins: u64,
    pub challenged_then: u64,
    pub challenged_now: u64,
    pub blocked_then: u64,
    pub blocked_now: u64,
    /// Allowed then, challenged or blocked now: the friction the tried policy adds.
    pub newly_stopped: u64,
}

/// Logins that failed: the app refused them or the challenge failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Failed {
    pub logins: u64,
    pub allowed_then: u64,
    pub allowed_now: u64,
    /// Challenged or blocked then, allowed now: what the tried policy lets through.
    pub newly_allowed: u64,
}

/// What the tried policy would have done to the selected logins. Decisions are the policy's
/// (recorded in shadow mode too); actions are what gaitkeeper does with them (shadow mode
/// forwards every login).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WhatIf {
    pub selection: Option<Selection>,
    /// Login records read (a challenged login has two).
    pub records: u64,
    /// Logins replayed (records joined by incident; unreplayable ones left out).
    pub logins: u64,
    pub fidelity: Fidelity,
    pub decisions: ThenNow,
    pub actions: ThenNow,
    /// Every pair of decisions then → now, unchanged ones included, in the order allow,
    /// challenge, block.
    pub transitions: Vec<Transition>,
    pub users: Users,
    pub genuine: Genuine,
    pub failed: Failed,
}

/// Replays every login of `selection` in `store`'s audit trail through the policy `tried`
/// gives its app and route.
pub async fn replay(
    store: &Store,
    selection: &Selection,
    tried: &PolicyOverrides,
) -> Result<WhatIf, WhatIfError> {
    let query = LoginRecordQuery {
        from_ms: i64::try_from(selection.from_ms).unwrap_or(i64::MAX),
        to_ms: i64::try_from(selection.to_ms).unwrap_or(i64::MAX),
        app: selection.app.clone(),
        route: selection.route.clone(),
    };
    let mut replayer = Replayer::new(selection, tried);
    store
        .each_login_record(&query, |record| replayer.add(record))
        .await?;
    Ok(replayer.finish())
}

/// A what-if fed one login record at a time, for a reader that counts other things in the
/// same pass (the console's overview): [`replay`] is `each_login_record` into one of these.
pub struct Replayer<'a> {
    selection: Selection,
    tally: Tally<'a>,
    /// A challenged login's first record, until its other one comes (by incident).
    pending: HashMap<String, Login>,
}

impl<'a> Replayer<'a> {
    pub fn new(selection: &Selection, tried: &'a PolicyOverrides) -> Replayer<'a> {
        Replayer {
            selection: selection.clone(),
            tally: Tally::new(tried),
            pending: HashMap::new(),
        }
    }

    /// Whether `record` is of the selection (its window, app and route).
    pub fn wants(&self, record: &LoginRecord<'_>) -> bool {
        let s = &self.selection;
        u64::try_from(record.at_ms).is_ok_and(|at| at >= s.from_ms && at < s.to_ms)
            && s.app.as_deref().is_none_or(|a| record.app == Some(a))
            && s.route.as_deref().is_none_or(|r| record.route == Some(r))
    }

    /// Adds a record of the selection (see [`Replayer::wants`]). Past [`MAX_RECORDS`] it
    /// refuses, asking for a narrower window.
    pub fn add(&mut self, record: &LoginRecord<'_>) -> Result<(), WhatIfError> {
        let tally = &mut self.tally;
        if tally.records >= MAX_RECORDS {
            return Err(WhatIfError::TooMany);
        }
        tally.records += 1;
        let login = Login::of(record, &mut tally.places);
        // A challenged login has a decision and an outcome record: joined by incident.
        // Every other login is one record, counted at once.
        match (login.challenged, record.incident) {
            (true, Some(incident)) => match self.pending.get_mut(incident) {
                Some(earlier) => earlier.merge(login),
                None => {
                    self.pending.insert(incident.to_string(), login);
                }
            },
            _ => tally.count(login),
        }
        Ok(())
    }

    pub fn finish(mut self) -> WhatIf {
        for (_, login) in std::mem::take(&mut self.pending) {
            self.tally.count(login);
        }
        let records = self.tally.records;
        let mut report = self.tally.finish();
        report.records = records;
        report.selection = Some(self.selection);
        report
    }
}

/// What became of a login, as far as its records tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proof {
    Genuine,
    Failed,
    Unknown,
}

/// One login, as its records describe it.
#[derive(Clone, Debug)]
struct Login {
    /// The app and route, as an index into the replayer's [`Places`].
    place: u32,
    user: Option<[u8; 32]>,
    /// Part of a challenge (its decision or its outcome record).
    challenged: bool,
    then: Option<(Action, Mode)>,
    inputs: Option<(Inputs, bool)>,
    floors: Option<String>,
    proof: Proof,
}

fn action_named(text: &str) -> Option<Action> {
    match text {
        "allow" => Some(Action::Allow),
        "challenge" => Some(Action::Challenge),
        "block" => Some(Action::Block),
        _ => None,
    }
}

impl Login {
    fn of(r: &LoginRecord<'_>, places: &mut Places<'_>) -> Login {
        let challenged = r.outcome == Some("challenged")
            || r.kind.starts_with("challenge.")
            || r.challenge.is_some();
        let genuine = r.outcome == Some("verified")
            || r.challenge == Some("passed")
            || r.kind == "challenge.passed";
        let failed = r.outcome == Some("failed")
            || r.outcome == Some("challenge_failed")
            || r.challenge == Some("failed")
            || r.kind == "challenge.failed";
        let mode = match r.mode {
            Some("shadow") => Mode::Shadow,
            _ => Mode::Enforce,
        };
        Login {
            place: places.of(r.app, r.route),
            user: r.user.and_then(|u| u.try_into().ok()),
            challenged,
            then: r.decision.and_then(action_named).map(|d| (d, mode)),
            inputs: inputs_of(r),
            floors: r.floors.map(str::to_string),
            proof: if genuine {
                Proof::Genuine
            } else if failed {
                Proof::Failed
            } else {
                Proof::Unknown
            },
        }
    }

    /// Adds what another record of the same login says (its outcome).
    fn merge(&mut self, other: Login) {
        if self.proof != Proof::Genuine && other.proof != Proof::Unknown {
            self.proof = other.proof;
        }
        if self.then.is_none() {
            self.then = other.then;
        }
        if self.inputs.is_none() {
            self.inputs = other.inputs;
        }
    }
}

/// What the policy was asked about the login of `r`, and whether that was inferred (a record
/// older than the `finding` field); `None` when it cannot be told.
fn inputs_of(r: &LoginRecord<'_>) -> Option<(Inputs, bool)> {
    let regulation = r.regulation.and_then(action_named);
    if let Some(code) = r.finding {
        let finding = Finding::from_code(code, r.risk, regulation)?;
        return Some((
            Inputs {
                finding,
                model_risk: r.model_risk,
                factor: r.factor.and_then(FactorCheck::named),
                unheld: r.unheld,
            },
            false,
        ));
    }
    // An older record: the rule that decided says what was found. The policy decided to
    // challenge only a user with a factor (else the rule is `on_no_factor`).
    let decision = r.decision.and_then(action_named)?;
    let scored = || r.risk.map(|risk| Finding::Scored { risk });
    let (finding, factor) = match r.rule? {
        "allow_below" | "block_at" | "between_thresholds" => (scored()?, None),
        "on_no_factor" => (scored()?, Some(FactorCheck::None)),
        "enrolling" => (Finding::Enrolling, None),
        "enrolling_bot" => (Finding::EnrollingFlagged, None),
        "on_missing_telemetry" => (Finding::MissingTelemetry, None),
        "on_invalid_telemetry" => (Finding::InvalidTelemetry, None),
        "on_replayed_token" => (Finding::ReplayedToken, None),
        "on_store_error" => (Finding::StoreError, None),
        "on_scoring_error" => (Finding::ScoringError, None),
        "on_state_error" => (Finding::StateError, None),
        "on_unreadable_login" => (Finding::UnreadableLogin, None),
        "machine" => (Finding::MachineClient, None),
        "regulation" => (Finding::Regulated { action: decision }, None),
        _ => return None,
    };
    let factor = factor.or((decision == Action::Challenge).then_some(FactorCheck::Has));
    Some((
        Inputs {
            finding,
            model_risk: None,
            factor,
            unheld: false,
        },
        true,
    ))
}

/// The (app, route) pairs of the records read, each once, with the policy the tried settings
/// give it: a login keeps an index, not two strings (a week is a million logins, and a
/// config has a few routes).
/// An app and a route, with their policy and whether the tried config has the route.
struct Place {
    app: Option<String>,
    route: Option<String>,
    policy: (Policy, bool),
}

struct Places<'a> {
    tried: &'a PolicyOverrides,
    known: Vec<Place>,
    last: Option<u32>,
}

impl<'a> Places<'a> {
    fn new(tried: &'a PolicyOverrides) -> Places<'a> {
        Places {
            tried,
            known: Vec::new(),
            last: None,
        }
    }

    fn of(&mut self, app: Option<&str>, route: Option<&str>) -> u32 {
        let same = |i: u32| {
            let place = &self.known[i as usize];
            place.app.as_deref() == app && place.route.as_deref() == route
        };
        // Most records are of the same route as the one before.
        if let Some(last) = self.last.filter(|&i| same(i)) {
            return last;
        }
        let found = (0..self.known.len() as u32).find(|&i| same(i));
        let i = found.unwrap_or_else(|| {
            let policy = self.tried.policy_for(app, route);
            self.known.push(Place {
                app: app.map(str::to_string),
                route: route.map(str::to_string),
                policy,
            });
            self.known.len() as u32 - 1
        });
        self.last = Some(i);
        i
    }

    fn policy(&self, place: u32) -> (Policy, bool) {
        self.known[place as usize].policy
    }
}

/// Hashes a user's store key a word at a time (FxHash's mix, Murmur3's finaliser): the keys
/// are HMAC outputs under the server's secret, beyond anyone's choosing, so no keyed hash is
/// needed to keep the table balanced, and SipHash was a tenth of a what-if's time.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn finish(&self) -> u64 {
        // Murmur3's finaliser: every input bit reaches the low bits the table indexes by.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The counts, as logins are replayed.
struct Tally<'a> {
    /// The apps and routes seen, and their policies (a few: resolved once).
    places: Places<'a>,
    records: u64,
    report: WhatIf,
    transitions: [[u64; 3]; 3],
    /// Per user: challenged logins then, now.
    users: HashMap<[u8; 32], (u32, u32), BuildHasherDefault<KeyHasher>>,
}

fn index(action: Action) -> usize {
    match action {
        Action::Allow => 0,
        Action::Challenge => 1,
        Action::Block => 2,
    }
}

const ACTIONS: [Action; 3] = [Action::Allow, Action::Challenge, Action::Block];

fn acted(decision: Action, mode: Mode) -> Action {
    match mode {
        Mode::Enforce => decision,
        Mode::Shadow => Action::Allow,
    }
}

impl<'a> Tally<'a> {
    fn new(tried: &'a PolicyOverrides) -> Tally<'a> {
        Tally {
            places: Places::new(tried),
            records: 0,
            report: WhatIf::default(),
            transitions: [[0; 3]; 3],
            users: HashMap::default(),
        }
    }

    fn count(&mut self, login: Login) {
        let (Some((then, then_mode)), Some((inputs, inferred))) = (login.then, login.inputs) else {
            self.report.fidelity.unreplayable += 1;
            return;
        };
        let (policy, known) = self.places.policy(login.place);
        let floors = login.floors.as_deref().unwrap_or("");
        let replayed = policy::replay(
            &policy,
            &inputs,
            floors.split(',').filter(|c| !c.is_empty()),
        );
        let now = replayed.verdict.decision;
        let r = &mut self.report;
        r.logins += 1;
        if inferred {
            r.fidelity.inferred += 1;
        } else {
            r.fidelity.exact += 1;
        }
        r.fidelity.factor_assumed += u64::from(replayed.factor_assumed);
        r.fidelity.route_unknown += u64::from(!known);
        r.decisions.then.add(then);
        r.decisions.now.add(now);
        r.actions.then.add(acted(then, then_mode));
        r.actions.now.add(replayed.verdict.action);
        self.transitions[index(then)][index(now)] += 1;
        match login.proof {
            Proof::Genuine => {
                let g = &mut r.genuine;
                g.logins += 1;
                g.challenged_then += u64::from(then == Action::Challenge);
                g.challenged_now += u64::from(now == Action::Challenge);
                g.blocked_then += u64::from(then == Action::Block);
                g.blocked_now += u64::from(now == Action::Block);
                g.newly_stopped += u64::from(then == Action::Allow && now != Action::Allow);
            }
            Proof::Failed => {
                let f = &mut r.failed;
                f.logins += 1;
                f.allowed_then += u64::from(then == Action::Allow);
                f.allowed_now += u64::from(now == Action::Allow);
                f.newly_allowed += u64::from(then != Action::Allow && now == Action::Allow);
            }
            Proof::Unknown => {}
        }
        if let Some(user) = login.user {
            let counts = self.users.entry(user).or_default();
            counts.0 += u32::from(then == Action::Challenge);
            counts.1 += u32::from(now == Action::Challenge);
        }
    }

    fn finish(mut self) -> WhatIf {
        let u = &mut self.report.users;
        for (then, now) in self.users.values() {
            u.seen += 1;
            u.challenged_then += u64::from(*then > 0);
            u.challenged_now += u64::from(*now > 0);
            u.challenged_more_often += u64::from(now > then);
            u.challenged_less_often += u64::from(now < then);
        }
        self.report.transitions = ACTIONS
            .iter()
            .flat_map(|from| ACTIONS.iter().map(move |to| (*from, *to)))
            .map(|(from, to)| Transition {
                from,
                to,
                logins: self.transitions[index(from)][index(to)],
            })
            .collect();
        self.report
    }
}
