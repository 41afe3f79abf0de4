//! Shared pieces of the hostile-input and attack tests: the legacy app behind gaitkeeper with a
//! given policy, TOTP enrollment through the CLI, raw HTTP/1.1 over a TCP stream (for what
//! reqwest refuses to send), and the question every bypass test asks: did anybody get logged
//! in?

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[allow(unused_imports)]
pub use crate::common::legacy::{
    challenge_from, enroll_totp, form, location, post_code, wrong_code, Challenge, ALICE, BOB,
};
use crate::common::legacy::{LegacyApp, LEGACY_ROUTES};
use crate::common::Gaitkeeper;

/// Refuse every login gaitkeeper cannot vouch for: any bypass then shows up as a login the
/// app accepted, any decided login as gaitkeeper's 403.
pub const STRICT: &str = "policy:\n  on_missing_telemetry: block\n  on_invalid_telemetry: block\n  on_replayed_token: block\n";

/// The legacy app with gaitkeeper in front, its routes and `policy` (top-level YAML).
pub async fn start(policy: &str) -> (LegacyApp, Gaitkeeper) {
    let app = LegacyApp::start().await;
    // Without the spa route's fixed `return_to`, so replayed fetch logins go back to their
    // (checked) Referer: what the open-redirect tests probe.
    let routes = LEGACY_ROUTES.replace("    return_to: \"/account\"\n", "");
    let more = format!("{routes}store:\n  enrollment_logins: 5\n{policy}");
    let gk = Gaitkeeper::start_with(app.addr, "", &more).await;
    (app, gk)
}

/// Whether the app logged anybody in on its last login request (`/__debug/last-login`).
pub async fn app_logged_in(app: &LegacyApp) -> bool {
    let seen = app.last_login().await;
    !seen.is_null() && seen["status"] == 303
}

/// Writes `request` (raw bytes, any number of pipelined requests) on one connection and reads
/// until the server closes it or `limit` passes; returns everything read.
pub async fn raw(addr: SocketAddr, request: &[u8], limit: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A server may answer (413, 400) and close before reading all we send: not an error here.
    let _ = stream.write_all(request).await;
    read_until_closed(&mut stream, limit).await
}

/// Reads until EOF, a reset, or `limit`.
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return out;
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until `responses` HTTP status lines have arrived (with their heads), EOF, or `limit`.
pub async fn read_responses(stream: &mut TcpStream, responses: usize, limit: Duration) -> Vec<u8> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while statuses(&out).len() < responses {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// The status codes of every HTTP/1.1 response head in `bytes`, in order.
pub fn statuses(bytes: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(bytes);
    text.match_indices("HTTP/1.1 ")
        .filter(|(i, _)| *i == 0 || text[..*i].ends_with('\n'))
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}
