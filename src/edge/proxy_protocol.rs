//! The PROXY protocol (v1 text and v2 binary, as HAProxy's `send-proxy` / `send-proxy-v2`
//! write it): a TCP load balancer names the client before the TLS handshake. Read only from
//! peers in `server.trusted_proxies`; a connection from anyone else to such a listener is
//! dropped, because an untrusted peer could name any client it likes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::socket::SocketAddr as PeerAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest};
use tokio::io::AsyncReadExt;

use crate::config::SharedConfig;

/// What a PROXY header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client; `None` for a `LOCAL` (health check) or `UNKNOWN` connection, which keeps
    /// the TCP peer as the client.
    pub client: Option<SocketAddr>,
}

/// Why a PROXY header was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("the connection does not start with a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("the PROXY protocol header is longer than {MAX_HEADER} bytes")]
    TooLong,
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1 lines are at most 107 bytes; v2 headers with TLVs stay far below this.
const MAX_HEADER: usize = 4096;
const V1_MAX: usize = 107;

/// Parses a PROXY header at the start of `buf`: `Ok(None)` when more bytes are needed,
/// otherwise the header and how many bytes it took.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let v2_prefix = buf.len().min(V2_SIGNATURE.len());
    if buf[..v2_prefix] == V2_SIGNATURE[..v2_prefix] && !buf.is_empty() {
        return parse_v2(buf);
    }
    let v1_prefix = buf.len().min(6);
    if buf[..v1_prefix] == b"PROXY "[..v1_prefix] && !buf.is_empty() {
        return parse_v1(buf);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    Err(ProxyHeaderError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyHeaderError::Malformed(
                "v1 line without CRLF within 107 bytes",
            ))
        } else {
            Ok(None)
        };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyHeaderError::Malformed("v1 line longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| ProxyHeaderError::Malformed("v1 line is not ASCII"))?;
    let mut parts = line.split(' ');
    parts.next(); // "PROXY"
    let family = parts
        .next()
        .ok_or(ProxyHeaderError::Malformed("v1 family missing"))?;
    let client = match family {
        "UNKNOWN" => None,
        "TCP4" | "TCP6" => {
            let fields: Vec<&str> = parts.collect();
            let [src, _dst, sport, _dport] = fields[..] else {
                return Err(ProxyHeaderError::Malformed("v1 needs four address fields"));
            };
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyHeaderError::Malformed("v1 source address"))?;
            if (family == "TCP4") != ip.is_ipv4() {
                return Err(ProxyHeaderError::Malformed(
                    "v1 address does not match family",
                ));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| ProxyHeaderError::Malformed("v1 source port"))?;
            Some(SocketAddr::new(ip, port))
        }
        _ => {
            return Err(ProxyHeaderError::Malformed(
                "v1 family is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    Ok(Some((ProxyHeader { client }, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyHeaderError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError::Malformed("v2 version is not 2"));
    }
    let length = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let total = 16 + length;
    if total > MAX_HEADER {
        return Err(ProxyHeaderError::TooLong);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    let client = match version_command & 0x0f {
        0x0 => None, // LOCAL: the balancer's own connection, e.g. a health check
        0x1 => match buf[13] {
            // TCP or UDP over IPv4
            0x11 | 0x12 => {
                if body.len() < 12 {
                    return Err(ProxyHeaderError::Malformed("v2 IPv4 addresses too short"));
                }
                let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                let port = u16::from_be_bytes([body[8], body[9]]);
                Some(SocketAddr::new(IpAddr::V4(ip), port))
            }
            // TCP or UDP over IPv6
            0x21 | 0x22 => {
                if body.len() < 36 {
                    return Err(ProxyHeaderError::Malformed("v2 IPv6 addresses too short"));
                }
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[..16]);
                let port = u16::from_be_bytes([body[32], body[33]]);
                Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
            }
            // UNSPEC or Unix sockets: nothing usable, keep the peer
            _ => None,
        },
        _ => {
            return Err(ProxyHeaderError::Malformed(
                "v2 command is neither LOCAL nor PROXY",
            ))
        }
    };
    Ok(Some((ProxyHeader { client }, total)))
}

/// The pre-TLS hook of the proxy's TLS listeners; it reads a header only on connections to
/// the listeners with `proxy_protocol: true` (pingora sets one hook for all of a service's
/// listeners).
pub struct ProxyProtocol {
    config: SharedConfig,
    listeners: Vec<SocketAddr>,
}

/// How long a balancer may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

impl ProxyProtocol {
    /// The hook for connections to any of `listeners`.
    pub fn new(config: SharedConfig, listeners: Vec<SocketAddr>) -> ProxyProtocol {
        ProxyProtocol { config, listeners }
    }

    fn expects_header(&self, local: Option<SocketAddr>) -> bool {
        let Some(local) = local else { return false };
        self.listeners
            .iter()
            .any(|l| l.port() == local.port() && (l.ip() == local.ip() || l.ip().is_unspecified()))
    }
}

#[async_trait]
impl pingora::listeners::PreTlsProcess for ProxyProtocol {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        use pingora::{Error, ErrorType};
        let digest = stream.get_socket_digest();
        let local = digest
            .as_ref()
            .and_then(|d| d.local_addr().and_then(|a| a.as_inet()).copied());
        if !self.expects_header(local) {
            return Ok(());
        }
        let peer = digest.and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let trusted = peer.is_some_and(|ip| {
            let config = self.config.load();
            config
                .server
                .trusted_proxies
                .iter()
                .any(|n| n.0.contains(&ip))
        });
        if !trusted {
            tracing::warn!(
                peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
                "refused a connection to a PROXY-protocol listener from a peer that is not in server.trusted_proxies"
            );
            return Error::e_explain(ErrorType::AcceptError, "untrusted PROXY protocol peer");
        }
        let mut buf = Vec::with_capacity(256);
        let parsed = tokio::time::timeout(HEADER_TIMEOUT, async {
            let mut chunk = [0u8; 512];
            loop {
                match parse_proxy_header(&buf) {
                    Ok(Some(found)) => return Ok(found),
                    Ok(None) => {}
                    Err(e) => return Err(e.to_string()),
                }
                let n = stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| format!("reading the PROXY header: {e}"))?;
                if n == 0 {
                    return Err("the connection closed before the PROXY header ended".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let (header, used) = match parsed {
            Ok(Ok(found)) => found,
            Ok(Err(reason)) => {
                tracing::warn!(peer = ?peer, %reason, "dropped a connection with a bad PROXY header");
                return Error::e_explain(ErrorType::AcceptError, reason);
            }
            Err(_) => {
                return Error::e_explain(ErrorType::AcceptError, "no PROXY header within 5 s");
            }
        };
        // What came after the header is the start of the TLS handshake.
        if buf.len() > used {
            stream.rewind(&buf[used..]);
        }
        if let Some(client) = header.client {
            // The digest's peer address is filled once and already read by pingora, so the
            // client is given a digest of its own.
            let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
            let _ = digest.peer_addr.set(Some(PeerAddr::Inet(client)));
            stream.set_socket_digest(digest);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn v1_names_the_client_and_leaves_the_rest() {
        let input = b"PROXY TCP4 127.0.0.2 127.0.0.1 51000 8443\r\n\x16\x03\x01";
        let (header, used) = parse_proxy_header(input).unwrap().unwrap();
        assert_eq!(header.client, Some("127.0.0.2:51000".parse().unwrap()));
        assert_eq!(&input[used..], b"\x16\x03\x01");
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n";
        let (header, _) = parse_proxy_header(v6).unwrap().unwrap();
        assert_eq!(header.client, Some("[2001:db8::1]:4000".parse().unwrap()));
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(parse_proxy_header(unknown).unwrap().unwrap().0.client, None);
    }

    #[test]
    fn v2_names_ipv4_and_ipv6_clients_and_local_keeps_the_peer() {
        let mut body = vec![127, 0, 0, 3, 127, 0, 0, 1];
        body.extend_from_slice(&40000u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV, skipped
        let mut input = v2(1, 0x11, &body);
        let header_len = input.len();
        input.extend_from_slice(b"\x16\x03");
        let (header, used) = parse_proxy_header(&input).unwrap().unwrap();
        assert_eq!(header.client, Some("127.0.0.3:40000".parse().unwrap()));
        assert_eq!(used, header_len);

        let mut body6 = vec![0u8; 36];
        body6[15] = 1;
        body6[32..34].copy_from_slice(&5000u16.to_be_bytes());
        let (header, _) = parse_proxy_header(&v2(1, 0x21, &body6)).unwrap().unwrap();
        assert_eq!(header.client, Some("[::1]:5000".parse().unwrap()));

        let (local, _) = parse_proxy_header(&v2(0, 0x00, &[])).unwrap().unwrap();
        assert_eq!(local.client, None);
    }

    #[test]
    fn partial_headers_ask_for_more_and_garbage_is_refused() {
        let full = b"PROXY TCP4 127.0.0.2 127.0.0.1 51000 8443\r\n";
        for cut in 0..full.len() - 1 {
            assert_eq!(parse_proxy_header(&full[..cut]), Ok(None), "cut at {cut}");
        }
        let v2_full = v2(1, 0x11, &[127, 0, 0, 3, 127, 0, 0, 1, 0, 1, 0, 2]);
        for cut in 0..v2_full.len() {
            assert_eq!(
                parse_proxy_header(&v2_full[..cut]),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(
            parse_proxy_header(b"\x16\x03\x01"),
            Err(ProxyHeaderError::NotProxy)
        );
        assert_eq!(
            parse_proxy_header(b"GET / HTTP/1.1\r\n"),
            Err(ProxyHeaderError::NotProxy)
        );
        assert!(parse_proxy_header(b"PROXY TCP4 1.2.3.4\r\n").is_err());
        assert!(parse_proxy_header(b"PROXY TCP4 ::1 ::1 1 2\r\n").is_err());
        assert!(parse_proxy_header(b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n").is_err());
        assert!(parse_proxy_header(&[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(30)).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse_proxy_header(&huge), Err(ProxyHeaderError::TooLong));
        assert!(parse_proxy_header(&v2(1, 0x11, &[1, 2, 3])).is_err());
        assert!(parse_proxy_header(&v2(7, 0x11, &[])).is_err());
    }
}
