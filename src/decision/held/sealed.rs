//! A held login as it leaves this process for the shared state: serialised and sealed
//! (XChaCha20-Poly1305 under a key derived from `secrets.key`, so every instance with the same
//! config opens what another sealed), with the row's key — the SHA-256 of the challenge id or
//! resume proof — as associated data: a sealed login moved to another row does not open.
//! Nothing of the login, not even its app or user, is written beside it in clear.

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::HeldLogin;
use crate::decision::LoginAttempt;
use crate::features::{FeatureVector, PasswordRhythm};
use crate::policy::{Action, FactorCheck, Finding, Inputs, Mode, Verdict};
use crate::store::UserKey;

const NONCE: usize = 24;

/// The key a held login is kept under in the shared state: the SHA-256 of its challenge id
/// (or resume proof), so the database never holds what answers a challenge.
pub(crate) fn row_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// Seals and opens held logins.
pub(crate) struct HeldSeal(XChaCha20Poly1305);

impl HeldSeal {
    pub(crate) fn derive(secret: &[u8]) -> HeldSeal {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"gaitkeeper held logins"), secret);
        let mut key = [0u8; 32];
        hkdf.expand(b"gaitkeeper/held-login/v1", &mut key)
            .expect("32 bytes is a valid HKDF length");
        HeldSeal(XChaCha20Poly1305::new(&key.into()))
    }

    /// `login` sealed for the row `key`: the nonce, then the ciphertext with its tag.
    pub(crate) fn seal(&self, key: &[u8; 32], login: &HeldLogin) -> Vec<u8> {
        let plain =
            rmp_serde::to_vec_named(&Kept::of(login)).expect("a held login always serialises");
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: key,
                },
            )
            .expect("encrypting a bounded buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// The login sealed for `key`; `None` when it was sealed for another row, with another
    /// key, or is damaged.
    pub(crate) fn open(&self, key: &[u8; 32], sealed: &[u8]) -> Option<HeldLogin> {
        if sealed.len() <= NONCE {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE);
        let plain = self
            .0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: key,
                },
            )
            .ok()?;
        rmp_serde::from_slice::<Kept>(&plain).ok()?.into_login()
    }
}

/// What is sealed: the held login's request and the attempt as judged. Named fields
/// (MessagePack maps), so a newer version can add one and still open older rows.
#[derive(Serialize, Deserialize)]
struct Kept {
    app: String,
    route: String,
    login: String,
    user: [u8; 32],
    client_ip: String,
    incident: String,
    request_id: String,
    features: Option<KeptFeatures>,
    risk: Option<f64>,
    /// The reasons as JSON text.
    reasons: String,
    decision: Action,
    action: Action,
    rule: String,
    mode: Mode,
    method: String,
    uri: String,
    headers: Vec<(String, Bytes)>,
    body: Bytes,
    binding: String,
    xhr: bool,
    /// Unix milliseconds; absent in rows sealed before it was kept.
    #[serde(default)]
    held_at_ms: Option<u64>,
    /// What the policy was asked (`policy::Inputs`); absent in rows sealed before it was
    /// kept, whose records then name no finding.
    #[serde(default)]
    finding: Option<String>,
    #[serde(default)]
    regulation: Option<Action>,
    #[serde(default)]
    model_risk: Option<f64>,
    #[serde(default)]
    factor: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct KeptFeatures {
    version: u32,
    values: Vec<f64>,
    press_press: Vec<f64>,
    dwell: Vec<f64>,
    clean: bool,
}

impl Kept {
    fn of(held: &HeldLogin) -> Kept {
        let a = &held.attempt;
        Kept {
            app: a.app.clone(),
            route: a.route.clone(),
            login: a.login.clone(),
            user: *a.user.as_bytes(),
            client_ip: a.client_ip.clone(),
            incident: a.incident.clone(),
            request_id: a.request_id.clone(),
            features: a.features.as_ref().map(|f| KeptFeatures {
                version: f.version,
                values: f.values.to_vec(),
                press_press: f.password.press_press.clone(),
                dwell: f.password.dwell.clone(),
                clean: f.password.clean,
            }),
            risk: a.risk,
            reasons: a.reasons.to_string(),
            decision: a.verdict.decision,
            action: a.verdict.action,
            rule: a.verdict.rule.to_string(),
            mode: a.mode,
            method: held.method.to_string(),
            uri: held.uri.to_string(),
            headers: held
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            body: held.body.clone(),
            binding: held.binding.clone(),
            xhr: held.xhr,
            held_at_ms: Some(crate::runtime::unix_millis(held.held_at)),
            finding: a.inputs.map(|i| i.finding.code().to_string()),
            regulation: match a.inputs.map(|i| i.finding) {
                Some(Finding::Regulated { action }) => Some(action),
                _ => None,
            },
            model_risk: a.inputs.and_then(|i| i.model_risk),
            factor: a
                .inputs
                .and_then(|i| i.factor)
                .map(|f| f.as_str().to_string()),
        }
    }

    fn into_login(self) -> Option<HeldLogin> {
        let features = match self.features {
            Some(f) => Some(FeatureVector {
                version: f.version,
                values: f.values.try_into().ok()?,
                password: PasswordRhythm {
                    press_press: f.press_press,
                    dwell: f.dwell,
                    clean: f.clean,
                },
            }),
            None => None,
        };
        let attempt = LoginAttempt {
            app: self.app,
            route: self.route,
            login: self.login,
            user: UserKey::from_slice(&self.user)?,
            client_ip: self.client_ip,
            incident: self.incident,
            request_id: self.request_id,
            features,
            risk: self.risk,
            reasons: serde_json::from_str(&self.reasons).ok()?,
            verdict: Verdict {
                decision: self.decision,
                action: self.action,
                rule: crate::policy::rule_named(&self.rule)?,
            },
            // A held login was challenged, so it was held: never `unheld`.
            inputs: self
                .finding
                .as_deref()
                .and_then(|code| Finding::from_code(code, self.risk, self.regulation))
                .map(|finding| Inputs {
                    finding,
                    model_risk: self.model_risk,
                    factor: self.factor.as_deref().and_then(FactorCheck::named),
                    unheld: false,
                }),
            mode: self.mode,
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            headers.push((
                http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                http::HeaderValue::from_maybe_shared(value).ok()?,
            ));
        }
        Some(HeldLogin::from_parts(
            attempt,
            self.method.parse().ok()?,
            self.uri.parse().ok()?,
            headers,
            self.body,
            self.binding,
            self.xhr,
            // A row sealed by an older version: "now" is the safe side, since a second factor
            // must be proven after it (an older OpenID Connect sign-in is then refused).
            self.held_at_ms
                .map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
                .unwrap_or_else(std::time::SystemTime::now),
        ))
    }
}
