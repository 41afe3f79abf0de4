//! The admin listener: `/healthz`, `/readyz`, `/metrics` (the registry is `crate::metrics`'s) and the prototype-compatible
//! `POST /__gk/analyze`, on its own private address; and
//! the operator's `gaitkeeper users` commands (`users`).
//!
//! Owns: answering operators and monitoring. Never served on a public listener, never exposes
//! config values or secrets.

mod analyze;
pub mod edge_locations;
pub mod users;

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::config::SharedConfig;
use crate::login::TelemetryInbox;
use crate::metrics::Metrics;
use crate::services::LoginServices;
use crate::wire::Body;

/// Serves the admin endpoints.
pub struct AdminApp {
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
        AdminApp {
            metrics,
            config,
            inbox,
            services,
        }
    }

    /// `POST /__gk/analyze`: reads the (bounded) body and scores it.
    async fn analyze(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
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
        let (status, json) = analyze::analyze(&body, &config, &self.services).await;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        respond(status, "application/json", json.to_string().into_bytes())
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        if path == "/__gk/analyze" {
            if method != http::Method::POST {
                return plain(StatusCode::METHOD_NOT_ALLOWED, "only POST\n");
            }
            return self.analyze(session).await;
        }
        if method != http::Method::GET && method != http::Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
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
                respond(StatusCode::OK, "application/json", self.inbox.to_json())
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found; try /healthz, /readyz or /metrics\n",
            ),
        }
    }
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
