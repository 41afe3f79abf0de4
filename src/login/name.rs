//! The login name of a submit, read the way the app reads it, then normalised the way the app
//! compares it.
//!
//! Whatever format the route expects, the name is looked for in every place an app may take it
//! from: the body (urlencoded, multipart or JSON, by its `Content-Type`) and the query string
//! (Rails and PHP merge it into their parameters). Exactly one value must be found; none, two,
//! or one that parsers could read differently makes the login unreadable, never guessed.

use crate::config::{NameNormalization, UsernameSource};

use super::multipart::Part;
use super::{form, LoginName, Unreadable};

/// Longest login name read (before normalisation); longer ones are unreadable.
pub const MAX_NAME_BYTES: usize = 512;

/// The still-raw name bytes a body gives, by its format.
pub(super) enum BodyName<'a> {
    Form(&'a [u8]),
    Multipart { body: &'a [u8], parts: &'a [Part] },
    Json(&'a [u8]),
}

/// The normalised login name of a submit.
pub(super) fn read(
    source: &UsernameSource,
    body: BodyName<'_>,
    charset_is_utf8: bool,
    query: Option<&str>,
) -> Result<LoginName, Unreadable> {
    let form_names = form_names(source);
    let mut foreign_charset = !charset_is_utf8;
    let from_body = match body {
        BodyName::Form(bytes) => form::name_value(bytes, &form_names, MAX_NAME_BYTES)?,
        BodyName::Multipart { body, parts } => {
            // RFC 7578 §4.6: a `_charset_` field sets the charset of the other fields.
            if let Some(charset) = parts.iter().find(|p| p.is_named(b"_charset_")) {
                let value =
                    String::from_utf8_lossy(&body[charset.content.clone()]).to_ascii_lowercase();
                foreign_charset |= !matches!(value.trim(), "utf-8" | "utf8" | "us-ascii" | "ascii");
            }
            let candidates: Vec<&Part> = parts
                .iter()
                .filter(|p| form_names.iter().any(|n| p.is_named(n)))
                .collect();
            match candidates.as_slice() {
                [] => None,
                [part] => {
                    // Another reading names it differently, it is a file, or its content is
                    // transfer-encoded (Django decodes base64): not one unambiguous value.
                    if part.names.len() > 1 || part.file || part.transfer_encoded {
                        return Err(Unreadable::AmbiguousBody);
                    }
                    foreign_charset |= part.foreign_charset;
                    Some(body[part.content.clone()].to_vec())
                }
                _ => return Err(Unreadable::RepeatedName),
            }
        }
        BodyName::Json(bytes) => json_value(bytes, &json_pointer(source))?,
    };
    let from_query = match query {
        Some(q) => form::name_value(q.as_bytes(), &form_names, MAX_NAME_BYTES)?,
        None => None,
    };
    let raw = match (from_body, from_query) {
        (Some(_), Some(_)) => return Err(Unreadable::RepeatedName),
        (Some(name), None) => name,
        // From the query string, the name is percent-decoded UTF-8 whatever the body says.
        (None, Some(name)) => {
            foreign_charset = false;
            name
        }
        (None, None) => return Err(Unreadable::MissingName),
    };
    if raw.len() > MAX_NAME_BYTES {
        return Err(Unreadable::NameTooLong);
    }
    if foreign_charset && !raw.is_ascii() {
        // Another charset reads these bytes as another name.
        return Err(Unreadable::BadNameEncoding);
    }
    let raw = String::from_utf8(raw).map_err(|_| Unreadable::BadNameEncoding)?;
    let name = normalize(&raw, &source.normalize);
    if name.is_empty() {
        return Err(Unreadable::EmptyName);
    }
    // NFKC can lengthen a name (a ligature becomes several letters).
    if name.len() > MAX_NAME_BYTES {
        return Err(Unreadable::NameTooLong);
    }
    // A C-based app stops at a NUL, another keeps it: one name, two users. (It also keeps
    // app-scoped store names, which start with NUL, apart from any name a client can send.)
    if name.chars().any(char::is_control) {
        return Err(Unreadable::ControlCharacter);
    }
    Ok(LoginName { name, as_sent: raw })
}

/// The form field names that carry the login name: the configured field and, when a JSON
/// pointer is set, its bracket form (`/user/email` is `user[email]` to Rails, PHP and qs).
fn form_names(source: &UsernameSource) -> Vec<Vec<u8>> {
    let mut names = vec![source.field.as_bytes().to_vec()];
    if let Some(pointer) = &source.json_pointer {
        let segments: Vec<String> = pointer
            .split('/')
            .skip(1)
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        if let Some((first, rest)) = segments.split_first() {
            let mut bracket = first.clone();
            for s in rest {
                bracket.push('[');
                bracket.push_str(s);
                bracket.push(']');
            }
            if !names.contains(&bracket.as_bytes().to_vec()) {
                names.push(bracket.into_bytes());
            }
        }
    }
    names
}

/// The JSON pointer of the name: the configured one, else the top-level key `field`.
fn json_pointer(source: &UsernameSource) -> String {
    source
        .json_pointer
        .clone()
        .unwrap_or_else(|| format!("/{}", source.field.replace('~', "~0").replace('/', "~1")))
}

/// The string at `pointer` in a JSON body; `Ok(None)` when absent.
fn json_value(body: &[u8], pointer: &str) -> Result<Option<Vec<u8>>, Unreadable> {
    // serde_json bounds nesting depth (128) itself; the body is bounded by the caller.
    let value = match serde_json::from_slice::<UniqueKeys>(body) {
        Ok(UniqueKeys(value)) => value,
        // A key given twice: serde_json keeps the last, many apps read the first.
        Err(e) if e.to_string().starts_with(DUPLICATE_KEY) => return Err(Unreadable::RepeatedName),
        Err(_) => return Err(Unreadable::MalformedBody),
    };
    match value.pointer(pointer) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.as_bytes().to_vec())),
        // A number or an array: apps coerce these differently (or not at all).
        Some(_) => Err(Unreadable::AmbiguousBody),
    }
}

/// Applies the route's normalisation steps in order.
pub fn normalize(name: &str, steps: &[NameNormalization]) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mut name = name.to_string();
    for step in steps {
        name = match step {
            NameNormalization::Trim => name.trim().to_string(),
            NameNormalization::Nfkc => name.nfkc().collect(),
            NameNormalization::Casefold => caseless::default_case_fold_str(&name),
        };
    }
    name
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
    use NameNormalization::*;

    #[test]
    fn names_are_normalised_as_the_app_compares_them() {
        let django = [Trim, Nfkc];
        for variant in [
            "alice ",
            " alice",
            "alice\t",
            "alice\u{a0}",
            "ａｌｉｃｅ",
            "\u{3000}alice",
        ] {
            assert_eq!(normalize(variant, &django), "alice", "{variant:?}");
        }
        assert_eq!(normalize("Alice", &django), "Alice");
        assert_eq!(
            normalize(" ALİCE Straße ", &[Trim, Nfkc, Casefold]),
            "ali̇ce strasse"
        );
        assert_eq!(normalize(" alice ", &[]), " alice ");
    }

    #[test]
    fn names_with_control_characters_are_unreadable() {
        let source = UsernameSource::default();
        for body in [
            &b"username=alice%00admin"[..],
            b"username=%00intranet%00alice",
            b"username=ali%1Bce",
            b"username=alice%0Abob",
        ] {
            assert_eq!(
                read(&source, BodyName::Form(body), true, None).map(|n| n.name),
                Err(Unreadable::ControlCharacter),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Trailing whitespace controls are trimmed first, as the app trims them.
        let tabbed = read(&source, BodyName::Form(b"username=alice%09"), true, None);
        assert_eq!(tabbed.map(|n| n.name), Ok("alice".to_string()));
        let json = read(
            &source,
            BodyName::Json(br#"{"username":"a\u0000b"}"#),
            true,
            None,
        );
        assert_eq!(json.map(|n| n.name), Err(Unreadable::ControlCharacter));
    }

    #[test]
    fn the_pointer_and_its_form_spelling() {
        let source = UsernameSource {
            json_pointer: Some("/user/email".into()),
            ..UsernameSource::default()
        };
        assert_eq!(
            form_names(&source),
            vec![b"username".to_vec(), b"user[email]".to_vec()]
        );
        assert_eq!(json_pointer(&UsernameSource::default()), "/username");
        assert_eq!(
            json_value(
                br#"{"user":{"email":"a@example.com"},"n":1.5}"#,
                "/user/email"
            ),
            Ok(Some(b"a@example.com".to_vec()))
        );
        assert_eq!(
            json_value(br#"{"username":7}"#, "/username"),
            Err(Unreadable::AmbiguousBody)
        );
        assert_eq!(
            json_value(br#"{"user":{"email":"a","email":"b"}}"#, "/user/email"),
            Err(Unreadable::RepeatedName)
        );
        assert_eq!(
            json_value(b"[[[[", "/username"),
            Err(Unreadable::MalformedBody)
        );
        assert_eq!(json_value(br#"{"other":"x"}"#, "/username"), Ok(None));
    }
}
