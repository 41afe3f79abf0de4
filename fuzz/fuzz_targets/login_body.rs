//! Login body parsing: the telemetry field taken out of urlencoded and multipart bodies (with
//! an arbitrary boundary), the header form, the envelope, and the login name from urlencoded,
//! multipart and JSON bodies. Never panics; the stripped body never grows, and a decoded
//! payload never exceeds the limit.
#![no_main]

use gaitkeeper::config::UsernameSource;
use gaitkeeper::login;
use libfuzzer_sys::fuzz_target;

const MAX_PAYLOAD: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    // First byte: how to split; then `boundary \xff body` for multipart.
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let check = |stripped: &login::StrippedForm, body: &[u8]| {
        assert!(stripped.body.len() <= body.len(), "stripping grew the body");
        if let Some(Ok(payload)) = &stripped.telemetry {
            assert!(payload.len() <= MAX_PAYLOAD);
        }
    };
    match selector % 4 {
        0 => {
            let s = login::strip_form_field(rest, "__gk", MAX_PAYLOAD);
            check(&s, rest);
            let source = UsernameSource::default();
            name_ok(login::username(
                &source,
                "application/x-www-form-urlencoded",
                rest,
            ));
        }
        1 => {
            let (boundary, body) = match rest.iter().position(|&b| b == 0xff) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (&b"XyZ"[..], rest),
            };
            let boundary = String::from_utf8_lossy(boundary);
            let s = login::strip_multipart_field(body, &boundary, "__gk", MAX_PAYLOAD);
            check(&s, body);
            let content_type = format!("multipart/form-data; boundary={boundary}");
            if let Some(b) = login::multipart_boundary(&content_type) {
                let _ = login::strip_multipart_field(body, b, "username", 512);
            }
            name_ok(login::username(
                &UsernameSource::default(),
                &content_type,
                body,
            ));
        }
        2 => {
            if let Ok(payload) = login::decode_header(rest, MAX_PAYLOAD) {
                assert!(payload.len() <= MAX_PAYLOAD + 3);
                let _ = login::read_envelope(&payload);
            }
            let _ = login::read_envelope(rest);
        }
        _ => {
            let source = UsernameSource {
                json_pointer: Some("/user/name".into()),
                ..UsernameSource::default()
            };
            name_ok(login::username(&source, "application/json", rest));
        }
    }
});

/// A name that is found is never blank and never longer than the bound the store relies on.
fn name_ok(name: login::Username) {
    if let login::Username::Found(name) = name {
        assert!(!name.trim().is_empty(), "a blank login name was accepted");
        assert!(
            name.len() <= login::MAX_NAME_BYTES,
            "a login name of {} bytes was accepted",
            name.len()
        );
    }
}
