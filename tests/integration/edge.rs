//! The production edge (issue #20): HTTPS with HTTP/2 on gaitkeeper's own listeners,
//! certificates rotated under load, a redirect-only listener, security headers on
//! gaitkeeper's pages, and the real client behind Debian's nginx (TLS terminated, forwarding
//! headers) and HAProxy (TLS passed through, PROXY protocol v2) — and forged forwarding
//! headers from a peer nobody trusts changing nothing. (Several apps on their host names:
//! `deploy`.)

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::balancers::Balancer;
use crate::common::legacy::{location, login_page_at, submit_at, LegacyApp, ALICE, LEGACY_ROUTES};
use crate::common::{eventually, free_port, EchoApp, Gaitkeeper, USER_AGENT};

/// A certificate and key written as PEM files, and the certificate's DER.
pub struct Cert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
    pub pem: String,
}

/// A self-signed certificate for `names` valid for `days` more days.
pub fn make_cert(dir: &Path, stem: &str, names: &[&str], days: i64) -> Cert {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join(format!("{stem}-cert.pem"));
    let key_path = dir.join(format!("{stem}-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    crate::common::write_secret(&key_path, key.serialize_pem());
    Cert {
        cert: cert_path,
        key: key_path,
        der: cert.der().to_vec(),
        pem: cert.pem(),
    }
}

/// A client that trusts `roots`, reaches `localhost` at `addr` (the name the test
/// certificates carry) and, with `from`, connects from that local address.
pub fn https_client(roots: &[&Cert], addr: SocketAddr, from: Option<IpAddr>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .resolve("localhost", addr)
        .local_address(from);
    for root in roots {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(root.pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// A config of gaitkeeper in front of `upstream` with the listeners of `listen` (YAML list
/// items), `server_extra` under `server:` and `more` at the top level.
fn config(
    listen: &str,
    admin: SocketAddr,
    dir: &Path,
    upstream: SocketAddr,
    server_extra: &str,
    more: &str,
) -> String {
    format!(
        "listen:\n{listen}upstream:\n  address: \"{upstream}\"\nadmin:\n  listen: \"{admin}\"\n  debug_telemetry: true\nserver:\n  threads: 2\n  data_dir: {data:?}\n{server_extra}logging:\n  format: json\nsecrets:\n  key: {{ env: GK_TEST_SECRET }}\ncapture:\n  timeline_slack: 1h\n{more}",
        data = dir.join("data").display().to_string()
    )
}

/// gaitkeeper with one HTTPS listener (a certificate for `localhost`) in front of
/// `upstream`; `more` is appended as top-level YAML.
pub async fn start_https(upstream: SocketAddr, more: &str) -> (Gaitkeeper, Cert) {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "site", &["localhost"], 90);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = format!(
        "  - address: \"{addr}\"\n    tls: {{ cert_file: {:?}, key_file: {:?} }}\n",
        cert.cert.display().to_string(),
        cert.key.display().to_string()
    );
    let text = config(&listen, admin, dir.path(), upstream, "", more);
    (
        Gaitkeeper::start_in(dir, addr, admin, true, &text).await,
        cert,
    )
}

/// The certificate a new TLS connection to `addr` is given (the client trusts `roots`).
async fn served_certificate(addr: SocketAddr, roots: &[&Cert]) -> Vec<u8> {
    served_certificate_for(addr, roots, "localhost").await
}

/// The certificate a new TLS connection to `addr` asking for `sni` is given.
pub async fn served_certificate_for(addr: SocketAddr, roots: &[&Cert], sni: &str) -> Vec<u8> {
    try_served_certificate(addr, roots, sni).await.unwrap()
}

/// [`served_certificate_for`], or why the handshake failed (a certificate for another name).
pub async fn try_served_certificate(
    addr: SocketAddr,
    roots: &[&Cert],
    sni: &str,
) -> std::io::Result<Vec<u8>> {
    use tokio_rustls::rustls;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(rustls::pki_types::CertificateDer::from(root.der.clone()))
            .unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tls = connector.connect(name, tcp).await?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].to_vec())
}

/// Replaces `to` with the contents of `from` the way deployment tools do (write, rename).
fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[tokio::test]
async fn https_serves_http2_and_http1_with_the_real_scheme_and_security_headers() {
    let app = EchoApp::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "site", &["localhost"], 90);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let redirect_port = free_port();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = format!(
        "  - address: \"{addr}\"\n    tls:\n      cert_file: {:?}\n      key_file: {:?}\n  - {{ address: \"127.0.0.1:{redirect_port}\", redirect_to_https: true }}\n",
        cert.cert.display().to_string(),
        cert.key.display().to_string()
    );
    let text = config(&listen, admin, dir.path(), app.addr, "", "");
    let gk = Gaitkeeper::start_in(dir, addr, admin, true, &text).await;
    let base = format!("https://localhost:{}", addr.port());

    // Browsers negotiate HTTP/2 by ALPN; the app is told the scheme the client used, and a
    // scheme or address the client claims is replaced.
    let h2 = https_client(&[&cert], addr, None);
    let r = h2
        .get(format!("{base}/hello"))
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-for", "203.0.113.66")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let seen = app.last();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));

    // HTTP/1.1 clients are served too.
    let h1 = reqwest::Client::builder()
        .http1_only()
        .resolve("localhost", addr)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = h1.get(format!("{base}/h1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);

    // gaitkeeper's own pages carry the security headers, HSTS because this is HTTPS.
    let r = h2
        .get(format!("{base}/__gk/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(header("x-frame-options"), "DENY");
    assert_eq!(header("referrer-policy"), "no-referrer");
    assert!(header("content-security-policy").contains("frame-ancestors 'none'"));
    assert!(header("strict-transport-security").starts_with("max-age="));

    // The access log says which protocol and scheme each request came over.
    eventually(Duration::from_secs(5), "access log lines", || async {
        let log = gk.log();
        log.lines().any(|l| {
            l.contains("/hello")
                && l.contains("\"http\":\"2\"")
                && l.contains("\"scheme\":\"https\"")
        }) && log
            .lines()
            .any(|l| l.contains("/h1") && l.contains("\"http\":\"1.1\""))
    })
    .await;

    // The plain listener only redirects, to the same path on the HTTPS port.
    let r = crate::common::client()
        .post(format!("http://127.0.0.1:{redirect_port}/login?next=%2Fa"))
        .body("username=alice&password=secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        location(&r),
        format!("https://127.0.0.1:{}/login?next=%2Fa", addr.port())
    );
    assert!(
        !app.seen().iter().any(|s| s.target.starts_with("/login")),
        "nothing sent to the redirect listener reaches the app"
    );
}

#[tokio::test]
async fn websockets_pass_through_the_tls_listener() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_rustls::rustls;
    use tokio_tungstenite::tungstenite::Message;
    let app = EchoApp::start("app").await;
    let (gk, cert) = start_https(app.addr, "").await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.der.clone()))
        .unwrap();
    // A browser opens WebSockets over HTTP/1.1 (gaitkeeper offers no RFC 8441 over h2).
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gk.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/ws", gk.addr.port());
    let (mut ws, response) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("the WebSocket handshake passes through the TLS listener");
    assert_eq!(response.status(), 101);
    for text in ["over tls", &"y".repeat(70_000)] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    assert_eq!(app.last().header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn certificates_are_rotated_without_a_restart_or_a_failed_request() {
    let app = EchoApp::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(dir.path(), "first", &["localhost"], 90);
    // The next one expires within 14 days: gaitkeeper warns and exports the time left.
    let second = make_cert(dir.path(), "second", &["localhost"], 7);
    let live_cert = dir.path().join("live-cert.pem");
    let live_key = dir.path().join("live-key.pem");
    replace_file(&first.cert, &live_cert);
    replace_file(&first.key, &live_key);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = format!(
        "  - address: \"{addr}\"\n    tls: {{ cert_file: {:?}, key_file: {:?} }}\n",
        live_cert.display().to_string(),
        live_key.display().to_string()
    );
    let text = config(&listen, admin, dir.path(), app.addr, "", "");
    let gk = Gaitkeeper::start_in(dir, addr, admin, true, &text).await;
    let roots = [&first, &second];
    assert_eq!(served_certificate(addr, &roots).await, first.der);
    let expiry = format!(
        "gaitkeeper_tls_cert_expiry_seconds{{cert=\"{}\"}}",
        live_cert.display()
    );
    assert!(gk.metric(&expiry).await > 80.0 * 86_400.0);

    // Requests on fresh connections all through the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let client = reqwest::Client::builder()
            .resolve("localhost", addr)
            .pool_max_idle_per_host(0)
            .add_root_certificate(reqwest::Certificate::from_pem(first.pem.as_bytes()).unwrap())
            .add_root_certificate(reqwest::Certificate::from_pem(second.pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let url = format!("https://localhost:{}/during-swap", addr.port());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                sent.fetch_add(1, Ordering::SeqCst);
                let ok = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if !ok {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    eventually(
        Duration::from_secs(5),
        "requests before the swap",
        || async { sent.load(Ordering::SeqCst) >= 5 },
    )
    .await;
    replace_file(&second.cert, &live_cert);
    replace_file(&second.key, &live_key);
    eventually(
        Duration::from_secs(10),
        "the new certificate served",
        || async { served_certificate(addr, &roots).await == second.der },
    )
    .await;
    let at_swap = sent.load(Ordering::SeqCst);
    eventually(
        Duration::from_secs(5),
        "requests after the swap",
        || async { sent.load(Ordering::SeqCst) >= at_swap + 5 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no request failed during the swap ({} sent)",
        sent.load(Ordering::SeqCst)
    );
    let left = gk.metric(&expiry).await;
    assert!(left > 6.0 * 86_400.0 && left < 8.0 * 86_400.0, "{left}");
    assert!(gk.log().contains("expires within 14 days"), "{}", gk.log());

    // A broken key: the certificate in service stays, the error is counted and logged.
    let errors = "gaitkeeper_tls_cert_reloads_total{result=\"error\"}";
    let before = gk.metric(errors).await;
    let garbage = gk.dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    replace_file(&garbage, &live_key);
    eventually(Duration::from_secs(10), "the bad key noticed", || async {
        gk.metric(errors).await > before
    })
    .await;
    assert_eq!(served_certificate(addr, &roots).await, second.der);
    assert!(gk.log().contains("not reloaded"), "{}", gk.log());
    let r = https_client(&roots, addr, None)
        .get(format!("https://localhost:{}/still-up", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // SIGHUP reloads too, here back to a good pair.
    replace_file(&first.key, &live_key);
    replace_file(&first.cert, &live_cert);
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &gk.pid().to_string()])
        .status();
    eventually(
        Duration::from_secs(10),
        "the first certificate back",
        || async { served_certificate(addr, &roots).await == first.der },
    )
    .await;
}

/// Config of the regulation checks: logins without telemetry go to the app, three failures
/// from one address ban it.
const REGULATED: &str = "policy:\n  on_missing_telemetry: allow\nregulation:\n  max_failures_per_user: 1000\n  max_failures_per_ip: 3\n  action: block\n";

/// Three failed logins as alice from `bad`, then the right password from `bad` (refused)
/// and from `good` (logged in), each client made by `client_from`, through `base`.
async fn ban_one_address_not_the_other(
    gk: &Gaitkeeper,
    app: &LegacyApp,
    base: &str,
    client_from: impl Fn(IpAddr) -> reqwest::Client,
    bad: IpAddr,
    good: IpAddr,
) {
    let attacker = client_from(bad);
    for _ in 0..3 {
        let page = login_page_at(&attacker, base).await;
        let r = submit_at(&attacker, base, &page, ALICE.0, "not-her-password", None).await;
        assert_ne!(
            location(&r),
            "/account",
            "a wrong password fails at the app"
        );
    }
    eventually(Duration::from_secs(10), "failures counted", || async {
        gk.metric(
            "gaitkeeper_login_outcomes_total{app=\"default\",outcome=\"failed\",route=\"login\"}",
        )
        .await
            >= 3.0
    })
    .await;
    let page = login_page_at(&attacker, base).await;
    let r = submit_at(&attacker, base, &page, ALICE.0, ALICE.1, None).await;
    assert_eq!(r.status(), 403, "the banned address is refused");

    let user = client_from(good);
    let page = login_page_at(&user, base).await;
    let r = submit_at(&user, base, &page, ALICE.0, ALICE.1, None).await;
    assert_eq!(location(&r), "/account", "another address logs in");
    let seen = app.last_login().await;
    assert_eq!(seen["headers"]["x-forwarded-for"], good.to_string());

    let names =
        |trail: &str, address: IpAddr| trail.contains(&format!("\"client_ip\":\"{address}\""));
    eventually(
        Duration::from_secs(10),
        "both clients in the audit trail",
        || async {
            let (ok, trail) = gk.audit(&["tail", "--lines", "50"]);
            ok && names(&trail, bad) && names(&trail, good)
        },
    )
    .await;
}

#[tokio::test]
async fn behind_nginx_terminating_tls_the_client_is_the_one_nginx_names() {
    let app = LegacyApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let gk_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // The documented topology's own files (config/deploy/), with the test's addresses.
    let text = crate::deploy::test_yaml(
        "behind-nginx.yaml",
        dir.path(),
        &[
            ("127.0.0.1:8080", gk_addr.to_string()),
            ("127.0.0.1:8001", app.addr.to_string()),
        ],
        admin,
        REGULATED,
    );
    let cert = make_cert(dir.path(), "nginx", &["localhost"], 90);
    let conf = crate::deploy::deploy_file(
        "nginx-tls-terminator.conf",
        &[
            ("server 127.0.0.1:8080;", format!("server {gk_addr};")),
            (
                "/etc/nginx/tls/intranet.pem",
                cert.cert.display().to_string(),
            ),
            (
                "/etc/nginx/tls/intranet.key",
                cert.key.display().to_string(),
            ),
        ],
    );
    let nginx = Balancer::nginx(dir.path(), |port| {
        conf.replace(
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{port} ssl http2;"),
        )
    })
    .await;
    let gk = Gaitkeeper::start_in(dir, gk_addr, admin, false, &text).await;
    let base = format!("https://localhost:{}", nginx.addr.port());
    let bad: IpAddr = "127.0.0.2".parse().unwrap();
    let good: IpAddr = "127.0.0.3".parse().unwrap();
    ban_one_address_not_the_other(
        &gk,
        &app,
        &base,
        |from| https_client(&[&cert], nginx.addr, Some(from)),
        bad,
        good,
    )
    .await;
    assert_eq!(
        app.last_login().await["headers"]["x-forwarded-proto"],
        "https",
        "the app is told the client used HTTPS"
    );
}

#[tokio::test]
async fn forged_forwarding_headers_from_an_untrusted_peer_change_nothing() {
    let app = LegacyApp::start().await;
    // No trusted_proxies: the TCP peer is the client, whatever it claims.
    let gk = Gaitkeeper::start_with(app.addr, "", &format!("{LEGACY_ROUTES}{REGULATED}")).await;
    let base = gk.url("");
    let forger = |from: IpAddr| {
        let mut headers = reqwest::header::HeaderMap::new();
        let n = u8::from(from.to_string().ends_with(".3"));
        headers.insert(
            "x-forwarded-for",
            format!("198.51.100.{n}").parse().unwrap(),
        );
        headers.insert(
            "forwarded",
            format!("for=198.51.100.{n};proto=https").parse().unwrap(),
        );
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .local_address(Some(from))
            .default_headers(headers)
            .build()
            .unwrap()
    };
    ban_one_address_not_the_other(
        &gk,
        &app,
        &base,
        forger,
        "127.0.0.2".parse().unwrap(),
        "127.0.0.3".parse().unwrap(),
    )
    .await;
    let seen = app.last_login().await;
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert!(seen["headers"]["forwarded"].is_null(), "{seen}");
}

#[tokio::test]
async fn haproxy_proxy_protocol_v2_names_the_client_over_tls() {
    let app = LegacyApp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "site", &["localhost"], 90);
    let gk_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let listen = format!(
        "  - address: \"{gk_addr}\"\n    tls: {{ cert_file: {:?}, key_file: {:?} }}\n    proxy_protocol: true\n",
        cert.cert.display().to_string(),
        cert.key.display().to_string()
    );
    let text = config(
        &listen,
        admin,
        dir.path(),
        app.addr,
        "  trusted_proxies: [\"127.0.0.1\"]\n",
        &format!("{LEGACY_ROUTES}{REGULATED}"),
    );
    let haproxy = Balancer::haproxy(dir.path(), |port| {
        format!(
            "frontend edge\n  mode tcp\n  bind 127.0.0.1:{port}\n  default_backend gaitkeeper\nbackend gaitkeeper\n  mode tcp\n  server gk {gk_addr} send-proxy-v2\n"
        )
    })
    .await;
    let gk = Gaitkeeper::start_in(dir, gk_addr, admin, true, &text).await;
    let base = format!("https://localhost:{}", haproxy.addr.port());
    ban_one_address_not_the_other(
        &gk,
        &app,
        &base,
        |from| https_client(&[&cert], haproxy.addr, Some(from)),
        "127.0.0.2".parse().unwrap(),
        "127.0.0.3".parse().unwrap(),
    )
    .await;
    assert_eq!(
        app.last_login().await["headers"]["x-forwarded-proto"],
        "https"
    );

    // A peer that is not trusted cannot speak to the PROXY-protocol listener at all.
    let direct = https_client(&[&cert], gk_addr, Some("127.0.0.4".parse().unwrap()));
    assert!(
        direct
            .get(format!("https://localhost:{}/login", gk_addr.port()))
            .send()
            .await
            .is_err(),
        "a direct connection from an untrusted peer is dropped"
    );
    assert!(
        gk.log().contains("not in server.trusted_proxies"),
        "{}",
        gk.log()
    );
}
