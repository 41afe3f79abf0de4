//! Passkeys (WebAuthn) as a second factor: the relying party a request belongs to, the
//! registration and authentication ceremonies (webauthn-rs), and the script of the pages that
//! run them in the browser.
//!
//! A ceremony's state goes out with its page, sealed (XChaCha20-Poly1305 under a key derived
//! from `secrets.key`) and bound to what it is for — the held login's challenge id, or the
//! invitation or offer it enrols from — and to an expiry. So any instance finishes what
//! another began, nothing is stored before the user acts, and a state is good for its one held
//! login (taken once when it passes) or its one enrolment (used once) only.
//!
//! Pure: no I/O, and every check takes `now`. Never logs a credential or a state.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use webauthn_rs::prelude::{
    CredentialID, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

/// How long a ceremony begun by a page may be finished.
pub const CEREMONY_TTL: Duration = Duration::from_secs(10 * 60);
/// How long the browser waits for an authenticator after the button is pressed: long enough
/// to find a security key, short enough that a missing one soon lets the user choose another
/// way.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest sealed state or credential (JSON) looked at; real ones are under 2 KiB.
pub const MAX_FIELD_BYTES: usize = 16 * 1024;
/// Most passkeys one user may register (every one is offered at each challenge).
pub const MAX_PER_USER: usize = 10;
/// Name of the form field carrying the sealed state.
pub const STATE_FIELD: &str = "passkey_state";
/// Name of the form field carrying the browser's answer (JSON).
pub const CREDENTIAL_FIELD: &str = "passkey_credential";

/// Why a passkey was not accepted (or a ceremony cannot begin).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasskeyError {
    /// Passkeys need a host name: WebAuthn refuses IP addresses as relying party ids.
    #[error("passkeys need a host name, not `{0}` (set mfa.passkeys.rp_id, or reach the app by its name)")]
    NoHostName(String),
    /// The relying party id and origin do not fit together.
    #[error("the relying party `{rp_id}` cannot be used from `{origin}`: {why}")]
    BadRelyingParty {
        rp_id: String,
        origin: String,
        why: String,
    },
    /// The state is not one we sealed for this purpose (another challenge, another key, damaged).
    #[error("the passkey ceremony is not this page's")]
    NotThisCeremony,
    /// The ceremony began too long ago.
    #[error("the passkey ceremony expired")]
    Expired,
    /// The browser's answer could not be read.
    #[error("the browser's answer is malformed")]
    Malformed,
    /// The answer was read and refused (signature, challenge, origin, unknown credential…).
    #[error("the passkey was refused: {0}")]
    Refused(String),
}

impl PasskeyError {
    /// A short, stable reason for the audit trail.
    pub fn reason(&self) -> &'static str {
        match self {
            PasskeyError::NoHostName(_) => "passkey_no_host_name",
            PasskeyError::BadRelyingParty { .. } => "passkey_bad_relying_party",
            PasskeyError::NotThisCeremony => "passkey_not_this_ceremony",
            PasskeyError::Expired => "passkey_expired",
            PasskeyError::Malformed => "passkey_malformed",
            PasskeyError::Refused(_) => "passkey_refused",
        }
    }
}

/// Whom a passkey is for: the relying party id (a host name, the passkey is bound to it) and
/// the origin the browser must report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelyingParty {
    pub id: String,
    pub origin: String,
}

impl RelyingParty {
    /// The relying party of a request that reached us as `scheme://authority`: its id is
    /// `configured` (`mfa.passkeys.rp_id`) or the authority's host; the origin is the request's.
    pub fn of_request(
        configured: Option<&str>,
        scheme: &str,
        authority: &str,
    ) -> Result<RelyingParty, PasskeyError> {
        let origin = format!("{scheme}://{}", authority.to_ascii_lowercase());
        let url = Url::parse(&origin).map_err(|_| PasskeyError::NoHostName(authority.into()))?;
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.to_string(),
            _ => return Err(PasskeyError::NoHostName(authority.into())),
        };
        let id = configured.map(str::to_ascii_lowercase).unwrap_or(host);
        let rp = RelyingParty {
            id,
            origin: url.origin().ascii_serialization(),
        };
        rp.webauthn("check")?;
        Ok(rp)
    }

    fn webauthn(&self, name: &str) -> Result<Webauthn, PasskeyError> {
        let bad = |why: String| PasskeyError::BadRelyingParty {
            rp_id: self.id.clone(),
            origin: self.origin.clone(),
            why,
        };
        let origin = Url::parse(&self.origin).map_err(|e| bad(e.to_string()))?;
        WebauthnBuilder::new(&self.id, &origin)
            .map_err(|e| bad(e.to_string()))?
            .rp_name(name)
            .timeout(BROWSER_TIMEOUT)
            .build()
            .map_err(|e| bad(e.to_string()))
    }
}

/// What a page's ceremony is for; part of what its state is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Passing the challenge with this id.
    Challenge,
    /// Registering from the invitation or offer with this id.
    Enrol,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Challenge => b"challenge",
            Purpose::Enrol => b"enrol",
        }
    }
}

/// A ceremony's state as it rides in its page.
#[derive(Serialize, Deserialize)]
struct Sealed {
    rp: RelyingParty,
    expires: u64,
    /// The webauthn-rs state (JSON).
    state: String,
}

/// A passkey that passed: which one, and its new form when its counter moved (store it).
#[derive(Debug)]
pub struct Used {
    pub credential_id: Vec<u8>,
    pub updated: Option<Passkey>,
}

/// Begins and finishes ceremonies; one per process, keys derived from `secrets.key`.
pub struct Ceremonies {
    seal: super::sealed::Sealer,
    user_handles: Vec<u8>,
}

impl Ceremonies {
    pub fn new(secret: &[u8]) -> Ceremonies {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"gaitkeeper passkeys"), secret);
        let mut handles = [0u8; 32];
        hkdf.expand(b"gaitkeeper/passkey-user-handle/v1", &mut handles)
            .expect("32 bytes is a valid HKDF length");
        Ceremonies {
            seal: super::sealed::Sealer::derive(secret, b"gaitkeeper/passkey-ceremony/v1"),
            user_handles: handles.to_vec(),
        }
    }

    /// The WebAuthn user handle of the user with store key `user_key`: stable, and telling
    /// nothing of the name (an HMAC).
    pub fn user_handle(&self, user_key: &[u8]) -> Uuid {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.user_handles).expect("any key size");
        mac.update(user_key);
        let bytes: [u8; 16] = mac.finalize().into_bytes()[..16]
            .try_into()
            .expect("16 of 32 bytes");
        Uuid::from_bytes(bytes)
    }

    /// Begins registering a passkey for `user_name` (shown by the authenticator), excluding
    /// the credentials they have. The options for the page (JSON) and the sealed state.
    #[allow(clippy::too_many_arguments)]
    pub fn start_registration(
        &self,
        rp: &RelyingParty,
        app_name: &str,
        handle: Uuid,
        user_name: &str,
        existing: &[Passkey],
        binding: &str,
        now: u64,
    ) -> Result<(String, String), PasskeyError> {
        let webauthn = rp.webauthn(app_name)?;
        let exclude: Vec<CredentialID> = existing.iter().map(|p| p.cred_id().clone()).collect();
        let (options, state) = webauthn
            .start_passkey_registration(
                handle,
                user_name,
                user_name,
                (!exclude.is_empty()).then_some(exclude),
            )
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        let options = serde_json::to_string(&options).map_err(|_| PasskeyError::Malformed)?;
        let state = serde_json::to_string(&state).map_err(|_| PasskeyError::Malformed)?;
        Ok((options, self.seal(rp, state, Purpose::Enrol, binding, now)))
    }

    /// Finishes a registration begun for `binding`: the new passkey and the relying party it
    /// belongs to.
    pub fn finish_registration(
        &self,
        sealed: &str,
        binding: &str,
        credential: &str,
        now: u64,
    ) -> Result<(Passkey, RelyingParty), PasskeyError> {
        let (rp, state) = self.open(sealed, Purpose::Enrol, binding, now)?;
        let state: PasskeyRegistration =
            serde_json::from_str(&state).map_err(|_| PasskeyError::NotThisCeremony)?;
        let answer: RegisterPublicKeyCredential =
            parse(credential).ok_or(PasskeyError::Malformed)?;
        let passkey = rp
            .webauthn("gaitkeeper")?
            .finish_passkey_registration(&answer, &state)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        Ok((passkey, rp))
    }

    /// Begins an authentication with any of `passkeys` (the user's, for this relying party).
    pub fn start_authentication(
        &self,
        rp: &RelyingParty,
        passkeys: &[Passkey],
        binding: &str,
        now: u64,
    ) -> Result<(String, String), PasskeyError> {
        let (options, state) = rp
            .webauthn("gaitkeeper")?
            .start_passkey_authentication(passkeys)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        let options = serde_json::to_string(&options).map_err(|_| PasskeyError::Malformed)?;
        let state = serde_json::to_string(&state).map_err(|_| PasskeyError::Malformed)?;
        Ok((
            options,
            self.seal(rp, state, Purpose::Challenge, binding, now),
        ))
    }

    /// Finishes an authentication begun for `binding` against the user's `passkeys` (read
    /// anew: one removed since the page was shown no longer passes).
    pub fn finish_authentication(
        &self,
        sealed: &str,
        binding: &str,
        credential: &str,
        passkeys: &[Passkey],
        now: u64,
    ) -> Result<Used, PasskeyError> {
        let (rp, state) = self.open(sealed, Purpose::Challenge, binding, now)?;
        let state: PasskeyAuthentication =
            serde_json::from_str(&state).map_err(|_| PasskeyError::NotThisCeremony)?;
        let answer: PublicKeyCredential = parse(credential).ok_or(PasskeyError::Malformed)?;
        let used: Vec<u8> = answer.raw_id.to_vec();
        // The state lists the credentials offered when the page was shown; one removed since
        // must not pass, so the answer's credential must still be the user's.
        let Some(stored) = passkeys
            .iter()
            .find(|p| p.cred_id().as_slice() == used.as_slice())
        else {
            return Err(PasskeyError::Refused(
                "not one of the user's passkeys".into(),
            ));
        };
        let result = rp
            .webauthn("gaitkeeper")?
            .finish_passkey_authentication(&answer, &state)
            .map_err(|e| PasskeyError::Refused(e.to_string()))?;
        let mut updated = stored.clone();
        let changed = updated.update_credential(&result).unwrap_or(false);
        Ok(Used {
            credential_id: used,
            updated: changed.then_some(updated),
        })
    }

    fn aad(purpose: Purpose, binding: &str) -> Vec<u8> {
        let mut aad = b"gaitkeeper passkey ceremony v1\0".to_vec();
        aad.extend_from_slice(purpose.tag());
        aad.push(0);
        aad.extend_from_slice(binding.as_bytes());
        aad
    }

    fn seal(
        &self,
        rp: &RelyingParty,
        state: String,
        purpose: Purpose,
        binding: &str,
        now: u64,
    ) -> String {
        let plain = rmp_serde::to_vec_named(&Sealed {
            rp: rp.clone(),
            expires: now + CEREMONY_TTL.as_secs(),
            state,
        })
        .expect("a ceremony state always serialises");
        self.seal.seal(&Self::aad(purpose, binding), &plain)
    }

    fn open(
        &self,
        sealed: &str,
        purpose: Purpose,
        binding: &str,
        now: u64,
    ) -> Result<(RelyingParty, String), PasskeyError> {
        let plain = self
            .seal
            .open(&Self::aad(purpose, binding), sealed, MAX_FIELD_BYTES)
            .ok_or(PasskeyError::NotThisCeremony)?;
        let sealed: Sealed =
            rmp_serde::from_slice(&plain).map_err(|_| PasskeyError::NotThisCeremony)?;
        if now > sealed.expires {
            return Err(PasskeyError::Expired);
        }
        Ok((sealed.rp, sealed.state))
    }
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Option<T> {
    if json.len() > MAX_FIELD_BYTES {
        return None;
    }
    serde_json::from_str(json).ok()
}

/// The script of a page with a passkey button (`#passkey-button`): reads the options from the
/// JSON block `#passkey-options`, runs the ceremony (`create` or `get`), puts the browser's
/// answer into the form `#passkey-form`'s `passkey_credential` field and posts it. Binary
/// values travel as base64url, as webauthn-rs reads them. Runs under a CSP nonce.
pub fn script(nonce: &str, ceremony: Ceremony) -> String {
    let call = match ceremony {
        Ceremony::Register => "create",
        Ceremony::Authenticate => "get",
    };
    format!(
        r#"<script nonce="{nonce}">(function () {{
  var button = document.getElementById("passkey-button"), error = document.getElementById("passkey-error");
  if (!button) return;
  if (!window.PublicKeyCredential || !navigator.credentials) {{
    button.disabled = true;
    error.textContent = "This browser cannot use passkeys. Use another way below.";
    error.hidden = false;
    return;
  }}
  function bytes(text) {{
    var s = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    var out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out.buffer;
  }}
  function text(buffer) {{
    if (!buffer) return null;
    var b = new Uint8Array(buffer), s = "";
    for (var i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }}
  function ids(list) {{
    (list || []).forEach(function (c) {{ c.id = bytes(c.id); }});
  }}
  button.addEventListener("click", function () {{
    error.hidden = true;
    var options = JSON.parse(document.getElementById("passkey-options").textContent).publicKey;
    options.challenge = bytes(options.challenge);
    if (options.user) options.user.id = bytes(options.user.id);
    ids(options.allowCredentials);
    ids(options.excludeCredentials);
    navigator.credentials.{call}({{publicKey: options}}).then(function (c) {{
      var r = c.response, answer = {{id: c.id, rawId: text(c.rawId), type: c.type,
        extensions: c.getClientExtensionResults ? c.getClientExtensionResults() : {{}}, response: {{clientDataJSON: text(r.clientDataJSON)}}}};
      if (r.attestationObject) {{
        answer.response.attestationObject = text(r.attestationObject);
        if (r.getTransports) answer.response.transports = r.getTransports();
      }} else {{
        answer.response.authenticatorData = text(r.authenticatorData);
        answer.response.signature = text(r.signature);
        answer.response.userHandle = text(r.userHandle);
      }}
      var form = document.getElementById("passkey-form");
      form.elements["{credential}"].value = JSON.stringify(answer);
      form.submit();
    }}, function () {{
      error.textContent = "The passkey was not used. Try again, or use another way below.";
      error.hidden = false;
    }});
  }});
}})();</script>
"#,
        credential = CREDENTIAL_FIELD,
    )
}

/// Which ceremony a page's script runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ceremony {
    Register,
    Authenticate,
}

/// The passkey part of a page: the button, the options, and the form that posts the answer
/// with the sealed `state` (and a CSRF field) to `action`. Everything interpolated is escaped.
pub fn section(
    button: &str,
    action: &str,
    csrf: (&str, &str),
    options_json: &str,
    state: &str,
) -> String {
    use crate::wire::escape_html as escape;
    // A JSON data block is not run; `<` is escaped so the block cannot be closed early.
    let options = options_json.replace('<', "\\u003c");
    format!(
        concat!(
            "<form method=\"post\" action=\"{action}\" id=\"passkey-form\">\n",
            "<input type=\"hidden\" name=\"{csrf_field}\" value=\"{csrf_token}\">\n",
            "<input type=\"hidden\" name=\"{state_field}\" value=\"{state}\">\n",
            "<input type=\"hidden\" name=\"{credential_field}\" value=\"\">\n",
            "<button type=\"button\" id=\"passkey-button\">{button}</button>\n",
            "</form>\n",
            "<p class=\"error\" role=\"alert\" id=\"passkey-error\" hidden></p>\n",
            "<script type=\"application/json\" id=\"passkey-options\">{options}</script>\n"
        ),
        action = escape(action),
        csrf_field = escape(csrf.0),
        csrf_token = escape(csrf.1),
        state_field = STATE_FIELD,
        state = escape(state),
        credential_field = CREDENTIAL_FIELD,
        button = escape(button),
        options = options,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp() -> RelyingParty {
        RelyingParty::of_request(None, "http", "LocalHost:8080").unwrap()
    }

    #[test]
    fn the_relying_party_is_the_request_host_or_the_configured_id_never_an_address() {
        let rp = rp();
        assert_eq!(rp.id, "localhost");
        assert_eq!(rp.origin, "http://localhost:8080");
        let named =
            RelyingParty::of_request(Some("example.com"), "https", "login.example.com").unwrap();
        assert_eq!(
            (named.id.as_str(), named.origin.as_str()),
            ("example.com", "https://login.example.com")
        );
        for address in ["127.0.0.1:8080", "[::1]:8080", "", "exa mple.com"] {
            assert!(
                RelyingParty::of_request(None, "http", address).is_err(),
                "{address}"
            );
        }
        assert!(matches!(
            RelyingParty::of_request(Some("other.org"), "https", "login.example.com"),
            Err(PasskeyError::BadRelyingParty { .. })
        ));
    }

    #[test]
    fn a_ceremony_state_opens_for_its_purpose_and_binding_until_it_expires() {
        let c = Ceremonies::new(b"secret key of thirty-two bytes..");
        let handle = c.user_handle(b"user-key");
        assert_eq!(handle, c.user_handle(b"user-key"), "stable");
        assert_ne!(handle, c.user_handle(b"other-user"));
        let (options, state) = c
            .start_registration(&rp(), "Acme", handle, "alice", &[], "inv-1", 1_000)
            .unwrap();
        assert!(options.contains("\"challenge\""), "{options}");
        assert!(!options.contains("alice@") && options.contains("localhost"));
        // The state does not open for another binding, purpose or key, nor after it expired;
        // what opens is then refused by WebAuthn (the answer here is not a real one).
        let answer = "{}";
        assert_eq!(
            c.finish_registration(&state, "inv-2", answer, 1_001)
                .unwrap_err(),
            PasskeyError::NotThisCeremony
        );
        assert_eq!(
            c.finish_authentication(&state, "inv-1", answer, &[], 1_001)
                .unwrap_err(),
            PasskeyError::NotThisCeremony
        );
        let other = Ceremonies::new(b"another key of thirty-two bytes.");
        assert_eq!(
            other
                .finish_registration(&state, "inv-1", answer, 1_001)
                .unwrap_err(),
            PasskeyError::NotThisCeremony
        );
        assert_eq!(
            c.finish_registration(&state, "inv-1", answer, 1_000 + CEREMONY_TTL.as_secs() + 1)
                .unwrap_err(),
            PasskeyError::Expired
        );
        assert_eq!(
            c.finish_registration(&state, "inv-1", answer, 1_001)
                .unwrap_err(),
            PasskeyError::Malformed
        );
        assert_eq!(
            c.finish_registration("not base64 ✗", "inv-1", answer, 1_001)
                .unwrap_err(),
            PasskeyError::NotThisCeremony
        );
        let huge = "A".repeat(MAX_FIELD_BYTES + 1);
        assert_eq!(
            c.finish_registration(&huge, "inv-1", answer, 1_001)
                .unwrap_err(),
            PasskeyError::NotThisCeremony
        );
    }

    #[test]
    fn the_section_escapes_what_it_shows() {
        let html = section(
            "Use a passkey",
            "/__gk/challenge/a\"b",
            ("csrf", "t<"),
            "{\"x\":\"</script><script>\"}",
            "s\"",
        );
        assert!(html.contains("action=\"/__gk/challenge/a&quot;b\""));
        assert!(html.contains("value=\"t&lt;\""));
        assert!(!html.contains("</script><script>"), "{html}");
        assert!(script("n0nce", Ceremony::Authenticate).contains("navigator.credentials.get"));
        assert!(script("n0nce", Ceremony::Register).contains("navigator.credentials.create"));
    }
}
