//! Secret values: bytes that can be used but never shown.
//!
//! Owns: the one type every credential, master key and decrypted vault value lives in.
//! Must never: implement `Debug`, `Display`, `Serialize` or `Clone` — a secret cannot be
//! printed, logged or copied by accident; its memory is zeroed when it is dropped.

use std::io::Read;

use zeroize::Zeroizing;

/// A secret value. Use [`Secret::expose`] at the one place that needs the bytes (sealing,
/// injecting into a request, registering with the scrubber).
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Reads a secret from `reader` to its end (stdin in the CLI: never argv). One
    /// trailing newline (`\n` or `\r\n`) is dropped, as `echo` and editors add one.
    pub fn read_from(mut reader: impl Read) -> std::io::Result<Self> {
        let mut buf = Zeroizing::new(Vec::with_capacity(256));
        reader.read_to_end(&mut buf)?;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        Ok(Self(buf))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Keeps this process's memory out of core dumps for the rest of its life, for every
/// command that holds the master key or a credential in memory: a crash, a watchdog's
/// SIGABRT or an operator's `kill -QUIT` would otherwise write them in the clear
/// wherever `core_pattern` says. Not dumpable (`PR_SET_DUMPABLE` 0: the kernel writes
/// no core and pipes none to a `core_pattern` handler, whatever `fs.suid_dumpable`
/// says; a process of the same uid without `CAP_SYS_PTRACE` can no longer attach to it
/// or read its `/proc/<pid>/mem` and `environ`) and a core limit of 0, soft and hard (a
/// rotator tool it starts inherits the limit). A change of this process's credentials
/// (its effective uid, its capabilities) would set the dumpable flag to
/// `fs.suid_dumpable` again; hb changes none after this. Call before any secret is read.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on this process; `zero` is a valid rlimit.
    unsafe {
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setrlimit(libc::RLIMIT_CORE, &raw const zero) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_from_drops_one_trailing_newline() {
        let s = Secret::read_from(&b"abc\r\n"[..]).expect("read");
        assert_eq!(s.expose(), b"abc");
        let s = Secret::read_from(&b"abc\n\n"[..]).expect("read");
        assert_eq!(s.expose(), b"abc\n");
        let s = Secret::read_from(&b""[..]).expect("read");
        assert!(s.is_empty());
    }
}
