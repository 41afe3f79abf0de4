//! Rewriting a 100 KB login page: throughput (MB/s of page) and the time each page takes
//! (p50/p99), for an identity and a gzip body, fed in 16 KiB chunks as they arrive from the
//! app. One thread. Run with `cargo bench --bench inject`.

use std::io::Write;
use std::time::{Duration, Instant};

use gaitkeeper::inject::{Coding, PageRewriter};

// The same allocator as the gaitkeeper binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TAG: &str = "<script src=\"/__gk/capture.js\" defer data-gk-token=\"eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJ4In0.c2ln\" data-gk-field=\"__gk\" data-gk-header=\"X-Gaitkeeper-Telemetry\" data-gk-login-urls=\"/login\"></script>";

fn page(size: usize) -> Vec<u8> {
    let mut html =
        String::from("<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in</title>");
    html.push_str("<style>body{font-family:sans-serif}.row{margin:4px}</style></head><body>");
    html.push_str("<form method=\"post\" action=\"/login\"><input name=\"username\"><input type=\"password\" name=\"password\"></form>");
    let mut i = 0;
    while html.len() < size - 20 {
        html.push_str(&format!(
            "<div class=\"row\" id=\"r{i}\"><a href=\"/item/{i}\">Item {i}</a> <span>some descriptive text &amp; more</span></div>\n"
        ));
        i += 1;
    }
    html.push_str("</body></html>");
    html.into_bytes()
}

fn measure(name: &str, body: &[u8], coding: Coding, page_bytes: usize, rounds: usize) {
    let mut times = Vec::with_capacity(rounds);
    let mut out_len = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let mut rewriter = PageRewriter::new(TAG.to_string(), coding, Some("utf-8"));
        for chunk in body.chunks(16 * 1024) {
            out_len = rewriter.feed(chunk).expect("rewrites").len();
        }
        out_len += rewriter.finish().expect("finishes").len();
        times.push(start.elapsed());
    }
    std::hint::black_box(out_len);
    times.sort();
    let total: Duration = times.iter().sum();
    let mb_per_s = (page_bytes * rounds) as f64 / total.as_secs_f64() / 1e6;
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "| {name} | {} KB | {mb_per_s:.0} MB/s | {:.3} ms | {:.3} ms |",
        page_bytes / 1000,
        pct(0.50),
        pct(0.99)
    );
}

fn main() {
    let html = page(100_000);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&html).unwrap();
    let gz = gz.finish().unwrap();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this as a quick smoke
    // test of the same code instead (no figures are taken from that run).
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(if benching { 3000 } else { 5 });
    println!("| body | page | throughput | p50 per page | p99 per page |");
    println!("|---|---|---|---|---|");
    // Warm up caches and the allocator.
    measure(
        "warm-up",
        &html,
        Coding::Identity,
        html.len(),
        rounds.min(200),
    );
    measure("identity", &html, Coding::Identity, html.len(), rounds);
    measure("gzip", &gz, Coding::Gzip, html.len(), rounds);
}
