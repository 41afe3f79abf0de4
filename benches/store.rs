//! The profile store at size: SQLite file size per user, cold model loads (p50/p99, straight
//! from the store) and warm lookups (from the model cache), and the cache's memory against its
//! bound. Users: `GK_BENCH_USERS` (default 100000; the target is 1000000), each with
//! one verified login and a 1 KiB model. Run with `cargo bench --bench store`; under
//! `cargo test` it is a 1000-user smoke run.

use std::time::{Duration, Instant, SystemTime};

use gaitkeeper::cache::ModelCache;
use gaitkeeper::config::{Secret, StoreConfig};
use gaitkeeper::metrics::CacheMetrics;
use gaitkeeper::store::{Decision, FeatureBlob, NewLogin, Outcome, Store, UserKey};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MODEL_BYTES: usize = 1024;

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort_unstable();
    times[((times.len() as f64 * p) as usize).min(times.len() - 1)]
}

/// A small deterministic generator, so runs are comparable.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not, and then a small
    // smoke run is enough.
    let benching = std::env::args().any(|a| a == "--bench");
    let users: usize = std::env::var("GK_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 100_000 } else { 1_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(users, benching));
}

async fn run(users: usize, benching: bool) {
    let dir = tempfile::tempdir().unwrap();
    let secret = Secret::from_bytes(b"bench-secret-0123456789abcdef0123456789").unwrap();
    let config = StoreConfig {
        cache_mb: 16,
        ..StoreConfig::default()
    };
    let store = Store::open(&config, dir.path(), &secret).await.unwrap();

    let start = Instant::now();
    let mut keys: Vec<UserKey> = Vec::with_capacity(users);
    for i in 0..users {
        let login = NewLogin {
            at: SystemTime::now(),
            features: FeatureBlob {
                version: 1,
                bytes: vec![(i % 251) as u8; 256],
            },
            risk: 0.1,
            reasons: serde_json::json!([]),
            decision: Decision::Allow,
            outcome: Outcome::Verified,
        };
        let key = store
            .record_login(&format!("user{i}@example.com"), login)
            .await
            .unwrap()
            .user;
        store
            .save_model(&key, 1, 1, vec![(i % 253) as u8; MODEL_BYTES])
            .await
            .unwrap();
        keys.push(key);
        if (i + 1) % 100_000 == 0 {
            eprintln!("  {} users written", i + 1);
        }
    }
    let fill = start.elapsed();
    store.close().await;
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "store: {users} users (one 256 B login and a {MODEL_BYTES} B model each) written in {:.1} s; \
         SQLite files {:.1} MiB = {} bytes per user",
        fill.as_secs_f64(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes / users as u64
    );

    // Reopen, so nothing is warm in SQLite's own page cache either.
    let store = Store::open(&config, dir.path(), &secret).await.unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut cold = Vec::with_capacity(10_000);
    for _ in 0..users.min(10_000) {
        let key = &keys[next(&mut state) as usize % users];
        let t = Instant::now();
        let model = store.load_model(key).await.unwrap();
        cold.push(t.elapsed());
        assert!(model.is_some());
    }
    println!(
        "cold model load (store, random user): p50 {:?}  p99 {:?}  max {:?}",
        percentile(&mut cold, 0.50),
        percentile(&mut cold, 0.99),
        percentile(&mut cold, 1.0)
    );

    let metrics = CacheMetrics::new();
    let cache: ModelCache = ModelCache::new(&config, metrics.clone());
    let hot = keys[0];
    cache.get(&store, &hot).await.unwrap();
    let rounds = if benching { 1_000_000 } else { 10_000 };
    let t = Instant::now();
    for _ in 0..rounds {
        let model = cache.get(&store, &hot).await.unwrap();
        std::hint::black_box(model);
    }
    println!(
        "warm lookup (cache hit): {:.0} ns per lookup over {rounds}",
        t.elapsed().as_nanos() as f64 / rounds as f64
    );

    // Fill the cache well past its bound; it must stay within it.
    for key in keys.iter().take(50_000.min(users)) {
        cache.get(&store, key).await.unwrap();
    }
    cache.run_pending_tasks().await;
    println!(
        "cache: {} entries, {:.1} MiB weighted, bound {} MiB, {} evicted for size",
        cache.entries(),
        cache.weighted_bytes() as f64 / (1024.0 * 1024.0),
        config.cache_mb,
        metrics.evictions.with_label_values(&["size"]).get()
    );
    store.close().await;
}
