//! The audit trail's login records as plain columns (`audit_logins`, migration 0010): what
//! `policy what-if` reads, by time, without parsing each record's JSON detail. A row is
//! written with its audit event in the same transaction and deleted with it by the cascade.

use futures_util::TryStreamExt;

use super::*;

/// The kinds of audit record that describe a login (and so get a row here).
pub(crate) const LOGIN_KINDS: [&str; 5] = [
    "login.decision",
    "login.outcome",
    "challenge.passed",
    "challenge.failed",
    "challenge.expired",
];

/// Most bytes of the `floors` list kept.
const MAX_FLOORS_BYTES: usize = 256;

/// The columns of one login record, taken from its detail document (the audit record).
pub(super) struct LoginColumns<'a> {
    app: Option<&'a str>,
    route: Option<&'a str>,
    finding: Option<&'a str>,
    regulation: Option<&'a str>,
    risk: Option<f64>,
    model_risk: Option<f64>,
    floors: Option<String>,
    factor: Option<&'a str>,
    unheld: bool,
    decision: Option<&'a str>,
    rule: Option<&'a str>,
    mode: Option<&'a str>,
    outcome: Option<&'a str>,
    challenge: Option<&'a str>,
    reasons: Option<String>,
}

/// Separates a record's reason labels in the `reasons` column.
pub const REASON_SEPARATOR: char = '\u{1e}';

/// The labels of a record's reasons (its `reasons` list): `code`, or `code: feature` for a
/// feature's deviation; at most 16, each part cut to 48 characters. Never a value or a user's
/// range: what the console shows and the `reasons` column keeps.
pub fn reason_labels(reasons: Option<&serde_json::Value>) -> Vec<String> {
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

/// The columns of `record`, when it is a login record.
pub(super) fn login_columns<'a>(record: &NewAuditRecord<'a>) -> Option<LoginColumns<'a>> {
    if !LOGIN_KINDS.contains(&record.kind) {
        return None;
    }
    let detail = record.detail;
    let text = |name: &str| detail.get(name).and_then(|v| v.as_str());
    let number = |name: &str| {
        detail
            .get(name)
            .and_then(|v| v.as_f64())
            .filter(|r| r.is_finite())
    };
    let mut floors = String::new();
    for code in detail
        .get("reasons")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("code").and_then(|c| c.as_str()))
        .filter(|c| crate::policy::FLOOR_RULES.contains(c))
    {
        if floors.len() + code.len() + 1 > MAX_FLOORS_BYTES {
            break;
        }
        if !floors.split(',').any(|kept| kept == code) {
            if !floors.is_empty() {
                floors.push(',');
            }
            floors.push_str(code);
        }
    }
    Some(LoginColumns {
        app: text("app"),
        route: text("route"),
        finding: text("finding"),
        regulation: text("regulation"),
        risk: number("risk"),
        model_risk: number("model_risk"),
        floors: (!floors.is_empty()).then_some(floors),
        factor: text("factor"),
        unheld: detail.get("unheld").and_then(|v| v.as_bool()) == Some(true),
        decision: text("decision"),
        rule: text("policy"),
        mode: text("mode"),
        outcome: text("outcome"),
        challenge: text("challenge"),
        reasons: {
            let labels = reason_labels(detail.get("reasons"));
            (!labels.is_empty()).then(|| labels.join(&REASON_SEPARATOR.to_string()))
        },
    })
}

/// Parameters per row of [`insert_login_rows`].
const COLUMNS: usize = 20;

/// Inserts the rows of login records just stored (each finds its event by its record id); a
/// record delivered twice keeps its first row.
pub(super) async fn insert_login_rows<'e, E>(
    executor: E,
    backend: Backend,
    rows: &[(&NewAuditRecord<'_>, LoginColumns<'_>)],
) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut values = String::with_capacity(rows.len() * COLUMNS * 5 + 64);
    for r in 0..rows.len() {
        if r > 0 {
            values.push_str(", ");
        }
        let p = |c: usize| match backend {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${}", r * COLUMNS + c + 1),
        };
        values.push_str("((SELECT id FROM audit_events WHERE record_id = ");
        values.push_str(&p(0));
        values.push(')');
        for c in 1..COLUMNS {
            values.push_str(", ");
            values.push_str(&p(c));
        }
        values.push(')');
    }
    let sql = format!(
        "INSERT INTO audit_logins (event_id, at, kind, incident, user_key, app, route, finding, \
         regulation, risk, model_risk, floors, factor, unheld, decision, rule, mode, outcome, \
         challenge, reasons) VALUES {values} ON CONFLICT (event_id) DO NOTHING"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (record, c) in rows {
        let text = |v: Option<&str>| v.map(str::to_string);
        query = query
            .bind(record.record_id.to_string())
            .bind(millis(record.at))
            .bind(record.kind.to_string())
            .bind(record.incident.to_string())
            .bind(record.user.map(|k| k.0.to_vec()))
            .bind(text(c.app))
            .bind(text(c.route))
            .bind(text(c.finding))
            .bind(text(c.regulation))
            .bind(c.risk)
            .bind(c.model_risk)
            .bind(c.floors.clone())
            .bind(text(c.factor))
            .bind(i64::from(c.unheld))
            .bind(text(c.decision))
            .bind(text(c.rule))
            .bind(text(c.mode))
            .bind(text(c.outcome))
            .bind(text(c.challenge))
            .bind(c.reasons.clone());
    }
    query
        .execute(executor)
        .await
        .map_err(db("append audit login rows"))?;
    Ok(())
}

/// Which login records to read.
#[derive(Clone, Debug, Default)]
pub struct LoginRecordQuery {
    /// Unix milliseconds, inclusive.
    pub from_ms: i64,
    /// Unix milliseconds, exclusive.
    pub to_ms: i64,
    /// Only this app's (`apps[].name`).
    pub app: Option<String>,
    /// Only this route's (by name).
    pub route: Option<String>,
}

/// One login record as `audit_logins` keeps it, borrowed from the row being read.
#[derive(Clone, Debug, PartialEq)]
pub struct LoginRecord<'r> {
    pub at_ms: i64,
    pub kind: &'r str,
    pub incident: Option<&'r str>,
    pub user: Option<&'r [u8]>,
    pub app: Option<&'r str>,
    pub route: Option<&'r str>,
    pub finding: Option<&'r str>,
    pub regulation: Option<&'r str>,
    pub risk: Option<f64>,
    pub model_risk: Option<f64>,
    pub floors: Option<&'r str>,
    pub factor: Option<&'r str>,
    pub unheld: bool,
    pub decision: Option<&'r str>,
    pub rule: Option<&'r str>,
    pub mode: Option<&'r str>,
    pub outcome: Option<&'r str>,
    pub challenge: Option<&'r str>,
    /// The reason labels ([`reason_labels`]), separated by [`REASON_SEPARATOR`].
    pub reasons: Option<&'r str>,
}

impl Store {
    /// Hands every login record of `query`'s window (and app and route) to `visit`, in no
    /// particular order, streaming: memory does not grow with the window (past one hour's
    /// pack). `visit` stops the read by returning an error, which is returned. Returns how
    /// many records were read.
    ///
    /// Whole settled hours are read from their packs (`audit_packs`), building the missing
    /// ones on the way; the window's ragged ends and the open hour from the rows.
    pub async fn each_login_record<E>(
        &self,
        query: &LoginRecordQuery,
        mut visit: impl FnMut(&LoginRecord<'_>) -> Result<(), E>,
    ) -> Result<u64, E>
    where
        E: From<StoreError>,
    {
        let hours =
            audit_packs::packable_hours(query.from_ms, query.to_ms, millis(SystemTime::now()));
        if hours.is_empty() {
            return self
                .each_login_row(query.from_ms, query.to_ms, query, &mut visit)
                .await;
        }
        let (packed_from, packed_to) = (
            hours.start.saturating_mul(audit_packs::HOUR_MS),
            hours.end.saturating_mul(audit_packs::HOUR_MS),
        );
        let mut read = self
            .each_login_row(query.from_ms, packed_from, query, &mut visit)
            .await?;
        read += self
            .each_login_row(packed_to, query.to_ms, query, &mut visit)
            .await?;
        let wanted = |r: &LoginRecord<'_>| {
            query.app.as_deref().is_none_or(|a| r.app == Some(a))
                && query.route.as_deref().is_none_or(|a| r.route == Some(a))
        };
        let mut unreadable = Vec::new();
        let mut packed = std::collections::HashSet::new();
        self.each_pack(hours.clone(), |hour, pack| -> Result<(), E> {
            let each = visit_pack(hour, pack, &wanted, &mut visit, &mut read);
            match each {
                Ok(visited) => {
                    visited?;
                    packed.insert(hour);
                }
                Err(why) => unreadable.push((hour, why)),
            }
            Ok(())
        })
        .await?;
        for (hour, why) in unreadable {
            tracing::warn!(hour, reason = why.0, "an hour's audit pack cannot be read; that hour is read from its rows and packed again");
        }
        // The hours without a (readable) pack and with records: packed now, from their rows,
        // and read from the pack so built (a consistent read of the hour). Hours without
        // records (a night, a window reaching back before the trail) cost one index probe.
        let missing: Vec<i64> = hours.filter(|h| !packed.contains(h)).collect();
        let mut with_rows = Vec::new();
        for run in missing.chunk_by(|a, b| b - a == 1) {
            let (first, last) = (run[0], run[run.len() - 1]);
            with_rows.extend(self.hours_with_rows(first..last + 1).await?);
        }
        for hour in with_rows {
            let (pack, _) = self.build_pack(hour).await?;
            let each = visit_pack(hour, &pack, &wanted, &mut visit, &mut read);
            match each {
                Ok(visited) => visited?,
                // A pack just written by this code always reads back; should it not, the
                // hour's rows are still there to read.
                Err(_) => {
                    let from = hour.saturating_mul(audit_packs::HOUR_MS);
                    read += self
                        .each_login_row(from, from + audit_packs::HOUR_MS, query, &mut visit)
                        .await?;
                }
            }
        }
        Ok(read)
    }

    /// The rows of `[from_ms, to_ms)` (and `query`'s app and route), each handed to `visit`.
    async fn each_login_row<E>(
        &self,
        from_ms: i64,
        to_ms: i64,
        query: &LoginRecordQuery,
        visit: &mut impl FnMut(&LoginRecord<'_>) -> Result<(), E>,
    ) -> Result<u64, E>
    where
        E: From<StoreError>,
    {
        if from_ms >= to_ms {
            return Ok(0);
        }
        let mut rows = select_login_rows(
            self.backend,
            from_ms,
            to_ms,
            query.app.as_deref(),
            query.route.as_deref(),
        )
        .fetch(&self.pool);
        let mut read = 0u64;
        let err = |source| StoreError::Database {
            op: "read audit login records",
            source,
        };
        while let Some(row) = rows.try_next().await.map_err(&err)? {
            let record = login_record(&row).map_err(&err)?;
            visit(&record)?;
            read += 1;
        }
        Ok(read)
    }
}

/// Hands the records of `pack` that are `wanted` to `visit`, counting them in `read`.
fn visit_pack<E>(
    hour: i64,
    pack: &[u8],
    wanted: &impl Fn(&LoginRecord<'_>) -> bool,
    visit: &mut impl FnMut(&LoginRecord<'_>) -> Result<(), E>,
    read: &mut u64,
) -> Result<Result<(), E>, audit_packs::Unreadable> {
    audit_packs::each_packed(hour, pack, |record| -> Result<(), E> {
        if wanted(record) {
            visit(record)?;
            *read += 1;
        }
        Ok(())
    })
}

/// The query of the login rows of `[from_ms, to_ms)` (and an app and a route), in the
/// columns [`login_record`] reads.
pub(super) fn select_login_rows<'q>(
    backend: Backend,
    from_ms: i64,
    to_ms: i64,
    app: Option<&str>,
    route: Option<&str>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    // The text fields travel as one value, separated by the unit separator (which no
    // audit field holds: records are cut of control characters): a value is a conversion
    // and an allocation per row in the driver, and a week of a busy trail is a million
    // rows. The incident only matters to a challenged login's two records.
    let sep = match backend {
        Backend::Sqlite => "char(31)",
        Backend::Postgres => "chr(31)",
    };
    let packed = PACKED_FIELDS
        .iter()
        .map(|f| format!("COALESCE({f}, '')"))
        .collect::<Vec<_>>()
        .join(&format!(" || {sep} || "));
    let mut sql = format!(
        "SELECT at, user_key, risk, model_risk, {packed} AS packed \
         FROM audit_logins WHERE at >= $1 AND at < $2"
    );
    if app.is_some() {
        sql.push_str(" AND app = $3");
    }
    if route.is_some() {
        sql.push_str(if app.is_some() {
            " AND route = $4"
        } else {
            " AND route = $3"
        });
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(from_ms)
        .bind(to_ms);
    if let Some(app) = app {
        q = q.bind(app.to_string());
    }
    if let Some(route) = route {
        q = q.bind(route.to_string());
    }
    q
}

/// The text fields of [`LoginRecord`], in the order they are packed.
const PACKED_FIELDS: [&str; 14] = [
    "kind",
    "CASE WHEN outcome = 'challenged' OR kind LIKE 'challenge.%' THEN incident END",
    "app",
    "route",
    "finding",
    "regulation",
    "floors",
    "factor",
    "CASE WHEN unheld <> 0 THEN 'unheld' END",
    "decision",
    "rule",
    "mode",
    "outcome || CASE WHEN challenge IS NULL THEN '' ELSE '/' || challenge END",
    "reasons",
];

pub(super) fn login_record(r: &AnyRow) -> Result<LoginRecord<'_>, sqlx::Error> {
    let packed: &str = r.try_get(4)?;
    let mut parts = packed.split('\u{1f}');
    let mut next = || parts.next().filter(|p| !p.is_empty());
    let kind = next().unwrap_or("");
    let incident = next();
    let (app, route, finding, regulation, floors, factor) =
        (next(), next(), next(), next(), next(), next());
    let unheld = next().is_some();
    let (decision, rule, mode) = (next(), next(), next());
    let (outcome, challenge) = match next() {
        Some(both) => match both.split_once('/') {
            Some((outcome, challenge)) => {
                (Some(outcome).filter(|o| !o.is_empty()), Some(challenge))
            }
            None => (Some(both), None),
        },
        None => (None, None),
    };
    Ok(LoginRecord {
        at_ms: r.try_get(0)?,
        kind,
        incident,
        user: r.try_get(1)?,
        app,
        route,
        finding,
        regulation,
        risk: r.try_get(2)?,
        model_risk: r.try_get(3)?,
        floors,
        factor,
        unheld,
        decision,
        rule,
        mode,
        outcome,
        challenge,
        reasons: next(),
    })
}
