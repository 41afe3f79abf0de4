//! The three documented topologies (docs/deployment.md), run from the very files under
//! `config/deploy/` with only their addresses, paths and secret name swapped for the test's:
//! gaitkeeper at the edge with its own certificates (two apps); behind nginx terminating TLS (see
//! `edge::behind_nginx_terminating_tls_the_client_is_the_one_nginx_names`); and "login routes
//! only", where nginx sends gaitkeeper the login paths and nothing else.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::balancers::Balancer;
use crate::common::behaviour::{payload, STEADY};
use crate::common::legacy::{location, login_page_at, set_cookie, submit_at, LegacyApp, ALICE};
use crate::common::{eventually, free_port, Gaitkeeper, SECRET, USER_AGENT};
use crate::edge::{make_cert, served_certificate_for, try_served_certificate, Cert};

/// A file of `config/deploy/` with each `(from, to)` replaced.
pub fn deploy_file(name: &str, swaps: &[(&str, String)]) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/deploy/").to_string() + name;
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in swaps {
        assert!(text.contains(from), "{name} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// The swaps that make a deployment YAML run in a test: its ports, data directory and
/// secret; `more` is appended (logging as JSON and the harness's timeline slack always are).
pub fn test_yaml(
    name: &str,
    dir: &Path,
    swaps: &[(&str, String)],
    admin: SocketAddr,
    more: &str,
) -> String {
    let mut all = vec![
        (
            "127.0.0.1:9090\"",
            format!("{admin}\"\n  debug_telemetry: true"),
        ),
        (
            "/var/lib/gaitkeeper",
            dir.join("data").display().to_string(),
        ),
        ("GAITKEEPER_SECRET", "GK_TEST_SECRET".to_string()),
    ];
    all.extend(swaps.iter().cloned());
    deploy_file(name, &all) + "logging:\n  format: json\ncapture:\n  timeline_slack: 1h\n" + more
}

/// `cert`'s files in place of `/etc/{who}/tls/{stem}.pem` and `.key`.
fn cert_swaps(who: &str, stem: &str, cert: &Cert) -> Vec<(&'static str, String)> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    vec![
        (
            leak(format!("/etc/{who}/tls/{stem}.pem")),
            cert.cert.display().to_string(),
        ),
        (
            leak(format!("/etc/{who}/tls/{stem}.key")),
            cert.key.display().to_string(),
        ),
    ]
}

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

fn client_for(hosts: &[&str], to: SocketAddr, roots: &[&Cert]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .local_address(Some("127.0.0.2".parse().unwrap()));
    for host in hosts {
        builder = builder.resolve(host, to);
    }
    for root in roots {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(root.pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn at_the_edge_two_apps_on_their_host_names_with_certificates_routes_policy_and_users() {
    let (intranet_app, wiki_app) = (LegacyApp::start().await, LegacyApp::start().await);
    let dir = tempfile::tempdir().unwrap();
    let site = make_cert(dir.path(), "site", &["localhost"], 90);
    let intranet = make_cert(dir.path(), "intranet", &["intranet.example.com"], 90);
    let wiki = make_cert(dir.path(), "wiki", &["wiki.example.com"], 90);
    let (addr, http_addr, admin) = (addr(), addr(), addr());
    // The documented topology's own file, with the test's addresses and certificates; the
    // top level blocks logins without telemetry (the wiki's shadow mode forwards them anyway).
    let mut swaps = vec![
        ("0.0.0.0:443", addr.to_string()),
        ("0.0.0.0:80", http_addr.to_string()),
        ("127.0.0.1:8001", intranet_app.addr.to_string()),
        ("127.0.0.1:8002", wiki_app.addr.to_string()),
    ];
    for (stem, cert) in [("default", &site), ("intranet", &intranet), ("wiki", &wiki)] {
        swaps.extend(cert_swaps("gaitkeeper", stem, cert));
    }
    let text = test_yaml(
        "edge.yaml",
        dir.path(),
        &swaps,
        admin,
        "policy:\n  on_missing_telemetry: block\nstore:\n  enrollment_logins: 2\n",
    );
    let gk = Gaitkeeper::start_in(dir, addr, admin, true, &text).await;
    let roots = [&site, &intranet, &wiki];

    // Each host name gets its app's certificate by SNI; any other name the listener's own.
    assert_eq!(
        served_certificate_for(addr, &roots, "intranet.example.com").await,
        intranet.der
    );
    assert_eq!(
        served_certificate_for(addr, &roots, "wiki.example.com").await,
        wiki.der
    );
    assert_eq!(
        served_certificate_for(addr, &roots, "localhost").await,
        site.der
    );

    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT);
    for host in ["intranet.example.com", "wiki.example.com", "localhost"] {
        builder = builder.resolve(host, addr);
    }
    for root in roots {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(root.pem.as_bytes()).unwrap());
    }
    let http = builder.build().unwrap();
    let port = addr.port();
    let (intranet_url, wiki_url) = (
        format!("https://intranet.example.com:{port}"),
        format!("https://wiki.example.com:{port}"),
    );
    let page = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };

    // Each app's own routes get the capture script; the other app's do not.
    assert!(page(format!("{intranet_url}/login"))
        .await
        .contains("data-gk-token"));
    assert!(!page(format!("{wiki_url}/login"))
        .await
        .contains("data-gk-token"));
    assert!(page(format!("{wiki_url}/spa-login"))
        .await
        .contains("data-gk-token"));
    assert!(!page(format!("{intranet_url}/spa-login"))
        .await
        .contains("data-gk-token"));

    // HTTP/2 by ALPN; port 80 sends browsers to the same page over HTTPS.
    let r = http
        .get(format!("{intranet_url}/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let r = crate::common::client()
        .get(format!("http://{http_addr}/login"))
        .header("host", "intranet.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(location(&r), format!("{intranet_url}/login"));

    // Each app's own policy: a login without telemetry is blocked on one, let through on
    // the other.
    let login = login_page_at(&http, &intranet_url).await;
    let r = submit_at(&http, &intranet_url, &login, ALICE.0, ALICE.1, None).await;
    assert_eq!(
        r.status(),
        403,
        "on_missing_telemetry: block on the intranet (enforce mode)"
    );
    let r = http
        .post(format!("{wiki_url}/api/login"))
        .json(&serde_json::json!({"username": ALICE.0, "password": ALICE.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the wiki is in shadow mode: forwarded");
    assert!(set_cookie(&r, "legacy_session").is_some());

    // alice enrols on the intranet with two verified logins...
    for seed in 0..2 {
        let login = login_page_at(&http, &intranet_url).await;
        let p = payload(&login.gk_token, &STEADY, ALICE.0.len(), ALICE.1.len(), seed);
        let r = submit_at(&http, &intranet_url, &login, ALICE.0, ALICE.1, Some(&p)).await;
        assert_eq!(location(&r), "/account");
    }
    eventually(Duration::from_secs(10), "two verified intranet logins learnt", || async {
        gk.metric("gaitkeeper_login_outcomes_total{app=\"intranet\",outcome=\"verified\",route=\"login\"}")
            .await
            >= 2.0
            && gk.metric("gaitkeeper_learn_logins_total{result=\"ok\"}").await >= 2.0
    })
    .await;
    // A page token of one app is refused at the other's login.
    let wiki_page = page(format!("{wiki_url}/spa-login")).await;
    let wiki_token = wiki_page
        .split("data-gk-token=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let login = login_page_at(&http, &intranet_url).await;
    let p = payload(&wiki_token, &STEADY, ALICE.0.len(), ALICE.1.len(), 7);
    submit_at(&http, &intranet_url, &login, ALICE.0, ALICE.1, Some(&p)).await;
    assert_eq!(gk.last_telemetry_outcome().await, "wrong_route");
    // ...and is someone else on the wiki: alice of one app is not alice of another.
    let show = |app: &str| {
        let out = std::process::Command::new(crate::common::binary())
            .args(["users", "--config"])
            .arg(&gk.config_path)
            .args(["--app", app, "show", "alice"])
            .env("GK_TEST_SECRET", SECRET)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let on_intranet = show("intranet");
    assert!(on_intranet.contains("state:     enrolled"), "{on_intranet}");
    let on_wiki = show("wiki");
    assert!(!on_wiki.contains("state:     enrolled"), "{on_wiki}");
    let key_line = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("key:"))
            .map(str::to_string)
    };
    assert_ne!(
        key_line(&on_intranet),
        key_line(&on_wiki),
        "{on_intranet}\n{on_wiki}"
    );
    // Without --app, a config of several apps asks which.
    let ambiguous = std::process::Command::new(crate::common::binary())
        .args(["users", "--config"])
        .arg(&gk.config_path)
        .args(["show", "alice"])
        .env("GK_TEST_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!ambiguous.status.success());
    assert!(String::from_utf8_lossy(&ambiguous.stderr).contains("--app"));

    // The audit trail says which app each login was for.
    eventually(
        Duration::from_secs(10),
        "both apps in the audit trail",
        || async {
            let (_, trail) = gk.audit(&["tail", "--lines", "50"]);
            trail.contains("\"app\":\"intranet\"") && trail.contains("\"app\":\"wiki\"")
        },
    )
    .await;

    // A host no app claims, with no default app: 421.
    let r = http
        .get(format!("https://localhost:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);

    // A reload removes the wiki and adds a docs app with its own certificate.
    let docs = make_cert(gk.dir.path(), "docs", &["docs.example.com"], 90);
    let wiki_start = text.find("  - name: wiki").unwrap();
    let wiki_end = text.find("admin:\n").unwrap();
    let docs_app = format!(
        "  - name: docs\n    hosts: [\"docs.example.com\"]\n    upstream: {{ address: \"{}\" }}\n    tls: {{ cert_file: {:?}, key_file: {:?} }}\n",
        wiki_app.addr,
        docs.cert.display().to_string(),
        docs.key.display().to_string()
    );
    gk.rewrite_config(&format!(
        "{}{docs_app}{}",
        &text[..wiki_start],
        &text[wiki_end..]
    ));
    eventually(Duration::from_secs(10), "the reload applied", || async {
        gk.metric("gaitkeeper_config_reloads_total{result=\"ok\"}")
            .await
            >= 1.0
    })
    .await;
    let r = http
        .get(format!("{wiki_url}/spa-login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421, "the removed app is gone");
    let roots = [&site, &intranet, &wiki, &docs];
    eventually(
        Duration::from_secs(10),
        "the new app's certificate served",
        || async {
            try_served_certificate(addr, &roots, "docs.example.com")
                .await
                .is_ok_and(|der| der == docs.der)
        },
    )
    .await;
}

#[tokio::test]
async fn login_routes_only_send_gaitkeeper_the_logins_and_nothing_else() {
    let app = LegacyApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "intranet", &["localhost"], 90);
    let (gk_addr, admin) = (addr(), addr());
    let text = test_yaml(
        "login-routes-only.yaml",
        dir.path(),
        &[
            ("127.0.0.1:8080", gk_addr.to_string()),
            ("127.0.0.1:8001", app.addr.to_string()),
        ],
        admin,
        "",
    );
    let gk = Gaitkeeper::start_in(dir, gk_addr, admin, false, &text).await;

    // The location list in the documented nginx file is what `edge-locations` prints.
    let printed = std::process::Command::new(crate::common::binary())
        .args(["edge-locations", "--config"])
        .arg(&gk.config_path)
        .env("GK_TEST_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed = String::from_utf8(printed.stdout).unwrap();
    let location_line = printed
        .lines()
        .find(|l| l.starts_with("location"))
        .unwrap()
        .to_string();
    let mut swaps = vec![
        ("listen 443 ssl http2;", String::new()),
        ("server 127.0.0.1:8080;", format!("server {gk_addr};")),
        ("server 127.0.0.1:8001;", format!("server {};", app.addr)),
    ];
    swaps.extend(cert_swaps("nginx", "intranet", &cert));
    let conf = deploy_file("nginx-login-routes.conf", &swaps);
    assert!(
        conf.contains(&location_line),
        "config/deploy/nginx-login-routes.conf routes what `gaitkeeper edge-locations` prints:\n{printed}"
    );
    let nginx = Balancer::nginx(gk.dir.path(), |port| {
        conf.replace(
            "    server_name",
            &format!("    listen 127.0.0.1:{port} ssl http2;\n    server_name"),
        )
    })
    .await;
    let web = client_for(&["localhost"], nginx.addr, &[&cert]);
    let base = format!("https://localhost:{}", nginx.addr.port());

    // The login page comes through gaitkeeper (injected), the login is scored and audited
    // with the client nginx names, and the app's session starts.
    let login = login_page_at(&web, &base).await;
    let p = payload(&login.gk_token, &STEADY, ALICE.0.len(), ALICE.1.len(), 2);
    let r = submit_at(&web, &base, &login, ALICE.0, ALICE.1, Some(&p)).await;
    assert_eq!(location(&r), "/account");
    eventually(Duration::from_secs(10), "the login audited", || async {
        gk.audit(&["tail"])
            .1
            .contains("\"client_ip\":\"127.0.0.2\"")
    })
    .await;

    // Everything else goes straight to the app: gaitkeeper never sees it.
    let r = web.get(format!("{base}/account")).send().await.unwrap();
    assert_eq!(
        r.status(),
        303,
        "no session cookie sent: the app redirects to its login"
    );
    let r = web.get(format!("{base}/")).send().await.unwrap();
    assert!(r.status().is_success() || r.status().is_redirection());
    // Other spellings of a login path still go through gaitkeeper.
    let r = web.post(format!("{base}/LOGIN/")).send().await.unwrap();
    let _ = r.status();
    eventually(Duration::from_secs(5), "the access log written", || async {
        gk.log().contains("\"path\":\"/LOGIN/\"")
    })
    .await;
    let log = gk.log();
    assert!(
        !log.contains("\"path\":\"/account\"") && !log.contains("\"path\":\"/\","),
        "requests outside the login routes never reach gaitkeeper:\n{log}"
    );
}
