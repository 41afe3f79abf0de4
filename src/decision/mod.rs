//! Decision: carrying out what the policy decided, while the legacy app stays unchanged.
//!
//! Owns: held logins waiting for a second factor (`held`), brute-force regulation from failed
//! logins (`regulation`), and reading the app's own response to tell a successful login from a
//! failed one (`login_succeeded`). The proxy glue in `proxy::login` and `proxy::challenge`
//! moves requests; this module keeps the state and the rules. Never logs bodies or names.

mod attempt;
mod held;
mod outcome;
mod regulation;
pub(crate) mod scored;

use pingora::http::ResponseHeader;

pub(crate) use attempt::LoginAttempt;
pub(crate) use held::{HeldLogin, HeldLogins, Inline};
pub(crate) use outcome::{ChallengeResult, HeldDropped, LoginOutcome};
pub(crate) use regulation::Regulator;
pub(crate) use scored::Scored;

use crate::config::SuccessSignal;

/// Whether a JSON answer body meets the signal's body conditions (`json_pointer_present`,
/// `json_equals`). A body that is not JSON meets none.
pub(crate) fn body_succeeded(signal: &SuccessSignal, body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let present = signal
        .json_pointer_present
        .as_ref()
        .is_none_or(|p| value.pointer(p).is_some_and(|v| !v.is_null()));
    let equals = signal
        .json_equals
        .as_ref()
        .is_none_or(|e| value.pointer(&e.pointer) == Some(&e.value));
    present && equals
}

/// Whether the app's response to a login submit shows a successful login, by the route's
/// `success` signal: every configured condition on the header (status, `Location`, cookie)
/// must hold; conditions on the body are [`body_succeeded`]'s.
pub(crate) fn login_succeeded(signal: &SuccessSignal, response: &ResponseHeader) -> bool {
    if !signal.status.contains(&response.status.as_u16()) {
        return false;
    }
    if let Some(prefix) = &signal.location_prefix {
        let location = response
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !location_path(location).starts_with(prefix.as_str()) {
            return false;
        }
    }
    if let Some(cookie) = &signal.set_cookie {
        let sets = response
            .headers
            .get_all(http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| sets_cookie(v, cookie));
        if !sets {
            return false;
        }
    }
    true
}

/// The path of a `Location` value, absolute (`https://host/p`) or relative (`/p`).
fn location_path(location: &str) -> &str {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    }
}

/// Whether a `Set-Cookie` value sets (not deletes) the cookie `name`.
fn sets_cookie(header: &str, name: &str) -> bool {
    let mut parts = header.split(';');
    let Some((n, value)) = parts.next().and_then(|p| p.split_once('=')) else {
        return false;
    };
    if n.trim() != name || value.trim().is_empty() {
        return false;
    }
    // A cookie sent with Max-Age=0 or an expiry in the past is being removed (a logout).
    !parts.any(|attr| {
        let attr = attr.trim().to_ascii_lowercase();
        attr == "max-age=0" || attr.starts_with("max-age=-") || attr.contains("1970")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn default_signal_is_any_redirect() {
        let s = SuccessSignal::default();
        assert!(login_succeeded(&s, &response(303, &[("location", "/")])));
        assert!(!login_succeeded(&s, &response(200, &[])));
        assert!(!login_succeeded(&s, &response(401, &[])));
    }

    #[test]
    fn body_conditions_read_the_json_answer() {
        let present = SuccessSignal {
            status: vec![200],
            json_pointer_present: Some("/access_token".into()),
            ..SuccessSignal::default()
        };
        assert!(body_succeeded(
            &present,
            br#"{"access_token":"t","user":"alice"}"#
        ));
        assert!(!body_succeeded(
            &present,
            br#"{"ok":false,"error":"invalid credentials"}"#
        ));
        assert!(
            !body_succeeded(&present, br#"{"access_token":null}"#),
            "null is absent"
        );
        assert!(
            !body_succeeded(&present, b"<html>welcome</html>"),
            "not JSON"
        );
        assert!(
            !body_succeeded(&present, br#"{"access_token":"t""#),
            "cut short"
        );
        let equals = SuccessSignal {
            status: vec![200],
            json_equals: Some(crate::config::JsonEquals {
                pointer: "/ok".into(),
                value: serde_json::json!(true),
            }),
            ..SuccessSignal::default()
        };
        assert!(body_succeeded(&equals, br#"{"ok":true}"#));
        assert!(
            !body_succeeded(&equals, br#"{"ok":"true"}"#),
            "a string is not true"
        );
        assert!(!body_succeeded(&equals, br#"{"ok":false}"#));
        let both = SuccessSignal {
            json_pointer_present: Some("/user".into()),
            ..equals
        };
        assert!(body_succeeded(&both, br#"{"ok":true,"user":"alice"}"#));
        assert!(
            !body_succeeded(&both, br#"{"ok":true}"#),
            "every condition must hold"
        );
    }

    #[test]
    fn every_configured_condition_must_hold() {
        let s = SuccessSignal {
            status: vec![302, 303],
            location_prefix: Some("/account".into()),
            set_cookie: Some("sid".into()),
            ..SuccessSignal::default()
        };
        let ok = response(
            303,
            &[
                ("location", "/account/home"),
                ("set-cookie", "sid=abc; HttpOnly"),
            ],
        );
        assert!(login_succeeded(&s, &ok));
        let absolute = response(
            302,
            &[
                ("location", "https://app.example/account"),
                ("set-cookie", "other=1"),
                ("set-cookie", "sid=abc"),
            ],
        );
        assert!(login_succeeded(&s, &absolute));
        let back_to_login = response(
            303,
            &[("location", "/login?error=1"), ("set-cookie", "sid=abc")],
        );
        assert!(!login_succeeded(&s, &back_to_login));
        let no_cookie = response(303, &[("location", "/account")]);
        assert!(!login_succeeded(&s, &no_cookie));
        let deleted = response(
            303,
            &[("location", "/account"), ("set-cookie", "sid=x; Max-Age=0")],
        );
        assert!(!login_succeeded(&s, &deleted));
        let wrong_status = response(200, &[("location", "/account"), ("set-cookie", "sid=abc")]);
        assert!(!login_succeeded(&s, &wrong_status));
    }
}
