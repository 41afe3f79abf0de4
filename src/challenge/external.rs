//! External MFA: the signed request that sends the browser to the operator's MFA provider, and
//! the check of the signed assertion the provider sends back.
//!
//! The protocol (see docs/configuration.md, "Step-up MFA"):
//! - gaitkeeper redirects to `url?request=<JWT>`, the JWT signed with HS256 and
//!   `request_secret`, claims `iss` = our `audience`, `aud` = the provider's `issuer`, `sub` =
//!   the login name, `cid` = the challenge id, `return_url`, `iat`, `exp`, `jti`.
//! - the provider sends the browser to the return URL with `assertion=<JWT>`, signed with the
//!   ONE configured algorithm and key, claims `iss` = `issuer`, `aud` = `audience`, `sub`,
//!   `cid`, `jti`, `exp` (optionally `nbf`, `iat`) and `result` = `"pass"`.
//!
//! The verifying algorithm is fixed by the config, never taken from the token's header, so
//! `alg: none` and HS/RS confusion are refused. Each assertion is accepted once (its `jti` is
//! remembered until it expires). Owns only these checks: matching `cid` and `sub` to a held
//! login is the caller's. Never logs tokens, secrets or keys.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{ConfigError, HumanDuration, Secret};

/// Longest assertion looked at; a real one is well under 2 KiB.
pub const MAX_ASSERTION_BYTES: usize = 8 * 1024;
/// Longest lifetime an assertion may claim (`exp` beyond `now` + this is refused), which also
/// bounds how long its `jti` must be remembered.
pub const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Largest public key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;
/// DER of the object identifier of the P-256 curve (prime256v1, 1.2.840.10045.3.1.7).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

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
    fn jwt(self) -> Algorithm {
        match self {
            AssertionAlgorithm::HS256 => Algorithm::HS256,
            AssertionAlgorithm::RS256 => Algorithm::RS256,
            AssertionAlgorithm::ES256 => Algorithm::ES256,
        }
    }

    fn name(self) -> &'static str {
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
    pem: Vec<u8>,
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
    fn decoding_key(&self) -> Result<DecodingKey, KeyError> {
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

impl ExternalMfaConfig {
    /// Checks run once at load; `invalid(key, message)` places the error in the file.
    pub(crate) fn validate(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let text_ok = |t: &str, max: usize| {
            !t.trim().is_empty() && t.len() <= max && !t.chars().any(char::is_control)
        };
        if !text_ok(&self.name, 60) {
            return Err(invalid(
                "mfa.external.name",
                "expected a name of 1 to 60 characters".into(),
            ));
        }
        if !text_ok(&self.issuer, 256) {
            return Err(invalid(
                "mfa.external.issuer",
                "expected the provider's identifier, 1 to 256 characters".into(),
            ));
        }
        if !text_ok(&self.audience, 256) {
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

    /// The provider URL to redirect the browser to: `url` plus `request=<JWT>` (HS256,
    /// `request_secret`) naming the challenge, the user and where to send the answer, valid for
    /// `ttl` from `now`.
    pub fn request_url(
        &self,
        challenge_id: &str,
        user_login_name: &str,
        return_url: &str,
        now: SystemTime,
        ttl: Duration,
    ) -> String {
        let iat = unix_secs(now);
        let claims = RequestClaims {
            iss: &self.audience,
            aud: &self.issuer,
            sub: user_login_name,
            cid: challenge_id,
            return_url,
            iat,
            exp: iat.saturating_add(ttl.as_secs()),
            jti: random_id(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(self.request_secret.expose()),
        )
        .expect("HS256 signing with an in-memory key cannot fail");
        let mut url = self.url.0.clone();
        url.query_pairs_mut().append_pair("request", &token);
        url.into()
    }
}

#[derive(Serialize)]
struct RequestClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    cid: &'a str,
    return_url: &'a str,
    iat: u64,
    exp: u64,
    jti: String,
}

/// What a valid assertion says. The caller checks `challenge_id` names a held login and
/// `user` is that login's user before replaying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// The `cid` claim: the challenge this answers.
    pub challenge_id: String,
    /// The `sub` claim: the login name the provider confirmed.
    pub user: String,
    /// The `jti` claim (already marked used).
    pub id: String,
    /// The `exp` claim.
    pub expires_at: SystemTime,
}

impl Assertion {
    /// Whether this assertion answers the held challenge `challenge_id` of `user` (the login
    /// name the request named). Constant time: the challenge id is a bearer secret.
    pub fn answers(&self, challenge_id: &str, user: &str) -> bool {
        use subtle::ConstantTimeEq;
        let same =
            |a: &str, b: &str| a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()));
        same(&self.challenge_id, challenge_id) & same(&self.user, user)
    }
}

/// Why an assertion was refused. The `reason` codes are metric labels and audit codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the assertion is empty or longer than {MAX_ASSERTION_BYTES} bytes")]
    TooLarge,
    #[error("the assertion is not a well-formed JWT")]
    Malformed,
    #[error("the assertion is not signed with the configured algorithm")]
    WrongAlgorithm,
    #[error("the assertion's signature does not verify with the configured key")]
    BadSignature,
    #[error("the assertion has expired")]
    Expired,
    #[error("the assertion is not valid yet (nbf or iat in the future)")]
    NotYetValid,
    #[error("the assertion claims a lifetime longer than the 15 minutes accepted")]
    TooLongLived,
    #[error("the assertion's issuer is not the configured provider")]
    WrongIssuer,
    #[error("the assertion is meant for another audience")]
    WrongAudience,
    #[error("the assertion lacks the required claim `{0}`")]
    MissingClaim(&'static str),
    #[error("the provider reports the challenge as not passed")]
    Failed {
        /// The challenge the failed answer is for, so the caller can count it.
        challenge_id: String,
    },
    #[error("the assertion was already used")]
    Reused,
    #[error("too many unexpired assertions to remember; try again shortly")]
    Busy,
}

impl AssertionError {
    pub fn reason(&self) -> &'static str {
        match self {
            AssertionError::TooLarge => "too_large",
            AssertionError::Malformed => "malformed",
            AssertionError::WrongAlgorithm => "wrong_algorithm",
            AssertionError::BadSignature => "bad_signature",
            AssertionError::Expired => "expired",
            AssertionError::NotYetValid => "not_yet_valid",
            AssertionError::TooLongLived => "too_long_lived",
            AssertionError::WrongIssuer => "wrong_issuer",
            AssertionError::WrongAudience => "wrong_audience",
            AssertionError::MissingClaim(_) => "missing_claim",
            AssertionError::Failed { .. } => "failed",
            AssertionError::Reused => "reused",
            AssertionError::Busy => "busy",
        }
    }
}

/// The claims read from an assertion; all optional so a missing one is reported by name.
#[derive(Deserialize)]
struct AssertionClaims {
    sub: Option<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    cid: Option<String>,
    jti: Option<String>,
    result: Option<String>,
}

/// Verifies the provider's assertions and remembers the ids of accepted ones until they expire.
pub struct AssertionVerifier {
    key: DecodingKey,
    validation: Validation,
    algorithm: AssertionAlgorithm,
    leeway: u64,
    /// `jti` → `exp` of every assertion accepted and not yet expired.
    seen: Mutex<HashMap<String, u64>>,
    capacity: usize,
}

impl AssertionVerifier {
    /// A verifier for `config` remembering at most `capacity` used assertion ids (at least 1;
    /// `mfa.max_held` is a good value: each held login is answered once). When full of
    /// unexpired ids it refuses new assertions ([`AssertionError::Busy`]) rather than forget one.
    pub fn new(config: &ExternalMfaConfig, capacity: usize) -> Result<Self, KeyError> {
        let algorithm = config.assertion.algorithm;
        let mut validation = Validation::new(algorithm.jwt());
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        // Times are checked against the caller's `now` below, not the library's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Ok(AssertionVerifier {
            key: config.assertion.decoding_key()?,
            validation,
            algorithm,
            leeway: config.leeway.0.as_secs(),
            seen: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        })
    }

    /// Accepts a signed assertion once. On success its `jti` is used up: the same assertion
    /// gives [`AssertionError::Reused`] afterwards, as does a replayed failed one.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Assertion, AssertionError> {
        if token.is_empty() || token.len() > MAX_ASSERTION_BYTES {
            return Err(AssertionError::TooLarge);
        }
        // Name the algorithm problem precisely (`none`, HS/RS swaps); the library would refuse
        // these too, since it only accepts `validation.algorithms`.
        if header_algorithm(token)? != self.algorithm.name() {
            return Err(AssertionError::WrongAlgorithm);
        }
        let data = jsonwebtoken::decode::<AssertionClaims>(token, &self.key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AssertionError::BadSignature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AssertionError::WrongAlgorithm
                }
                ErrorKind::InvalidIssuer => AssertionError::WrongIssuer,
                ErrorKind::InvalidAudience => AssertionError::WrongAudience,
                ErrorKind::MissingRequiredClaim(claim) => {
                    AssertionError::MissingClaim(match claim.as_str() {
                        "exp" => "exp",
                        "iss" => "iss",
                        "aud" => "aud",
                        _ => "sub",
                    })
                }
                _ => AssertionError::Malformed,
            })?;
        let claims = data.claims;
        let now = unix_secs(now);
        let exp = claims.exp.ok_or(AssertionError::MissingClaim("exp"))?;
        if exp.saturating_add(self.leeway) < now {
            return Err(AssertionError::Expired);
        }
        if exp > now.saturating_add(MAX_ASSERTION_LIFETIME.as_secs() + self.leeway) {
            return Err(AssertionError::TooLongLived);
        }
        let future = |t: Option<u64>| t.is_some_and(|t| t > now.saturating_add(self.leeway));
        if future(claims.nbf) || future(claims.iat) {
            return Err(AssertionError::NotYetValid);
        }
        let sub = required(claims.sub, "sub", 1024)?;
        let cid = required(claims.cid, "cid", 256)?;
        let jti = required(claims.jti, "jti", 256)?;
        let result = required(claims.result, "result", 64)?;
        self.use_once(&jti, exp, now)?;
        if result != "pass" {
            return Err(AssertionError::Failed { challenge_id: cid });
        }
        Ok(Assertion {
            challenge_id: cid,
            user: sub,
            id: jti,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
        })
    }

    /// Marks `jti` used until `exp`; refuses it if it already was.
    fn use_once(&self, jti: &str, exp: u64, now: u64) -> Result<(), AssertionError> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.contains_key(jti) {
            return Err(AssertionError::Reused);
        }
        if seen.len() >= self.capacity {
            // An id whose assertion has expired can never verify again: forget those.
            let leeway = self.leeway;
            seen.retain(|_, exp| exp.saturating_add(leeway) >= now);
            if seen.len() >= self.capacity {
                return Err(AssertionError::Busy);
            }
        }
        seen.insert(jti.to_string(), exp);
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

/// The `alg` named in a token's header, read without trusting anything else in it.
fn header_algorithm(token: &str) -> Result<String, AssertionError> {
    #[derive(Deserialize)]
    struct AlgOnly {
        alg: String,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed);
    };
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AssertionError::Malformed)?;
    let parsed: AlgOnly = serde_json::from_slice(&json).map_err(|_| AssertionError::Malformed)?;
    Ok(parsed.alg)
}

fn required(
    value: Option<String>,
    claim: &'static str,
    max: usize,
) -> Result<String, AssertionError> {
    match value {
        Some(v) if v.len() > max => Err(AssertionError::Malformed),
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(AssertionError::MissingClaim(claim)),
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 128 random bits, base64url.
fn random_id() -> String {
    let id: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

mod defaults {
    use super::*;

    pub fn name() -> String {
        "your organisation's sign-in".to_string()
    }
    pub fn audience() -> String {
        "gaitkeeper".to_string()
    }
    pub fn leeway() -> HumanDuration {
        HumanDuration::secs(30)
    }
}

#[cfg(test)]
mod tests;
