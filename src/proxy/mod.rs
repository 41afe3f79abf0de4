//! The pingora `ProxyHttp` implementation: thin on purpose. Each phase reads the config
//! snapshot taken when the request began and delegates to the stage that owns the behaviour.
//!
//! Owns: routing between gaitkeeper's own endpoints and the app, forwarding headers, error
//! pages, the per-request log line and request metrics. Never logs query strings, bodies or
//! header values that may carry credentials.

mod capture;
mod challenge;
mod enrol;
mod forwarding;
mod login;
mod oidc;
mod pages;
mod passkeys;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;

use crate::config::{Config, SharedConfig};
use crate::edge::{client_origin, ClientOrigin};
use crate::inject::{self, PageTokens};
use crate::login::TelemetryInbox;
use crate::metrics::Metrics;

pub(crate) use crate::paths::is_reserved_path;
pub(crate) use crate::services::LoginServices;

/// Carries the one-time proof with which the capture script resumes a login whose challenge
/// it showed inside the page.
const RESUME_HEADER: &str = "x-gaitkeeper-resume";

/// The proxy service: one value shared by every worker thread.
pub(crate) struct GaitkeeperProxy {
    config: SharedConfig,
    metrics: Arc<Metrics>,
    tokens: Arc<PageTokens>,
    inbox: Arc<TelemetryInbox>,
    services: Arc<LoginServices>,
}

impl GaitkeeperProxy {
    pub(crate) fn new(
        config: SharedConfig,
        metrics: Arc<Metrics>,
        tokens: Arc<PageTokens>,
        inbox: Arc<TelemetryInbox>,
        services: Arc<LoginServices>,
    ) -> Self {
        GaitkeeperProxy {
            config,
            metrics,
            tokens,
            inbox,
            services,
        }
    }
}

/// What a step of the proxy did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Handled {
    /// gaitkeeper answered it itself, with this status.
    Answered(u16),
    /// It goes on to the app: a login allowed, or a held login put in its place.
    Forward,
}

/// What one request carries through the phases.
pub(crate) struct RequestCtx {
    /// The config as it was when the request began; a reload mid-request does not affect it.
    config: Arc<Config>,
    request_id: String,
    started: Instant,
    upstream_sent: Option<Instant>,
    upstream_time: Option<Duration>,
    capture: capture::CaptureCtx,
    /// Who sent the request and over which scheme (`server.trusted_proxies` decides whose
    /// forwarding headers count); set first thing in `request_filter`.
    origin: ClientOrigin,
    /// `origin`'s address as text (empty for a Unix-socket peer): the one client address of
    /// regulation, token binding, the audit trail, alerts and the access log.
    client_ip: String,
    /// The app the request's host names (an index into `config.apps`).
    app: usize,
    /// The client address as regulation counts it: per app (see `AppConfig::user_scope`).
    regulated_as: String,
    /// A login forwarded to the app, settled once the app has answered.
    login: Option<login::PendingLogin>,
    /// The app's response body is replaced by nothing (see `PendingLogin::return_to`).
    drop_response_body: bool,
}

impl RequestCtx {
    /// The app this request is for.
    fn app(&self) -> &crate::config::AppConfig {
        &self.config.apps[self.app]
    }

    /// How gaitkeeper's own answers to this request are marked (see [`pages::Reply`]).
    fn reply(&self) -> pages::Reply<'_> {
        pages::Reply {
            request_id: &self.request_id,
            https: self.origin.https,
        }
    }
}

#[async_trait]
impl ProxyHttp for GaitkeeperProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            config: self.config.load_full(),
            request_id: String::new(),
            started: Instant::now(),
            upstream_sent: None,
            upstream_time: None,
            origin: ClientOrigin::default(),
            client_ip: String::new(),
            app: 0,
            regulated_as: String::new(),
            capture: capture::CaptureCtx::default(),
            login: None,
            drop_response_body: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.request_id = forwarding::request_id(session.req_header());
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.origin = client_origin(
            crate::wire::client_ip(session),
            tls,
            &session.req_header().headers,
            &ctx.config.server.trusted_proxies,
        );
        ctx.client_ip = ctx.origin.ip_text();
        let host = crate::wire::request_authority(session.req_header());
        match ctx.config.app_for_host(&crate::config::request_host(&host)) {
            Some(app) => ctx.app = app,
            None => {
                let status = pages::respond_misdirected(session, ctx.reply()).await?;
                self.metrics.count_response(status);
                return Ok(true);
            }
        }
        ctx.regulated_as = ctx.app().user_scope(&ctx.client_ip).into_owned();
        let prefix = &ctx.config.server.reserved_prefix.0;
        let path = session.req_header().uri.path();
        if is_reserved_path(path, prefix) {
            // gaitkeeper's own endpoints. Nothing under the prefix is ever forwarded, except a
            // held login replayed in place of the challenge request that completed it.
            let own = path.strip_prefix(prefix.as_str()).unwrap_or("").to_string();
            let status = if own == "capture.js" {
                self.serve_capture_script(session, ctx).await?
            } else if own == "token" {
                self.renew_token(session, ctx).await?
            } else if let Some(id) = own.strip_prefix("enrol/") {
                let id = id.to_string();
                self.enrol_endpoint(session, ctx, &id).await?
            } else if let Some(id) = own.strip_prefix("protect/") {
                let id = id.to_string();
                self.offer_endpoint(session, ctx, &id).await?
            } else if let Some(rest) = own.strip_prefix("challenge/") {
                match self.challenge_endpoint(session, ctx, rest).await? {
                    Handled::Answered(status) => status,
                    Handled::Forward => return Ok(false),
                }
            } else {
                pages::own_endpoint_not_found(session, ctx.reply()).await?
            };
            self.metrics
                .own_endpoint_requests
                .with_label_values(&[&status.to_string()])
                .inc();
            return Ok(true);
        }
        let config = ctx.config.clone();
        let method = session.req_header().method.as_str();
        let app = &config.apps[ctx.app];
        let routes = inject::match_routes(&app.routes, method, path);
        if let Some(submit) = routes.submit {
            ctx.capture.submit_route = Some(submit);
            let resume = session
                .req_header()
                .headers
                .get(RESUME_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let Some(proof) = resume {
                // A login whose challenge the page showed, resumed by the page's script.
                let handled = self.resume_login(session, ctx, &proof).await?;
                return Ok(handled != Handled::Forward);
            }
            self.intercept_login(session, ctx, &app.routes[submit])
                .await?;
            if let Handled::Answered(_) = self.decide_login(session, ctx, submit).await? {
                return Ok(true);
            }
        }
        // A login page may also be the submit's response (a form re-rendered with an error).
        ctx.capture.page_route = routes.page;
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        Ok(Box::new(forwarding::upstream_peer(&ctx.app().upstream)))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        forwarding::add_forwarding_headers(session, upstream_request, ctx)?;
        // Telemetry is gaitkeeper's; the app never sees it, on any request. Nor a machine
        // client's secret header.
        upstream_request.remove_header(ctx.config.capture.header.as_str());
        if let Some(header) = ctx
            .capture
            .submit_route
            .and_then(|i| ctx.app().routes[i].machine_clients.as_ref())
            .and_then(|m| m.header.as_ref())
        {
            upstream_request.remove_header(header.as_str());
        }
        let reads_answer = ctx
            .login
            .as_ref()
            .is_some_and(|l| ctx.app().routes[l.route].success.reads_body());
        if ctx.capture.page_route.is_some() || reads_answer {
            // Ask for an uncompressed login page (rewritten as it streams) or login answer
            // (read to tell success) so neither needs decoding.
            upstream_request.remove_header("accept-encoding");
        }
        if let Some(body) = &ctx.capture.replacement_body {
            upstream_request.remove_header("transfer-encoding");
            upstream_request.remove_header("expect");
            if ctx.capture.decoded {
                // The app gets the decoded body gaitkeeper read, not the coded original.
                upstream_request.remove_header("content-encoding");
            }
            upstream_request.insert_header("content-length", body.len().to_string())?;
        }
        ctx.upstream_sent = Some(Instant::now());
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(replacement) = &ctx.capture.replacement_body {
            // The original body was read whole in request_filter; send the stripped one once.
            *body = if ctx.capture.replacement_sent {
                Some(Bytes::new())
            } else {
                ctx.capture.replacement_sent = true;
                Some(replacement.clone())
            };
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.observe_login_response(upstream_response, ctx);
        self.withhold_for_offer(upstream_response, ctx).await;
        for (name, value) in self.fresh_token(session, ctx) {
            upstream_response.insert_header(name, value)?;
        }
        self.prepare_injection(session, upstream_response, ctx)?;
        if let Some(sent) = ctx.upstream_sent {
            let elapsed = sent.elapsed();
            ctx.upstream_time = Some(elapsed);
            self.metrics.upstream_latency.observe(elapsed.as_secs_f64());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        self.read_login_answer(body, end_of_stream, ctx);
        if ctx.drop_response_body {
            *body = Some(Bytes::new());
            return Ok(None);
        }
        self.rewrite_page_chunk(body, end_of_stream, ctx)?;
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let failure = pages::classify(e);
        if let Some(kind) = failure.upstream_kind {
            self.metrics
                .upstream_errors
                .with_label_values(&[kind])
                .inc();
        }
        if failure.status > 0 {
            if let Err(write_err) =
                pages::write_error_page(session, failure.status, ctx.reply()).await
            {
                tracing::debug!(error = %write_err, "could not send the error page");
            }
        }
        FailToProxy {
            error_code: failure.status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        self.settle_login(ctx);
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        self.metrics.count_response(status);
        if !ctx.config.logging.access_log {
            return;
        }
        let req = session.req_header();
        let upstream_ms = ctx.upstream_time.map(millis);
        tracing::info!(
            target: "gaitkeeper::access",
            method = %req.method,
            // The path only: query strings can carry tokens and personal data.
            path = %forwarding::loggable_path(req.uri.path()),
            status,
            upstream_ms,
            duration_ms = millis(ctx.started.elapsed()),
            request_id = %ctx.request_id,
            client = %ctx.client_ip,
            scheme = ctx.origin.scheme(),
            // The connection's protocol: a replayed held login carries the request head it was
            // held with, so its version is not the one the client is speaking now.
            http = if session.is_http2() {
                "2"
            } else if req.version == http::Version::HTTP_10 {
                "1.0"
            } else {
                "1.1"
            },
            error = error.map(|e| e.etype().as_str()),
            "request"
        );
    }
}

/// Milliseconds with 0.01 ms resolution, for log lines.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}
