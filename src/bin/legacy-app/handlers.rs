//! Request handling: one function per route.

use super::*;

/// A response before the transport writes it out.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn html(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type", "text/html; charset=utf-8".to_string())],
            body: body.into_bytes(),
        }
    }

    pub(crate) fn json<T: Serialize>(status: u16, value: &T) -> Reply {
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

    pub(crate) fn redirect(location: &'static str) -> Reply {
        let body = page(
            "Redirect",
            &format!("<p>Continue to <a href=\"{location}\">{location}</a>.</p>"),
        );
        Reply::html(303, body).header("Location", location.to_string())
    }

    pub(crate) fn header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    pub(crate) fn no_store(self) -> Reply {
        self.header("Cache-Control", "no-store".to_string())
    }
}

/// One request, as the transport hands it to the routes: the body has
/// already been read in full (at most `MAX_BODY` bytes).
pub(crate) struct Request {
    pub(crate) method: String,
    /// The request target's path, without the query.
    pub(crate) path: String,
    /// Header fields in the order received, values trimmed.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

pub(crate) fn route(app: &App, request: &Request, method: &str, path: &str) -> Reply {
    let is_get = matches!(method, "GET" | "HEAD");
    let is_post = method == "POST";

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
        "/app" if is_get => token_app_page(false),
        "/app-xhr" if is_get => token_app_page(true),
        // A stricter app: its CSP forbids frames, so a challenge cannot be framed in its page.
        "/app-strict" if is_get => token_app_page(false).header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; frame-src 'none'".to_string(),
        ),
        "/api/token" if is_post => api_token(app, request),
        "/api/token" => method_not_allowed("POST"),
        "/api/me" if is_get => api_me(app, request),
        "/__debug/last-login" if app.debug_endpoints && is_get => debug_last_login(app),
        "/__debug/last-login" if app.debug_endpoints => method_not_allowed("GET, HEAD"),
        "/" | "/account" | "/spa-login" | "/app" | "/app-xhr" | "/app-strict" | "/api/me" => {
            method_not_allowed("GET, HEAD")
        }
        _ => not_found(),
    }
}

pub(crate) fn home_page() -> Reply {
    let body = "<h2>Welcome</h2>\n\
        <p>Welcome to the Acme Corp intranet. Please sign in to continue.</p>\n\
        <ul>\n\
        <li><a href=\"/login\">Sign in</a></li>\n\
        <li><a href=\"/account\">My account</a></li>\n\
        <li><a href=\"/spa-login\">Sign in (new single-page version)</a></li>\n\
        <li><a href=\"/app\">Acme Portal (fetch)</a> and <a href=\"/app-xhr\">(XMLHttpRequest)</a></li>\n\
        </ul>\n";
    Reply::html(200, page("Home", body))
}

pub(crate) fn login_page(request: &Request) -> Reply {
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

pub(crate) fn login_form(csrf_token: &str, username: &str, error: Option<&str>) -> String {
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

pub(crate) fn login_submit(app: &App, request: &Request) -> Reply {
    let body = &request.body;
    let content_type = header_value(request, "Content-Type");
    let fields = parse_form(body);
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

pub(crate) fn check_form_login(app: &App, request: &Request, fields: &[(String, String)]) -> Reply {
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

pub(crate) fn account_page(app: &App, request: &Request) -> Reply {
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

pub(crate) fn logout(app: &App, request: &Request) -> Reply {
    if let Some(token) = cookie(request, SESSION_COOKIE) {
        lock(&app.sessions).remove(&token);
    }
    Reply::redirect("/login").header("Set-Cookie", expired_cookie_header(SESSION_COOKIE))
}

pub(crate) fn spa_login_page() -> Reply {
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

/// The newer single-page app: its script builds the sign-in form, posts the credentials to
/// `/api/token` (JSON by `fetch`, or — `xhr` — form-urlencoded by `XMLHttpRequest`, as jQuery
/// does), keeps the bearer token it gets in memory and `localStorage`, and shows the protected
/// profile only with that token. No cookie session at all.
pub(crate) fn token_app_page(xhr: bool) -> Reply {
    let send = if xhr {
        r#"var x = new XMLHttpRequest();
    x.open('POST', '/api/token');
    x.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded; charset=UTF-8');
    x.onload = function () {
      var data = null;
      try { data = JSON.parse(x.responseText); } catch (e) {}
      done(x.status, data);
    };
    x.onerror = function () { done(0, null); };
    x.send('username=' + encodeURIComponent(username) + '&password=' + encodeURIComponent(password));"#
    } else {
        r#"fetch('/api/token', {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({username: username, password: password})})
      .then(function (r) { return r.json().then(function (d) { return [r.status, d]; }, function () { return [r.status, null]; }); })
      .then(function (a) { done(a[0], a[1]); }, function () { done(0, null); });"#
    };
    let body = format!(
        r#"<h2>Acme Portal</h2>
<p class="small">The new portal ({kind}).</p>
<div id="signin"></div>
<p id="status" class="error" role="alert"></p>
<div id="profile" hidden><p>Signed in as <b id="who"></b>.</p><p>Your documents: 3 reports, 1 memo.</p></div>
<script>
(function () {{
  var token = null;
  var signin = document.getElementById('signin');
  var status = document.getElementById('status');
  signin.innerHTML = '<form id="token-login"><table class="form">' +
    '<tr><td><label for="username">Username:</label></td><td><input type="text" id="username" name="username" autocomplete="username" size="24"></td></tr>' +
    '<tr><td><label for="password">Password:</label></td><td><input type="password" id="password" name="password" autocomplete="current-password" size="24"></td></tr>' +
    '<tr><td></td><td><input type="submit" id="go" value="Sign in"></td></tr></table></form>';
  function show(user) {{
    document.getElementById('who').textContent = user;
    document.getElementById('profile').hidden = false;
    signin.hidden = true;
    status.textContent = '';
  }}
  function profile() {{
    fetch('/api/me', {{headers: {{'Authorization': 'Bearer ' + token}}}})
      .then(function (r) {{ return r.ok ? r.json() : null; }})
      .then(function (d) {{ if (d && d.user) show(d.user); else status.textContent = 'Session expired'; }});
  }}
  function done(code, data) {{
    if (data && data.access_token) {{
      token = data.access_token;
      try {{ localStorage.setItem('acme_token', token); }} catch (e) {{}}
      profile();
    }} else {{
      status.textContent = 'Login failed' + (data && data.error ? ': ' + data.error : '');
    }}
  }}
  document.getElementById('token-login').addEventListener('submit', function (event) {{
    event.preventDefault();
    status.textContent = '';
    var username = document.getElementById('username').value;
    var password = document.getElementById('password').value;
    {send}
  }});
}})();
</script>
"#,
        kind = if xhr { "XMLHttpRequest" } else { "fetch" },
    );
    Reply::html(200, page("Acme Portal", &body)).no_store()
}

/// `POST /api/token`: JSON or form-urlencoded credentials. Answers 200 either way, as many
/// APIs do: `{"access_token": …, "user": …}` on success, `{"ok": false, "error": …}` when the
/// credentials are wrong (only a malformed request gets a 4xx).
pub(crate) fn api_token(app: &App, request: &Request) -> Reply {
    let content_type = header_value(request, "Content-Type");
    let media = media_type(content_type.as_deref());
    let (username, password, field_names) = if media == "application/json" {
        let parsed = serde_json::from_slice::<OrderedObject>(&request.body).ok();
        let fields = parsed.map(|obj| obj.0).unwrap_or_default();
        let get = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .and_then(|(_, value)| value.as_str())
                .map(str::to_string)
        };
        (
            get("username"),
            get("password"),
            fields.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        )
    } else if media == "application/x-www-form-urlencoded" {
        let fields = parse_form(&request.body);
        (
            form_field(&fields, "username").map(str::to_string),
            form_field(&fields, "password").map(str::to_string),
            fields.iter().map(|(k, _)| k.clone()).collect(),
        )
    } else {
        (None, None, Vec::new())
    };
    let reply = match (&username, &password) {
        (Some(u), Some(p)) => match check_credentials(u, p) {
            Some(user) => match random_token() {
                Ok(token) => {
                    lock(&app.tokens).create(token.clone(), user);
                    Reply::json(
                        200,
                        &serde_json::json!({"access_token": token, "token_type": "Bearer", "user": user}),
                    )
                }
                Err(err) => server_error(&err),
            },
            None => Reply::json(200, &ApiReply::failure("invalid credentials")),
        },
        _ => Reply::json(400, &ApiReply::failure("username and password are required")),
    }
    .no_store();
    record_login(
        app,
        request,
        LoginRecord {
            method: "POST".to_string(),
            path: "/api/token".to_string(),
            content_type,
            field_names,
            username,
            body_len: request.body.len(),
            status: reply.status,
            headers: BTreeMap::new(),
        },
    );
    reply
}

/// `GET /api/me` with `Authorization: Bearer TOKEN`: the token's user.
pub(crate) fn api_me(app: &App, request: &Request) -> Reply {
    let token = header_value(request, "Authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
    match token.and_then(|t| lock(&app.tokens).user(&t)) {
        Some(user) => Reply::json(200, &serde_json::json!({"user": user})).no_store(),
        None => Reply::json(401, &ApiReply::failure("no valid bearer token")).no_store(),
    }
}

pub(crate) fn api_login(app: &App, request: &Request) -> Reply {
    let body = &request.body;
    let content_type = header_value(request, "Content-Type");
    let parsed = serde_json::from_slice::<OrderedObject>(body).ok();
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

pub(crate) fn debug_last_login(app: &App) -> Reply {
    let record = lock(&app.last_login).clone();
    Reply::json(200, &record).no_store()
}

pub(crate) fn not_found() -> Reply {
    let body = "<h2>Not found</h2>\n\
        <p>The page you requested does not exist.</p>\n\
        <p><a href=\"/\">Home</a></p>\n";
    Reply::html(404, page("Not found", body))
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Reply {
    let body = "<h2>Method not allowed</h2>\n<p><a href=\"/\">Home</a></p>\n";
    Reply::html(405, page("Method not allowed", body)).header("Allow", allow.to_string())
}

pub(crate) fn too_large() -> Reply {
    let body = "<h2>Request too large</h2>\n<p>The request body is too large.</p>\n";
    Reply::html(413, page("Request too large", body))
}

pub(crate) fn server_error(err: &io::Error) -> Reply {
    eprintln!("legacy-app: internal error: {err}");
    internal_error()
}

pub(crate) fn internal_error() -> Reply {
    let body = "<h2>Internal error</h2>\n<p>Something went wrong. Please try again.</p>\n";
    Reply::html(500, page("Internal error", body))
}

/// Wraps page content in the shared, old-fashioned layout.
pub(crate) fn page(title: &str, content: &str) -> String {
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
