//! Page tokens: a short-lived JWT the capture script carries from the login page to the
//! login submit. It proves the telemetry came from a page gaitkeeper served, for this route,
//! to this client, recently, and only once.
//!
//! The algorithm is fixed to HS256 with a key derived from the server secret; a token that
//! names any other algorithm is rejected. Never logs tokens or keys.

use std::time::{Duration, SystemTime};

use base64::Engine;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::replay::{self, TokenId, UsedIds};

/// The claims inside a page token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PageClaims {
    /// Random token id; a second use of the same id is a replay.
    pub jti: String,
    /// The route name the page belongs to.
    pub rt: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Issued at, milliseconds since the epoch: how long the page was open decides whether
    /// the payload's own timeline fits. Absent in tokens of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iatms: Option<u64>,
    /// When the page this token belongs to was served (ms since the epoch): the issue time of
    /// the page's first token, carried through renewals and the fresh tokens of login answers,
    /// so a long-lived page's timeline is checked against its whole life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgms: Option<u64>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Binding to the client: a keyed hash of its IP address (optional) and User-Agent.
    pub cb: String,
}

/// Why a page token was not accepted. The `reason` codes are metric labels and audit codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the page token is malformed")]
    Malformed,
    #[error("the page token's signature or algorithm is not ours")]
    BadSignature,
    #[error("the page token has expired")]
    Expired,
    #[error("the page token was issued for another login route")]
    WrongRoute,
    #[error("the page token was issued to another client")]
    WrongClient,
    #[error("the page token was already used")]
    Replayed,
}

impl TokenError {
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::WrongRoute => "wrong_route",
            TokenError::WrongClient => "wrong_client",
            TokenError::Replayed => "replayed",
        }
    }
}

/// Who the token is bound to.
pub struct Client<'a> {
    pub ip: &'a str,
    pub user_agent: &'a str,
}

/// Issues and verifies page tokens; remembers used token ids until they expire.
pub struct PageTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    binding_key: Vec<u8>,
    /// Ids of tokens already used, each remembered until its own token expires.
    used: UsedIds,
}

/// Clock skew tolerated between instances.
const LEEWAY_SECS: u64 = 5;

impl PageTokens {
    /// `secret` is the server key; separate keys are derived for signing and client binding
    /// so that neither use can be turned against the other.
    pub fn new(secret: &[u8]) -> Self {
        let signing = derive(secret, b"gaitkeeper page-token v1");
        PageTokens {
            encoding: EncodingKey::from_secret(&signing),
            decoding: DecodingKey::from_secret(&signing),
            binding_key: derive(secret, b"gaitkeeper client-binding v1"),
            used: UsedIds::new(replay::CAPACITY),
        }
    }

    pub fn issue(&self, route: &str, client: &Client, bind_ip: bool, ttl: Duration) -> String {
        self.issue_at_ms(route, client, bind_ip, ttl, now_ms(), None)
    }

    /// A new token for a page that is already open: served at `page_ms` (from an earlier
    /// token of the page), or, when that is unknown, starting a new page epoch now.
    pub(crate) fn reissue(
        &self,
        route: &str,
        client: &Client,
        bind_ip: bool,
        ttl: Duration,
        page_ms: Option<u64>,
    ) -> String {
        self.issue_at_ms(route, client, bind_ip, ttl, now_ms(), page_ms)
    }

    /// Issues a token as if the time were `now` (seconds since the epoch): for tests of
    /// expiry without waiting.
    pub fn issue_at(
        &self,
        route: &str,
        client: &Client,
        bind_ip: bool,
        ttl: Duration,
        now: u64,
    ) -> String {
        self.issue_at_ms(route, client, bind_ip, ttl, now * 1000, None)
    }

    fn issue_at_ms(
        &self,
        route: &str,
        client: &Client,
        bind_ip: bool,
        ttl: Duration,
        now_ms: u64,
        page_ms: Option<u64>,
    ) -> String {
        let id: [u8; 16] = rand::random();
        let now = now_ms / 1000;
        let claims = PageClaims {
            jti: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id),
            rt: route.to_string(),
            iat: now,
            iatms: Some(now_ms),
            pgms: Some(page_ms.unwrap_or(now_ms).min(now_ms)),
            exp: now + ttl.as_secs(),
            cb: self.binding(client, bind_ip),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail")
    }

    /// Verifies a token for `route` and `client`, and marks it used. Only the first
    /// successful verification of a token id succeeds; later ones are replays.
    pub fn verify_once(
        &self,
        token: &str,
        route: &str,
        client: &Client,
        bind_ip: bool,
    ) -> Result<PageClaims, TokenError> {
        let (claims, id, until) = self.verify_unused(token, route, client, bind_ip)?;
        if !self.first_use(id, until) {
            return Err(TokenError::Replayed);
        }
        Ok(claims)
    }

    /// Verifies a token for `route` and `client` without marking it used: its claims, its id
    /// and until when its use must be remembered. The caller marks it used, here
    /// ([`PageTokens::first_use`]) or in the state several instances share.
    pub(crate) fn verify_unused(
        &self,
        token: &str,
        route: &str,
        client: &Client,
        bind_ip: bool,
    ) -> Result<(PageClaims, TokenId, u64), TokenError> {
        let claims = self.verify_signed(token, client, bind_ip, false)?;
        if claims.rt != route {
            return Err(TokenError::WrongRoute);
        }
        let id: TokenId = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&claims.jti)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(TokenError::Malformed)?;
        let until = claims.exp.saturating_add(LEEWAY_SECS);
        Ok((claims, id, until))
    }

    /// Marks a verified token id used in this process until `until`; false when it was used
    /// before (a replay). Atomic: of two concurrent uses, exactly one is fresh.
    pub(crate) fn first_use(&self, id: TokenId, until: u64) -> bool {
        self.used.first_use(id, until, now_secs())
    }

    /// Renews a page's token (`/__gk/token`): a token of ours for this client, unused, and
    /// expired for at most [`RENEW_GRACE_SECS`] (a laptop that slept past its renewal), gets a
    /// new one for the same route and page. `reset` starts a new page epoch (the script
    /// cleared its telemetry). The old token stays usable until it expires.
    pub(crate) fn renew(
        &self,
        token: &str,
        client: &Client,
        bind_ip: bool,
        ttl: Duration,
        reset: bool,
    ) -> Result<String, TokenError> {
        let claims = self.verify_signed(token, client, bind_ip, true)?;
        let id: TokenId = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&claims.jti)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(TokenError::Malformed)?;
        if self.used.was_used(id, now_secs()) {
            return Err(TokenError::Replayed);
        }
        let page = if reset {
            None
        } else {
            claims.pgms.or(claims.iatms).or(Some(claims.iat * 1000))
        };
        Ok(self.reissue(&claims.rt, client, bind_ip, ttl, page))
    }

    /// Checks signature, algorithm, times and client binding (not the route, not reuse).
    /// With `renewing`, an expired token is accepted for [`RENEW_GRACE_SECS`] more.
    fn verify_signed(
        &self,
        token: &str,
        client: &Client,
        bind_ip: bool,
        renewing: bool,
    ) -> Result<PageClaims, TokenError> {
        if token.is_empty() || token.len() > 2048 {
            return Err(TokenError::Malformed);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = if renewing {
            RENEW_GRACE_SECS
        } else {
            LEEWAY_SECS
        };
        validation.set_required_spec_claims(&["exp", "iat"]);
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<PageClaims>(token, &self.decoding, &validation).map_err(
            |e| {
                use jsonwebtoken::errors::ErrorKind::*;
                match e.kind() {
                    ExpiredSignature => TokenError::Expired,
                    InvalidSignature | InvalidAlgorithm | InvalidAlgorithmName => {
                        TokenError::BadSignature
                    }
                    _ => TokenError::Malformed,
                }
            },
        )?;
        let claims = data.claims;
        if claims.iat > now_secs() + LEEWAY_SECS {
            return Err(TokenError::Malformed);
        }
        let expected = self.binding(client, bind_ip);
        if !constant_time_eq(expected.as_bytes(), claims.cb.as_bytes()) {
            return Err(TokenError::WrongClient);
        }
        Ok(claims)
    }

    /// How many used token ids are remembered now (a gauge for operators).
    pub fn remembered(&self) -> usize {
        self.used.count(now_secs())
    }

    fn binding(&self, client: &Client, bind_ip: bool) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.binding_key).expect("any key size");
        mac.update(if bind_ip { client.ip.as_bytes() } else { b"" });
        mac.update(b"\0");
        mac.update(client.user_agent.as_bytes());
        let digest = mac.finalize().into_bytes();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
    }
}

fn derive(secret: &[u8], label: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key size");
    mac.update(label);
    mac.finalize().into_bytes().to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// How long after expiry a page's token may still be renewed: a day, the longest a page's
/// telemetry may span (`telemetry::MAX_PAGE_MS`).
pub(crate) const RENEW_GRACE_SECS: u64 = 86_400;

fn now_ms() -> u64 {
    crate::runtime::unix_millis(SystemTime::now())
}

fn now_secs() -> u64 {
    crate::runtime::unix_secs(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const ALICE: Client = Client {
        ip: "192.0.2.1",
        user_agent: "Firefox",
    };
    const TTL: Duration = Duration::from_secs(600);

    #[test]
    fn a_fresh_token_verifies_once_then_is_a_replay() {
        let tokens = PageTokens::new(SECRET);
        let token = tokens.issue("login", &ALICE, true, TTL);
        let claims = tokens.verify_once(&token, "login", &ALICE, true).unwrap();
        assert_eq!(claims.rt, "login");
        assert_eq!(
            tokens.verify_once(&token, "login", &ALICE, true),
            Err(TokenError::Replayed)
        );
    }

    #[test]
    fn a_renewed_token_is_a_new_single_use_token_of_the_same_page() {
        let tokens = PageTokens::new(SECRET);
        let first = tokens.issue("login", &ALICE, true, TTL);
        let page_ms = tokens
            .verify_signed(&first, &ALICE, true, false)
            .unwrap()
            .pgms;
        assert!(page_ms.is_some());
        let renewed = tokens.renew(&first, &ALICE, true, TTL, false).unwrap();
        assert_ne!(renewed, first);
        let claims = tokens.verify_once(&renewed, "login", &ALICE, true).unwrap();
        assert_eq!(claims.rt, "login", "same route");
        assert_eq!(
            claims.pgms, page_ms,
            "the page was opened when the first was served"
        );
        // A reset starts a new page epoch now: the page time is the new token's own.
        let reset = tokens.renew(&first, &ALICE, true, TTL, true).unwrap();
        let claims = tokens.verify_once(&reset, "login", &ALICE, true).unwrap();
        assert_eq!(claims.pgms, claims.iatms);
        // Once used, a token renews nothing: a replayed token stays a replay.
        assert_eq!(
            tokens.verify_once(&renewed, "login", &ALICE, true),
            Err(TokenError::Replayed)
        );
        assert_eq!(
            tokens.renew(&renewed, &ALICE, true, TTL, false),
            Err(TokenError::Replayed)
        );
    }

    #[test]
    fn only_the_client_a_token_was_served_to_can_renew_it() {
        let tokens = PageTokens::new(SECRET);
        let first = tokens.issue("login", &ALICE, true, TTL);
        let mallory = Client {
            ip: "198.51.100.9",
            user_agent: "Firefox",
        };
        assert_eq!(
            tokens.renew(&first, &mallory, true, TTL, false),
            Err(TokenError::WrongClient)
        );
        let theirs = PageTokens::new(b"another secret that is 32 bytes long!!");
        let forged = theirs.issue("login", &ALICE, true, TTL);
        assert_eq!(
            tokens.renew(&forged, &ALICE, true, TTL, false),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            tokens.renew("", &ALICE, true, TTL, false),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn an_expired_token_renews_within_the_grace_only() {
        let tokens = PageTokens::new(SECRET);
        let now = now_secs();
        // Expired an hour ago (a laptop that slept): still renewable.
        let slept = tokens.issue_at("login", &ALICE, true, TTL, now - 3600 - 600);
        assert_eq!(
            tokens.verify_once(&slept, "login", &ALICE, true),
            Err(TokenError::Expired)
        );
        assert!(tokens.renew(&slept, &ALICE, true, TTL, false).is_ok());
        // Expired longer ago than the grace: not.
        let old = tokens.issue_at("login", &ALICE, true, TTL, now - RENEW_GRACE_SECS - 700);
        assert_eq!(
            tokens.renew(&old, &ALICE, true, TTL, false),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn a_token_signed_with_another_key_is_rejected() {
        let ours = PageTokens::new(SECRET);
        let theirs = PageTokens::new(b"another secret that is 32 bytes long!!");
        let token = theirs.issue("login", &ALICE, true, TTL);
        assert_eq!(
            ours.verify_once(&token, "login", &ALICE, true),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn an_expired_token_is_rejected() {
        let tokens = PageTokens::new(SECRET);
        let signing = derive(SECRET, b"gaitkeeper page-token v1");
        let past = now_secs() - 3600;
        let claims = PageClaims {
            jti: "old".into(),
            rt: "login".into(),
            iat: past,
            iatms: None,
            pgms: None,
            exp: past + 600,
            cb: tokens.binding(&ALICE, true),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&signing),
        )
        .unwrap();
        assert_eq!(
            tokens.verify_once(&token, "login", &ALICE, true),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_rejected() {
        let tokens = PageTokens::new(SECRET);
        let token = tokens.issue("login", &ALICE, true, TTL);
        let mut parts: Vec<&str> = token.split('.').collect();
        let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT"}"#);
        parts[0] = &none_header;
        let unsigned = format!("{}.{}.", parts[0], parts[1]);
        assert!(tokens
            .verify_once(&unsigned, "login", &ALICE, true)
            .is_err());
        let hs512 = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"HS512","typ":"JWT"}"#);
        let swapped = format!("{}.{}.{}", hs512, parts[1], parts[2]);
        assert!(tokens.verify_once(&swapped, "login", &ALICE, true).is_err());
    }

    #[test]
    fn a_token_is_bound_to_route_and_client() {
        let tokens = PageTokens::new(SECRET);
        let token = tokens.issue("login", &ALICE, true, TTL);
        assert_eq!(
            tokens.verify_once(&token, "admin-login", &ALICE, true),
            Err(TokenError::WrongRoute)
        );
        let mallory = Client {
            ip: "198.51.100.9",
            user_agent: "Firefox",
        };
        assert_eq!(
            tokens.verify_once(&token, "login", &mallory, true),
            Err(TokenError::WrongClient)
        );
        // Without IP binding, another address with the same browser is accepted.
        let token = tokens.issue("login", &ALICE, false, TTL);
        assert!(tokens.verify_once(&token, "login", &mallory, false).is_ok());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let tokens = PageTokens::new(SECRET);
        for junk in ["", "a.b.c", "....", &"x".repeat(5000), "eyJ.eyJ.sig"] {
            assert!(tokens.verify_once(junk, "login", &ALICE, true).is_err());
        }
    }
}
