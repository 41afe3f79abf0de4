//! A plain listener that only sends browsers to HTTPS (`redirect_to_https: true`). Nothing
//! is proxied from it, so no password or telemetry is ever accepted in clear.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

/// Answers every request with `308` to the same path on the HTTPS port.
pub struct RedirectToHttps {
    https_port: u16,
}

impl RedirectToHttps {
    pub fn new(https_port: u16) -> RedirectToHttps {
        RedirectToHttps { https_port }
    }

    /// Where `host` + `path_and_query` lives over HTTPS; `None` for a host that is not a
    /// plain name or address (a redirect never carries a forged value into `Location`).
    pub fn location(&self, host: &str, path_and_query: &str) -> Option<String> {
        let host = crate::config::request_host(host);
        let plain = |c: char| c.is_ascii_alphanumeric() || "-.:".contains(c);
        if host.is_empty() || host.len() > 255 || !host.chars().all(plain) {
            return None;
        }
        let name = if host.contains(':') {
            // An IPv6 literal keeps its brackets in a URL.
            format!("[{host}]")
        } else {
            host
        };
        let port = match self.https_port {
            443 => String::new(),
            p => format!(":{p}"),
        };
        let path = if path_and_query.starts_with('/') {
            path_and_query
        } else {
            "/"
        };
        Some(format!("https://{name}{port}{path}"))
    }
}

#[async_trait]
impl ServeHttp for RedirectToHttps {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let host = crate::wire::request_authority(req);
        let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let builder = Response::builder()
            .header("content-type", "text/plain; charset=utf-8")
            .header("cache-control", "no-store");
        let response = match self.location(&host, path) {
            Some(location) => builder
                .status(308)
                .header("location", location)
                .body(b"This site is served over HTTPS.\n".to_vec()),
            None => builder
                .status(400)
                .body(b"A Host header is needed to redirect to HTTPS.\n".to_vec()),
        };
        response.unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_path_on_the_https_port() {
        let r = RedirectToHttps::new(8443);
        assert_eq!(
            r.location("example.com:8080", "/login?next=/a").as_deref(),
            Some("https://example.com:8443/login?next=/a")
        );
        assert_eq!(
            r.location("[::1]:8080", "/").as_deref(),
            Some("https://[::1]:8443/")
        );
        let default_port = RedirectToHttps::new(443);
        assert_eq!(
            default_port.location("example.com", "/x").as_deref(),
            Some("https://example.com/x")
        );
        assert_eq!(r.location("", "/"), None);
        assert_eq!(r.location("evil.com/@x", "/"), None);
        assert_eq!(r.location("a b", "/"), None);
    }
}
