//! The `mfa.oidc:` section: step-up through the operator's OpenID Connect provider — where it
//! is (its issuer, discovered at run time), who gaitkeeper is to it (client id and secret),
//! what to ask for (scopes, `acr_values`, `max_age`) and what its ID tokens must show
//! (`username_claim`, `required_acr`, `required_amr`). The flow itself is `challenge::oidc`'s.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use super::mfa::plain_text;
use crate::config::{ConfigError, HumanDuration, Secret};

/// The longest list (scopes, acr values, required acr/amr) accepted.
const MAX_LIST: usize = 16;
/// The longest single value in those lists, and of a client id.
const MAX_VALUE: usize = 256;

/// Step-up through an OpenID Connect provider (`mfa.oidc`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Shown on the challenge page as "Continue with <display_name>".
    #[serde(default = "defaults::display_name")]
    pub display_name: String,
    /// The provider's issuer URL; its metadata is read from
    /// `<issuer>/.well-known/openid-configuration`. https, except on a loopback host.
    pub issuer: IssuerUrl,
    /// gaitkeeper's client id at the provider.
    pub client_id: String,
    /// gaitkeeper's client secret at the provider (`{ env: NAME }` or `{ file: PATH }`).
    pub client_secret: Secret,
    /// Scopes asked for. Default: `openid` and the scope that carries `username_claim`
    /// (`profile` for `preferred_username`, `nickname`; `email` for `email`; `phone` for
    /// `phone_number`). Must contain `openid`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// `acr_values` sent to the provider (what kind of sign-in to ask for), in order of
    /// preference. Default: none.
    #[serde(default)]
    pub acr_values: Vec<String>,
    /// `max_age` sent to the provider: how long ago the user may have signed in there. The
    /// default, 0s, makes the provider authenticate the user now; an ID token whose
    /// `auth_time` is before the held login is refused whatever this says.
    #[serde(default = "defaults::max_age")]
    pub max_age: HumanDuration,
    /// The ID token claim whose value is the app's login name (`preferred_username`,
    /// `email`, `sub`, or a claim of the provider's own). Compared after the same
    /// normalisation as the login route's `username.normalize`.
    #[serde(default = "defaults::username_claim")]
    pub username_claim: String,
    /// If set, the ID token's `acr` must be one of these.
    #[serde(default)]
    pub required_acr: Vec<String>,
    /// If set, the ID token's `amr` must contain every one of these.
    #[serde(default)]
    pub required_amr: Vec<String>,
    /// Clock difference tolerated between gaitkeeper and the provider when `auth_time` is
    /// compared with the moment the login was held (at most 60s).
    #[serde(default = "defaults::clock_skew")]
    pub clock_skew: HumanDuration,
    /// Longest wait for each request to the provider (discovery, keys, token), 1s to 30s.
    #[serde(default = "defaults::timeout")]
    pub timeout: HumanDuration,
}

mod defaults {
    use super::*;

    pub(super) fn display_name() -> String {
        "single sign-on".to_string()
    }
    pub(super) fn max_age() -> HumanDuration {
        HumanDuration::secs(0)
    }
    pub(super) fn username_claim() -> String {
        "preferred_username".to_string()
    }
    pub(super) fn clock_skew() -> HumanDuration {
        HumanDuration::secs(5)
    }
    pub(super) fn timeout() -> HumanDuration {
        HumanDuration::secs(10)
    }
}

/// Standard claims that name a person but not uniquely or not as text (localised names,
/// addresses): never a login name.
const NOT_A_LOGIN_NAME: &[&str] = &[
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "profile",
    "picture",
    "website",
    "gender",
    "birthdate",
    "zoneinfo",
    "locale",
    "address",
    "updated_at",
    "email_verified",
    "phone_number_verified",
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "azp",
    "at_hash",
    "c_hash",
];

impl OidcConfig {
    /// The scopes to ask for: the configured ones, else `openid` and the one that carries
    /// `username_claim`.
    pub fn scopes(&self) -> Vec<String> {
        if let Some(scopes) = &self.scopes {
            return scopes.clone();
        }
        let mut scopes = vec!["openid".to_string()];
        let carrier = match self.username_claim.as_str() {
            "preferred_username" | "nickname" => Some("profile"),
            "email" => Some("email"),
            "phone_number" => Some("phone"),
            _ => None,
        };
        scopes.extend(carrier.map(str::to_string));
        scopes
    }

    /// Checks run once at load; `invalid(key, message)` places the error in the file.
    pub(crate) fn validate(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        if !plain_text(&self.display_name, 60) {
            return Err(invalid(
                "mfa.oidc.display_name",
                "expected a name of 1 to 60 characters".into(),
            ));
        }
        if !plain_text(&self.client_id, MAX_VALUE) {
            return Err(invalid(
                "mfa.oidc.client_id",
                format!("expected the client id the provider gave gaitkeeper, 1 to {MAX_VALUE} characters"),
            ));
        }
        // A token: printable ASCII without spaces (they separate values in the request).
        let token_ok = |t: &str| {
            !t.is_empty() && t.len() <= MAX_VALUE && t.bytes().all(|b| b.is_ascii_graphic())
        };
        let lists: [(&str, &[String]); 4] = [
            ("mfa.oidc.scopes", self.scopes.as_deref().unwrap_or(&[])),
            ("mfa.oidc.acr_values", &self.acr_values),
            ("mfa.oidc.required_acr", &self.required_acr),
            ("mfa.oidc.required_amr", &self.required_amr),
        ];
        for (key, list) in lists {
            if list.len() > MAX_LIST {
                return Err(invalid(key, format!("at most {MAX_LIST} values")));
            }
            if let Some(bad) = list.iter().find(|v| !token_ok(v)) {
                return Err(invalid(
                    key,
                    format!("{bad:?} is not a value: expected 1 to {MAX_VALUE} printable characters without spaces"),
                ));
            }
        }
        if let Some(scopes) = &self.scopes {
            if !scopes.iter().any(|s| s == "openid") {
                return Err(invalid(
                    "mfa.oidc.scopes",
                    "must contain `openid`: without it the provider sends no ID token".into(),
                ));
            }
        }
        let claim = self.username_claim.as_str();
        let claim_ok = !claim.is_empty()
            && claim.len() <= 64
            && claim
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b));
        if !claim_ok {
            return Err(invalid(
                "mfa.oidc.username_claim",
                format!("expected the name of an ID token claim such as \"preferred_username\" or \"email\", found {claim:?}"),
            ));
        }
        if NOT_A_LOGIN_NAME.contains(&claim) {
            return Err(invalid(
                "mfa.oidc.username_claim",
                format!("`{claim}` does not name one account; use the claim that holds the app's login name, such as \"preferred_username\", \"email\" or \"sub\""),
            ));
        }
        if self.clock_skew.0 > Duration::from_secs(60) {
            return Err(invalid(
                "mfa.oidc.clock_skew",
                "expected at most 60s; fix the clocks instead (NTP)".into(),
            ));
        }
        if self.max_age.0 > Duration::from_secs(86_400) {
            return Err(invalid("mfa.oidc.max_age", "expected at most 24h".into()));
        }
        let timeout = self.timeout.0;
        if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(30) {
            return Err(invalid(
                "mfa.oidc.timeout",
                "expected 1s to 30s: a user is waiting on each request to the provider".into(),
            ));
        }
        Ok(())
    }
}

/// The provider's issuer URL, checked when the config is read: https, or http on a loopback
/// host (a provider on the same machine, tests), no query, fragment or credentials.
#[derive(Clone, Debug, PartialEq, Eq, JsonSchema)]
#[schemars(
    with = "String",
    description = "The provider's issuer, e.g. \"https://login.example.com/realms/staff\"."
)]
pub struct IssuerUrl(pub String);

impl<'de> Deserialize<'de> for IssuerUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        check_issuer(&text)
            .map(IssuerUrl)
            .map_err(serde::de::Error::custom)
    }
}

fn check_issuer(text: &str) -> Result<String, String> {
    if text.len() > 2048 {
        return Err("the issuer URL is longer than 2048 characters".into());
    }
    let bad = || {
        format!("expected the provider's issuer, an https URL such as \"https://login.example.com/realms/staff\", found {text:?}")
    };
    let url = url::Url::parse(text).map_err(|_| bad())?;
    let host = url.host().ok_or_else(bad)?;
    let loopback = match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(format!(
                "the issuer must use https (http only on a loopback host such as 127.0.0.1): tokens and the client secret travel to it; found {text:?}"
            ))
        }
        _ => return Err(bad()),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "the issuer must not contain a user name or password; the client secret goes in `client_secret`"
                .into(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "the issuer has no query or fragment (OpenID Connect Discovery §2); found {text:?}"
        ));
    }
    // Kept as written: the provider's metadata must name exactly this issuer.
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::check_issuer;

    #[test]
    fn issuers_need_https_except_on_loopback() {
        assert!(check_issuer("https://login.example.com/realms/a").is_ok());
        assert!(check_issuer("http://127.0.0.1:8080").is_ok());
        assert!(check_issuer("http://localhost:8080/").is_ok());
        assert!(check_issuer("http://[::1]:8080").is_ok());
        let e = check_issuer("http://login.example.com").unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert!(check_issuer("ftp://login.example.com").is_err());
        assert!(check_issuer("https://u:p@login.example.com").is_err());
        assert!(check_issuer("https://login.example.com/?a=1").is_err());
        assert!(check_issuer("not a url").is_err());
    }
}
