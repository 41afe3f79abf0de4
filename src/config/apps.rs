//! The apps gaitkeeper fronts: `apps:` (several, each on its own host names) or the
//! single-app form (top-level `upstream:` and `routes:`), which is read as one app named
//! `default` that answers every host. Everything per app — upstream, routes, policy, the name
//! on gaitkeeper's pages, the certificate — lives in an [`AppConfig`]; a request is served by
//! the app its `Host` (`:authority`) names.

use super::*;

/// One protected app.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// A short name (letters, digits, '-', '_'): in metrics, the audit trail and `users
    /// --app`. Users are kept per app: alice of one app is not alice of another. The app named
    /// `default` keeps the users of a store made before apps existed.
    pub name: String,
    /// Host names this app answers (`intranet.example.com`, `*.example.com`), matched against
    /// the request's Host or `:authority` without its port. Its certificate is chosen by SNI.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Where this app is.
    pub upstream: UpstreamConfig,
    /// Its login routes.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Overrides of the top-level `policy:` for this app (its routes may override again).
    #[serde(default)]
    pub policy: crate::policy::PolicyConfig,
    /// This app's certificate on the TLS listeners (chosen when the client's SNI is one of
    /// `hosts`).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// The app's name on gaitkeeper's pages; default `server.app_name`.
    #[serde(default, rename = "app_name")]
    given_app_name: Option<String>,
    /// Requests for a host no app claims go to this app (at most one); without one they get
    /// 421.
    #[serde(default)]
    pub default: bool,
    /// The app's name on gaitkeeper's pages, settled when the file is loaded.
    #[serde(skip)]
    pub app_name: String,
    /// Where the app is in the file (`apps[1]`, or empty for the single-app form), for error
    /// messages of checks after parsing.
    #[serde(skip)]
    pub(super) key: String,
}

/// The name of the app of the single-app form.
pub const DEFAULT_APP: &str = "default";

/// The most apps one process fronts.
const MAX_APPS: usize = 64;

impl AppConfig {
    /// The single-app form as an app: every host, the top-level upstream and routes.
    pub(super) fn single(upstream: UpstreamConfig, routes: Vec<RouteConfig>) -> AppConfig {
        AppConfig {
            name: DEFAULT_APP.to_string(),
            hosts: Vec::new(),
            upstream,
            routes,
            policy: Default::default(),
            tls: None,
            given_app_name: None,
            default: true,
            app_name: String::new(),
            key: String::new(),
        }
    }

    /// The dotted key of `field` of this app, for error messages.
    pub(super) fn key_of(&self, field: &str) -> String {
        if self.key.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.key)
        }
    }

    /// Whether this app is the one the single-app form (and stores made before apps existed)
    /// knew: its users, counters and tokens are keyed as they always were.
    pub fn is_legacy(&self) -> bool {
        self.name == DEFAULT_APP
    }

    /// The login name as the store keys it: the name itself for the `default` app, the app
    /// and the name for any other, so one name is one user per app. (`\0` cannot occur in a
    /// login name: `login` refuses names with control characters.)
    pub fn user_scope<'a>(&self, login: &'a str) -> std::borrow::Cow<'a, str> {
        app_scoped(&self.name, login)
    }

    /// A page token's route binding: the route's name, qualified by the app outside the
    /// `default` app (a token of one app's page is refused at another's submit).
    pub fn token_route<'a>(&self, route: &'a str) -> std::borrow::Cow<'a, str> {
        if self.is_legacy() {
            std::borrow::Cow::Borrowed(route)
        } else {
            std::borrow::Cow::Owned(format!("{}/{route}", self.name))
        }
    }

    fn claims(&self, host: &str) -> bool {
        self.hosts.iter().any(|pattern| host_matches(pattern, host))
    }
}

/// `value` (a login name, a client address) as it is counted and stored for the app named
/// `app`: itself for the `default` app, qualified by the app for any other.
pub fn app_scoped<'a>(app: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    if app == DEFAULT_APP {
        std::borrow::Cow::Borrowed(value)
    } else {
        std::borrow::Cow::Owned(format!("\0{app}\0{value}"))
    }
}

/// `*.example.com` covers one more label; anything else must be equal (both lower-case). App
/// hosts and certificate names are matched the same way.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// The host a request names, lower-case and without port or brackets' port.
pub fn request_host(authority: &str) -> String {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                authority
            }
        })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl Config {
    /// The app serving `host` (see [`request_host`]): the app that claims it, else the
    /// `default: true` app, else none (the request is answered 421).
    pub fn app_for_host(&self, host: &str) -> Option<usize> {
        self.apps
            .iter()
            .position(|a| a.claims(host))
            .or_else(|| self.apps.iter().position(|a| a.default))
    }

    /// The app called `name`.
    pub fn app_named(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// Turns the single-app form into one app, settles each app's policy and page name, and
    /// checks what spans apps. Runs right after parsing, before any other check.
    pub(super) fn settle_apps(
        &mut self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        match (self.upstream.take(), self.apps.is_empty()) {
            (Some(upstream), true) => {
                let routes = std::mem::take(&mut self.routes);
                self.apps.push(AppConfig::single(upstream, routes));
            }
            (None, true) => {
                return Err(invalid(
                    "upstream",
                    "missing: give the app's `upstream: { address: HOST:PORT }`, or list several apps under `apps:`".into(),
                ))
            }
            (Some(_), false) => {
                return Err(invalid(
                    "upstream",
                    "`upstream` is for a single app; with `apps:` give each app its own `upstream`".into(),
                ))
            }
            (None, false) if !self.routes.is_empty() => {
                return Err(invalid(
                    "routes",
                    "top-level `routes` are for a single app; with `apps:` give each app its own `routes`".into(),
                ))
            }
            (None, false) => {
                for (i, app) in self.apps.iter_mut().enumerate() {
                    app.key = format!("apps[{i}]");
                }
            }
        }
        if self.apps.len() > MAX_APPS {
            return Err(invalid("apps", format!("at most {MAX_APPS} apps")));
        }
        let token = |t: &str| {
            !t.is_empty()
                && t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let mut claimed: Vec<(String, String)> = Vec::new();
        let mut default: Option<&str> = None;
        for (i, app) in self.apps.iter().enumerate() {
            let at = |field: &str| app.key_of(field);
            if !token(&app.name) || self.apps[..i].iter().any(|a| a.name == app.name) {
                return Err(invalid(
                    &at("name"),
                    format!("app names must be unique and made of letters, digits, '-' or '_'; found {:?}", app.name),
                ));
            }
            if app.hosts.len() > 64 {
                return Err(invalid(&at("hosts"), "at most 64 host names".into()));
            }
            for host in &app.hosts {
                let name = host.strip_prefix("*.").unwrap_or(host);
                let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
                if name.is_empty() || name.len() > 253 || !name.chars().all(plain) {
                    return Err(invalid(
                        &at("hosts"),
                        format!("expected host names such as \"app.example.com\" or \"*.example.com\" (no port, no scheme), found {host:?}"),
                    ));
                }
                let host = host.to_ascii_lowercase();
                if let Some((_, other)) = claimed.iter().find(|(h, _)| *h == host) {
                    return Err(invalid(
                        &at("hosts"),
                        format!("{host:?} is claimed by two apps, {other:?} and {:?}; each host name belongs to one app", app.name),
                    ));
                }
                claimed.push((host, app.name.clone()));
            }
            if app.default {
                if let Some(other) = default {
                    return Err(invalid(
                        &at("default"),
                        format!("two apps are `default: true`, {other:?} and {:?}; at most one takes the hosts nobody claims", app.name),
                    ));
                }
                default = Some(&app.name);
            }
            if app.hosts.is_empty() && !app.default {
                return Err(invalid(
                    &at("hosts"),
                    format!("app {:?} claims no host and is not `default: true`, so no request would reach it", app.name),
                ));
            }
            if let Some(name) = &app.given_app_name {
                if name.trim().is_empty() || name.len() > 100 {
                    return Err(invalid(
                        &at("app_name"),
                        "expected a name of 1 to 100 characters".into(),
                    ));
                }
            }
        }
        for app in &mut self.apps {
            app.hosts = app.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
            app.policy = app.policy.over(&self.policy);
            app.app_name = app
                .given_app_name
                .clone()
                .unwrap_or_else(|| self.server.app_name.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_without_port_and_matched_exactly_or_by_one_wildcard_label() {
        assert_eq!(request_host("App.Example.com:8443"), "app.example.com");
        assert_eq!(request_host("[::1]:8080"), "::1");
        assert_eq!(request_host("example.com."), "example.com");
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "a.b.example.com"));
        assert!(host_matches("example.com", "example.com"));
    }
}
