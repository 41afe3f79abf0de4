//! Talking to the OpenID Connect provider: discovery (its metadata and signing keys, cached
//! for [`METADATA_TTL`] and re-read once when an ID token is signed with a key not yet seen),
//! the authorization URL, the code exchange and the ID token's verification (signature with the
//! provider's keys, issuer, audience, expiry, nonce) with the `openidconnect` crate.
//!
//! The HTTP client follows no redirects, gives each request [`crate::config::OidcConfig`]'s
//! `timeout`, and reads at most [`MAX_RESPONSE_BYTES`] of any answer. Endpoints the metadata
//! names must be https (http only on a loopback host, like the issuer). Never logs the code,
//! the tokens, the client secret or the derived verifier and nonce.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthenticationContextClass, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, HttpRequest, HttpResponse, IdToken, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, TokenResponse,
};

use super::{FlowKeys, OidcConfig, OidcError, SignIn};

/// Largest answer read from the provider (metadata, keys, token response).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// How long discovered metadata and keys are used before they are read again.
pub const METADATA_TTL: Duration = Duration::from_secs(10 * 60);
/// Metadata younger than this is not re-read for an unknown signing key (bounds the requests
/// a stream of forged tokens can cause).
const MIN_REFRESH: Duration = Duration::from_secs(30);
/// Longest claim value taken as a login name.
const MAX_NAME: usize = 1024;

/// Why the provider client cannot be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum OidcSetupError {
    #[error("cannot build the HTTP client for mfa.oidc: {0}")]
    Client(String),
}

/// The claims of the provider's own that an ID token may carry (`username_claim` may name
/// one); the standard ones are read through `openidconnect`'s accessors.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
struct OtherClaims(std::collections::HashMap<String, serde_json::Value>);

impl openidconnect::AdditionalClaims for OtherClaims {}

type ProviderIdToken = IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// What was discovered, and when.
struct Discovered {
    at: Instant,
    metadata: CoreProviderMetadata,
    /// `client_secret_post` (the provider does not take `client_secret_basic`).
    post: bool,
}

/// The operator's provider: its config, an HTTP client, and the discovered metadata.
pub struct OidcProvider {
    config: OidcConfig,
    http: reqwest::Client,
    discovered: tokio::sync::Mutex<Option<Arc<Discovered>>>,
}

impl OidcProvider {
    pub fn new(config: &OidcConfig) -> Result<OidcProvider, OidcSetupError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout.0)
            .connect_timeout(config.timeout.0)
            .user_agent(concat!("gaitkeeper/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OidcSetupError::Client(e.to_string()))?;
        Ok(OidcProvider {
            config: config.clone(),
            http,
            discovered: tokio::sync::Mutex::new(None),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The provider's metadata and keys: cached, else discovered (one discovery at a time).
    /// `refresh` re-reads metadata older than [`MIN_REFRESH`].
    async fn discovered(&self, refresh: bool) -> Result<Arc<Discovered>, OidcError> {
        let mut cached = self.discovered.lock().await;
        if let Some(d) = cached.as_ref() {
            let age = d.at.elapsed();
            if age < METADATA_TTL && !(refresh && age >= MIN_REFRESH) {
                return Ok(d.clone());
            }
        }
        let issuer = openidconnect::IssuerUrl::new(self.config.issuer.0.clone())
            .map_err(|e| OidcError::Unavailable(format!("the issuer URL: {e}")))?;
        let http = Bounded(self.http.clone());
        // Also fetches the keys (jwks_uri) and checks the metadata names this issuer.
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| OidcError::Unavailable(format!("discovery: {e}")))?;
        let endpoints = [
            Some(metadata.authorization_endpoint().url()),
            metadata.token_endpoint().map(|t| t.url()),
            Some(metadata.jwks_uri().url()),
        ];
        if metadata.token_endpoint().is_none() {
            return Err(OidcError::Unavailable(
                "the provider's metadata has no token_endpoint".into(),
            ));
        }
        if let Some(bad) = endpoints.into_iter().flatten().find(|u| !safe_endpoint(u)) {
            return Err(OidcError::Unavailable(format!(
                "the provider's metadata names an endpoint that is not https: {}",
                bad.origin().ascii_serialization()
            )));
        }
        // RFC 8414: absent means client_secret_basic.
        let methods = metadata.token_endpoint_auth_methods_supported();
        let basic = methods.is_none_or(|m| m.contains(&CoreClientAuthMethod::ClientSecretBasic));
        let post = methods.is_some_and(|m| m.contains(&CoreClientAuthMethod::ClientSecretPost));
        if !basic && !post {
            return Err(OidcError::Unavailable(
                "the provider takes neither client_secret_basic nor client_secret_post at its token endpoint".into(),
            ));
        }
        let fresh = Arc::new(Discovered {
            at: Instant::now(),
            metadata,
            post: !basic,
        });
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    fn client(
        &self,
        discovered: &Discovered,
        redirect_uri: &str,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        OidcError,
    > {
        let secret = String::from_utf8_lossy(self.config.client_secret.expose()).into_owned();
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|_| OidcError::Unavailable("the redirect URI is not a URL".into()))?;
        let client = CoreClient::from_provider_metadata(
            discovered.metadata.clone(),
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(secret)),
        )
        .set_redirect_uri(redirect);
        Ok(if discovered.post {
            client.set_auth_type(AuthType::RequestBody)
        } else {
            client.set_auth_type(AuthType::BasicAuth)
        })
    }

    /// Where to send the browser to sign in for `challenge_id`: the provider's authorization
    /// endpoint with the code flow, PKCE (S256), the sealed state, the nonce, `max_age`, the
    /// scopes and `acr_values`, answering to `redirect_uri`.
    pub async fn authorization_url(
        &self,
        keys: &FlowKeys,
        challenge_id: &str,
        redirect_uri: &str,
    ) -> Result<String, OidcError> {
        let discovered = self.discovered(false).await?;
        let client = self.client(&discovered, redirect_uri)?;
        let verifier = PkceCodeVerifier::new(keys.pkce_verifier(challenge_id));
        let state = keys.state(challenge_id);
        let nonce = keys.nonce(challenge_id);
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier))
            .set_max_age(self.config.max_age.0);
        // `openid` is always added by the library.
        for scope in self.config.scopes().into_iter().filter(|s| s != "openid") {
            request = request.add_scope(Scope::new(scope));
        }
        for acr in &self.config.acr_values {
            request = request.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
        }
        let (url, _, _) = request.url();
        Ok(url.into())
    }

    /// Exchanges `code` (from the flow for `challenge_id`) and verifies the ID token: what it
    /// says about the sign-in. [`OidcError::Unavailable`] when the provider cannot be reached
    /// or answers with a server error; everything else is a refusal.
    pub async fn sign_in(
        &self,
        keys: &FlowKeys,
        challenge_id: &str,
        code: &str,
        redirect_uri: &str,
    ) -> Result<SignIn, OidcError> {
        let discovered = self.discovered(false).await?;
        let client = self.client(&discovered, redirect_uri)?;
        let http = Bounded(self.http.clone());
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::Unavailable(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(keys.pkce_verifier(challenge_id)))
            .request_async(&http)
            .await
            .map_err(exchange_error)?;
        let raw = response.id_token().ok_or(OidcError::NoIdToken)?.to_string();
        let token: ProviderIdToken = raw
            .parse()
            .map_err(|_| OidcError::BadIdToken("malformed"))?;
        let nonce = Nonce::new(keys.nonce(challenge_id));
        let claims = match token.claims(&client.id_token_verifier(), &nonce) {
            Ok(claims) => claims.clone(),
            // Perhaps signed with a key the provider rotated in since the metadata was read.
            Err(ClaimsVerificationError::SignatureVerification(_)) => {
                let discovered = self.discovered(true).await?;
                let client = self.client(&discovered, redirect_uri)?;
                let verifier = client.id_token_verifier();
                let claims = token.claims(&verifier, &nonce).map_err(claims_error)?;
                claims.clone()
            }
            Err(e) => return Err(claims_error(e)),
        };
        let claim = self.config.username_claim.as_str();
        let username = match claim {
            "sub" => Some(claims.subject().as_str().to_string()),
            "preferred_username" => claims.preferred_username().map(|u| u.as_str().to_string()),
            "email" => claims.email().map(|e| e.as_str().to_string()),
            "phone_number" => claims.phone_number().map(|p| p.as_str().to_string()),
            other => claims
                .additional_claims()
                .0
                .get(other)
                .and_then(|v| v.as_str())
                .map(str::to_string),
        }
        .filter(|name| name.len() <= MAX_NAME);
        Ok(SignIn {
            username,
            email_verified: claims.email_verified(),
            auth_time: claims
                .auth_time()
                .and_then(|t| super::from_unix(t.timestamp())),
            acr: claims.auth_context_ref().map(|a| a.as_str().to_string()),
            amr: claims
                .auth_method_refs()
                .map(|m| m.iter().map(|a| a.as_str().to_string()).collect())
                .unwrap_or_default(),
        })
    }
}

/// Whether an endpoint from the metadata may be used: https, or http on a loopback host.
fn safe_endpoint(url: &url::Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// A failed code exchange: the provider's refusal (an OAuth error, a 4xx), or unavailability.
fn exchange_error<E: std::error::Error>(
    e: RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> OidcError {
    match e {
        // `invalid_grant` and the like; the description is the provider's, never our values.
        RequestTokenError::ServerResponse(answer) => {
            OidcError::ExchangeRefused(answer.error().as_ref().to_string())
        }
        RequestTokenError::Request(e) => OidcError::Unavailable(format!("token request: {e}")),
        RequestTokenError::Parse(_, _) => {
            OidcError::Unavailable("the token response is not valid JSON".into())
        }
        RequestTokenError::Other(what) => OidcError::Unavailable(what),
    }
}

/// A reason for an ID token that does not verify; the library's text is not passed on (it
/// may quote claim values).
fn claims_error(e: ClaimsVerificationError) -> OidcError {
    OidcError::BadIdToken(match e {
        ClaimsVerificationError::Expired(_) => "expired",
        ClaimsVerificationError::InvalidAudience(_) => "wrong_audience",
        ClaimsVerificationError::InvalidIssuer(_) => "wrong_issuer",
        ClaimsVerificationError::InvalidNonce(_) => "wrong_nonce",
        ClaimsVerificationError::SignatureVerification(_) => "bad_signature",
        ClaimsVerificationError::InvalidAuthContext(_)
        | ClaimsVerificationError::InvalidAuthTime(_)
        | ClaimsVerificationError::InvalidSubject(_)
        | ClaimsVerificationError::Unsupported(_)
        | ClaimsVerificationError::Other(_) => "invalid",
        _ => "invalid",
    })
}

/// Why a request to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("the provider's answer is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("the provider's answer cannot be read: {0}")]
    Malformed(String),
}

/// The HTTP client `openidconnect` calls: [`send`] with a future that is `Send`, so a flow
/// can run on the background runtime.
struct Bounded(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for Bounded {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>,
    >;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(send(self.0.clone(), request))
    }
}

/// One request to the provider: no redirects, the client's timeout, the answer read up to
/// [`MAX_RESPONSE_BYTES`]. A 5xx answer is an error (the provider is unavailable).
async fn send(http: reqwest::Client, request: HttpRequest) -> Result<HttpResponse, HttpError> {
    let request = reqwest::Request::try_from(request)?;
    let mut response = http.execute(request).await?;
    if response.status().is_server_error() {
        return Err(HttpError::Malformed(format!(
            "the provider answered {}",
            response.status()
        )));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(HttpError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let mut out = http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        out = out.header(name, value);
    }
    out.body(body)
        .map_err(|e| HttpError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_https_or_loopback() {
        let ok = |u: &str| safe_endpoint(&url::Url::parse(u).unwrap());
        assert!(ok("https://idp.example/token"));
        assert!(ok("http://127.0.0.1:8080/token"));
        assert!(ok("http://localhost/token"));
        assert!(!ok("http://idp.example/token"));
        assert!(!ok("ftp://idp.example/token"));
    }
}
