//! The admin listener: `/healthz`, `/readyz`, `/metrics` (the registry is `crate::metrics`'s),
//! the prototype-compatible `POST /__gk/analyze`, `/debug/telemetry` and the operator's console
//! (`/console/`), on its own private address, behind `admin.auth` (`auth`); and the
//! operator's `gaitkeeper users` commands (`users`).
//!
//! Owns: answering operators and monitoring. Never served on a public listener, never exposes
//! config values, secrets, passwords or page tokens; a profile's ranges only to an
//! authenticated operator.

mod analyze;
mod auth;
mod console;
pub mod edge_locations;
pub mod users;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::config::{AdminAuthConfig, SharedConfig};
use crate::login::TelemetryInbox;
use crate::metrics::Metrics;
use crate::services::LoginServices;
use crate::wire::Body;

use auth::Caller;

/// Serves the admin endpoints.
pub struct AdminApp {
    /// Whether the listener was bound to an address other hosts reach (`admin.listen` is read
    /// once, at start): then a reloaded config without `admin.auth` opens nothing.
    off_loopback: bool,
    metrics: Arc<Metrics>,
    config: SharedConfig,
    inbox: Arc<TelemetryInbox>,
    services: Arc<LoginServices>,
}

impl AdminApp {
    pub fn new(
        metrics: Arc<Metrics>,
        config: SharedConfig,
        inbox: Arc<TelemetryInbox>,
        services: Arc<LoginServices>,
    ) -> Self {
        let off_loopback = !config.load().admin.listen.0.ip().is_loopback();
        AdminApp {
            off_loopback,
            metrics,
            config,
            inbox,
            services,
        }
    }

    /// `POST /__gk/analyze`: reads the (bounded) body and scores it.
    async fn analyze(&self, session: &mut ServerSession, caller: Caller) -> Response<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + analyze::BODY_TIMEOUT;
        let body = match crate::wire::read_body(session, analyze::MAX_BODY, deadline).await {
            Ok(Body::Whole(body)) => body,
            Ok(Body::TooLarge) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
            Ok(Body::TimedOut) => {
                return plain(StatusCode::REQUEST_TIMEOUT, "the body took too long\n")
            }
            Err(_) => return plain(StatusCode::BAD_REQUEST, "cannot read the body\n"),
        };
        let config = self.config.load_full();
        let (status, json) =
            analyze::analyze(&body, &config, &self.services, caller == Caller::Operator).await;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        respond(status, "application/json", json.to_string().into_bytes())
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let config = self.config.load_full();
        let caller = match auth::check(
            config.admin.auth.as_ref(),
            self.off_loopback,
            &path,
            &session.req_header().headers,
        ) {
            Ok(caller) => caller,
            Err(auth::Refused) => return unauthorized(config.admin.auth.as_ref()),
        };
        if path == "/__gk/analyze" {
            if method != http::Method::POST {
                return plain(StatusCode::METHOD_NOT_ALLOWED, "only POST\n");
            }
            return self.analyze(session, caller).await;
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        }
        if path == "/console" || path.starts_with("/console/") {
            let page = console::Request {
                path: &path,
                query: session.req_header().uri.query().unwrap_or(""),
                operator: caller == Caller::Operator,
            };
            let site = console::Site {
                config: &config,
                services: &self.services,
                metrics: &self.metrics,
            };
            return console::serve(&site, &page).await;
        }
        match path.as_str() {
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/readyz" => {
                // Ready when a valid config is serving and the profile store answers.
                if self.metrics.config_loaded.get() != 1 {
                    plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: no valid config\n",
                    )
                } else if !self.services.store_ready().await {
                    plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: the profile store does not answer\n",
                    )
                } else {
                    plain(StatusCode::OK, "ready\n")
                }
            }
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/debug/telemetry" if self.inbox.enabled() => {
                debug_telemetry(&self.inbox, &session.req_header().headers)
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found; try /healthz, /readyz, /metrics or /console/\n",
            ),
        }
    }
}

/// 401 with the challenges `admin.auth` accepts; says what to send, never what was sent.
fn unauthorized(auth: Option<&AdminAuthConfig>) -> Response<Vec<u8>> {
    let body = b"authentication required: send admin.auth's credential (Authorization: Bearer TOKEN, or the basic-auth user and password)\n".to_vec();
    let mut response = Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("content-type", "text/plain; charset=utf-8")
        .header("content-length", body.len())
        .header("cache-control", "no-store");
    for challenge in auth::challenges(auth) {
        response = response.header("www-authenticate", challenge);
    }
    response.body(body).expect("static header values are valid")
}

/// Warning carried by every `/debug/telemetry` answer.
const TELEMETRY_WARNING: &str = "These are real users' login payloads (timings and key classes): sensitive, and replayable by anyone who holds them while fresh. Page tokens are removed. Turn admin.debug_telemetry off once the deployment is checked.";

/// `/debug/telemetry`: JSON for tools, a page with the warning for a browser.
fn debug_telemetry(inbox: &TelemetryInbox, headers: &http::HeaderMap) -> Response<Vec<u8>> {
    let json = inbox.to_json();
    let browser = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let mut response = if browser {
        let pretty = serde_json::from_slice::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_default();
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>gaitkeeper: recent login telemetry</title></head><body><p><strong>Sensitive.</strong> {}</p><pre>{}</pre></body></html>",
            crate::wire::escape_html(TELEMETRY_WARNING),
            crate::wire::escape_html(&pretty)
        );
        respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page.into_bytes(),
        )
    } else {
        respond(StatusCode::OK, "application/json", json)
    };
    let headers = response.headers_mut();
    headers.insert(
        "x-gaitkeeper-warning",
        http::HeaderValue::from_static(
            "sensitive: real users' login payloads; page tokens removed",
        ),
    );
    headers.insert(
        "content-security-policy",
        http::HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    response
}

fn plain(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

/// A response with its length, so the connection stays open for the next request (without
/// `content-length` the body would end with the connection: one TCP handshake per scrape or
/// analyze call).
fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .expect("static header values are valid")
}
