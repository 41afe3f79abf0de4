//! Login submits: whatever the body, content type and coding, reading it never panics; the
//! body the app gets never grows beyond the decoded size limit; a decoded telemetry payload
//! never exceeds its limit; and a login name that is found is never blank, never over the
//! bound the store relies on.
#![no_main]

use gaitkeeper::config::UsernameSource;
use gaitkeeper::login::{self, LoginSubmit};
use libfuzzer_sys::fuzz_target;

const MAX_PAYLOAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // First byte: which content type and coding; then `boundary \xff body` for multipart.
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (boundary, body) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (
            String::from_utf8_lossy(&rest[..i]).into_owned(),
            &rest[i + 1..],
        ),
        None => ("XyZ".to_string(), rest),
    };
    let multipart = format!("multipart/form-data; boundary={boundary}");
    let content_type = match selector % 5 {
        0 => "application/x-www-form-urlencoded",
        1 => multipart.as_str(),
        2 => "application/json",
        3 => "application/x-www-form-urlencoded; charset=latin1",
        _ => "text/plain",
    };
    let coding: &[&str] = match (selector >> 3) % 4 {
        0 => &[],
        1 => &["gzip"],
        2 => &["deflate"],
        _ => &["br"],
    };
    let submit = LoginSubmit {
        content_type: vec![content_type],
        content_encoding: coding.to_vec(),
        query: (selector & 0x80 != 0).then_some("username=q"),
        body,
    };
    let source = UsernameSource {
        json_pointer: (selector & 0x40 != 0).then(|| "/user/name".to_string()),
        ..UsernameSource::default()
    };
    let read = login::read_submit(&submit, &source, "__gk", MAX_PAYLOAD, MAX_BODY);
    if let Some(app_body) = &read.app_body {
        assert!(
            app_body.len() <= MAX_BODY,
            "the app's body outgrew the limit"
        );
    }
    if let Some(Ok(payload)) = &read.telemetry {
        assert!(payload.len() <= MAX_PAYLOAD);
    }
    if let Ok(login::LoginName { name, .. }) = &read.name {
        assert!(!name.trim().is_empty(), "a blank login name was accepted");
        assert!(name.len() <= login::MAX_NAME_BYTES);
    }
    if let Ok(payload) = login::decode_header(body, MAX_PAYLOAD) {
        assert!(payload.len() <= MAX_PAYLOAD + 3);
        let _ = login::read_envelope(&payload);
    }
});
