//! gaitkeeper in front of real third-party apps — Django's admin (PyPI) and an Express app
//! (npm) — attacked as an attacker with only a password would: every login body the frameworks
//! read (multipart spellings, JSON, compressed bodies, name variants) is either judged against
//! the user it logs in or refused as unreadable. None reaches the app undecided; every one is
//! audited and counted by regulation.

use crate::common;

use std::io::Write;
use std::time::Duration;

use common::apps::{installed, RealApp};
use common::behaviour::{payload, STEADY, STRANGER};
use common::{client, eventually, Gaitkeeper};

const ALICE: (&str, &str) = ("alice", "S3cret-pw!");

/// Django's admin login as an operator lists it.
const DJANGO_ROUTES: &str = "routes:\n  - name: admin\n    page: { paths: [\"/admin/login/\"] }\n    submit: { path: \"/admin/login/\" }\n    success: { status: [302], location_prefix: \"/admin/\" }\n";

/// The Express app's login (forms redirect, JSON answers 200 with a token).
const EXPRESS_ROUTES: &str = "routes:\n  - name: login\n    page: { paths: [\"/login\"] }\n    submit: { path: \"/login\" }\n    success: { status: [302], location_prefix: \"/home\" }\n";

/// What a login request looks like on the wire.
struct Variant {
    name: &'static str,
    content_type: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn multipart(boundary: &str, parts: &[(String, String)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (head, value) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n{head}\r\n\r\n{value}\r\n").as_bytes());
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

fn disposition(name: &str) -> String {
    format!("Content-Disposition: form-data; name=\"{name}\"")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn form_encode(text: &str) -> String {
    common::behaviour::form_encode(text)
}

/// Every spelling of a login for `user`/`password` that the issue's attacks used, plus the
/// frameworks' own: each with the CSRF field `csrf` (Django) in front.
fn variants(csrf: &str, user: &str, password: &str) -> Vec<Variant> {
    let form = |ct: &str| format!("multipart/form-data; boundary={ct}");
    let fields = |u: &str| {
        vec![
            (disposition("csrfmiddlewaretoken"), csrf.to_string()),
            (disposition("username"), u.to_string()),
            (disposition("password"), password.to_string()),
        ]
    };
    let urlencoded = |u: &str| {
        format!(
            "csrfmiddlewaretoken={csrf}&username={}&password={}",
            form_encode(u),
            form_encode(password)
        )
    };
    let with_username_head = |head: &str| {
        let mut parts = fields(user);
        parts[1].0 = head.to_string();
        parts
    };
    let b71 = "b".repeat(71);
    let b150 = "c".repeat(150);
    // More parts than Django's 1,000-field limit (the old reader gave up past 1,000), small
    // enough to stay under the 64 KiB body limit.
    let many: Vec<(String, String)> = (0..1100)
        .map(|i| (disposition(&format!("j{i}")), "x".to_string()))
        .chain(fields(user))
        .collect();
    let plain = |name: &'static str, body: String| Variant {
        name,
        content_type: "application/x-www-form-urlencoded".into(),
        headers: vec![],
        body: body.into_bytes(),
    };
    let parts = |name: &'static str, boundary: &str, parts: Vec<(String, String)>| Variant {
        name,
        content_type: form(boundary),
        headers: vec![],
        body: multipart(boundary, &parts),
    };
    vec![
        plain("urlencoded", urlencoded(user)),
        parts("multipart", "XyZ", fields(user)),
        parts("boundary of 71", &b71, fields(user)),
        parts("boundary of 150", &b150, fields(user)),
        Variant {
            name: "two boundary parameters",
            content_type: "multipart/form-data; boundary=first; boundary=XyZ".into(),
            headers: vec![],
            body: multipart("XyZ", &fields(user)),
        },
        parts(
            "name*= (RFC 2231)",
            "XyZ",
            with_username_head("Content-Disposition: form-data; name*=UTF-8''username"),
        ),
        parts(
            "space before Content-Disposition",
            "XyZ",
            with_username_head(&format!(" {}", disposition("username"))),
        ),
        parts(
            "folded Content-Disposition",
            "XyZ",
            with_username_head("Content-Disposition: form-data;\r\n name=\"username\""),
        ),
        parts(
            "two Content-Dispositions",
            "XyZ",
            with_username_head(&format!("{}\r\n{}", disposition("other"), disposition("username"))),
        ),
        parts(
            "base64 transfer encoding",
            "XyZ",
            with_username_head(&format!(
                "{}\r\nContent-Transfer-Encoding: base64",
                disposition("username")
            ))
            .into_iter()
            .map(|(h, v)| {
                if h.contains("base64") {
                    use base64::Engine;
                    (h, base64::engine::general_purpose::STANDARD.encode(user))
                } else {
                    (h, v)
                }
            })
            .collect(),
        ),
        Variant {
            name: "part without its blank line",
            content_type: form("XyZ"),
            headers: vec![],
            body: format!(
                "--XyZ\r\n{}\r\n\r\n{csrf}\r\n--XyZ\r\n{}\r\n{user}\r\n--XyZ\r\n{}\r\n\r\n{password}\r\n--XyZ--\r\n",
                disposition("csrfmiddlewaretoken"),
                disposition("username"),
                disposition("password")
            )
            .into_bytes(),
        },
        Variant {
            name: "bare LF line ends",
            content_type: form("XyZ"),
            headers: vec![],
            body: String::from_utf8(multipart("XyZ", &fields(user)))
                .unwrap()
                .replace("\r\n", "\n")
                .into_bytes(),
        },
        Variant {
            name: "the name in the preamble",
            content_type: form("XyZ"),
            headers: vec![],
            body: [
                format!("{}\r\n\r\n{user}\r\n", disposition("username")).into_bytes(),
                multipart(
                    "XyZ",
                    &[
                        (disposition("csrfmiddlewaretoken"), csrf.to_string()),
                        (disposition("password"), password.to_string()),
                    ],
                ),
            ]
            .concat(),
        },
        parts("1,100 parts", "XyZ", many),
        plain(
            "the name twice",
            format!("{}&username=nobody", urlencoded(user)),
        ),
        plain(
            "; as a separator",
            format!(
                "csrfmiddlewaretoken={csrf};username={user}&password={}",
                form_encode(password)
            ),
        ),
        Variant {
            name: "gzip body",
            content_type: "application/x-www-form-urlencoded".into(),
            headers: vec![("content-encoding", "gzip".into())],
            body: gzip(urlencoded(user).as_bytes()),
        },
        Variant {
            name: "zstd body",
            content_type: "application/x-www-form-urlencoded".into(),
            headers: vec![("content-encoding", "zstd".into())],
            body: urlencoded(user).into_bytes(),
        },
        Variant {
            name: "JSON",
            content_type: "application/json".into(),
            headers: vec![],
            body: serde_json::json!({"username": user, "password": password, "csrfmiddlewaretoken": csrf})
                .to_string()
                .into_bytes(),
        },
        Variant {
            name: "text/plain",
            content_type: "text/plain".into(),
            headers: vec![],
            body: urlencoded(user).into_bytes(),
        },
        plain("trailing space", urlencoded(&format!("{user} "))),
        plain("leading space", urlencoded(&format!(" {user}"))),
        plain("tab", urlencoded(&format!("{user}\t"))),
        plain("no-break space", urlencoded(&format!("{user}\u{a0}"))),
        plain(
            "fullwidth",
            urlencoded(&user.chars().map(|c| char::from_u32(c as u32 + 0xFEE0).unwrap()).collect::<String>()),
        ),
    ]
}

/// Django's login page through gaitkeeper: its CSRF token and cookie, gaitkeeper's page token.
struct DjangoPage {
    csrf: String,
    cookie: String,
    gk_token: String,
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

async fn django_page(gk: &Gaitkeeper) -> DjangoPage {
    let r = client()
        .get(gk.url("/admin/login/?next=/admin/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("csrftoken="))
        .and_then(|v| v.split(';').next())
        .expect("Django's CSRF cookie")
        .to_string();
    let html = r.text().await.unwrap();
    DjangoPage {
        csrf: between(&html, "name=\"csrfmiddlewaretoken\" value=\"", "\"")
            .expect("Django's CSRF field")
            .to_string(),
        cookie,
        gk_token: between(&html, "data-gk-token=\"", "\"")
            .expect("gaitkeeper injected its script")
            .to_string(),
    }
}

/// Posts a variant to Django's login the way an attacker would: with the CSRF cookie, the
/// token in the body and in `X-CSRFToken` (so Django reads the login even from a body its form
/// parsing gives up on).
async fn post_variant(gk: &Gaitkeeper, page: &DjangoPage, v: &Variant) -> reqwest::Response {
    let mut request = client()
        .post(gk.url("/admin/login/?next=/admin/"))
        .header("content-type", &v.content_type)
        .header("cookie", format!("csrftoken={}", page.cookie))
        .header("x-csrftoken", &page.csrf)
        .body(v.body.clone());
    for (name, value) in &v.headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap()
}

/// Whether Django opened a session (a login succeeded).
fn logged_in(r: &reqwest::Response) -> bool {
    r.headers().get_all("set-cookie").iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.starts_with("sessionid=") && !v.starts_with("sessionid=\"\""))
    })
}

async fn start_behind_django(more: &str) -> (RealApp, Gaitkeeper, tempfile::TempDir) {
    let app = RealApp::django(&[ALICE, ("bob", "builder-2024")]);
    let audit = tempfile::tempdir().unwrap();
    let config = format!(
        "{DJANGO_ROUTES}audit:\n  stream: {{ file: {:?} }}\n{more}",
        audit.path().join("audit.jsonl").display().to_string()
    );
    let gk = Gaitkeeper::start_with(app.addr, "", &config).await;
    (app, gk, audit)
}

fn audit_lines(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap_or_default()
}

#[tokio::test]
async fn every_login_body_django_reads_is_judged_or_refused_never_passed_undecided() {
    if !installed("every_login_body_django_reads_is_judged_or_refused_never_passed_undecided") {
        return;
    }
    // A fresh operator's config: the default policy.
    let (_app, gk, audit) = start_behind_django("").await;
    let page = django_page(&gk).await;
    // The control: the real login in a browser-like urlencoded form, no telemetry (the
    // attacker skips the capture script) — judged: challenged, and with no factor, blocked.
    let mut incidents = Vec::new();
    for v in variants(&page.csrf, ALICE.0, ALICE.1) {
        let r = post_variant(&gk, &page, &v).await;
        let status = r.status().as_u16();
        assert!(
            !logged_in(&r),
            "{}: Django logged alice in ({status})",
            v.name
        );
        assert!(
            [400, 403, 413, 415].contains(&status),
            "{}: answered {status}, not by gaitkeeper",
            v.name
        );
        let incident = r
            .headers()
            .get("x-gaitkeeper-incident")
            .unwrap_or_else(|| panic!("{}: no incident reference", v.name))
            .to_str()
            .unwrap()
            .to_string();
        incidents.push((v.name, status, incident));
    }
    // Readable spellings are judged as alice (no telemetry, no factor: blocked, 403);
    // the ambiguous ones are unreadable (400/415).
    let status_of = |name: &str| incidents.iter().find(|i| i.0 == name).unwrap().1;
    for judged in [
        "urlencoded",
        "multipart",
        "boundary of 71",
        "boundary of 150",
        "name*= (RFC 2231)",
        "space before Content-Disposition",
        "folded Content-Disposition",
        "1,100 parts",
        "gzip body",
        "JSON",
        "trailing space",
        "fullwidth",
        "no-break space",
    ] {
        assert_eq!(status_of(judged), 403, "{judged} is judged");
    }
    for refused in [
        "two boundary parameters",
        "two Content-Dispositions",
        "base64 transfer encoding",
        "part without its blank line",
        "bare LF line ends",
        "the name in the preamble",
        "the name twice",
        "; as a separator",
    ] {
        assert_eq!(status_of(refused), 400, "{refused} is unreadable");
    }
    assert_eq!(status_of("zstd body"), 415);
    assert_eq!(status_of("text/plain"), 415);
    // Every one of them is in the audit trail.
    eventually(Duration::from_secs(10), "every decision audited", || {
        let lines = audit_lines(&audit);
        let all = incidents.iter().all(|(_, _, i)| lines.contains(i.as_str()));
        async move { all }
    })
    .await;
    let lines = audit_lines(&audit);
    assert!(lines.contains("\"unreadable_login\""), "{lines}");
    assert!(!lines.contains(ALICE.1), "no password in the audit trail");
    assert!(
        gk.metric("gaitkeeper_unreadable_logins_total{app=\"default\",reason=\"ambiguous_body\",route=\"admin\"}")
            .await
            >= 3.0
    );
}

#[tokio::test]
async fn wrong_passwords_in_any_spelling_count_against_the_user_and_the_address() {
    if !installed("wrong_passwords_in_any_spelling_count_against_the_user_and_the_address") {
        return;
    }
    // Telemetry-less logins are let through here, so each readable wrong password reaches
    // Django and fails there; unreadable bodies are refused and counted per address.
    let (_app, gk, _audit) = start_behind_django(
        "policy:\n  on_missing_telemetry: allow\nregulation:\n  max_failures_per_user: 5\n  max_failures_per_ip: 12\n  action: block\n",
    )
    .await;
    let page = django_page(&gk).await;
    // Five wrong passwords for alice, each spelled differently: one counter.
    let spellings = ["alice ", "ａｌｉｃｅ", "alice\u{a0}", " alice", "alice\t"];
    for name in spellings {
        let v = &variants(&page.csrf, name, "wrong-password")[0];
        let r = post_variant(&gk, &page, v).await;
        assert_eq!(
            r.status(),
            200,
            "{name:?}: Django refused the wrong password"
        );
    }
    eventually(Duration::from_secs(10), "the failures counted", || async {
        gk.metric(
            "gaitkeeper_login_outcomes_total{app=\"default\",outcome=\"failed\",route=\"admin\"}",
        )
        .await
            >= 5.0
    })
    .await;
    // Now the right password, in the plain spelling: alice is regulated.
    let v = &variants(&page.csrf, ALICE.0, ALICE.1)[0];
    let r = post_variant(&gk, &page, v).await;
    assert_eq!(r.status(), 403, "regulated");
    assert!(!logged_in(&r));
    // Bob is not affected...
    let v = &variants(&page.csrf, "bob", "builder-2024")[0];
    let r = post_variant(&gk, &page, v).await;
    assert!(logged_in(&r), "bob logs in: {}", r.status());
    // ...until unreadable bodies from this address reach its limit (5 failures and bob's
    // success so far; 7 more unreadable ones make 12).
    for _ in 0..7 {
        let v = variants(&page.csrf, "bob", "builder-2024")
            .into_iter()
            .find(|v| v.name == "two Content-Dispositions")
            .unwrap();
        let r = post_variant(&gk, &page, &v).await;
        assert_eq!(r.status(), 400);
    }
    let v = &variants(&page.csrf, "bob", "builder-2024")[0];
    let r = post_variant(&gk, &page, v).await;
    assert_eq!(r.status(), 403, "the address is regulated");
    assert!(!logged_in(&r));
}

/// One login to Django through gaitkeeper with telemetry played with `rhythm`.
async fn django_login(
    gk: &Gaitkeeper,
    user: &str,
    rhythm: &common::behaviour::Rhythm,
    seed: u64,
) -> reqwest::Response {
    let page = django_page(gk).await;
    let telemetry = payload(
        &page.gk_token,
        rhythm,
        user.chars().count(),
        ALICE.1.len(),
        seed,
    );
    let body = format!(
        "csrfmiddlewaretoken={}&username={}&password={}&next=%2Fadmin%2F&__gk={}",
        page.csrf,
        form_encode(user),
        form_encode(ALICE.1),
        form_encode(&telemetry)
    );
    client()
        .post(gk.url("/admin/login/?next=/admin/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("csrftoken={}", page.cookie))
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn name_variants_are_judged_against_the_users_own_profile() {
    if !installed("name_variants_are_judged_against_the_users_own_profile") {
        return;
    }
    let (_app, gk, _audit) = start_behind_django("store:\n  enrollment_logins: 5\n").await;
    for seed in 0..6 {
        let r = django_login(&gk, ALICE.0, &STEADY, seed).await;
        assert!(logged_in(&r), "enrolment login {seed}: {}", r.status());
    }
    eventually(Duration::from_secs(10), "alice's logins learnt", || async {
        gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}")
            .await
            >= 6.0
    })
    .await;
    // Her own rhythm, her name spelled another way: still her, still let in by Django.
    let r = django_login(&gk, "alice ", &STEADY, 50).await;
    assert!(logged_in(&r), "her rhythm passes: {}", r.status());
    // Somebody else's rhythm under each spelling Django logs in as alice: judged against
    // her profile (not a new, enrolling user) and, with no factor, refused.
    for (i, name) in ["ａｌｉｃｅ", "alice\u{a0}", "alice "]
        .into_iter()
        .enumerate()
    {
        let r = django_login(&gk, name, &STRANGER, 100 + i as u64).await;
        assert_eq!(r.status(), 403, "{name:?}");
        assert!(!logged_in(&r), "{name:?}");
    }
}

#[tokio::test]
async fn express_json_and_compressed_logins_are_judged() {
    if !installed("express_json_and_compressed_logins_are_judged") {
        return;
    }
    let app = RealApp::express(&[ALICE]);
    let gk = Gaitkeeper::start_with(app.addr, "", EXPRESS_ROUTES).await;
    let post = |content_type: &str, encoding: Option<&str>, body: Vec<u8>| {
        let mut r = client()
            .post(gk.url("/login"))
            .header("content-type", content_type)
            .body(body);
        if let Some(e) = encoding {
            r = r.header("content-encoding", e);
        }
        r.send()
    };
    let json = serde_json::json!({"username": ALICE.0, "password": ALICE.1}).to_string();
    let form = format!("username={}&password={}", ALICE.0, form_encode(ALICE.1));
    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
        w.write_all(form.as_bytes()).unwrap();
    }
    // No telemetry: judged as alice (challenged, no factor: blocked). Express never answers.
    for (what, ct, enc, body) in [
        ("JSON", "application/json", None, json.clone().into_bytes()),
        (
            "gzip JSON",
            "application/json",
            Some("gzip"),
            gzip(json.as_bytes()),
        ),
        (
            "br form",
            "application/x-www-form-urlencoded",
            Some("br"),
            br.clone(),
        ),
        (
            "folded multipart (busboy unfolds it)",
            "multipart/form-data; boundary=XyZ",
            None,
            multipart(
                "XyZ",
                &[
                    (
                        "Content-Disposition: form-data;\r\n name=\"username\"".to_string(),
                        ALICE.0.to_string(),
                    ),
                    (disposition("password"), ALICE.1.to_string()),
                ],
            ),
        ),
    ] {
        let r = post(ct, enc, body).await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        assert!(r.headers().contains_key("x-gaitkeeper-incident"), "{what}");
        let text = r.text().await.unwrap();
        assert!(!text.contains("access_token"), "{what}: {text}");
    }
    // JSON naming the user twice: unreadable.
    let twice = format!(
        r#"{{"username":"nobody","username":"{}","password":"{}"}}"#,
        ALICE.0, ALICE.1
    );
    let r = post("application/json", None, twice.into_bytes())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A decompression bomb: 413, nothing reaches the app.
    let bomb = gzip(&vec![b'a'; 50_000_000]);
    let r = post("application/json", Some("gzip"), bomb).await.unwrap();
    assert_eq!(r.status(), 413);
    // With the capture script's telemetry from the real login page, the same JSON login of
    // an enrolling user is judged and forwarded: Express answers with its token.
    let html = client()
        .get(gk.url("/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = between(&html, "data-gk-token=\"", "\"")
        .expect("injected")
        .to_string();
    let telemetry = common::behaviour::fetch_payload(&token, &STEADY, 5, ALICE.1.len(), 1);
    let header = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(telemetry)
    };
    let r = client()
        .post(gk.url("/login"))
        .header("content-type", "application/json")
        .header("x-gaitkeeper-telemetry", header)
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("access_token"));
}
