//! The audit trail: one [`AuditRecord`] per login decision, outcome and challenge result, kept
//! in the store (for `gaitkeeper audit show INCIDENT` and `audit tail`) and written as JSON lines
//! to a stream (stdout or a file) for the operator's log pipeline.
//!
//! Owns: bounding records, the incident references shown on block pages, the background worker
//! that writes them, and the spool that keeps them while the store is down or locked. Nothing
//! acknowledged is lost: a record is either in the store or fsync'd in the spool when
//! [`Auditor::flush`] returns, and a spool left by a crash is delivered on the next start.
//!
//! Never blocks or fails the login that records, and never holds raw telemetry, passwords,
//! login names or secrets: users appear only as their store key (hex).

pub mod cli;
mod spool;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::batch::{self, BatchQueue, Gatherer, Next};
use crate::metrics::AuditMetrics;
use crate::runtime::unix_millis;
use crate::store::{NewAuditRecord, Store, StoreError, UserKey};

use spool::{Spool, SpoolFull};

/// Record kinds the product writes. The store accepts any lower-case dotted name.
pub mod kind {
    /// The policy's decision on a scored login (risk, reasons, rule, mode).
    pub const LOGIN_DECISION: &str = "login.decision";
    /// What became of the login (the app's answer, or the block).
    pub(crate) const LOGIN_OUTCOME: &str = "login.outcome";
    pub(crate) const CHALLENGE_PASSED: &str = "challenge.passed";
    pub const CHALLENGE_FAILED: &str = "challenge.failed";
    /// A challenge passed with a recovery code instead of the authenticator.
    pub(crate) const RECOVERY_CODE_USED: &str = "challenge.recovery_code_used";
    /// A challenge passed with a factor other than a TOTP code (a passkey).
    pub(crate) const FACTOR_USED: &str = "challenge.factor_used";
    /// A user was asked to add a second factor after a trusted login.
    pub(crate) const FACTOR_OFFERED: &str = "factor.offered";
    /// A user added a second factor (from an invitation or an offer).
    pub(crate) const FACTOR_ADDED: &str = "factor.added";
    pub(crate) const CHALLENGE_EXPIRED: &str = "challenge.expired";
    /// A step-up through the OpenID Connect provider that did not pass, with why.
    pub(crate) const OIDC_REFUSED: &str = "challenge.oidc_refused";
    /// A telemetry payload or page token seen before.
    pub(crate) const TELEMETRY_REPLAYED: &str = "telemetry.replayed";
    /// A security alert whose every delivery attempt failed.
    pub(crate) const ALERT_DELIVERY_FAILED: &str = "alert.delivery_failed";
    /// A security alert dropped because the alert queue was full.
    pub(crate) const ALERT_DROPPED: &str = "alert.dropped";
}

/// Most records stored in one transaction.
const MAX_BATCH: usize = 256;
/// How long the worker gathers records into a batch before writing it.
const GATHER: Duration = Duration::from_millis(100);

/// Longest value of a free-text field of a record, in bytes.
const MAX_FIELD_BYTES: usize = 128;
/// Largest `reasons` document kept in a record (JSON); larger ones are cut to fit.
const MAX_REASONS_BYTES: usize = 1536;

/// One audit record. Every field is bounded by [`Auditor::record`] (long text is cut), so a
/// record always fits the store's audit detail limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Random, unique per record: a record delivered twice is stored once.
    pub id: String,
    /// When it happened, Unix milliseconds.
    pub at: u64,
    /// What happened, e.g. `login.decision` (see [`kind`]).
    pub kind: String,
    /// The incident reference ([`new_incident`]): the same for every record of one login, and
    /// the one shown on the block page.
    pub incident: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The app's name (`apps[].name`); absent in records written before apps existed, which
    /// are all the `default` app's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The login route's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The user's store key in hex (`store::UserKey`), never the login name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<f64>,
    /// The model's top reasons, as the scoring stage gives them.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub reasons: serde_json::Value,
    /// `allow`, `challenge` or `block`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// The policy rule that applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `enforce` or `shadow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// What the policy was asked ([`crate::policy::Finding::code`]: `scored`, `enrolling`,
    /// `missing_telemetry`, `regulated`, …). This and the next three are absent in records
    /// written before `policy what-if` existed; it then infers them from `policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
    /// Regulation's action, for a `regulated` finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regulation: Option<String>,
    /// The model's risk before the policy's floors raised it to `risk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_risk: Option<f64>,
    /// Whether the user had a second factor, when a challenge asked (`yes`, `no`, `unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<String>,
    /// The challenge could not be held (the shared state was away).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unheld: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The challenge's result (`passed`, `failed`, `expired`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}

impl AuditRecord {
    /// A record of `kind` for `incident`, stamped now, with a fresh id and no other field set.
    pub fn new(kind: &str, incident: &str) -> AuditRecord {
        let at = unix_millis(SystemTime::now());
        AuditRecord {
            id: new_record_id(at),
            at,
            kind: kind.to_string(),
            incident: incident.to_string(),
            request_id: None,
            app: None,
            route: None,
            user_key: None,
            risk: None,
            reasons: serde_json::Value::Null,
            decision: None,
            policy: None,
            mode: None,
            finding: None,
            regulation: None,
            model_risk: None,
            factor: None,
            unheld: false,
            outcome: None,
            challenge: None,
            client_ip: None,
        }
    }

    /// Keeps what the policy was asked about the login (`policy what-if` replays it).
    pub fn set_inputs(&mut self, inputs: &crate::policy::Inputs) {
        self.finding = Some(inputs.finding.code().to_string());
        self.regulation = match inputs.finding {
            crate::policy::Finding::Regulated { action } => Some(action.as_str().to_string()),
            _ => None,
        };
        self.model_risk = inputs.model_risk;
        self.factor = inputs.factor.map(|f| f.as_str().to_string());
        self.unheld = inputs.unheld;
    }

    /// The record with every field cut to its bound and control characters replaced, so a
    /// hostile value can neither grow the trail nor forge lines in the JSON stream's readers.
    fn bounded(mut self) -> AuditRecord {
        clip(&mut self.id, 64);
        clip(&mut self.kind, 64);
        clip(&mut self.incident, 32);
        for field in [
            &mut self.request_id,
            &mut self.app,
            &mut self.route,
            &mut self.user_key,
            &mut self.decision,
            &mut self.policy,
            &mut self.mode,
            &mut self.finding,
            &mut self.regulation,
            &mut self.factor,
            &mut self.outcome,
            &mut self.challenge,
            &mut self.client_ip,
        ]
        .into_iter()
        .flatten()
        {
            clip(field, MAX_FIELD_BYTES);
        }
        if self.risk.is_some_and(|r| !r.is_finite()) {
            self.risk = None;
        }
        if self.model_risk.is_some_and(|r| !r.is_finite()) {
            self.model_risk = None;
        }
        if self.reasons.to_string().len() > MAX_REASONS_BYTES {
            self.reasons = match self.reasons {
                serde_json::Value::Array(items) => {
                    // Keep the leading (strongest) reasons that fit: brackets plus each item
                    // and its comma.
                    let mut size = 2;
                    let kept = items
                        .into_iter()
                        .take_while(|item| {
                            size += item.to_string().len() + 1;
                            size <= MAX_REASONS_BYTES
                        })
                        .collect();
                    serde_json::Value::Array(kept)
                }
                _ => serde_json::json!({ "truncated": true }),
            };
        }
        self
    }
}

/// Cuts `text` to at most `max` bytes (on a character boundary) and replaces control characters.
pub(crate) fn clip(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    if text.contains(char::is_control) {
        *text = text
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
    }
}

/// A record id: the time in milliseconds (48 bits), then 80 random bits, in hex. Time first so
/// that the store's unique index on it grows at one end: random ids put every insert on another
/// page of the index, a page write per record.
fn new_record_id(at_millis: u64) -> String {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&at_millis.to_be_bytes()[2..]);
    id[6..].copy_from_slice(&rand::random::<[u8; 10]>());
    hex::encode(id)
}

/// A new incident reference such as `GK-7F3K9Q2M4D`: 50 random bits in Crockford's base32
/// (no I, L, O or U, so it reads out over the phone), short enough for a support call and not
/// guessable.
pub fn new_incident() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut bits = rand::random::<u64>();
    let mut out = String::with_capacity(13);
    out.push_str("GK-");
    for _ in 0..10 {
        out.push(ALPHABET[(bits & 31) as usize] as char);
        bits >>= 5;
    }
    out
}

pub use crate::config::{AuditConfig, AuditStream};

/// Why the audit trail could not start. The Display form says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit stream file {path}: {source}; check `audit.stream.file` and the permissions of its directory")]
    Stream {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the audit spool in {dir}: {source}; check `audit.spool_dir` (default `server.data_dir`) and its permissions")]
    Spool {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the audit worker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// One line of the spool: the record, and whether it already went to the stream.
#[derive(Serialize, Deserialize)]
struct Spooled {
    streamed: bool,
    record: AuditRecord,
}

/// What the caller's side and the worker share.
struct Shared {
    spool: Mutex<Spool>,
    metrics: AuditMetrics,
}

impl Shared {
    /// Appends records to the spool without waiting for the disk (they survive the process
    /// dying; the worker syncs them before it acknowledges a flush, and after every batch);
    /// counts (and logs) what could not be kept.
    fn spool(&self, entries: &[Spooled]) {
        let mut lines = Vec::new();
        for entry in entries {
            // A bounded record of plain fields always serialises.
            if serde_json::to_writer(&mut lines, entry).is_ok() {
                lines.push(b'\n');
            }
        }
        let mut spool = self.spool.lock().unwrap_or_else(|e| e.into_inner());
        let result = spool.append_unsynced(&lines);
        self.metrics.spool_bytes.set(spool.pending() as i64);
        drop(spool);
        let n = entries.len() as u64;
        match result {
            Ok(()) => {
                self.metrics
                    .records
                    .with_label_values(&["spooled"])
                    .inc_by(n);
            }
            Err(e) => {
                self.metrics.records.with_label_values(&["lost"]).inc_by(n);
                match e {
                    SpoolFull::Full => tracing::error!(records = n, "audit records lost: the store is unavailable and the spool is at `audit.max_spool_mb`"),
                    SpoolFull::Io(error) => tracing::error!(records = n, %error, "audit records lost: the store is unavailable and the spool cannot be written"),
                }
            }
        }
    }

    fn spool_pending(&self) -> bool {
        self.spool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending()
            > 0
    }
}

/// The audit trail's handle: cheap to clone, usable from any thread or runtime.
///
/// [`Auditor::new`] starts the worker itself, on its own thread with its own small runtime, so
/// neither the caller's runtime nor its shutdown order matters. The worker stops once every
/// clone is dropped and the queue is drained; call [`Auditor::flush`] before exiting.
#[derive(Clone)]
pub struct Auditor {
    queue: BatchQueue<Box<AuditRecord>>,
    shared: Arc<Shared>,
}

impl Auditor {
    /// Opens the stream and the spool (delivering any spool a previous process left, first)
    /// and starts the worker thread.
    pub fn new(
        config: &AuditConfig,
        store: Store,
        data_dir: &Path,
        metrics: AuditMetrics,
    ) -> Result<Auditor, AuditError> {
        let stream: Option<Box<dyn Write + Send>> = match &config.stream {
            AuditStream::Stdout => Some(Box::new(std::io::stdout())),
            AuditStream::Off => None,
            AuditStream::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AuditError::Stream {
                        path: path.display().to_string(),
                        source,
                    })?;
                // Audit records name users and addresses: private to gaitkeeper's user.
                crate::files::make_private(path).map_err(|source| AuditError::Stream {
                    path: path.display().to_string(),
                    source,
                })?;
                Some(Box::new(file))
            }
        };
        let dir = config.spool_dir.as_deref().unwrap_or(data_dir);
        let spool = Spool::create(dir, u64::from(config.max_spool_mb) << 20).map_err(|source| {
            AuditError::Spool {
                dir: dir.display().to_string(),
                source,
            }
        })?;
        metrics.spool_bytes.set(0);
        let spool_path = spool.path().to_path_buf();
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            metrics,
        });
        // Records are boxed so that a full queue's slots stay small.
        let (queue, gatherer) = batch::queue(config.queue, GATHER, MAX_BATCH);
        let worker = Worker {
            shared: shared.clone(),
            store,
            stream,
            stream_failing: false,
            store_failing: false,
            retry: config.retry.0,
            last_attempt: None,
            dir: dir.to_path_buf(),
            own: spool_path,
            orphan: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AuditError::Thread)?;
        std::thread::Builder::new()
            .name("gk-audit".into())
            .spawn(move || {
                crate::runtime::lower_thread_priority();
                runtime.block_on(worker.run(gatherer))
            })
            .map_err(AuditError::Thread)?;
        Ok(Auditor { queue, shared })
    }

    /// Hands a record to the worker without waiting. When the queue is full (the worker is
    /// behind), the record goes straight to the spool instead of being dropped: only then
    /// does the caller wait, for one fsync.
    pub fn record(&self, record: AuditRecord) {
        let record = record.bounded();
        let Err(record) = self.queue.try_push(Box::new(record)) else {
            return;
        };
        self.shared.spool(&[Spooled {
            streamed: false,
            record: *record,
        }]);
    }

    /// Waits until every record handed over before this call is in the store or in the spool
    /// on disk.
    pub async fn flush(&self) {
        self.queue.flush().await;
    }
}

struct Worker {
    shared: Arc<Shared>,
    store: Store,
    stream: Option<Box<dyn Write + Send>>,
    stream_failing: bool,
    store_failing: bool,
    retry: Duration,
    last_attempt: Option<Instant>,
    /// Where spools are, this process's among them.
    dir: PathBuf,
    own: PathBuf,
    /// A dead process's spool being delivered (kept, with its lock, until it is).
    orphan: Option<Spool>,
}

/// What the store keeps of a record besides its plain fields: the user key and the record
/// itself as the detail document.
fn store_fields(record: &AuditRecord) -> (Option<UserKey>, serde_json::Value) {
    (
        record.user_key.as_deref().and_then(UserKey::from_hex),
        serde_json::to_value(record).unwrap_or(serde_json::Value::Null),
    )
}

fn new_audit_record<'a>(
    record: &'a AuditRecord,
    user: &'a Option<UserKey>,
    detail: &'a serde_json::Value,
) -> NewAuditRecord<'a> {
    NewAuditRecord {
        at: UNIX_EPOCH + Duration::from_millis(record.at),
        user: user.as_ref(),
        kind: &record.kind,
        incident: &record.incident,
        record_id: &record.id,
        detail,
    }
}

/// Whether the store refused the record itself (it would refuse it again: keeping it in the
/// spool would block every record behind it).
fn refused(error: &StoreError) -> bool {
    matches!(error, StoreError::Invalid(_) | StoreError::TooLarge { .. })
}

impl Worker {
    async fn run(mut self, mut gatherer: Gatherer<Box<AuditRecord>>) {
        self.deliver_spool().await;
        loop {
            // Wake up now and then even when idle: the caller may have spooled records
            // directly, or the store may be back. Records are gathered for a moment: one
            // store commit (and one stream write) for the lot; one commit per record cost a
            // busy login path more CPU than scoring the logins.
            match gatherer.next(Some(self.retry)).await {
                Next::Batch(mut batch) => {
                    let records: Vec<AuditRecord> = std::mem::take(&mut batch.items)
                        .into_iter()
                        .map(|r| *r)
                        .collect();
                    if !records.is_empty() {
                        self.handle_batch(records).await;
                    }
                    // Spooled records are on disk before anyone is told they are safe.
                    self.sync_spool();
                    batch.answer_flushes();
                }
                Next::Idle => {
                    self.sync_spool();
                    self.deliver_spool().await;
                    continue;
                }
                Next::Closed => {
                    self.deliver_spool().await;
                    return;
                }
            }
            if self
                .last_attempt
                .is_some_and(|at| at.elapsed() >= self.retry)
            {
                self.deliver_spool().await;
            }
        }
    }

    /// Makes records the login path spooled without waiting durable.
    fn sync_spool(&self) {
        let handle = {
            let mut spool = self.shared.spool.lock().unwrap_or_else(|e| e.into_inner());
            spool.sync_handle()
        };
        if let Err(error) = handle.and_then(|h| h.map_or(Ok(()), |f| f.sync_data())) {
            tracing::error!(%error, "cannot sync the audit spool to disk");
        }
    }

    /// Streams every record, then stores them in one transaction (or spools them all).
    async fn handle_batch(&mut self, batch: Vec<AuditRecord>) {
        self.write_stream(&batch);
        if self.shared.spool_pending() {
            // Keep the order: older records wait in the spool.
            return self.spool_streamed(batch);
        }
        let fields: Vec<_> = batch.iter().map(store_fields).collect();
        let new: Vec<NewAuditRecord> = batch
            .iter()
            .zip(&fields)
            .map(|(r, (user, detail))| new_audit_record(r, user, detail))
            .collect();
        match self.store.append_audit_records(&new).await {
            Ok(refused) => {
                let stored = batch.len() - refused.len();
                self.shared
                    .metrics
                    .records
                    .with_label_values(&["stored"])
                    .inc_by(stored as u64);
                for (i, e) in refused {
                    self.count_refused(&batch[i], &e);
                }
                self.store_answers();
            }
            Err(error) => {
                self.store_fails(&error);
                self.spool_streamed(batch);
            }
        }
    }

    /// Spools records already written to the stream, to be stored when the store returns.
    fn spool_streamed(&mut self, records: Vec<AuditRecord>) {
        let spooled: Vec<Spooled> = records
            .into_iter()
            .map(|record| Spooled {
                streamed: true,
                record,
            })
            .collect();
        self.shared.spool(&spooled);
        self.last_attempt.get_or_insert_with(Instant::now);
    }

    fn store_answers(&mut self) {
        if self.store_failing {
            self.store_failing = false;
            tracing::info!("the store takes audit records again");
        }
    }

    fn store_fails(&mut self, error: &StoreError) {
        if !self.store_failing {
            self.store_failing = true;
            tracing::warn!(%error, "the store is unavailable; audit records are spooled until it returns");
        }
    }

    async fn store_write(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
        let (user, detail) = store_fields(record);
        let result = self
            .store
            .append_audit_record(&new_audit_record(record, &user, &detail))
            .await;
        match &result {
            Ok(_) => {
                self.shared
                    .metrics
                    .records
                    .with_label_values(&["stored"])
                    .inc();
                self.store_answers();
            }
            Err(e) if refused(e) => {}
            Err(error) => self.store_fails(error),
        }
        result.map(|_| ())
    }

    fn count_refused(&self, record: &AuditRecord, error: &StoreError) {
        self.shared
            .metrics
            .records
            .with_label_values(&["rejected"])
            .inc();
        tracing::error!(kind = %record.kind, incident = %record.incident, %error, "the store refused an audit record");
    }

    /// Delivers spooled records to the store in order: first any spool a dead process left,
    /// then this process's own; until they are empty or the store fails again.
    async fn deliver_spool(&mut self) {
        self.last_attempt = None;
        if !self.deliver_orphans().await {
            self.last_attempt = Some(Instant::now());
            return;
        }
        loop {
            let batch = {
                let spool = self.shared.spool.lock().unwrap_or_else(|e| e.into_inner());
                if spool.pending() == 0 {
                    return;
                }
                spool.read_batch()
            };
            let (delivered, stopped) = match batch {
                Ok((bytes, _)) => self.deliver_lines(&bytes).await,
                Err(error) => {
                    tracing::error!(%error, "cannot read the audit spool");
                    (0, true)
                }
            };
            let mut spool = self.shared.spool.lock().unwrap_or_else(|e| e.into_inner());
            let consumed = spool.consume(delivered);
            self.shared.metrics.spool_bytes.set(spool.pending() as i64);
            drop(spool);
            if let Err(error) = consumed {
                // The lines stay and are delivered again; the store ignores the duplicates.
                tracing::error!(%error, "cannot empty the delivered audit spool");
            }
            if stopped || delivered == 0 {
                self.last_attempt = Some(Instant::now());
                return;
            }
        }
    }

    /// Delivers the spools of processes that are gone; false if the store failed meanwhile.
    async fn deliver_orphans(&mut self) -> bool {
        loop {
            if self.orphan.is_none() {
                match Spool::adopt_orphan(&self.dir, &self.own) {
                    Ok(Some(orphan)) => {
                        tracing::info!(spool = %orphan.path().display(), records_bytes = orphan.pending(), "delivering the audit spool of a previous process");
                        self.orphan = Some(orphan);
                    }
                    Ok(None) => return true,
                    Err(error) => {
                        tracing::error!(%error, dir = %self.dir.display(), "cannot look for audit spools left by earlier processes");
                        return true;
                    }
                }
            }
            let Some(mut orphan) = self.orphan.take() else {
                return true;
            };
            while orphan.pending() > 0 {
                let (bytes, _) = match orphan.read_batch() {
                    Ok(batch) => batch,
                    Err(error) => {
                        tracing::error!(%error, spool = %orphan.path().display(), "cannot read an audit spool");
                        self.orphan = Some(orphan);
                        return false;
                    }
                };
                let (delivered, stopped) = self.deliver_lines(&bytes).await;
                let consumed = orphan.consume(delivered);
                if stopped || delivered == 0 || consumed.is_err() {
                    self.orphan = Some(orphan);
                    return false;
                }
            }
            // Delivered: dropping it removes the file.
        }
    }

    /// Stores the spooled lines in order; returns the bytes delivered and whether the store
    /// failed before the end.
    async fn deliver_lines(&mut self, bytes: &[u8]) -> (u64, bool) {
        let mut delivered = 0u64;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            match serde_json::from_slice::<Spooled>(line) {
                Ok(entry) => match self.store_write(&entry.record).await {
                    Ok(()) => {
                        if !entry.streamed {
                            self.write_stream(std::slice::from_ref(&entry.record));
                        }
                    }
                    Err(e) if refused(&e) => self.count_refused(&entry.record, &e),
                    Err(_) => return (delivered, true),
                },
                Err(error) => {
                    tracing::error!(%error, "skipping an unreadable line of an audit spool")
                }
            }
            delivered += line.len() as u64;
        }
        (delivered, false)
    }

    /// Writes the records as JSON lines, in one write (the stream is unbuffered: a line per
    /// write was a system call per login).
    fn write_stream(&mut self, records: &[AuditRecord]) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut lines = Vec::with_capacity(records.len() * 512);
        for record in records {
            let start = lines.len();
            match serde_json::to_writer(&mut lines, record) {
                Ok(()) => lines.push(b'\n'),
                Err(_) => lines.truncate(start),
            }
        }
        match stream.write_all(&lines).and_then(|()| stream.flush()) {
            Ok(()) => self.stream_failing = false,
            Err(error) => {
                if !self.stream_failing {
                    self.stream_failing = true;
                    tracing::warn!(%error, "cannot write the audit stream (the store still gets every record)");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incidents_are_short_readable_and_distinct() {
        let a = new_incident();
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("GK-"));
        assert!(a[3..]
            .bytes()
            .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)));
        assert_ne!(a, new_incident());
    }

    #[test]
    fn record_ids_sort_by_time_and_stay_distinct() {
        let (a, b, later) = (
            new_record_id(1_700_000_000_000),
            new_record_id(1_700_000_000_000),
            new_record_id(1_700_000_000_001),
        );
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(a[..12], b[..12]);
        assert!(a < later && b < later);
        assert_eq!(&a[..12], "018bcfe56800");
    }

    #[test]
    fn records_are_bounded_and_carry_no_control_characters() {
        let mut record = AuditRecord::new(kind::LOGIN_DECISION, &new_incident());
        record.route = Some("x".repeat(10_000));
        record.client_ip = Some("1.2.3.4\n{\"forged\":1}".into());
        record.risk = Some(f64::NAN);
        record.reasons = serde_json::Value::Array(
            (0..500)
                .map(|i| serde_json::json!({ "feature": format!("f{i}"), "z": 3.5 }))
                .collect(),
        );
        let record = record.bounded();
        assert_eq!(record.route.as_ref().unwrap().len(), MAX_FIELD_BYTES);
        assert!(!record.client_ip.as_ref().unwrap().contains('\n'));
        assert_eq!(record.risk, None);
        let reasons = record.reasons.as_array().unwrap();
        assert!(!reasons.is_empty() && reasons.len() < 500);
        assert!(
            serde_json::to_string(&record).unwrap().len() < crate::store::MAX_AUDIT_DETAIL_BYTES
        );
    }

    #[test]
    fn config_accepts_the_three_stream_forms() {
        for (text, stream) in [
            ("stream: stdout", AuditStream::Stdout),
            ("stream: off", AuditStream::Off),
            (
                "stream: { file: /tmp/a.jsonl }",
                AuditStream::File("/tmp/a.jsonl".into()),
            ),
        ] {
            let config: AuditConfig = serde_saphyr::from_str(text).unwrap();
            assert_eq!(config.stream, stream, "{text}");
        }
    }
}
