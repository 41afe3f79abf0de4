//! The edge's parsers on arbitrary bytes: the PROXY protocol header (v1 and v2) and the
//! forwarding headers (`X-Forwarded-For`, `Forwarded`, `X-Forwarded-Proto`). Never panics; a
//! header never claims more bytes than it was given; a peer nobody trusts is always the client,
//! whatever its headers say.
#![no_main]

use std::net::IpAddr;

use gaitkeeper::config::Cidr;
use gaitkeeper::edge::{client_origin, parse_proxy_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_proxy_header(data) {
        Ok(Some((_, used))) => assert!(used <= data.len()),
        Ok(None) | Err(_) => {}
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let names = ["x-forwarded-for", "forwarded", "x-forwarded-proto"];
    let mut headers = http::HeaderMap::new();
    for (i, line) in text.split('\n').take(12).enumerate() {
        if let Ok(value) = http::HeaderValue::from_str(line) {
            headers.append(names[i % 3], value);
        }
    }
    let trusted = [Cidr("127.0.0.0/8".parse().unwrap())];
    let stranger: IpAddr = "203.0.113.1".parse().unwrap();
    let origin = client_origin(Some(stranger), true, &headers, &trusted);
    assert_eq!(origin.ip, Some(stranger));
    assert!(origin.https);
    // Behind a trusted peer the client is some address: the peer's or one the headers name.
    let behind = client_origin(
        Some("127.0.0.1".parse().unwrap()),
        false,
        &headers,
        &trusted,
    );
    assert!(behind.ip.is_some());
});
