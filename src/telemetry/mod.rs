//! Telemetry: the capture script's v1 payload (docs/telemetry.md), validated into a typed
//! [`Telemetry`] that the feature stage can trust.
//!
//! Owns: the size bound, per-stream count bounds, finite numbers, monotone timestamps inside
//! the page's lifetime, known enum values and field references. Every violation is a typed
//! [`ValidationError`] with a stable `reason()` code; deciding what to do with it is the
//! policy's job. Pure code: no I/O, never logs the payload, never panics, linear time, and
//! allocation bounded by the size limit.

use serde::Deserialize;

/// Limits applied before and during validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Payload bytes (the JSON text). Default 64 KiB.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 * 1024,
        }
    }
}

/// Per-stream maximum entries; the capture script's own caps (`MAX` in capture.js).
pub const MAX_MOVES: usize = 600;
pub const MAX_POINTER: usize = 400;
pub const MAX_CLICKS: usize = 100;
pub const MAX_KEYS: usize = 400;
pub const MAX_FOCUS: usize = 64;
pub const MAX_WINDOW: usize = 64;
pub const MAX_FIELDS: usize = 32;
/// Timestamps may exceed `t1` by this much (ms): `t1` is read before the last event is pushed
/// on some browsers, and clocks are rounded to 0.1 ms.
pub const TIME_SLACK_MS: f64 = 50.0;
/// A page older than a day is not a login page any more.
pub const MAX_PAGE_MS: f64 = 86_400_000.0;
/// Coordinates are clamped to ±99 999 px by the capture script.
pub const MAX_COORD: f64 = 99_999.0;

/// The payload streams, for error messages and reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Page,
    Fields,
    Focus,
    Keys,
    Moves,
    Pointer,
    Clicks,
    Window,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Page => "page",
            Stream::Fields => "fields",
            Stream::Focus => "focus",
            Stream::Keys => "keys",
            Stream::Moves => "moves",
            Stream::Pointer => "pointer",
            Stream::Clicks => "clicks",
            Stream::Window => "window",
        }
    }
}

/// Why a payload was refused. `reason()` is the stable code for metrics and policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("the payload is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the payload is not v1 telemetry JSON")]
    Malformed,
    #[error("the payload has schema version {0}, which this gaitkeeper does not read")]
    Version(u64),
    #[error("the {} stream has more entries than allowed", .0.as_str())]
    TooMany(Stream),
    #[error("the {} stream holds a number that is not finite or out of range", .0.as_str())]
    BadNumber(Stream),
    #[error("the page lifetime t0..t1 is empty, negative or too long")]
    PageWindow,
    #[error("timestamps in the {} stream go backwards", .0.as_str())]
    NotMonotone(Stream),
    #[error("a timestamp in the {} stream is outside the page's lifetime", .0.as_str())]
    OutOfWindow(Stream),
    #[error("the {} stream holds a value the v1 schema does not define", .0.as_str())]
    UnknownValue(Stream),
    #[error("the {} stream refers to a field that the payload does not describe", .0.as_str())]
    FieldIndex(Stream),
}

impl ValidationError {
    pub fn reason(&self) -> &'static str {
        match self {
            ValidationError::TooLarge { .. } => "too_large",
            ValidationError::Malformed => "malformed",
            ValidationError::Version(_) => "version",
            ValidationError::TooMany(_) => "too_many_events",
            ValidationError::BadNumber(_) => "bad_number",
            ValidationError::PageWindow => "page_window",
            ValidationError::NotMonotone(_) => "not_monotone",
            ValidationError::OutOfWindow(_) => "out_of_window",
            ValidationError::UnknownValue(_) => "unknown_value",
            ValidationError::FieldIndex(_) => "field_index",
        }
    }
}

/// Key event direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDir {
    Down,
    Up,
}

/// The capture script's key classes; a key's identity never leaves the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    Letter,
    Digit,
    Space,
    Modifier,
    Backspace,
    Tab,
    Enter,
    Other,
    /// Any printable character in a password field.
    PasswordChar,
}

impl KeyClass {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "l" => KeyClass::Letter,
            "d" => KeyClass::Digit,
            "s" => KeyClass::Space,
            "m" => KeyClass::Modifier,
            "b" => KeyClass::Backspace,
            "t" => KeyClass::Tab,
            "e" => KeyClass::Enter,
            "o" => KeyClass::Other,
            "c" => KeyClass::PasswordChar,
            _ => return None,
        })
    }
}

/// Key flags (bits of the sixth element).
pub const KEY_REPEAT: u8 = 1;
pub const KEY_UNPAIRED_UP: u8 = 2;
pub const KEY_COMPOSING: u8 = 4;
pub const KEY_UNTRUSTED: u8 = 8;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyEvent {
    pub t: f64,
    pub dir: KeyDir,
    pub class: KeyClass,
    /// Index into [`Telemetry::fields`], or `None` outside a described field.
    pub field: Option<usize>,
    pub stroke: u32,
    pub flags: u8,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MouseMove {
    pub t: f64,
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerPhase {
    Move,
    Down,
    Up,
    Cancel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerType {
    Touch,
    Pen,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointerEvent {
    pub t: f64,
    pub x: f64,
    pub y: f64,
    pub phase: PointerPhase,
    pub kind: PointerType,
}

/// What a click landed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickTarget {
    Field,
    Button,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Click {
    pub t: f64,
    pub button: u8,
    pub target: ClickTarget,
    pub x: f64,
    pub y: f64,
    /// Press-to-release in ms, when the release was seen.
    pub hold: Option<f64>,
}

/// How focus reached a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FocusMethod {
    Initial,
    Tab,
    Mouse,
    Pen,
    Touch,
    Window,
    Programmatic,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Focus {
    pub t: f64,
    pub field: usize,
    pub method: FocusMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Visible,
    Hidden,
    Focused,
    Blurred,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowEvent {
    pub t: f64,
    pub kind: WindowKind,
}

/// Autofill bits of a field.
pub const AUTOFILL_INPUT: u8 = 1;
pub const AUTOFILL_PSEUDO: u8 = 2;
pub const AUTOFILL_UNTYPED_VALUE: u8 = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub is_password: bool,
    pub pastes: u32,
    pub autofill: u8,
    pub inputs: u32,
}

/// A validated v1 payload. Times are ms on the page's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    pub t0: f64,
    pub t1: f64,
    pub visible_ms: f64,
    pub viewport: (f64, f64),
    pub untrusted: u32,
    /// `tr` bits: which streams the script had to shrink to fit.
    pub truncated: u32,
    pub handovers: u32,
    pub keys_seen: u32,
    pub fields: Vec<Field>,
    pub focus: Vec<Focus>,
    pub keys: Vec<KeyEvent>,
    pub moves: Vec<MouseMove>,
    /// (moves seen, sampling stride) from `mi`.
    pub move_sampling: (u64, u64),
    pub pointer: Vec<PointerEvent>,
    pub clicks: Vec<Click>,
    pub window: Vec<WindowEvent>,
}

// ---- the wire shape, as serde reads it ----

#[derive(Deserialize)]
struct RawField {
    #[serde(default)]
    y: String,
    #[serde(default)]
    p: u32,
    #[serde(default)]
    a: u8,
    #[serde(default)]
    ni: u32,
}

/// `[t, button, kind, x, y, hold|null]`
type RawClick<'a> = (f64, u8, &'a str, f64, f64, Option<f64>);

// Enum strings are borrowed from the input (no allocation per event); v1 enum values never
// contain escapes, and an escaped one is refused as malformed.
#[derive(Deserialize)]
struct Raw<'a> {
    v: u64,
    t0: f64,
    t1: f64,
    #[serde(default)]
    vis: f64,
    #[serde(default)]
    vp: (f64, f64),
    #[serde(default)]
    u: u32,
    #[serde(default)]
    tr: u32,
    #[serde(default)]
    n: u32,
    #[serde(default)]
    kn: u32,
    #[serde(default)]
    f: Vec<RawField>,
    #[serde(default)]
    #[serde(borrow)]
    fc: Vec<(f64, i64, &'a str)>,
    #[serde(default)]
    #[serde(borrow)]
    k: Vec<(f64, &'a str, &'a str, i64, u32, u8)>,
    #[serde(default)]
    m: Vec<(f64, f64, f64)>,
    #[serde(default)]
    mi: (u64, u64),
    #[serde(default)]
    #[serde(borrow)]
    p: Vec<(f64, f64, f64, &'a str, &'a str)>,
    #[serde(default)]
    #[serde(borrow)]
    c: Vec<RawClick<'a>>,
    #[serde(default)]
    #[serde(borrow)]
    w: Vec<(f64, &'a str)>,
}

/// Validates one payload (the raw JSON bytes from the login stage).
pub fn validate(payload: &[u8], limits: &Limits) -> Result<Telemetry, ValidationError> {
    if payload.len() > limits.max_bytes {
        return Err(ValidationError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    // The byte bound caps every array: serde_json is linear and allocates at most a small
    // multiple of the input.
    let raw: Raw = serde_json::from_slice(payload).map_err(|_| ValidationError::Malformed)?;
    if raw.v != 1 {
        return Err(ValidationError::Version(raw.v));
    }
    from_raw(raw)
}

fn finite(stream: Stream, values: &[f64]) -> Result<(), ValidationError> {
    if values.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(ValidationError::BadNumber(stream))
    }
}

fn coords(stream: Stream, x: f64, y: f64) -> Result<(), ValidationError> {
    finite(stream, &[x, y])?;
    if x.abs() > MAX_COORD || y.abs() > MAX_COORD {
        return Err(ValidationError::BadNumber(stream));
    }
    Ok(())
}

/// Checks one timestamp against the page window and the previous entry of its stream.
struct Clock {
    t0: f64,
    t1: f64,
}

impl Clock {
    fn check(&self, stream: Stream, prev: &mut f64, t: f64) -> Result<f64, ValidationError> {
        finite(stream, &[t])?;
        if t < self.t0 || t > self.t1 + TIME_SLACK_MS {
            return Err(ValidationError::OutOfWindow(stream));
        }
        if t < *prev {
            return Err(ValidationError::NotMonotone(stream));
        }
        *prev = t;
        Ok(t)
    }
}

fn bound<T>(stream: Stream, v: &[T], max: usize) -> Result<(), ValidationError> {
    if v.len() > max {
        Err(ValidationError::TooMany(stream))
    } else {
        Ok(())
    }
}

fn from_raw(raw: Raw<'_>) -> Result<Telemetry, ValidationError> {
    finite(Stream::Page, &[raw.t0, raw.t1, raw.vis, raw.vp.0, raw.vp.1])?;
    if raw.t0 < 0.0 || raw.t1 < raw.t0 || raw.t1 - raw.t0 > MAX_PAGE_MS {
        return Err(ValidationError::PageWindow);
    }
    if raw.vis < 0.0 || raw.vis > raw.t1 - raw.t0 + TIME_SLACK_MS {
        return Err(ValidationError::BadNumber(Stream::Page));
    }
    if !(0.0..=MAX_COORD).contains(&raw.vp.0) || !(0.0..=MAX_COORD).contains(&raw.vp.1) {
        return Err(ValidationError::BadNumber(Stream::Page));
    }
    bound(Stream::Fields, &raw.f, MAX_FIELDS)?;
    bound(Stream::Focus, &raw.fc, MAX_FOCUS)?;
    bound(Stream::Keys, &raw.k, MAX_KEYS)?;
    bound(Stream::Moves, &raw.m, MAX_MOVES)?;
    bound(Stream::Pointer, &raw.p, MAX_POINTER)?;
    bound(Stream::Clicks, &raw.c, MAX_CLICKS)?;
    bound(Stream::Window, &raw.w, MAX_WINDOW)?;
    let clock = Clock {
        t0: raw.t0,
        t1: raw.t1,
    };

    let fields: Vec<Field> = raw
        .f
        .iter()
        .map(|f| {
            if f.a > 7 {
                return Err(ValidationError::UnknownValue(Stream::Fields));
            }
            Ok(Field {
                is_password: f.y == "password",
                pastes: f.p,
                autofill: f.a,
                inputs: f.ni,
            })
        })
        .collect::<Result<_, _>>()?;
    // With `tr & 64` the script dropped the field list to fit; references then say nothing.
    let fields_dropped = raw.tr & 64 != 0;
    let field_ref = |stream: Stream, i: i64| -> Result<Option<usize>, ValidationError> {
        if i == -1 || (fields_dropped && i >= 0 && i < MAX_FIELDS as i64) {
            return Ok(None);
        }
        if i >= 0 && (i as usize) < fields.len() {
            Ok(Some(i as usize))
        } else {
            Err(ValidationError::FieldIndex(stream))
        }
    };

    let mut prev = f64::NEG_INFINITY;
    let mut focus = Vec::with_capacity(raw.fc.len());
    for (t, i, how) in &raw.fc {
        let t = clock.check(Stream::Focus, &mut prev, *t)?;
        let method = match *how {
            "initial" => FocusMethod::Initial,
            "tab" => FocusMethod::Tab,
            "mouse" => FocusMethod::Mouse,
            "pen" => FocusMethod::Pen,
            "touch" => FocusMethod::Touch,
            "window" => FocusMethod::Window,
            "programmatic" => FocusMethod::Programmatic,
            _ => return Err(ValidationError::UnknownValue(Stream::Focus)),
        };
        if let Some(field) = field_ref(Stream::Focus, *i)? {
            focus.push(Focus { t, field, method });
        }
    }

    let mut prev = f64::NEG_INFINITY;
    let mut keys = Vec::with_capacity(raw.k.len());
    for (t, dir, class, field, stroke, flags) in &raw.k {
        let t = clock.check(Stream::Keys, &mut prev, *t)?;
        let dir = match *dir {
            "d" => KeyDir::Down,
            "u" => KeyDir::Up,
            _ => return Err(ValidationError::UnknownValue(Stream::Keys)),
        };
        let class = KeyClass::parse(class).ok_or(ValidationError::UnknownValue(Stream::Keys))?;
        if *flags > 15 {
            return Err(ValidationError::UnknownValue(Stream::Keys));
        }
        keys.push(KeyEvent {
            t,
            dir,
            class,
            field: field_ref(Stream::Keys, *field)?,
            stroke: *stroke,
            flags: *flags,
        });
    }

    let mut prev = f64::NEG_INFINITY;
    let mut moves = Vec::with_capacity(raw.m.len());
    for (t, x, y) in &raw.m {
        let t = clock.check(Stream::Moves, &mut prev, *t)?;
        coords(Stream::Moves, *x, *y)?;
        moves.push(MouseMove { t, x: *x, y: *y });
    }

    let mut prev = f64::NEG_INFINITY;
    let mut pointer = Vec::with_capacity(raw.p.len());
    for (t, x, y, phase, kind) in &raw.p {
        let t = clock.check(Stream::Pointer, &mut prev, *t)?;
        coords(Stream::Pointer, *x, *y)?;
        let phase = match *phase {
            "m" => PointerPhase::Move,
            "d" => PointerPhase::Down,
            "u" => PointerPhase::Up,
            "c" => PointerPhase::Cancel,
            _ => return Err(ValidationError::UnknownValue(Stream::Pointer)),
        };
        let kind = match *kind {
            "t" => PointerType::Touch,
            "p" => PointerType::Pen,
            _ => return Err(ValidationError::UnknownValue(Stream::Pointer)),
        };
        pointer.push(PointerEvent {
            t,
            x: *x,
            y: *y,
            phase,
            kind,
        });
    }

    let mut prev = f64::NEG_INFINITY;
    let mut clicks = Vec::with_capacity(raw.c.len());
    for (t, button, kind, x, y, hold) in &raw.c {
        let t = clock.check(Stream::Clicks, &mut prev, *t)?;
        coords(Stream::Clicks, *x, *y)?;
        if *button > 4 {
            return Err(ValidationError::UnknownValue(Stream::Clicks));
        }
        let target = match *kind {
            "f" => ClickTarget::Field,
            "b" => ClickTarget::Button,
            "o" => ClickTarget::Other,
            _ => return Err(ValidationError::UnknownValue(Stream::Clicks)),
        };
        if let Some(h) = hold {
            finite(Stream::Clicks, &[*h])?;
            if *h < 0.0 || t + h > raw.t1 + TIME_SLACK_MS {
                return Err(ValidationError::OutOfWindow(Stream::Clicks));
            }
        }
        clicks.push(Click {
            t,
            button: *button,
            target,
            x: *x,
            y: *y,
            hold: *hold,
        });
    }

    let mut prev = f64::NEG_INFINITY;
    let mut window = Vec::with_capacity(raw.w.len());
    for (t, kind) in &raw.w {
        let t = clock.check(Stream::Window, &mut prev, *t)?;
        let kind = match *kind {
            "v" => WindowKind::Visible,
            "h" => WindowKind::Hidden,
            "f" => WindowKind::Focused,
            "b" => WindowKind::Blurred,
            _ => return Err(ValidationError::UnknownValue(Stream::Window)),
        };
        window.push(WindowEvent { t, kind });
    }

    Ok(Telemetry {
        t0: raw.t0,
        t1: raw.t1,
        visible_ms: raw.vis,
        viewport: raw.vp,
        untrusted: raw.u,
        truncated: raw.tr,
        handovers: raw.n,
        keys_seen: raw.kn,
        fields,
        focus,
        keys,
        moves,
        move_sampling: raw.mi,
        pointer,
        clicks,
        window,
    })
}

#[cfg(test)]
pub(crate) mod tests;
