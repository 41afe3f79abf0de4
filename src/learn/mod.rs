//! Continuous learning: verified logins → each user's model, and the store's population of
//! verified logins → the global model.
//!
//! Owns: the per-user learning state (the last `learning.window` verified logins with running
//! statistics, see `window`), the cheap update after each verified login, writing updated
//! states behind (a busy user's state is saved once per [`SAVE_DELAY`], not once per login:
//! the logins are in the store already, so a state lost in a crash is rebuilt by the user's
//! next refit), the full refit from
//! the store every `learning.refit_every` logins or when a stored model is of another feature
//! or model version (in the background, never on the caller's path), the model cache in front
//! of the store, training, saving and loading the versioned global model, and pruning old
//! login features on the same schedule.
//!
//! Never learns from a login it is not handed after verification: the caller settles a login
//! `Verified` in the store first, and refits read only verified logins
//! ([`Store::verified_features`]), so blocked, failed and unconfirmed attempts cannot poison a
//! profile. Never logs features or login names. A refit or a training never blocks a login:
//! they run in spawned tasks (the CPU part on the blocking pool).

mod recorder;
mod window;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use prometheus::IntCounter;
use tokio::sync::{Notify, Semaphore};

use crate::cache::{CachedModel, LoadError, ModelCache};
use crate::config::{Config, StoreConfig};
use crate::features::{from_blob, FeatureVector, FEATURE_VERSION};
use crate::metrics::{CacheMetrics, LearnMetrics};
use crate::model::{GlobalModel, TrainingUser, UserModel, MODEL_VERSION};
use crate::store::{Store, StoreError, StoredModel, UserKey, MAX_PAGE};

pub use crate::config::LearnConfig;
pub use recorder::{Recorder, Settle};
use window::Window;
pub use window::MAX_WINDOW;

/// Most users whose logins one global training reads (a sample, in key order, which is
/// unrelated to who the users are): bounds its memory and time.
pub(crate) const MAX_TRAINING_USERS: usize = 500;
/// Most user refits waiting or running at once; beyond it a refit is skipped and asked for
/// again by the user's next login.
pub(crate) const MAX_PENDING_REFITS: usize = 10_000;
/// Refits computing at the same time (they share the machine with the proxy).
const REFIT_CONCURRENCY: usize = 2;
/// Per-user locks, striped: a learn and a refit of the same user never interleave.
const LOCK_STRIPES: usize = 64;
/// Longest a learnt state waits in memory before it is saved.
pub const SAVE_DELAY: Duration = Duration::from_secs(5);
/// Most users whose learnt state waits to be saved (each up to `learning.window` rows); one
/// more and they are all saved at once.
pub(crate) const MAX_UNSAVED: usize = 1024;

/// What can go wrong while learning, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the login's features are version {found} but this gaitkeeper learns version {expected}; the login was not learnt from")]
    FeatureVersion { found: u32, expected: u32 },
    #[error("cannot encode a model for the store: {0}")]
    Encode(String),
    #[error("the training task stopped: {0}")]
    Task(String),
}

/// A user's learnt state waiting to be saved, with the model it gives.
type Unsaved = (Window, Arc<UserModel>);

/// What the cache holds for a user.
enum CachedUser {
    /// A model to score with.
    Ready(Arc<UserModel>),
    /// A stored model of an older feature version whose window this gaitkeeper can widen
    /// (`window::decode_window`): the first lookup fits the model from it, so an upgrade does
    /// not leave the user unscored, and schedules a refit that saves it in today's version.
    Upgrade(Box<Window>),
    /// A stored model this gaitkeeper cannot use (another feature or model version, or damaged
    /// bytes): scored as "no model" until the refit it triggers replaces it.
    Stale,
    /// A refit found no usable verified login: no model, and no refit until the next login.
    Empty,
}

impl CachedModel for CachedUser {
    fn decode(stored: StoredModel) -> Option<Self> {
        Some(match window::decode_model(&stored) {
            Some(model) => CachedUser::Ready(Arc::new(model)),
            None => match window::decode_window(&stored) {
                Some(window) => CachedUser::Upgrade(Box::new(window)),
                None => CachedUser::Stale,
            },
        })
    }

    fn weight_bytes(&self) -> usize {
        match self {
            CachedUser::Ready(m) => model_bytes(m),
            CachedUser::Upgrade(w) => w.approx_bytes(),
            CachedUser::Stale | CachedUser::Empty => 0,
        }
    }
}

/// Approximate memory of a decoded user model.
fn model_bytes(m: &UserModel) -> usize {
    let dims = m.layout.dims();
    let forest = if m.contrast.is_some() { 256 * 1024 } else { 0 };
    128 + 12 * dims + m.kept.len() * (24 + 4 * dims) + forest
}

/// The learning stage. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Learner {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cache: ModelCache<CachedUser>,
    config: LearnConfig,
    global: ArcSwap<GlobalModel>,
    /// The stored global model in use (id, creation time); `None` while untrained.
    global_meta: Mutex<Option<(i64, SystemTime)>>,
    global_trained: AtomicBool,
    locks: Box<[tokio::sync::Mutex<()>]>,
    /// Learnt states not saved yet (write-behind), newest per user. Changed only under the
    /// user's lock.
    unsaved: Mutex<HashMap<UserKey, Unsaved>>,
    refits: Semaphore,
    pending: Mutex<HashSet<UserKey>>,
    in_flight: AtomicUsize,
    idle: Notify,
    /// One global training at a time per instance.
    training: tokio::sync::Mutex<()>,
    metrics: LearnMetrics,
    // Resolved once: `learn` runs for every verified login.
    learnt: IntCounter,
    learn_errors: IntCounter,
}

/// What a global training did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    /// The saved model's id, or `None` when the population was too small.
    pub saved: Option<i64>,
    /// Users and verified logins that qualified (and, when saved, were trained on).
    pub users: u64,
    pub logins: u64,
    /// The documented minimum (`learning.global_min_users` × `global_min_logins_per_user`).
    pub min_users: u32,
    pub min_logins_per_user: u32,
    pub elapsed: Duration,
}

impl fmt::Display for TrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        match self.saved {
            Some(id) => write!(
                f,
                "trained global model #{id} on {} users and {} verified logins in {secs:.2}s",
                self.users, self.logins
            ),
            None => write!(
                f,
                "the population is too small to train the global model: {} users have at least {} verified logins, {} are needed (learning.global_min_users); until then the per-user detectors decide alone (checked in {secs:.2}s)",
                self.users, self.min_logins_per_user, self.min_users
            ),
        }
    }
}

impl Learner {
    /// A learner over `store`, with an empty model cache sized by `store_config`, reporting
    /// into `learning` and `cache`. The global model starts untrained:
    /// [`Learner::spawn_background`] (or [`Learner::load_global`]) loads the stored one.
    pub fn new(
        store: Store,
        config: &LearnConfig,
        store_config: &StoreConfig,
        learning: &LearnMetrics,
        cache: &CacheMetrics,
    ) -> Learner {
        let learning = learning.clone();
        learning.global_trained.set(0);
        Learner {
            inner: Arc::new(Inner {
                store,
                cache: ModelCache::new(store_config, cache.clone()),
                config: config.clone(),
                global: ArcSwap::from_pointee(GlobalModel::untrained()),
                global_meta: Mutex::new(None),
                global_trained: AtomicBool::new(false),
                locks: (0..LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                unsaved: Mutex::new(HashMap::new()),
                refits: Semaphore::new(REFIT_CONCURRENCY),
                pending: Mutex::new(HashSet::new()),
                in_flight: AtomicUsize::new(0),
                idle: Notify::new(),
                training: tokio::sync::Mutex::new(()),
                learnt: learning.logins.with_label_values(&["ok"]),
                learn_errors: learning.logins.with_label_values(&["error"]),
                metrics: learning,
            }),
        }
    }

    /// The store this learner writes to.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The user's model to score with, from memory or the store; `None` while they have no
    /// usable model yet. A stored model of another version is not an error: it schedules a
    /// refit and reads as `None` until that is done, unless it is of features version 1,
    /// whose window gives the model at once.
    pub async fn user_model(&self, key: &UserKey) -> Result<Option<Arc<UserModel>>, LearnError> {
        let entry = self.inner.cache.get(&self.inner.store, key).await?;
        Ok(match entry.as_deref() {
            Some(CachedUser::Ready(model)) => Some(model.clone()),
            Some(CachedUser::Upgrade(window)) => {
                let model = Arc::new(window.model(&self.global().population));
                self.inner
                    .cache
                    .replace(key, CachedUser::Ready(model.clone()))
                    .await;
                self.schedule_refit(*key);
                Some(model)
            }
            Some(CachedUser::Stale) => {
                self.schedule_refit(*key);
                None
            }
            Some(CachedUser::Empty) | None => None,
        })
    }

    /// The user's model if the cache already holds a usable answer (a model, or "none
    /// yet"); `None` when the store must be asked ([`Learner::user_model`]). Touches no store
    /// and spawns nothing, so any runtime may call it.
    pub(crate) async fn cached_user_model(&self, key: &UserKey) -> Option<Option<Arc<UserModel>>> {
        match self.inner.cache.peek(key).await?.as_deref() {
            Some(CachedUser::Ready(model)) => Some(Some(model.clone())),
            Some(CachedUser::Empty) | None => Some(None),
            Some(CachedUser::Upgrade(_) | CachedUser::Stale) => None,
        }
    }

    /// Drops the user's cached model, so that the next login reads it from the store (after
    /// their profile moved to another key).
    pub(crate) async fn forget_cached(&self, key: &UserKey) {
        self.inner.cache.invalidate(key).await;
    }

    /// The global model in use; untrained (no forest, neutral prior) until the population
    /// is large enough.
    pub fn global(&self) -> Arc<GlobalModel> {
        self.inner.global.load_full()
    }

    /// Whether a trained global model is in use; when false the per-user detectors decide
    /// alone, and the reasons should say so.
    pub fn global_trained(&self) -> bool {
        self.inner.global_trained.load(Ordering::Acquire)
    }

    /// Learns from one login of `key` that the store already holds as `Verified`: updates the
    /// user's running statistics, saves the model and puts it in the cache. Every
    /// `learning.refit_every` logins, or when the stored state is of another version or the
    /// user's usual password length changed, a full refit is scheduled in the background.
    pub async fn learn(&self, key: &UserKey, features: &FeatureVector) -> Result<(), LearnError> {
        self.learn_many(vec![(*key, features.clone())]).await
    }

    /// Learns from many verified logins at once, as [`Learner::learn`] does from each: every
    /// user's logins are taken in order, and all the new models are saved in one transaction
    /// (what keeps learning cheap on a busy login path). Logins of another feature version are
    /// skipped and counted as errors; a store failure fails the whole batch.
    pub async fn learn_many(
        &self,
        logins: Vec<(UserKey, FeatureVector)>,
    ) -> Result<(), LearnError> {
        let total = logins.len() as u64;
        let mut by_user: BTreeMap<UserKey, Vec<FeatureVector>> = BTreeMap::new();
        let mut wrong_version = None;
        for (key, features) in logins {
            if features.version == FEATURE_VERSION {
                by_user.entry(key).or_default().push(features);
            } else {
                wrong_version = Some(LearnError::FeatureVersion {
                    found: features.version,
                    expected: FEATURE_VERSION,
                });
            }
        }
        let usable = by_user.values().map(|v| v.len() as u64).sum::<u64>();
        self.inner.learn_errors.inc_by(total - usable);
        let result = self.learn_users(by_user).await;
        match &result {
            Ok(()) => self.inner.learnt.inc_by(usable),
            Err(_) => self.inner.learn_errors.inc_by(usable),
        }
        match (result, wrong_version) {
            (Err(e), _) | (Ok(()), Some(e)) => Err(e),
            (Ok(()), None) => Ok(()),
        }
    }

    async fn learn_users(
        &self,
        by_user: BTreeMap<UserKey, Vec<FeatureVector>>,
    ) -> Result<(), LearnError> {
        let inner = &self.inner;
        let window_len = inner.config.window as usize;
        let guards = inner.lock_all(by_user.keys()).await;
        let global = self.global();
        let mut refits = Vec::new();
        for (key, logins) in by_user {
            let unsaved = lock(&inner.unsaved).remove(&key);
            let was_unsaved = unsaved.is_some();
            let (mut window, mut refit) = match unsaved {
                Some((window, _)) => (window, false),
                None => {
                    let stored = inner.store.load_model(&key).await?;
                    match stored.as_ref().and_then(window::decode_window) {
                        Some(w) => (w, false),
                        // New user, or a state this version cannot continue: start from these
                        // logins, and let a refit bring in the user's other verified logins.
                        None => (Window::first(&logins[0]), stored.is_some()),
                    }
                }
            };
            let mut changed = false;
            for features in &logins {
                // A refit between the caller recording this login and now has learnt it already.
                if window.contains(features) {
                    continue;
                }
                refit |= !window.push(features, window_len);
                changed = true;
            }
            if !changed && !was_unsaved {
                continue;
            }
            refit |= changed && window.since_refit >= inner.config.refit_every;
            let model = Arc::new(window.model(&global.population));
            inner
                .cache
                .replace(&key, CachedUser::Ready(model.clone()))
                .await;
            lock(&inner.unsaved).insert(key, (window, model));
            if refit {
                refits.push(key);
            }
        }
        drop(guards);
        if lock(&inner.unsaved).len() >= MAX_UNSAVED {
            self.save_unsaved().await?;
        }
        for key in refits {
            self.schedule_refit(key);
        }
        Ok(())
    }

    /// Saves every learnt state still waiting in memory, in one transaction. Runs every
    /// [`SAVE_DELAY`] in the background, when [`MAX_UNSAVED`] users wait, and from
    /// [`Recorder::flush`] (so at shutdown). A state that cannot be saved now stays in memory
    /// for the next attempt, unless a newer one replaced it meanwhile.
    pub async fn save_unsaved(&self) -> Result<(), LearnError> {
        let inner = &self.inner;
        let pending: Vec<UserKey> = lock(&inner.unsaved).keys().copied().collect();
        if pending.is_empty() {
            return Ok(());
        }
        // Under the users' locks, so no learn or refit of theirs runs between taking a state
        // and saving it.
        let guards = inner.lock_all(pending.iter()).await;
        let taken: Vec<(UserKey, Unsaved)> = {
            let mut unsaved = lock(&inner.unsaved);
            pending
                .iter()
                .filter_map(|key| unsaved.remove(key).map(|w| (*key, w)))
                .collect()
        };
        let encoded = tokio::task::spawn_blocking(move || {
            let mut saves = Vec::with_capacity(taken.len());
            for (key, (window, model)) in &taken {
                match window::encode(model, window) {
                    Ok(blob) => saves.push((*key, FEATURE_VERSION, MODEL_VERSION, blob)),
                    Err(e) => return Err((taken, LearnError::Encode(e.to_string()))),
                }
            }
            Ok((taken, saves))
        })
        .await
        .map_err(|e| LearnError::Task(e.to_string()))?;
        let (taken, saves) = match encoded {
            Ok(done) => done,
            Err((taken, e)) => {
                lock(&inner.unsaved).extend(taken);
                return Err(e);
            }
        };
        match inner.store.save_models(saves).await {
            Ok(saved) => {
                for ((key, _), saved) in taken.iter().zip(saved) {
                    // Not saved: the user was forgotten meanwhile; their model must not stay
                    // in the cache either.
                    if !saved {
                        inner.cache.invalidate(key).await;
                    }
                }
                drop(guards);
                Ok(())
            }
            Err(e) => {
                lock(&inner.unsaved).extend(taken);
                drop(guards);
                Err(e.into())
            }
        }
    }

    /// Refits the user's model from their last `learning.window` verified logins in the store,
    /// now. Returns whether a model was saved (false: no usable verified login).
    pub async fn refit(&self, key: &UserKey) -> Result<bool, LearnError> {
        let result = self.refit_one(key).await;
        let label = match result {
            Ok(true) => "ok",
            Ok(false) => "empty",
            Err(_) => "error",
        };
        self.inner.metrics.refits.with_label_values(&[label]).inc();
        result
    }

    async fn refit_one(&self, key: &UserKey) -> Result<bool, LearnError> {
        let inner = &self.inner;
        let _user = inner.lock(key).await;
        let window_len = inner.config.window as usize;
        let blobs = inner.store.verified_features(key, window_len).await?;
        // The store holds every login learnt so far: the refit supersedes a state not saved yet.
        lock(&inner.unsaved).remove(key);
        // Newest first from the store; a window is built oldest first. Logins of another
        // feature version are skipped: their numbers mean something else.
        let logins: Vec<FeatureVector> = blobs.iter().rev().filter_map(from_blob).collect();
        if logins.is_empty() {
            inner.cache.replace(key, CachedUser::Empty).await;
            return Ok(false);
        }
        let population = self.global();
        let (model, blob) = tokio::task::spawn_blocking(move || {
            let window = Window::fit(&logins, window_len);
            let model = window.model(&population.population);
            window::encode(&model, &window).map(|blob| (model, blob))
        })
        .await
        .map_err(|e| LearnError::Task(e.to_string()))?
        .map_err(|e| LearnError::Encode(e.to_string()))?;
        inner
            .store
            .save_model(key, FEATURE_VERSION, MODEL_VERSION, blob)
            .await?;
        inner
            .cache
            .replace(key, CachedUser::Ready(Arc::new(model)))
            .await;
        Ok(true)
    }

    /// Runs [`Learner::refit`] in the background, once per user however often it is asked.
    fn schedule_refit(&self, key: UserKey) {
        {
            let mut pending = lock(&self.inner.pending);
            if pending.len() >= MAX_PENDING_REFITS || !pending.insert(key) {
                return;
            }
        }
        let learner = self.clone();
        let busy = InFlight::start(&self.inner);
        tokio::spawn(async move {
            let _busy = busy;
            let permit = learner.inner.refits.acquire().await;
            // Leave the pending set before reading, so a login learnt meanwhile can ask again.
            lock(&learner.inner.pending).remove(&key);
            if let Err(e) = learner.refit(&key).await {
                tracing::warn!(error = %e, "refitting a user model failed; the next login retries");
            }
            drop(permit);
        });
    }

    /// Waits until no refit or training scheduled by this learner is waiting or running (for
    /// tests and orderly shutdown).
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Loads the newest stored global model of this version if it is newer than the one in
    /// use. Returns whether it switched.
    pub async fn load_global(&self) -> Result<bool, LearnError> {
        let current = lock(&self.inner.global_meta).map(|m| m.0);
        let Some(stored) = self
            .inner
            .store
            .load_global_model(FEATURE_VERSION, MODEL_VERSION, current)
            .await?
        else {
            return Ok(false);
        };
        let decoded = tokio::task::spawn_blocking(move || {
            decode_global(&stored.blob).map(|m| (m, stored.id, stored.created_at))
        })
        .await
        .map_err(|e| LearnError::Task(e.to_string()))?;
        match decoded {
            Some((model, id, created_at)) => {
                self.install_global(model, id, created_at);
                Ok(true)
            }
            None => {
                tracing::warn!("the newest stored global model cannot be decoded; keeping the one in use until the next training replaces it");
                Ok(false)
            }
        }
    }

    fn install_global(&self, model: GlobalModel, id: i64, created_at: SystemTime) {
        self.inner.global.store(Arc::new(model));
        *lock(&self.inner.global_meta) = Some((id, created_at));
        self.inner.global_trained.store(true, Ordering::Release);
        self.inner.metrics.global_trained.set(1);
    }

    /// Trains the global model from the store's verified logins, saves it for every instance
    /// and uses it; or reports that the population is still too small (then nothing changes).
    pub async fn train_global(&self) -> Result<TrainReport, LearnError> {
        let result = self.train_global_now().await;
        let label = match &result {
            Ok(report) if report.saved.is_some() => "trained",
            Ok(_) => "too_small",
            Err(_) => "error",
        };
        self.inner
            .metrics
            .trainings
            .with_label_values(&[label])
            .inc();
        result
    }

    async fn train_global_now(&self) -> Result<TrainReport, LearnError> {
        let inner = &self.inner;
        let _one = inner.training.lock().await;
        let started = Instant::now();
        let min_logins = inner.config.global_min_logins_per_user as usize;
        let per_user = (inner.config.window as usize).max(min_logins);
        let mut population: Vec<Vec<FeatureVector>> = Vec::new();
        let mut after: Option<UserKey> = None;
        'pages: loop {
            let page = inner.store.list_users(after.as_ref(), MAX_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key);
            for user in &page {
                if user.verified_logins < min_logins as u64 {
                    continue;
                }
                let blobs = inner.store.verified_features(&user.key, per_user).await?;
                let logins: Vec<FeatureVector> = blobs.iter().rev().filter_map(from_blob).collect();
                if logins.len() >= min_logins {
                    population.push(logins);
                    if population.len() >= MAX_TRAINING_USERS {
                        break 'pages;
                    }
                }
            }
            if page.len() < MAX_PAGE {
                break;
            }
        }
        let users = population.len() as u64;
        let logins = population.iter().map(|l| l.len() as u64).sum();
        let mut report = TrainReport {
            saved: None,
            users,
            logins,
            min_users: inner.config.global_min_users,
            min_logins_per_user: inner.config.global_min_logins_per_user,
            elapsed: Duration::ZERO,
        };
        if users < u64::from(inner.config.global_min_users) {
            report.elapsed = started.elapsed();
            return Ok(report);
        }
        let seed = users.wrapping_mul(1_000_003).wrapping_add(logins);
        let (model, blob) = tokio::task::spawn_blocking(move || {
            // Older half to enrol on, newer half as the same person's later logins.
            let training: Vec<TrainingUser<'_>> = population
                .iter()
                .map(|l| {
                    let (enrol, later) = l.split_at(l.len() / 2);
                    TrainingUser { enrol, later }
                })
                .collect();
            let model = GlobalModel::train(&training, seed);
            encode_global(&model).map(|blob| (model, blob))
        })
        .await
        .map_err(|e| LearnError::Task(e.to_string()))?
        .map_err(|e| LearnError::Encode(e.to_string()))?;
        let id = inner
            .store
            .save_global_model(FEATURE_VERSION, MODEL_VERSION, blob, users, logins)
            .await?;
        self.install_global(model, id, SystemTime::now());
        report.saved = Some(id);
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Starts the background work (call inside a tokio runtime): every [`SAVE_DELAY`], save
    /// the learnt states waiting in memory; at once and then every
    /// `learning.global_retrain`, prune login features older than `store.retention`, pick up
    /// a newer global model saved by any instance, and retrain when the newest is older than
    /// that interval. User refits are spawned as they
    /// are needed. The task ends when the last clone of this learner is dropped.
    pub fn spawn_background(&self) {
        let here = tokio::runtime::Handle::current();
        crate::runtime::spawn_every(&here, &self.inner, SAVE_DELAY, |inner| async move {
            if let Err(e) = (Learner { inner }).save_unsaved().await {
                tracing::warn!(error = %e, "saving learnt user models failed; they stay in memory and are saved at the next attempt");
            }
        });
        let period = self.inner.config.global_retrain.0;
        crate::runtime::spawn_every(&here, &self.inner, period, move |inner| async move {
            Learner { inner }.scheduled(period).await
        });
    }

    async fn scheduled(&self, period: Duration) {
        // Retention is enforced here too: raw features older than `store.retention` go.
        match self.inner.store.prune(SystemTime::now()).await {
            Ok(pruned) => tracing::debug!(pruned, "pruned old login features"),
            Err(e) => {
                tracing::warn!(error = %e, "pruning old login features failed; retrying at the next interval")
            }
        }
        if let Err(e) = self.load_global().await {
            tracing::warn!(error = %e, "loading the global model failed; retrying at the next interval");
        }
        let fresh = lock(&self.inner.global_meta)
            .is_some_and(|(_, at)| at.elapsed().is_ok_and(|age| age < period));
        if fresh {
            return;
        }
        let _busy = InFlight::start(&self.inner);
        match self.train_global().await {
            Ok(report) => tracing::info!(
                users = report.users,
                logins = report.logins,
                trained = report.saved.is_some(),
                "{report}"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "training the global model failed; retrying at the next interval")
            }
        }
    }
}

impl Inner {
    async fn lock(&self, key: &UserKey) -> tokio::sync::MutexGuard<'_, ()> {
        self.locks[stripe(key)].lock().await
    }

    /// The locks of all these users, taken in one order so that two callers never deadlock.
    async fn lock_all<'a>(
        &self,
        keys: impl Iterator<Item = &'a UserKey>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let stripes: BTreeSet<usize> = keys.map(stripe).collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for s in stripes {
            guards.push(self.locks[s].lock().await);
        }
        guards
    }
}

/// Which of the per-user locks guards `key`'s model.
fn stripe(key: &UserKey) -> usize {
    usize::from(key.0[0]) % LOCK_STRIPES
}

/// Counts a background task for [`Learner::wait_idle`] until dropped (also on panic).
struct InFlight(Arc<Inner>);

impl InFlight {
    fn start(inner: &Arc<Inner>) -> InFlight {
        inner.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(inner.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update of a plain set or pair;
/// the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const GLOBAL_MAGIC: &[u8; 4] = b"GKGM";
const GLOBAL_FORMAT: u8 = 1;

fn encode_global(model: &GlobalModel) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    let mut blob = GLOBAL_MAGIC.to_vec();
    blob.push(GLOBAL_FORMAT);
    blob.extend(rmp_serde::to_vec(model)?);
    Ok(blob)
}

/// A stored global model, or `None` for bytes that are not one of this version.
pub fn decode_global(blob: &[u8]) -> Option<GlobalModel> {
    let rest = blob.strip_prefix(GLOBAL_MAGIC)?;
    let (&format, rest) = rest.split_first()?;
    if format != GLOBAL_FORMAT {
        return None;
    }
    let model: GlobalModel = rmp_serde::from_slice(rest).ok()?;
    (model.version == MODEL_VERSION && model.population.named.len() == crate::features::N)
        .then_some(model)
}

/// `gaitkeeper train`: trains the global model from the store `config` names, and prints what
/// it used or why the population is too small, and how long it took.
pub fn run_train(config: &Config, out: &mut dyn Write) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let store =
            Store::open(&config.store, &config.server.data_dir, &config.secrets.key).await?;
        let learner = Learner::new(
            store.clone(),
            &config.learning,
            &config.store,
            &LearnMetrics::new(),
            &CacheMetrics::new(),
        );
        let result = learner.train_global().await;
        store.close().await;
        writeln!(out, "{}", result?)?;
        Ok(())
    })
}
