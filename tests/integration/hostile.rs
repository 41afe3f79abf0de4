//! Hostile input at the HTTP level, end to end: oversized and slow bodies, malformed payloads,
//! absurd numbers, floods of events, duplicated fields, odd names, header injection and odd
//! methods on gaitkeeper's own paths. Each test checks that gaitkeeper stays up, bounded and
//! correct: the app never sees what it should not, and the login is decided as configured.

use crate::common;
use crate::support;

use std::time::{Duration, Instant};

use common::behaviour::{form_encode, payload, STEADY};
use common::legacy::{login_page, set_cookie, submit};
use common::{client, EchoApp, Gaitkeeper};
use support::*;
use tokio::io::AsyncWriteExt;

const LIMIT: usize = 64 * 1024;

/// Gaitkeeper still answers ordinary requests.
async fn still_serving(gk: &Gaitkeeper) {
    let r = client().get(gk.url("/login")).send().await.unwrap();
    assert_eq!(r.status(), 200, "gaitkeeper stopped serving: {}", gk.log());
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_nothing_is_forwarded() {
    let (app, gk) = start(STRICT).await;
    // Declared too large: refused on the head alone, before any body is sent.
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024
    );
    let mut stream = tokio::net::TcpStream::connect(gk.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let out = read_responses(&mut stream, 1, Duration::from_secs(10)).await;
    assert_eq!(statuses(&out), [413], "{}", String::from_utf8_lossy(&out));

    // Chunked, no length: refused as soon as the limit is passed, while the client is still
    // sending (the terminating chunk never comes).
    let mut stream = tokio::net::TcpStream::connect(gk.addr).await.unwrap();
    stream
        .write_all(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 4096, "a".repeat(4096));
    for _ in 0..(LIMIT / 4096 + 2) {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let out = read_responses(&mut stream, 1, Duration::from_secs(10)).await;
    assert_eq!(statuses(&out), [413]);

    // Exactly at the limit is read (and decided), one byte over is not.
    let page = login_page(&gk).await;
    let base = form(&page, ALICE.0, ALICE.1, None) + "&pad=";
    let at_limit = base.clone() + &"p".repeat(LIMIT - base.len());
    let over = at_limit.clone() + "p";
    for (body, want) in [(at_limit, 403), (over, 413)] {
        let r = client()
            .post(gk.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
    }
    assert!(app.last_login().await.is_null(), "the app saw a login");
    still_serving(&gk).await;
}

#[tokio::test]
async fn a_slow_body_holds_only_its_own_login() {
    let (app, gk) = start(STRICT).await;
    let page = login_page(&gk).await;
    let body = form(&page, ALICE.0, ALICE.1, None);
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nUser-Agent: {}\r\nCookie: legacy_csrf={}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        common::USER_AGENT,
        page.csrf_cookie,
        body.len()
    );
    let mut slow = tokio::net::TcpStream::connect(gk.addr).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    slow.write_all(first.as_bytes()).await.unwrap();
    // While half a login is pending, other clients are served promptly and the app has not
    // seen any part of it.
    for _ in 0..5 {
        let started = Instant::now();
        still_serving(&gk).await;
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert!(
        app.last_login().await.is_null(),
        "a partial login was forwarded"
    );
    // The rest trickles in, a few bytes at a time.
    for piece in rest.as_bytes().chunks(8) {
        slow.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = read_responses(&mut slow, 1, Duration::from_secs(10)).await;
    assert_eq!(statuses(&out), [403], "the completed login is decided");
    // A body that never completes is never forwarded.
    let mut stuck = tokio::net::TcpStream::connect(gk.addr).await.unwrap();
    stuck.write_all(head.as_bytes()).await.unwrap();
    stuck.write_all(first.as_bytes()).await.unwrap();
    drop(stuck);
    still_serving(&gk).await;
    assert!(app.last_login().await.is_null());
}

#[tokio::test]
async fn a_trickled_body_gets_408_at_its_deadline_and_a_zip_bomb_413_while_logins_go_on() {
    let (app, gk) = start(&format!(
        "{STRICT}capture:\n  body_timeout: 1s\n  timeline_slack: 1h\n"
    ))
    .await;
    let page = login_page(&gk).await;
    let body = form(&page, ALICE.0, ALICE.1, None);
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nUser-Agent: {}\r\nCookie: legacy_csrf={}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        common::USER_AGENT,
        page.csrf_cookie,
        body.len()
    );
    // A slowloris: one byte every 200 ms would take far longer than the 1 s deadline.
    let (mut answer, mut slow) = tokio::net::TcpStream::connect(gk.addr)
        .await
        .unwrap()
        .into_split();
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in body.as_bytes() {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let answered = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            match answer.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        (got, started.elapsed())
    });
    // Meanwhile other logins are decided promptly, and a decompression bomb is refused.
    let bomb = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&vec![b'a'; 50_000_000]).unwrap();
        e.finish().unwrap()
    };
    assert!(bomb.len() < LIMIT);
    for _ in 0..3 {
        let asked = Instant::now();
        let page = login_page(&gk).await;
        let r = submit(&gk, &page, ALICE.0, ALICE.1, None).await;
        assert_eq!(r.status(), 403, "decided as configured");
        let r = client()
            .post(gk.url("/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-encoding", "gzip")
            .body(bomb.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "the bomb is refused by its decoded size");
        assert!(r.headers().contains_key("x-gaitkeeper-incident"));
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
    }
    // The slow body got 408 once its deadline passed, while it was still trickling in, and
    // the app saw none of it.
    let (out, after) = tokio::time::timeout(Duration::from_secs(10), answered)
        .await
        .expect("an answer to the slow body")
        .unwrap();
    trickle.abort();
    assert_eq!(statuses(&out), [408], "{}", String::from_utf8_lossy(&out));
    assert!(
        after >= Duration::from_secs(1) && after < Duration::from_secs(4),
        "answered after {after:?}"
    );
    assert!(app.last_login().await.is_null(), "nothing reached the app");
    assert!(
        gk.metric("gaitkeeper_login_bodies_refused_total{reason=\"body_timeout\"}")
            .await
            >= 1.0
    );
    assert!(
        gk.metric("gaitkeeper_unreadable_logins_total{app=\"default\",reason=\"too_large\",route=\"login\"}")
            .await
            >= 3.0
    );
}

/// The challenge form is read under the same deadline as a login body: a client trickling
/// it does not hold a worker.
#[tokio::test]
async fn a_trickled_challenge_form_gets_408_at_the_body_deadline() {
    let (_app, gk) = start(&format!(
        "{STRICT}capture:\n  body_timeout: 1s\n  timeline_slack: 1h\n"
    ))
    .await;
    let body = "code=123456&csrf=x";
    let head = format!(
        "POST /__gk/challenge/some-id HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (mut answer, mut slow) = tokio::net::TcpStream::connect(gk.addr)
        .await
        .unwrap()
        .into_split();
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    tokio::spawn(async move {
        for byte in body.as_bytes() {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), answer.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer within 10 s"),
        }
    }
    let after = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        after >= Duration::from_secs(1) && after < Duration::from_secs(4),
        "answered after {after:?}"
    );
    still_serving(&gk).await;
}

#[tokio::test]
async fn malformed_and_deeply_nested_json_is_refused_without_harm() {
    let (app, gk) = start(STRICT).await;
    let deep = "[".repeat(10_000);
    let deep_object = "{\"a\":".repeat(3_000);
    let cases = [
        ("not JSON", "{{{{".to_string(), "envelope"),
        ("deep array", deep.clone(), "envelope"),
        ("deep object", deep_object.clone(), "envelope"),
        ("truncated", r#"{"v":1,"tk":"#.to_string(), "envelope"),
        ("wrong types", r#"{"v":"1","tk":7}"#.to_string(), "envelope"),
        (
            "unknown version",
            r#"{"v":99,"tk":"x"}"#.to_string(),
            "version",
        ),
        (
            "invalid UTF-8 escape",
            "{\"v\":1,\"tk\":\"\\udc00\"}".to_string(),
            "envelope",
        ),
    ];
    for (what, payload, reason) in cases {
        let page = login_page(&gk).await;
        let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&payload)).await;
        assert_eq!(r.status(), 403, "{what}");
        assert_eq!(gk.last_telemetry_outcome().await, reason, "{what}");
    }
    // The same shapes as a JSON login body: no login name is found in them, and the app
    // (which cannot parse them either) logs nobody in.
    for body in [deep, deep_object, "{\"username\":".to_string()] {
        let r = client()
            .post(gk.url("/api/login"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
        assert!(set_cookie(&r, "legacy_session").is_none());
    }
    // A deeply nested valid payload with a genuine token: validated, refused, not crashed on.
    let page = login_page(&gk).await;
    let nested = format!(
        r#"{{"v":1,"tk":"{}","x":{}1{}}}"#,
        page.gk_token,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&nested)).await;
    assert_eq!(r.status(), 403);
    assert!(!app_logged_in(&app).await);
    still_serving(&gk).await;
}

#[tokio::test]
async fn absurd_timestamps_are_invalid_telemetry() {
    let (app, gk) = start(STRICT).await;
    // Each replaces the first key event's time in an otherwise genuine payload.
    let absurd = [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e309",
        "-1e309",
        "1e300",
        "-5",
        "18446744073709551616",
        "-0.0000001",
        "null",
        "\"100\"",
    ];
    for value in absurd {
        let page = login_page(&gk).await;
        let p = payload(&page.gk_token, &STEADY, 5, 13, 1);
        let first_key = p.find("\"k\":[[").unwrap() + 6;
        let end = first_key + p[first_key..].find(',').unwrap();
        let p = format!("{}{value}{}", &p[..first_key], &p[end..]);
        let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
        // Alice is enrolling: valid telemetry would be let through (see the control below),
        // so a 403 here is the validation refusing the payload.
        assert_eq!(r.status(), 403, "{value}");
    }
    // Page-level times: t1 before t0, a day-long page, negative visibility.
    for (from, to) in [
        ("\"t0\":100", "\"t0\":1e15"),
        ("\"t0\":100", "\"t0\":-100"),
        ("\"vp\":[1280,720]", "\"vp\":[1e308,-1]"),
    ] {
        let page = login_page(&gk).await;
        let p = payload(&page.gk_token, &STEADY, 5, 13, 2).replace(from, to);
        let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
        assert_eq!(r.status(), 403, "{to}");
    }
    assert!(!app_logged_in(&app).await);
    // Control: the same payload, untouched, is a normal enrolling login.
    let page = login_page(&gk).await;
    let p = payload(&page.gk_token, &STEADY, 5, 13, 1);
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
    assert_eq!(location(&r), "/account");
    still_serving(&gk).await;
}

#[tokio::test]
async fn a_million_tiny_events_are_refused_cheaply() {
    let (app, gk) = start(STRICT).await;
    let page = login_page(&gk).await;
    // A million key events: far over the body limit, refused with 413 before parsing.
    let million = format!(
        r#"{{"v":1,"tk":"{}","k":[{}]}}"#,
        page.gk_token,
        vec!["[1,\"d\",\"l\",0,0,0]"; 1_000_000].join(",")
    );
    let started = Instant::now();
    // Over raw TCP: gaitkeeper answers 413 on the head and closes, and an HTTP client still
    // uploading the body would see the reset instead of the answer.
    let body = form(&page, ALICE.0, ALICE.1, Some(&million));
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nCookie: legacy_csrf={}\r\nContent-Length: {}\r\n\r\n",
        page.csrf_cookie,
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(gk.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let out = read_responses(&mut stream, 1, Duration::from_secs(10)).await;
    assert_eq!(statuses(&out), [413], "{}", String::from_utf8_lossy(&out));
    // The body that follows goes nowhere: the connection is closed (or the bytes discarded).
    let _ = stream.write_all(body.as_bytes()).await;
    // As a header too: bounded by the header limits, never buffered whole.
    let r = client()
        .post(gk.url("/api/login"))
        .header("content-type", "application/json")
        .header("x-gaitkeeper-telemetry", "e".repeat(1_000_000))
        .body(format!(
            r#"{{"username":"{}","password":"{}"}}"#,
            ALICE.0, ALICE.1
        ))
        .send()
        .await;
    if let Ok(r) = r {
        assert!(r.status().is_client_error(), "{}", r.status());
        assert!(set_cookie(&r, "legacy_session").is_none());
    }
    // As many tiny mouse moves as fit in the payload limit: over the per-stream cap.
    let page = login_page(&gk).await;
    let genuine = payload(&page.gk_token, &STEADY, 5, 13, 3);
    let moves = vec!["[500,1,1]"; 1_000].join(",");
    let flood = genuine.replacen("\"m\":[", &format!("\"m\":[{moves},"), 1);
    assert!(flood.len() < LIMIT);
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&flood)).await;
    assert_eq!(r.status(), 403);
    let outcome = gk.last_telemetry_outcome().await;
    assert_eq!(outcome, "ok", "the envelope and token were fine");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!app_logged_in(&app).await);
    still_serving(&gk).await;
}

#[tokio::test]
async fn duplicate_and_conflicting_fields_are_not_guessed() {
    let (app, gk) = start(STRICT).await;
    let enc = form_encode;
    // The telemetry field twice.
    let page = login_page(&gk).await;
    let p = payload(&page.gk_token, &STEADY, 5, 13, 1);
    let body = form(&page, ALICE.0, ALICE.1, Some(&p)) + &format!("&__gk={}", enc(&p));
    let r = client()
        .post(gk.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(gk.last_telemetry_outcome().await, "duplicate");
    // In the form and in the header at once.
    let page = login_page(&gk).await;
    let p = payload(&page.gk_token, &STEADY, 5, 13, 1);
    let header = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&p)
    };
    let r = client()
        .post(gk.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
        .header("x-gaitkeeper-telemetry", header)
        .body(form(&page, ALICE.0, ALICE.1, Some(&p)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(gk.last_telemetry_outcome().await, "duplicate");
    // Two login names, in a form and in JSON.
    let page = login_page(&gk).await;
    let p = payload(&page.gk_token, &STEADY, 5, 13, 1);
    let body = form(&page, "mallory", ALICE.1, Some(&p)) + "&username=alice";
    let r = client()
        .post(gk.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unreadable: two names");
    let r = client()
        .post(gk.url("/api/login"))
        .header("content-type", "application/json")
        .body(r#"{"username":"mallory","password":"x","username":"alice"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unreadable: two names");
    assert!(!app_logged_in(&app).await);
}

#[tokio::test]
async fn a_login_without_telemetry_gets_on_missing_telemetry() {
    let (app, gk) = start(STRICT).await;
    let page = login_page(&gk).await;
    let r = submit(&gk, &page, ALICE.0, ALICE.1, None).await;
    assert_eq!(r.status(), 403);
    assert_eq!(gk.last_telemetry_outcome().await, "missing");
    assert!(app.last_login().await.is_null());
    // An empty field is not "no telemetry" that slips through either.
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some("")).await;
    assert_eq!(r.status(), 403);
    assert!(app.last_login().await.is_null());
}

#[tokio::test]
async fn telemetry_for_another_route_is_refused() {
    let (app, gk) = start(STRICT).await;
    // A token from the SPA login page, used on the form login.
    let spa = client()
        .get(gk.url("/spa-login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = spa
        .split("data-gk-token=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a token on the SPA page")
        .to_string();
    let page = login_page(&gk).await;
    let p = payload(&token, &STEADY, 5, 13, 1);
    let r = submit(&gk, &page, ALICE.0, ALICE.1, Some(&p)).await;
    assert_eq!(r.status(), 403);
    assert_eq!(gk.last_telemetry_outcome().await, "wrong_route");
    assert!(app.last_login().await.is_null());
}

#[tokio::test]
async fn unicode_and_over_long_login_names() {
    let (app, gk) = start(STRICT).await;
    // Unicode names are judged by their normalised form (`ａｌｉｃｅ` and `alice ` as alice) and
    // decided like any other; the app gets its body unchanged.
    // Each login is typed anew (one recording sent for several accounts is a replay).
    for (seed, name) in [
        "ÄlïcÉ",
        "alice\u{200b}",
        "аlice",
        "🦀🦀",
        "ａｌｉｃｅ",
        "alice ",
    ]
    .into_iter()
    .enumerate()
    {
        let page = login_page(&gk).await;
        let p = payload(
            &page.gk_token,
            &STEADY,
            name.chars().count(),
            13,
            seed as u64,
        );
        let r = submit(&gk, &page, name, ALICE.1, Some(&p)).await;
        // Enrolling users are let through; the app refuses the unknown name.
        assert_eq!(r.status(), 401, "{name:?}");
        assert_eq!(app.last_login().await["username"], name, "{name:?}");
    }
    // Over-long names: unreadable, refused with 400, never reach the app.
    let long = "a".repeat(600);
    let page = login_page(&gk).await;
    let p = payload(&page.gk_token, &STEADY, 5, 13, 2);
    let r = submit(&gk, &page, &long, ALICE.1, Some(&p)).await;
    assert_eq!(r.status(), 400);
    let r = client()
        .post(gk.url("/api/login"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"username":"{long}","password":"x"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_ne!(app.last_login().await["username"], long.as_str());
    // Invalid UTF-8 in the name.
    let page = login_page(&gk).await;
    let r = client()
        .post(gk.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", format!("legacy_csrf={}", page.csrf_cookie))
        .body(format!(
            "csrf_token={}&username=%FF%FEalice&password=x",
            page.csrf_token
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    still_serving(&gk).await;
}

#[tokio::test]
async fn header_injection_is_never_copied_to_the_app() {
    let echo = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(echo.addr, "").await;
    let host = gk.addr.to_string();
    // Each request tries to smuggle a header line (X-Injected) into one of the values
    // gaitkeeper copies or derives: Host → X-Forwarded-Host, X-Forwarded-For (appended to),
    // X-Request-Id (kept when plain), X-Forwarded-Proto (overwritten), and the path.
    let attempts = [
        format!("GET /a HTTP/1.1\r\nHost: {host}\r\nX-Request-Id: abc\rX-Injected: 1\r\n\r\n"),
        format!("GET /b HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 1.2.3.4\r\n X-Injected: 2\r\n\r\n"),
        format!("GET /c HTTP/1.1\r\nHost: {host}\rX-Injected: 3\r\n\r\n"),
        format!("GET /d HTTP/1.1\r\nHost: {host}\r\nX-Request-Id: a%0d%0aX-Injected:%204\r\n\r\n"),
        format!("GET /e HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\r\n"),
        format!("GET /f%0d%0aX-Injected:%206 HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /g HTTP/1.1\r\nHost: {host}\r\nX-Request-Id: a\0b\r\n\r\n"),
        format!("GET /h HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Proto: https\r\nX-Forwarded-For: \u{7f}\r\n\r\n"),
    ];
    for (i, request) in attempts.iter().enumerate() {
        let out = raw(gk.addr, request.as_bytes(), Duration::from_secs(3)).await;
        let got = statuses(&out);
        assert!(got.len() <= 1, "attempt {i}: {got:?}");
    }
    still_serving(&gk).await;
    for seen in echo.seen() {
        for (name, value) in &seen.headers {
            assert!(
                !name.eq_ignore_ascii_case("x-injected"),
                "{} {}: injected header reached the app",
                seen.method,
                seen.target
            );
            assert!(
                !value.contains(['\r', '\n', '\0']),
                "{name}: {value:?} reached the app"
            );
        }
        if let Some(id) = seen.header("x-request-id") {
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
                "{id:?}"
            );
        }
        if let Some(forwarded_host) = seen.header("x-forwarded-host") {
            assert_eq!(
                forwarded_host, host,
                "the client's X-Forwarded-Host was passed on"
            );
        }
        if let Some(proto) = seen.header("x-forwarded-proto") {
            assert_eq!(proto, "http", "the client's claimed scheme was trusted");
        }
        if let Some(xff) = seen.header("x-forwarded-for") {
            assert!(xff.ends_with("127.0.0.1"), "{xff:?}");
        }
    }
}

#[tokio::test]
async fn odd_methods_on_gaitkeepers_own_paths_are_answered_not_forwarded() {
    let echo = EchoApp::start("app").await;
    let gk = Gaitkeeper::start_with(echo.addr, "", common::ROUTES).await;
    let host = gk.addr.to_string();
    let paths = [
        "/__gk/capture.js",
        "/__gk/challenge/abc",
        "/__gk/challenge/callback",
        "/__gk/",
        "/__gk/nothing",
        "/__GK/capture.js",
        "/%5F%5Fgk/challenge/abc",
        "//__gk/capture.js",
        "/x/../__gk/challenge/abc",
    ];
    let methods = [
        "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FOO", "POST", "GET", "HEAD",
    ];
    for path in paths {
        for method in methods {
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
            );
            let out = raw(gk.addr, request.as_bytes(), Duration::from_secs(5)).await;
            let got = statuses(&out);
            assert_eq!(
                got.len(),
                1,
                "{method} {path}: {}",
                String::from_utf8_lossy(&out)
            );
            assert!(got[0] < 500, "{method} {path}: {}", got[0]);
            let text = String::from_utf8_lossy(&out);
            assert!(
                !text.contains("x-echo-app"),
                "{method} {path} was forwarded"
            );
            if method == "TRACE" {
                assert!(!text.contains("abc\r\n") || got[0] >= 400, "TRACE echoed");
            }
        }
    }
    // CONNECT to a reserved path: refused, never tunnelled.
    let out = raw(
        gk.addr,
        format!("CONNECT /__gk/capture.js HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        Duration::from_secs(3),
    )
    .await;
    assert!(statuses(&out).iter().all(|s| *s != 200));
    assert!(
        echo.seen()
            .iter()
            .all(|s| !s.target.to_ascii_lowercase().contains("gk")),
        "a reserved path reached the app: {:?}",
        echo.seen()
            .iter()
            .map(|s| s.target.clone())
            .collect::<Vec<_>>()
    );
    still_serving(&gk).await;
}
