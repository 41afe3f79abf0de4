//! `legacy-app`: the bundled demo "legacy" web application.
//!
//! This is a stand-in for the operator's existing, server-rendered web app: a
//! small intranet with a classic HTML login form (no JavaScript), a session
//! cookie, an account page, and a second "single-page app" style login that
//! posts JSON to `/api/login`. It is deliberately ordinary and knows nothing
//! about any proxy that may sit in front of it; demos and integration tests
//! run it as the upstream so the proxy can be exercised against an app that is
//! left completely unchanged.
//!
//! Routes:
//!
//! | method     | path                 | what                                          |
//! |------------|----------------------|-----------------------------------------------|
//! | GET        | `/`                  | home page                                     |
//! | GET        | `/login`             | login form (sets the `legacy_csrf` cookie)    |
//! | POST       | `/login`             | form login, 303 to `/account` on success      |
//! | GET        | `/account`           | needs a session, else 303 to `/login`         |
//! | POST       | `/logout`            | drops the session, 303 to `/login`            |
//! | GET        | `/spa-login`         | login page that submits JSON with `fetch`     |
//! | POST       | `/api/login`         | JSON login                                    |
//! | GET        | `/__debug/last-login`| only with `--debug-endpoints`                 |
//!
//! `HEAD` is accepted wherever `GET` is. Everything is in memory and bounded:
//! request bodies over 64 KiB get 413 and at most 10,000 sessions are kept
//! (the oldest is dropped first). The demo accounts and their passwords are
//! hard-coded and printed at start-up: this is a demo, not a real app.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use clap::Parser;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::Serialize;
use serde_json::Value;
use tiny_http::{Header, Method, Request, Response, Server};

const APP_NAME: &str = "Acme Intranet (legacy)";
/// Largest request body the app accepts.
const MAX_BODY: usize = 64 * 1024;
/// Largest number of live sessions; the oldest is dropped beyond that.
const MAX_SESSIONS: usize = 10_000;
const SESSION_COOKIE: &str = "legacy_session";
const CSRF_COOKIE: &str = "legacy_csrf";
/// Length of a token: 16 random bytes, hex encoded.
const TOKEN_LEN: usize = 32;

/// The demo accounts: (username, password).
const USERS: &[(&str, &str)] = &[
    ("alice", "wonderland-42"),
    ("bob", "builder-2024"),
    ("carol", "carolina-77"),
];

#[derive(Parser, Debug)]
#[command(
    name = "legacy-app",
    version,
    about = "Demo legacy web app (server-rendered login) to put behind a reverse proxy"
)]
struct Args {
    /// Address to listen on (IP:PORT); nothing else is bound.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,

    /// Enable GET /__debug/last-login, which describes the last login request received.
    #[arg(long)]
    debug_endpoints: bool,

    /// Number of worker threads handling requests.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,
}

fn main() -> ExitCode {
    let args = Args::parse();

    let server = match Server::http(args.listen) {
        Ok(server) => Arc::new(server),
        Err(err) => {
            eprintln!("legacy-app: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let bound = server
        .server_addr()
        .to_ip()
        .map_or_else(|| args.listen.to_string(), |addr| addr.to_string());

    println!("legacy-app listening on http://{bound}");
    println!("demo users (username / password):");
    for (user, password) in USERS {
        println!("  {user} / {password}");
    }
    if args.debug_endpoints {
        println!("debug endpoints enabled: GET /__debug/last-login");
    }

    let app = Arc::new(App {
        debug_endpoints: args.debug_endpoints,
        sessions: Mutex::new(Sessions::default()),
        last_login: Mutex::new(None),
    });

    let mut workers = Vec::new();
    for i in 0..args.workers {
        let server = Arc::clone(&server);
        let app = Arc::clone(&app);
        let spawned = thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker(&server, &app));
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(err) => {
                eprintln!("legacy-app: cannot start worker thread: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    for handle in workers {
        // Workers only return if they panic outside request handling.
        let _ = handle.join();
    }
    ExitCode::FAILURE
}

/// One worker: take requests off the shared server forever.
fn worker(server: &Server, app: &App) {
    loop {
        match server.recv() {
            Ok(request) => {
                // A bug must cost one request, never the worker.
                let outcome = panic::catch_unwind(AssertUnwindSafe(|| handle(app, request)));
                if outcome.is_err() {
                    eprintln!("legacy-app: request handler panicked");
                }
            }
            Err(err) => eprintln!("legacy-app: receiving request failed: {err}"),
        }
    }
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

struct App {
    debug_endpoints: bool,
    sessions: Mutex<Sessions>,
    /// Last login request, kept only when debug endpoints are on.
    last_login: Mutex<Option<LoginRecord>>,
}

/// Live sessions: token -> user, with creation order for eviction.
#[derive(Default)]
struct Sessions {
    by_token: HashMap<String, (&'static str, u64)>,
    by_age: BTreeMap<u64, String>,
    next_seq: u64,
}

impl Sessions {
    fn create(&mut self, token: String, user: &'static str) {
        while self.by_token.len() >= MAX_SESSIONS {
            match self.by_age.pop_first() {
                Some((_, oldest)) => {
                    self.by_token.remove(&oldest);
                }
                None => break,
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_age.insert(seq, token.clone());
        self.by_token.insert(token, (user, seq));
    }

    fn user(&self, token: &str) -> Option<&'static str> {
        self.by_token.get(token).map(|(user, _)| *user)
    }

    fn remove(&mut self, token: &str) {
        if let Some((_, seq)) = self.by_token.remove(token) {
            self.by_age.remove(&seq);
        }
    }
}

/// What `/__debug/last-login` reports. Never holds a password or cookie.
#[derive(Serialize, Clone)]
struct LoginRecord {
    path: String,
    content_type: Option<String>,
    field_names: Vec<String>,
    username: Option<String>,
    body_len: usize,
    headers: BTreeMap<String, String>,
    method: String,
    /// The status the app answered with.
    status: u16,
}

/// Body of every `/api/login` answer, keys in this order.
#[derive(Serialize)]
struct ApiReply<'a> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl<'a> ApiReply<'a> {
    fn success(user: &'a str) -> Self {
        ApiReply {
            ok: true,
            user: Some(user),
            error: None,
        }
    }

    fn failure(error: &'a str) -> Self {
        ApiReply {
            ok: false,
            user: None,
            error: Some(error),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent
    // in a way that matters for a demo; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------
// Request handling
// ---------------------------------------------------------------------------

/// A response before it is handed to tiny_http.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn html(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "text/html; charset=utf-8".to_string())],
            body: body.into_bytes(),
        }
    }

    fn json<T: Serialize>(status: u16, value: &T) -> Reply {
        // Serialising these plain structs cannot fail; answer 500 if it ever does.
        let (status, body) = match serde_json::to_vec(value) {
            Ok(body) => (status, body),
            Err(_) => (500, b"null".to_vec()),
        };
        Reply {
            status,
            headers: vec![("Content-Type", "application/json".to_string())],
            body,
        }
    }

    fn redirect(location: &'static str) -> Reply {
        let body = page(
            "Redirect",
            &format!("<p>Continue to <a href=\"{location}\">{location}</a>.</p>"),
        );
        Reply::html(303, body).header("Location", location.to_string())
    }

    fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    fn no_store(self) -> Reply {
        self.header("Cache-Control", "no-store".to_string())
    }
}

fn handle(app: &App, mut request: Request) {
    let method = request.method().clone();
    let url = request.url();
    let path = url.split('?').next().unwrap_or("").to_string();

    let reply = route(app, &mut request, &method, &path);

    println!("{method} {} {}", printable(&path), reply.status);

    let mut response = Response::from_data(reply.body).with_status_code(reply.status);
    for (name, value) in &reply.headers {
        match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            Ok(header) => response.add_header(header),
            Err(()) => eprintln!("legacy-app: dropping unrepresentable header {name}"),
        }
    }
    if let Err(err) = request.respond(response) {
        eprintln!("legacy-app: sending response failed: {err}");
    }
}

fn route(app: &App, request: &mut Request, method: &Method, path: &str) -> Reply {
    // Refuse a declared oversized body on every route, before reading it.
    // (tiny_http 0.12 still drains the unread rest after we answer.)
    if request.body_length().is_some_and(|len| len > MAX_BODY) {
        return too_large();
    }
    let is_get = matches!(method, Method::Get | Method::Head);
    let is_post = matches!(method, Method::Post);

    match path {
        "/" if is_get => home_page(),
        "/login" if is_get => login_page(request),
        "/login" if is_post => login_submit(app, request),
        "/login" => method_not_allowed("GET, HEAD, POST"),
        "/account" if is_get => account_page(app, request),
        "/logout" if is_post => logout(app, request),
        "/logout" => method_not_allowed("POST"),
        "/spa-login" if is_get => spa_login_page(),
        "/api/login" if is_post => api_login(app, request),
        "/api/login" => method_not_allowed("POST"),
        "/__debug/last-login" if app.debug_endpoints && is_get => debug_last_login(app),
        "/__debug/last-login" if app.debug_endpoints => method_not_allowed("GET, HEAD"),
        "/" | "/account" | "/spa-login" => method_not_allowed("GET, HEAD"),
        _ => not_found(),
    }
}

fn home_page() -> Reply {
    let body = "<h2>Welcome</h2>\n\
        <p>Welcome to the Acme Corp intranet. Please sign in to continue.</p>\n\
        <ul>\n\
        <li><a href=\"/login\">Sign in</a></li>\n\
        <li><a href=\"/account\">My account</a></li>\n\
        <li><a href=\"/spa-login\">Sign in (new single-page version)</a></li>\n\
        </ul>\n";
    Reply::html(200, page("Home", body))
}

fn login_page(request: &Request) -> Reply {
    let existing = cookie(request, CSRF_COOKIE).filter(|token| is_token(token));
    let (token, fresh) = match existing {
        Some(token) => (token, false),
        None => match random_token() {
            Ok(token) => (token, true),
            Err(err) => return server_error(&err),
        },
    };
    let reply = Reply::html(200, login_form(&token, "", None)).no_store();
    if fresh {
        reply.header("Set-Cookie", cookie_header(CSRF_COOKIE, &token))
    } else {
        reply
    }
}

fn login_form(csrf_token: &str, username: &str, error: Option<&str>) -> String {
    let error = error
        .map(|msg| format!("<p class=\"error\">{}</p>\n", escape(msg)))
        .unwrap_or_default();
    let body = format!(
        "<h2>Sign in</h2>\n\
         {error}\
         <form method=\"post\" action=\"/login\">\n\
         <table class=\"form\">\n\
         <tr><td><label for=\"username\">Username:</label></td>\
         <td><input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" \
         size=\"24\" value=\"{username}\"></td></tr>\n\
         <tr><td><label for=\"password\">Password:</label></td>\
         <td><input type=\"password\" id=\"password\" name=\"password\" \
         autocomplete=\"current-password\" size=\"24\"></td></tr>\n\
         <tr><td></td><td><input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
         <input type=\"submit\" value=\"Sign in\"></td></tr>\n\
         </table>\n\
         </form>\n\
         <p class=\"small\">Forgot your password? Contact the help desk on extension 4357.</p>\n",
        username = escape(username),
        csrf = escape(csrf_token),
    );
    page("Sign in", &body)
}

fn login_submit(app: &App, request: &mut Request) -> Reply {
    let body = match read_body(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let content_type = header_value(request, "Content-Type");
    let fields = parse_form(&body);
    let username = form_field(&fields, "username");

    let reply = if media_type(content_type.as_deref()) != "application/x-www-form-urlencoded" {
        Reply::html(
            415,
            page(
                "Unsupported form encoding",
                "<h2>Unsupported form encoding</h2>\n<p>Please use the <a href=\"/login\">login page</a>.</p>\n",
            ),
        )
    } else {
        check_form_login(app, request, &fields)
    };

    record_login(
        app,
        request,
        LoginRecord {
            method: "POST".to_string(),
            path: "/login".to_string(),
            content_type,
            field_names: fields.iter().map(|(name, _)| name.clone()).collect(),
            username: username.map(str::to_string),
            body_len: body.len(),
            status: reply.status,
            headers: BTreeMap::new(),
        },
    );
    reply
}

fn check_form_login(app: &App, request: &Request, fields: &[(String, String)]) -> Reply {
    let cookie_token = cookie(request, CSRF_COOKIE).filter(|token| is_token(token));
    let form_token = form_field(fields, "csrf_token");
    let csrf_ok = match (&cookie_token, form_token) {
        (Some(cookie), Some(form)) => constant_time_eq(cookie.as_bytes(), form.as_bytes()),
        _ => false,
    };
    let Some(csrf_token) = cookie_token.filter(|_| csrf_ok) else {
        let body = "<h2>Session expired</h2>\n\
            <p class=\"error\">Your session expired, please reload the login page.</p>\n\
            <p><a href=\"/login\">Back to the login page</a></p>\n";
        return Reply::html(403, page("Session expired", body)).no_store();
    };

    let username = form_field(fields, "username").unwrap_or("");
    let password = form_field(fields, "password").unwrap_or("");
    match check_credentials(username, password) {
        Some(user) => match start_session(app, request, user) {
            Ok(set_cookie) => Reply::redirect("/account").header("Set-Cookie", set_cookie),
            Err(err) => server_error(&err),
        },
        None => Reply::html(
            401,
            login_form(&csrf_token, username, Some("Invalid username or password.")),
        )
        .no_store(),
    }
}

fn account_page(app: &App, request: &Request) -> Reply {
    let token = cookie(request, SESSION_COOKIE);
    let user = token
        .as_deref()
        .and_then(|token| lock(&app.sessions).user(token));
    let Some(user) = user else {
        let reply = Reply::redirect("/login");
        return if token.is_some() {
            reply.header("Set-Cookie", expired_cookie_header(SESSION_COOKIE))
        } else {
            reply
        };
    };
    let body = format!(
        "<h2>Welcome, {user}</h2>\n\
         <p>This is your account page.</p>\n\
         <table class=\"data\">\n\
         <tr><th>Department</th><td>Operations</td></tr>\n\
         <tr><th>Holiday balance</th><td>12 days</td></tr>\n\
         <tr><th>Open tickets</th><td>3</td></tr>\n\
         </table>\n\
         <form method=\"post\" action=\"/logout\">\n\
         <input type=\"submit\" value=\"Sign out\">\n\
         </form>\n",
        user = escape(user)
    );
    Reply::html(200, page("My account", &body)).no_store()
}

fn logout(app: &App, request: &Request) -> Reply {
    if let Some(token) = cookie(request, SESSION_COOKIE) {
        lock(&app.sessions).remove(&token);
    }
    Reply::redirect("/login").header("Set-Cookie", expired_cookie_header(SESSION_COOKIE))
}

fn spa_login_page() -> Reply {
    let body = r#"<h2>Sign in</h2>
<p class="small">New! Single-page sign in.</p>
<form id="spa-login">
<table class="form">
<tr><td><label for="username">Username:</label></td><td><input type="text" id="username" name="username" autocomplete="username" size="24"></td></tr>
<tr><td><label for="password">Password:</label></td><td><input type="password" id="password" name="password" autocomplete="current-password" size="24"></td></tr>
<tr><td></td><td><input type="submit" value="Sign in"></td></tr>
</table>
</form>
<p id="error" class="error" role="alert"></p>
<script>
(function () {
  var form = document.getElementById('spa-login');
  var error = document.getElementById('error');
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    error.textContent = '';
    var username = form.elements.username.value;
    var password = form.elements.password.value;
    fetch('/api/login', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({username, password})})
      .then(function (response) {
        return response.json().catch(function () {
          return {ok: false, error: 'unexpected response (HTTP ' + response.status + ')'};
        });
      })
      .then(function (data) {
        if (data && data.ok === true) {
          window.location.href = '/account';
        } else {
          error.textContent = (data && data.error) || 'login failed';
        }
      })
      .catch(function () {
        error.textContent = 'could not reach the server';
      });
  });
})();
</script>
"#;
    Reply::html(200, page("Sign in", body)).no_store()
}

fn api_login(app: &App, request: &mut Request) -> Reply {
    let body = match read_body(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let content_type = header_value(request, "Content-Type");
    let parsed = serde_json::from_slice::<OrderedObject>(&body).ok();
    let fields = parsed.as_ref().map(|obj| obj.0.as_slice()).unwrap_or(&[]);
    let string_field = |name: &str| {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.as_str())
    };
    let username = string_field("username");
    let password = string_field("password");

    let reply = if media_type(content_type.as_deref()) != "application/json" {
        Reply::json(
            415,
            &ApiReply::failure("expected Content-Type: application/json"),
        )
    } else {
        match (username, password) {
            (Some(username), Some(password)) => match check_credentials(username, password) {
                Some(user) => match start_session(app, request, user) {
                    Ok(set_cookie) => {
                        Reply::json(200, &ApiReply::success(user)).header("Set-Cookie", set_cookie)
                    }
                    Err(err) => {
                        eprintln!("legacy-app: cannot create session: {err}");
                        Reply::json(500, &ApiReply::failure("internal error"))
                    }
                },
                None => Reply::json(401, &ApiReply::failure("invalid credentials")),
            },
            _ => Reply::json(400, &ApiReply::failure("malformed request body")),
        }
    }
    .no_store();

    record_login(
        app,
        request,
        LoginRecord {
            method: "POST".to_string(),
            path: "/api/login".to_string(),
            content_type,
            field_names: fields.iter().map(|(name, _)| name.clone()).collect(),
            username: username.map(str::to_string),
            body_len: body.len(),
            status: reply.status,
            headers: BTreeMap::new(),
        },
    );
    reply
}

fn debug_last_login(app: &App) -> Reply {
    let record = lock(&app.last_login).clone();
    Reply::json(200, &record).no_store()
}

fn not_found() -> Reply {
    let body = "<h2>Not found</h2>\n\
        <p>The page you requested does not exist.</p>\n\
        <p><a href=\"/\">Home</a></p>\n";
    Reply::html(404, page("Not found", body))
}

fn method_not_allowed(allow: &'static str) -> Reply {
    let body = "<h2>Method not allowed</h2>\n<p><a href=\"/\">Home</a></p>\n";
    Reply::html(405, page("Method not allowed", body)).header("Allow", allow.to_string())
}

fn too_large() -> Reply {
    let body = "<h2>Request too large</h2>\n<p>The request body is too large.</p>\n";
    Reply::html(413, page("Request too large", body))
}

fn server_error(err: &io::Error) -> Reply {
    eprintln!("legacy-app: internal error: {err}");
    let body = "<h2>Internal error</h2>\n<p>Something went wrong. Please try again.</p>\n";
    Reply::html(500, page("Internal error", body))
}

/// Wraps page content in the shared, old-fashioned layout.
fn page(title: &str, content: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - {APP_NAME}</title>
<style>
body {{ margin: 0; background: #d4d0c8; font-family: Verdana, Tahoma, Arial, sans-serif; font-size: 13px; color: #000; }}
#page {{ width: 620px; margin: 24px auto; background: #fff; border: 1px solid #808080; }}
#banner {{ background: #000080; color: #fff; padding: 8px 12px; font-size: 16px; font-weight: bold; }}
#nav {{ background: #ece9d8; border-bottom: 1px solid #808080; padding: 4px 12px; font-size: 11px; }}
#content {{ padding: 8px 16px 16px 16px; }}
#footer {{ border-top: 1px solid #c0c0c0; padding: 6px 12px; font-size: 10px; color: #666; }}
h2 {{ font-size: 15px; color: #000080; }}
a {{ color: #0000ee; }}
.error {{ color: #c00000; font-weight: bold; }}
.small {{ font-size: 11px; color: #444; }}
table.form td {{ padding: 3px 6px 3px 0; }}
table.data {{ border-collapse: collapse; margin-bottom: 12px; }}
table.data th, table.data td {{ border: 1px solid #c0c0c0; padding: 3px 8px; text-align: left; }}
table.data th {{ background: #ece9d8; }}
</style>
</head>
<body>
<div id="page">
<div id="banner">{APP_NAME}</div>
<div id="nav"><a href="/">Home</a> | <a href="/login">Sign in</a> | <a href="/account">My account</a></div>
<div id="content">
{content}</div>
<div id="footer">&copy; 2004 Acme Corp. Internal use only.</div>
</div>
</body>
</html>
"#,
        title = escape(title),
    )
}

// ---------------------------------------------------------------------------
// Login helpers
// ---------------------------------------------------------------------------

/// Checks a username and password against the demo accounts. Compares
/// against every account so the time taken does not depend on which (if
/// any) username matched.
fn check_credentials(username: &str, password: &str) -> Option<&'static str> {
    let mut found = None;
    for (user, pass) in USERS {
        let user_ok = constant_time_eq(user.as_bytes(), username.as_bytes());
        let pass_ok = constant_time_eq(pass.as_bytes(), password.as_bytes());
        if user_ok & pass_ok {
            found = Some(*user);
        }
    }
    found
}

/// Starts a fresh session for `user` (dropping any session the client already
/// had) and returns the `Set-Cookie` value.
fn start_session(app: &App, request: &Request, user: &'static str) -> io::Result<String> {
    let token = random_token()?;
    let mut sessions = lock(&app.sessions);
    if let Some(old) = cookie(request, SESSION_COOKIE) {
        sessions.remove(&old);
    }
    sessions.create(token.clone(), user);
    Ok(cookie_header(SESSION_COOKIE, &token))
}

fn record_login(app: &App, request: &Request, mut record: LoginRecord) {
    if !app.debug_endpoints {
        return;
    }
    for header in request.headers() {
        let name = header.field.as_str().as_str().to_ascii_lowercase();
        let value = if matches!(
            name.as_str(),
            "cookie" | "authorization" | "proxy-authorization"
        ) {
            "[redacted]".to_string()
        } else {
            header.value.as_str().to_string()
        };
        record
            .headers
            .entry(name)
            .and_modify(|existing| {
                if existing != "[redacted]" {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
            })
            .or_insert(value);
    }
    *lock(&app.last_login) = Some(record);
}

/// Compares two byte strings without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

/// 16 bytes from the kernel's random source, hex encoded.
fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_LEN / 2];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn is_token(value: &str) -> bool {
    value.len() == TOKEN_LEN && value.bytes().all(|b| b.is_ascii_hexdigit())
}

fn cookie_header(name: &str, value: &str) -> String {
    format!("{name}={value}; HttpOnly; SameSite=Lax; Path=/")
}

fn expired_cookie_header(name: &str) -> String {
    format!("{name}=; Max-Age=0; HttpOnly; SameSite=Lax; Path=/")
}

// ---------------------------------------------------------------------------
// HTTP parsing helpers
// ---------------------------------------------------------------------------

/// Reads the whole body, or returns the reply to send instead (413 / 400).
fn read_body(request: &mut Request) -> Result<Vec<u8>, Reply> {
    if request.body_length().is_some_and(|len| len > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let limit = (MAX_BODY + 1) as u64;
    match request.as_reader().take(limit).read_to_end(&mut body) {
        Ok(_) if body.len() > MAX_BODY => Err(too_large()),
        Ok(_) => Ok(body),
        Err(_) => Err(Reply::html(
            400,
            page("Bad request", "<h2>Bad request</h2>\n"),
        )),
    }
}

/// First value of a request header (case-insensitive name).
fn header_value(request: &Request, name: &'static str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|header| header.field.equiv(name))
        .map(|header| header.value.as_str().to_string())
}

/// The media type of a Content-Type value, lower-cased, without parameters.
fn media_type(content_type: Option<&str>) -> String {
    content_type
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Value of the first cookie called `name`, across all Cookie headers.
fn cookie(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .filter(|header| header.field.equiv("Cookie"))
        .flat_map(|header| header.value.as_str().split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().to_string())
}

/// Parses an `application/x-www-form-urlencoded` body into ordered pairs.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &[][..]),
            };
            (form_decode(name), form_decode(value))
        })
        .collect()
}

/// First value of form field `name`.
fn form_field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// Decodes one form component: `+` is a space, `%XX` a byte. A `%` not
/// followed by two hex digits is kept as is; invalid UTF-8 becomes U+FFFD.
fn form_decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3).and_then(|pair| {
                    let hi = (pair[0] as char).to_digit(16)?;
                    let lo = (pair[1] as char).to_digit(16)?;
                    u8::try_from(hi * 16 + lo).ok()
                });
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes text for HTML element content and quoted attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Makes a request path safe to print on one log line.
fn printable(path: &str) -> String {
    path.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A JSON object with its keys in the order they were sent.
struct OrderedObject(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = OrderedObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(OrderedObject(fields))
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}
