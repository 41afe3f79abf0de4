//! Capture at the HTTP level: the script injected into login pages of every coding and
//! framing, pages that must stay untouched, and telemetry taken out of login submits.

use crate::common;

use std::time::Duration;

use base64::Engine;
use common::{client, eventually, EchoApp, Gaitkeeper, LOGIN_PAGE, ROUTES};

async fn start() -> (EchoApp, Gaitkeeper) {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start_with(app.addr, "", ROUTES).await;
    (app, gk)
}

/// Loads a login page through gaitkeeper and returns the page token it was served with.
async fn login_page_token(gk: &Gaitkeeper) -> String {
    let page = gk.get_text("/page/identity").await;
    token_of(&page)
}

/// The page token from an injected page.
fn token_of(page: &str) -> String {
    let start = page
        .find("data-gk-token=\"")
        .expect("the page has the script tag")
        + 15;
    page[start..].split('"').next().unwrap().to_string()
}

fn expected_tag_prefix() -> &'static str {
    "<script src=\"/__gk/capture.js\" defer data-gk-token=\""
}

#[tokio::test]
async fn login_pages_get_the_script_in_every_coding_and_framing() {
    let (app, gk) = start().await;
    for kind in ["identity", "gzip", "deflate", "br", "chunked"] {
        let response = client()
            .get(gk.url(&format!("/page/{kind}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{kind}");
        let headers = response.headers().clone();
        assert!(
            headers.get("content-encoding").is_none(),
            "{kind}: decoded for the client"
        );
        assert!(headers.get("etag").is_none(), "{kind}: the body changed");
        assert_eq!(headers["cache-control"], "private, no-store", "{kind}");
        let body = response.text().await.unwrap();
        let tag_at = body
            .find(expected_tag_prefix())
            .unwrap_or_else(|| panic!("{kind}: {body}"));
        assert_eq!(
            &body[tag_at..].find("</head>").map(|_| ()),
            &Some(()),
            "{kind}: tag inside head"
        );
        // Apart from the tag, the page is exactly the app's.
        let tag_end = tag_at + body[tag_at..].find("</script>").unwrap() + "</script>".len();
        let without_tag = format!("{}{}", &body[..tag_at], &body[tag_end..]);
        assert_eq!(without_tag, LOGIN_PAGE, "{kind}");
        // gaitkeeper asked the app for an uncompressed page.
        assert!(app.last().header("accept-encoding").is_none(), "{kind}");
    }
    assert!(
        gk.metric("gaitkeeper_pages_injected_total{placement=\"end_of_head\"}")
            .await
            >= 5.0
    );
}

#[tokio::test]
async fn head_304_non_html_and_other_paths_are_untouched() {
    let (_app, gk) = start().await;
    let http = client();

    let head = http.head(gk.url("/page/identity")).send().await.unwrap();
    assert_eq!(
        head.headers()["content-length"],
        LOGIN_PAGE.len().to_string()
    );
    assert_eq!(head.headers()["etag"], "\"v1\"");

    let not_modified = http.get(gk.url("/page/304")).send().await.unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"], "\"v1\"");

    let json = http.get(gk.url("/page/json")).send().await.unwrap();
    assert_eq!(json.headers()["etag"], "\"v1\"");
    assert_eq!(json.text().await.unwrap(), LOGIN_PAGE);

    // Not a configured login page.
    let other = http
        .get(gk.url("/other"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!other.contains("capture.js"));
    assert!(
        gk.metric("gaitkeeper_injection_skipped_total{reason=\"content_type\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn the_page_csp_nonce_is_reused() {
    let (_app, gk) = start().await;
    let response = client().get(gk.url("/page/csp")).send().await.unwrap();
    // The policy itself is left exactly as the app sent it.
    assert_eq!(
        response.headers()["content-security-policy"],
        "default-src 'self'; script-src 'nonce-r4nd0m' 'strict-dynamic'"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.contains(" nonce=\"r4nd0m\"></script></head>"),
        "{body}"
    );
}

#[tokio::test]
async fn a_large_page_is_streamed_through_whole() {
    let (_app, gk) = start().await;
    let body = gk.get_text("/page/big").await;
    assert!(body.len() > 2_000_000);
    assert!(body.contains("</script></head><body>"));
    assert!(body.ends_with("</body></html>"));
}

#[tokio::test]
async fn the_capture_script_is_served_with_an_etag() {
    let (app, gk) = start().await;
    let http = client();
    let response = http.get(gk.url("/__gk/capture.js")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        gaitkeeper::inject::CAPTURE_JS
    );
    let again = http
        .get(gk.url("/__gk/capture.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(app.seen().is_empty(), "the script is gaitkeeper's own");
}

/// Loads a login page and returns a form body carrying `payload` (with the page's token).
async fn form_with_telemetry(gk: &Gaitkeeper, extra: &str) -> (String, String) {
    let token = login_page_token(gk).await;
    let payload = format!("{{\"v\":1,\"tk\":\"{token}\",\"k\":[]{extra}}}");
    let encoded: String = url_encode(&payload);
    (
        format!("username=alice&password=s3cret%21&__gk={encoded}&csrf_token=c5rf"),
        payload,
    )
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn post_form(gk: &Gaitkeeper, body: String) -> reqwest::Response {
    post_form_to(gk, "/login", body).await
}

async fn post_form_to(gk: &Gaitkeeper, path: &str, body: String) -> reqwest::Response {
    client()
        .post(gk.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_app_receives_its_form_without_the_telemetry_field() {
    let (app, gk) = start().await;
    let (body, payload) = form_with_telemetry(&gk, "").await;
    let response = post_form(&gk, body).await;
    assert_eq!(response.status(), 200);
    let seen = app.last();
    assert_eq!(
        seen.body,
        b"username=alice&password=s3cret%21&csrf_token=c5rf"
    );
    assert_eq!(seen.header("content-length"), Some("49"));

    let received = gk.telemetry().await;
    let last = received.last().unwrap();
    assert_eq!(last["outcome"], "ok");
    assert_eq!(last["transport"], "form");
    // The payload as sent, except its page token: /debug/telemetry never keeps one.
    let mut sent = serde_json::from_str::<serde_json::Value>(&payload).unwrap();
    assert!(sent["tk"].is_string());
    sent.as_object_mut().unwrap().remove("tk");
    assert_eq!(last["payload"], sent);
}

#[tokio::test]
async fn fetch_logins_carry_telemetry_in_a_header_the_app_never_sees() {
    let (app, gk) = start().await;
    // The page token belongs to route "login"; the API route needs a token from its own page.
    let wrong_route = login_page_token(&gk).await;
    let payload = format!("{{\"v\":1,\"tk\":\"{wrong_route}\"}}");
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.as_bytes());
    let json_body = r#"{"username":"alice","password":"x"}"#;
    let response = client()
        .post(gk.url("/api/login"))
        .header("content-type", "application/json")
        .header("x-gaitkeeper-telemetry", &header)
        .body(json_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = app.last();
    assert_eq!(seen.body, json_body.as_bytes());
    assert!(seen.header("x-gaitkeeper-telemetry").is_none());
    let last = gk.telemetry().await.last().cloned().unwrap();
    assert_eq!(last["outcome"], "wrong_route");
    assert_eq!(last["transport"], "header");
}

#[tokio::test]
async fn a_replayed_token_is_rejected_and_counted() {
    let (_app, gk) = start().await;
    let (body, _) = form_with_telemetry(&gk, "").await;
    post_form(&gk, body.clone()).await;
    post_form(&gk, body).await;
    let outcomes: Vec<String> = gk
        .telemetry()
        .await
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(outcomes, ["ok", "replayed"]);
    assert_eq!(
        gk.metric("gaitkeeper_login_telemetry_total{outcome=\"replayed\",transport=\"form\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_token_from_another_key_or_an_expired_one_is_rejected() {
    let (_app, gk) = start().await;
    // Another gaitkeeper with another secret issued this token.
    let other = gaitkeeper::inject::PageTokens::new(b"a completely different secret key!!");
    let client_info = gaitkeeper::inject::Client {
        ip: "127.0.0.1",
        user_agent: common::USER_AGENT,
    };
    let forged = other.issue("login", &client_info, true, Duration::from_secs(600));
    // Signed with the right key (the test knows the server secret), issued an hour ago.
    let ours = gaitkeeper::inject::PageTokens::new(common::SECRET.as_bytes());
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600;
    let expired = ours.issue_at(
        "login",
        &client_info,
        true,
        Duration::from_secs(600),
        an_hour_ago,
    );
    let fresh = ours.issue("login", &client_info, true, Duration::from_secs(600));

    for (token, outcome) in [
        (forged.as_str(), "bad_signature"),
        (expired.as_str(), "expired"),
        ("not-a-jwt", "malformed"),
        (fresh.as_str(), "ok"),
    ] {
        let payload = url_encode(&format!("{{\"v\":1,\"tk\":\"{token}\"}}"));
        post_form(&gk, format!("username=alice&__gk={payload}")).await;
        let last = gk.telemetry().await.last().cloned().unwrap();
        assert_eq!(last["outcome"], outcome);
    }
    // No telemetry at all is `missing`; telemetry twice (two fields, or field and header) is
    // conflicting and trusted in neither place.
    post_form(&gk, "username=alice&password=x".into()).await;
    assert_eq!(gk.telemetry().await.last().unwrap()["outcome"], "missing");
    post_form(&gk, "__gk=%7B%7D&username=alice&__gk=%7B%7D".into()).await;
    assert_eq!(gk.telemetry().await.last().unwrap()["outcome"], "duplicate");
    client()
        .post(gk.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-gaitkeeper-telemetry", "e30")
        .body("__gk=%7B%7D&username=alice")
        .send()
        .await
        .unwrap();
    assert_eq!(gk.telemetry().await.last().unwrap()["outcome"], "duplicate");
}

#[tokio::test]
async fn an_oversized_login_body_gets_413_and_never_reaches_the_app() {
    let (app, gk) = start().await;
    let big = format!("username=alice&pad={}", "a".repeat(70_000));
    let response = post_form(&gk, big).await;
    assert_eq!(response.status(), 413);
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn login_path_spellings_are_all_intercepted() {
    let (app, gk) = start().await;
    for path in ["/login", "/LOGIN", "/login/", "//login", "/%6Cogin"] {
        let (body, _) = form_with_telemetry(&gk, "").await;
        post_form_to(&gk, path, body).await;
        let seen = app.last();
        assert!(
            !String::from_utf8_lossy(&seen.body).contains("__gk"),
            "{path}"
        );
    }
    eventually(Duration::from_secs(5), "all submits recorded", || async {
        gk.metric("gaitkeeper_login_telemetry_total{outcome=\"ok\",transport=\"form\"}")
            .await
            >= 5.0
    })
    .await;
}

#[tokio::test]
async fn multipart_login_forms_lose_only_the_telemetry_part() {
    let (app, gk) = start().await;
    let token = login_page_token(&gk).await;
    let part = |name: &str, value: &str| {
        format!("--b0undary\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    };
    let telemetry = format!("{{\"v\":1,\"tk\":\"{token}\"}}");
    let sent = format!(
        "{}{}{}--b0undary--\r\n",
        part("username", "alice"),
        part("__gk", &telemetry),
        part("csrf_token", "c5rf")
    );
    let expected = format!(
        "{}{}--b0undary--\r\n",
        part("username", "alice"),
        part("csrf_token", "c5rf")
    );
    let response = client()
        .post(gk.url("/login"))
        .header("content-type", "multipart/form-data; boundary=b0undary")
        .body(sent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(String::from_utf8(app.last().body).unwrap(), expected);
    assert_eq!(
        app.last().header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    let last = gk.telemetry().await.last().cloned().unwrap();
    assert_eq!(last["outcome"], "ok");
    assert_eq!(last["transport"], "form");
}
