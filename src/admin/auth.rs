//! Who may use the admin listener (`admin.auth`): a bearer token or a basic-auth user and
//! password, compared in constant time. `/healthz` and `/readyz` are always open (load
//! balancers and orchestrators probe them without credentials), `/metrics` only when the
//! operator opened it for a scraper; everything else — the console, `/__gk/analyze`,
//! `/debug/telemetry`, any unknown path in any spelling — needs the credential.
//!
//! Never logs or echoes what a client sent in `Authorization`.

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AdminAuthConfig, MetricsAccess};

/// Who is asking, once the request may go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Proved `admin.auth`'s credential: may see a profile's ranges.
    Operator,
    /// No `admin.auth` is configured (a loopback listener), or the path is open: answered,
    /// but never with a profile's ranges.
    Anonymous,
}

/// A request without the credential that its path needs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused;

/// Paths any client may read. Compared exactly: `/HEALTHZ` or `//readyz` need the credential
/// like every other path, so no spelling opens more than these.
const ALWAYS_OPEN: [&str; 2] = ["/healthz", "/readyz"];

/// Whether `path` may be answered for a caller with `headers`, and as whom. `off_loopback`:
/// the listener was bound where other hosts reach it. The config refuses that without
/// `admin.auth`, but the address is bound once while `auth` follows reloads: a reload that
/// moves `listen` to loopback and drops `auth` together must not open the running listener.
pub(crate) fn check(
    auth: Option<&AdminAuthConfig>,
    off_loopback: bool,
    path: &str,
    headers: &HeaderMap,
) -> Result<Caller, Refused> {
    let Some(auth) = auth else {
        return if off_loopback && !ALWAYS_OPEN.contains(&path) {
            Err(Refused)
        } else {
            Ok(Caller::Anonymous)
        };
    };
    if presents_credential(auth, headers) {
        return Ok(Caller::Operator);
    }
    let open =
        ALWAYS_OPEN.contains(&path) || (path == "/metrics" && auth.metrics == MetricsAccess::Open);
    if open {
        Ok(Caller::Anonymous)
    } else {
        Err(Refused)
    }
}

/// The `WWW-Authenticate` challenges for a 401: basic first, so a browser asks for a user
/// and password when the console is opened.
pub(crate) fn challenges(auth: Option<&AdminAuthConfig>) -> Vec<&'static str> {
    let mut out = Vec::new();
    if let Some(auth) = auth {
        if auth.basic.is_some() {
            out.push("Basic realm=\"gaitkeeper admin\", charset=\"UTF-8\"");
        }
        if auth.bearer.is_some() {
            out.push("Bearer realm=\"gaitkeeper admin\"");
        }
    }
    out
}

fn presents_credential(auth: &AdminAuthConfig, headers: &HeaderMap) -> bool {
    // Every Authorization header is looked at; one that matches is enough.
    headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| matches_any(auth, value.trim()))
}

fn matches_any(auth: &AdminAuthConfig, value: &str) -> bool {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return auth
            .bearer
            .as_ref()
            .is_some_and(|token| same(rest.as_bytes(), token.expose()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Some(basic) = &auth.basic else {
            return false;
        };
        use base64::Engine;
        // Bounded before decoding: a real credential is far shorter.
        if rest.len() > 8192 {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        // Both compared, whatever the first gives, so the time tells nothing about which.
        let user_ok = same(user, basic.user.as_bytes());
        let password_ok = same(password, basic.password.expose());
        return user_ok & password_ok;
    }
    false
}

/// Constant-time equality of two byte strings of any length: their SHA-256 digests are
/// compared, so neither the content nor the length of the expected value leaks through time.
fn same(presented: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected);
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BasicAuthConfig, Secret};

    const TOKEN: &str = "admin-token-9f8e7d6c5b4a3210zyxwvuts";

    fn auth(metrics: MetricsAccess) -> AdminAuthConfig {
        AdminAuthConfig {
            bearer: Some(Secret::for_tests(TOKEN.as_bytes())),
            basic: Some(BasicAuthConfig {
                user: "ops".into(),
                password: Secret::for_tests(b"basic-password-0123456789abcdefghijk"),
            }),
            metrics,
        }
    }

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        with(&format!("Basic {b64}"))
    }

    #[test]
    fn only_health_and_readiness_are_open_without_the_credential() {
        let a = auth(MetricsAccess::Protected);
        let none = HeaderMap::new();
        for open in ["/healthz", "/readyz"] {
            assert_eq!(
                check(Some(&a), false, open, &none),
                Ok(Caller::Anonymous),
                "{open}"
            );
        }
        for closed in [
            "/metrics",
            "/console/",
            "/__gk/analyze",
            "/debug/telemetry",
            "/HEALTHZ",
            "//healthz",
            "/healthz/",
            "/%68ealthz",
            "/nope",
        ] {
            assert_eq!(
                check(Some(&a), false, closed, &none),
                Err(Refused),
                "{closed}"
            );
        }
        let open_metrics = auth(MetricsAccess::Open);
        assert_eq!(
            check(Some(&open_metrics), false, "/metrics", &none),
            Ok(Caller::Anonymous)
        );
        assert_eq!(
            check(Some(&open_metrics), false, "/console/", &none),
            Err(Refused)
        );
    }

    #[test]
    fn the_bearer_token_or_the_basic_password_makes_an_operator() {
        let a = auth(MetricsAccess::Protected);
        for ok in [
            with(&format!("Bearer {TOKEN}")),
            with(&format!("bearer   {TOKEN}")),
            basic("ops", "basic-password-0123456789abcdefghijk"),
        ] {
            assert_eq!(
                check(Some(&a), false, "/console/", &ok),
                Ok(Caller::Operator)
            );
        }
        for bad in [
            with("Bearer"),
            with(&format!("Bearer {TOKEN}x")),
            with(&format!("Bearer {}", &TOKEN[1..])),
            with(&format!("Basic {TOKEN}")),
            with("Basic !!!"),
            basic("ops", TOKEN),
            basic("root", "basic-password-0123456789abcdefghijk"),
            basic("ops", "basic-password-0123456789abcdefghij"),
            with(&format!("Token {TOKEN}")),
        ] {
            assert_eq!(
                check(Some(&a), false, "/console/", &bad),
                Err(Refused),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn without_admin_auth_every_caller_is_anonymous() {
        assert_eq!(
            check(None, false, "/console/", &HeaderMap::new()),
            Ok(Caller::Anonymous)
        );
        assert_eq!(
            check(None, false, "/console/", &with(&format!("Bearer {TOKEN}"))),
            Ok(Caller::Anonymous)
        );
    }

    #[test]
    fn a_listener_bound_off_loopback_stays_closed_when_a_reload_drops_admin_auth() {
        let none = HeaderMap::new();
        assert_eq!(check(None, true, "/console/", &none), Err(Refused));
        assert_eq!(check(None, true, "/metrics", &none), Err(Refused));
        assert_eq!(check(None, true, "/healthz", &none), Ok(Caller::Anonymous));
        assert!(challenges(None).is_empty());
        assert_eq!(challenges(Some(&auth(MetricsAccess::Open))).len(), 2);
    }
}
