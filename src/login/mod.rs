//! Login submits: reading the login name the way the app will, and taking the capture script's
//! telemetry out so the app receives its own request.
//!
//! Owns: the body's `Content-Encoding` (undone, bounded), its `Content-Type` (urlencoded,
//! multipart, JSON), finding and removing the telemetry field (forms) or reading its header
//! (fetch/XHR logins), the login name and its normalisation, and the payload envelope (version
//! and page token). A submit whose name cannot be read exactly once is [`Unreadable`]: the
//! policy decides what happens to it, never a guess. Full payload validation belongs to the
//! telemetry stage. Never logs bodies, field values, names or telemetry.

mod coding;
mod form;
mod inbox;
mod media;
mod multipart;
mod name;

use base64::Engine;
use serde::Deserialize;

use crate::config::UsernameSource;

pub use form::{form_decode, strip_form_field};

/// Undoes a body's `Content-Encoding` (gzip, deflate, br), bounded by its decoded size; `None`
/// when it has none. Also used to read login answers.
pub(crate) fn decode_body(
    values: &[&str],
    body: &[u8],
    limit: usize,
) -> Result<Option<Vec<u8>>, Unreadable> {
    coding::decode(values, body, limit)
}
pub use inbox::TelemetryInbox;
pub use name::{normalize, MAX_NAME_BYTES};

/// Why the login name of a submit cannot be read exactly once. `reason()` is the stable code
/// for the audit trail and metrics, `status()` the answer when the policy refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    #[error("the Content-Type is missing or not one gaitkeeper reads (urlencoded, multipart/form-data, JSON)")]
    UnsupportedContentType,
    #[error("the Content-Type is given twice, or has parameters that parsers read differently")]
    AmbiguousContentType,
    #[error("the Content-Encoding is not gzip, deflate or br")]
    UnsupportedEncoding,
    #[error("the body is larger than capture.max_login_body_bytes (once decoded)")]
    TooLarge,
    #[error("the body did not arrive within capture.body_timeout")]
    BodyTimeout,
    #[error("the body does not parse as its Content-Type says")]
    MalformedBody,
    #[error("the body can be read in more than one way by the frameworks apps use")]
    AmbiguousBody,
    #[error("the login name is missing")]
    MissingName,
    #[error("the login name is given more than once")]
    RepeatedName,
    #[error("the login name is not UTF-8, or not ASCII in a body with another charset")]
    BadNameEncoding,
    #[error("the login name is longer than 512 bytes")]
    NameTooLong,
    #[error("the login name is empty once normalised")]
    EmptyName,
    #[error("the login name holds a control character (such as NUL), which apps read differently")]
    ControlCharacter,
}

impl Unreadable {
    pub fn reason(&self) -> &'static str {
        match self {
            Unreadable::UnsupportedContentType => "unsupported_content_type",
            Unreadable::AmbiguousContentType => "ambiguous_content_type",
            Unreadable::UnsupportedEncoding => "unsupported_encoding",
            Unreadable::TooLarge => "too_large",
            Unreadable::BodyTimeout => "body_timeout",
            Unreadable::MalformedBody => "malformed_body",
            Unreadable::AmbiguousBody => "ambiguous_body",
            Unreadable::MissingName => "missing_name",
            Unreadable::RepeatedName => "repeated_name",
            Unreadable::BadNameEncoding => "bad_name_encoding",
            Unreadable::NameTooLong => "name_too_long",
            Unreadable::ControlCharacter => "name_control_character",
            Unreadable::EmptyName => "empty_name",
        }
    }

    /// The HTTP status of a refusal: 415 for what gaitkeeper cannot decode, 413 for a body
    /// over the limit, 408 for one too slow to arrive, 400 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            Unreadable::UnsupportedContentType | Unreadable::UnsupportedEncoding => 415,
            Unreadable::TooLarge => 413,
            Unreadable::BodyTimeout => 408,
            _ => 400,
        }
    }

    /// Whether the request could be forwarded at all: a body over the limit or still on
    /// its way was never read whole, so whatever the policy says it cannot reach the app.
    pub(crate) fn forwardable(&self) -> bool {
        !matches!(self, Unreadable::TooLarge | Unreadable::BodyTimeout)
    }
}

/// A login submit as capture sees it, after the body was read whole.
pub struct LoginSubmit<'a> {
    /// Every `Content-Type` header value (normally one).
    pub content_type: Vec<&'a str>,
    /// Every `Content-Encoding` header value.
    pub content_encoding: Vec<&'a str>,
    /// The query string of the request target, if any.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

/// What capture takes from a login submit.
pub struct ReadSubmit {
    /// The body the app receives instead of the original: the decoded body and/or the body
    /// without its telemetry. `None`: forward the original bytes.
    pub app_body: Option<Vec<u8>>,
    /// Whether `app_body` is decoded (its `Content-Encoding` must go).
    pub decoded: bool,
    /// The telemetry found in the body (form field or multipart part), if any.
    pub telemetry: Option<Result<Vec<u8>, ExtractError>>,
    /// The login name, or why there is not exactly one.
    pub name: Result<LoginName, Unreadable>,
}

/// The login name of a submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginName {
    /// Normalised as the route says: the name profiles, regulation and the audit use.
    pub name: String,
    /// As the client sent it (decoded, not normalised).
    pub as_sent: String,
}

/// Reads a login submit: undoes its coding, takes the telemetry field out of the body and
/// reads the login name from what the app will receive.
pub fn read_submit(
    submit: &LoginSubmit<'_>,
    username: &UsernameSource,
    telemetry_field: &str,
    max_payload: usize,
    max_body: usize,
) -> ReadSubmit {
    let unreadable = |e| ReadSubmit {
        app_body: None,
        decoded: false,
        telemetry: None,
        name: Err(e),
    };
    let decoded = match coding::decode(&submit.content_encoding, submit.body, max_body) {
        Ok(decoded) => decoded,
        Err(e) => return unreadable(e),
    };
    let body: &[u8] = decoded.as_deref().unwrap_or(submit.body);
    let media = match submit.content_type.as_slice() {
        [] => Err(Unreadable::UnsupportedContentType),
        [one] => media::parse(one),
        _ => Err(Unreadable::AmbiguousContentType),
    };
    let media = match media {
        Ok(m) => m,
        Err(e) => {
            // Still forwardable (when the policy allows it) in its decoded form.
            let mut read = unreadable(e);
            read.decoded = decoded.is_some();
            read.app_body = decoded;
            return read;
        }
    };
    let utf8 = media.charset_is_utf8();
    let (app_body, telemetry, name) = match &media.format {
        media::BodyFormat::Form => {
            let stripped = strip_form_field(body, telemetry_field, max_payload);
            let name = name::read(
                username,
                name::BodyName::Form(&stripped.body),
                utf8,
                submit.query,
            );
            let changed = stripped.telemetry.is_some();
            (changed.then_some(stripped.body), stripped.telemetry, name)
        }
        media::BodyFormat::Multipart { boundary } => match multipart::parse(body, boundary) {
            Err(e) => (None, None, Err(e)),
            Ok(parts) => {
                let (stripped, telemetry) =
                    match strip_parts(body, &parts, telemetry_field, max_payload) {
                        Some(s) => (Some(s.body), s.telemetry),
                        None => (None, None),
                    };
                let name = name::read(
                    username,
                    name::BodyName::Multipart {
                        body,
                        parts: &parts,
                    },
                    utf8,
                    submit.query,
                );
                (stripped, telemetry, name)
            }
        },
        media::BodyFormat::Json => (
            None,
            None,
            name::read(username, name::BodyName::Json(body), utf8, submit.query),
        ),
    };
    let is_decoded = decoded.is_some();
    ReadSubmit {
        app_body: app_body.or(decoded),
        decoded: is_decoded,
        telemetry,
        name,
    }
}

/// Removes every part named `field` (in any reading) from a multipart body; every other byte
/// is kept. `None` when there is no such part.
fn strip_parts(
    body: &[u8],
    parts: &[multipart::Part],
    field: &str,
    max_payload: usize,
) -> Option<StrippedForm> {
    let found: Vec<&multipart::Part> = parts
        .iter()
        .filter(|p| p.is_named(field.as_bytes()))
        .collect();
    if found.is_empty() {
        return None;
    }
    let mut kept = Vec::with_capacity(body.len());
    let mut at = 0;
    for part in &found {
        kept.extend_from_slice(&body[at..part.span.start]);
        at = part.span.end;
    }
    kept.extend_from_slice(&body[at..]);
    let telemetry = match found.as_slice() {
        [part] if part.names.len() > 1 || part.transfer_encoded => Err(ExtractError::Duplicate),
        [part] if part.content.len() > max_payload => Err(ExtractError::TooLarge),
        [part] => Ok(body[part.content.clone()].to_vec()),
        _ => Err(ExtractError::Duplicate),
    };
    Some(StrippedForm {
        body: kept,
        telemetry: Some(telemetry),
    })
}

/// A form body with the telemetry field removed.
pub struct StrippedForm {
    /// The body the app receives: every other field exactly as sent, in order.
    pub body: Vec<u8>,
    /// The decoded telemetry value, if the field was present.
    pub telemetry: Option<Result<Vec<u8>, ExtractError>>,
}

/// What a login submit carried, as far as capture can tell.
#[derive(Debug, Clone)]
pub struct TelemetryOutcome {
    pub route: String,
    pub transport: Option<Transport>,
    pub status: TelemetryStatus,
    /// The decoded payload when its token verified, for the scoring stage.
    pub payload: Option<Vec<u8>>,
    /// When gaitkeeper issued the page the payload came from (its verified token), in
    /// milliseconds since the epoch.
    pub issued_ms: Option<u64>,
}

/// Whether a submit's telemetry can be scored; if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TelemetryStatus {
    /// Present, readable, and its page token verified.
    Ok,
    /// The submit carried none.
    Missing,
    /// Its page token had been used before: a replay, alerted on.
    Replayed,
    /// Unusable for another reason, by its reason code (`bad_signature`, `expired`, …).
    Refused(&'static str),
    /// Whether its page token was used before is unknown: the shared state (several
    /// instances) could not be reached.
    StateError,
}

impl TelemetryStatus {
    /// The reason code in metrics, audit reasons and the debug inbox.
    pub fn code(self) -> &'static str {
        match self {
            TelemetryStatus::Ok => "ok",
            TelemetryStatus::Missing => "missing",
            TelemetryStatus::Replayed => "replayed",
            TelemetryStatus::Refused(reason) => reason,
            TelemetryStatus::StateError => "state_error",
        }
    }
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
pub(crate) const SUPPORTED_VERSIONS: &[u64] = &[1];

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
