//! `multipart/form-data` bodies (RFC 7578 over RFC 2046), read so that no framework can find a
//! field in them that gaitkeeper does not.
//!
//! Frameworks differ: Django strips a space before a header and takes the last of two
//! `Content-Disposition`s, busboy folds continuation lines, PHP splits header lines at a bare
//! LF, some decode `name*=` (RFC 2231) and some do not. Two rules keep gaitkeeper on the safe
//! side of every one of them:
//! - the structure must be one that every parser splits the same way — every `--boundary` in
//!   the body starts a line and is a delimiter, every part has its blank line, header lines end
//!   in CRLF, nothing follows the close delimiter — or the body is unreadable;
//! - a part's name is read under each way parsers read headers and parameters, and a part is
//!   a candidate for a field when *any* reading names it so. A field with two candidates, or a
//!   candidate that another reading names differently, is ambiguous.
//!
//! Generous where the frameworks are (boundaries up to 256 characters, `name*=`, folded or
//! space-led headers, any number of parts); strict, and so refused, where they disagree.

use std::ops::Range;

use memchr::memmem;

use super::Unreadable;

/// One part of a multipart body, as byte ranges of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    /// From its delimiter line to the start of the next delimiter line (CRLF included), so
    /// that removing it leaves a well-formed body.
    pub span: Range<usize>,
    /// Its content.
    pub content: Range<usize>,
    /// Every name some reading of its headers gives it (usually exactly one).
    pub names: Vec<Vec<u8>>,
    /// Some reading gives it a `filename` (a file upload, not a form field).
    pub file: bool,
    /// A `Content-Transfer-Encoding` other than 7bit/8bit/binary (Django decodes base64).
    pub transfer_encoded: bool,
    /// Its `Content-Type` names a charset other than UTF-8/ASCII.
    pub foreign_charset: bool,
}

impl Part {
    pub(super) fn is_named(&self, field: &[u8]) -> bool {
        self.names.iter().any(|n| n == field)
    }
}

/// The parts of `body`, or why it cannot be read unambiguously.
pub(super) fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, Unreadable> {
    let dash_boundary = [b"--", boundary.as_bytes()].concat();
    // Every occurrence of the boundary is a delimiter: at the very start or after CRLF,
    // followed by optional padding and CRLF, or by `--` (the close delimiter).
    let mut delimiters = Vec::new(); // (start, end of the delimiter line, is close)
    for at in memmem::find_iter(body, &dash_boundary) {
        if at != 0 && !body[..at].ends_with(b"\r\n") {
            return Err(Unreadable::AmbiguousBody);
        }
        let after = at + dash_boundary.len();
        if body[after..].starts_with(b"--") {
            delimiters.push((at, after + 2, true));
            continue;
        }
        let padding = body[after..]
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        if !body[after + padding..].starts_with(b"\r\n") {
            return Err(Unreadable::AmbiguousBody);
        }
        delimiters.push((at, after + padding + 2, false));
    }
    // Exactly one close delimiter, last: parsers differ on parts after it and on bodies
    // without one.
    let closes = delimiters.iter().filter(|d| d.2).count();
    if closes != 1 || !delimiters.last().is_some_and(|d| d.2) || delimiters.len() < 2 {
        return Err(Unreadable::MalformedBody);
    }
    // Text before the first delimiter or after the last: Django reads a preamble as a part,
    // others skip it. Only line breaks and blanks are left alone.
    let blank = |bytes: &[u8]| bytes.iter().all(|b| b.is_ascii_whitespace());
    let close_end = delimiters.last().expect("two or more").1;
    if !blank(&body[..delimiters[0].0]) || !blank(&body[close_end..]) {
        return Err(Unreadable::AmbiguousBody);
    }
    let mut parts = Vec::with_capacity(delimiters.len() - 1);
    for pair in delimiters.windows(2) {
        let ((start, head_start, _), (next, _, _)) = (pair[0], pair[1]);
        // The CRLF before the next delimiter belongs to the delimiter, not to the content.
        let end = next - 2;
        if end < head_start {
            return Err(Unreadable::MalformedBody);
        }
        let part = &body[head_start..end];
        let (head, content_start) = if part.starts_with(b"\r\n") {
            (&part[..0], head_start + 2)
        } else {
            match memmem::find(part, b"\r\n\r\n") {
                Some(i) => (&part[..i], head_start + i + 4),
                // A part without its blank line: Django skips it, others read it as content.
                None => return Err(Unreadable::MalformedBody),
            }
        };
        let mut read = read_head(head)?;
        read.names.sort();
        read.names.dedup();
        parts.push(Part {
            span: start..next,
            content: content_start..end,
            names: read.names,
            file: read.file,
            transfer_encoded: read.transfer_encoded,
            foreign_charset: read.foreign_charset,
        });
    }
    Ok(parts)
}

#[derive(Default)]
struct HeadReading {
    names: Vec<Vec<u8>>,
    file: bool,
    transfer_encoded: bool,
    foreign_charset: bool,
}

/// Reads a part's header block under both line readings: RFC 5322 folding (a line that starts
/// with whitespace continues the previous one) and one header per line with leading
/// whitespace stripped (Django, PHP).
fn read_head(head: &[u8]) -> Result<HeadReading, Unreadable> {
    // Header lines end in CRLF; a bare CR or LF splits lines for some parsers and not others.
    for (i, &b) in head.iter().enumerate() {
        let bare_cr = b == b'\r' && head.get(i + 1) != Some(&b'\n');
        let bare_lf = b == b'\n' && (i == 0 || head[i - 1] != b'\r');
        if bare_cr || bare_lf || b == 0 {
            return Err(Unreadable::AmbiguousBody);
        }
    }
    // Header bytes that are not UTF-8 are read as Latin-1 by some parsers: refuse them.
    let head = std::str::from_utf8(head).map_err(|_| Unreadable::AmbiguousBody)?;
    let lines: Vec<&str> = if head.is_empty() {
        Vec::new()
    } else {
        head.split("\r\n").collect()
    };
    let mut folded: Vec<String> = Vec::new();
    for line in &lines {
        match folded.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim_start());
            }
            _ => folded.push(line.trim_start().to_string()),
        }
    }
    let unfolded: Vec<String> = lines.iter().map(|l| l.trim_start().to_string()).collect();

    let mut reading = HeadReading::default();
    for headers in [&folded, &unfolded] {
        let mut dispositions = 0;
        for line in headers.iter() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    dispositions += 1;
                    read_disposition(value, &mut reading)?;
                }
                "content-transfer-encoding" => {
                    let coding = value.trim().to_ascii_lowercase();
                    if !matches!(coding.as_str(), "7bit" | "8bit" | "binary") {
                        reading.transfer_encoded = true;
                    }
                }
                "content-type" => {
                    let charset = value.split(';').skip(1).find_map(|p| {
                        let (k, v) = p.split_once('=')?;
                        k.trim()
                            .eq_ignore_ascii_case("charset")
                            .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
                    });
                    if charset.is_some_and(|c| {
                        !matches!(c.as_str(), "utf-8" | "utf8" | "us-ascii" | "ascii")
                    }) {
                        reading.foreign_charset = true;
                    }
                }
                _ => {}
            }
        }
        // Two dispositions: Django takes the last, others the first.
        if dispositions > 1 {
            return Err(Unreadable::AmbiguousBody);
        }
    }
    Ok(reading)
}

/// Collects the names a `Content-Disposition` value gives, under the careful (quoted strings)
/// and the naive (split at every `;`) parameter readings, with RFC 2231 `name*=` and its
/// continuations decoded and `%XX` escapes (how browsers escape `"`) read both ways.
fn read_disposition(value: &str, reading: &mut HeadReading) -> Result<(), Unreadable> {
    for params in [careful(value), naive(value)] {
        let params = params.ok_or(Unreadable::AmbiguousBody)?;
        // The first item is the disposition type (`form-data`): parsers do not check it.
        let mut plain: Vec<&str> = Vec::new();
        let mut extended: Vec<(Option<u32>, bool, &str)> = Vec::new();
        for (key, value) in &params {
            let key = key.as_str();
            if key == "name" {
                plain.push(value);
            } else if key == "filename" || key.starts_with("filename*") {
                reading.file = true;
            } else if let Some(rest) = key.strip_prefix("name*") {
                // `name*` or `name*N` or `name*N*`.
                let (index, encoded) = match rest {
                    "" => (None, true),
                    r => {
                        let (digits, star) = r.strip_suffix('*').map_or((r, false), |d| (d, true));
                        let n = digits
                            .parse::<u32>()
                            .map_err(|_| Unreadable::AmbiguousBody)?;
                        (Some(n), star)
                    }
                };
                extended.push((index, encoded, value));
            }
        }
        if plain.len() > 1 {
            return Err(Unreadable::AmbiguousBody);
        }
        for name in plain {
            push_name_variants(name.as_bytes(), reading);
        }
        let single: Vec<_> = extended.iter().filter(|e| e.0.is_none()).collect();
        if single.len() > 1 {
            return Err(Unreadable::AmbiguousBody);
        }
        if let Some((_, _, value)) = single.first() {
            reading.names.push(decode_ext_value(value)?);
        }
        let mut pieces: Vec<_> = extended.iter().filter(|e| e.0.is_some()).collect();
        if !pieces.is_empty() {
            pieces.sort_by_key(|e| e.0);
            let mut joined = Vec::new();
            for (i, (index, encoded, value)) in pieces.iter().enumerate() {
                if *index != Some(i as u32) {
                    return Err(Unreadable::AmbiguousBody);
                }
                if *encoded {
                    let text = if i == 0 {
                        decode_ext_value(value)?
                    } else {
                        percent_decode(value.as_bytes())?
                    };
                    joined.extend_from_slice(&text);
                } else {
                    joined.extend_from_slice(value.as_bytes());
                }
            }
            reading.names.push(joined);
        }
    }
    Ok(())
}

fn push_name_variants(name: &[u8], reading: &mut HeadReading) {
    reading.names.push(name.to_vec());
    if name.contains(&b'%') {
        if let Ok(decoded) = percent_decode(name) {
            reading.names.push(decoded);
        }
    }
}

/// An RFC 2231/5987 value `charset'language'percent-encoded`, as UTF-8.
fn decode_ext_value(value: &str) -> Result<Vec<u8>, Unreadable> {
    let mut pieces = value.splitn(3, '\'');
    let (Some(charset), Some(_language), Some(encoded)) =
        (pieces.next(), pieces.next(), pieces.next())
    else {
        return Err(Unreadable::AmbiguousBody);
    };
    let bytes = percent_decode(encoded.as_bytes())?;
    match charset.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" | "us-ascii" | "" => Ok(bytes),
        // Latin-1 bytes are their own code points.
        "iso-8859-1" | "latin1" => Ok(bytes
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
            .into_bytes()),
        _ => Err(Unreadable::AmbiguousBody),
    }
}

fn percent_decode(text: &[u8]) -> Result<Vec<u8>, Unreadable> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%' {
            let mut byte = [0u8];
            let hex = text.get(i + 1..i + 3).ok_or(Unreadable::AmbiguousBody)?;
            hex::decode_to_slice(hex, &mut byte).map_err(|_| Unreadable::AmbiguousBody)?;
            out.push(byte[0]);
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The parameters after the disposition type, read the careful way (quoted strings).
fn careful(value: &str) -> Option<Vec<(String, String)>> {
    let params = value.split_once(';').map_or("", |(_, p)| p);
    super::media::careful_params(params)
}

/// The parameters after the disposition type, split at every `;`.
fn naive(value: &str) -> Option<Vec<(String, String)>> {
    let params = value.split_once(';').map_or("", |(_, p)| p);
    Some(super::media::naive_params(params))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, &str)], boundary: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (head, value) in parts {
            body.extend_from_slice(format!("--{boundary}\r\n{head}\r\n\r\n{value}\r\n").as_bytes());
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        body
    }

    fn names(body: &[u8], boundary: &str) -> Result<Vec<Vec<String>>, Unreadable> {
        Ok(parse(body, boundary)?
            .into_iter()
            .map(|p| {
                p.names
                    .iter()
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .collect()
            })
            .collect())
    }

    #[test]
    fn a_browser_body_is_read_part_by_part() {
        let b = body(
            &[
                ("Content-Disposition: form-data; name=\"username\"", "alice"),
                ("Content-Disposition: form-data; name=\"password\"", "pw"),
                ("Content-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\nContent-Type: text/plain", "x"),
            ],
            "XyZ",
        );
        let parts = parse(&b, "XyZ").unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(&b[parts[0].content.clone()], b"alice");
        assert!(parts[0].is_named(b"username") && !parts[0].file);
        assert!(parts[2].file);
        // Spans tile the body from the first delimiter to the close delimiter.
        assert_eq!(parts[0].span.start, 0);
        assert_eq!(parts[0].span.end, parts[1].span.start);
    }

    #[test]
    fn what_the_frameworks_accept_is_read() {
        let long = "b".repeat(200);
        let b = body(
            &[("Content-Disposition: form-data; name=\"username\"", "alice")],
            &long,
        );
        assert_eq!(names(&b, &long).unwrap(), vec![vec!["username"]]);
        // RFC 2231 extended name, a space-led header, a folded header.
        for head in [
            "Content-Disposition: form-data; name*=UTF-8''username",
            " Content-Disposition: form-data; name=\"username\"",
            "Content-Disposition: form-data;\r\n name=\"username\"",
            "content-disposition : form-data; name=username",
            "Content-Disposition: form-data; name*0=user; name*1=name",
            "Content-Disposition: form-data; name=\"user%6Eame\"",
        ] {
            let b = body(&[(head, "alice")], "B");
            let parts = parse(&b, "B").unwrap_or_else(|e| panic!("{head:?}: {e:?}"));
            assert!(
                parts[0].is_named(b"username"),
                "{head:?}: {:?}",
                parts[0].names
            );
        }
        // Many parts.
        let many: Vec<(String, String)> = (0..1500)
            .map(|i| {
                (
                    format!("Content-Disposition: form-data; name=\"f{i}\""),
                    "x".to_string(),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(parse(&body(&refs, "B"), "B").unwrap().len(), 1500);
    }

    #[test]
    fn what_the_frameworks_read_differently_is_refused() {
        let two_dispositions = body(
            &[("Content-Disposition: form-data; name=\"other\"\r\nContent-Disposition: form-data; name=\"username\"", "alice")],
            "B",
        );
        assert_eq!(
            parse(&two_dispositions, "B"),
            Err(Unreadable::AmbiguousBody)
        );
        let two_names = body(
            &[(
                "Content-Disposition: form-data; name=\"a\"; name=\"username\"",
                "x",
            )],
            "B",
        );
        assert_eq!(parse(&two_names, "B"), Err(Unreadable::AmbiguousBody));
        let bare_lf = b"--B\nContent-Disposition: form-data; name=\"username\"\n\nalice\n--B--\n";
        assert!(parse(bare_lf, "B").is_err());
        let lf_head = b"--B\r\nContent-Disposition: form-data; name=\"username\"\nX: y\r\n\r\nalice\r\n--B--\r\n";
        assert_eq!(parse(lf_head, "B"), Err(Unreadable::AmbiguousBody));
        let no_blank_line =
            b"--B\r\nContent-Disposition: form-data; name=\"username\"\r\nalice\r\n--B--\r\n";
        assert_eq!(parse(no_blank_line, "B"), Err(Unreadable::MalformedBody));
        let after_close = body(&[("Content-Disposition: form-data; name=\"a\"", "x")], "B")
            .into_iter()
            .chain(b"--B\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n--B--\r\n".iter().copied())
            .collect::<Vec<u8>>();
        assert!(parse(&after_close, "B").is_err());
        let unclosed = b"--B\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n";
        assert_eq!(parse(unclosed, "B"), Err(Unreadable::MalformedBody));
        let mid_line = b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx--B\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n--B--\r\n";
        assert_eq!(parse(mid_line, "B"), Err(Unreadable::AmbiguousBody));
        // A quoted `;` hides a second name from the careful reading, not the naive one.
        let hidden = body(
            &[(
                "Content-Disposition: form-data; filename=\"x; name=username\"; name=\"password\"",
                "x",
            )],
            "B",
        );
        assert_eq!(parse(&hidden, "B"), Err(Unreadable::AmbiguousBody));
        // Django reads a part in the preamble, other parsers skip it.
        let preamble = [
            &b"Content-Disposition: form-data; name=\"username\"\r\n\r\nalice\r\n"[..],
            &body(&[("Content-Disposition: form-data; name=\"x\"", "1")], "B"),
        ]
        .concat();
        assert_eq!(parse(&preamble, "B"), Err(Unreadable::AmbiguousBody));
        let mut epilogue = body(&[("Content-Disposition: form-data; name=\"x\"", "1")], "B");
        epilogue
            .extend_from_slice(b"Content-Disposition: form-data; name=\"username\"\r\n\r\nalice");
        assert_eq!(parse(&epilogue, "B"), Err(Unreadable::AmbiguousBody));
        let mut whitespace = b"\r\n".to_vec();
        whitespace.extend_from_slice(&body(
            &[("Content-Disposition: form-data; name=\"x\"", "1")],
            "B",
        ));
        whitespace.extend_from_slice(b"\r\n\r\n");
        assert!(parse(&whitespace, "B").is_ok());
    }

    #[test]
    fn transfer_encodings_and_charsets_are_flagged() {
        let b = body(
            &[("Content-Disposition: form-data; name=\"username\"\r\nContent-Transfer-Encoding: base64", "YWxpY2U=")],
            "B",
        );
        assert!(parse(&b, "B").unwrap()[0].transfer_encoded);
        let b = body(
            &[("Content-Disposition: form-data; name=\"username\"\r\nContent-Type: text/plain; charset=utf-16", "x")],
            "B",
        );
        assert!(parse(&b, "B").unwrap()[0].foreign_charset);
    }
}
