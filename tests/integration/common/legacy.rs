//! The bundled legacy app as a real upstream, and a login walk-through against it through
//! gaitkeeper: load the login page (the app's CSRF cookie and field, gaitkeeper's page token),
//! post the form with a telemetry payload, follow what comes back.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{client, free_port, Gaitkeeper};

/// The demo accounts (login name, password).
pub const ALICE: (&str, &str) = ("alice", "wonderland-42");
pub const BOB: (&str, &str) = ("bob", "builder-2024");

/// The bundled legacy app, with its debug endpoint on; killed on drop.
pub struct LegacyApp {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for LegacyApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LegacyApp {
    pub async fn start() -> LegacyApp {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_legacy-app"))
            .args(["--listen", &addr.to_string(), "--debug-endpoints"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "legacy app did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        LegacyApp { child, addr }
    }

    /// What the app saw of the last login (field names, user, status; never the password).
    pub async fn last_login(&self) -> Value {
        reqwest::get(format!("http://{}/__debug/last-login", self.addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The legacy app's routes, with how its responses show a successful login.
pub const LEGACY_ROUTES: &str = "routes:\n  - name: login\n    page: { paths: [\"/login\"], methods: [GET, POST] }\n    submit: { path: \"/login\" }\n    username: { field: username }\n    success: { status: [303], location_prefix: \"/account\", set_cookie: legacy_session }\n  - name: spa-login\n    page: { paths: [\"/spa-login\"] }\n    submit: { path: \"/api/login\" }\n    username: { json_pointer: \"/username\" }\n    success: { status: [200], set_cookie: legacy_session }\n    return_to: \"/account\"\n";

/// A loaded login page: what the browser would keep to submit it.
pub struct LoginPage {
    pub csrf_cookie: String,
    pub csrf_token: String,
    pub gk_token: String,
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in {text}"))
        + start.len();
    let len = text[from..].find(end).unwrap();
    &text[from..from + len]
}

/// The value of cookie `name` set by `response`.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (k, rest) = v.split_once('=')?;
            (k == name).then(|| rest.split(';').next().unwrap_or("").to_string())
        })
}

pub async fn login_page(gk: &Gaitkeeper) -> LoginPage {
    login_page_at(&client(), &gk.url("")).await
}

/// The login page at `base` (a URL without a path: gaitkeeper, or a balancer in front of
/// it) loaded with `http`.
pub async fn login_page_at(http: &reqwest::Client, base: &str) -> LoginPage {
    let response = http.get(format!("{base}/login")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let csrf_cookie = set_cookie(&response, "legacy_csrf").expect("the app sets its CSRF cookie");
    let page = response.text().await.unwrap();
    LoginPage {
        csrf_cookie,
        csrf_token: between(&page, "name=\"csrf_token\" value=\"", "\"").to_string(),
        gk_token: between(&page, "data-gk-token=\"", "\"").to_string(),
    }
}

/// Posts the login form of `page` as `user`, with `payload` as telemetry (or none).
pub async fn submit(
    gk: &Gaitkeeper,
    page: &LoginPage,
    user: &str,
    password: &str,
    payload: Option<&str>,
) -> reqwest::Response {
    submit_at(&client(), &gk.url(""), page, user, password, payload).await
}

/// [`submit`] to `base` with `http`.
pub async fn submit_at(
    http: &reqwest::Client,
    base: &str,
    page: &LoginPage,
    user: &str,
    password: &str,
    payload: Option<&str>,
) -> reqwest::Response {
    let body = form(page, user, password, payload);
    http.post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Enrolls a TOTP secret for `user` with `gaitkeeper users enroll-totp` (on the store the
/// running proxy uses) and returns a code generator.
pub fn enroll_totp(gk: &Gaitkeeper, user: &str) -> totp_rs::Totp {
    enroll_totp_with_codes(gk, user).0
}

/// `users enroll-totp`: the user's authenticator, and the recovery codes printed with it
/// (none when the user already had some).
pub fn enroll_totp_with_codes(gk: &Gaitkeeper, user: &str) -> (totp_rs::Totp, Vec<String>) {
    let stdout = users_cli(gk, &["enroll-totp", user]);
    let uri = stdout
        .lines()
        .find(|l| l.starts_with("otpauth://"))
        .expect("an otpauth URI");
    let totp = totp_rs::Totp::from_url_unchecked(uri).expect("a valid otpauth URI");
    (totp, recovery_codes_in(&stdout))
}

/// `gaitkeeper users ARGS…` on `gk`'s store; its standard output (the command must succeed).
pub fn users_cli(gk: &Gaitkeeper, args: &[&str]) -> String {
    let (ok, stdout, stderr) = users_cli_result(gk, args);
    assert!(ok, "{stderr}");
    stdout
}

/// `gaitkeeper users ARGS…` on `gk`'s store: (success, standard output, standard error).
pub fn users_cli_result(gk: &Gaitkeeper, args: &[&str]) -> (bool, String, String) {
    let mut all = vec![
        "users".into(),
        "--config".into(),
        gk.config_path.clone().into_os_string(),
    ];
    all.extend(args.iter().map(std::ffi::OsString::from));
    super::run_cli(all)
}

/// The recovery codes (`xxxxx-xxxxx`) a `users` command printed.
pub fn recovery_codes_in(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.len() == 11
                && l.as_bytes()[5] == b'-'
                && l.bytes().all(|b| b == b'-' || b.is_ascii_alphanumeric())
        })
        .map(str::to_string)
        .collect()
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

/// The `Location` header of a response (empty when none).
pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The urlencoded login body for `page` (the app's CSRF field included).
pub fn form(page: &LoginPage, user: &str, password: &str, payload: Option<&str>) -> String {
    let enc = super::behaviour::form_encode;
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

/// The login challenge a held login was sent to, with its binding cookie and CSRF token.
pub struct Challenge {
    pub path: String,
    pub cookie: String,
    pub csrf: String,
    /// The challenge page as first shown.
    pub page: String,
}

/// Reads the challenge from a 303 answer to a login, loading the page for its CSRF token.
pub async fn challenge_from(gk: &Gaitkeeper, r: &reqwest::Response) -> Challenge {
    challenge_at(&gk.url(""), r).await
}

/// [`challenge_from`] through `base` (`http://host:port`, e.g. a load balancer).
pub async fn challenge_at(base: &str, r: &reqwest::Response) -> Challenge {
    assert_eq!(r.status(), 303, "the login was not challenged");
    let path = location(r);
    assert!(path.starts_with("/__gk/challenge/"), "{path}");
    let binding = set_cookie(r, "__gk_challenge").expect("binding");
    let cookie = format!("__gk_challenge={binding}");
    let page = client()
        .get(format!("{}{path}", base.trim_end_matches('/')))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page).to_string();
    Challenge {
        path,
        cookie,
        csrf,
        page,
    }
}

/// Posts a TOTP code to a challenge.
pub async fn post_code(
    gk: &Gaitkeeper,
    c: &Challenge,
    code: impl std::fmt::Display,
) -> reqwest::Response {
    post_code_at(&gk.url(""), c, code).await
}

/// [`post_code`] through `base`.
pub async fn post_code_at(
    base: &str,
    c: &Challenge,
    code: impl std::fmt::Display,
) -> reqwest::Response {
    client()
        .post(format!("{}{}", base.trim_end_matches('/'), c.path))
        .header("cookie", &c.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}&code={code}", c.csrf))
        .send()
        .await
        .unwrap()
}

/// Posts `fields` (urlencoded, after the CSRF token) to a challenge.
pub async fn post_form(gk: &Gaitkeeper, c: &Challenge, fields: &str) -> reqwest::Response {
    client()
        .post(gk.url(&c.path))
        .header("cookie", &c.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={}&{fields}", c.csrf))
        .send()
        .await
        .unwrap()
}

/// The authenticator an enrolment page's secret makes.
pub fn authenticator_of(page: &str) -> totp_rs::Totp {
    let base32 = page
        .split("<code id=\"secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("the secret to type in");
    let secret = totp_rs::Secret::try_from_base32(base32).unwrap();
    totp_rs::Builder::new().with_secret(secret).build().unwrap()
}

/// The CSRF token of one of gaitkeeper's pages (its hidden `csrf` field).
pub fn csrf_of(page: &str) -> &str {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF field")
}

/// The bundled app's `/account` page as the holder of session cookie `session` sees it.
pub async fn account_page(gk: &Gaitkeeper, session: &str) -> String {
    crate::common::client()
        .get(gk.url("/account"))
        .header("cookie", format!("legacy_session={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
