//! The login name of a submit, read from the body the app receives: a form field (urlencoded
//! or multipart) or a JSON pointer. Several values for the name are ambiguous (apps differ on
//! which one they use), so they are reported as such, never guessed.

use crate::config::UsernameSource;

/// Longest login name read; longer ones are reported as ambiguous.
pub const MAX_NAME_BYTES: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Username {
    Found(String),
    Missing,
    /// Given more than once, not UTF-8, or too long.
    Ambiguous,
}

/// Reads the login name from `body` of type `content_type`.
pub fn username(source: &UsernameSource, content_type: &str, body: &[u8]) -> Username {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let raw = if mime == "application/x-www-form-urlencoded" {
        super::strip_form_field(body, &source.field, MAX_NAME_BYTES).telemetry
    } else if mime == "application/json" || mime.ends_with("+json") {
        let Some(pointer) = &source.json_pointer else {
            return Username::Missing;
        };
        // serde_json bounds nesting depth (128) itself; the body is bounded by the caller.
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Username::Missing;
        };
        match value.pointer(pointer) {
            Some(serde_json::Value::String(s)) => Some(Ok(s.as_bytes().to_vec())),
            Some(_) => Some(Err(super::ExtractError::Envelope)),
            None => None,
        }
    } else if let Some(boundary) = super::multipart_boundary(content_type) {
        super::strip_multipart_field(body, boundary, &source.field, MAX_NAME_BYTES).telemetry
    } else {
        None
    };
    match raw {
        None => Username::Missing,
        Some(Err(_)) => Username::Ambiguous,
        Some(Ok(bytes)) => match String::from_utf8(bytes) {
            Ok(name) if name.trim().is_empty() => Username::Missing,
            // The store keys users by the exact name; trimming would merge distinct accounts.
            Ok(name) => Username::Found(name),
            Err(_) => Username::Ambiguous,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> UsernameSource {
        UsernameSource {
            field: "username".into(),
            json_pointer: Some("/user/email".into()),
        }
    }

    #[test]
    fn reads_the_name_from_each_body_type() {
        let form = "application/x-www-form-urlencoded";
        assert_eq!(
            username(&source(), form, b"csrf=1&username=al%C3%AFce+b&password=x"),
            Username::Found("alïce b".into())
        );
        let json = r#"{"user":{"email":"a@example.com"},"password":"x"}"#;
        assert_eq!(
            username(
                &source(),
                "application/json; charset=utf-8",
                json.as_bytes()
            ),
            Username::Found("a@example.com".into())
        );
        let multipart = b"--XyZ\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nbob\r\n--XyZ\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\npw\r\n--XyZ--\r\n";
        assert_eq!(
            username(&source(), "multipart/form-data; boundary=XyZ", multipart),
            Username::Found("bob".into())
        );
    }

    #[test]
    fn duplicates_bad_encodings_and_odd_types_are_not_guessed() {
        let form = "application/x-www-form-urlencoded";
        assert_eq!(
            username(&source(), form, b"username=a&username=b"),
            Username::Ambiguous
        );
        assert_eq!(
            username(&source(), form, b"username=%FF"),
            Username::Ambiguous
        );
        assert_eq!(
            username(&source(), form, b"username=%ZZ"),
            Username::Ambiguous
        );
        let long = format!("username={}", "a".repeat(MAX_NAME_BYTES + 1));
        assert_eq!(
            username(&source(), form, long.as_bytes()),
            Username::Ambiguous
        );
        assert_eq!(username(&source(), form, b"user=a"), Username::Missing);
        assert_eq!(username(&source(), form, b"username=+"), Username::Missing);
        assert_eq!(
            username(&source(), "application/json", br#"{"user":{"email":7}}"#),
            Username::Ambiguous
        );
        assert_eq!(
            username(&source(), "application/json", b"[[[[[[[["),
            Username::Missing
        );
        assert_eq!(
            username(&source(), "text/plain", b"username=a"),
            Username::Missing
        );
    }
}
