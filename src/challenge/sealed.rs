//! Sealing what gaitkeeper hands to the browser to bring back (a passkey ceremony's state, a
//! withheld login answer): XChaCha20-Poly1305 under a key derived from `secrets.key`, so any
//! instance opens what another sealed, with associated data binding it to what it is for. The
//! text form is URL-safe base64 (fits a form field or a cookie).

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Sha256;

const NONCE: usize = 24;

/// Seals and opens values for one purpose (one derived key).
pub struct Sealer(XChaCha20Poly1305);

impl Sealer {
    /// The sealer of `purpose` (an HKDF info string) under `secret`.
    pub fn derive(secret: &[u8], purpose: &[u8]) -> Sealer {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"gaitkeeper sealed for the browser"), secret);
        let mut key = [0u8; 32];
        hkdf.expand(purpose, &mut key)
            .expect("32 bytes is a valid HKDF length");
        Sealer(XChaCha20Poly1305::new(&key.into()))
    }

    /// `plain` sealed and bound to `aad`, as URL-safe base64.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(&nonce, Payload { msg: plain, aad })
            .expect("encrypting a bounded buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
    }

    /// What `sealed` holds, when this sealer sealed it for `aad` and it is at most
    /// `max_text` characters; `None` for anything else (another key or binding, damaged).
    pub fn open(&self, aad: &[u8], sealed: &str, max_text: usize) -> Option<Vec<u8>> {
        if sealed.len() > max_text {
            return None;
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed.trim())
            .ok()?;
        if bytes.len() <= NONCE {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_sealed_opens_only_with_its_key_binding_and_in_one_piece() {
        let a = Sealer::derive(b"secret", b"purpose/v1");
        let sealed = a.seal(b"binding", b"the value");
        assert_eq!(
            a.open(b"binding", &sealed, 1024).as_deref(),
            Some(&b"the value"[..])
        );
        assert_eq!(a.open(b"other", &sealed, 1024), None);
        assert_eq!(a.open(b"binding", &sealed, 10), None, "too long");
        assert_eq!(
            Sealer::derive(b"secret", b"another/v1").open(b"binding", &sealed, 1024),
            None
        );
        assert_eq!(
            Sealer::derive(b"other secret", b"purpose/v1").open(b"binding", &sealed, 1024),
            None
        );
        let mut damaged = sealed.clone().into_bytes();
        let last = damaged.len() - 2;
        damaged[last] = if damaged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            a.open(b"binding", std::str::from_utf8(&damaged).unwrap(), 1024),
            None
        );
        for junk in ["", "!!!", "AAAA", "✗"] {
            assert_eq!(a.open(b"binding", junk, 1024), None, "{junk}");
        }
    }
}
