//! The `routes:` and `capture:` sections: which pages are login pages, what a submit is, how
//! the login name is read, what the app's success looks like, and how telemetry is carried.

use super::*;

/// One login flow of the app: the page(s) showing the form and the request that submits it.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A short name for logs, metrics and page tokens (letters, digits, `-`, `_`).
    pub name: String,
    /// The login page(s) the capture script is injected into.
    pub page: PageMatch,
    /// The request that submits the login.
    pub submit: SubmitMatch,
    /// Where the login name is in the submitted body.
    #[serde(default)]
    pub username: UsernameSource,
    /// How the app's response shows that the login succeeded (every given condition must hold).
    #[serde(default)]
    pub success: SuccessSignal,
    /// Overrides of the top-level `policy:` for this route.
    #[serde(default)]
    pub policy: crate::policy::PolicyConfig,
    /// Where a fetch/XHR login replayed after its challenge sends the browser (a path on this
    /// site, e.g. `/account`). Default: back to the page the login came from. Only used when the
    /// page has no capture script to show the challenge itself (docs/configuration.md).
    #[serde(default)]
    pub return_to: Option<String>,
    /// Non-browser clients of the login (the app's CLI, deploy scripts): their logins are
    /// forwarded without telemetry, audited as `machine_client`, and still regulated.
    #[serde(default)]
    pub machine_clients: Option<MachineClients>,
    /// Asking users without a second factor to add one after a trusted login of this route
    /// (docs/rolling-out-factors.md).
    #[serde(default)]
    pub enrol_factors: FactorOffer,
}

/// When users are asked to add a second factor (`routes[].enrol_factors`).
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FactorOffer {
    /// `off` (default), `offer` (a skippable page after a trusted login, shown at most every
    /// `reoffer_after`) or `require` (users without a factor must add one at their next
    /// trusted login).
    #[serde(default)]
    pub mode: OfferMode,
    /// How long after a skipped offer it is shown again (`offer` only), in hours or days.
    #[serde(default = "default_reoffer_after")]
    pub reoffer_after: RetentionPeriod,
    /// Also ask during a user's enrolment period, when no profile can vouch for the login yet:
    /// whoever first logs in with the password may then add a factor (trust on first use).
    /// Only for apps whose passwords are not known to be in the wrong hands.
    #[serde(default)]
    pub trust_on_first_use: bool,
}

impl Default for FactorOffer {
    fn default() -> Self {
        FactorOffer {
            mode: OfferMode::Off,
            reoffer_after: default_reoffer_after(),
            trust_on_first_use: false,
        }
    }
}

fn default_reoffer_after() -> RetentionPeriod {
    RetentionPeriod(std::time::Duration::from_secs(30 * 24 * 3600))
}

/// See [`FactorOffer::mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OfferMode {
    #[default]
    Off,
    Offer,
    Require,
}

/// Who counts as a machine client of a route. Every condition given must hold.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineClients {
    /// Client addresses (CIDR, e.g. `10.1.2.0/24` or `192.0.2.7/32`).
    #[serde(default)]
    pub addresses: Vec<Cidr>,
    /// A request header that must carry `secret` (e.g. `X-Deploy-Key`). It never reaches the
    /// app.
    #[serde(default)]
    pub header: Option<String>,
    /// The secret the header must carry: `{ env: NAME }` or `{ file: PATH }`.
    #[serde(default)]
    pub secret: Option<Secret>,
}

impl MachineClients {
    /// Whether a request from `ip` with `header_value` (of [`MachineClients::header`]) is one.
    pub fn admits(&self, ip: Option<std::net::IpAddr>, header_value: Option<&[u8]>) -> bool {
        let address_ok = self.addresses.is_empty()
            || ip.is_some_and(|ip| self.addresses.iter().any(|c| c.0.contains(&ip)));
        let secret_ok = match &self.secret {
            None => true,
            Some(secret) => header_value
                .is_some_and(|v| subtle::ConstantTimeEq::ct_eq(v, secret.expose()).into()),
        };
        address_ok && secret_ok
    }
}

/// Where the login name is: a form field (urlencoded or multipart) or, for JSON bodies, a
/// JSON pointer.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsernameSource {
    /// Form field name (urlencoded and multipart bodies).
    #[serde(default = "defaults::username_field")]
    pub field: String,
    /// JSON pointer into a JSON body, e.g. `/user/email` (RFC 6901). Default: the top-level
    /// key named `field`.
    #[serde(default)]
    pub json_pointer: Option<String>,
    /// How the app compares login names, applied in order: `trim` (surrounding whitespace),
    /// `nfkc` (Unicode compatibility forms: fullwidth letters, no-break spaces), `casefold`
    /// (for apps whose logins ignore case). The profile, regulation and the audit trail use
    /// the normalised name. Default `[trim, nfkc]`, what Django, Rails and most frameworks do.
    #[serde(default = "defaults::normalize")]
    pub normalize: Vec<NameNormalization>,
}

/// One step of login-name normalisation (see `routes[].username.normalize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NameNormalization {
    /// Remove leading and trailing Unicode whitespace.
    Trim,
    /// Unicode normalisation form NFKC.
    Nfkc,
    /// Unicode full case folding.
    Casefold,
}

impl Default for UsernameSource {
    fn default() -> Self {
        UsernameSource {
            field: defaults::username_field(),
            json_pointer: None,
            normalize: defaults::normalize(),
        }
    }
}

/// The app's answer to a successful login. By default any redirect (301, 302, 303, 307, 308).
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SuccessSignal {
    /// Status codes of a successful login.
    #[serde(default = "defaults::success_status")]
    pub status: Vec<u16>,
    /// The `Location` header starts with this (e.g. `/account`).
    #[serde(default)]
    pub location_prefix: Option<String>,
    /// The response sets this cookie (e.g. the app's session cookie).
    #[serde(default)]
    pub set_cookie: Option<String>,
    /// The JSON answer has a value at this pointer (e.g. `/access_token`): for apps that answer
    /// 200 to every login, telling success by its body. The body is read up to 64 KiB.
    #[serde(default)]
    pub json_pointer_present: Option<String>,
    /// The JSON answer has exactly this value at this pointer (e.g. `{pointer: /ok, value:
    /// true}`).
    #[serde(default)]
    pub json_equals: Option<JsonEquals>,
}

/// A JSON value a successful login's answer holds at a pointer.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonEquals {
    /// RFC 6901 pointer into the answer, e.g. `/status`.
    pub pointer: String,
    /// The value it must have (any JSON value).
    pub value: serde_json::Value,
}

impl SuccessSignal {
    /// Whether telling success needs the answer's body.
    pub fn reads_body(&self) -> bool {
        self.json_pointer_present.is_some() || self.json_equals.is_some()
    }
}

impl Default for SuccessSignal {
    fn default() -> Self {
        SuccessSignal {
            status: defaults::success_status(),
            location_prefix: None,
            set_cookie: None,
            json_pointer_present: None,
            json_equals: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageMatch {
    /// Paths of the login page: exact (`/login`) or a prefix ending in `*` (`/auth/*`).
    pub paths: Vec<String>,
    /// Request methods whose responses are injected.
    #[serde(default = "defaults::page_methods")]
    pub methods: Vec<String>,
    /// Response content types that are injected.
    #[serde(default = "defaults::page_content_types")]
    pub content_types: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitMatch {
    /// Method of the login request.
    #[serde(default = "defaults::submit_method")]
    pub method: String,
    /// Path the login is posted to (matched after normalising, case-insensitively).
    pub path: String,
}

#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Name of the hidden form field that carries the telemetry in classic form posts.
    #[serde(default = "defaults::capture_field")]
    pub field: String,
    /// Name of the header that carries the telemetry in fetch/XHR logins.
    #[serde(default = "defaults::capture_header")]
    pub header: String,
    /// How long a page token stays valid after the page was served.
    #[serde(default = "defaults::token_ttl")]
    pub token_ttl: HumanDuration,
    /// Bind page tokens to the client's IP address as well as its User-Agent. Turn off when
    /// clients legitimately change address between page and submit (some mobile networks).
    #[serde(default = "defaults::yes")]
    pub bind_token_to_ip: bool,
    /// Largest telemetry payload accepted, in bytes (at most 1 MiB).
    #[serde(default = "defaults::max_payload_bytes")]
    pub max_payload_bytes: usize,
    /// Largest login request body gaitkeeper buffers to take the telemetry out, in bytes
    /// (at most 64 KiB); larger login bodies get 413. A compressed body is bounded by its
    /// decoded size.
    #[serde(default = "defaults::max_login_body_bytes")]
    pub max_login_body_bytes: usize,
    /// How long a client may take to send a login body; after it the request gets 408 and
    /// nothing reaches the app (a slowly trickled body would hold a connection for ever).
    #[serde(default = "defaults::body_timeout")]
    pub body_timeout: HumanDuration,
    /// How much longer than the page was open (from gaitkeeper issuing it to the login
    /// arriving) a payload's own timeline may claim before it is `timeline_mismatch`: clock
    /// coarsening and rounding. Raise it only for clients whose clocks are known to jump.
    #[serde(default = "defaults::timeline_slack")]
    pub timeline_slack: HumanDuration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            field: defaults::capture_field(),
            header: defaults::capture_header(),
            token_ttl: defaults::token_ttl(),
            bind_token_to_ip: true,
            max_payload_bytes: defaults::max_payload_bytes(),
            max_login_body_bytes: defaults::max_login_body_bytes(),
            body_timeout: defaults::body_timeout(),
            timeline_slack: defaults::timeline_slack(),
        }
    }
}

impl Config {
    pub(super) fn validate_routes(
        &self,
        invalid: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let token = |t: &str| {
            !t.is_empty()
                && t.len() <= 64
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let capture = &self.capture;
        if !token(&capture.field) {
            return Err(invalid(
                "capture.field",
                format!(
                    "expected a form field name of letters, digits, '-' or '_', found {:?}",
                    capture.field
                ),
            ));
        }
        if !token(&capture.header)
            || http::HeaderName::from_bytes(capture.header.as_bytes()).is_err()
        {
            return Err(invalid(
                "capture.header",
                format!("expected a header name, found {:?}", capture.header),
            ));
        }
        if !(1024..=1 << 20).contains(&capture.max_payload_bytes) {
            return Err(invalid(
                "capture.max_payload_bytes",
                format!(
                    "expected 1024 to 1048576, found {}",
                    capture.max_payload_bytes
                ),
            ));
        }
        if !(1024..=64 * 1024).contains(&capture.max_login_body_bytes) {
            return Err(invalid(
                "capture.max_login_body_bytes",
                format!(
                    "expected 1024 to 65536 (pingora buffers at most 64 KiB), found {}",
                    capture.max_login_body_bytes
                ),
            ));
        }
        if !(std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(600))
            .contains(&capture.body_timeout.0)
        {
            return Err(invalid(
                "capture.body_timeout",
                "expected 100ms to 10m".into(),
            ));
        }
        if capture.token_ttl.0 < std::time::Duration::from_secs(10) {
            return Err(invalid(
                "capture.token_ttl",
                "expected at least 10s: people need time to type".into(),
            ));
        }
        for app in &self.apps {
            let routes_key = app.key_of("routes");
            if app.routes.len() > 64 {
                return Err(invalid(&routes_key, "at most 64 routes".into()));
            }
            let prefix = &self.server.reserved_prefix.0;
            let mut names = std::collections::HashSet::new();
            for route in &app.routes {
                if !token(&route.name) || !names.insert(route.name.as_str()) {
                    return Err(invalid(&routes_key, format!("route names must be unique and made of letters, digits, '-' or '_'; found {:?}", route.name)));
                }
                let path_ok = |p: &str| {
                    p.starts_with('/')
                        && p.len() <= 512
                        && !p.contains(['?', '#', ' '])
                        && !p[..p.len().saturating_sub(1)].contains('*')
                        && !crate::paths::is_reserved_path(p.trim_end_matches('*'), prefix)
                };
                if route.page.paths.is_empty() || route.page.paths.len() > 32 {
                    return Err(invalid(
                        &routes_key,
                        format!("route {:?}: `page.paths` needs 1 to 32 paths", route.name),
                    ));
                }
                for p in route
                    .page
                    .paths
                    .iter()
                    .chain(std::iter::once(&route.submit.path))
                {
                    if !path_ok(p) {
                        return Err(invalid(&routes_key, format!("route {:?}: {p:?} is not a usable path: it must start with '/', have no query, '*' only at the end, and lie outside {prefix}", route.name)));
                    }
                }
                if route.submit.path.ends_with('*') {
                    return Err(invalid(
                        &routes_key,
                        format!(
                            "route {:?}: `submit.path` must be one exact path",
                            route.name
                        ),
                    ));
                }
                let username = &route.username;
                if !token(&username.field) {
                    return Err(invalid(&routes_key, format!("route {:?}: `username.field` must be a form field name of letters, digits, '-' or '_', found {:?}", route.name, username.field)));
                }
                if let Some(pointer) = &username.json_pointer {
                    if !(pointer.starts_with('/') && pointer.len() <= 256) {
                        return Err(invalid(&routes_key, format!("route {:?}: `username.json_pointer` must be a JSON pointer such as \"/user/email\", found {pointer:?}", route.name)));
                    }
                }
                let steps = &username.normalize;
                if steps.len() > 3 || (1..steps.len()).any(|i| steps[..i].contains(&steps[i])) {
                    return Err(invalid(&routes_key, format!("route {:?}: `username.normalize` lists each of trim, nfkc, casefold at most once", route.name)));
                }
                if username.field == capture.field {
                    return Err(invalid(&routes_key, format!("route {:?}: `username.field` is the telemetry field `capture.field` ({:?}); give the login name's field", route.name, capture.field)));
                }
                if let Some(machines) = &route.machine_clients {
                    if machines.addresses.is_empty() && machines.header.is_none() {
                        return Err(invalid(&routes_key, format!("route {:?}: `machine_clients` needs `addresses`, a `header` with its `secret`, or both", route.name)));
                    }
                    if machines.header.is_some() != machines.secret.is_some() {
                        return Err(invalid(&routes_key, format!("route {:?}: `machine_clients.header` and `machine_clients.secret` go together", route.name)));
                    }
                    if let Some(h) = &machines.header {
                        if !token(h) || http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                            return Err(invalid(&routes_key, format!("route {:?}: `machine_clients.header` must be a header name, found {h:?}", route.name)));
                        }
                    }
                    if machines.addresses.len() > 256 {
                        return Err(invalid(
                            &routes_key,
                            format!(
                                "route {:?}: at most 256 `machine_clients.addresses`",
                                route.name
                            ),
                        ));
                    }
                }
                if let Some(to) = &route.return_to {
                    if !to.starts_with('/')
                        || to.starts_with("//")
                        || to.contains(['\\', '\r', '\n'])
                        || to.len() > 512
                    {
                        return Err(invalid(&routes_key, format!("route {:?}: `return_to` must be a path on this site such as \"/account\", found {to:?}", route.name)));
                    }
                }
                let success = &route.success;
                if success.status.is_empty()
                    || success.status.len() > 16
                    || success.status.iter().any(|s| !(100..=599).contains(s))
                {
                    return Err(invalid(
                        &routes_key,
                        format!(
                            "route {:?}: `success.status` needs 1 to 16 HTTP status codes (100 to 599)",
                            route.name
                        ),
                    ));
                }
                let pointers = success
                    .json_pointer_present
                    .iter()
                    .chain(success.json_equals.as_ref().map(|e| &e.pointer));
                for pointer in pointers {
                    if !(pointer.starts_with('/') && pointer.len() <= 256) {
                        return Err(invalid(&routes_key, format!("route {:?}: a `success` JSON pointer must be like \"/access_token\", found {pointer:?}", route.name)));
                    }
                }
                if let Some(cookie) = &success.set_cookie {
                    if !token(cookie) {
                        return Err(invalid(&routes_key, format!("route {:?}: `success.set_cookie` must be a cookie name, found {cookie:?}", route.name)));
                    }
                }
                if let Some(prefix) = &success.location_prefix {
                    if prefix.is_empty() || prefix.len() > 512 {
                        return Err(invalid(
                            &routes_key,
                            format!(
                                "route {:?}: `success.location_prefix` must be 1 to 512 characters",
                                route.name
                            ),
                        ));
                    }
                }
                crate::policy::Policy::resolve(&app.policy, &route.policy)
                    .check()
                    .map_err(|(key, m)| {
                        invalid(
                            &routes_key,
                            format!("route {:?}: `policy.{key}`: {m}", route.name),
                        )
                    })?;
                for m in route
                    .page
                    .methods
                    .iter()
                    .chain(std::iter::once(&route.submit.method))
                {
                    if http::Method::from_bytes(m.as_bytes()).is_err()
                        || m.chars().any(|c| c.is_ascii_lowercase())
                    {
                        return Err(invalid(
                            &routes_key,
                            format!(
                                "route {:?}: {m:?} is not an upper-case HTTP method",
                                route.name
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}
