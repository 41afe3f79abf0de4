//! Step-up through the operator's OpenID Connect provider (`mfa.oidc`), end to end: the real
//! gaitkeeper binary in front of the bundled legacy app, and a real provider — npm's
//! oidc-provider 8.x (`tests/apps/oidc-provider/provider.js`) — whose login form the test fills
//! in over plain HTTP. A small cookie jar plays the browser across the three (they share the
//! host 127.0.0.1, as cookies do not care for ports). No mocks: every refusal below is the real
//! provider's answer, or gaitkeeper's check of the real provider's ID token.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::apps::{oidc_provider_installed, RealApp};
use common::legacy::{login_page_at, LegacyApp, LEGACY_ROUTES};
use common::{eventually, free_port, Gaitkeeper};

const CLIENT_SECRET: &str = "idp-client-secret-7f3a9c2e5b1d8a4f6e0c";
const OTHER_SECRET: &str = "other-client-secret-2b8e6d4c1a9f7e3d5c0b";
/// The app's password for bob (the legacy app's demo account) and his password at the provider.
const BOB_APP_PASSWORD: &str = "builder-2024";
const BOB_IDP: (&str, &str) = ("bob", "bob-at-the-provider-1");
const MALLORY_IDP: (&str, &str) = ("mallory", "mallory-at-the-provider-1");
/// The one-time code of every provider account (provider.js `--otp` default).
const IDP_OTP: &str = "246810";
const MFA_ACR: &str = "urn:gaitkeeper:test:mfa";

/// The legacy app, gaitkeeper with `mfa.oidc` (plus `oidc_extra`, indented as its keys) and
/// the provider with gaitkeeper's client and a second client ("other-app") that shares its
/// redirect URI.
struct Setup {
    gk: Gaitkeeper,
    idp: String,
    _app: LegacyApp,
    /// Dropped (killed) by the test of an unreachable provider.
    provider: Option<RealApp>,
    _keys: tempfile::TempDir,
}

async fn start(test: &str, oidc_extra: &str) -> Option<Setup> {
    start_with_store(test, oidc_extra, "").await
}

/// [`start`] with more YAML (a `store:` block).
async fn start_with_store(test: &str, oidc_extra: &str, store: &str) -> Option<Setup> {
    if !oidc_provider_installed(test) {
        return None;
    }
    let app = LegacyApp::start().await;
    let keys = tempfile::tempdir().unwrap();
    let secret = keys.path().join("oidc-client.key");
    common::write_secret(&secret, CLIENT_SECRET);
    let idp_port = free_port();
    let idp = format!("http://127.0.0.1:{idp_port}");
    let gk = Gaitkeeper::start_with(app.addr, "", &config(&idp, &secret, oidc_extra, store)).await;
    let redirect = format!("http://{}/__gk/challenge/oidc/callback", gk.addr);
    let provider = RealApp::oidc_provider(
        idp_port,
        &[
            ("gaitkeeper", CLIENT_SECRET, &redirect),
            ("other-app", OTHER_SECRET, &redirect),
        ],
        &[BOB_IDP, MALLORY_IDP],
    );
    Some(Setup {
        gk,
        idp,
        _app: app,
        provider: Some(provider),
        _keys: keys,
    })
}

/// The YAML gaitkeeper gets after the harness's: the legacy app's routes, a policy that
/// challenges logins without telemetry, `mfa.oidc` for the provider at `idp`, and `store`.
fn config(idp: &str, secret: &std::path::Path, oidc_extra: &str, store: &str) -> String {
    // Bob has no TOTP; `on_no_factor: block` shows the provider counts as his factor.
    format!(
        "{LEGACY_ROUTES}{store}policy:\n  on_missing_telemetry: challenge\n  on_no_factor: block\nmfa:\n  oidc:\n    display_name: \"Test IdP\"\n    issuer: \"{idp}\"\n    client_id: gaitkeeper\n    client_secret: {{ file: {:?} }}\n{oidc_extra}",
        secret.display().to_string()
    )
}

/// A browser: follows nothing by itself, keeps cookies by name (every server here is on
/// 127.0.0.1; paths are ignored, names do not clash).
struct Browser {
    http: reqwest::Client,
    jar: HashMap<String, String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: common::client(),
            jar: HashMap::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for value in r.headers().get_all("set-cookie") {
            let Ok(value) = value.to_str() else { continue };
            let Some((name, rest)) = value.split_once('=') else {
                continue;
            };
            let v = rest.split(';').next().unwrap_or("").to_string();
            let lower = value.to_ascii_lowercase();
            if v.is_empty()
                || lower.contains("max-age=0")
                || lower.contains("expires=thu, 01 jan 1970")
            {
                self.jar.remove(name.trim());
            } else {
                self.jar.insert(name.trim().to_string(), v);
            }
        }
    }

    async fn get(&mut self, url: &str) -> reqwest::Response {
        let r = self
            .http
            .get(url)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        self.keep(&r);
        r
    }

    /// GET `url` from the server at `server` (another instance behind the same name).
    async fn get_from(&mut self, url: &str, server: std::net::SocketAddr) -> reqwest::Response {
        let mut parsed = url::Url::parse(url).unwrap();
        let host = parsed.authority().to_string();
        parsed.set_port(Some(server.port())).unwrap();
        let r = self
            .http
            .get(parsed.as_str())
            .header("host", host)
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        self.keep(&r);
        r
    }

    async fn post_form(&mut self, url: &str, body: String) -> reqwest::Response {
        let r = self
            .http
            .post(url)
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        self.keep(&r);
        r
    }
}

/// The absolute URL a redirect of `r` (a response to `from`) points to.
fn next_url(from: &str, r: &reqwest::Response) -> String {
    let location = common::legacy::location(r);
    assert!(
        !location.is_empty(),
        "expected a redirect from {from}, got {}",
        r.status()
    );
    url::Url::parse(from)
        .unwrap()
        .join(&location)
        .unwrap()
        .to_string()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_string()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// Bob's login without telemetry: challenged. Returns the challenge's path.
async fn challenged_login(s: &Setup, b: &mut Browser) -> String {
    let page = login_page_at(&common::client(), &s.gk.url("")).await;
    b.jar.insert("legacy_csrf".into(), page.csrf_cookie.clone());
    let body = common::legacy::form(&page, "bob", BOB_APP_PASSWORD, None);
    let r = b.post_form(&s.gk.url("/login"), body).await;
    assert_eq!(r.status(), 303, "challenged; log:\n{}", s.gk.log());
    let path = common::legacy::location(&r);
    assert!(path.starts_with("/__gk/challenge/"), "{path}");
    path
}

/// The challenge page's button, followed to gaitkeeper's redirect: the provider's
/// authorization URL.
async fn authorization_url(s: &Setup, b: &mut Browser, challenge: &str) -> String {
    let r = b.get(&s.gk.url(challenge)).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let href = format!("{challenge}/oidc");
    assert!(
        page.contains(&format!("href=\"{href}\">Continue with Test IdP</a>")),
        "{page}"
    );
    let r = b.get(&s.gk.url(&href)).await;
    assert_eq!(r.status(), 303, "{}", s.gk.log());
    let to = common::legacy::location(&r);
    assert!(to.starts_with(&format!("{}/auth?", s.idp)), "{to}");
    to
}

/// Follows the provider's redirects from `url` until it sends the browser back to gaitkeeper
/// (that callback URL is returned, not visited) or shows its login form (`Err(form URL)`).
async fn at_provider(s: &Setup, b: &mut Browser, mut url: String) -> Result<String, String> {
    let callback = s.gk.url("/__gk/challenge/oidc/callback");
    for _ in 0..10 {
        if url.starts_with(&callback) {
            return Ok(url);
        }
        let r = b.get(&url).await;
        if r.status() == 200 {
            let page = r.text().await.unwrap();
            if page.contains("document.forms[0].submit()") {
                // A page a browser submits by itself (the provider ends the previous user's
                // session before another signs in).
                let (action, body) = self_submitting_form(&page);
                let r = b.post_form(&action, body).await;
                assert!(r.status().is_redirection(), "{action}: {}", r.status());
                url = next_url(&action, &r);
                continue;
            }
            assert!(page.contains("name=\"password\""), "{page}");
            return Err(url);
        }
        assert!(r.status().is_redirection(), "{url}: {}", r.status());
        url = next_url(&url, &r);
    }
    panic!("too many redirects at the provider");
}

/// The action and the urlencoded hidden fields of a page's self-submitting form.
fn self_submitting_form(page: &str) -> (String, String) {
    let attr = |tag: &str, name: &str| -> String {
        tag.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or("")
            .to_string()
    };
    let form = page.split("<form").nth(1).expect("a form");
    let action = attr(form.split('>').next().unwrap(), "action");
    let fields: Vec<String> = form
        .split("<input")
        .skip(1)
        .map(|input| {
            let tag = input.split('>').next().unwrap();
            format!(
                "{}={}",
                common::behaviour::form_encode(&attr(tag, "name")),
                common::behaviour::form_encode(&attr(tag, "value"))
            )
        })
        .collect();
    (action, fields.join("&"))
}

/// Signs in at the provider's form (at `form_url`) as `who`, with the one-time code when
/// `otp`; returns the callback URL the provider sends the browser to.
async fn sign_in(
    s: &Setup,
    b: &mut Browser,
    form_url: &str,
    who: (&str, &str),
    otp: bool,
) -> String {
    let enc = common::behaviour::form_encode;
    let body = format!(
        "username={}&password={}&otp={}",
        enc(who.0),
        enc(who.1),
        if otp { IDP_OTP } else { "" }
    );
    let action = format!("{form_url}/login");
    let r = b.post_form(&action, body).await;
    assert!(
        r.status().is_redirection(),
        "signed in at the provider: {}",
        r.status()
    );
    let next = next_url(&action, &r);
    at_provider(s, b, next).await.expect("back to gaitkeeper")
}

/// A whole step-up: the challenge's button, the provider's form as `who`, and the callback
/// URL it sends the browser back with (not visited).
async fn through_provider(
    s: &Setup,
    b: &mut Browser,
    challenge: &str,
    who: (&str, &str),
    otp: bool,
) -> String {
    let to = authorization_url(s, b, challenge).await;
    let form = at_provider(s, b, to)
        .await
        .expect_err("max_age 0: the provider asks for a sign-in");
    sign_in(s, b, &form, who, otp).await
}

/// The callback visited: the held login replayed, bob lands logged in on /account.
async fn assert_lands_logged_in(s: &Setup, b: &mut Browser, callback: &str) {
    let r = b.get(callback).await;
    assert_eq!(r.status(), 303, "replayed; log:\n{}", s.gk.log());
    assert_eq!(common::legacy::location(&r), "/account");
    assert!(b.jar.contains_key("legacy_session"), "the app's session");
    let r = b.get(&s.gk.url("/account")).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("bob"), "bob's account");
}

/// The callback visited and refused (403), with the page's text.
async fn refused(b: &mut Browser, callback: &str) -> String {
    let r = b.get(callback).await;
    let status = r.status();
    let page = r.text().await.unwrap();
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("Sign-in could not be confirmed"), "{page}");
    page
}

async fn audit_shows(gk: &Gaitkeeper, what: &[&str]) {
    eventually(Duration::from_secs(10), "the audit trail", || async {
        let (_, trail) = gk.audit(&["tail", "--lines", "60"]);
        what.iter().all(|w| trail.contains(w))
    })
    .await;
}

#[tokio::test]
async fn a_challenged_login_passes_through_the_provider_and_lands_logged_in() {
    let Some(s) = start(
        "oidc::a_challenged_login_passes_through_the_provider_and_lands_logged_in",
        "",
    )
    .await
    else {
        return;
    };
    let mut b = Browser::new();
    let challenge = challenged_login(&s, &mut b).await;
    let to = authorization_url(&s, &mut b, &challenge).await;
    // The code flow with PKCE (S256), a state, a nonce and a fresh sign-in.
    assert_eq!(query_param(&to, "response_type").as_deref(), Some("code"));
    assert_eq!(query_param(&to, "client_id").as_deref(), Some("gaitkeeper"));
    assert_eq!(
        query_param(&to, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&to, "code_challenge").map(|c| c.len()),
        Some(43)
    );
    assert_eq!(query_param(&to, "max_age").as_deref(), Some("0"));
    assert!(query_param(&to, "nonce").is_some_and(|n| n.len() >= 32));
    assert!(query_param(&to, "state").is_some_and(|n| n.len() >= 32));
    let scope = query_param(&to, "scope").unwrap();
    assert!(
        scope.contains("openid") && scope.contains("profile"),
        "{scope}"
    );
    assert_eq!(
        query_param(&to, "redirect_uri"),
        Some(s.gk.url("/__gk/challenge/oidc/callback"))
    );
    let form = at_provider(&s, &mut b, to)
        .await
        .expect_err("a sign-in form");
    let callback = sign_in(&s, &mut b, &form, BOB_IDP, false).await;
    assert!(query_param(&callback, "code").is_some());
    assert_lands_logged_in(&s, &mut b, &callback).await;
    audit_shows(&s.gk, &["challenge.passed", "\"factor\":\"oidc\""]).await;
    // The held login was replayed once: its challenge is gone.
    let r = b.get(&s.gk.url(&challenge)).await;
    assert_eq!(r.status(), 404);
    // The log never holds the code.
    let code = query_param(&callback, "code").unwrap();
    assert!(!s.gk.log().contains(&code));
}

#[tokio::test]
async fn a_login_sent_by_fetch_is_resumed_after_the_provider_in_a_popup() {
    let Some(s) = start(
        "oidc::a_login_sent_by_fetch_is_resumed_after_the_provider_in_a_popup",
        "",
    )
    .await
    else {
        return;
    };
    let mut b = Browser::new();
    let r = b
        .http
        .post(s.gk.url("/api/login"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(format!(
            r#"{{"username":"bob","password":"{BOB_APP_PASSWORD}"}}"#
        ))
        .send()
        .await
        .unwrap();
    b.keep(&r);
    assert_eq!(r.status(), 401, "challenged with JSON");
    let url = r.headers()["x-gaitkeeper-challenge"]
        .to_str()
        .unwrap()
        .to_string();
    // The capture script opens the challenge in a popup.
    let r = b.get(&s.gk.url(&format!("{url}?inline=popup"))).await;
    assert_eq!(r.status(), 200);
    let callback = through_provider(&s, &mut b, &url, BOB_IDP, false).await;
    // Passed: the popup's last page hands the page a one-time proof.
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 200, "{}", s.gk.log());
    let html = r.text().await.unwrap();
    let proof = html
        .split("resume: \"")
        .nth(1)
        .and_then(|p| p.split('"').next())
        .unwrap_or_else(|| panic!("no proof in {html}"))
        .to_string();
    // The page's script resumes the login: the app's own answer.
    let r = b
        .http
        .post(s.gk.url("/api/login"))
        .header("content-type", "application/json")
        .header("x-gaitkeeper-resume", &proof)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", s.gk.log());
    assert!(common::legacy::set_cookie(&r, "legacy_session").is_some());
}

#[tokio::test]
async fn a_wrong_state_is_refused_and_the_login_stays_held() {
    let Some(s) = start(
        "oidc::a_wrong_state_is_refused_and_the_login_stays_held",
        "",
    )
    .await
    else {
        return;
    };
    let mut b = Browser::new();
    let challenge = challenged_login(&s, &mut b).await;
    let callback = through_provider(&s, &mut b, &challenge, BOB_IDP, false).await;
    let state = query_param(&callback, "state").unwrap();
    // One character changed, and a state of another deployment's shape.
    let mut changed = state.clone().into_bytes();
    changed[30] = if changed[30] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).unwrap();
    refused(&mut b, &with_param(&callback, "state", &changed)).await;
    refused(&mut b, &with_param(&callback, "state", "not-a-state")).await;
    // The right answer still passes: the login was held all along, the code unused.
    assert_lands_logged_in(&s, &mut b, &callback).await;
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_the_login_stays_held() {
    let Some(s) = start(
        "oidc::a_replayed_code_is_refused_and_the_login_stays_held",
        "",
    )
    .await
    else {
        return;
    };
    let mut b = Browser::new();
    let first = challenged_login(&s, &mut b).await;
    let callback = through_provider(&s, &mut b, &first, BOB_IDP, false).await;
    let used_code = query_param(&callback, "code").unwrap();
    assert_lands_logged_in(&s, &mut b, &callback).await;
    // The same callback again: its challenge is gone.
    assert_eq!(b.get(&callback).await.status(), 404);

    // A new challenge answered with the used code (under the new challenge's state).
    let second = challenged_login(&s, &mut b).await;
    let to = authorization_url(&s, &mut b, &second).await;
    let state = query_param(&to, "state").unwrap();
    let replayed = format!(
        "{}?code={}&state={}",
        s.gk.url("/__gk/challenge/oidc/callback"),
        common::behaviour::form_encode(&used_code),
        common::behaviour::form_encode(&state)
    );
    refused(&mut b, &replayed).await;
    audit_shows(&s.gk, &["challenge.oidc_refused", "exchange_refused"]).await;
    // Still held: a proper sign-in passes it.
    let form = at_provider(&s, &mut b, to)
        .await
        .expect_err("a sign-in form");
    let callback = sign_in(&s, &mut b, &form, BOB_IDP, false).await;
    assert_lands_logged_in(&s, &mut b, &callback).await;
}

#[tokio::test]
async fn a_sign_in_as_another_user_is_refused() {
    let Some(s) = start("oidc::a_sign_in_as_another_user_is_refused", "").await else {
        return;
    };
    let mut b = Browser::new();
    let challenge = challenged_login(&s, &mut b).await;
    let callback = through_provider(&s, &mut b, &challenge, MALLORY_IDP, false).await;
    let page = refused(&mut b, &callback).await;
    assert!(page.contains("as someone else"), "{page}");
    audit_shows(&s.gk, &["challenge.oidc_refused", "other_user"]).await;
    // Still held: bob signs in himself (max_age 0 makes the provider ask again).
    let callback = through_provider(&s, &mut b, &challenge, BOB_IDP, false).await;
    assert_lands_logged_in(&s, &mut b, &callback).await;
}

#[tokio::test]
async fn refusals_count_like_wrong_codes_and_end_the_challenge_at_the_limit() {
    // One attempt per challenge (`mfa.totp.max_attempts`, beside `oidc` under `mfa`).
    let Some(s) = start(
        "oidc::refusals_count_like_wrong_codes_and_end_the_challenge_at_the_limit",
        "  totp:\n    max_attempts: 1\n",
    )
    .await
    else {
        return;
    };
    let mut b = Browser::new();
    let challenge = challenged_login(&s, &mut b).await;
    let callback = through_provider(&s, &mut b, &challenge, MALLORY_IDP, false).await;
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 403);
    assert!(
        r.headers().contains_key("x-gaitkeeper-incident"),
        "blocked with an incident"
    );
    audit_shows(&s.gk, &["challenge.failed", "other_user"]).await;
    // The challenge is over.
    assert_eq!(b.get(&s.gk.url(&challenge)).await.status(), 404);
}

#[tokio::test]
async fn a_code_issued_to_another_client_is_refused() {
    let Some(s) = start("oidc::a_code_issued_to_another_client_is_refused", "").await else {
        return;
    };
    let mut b = Browser::new();
    let challenge = challenged_login(&s, &mut b).await;
    let to = authorization_url(&s, &mut b, &challenge).await;
    // Everything as gaitkeeper asked (PKCE, state, nonce, redirect), but for another client:
    // its code (and any ID token for it) is not for gaitkeeper's audience.
    let other = with_param(&to, "client_id", "other-app");
    let form = at_provider(&s, &mut b, other)
        .await
        .expect_err("a sign-in form");
    let callback = sign_in(&s, &mut b, &form, BOB_IDP, false).await;
    refused(&mut b, &callback).await;
    audit_shows(&s.gk, &["challenge.oidc_refused", "exchange_refused"]).await;
    let callback = through_provider(&s, &mut b, &challenge, BOB_IDP, false).await;
    assert_lands_logged_in(&s, &mut b, &callback).await;
}

#[tokio::test]
async fn a_sign_in_from_before_the_challenge_is_refused() {
    // A provider session may be an hour old, and no clock skew is allowed (one provider
    // clock on this machine): only auth_time decides.
    let Some(s) = start(
        "oidc::a_sign_in_from_before_the_challenge_is_refused",
        "    max_age: 1h\n    clock_skew: 0s\n",
    )
    .await
    else {
        return;
    };
    let mut b = Browser::new();
    let first = challenged_login(&s, &mut b).await;
    let to = authorization_url(&s, &mut b, &first).await;
    assert_eq!(query_param(&to, "max_age").as_deref(), Some("3600"));
    let form = at_provider(&s, &mut b, to)
        .await
        .expect_err("no session yet");
    let signed_in_at = now_secs();
    let callback = sign_in(&s, &mut b, &form, BOB_IDP, false).await;
    assert_lands_logged_in(&s, &mut b, &callback).await;
    // The next login is held in a later second than that sign-in.
    eventually(Duration::from_secs(3), "the next second", || async {
        now_secs() > signed_in_at + 1
    })
    .await;
    let second = challenged_login(&s, &mut b).await;
    let to = authorization_url(&s, &mut b, &second).await;
    // The provider answers from its session, without asking: auth_time is the old sign-in.
    let callback = at_provider(&s, &mut b, to)
        .await
        .expect("answered from the provider's session");
    let page = refused(&mut b, &callback).await;
    assert!(page.contains("fresh sign-in"), "{page}");
    audit_shows(&s.gk, &["challenge.oidc_refused", "stale_sign_in"]).await;
    // Still held.
    assert_eq!(b.get(&s.gk.url(&second)).await.status(), 200);
}

#[tokio::test]
async fn a_sign_in_without_the_required_acr_is_refused() {
    let Some(s) = start(
        "oidc::a_sign_in_without_the_required_acr_is_refused",
        &format!("    acr_values: [\"{MFA_ACR}\"]\n    required_acr: [\"{MFA_ACR}\"]\n    required_amr: [otp]\n"),
    )
    .await
    else {
        return;
    };
    let mut b = Browser::new();
    let challenge = challenged_login(&s, &mut b).await;
    let to = authorization_url(&s, &mut b, &challenge).await;
    assert_eq!(query_param(&to, "acr_values").as_deref(), Some(MFA_ACR));
    let form = at_provider(&s, &mut b, to)
        .await
        .expect_err("a sign-in form");
    // Password only: acr urn:gaitkeeper:test:pwd.
    let callback = sign_in(&s, &mut b, &form, BOB_IDP, false).await;
    let page = refused(&mut b, &callback).await;
    assert!(page.contains("not strong enough"), "{page}");
    audit_shows(&s.gk, &["challenge.oidc_refused", "acr_not_accepted"]).await;
    // With the one-time code: acr mfa, amr [pwd, otp].
    let callback = through_provider(&s, &mut b, &challenge, BOB_IDP, true).await;
    assert_lands_logged_in(&s, &mut b, &callback).await;
}

#[tokio::test]
async fn an_unreachable_provider_leaves_the_login_held() {
    let Some(mut s) = start("oidc::an_unreachable_provider_leaves_the_login_held", "").await else {
        return;
    };
    drop(s.provider.take());
    let mut b = Browser::new();
    let challenge = challenged_login(&s, &mut b).await;
    let r = b.get(&s.gk.url(&format!("{challenge}/oidc"))).await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("cannot be reached"));
    assert_eq!(b.get(&s.gk.url(&challenge)).await.status(), 200);
}

#[tokio::test]
async fn a_flow_begun_through_one_instance_is_finished_through_another() {
    let test = "oidc::a_flow_begun_through_one_instance_is_finished_through_another";
    let Some(db) = common::db::postgres(Default::default(), "gk_oidc_pair").await else {
        println!("skipped {test}: several instances share state in PostgreSQL (GAITKEEPER_TEST_POSTGRES_URL)");
        return;
    };
    let store = format!("store:\n  url: \"{}\"\n", db.url());
    let Some(s) = start_with_store(test, "", &store).await else {
        return;
    };
    // A second instance: the same config (secrets.key, store, provider), its own port.
    let secret = s._keys.path().join("oidc-client.key");
    let other = Gaitkeeper::start_with(s._app.addr, "", &config(&s.idp, &secret, "", &store)).await;
    let mut b = Browser::new();
    let challenge = challenged_login(&s, &mut b).await;
    let callback = through_provider(&s, &mut b, &challenge, BOB_IDP, false).await;
    // The provider's answer reaches the other instance (behind the same name): the state,
    // the PKCE verifier and the nonce are derived there, and the held login is shared.
    let r = b.get_from(&callback, other.addr).await;
    assert_eq!(
        r.status(),
        303,
        "finished through the other; log:\n{}",
        other.log()
    );
    assert_eq!(common::legacy::location(&r), "/account");
    assert!(b.jar.contains_key("legacy_session"));
    // And only once: the first instance no longer holds it either.
    assert_eq!(b.get(&callback).await.status(), 404);
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
