//! The client's address and scheme. A request arrives from its TCP peer; only when that peer
//! is a trusted proxy are its `Forwarded` / `X-Forwarded-For` / `X-Forwarded-Proto` headers
//! believed, and then the client is the rightmost forwarded address that is not itself a
//! trusted proxy (everything left of it was written by parties nobody vouches for).

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::Cidr;

/// Who sent a request and over which scheme.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOrigin {
    /// The client's address; `None` only for a Unix-socket peer.
    pub ip: Option<IpAddr>,
    /// The client used HTTPS (to gaitkeeper, or to the trusted proxy in front).
    pub https: bool,
}

impl ClientOrigin {
    /// The address as text, empty when unknown.
    pub fn ip_text(&self) -> String {
        self.ip.map(|ip| ip.to_string()).unwrap_or_default()
    }

    /// `"https"` or `"http"`.
    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}

/// Forwarded hops beyond this many are not looked at; a real chain has a handful.
const MAX_HOPS: usize = 32;

/// The origin of a request from `peer` (the TCP peer, already the PROXY-protocol client where
/// that applies) over a connection that was TLS or not.
pub fn client_origin(
    peer: Option<IpAddr>,
    tls: bool,
    headers: &HeaderMap,
    trusted: &[Cidr],
) -> ClientOrigin {
    let is_trusted = |ip: IpAddr| {
        let ip = canonical(ip);
        trusted.iter().any(|net| net.0.contains(&ip))
    };
    let untrusted = ClientOrigin {
        ip: peer,
        https: tls,
    };
    let Some(peer_ip) = peer else {
        return untrusted;
    };
    if trusted.is_empty() || !is_trusted(peer_ip) {
        return untrusted;
    }
    let (hops, proto) = match forwarded(headers) {
        Some(found) => found,
        None => (x_forwarded_for(headers), x_forwarded_proto(headers)),
    };
    // Walk from the nearest hop outwards; stop at the first address nobody vouches for.
    let mut client = peer_ip;
    for hop in hops.iter().rev().take(MAX_HOPS) {
        match hop {
            Some(ip) if is_trusted(*ip) => client = *ip,
            Some(ip) => {
                client = *ip;
                break;
            }
            // An obfuscated or unreadable hop: the last trusted one is all that is known.
            None => break,
        }
    }
    ClientOrigin {
        ip: Some(canonical(client)),
        https: proto.unwrap_or(tls),
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are the IPv4 address they map.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The hops of every `X-Forwarded-For` line, in order.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| {
            let text = v.to_str().unwrap_or("\u{0}");
            text.split(',').map(parse_node).collect::<Vec<_>>()
        })
        .collect()
}

/// The scheme named by the nearest proxy: the rightmost `X-Forwarded-Proto` value.
fn x_forwarded_proto(headers: &HeaderMap) -> Option<bool> {
    let last = headers.get_all("x-forwarded-proto").iter().next_back()?;
    let value = last.to_str().ok()?.rsplit(',').next()?.trim();
    scheme(value)
}

fn scheme(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("https") {
        Some(true)
    } else if value.eq_ignore_ascii_case("http") {
        Some(false)
    } else {
        None
    }
}

/// RFC 7239 `Forwarded`: the `for=` of each element and the `proto=` of the last one. `None`
/// when the header is absent, so `X-Forwarded-*` is used instead.
fn forwarded(headers: &HeaderMap) -> Option<(Vec<Option<IpAddr>>, Option<bool>)> {
    let lines: Vec<_> = headers.get_all(http::header::FORWARDED).iter().collect();
    if lines.is_empty() {
        return None;
    }
    let mut hops = Vec::new();
    let mut proto = None;
    for line in lines {
        let Ok(text) = line.to_str() else {
            hops.push(None);
            continue;
        };
        for element in text.split(',') {
            let mut hop = None;
            let mut element_proto = None;
            for pair in element.split(';') {
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "for" => hop = parse_node(value),
                    "proto" => element_proto = scheme(value),
                    _ => {}
                }
            }
            hops.push(hop);
            proto = element_proto;
        }
    }
    Some((hops, proto))
}

/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]:443`; anything else (such as
/// `unknown` or `_hidden`) is `None`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse().ok();
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<Cidr> {
        list.iter()
            .map(|n| {
                Cidr(
                    n.parse()
                        .unwrap_or_else(|_| n.parse::<IpAddr>().unwrap().into()),
                )
            })
            .collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let forged = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.9;proto=https"),
        ]);
        let origin = client_origin(ip("127.0.0.2"), false, &forged, &nets(&["10.0.0.0/8"]));
        assert_eq!(
            origin,
            ClientOrigin {
                ip: ip("127.0.0.2"),
                https: false
            }
        );
        let nobody_trusted = client_origin(ip("10.0.0.1"), false, &forged, &[]);
        assert_eq!(nobody_trusted.ip, ip("10.0.0.1"));
        assert!(!nobody_trusted.https);
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client forged the first entry; the balancer appended the address it saw.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1, 203.0.113.7"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let origin = client_origin(ip("10.0.0.5"), false, &h, &trusted);
        assert_eq!(
            origin,
            ClientOrigin {
                ip: ip("203.0.113.7"),
                https: true
            }
        );
    }

    #[test]
    fn every_hop_trusted_means_the_leftmost_and_no_header_means_the_peer() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(
            client_origin(ip("10.0.0.5"), true, &h, &trusted).ip,
            ip("10.9.9.9")
        );
        let none = client_origin(ip("10.0.0.5"), true, &HeaderMap::new(), &trusted);
        assert_eq!(
            none,
            ClientOrigin {
                ip: ip("10.0.0.5"),
                https: true
            }
        );
    }

    #[test]
    fn an_unreadable_hop_stops_the_walk_at_the_last_trusted_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.7, garbage, 10.1.1.1")]);
        assert_eq!(
            client_origin(ip("10.0.0.5"), false, &h, &trusted).ip,
            ip("10.1.1.1")
        );
    }

    #[test]
    fn the_standard_forwarded_header_is_read_with_ports_brackets_and_quotes() {
        let trusted = nets(&["127.0.0.1"]);
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https;by=127.0.0.1",
        )]);
        let origin = client_origin(ip("127.0.0.1"), false, &h, &trusted);
        assert_eq!(
            origin,
            ClientOrigin {
                ip: ip("2001:db8:cafe::17"),
                https: true
            }
        );
        let v4_port = headers(&[("forwarded", "for=\"192.0.2.60:8080\";proto=http")]);
        let origin = client_origin(ip("127.0.0.1"), true, &v4_port, &trusted);
        assert_eq!(
            origin,
            ClientOrigin {
                ip: ip("192.0.2.60"),
                https: false
            }
        );
        let hidden = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(
            client_origin(ip("127.0.0.1"), false, &hidden, &trusted).ip,
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_nearest_proxys_scheme_wins_and_nonsense_keeps_the_connections_own() {
        let trusted = nets(&["127.0.0.1"]);
        let h = headers(&[("x-forwarded-proto", "http, https")]);
        assert!(client_origin(ip("127.0.0.1"), false, &h, &trusted).https);
        let odd = headers(&[("x-forwarded-proto", "gopher")]);
        assert!(client_origin(ip("127.0.0.1"), true, &odd, &trusted).https);
        assert!(!client_origin(ip("127.0.0.1"), false, &odd, &trusted).https);
    }

    #[test]
    fn mapped_ipv6_addresses_count_as_their_ipv4_address() {
        let trusted = nets(&["127.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.7")]);
        let origin = client_origin(ip("::ffff:127.0.0.1"), false, &h, &trusted);
        assert_eq!(origin.ip, ip("203.0.113.7"));
    }
}
