//! The operator's console at `/console/` on the admin listener: server-rendered pages over the
//! audit trail and the profile store — an overview per app, route and period (`overview`), a
//! user (`lookup`), an incident (`lookup`), and the docs that explain them (`docs`). Charts
//! are SVG drawn in Rust (`charts`); the numbers come from `stats`, the one place that adds
//! the trail up.
//!
//! Owns: reading the operator's query (bounded), the page layout and the response headers
//! (`Content-Security-Policy` without inline script, `no-store`, no framing). Every form is a
//! GET that changes nothing, so there is nothing to forge across sites.
//!
//! Never shows a password, a payload, a page token, a secret or a user's usual ranges; a login
//! name only when the operator typed it or `store.keep_clear_names` keeps it. Store work runs
//! on the background runtime, like the proxy's.

mod charts;
mod docs;
mod lookup;
mod overview;
mod stats;
mod what_if;

use std::fmt::Write;
use std::sync::Arc;

use http::{Response, StatusCode};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::services::LoginServices;
use crate::wire::escape_html;

/// What the console's pages read.
pub(crate) struct Site<'a> {
    pub config: &'a Arc<Config>,
    pub services: &'a Arc<LoginServices>,
    pub metrics: &'a Arc<Metrics>,
}

/// One GET under `/console`.
pub(crate) struct Request<'a> {
    pub path: &'a str,
    pub query: &'a str,
    /// Whether the caller proved `admin.auth`'s credential.
    pub operator: bool,
}

/// Longest query string read; the console's own links and forms stay far below it.
const MAX_QUERY: usize = 2048;

/// Content-Security-Policy of every console answer: its own stylesheet, no script at all, no
/// framing, forms only back to itself.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Answers one console request.
pub(crate) async fn serve(site: &Site<'_>, request: &Request<'_>) -> Response<Vec<u8>> {
    if request.query.len() > MAX_QUERY {
        return page(
            StatusCode::URI_TOO_LONG,
            "Query too long",
            "<p>The query string is longer than the console reads; use the forms.</p>",
            "",
        );
    }
    let query = Query::parse(request.query);
    match request.path {
        "/console" => redirect("/console/"),
        "/console/" => overview::page(site, &query).await,
        "/console/user" => lookup::user_page(site, &query, request.operator).await,
        "/console/incident" => lookup::incident_page(site, &query, request.operator).await,
        "/console/docs" => docs::page(),
        "/console/favicon.svg" => respond(
            StatusCode::OK,
            "image/svg+xml",
            docs::FAVICON.as_bytes().to_vec(),
        ),
        "/console/console.css" => respond(
            StatusCode::OK,
            "text/css; charset=utf-8",
            docs::STYLESHEET.as_bytes().to_vec(),
        ),
        _ => page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<p>No such console page. Start at the <a href=\"/console/\">overview</a>.</p>",
            "",
        ),
    }
}

/// The query's parameters (the first of each name), each cut to a bound.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(text: &str) -> Query {
        Query(
            url::form_urlencoded::parse(text.as_bytes())
                .take(16)
                .map(|(k, v)| (k.chars().take(32).collect(), v.chars().take(600).collect()))
                .collect(),
        )
    }

    /// The parameter `name`, trimmed; `None` when absent or empty.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// A whole console page: the navigation (overview, user search, incident search), `body`, and
/// a link to the docs section `docs_anchor` that explains what the page shows.
pub(super) fn page(
    status: StatusCode,
    title: &str,
    body: &str,
    docs_anchor: &str,
) -> Response<Vec<u8>> {
    let mut html = String::with_capacity(body.len() + 2048);
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="referrer" content="no-referrer"><title>{title} · gaitkeeper console</title><link rel="stylesheet" href="/console/console.css"><link rel="icon" href="/console/favicon.svg" type="image/svg+xml"></head><body><header><a class="brand" href="/console/">gaitkeeper console</a><form method="get" action="/console/user" role="search"><label>User <input name="name" maxlength="512" placeholder="login name" autocomplete="off" required></label><button>Show</button></form><form method="get" action="/console/incident" role="search"><label>Incident <input name="ref" maxlength="13" placeholder="GK-…" autocomplete="off" required></label><button>Show</button></form></header><main><h1>{title}</h1>"#,
        title = escape_html(title)
    );
    if !docs_anchor.is_empty() {
        let _ = write!(
            html,
            r##"<p class="docs">What this page shows: <a href="/console/docs#{a}">docs/console.md, “{a}”</a></p>"##,
            a = escape_html(docs_anchor)
        );
    }
    html.push_str(body);
    html.push_str("</main></body></html>");
    respond(status, "text/html; charset=utf-8", html.into_bytes())
}

fn redirect(to: &'static str) -> Response<Vec<u8>> {
    let mut response = respond(
        StatusCode::MOVED_PERMANENTLY,
        "text/plain; charset=utf-8",
        Vec::new(),
    );
    response
        .headers_mut()
        .insert(http::header::LOCATION, http::HeaderValue::from_static(to));
    response
}

/// A console answer: the admin listener's (length, `no-store`) with the headers that keep a
/// page from being framed, sniffed, or running anything but itself.
fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = super::respond(status, content_type, body);
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
    ] {
        headers.insert(name, http::HeaderValue::from_static(value));
    }
    response
}

/// A short error page for a store that did not answer; the detail goes to the log, not the
/// page (it may name the database).
pub(super) fn store_unavailable(what: &str, error: &str) -> Response<Vec<u8>> {
    tracing::warn!(error = %error, "console: cannot read {what} from the store");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Store unavailable",
        &format!(
            "<p>The profile store did not answer while reading {}. Check <a href=\"/readyz\">/readyz</a> and gaitkeeper's log, then reload.</p>",
            escape_html(what)
        ),
        "store-and-audit-health",
    )
}

/// `2026-12-07 03:00` (UTC) for tables.
pub(super) fn when(at: std::time::SystemTime) -> String {
    let full = crate::runtime::utc(at);
    full.get(..16).map(|s| format!("{s} UTC")).unwrap_or(full)
}

/// How long ago `at` was, roughly: `5 min ago`, `3 h ago`, `12 days ago`.
pub(super) fn ago(at: std::time::SystemTime) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(at)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..=119 => "just now".into(),
        120..=7199 => format!("{} min ago", secs / 60),
        7200..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// Runs `job` with the store on the background runtime (where its connections live); errors
/// as text.
pub(super) async fn in_store<T, Fut>(
    site: &Site<'_>,
    job: impl FnOnce(crate::store::Store) -> Fut,
) -> Result<T, String>
where
    Fut: std::future::Future<Output = Result<T, crate::store::StoreError>> + Send + 'static,
    T: Send + 'static,
{
    site.services
        .bg
        .spawn(job(site.services.store.clone()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded_and_read_once() {
        let q = Query::parse("name=%20alice%20&name=bob&period=7d&x=");
        assert_eq!(q.get("name"), Some("alice"));
        assert_eq!(q.get("period"), Some("7d"));
        assert_eq!(q.get("x"), None);
        let long = format!("name={}", "a".repeat(5000));
        assert_eq!(Query::parse(&long).get("name").map(str::len), Some(600));
        let many: String = (0..100).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(Query::parse(&many).0.len(), 16);
    }

    #[test]
    fn every_page_carries_the_protective_headers_and_escapes_its_title() {
        let r = page(StatusCode::OK, "<x>", "<p>body</p>", "overview");
        let h = r.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
        assert!(!h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("unsafe-inline"));
        let body = String::from_utf8(r.into_body()).unwrap();
        assert!(body.contains("&lt;x&gt;") && !body.contains("<x>"));
        assert!(body.contains("/console/docs#overview"));
        assert!(!body.contains("<script"));
    }
}
