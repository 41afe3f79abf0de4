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

use crate::runtime::unix_secs;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Longest assertion looked at; a real one is well under 2 KiB.
pub(crate) const MAX_ASSERTION_BYTES: usize = 8 * 1024;
/// Longest lifetime an assertion may claim (`exp` beyond `now` + this is refused), which also
/// bounds how long its `jti` must be remembered.
pub(crate) const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(15 * 60);

pub use crate::config::{
    AssertionAlgorithm, AssertionConfig, ExternalMfaConfig, KeyError, ProviderUrl, PublicKeyFile,
};

impl ExternalMfaConfig {
    /// The provider URL to redirect the browser to: `url` plus `request=<JWT>` (HS256,
    /// `request_secret`) naming the challenge, the user and where to send the answer, valid for
    /// `ttl` from `now`.
    pub(crate) fn request_url(
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

/// 128 random bits, base64url.
fn random_id() -> String {
    let id: [u8; 16] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

#[cfg(test)]
mod tests;
