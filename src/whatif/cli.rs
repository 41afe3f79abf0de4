//! `gaitkeeper policy what-if`: the command line of the what-if (the window, the keys to try,
//! a whole file to try) and its two forms of answer, a table for people and JSON for scripts.
//! Reads the store the running config names, while the proxy runs.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::{Config, ConfigError};
use crate::policy::{Action, FloorsConfig, Mode, PolicyConfig, FLOOR_RULES};
use crate::runtime::{unix_millis, utc};
use crate::store::{Store, StoreError};

use super::{replay, PolicyOverrides, Selection, WhatIf, WhatIfError};

/// What `gaitkeeper policy` can do.
#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Replay the audit trail's logins through another policy: counts by decision then and
    /// now, the transitions, the users challenged more often, and what it does to logins that
    /// proved genuine or failed (docs/what-if.md).
    WhatIf(Box<WhatIfArgs>),
}

/// The window, the selection and the policy to try.
#[derive(Debug, clap::Args)]
pub struct WhatIfArgs {
    /// How far back from now: a number and m, h, d or w (`7d`, `36h`); the default is 7d.
    #[arg(long, value_name = "PERIOD", value_parser = parse_period, conflicts_with_all = ["from", "to"])]
    pub since: Option<Duration>,
    /// Start of the window (RFC 3339, e.g. 2025-03-01T00:00:00Z, or a date).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<SystemTime>,
    /// End of the window, exclusive (RFC 3339 or a date; default now).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<SystemTime>,
    /// Only this app's logins (`apps[].name`).
    #[arg(long)]
    pub app: Option<String>,
    /// Only this route's logins (`routes[].name`).
    #[arg(long)]
    pub route: Option<String>,
    /// Try a whole config file's policy (top level, apps and routes); the keys below apply
    /// over it.
    #[arg(long = "try", value_name = "FILE")]
    pub tried: Option<PathBuf>,
    /// `enforce` or `shadow`.
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<Mode>,
    /// Risks below this are allowed (0 to 1).
    #[arg(long, value_name = "RISK", value_parser = parse_risk)]
    pub allow_below: Option<f64>,
    /// Risks at or above this are blocked (0 to 1).
    #[arg(long, value_name = "RISK", value_parser = parse_risk)]
    pub block_at: Option<f64>,
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub enrolling: Option<Action>,
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub enrolling_bot: Option<Action>,
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub on_missing_telemetry: Option<Action>,
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub on_invalid_telemetry: Option<Action>,
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub on_replayed_token: Option<Action>,
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub on_store_error: Option<Action>,
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub on_scoring_error: Option<Action>,
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub on_state_error: Option<Action>,
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub on_no_factor: Option<Action>,
    #[arg(long, value_name = "ACTION", value_parser = parse_action)]
    pub on_unreadable_login: Option<Action>,
    /// A rule's risk floor, e.g. `--floor no_input=0.95` (repeatable).
    #[arg(long = "floor", value_name = "RULE=RISK", value_parser = parse_floor)]
    pub floors: Vec<(&'static str, f64)>,
    /// `text` (a table) or `json` (for scripts).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Why `policy what-if` could not answer. The Display form says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("--from ({from}) must be before --to ({to})")]
    EmptyWindow { from: String, to: String },
    #[error("cannot read the policy to try: {0}")]
    Tried(#[source] ConfigError),
    #[error(transparent)]
    WhatIf(#[from] WhatIfError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot write the report: {0}")]
    Write(#[from] std::io::Error),
}

/// The default window.
const DEFAULT_PERIOD: Duration = Duration::from_secs(7 * 86_400);
/// The longest window `--since` accepts (ten years: anything longer is a typo).
const MAX_PERIOD: Duration = Duration::from_secs(3650 * 86_400);

/// Runs one `policy` command against the store `config` names, writing to `out`.
pub fn run(config: &Config, command: PolicyCommand, out: &mut dyn Write) -> Result<(), CliError> {
    let PolicyCommand::WhatIf(args) = command;
    let (selection, tried, format) = prepare(config, *args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    let report = runtime.block_on(async {
        let store =
            Store::open(&config.store, &config.server.data_dir, &config.secrets.key).await?;
        let report = replay(&store, &selection, &tried).await;
        store.close().await;
        Ok::<_, CliError>(report?)
    })?;
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &report).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Text => write_text(&report, out)?,
    }
    Ok(())
}

/// The selection and the policy to try, checked before the store is opened.
fn prepare(
    config: &Config,
    args: WhatIfArgs,
) -> Result<(Selection, PolicyOverrides, Format), CliError> {
    let now = SystemTime::now();
    let (from, to) = match (args.since, args.from, args.to) {
        (Some(period), _, _) => (
            now.checked_sub(period).unwrap_or(SystemTime::UNIX_EPOCH),
            now,
        ),
        (None, None, to) => {
            let to = to.unwrap_or(now);
            (
                to.checked_sub(DEFAULT_PERIOD)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
                to,
            )
        }
        (None, Some(from), to) => (from, to.unwrap_or(now)),
    };
    if from >= to {
        return Err(CliError::EmptyWindow {
            from: utc(from),
            to: utc(to),
        });
    }
    let selection = Selection {
        from_ms: unix_millis(from),
        // `now` itself is in the window.
        to_ms: unix_millis(to).saturating_add(u64::from(args.to.is_none())),
        app: args.app,
        route: args.route,
    };
    let base = match &args.tried {
        Some(file) => PolicyOverrides::of(&Config::load(file).map_err(CliError::Tried)?),
        None => PolicyOverrides::of(config),
    };
    let floors = (!args.floors.is_empty()).then(|| {
        let mut f = FloorsConfig::default();
        for (rule, risk) in &args.floors {
            let slot = match *rule {
                "insufficient_evidence" => &mut f.insufficient_evidence,
                "synthetic_input" => &mut f.synthetic_input,
                "no_input" => &mut f.no_input,
                "timeline_mismatch" => &mut f.timeline_mismatch,
                "replayed_pattern" => &mut f.replayed_pattern,
                _ => &mut f.missing_usual_input,
            };
            *slot = Some(*risk);
        }
        f
    });
    let keys = PolicyConfig {
        mode: args.mode,
        allow_below: args.allow_below,
        block_at: args.block_at,
        enrolling: args.enrolling,
        on_missing_telemetry: args.on_missing_telemetry,
        on_invalid_telemetry: args.on_invalid_telemetry,
        on_replayed_token: args.on_replayed_token,
        on_store_error: args.on_store_error,
        on_scoring_error: args.on_scoring_error,
        on_state_error: args.on_state_error,
        on_no_factor: args.on_no_factor,
        on_unreadable_login: args.on_unreadable_login,
        enrolling_bot: args.enrolling_bot,
        floors,
    };
    Ok((selection, base.with_keys(keys)?, args.format))
}

fn parse_period(text: &str) -> Result<Duration, String> {
    let expected =
        || format!("expected a period such as \"7d\", \"36h\", \"90m\" or \"2w\", found {text:?}");
    let (number, unit) = crate::config::number_and_unit(text.trim()).ok_or_else(expected)?;
    let minutes = match unit {
        "m" => Some(number),
        "h" => number.checked_mul(60),
        "d" => number.checked_mul(1440),
        "w" => number.checked_mul(7 * 1440),
        _ => return Err(expected()),
    };
    match minutes
        .and_then(|m| m.checked_mul(60))
        .map(Duration::from_secs)
    {
        Some(period) if period > Duration::ZERO && period <= MAX_PERIOD => Ok(period),
        _ => Err(format!("{text:?} is outside 1m to 3650d")),
    }
}

/// An RFC 3339 time (`2025-03-01T12:00:00Z`, `…T12:00:00.250+02:00`) or a date
/// (`2025-03-01`, midnight UTC).
fn parse_time(text: &str) -> Result<SystemTime, String> {
    let expected = || {
        format!("expected an RFC 3339 time such as 2025-03-01T12:00:00Z (or a date, 2025-03-01), found {text:?}")
    };
    let t = text.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = t.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    let date = (|| {
        if t.get(4) != Some(&b'-') || t.get(7) != Some(&b'-') {
            return None;
        }
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let days_in = match m {
            2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            1..=12 => 31,
            _ => return None,
        };
        (1..=days_in).contains(&d).then_some((y, m, d))
    })()
    .ok_or_else(expected)?;
    let mut millis = days_from_civil(date.0, date.1, date.2) * 86_400_000;
    if t.len() > 10 {
        let time = (|| {
            if !matches!(t[10], b'T' | b't' | b' ')
                || t.get(13) != Some(&b':')
                || t.get(16) != Some(&b':')
            {
                return None;
            }
            let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
            if h > 23 || mi > 59 || s > 60 {
                return None;
            }
            let mut at = 19;
            let mut ms = 0;
            if t.get(at) == Some(&b'.') {
                let start = at + 1;
                at = start;
                while t.get(at).is_some_and(u8::is_ascii_digit) {
                    at += 1;
                }
                let fraction = t.get(start..at.min(start + 3))?;
                if fraction.is_empty() {
                    return None;
                }
                ms = num(start..start + fraction.len())? * 10i64.pow(3 - fraction.len() as u32);
            }
            let offset = match t.get(at..)? {
                b"Z" | b"z" => 0,
                [sign @ (b'+' | b'-'), ..] if t.len() == at + 6 && t[at + 3] == b':' => {
                    let (oh, om) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
                    if oh > 23 || om > 59 {
                        return None;
                    }
                    let minutes = oh * 60 + om;
                    if *sign == b'+' {
                        minutes
                    } else {
                        -minutes
                    }
                }
                _ => return None,
            };
            Some(((h * 60 + mi - offset) * 60 + s) * 1000 + ms)
        })()
        .ok_or_else(expected)?;
        millis += time;
    }
    u64::try_from(millis)
        .ok()
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .ok_or_else(|| format!("{text:?} is before 1970"))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's days-from-civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_risk(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a risk from 0 to 1, found {text:?}")),
    }
}

fn parse_action(text: &str) -> Result<Action, String> {
    super::action_named(text.trim())
        .ok_or_else(|| format!("expected allow, challenge or block, found {text:?}"))
}

fn parse_mode(text: &str) -> Result<Mode, String> {
    match text.trim() {
        "enforce" => Ok(Mode::Enforce),
        "shadow" => Ok(Mode::Shadow),
        _ => Err(format!("expected enforce or shadow, found {text:?}")),
    }
}

fn parse_floor(text: &str) -> Result<(&'static str, f64), String> {
    let (rule, risk) = text
        .split_once('=')
        .ok_or_else(|| format!("expected RULE=RISK such as no_input=0.95, found {text:?}"))?;
    let rule = FLOOR_RULES
        .iter()
        .find(|r| **r == rule.trim())
        .ok_or_else(|| {
            format!(
                "unknown rule {rule:?}; the rules with a floor are {}",
                FLOOR_RULES.join(", ")
            )
        })?;
    Ok((rule, parse_risk(risk)?))
}

/// The report as a table for people.
fn write_text(r: &WhatIf, out: &mut dyn Write) -> std::io::Result<()> {
    if let Some(s) = &r.selection {
        let at = |ms: u64| utc(SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
        writeln!(
            out,
            "Logins from {} to {}, app {}, route {}",
            at(s.from_ms),
            at(s.to_ms),
            s.app.as_deref().unwrap_or("(every)"),
            s.route.as_deref().unwrap_or("(every)")
        )?;
    }
    let f = &r.fidelity;
    writeln!(
        out,
        "{} logins replayed from {} audit records: {} exactly, {} inferred from their rule (recorded before gaitkeeper kept every input of the policy); {} could not be replayed",
        r.logins, r.records, f.exact, f.inferred, f.unreplayable
    )?;
    if f.factor_assumed > 0 {
        writeln!(
            out,
            "{} would now be challenged where nobody asked then whether the user has a second factor: taken that they have",
            f.factor_assumed
        )?;
    }
    if f.route_unknown > 0 {
        writeln!(
            out,
            "{} are of an app or route the tried config does not have: replayed with the app's or top-level policy",
            f.route_unknown
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<12}{:>12}{:>12}{:>10}   {:>12}{:>12}",
        "decision", "then", "now", "change", "acted then", "acted now"
    )?;
    for action in super::ACTIONS {
        let (then, now) = (r.decisions.then.of(action), r.decisions.now.of(action));
        writeln!(
            out,
            "{:<12}{:>12}{:>12}{:>+10}   {:>12}{:>12}",
            action.as_str(),
            then,
            now,
            now as i64 - then as i64,
            r.actions.then.of(action),
            r.actions.now.of(action)
        )?;
    }
    writeln!(
        out,
        "(acted: what gaitkeeper does; shadow mode forwards every login)"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<16}{:>12}{:>12}{:>12}",
        "then \\ now", "allow", "challenge", "block"
    )?;
    for from in super::ACTIONS {
        let cell = |to: Action| {
            r.transitions
                .iter()
                .find(|t| t.from == from && t.to == to)
                .map_or(0, |t| t.logins)
        };
        writeln!(
            out,
            "{:<16}{:>12}{:>12}{:>12}",
            from.as_str(),
            cell(Action::Allow),
            cell(Action::Challenge),
            cell(Action::Block)
        )?;
    }
    writeln!(out)?;
    let u = &r.users;
    writeln!(
        out,
        "users: {} seen; challenged then {}, now {}; challenged more often {}, less often {}",
        u.seen,
        u.challenged_then,
        u.challenged_now,
        u.challenged_more_often,
        u.challenged_less_often
    )?;
    let g = &r.genuine;
    writeln!(
        out,
        "genuine logins (the app accepted them or a challenge passed): {}; challenged then {}, now {}; blocked then {}, now {}; allowed then but stopped now {}",
        g.logins, g.challenged_then, g.challenged_now, g.blocked_then, g.blocked_now, g.newly_stopped
    )?;
    let f = &r.failed;
    writeln!(
        out,
        "failed logins (the app refused them or the challenge failed): {}; allowed then {}, now {}; stopped then but allowed now {}",
        f.logins, f.allowed_then, f.allowed_now, f.newly_allowed
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_take_minutes_to_weeks_and_refuse_the_rest() {
        assert_eq!(parse_period("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_period("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_period("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_period("90m"), Ok(Duration::from_secs(90 * 60)));
        for bad in [
            "7",
            "d",
            "7x",
            "-1d",
            "0d",
            "99999999999999999999d",
            "3651d",
            "",
        ] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_read_as_rfc_3339_or_dates() {
        let at = |t| unix_millis(parse_time(t).unwrap());
        assert_eq!(at("1970-01-01"), 0);
        assert_eq!(at("2000-02-29T00:00:00Z"), 951_782_400_000);
        assert_eq!(at("2026-11-28T21:20:05Z"), 1_795_900_805_000);
        assert_eq!(at("2026-11-28T23:20:05.5+02:00"), 1_795_900_805_500);
        assert_eq!(at("2026-11-28T20:20:05.123456-01:00"), 1_795_900_805_123);
        for bad in [
            "2025-02-29",
            "2025-13-01",
            "2025-01-01T25:00:00Z",
            "2025-01-01T10:00:00",
            "2025-01-01T10:00:00+2",
            "yesterday",
            "1969-12-31T00:00:00Z",
            "2025-01-01T10:00:00.Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn floors_name_a_rule_with_a_floor() {
        assert_eq!(parse_floor("no_input=0.95"), Ok(("no_input", 0.95)));
        assert!(parse_floor("made_up=0.5").unwrap_err().contains("no_input"));
        assert!(parse_floor("no_input=2").is_err());
        assert!(parse_floor("no_input").is_err());
    }
}
