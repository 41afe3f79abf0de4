//! Telemetry: the capture script's v1 payload (docs/telemetry.md), validated into a typed
//! [`Telemetry`] that the feature stage can trust.
//!
//! Owns: the size bound, per-stream count bounds, finite numbers, monotone timestamps inside
//! the page's lifetime, known enum values and field references. Every violation is a typed
//! [`ValidationError`] with a stable `reason()` code; deciding what to do with it is the
//! policy's job. Pure code: no I/O, never logs the payload, never panics, linear time, and
//! allocation bounded by the size limit.

use serde::Deserialize;

/// How a payload reached gaitkeeper; its `hv` must say the same, and each way has its size
/// bound (docs/telemetry.md §1, §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// The hidden form field of a classic form post: `hv` is `submit` or `form.submit`.
    FormField,
    /// The request header of a fetch/XHR login: `hv` is `fetch` or `xhr`.
    Header,
    /// Not from a request (tests, tools): any wire `hv`, the larger bound.
    Any,
}

impl Carrier {
    /// The largest JSON text this carrier brings (the capture script trims to fit).
    pub fn max_bytes(self) -> usize {
        match self {
            Carrier::FormField | Carrier::Any => MAX_FORM_BYTES,
            Carrier::Header => MAX_HEADER_BYTES,
        }
    }
}

/// Largest payload in the form field and in the header (docs/telemetry.md §5).
pub(crate) const MAX_FORM_BYTES: usize = 49_152;
pub(crate) const MAX_HEADER_BYTES: usize = 24_576;

/// Limits applied before and during validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Payload bytes (the JSON text); the carrier's own bound applies too.
    pub max_bytes: usize,
    pub carrier: Carrier,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 * 1024,
            carrier: Carrier::Any,
        }
    }
}

/// Per-stream maximum entries; the capture script's own caps (`MAX` in capture.js).
pub(crate) const MAX_MOVES: usize = 600;
pub(crate) const MAX_POINTER: usize = 400;
pub(crate) const MAX_CLICKS: usize = 100;
pub(crate) const MAX_KEYS: usize = 400;
pub(crate) const MAX_FOCUS: usize = 64;
pub const MAX_WINDOW: usize = 64;
pub(crate) const MAX_FIELDS: usize = 32;
/// A click's release may land this far past `t1` (ms): press time and hold are each rounded to
/// the 0.1 ms grid, so their sum can exceed the rounded hand-over time by one step.
pub(crate) const HOLD_SLACK_MS: f64 = 0.1;
/// `vis` may exceed `t1 - t0` by this much (ms), for the same rounding.
pub(crate) const VISIBLE_SLACK_MS: f64 = 0.05;
/// A page older than a day is not a login page any more.
pub(crate) const MAX_PAGE_MS: f64 = 86_400_000.0;
/// Coordinates are clamped to ±99 999 px by the capture script.
pub(crate) const MAX_COORD: f64 = 99_999.0;

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
    #[error("the payload says it was handed over another way than it arrived")]
    Handover,
    #[error("a time in the {} stream is not on the 0.1 ms grid", .0.as_str())]
    OffGrid(Stream),
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
            ValidationError::Handover => "handover_mismatch",
            ValidationError::OffGrid(_) => "off_grid",
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
    /// `MouseEvent.button`: 0 main, 1 middle, 2 secondary, …; -1 for none.
    pub button: i8,
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

// ---- the wire shape, as serde reads it: exactly the keys of docs/telemetry.md §3 ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    i: i64,
    fm: i64,
    n: String,
    y: String,
    p: u32,
    a: u8,
    ni: u32,
}

/// `[t, button, kind, x, y, hold|null]`
type RawClick<'a> = (f64, i64, &'a str, i64, i64, Option<f64>);

// Enum strings are borrowed from the input (no allocation per event); v1 enum values never
// contain escapes, and an escaped one is refused as malformed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    v: u64,
    cv: String,
    // The page token was checked by the login stage; here it only has to be a string.
    #[allow(dead_code)]
    tk: serde::de::IgnoredAny,
    #[serde(borrow)]
    hv: &'a str,
    n: u32,
    t0: f64,
    t1: f64,
    vis: f64,
    vp: (i64, i64),
    u: u32,
    tr: u32,
    f: Vec<RawField>,
    #[serde(borrow)]
    fc: Vec<(f64, i64, &'a str)>,
    #[serde(borrow)]
    k: Vec<(f64, &'a str, &'a str, i64, u32, u8)>,
    kn: u32,
    m: Vec<(f64, i64, i64)>,
    mi: (u64, u64),
    #[serde(borrow)]
    p: Vec<(f64, i64, i64, &'a str, &'a str)>,
    pi: (u64, u64),
    #[serde(borrow)]
    c: Vec<RawClick<'a>>,
    #[serde(borrow)]
    w: Vec<(f64, &'a str)>,
}

/// Validates one payload (the raw JSON bytes from the login stage) against every rule of
/// docs/telemetry.md §7.
pub fn validate(payload: &[u8], limits: &Limits) -> Result<Telemetry, ValidationError> {
    let limit = limits.max_bytes.min(limits.carrier.max_bytes());
    if payload.len() > limit {
        return Err(ValidationError::TooLarge { limit });
    }
    // The byte bound caps every array: serde_json is linear and allocates at most a small
    // multiple of the input.
    let raw: Raw = match serde_json::from_slice(payload) {
        Ok(raw) => raw,
        Err(_) => {
            // Another schema version has other keys: say so rather than "malformed".
            #[derive(Deserialize)]
            struct Version {
                v: u64,
            }
            return Err(match serde_json::from_slice::<Version>(payload) {
                Ok(Version { v }) if v != 1 => ValidationError::Version(v),
                _ => ValidationError::Malformed,
            });
        }
    };
    if raw.v != 1 {
        return Err(ValidationError::Version(raw.v));
    }
    let handover_ok = matches!(
        (limits.carrier, raw.hv),
        (Carrier::FormField, "submit" | "form.submit")
            | (Carrier::Header, "fetch" | "xhr")
            | (Carrier::Any, "submit" | "form.submit" | "fetch" | "xhr")
    );
    if !handover_ok {
        return Err(ValidationError::Handover);
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

/// Times are rounded to 0.1 ms by the script (§2).
fn on_grid(stream: Stream, t: f64) -> Result<(), ValidationError> {
    let tenths = t * 10.0;
    if (tenths - tenths.round()).abs() < 1e-6 {
        Ok(())
    } else {
        Err(ValidationError::OffGrid(stream))
    }
}

fn coords(stream: Stream, x: i64, y: i64) -> Result<(f64, f64), ValidationError> {
    if x.abs() > MAX_COORD as i64 || y.abs() > MAX_COORD as i64 {
        return Err(ValidationError::BadNumber(stream));
    }
    Ok((x as f64, y as f64))
}

/// Checks one timestamp against the page window and the previous entry of its stream.
struct Clock {
    t0: f64,
    t1: f64,
}

impl Clock {
    fn check(&self, stream: Stream, prev: &mut f64, t: f64) -> Result<f64, ValidationError> {
        finite(stream, &[t])?;
        on_grid(stream, t)?;
        if t < self.t0 || t > self.t1 {
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

/// `[seen, stride]` of a down-sampled stream: the stride is a power of two.
fn sampling(stream: Stream, (seen, stride): (u64, u64)) -> Result<(u64, u64), ValidationError> {
    if !stride.is_power_of_two() {
        return Err(ValidationError::BadNumber(stream));
    }
    Ok((seen, stride))
}

fn from_raw(raw: Raw<'_>) -> Result<Telemetry, ValidationError> {
    let page = Stream::Page;
    finite(page, &[raw.t0, raw.t1, raw.vis])?;
    for t in [raw.t0, raw.t1, raw.vis] {
        on_grid(page, t)?;
    }
    if raw.t0 < 0.0 || raw.t1 < raw.t0 || raw.t1 - raw.t0 > MAX_PAGE_MS {
        return Err(ValidationError::PageWindow);
    }
    if raw.vis < 0.0 || raw.vis > raw.t1 - raw.t0 + VISIBLE_SLACK_MS {
        return Err(ValidationError::BadNumber(page));
    }
    let viewport_ok = |v: i64| (0..=100_000).contains(&v) && v % 10 == 0;
    if !viewport_ok(raw.vp.0) || !viewport_ok(raw.vp.1) {
        return Err(ValidationError::BadNumber(page));
    }
    if raw.cv.chars().count() > 16 || raw.n < 1 || raw.tr > 127 {
        return Err(ValidationError::UnknownValue(page));
    }
    bound(Stream::Fields, &raw.f, MAX_FIELDS)?;
    bound(Stream::Focus, &raw.fc, MAX_FOCUS)?;
    bound(Stream::Keys, &raw.k, MAX_KEYS)?;
    bound(Stream::Moves, &raw.m, MAX_MOVES)?;
    bound(Stream::Pointer, &raw.p, MAX_POINTER)?;
    bound(Stream::Clicks, &raw.c, MAX_CLICKS)?;
    bound(Stream::Window, &raw.w, MAX_WINDOW)?;
    if (raw.kn as usize) < raw.k.len() {
        return Err(ValidationError::BadNumber(Stream::Keys));
    }
    let move_sampling = sampling(Stream::Moves, raw.mi)?;
    sampling(Stream::Pointer, raw.pi)?;
    let clock = Clock {
        t0: raw.t0,
        t1: raw.t1,
    };

    let fields: Vec<Field> = raw
        .f
        .iter()
        .map(|f| {
            let valid = f.i >= -1
                && f.fm >= -1
                && f.a <= 7
                && f.n.chars().count() <= 64
                && f.y.chars().count() <= 32;
            if !valid {
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
    // §7.7: `−1 ≤ ref < len(f)` in `k`, `0 ≤ ref < len(f)` in `fc`. The script empties `f`
    // (tr & 64) only once every stream is empty, so no reference can dangle.
    let field_ref = |stream: Stream, i: i64| -> Result<Option<usize>, ValidationError> {
        if i == -1 && stream == Stream::Keys {
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
        // §7.9: flags 0..15; repeat only on keydowns, unpaired only on keyups.
        let misplaced = match dir {
            KeyDir::Down => flags & KEY_UNPAIRED_UP != 0,
            KeyDir::Up => flags & KEY_REPEAT != 0,
        };
        if *flags > 15 || misplaced {
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
        let (x, y) = coords(Stream::Moves, *x, *y)?;
        moves.push(MouseMove { t, x, y });
    }

    let mut prev = f64::NEG_INFINITY;
    let mut pointer = Vec::with_capacity(raw.p.len());
    for (t, x, y, phase, kind) in &raw.p {
        let t = clock.check(Stream::Pointer, &mut prev, *t)?;
        let (x, y) = coords(Stream::Pointer, *x, *y)?;
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
            x,
            y,
            phase,
            kind,
        });
    }

    let mut prev = f64::NEG_INFINITY;
    let mut clicks = Vec::with_capacity(raw.c.len());
    for (t, button, kind, x, y, hold) in &raw.c {
        let t = clock.check(Stream::Clicks, &mut prev, *t)?;
        let (x, y) = coords(Stream::Clicks, *x, *y)?;
        // `MouseEvent.button` as the browser reports it: -1 (none) up to exotic buttons.
        if !(-1..=31).contains(button) {
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
            on_grid(Stream::Clicks, *h)?;
            if *h < 0.0 || t + h > raw.t1 + HOLD_SLACK_MS + 1e-6 {
                return Err(ValidationError::OutOfWindow(Stream::Clicks));
            }
        }
        clicks.push(Click {
            t,
            button: *button as i8,
            target,
            x,
            y,
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
        viewport: (raw.vp.0 as f64, raw.vp.1 as f64),
        untrusted: raw.u,
        truncated: raw.tr,
        handovers: raw.n,
        keys_seen: raw.kn,
        fields,
        focus,
        keys,
        moves,
        move_sampling,
        pointer,
        clicks,
        window,
    })
}

#[cfg(test)]
pub(crate) mod tests;
