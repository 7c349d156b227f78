//! The master key file (`agent.master_key_file`): 32 raw random bytes, mode 0600.
//!
//! Owns: creating the file and loading it with its checks (a regular file owned by root
//! or the user hb runs as, no access for group or others, exactly 32 bytes). Must never:
//! print the key, write it anywhere but its own new file, or accept a file others could
//! have read.

use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::{Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::Path,
};

use ring::rand::{SecureRandom as _, SystemRandom};
use zeroize::Zeroizing;

use super::VaultError;
use crate::secret::Secret;

/// AES-256's key length.
pub const MASTER_KEY_LEN: usize = 32;

/// The vault's master key. Only [`super::seal::Sealer`] sees its bytes.
pub struct MasterKey(Secret);

impl MasterKey {
    /// Loads the key from `path`, refusing a file that group or others may access (a
    /// Kubernetes Secret volume needs `defaultMode: 0400`) or that is not 32 bytes.
    pub fn load(path: &Path) -> Result<Self, VaultError> {
        let read_err = |source| VaultError::KeyRead {
            path: path.to_owned(),
            source,
        };
        // The checks use the opened file's own metadata (symlinks followed, as Kubernetes
        // Secret volumes use them), so nothing can swap the file between check and read.
        let file = File::open(path).map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(VaultError::KeyNotFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(VaultError::KeyMode {
                path: path.to_owned(),
                mode,
            });
        }
        // Its owner can read it whatever its mode says (and chmod it back after).
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(VaultError::KeyOwner {
                path: path.to_owned(),
                owner: meta.uid(),
                euid,
            });
        }
        if meta.len() != MASTER_KEY_LEN as u64 {
            return Err(VaultError::KeyLength {
                path: path.to_owned(),
                found: meta.len(),
            });
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(MASTER_KEY_LEN + 1));
        file.take(MASTER_KEY_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(read_err)?;
        if buf.len() != MASTER_KEY_LEN {
            return Err(VaultError::KeyLength {
                path: path.to_owned(),
                found: buf.len() as u64,
            });
        }
        Ok(Self(Secret::new(std::mem::take(&mut *buf))))
    }

    /// Creates `path` with 32 fresh random bytes and mode 0600, and its parent folder
    /// with mode 0700 when missing. Refuses to replace an existing file: every credential
    /// sealed under the old key would become unreadable.
    pub fn generate_file(path: &Path) -> Result<Self, VaultError> {
        let write_err = |source| VaultError::KeyWrite {
            path: path.to_owned(),
            source,
        };
        if path.symlink_metadata().is_ok() {
            return Err(VaultError::KeyExists {
                path: path.to_owned(),
            });
        }
        let mut key = Zeroizing::new(vec![0u8; MASTER_KEY_LEN]);
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| VaultError::Random)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(write_err)?;
        }
        // create_new: never follows or replaces whatever appeared at `path` meanwhile.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    VaultError::KeyExists {
                        path: path.to_owned(),
                    }
                } else {
                    write_err(e)
                }
            })?;
        if let Err(e) = file.write_all(&key).and_then(|()| file.sync_all()) {
            let _ = std::fs::remove_file(path);
            return Err(write_err(e));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The new directory entry survives a crash too.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(write_err)?;
        }
        Ok(Self(Secret::new(std::mem::take(&mut *key))))
    }

    pub(super) fn bytes(&self) -> &[u8] {
        self.0.expose()
    }

    #[cfg(test)]
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> Self {
        Self(Secret::new(bytes.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use super::*;
    use crate::vault::tests::TempDir;

    #[test]
    fn generated_file_is_0600_in_a_0700_folder_and_loads() {
        let dir = TempDir::new();
        let path = dir.path().join("keys/sub/master.key");
        let generated = MasterKey::generate_file(&path).expect("generate");
        let meta = fs::metadata(&path).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let parent = fs::metadata(dir.path().join("keys/sub")).expect("stat");
        assert_eq!(parent.permissions().mode() & 0o777, 0o700);
        let loaded = MasterKey::load(&path).expect("load");
        assert_eq!(loaded.bytes(), generated.bytes());
        assert_ne!(generated.bytes(), &[0u8; 32][..]);
    }

    #[test]
    fn existing_file_is_never_overwritten() {
        let dir = TempDir::new();
        let path = dir.path().join("master.key");
        MasterKey::generate_file(&path).expect("generate");
        let before = fs::read(&path).expect("read");
        let err = MasterKey::generate_file(&path).err().expect("refused");
        assert!(matches!(err, VaultError::KeyExists { .. }), "{err}");
        assert_eq!(fs::read(&path).expect("read"), before);
    }

    #[test]
    fn loose_mode_and_wrong_length_are_refused() {
        let dir = TempDir::new();
        let path = dir.path().join("master.key");
        MasterKey::generate_file(&path).expect("generate");
        for mode in [0o640, 0o604, 0o644, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let err = MasterKey::load(&path).err().expect("refused");
            assert!(
                matches!(err, VaultError::KeyMode { mode: m, .. } if m == mode),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
        MasterKey::load(&path).expect("0400 is fine");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        for len in [0, 31, 33, 65] {
            fs::write(&path, vec![1u8; len]).expect("write");
            let err = MasterKey::load(&path).err().expect("refused");
            assert!(
                matches!(err, VaultError::KeyLength { found, .. } if found == len as u64),
                "{err}"
            );
        }
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::chown(&path, Some(65534), None).expect("chown");
            let err = MasterKey::load(&path).err().expect("refused");
            assert!(
                matches!(err, VaultError::KeyOwner { owner: 65534, .. }),
                "{err}"
            );
            std::os::unix::fs::chown(&path, Some(0), None).expect("chown back");
        }
        let err = MasterKey::load(&dir.path().join("missing.key"))
            .err()
            .expect("refused");
        assert!(matches!(err, VaultError::KeyRead { .. }), "{err}");
    }
}
