//! Recovery codes: ten single-use codes a user gets with their first second factor, for the
//! day their authenticator is lost. Each is 10 characters from a 31-letter alphabet without
//! look-alikes (0/o, 1/l/i), about 49.5 bits: shown once as `xxxxx-xxxxx`, typed in any case,
//! with or without spaces and the dash. The store keeps an HMAC of each (`Store::use_recovery_code`
//! deletes the one used). Never logged.

/// Codes issued at a time.
pub const COUNT: usize = 10;
/// Characters in a code (without the dash).
const LEN: usize = 10;
/// Digits and lower-case letters that cannot be mistaken for each other.
const ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";

/// [`COUNT`] new random codes, formatted to be read out (`xxxxx-xxxxx`).
pub fn generate() -> Vec<String> {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..COUNT)
        .map(|_| {
            let chars: String = (0..LEN)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect();
            format!("{}-{}", &chars[..LEN / 2], &chars[LEN / 2..])
        })
        .collect()
}

/// `codes` as [`generate`] shows them, in the form the store keeps (see [`normalise`]).
pub fn stored_form(codes: &[String]) -> Vec<String> {
    codes.iter().filter_map(|c| normalise(c)).collect()
}

/// The code as stored and compared (lower case, no spaces or dashes), if `input` has the
/// shape of a recovery code; `None` for anything else (a TOTP code, a typo of length).
pub fn normalise(input: &str) -> Option<String> {
    if input.len() > 32 {
        return None;
    }
    let code: String = input
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (code.len() == LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_readable_and_read_back_in_any_spelling() {
        let codes = generate();
        assert_eq!(codes.len(), COUNT);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), COUNT);
        for code in &codes {
            assert_eq!(code.len(), LEN + 1);
            let plain = normalise(code).expect("its own shape");
            assert_eq!(normalise(&code.to_uppercase()).as_deref(), Some(&*plain));
            assert_eq!(normalise(&code.replace('-', " ")).as_deref(), Some(&*plain));
            assert!(!plain.contains(['0', 'o', '1', 'l', 'i']));
        }
    }

    #[test]
    fn other_input_is_not_a_recovery_code() {
        for input in [
            "123456",
            "123 456",
            "",
            "abcde-abcd",
            "abcde-abcdef",
            "abcde-abcd0",
            "ab\u{e9}de-abcde",
        ] {
            assert_eq!(normalise(input), None, "{input:?}");
        }
        assert_eq!(normalise(&"a".repeat(1000)), None);
        assert_eq!(normalise("ABCDE abcde").as_deref(), Some("abcdeabcde"));
    }
}
