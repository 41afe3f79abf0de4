//! How a request is sent on to the app: the upstream peer, the headers gaitkeeper adds, and
//! the check that keeps gaitkeeper's reserved paths from ever reaching the app.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::HOST;
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

use super::RequestCtx;
use crate::config::{HostHeader, UpstreamConfig};

/// Builds the peer for the configured app. The address was resolved when the config loaded,
/// so this never touches DNS.
pub(super) fn upstream_peer(upstream: &UpstreamConfig) -> HttpPeer {
    let sni = if upstream.tls {
        upstream.server_name().to_string()
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(upstream.address.resolved, upstream.tls, sni);
    let options = &mut peer.options;
    options.connection_timeout = Some(upstream.connect_timeout.0);
    options.total_connection_timeout = Some(upstream.connect_timeout.0);
    options.read_timeout = Some(upstream.read_timeout.0);
    options.write_timeout = Some(upstream.write_timeout.0);
    options.idle_timeout = Some(upstream.idle_timeout.0);
    options.verify_cert = upstream.verify_certificate;
    options.verify_hostname = upstream.verify_certificate;
    peer.group_key = pool_partition();
    peer
}

/// Which share of pingora's upstream connection pool this thread uses: its own.
///
/// Why: every proxy thread runs its own runtime, and a connection stays registered with the
/// runtime that opened it. Reused from another thread, each of its reads and writes is noticed
/// by the opener's thread and relayed as a wake-up (an eventfd write and a context switch).
/// Keying the pool by thread keeps each connection on its thread.
fn pool_partition() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static PARTITION: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    PARTITION.with(|p| *p)
}

/// Sets X-Forwarded-For/-Proto/-Host, X-Request-Id and the Host the app should see.
pub(super) fn add_forwarding_headers(
    session: &Session,
    upstream_request: &mut RequestHeader,
    ctx: &RequestCtx,
) -> Result<()> {
    let original_host = session.req_header().headers.get(HOST).cloned().or_else(|| {
        // HTTP/2 and absolute-form requests carry the host in the URI.
        session
            .req_header()
            .uri
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    });

    // The client's own address and scheme, as `ClientOrigin` found them: what a trusted
    // balancer in front said, or the TCP peer. What the client claimed is replaced, never
    // passed on, so the app cannot be told a forged address or scheme.
    if let Some(ip) = ctx.origin.ip {
        upstream_request.insert_header("x-forwarded-for", ip.to_string())?;
    } else {
        upstream_request.remove_header("x-forwarded-for");
    }
    upstream_request.remove_header("forwarded");
    upstream_request.insert_header("x-forwarded-proto", ctx.origin.scheme())?;
    match &original_host {
        Some(host) => upstream_request.insert_header("x-forwarded-host", host.clone())?,
        None => {
            upstream_request.remove_header("x-forwarded-host");
        }
    }
    upstream_request.insert_header("x-request-id", ctx.request_id.as_str())?;

    let upstream = &ctx.app().upstream;
    match &upstream.host_header {
        HostHeader::Preserve => {}
        HostHeader::Upstream => {
            let host = format_host(&upstream.address.host, upstream.address.port, upstream.tls);
            upstream_request.insert_header(HOST, host)?;
        }
        HostHeader::Set(host) => upstream_request.insert_header(HOST, host.as_str())?,
    }
    Ok(())
}

fn format_host(host: &str, port: u16, tls: bool) -> String {
    let host: Cow<str> = if host.contains(':') {
        Cow::Owned(format!("[{host}]"))
    } else {
        Cow::Borrowed(host)
    };
    match (tls, port) {
        (false, 80) | (true, 443) => host.into_owned(),
        _ => format!("{host}:{port}"),
    }
}

/// The request id: the client's `X-Request-Id` when it is a short plain token (so ids from a
/// load balancer in front survive), otherwise a fresh random one.
pub(super) fn request_id(req: &RequestHeader) -> String {
    if let Some(given) = req
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        let plain = !given.is_empty()
            && given.len() <= 64
            && given
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if plain {
            return given.to_string();
        }
    }
    format!("{:016x}", rand::random::<u64>())
}

/// A path as it may appear in a log line: bounded in length.
pub(super) fn loggable_path(path: &str) -> &str {
    const MAX: usize = 200;
    if path.len() <= MAX {
        return path;
    }
    let mut end = MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_accept_plain_tokens_only() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-request-id", "lb-1234.abc").unwrap();
        assert_eq!(request_id(&req), "lb-1234.abc");
        req.insert_header("x-request-id", "evil value\"with quotes")
            .unwrap();
        let generated = request_id(&req);
        assert_eq!(generated.len(), 16);
        assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn host_header_formats_ports_and_ipv6() {
        assert_eq!(format_host("app", 80, false), "app");
        assert_eq!(format_host("app", 8080, false), "app:8080");
        assert_eq!(format_host("app", 443, true), "app");
        assert_eq!(format_host("::1", 3000, false), "[::1]:3000");
    }

    #[test]
    fn long_paths_are_cut_for_logs_on_char_boundaries() {
        let long = "é".repeat(300);
        let cut = loggable_path(&long);
        assert!(cut.len() <= 200);
        assert!(long.starts_with(cut));
    }
}
