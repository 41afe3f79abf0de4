//! Test harness: a real echo app on 127.0.0.1 and the real `gaitkeeper` binary in front of it.
//! Everything binds to 127.0.0.1 on free ports; readiness is polled with a deadline, never
//! waited for with a fixed sleep.
#![allow(dead_code)]

pub mod apps;
pub mod balancers;
pub mod behaviour;
pub mod db;
pub mod legacy;
pub mod receiver;
pub mod webdriver;

use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";
/// The User-Agent every test client sends (page tokens are bound to it).
pub const USER_AGENT: &str = "capture-test/1.0";

/// An HTTP client that shows redirects instead of following them.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
        .unwrap()
}

/// Writes a secret file the way an operator must: readable by its owner only (gaitkeeper
/// refuses a secret file others can read).
pub fn write_secret(path: &Path, value: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, value).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A port that was free a moment ago and that no other test of this run was given: the
/// kernel hands a just-closed ephemeral port out again, so two calls in a row could name the
/// same port (once gave the admin and the public listener one port).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What the echo app saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A small HTTP/1.1 app that records every request and answers:
/// - `/slow/MS`: waits MS milliseconds, then answers;
/// - `/bytes/N`: N bytes of a known pattern;
/// - `/ws`: a WebSocket echo;
/// - anything else: 200 with the body `<name> <method> <target> <body length>`.
pub struct EchoApp {
    pub addr: SocketAddr,
    pub name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoApp {
    pub async fn start(name: &str) -> EchoApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (task_seen, task_name, task_conns) =
            (seen.clone(), name.to_string(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                task_conns.fetch_add(1, Ordering::SeqCst);
                let (seen, name) = (task_seen.clone(), task_name.clone());
                tokio::spawn(async move {
                    let _ = serve_connection(stream, seen, name).await;
                });
            }
        });
        EchoApp {
            addr,
            name: name.to_string(),
            seen,
            connections,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().last().cloned().expect("the app saw no request")
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    name: String,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(i) = find(&buffer, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let mut header_slots = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut header_slots);
        request
            .parse(&buffer[..head_end])
            .map_err(std::io::Error::other)?;
        let method = request.method.unwrap_or("").to_string();
        let target = request.path.unwrap_or("").to_string();
        let headers: Vec<(String, String)> = request
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        buffer.drain(..head_end);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if let Some(length) = get("content-length") {
            let length: usize = length.trim().parse().unwrap_or(0);
            while buffer.len() < length {
                let mut chunk = vec![0u8; 64 * 1024];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buffer.extend_from_slice(&chunk[..n]);
            }
            buffer.drain(..length).collect()
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            read_chunked(&mut stream, &mut buffer).await?
        } else {
            Vec::new()
        };
        let record = Seen {
            method: method.clone(),
            target: target.clone(),
            headers: headers.clone(),
            body: body.clone(),
        };
        seen.lock().unwrap().push(record);

        if get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
            let key = get("sec-websocket-key").unwrap_or_default();
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            stream.write_all(response.as_bytes()).await?;
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                stream,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            use futures_util::{SinkExt, StreamExt};
            while let Some(Ok(message)) = ws.next().await {
                if message.is_text() || message.is_binary() {
                    ws.send(message).await.map_err(std::io::Error::other)?;
                }
            }
            return Ok(());
        }

        if let Some(kind) = target.strip_prefix("/page/") {
            let (head, body) = login_page_response(kind, &method);
            stream.write_all(&head).await?;
            stream.write_all(&body).await?;
            continue;
        }
        let (status, response_body) = if let Some(ms) = target.strip_prefix("/slow/") {
            let ms: u64 = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (200, format!("{name} slow {ms}").into_bytes())
        } else if let Some(n) = target.strip_prefix("/bytes/") {
            let n: usize = n.parse().unwrap_or(0);
            (200, pattern(n))
        } else {
            (
                200,
                format!("{name} {method} {target} {}", body.len()).into_bytes(),
            )
        };
        let head = format!(
            "HTTP/1.1 {status} OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-echo-app: {name}\r\n\r\n",
            response_body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        if method != "HEAD" {
            stream.write_all(&response_body).await?;
        }
    }
}

/// The HTML login page the capture tests inject into.
pub const LOGIN_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in</title></head><body><form method=\"post\" action=\"/login\"><input name=\"username\"><input type=\"password\" name=\"password\"><input type=\"hidden\" name=\"csrf_token\" value=\"c5rf\"><button>Sign in</button></form></body></html>";

/// `/page/KIND` responses: the login page in various codings and framings.
fn login_page_response(kind: &str, method: &str) -> (Vec<u8>, Vec<u8>) {
    use std::io::Write as _;
    let page = LOGIN_PAGE.as_bytes();
    let (extra, body): (String, Vec<u8>) = match kind {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(page).unwrap();
            ("content-encoding: gzip\r\n".into(), e.finish().unwrap())
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(page).unwrap();
            ("content-encoding: deflate\r\n".into(), e.finish().unwrap())
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(page).unwrap();
            }
            ("content-encoding: br\r\n".into(), out)
        }
        "csp" => (
            "content-security-policy: default-src 'self'; script-src 'nonce-r4nd0m' 'strict-dynamic'\r\n".into(),
            page.to_vec(),
        ),
        "big" => {
            let mut big = String::from("<html><head><title>big</title></head><body>");
            while big.len() < 2_000_000 {
                big.push_str("<p>filler paragraph for a very large login page</p>\n");
            }
            big.push_str("</body></html>");
            (String::new(), big.into_bytes())
        }
        _ => (String::new(), page.to_vec()),
    };
    let content_type = if kind == "json" {
        "application/json"
    } else {
        "text/html; charset=utf-8"
    };
    let status = if kind == "304" {
        "304 Not Modified"
    } else {
        "200 OK"
    };
    let send_body = method != "HEAD" && kind != "304";
    if kind == "chunked" {
        let mut chunked = Vec::new();
        for piece in body.chunks(37) {
            chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            chunked.extend_from_slice(piece);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let head = format!("HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\netag: \"v1\"\r\n\r\n");
        return (
            head.into_bytes(),
            if send_body { chunked } else { Vec::new() },
        );
    }
    let length = if kind == "304" {
        String::new()
    } else {
        format!("content-length: {}\r\n", body.len())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{length}{extra}etag: \"v1\"\r\n\r\n"
    );
    (head.into_bytes(), if send_body { body } else { Vec::new() })
}

async fn read_chunked(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(buffer, b"\r\n") {
                break i;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(body);
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let size_text = String::from_utf8_lossy(&buffer[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .map_err(std::io::Error::other)?;
        buffer.drain(..line_end + 2);
        while buffer.len() < size + 2 {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(body);
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        body.extend_from_slice(&buffer[..size]);
        buffer.drain(..size + 2);
        if size == 0 {
            return Ok(body);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `n` bytes of a repeating, position-dependent pattern, to check streamed bodies exactly.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// The `capture:` block every harness config gets unless the test sets its own.
pub const HARNESS_CAPTURE: &str = "capture:\n  timeline_slack: 1h\n";

/// The real `gaitkeeper run` process with a config in a temp dir; killed on drop.
pub struct Gaitkeeper {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// The first listener serves HTTPS.
    pub https: bool,
    child: Child,
}

impl Drop for Gaitkeeper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gaitkeeper")
}

/// `gaitkeeper ARGS…` with the test secret in its environment: (success, standard output,
/// standard error).
pub fn run_cli<I, S>(args: I) -> (bool, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = std::process::Command::new(binary())
        .args(args)
        .env("GK_TEST_SECRET", SECRET)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config for `upstream` on fresh ports; `extra` is appended as more YAML.
pub fn config_text(
    proxy: SocketAddr,
    admin: SocketAddr,
    data_dir: &Path,
    upstream: SocketAddr,
    upstream_extra: &str,
) -> String {
    format!(
        "listen: [\"{proxy}\"]\nupstream:\n  address: \"{upstream}\"\n{upstream_extra}admin:\n  listen: \"{admin}\"\n  debug_telemetry: true\nserver:\n  threads: 2\n  data_dir: {data_dir:?}\nlogging:\n  format: json\nsecrets:\n  key: {{ env: GK_TEST_SECRET }}\n",
        data_dir = data_dir.display().to_string()
    )
}

impl Gaitkeeper {
    /// Starts gaitkeeper in front of `upstream`; `upstream_extra` holds more `upstream:` keys
    /// (each line indented by two spaces).
    pub async fn start(upstream: SocketAddr, upstream_extra: &str) -> Gaitkeeper {
        Self::start_with(upstream, upstream_extra, "").await
    }

    /// Like `start`, with more top-level YAML (`routes:`, `capture:`) appended.
    pub async fn start_with(upstream: SocketAddr, upstream_extra: &str, more: &str) -> Gaitkeeper {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        // Generated logins are posted the moment their page arrives, claiming seconds of
        // typing: the harness allows any timeline. A test that sets `capture:` itself must
        // say what it wants (the timeline tests set a real slack).
        let capture = if more.starts_with("capture:") || more.contains("\ncapture:") {
            assert!(
                more.contains("timeline_slack"),
                "a test's own `capture:` block must set timeline_slack (the harness default is 1h)"
            );
            ""
        } else {
            HARNESS_CAPTURE
        };
        let text = config_text(
            addr,
            admin,
            &dir.path().join("data"),
            upstream,
            upstream_extra,
        ) + capture
            + more;
        Self::start_in(dir, addr, admin, false, &text).await
    }

    /// Starts gaitkeeper with the whole config `text`, which must listen on `addr` and
    /// `admin`; its files may live in `dir`. Its URLs are https:// when `https` (`addr`'s
    /// listener has `tls`).
    pub async fn start_in(
        dir: tempfile::TempDir,
        addr: SocketAddr,
        admin: SocketAddr,
        https: bool,
        text: &str,
    ) -> Gaitkeeper {
        let config_path = dir.path().join("gaitkeeper.yaml");
        std::fs::write(&config_path, text).unwrap();
        let log = std::fs::File::create(dir.path().join("gaitkeeper.log")).unwrap();
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(&config_path)
            .env("GK_TEST_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let gk = Gaitkeeper {
            dir,
            config_path,
            addr,
            admin,
            https,
            child,
        };
        gk.wait_ready().await;
        gk
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let admin_up = reqwest::get(format!("http://{}/readyz", self.admin))
                .await
                .is_ok_and(|r| r.status() == 200);
            let proxy_up = TcpStream::connect(self.addr).await.is_ok();
            if admin_up && proxy_up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gaitkeeper did not become ready; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.addr, path)
    }

    /// GETs `path` through gaitkeeper and returns the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        client()
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gaitkeeper.log")).unwrap_or_default()
    }

    /// `gaitkeeper audit ARGS…` on this proxy's store while it runs: (success, stdout).
    pub fn audit(&self, args: &[&str]) -> (bool, String) {
        let mut all = vec![
            "audit".into(),
            "--config".into(),
            self.config_path.clone().into_os_string(),
        ];
        all.extend(args.iter().map(std::ffi::OsString::from));
        let (ok, stdout, _) = run_cli(all);
        (ok, stdout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Replaces the config file the way editors do: write a temp file, then rename over it.
    pub fn rewrite_config(&self, text: &str) {
        let tmp = self.dir.path().join(".gaitkeeper.yaml.tmp");
        let mut file = std::fs::File::create(&tmp).unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file.sync_all().unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one metric sample line, e.g. `gaitkeeper_config_reloads_total{result="ok"}`.
    /// A sample of a labelled metric that has not happened yet is 0; a metric or label that
    /// gaitkeeper does not define, or a value that does not parse, fails the test (a renamed
    /// metric must not read as a quiet 0).
    pub async fn metric(&self, sample: &str) -> f64 {
        assert_defined_metric(sample);
        let text = self.metrics().await;
        let found = text.lines().find_map(|l| {
            let value = l.strip_prefix(sample)?.strip_prefix(' ')?;
            Some(value.trim().parse::<f64>().unwrap_or_else(|e| {
                panic!("metric sample {sample}: {value:?} is not a number: {e}")
            }))
        });
        match found {
            Some(value) => value,
            None if sample.contains('{') => 0.0,
            None => panic!("no sample {sample} on the admin listener:\n{text}"),
        }
    }
}

/// A TLS app with a self-signed certificate for `localhost`: answers every request with
/// `tls-app <method> <target> sni=<server name the client sent>`.
pub struct TlsApp {
    pub addr: SocketAddr,
    /// The certificate in PEM, to use as the CA file.
    pub cert_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsApp {
    pub async fn start() -> TlsApp {
        use tokio_rustls::rustls;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert_pem = certified.cert.pem();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().unwrap_or("none").to_string();
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let mut words = text.split_whitespace();
                    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    let body = format!("tls-app {method} {target} sni={sni}");
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TlsApp {
            addr,
            cert_pem,
            task,
        }
    }
}

impl Gaitkeeper {
    /// The recent login telemetry as gaitkeeper recorded it (admin `/debug/telemetry`).
    pub async fn telemetry(&self) -> Vec<serde_json::Value> {
        reqwest::get(format!("http://{}/debug/telemetry", self.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// What gaitkeeper recorded of the last login's telemetry (`ok` or a reason code).
    pub async fn last_telemetry_outcome(&self) -> String {
        self.telemetry()
            .await
            .last()
            .and_then(|t| t["outcome"].as_str())
            .unwrap_or("")
            .to_string()
    }
}

/// URL-safe base64 without padding (page tokens, the telemetry header).
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Routes for the echo app's `/page/*` login pages, submitting to `/login` (form) and
/// `/api/login` (fetch); in shadow mode, so every login reaches the app whatever its telemetry.
pub const ROUTES: &str = "routes:\n  - name: login\n    page: { paths: [\"/page/*\"], methods: [GET, HEAD] }\n    submit: { path: \"/login\" }\n  - name: api\n    page: { paths: [\"/spa\"] }\n    submit: { path: \"/api/login\" }\npolicy:\n  mode: shadow\n";

/// Fails unless `sample` names a metric, and labels, that `src/metrics.rs` defines.
pub fn assert_defined_metric(sample: &str) {
    const DEFINED: &str = include_str!("../../../src/metrics.rs");
    let (family, labels) = sample.split_once('{').unwrap_or((sample, ""));
    let base = family
        .strip_prefix("gaitkeeper_")
        .unwrap_or_else(|| panic!("{sample}: gaitkeeper's metrics start with gaitkeeper_"));
    let base = ["_count", "_sum", "_bucket"]
        .iter()
        .find_map(|suffix| {
            base.strip_suffix(suffix)
                .filter(|b| DEFINED.contains(&format!("\"{b}\"")))
        })
        .unwrap_or(base);
    assert!(
        DEFINED.contains(&format!("\"{base}\"")),
        "{sample}: src/metrics.rs defines no metric {base:?}"
    );
    for pair in labels
        .trim_end_matches('}')
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let key = pair.split('=').next().unwrap_or("");
        assert!(
            DEFINED.contains(&format!("\"{key}\"")),
            "{sample}: src/metrics.rs defines no label {key:?}"
        );
    }
}

/// `text` with every `from` replaced by `to`. Fails the test when `from` is not there: an edit
/// that silently did nothing would test the unedited config.
pub fn edited(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the text to edit has no {from:?}:\n{text}"
    );
    text.replace(from, to)
}

/// The name libtest knows a test of this binary by, for re-running it in a child process:
/// `test_path(module_path!(), "crash_child")` is `audit::crash_child` inside `audit`.
pub fn test_path(module: &str, test: &str) -> String {
    let module = module.split_once("::").map_or("", |(_crate, path)| path);
    if module.is_empty() {
        test.to_string()
    } else {
        format!("{module}::{test}")
    }
}
