//! The store's cryptography: user keys (HMAC-SHA256 of the login name) and sealed TOTP secrets
//! (XChaCha20-Poly1305). Both keys are derived from `secrets.key` with HKDF-SHA256, each under
//! its own label, so neither reveals the other or the page-token key.
//!
//! Never logs, prints or stores a login name, a derived key or an unsealed secret.

use std::fmt;

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A user as the store knows them: the HMAC-SHA256 of their login name. Without the server
/// key it cannot be turned back into a name, nor checked against a guessed one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey(pub(crate) [u8; 32]);

impl UserKey {
    /// The key from its 64 hex digits (as `users list` prints it).
    pub fn from_hex(text: &str) -> Option<UserKey> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(UserKey(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Option<UserKey> {
        Some(UserKey(bytes.try_into().ok()?))
    }
}

impl fmt::Display for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserKey({})", &hex::encode(self.0)[..12])
    }
}

/// Keys derived from the server secret.
pub(crate) struct StoreKeys {
    user: Hmac<Sha256>,
    totp: XChaCha20Poly1305,
    recovery: Hmac<Sha256>,
}

impl StoreKeys {
    pub(crate) fn derive(secret: &[u8]) -> StoreKeys {
        let hkdf = Hkdf::<Sha256>::new(Some(b"gaitkeeper store"), secret);
        let mut user = [0u8; 32];
        let mut totp = [0u8; 32];
        hkdf.expand(b"gaitkeeper/store/user-key/v1", &mut user)
            .expect("32 bytes is a valid HKDF length");
        hkdf.expand(b"gaitkeeper/store/totp-seal/v1", &mut totp)
            .expect("32 bytes is a valid HKDF length");
        let mut recovery = [0u8; 32];
        hkdf.expand(b"gaitkeeper/store/recovery-code/v1", &mut recovery)
            .expect("32 bytes is a valid HKDF length");
        StoreKeys {
            user: <Hmac<Sha256> as Mac>::new_from_slice(&user).expect("HMAC takes any key length"),
            totp: XChaCha20Poly1305::new(&totp.into()),
            recovery: <Hmac<Sha256> as Mac>::new_from_slice(&recovery)
                .expect("HMAC takes any key length"),
        }
    }

    /// What is kept of a recovery code: its HMAC, bound to the user (the same code of another
    /// user is another hash).
    pub(crate) fn recovery_hash(&self, user: &UserKey, code: &str) -> [u8; 32] {
        let mut mac = self.recovery.clone();
        mac.update(&user.0);
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub(crate) fn user_key(&self, login: &str) -> UserKey {
        let mut mac = self.user.clone();
        mac.update(b"login:");
        mac.update(login.as_bytes());
        UserKey(mac.finalize().into_bytes().into())
    }

    /// A value that identifies the key without revealing it: stored once, compared at every
    /// open, so a changed `secrets.key` is caught before it silently splits every profile.
    pub(crate) fn check_value(&self) -> [u8; 32] {
        let mut mac = self.user.clone();
        mac.update(b"key-check");
        mac.finalize().into_bytes().into()
    }

    /// Seals a TOTP secret for one user: (nonce, ciphertext with tag).
    pub(crate) fn seal(&self, user: &UserKey, secret: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .totp
            .encrypt(
                &nonce,
                Payload {
                    msg: secret,
                    aad: &user.0,
                },
            )
            .expect("encrypting a small buffer cannot fail");
        (nonce.to_vec(), sealed)
    }

    pub(crate) fn unseal(&self, user: &UserKey, nonce: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if nonce.len() != 24 {
            return None;
        }
        self.totp
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &user.0,
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_keys_depend_on_name_and_secret() {
        let a = StoreKeys::derive(b"0123456789abcdef0123456789abcdef");
        let b = StoreKeys::derive(b"0123456789abcdef0123456789abcdeX");
        assert_eq!(a.user_key("alice"), a.user_key("alice"));
        assert_ne!(a.user_key("alice"), a.user_key("Alice"));
        assert_ne!(a.user_key("alice"), b.user_key("alice"));
        let key = a.user_key("alice");
        assert_eq!(UserKey::from_hex(&key.to_string()), Some(key));
    }

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key() {
        let keys = StoreKeys::derive(b"0123456789abcdef0123456789abcdef");
        let other = StoreKeys::derive(b"0123456789abcdef0123456789abcdeX");
        let alice = keys.user_key("alice");
        let bob = keys.user_key("bob");
        let (nonce, sealed) = keys.seal(&alice, b"twenty byte secret!!");
        assert!(!sealed
            .windows(8)
            .any(|w| b"twenty byte secret!!".windows(8).any(|s| s == w)));
        assert_eq!(
            keys.unseal(&alice, &nonce, &sealed).as_deref(),
            Some(&b"twenty byte secret!!"[..])
        );
        assert_eq!(keys.unseal(&bob, &nonce, &sealed), None);
        assert_eq!(other.unseal(&alice, &nonce, &sealed), None);
    }
}
