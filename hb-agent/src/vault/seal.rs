//! Sealing: AES-256-GCM under the master key, a fresh random 96-bit nonce per value.
//!
//! Owns: the AEAD key, nonce generation, the associated data that binds a sealed value to
//! its row, and the key check value. Must never: reuse a nonce on purpose (every seal draws
//! a new one from the system RNG), return bytes whose tag did not verify, or leave a plain
//! value anywhere but in a [`Secret`] or a zeroized buffer.

use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use zeroize::Zeroizing;

use super::MasterKey;
use crate::secret::Secret;

/// The GCM tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// The key check value's associated data and plaintext. Opening it proves the master key
/// is the one the vault was created under, before any credential is touched; its AAD
/// cannot collide with a credential's (those start with a different label).
const KEY_CHECK_AAD: &[u8] = b"hb-vault/v1/key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"hb vault master key check";

/// A value as stored: its nonce, and its ciphertext with the tag appended.
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    pub ciphertext: Vec<u8>,
}

/// The tag did not verify: wrong key, or nonce, ciphertext or associated data changed.
#[derive(Debug)]
pub struct OpenFailed;

/// The system RNG failed (ring reports nothing more).
#[derive(Debug)]
pub struct RandomFailed;

pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    pub fn new(master: &MasterKey) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, master.bytes())
            .expect("MasterKey always holds exactly 32 bytes, AES-256's key length");
        Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    pub fn random(&self, buf: &mut [u8]) -> Result<(), RandomFailed> {
        self.rng.fill(buf).map_err(|_| RandomFailed)
    }

    /// Seals `plaintext` with a fresh nonce, binding it to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Sealed, RandomFailed> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random(&mut nonce)?;
        // Room for the tag up front, so appending it never reallocates and leaves a plain
        // copy behind in freed memory; the buffer is zeroed if sealing fails.
        let mut buf = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        buf.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *buf,
            )
            .map_err(|_| RandomFailed)?;
        // Ciphertext from here on: no need to zero it.
        let ciphertext = std::mem::take(&mut *buf);
        Ok(Sealed { nonce, ciphertext })
    }

    /// Opens a sealed value; any change to key, nonce, ciphertext or `aad` fails.
    pub fn open(&self, aad: &[u8], nonce: &[u8], ciphertext: &[u8]) -> Result<Secret, OpenFailed> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenFailed)?;
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| OpenFailed)?
            .len();
        buf.truncate(len);
        // Moving the Vec keeps its heap buffer; Secret zeroes it (tag bytes included) on drop.
        Ok(Secret::new(std::mem::take(&mut *buf)))
    }

    /// A new key check value, stored once when the vault is created.
    pub fn seal_key_check(&self) -> Result<Sealed, RandomFailed> {
        self.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)
    }

    /// Whether a stored key check value opens under this key.
    pub fn key_check_opens(&self, nonce: &[u8], ciphertext: &[u8]) -> bool {
        self.open(KEY_CHECK_AAD, nonce, ciphertext)
            .is_ok_and(|s| s.expose() == KEY_CHECK_PLAINTEXT)
    }
}

/// The associated data of a credential's value: its id, integration and account, each
/// length-prefixed so no two different rows can produce the same bytes. A value copied
/// to another row, or a row moved to another integration or account, no longer opens.
pub fn credential_aad(id: &str, integration: &str, account: &str) -> Vec<u8> {
    let mut aad = b"hb-vault/v1/credential".to_vec();
    for field in [id, integration, account] {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        aad.extend_from_slice(&len.to_be_bytes());
        aad.extend_from_slice(field.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn sealer(byte: u8) -> Sealer {
        Sealer::new(&MasterKey::from_bytes([byte; 32]))
    }

    #[test]
    fn seal_then_open_gives_the_value_back() {
        let s = sealer(7);
        let aad = credential_aad("cred_1", "github", "ci");
        for value in [&b""[..], b"x", b"ghp_0123456789abcdef", &[0u8; 4096][..]] {
            let sealed = s.seal(&aad, value).expect("seal");
            assert_eq!(sealed.ciphertext.len(), value.len() + TAG_LEN);
            let opened = s
                .open(&aad, &sealed.nonce, &sealed.ciphertext)
                .expect("open");
            assert_eq!(opened.expose(), value);
        }
    }

    #[test]
    fn a_value_opens_only_with_its_own_row_binding() {
        let s = sealer(7);
        let sealed = s
            .seal(&credential_aad("cred_1", "github", "ci"), b"token")
            .expect("seal");
        for (id, integration, account) in [
            ("cred_2", "github", "ci"),
            ("cred_1", "gitlab", "ci"),
            ("cred_1", "github", "prod"),
            // Shifting bytes between fields must not give the same associated data.
            ("cred_1g", "ithub", "ci"),
            ("cred_1", "githubc", "i"),
        ] {
            assert!(
                s.open(
                    &credential_aad(id, integration, account),
                    &sealed.nonce,
                    &sealed.ciphertext
                )
                .is_err(),
                "opened under ({id}, {integration}, {account})"
            );
        }
    }

    #[test]
    fn any_changed_byte_or_another_key_fails_to_open() {
        let s = sealer(7);
        let aad = credential_aad("cred_1", "github", "ci");
        let sealed = s.seal(&aad, b"token-value").expect("seal");
        for i in 0..sealed.ciphertext.len() {
            let mut c = sealed.ciphertext.clone();
            c[i] ^= 0x01;
            assert!(s.open(&aad, &sealed.nonce, &c).is_err(), "byte {i} flipped");
        }
        for i in 0..NONCE_LEN {
            let mut n = sealed.nonce;
            n[i] ^= 0x80;
            assert!(s.open(&aad, &n, &sealed.ciphertext).is_err(), "nonce {i}");
        }
        assert!(
            s.open(&aad, &sealed.nonce[..11], &sealed.ciphertext)
                .is_err()
        );
        assert!(
            sealer(8)
                .open(&aad, &sealed.nonce, &sealed.ciphertext)
                .is_err()
        );
    }

    #[test]
    fn every_seal_draws_a_new_nonce() {
        let s = sealer(7);
        let aad = credential_aad("cred_1", "github", "ci");
        let mut nonces = HashSet::new();
        let mut ciphertexts = HashSet::new();
        for _ in 0..10_000 {
            let sealed = s.seal(&aad, b"same value every time").expect("seal");
            assert!(nonces.insert(sealed.nonce), "nonce repeated");
            assert!(ciphertexts.insert(sealed.ciphertext), "ciphertext repeated");
        }
    }

    #[test]
    fn key_check_tells_keys_apart() {
        let kcv = sealer(1).seal_key_check().expect("seal");
        assert!(sealer(1).key_check_opens(&kcv.nonce, &kcv.ciphertext));
        assert!(!sealer(2).key_check_opens(&kcv.nonce, &kcv.ciphertext));
        // A credential sealed with the key-check plaintext is not a key check value.
        let s = sealer(1);
        let fake = s
            .seal(&credential_aad("x", "y", "z"), KEY_CHECK_PLAINTEXT)
            .expect("seal");
        assert!(!s.key_check_opens(&fake.nonce, &fake.ciphertext));
    }
}
