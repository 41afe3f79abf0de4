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
        super::form_field(body, &source.field, MAX_NAME_BYTES)
    } else if mime == "application/json" || mime.ends_with("+json") {
        let Some(pointer) = &source.json_pointer else {
            return Username::Missing;
        };
        // serde_json bounds nesting depth (128) itself; the body is bounded by the caller.
        let value = match serde_json::from_slice::<UniqueKeys>(body) {
            Ok(UniqueKeys(value)) => value,
            // A key given twice: serde_json keeps the last, many apps read the first. Which
            // name the app logs in is unknowable, so it is not guessed.
            Err(e) if e.to_string().starts_with(DUPLICATE_KEY) => return Username::Ambiguous,
            Err(_) => return Username::Missing,
        };
        match value.pointer(pointer) {
            Some(serde_json::Value::String(s)) if s.len() > MAX_NAME_BYTES => {
                Some(Err(super::ExtractError::TooLarge))
            }
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

const DUPLICATE_KEY: &str = "duplicate key in a JSON object";

/// A JSON value read like `serde_json::Value`, except that an object naming a key twice, at
/// any depth, is an error.
struct UniqueKeys(serde_json::Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            if object.insert(key, value).is_some() {
                return Err(serde::de::Error::custom(DUPLICATE_KEY));
            }
        }
        Ok(object.into())
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

    #[test]
    fn a_json_key_given_twice_or_an_over_long_json_name_is_not_guessed() {
        let json = "application/json";
        // serde_json alone keeps the last "email"; an app may well log in the first.
        let twice = br#"{"user":{"email":"alice","email":"mallory"},"password":"x"}"#;
        assert_eq!(username(&source(), json, twice), Username::Ambiguous);
        let twice_elsewhere = br#"{"user":{"email":"alice"},"user":{"email":"mallory"}}"#;
        assert_eq!(
            username(&source(), json, twice_elsewhere),
            Username::Ambiguous
        );
        let long = format!(
            r#"{{"user":{{"email":"{}"}}}}"#,
            "a".repeat(MAX_NAME_BYTES + 1)
        );
        assert_eq!(
            username(&source(), json, long.as_bytes()),
            Username::Ambiguous
        );
        let nested = br#"{"user":{"email":"a@example.com","tags":[{"k":1},{"k":2}]},"n":1.5}"#;
        assert_eq!(
            username(&source(), json, nested),
            Username::Found("a@example.com".into())
        );
    }
}
