//! Injection: recognising the app's login pages and putting the capture script into them.
//!
//! Owns: which responses get the script (per route in YAML), the `<script>` tag with its page
//! token and the page's CSP nonce, streaming HTML rewriting of any body coding, and serving
//! `injector/capture.js`. Never changes a response it was not asked to (HEAD, 304, non-HTML,
//! unknown codings pass untouched).

mod replay;
mod rewrite;
pub mod token;

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

use crate::config::{CaptureConfig, RouteConfig};
use crate::paths::normalize_path;

pub(crate) use replay::TokenId;
pub use rewrite::{Coding, PageRewriter, Placement, RewriteError};
pub use token::{Client, PageClaims, PageTokens, TokenError};

/// The capture script as served at `<reserved prefix>capture.js`: the minified copy of
/// `injector/capture.js` (regenerate with `scripts/minify-capture.sh`).
pub static CAPTURE_JS: &[u8] = include_bytes!("../../injector/capture.min.js");

/// A strong ETag of the script, so browsers revalidate cheaply after an upgrade.
pub(crate) static CAPTURE_JS_ETAG: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(CAPTURE_JS);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
});

/// Which login routes a request belongs to, as indexes into the config's `routes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteMatch {
    /// The route whose login page this is (its response gets the script).
    pub page: Option<usize>,
    /// The route whose login submit this is (its body loses the telemetry).
    pub submit: Option<usize>,
}

/// Matches a request against the login routes. The path is normalised once; matching ignores
/// case, so `/LOGIN`, `//login`, `/login/` or `/%6Cogin` cannot slip past a submit route.
pub(crate) fn match_routes(routes: &[RouteConfig], method: &str, path: &str) -> RouteMatch {
    if routes.is_empty() {
        return RouteMatch::default();
    }
    let normal = normalize_path(path);
    let trimmed = trim_trailing_slash(&normal);
    RouteMatch {
        page: routes.iter().position(|r| {
            r.page.methods.iter().any(|m| m == method)
                && r.page.paths.iter().any(|p| path_matches(p, &normal))
        }),
        submit: routes.iter().position(|r| {
            r.submit.method.eq_ignore_ascii_case(method)
                && (trim_trailing_slash(&r.submit.path).eq_ignore_ascii_case(trimmed)
                    || trim_trailing_slash(&r.submit.path).eq_ignore_ascii_case(
                        trim_trailing_slash(&without_path_parameters(&normal)),
                    ))
        }),
    }
}

/// The path without `;parameters` in its segments: Java servlet containers route
/// `/login;jsessionid=x` to `/login`, so a submit spelled that way is still the login.
fn without_path_parameters(path: &str) -> String {
    if !path.contains(';') {
        return path.to_string();
    }
    path.split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/")
}

fn trim_trailing_slash(path: &str) -> &str {
    if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    }
}

fn path_matches(pattern: &str, normal_path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            normal_path.len() >= prefix.len()
                && normal_path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
        None => trim_trailing_slash(pattern).eq_ignore_ascii_case(trim_trailing_slash(normal_path)),
    }
}

/// Whether a response with this `Content-Type` is one the route injects into.
pub(crate) fn is_injectable(route: &RouteConfig, content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let mime = content_type.split(';').next().unwrap_or("").trim();
    route
        .page
        .content_types
        .iter()
        .any(|t| t.eq_ignore_ascii_case(mime))
}

/// The `charset` parameter of a `Content-Type` value.
pub fn charset(content_type: Option<&str>) -> Option<&str> {
    content_type?
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// The nonce a page's Content-Security-Policy allows scripts with, so the injected tag can
/// carry it. Only `script-src` (or `default-src` when there is none) is consulted.
pub(crate) fn csp_nonce(policy: &str) -> Option<String> {
    let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
    let find = |name: &str| {
        directives.iter().find(|d| {
            d.split_whitespace()
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    };
    let directive = find("script-src-elem")
        .or_else(|| find("script-src"))
        .or_else(|| find("default-src"))?;
    directive.split_whitespace().skip(1).find_map(|source| {
        let nonce = source.strip_prefix("'nonce-")?.strip_suffix('\'')?;
        let plain = !nonce.is_empty()
            && nonce.len() <= 256
            && nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=-_".contains(&b));
        plain.then(|| nonce.to_string())
    })
}

/// The `<script>` element injected into a login page.
pub(crate) fn script_tag(
    prefix: &str,
    token: &str,
    nonce: Option<&str>,
    capture: &CaptureConfig,
    route: &RouteConfig,
) -> String {
    // Every value here is a JWT, a validated config token or a validated path: none can hold
    // `"`, `<` or `&`, so no escaping can be missed.
    let nonce = nonce.map(|n| format!(" nonce=\"{n}\"")).unwrap_or_default();
    format!(
        "<script src=\"{prefix}capture.js\" defer data-gk-token=\"{token}\" data-gk-field=\"{field}\" data-gk-header=\"{header}\" data-gk-login-urls=\"{submit}\"{nonce}></script>",
        field = capture.field,
        header = capture.header,
        submit = route.submit.path,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_script_is_minified_from_the_current_source() {
        let source = include_bytes!("../../injector/capture.js");
        let digest: String = Sha256::digest(source)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let first_line = CAPTURE_JS.split(|&b| b == b'\n').next().unwrap();
        let first_line = String::from_utf8_lossy(first_line);
        assert!(
            first_line.contains(&format!("sha256:{digest}")),
            "injector/capture.min.js is stale: run scripts/minify-capture.sh ({first_line})"
        );
    }

    #[test]
    fn csp_nonces_are_found_in_script_src_or_default_src() {
        assert_eq!(
            csp_nonce("default-src 'self'; script-src 'nonce-abc123' 'strict-dynamic'"),
            Some("abc123".into())
        );
        assert_eq!(
            csp_nonce("default-src 'nonce-Zm9v+/='"),
            Some("Zm9v+/=".into())
        );
        assert_eq!(csp_nonce("script-src 'self'"), None);
        assert_eq!(csp_nonce("style-src 'nonce-xyz'"), None);
        assert_eq!(csp_nonce("script-src 'nonce-a\"b'"), None);
    }

    #[test]
    fn charset_is_read_from_content_type() {
        assert_eq!(
            charset(Some("text/html; charset=ISO-8859-1")),
            Some("ISO-8859-1")
        );
        assert_eq!(charset(Some("text/html;charset=\"utf-8\"")), Some("utf-8"));
        assert_eq!(charset(Some("text/html")), None);
    }

    fn route() -> RouteConfig {
        serde_json::from_value(serde_json::json!({
            "name": "login",
            "page": { "paths": ["/login", "/auth/*"], "methods": ["GET"], "content_types": ["text/html"] },
            "submit": { "method": "POST", "path": "/login" }
        }))
        .unwrap()
    }

    #[test]
    fn submit_matching_survives_path_tricks() {
        let routes = vec![route()];
        for path in [
            "/login",
            "/LOGIN",
            "//login",
            "/login/",
            "/%6cogin",
            "/x/../login",
            "/./login",
            "/login;jsessionid=abc",
            "/login%3Bx=1/",
        ] {
            assert!(
                match_routes(&routes, "POST", path).submit.is_some(),
                "{path}"
            );
        }
        assert!(match_routes(&routes, "post", "/login").submit.is_some());
        assert!(match_routes(&routes, "POST", "/login2").submit.is_none());
        assert!(match_routes(&routes, "GET", "/login").submit.is_none());
    }

    #[test]
    fn page_matching_supports_exact_and_prefix_patterns() {
        let routes = vec![route()];
        assert!(match_routes(&routes, "GET", "/login").page.is_some());
        assert!(match_routes(&routes, "GET", "/auth/sso/start")
            .page
            .is_some());
        assert!(match_routes(&routes, "GET", "/account").page.is_none());
        assert!(match_routes(&routes, "POST", "/login").page.is_none());
    }
}
