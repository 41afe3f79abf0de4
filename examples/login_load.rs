//! Load generator for scored logins (used by `bench/scored-logins.sh`): each simulated person
//! loads the login page (for its page token), then posts the login form with a telemetry
//! payload in their own rhythm. Only the POST is timed: that is where gaitkeeper scores.
//!
//! Usage: login_load --target http://127.0.0.1:PORT [--users N] [--concurrency C]
//!        [--enroll LOGINS] [--seconds S] [--stranger-every N] [--rate R]
//! With `--rate R` the measured logins are paced at R per second in all (each worker keeps its
//! own schedule and catches up when late) instead of as fast as the target answers: the
//! latency of a given load rather than at saturation.
//! With `--stranger-every N`, every Nth measured login is typed in a stranger's rhythm (such
//! logins are challenged and left waiting: held-login memory under load).
//! Prints one JSON line: posts, seconds, posts per second, POST latency p50/p90/p99 (µs), and
//! the response statuses seen.

#[path = "../tests/integration/common/behaviour.rs"]
mod behaviour;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Options {
    target: String,
    users: usize,
    concurrency: usize,
    enroll: usize,
    seconds: u64,
    stranger_every: usize,
    rate: f64,
}

fn options() -> Options {
    let mut o = Options {
        target: String::new(),
        users: 200,
        concurrency: 32,
        enroll: 6,
        seconds: 10,
        stranger_every: 0,
        rate: 0.0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--target" => o.target = value,
            "--users" => o.users = value.parse().expect("--users N"),
            "--concurrency" => o.concurrency = value.parse().expect("--concurrency C"),
            "--enroll" => o.enroll = value.parse().expect("--enroll LOGINS"),
            "--seconds" => o.seconds = value.parse().expect("--seconds S"),
            "--stranger-every" => o.stranger_every = value.parse().expect("--stranger-every N"),
            "--rate" => o.rate = value.parse().expect("--rate LOGINS_PER_SECOND"),
            other => panic!("unknown option {other}"),
        }
    }
    assert!(
        !o.target.is_empty(),
        "--target http://HOST:PORT is required"
    );
    o
}

/// One login: GET the page, POST the form. Returns the POST's latency and status.
async fn login(
    client: &reqwest::Client,
    target: &str,
    user: usize,
    seed: u64,
    rhythm: &behaviour::Rhythm,
) -> Result<(Duration, u16), reqwest::Error> {
    let page = client
        .get(format!("{target}/login"))
        .send()
        .await?
        .text()
        .await?;
    let token = page
        .split("data-gk-token=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("none");
    let name = format!("user{user:05}");
    let password = "correct-horse-42";
    let payload = behaviour::payload(token, rhythm, name.len(), password.len(), seed);
    let body = format!(
        "csrf_token=c5rf&username={name}&password={password}&__gk={}",
        behaviour::form_encode(&payload)
    );
    let started = Instant::now();
    let response = client
        .post(format!("{target}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    response.bytes().await?;
    Ok((started.elapsed(), status))
}

fn percentile(sorted: &[u128], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let o = Arc::new(options());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("login-load/1.0")
        .pool_max_idle_per_host(o.concurrency * 2)
        .build()
        .unwrap();

    // Enrollment: every user logs in `enroll` times (verified by the app's 303 + cookie).
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..o.concurrency {
        let (o, client, next) = (o.clone(), client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= o.users * o.enroll {
                    return;
                }
                let _ = login(
                    &client,
                    &o.target,
                    i % o.users,
                    i as u64,
                    &behaviour::STEADY,
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Give background learning a moment to fit every profile before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let statuses = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    // Tells a driving script the timed phase starts (bench/scored-logins.sh measures the
    // proxy's CPU from here).
    eprintln!("timed phase");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..o.concurrency {
        let (o, client, stop) = (o.clone(), client.clone(), stop.clone());
        let (latencies, statuses) = (latencies.clone(), statuses.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut seen = BTreeMap::<String, u64>::new();
            let mut i = worker;
            // Paced: this worker's share of the rate, its first slot staggered from the others'.
            let interval =
                (o.rate > 0.0).then(|| Duration::from_secs_f64(o.concurrency as f64 / o.rate));
            let mut slot = tokio::time::Instant::from_std(started)
                + interval.unwrap_or_default() * worker as u32 / o.concurrency as u32;
            while !stop.load(Ordering::Relaxed) {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(slot).await;
                    slot += interval;
                }
                let stranger = o.stranger_every > 0 && i % o.stranger_every == 0;
                let rhythm = if stranger {
                    &behaviour::STRANGER
                } else {
                    &behaviour::STEADY
                };
                let seed = 1_000_000 + i as u64;
                let key = match login(&client, &o.target, i % o.users, seed, rhythm).await {
                    Ok((d, status)) => {
                        mine.push(d.as_micros());
                        status.to_string()
                    }
                    Err(_) => "error".to_string(),
                };
                *seen.entry(key).or_default() += 1;
                i += o.concurrency;
            }
            latencies.lock().unwrap().extend(mine);
            let mut all = statuses.lock().unwrap();
            for (k, v) in seen {
                *all.entry(k).or_default() += v;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "posts": l.len(),
            "seconds": (seconds * 100.0).round() / 100.0,
            "rate": o.rate,
            "posts_per_second": (l.len() as f64 / seconds).round(),
            "p50_us": percentile(&l, 0.50),
            "p90_us": percentile(&l, 0.90),
            "p99_us": percentile(&l, 0.99),
            "statuses": *statuses.lock().unwrap(),
        })
    );
}
