//! Shared pieces of the hostile-input and attack tests: the legacy app behind gaitkeeper with a
//! given policy, TOTP enrollment through the CLI, raw HTTP/1.1 over a TCP stream (for what
//! reqwest refuses to send), and the question every bypass test asks: did anybody get logged
//! in?

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::legacy::{LegacyApp, LoginPage, LEGACY_ROUTES};
use crate::common::{self, Gaitkeeper};

pub const ALICE: (&str, &str) = ("alice", "wonderland-42");
pub const BOB: (&str, &str) = ("bob", "builder-2024");

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

/// Enrolls a TOTP secret for `user` with the CLI and returns a code generator.
pub fn enroll_totp(gk: &Gaitkeeper, user: &str) -> totp_rs::Totp {
    let out = Command::new(common::binary())
        .args(["users", "--config"])
        .arg(&gk.config_path)
        .args(["enroll-totp", user])
        .env("GK_TEST_SECRET", common::SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let uri = stdout
        .lines()
        .find(|l| l.starts_with("otpauth://"))
        .expect("an otpauth URI");
    totp_rs::Totp::from_url_unchecked(uri).expect("a valid otpauth URI")
}

/// A six-digit code that is none of the codes accepted around now (previous, current, next
/// step), so a "wrong code" test cannot pass by luck.
pub fn wrong_code(totp: &totp_rs::Totp) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let valid: Vec<String> = [now.saturating_sub(30), now, now + 30, now + 60]
        .iter()
        .map(|t| totp.generate(*t).to_string())
        .collect();
    // Not a round number that could appear in a log for other reasons (timestamps).
    (734_591..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| !valid.contains(c))
        .unwrap()
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The urlencoded login body for `page` (the app's CSRF field included).
pub fn form(page: &LoginPage, user: &str, password: &str, payload: Option<&str>) -> String {
    let enc = common::behaviour::form_encode;
    let mut body = format!(
        "csrf_token={}&username={}&password={}",
        enc(&page.csrf_token),
        enc(user),
        enc(password)
    );
    if let Some(p) = payload {
        body.push_str(&format!("&__gk={}", enc(p)));
    }
    body
}

/// Whether the app logged anybody in on its last login request (`/__debug/last-login`).
pub async fn app_logged_in(app: &LegacyApp) -> bool {
    let seen = app.last_login().await;
    !seen.is_null() && seen["status"] == 303
}

/// The login challenge a held login was sent to, with its binding cookie and CSRF token.
pub struct Challenge {
    pub path: String,
    pub cookie: String,
    pub csrf: String,
}

/// Reads the challenge from a 303 answer to a login, loading the page for its CSRF token.
pub async fn challenge_from(gk: &Gaitkeeper, r: &reqwest::Response) -> Challenge {
    assert_eq!(r.status(), 303, "the login was not challenged");
    let path = location(r);
    assert!(path.starts_with("/__gk/challenge/"), "{path}");
    let binding = crate::common::legacy::set_cookie(r, "__gk_challenge").expect("binding");
    let cookie = format!("__gk_challenge={binding}");
    let page = common::client()
        .get(gk.url(&path))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF field")
        .to_string();
    Challenge { path, cookie, csrf }
}

/// Posts a TOTP code to a challenge.
pub async fn post_code(
    gk: &Gaitkeeper,
    c: &Challenge,
    code: impl std::fmt::Display,
) -> reqwest::Response {
    common::client()
        .post(gk.url(&c.path))
        .header("cookie", &c.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}&code={code}", c.csrf))
        .send()
        .await
        .unwrap()
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
