//! The `Content-Type` of a login submit: which reader its body needs, its boundary and its
//! charset. Parameters are read twice — the RFC way (quoted strings may hold `;`) and the naive
//! way (split at every `;`) that some frameworks use — and a header the two read differently
//! (a second `boundary=` hidden in a quoted value, two boundaries) is ambiguous, never guessed.

use super::Unreadable;

/// Longest multipart boundary read. RFC 2046 allows 70 characters; Django accepts 201 and
/// other frameworks have no limit, so a long boundary is read rather than refused.
pub(super) const MAX_BOUNDARY: usize = 256;

/// How a login body is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BodyFormat {
    /// `application/x-www-form-urlencoded`
    Form,
    /// `multipart/form-data` with its boundary.
    Multipart { boundary: String },
    /// `application/json`, `text/json` or any `…/…+json`.
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MediaType {
    pub format: BodyFormat,
    /// The `charset` parameter, lower-cased, when given.
    pub charset: Option<String>,
}

impl MediaType {
    /// Whether the declared charset reads ASCII-only bytes as UTF-8 does not necessarily read
    /// other bytes the same way: then only an ASCII name is unambiguous.
    pub(super) fn charset_is_utf8(&self) -> bool {
        self.charset
            .as_deref()
            .is_none_or(|c| matches!(c, "utf-8" | "utf8" | "us-ascii" | "ascii"))
    }
}

/// Reads a `Content-Type` header value.
pub(super) fn parse(content_type: &str) -> Result<MediaType, Unreadable> {
    let (essence, params) = content_type.split_once(';').unwrap_or((content_type, ""));
    let essence = essence.trim().to_ascii_lowercase();
    let careful = careful_params(params).ok_or(Unreadable::AmbiguousContentType)?;
    let naive = naive_params(params);
    // Every parameter the two readings find must agree, and none may be given twice.
    for key in ["boundary", "charset"] {
        let a: Vec<&String> = careful
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect();
        let b: Vec<&String> = naive
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect();
        if a.len() > 1 || a != b {
            return Err(Unreadable::AmbiguousContentType);
        }
    }
    let param = |key: &str| {
        careful
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let charset = param("charset").map(|c| c.to_ascii_lowercase());
    let format = match essence.as_str() {
        "application/x-www-form-urlencoded" => BodyFormat::Form,
        "multipart/form-data" => {
            let boundary = param("boundary").ok_or(Unreadable::MalformedBody)?;
            let valid = !boundary.is_empty()
                && boundary.len() <= MAX_BOUNDARY
                && boundary.bytes().all(|b| (b' '..=b'~').contains(&b))
                && !boundary.ends_with(' ');
            if !valid {
                return Err(Unreadable::MalformedBody);
            }
            BodyFormat::Multipart { boundary }
        }
        "application/json" | "text/json" => BodyFormat::Json,
        e if e.starts_with("application/") && e.ends_with("+json") => BodyFormat::Json,
        _ => return Err(Unreadable::UnsupportedContentType),
    };
    Ok(MediaType { format, charset })
}

/// Parameters read as RFC 9110 says: `;`-separated `key=value`, values tokens or quoted
/// strings with `\` escapes. Keys lower-cased. `None` when a quoted string is not closed.
pub(super) fn careful_params(text: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        // Skip separators and whitespace before a key.
        while chars
            .peek()
            .is_some_and(|c| *c == ';' || c.is_ascii_whitespace())
        {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let key = key.trim().to_ascii_lowercase();
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next()?),
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    return None;
                }
                // Anything between the closing quote and the next `;` is junk.
                while chars.peek().is_some_and(|c| *c != ';') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_string();
            }
        }
        if !key.is_empty() {
            out.push((key, value));
        }
    }
}

/// Parameters read the naive way: split at every `;`, quotes stripped from the ends.
pub(super) fn naive_params(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.trim().to_ascii_lowercase(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formats_gaitkeeper_reads() {
        assert_eq!(
            parse("application/x-www-form-urlencoded; charset=UTF-8").unwrap(),
            MediaType {
                format: BodyFormat::Form,
                charset: Some("utf-8".into())
            }
        );
        assert_eq!(
            parse("Multipart/Form-Data; boundary=\"a b\"")
                .unwrap()
                .format,
            BodyFormat::Multipart {
                boundary: "a b".into()
            }
        );
        for json in ["application/json", "text/json", "application/vnd.api+json"] {
            assert_eq!(parse(json).unwrap().format, BodyFormat::Json);
        }
        let long = format!("multipart/form-data; boundary={}", "b".repeat(200));
        assert!(parse(&long).is_ok());
    }

    #[test]
    fn unknown_and_ambiguous_types_are_unreadable() {
        for other in [
            "text/plain",
            "",
            "multipart/mixed; boundary=x",
            "application/xml",
        ] {
            assert_eq!(
                parse(other),
                Err(Unreadable::UnsupportedContentType),
                "{other}"
            );
        }
        for ambiguous in [
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/form-data; x=\"; boundary=evil\"; boundary=real",
            "multipart/form-data; boundary=\"unclosed",
            "application/x-www-form-urlencoded; charset=utf-8; charset=utf-16",
        ] {
            assert_eq!(
                parse(ambiguous),
                Err(Unreadable::AmbiguousContentType),
                "{ambiguous}"
            );
        }
        for bad in [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"ends with space \"",
        ] {
            assert_eq!(parse(bad), Err(Unreadable::MalformedBody), "{bad}");
        }
        let too_long = format!(
            "multipart/form-data; boundary={}",
            "b".repeat(MAX_BOUNDARY + 1)
        );
        assert_eq!(parse(&too_long), Err(Unreadable::MalformedBody));
    }
}
