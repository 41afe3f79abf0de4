//! The stored form of a [`FeatureVector`]: a compact little-endian encoding, versioned by
//! [`FEATURE_VERSION`] (carried next to the bytes in [`FeatureBlob`]).
//!
//! Layout: format byte, number of named features, the named values (`f64`, bit-exact so `NaN`
//! survives), a flags byte (bit 0: the password was typed clean), the password's dwell count
//! and press-to-press count, then those values. Decoding checks every length against the
//! bounds extraction obeys and never panics: bytes of another version, another format or any
//! corruption decode to `None`, and the login is then simply not learnt from.

use super::{FeatureVector, PasswordRhythm, FEATURE_VERSION, MAX_PASSWORD, N, V1_NAMED};

/// A login's features in their stored form: the bytes of [`to_blob`] and the feature version
/// they were extracted with. Opaque to everything but this module.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureBlob {
    pub version: u32,
    pub bytes: Vec<u8>,
}

/// Bumped if the byte layout changes while the features keep their meaning.
const FORMAT: u8 = 1;

/// Encodes a login's features for the store.
pub fn to_blob(fv: &FeatureVector) -> FeatureBlob {
    let pw = &fv.password;
    // Extraction never produces more; clip anything else rather than write what cannot be read.
    let dwell = &pw.dwell[..pw.dwell.len().min(MAX_PASSWORD)];
    let press = &pw.press_press[..pw.press_press.len().min(MAX_PASSWORD)];
    let mut bytes = Vec::with_capacity(5 + 8 * (N + dwell.len() + press.len()));
    bytes.push(FORMAT);
    bytes.push(N as u8);
    for v in &fv.values {
        bytes.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    bytes.push(u8::from(pw.clean));
    bytes.push(dwell.len() as u8);
    bytes.push(press.len() as u8);
    for v in dwell.iter().chain(press) {
        bytes.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    FeatureBlob {
        version: fv.version,
        bytes,
    }
}

/// Decodes a stored login's features (version 1 is upgraded: see [`V1_NAMED`]); `None` for
/// another feature version or bytes that are not a vector of their version.
pub fn from_blob(blob: &FeatureBlob) -> Option<FeatureVector> {
    let named = match blob.version {
        FEATURE_VERSION => N,
        1 => V1_NAMED,
        _ => return None,
    };
    let mut r = Reader(&blob.bytes);
    if r.byte()? != FORMAT || usize::from(r.byte()?) != named {
        return None;
    }
    let mut fv = FeatureVector::empty();
    for v in &mut fv.values[..named] {
        *v = r.f64()?;
    }
    let flags = r.byte()?;
    if flags > 1 {
        return None;
    }
    let (dwell, press) = (usize::from(r.byte()?), usize::from(r.byte()?));
    if dwell > MAX_PASSWORD || press > MAX_PASSWORD {
        return None;
    }
    let mut read = |n: usize| (0..n).map(|_| r.f64()).collect::<Option<Vec<f64>>>();
    let dwell = read(dwell)?;
    let press_press = read(press)?;
    if !r.0.is_empty() {
        return None;
    }
    fv.password = PasswordRhythm {
        press_press,
        dwell,
        clean: flags == 1,
    };
    Some(fv)
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn f64(&mut self) -> Option<f64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(f64::from_bits(u64::from_le_bytes(*head)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::NAMES;
    use proptest::prelude::*;

    fn sample() -> FeatureVector {
        let mut fv = FeatureVector::empty();
        for (i, v) in fv.values.iter_mut().enumerate() {
            if i % 3 != 0 {
                *v = i as f64 * 1.25 - 7.0;
            }
        }
        fv.password = PasswordRhythm {
            press_press: vec![120.0, f64::NAN, 95.5],
            dwell: vec![80.0, 81.0, f64::NAN, 79.0],
            clean: true,
        };
        fv
    }

    /// Equality that treats NaN as equal to NaN, bit for bit.
    fn same(a: &FeatureVector, b: &FeatureVector) -> bool {
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        a.version == b.version
            && bits(&a.values) == bits(&b.values)
            && bits(&a.password.dwell) == bits(&b.password.dwell)
            && bits(&a.password.press_press) == bits(&b.password.press_press)
            && a.password.clean == b.password.clean
    }

    #[test]
    fn round_trip_keeps_every_value_and_nan() {
        let fv = sample();
        let blob = to_blob(&fv);
        assert_eq!(blob.version, FEATURE_VERSION);
        let back = from_blob(&blob).expect("decodes");
        assert!(same(&fv, &back));
        assert!(back.values[0].is_nan() && back.password.dwell[2].is_nan());
        // Compact: a header and the numbers, nothing else.
        assert_eq!(blob.bytes.len(), 5 + 8 * (N + 7));
    }

    #[test]
    fn empty_vector_round_trips() {
        let fv = FeatureVector::empty();
        assert!(same(&fv, &from_blob(&to_blob(&fv)).unwrap()));
    }

    #[test]
    fn another_version_or_format_is_none() {
        let mut blob = to_blob(&sample());
        blob.version = FEATURE_VERSION + 1;
        assert_eq!(from_blob(&blob), None);
        let mut blob = to_blob(&sample());
        blob.bytes[0] = FORMAT + 1;
        assert_eq!(from_blob(&blob), None);
    }

    #[test]
    fn a_version_1_login_reads_as_version_2_with_the_appended_features_unknown() {
        // Version 1 ended with `untrusted_events`; everything after it was appended.
        assert_eq!(NAMES[V1_NAMED - 1], "untrusted_events");
        let fv = sample();
        let mut bytes = vec![FORMAT, V1_NAMED as u8];
        for v in &fv.values[..V1_NAMED] {
            bytes.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        bytes.extend_from_slice(&to_blob(&fv).bytes[2 + 8 * N..]);
        let old = FeatureBlob { version: 1, bytes };
        let back = from_blob(&old).expect("a version-1 login decodes");
        assert_eq!(back.version, FEATURE_VERSION);
        let mut expected = fv.clone();
        expected.values[V1_NAMED..].fill(f64::NAN);
        assert!(same(&expected, &back));
        // A version-1 record must have version 1's length, and today's bytes are not version 1.
        let mut wrong = to_blob(&fv);
        wrong.version = 1;
        assert_eq!(from_blob(&wrong), None);
    }

    #[test]
    fn truncated_or_padded_bytes_are_none() {
        let blob = to_blob(&sample());
        for cut in 0..blob.bytes.len() {
            let short = FeatureBlob {
                version: blob.version,
                bytes: blob.bytes[..cut].to_vec(),
            };
            assert_eq!(from_blob(&short), None, "cut at {cut}");
        }
        let mut long = blob.clone();
        long.bytes.push(0);
        assert_eq!(from_blob(&long), None);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            let _ = from_blob(&FeatureBlob { version: FEATURE_VERSION, bytes });
        }

        #[test]
        fn arbitrary_vectors_round_trip(
            values in proptest::collection::vec(any::<f64>(), N),
            dwell in proptest::collection::vec(any::<f64>(), 0..=MAX_PASSWORD),
            clean in any::<bool>(),
        ) {
            let mut fv = FeatureVector::empty();
            fv.values.copy_from_slice(&values);
            fv.password = PasswordRhythm {
                press_press: dwell.iter().skip(1).map(|v| v * 2.0).collect(),
                dwell,
                clean,
            };
            let back = from_blob(&to_blob(&fv)).expect("decodes");
            prop_assert!(same(&fv, &back));
        }
    }
}
