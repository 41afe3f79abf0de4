//! Fitted user models kept in memory in front of the store, so that scoring a login of a warm
//! user reads no database.
//!
//! Owns: a moka cache bounded by the models' weighted size (`store.cache_mb`), with idle expiry
//! (`store.cache_idle`); single-flight loading, so concurrent logins of one cold user read the
//! store once; replacing an entry when a model is refitted; and the hit, miss, load and eviction
//! metrics. Users without a model are cached too (as "no model"), so enrolling users do not
//! hit the store on every login; saving their first model replaces that entry.
//!
//! The cache is generic over the decoded model type ([`CachedModel`]): the scoring stages
//! decode a [`StoredModel`] once per load, never per login. Never writes to the store.
//!
//! With several instances on one PostgreSQL store, an instance sees another's refit once its own
//! entry goes idle or is replaced; the learning stage that refits is the one that replaces.

use std::future::Future;
use std::sync::Arc;

use moka::future::Cache;
use moka::notification::RemovalCause;
use prometheus::IntCounter;

use crate::config::StoreConfig;
use crate::metrics::CacheMetrics;
use crate::store::{Store, StoreError, StoredModel, UserKey};

/// A model the cache can hold: decoded from its stored form once per load, weighed by the
/// memory it takes.
pub trait CachedModel: Send + Sync + 'static {
    /// The model in usable form, or `None` when this stored model cannot be used (e.g. it
    /// was fitted for another feature version): the user is then treated as having none.
    fn decode(stored: StoredModel) -> Option<Self>
    where
        Self: Sized;

    /// Approximate bytes of memory the decoded model takes.
    fn weight_bytes(&self) -> usize;
}

/// The stored form itself, for callers that decode on use.
impl CachedModel for StoredModel {
    fn decode(stored: StoredModel) -> Option<Self> {
        Some(stored)
    }

    fn weight_bytes(&self) -> usize {
        self.blob.len()
    }
}

/// What a cache entry holds: the user's model, or the fact that they have none.
type Entry<M> = Option<Arc<M>>;

/// Bookkeeping bytes counted per entry on top of the model, so that even "no model" entries
/// are bounded by the size limit.
const ENTRY_OVERHEAD_BYTES: usize = 128;

/// A failed load, shared by every login that waited for it.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot load the user's model: {0}")]
pub struct LoadError(pub Arc<StoreError>);

/// The model cache. Cheap to clone; clones share the entries.
#[derive(Clone)]
pub struct ModelCache<M: CachedModel = StoredModel> {
    cache: Cache<UserKey, Entry<M>>,
    metrics: CacheMetrics,
    // Resolved once: a warm lookup should not hash label values.
    hits: IntCounter,
    misses: IntCounter,
    loaded: IntCounter,
    load_errors: IntCounter,
}

impl<M: CachedModel> ModelCache<M> {
    /// An empty cache sized by `store.cache_mb` and `store.cache_idle`, reporting into
    /// `metrics` (usually `Metrics::model_cache`).
    pub fn new(config: &StoreConfig, metrics: CacheMetrics) -> Self {
        let evictions = metrics.evictions.clone();
        let cache = Cache::builder()
            .max_capacity(u64::from(config.cache_mb) * 1024 * 1024)
            .weigher(|_key: &UserKey, entry: &Entry<M>| {
                let model = entry.as_ref().map_or(0, |m| m.weight_bytes());
                u32::try_from(model.saturating_add(ENTRY_OVERHEAD_BYTES)).unwrap_or(u32::MAX)
            })
            .time_to_idle(config.cache_idle.0)
            .eviction_listener(move |_key, _entry, cause| {
                let cause = match cause {
                    RemovalCause::Size => "size",
                    RemovalCause::Expired => "idle",
                    RemovalCause::Replaced => "replaced",
                    RemovalCause::Explicit => "invalidated",
                };
                evictions.with_label_values(&[cause]).inc();
            })
            .build();
        ModelCache {
            cache,
            hits: metrics.requests.with_label_values(&["hit"]),
            misses: metrics.requests.with_label_values(&["miss"]),
            loaded: metrics.loads.with_label_values(&["ok"]),
            load_errors: metrics.loads.with_label_values(&["error"]),
            metrics,
        }
    }

    /// The user's model: from memory, else loaded from `store` (once, however many callers
    /// ask at the same time). `Ok(None)`: the user has no usable model yet.
    pub async fn get(&self, store: &Store, user: &UserKey) -> Result<Option<Arc<M>>, LoadError> {
        // The load future is only polled on a miss.
        self.get_or_load(user, store.load_model(user)).await
    }

    /// Like [`ModelCache::get`] with a loader of the caller's choosing (tests, other sources).
    /// The loader runs only on a miss, and only in one of the concurrent callers; the others
    /// wait for its result.
    pub async fn get_or_load<F>(&self, user: &UserKey, load: F) -> Result<Option<Arc<M>>, LoadError>
    where
        F: Future<Output = Result<Option<StoredModel>, StoreError>>,
    {
        if let Some(entry) = self.cache.get(user).await {
            self.hits.inc();
            return Ok(entry);
        }
        self.misses.inc();
        let (loaded, load_errors) = (&self.loaded, &self.load_errors);
        let result = self
            .cache
            .try_get_with(*user, async move {
                match load.await {
                    Ok(stored) => {
                        loaded.inc();
                        Ok(stored.and_then(M::decode).map(Arc::new))
                    }
                    Err(e) => {
                        load_errors.inc();
                        Err(e)
                    }
                }
            })
            .await
            .map_err(LoadError);
        self.update_gauges();
        result
    }

    /// The user's entry if it is in memory (counted as a hit), without ever loading: the
    /// scoring path's fast lane, which needs no store and no other runtime.
    pub(crate) async fn peek(&self, user: &UserKey) -> Option<Option<Arc<M>>> {
        let entry = self.cache.get(user).await?;
        self.hits.inc();
        Some(entry)
    }

    /// Puts a newly fitted model in place of whatever the cache held for the user (call it
    /// after the model was saved to the store).
    pub async fn replace(&self, user: &UserKey, model: M) {
        self.cache.insert(*user, Some(Arc::new(model))).await;
        self.update_gauges();
    }

    /// Drops the user's entry (after `users reset` or `forget`); the next lookup reloads.
    pub async fn invalidate(&self, user: &UserKey) {
        self.cache.invalidate(user).await;
        self.update_gauges();
    }

    /// Runs moka's pending maintenance (evictions, expiry) now rather than lazily; for tests
    /// and for exact gauges.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
        self.update_gauges();
    }

    /// Current weighted size in bytes (approximate until pending tasks ran).
    pub fn weighted_bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Current number of entries (approximate until pending tasks ran).
    pub fn entries(&self) -> u64 {
        self.cache.entry_count()
    }

    fn update_gauges(&self) {
        self.metrics
            .bytes
            .set(i64::try_from(self.cache.weighted_size()).unwrap_or(i64::MAX));
        self.metrics
            .entries
            .set(i64::try_from(self.cache.entry_count()).unwrap_or(i64::MAX));
    }
}
