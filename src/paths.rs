//! How a request path is read: the normal form that every app could agree on, and whether a
//! path is under gaitkeeper's reserved prefix in any spelling an app might decode. One reading
//! for the proxy, the injector and the config check, so the three cannot disagree.

/// Whether `path` falls under the reserved `prefix` (which starts and ends with '/').
///
/// Apps differ in how they read a path: some decode `%5F` to `_`, merge `//`, resolve `/./`
/// and `/../`, treat `\` as `/` or ignore case. Any spelling that some app could read as a
/// reserved path counts as reserved, so it is answered by gaitkeeper and never forwarded.
pub(crate) fn is_reserved_path(path: &str, prefix: &str) -> bool {
    let bare_prefix = &prefix[..prefix.len() - 1];
    let plain = !path.contains(['%', '\\']) && !path.contains("//") && !path.contains("/.");
    if plain {
        return starts_with_ignore_case(path, prefix) || path.eq_ignore_ascii_case(bare_prefix);
    }
    let normal = normalize_path(path);
    starts_with_ignore_case(&normal, prefix) || normal.eq_ignore_ascii_case(bare_prefix)
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Decodes percent-escapes (repeatedly, against double encoding), maps `\` to `/`, and
/// resolves empty, `.` and `..` segments.
pub(crate) fn normalize_path(path: &str) -> String {
    let mut decoded = path.to_string();
    for _ in 0..3 {
        let next = percent_encoding::percent_decode_str(&decoded)
            .decode_utf8_lossy()
            .into_owned();
        if next == decoded {
            break;
        }
        decoded = next;
    }
    let decoded = decoded.replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len() + 1);
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || out.is_empty()
    {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_paths_are_recognised_in_every_spelling() {
        let prefix = "/__gk/";
        for path in [
            "/__gk/",
            "/__gk",
            "/__gk/capture.js",
            "/__GK/x",
            "//__gk/x",
            "/%5f_gk/x",
            "/%5F%5Fgk/x",
            "/%255F_gk/x",
            "/./__gk/x",
            "/app/../__gk/x",
            "\\__gk\\x",
            "/__gk%2fx",
        ] {
            assert!(is_reserved_path(path, prefix), "{path} must be reserved");
        }
    }

    #[test]
    fn ordinary_paths_are_not_reserved() {
        let prefix = "/__gk/";
        for path in ["/", "/login", "/__gkx", "/app/__gk/", "/__g/k", "/%5f_gkx"] {
            assert!(
                !is_reserved_path(path, prefix),
                "{path} must not be reserved"
            );
        }
    }
}
