//! Hour packs of the audit trail's login records (`audit_login_packs`, migration 0011): each
//! closed hour's `audit_logins` rows kept as one compact value, so a week of a busy trail (a
//! million records) is read in 168 values instead of a million rows through the driver.
//!
//! Owns the pack format and when a pack is trusted. A pack is a copy of its hour's rows, never
//! the record: the migration's triggers delete it whenever a row of its hour is inserted,
//! changed or deleted (a late record, `users forget`, retention), and it is rebuilt from the
//! rows the next time it is needed (or by [`Store::pack_login_hours`] in the background). It
//! is built in one transaction with the read of its rows: on PostgreSQL under a share lock on
//! `audit_logins`, so no row can land between the read and the store; on SQLite the write
//! fails (and the pack is not kept) if any row landed since the read. A pack that cannot be
//! decoded is never half-used: its hour is read from the rows.
//!
//! Format (version 1): `GKP1`, the dictionary (a count, then each entry as a length and its
//! bytes), the record count, then per record: its time from the hour's start (zigzag
//! varint), a flags byte (risk, model risk, unheld), the dictionary index + 1 (0: none) of
//! each of its 15 byte fields in [`FIELDS`] order, and the risks present as little-endian
//! `f64`. Integers are LEB128 varints.

use std::collections::HashMap;

use futures_util::TryStreamExt;

use super::audit_logins::{login_record, select_login_rows, LoginRecord};
use super::*;

/// Milliseconds in an hour: a pack's span.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// An hour is packed only once it ended this long ago (records of it still arriving would
/// only delete the pack again).
const SETTLE_MS: i64 = 5 * 60_000;
const MAGIC: &[u8; 4] = b"GKP1";
/// Most records in one pack: past it the hour is read from its rows (a pack is one value in
/// memory; an hour of 20,000 logins per minute stays under it).
const MAX_PACK_RECORDS: u64 = 2_000_000;

/// The byte fields of a record, in pack order.
const FIELDS: usize = 15;

const RISK: u8 = 1;
const MODEL_RISK: u8 = 2;
const UNHELD: u8 = 4;

/// The hours of `[from_ms, to_ms)` that packs may answer: whole hours, inside the window, that
/// ended at least [`SETTLE_MS`] before `now_ms`. Empty when there is none.
pub(crate) fn packable_hours(from_ms: i64, to_ms: i64, now_ms: i64) -> std::ops::Range<i64> {
    let first = from_ms.div_euclid(HOUR_MS) + i64::from(from_ms.rem_euclid(HOUR_MS) != 0);
    let end = to_ms
        .div_euclid(HOUR_MS)
        .min(now_ms.saturating_sub(SETTLE_MS).div_euclid(HOUR_MS));
    first..end.max(first)
}

/// Builds a pack from records of one hour.
pub(crate) struct PackWriter {
    hour_start: i64,
    index: HashMap<Vec<u8>, u64>,
    dictionary: Vec<u8>,
    entries: u64,
    body: Vec<u8>,
    records: u64,
}

impl PackWriter {
    pub(crate) fn new(hour: i64) -> PackWriter {
        PackWriter {
            hour_start: hour.saturating_mul(HOUR_MS),
            index: HashMap::new(),
            dictionary: Vec::new(),
            entries: 0,
            body: Vec::new(),
            records: 0,
        }
    }

    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    fn field(&mut self, value: Option<&[u8]>) {
        let Some(value) = value else {
            put_varint(&mut self.body, 0);
            return;
        };
        let at = match self.index.get(value) {
            Some(at) => *at,
            None => {
                let at = self.entries;
                self.entries += 1;
                put_varint(&mut self.dictionary, value.len() as u64);
                self.dictionary.extend_from_slice(value);
                self.index.insert(value.to_vec(), at);
                at
            }
        };
        put_varint(&mut self.body, at + 1);
    }

    pub(crate) fn push(&mut self, r: &LoginRecord<'_>) {
        self.records += 1;
        put_varint(
            &mut self.body,
            zigzag(r.at_ms.saturating_sub(self.hour_start)),
        );
        let flags = if r.risk.is_some() { RISK } else { 0 }
            | if r.model_risk.is_some() {
                MODEL_RISK
            } else {
                0
            }
            | if r.unheld { UNHELD } else { 0 };
        self.body.push(flags);
        fn text(v: Option<&str>) -> Option<&[u8]> {
            v.map(str::as_bytes)
        }
        for value in [
            Some(r.kind.as_bytes()),
            text(r.incident),
            r.user,
            text(r.app),
            text(r.route),
            text(r.finding),
            text(r.regulation),
            text(r.floors),
            text(r.factor),
            text(r.decision),
            text(r.rule),
            text(r.mode),
            text(r.outcome),
            text(r.challenge),
            text(r.reasons),
        ] {
            self.field(value);
        }
        for risk in [r.risk, r.model_risk].into_iter().flatten() {
            self.body.extend_from_slice(&risk.to_le_bytes());
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.dictionary.len() + self.body.len() + 24);
        out.extend_from_slice(MAGIC);
        put_varint(&mut out, self.entries);
        out.extend_from_slice(&self.dictionary);
        put_varint(&mut out, self.records);
        out.extend_from_slice(&self.body);
        out
    }
}

/// Why a pack could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unreadable(pub(crate) &'static str);

/// Hands every record of `pack` (of `hour`) to `visit`, or none: the pack is checked whole
/// before the first is handed over. An error of `visit` stops the visits and is returned.
pub(crate) fn each_packed<E>(
    hour: i64,
    pack: &[u8],
    mut visit: impl FnMut(&LoginRecord<'_>) -> Result<(), E>,
) -> Result<Result<(), E>, Unreadable> {
    // Two walks instead of a list of records: an hour's records as a list are megabytes of
    // fresh memory per pack, which costs more than decoding twice.
    let _checked: Result<(), ()> = decode(hour, pack, |_| Ok(()))?;
    decode(hour, pack, |r| visit(&r))
}

/// The records of `pack`, all of them or none.
#[cfg(test)]
pub(crate) fn unpack(hour: i64, pack: &[u8]) -> Result<Vec<LoginRecord<'_>>, Unreadable> {
    let mut out = Vec::new();
    let _ = decode(hour, pack, |r| {
        out.push(r);
        Ok::<(), ()>(())
    })?;
    Ok(out)
}

/// The decoder: every record of `pack` to `visit`, in order; an error of `visit` stops the
/// visits (the rest is still checked) and is returned.
fn decode<'p, E>(
    hour: i64,
    pack: &'p [u8],
    mut visit: impl FnMut(LoginRecord<'p>) -> Result<(), E>,
) -> Result<Result<(), E>, Unreadable> {
    let mut at = Reader { bytes: pack, at: 0 };
    if at.take(MAGIC.len())? != MAGIC {
        return Err(Unreadable("not a version 1 pack"));
    }
    let entries = at.varint()?;
    // Every entry takes at least a byte: a count past what is left is a damaged pack.
    if entries > at.left() as u64 {
        return Err(Unreadable("dictionary count past the end"));
    }
    let mut dictionary: Vec<(&[u8], Option<&str>)> = Vec::with_capacity(entries as usize);
    for _ in 0..entries {
        let len = usize::try_from(at.varint()?).map_err(|_| Unreadable("entry too long"))?;
        let bytes = at.take(len)?;
        dictionary.push((bytes, std::str::from_utf8(bytes).ok()));
    }
    let count = at.varint()?;
    if count > at.left() as u64 || count > MAX_PACK_RECORDS {
        return Err(Unreadable("record count past the end"));
    }
    let hour_start = hour.saturating_mul(HOUR_MS);
    let mut failed = None;
    for _ in 0..count {
        let at_ms = hour_start.saturating_add(unzigzag(at.varint()?));
        let flags = at.byte()?;
        let mut fields: [Option<(&[u8], Option<&str>)>; FIELDS] = [None; FIELDS];
        for field in &mut fields {
            *field = match at.varint()? {
                0 => None,
                i => Some(
                    *dictionary
                        .get((i - 1) as usize)
                        .ok_or(Unreadable("dictionary index out of range"))?,
                ),
            };
        }
        let mut risk = || -> Result<f64, Unreadable> {
            let bytes: [u8; 8] = at.take(8)?.try_into().map_err(|_| Unreadable("risk"))?;
            Ok(f64::from_le_bytes(bytes))
        };
        let risk_value = if flags & RISK != 0 {
            Some(risk()?)
        } else {
            None
        };
        let model_risk = if flags & MODEL_RISK != 0 {
            Some(risk()?)
        } else {
            None
        };
        let text = |i: usize| -> Result<Option<&'p str>, Unreadable> {
            match fields[i] {
                None => Ok(None),
                Some((_, Some(text))) => Ok(Some(text)),
                Some((_, None)) => Err(Unreadable("text not UTF-8")),
            }
        };
        let record = LoginRecord {
            at_ms,
            kind: text(0)?.ok_or(Unreadable("record without a kind"))?,
            incident: text(1)?,
            user: fields[2].map(|(bytes, _)| bytes),
            app: text(3)?,
            route: text(4)?,
            finding: text(5)?,
            regulation: text(6)?,
            floors: text(7)?,
            factor: text(8)?,
            decision: text(9)?,
            rule: text(10)?,
            mode: text(11)?,
            outcome: text(12)?,
            challenge: text(13)?,
            reasons: text(14)?,
            risk: risk_value,
            model_risk,
            unheld: flags & UNHELD != 0,
        };
        if failed.is_none() {
            if let Err(e) = visit(record) {
                failed = Some(e);
            }
        }
    }
    if at.left() != 0 {
        return Err(Unreadable("bytes after the last record"));
    }
    Ok(match failed {
        Some(e) => Err(e),
        None => Ok(()),
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Unreadable> {
        if n > self.left() {
            return Err(Unreadable("cut short"));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, Unreadable> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, Unreadable> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Unreadable("varint too long"))
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

impl Store {
    /// Packs every closed hour of `[from_ms, to_ms)` that has login records and no pack yet
    /// (the server does this in the background, so a what-if finds a week packed; a what-if
    /// packs the hours with records it finds unpacked). Returns how many packs were stored.
    pub async fn pack_login_hours(&self, from_ms: i64, to_ms: i64) -> Result<u64, StoreError> {
        let hours = packable_hours(from_ms, to_ms, millis(SystemTime::now()));
        if hours.is_empty() {
            return Ok(0);
        }
        let missing = self.unpacked_hours(hours).await?;
        let mut stored = 0;
        for hour in missing {
            if self.build_pack(hour).await?.1 {
                stored += 1;
            }
        }
        Ok(stored)
    }

    /// The hours of `hours` with login records and no pack.
    async fn unpacked_hours(&self, hours: std::ops::Range<i64>) -> Result<Vec<i64>, StoreError> {
        self.hours_where(hours, true).await
    }

    /// The hours of `hours` with login records.
    pub(super) async fn hours_with_rows(
        &self,
        hours: std::ops::Range<i64>,
    ) -> Result<Vec<i64>, StoreError> {
        self.hours_where(hours, false).await
    }

    async fn hours_where(
        &self,
        hours: std::ops::Range<i64>,
        unpacked: bool,
    ) -> Result<Vec<i64>, StoreError> {
        // One pass over the time index, grouped by hour: cheap next to reading the rows.
        let mut sql = String::from(
            "SELECT DISTINCT at / 3600000 AS hour FROM audit_logins WHERE at >= $1 AND at < $2",
        );
        if unpacked {
            sql.push_str(
                " AND NOT EXISTS (SELECT 1 FROM audit_login_packs p WHERE p.hour = at / 3600000)",
            );
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(hours.start.saturating_mul(HOUR_MS))
            .bind(hours.end.saturating_mul(HOUR_MS))
            .fetch_all(&self.pool)
            .await
            .map_err(db("list the audit trail's unpacked hours"))?;
        let mut out = rows
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(db("list the audit trail's unpacked hours"))?;
        out.sort_unstable();
        Ok(out)
    }

    /// Reads `hour`'s rows and stores them as its pack (over any older one), in one
    /// transaction. Returns the pack and whether it was stored (a row written meanwhile, or a
    /// read-only store, leaves it unstored; the pack is still a consistent read of the hour).
    pub(super) async fn build_pack(&self, hour: i64) -> Result<(Vec<u8>, bool), StoreError> {
        let op = "pack an hour of audit login records";
        let mut tx = self.pool.begin().await.map_err(db(op))?;
        if self.backend == Backend::Postgres {
            // Writers of audit_logins wait while the hour is read and its pack stored (a few
            // milliseconds): a row landing between the two would be missing from the pack.
            sqlx::query("LOCK TABLE audit_logins IN SHARE MODE")
                .execute(&mut *tx)
                .await
                .map_err(db(op))?;
        }
        let start = hour.saturating_mul(HOUR_MS);
        let mut writer = PackWriter::new(hour);
        {
            let mut rows = select_login_rows(
                self.backend,
                start,
                start.saturating_add(HOUR_MS),
                None,
                None,
            )
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await.map_err(db(op))? {
                writer.push(&login_record(&row).map_err(db(op))?);
            }
        }
        let records = writer.records();
        let pack = writer.finish();
        if records == 0 || records > MAX_PACK_RECORDS {
            return Ok((pack, false));
        }
        let stored = sqlx::query(
            "INSERT INTO audit_login_packs (hour, records, pack) VALUES ($1, $2, $3) \
             ON CONFLICT (hour) DO UPDATE SET records = excluded.records, pack = excluded.pack",
        )
        .bind(hour)
        .bind(records as i64)
        .bind(pack.clone())
        .execute(&mut *tx)
        .await;
        let stored = match stored {
            Ok(_) => tx.commit().await.map(|_| true),
            Err(e) => Err(e),
        };
        match stored {
            Ok(done) => Ok((pack, done)),
            Err(e) => {
                tracing::debug!(hour, error = %e, "an hour's audit pack was not stored; the hour is read from its rows until it is");
                Ok((pack, false))
            }
        }
    }

    /// The stored packs of `hours`, each handed to `visit` with its hour.
    pub(super) async fn each_pack<E>(
        &self,
        hours: std::ops::Range<i64>,
        mut visit: impl FnMut(i64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<StoreError>,
    {
        let op = "read the audit trail's hour packs";
        let mut rows =
            sqlx::query("SELECT hour, pack FROM audit_login_packs WHERE hour >= $1 AND hour < $2")
                .bind(hours.start)
                .bind(hours.end)
                .fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(db(op))? {
            let hour: i64 = row.try_get(0).map_err(db(op))?;
            let pack: &[u8] = row.try_get(1).map_err(db(op))?;
            visit(hour, pack)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_ms: i64, risk: Option<f64>) -> LoginRecord<'static> {
        LoginRecord {
            at_ms,
            kind: "login.outcome",
            incident: Some("GK-ABCDEFGHJK"),
            user: Some(&[7u8; 32]),
            app: Some("default"),
            route: Some("form"),
            finding: Some("scored"),
            regulation: None,
            risk,
            model_risk: risk.map(|r| r / 2.0),
            floors: Some("machine,replayed"),
            factor: Some("has"),
            unheld: true,
            decision: Some("allow"),
            rule: Some("allow_below"),
            mode: Some("enforce"),
            outcome: Some("verified"),
            challenge: None,
            reasons: Some("deviation: key_flight\u{1e}new_device"),
        }
    }

    #[test]
    fn a_pack_gives_back_exactly_its_records() {
        let hour = 493_000;
        let start = hour * HOUR_MS;
        let records = vec![
            record(start, Some(0.25)),
            record(start + HOUR_MS - 1, None),
            LoginRecord {
                kind: "challenge.passed",
                incident: None,
                user: None,
                app: None,
                unheld: false,
                reasons: None,
                ..record(start + 17, Some(1.0))
            },
        ];
        let mut writer = PackWriter::new(hour);
        for r in &records {
            writer.push(r);
        }
        let pack = writer.finish();
        assert_eq!(unpack(hour, &pack).unwrap(), records);
    }

    #[test]
    fn a_damaged_pack_is_refused_whole_and_never_panics() {
        let hour = 10;
        let mut writer = PackWriter::new(hour);
        for i in 0..20 {
            writer.push(&record(hour * HOUR_MS + i * 1000, Some(i as f64 / 20.0)));
        }
        let pack = writer.finish();
        assert_eq!(unpack(hour, &pack).unwrap().len(), 20);
        for cut in 0..pack.len() {
            assert!(unpack(hour, &pack[..cut]).is_err(), "cut at {cut}");
        }
        // Every single-byte change either reads back as 20 records or is refused.
        for at in 0..pack.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut damaged = pack.clone();
                damaged[at] ^= flip;
                if let Ok(records) = unpack(hour, &damaged) {
                    assert_eq!(records.len(), 20, "byte {at} ^ {flip:#x}");
                }
            }
        }
        let mut longer = pack.clone();
        longer.push(0);
        assert!(unpack(hour, &longer).is_err());
    }

    #[test]
    fn only_whole_settled_hours_inside_the_window_are_packed() {
        let h = HOUR_MS;
        let now = 100 * h + 30 * 60_000;
        assert_eq!(packable_hours(0, now, now), 0..100);
        assert_eq!(packable_hours(1, 3 * h + 5, now), 1..3);
        // The hour that just ended is still settling for five minutes.
        assert_eq!(packable_hours(0, now, 100 * h + 60_000), 0..99);
        assert!(packable_hours(5 * h + 1, 6 * h - 1, now).is_empty());
        assert!(packable_hours(10 * h, 2 * h, now).is_empty());
    }
}
