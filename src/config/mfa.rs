//! The `mfa:` section: the built-in TOTP check, the external provider (its URL, the
//! signed-request secret and the assertion key, read and checked at load) and the held-login
//! bounds. The checks of codes and assertions are `challenge`'s.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use crate::config::{ConfigError, HumanDuration, Secret};

/// Largest public key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// DER of the object identifier of the P-256 curve (prime256v1, 1.2.840.10045.3.1.7).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Step-up MFA: how a login that policy wants confirmed is challenged.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaConfig {
    /// The built-in TOTP check (codes from an authenticator app, enrolled with
    /// `gaitkeeper users enroll-totp`).
    #[serde(default)]
    pub totp: TotpConfig,
    /// Passkeys (WebAuthn): registered by users at a trusted moment, offered at challenges.
    #[serde(default)]
    pub passkeys: PasskeysConfig,
    /// An external MFA provider the browser is sent to, answering with a signed assertion.
    #[serde(default)]
    pub external: Option<ExternalMfaConfig>,
    /// The operator's OpenID Connect provider: the user signs in there again (see
    /// `config::oidc`).
    #[serde(default)]
    pub oidc: Option<super::OidcConfig>,
    /// How long a held login waits for its challenge to be answered (30s to 1h).
    #[serde(default = "defaults::challenge_ttl")]
    pub challenge_ttl: HumanDuration,
    /// Most logins held for a challenge at once (1 to 1000000); more are refused.
    #[serde(default = "defaults::max_held")]
    pub max_held: usize,
    /// Most memory the held logins (their request bodies and headers) may take, in bytes
    /// (1 MiB to 4 GiB).
    #[serde(default = "defaults::max_held_bytes")]
    pub max_held_bytes: usize,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            totp: TotpConfig::default(),
            passkeys: PasskeysConfig::default(),
            external: None,
            oidc: None,
            challenge_ttl: defaults::challenge_ttl(),
            max_held: defaults::max_held(),
            max_held_bytes: defaults::max_held_bytes(),
        }
    }
}

/// The built-in TOTP check.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpConfig {
    /// Offer the TOTP code form to users who have a TOTP secret enrolled.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Wrong codes allowed per challenge before it is used up (1 to 20).
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
}

impl Default for TotpConfig {
    fn default() -> Self {
        TotpConfig {
            enabled: true,
            max_attempts: defaults::max_attempts(),
        }
    }
}

/// Passkeys (`mfa.passkeys`).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeysConfig {
    /// Offer passkeys at challenges (to users who registered one) and on enrolment pages.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// The relying party id passkeys are bound to: a host name that is the app's host or a
    /// parent domain of it (`example.com` for `login.example.com`). Default: the host the
    /// browser used. Set it when an app is reached under several names, or before moving it:
    /// a passkey works only under the id it was registered for. Never an IP address.
    #[serde(default)]
    pub rp_id: Option<String>,
}

impl Default for PasskeysConfig {
    fn default() -> Self {
        PasskeysConfig {
            enabled: true,
            rp_id: None,
        }
    }
}

mod defaults {
    use super::*;

    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn max_attempts() -> u32 {
        5
    }
    pub(super) fn challenge_ttl() -> HumanDuration {
        HumanDuration::secs(5 * 60)
    }
    pub(super) fn max_held() -> usize {
        10_000
    }
    pub(super) fn max_held_bytes() -> usize {
        64 << 20
    }
    pub(super) fn name() -> String {
        "your organisation's sign-in".to_string()
    }
    pub(super) fn audience() -> String {
        "gaitkeeper".to_string()
    }
    pub(super) fn leeway() -> HumanDuration {
        HumanDuration::secs(30)
    }
}

impl MfaConfig {
    /// Checks that span several keys; `invalid(key, message)` places the error in the file.
    pub(crate) fn validate(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if !(1..=20).contains(&self.totp.max_attempts) {
            return Err(invalid(
                "mfa.totp.max_attempts",
                format!(
                    "expected 1 to 20 attempts, found {}",
                    self.totp.max_attempts
                ),
            ));
        }
        let ttl = self.challenge_ttl.0;
        if ttl < Duration::from_secs(30) || ttl > Duration::from_secs(3600) {
            return Err(invalid(
                "mfa.challenge_ttl",
                "expected 30s to 1h: long enough to open an authenticator app, short enough that a held login does not linger".into(),
            ));
        }
        if !(1..=1_000_000).contains(&self.max_held) {
            return Err(invalid(
                "mfa.max_held",
                format!("expected 1 to 1000000 held logins, found {}", self.max_held),
            ));
        }
        if !((1u64 << 20)..=(4u64 << 30)).contains(&(self.max_held_bytes as u64)) {
            return Err(invalid(
                "mfa.max_held_bytes",
                format!(
                    "expected 1048576 (1 MiB) to 4294967296 (4 GiB) bytes, found {}",
                    self.max_held_bytes
                ),
            ));
        }
        if let Some(rp_id) = &self.passkeys.rp_id {
            let host = url::Host::parse(rp_id);
            if !matches!(host, Ok(url::Host::Domain(_))) || rp_id.contains(':') {
                return Err(invalid(
                    "mfa.passkeys.rp_id",
                    format!("expected a host name such as example.com (no scheme, port or IP address), found `{rp_id}`"),
                ));
            }
        }
        if let Some(external) = &self.external {
            external.validate(invalid)?;
        }
        if let Some(oidc) = &self.oidc {
            oidc.validate(invalid)?;
        }
        Ok(())
    }
}

/// The operator's external MFA provider (`mfa.external`).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalMfaConfig {
    /// The provider's name, shown on the challenge page as "Use <name>".
    #[serde(default = "defaults::name")]
    pub name: String,
    /// Where the browser is sent, with `?request=<JWT>` added: an http or https URL.
    pub url: ProviderUrl,
    /// The provider's identifier: the `aud` of our request and the `iss` its assertions must
    /// carry.
    pub issuer: String,
    /// gaitkeeper's identifier: the `iss` of our request and the `aud` its assertions must
    /// carry. Default: `gaitkeeper`.
    #[serde(default = "defaults::audience")]
    pub audience: String,
    /// HS256 key signing the request JWT (shared with the provider).
    pub request_secret: Secret,
    /// How the provider's assertions are signed.
    pub assertion: AssertionConfig,
    /// Clock difference tolerated on `exp`, `nbf` and `iat` (at most 5m).
    #[serde(default = "defaults::leeway")]
    pub leeway: HumanDuration,
}

/// The algorithm and key of the provider's assertions: `secret` for HS256, `public_key_file`
/// for RS256 and ES256 — exactly one, matching the algorithm.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssertionConfig {
    /// The one algorithm accepted; any other in a token's header is refused.
    pub algorithm: AssertionAlgorithm,
    /// The shared secret (HS256 only).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A PEM file with the provider's public key (RS256: RSA, ES256: EC P-256).
    #[serde(default)]
    pub public_key_file: Option<PublicKeyFile>,
}

/// The signing algorithms an assertion may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
pub enum AssertionAlgorithm {
    HS256,
    RS256,
    ES256,
}

impl AssertionAlgorithm {
    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            AssertionAlgorithm::HS256 => Algorithm::HS256,
            AssertionAlgorithm::RS256 => Algorithm::RS256,
            AssertionAlgorithm::ES256 => Algorithm::ES256,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            AssertionAlgorithm::HS256 => "HS256",
            AssertionAlgorithm::RS256 => "RS256",
            AssertionAlgorithm::ES256 => "ES256",
        }
    }
}

/// The provider's URL, checked when the config is read.
#[derive(Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(
    with = "String",
    description = "An http or https URL, e.g. \"https://mfa.example.com/verify\"."
)]
pub struct ProviderUrl(pub url::Url);

impl<'de> Deserialize<'de> for ProviderUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "expected an http or https URL such as \"https://mfa.example.com/verify\", found {text:?}"
            ))
        };
        if text.len() > 2048 {
            return Err(serde::de::Error::custom(
                "the URL is longer than 2048 characters",
            ));
        }
        let url = url::Url::parse(text.trim()).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none_or(str::is_empty)
            || url.fragment().is_some()
        {
            return Err(bad());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(serde::de::Error::custom(
                "the URL must not contain a user name or password; secrets never go in this file",
            ));
        }
        Ok(ProviderUrl(url))
    }
}

/// A public key read from a PEM file when the config is loaded.
#[derive(Clone, JsonSchema)]
#[schemars(
    with = "String",
    description = "Path of a PEM file holding a public key (\"-----BEGIN PUBLIC KEY-----\")."
)]
pub struct PublicKeyFile {
    pub path: PathBuf,
    pub(crate) pem: Vec<u8>,
}

impl fmt::Debug for PublicKeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKeyFile({})", self.path.display())
    }
}

impl<'de> Deserialize<'de> for PublicKeyFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = PathBuf::from(String::deserialize(d)?);
        let cannot = |e: String| {
            serde::de::Error::custom(format!("cannot read public key file {path:?}: {e}"))
        };
        let size = std::fs::metadata(&path)
            .map_err(|e| cannot(e.to_string()))?
            .len();
        if size > MAX_KEY_FILE_BYTES {
            return Err(cannot(format!(
                "it is {size} bytes; a PEM public key is a few hundred"
            )));
        }
        let pem = std::fs::read(&path).map_err(|e| cannot(e.to_string()))?;
        if !pem.windows(10).any(|w| w == b"-----BEGIN") {
            return Err(cannot(
                "it is not PEM; expected a \"-----BEGIN PUBLIC KEY-----\" block".into(),
            ));
        }
        Ok(PublicKeyFile { path, pem })
    }
}

/// Why the configured assertion key cannot be used. Reported at load with the key's place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{algorithm} needs `{needed}`")]
    Missing {
        algorithm: &'static str,
        needed: &'static str,
    },
    #[error("{algorithm} takes only `{wanted}`; remove `{extra}`")]
    Extra {
        algorithm: &'static str,
        wanted: &'static str,
        extra: &'static str,
    },
    #[error("{path} does not hold a {kind} public key in PEM form (\"-----BEGIN PUBLIC KEY-----\"): {reason}")]
    BadPem {
        path: String,
        kind: &'static str,
        reason: String,
    },
}

impl AssertionConfig {
    /// The verifying key, or why the configured key does not fit the algorithm.
    pub(crate) fn decoding_key(&self) -> Result<DecodingKey, KeyError> {
        let algorithm = self.algorithm.name();
        match (self.algorithm, &self.secret, &self.public_key_file) {
            (AssertionAlgorithm::HS256, Some(secret), None) => {
                Ok(DecodingKey::from_secret(secret.expose()))
            }
            (AssertionAlgorithm::HS256, _, Some(_)) => Err(KeyError::Extra {
                algorithm,
                wanted: "secret",
                extra: "public_key_file",
            }),
            (AssertionAlgorithm::HS256, None, None) => Err(KeyError::Missing {
                algorithm,
                needed: "secret",
            }),
            (_, Some(_), _) => Err(KeyError::Extra {
                algorithm,
                wanted: "public_key_file",
                extra: "secret",
            }),
            (_, None, None) => Err(KeyError::Missing {
                algorithm,
                needed: "public_key_file",
            }),
            (alg, None, Some(file)) => {
                let bad = |kind, reason: String| KeyError::BadPem {
                    path: file.path.display().to_string(),
                    kind,
                    reason,
                };
                if alg == AssertionAlgorithm::RS256 {
                    DecodingKey::from_rsa_pem(&file.pem).map_err(|e| bad("RSA", e.to_string()))
                } else {
                    let key = DecodingKey::from_ec_pem(&file.pem)
                        .map_err(|e| bad("EC", e.to_string()))?;
                    // The library takes any EC key here; one on another curve would then fail
                    // every signature at run time instead of at load.
                    if !pem_mentions(&file.pem, P256_OID) {
                        return Err(bad("EC", "ES256 needs a key on the P-256 curve".into()));
                    }
                    Ok(key)
                }
            }
        }
    }
}

/// Whether `t` is a name or an identifier a config may hold: not blank, at most `max` bytes, no
/// control characters (it is shown on pages and sent in requests).
pub(super) fn plain_text(t: &str, max: usize) -> bool {
    !t.trim().is_empty() && t.len() <= max && !t.chars().any(char::is_control)
}

impl ExternalMfaConfig {
    /// Checks run once at load; `invalid(key, message)` places the error in the file.
    pub(crate) fn validate(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if !plain_text(&self.name, 60) {
            return Err(invalid(
                "mfa.external.name",
                "expected a name of 1 to 60 characters".into(),
            ));
        }
        if !plain_text(&self.issuer, 256) {
            return Err(invalid(
                "mfa.external.issuer",
                "expected the provider's identifier, 1 to 256 characters".into(),
            ));
        }
        if !plain_text(&self.audience, 256) {
            return Err(invalid(
                "mfa.external.audience",
                "expected gaitkeeper's identifier, 1 to 256 characters".into(),
            ));
        }
        if self.leeway.0 > Duration::from_secs(300) {
            return Err(invalid(
                "mfa.external.leeway",
                "expected at most 5m; fix the clocks instead (NTP)".into(),
            ));
        }
        if let Err(e) = self.assertion.decoding_key() {
            let key = match e {
                KeyError::BadPem { .. } => "mfa.external.assertion.public_key_file",
                _ => "mfa.external.assertion",
            };
            return Err(invalid(key, e.to_string()));
        }
        if let Some(secret) = &self.assertion.secret {
            // The browser carries our request JWT; with one shared key it could be turned
            // into an assertion by whoever can make one with the same claims.
            if secret.expose() == self.request_secret.expose() {
                return Err(invalid(
                    "mfa.external.assertion.secret",
                    "must differ from `mfa.external.request_secret`: use one secret per direction"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

/// Whether the DER inside a PEM text contains `needle`.
fn pem_mentions(pem: &[u8], needle: &[u8]) -> bool {
    let body: String = String::from_utf8_lossy(pem)
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .flat_map(|line| line.trim().chars())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .is_ok_and(|der| der.windows(needle.len()).any(|w| w == needle))
}
