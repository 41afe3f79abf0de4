//! The challenge page and what protects it: the HTML a challenged user sees, its CSRF token, and
//! unguessable challenge ids.
//!
//! The page is complete HTML5 with no JavaScript and no external resources (one inline style,
//! allowed by [`CHALLENGE_CSP`]; a passkey button alone brings a script, under a nonce), so
//! the code forms work with scripts off, with a keyboard, in a screen
//! reader and at 320 px wide. Every interpolated value is HTML-escaped. Never puts a secret or a
//! code into the page.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::wire::escape_html as escape;

/// The Content-Security-Policy to send with [`challenge_page`] and [`message_page`].
pub const CHALLENGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The same, for a challenge shown inside the page's own overlay: framed by its own origin
/// only (a frame from anywhere else is still refused).
pub const CHALLENGE_CSP_INLINE: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'self'; base-uri 'none'";

/// Name of the one-time-code field in the page's form.
pub const CODE_FIELD: &str = "code";

/// Longest CSRF token looked at (a real one is 43 characters).
const MAX_CSRF_BYTES: usize = 128;

/// What the challenge page shows.
#[derive(Debug, Clone)]
pub struct ChallengePage<'a> {
    /// The protected app's name (`server.app_name`).
    pub app_name: &'a str,
    /// Where the code form posts to, e.g. `/__gk/challenge/ID`.
    pub action: &'a str,
    /// Name and value of the hidden CSRF field.
    pub csrf_field: &'a str,
    pub csrf_token: &'a str,
    /// Show the TOTP code form (the user has a TOTP secret and `mfa.totp.enabled`).
    pub show_code_form: bool,
    /// The passkey button (HTML from `passkey::section` and its script), when the user has
    /// a passkey for this host.
    pub passkey: Option<&'a str>,
    /// `Some(attempts left)` when the previous code was wrong.
    pub wrong_code: Option<u32>,
    /// A link to the external MFA provider, if one is configured.
    pub external: Option<ExternalLink<'a>>,
    /// "Continue with <name>": a new sign-in at the OpenID Connect provider (`mfa.oidc`).
    pub oidc: Option<ExternalLink<'a>>,
}

/// "Use <name>": a link that starts the external MFA flow.
#[derive(Debug, Clone)]
pub struct ExternalLink<'a> {
    pub name: &'a str,
    pub href: &'a str,
    /// Open the provider in a new window (the challenge is in the page's overlay frame).
    pub new_window: bool,
}

/// A form posting the code field (`input_id`, with `attributes`) and the CSRF token to the
/// challenge; `help` is HTML.
fn code_form(
    p: &ChallengePage,
    input_id: &str,
    label: &str,
    help: &str,
    attributes: &str,
) -> String {
    format!(
        concat!(
            "<form method=\"post\" action=\"{action}\">\n",
            "<input type=\"hidden\" name=\"{csrf_field}\" value=\"{csrf_token}\">\n",
            "<label for=\"{id}\">{label}</label>\n",
            "<p class=\"help\" id=\"{id}-help\">{help}</p>\n",
            "<input id=\"{id}\" name=\"{code_field}\" {attributes}>\n",
            "<button type=\"submit\">Confirm</button>\n",
            "</form>\n"
        ),
        action = escape(p.action),
        csrf_field = escape(p.csrf_field),
        csrf_token = escape(p.csrf_token),
        id = input_id,
        label = label,
        help = help,
        code_field = CODE_FIELD,
        attributes = attributes,
    )
}

/// Renders the challenge page.
pub fn challenge_page(p: &ChallengePage) -> String {
    let mut body = String::new();
    body.push_str("<p>We need to confirm it's you. This sign-in looked different from usual, so one more step is needed before you continue to ");
    body.push_str(&escape(p.app_name));
    body.push_str(".</p>\n");
    if let Some(left) = p.wrong_code {
        let attempts = match left {
            0 => "No attempts are left.".to_string(),
            1 => "1 attempt is left.".to_string(),
            n => format!("{n} attempts are left."),
        };
        body.push_str(&format!(
            "<p class=\"error\" role=\"alert\" id=\"code-error\">That code was not right. {attempts}</p>\n"
        ));
    }
    if let Some(passkey) = p.passkey {
        body.push_str(passkey);
        if p.show_code_form {
            body.push_str("<p class=\"alt\">Or enter a code instead:</p>\n");
        }
    }
    if p.show_code_form {
        let described = if p.wrong_code.is_some() {
            "code-help code-error"
        } else {
            "code-help"
        };
        let totp_help = format!(
            "Open your authenticator app and enter the {}-digit code it shows for {}.",
            super::totp::DIGITS,
            escape(p.app_name)
        );
        let totp_input = format!(
            "type=\"text\" autocomplete=\"one-time-code\" inputmode=\"numeric\" pattern=\"[0-9]*\" maxlength=\"{}\" aria-describedby=\"{described}\" autofocus required",
            super::totp::DIGITS
        );
        body.push_str(&code_form(
            p,
            "code",
            "One-time code",
            &totp_help,
            &totp_input,
        ));
    }
    if p.show_code_form || p.passkey.is_some() {
        // The recovery code has its own form: the code field above only takes digits.
        body.push_str(
            "<details class=\"alt\"><summary>Lost your authenticator or passkey? Use a recovery code</summary>\n",
        );
        body.push_str(&code_form(
            p,
            "recovery",
            "Recovery code",
            "One of the codes you were given with your authenticator, like <code>abcde-fghjk</code>. Each works once.",
            "type=\"text\" autocomplete=\"off\" autocapitalize=\"none\" spellcheck=\"false\" maxlength=\"16\" aria-describedby=\"recovery-help\" required",
        ));
        body.push_str("</details>\n");
    }
    if let Some(link) = &p.external {
        let intro = if p.show_code_form || p.passkey.is_some() {
            "<p class=\"alt\">Or confirm another way: "
        } else {
            "<p class=\"alt\">"
        };
        // `rel=opener`: the provider's window hands the passed challenge back to the page
        // that opened it (see `resume_page`).
        let target = if link.new_window {
            " target=\"_blank\" rel=\"opener\""
        } else {
            ""
        };
        body.push_str(&format!(
            "{intro}<a href=\"{}\"{target}>Use {}</a></p>\n",
            escape(link.href),
            escape(link.name)
        ));
    }
    if let Some(link) = &p.oidc {
        body.push_str(&oidc_button(link));
    }
    if !p.show_code_form && p.passkey.is_none() && p.external.is_none() && p.oidc.is_none() {
        body.push_str("<p>No way to confirm this sign-in is set up for your account. Please contact your administrator.</p>\n");
    }
    document(p.app_name, "Confirm it's you", &body)
}

/// The "Continue with <name>" button of step-up through the OpenID Connect provider: a link
/// to `{prefix}challenge/{id}/oidc`, which sends the browser on to the provider.
pub fn oidc_button(link: &ExternalLink) -> String {
    let target = if link.new_window {
        " target=\"_blank\" rel=\"opener\""
    } else {
        ""
    };
    format!(
        "<p class=\"alt\"><a class=\"button\" href=\"{}\"{target}>Continue with {}</a></p>\n",
        escape(link.href),
        escape(link.name)
    )
}

/// A page in the same look for outcomes without a form: expired, blocked, used up.
pub fn message_page(title: &str, text: &str, app_name: &str) -> String {
    document(app_name, title, &format!("<p>{}</p>\n", escape(text)))
}

pub(super) fn document(app_name: &str, heading: &str, body: &str) -> String {
    format!(
        concat!(
            "<!DOCTYPE html>\n",
            "<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
            "<meta name=\"referrer\" content=\"no-referrer\">\n",
            "<title>{heading} – {app}</title>\n<style>{style}</style>\n</head>\n<body>\n",
            "<main>\n<h1>{heading}</h1>\n{body}</main>\n</body>\n</html>\n"
        ),
        heading = escape(heading),
        app = escape(app_name),
        style = STYLE,
        body = body,
    )
}

/// Dark text on white (contrast above 12:1), a thick visible focus ring, and a single column
/// that fits 320 px.
const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:1.125rem/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:#1a1a1a;background:#fff}\
main{max-width:28rem;margin:0 auto;padding:2rem 1rem}\
h1{font-size:1.5rem;margin:0 0 1rem}h2{font-size:1.25rem;margin:2rem 0 .5rem}\
label{display:block;font-weight:600;margin-top:1rem}\
.help{color:#333;margin:.25rem 0 .5rem;font-size:1rem}\
input{width:100%;font:inherit;font-size:1.5rem;letter-spacing:.2em;padding:.5rem;border:2px solid #333;border-radius:4px}\
button{margin-top:1rem;width:100%;font:inherit;font-weight:600;padding:.75rem;border:0;border-radius:4px;background:#0b57d0;color:#fff;cursor:pointer}\
a{color:#0b57d0}\
button.secondary{background:#fff;color:#0b57d0;border:2px solid #0b57d0}\
a.button{display:block;text-align:center;font-weight:600;padding:.75rem;border:2px solid #0b57d0;border-radius:4px;text-decoration:none}\
input:focus,button:focus,a:focus{outline:3px solid #b3261e;outline-offset:2px}\
.error{color:#8c1d18;background:#fdecea;border-left:4px solid #b3261e;padding:.5rem .75rem}\
.alt{margin-top:1.5rem}\
@media (prefers-color-scheme:dark){body{color:#f0f0f0;background:#121212}.help{color:#ccc}input{background:#1e1e1e;color:#f0f0f0;border-color:#ccc}a{color:#8ab4f8}button.secondary{background:#121212;color:#8ab4f8;border-color:#8ab4f8}.error{color:#ffdad6;background:#410e0b}input:focus,button:focus,a:focus{outline-color:#ffb4ab}}";

/// The CSRF token for the challenge form: HMAC-SHA256 of the challenge id and the per-browser
/// `binding` cookie value under `key`, base64url. A form posted from another site lacks the
/// binding cookie's value; a token from another challenge or browser does not match.
pub fn csrf_token(key: &[u8], challenge_id: &str, binding: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key size");
    mac.update(b"gaitkeeper challenge-csrf v1\0");
    mac.update(&(challenge_id.len() as u64).to_be_bytes());
    mac.update(challenge_id.as_bytes());
    mac.update(binding.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether `presented` is the CSRF token for this challenge and browser (constant time).
pub fn check_csrf(key: &[u8], challenge_id: &str, binding: &str, presented: &str) -> bool {
    if presented.is_empty() || presented.len() > MAX_CSRF_BYTES || binding.is_empty() {
        return false;
    }
    let expected = csrf_token(key, challenge_id, binding);
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// A new challenge id: 192 bits from the operating system's random source, base64url (32
/// characters, safe in a URL path).
pub fn new_challenge_id() -> String {
    use rand::TryRngCore;
    let mut id = [0u8; 24];
    if rand::rngs::OsRng.try_fill_bytes(&mut id).is_err() {
        // Practically unreachable; the thread RNG is a CSPRNG seeded from the same source.
        id = rand::random();
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// The page a challenge shown inside the app's page ends on: it hands the one-time `proof`
/// to the page that showed it (its parent frame, or the window that opened the popup), on the
/// same origin only, so the page's script can resume the login. `proof` is URL-safe base64 and
/// `nonce` a plain token (both safe in the markup).
pub fn resume_page(app_name: &str, proof: &str, nonce: &str) -> String {
    let app = escape(app_name);
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="referrer" content="no-referrer"><title>Confirmed – {app}</title>
<style>body{{margin:0;font:1.125rem/1.5 system-ui,sans-serif;color:#1a1a1a;background:#fff}}main{{max-width:28rem;margin:0 auto;padding:2rem 1rem}}</style></head>
<body><main><h1>Thank you</h1><p>It's you. Continuing to {app}… If this window stays open, you can close it.</p></main>
<script nonce="{nonce}">(function () {{
  var message = {{gaitkeeper: {{resume: "{proof}"}}}}, w = window.opener;
  if (window.parent !== window) window.parent.postMessage(message, location.origin);
  else if (w) {{
    // A popup of the page, or the provider's window opened from the page's overlay frame
    // (then the page is the opener's parent). The page only takes it from its own origin.
    w.postMessage(message, location.origin);
    if (w.parent !== w) w.parent.postMessage(message, location.origin);
    window.close();
  }}
}})();</script>
</body></html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page<'a>() -> ChallengePage<'a> {
        ChallengePage {
            app_name: "Acme <Payroll> & \"Co\" 'n'",
            action: "/__gk/challenge/abc\"><script>",
            csrf_field: "csrf",
            csrf_token: "tok\"en",
            show_code_form: true,
            passkey: None,
            wrong_code: None,
            external: None,
            oidc: None,
        }
    }

    #[test]
    fn the_page_is_complete_accessible_and_has_the_form_fields() {
        let html = challenge_page(&page());
        assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
        assert!(html.contains("<meta name=\"viewport\""));
        assert!(html.contains(
            "<title>Confirm it&#39;s you – Acme &lt;Payroll&gt; &amp; &quot;Co&quot; &#39;n&#39;</title>"
        ));
        assert!(html.contains("<h1>Confirm it&#39;s you</h1>"));
        assert!(html.contains("We need to confirm it's you"));
        assert!(html.contains(
            "<form method=\"post\" action=\"/__gk/challenge/abc&quot;&gt;&lt;script&gt;\">"
        ));
        assert!(html.contains("<input type=\"hidden\" name=\"csrf\" value=\"tok&quot;en\">"));
        assert!(html.contains("<label for=\"code\">One-time code</label>"));
        let input = html
            .lines()
            .find(|l| l.starts_with("<input id=\"code\""))
            .expect("the code input");
        for attr in [
            "name=\"code\"",
            "autocomplete=\"one-time-code\"",
            "inputmode=\"numeric\"",
            "pattern=\"[0-9]*\"",
            "maxlength=\"6\"",
            "autofocus",
            "required",
        ] {
            assert!(input.contains(attr), "{attr} missing in {input}");
        }
        assert!(html.contains("<button type=\"submit\">"));
        assert!(
            !html.contains("role=\"alert\""),
            "no error on a first visit"
        );
        assert!(html.contains("outline:"), "a visible focus style");
    }

    #[test]
    fn no_script_no_external_resource_and_no_unescaped_input() {
        let mut p = page();
        p.wrong_code = Some(2);
        p.external = Some(ExternalLink {
            name: "<b>Okta</b>",
            href: "https://mfa.example/?a=1&b=\"2\"",
            new_window: false,
        });
        let html = challenge_page(&p);
        assert!(!html.to_lowercase().contains("<script"), "{html}");
        assert!(!html.contains("<b>"));
        assert!(!html.contains("src="));
        assert!(!html.contains("<link"));
        assert!(!html.contains("Payroll>"));
        assert!(html.contains("<a href=\"https://mfa.example/?a=1&amp;b=&quot;2&quot;\">Use &lt;b&gt;Okta&lt;/b&gt;</a>"));
    }

    #[test]
    fn a_wrong_code_shows_an_alert_with_attempts_left() {
        let mut p = page();
        p.wrong_code = Some(2);
        let html = challenge_page(&p);
        assert!(html.contains("role=\"alert\""));
        assert!(html.contains("2 attempts are left."));
        assert!(html.contains("aria-describedby=\"code-help code-error\""));
        p.wrong_code = Some(1);
        assert!(challenge_page(&p).contains("1 attempt is left."));
    }

    #[test]
    fn external_only_pages_have_the_link_and_no_form() {
        let mut p = page();
        p.show_code_form = false;
        p.external = Some(ExternalLink {
            name: "Duo",
            href: "/__gk/challenge/abc/external",
            new_window: false,
        });
        let html = challenge_page(&p);
        assert!(!html.contains("<form"));
        assert!(html.contains("<a href=\"/__gk/challenge/abc/external\">Use Duo</a>"));
        // In the page's overlay frame, the provider opens in a window that can hand the
        // passed challenge back to the page.
        p.external.as_mut().unwrap().new_window = true;
        let html = challenge_page(&p);
        assert!(html.contains(
            "<a href=\"/__gk/challenge/abc/external\" target=\"_blank\" rel=\"opener\">Use Duo</a>"
        ));
    }

    #[test]
    fn the_oidc_button_is_offered_escaped_with_or_without_the_code_form() {
        let mut p = page();
        p.oidc = Some(ExternalLink {
            name: "Acme <SSO>",
            href: "/__gk/challenge/abc/oidc",
            new_window: false,
        });
        let html = challenge_page(&p);
        assert!(html.contains("<form"), "the code form stays");
        assert!(html.contains(
            "<a class=\"button\" href=\"/__gk/challenge/abc/oidc\">Continue with Acme &lt;SSO&gt;</a>"
        ));
        p.show_code_form = false;
        let html = challenge_page(&p);
        assert!(!html.contains("<form"));
        assert!(html.contains("Continue with"));
        assert!(!html.contains("No way to confirm"));
        p.oidc.as_mut().unwrap().new_window = true;
        assert!(challenge_page(&p).contains("target=\"_blank\" rel=\"opener\""));
    }

    #[test]
    fn message_pages_escape_and_share_the_look() {
        let html = message_page("Link expired", "Start <again> & sign in.", "A&B");
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("<title>Link expired – A&amp;B</title>"));
        assert!(html.contains("<p>Start &lt;again&gt; &amp; sign in.</p>"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn csp_allows_only_inline_style_and_own_form() {
        assert!(CHALLENGE_CSP.contains("default-src 'none'"));
        assert!(CHALLENGE_CSP.contains("form-action 'self'"));
        assert!(CHALLENGE_CSP.contains("frame-ancestors 'none'"));
        assert!(!CHALLENGE_CSP.contains("script-src"));
    }

    #[test]
    fn csrf_tokens_bind_challenge_and_browser() {
        let key = b"0123456789abcdef0123456789abcdef";
        let t = csrf_token(key, "cid1", "browser1");
        assert_eq!(t.len(), 43);
        assert!(check_csrf(key, "cid1", "browser1", &t));
        assert!(!check_csrf(key, "cid2", "browser1", &t));
        assert!(!check_csrf(key, "cid1", "browser2", &t));
        assert!(!check_csrf(
            b"another key, also 32 bytes long!",
            "cid1",
            "browser1",
            &t
        ));
        assert!(!check_csrf(key, "cid1", "", &csrf_token(key, "cid1", "")));
        assert!(!check_csrf(key, "cid1", "browser1", ""));
        assert!(!check_csrf(key, "cid1", "browser1", &t[..42]));
        assert!(!check_csrf(key, "cid1", "browser1", &"A".repeat(10_000)));
        // The id/binding boundary is unambiguous.
        assert_ne!(csrf_token(key, "ab", "c"), csrf_token(key, "a", "bc"));
    }

    #[test]
    fn challenge_ids_are_long_url_safe_and_distinct() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| new_challenge_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }
}
