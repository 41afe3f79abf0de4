//! Proxy glue for the capture stages: injecting the script into login-page responses, and
//! taking the telemetry out of login submits. The decisions live in `inject` and `login`;
//! this file only moves bytes and headers between pingora and them.

use std::sync::Mutex;

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{pages, GaitkeeperProxy, RequestCtx};
use crate::config::RouteConfig;
use crate::inject::{self, Client, Coding, PageRewriter, Placement, TokenError};
use crate::login::{self, TelemetryOutcome, TelemetryStatus, Transport};
use crate::wire;

/// The header carrying a page token: fresh ones on login answers, the current one to renew.
pub(super) const TOKEN_HEADER: &str = "x-gaitkeeper-token";
/// Says a fresh token starts a new page epoch (the script clears its telemetry).
pub(super) const TOKEN_RESET_HEADER: &str = "x-gaitkeeper-token-reset";

/// Per-request state of the capture stages.
#[derive(Default)]
pub(super) struct CaptureCtx {
    /// Set when the request is for a login page: the route's index in the request's config.
    pub page_route: Option<usize>,
    /// The streaming rewriter for a login page's body (Mutex only to make the ctx Sync).
    pub rewriter: Option<Mutex<PageRewriter>>,
    /// The login body the app receives instead of the original (telemetry removed).
    pub replacement_body: Option<Bytes>,
    pub replacement_sent: bool,
    pub telemetry: Option<TelemetryOutcome>,
    /// The login body as the app receives it (telemetry taken out), for the decision stage.
    pub app_body: Option<Bytes>,
    /// The replacement body is the decoded one: its `Content-Encoding` goes.
    pub decoded: bool,
    /// The submit's normalised login name, or why it has none (`login::read_submit`).
    pub name: Option<Result<login::LoginName, login::Unreadable>>,
    /// For a login submit: its route (the answer carries a fresh page token for it).
    pub submit_route: Option<usize>,
    /// When the submitting page was served, from its verified token.
    pub page_ms: Option<u64>,
    /// The bans of this login's user and client, read with its page token's first use
    /// (shared state only), for regulation to use.
    pub bans: Option<crate::shared::BansRead>,
}

/// The client a page token is bound to: its real address ([`RequestCtx::client_ip`]) and
/// user agent.
fn client<'a>(session: &'a Session, ip: &'a str) -> Client<'a> {
    let user_agent = session
        .req_header()
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Client { ip, user_agent }
}

impl GaitkeeperProxy {
    /// A fresh page token for the page a login was submitted from: every answer to a login
    /// carries one (`X-Gaitkeeper-Token`), so a retry after a typo, on a page that is not
    /// reloaded, is judged normally rather than as a replay. `(header, value)` pairs: with
    /// `X-Gaitkeeper-Token-Reset: 1` when the page's serving time is unknown and the script must
    /// start its telemetry anew.
    pub(super) fn fresh_token(
        &self,
        session: &Session,
        ctx: &RequestCtx,
    ) -> Vec<(&'static str, String)> {
        let Some(route) = ctx.capture.submit_route.map(|i| &ctx.app().routes[i]) else {
            return Vec::new();
        };
        let ip = ctx.client_ip.clone();
        let client = client(session, &ip);
        let capture = &ctx.config.capture;
        let token = self.tokens.reissue(
            &ctx.app().token_route(&route.name),
            &client,
            capture.bind_token_to_ip,
            capture.token_ttl.0,
            ctx.capture.page_ms,
        );
        let mut headers = vec![(TOKEN_HEADER, token)];
        if ctx.capture.page_ms.is_none() {
            headers.push((TOKEN_RESET_HEADER, "1".to_string()));
        }
        headers
    }

    /// `POST {prefix}token`: renews the page token given in `X-Gaitkeeper-Token` (see
    /// `PageTokens::renew`); `X-Gaitkeeper-Token-Reset: 1` starts a new page epoch.
    pub(super) async fn renew_token(&self, session: &mut Session, ctx: &RequestCtx) -> Result<u16> {
        if session.req_header().method != http::Method::POST {
            return pages::respond_method_not_allowed(session, ctx.reply()).await;
        }
        let headers = &session.req_header().headers;
        let token = headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let reset = headers
            .get(TOKEN_RESET_HEADER)
            .is_some_and(|v| v.as_bytes() == b"1");
        let ip = ctx.client_ip.clone();
        let client = client(session, &ip);
        let capture = &ctx.config.capture;
        let renewed = self.tokens.renew(
            &token,
            &client,
            capture.bind_token_to_ip,
            capture.token_ttl.0,
            reset,
        );
        let (status, body) = match renewed {
            Ok(token) => (200, serde_json::json!({ "token": token })),
            Err(e) => (403, serde_json::json!({ "error": e.reason() })),
        };
        pages::respond(
            session,
            status,
            "application/json",
            Bytes::from(body.to_string()),
            ctx.reply(),
        )
        .await?;
        Ok(status)
    }

    /// Serves the capture script (GET/HEAD, with ETag revalidation).
    pub(super) async fn serve_capture_script(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
    ) -> Result<u16> {
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            return pages::respond_method_not_allowed(session, ctx.reply()).await;
        }
        let etag = inject::CAPTURE_JS_ETAG.as_str();
        let not_modified = session
            .req_header()
            .headers
            .get(http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        let mut header = ResponseHeader::build(if not_modified { 304 } else { 200 }, Some(6))?;
        header.insert_header("content-type", "text/javascript; charset=utf-8")?;
        header.insert_header("etag", etag)?;
        header.insert_header("cache-control", "public, max-age=300")?;
        header.insert_header("x-content-type-options", "nosniff")?;
        header.insert_header("x-request-id", ctx.request_id.as_str())?;
        let send_body = !not_modified && method == http::Method::GET;
        if !not_modified {
            header.insert_header("content-length", inject::CAPTURE_JS.len().to_string())?;
        }
        session
            .write_response_header(Box::new(header), !send_body)
            .await?;
        if send_body {
            session
                .write_response_body(Some(Bytes::from_static(inject::CAPTURE_JS)), true)
                .await?;
        }
        Ok(if not_modified { 304 } else { 200 })
    }

    /// Reads a login submit's body (bounded in size and time), undoes its coding, takes the
    /// telemetry out, reads the login name and checks the page token. A body over the limit
    /// or too slow to arrive is not read whole: `ctx.capture.name` says why, and the caller
    /// refuses it.
    pub(super) async fn intercept_login(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        route: &RouteConfig,
    ) -> Result<()> {
        let Some(body) = self.read_login_body(session, ctx).await? else {
            return Ok(());
        };
        let capture = &ctx.config.capture;
        let limit = capture.max_login_body_bytes;
        let headers = &session.req_header().headers;
        let header_values = |name: http::header::HeaderName| -> Vec<&str> {
            headers
                .get_all(name)
                .iter()
                // A value that is not visible ASCII cannot be read the way the app reads it.
                .map(|v| v.to_str().unwrap_or("\u{fffd}"))
                .collect()
        };
        let submit = login::LoginSubmit {
            content_type: header_values(http::header::CONTENT_TYPE),
            content_encoding: header_values(http::header::CONTENT_ENCODING),
            query: session.req_header().uri.query(),
            body: &body,
        };
        let read = login::read_submit(
            &submit,
            &route.username,
            &capture.field,
            capture.max_payload_bytes,
            limit,
        );
        let mut found: Vec<(Transport, Result<Vec<u8>, login::ExtractError>)> = Vec::new();
        if let Some(telemetry) = read.telemetry {
            found.push((Transport::FormField, telemetry));
        }
        ctx.capture.decoded = read.decoded;
        ctx.capture.replacement_body = read.app_body.map(Bytes::from);
        ctx.capture.app_body = Some(
            ctx.capture
                .replacement_body
                .clone()
                .unwrap_or_else(|| Bytes::from(body)),
        );
        ctx.capture.name = Some(read.name);
        let header_values: Vec<&[u8]> = session
            .req_header()
            .headers
            .get_all(capture.header.as_str())
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        match header_values.as_slice() {
            [] => {}
            [value] => found.push((
                Transport::Header,
                login::decode_header(value, capture.max_payload_bytes),
            )),
            _ => found.push((Transport::Header, Err(login::ExtractError::Duplicate))),
        }

        let (transport, status, payload, issued_ms, bans) =
            self.verify_telemetry(session, ctx, route, found).await;
        ctx.capture.bans = bans;
        self.metrics
            .telemetry
            .with_label_values(&[
                status.code(),
                transport.map(Transport::as_str).unwrap_or("none"),
            ])
            .inc();
        ctx.capture.page_ms = issued_ms;
        let record = TelemetryOutcome {
            route: route.name.clone(),
            transport,
            status,
            payload,
            issued_ms,
        };
        self.inbox.record(&record);
        ctx.capture.telemetry = Some(record);
        Ok(())
    }

    /// Reads a login submit's body whole, within `capture.max_login_body_bytes` and
    /// `capture.body_timeout`; `None` when it was not (noted by [`Self::unread`]).
    async fn read_login_body(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Vec<u8>>> {
        let capture = &ctx.config.capture;
        let limit = capture.max_login_body_bytes;
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            self.unread(ctx, session, login::Unreadable::TooLarge);
            return Ok(None);
        }
        let expects_continue = session
            .req_header()
            .headers
            .get(http::header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects_continue {
            session.write_continue_response().await?;
        }
        session.enable_retry_buffering();
        let deadline = tokio::time::Instant::now() + capture.body_timeout.0;
        match wire::read_body(session, limit, deadline).await? {
            wire::Body::Whole(body) => Ok(Some(body)),
            wire::Body::TooLarge => {
                self.unread(ctx, session, login::Unreadable::TooLarge);
                Ok(None)
            }
            // A body trickled in slower than the deadline: never forwarded.
            wire::Body::TimedOut => {
                self.unread(ctx, session, login::Unreadable::BodyTimeout);
                Ok(None)
            }
        }
    }

    /// The telemetry a submit carried (`found`: from the form and from the header), its
    /// envelope read and its page token verified once: where it came from, whether it can be
    /// scored, the payload, when its page was served, and (shared state) the bans read with
    /// the token.
    async fn verify_telemetry(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        route: &RouteConfig,
        mut found: Vec<(Transport, Result<Vec<u8>, login::ExtractError>)>,
    ) -> (
        Option<Transport>,
        TelemetryStatus,
        Option<Vec<u8>>,
        Option<u64>,
        Option<crate::shared::BansRead>,
    ) {
        let capture = &ctx.config.capture;
        let mut issued_ms = None;
        let mut bans = None;
        let (transport, status, payload) = match found.len() {
            0 => (None, TelemetryStatus::Missing, None),
            1 => {
                let (transport, result) = found.pop().expect("one element");
                match result.and_then(|p| login::read_envelope(&p).map(|e| (p, e))) {
                    Err(e) => (Some(transport), TelemetryStatus::Refused(e.reason()), None),
                    Ok((payload, envelope)) => {
                        let ip = ctx.client_ip.clone();
                        let client = client(session, &ip);
                        let unused = self.tokens.verify_unused(
                            &envelope.token,
                            &ctx.app().token_route(&route.name),
                            &client,
                            capture.bind_token_to_ip,
                        );
                        let verified = match unused {
                            Ok((claims, id, until)) => self
                                .first_use(session, ctx, id, until)
                                .await
                                .map(|(fresh, read)| {
                                    bans = read;
                                    if fresh {
                                        Ok(claims)
                                    } else {
                                        Err(TokenError::Replayed)
                                    }
                                }),
                            Err(e) => Ok(Err(e)),
                        };
                        match verified {
                            Err(_) => (Some(transport), TelemetryStatus::StateError, None),
                            Ok(verified) => match verified {
                                Ok(claims) => {
                                    // The page's own serving time (carried through renewals);
                                    // tokens of older versions carry seconds only: their page may
                                    // have been served up to a second later than `iat`.
                                    issued_ms = Some(
                                        claims
                                            .pgms
                                            .or(claims.iatms)
                                            .unwrap_or(claims.iat * 1000 + 999),
                                    );
                                    (Some(transport), TelemetryStatus::Ok, Some(payload))
                                }
                                Err(TokenError::Replayed) => {
                                    (Some(transport), TelemetryStatus::Replayed, None)
                                }
                                Err(e) => {
                                    (Some(transport), TelemetryStatus::Refused(e.reason()), None)
                                }
                            },
                        }
                    }
                }
            }
            // Telemetry in both the form and a header: conflicting, trust neither.
            _ => (
                None,
                TelemetryStatus::Refused(login::ExtractError::Duplicate.reason()),
                None,
            ),
        };
        (transport, status, payload, issued_ms, bans)
    }

    /// Marks a verified page token used: in this process, or in the state several instances
    /// share (`server.shared_state: store`), where an error (the database away) is counted,
    /// logged, and left to `policy.on_state_error`. Shared, it also reads the bans of the
    /// login's user and client in the same round trip (for regulation).
    async fn first_use(
        &self,
        session: &Session,
        ctx: &RequestCtx,
        id: crate::inject::TokenId,
        until: u64,
    ) -> Result<(bool, Option<crate::shared::BansRead>), crate::shared::StateError> {
        let Some(shared) = &self.services.shared else {
            return Ok((self.tokens.first_use(id, until), None));
        };
        let slots = self.regulation_slots(session, ctx);
        let used = shared
            .first_use_and_banned("page_token", &id, until, &slots)
            .await;
        match used {
            Ok((fresh, banned)) => Ok((fresh, Some(crate::shared::BansRead { slots, banned }))),
            Err(e) => {
                self.metrics.state_errors.inc();
                tracing::warn!(error = %e, "cannot check the page token against the shared state; policy.on_state_error decides");
                Err(e)
            }
        }
    }

    /// The regulation slots of this submit's user (as `decide_login` keys them) and client,
    /// to read their bans with the page token; none when the name cannot be read.
    fn regulation_slots(&self, session: &Session, ctx: &RequestCtx) -> Vec<String> {
        let Some(Ok(name)) = &ctx.capture.name else {
            return Vec::new();
        };
        let Ok(user) = self
            .services
            .store
            .user_key(&ctx.app().user_scope(&name.name))
        else {
            return Vec::new();
        };
        let device = super::challenge::device_cookie(session, ctx);
        let trusted = self.services.trusted_device(device.as_deref(), &user);
        self.services.regulator.slots(
            &ctx.config.regulation,
            &user.to_string(),
            &ctx.regulated_as,
            trusted,
        )
    }

    /// Notes a body that was not read whole; its connection is not reused (the rest of the
    /// body may still be on its way).
    fn unread(&self, ctx: &mut RequestCtx, session: &mut Session, why: login::Unreadable) {
        self.metrics
            .login_bodies_refused
            .with_label_values(&[why.reason()])
            .inc();
        session.set_keepalive(None);
        ctx.capture.name = Some(Err(why));
    }

    /// Decides, from the app's response header, whether to rewrite this login page, and if
    /// so prepares the rewriter and fixes the headers (length, coding, caching).
    pub(super) fn prepare_injection(
        &self,
        session: &Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = ctx.capture.page_route.map(|i| &ctx.app().routes[i]) else {
            return Ok(());
        };
        let status = response.status.as_u16();
        if session.req_header().method == http::Method::HEAD
            || status < 200
            || status == 204
            || status == 304
        {
            return Ok(());
        }
        let header_text = |name: http::header::HeaderName| {
            response
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header_text(http::header::CONTENT_TYPE);
        let skip = |reason: &str| {
            self.metrics
                .injection_skipped
                .with_label_values(&[reason])
                .inc()
        };
        if !inject::is_injectable(route, content_type.as_deref()) {
            skip("content_type");
            return Ok(());
        }
        let Some(coding) =
            Coding::from_header(header_text(http::header::CONTENT_ENCODING).as_deref())
        else {
            skip("coding");
            return Ok(());
        };
        let charset = inject::charset(content_type.as_deref()).map(str::to_string);
        let ascii_compatible = charset.as_deref().is_none_or(|c| {
            encoding_rs::Encoding::for_label(c.as_bytes()).is_none_or(|e| e.is_ascii_compatible())
        });
        if !ascii_compatible {
            skip("charset");
            return Ok(());
        }

        let nonce = header_text(http::header::CONTENT_SECURITY_POLICY)
            .and_then(|csp| inject::csp_nonce(&csp));
        let ip = ctx.client_ip.clone();
        let client = client(session, &ip);
        let capture = &ctx.config.capture;
        let token = self.tokens.issue(
            &ctx.app().token_route(&route.name),
            &client,
            capture.bind_token_to_ip,
            capture.token_ttl.0,
        );
        let tag = inject::script_tag(
            &ctx.config.server.reserved_prefix.0,
            &token,
            nonce.as_deref(),
            capture,
            route,
        );
        ctx.capture.rewriter = Some(Mutex::new(PageRewriter::new(
            tag,
            coding,
            charset.as_deref(),
        )));

        // The body changes length and coding; each page carries a client-bound token, so no
        // shared cache may keep it.
        for name in [
            "content-length",
            "content-encoding",
            "etag",
            "accept-ranges",
            "content-md5",
            "last-modified",
        ] {
            response.remove_header(name);
        }
        response.insert_header("cache-control", "private, no-store")?;
        Ok(())
    }

    /// Rewrites one chunk of a login page's body.
    pub(super) fn rewrite_page_chunk(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(rewriter) = ctx.capture.rewriter.as_mut() else {
            return Ok(());
        };
        let rewriter = rewriter
            .get_mut()
            .expect("never poisoned: no panics while held");
        let mut out = match body.as_deref() {
            Some(chunk) => rewriter.feed(chunk),
            None => Ok(Bytes::new()),
        };
        if end_of_stream {
            out = out.and_then(|first| {
                let rest = rewriter.finish()?;
                let mut joined = first.to_vec();
                joined.extend_from_slice(&rest);
                Ok(Bytes::from(joined))
            });
            if out.is_ok() {
                let placement = match rewriter.placement() {
                    Placement::EndOfHead => "end_of_head",
                    Placement::StartOfBody => "start_of_body",
                    Placement::EndOfDocument => "end_of_document",
                    Placement::Pending => "none",
                };
                self.metrics
                    .pages_injected
                    .with_label_values(&[placement])
                    .inc();
            }
        }
        match out {
            Ok(bytes) => {
                *body = Some(bytes);
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .injection_skipped
                    .with_label_values(&["corrupt_body"])
                    .inc();
                tracing::warn!(request_id = %ctx.request_id, error = %e, "cannot rewrite the login page; aborting the response");
                Error::e_explain(ErrorType::InternalError, "login page rewriting failed")
            }
        }
    }
}
