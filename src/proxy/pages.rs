//! Responses gaitkeeper writes itself: error pages when the app cannot be reached, and answers
//! under the reserved prefix. They say what happened and give a reference, nothing more.

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::{ErrorSource, ErrorType};

use crate::wire::escape_html;

/// What every answer of gaitkeeper's own carries besides its body: the request id, and
/// whether the client came over HTTPS (HSTS is sent then, and only then).
#[derive(Clone, Copy)]
pub(super) struct Reply<'a> {
    pub request_id: &'a str,
    pub https: bool,
}

/// The Content-Security-Policy of gaitkeeper's pages that set none of their own: nothing
/// loads, nothing frames them.
const OWN_PAGE_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
/// One year, the value HSTS preload lists ask for.
const HSTS: &str = "max-age=31536000";

/// The security headers of every page gaitkeeper writes itself (challenge, block, errors):
/// a strict CSP unless the page brought its own, no framing by other sites (only the page's
/// own origin, for the challenge shown in its overlay), no referrer, HSTS over HTTPS.
fn add_security_headers(header: &mut ResponseHeader, reply: Reply<'_>) -> Result<()> {
    let csp = match header.headers.get("content-security-policy") {
        Some(own) => own.to_str().unwrap_or("").to_string(),
        None => {
            header.insert_header("content-security-policy", OWN_PAGE_CSP)?;
            OWN_PAGE_CSP.to_string()
        }
    };
    let frame = if csp.contains("frame-ancestors 'self'") {
        "SAMEORIGIN"
    } else {
        "DENY"
    };
    header.insert_header("x-frame-options", frame)?;
    header.insert_header("referrer-policy", "no-referrer")?;
    header.insert_header("x-request-id", reply.request_id)?;
    if reply.https {
        header.insert_header("strict-transport-security", HSTS)?;
    }
    Ok(())
}

/// How a proxying failure is answered and counted.
pub(super) struct Failure {
    /// Status sent to the client; 0 when the client is gone and nothing can be sent.
    pub status: u16,
    /// Metric label for failures talking to the app.
    pub upstream_kind: Option<&'static str>,
}

pub(super) fn classify(e: &Error) -> Failure {
    use ErrorType::*;
    if let HTTPStatus(code) = e.etype() {
        return Failure {
            status: *code,
            upstream_kind: None,
        };
    }
    match e.esource() {
        ErrorSource::Upstream => {
            let (status, kind) = match e.etype() {
                ConnectTimedout | ReadTimedout | WriteTimedout => (504, "timeout"),
                ConnectRefused | ConnectNoRoute | ConnectError | ConnectProxyFailure
                | TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | TLSWantX509Lookup
                | HandshakeError => (502, "connect"),
                ConnectionClosed | ReadError | WriteError => (502, "reset"),
                _ => (502, "other"),
            };
            Failure {
                status,
                upstream_kind: Some(kind),
            }
        }
        ErrorSource::Downstream => Failure {
            status: match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                ReadTimedout => 408,
                _ => 400,
            },
            upstream_kind: None,
        },
        ErrorSource::Internal | ErrorSource::Unset => Failure {
            status: 500,
            upstream_kind: None,
        },
    }
}

fn explanation(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("Bad Request", "The request could not be understood."),
        404 => ("Not Found", "There is nothing here."),
        421 => (
            "Misdirected Request",
            "This server does not serve this site. Check the address.",
        ),
        405 => ("Method Not Allowed", "This method is not allowed here."),
        408 => ("Request Timeout", "The request took too long to arrive."),
        413 => ("Payload Too Large", "The request body is too large."),
        502 => (
            "Bad Gateway",
            "The application is not reachable right now. Please try again in a moment.",
        ),
        503 => (
            "Service Unavailable",
            "The service is unavailable right now. Please try again in a moment.",
        ),
        504 => (
            "Gateway Timeout",
            "The application did not answer in time. Please try again in a moment.",
        ),
        _ => ("Error", "Something went wrong."),
    }
}

/// A small HTML page for `status`; `request_id` is a plain token (see `request_id`), safe in HTML.
fn page(status: u16, request_id: &str) -> Bytes {
    let (title, text) = explanation(status);
    Bytes::from(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {title}</title></head>\n<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\n<h1>{status} {title}</h1>\n<p>{text}</p>\n<p><small>Reference: {request_id}</small></p>\n</body></html>\n"
    ))
}

/// Sends the error page for a failed proxy attempt (does nothing if a response already began).
pub(super) async fn write_error_page(
    session: &mut Session,
    status: u16,
    reply: Reply<'_>,
) -> Result<()> {
    let body = page(status, reply.request_id);
    let mut header = ResponseHeader::build(status, Some(8))?;
    header.insert_header("content-type", "text/html; charset=utf-8")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    add_security_headers(&mut header, reply)?;
    let body = if session.req_header().method == http::Method::HEAD {
        Bytes::new()
    } else {
        body
    };
    session.write_error_response(header, body).await
}

/// Answers a request for a host that no app claims (and no app is `default: true`): 421,
/// as for a request sent to the wrong server. Returns the status.
/// Answers a request with a method the endpoint does not take: 405, plain text. Returns the
/// status.
pub(super) async fn respond_method_not_allowed(
    session: &mut Session,
    reply: Reply<'_>,
) -> Result<u16> {
    respond(
        session,
        405,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"method not allowed\n"),
        reply,
    )
    .await?;
    Ok(405)
}

pub(super) async fn respond_misdirected(session: &mut Session, reply: Reply<'_>) -> Result<u16> {
    respond(
        session,
        421,
        "text/html; charset=utf-8",
        page(421, reply.request_id),
        reply,
    )
    .await?;
    Ok(421)
}

/// Answers a request under the reserved prefix that no stage handles. Returns the status.
pub(super) async fn own_endpoint_not_found(session: &mut Session, reply: Reply<'_>) -> Result<u16> {
    respond(
        session,
        404,
        "text/html; charset=utf-8",
        page(404, reply.request_id),
        reply,
    )
    .await?;
    Ok(404)
}

/// Writes a complete response; the body is left out for HEAD requests.
pub(super) async fn respond(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: Bytes,
    reply: Reply<'_>,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(10))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    header.insert_header("x-content-type-options", "nosniff")?;
    add_security_headers(&mut header, reply)?;
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// How a refusal is written: as a page, or as JSON for a fetch/XHR login (whose page shows
/// the incident in an overlay: docs/telemetry.md §1.3), and with any extra headers (the fresh
/// page token of a login answer).
pub(super) struct Refusal<'a> {
    pub json: bool,
    pub headers: &'a [(&'static str, String)],
}

/// Answers a blocked login: 403, the blocked page and the incident in a header.
pub(super) async fn respond_blocked(
    session: &mut Session,
    app_name: &str,
    incident: &str,
    reply: Reply<'_>,
    how: Refusal<'_>,
) -> Result<()> {
    let (content_type, body) = if how.json {
        ("application/json", refusal_json("blocked", incident))
    } else {
        ("text/html; charset=utf-8", blocked_page(app_name, incident))
    };
    let headers = refusal_headers(incident, &how);
    respond_with(session, 403, &headers, content_type, body, reply).await
}

fn refusal_json(kind: &str, incident: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "gaitkeeper": { kind: { "incident": incident } } }).to_string())
}

fn refusal_headers<'a>(incident: &'a str, how: &'a Refusal<'_>) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![("x-gaitkeeper-incident", incident)];
    headers.extend(how.headers.iter().map(|(n, v)| (*n, v.as_str())));
    headers
}

/// Answers a login submit that gaitkeeper cannot read (its name, content type or coding):
/// `status` (400, 413 or 415), a page saying so and the incident reference.
pub(super) async fn respond_unreadable(
    session: &mut Session,
    status: u16,
    app_name: &str,
    incident: &str,
    reply: Reply<'_>,
    how: Refusal<'_>,
) -> Result<()> {
    let headers = refusal_headers(incident, &how);
    if how.json {
        let body = refusal_json("refused", incident);
        return respond_with(session, status, &headers, "application/json", body, reply).await;
    }
    let app = escape_html(app_name);
    let body = Bytes::from(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Sign-in refused - {app}</title></head>\n<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto;padding:0 1em;line-height:1.5\">\n<h1>Sign-in refused</h1>\n<p>This sign-in request to {app} could not be read, so it was refused. Please sign in again from the sign-in page.</p>\n<p>If this keeps happening, contact support and give them this reference:</p>\n<p><strong>{incident}</strong></p>\n</body></html>\n"
    ));
    respond_with(
        session,
        status,
        &headers,
        "text/html; charset=utf-8",
        body,
        reply,
    )
    .await
}

/// The page a blocked login gets: a refusal and the incident reference the support team can
/// look up (`gaitkeeper audit show`), nothing about why. `incident` is a plain token.
fn blocked_page(app_name: &str, incident: &str) -> Bytes {
    let app = escape_html(app_name);
    Bytes::from(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Sign-in refused - {app}</title></head>\n<body style=\"font-family:sans-serif;max-width:40em;margin:3em auto;padding:0 1em;line-height:1.5\">\n<h1>Sign-in refused</h1>\n<p>This sign-in attempt to {app} was refused for your protection.</p>\n<p>If this was you, contact support and give them this reference:</p>\n<p><strong>{incident}</strong></p>\n</body></html>\n"
    ))
}

/// Writes a complete response with extra headers (redirects, cookies); body left out for HEAD.
pub(super) async fn respond_with(
    session: &mut Session,
    status: u16,
    headers: &[(&str, &str)],
    content_type: &str,
    body: Bytes,
    reply: Reply<'_>,
) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(11 + headers.len()))?;
    for (name, value) in headers {
        header.append_header(name.to_string(), *value)?;
    }
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    header.insert_header("x-content-type-options", "nosniff")?;
    add_security_headers(&mut header, reply)?;
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(header), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}
