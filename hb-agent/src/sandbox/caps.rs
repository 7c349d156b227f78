//! Capabilities and ids of a sandbox: every capability gone, for good, then the user.
//!
//! Owns: the order that makes the drop permanent. Securebits first (locked: no exec of a
//! root-owned or setuid file grants capabilities, a uid change neither keeps nor regains
//! them, no ambient raise), then the bounding set emptied (needs CAP_SETPCAP, so before
//! the others go), the ambient set cleared, the groups and ids switched (needs
//! CAP_SETUID/CAP_SETGID), and last the effective, permitted and inheritable sets
//! emptied with capset(2). A `--user 0` command is uid 0 with nothing more than any user:
//! it cannot mount, load programs, trace, or write files it does not own, and the
//! read-only mounts of [`super::mounts`] hold even for files it does own.
//! Must never: return Ok with any capability left in any set.

use std::io;

use super::User;

/// `_LINUX_CAPABILITY_VERSION_3` (include/uapi/linux/capability.h): two 32-bit words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The securebits a sandbox runs with, each with its lock bit.
const SECUREBITS: libc::c_int = libc::SECBIT_NOROOT
    | libc::SECBIT_NOROOT_LOCKED
    | libc::SECBIT_NO_SETUID_FIXUP
    | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
    | libc::SECBIT_KEEP_CAPS_LOCKED
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`),
/// read by the launcher before it forks; 63 (every bit) if it cannot be read, since
/// dropping an unknown capability is only an error the drop loop ends on.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Drops every capability for good and becomes `user` (see the module header).
///
/// # Safety
/// Called in the sandbox's init, single-threaded, before exec: prctl(2), setgroups(2),
/// setresgid(2), setresuid(2) and capset(2) with pointers to locals only.
pub unsafe fn drop_all(user: User, last_cap: u32) -> io::Result<()> {
    let check = |rc: libc::c_long| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: integer arguments, or pointers to locals that outlive each call.
    unsafe {
        check(libc::prctl(libc::PR_SET_SECUREBITS, SECUREBITS as libc::c_ulong).into())?;
        for cap in 0..=last_cap {
            if libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)) != 0 {
                // EINVAL: past the kernel's last capability; anything else is a failure.
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINVAL) {
                    break;
                }
                return Err(e);
            }
        }
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
            .into(),
        )?;
        check(libc::setgroups(0, std::ptr::null()).into())?;
        check(libc::setresgid(user.gid, user.gid, user.gid).into())?;
        check(libc::setresuid(user.uid, user.uid, user.uid).into())?;
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let none = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        check(libc::syscall(
            libc::SYS_capset,
            &raw mut header,
            none.as_ptr(),
        ))?;
    }
    Ok(())
}
