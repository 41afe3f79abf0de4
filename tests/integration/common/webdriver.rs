//! A minimal W3C WebDriver client over HTTP, enough to drive headless Chromium through
//! Debian's `chromedriver`: sessions, navigation, script execution, elements and input
//! actions with exact pauses (so tests know the dwell and flight times they typed).
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::behaviour::HUMAN_VARIATION;

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver, killed on drop.
pub struct ChromeDriver {
    child: Child,
    pub url: String,
    http: reqwest::Client,
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where Debian puts Chromium and its driver (`apt-get install chromium chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

impl ChromeDriver {
    pub async fn start() -> ChromeDriver {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: install it with `apt-get install -y chromium chromium-driver` (scripts/test.sh does)"
            );
        }
        let port = super::free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.url))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    /// A new headless Chromium session with a fresh profile.
    pub async fn session(&self, profile: &std::path::Path) -> Session {
        self.session_with(profile, &[]).await
    }

    /// A new session with more command-line switches for Chromium (e.g. to accept a test
    /// certificate).
    pub async fn session_with(&self, profile: &std::path::Path, extra: &[&str]) -> Session {
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-quic".into(),
            "--window-size=1200,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
            }
        }}});
        let response: Value = self
            .http
            .post(format!("{}/session", self.url))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {response}"))
            .to_string();
        Session {
            base: format!("{}/session/{id}", self.url),
            http: self.http.clone(),
        }
    }
}

/// One browser session.
pub struct Session {
    base: String,
    http: reqwest::Client,
}

impl Session {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request.send().await.unwrap().json().await.unwrap();
        if let Some(error) = response["value"].get("error") {
            panic!(
                "WebDriver {path} failed: {error} {}",
                response["value"]["message"]
            );
        }
        response["value"].clone()
    }

    /// Adds a virtual platform authenticator (WebDriver's WebAuthn extension) that verifies
    /// the user and consents at once; returns its id.
    pub async fn add_virtual_authenticator(&self) -> String {
        self.call(
            reqwest::Method::POST,
            "/webauthn/authenticator",
            Some(json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserConsenting": true,
                "isUserVerified": true
            })),
        )
        .await
        .as_str()
        .expect("an authenticator id")
        .to_string()
    }

    /// The credentials the virtual authenticator `id` holds.
    pub async fn virtual_credentials(&self, id: &str) -> Vec<Value> {
        let path = format!("/webauthn/authenticator/{id}/credentials");
        match self.call(reqwest::Method::GET, &path, None).await {
            Value::Array(credentials) => credentials,
            _ => Vec::new(),
        }
    }

    /// Removes the virtual authenticator `id` (its credentials go with it).
    pub async fn remove_virtual_authenticator(&self, id: &str) {
        let path = format!("/webauthn/authenticator/{id}");
        self.call(reqwest::Method::DELETE, &path, None).await;
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Runs `script` with `args` (a JSON array, `arguments` in the script).
    pub async fn execute_with(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The element reference for a CSS selector.
    pub async fn element(&self, css: &str) -> Value {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        json!({ ELEMENT_KEY: found[ELEMENT_KEY] })
    }

    /// Runs W3C input action sources (`[{"type":"key",...},{"type":"pointer",...}]`).
    pub async fn actions(&self, sources: Value) {
        self.call(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": sources})),
        )
        .await;
    }

    /// Console messages logged by the page (Chromium's `goog:loggingPrefs`).
    pub async fn console_errors(&self) -> Vec<String> {
        let logs = self
            .http
            .post(format!("{}/se/log", self.base))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        logs["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls a JavaScript expression until it is truthy.
    pub async fn wait_for(&self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let value = self.execute(&format!("return !!({expression});")).await;
            if value == Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Saves a PNG of the window under the tests' scratch folder (`target/tmp/screenshots/`)
    /// and returns its path: the browser tests keep what a person would see, to look at.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        use base64::Engine as _;
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("a base64 screenshot"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let folder = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The handles of the session's open windows.
    pub async fn window_handles(&self) -> Vec<String> {
        let handles = self
            .call(reqwest::Method::GET, "/window/handles", None)
            .await;
        handles
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The handle of the window commands go to.
    pub async fn window_handle(&self) -> String {
        let handle = self.call(reqwest::Method::GET, "/window", None).await;
        handle.as_str().unwrap_or("").to_string()
    }

    pub async fn switch_to_window(&self, handle: &str) {
        self.call(
            reqwest::Method::POST,
            "/window",
            Some(json!({ "handle": handle })),
        )
        .await;
    }

    /// Clicks at a point of the viewport with the mouse (for elements a CSS selector cannot
    /// reach, such as those in a shadow root).
    pub async fn click_at(&self, x: i64, y: i64) {
        self.actions(json!([{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": [
            {"type": "pointerMove", "duration": 150, "x": x, "y": y, "origin": "viewport"},
            {"type": "pointerDown", "button": 0},
            {"type": "pause", "duration": 80},
            {"type": "pointerUp", "button": 0},
        ]}]))
        .await;
    }

    /// Resizes the window (CSS pixels), e.g. to a phone's 375 px width.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    pub async fn quit(&self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

/// Key actions typing `text` the way a person does: each key's hold and the gap after it vary
/// around `dwell_ms` and `flight_ms` ([`super::behaviour::HUMAN_VARIATION`], starting at `offset`). Returns the
/// actions and the played holds and gaps, key by key.
pub fn human_typing(
    text: &str,
    dwell_ms: u64,
    flight_ms: u64,
    offset: usize,
) -> (Vec<Value>, Vec<u64>, Vec<u64>) {
    let (mut actions, mut dwells, mut flights) = (Vec::new(), Vec::new(), Vec::new());
    for (i, c) in text.chars().enumerate() {
        let vary = |base: u64, k: usize| {
            (base as f64 * HUMAN_VARIATION[(offset + k) % HUMAN_VARIATION.len()]).round() as u64
        };
        let (dwell, flight) = (vary(dwell_ms, 2 * i), vary(flight_ms, 2 * i + 1));
        actions.push(json!({"type": "keyDown", "value": c.to_string()}));
        actions.push(json!({"type": "pause", "duration": dwell}));
        actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        actions.push(json!({"type": "pause", "duration": flight}));
        dwells.push(dwell);
        flights.push(flight);
    }
    (actions, dwells, flights)
}

/// Key actions typing `text` with exact dwell (down→up) and flight (up→next down) times: a
/// machine's rhythm (gaitkeeper flags it as synthetic), for pages it does not capture.
pub fn typing(text: &str, dwell_ms: u64, flight_ms: u64) -> Vec<Value> {
    let mut actions = Vec::new();
    for c in text.chars() {
        actions.push(json!({"type": "keyDown", "value": c.to_string()}));
        actions.push(json!({"type": "pause", "duration": dwell_ms}));
        actions.push(json!({"type": "keyUp", "value": c.to_string()}));
        actions.push(json!({"type": "pause", "duration": flight_ms}));
    }
    actions
}

/// True once the capture script shows gaitkeeper's challenge over the page (its overlay,
/// `[data-gaitkeeper]`) with the cursor in the code field of the framed challenge page.
pub const CODE_FIELD_FOCUSED: &str = "(() => { const h = document.querySelector('[data-gaitkeeper]'); const f = h && h.shadowRoot && h.shadowRoot.querySelector('iframe'); const d = f && f.contentDocument; return !!(d && d.activeElement && d.activeElement.id === 'code' && document.activeElement === h); })()";

/// The WebDriver key values for Tab and Enter.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

/// Moves the mouse along a curve to the username field, speeding up and slowing down as a
/// hand does, and clicks it.
pub async fn move_and_click(session: &Session, css: &str) {
    let target = session.element(css).await;
    let mut moves =
        vec![json!({"type": "pointerMove", "duration": 0, "x": 40, "y": 40, "origin": "viewport"})];
    for step in 1..=12 {
        let f = step as f64 / 12.0;
        // Minimum-jerk progress along the curve, at an irregular pace.
        let s = 10.0 * f.powi(3) - 15.0 * f.powi(4) + 6.0 * f.powi(5);
        moves.push(json!({
            "type": "pointerMove", "duration": 30 + (step * 7) % 23, "origin": "viewport",
            "x": (40.0 + 300.0 * s) as i64, "y": (40.0 + 120.0 * s * s) as i64,
        }));
    }
    moves.push(json!({"type": "pointerMove", "duration": 120, "x": 0, "y": 0, "origin": target}));
    moves.push(json!({"type": "pointerDown", "button": 0}));
    moves.push(json!({"type": "pause", "duration": 90}));
    moves.push(json!({"type": "pointerUp", "button": 0}));
    session
        .actions(json!([{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": moves}]))
        .await;
}

/// Presses Enter, which submits the form.
pub async fn press_enter(session: &Session) {
    session
        .actions(json!([{"type": "key", "id": "keyboard", "actions": typing(ENTER, 50, 0)}]))
        .await;
}

pub async fn wait_for_url(session: &Session, suffix: &str) {
    wait_for_url_where(session, suffix, |url| url.ends_with(suffix)).await
}

pub async fn wait_for_url_where(session: &Session, what: &str, test: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if test(&session.current_url().await) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never reached {what}: at {}",
            session.current_url().await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
