//! What both listeners read off a request and write back: the client's address, a body read
//! whole within a size and a time bound, and HTML-escaped text. One copy of each, so the proxy
//! and the admin listener cannot read a request, or escape a page, differently.

use std::net::IpAddr;

use pingora::protocols::http::ServerSession;

/// The address of the connection's peer: the client, or the load balancer in front (see
/// `edge::client_origin` for the client behind it), or the client a trusted balancer named
/// in a PROXY protocol header.
pub(crate) fn client_ip(session: &ServerSession) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The host the request names: its Host header, or the authority of its URI (HTTP/2's
/// `:authority`, absolute-form requests); empty when it names none.
pub(crate) fn request_authority(req: &pingora::http::RequestHeader) -> String {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default()
}

/// A request body, read as far as its bounds allow.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Body {
    Whole(Vec<u8>),
    /// More than the limit was sent; what was read is dropped.
    TooLarge,
    /// The body did not arrive by the deadline (a slow or stalled client).
    TimedOut,
}

/// Reads the request body whole: at most `max` bytes, all of it before `deadline`.
pub(crate) async fn read_body(
    session: &mut ServerSession,
    max: usize,
    deadline: tokio::time::Instant,
) -> pingora::Result<Body> {
    let mut body = Vec::new();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(chunk) => chunk?,
            Err(_) => return Ok(Body::TimedOut),
        };
        let Some(chunk) = chunk else {
            return Ok(Body::Whole(body));
        };
        if body.len() + chunk.len() > max {
            return Ok(Body::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
}

/// HTML-escapes text for element content and double- or single-quoted attribute values.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_the_five_html_specials() {
        assert_eq!(
            escape_html(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape_html("plain ünïcode"), "plain ünïcode");
        assert_eq!(escape_html("&amp;"), "&amp;amp;");
    }
}
