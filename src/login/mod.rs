//! Login submits: taking the capture script's telemetry out of the login request so the app
//! receives its own request unchanged, byte for byte.
//!
//! Owns: parsing the login body just enough to find and remove the telemetry field
//! (urlencoded forms) or header (fetch/XHR logins), and the payload envelope (version and page
//! token). Full payload validation belongs to the telemetry stage. Never logs bodies, field
//! values or telemetry.

mod inbox;
mod username;

use base64::Engine;
use serde::Deserialize;

pub use inbox::TelemetryInbox;
pub use username::{username, Username, MAX_NAME_BYTES};

/// What a login submit carried, as far as capture can tell.
#[derive(Debug, Clone)]
pub struct TelemetryOutcome {
    pub route: String,
    pub transport: Option<Transport>,
    /// `ok`, or the rejection reason code.
    pub outcome: &'static str,
    /// The decoded payload when its token verified, for the scoring stage.
    pub payload: Option<Vec<u8>>,
}

/// How the telemetry reached gaitkeeper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A hidden field in an `application/x-www-form-urlencoded` body.
    FormField,
    /// A header on a fetch/XHR request (base64url of the JSON).
    Header,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::FormField => "form",
            Transport::Header => "header",
        }
    }
}

/// Why telemetry could not be taken out of a login request. `reason()` is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("the telemetry field appears more than once")]
    Duplicate,
    #[error("the telemetry is larger than the configured limit")]
    TooLarge,
    #[error("the telemetry is not valid percent-encoding, base64url or UTF-8")]
    Encoding,
    #[error("the telemetry is not a JSON object with a version and a page token")]
    Envelope,
    #[error("the telemetry has schema version {0}, which this gaitkeeper does not read")]
    Version(u64),
}

impl ExtractError {
    pub fn reason(&self) -> &'static str {
        match self {
            ExtractError::Duplicate => "duplicate",
            ExtractError::TooLarge => "too_large",
            ExtractError::Encoding => "encoding",
            ExtractError::Envelope => "envelope",
            ExtractError::Version(_) => "version",
        }
    }
}

/// A form body with the telemetry field removed.
pub struct StrippedForm {
    /// The body the app receives: every other field exactly as sent, in order.
    pub body: Vec<u8>,
    /// The decoded telemetry value, if the field was present.
    pub telemetry: Option<Result<Vec<u8>, ExtractError>>,
}

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

/// The decoded value of `field` in an urlencoded body, without copying the rest of it (for
/// reading the login name). `None` when absent; an error when given twice, too large or
/// badly encoded.
pub fn form_field(
    body: &[u8],
    field: &str,
    max_value: usize,
) -> Option<Result<Vec<u8>, ExtractError>> {
    let found: Vec<&[u8]> = body
        .split(|&b| b == b'&')
        .filter_map(|pair| pair_value(pair, field.as_bytes()))
        .collect();
    decode_found(&found, max_value)
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

/// The boundary of a `multipart/form-data` content type.
pub fn multipart_boundary(content_type: &str) -> Option<&str> {
    let mut parts = content_type.split(';');
    let mime = parts.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parts
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

/// Removes every part named `field` from a `multipart/form-data` body. Every other byte —
/// other parts, preamble, epilogue — is kept exactly. A body that does not parse as
/// multipart with this boundary is returned unchanged, with no telemetry found.
pub fn strip_multipart_field(
    body: &[u8],
    boundary: &str,
    field: &str,
    max_payload: usize,
) -> StrippedForm {
    let unchanged = || StrippedForm {
        body: body.to_vec(),
        telemetry: None,
    };
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // Offsets where each delimiter line starts.
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(i) = find(&body[from..], delimiter) {
        let at = from + i;
        // A delimiter starts the body or follows CRLF.
        if at == 0 || body[..at].ends_with(b"\r\n") {
            starts.push(at);
        }
        from = at + delimiter.len();
        if starts.len() > 1000 {
            return unchanged();
        }
    }
    if starts.len() < 2 {
        return unchanged();
    }
    let mut kept = Vec::with_capacity(body.len());
    let mut found: Vec<&[u8]> = Vec::new();
    // Preamble (normally empty), up to the first delimiter.
    kept.extend_from_slice(&body[..starts[0]]);
    for pair in starts.windows(2) {
        let (start, end) = (pair[0], pair[1]);
        // The part spans [start, end): delimiter line, headers, blank line, content, CRLF.
        let part = &body[start..end];
        let Some(head_end) = find(part, b"\r\n\r\n") else {
            return unchanged();
        };
        let head = &part[..head_end];
        let content_end = part.len().saturating_sub(2).max(head_end + 4);
        let content = &part[head_end + 4..content_end];
        if part_name(head).as_deref() == Some(field.as_bytes()) {
            found.push(content);
        } else {
            kept.extend_from_slice(part);
        }
    }
    // The closing delimiter and epilogue.
    kept.extend_from_slice(&body[*starts.last().expect("two or more")..]);
    let telemetry = match found.as_slice() {
        [] => None,
        [value] if value.len() > max_payload => Some(Err(ExtractError::TooLarge)),
        [value] => Some(Ok(value.to_vec())),
        _ => Some(Err(ExtractError::Duplicate)),
    };
    StrippedForm {
        body: kept,
        telemetry,
    }
}

/// The `name` parameter of a part's `Content-Disposition: form-data` header.
fn part_name(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let disposition = text
        .split("\r\n")
        // Bytes, not `&l[..20]`: a multi-byte character across byte 20 must not panic.
        .find(|l| {
            l.as_bytes()
                .get(..20)
                .is_some_and(|h| h.eq_ignore_ascii_case(b"content-disposition:"))
        })?;
    disposition.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("name")
            .then(|| v.trim().trim_matches('"').as_bytes().to_vec())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes an `application/x-www-form-urlencoded` component (`+` is a space). `None` for a
/// `%` not followed by two hex digits.
fn form_decode(component: &[u8]) -> Option<Vec<u8>> {
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

/// Decodes the telemetry header value (base64url of the UTF-8 JSON, padding optional).
pub fn decode_header(value: &[u8], max_payload: usize) -> Result<Vec<u8>, ExtractError> {
    if value.len() > max_payload.div_ceil(3) * 4 + 4 {
        return Err(ExtractError::TooLarge);
    }
    let trimmed: Vec<u8> = value.iter().copied().filter(|&b| b != b'=').collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| ExtractError::Encoding)
}

/// The parts of a payload gaitkeeper needs before full validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub version: u64,
    pub token: String,
}

/// The payload schema versions this gaitkeeper reads (see docs/telemetry.md).
pub const SUPPORTED_VERSIONS: &[u64] = &[1];

pub fn read_envelope(payload: &[u8]) -> Result<Envelope, ExtractError> {
    #[derive(Deserialize)]
    struct Raw {
        v: u64,
        tk: String,
    }
    std::str::from_utf8(payload).map_err(|_| ExtractError::Encoding)?;
    let raw: Raw = serde_json::from_slice(payload).map_err(|_| ExtractError::Envelope)?;
    if !SUPPORTED_VERSIONS.contains(&raw.v) {
        return Err(ExtractError::Version(raw.v));
    }
    Ok(Envelope {
        version: raw.v,
        token: raw.tk,
    })
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
        assert_eq!(
            form_field(b"user=al%69ce+b&__gk=x", "user", 64),
            Some(Ok(b"alice b".to_vec()))
        );
        assert_eq!(
            form_field(b"user=a&user=b", "user", 64),
            Some(Err(ExtractError::Duplicate))
        );
        assert_eq!(form_field(b"username=a", "user", 64), None);
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

    fn multipart(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, value) in parts {
            body.extend_from_slice(
                format!(
                    "--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        body
    }

    #[test]
    fn multipart_telemetry_parts_are_removed_and_the_rest_kept_exactly() {
        let body = multipart(&[("username", "alice"), ("__gk", "{\"v\":1}"), ("csrf", "x")]);
        let stripped = strip_multipart_field(&body, "XyZ", "__gk", 65536);
        assert_eq!(
            stripped.body,
            multipart(&[("username", "alice"), ("csrf", "x")])
        );
        assert_eq!(stripped.telemetry, Some(Ok(b"{\"v\":1}".to_vec())));
        assert_eq!(
            multipart_boundary("multipart/form-data; boundary=\"XyZ\""),
            Some("XyZ")
        );
        assert_eq!(multipart_boundary("text/plain; boundary=XyZ"), None);
    }

    #[test]
    fn a_multibyte_character_in_a_part_header_is_not_a_panic() {
        // Found by fuzz/login_body: a header line with "\u{fffd}" across byte 20.
        let body = "--XyZ\r\nContent-Disp--X\u{fffd}\u{fffd}form-data; name=\"username\"\r\n\r\nalice\r\n--XyZ\r\nContent-Disposition: form-data; name=\"__gk\"\r\n\r\n{}\r\n--XyZ--\r\n";
        let stripped = strip_multipart_field(body.as_bytes(), "XyZ", "__gk", 65536);
        assert_eq!(stripped.telemetry, Some(Ok(b"{}".to_vec())));
    }

    #[test]
    fn malformed_multipart_is_passed_on_unchanged() {
        for body in [&b"no delimiters at all"[..], b"--XyZ\r\nno blank line", b""] {
            let stripped = strip_multipart_field(body, "XyZ", "__gk", 65536);
            assert_eq!(stripped.body, body);
            assert_eq!(stripped.telemetry, None);
        }
        let twice = multipart(&[("__gk", "a"), ("__gk", "b")]);
        let stripped = strip_multipart_field(&twice, "XyZ", "__gk", 65536);
        assert_eq!(stripped.telemetry, Some(Err(ExtractError::Duplicate)));
    }

    #[test]
    fn header_values_are_base64url_with_optional_padding() {
        let json = br#"{"v":1,"tk":"abc"}"#;
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(json);
        assert_eq!(decode_header(encoded.as_bytes(), 65536).unwrap(), json);
        assert_eq!(
            decode_header(b"not base64!", 65536),
            Err(ExtractError::Encoding)
        );
        assert_eq!(
            decode_header(&[b'A'; 9000], 1024),
            Err(ExtractError::TooLarge)
        );
    }

    #[test]
    fn envelopes_need_a_known_version_and_a_token() {
        assert_eq!(
            read_envelope(br#"{"v":1,"tk":"t","k":[]}"#),
            Ok(Envelope {
                version: 1,
                token: "t".into()
            })
        );
        assert_eq!(
            read_envelope(br#"{"v":9,"tk":"t"}"#),
            Err(ExtractError::Version(9))
        );
        assert_eq!(read_envelope(br#"{"tk":"t"}"#), Err(ExtractError::Envelope));
        assert_eq!(read_envelope(b"[1,2]"), Err(ExtractError::Envelope));
        assert_eq!(read_envelope(b"\xff\xfe"), Err(ExtractError::Encoding));
    }
}
