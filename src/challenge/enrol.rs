//! Enrolling an authenticator from an operator's invitation (`gaitkeeper users invite`): the
//! secret the invitation's page shows (derived from the invitation id under a key from
//! `secrets.key`, so every instance shows the same one and nothing is stored before the user
//! proves they scanned it), the QR code drawn as inline SVG (no script, no image request), and
//! the pages. Never logs a secret or an invitation id.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::page::document;
use crate::wire::escape_html as escape;

/// Bytes of an enrolled secret (160 bits, as `users enroll-totp` makes).
const SECRET_BYTES: usize = 20;

/// The TOTP secret invitation `id` enrols, under `key` (derived from `secrets.key`).
pub fn secret_for(key: &[u8], id: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key size");
    mac.update(b"gaitkeeper enrolment secret v1\0");
    mac.update(id.as_bytes());
    mac.finalize().into_bytes()[..SECRET_BYTES].to_vec()
}

/// The `otpauth://` URI an authenticator scans, and the secret in base32 for typing in.
pub fn otpauth(secret: &[u8], app_name: &str) -> Option<(String, String)> {
    let totp = totp_rs::Builder::new()
        .with_secret(secret.to_vec())
        .with_account_name(app_name)
        .with_issuer(Some(app_name))
        .build()
        .ok()?;
    let uri = totp.to_url().ok()?;
    let base32 = totp_rs::Secret::from(secret.to_vec()).to_base32();
    Some((uri, base32))
}

/// `text` as a QR code in inline SVG (dark modules as one path), or `None` when too long.
pub fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let mut path = String::new();
    for (i, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = (i % width + 4, i / width + 4);
            path.push_str(&format!("M{x} {y}h1v1h-1z"));
        }
    }
    let size = width + 8;
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" width=\"240\" height=\"240\" role=\"img\" aria-label=\"QR code to scan with your authenticator app\" shape-rendering=\"crispEdges\"><rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/><path d=\"{path}\" fill=\"#000\"/></svg>"
    ))
}

/// What the enrolment page shows.
pub struct EnrolPage<'a> {
    pub app_name: &'a str,
    pub action: &'a str,
    pub csrf_field: &'a str,
    pub csrf_token: &'a str,
    pub uri: &'a str,
    pub base32: &'a str,
    /// The code typed last was not right.
    pub wrong_code: bool,
    /// The passkey button (HTML from `passkey::section` and its script), when passkeys can
    /// be registered here.
    pub passkey: Option<&'a str>,
    /// The passkey offered last was not taken (why, for the user).
    pub passkey_error: Option<&'a str>,
    /// HTML shown first (an offer's: why the page is shown); `None` on an invitation's page.
    pub lead: Option<&'a str>,
    /// HTML shown last (an offer's "not now").
    pub footer: Option<&'a str>,
    /// Offer an authenticator app (not to a user who has one: it is never replaced here).
    pub totp: bool,
}

/// The page that enrols a factor: a passkey (one button), or an authenticator app (scan or
/// type the secret, then confirm with a code).
pub fn enrol_page(p: &EnrolPage) -> String {
    let mut body = String::from(p.lead.unwrap_or_default());
    if let Some(passkey) = p.passkey {
        if p.lead.is_none() {
            body.push_str(&format!(
                "<p>Protect your sign-in to {app}: add a passkey.</p>\n",
                app = escape(p.app_name)
            ));
        }
        body.push_str("<p class=\"help\">With a passkey, your device (fingerprint, face or screen lock) or security key confirms it's you when a sign-in needs one more step.</p>\n");
        if let Some(error) = p.passkey_error {
            body.push_str(&format!(
                "<p class=\"error\" role=\"alert\">{}</p>\n",
                escape(error)
            ));
        }
        body.push_str(passkey);
        if p.totp {
            body.push_str("<h2>Or an authenticator app</h2>\n");
        }
    }
    if p.totp {
        totp_part(p, &mut body);
    }
    if p.passkey.is_none() && !p.totp {
        body.push_str("<p>There is nothing to add here: passkeys cannot be used at this address. Ask your administrator.</p>\n");
    }
    body.push_str(p.footer.unwrap_or_default());
    let title = if p.passkey.is_some() || p.lead.is_some() {
        "Protect your account"
    } else {
        "Add an authenticator"
    };
    document(p.app_name, title, &body)
}

/// The authenticator-app part of an enrolment page: scan (or type) the secret, then confirm
/// it with a code.
fn totp_part(p: &EnrolPage, body: &mut String) {
    const APPS: &str = "an authenticator app (Google Authenticator, Microsoft Authenticator, 1Password, …). It gives you a code when a sign-in needs one more step.";
    let about = if p.passkey.is_some() {
        format!("<p>Or use {APPS}</p>\n")
    } else if p.lead.is_some() {
        format!("<p>Add {APPS}</p>\n")
    } else {
        format!(
            "<p>Protect your sign-in to {}: add {APPS}</p>\n",
            escape(p.app_name)
        )
    };
    body.push_str(&about);
    body.push_str("<p>1. Scan this code with the app:</p>\n");
    if let Some(svg) = qr_svg(p.uri) {
        body.push_str(&format!("<p class=\"qr\">{svg}</p>\n"));
    }
    body.push_str(&format!(
        "<p class=\"help\">Or type this key into the app: <code id=\"secret\">{}</code></p>\n",
        escape(p.base32)
    ));
    if p.wrong_code {
        body.push_str("<p class=\"error\" role=\"alert\" id=\"code-error\">That code was not right. Check the app shows the code for this account and try again.</p>\n");
    }
    body.push_str(&format!(
        concat!(
            "<form method=\"post\" action=\"{action}\">\n",
            "<input type=\"hidden\" name=\"{csrf_field}\" value=\"{csrf_token}\">\n",
            "<label for=\"code\">2. Enter the 6-digit code the app shows</label>\n",
            "<input id=\"code\" name=\"code\" type=\"text\" autocomplete=\"one-time-code\" inputmode=\"numeric\" pattern=\"[0-9]*\" maxlength=\"6\"{autofocus} required>\n",
            "<button type=\"submit\">Add the authenticator</button>\n",
            "</form>\n"
        ),
        action = escape(p.action),
        csrf_field = escape(p.csrf_field),
        csrf_token = escape(p.csrf_token),
        // The page opens at its top (the passkey, the simpler way) when there is one.
        autofocus = if p.passkey.is_some() { "" } else { " autofocus" },
    ));
}

/// The page after enrolling a `passkey` (else an authenticator app): the recovery codes,
/// shown this once, and `next` (HTML) — what to do now.
pub fn enrolled_page(app_name: &str, passkey: bool, codes: &[String], next: &str) -> String {
    let mut body = String::from(if passkey {
        "<p>Your passkey is set up. When a sign-in needs one more step, you will be asked to use it.</p>\n"
    } else {
        "<p>Your authenticator is set up. When a sign-in needs one more step, enter the code it shows.</p>\n"
    });
    if !codes.is_empty() {
        body.push_str("<p><strong>Keep these recovery codes somewhere safe</strong> (print them, or store them in your password manager). Each works once, if you lose your authenticator or passkey. They are not shown again.</p>\n<ul class=\"codes\">\n");
        for code in codes {
            body.push_str(&format!("<li><code>{}</code></li>\n", escape(code)));
        }
        body.push_str("</ul>\n");
    }
    body.push_str(next);
    document(
        app_name,
        if passkey {
            "Passkey added"
        } else {
            "Authenticator added"
        },
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_depends_on_the_invitation_and_the_key_and_scans() {
        let a = secret_for(b"key-one", "invitation-1");
        assert_eq!(a.len(), SECRET_BYTES);
        assert_eq!(
            a,
            secret_for(b"key-one", "invitation-1"),
            "every instance alike"
        );
        assert_ne!(a, secret_for(b"key-one", "invitation-2"));
        assert_ne!(a, secret_for(b"key-two", "invitation-1"));
        let (uri, base32) = otpauth(&a, "Acme <Payroll>").unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&base32));
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<path d=\"M"));
        let page = enrol_page(&EnrolPage {
            app_name: "Acme <Payroll>",
            action: "/__gk/enrol/x\"y",
            csrf_field: "csrf",
            csrf_token: "t",
            uri: &uri,
            base32: &base32,
            wrong_code: false,
            passkey: None,
            passkey_error: None,
            lead: None,
            footer: None,
            totp: true,
        });
        assert!(page.contains("Acme &lt;Payroll&gt;") && !page.contains("Acme <Payroll>"));
        assert!(page.contains("action=\"/__gk/enrol/x&quot;y\""));
        assert!(!page.contains("<script"), "works without JavaScript");
        let done = enrolled_page(
            "Acme",
            false,
            &["abcde-fghjk".to_string()],
            "<p>You can close this page.</p>",
        );
        assert!(done.contains("<code>abcde-fghjk</code>"));
    }
}
