//! Scoring one login from cached models: validate the payload, extract the features, run every
//! detector, fuse and explain (the issue's target: median ≤ 20 µs, p99 ≤ 100 µs on one core);
//! and fitting one user's models from 50 logins (target ≤ 5 ms). Synthetic but realistic
//! payloads: a username and an 8-character password typed, ~120 mouse samples, two clicks.
//! Run with `cargo bench --bench scoring`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};

use gaitkeeper::features::{extract, FeatureVector};
use gaitkeeper::model::{assess, GlobalModel, TrainingUser, UserModel};
use gaitkeeper::telemetry::{validate, Limits};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A small deterministic generator (no dependency on rand's stream stability).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A login payload of user `user` (their tempo and mouse speed), variant `seed`.
fn payload(user: u64, seed: u64) -> String {
    let mut r = Lcg(user * 1000 + seed);
    let tempo = 120.0 + 15.0 * user as f64;
    let mut t = 1000.0;
    let mut keys = Vec::new();
    let mut stroke = 0;
    for (field, class, n) in [(0, "l", 6), (0, "t", 1), (1, "c", 8)] {
        for _ in 0..n {
            let dwell = 70.0 + 20.0 * r.next();
            keys.push((t, format!(r#"[{t:.1},"d","{class}",{field},{stroke},0]"#)));
            let up = t + dwell;
            keys.push((up, format!(r#"[{up:.1},"u","{class}",{field},{stroke},0]"#)));
            t += tempo * (0.7 + 0.6 * r.next());
            stroke += 1;
        }
    }
    // Overlapping strokes (next press before the last release) are normal: order by time.
    keys.sort_by(|a, b| a.0.total_cmp(&b.0));
    let keys: Vec<String> = keys.into_iter().map(|k| k.1).collect();
    let speed = 0.5 + 0.1 * user as f64;
    let (mut x, mut y) = (100.0, 100.0);
    let moves: Vec<String> = (0..120)
        .map(|i| {
            x += speed * 16.0 * (0.5 + r.next());
            y += speed * 8.0 * (r.next() - 0.3);
            format!("[{:.1},{:.0},{:.0}]", 200.0 + 16.0 * i as f64, x, y)
        })
        .collect();
    let t1 = t + 600.0;
    format!(
        r#"{{"v":1,"cv":"1.0.0","tk":"x","hv":"submit","n":1,"t0":100,"t1":{t1:.1},"vis":{:.1},"vp":[1280,720],"u":0,"tr":0,
        "f":[{{"i":0,"fm":0,"n":"user","y":"text","p":0,"a":0,"ni":6}},{{"i":1,"fm":0,"n":"pw","y":"password","p":0,"a":0,"ni":8}}],
        "fc":[[150,0,"mouse"],[{:.1},1,"tab"]],"k":[{}],"kn":{},"m":[{}],"mi":[120,1],"p":[],"pi":[0,1],
        "c":[[190,0,"f",100,100,80],[{:.1},0,"b",400,300,90]],"w":[[100,"v"],[100,"f"]]}}"#,
        t1 - 100.0,
        1000.0 + 7.0 * tempo,
        keys.join(","),
        keys.len(),
        moves.join(","),
        t,
    )
}

fn vector(user: u64, seed: u64) -> FeatureVector {
    extract(&validate(payload(user, seed).as_bytes(), &Limits::default()).unwrap())
}

fn bench(c: &mut Criterion) {
    let users: Vec<Vec<FeatureVector>> = (0..12)
        .map(|u| (0..30).map(|s| vector(u, s)).collect())
        .collect();
    let training: Vec<TrainingUser<'_>> = users
        .iter()
        .skip(1)
        .map(|l| TrainingUser {
            enrol: &l[..20],
            later: &l[20..],
        })
        .collect();
    let global = GlobalModel::train(&training, 1);
    let fifty: Vec<FeatureVector> = (0..50).map(|s| vector(0, 100 + s)).collect();
    let user = UserModel::fit(&fifty, &global.population);
    let login = payload(0, 999);

    c.bench_function("score_one_login", |b| {
        b.iter(|| {
            let t = validate(black_box(login.as_bytes()), &Limits::default()).unwrap();
            let fv = extract(&t);
            black_box(assess(&user, &global, &fv))
        })
    });
    c.bench_function("assess_only", |b| {
        let fv = vector(0, 999);
        b.iter(|| black_box(assess(&user, &global, black_box(&fv))))
    });
    c.bench_function("fit_user_from_50_logins", |b| {
        b.iter(|| black_box(UserModel::fit(black_box(&fifty), &global.population)))
    });
}

/// Per-call percentiles (criterion reports means of batches; the target is on p50 and p99).
fn percentiles() {
    let users: Vec<Vec<FeatureVector>> = (0..12)
        .map(|u| (0..30).map(|s| vector(u, s)).collect())
        .collect();
    let training: Vec<TrainingUser<'_>> = users
        .iter()
        .skip(1)
        .map(|l| TrainingUser {
            enrol: &l[..20],
            later: &l[20..],
        })
        .collect();
    let started = Instant::now();
    let global = GlobalModel::train(&training, 1);
    println!(
        "global model training (11 users x 30 logins): {:?}",
        started.elapsed()
    );
    let fifty: Vec<FeatureVector> = (0..50).map(|s| vector(0, 100 + s)).collect();
    let user = UserModel::fit(&fifty, &global.population);
    let size = serde_json::to_vec(&user).map_or(0, |v| v.len());
    println!("user model (50 logins), JSON: {size} bytes");
    let negatives: Vec<&FeatureVector> = users.iter().skip(1).flatten().collect();
    let started = Instant::now();
    let contrasted = UserModel::fit_contrasted(&fifty, &global.population, &negatives, 1);
    println!(
        "user model with contrast forest: fit {:?}, JSON {} bytes",
        started.elapsed(),
        serde_json::to_vec(&contrasted).map_or(0, |v| v.len())
    );
    let logins: Vec<String> = (0..64).map(|s| payload(s % 12, 500 + s)).collect();
    let mut times: Vec<Duration> = Vec::with_capacity(20_000);
    for i in 0..20_000 {
        let login = &logins[i % logins.len()];
        let start = Instant::now();
        let t = validate(black_box(login.as_bytes()), &Limits::default()).unwrap();
        let fv = extract(&t);
        black_box(assess(&user, &global, &fv));
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "score one login (validate + features + detectors + fusion + reasons), 20000 calls: p50 {:?}, p99 {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
    let mut fits: Vec<Duration> = (0..200)
        .map(|_| {
            let start = Instant::now();
            black_box(UserModel::fit(black_box(&fifty), &global.population));
            start.elapsed()
        })
        .collect();
    fits.sort();
    println!(
        "fit a user's models from 50 logins: p50 {:?}, max {:?}",
        fits[fits.len() / 2],
        fits[fits.len() - 1]
    );
}

criterion_group!(benches, bench);

fn main() {
    percentiles();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
