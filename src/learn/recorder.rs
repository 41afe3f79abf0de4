//! The recorder: every settled login goes into the store's history, and the verified ones
//! teach their user's model, in batches, from one background worker.
//!
//! Why one worker and batches: a busy login path settles thousands of logins a second. One
//! task and one transaction per login made them queue for the store's connections (SQLite has
//! a single writer), starving the audit trail and any login whose user's model had to be read.
//! One worker gathers what arrives within [`GATHER`] (up to [`MAX_BATCH`] logins), records it in
//! one transaction and learns from it with one more, holding at most one connection at a time.
//! It sleeps while gathering, so the request threads never wake it.
//!
//! Bounded: at most [`MAX_QUEUED`] logins wait; past that a login is not recorded nor learnt
//! from (its audit record is kept elsewhere) and `gaitkeeper_settle_dropped_total` counts it.

use crate::batch::{self, BatchQueue, Gatherer, Next};
use crate::features::FeatureVector;
use crate::learn::Learner;
use crate::store::{NewLogin, Outcome, Store};

/// Most logins waiting to be recorded.
pub(super) const MAX_QUEUED: usize = 10_000;
/// Most logins recorded in one transaction.
pub(super) const MAX_BATCH: usize = 512;
/// How long the worker gathers logins into a batch before writing it.
pub(super) const GATHER: std::time::Duration = std::time::Duration::from_millis(200);

/// A login whose outcome is known, to be recorded (and learnt from, if verified).
pub struct Settle {
    pub login: String,
    pub new: NewLogin,
    /// The features to learn from; `None` for a login that was not scored.
    pub features: Option<FeatureVector>,
    pub request_id: String,
}

/// Hands settled logins to the recording worker.
#[derive(Clone)]
pub struct Recorder {
    queue: BatchQueue<Box<Settle>>,
    dropped: prometheus::IntCounter,
}

impl Recorder {
    /// Starts the worker on `runtime` (the background runtime that owns the store).
    pub fn start(
        store: Store,
        learner: Learner,
        runtime: &tokio::runtime::Handle,
        dropped: prometheus::IntCounter,
    ) -> Recorder {
        let (queue, gatherer) = batch::queue(MAX_QUEUED, GATHER, MAX_BATCH);
        runtime.spawn(work(gatherer, store, learner));
        Recorder { queue, dropped }
    }

    /// Queues a login without waiting; counted as dropped when the queue is full.
    pub fn record(&self, login: Settle) {
        if self.queue.try_push(Box::new(login)).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits until every login queued before this call is recorded and learnt from, and the
    /// learnt models are saved.
    pub async fn flush(&self) {
        self.queue.flush().await;
    }
}

async fn work(mut gatherer: Gatherer<Box<Settle>>, store: Store, learner: Learner) {
    // Bigger batches mean fewer commits, and a user's several logins are learnt with one
    // model save.
    while let Next::Batch(mut batch) = gatherer.next(None).await {
        let logins = std::mem::take(&mut batch.items);
        record_batch(&store, &learner, logins.into_iter().map(|l| *l).collect()).await;
        if batch.is_flush() {
            if let Err(e) = learner.save_unsaved().await {
                tracing::warn!(error = %e, "cannot save the learnt user models");
            }
        }
        batch.answer_flushes();
    }
}

async fn record_batch(store: &Store, learner: &Learner, batch: Vec<Settle>) {
    if batch.is_empty() {
        return;
    }
    let (logins, rest): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|s| {
            let verified = s.new.outcome == Outcome::Verified;
            ((s.login, s.new), (s.features, s.request_id, verified))
        })
        .unzip();
    let results = store.record_logins(logins).await;
    let mut to_learn = Vec::new();
    let mut failed = 0usize;
    for (result, (features, request_id, verified)) in results.into_iter().zip(rest) {
        match result {
            // Only verified logins teach the profile; the store holds them as verified now,
            // which is what learning requires.
            Ok(recorded) => {
                if let (true, Some(features)) = (verified, features) {
                    to_learn.push((recorded.user, features));
                }
            }
            Err(e) => {
                failed += 1;
                // One line per batch, not per login, while the store is down.
                if failed == 1 {
                    tracing::warn!(error = %e, request_id = %request_id, "cannot record the login");
                }
            }
        }
    }
    if failed > 1 {
        tracing::warn!(
            logins = failed,
            "more logins of the same batch were not recorded"
        );
    }
    if to_learn.is_empty() {
        return;
    }
    let count = to_learn.len();
    if let Err(e) = learner.learn_many(to_learn).await {
        tracing::warn!(error = %e, logins = count, "cannot learn from the logins");
    }
}
