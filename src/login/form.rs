//! `application/x-www-form-urlencoded` bodies: taking the telemetry field out byte for byte,
//! and finding every pair that some framework reads as the login name.

use super::{ExtractError, StrippedForm, Unreadable};

/// Removes every `field=…` pair from an urlencoded body. Other pairs keep their exact bytes.
pub fn strip_form_field(body: &[u8], field: &str, max_payload: usize) -> StrippedForm {
    let mut kept = Vec::with_capacity(body.len());
    let mut found: Vec<&[u8]> = Vec::new();
    let mut first = true;
    for pair in body.split(|&b| b == b'&') {
        match pair_value(pair, field.as_bytes()) {
            Some(value) => found.push(value),
            None => {
                // Empty pairs are kept too: every other byte reaches the app as sent.
                if !first {
                    kept.push(b'&');
                }
                first = false;
                kept.extend_from_slice(pair);
            }
        }
    }
    StrippedForm {
        body: kept,
        telemetry: decode_found(&found, max_payload),
    }
}

/// The still-encoded value of `pair` if its name decodes to `field`.
fn pair_value<'a>(pair: &'a [u8], field: &[u8]) -> Option<&'a [u8]> {
    let name = pair.split(|&b| b == b'=').next().unwrap_or(pair);
    // Most names need no decoding: compare them as they are, without allocating.
    let matches = if name.iter().any(|&b| b == b'%' || b == b'+') {
        form_decode(name).is_some_and(|n| n == field)
    } else {
        name == field
    };
    matches.then(|| pair.get(name.len() + 1..).unwrap_or(b""))
}

fn decode_found(found: &[&[u8]], max_value: usize) -> Option<Result<Vec<u8>, ExtractError>> {
    match found {
        [] => None,
        [value] if value.len() > max_value * 3 => Some(Err(ExtractError::TooLarge)),
        [value] => Some(match form_decode(value) {
            Some(decoded) if decoded.len() > max_value => Err(ExtractError::TooLarge),
            Some(decoded) => Ok(decoded),
            None => Err(ExtractError::Encoding),
        }),
        _ => Some(Err(ExtractError::Duplicate)),
    }
}

/// Decodes an `application/x-www-form-urlencoded` component (`+` is a space). `None` for a
/// `%` not followed by two hex digits.
pub fn form_decode(component: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(component.len());
    let mut rest = component;
    // Runs without escapes are copied whole: a telemetry payload is mostly such runs.
    while let Some(at) = rest.iter().position(|&b| b == b'%' || b == b'+') {
        out.extend_from_slice(&rest[..at]);
        if rest[at] == b'+' {
            out.push(b' ');
            rest = &rest[at + 1..];
        } else {
            let mut byte = [0u8];
            hex::decode_to_slice(rest.get(at + 1..at + 3)?, &mut byte).ok()?;
            out.push(byte[0]);
            rest = &rest[at + 3..];
        }
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// The decoded value of the one pair that frameworks read as any of `names`; `Ok(None)` when
/// there is none.
///
/// A pair counts when its name decodes (`%XX`, `+`) to one of `names`, also after PHP's
/// mangling (leading spaces dropped; `.`, ` ` and a lone `[` read as `_`), or when it is an
/// array form of one (`name[]`, `name[x]`), which no app reads as one plain name. Pairs are
/// split at `&`; a body that `;` (an old separator some parsers still honour) would split
/// into other candidates is ambiguous.
pub(super) fn name_value(
    body: &[u8],
    names: &[Vec<u8>],
    max: usize,
) -> Result<Option<Vec<u8>>, Unreadable> {
    let found = candidates(body.split(|&b| b == b'&'), names);
    let with_semicolons = candidates(body.split(|&b| b == b'&' || b == b';'), names);
    if found.len() != with_semicolons.len() {
        return Err(Unreadable::AmbiguousBody);
    }
    match found.as_slice() {
        [] => Ok(None),
        [(value, array)] => {
            if *array {
                return Err(Unreadable::AmbiguousBody);
            }
            if value.len() > max * 3 {
                return Err(Unreadable::NameTooLong);
            }
            form_decode(value)
                .map(Some)
                .ok_or(Unreadable::MalformedBody)
        }
        _ => Err(Unreadable::RepeatedName),
    }
}

/// (still-encoded value, whether it is an array form) of each candidate pair.
fn candidates<'a>(
    pairs: impl Iterator<Item = &'a [u8]>,
    names: &[Vec<u8>],
) -> Vec<(&'a [u8], bool)> {
    let mut out = Vec::new();
    for pair in pairs {
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        // Names are short; a name that does not decode is read literally by lenient parsers.
        let decoded = form_decode(name).unwrap_or_else(|| name.to_vec());
        let trimmed: &[u8] = {
            let start = decoded
                .iter()
                .position(|&b| b != b' ')
                .unwrap_or(decoded.len());
            &decoded[start..]
        };
        let mangled = php_mangle(trimmed);
        let plain = names.contains(&decoded);
        let lenient = names.iter().any(|n| *n == trimmed || *n == mangled);
        let array = names
            .iter()
            .any(|n| trimmed.len() > n.len() && trimmed.starts_with(n) && trimmed[n.len()] == b'[');
        if plain || lenient || array {
            out.push((value, array && !plain));
        }
    }
    out
}

/// PHP's reading of a variable name: `.` and ` ` become `_`, and so does a `[` that opens no
/// array (no `]` after it).
fn php_mangle(name: &[u8]) -> Vec<u8> {
    let closes = name.contains(&b']');
    name.iter()
        .map(|&b| match b {
            b'.' | b' ' => b'_',
            b'[' if !closes => b'_',
            b => b,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_matches_the_reference_on_every_short_input() {
        // The reference: the byte-at-a-time decoder this one replaced, made strict about what
        // follows `%` (the old one let `u8::from_str_radix` accept a sign, as in `%+1`).
        let alphabet = [b'a', b'%', b'2', b'F', b'+', b'g', b'&', b'='];
        for len in 0..=5u32 {
            for n in 0..alphabet.len().pow(len) {
                let input: Vec<u8> = (0..len)
                    .map(|i| alphabet[n / alphabet.len().pow(i) % alphabet.len()])
                    .collect();
                let expected = reference_decode(&input);
                assert_eq!(
                    form_decode(&input),
                    expected,
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
        assert_eq!(
            strip_form_field(b"&a=1&&__gk=x&", "__gk", 9).body,
            b"&a=1&&"
        );
    }

    fn reference_decode(input: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = std::str::from_utf8(input.get(i + 1..i + 3)?).ok()?;
                    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return None;
                    }
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        Some(out)
    }

    #[test]
    fn the_telemetry_field_is_removed_and_everything_else_kept_byte_for_byte() {
        let body = b"username=alice&password=p%40ss+word&__gk=%7B%22v%22%3A1%7D&csrf_token=abc";
        let stripped = strip_form_field(body, "__gk", 65536);
        assert_eq!(
            stripped.body,
            b"username=alice&password=p%40ss+word&csrf_token=abc"
        );
        assert_eq!(stripped.telemetry, Some(Ok(br#"{"v":1}"#.to_vec())));
    }

    #[test]
    fn a_body_without_the_field_is_unchanged() {
        let body = b"a=1&b=2&&c";
        let stripped = strip_form_field(body, "__gk", 65536);
        assert_eq!(stripped.body, body);
        assert_eq!(stripped.telemetry, None);
    }

    #[test]
    fn an_encoded_field_name_is_still_found() {
        let stripped = strip_form_field(b"%5F_gk=x&a=1", "__gk", 65536);
        assert_eq!(stripped.body, b"a=1");
        assert_eq!(stripped.telemetry, Some(Ok(b"x".to_vec())));
    }

    #[test]
    fn duplicate_fields_are_all_removed_and_flagged() {
        let stripped = strip_form_field(b"__gk=1&a=1&__gk=2", "__gk", 65536);
        assert_eq!(stripped.body, b"a=1");
        assert_eq!(stripped.telemetry, Some(Err(ExtractError::Duplicate)));
    }

    #[test]
    fn oversized_and_badly_encoded_values_are_errors() {
        let big = format!("__gk={}", "a".repeat(5000));
        let stripped = strip_form_field(big.as_bytes(), "__gk", 1024);
        assert_eq!(stripped.telemetry, Some(Err(ExtractError::TooLarge)));
        let stripped = strip_form_field(b"__gk=%zz", "__gk", 1024);
        assert_eq!(stripped.telemetry, Some(Err(ExtractError::Encoding)));
    }

    fn names(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|n| n.as_bytes().to_vec()).collect()
    }

    #[test]
    fn the_name_is_found_however_frameworks_spell_the_field() {
        let n = names(&["username"]);
        assert_eq!(
            name_value(b"a=1&username=alice&b=2", &n, 64),
            Ok(Some(b"alice".to_vec()))
        );
        assert_eq!(
            name_value(b"user%6Eame=al%69ce+b", &n, 64),
            Ok(Some(b"alice b".to_vec()))
        );
        assert_eq!(name_value(b"a=1", &n, 64), Ok(None));
        // PHP reads `user.name` and ` user_name` as `user_name`.
        let php = names(&["user_name"]);
        assert_eq!(
            name_value(b"user.name=alice", &php, 64),
            Ok(Some(b"alice".to_vec()))
        );
        assert_eq!(
            name_value(b"user_name=a&user.name=b", &php, 64),
            Err(Unreadable::RepeatedName)
        );
        assert_eq!(
            name_value(b"+user_name=alice", &php, 64),
            Ok(Some(b"alice".to_vec()))
        );
    }

    #[test]
    fn repeated_array_and_semicolon_spellings_are_not_guessed() {
        let n = names(&["username"]);
        assert_eq!(
            name_value(b"username=a&username=alice", &n, 64),
            Err(Unreadable::RepeatedName)
        );
        assert_eq!(
            name_value(b"username[]=alice", &n, 64),
            Err(Unreadable::AmbiguousBody)
        );
        assert_eq!(
            name_value(b"username[0]=a&x=1", &n, 64),
            Err(Unreadable::AmbiguousBody)
        );
        assert_eq!(
            name_value(b"x=1;username=alice", &n, 64),
            Err(Unreadable::AmbiguousBody)
        );
        assert_eq!(
            name_value(b"username=alice;x=1", &n, 64),
            Ok(Some(b"alice;x=1".to_vec()))
        );
        assert_eq!(
            name_value(b"username=%zz", &n, 64),
            Err(Unreadable::MalformedBody)
        );
        let long = format!("username={}", "a".repeat(200));
        assert_eq!(
            name_value(long.as_bytes(), &n, 64),
            Err(Unreadable::NameTooLong)
        );
    }
}
