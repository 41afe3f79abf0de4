//! Login helpers: checking credentials and the forms' fields.

use super::*;

/// Checks a username and password against the demo accounts. Compares
/// against every account so the time taken does not depend on which (if
/// any) username matched.
pub(crate) fn check_credentials(username: &str, password: &str) -> Option<&'static str> {
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
pub(crate) fn start_session(
    app: &App,
    request: &Request,
    user: &'static str,
) -> io::Result<String> {
    let token = random_token()?;
    let mut sessions = lock(&app.sessions);
    if let Some(old) = cookie(request, SESSION_COOKIE) {
        sessions.remove(&old);
    }
    sessions.create(token.clone(), user);
    Ok(cookie_header(SESSION_COOKIE, &token))
}

pub(crate) fn record_login(app: &App, request: &Request, mut record: LoginRecord) {
    if !app.debug_endpoints {
        return;
    }
    for (name, value) in &request.headers {
        let name = name.to_ascii_lowercase();
        let value = if matches!(
            name.as_str(),
            "cookie" | "authorization" | "proxy-authorization"
        ) {
            "[redacted]".to_string()
        } else {
            value.clone()
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
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
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
pub(crate) fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_LEN / 2];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(crate) fn is_token(value: &str) -> bool {
    value.len() == TOKEN_LEN && value.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn cookie_header(name: &str, value: &str) -> String {
    format!("{name}={value}; HttpOnly; SameSite=Lax; Path=/")
}

pub(crate) fn expired_cookie_header(name: &str) -> String {
    format!("{name}=; Max-Age=0; HttpOnly; SameSite=Lax; Path=/")
}
