//! [`SecretKey`]: the key secrets are sealed with at rest, ChaCha20-Poly1305 (ring's AEAD,
//! the crypto library the TLS stack already brings), in a key file of its own (0600) or from
//! the environment.
//!
//! A sealed value is `nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`, with a random nonce
//! per value and the value's context (service, name, release) as associated data, so a
//! value copied to another name or service in the store does not open.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use paz_core::secret::{CipherError, SecretCipher};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::Error;

const KEY_LEN: usize = 32;

/// The secrets key. Its `Debug` never shows the key.
pub struct SecretKey {
    key: LessSafeKey,
    random: SystemRandom,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// A key from 64 hex digits (e.g. the `PAZ_SECRET_KEY` environment variable).
    pub fn from_hex(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        let bytes: Option<Vec<u8>> = (text.len() == KEY_LEN * 2)
            .then(|| {
                (0..text.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
                    .collect()
            })
            .flatten();
        let bytes = bytes.ok_or_else(|| {
            Error::SecretKey("a secret key must be 64 hex digits (32 bytes)".into())
        })?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| Error::SecretKey("a secret key must be 32 bytes".into()))?;
        Ok(SecretKey {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        })
    }

    /// The key in the file at `path` (64 hex digits), created with a random key (mode 0600)
    /// when missing. A file others can read is refused.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        let io = |e: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    return Err(Error::SecretKey(format!(
                        "the secret key file {0} can be read by other users (mode {mode:04o}); restrict it with `chmod 600 {0}`",
                        path.display()
                    )));
                }
                let text = std::fs::read_to_string(path).map_err(io)?;
                Self::from_hex(&text).map_err(|_| {
                    Error::SecretKey(format!(
                        "{} does not hold a secret key (64 hex digits)",
                        path.display()
                    ))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let random = SystemRandom::new();
                let mut bytes = [0u8; KEY_LEN];
                random
                    .fill(&mut bytes)
                    .map_err(|_| Error::SecretKey("no random bytes for a new key".into()))?;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(format!("{hex}\n").as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                tracing::info!(path = %path.display(), "generated the secrets key (mode 0600); back it up with the store");
                Self::from_bytes(&bytes)
            }
            Err(e) => Err(io(e)),
        }
    }
}

impl SecretCipher for SecretKey {
    fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| CipherError("no random bytes for a nonce".into()))?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| CipherError("sealing failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CipherError> {
        if sealed.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(CipherError("the sealed value is truncated".into()));
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| CipherError("bad nonce".into()))?;
        let mut buffer = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| {
                CipherError(
                    "it does not open with this server's secret key (another key, or damaged)"
                        .into(),
                )
            })?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_under_the_same_key_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret-key");
        let key = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = key.seal("web/A/2", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_ne!(
            sealed,
            key.seal("web/A/2", b"hunter2").unwrap(),
            "fresh nonces"
        );
        assert_eq!(key.open("web/A/2", &sealed).unwrap(), b"hunter2");
        assert!(key.open("web/B/2", &sealed).is_err(), "another context");
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(
            again.open("web/A/2", &sealed).unwrap(),
            b"hunter2",
            "the same key"
        );
        let other = SecretKey::from_hex(&"ab".repeat(32)).unwrap();
        assert!(other.open("web/A/2", &sealed).is_err(), "another key");
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(key.open("web/A/2", &flipped).is_err(), "tampered");
        assert!(key.open("web/A/2", &sealed[..10]).is_err(), "truncated");
        assert!(!format!("{key:?}").contains(&std::fs::read_to_string(&path).unwrap()));
    }

    #[test]
    fn bad_keys_and_readable_files_are_refused_clearly() {
        assert!(SecretKey::from_hex("abc").is_err());
        assert!(SecretKey::from_hex(&"zz".repeat(32)).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret-key");
        std::fs::write(&path, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretKey::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        assert!(
            SecretKey::load_or_create(&path)
                .unwrap_err()
                .to_string()
                .contains("64 hex")
        );
    }
}
