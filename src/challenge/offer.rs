//! The offer to add a second factor after a trusted login (`routes[].enrol_factors`): the app's
//! answer to that login (its redirect and cookies), withheld while the offer page is shown and
//! delivered unchanged after it, and that page.
//!
//! The withheld answer rides in a cookie for the offer's path only, sealed (see [`super::sealed`])
//! and bound to the offer id in the URL, for [`OFFER_TTL`]: any instance can deliver it, and
//! the app's session cookie is never readable by the page. Pure: no I/O; times are passed in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::page::document;
use super::sealed::Sealer;
use crate::wire::escape_html as escape;

/// The cookie carrying the withheld answer.
pub const OFFER_COOKIE: &str = "__gk_offer";
/// How long an offer page can be answered (its answer delivered).
pub const OFFER_TTL: Duration = Duration::from_secs(15 * 60);
/// Longest sealed answer put into a cookie (browsers keep cookies up to 4096 bytes): an
/// answer with more cookies than fit is delivered at once, without the offer.
pub const MAX_COOKIE_VALUE: usize = 3800;

/// The app's answer to a trusted login, withheld during the offer, and whom it is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withheld {
    /// The user's store key.
    pub user: [u8; 32],
    /// The login name as stored (scoped to its app), and as the user typed it (shown by the
    /// authenticator).
    pub scoped_login: String,
    pub login: String,
    pub app: String,
    /// No "not now": the user must add a factor to continue.
    pub required: bool,
    /// Where the app sent the browser, and the cookies it set (`Set-Cookie` values).
    pub location: String,
    pub set_cookies: Vec<String>,
    /// Unix seconds.
    pub expires: u64,
}

/// Seals withheld answers (key from `secrets.key`).
pub struct OfferSeal(Sealer);

impl OfferSeal {
    pub fn new(secret: &[u8]) -> OfferSeal {
        OfferSeal(Sealer::derive(secret, b"gaitkeeper/factor-offer/v1"))
    }

    /// `answer` for the cookie of offer `id`; `None` when it would not fit a cookie.
    pub fn seal(&self, id: &str, answer: &Withheld) -> Option<String> {
        let plain = rmp_serde::to_vec_named(answer).ok()?;
        let sealed = self.0.seal(id.as_bytes(), &plain);
        (sealed.len() <= MAX_COOKIE_VALUE).then_some(sealed)
    }

    /// The answer withheld for offer `id`, unless it is another offer's, damaged or expired.
    pub fn open(&self, id: &str, cookie: &str, now: u64) -> Option<Withheld> {
        let plain = self.0.open(id.as_bytes(), cookie, MAX_COOKIE_VALUE)?;
        let answer: Withheld = rmp_serde::from_slice(&plain).ok()?;
        (now <= answer.expires).then_some(answer)
    }
}

/// The "not now" form of an offer page (absent when the offer is required).
pub fn not_now_form(action: &str, csrf: (&str, &str)) -> String {
    continue_form(
        action,
        csrf,
        r#" class="alt""#,
        r#"id="not-now" class="secondary""#,
        "Not now, continue",
    )
}

/// A form that posts `continue=1` (with the CSRF field) to `action`: on to the app. The
/// attributes are literal HTML; `label` is escaped.
fn continue_form(
    action: &str,
    csrf: (&str, &str),
    form_attributes: &str,
    button_attributes: &str,
    label: &str,
) -> String {
    format!(
        concat!(
            "<form method=\"post\" action=\"{action}\"{form_attributes}>\n",
            "<input type=\"hidden\" name=\"{csrf_field}\" value=\"{csrf_token}\">\n",
            "<input type=\"hidden\" name=\"continue\" value=\"1\">\n",
            "<button type=\"submit\" {button_attributes}>{label}</button>\n",
            "</form>\n"
        ),
        action = escape(action),
        csrf_field = escape(csrf.0),
        csrf_token = escape(csrf.1),
        label = escape(label),
        form_attributes = form_attributes,
        button_attributes = button_attributes,
    )
}

/// The lead of an offer page: why it is shown.
pub fn lead(app_name: &str, required: bool) -> String {
    if required {
        format!(
            "<p>Before you continue to {}, add a second way to confirm it's you. You will be asked for it only when a sign-in looks unusual.</p>\n",
            escape(app_name)
        )
    } else {
        format!(
            "<p>You are signed in to {}. Protect your account: add a passkey or an authenticator app, so that a sign-in that looks unusual can still be confirmed as you.</p>\n",
            escape(app_name)
        )
    }
}

/// The page after a factor was added from an offer: the recovery codes (shown once) and the
/// button that continues to the app.
pub fn added_page(
    app_name: &str,
    passkey: bool,
    codes: &[String],
    action: &str,
    csrf: (&str, &str),
) -> String {
    let next = continue_form(
        action,
        csrf,
        "",
        r#"id="continue""#,
        &format!("Continue to {app_name}"),
    );
    super::enrol::enrolled_page(app_name, passkey, codes, &next)
}

/// A page in the offer's look saying why it cannot go on.
pub fn gone_page(app_name: &str) -> String {
    document(
        app_name,
        "This page has expired",
        "<p>Sign in again to continue.</p>\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Withheld {
        Withheld {
            user: [7; 32],
            scoped_login: "alice".into(),
            login: "alice".into(),
            app: "default".into(),
            required: false,
            location: "/account".into(),
            set_cookies: vec!["session=abc; Path=/; HttpOnly".into()],
            expires: 1_000,
        }
    }

    #[test]
    fn a_withheld_answer_opens_for_its_offer_until_it_expires() {
        let seal = OfferSeal::new(b"secret");
        let cookie = seal.seal("offer-1", &answer()).unwrap();
        assert!(!cookie.contains("session"), "sealed");
        assert_eq!(seal.open("offer-1", &cookie, 999), Some(answer()));
        assert_eq!(seal.open("offer-1", &cookie, 1_001), None, "expired");
        assert_eq!(seal.open("offer-2", &cookie, 999), None, "another offer");
        assert_eq!(OfferSeal::new(b"other").open("offer-1", &cookie, 999), None);
        let mut big = answer();
        big.set_cookies = vec!["x".repeat(4000)];
        assert_eq!(seal.seal("offer-1", &big), None, "does not fit a cookie");
    }

    #[test]
    fn the_pages_escape_what_they_show() {
        let html = not_now_form("/__gk/protect/a\"", ("csrf", "<t>"));
        assert!(html.contains("/__gk/protect/a&quot;") && html.contains("&lt;t&gt;"));
        assert!(lead("<App>", true).contains("&lt;App&gt;"));
        let added = added_page(
            "Acme",
            true,
            &["abcde-fghjk".into()],
            "/__gk/protect/x",
            ("csrf", "t"),
        );
        assert!(added.contains("Passkey added") && added.contains("Continue to Acme"));
    }
}
