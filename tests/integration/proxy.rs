//! The proxy core against a real app on 127.0.0.1, through the real `gaitkeeper` binary.

use crate::common;

use std::time::Duration;

use common::{client, eventually, pattern, EchoApp, Gaitkeeper};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn get_and_post_with_bodies_are_proxied_both_ways() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "").await;
    let http = client();

    let response = http.get(gk.url("/hello?x=1&y=2")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "app GET /hello?x=1&y=2 0");

    // A body large enough to be streamed in many chunks, checked byte for byte.
    let upload = pattern(3 * 1024 * 1024 + 17);
    let response = http
        .post(gk.url("/upload"))
        .body(upload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.last().body, upload);

    let response = http.get(gk.url("/bytes/5000001")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), pattern(5_000_001));

    let response = http.head(gk.url("/anything")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.last().method, "HEAD");
}

#[tokio::test]
async fn forwarding_headers_are_added_and_host_is_preserved() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "").await;
    let http = client();

    http.get(gk.url("/h"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let seen = app.last();
    assert_eq!(seen.header("host"), Some(gk.addr.to_string().as_str()));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(gk.addr.to_string().as_str())
    );
    // The client's claim is replaced by the one address gaitkeeper judged the login by (an
    // app reading the leftmost entry cannot be handed a forged one).
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    // The scheme is gaitkeeper's own; a client's claim is not passed on.
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    let request_id = seen.header("x-request-id").expect("a request id");
    assert_eq!(request_id.len(), 16);

    http.get(gk.url("/h"))
        .header("x-request-id", "lb-42")
        .send()
        .await
        .unwrap();
    assert_eq!(app.last().header("x-request-id"), Some("lb-42"));
    assert_eq!(app.last().header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn host_header_can_be_rewritten_to_the_upstream_or_a_fixed_value() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "  host_header: upstream\n").await;
    client().get(gk.url("/")).send().await.unwrap();
    assert_eq!(
        app.last().header("host"),
        Some(app.addr.to_string().as_str())
    );

    let gk = Gaitkeeper::start(app.addr, "  host_header: { set: \"app.example\" }\n").await;
    client().get(gk.url("/")).send().await.unwrap();
    assert_eq!(app.last().header("host"), Some("app.example"));
}

#[tokio::test]
async fn websocket_upgrades_are_passed_through() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "").await;

    let stream = tokio::net::TcpStream::connect(gk.addr).await.unwrap();
    let (mut ws, response) =
        tokio_tungstenite::client_async(format!("ws://{}/ws", gk.addr), stream)
            .await
            .expect("the WebSocket handshake passes through gaitkeeper");
    assert_eq!(response.status(), 101);
    for text in ["hello", "second message", &"x".repeat(100_000)] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_data().as_ref(),
        &[0u8, 1, 2, 255]
    );
    assert_eq!(app.last().header("upgrade"), Some("websocket"));
}

#[tokio::test]
async fn upstream_down_gives_a_502_page_not_a_hang() {
    // A port nobody listens on.
    let dead: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let gk = Gaitkeeper::start(dead, "  connect_timeout: 1s\n").await;
    let response = tokio::time::timeout(Duration::from_secs(10), client().get(gk.url("/x")).send())
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    assert!(body.contains("502 Bad Gateway"), "{body}");
    assert!(body.contains("Reference:"), "{body}");
    assert!(
        gk.metric("gaitkeeper_upstream_errors_total{kind=\"connect\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn slow_upstream_gives_a_504_after_the_read_timeout() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "  read_timeout: 300ms\n").await;
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client().get(gk.url("/slow/3000")).send(),
    )
    .await
    .expect("answered before the app")
    .unwrap();
    assert_eq!(response.status(), 504);
    assert!(
        gk.metric("gaitkeeper_upstream_errors_total{kind=\"timeout\"}")
            .await
            >= 1.0
    );
    // A request within the limit still works.
    let ok = client().get(gk.url("/slow/10")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn reserved_prefix_never_reaches_the_upstream() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "").await;
    let http = client();
    for path in [
        "/__gk/",
        "/__gk/anything",
        "/__GK/x",
        "/%5F%5Fgk/x",
        "/%255F_gk/x",
        "//__gk/x",
        "/./__gk/x",
        "/a/../__gk/x",
        "/__gk",
    ] {
        let response = http.get(gk.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let response = http.post(gk.url(path)).body("x").send().await.unwrap();
        assert_eq!(response.status(), 404, "POST {path}");
    }
    assert!(app.seen().is_empty(), "the app saw {:?}", app.seen());
    // Neighbouring paths are the app's.
    assert_eq!(
        http.get(gk.url("/__gkx")).send().await.unwrap().status(),
        200
    );
    assert_eq!(app.seen().len(), 1);
}

#[tokio::test]
async fn metrics_are_on_the_admin_listener_only() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "").await;
    let http = client();
    http.get(gk.url("/counted")).send().await.unwrap();

    // A request is counted in pingora's logging phase, just after its response is sent.
    eventually(Duration::from_secs(5), "the request is counted", || async {
        gk.metric("gaitkeeper_requests_total{status=\"200\"}").await >= 1.0
    })
    .await;
    let admin = gk.metrics().await;
    assert!(
        admin.contains("gaitkeeper_upstream_response_seconds_bucket"),
        "{admin}"
    );

    // On the public listener /metrics is the app's path, answered by the app.
    let public = gk.get_text("/metrics").await;
    assert_eq!(public, "app GET /metrics 0");
    assert!(!public.contains("gaitkeeper_"));
    let health = http
        .get(format!("http://{}/healthz", gk.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // Admin answers carry their length, so a scraper's (or an analyze caller's) connection
    // serves one request after another.
    let mut conn = tokio::net::TcpStream::connect(gk.admin).await.unwrap();
    for path in ["/healthz", "/metrics", "/healthz"] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(
                conn.read(&mut byte).await.unwrap(),
                1,
                "{path}: connection closed"
            );
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .unwrap_or_else(|| panic!("{path}: no content-length in {head}"))
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).await.unwrap();
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
    }
}

#[tokio::test]
async fn valid_config_change_is_applied_without_restart() {
    let first = EchoApp::start("first").await;
    let second = EchoApp::start("second").await;
    let gk = Gaitkeeper::start(first.addr, "").await;
    let http = client();
    assert!(gk.get_text("/").await.starts_with("first"));

    // A slow request in flight across the reload must complete.
    let in_flight = tokio::spawn({
        let url = gk.url("/slow/700");
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    });
    let text = std::fs::read_to_string(&gk.config_path).unwrap();
    gk.rewrite_config(&text.replace(&first.addr.to_string(), &second.addr.to_string()));
    eventually(
        Duration::from_secs(10),
        "requests go to the new upstream",
        || {
            let http = http.clone();
            let url = gk.url("/");
            async move {
                http.get(url)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
                    .starts_with("second")
            }
        },
    )
    .await;
    assert_eq!(in_flight.await.unwrap(), "first slow 700");
    assert!(
        gk.metric("gaitkeeper_config_reloads_total{result=\"ok\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn invalid_config_change_is_rejected_and_the_old_config_keeps_serving() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "").await;
    let http = client();
    let good = std::fs::read_to_string(&gk.config_path).unwrap();

    gk.rewrite_config(&common::edited(
        &good,
        "upstream:\n",
        "upstream:\n  conect_timeout: 2s\n",
    ));
    eventually(
        Duration::from_secs(10),
        "the bad file is rejected",
        || async {
            gk.metric("gaitkeeper_config_reloads_total{result=\"error\"}")
                .await
                >= 1.0
        },
    )
    .await;
    let response = http.get(gk.url("/still")).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "app GET /still 0");
    assert!(
        gk.log().contains("conect_timeout"),
        "the log says why:\n{}",
        gk.log()
    );

    gk.rewrite_config("upstream: [broken\n");
    eventually(
        Duration::from_secs(10),
        "broken YAML is rejected",
        || async {
            gk.metric("gaitkeeper_config_reloads_total{result=\"error\"}")
                .await
                >= 2.0
        },
    )
    .await;
    assert_eq!(http.get(gk.url("/")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "").await;
    let before = gk
        .metric("gaitkeeper_config_reloads_total{result=\"ok\"}")
        .await;
    let status = std::process::Command::new("kill")
        .args(["-HUP", &gk.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually(
        Duration::from_secs(10),
        "SIGHUP triggers a reload",
        || async {
            gk.metric("gaitkeeper_config_reloads_total{result=\"ok\"}")
                .await
                > before
        },
    )
    .await;
    // Still alive and serving (SIGHUP's default action would have killed it).
    assert_eq!(
        client().get(gk.url("/")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn access_log_has_one_json_line_per_request_without_the_query() {
    let app = EchoApp::start("app").await;
    let gk = Gaitkeeper::start(app.addr, "").await;
    client()
        .get(gk.url("/logged/path?token=supersecret"))
        .send()
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the access line is written",
        || async { gk.log().contains("/logged/path") },
    )
    .await;
    let log = gk.log();
    let line = log.lines().find(|l| l.contains("/logged/path")).unwrap();
    let entry: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["path"], "/logged/path");
    assert_eq!(entry["status"], 200);
    assert!(entry["upstream_ms"].as_f64().is_some());
    assert_eq!(entry["request_id"].as_str().unwrap().len(), 16);
    assert!(!log.contains("supersecret"));
    assert!(!log.contains(common::SECRET));
}

#[tokio::test]
async fn tls_to_the_upstream_sends_sni_and_verifies_the_certificate() {
    let app = common::TlsApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &app.cert_pem).unwrap();
    let upstream = format!("127.0.0.1:{}", app.addr.port()).parse().unwrap();

    let extra = format!(
        "  tls: true\n  sni: localhost\n  ca_file: {:?}\n",
        ca.display().to_string()
    );
    let gk = Gaitkeeper::start(upstream, &extra).await;
    let response = client().get(gk.url("/secure")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "tls-app GET /secure sni=localhost"
    );

    // Without the app's CA the certificate does not verify: a 502, never plain text.
    let gk = Gaitkeeper::start(upstream, "  tls: true\n  sni: localhost\n").await;
    assert_eq!(
        client()
            .get(gk.url("/secure"))
            .send()
            .await
            .unwrap()
            .status(),
        502
    );

    // The operator may turn verification off for a self-signed test app.
    let gk = Gaitkeeper::start(
        upstream,
        "  tls: true\n  sni: localhost\n  verify_certificate: false\n",
    )
    .await;
    let response = client().get(gk.url("/x")).send().await.unwrap();
    assert_eq!(
        response.text().await.unwrap(),
        "tls-app GET /x sni=localhost"
    );
}

#[tokio::test]
async fn what_gaitkeeper_writes_is_private_to_its_user() {
    use std::os::unix::fs::PermissionsExt;
    let app = EchoApp::start("app").await;
    // A data directory an older version left readable, with a readable file in it.
    let outside = tempfile::tempdir().unwrap();
    let data = outside.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = data.join("old-notes.txt");
    std::fs::write(&old, "x").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let audit = outside.path().join("audit.jsonl");
    let more = format!(
        "{}audit:\n  stream: {{ file: {:?} }}\n",
        common::ROUTES,
        audit.display().to_string()
    );
    let gk = Gaitkeeper::start_with(app.addr, "", &more).await;
    // The data_dir it created, its files and the audit stream.
    let page = gk.get_text("/page/plain").await;
    assert!(page.contains("capture.js"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let own = gk.dir.path().join("data");
    assert_eq!(mode(&own), 0o700, "data_dir");
    let mut files = 0;
    for entry in std::fs::read_dir(&own).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path) & 0o077, 0, "{} is private", path.display());
        files += 1;
    }
    assert!(files >= 2, "the store and its WAL or spool were checked");
    assert_eq!(mode(&audit), 0o600, "the audit stream");
    drop(gk);
    // An existing, readable data_dir is tightened at start.
    let text = format!(
        "listen: [\"127.0.0.1:{}\"]\nupstream:\n  address: \"{}\"\nadmin:\n  listen: \"127.0.0.1:{}\"\nserver:\n  data_dir: {:?}\nsecrets:\n  key: {{ env: GK_TEST_SECRET }}\n",
        common::free_port(),
        app.addr,
        common::free_port(),
        data.display().to_string()
    );
    let config = outside.path().join("gk.yaml");
    std::fs::write(&config, text).unwrap();
    let mut child = std::process::Command::new(common::binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("GK_TEST_SECRET", common::SECRET)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    common::eventually(
        std::time::Duration::from_secs(20),
        "the store created",
        || {
            let db = data.join("gaitkeeper.db");
            async move { db.exists() }
        },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&old), 0o600);
    assert_eq!(mode(&data.join("gaitkeeper.db")) & 0o077, 0);
}
