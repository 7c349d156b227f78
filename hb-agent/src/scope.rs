//! Landlock scoping of a sandboxed command: what the cgroup programs cannot see.
//!
//! The connect/sendmsg hooks judge AF_INET and AF_INET6 only. Abstract Unix sockets
//! (`connect("\0name")`) belong to the network namespace, which every sandbox shares with
//! the host, so without this a sandbox reached host daemons listening on abstract names,
//! and two sandboxes passed sockets to each other with SCM_RIGHTS (the stricter one then
//! sent through the looser one's allowed connection). Landlock's scopes (ABI 6, Linux
//! 6.12) close that: after `landlock_restrict_self` the command, and everything it
//! starts, can neither connect nor send to an abstract Unix socket created outside its own
//! Landlock domain, nor signal a process outside it. Each `sandbox run` makes a domain of
//! its own, so two sandboxes are outside each other.
//!
//! What it does not close: pathname Unix sockets (a socket file in a directory both sides
//! can write, e.g. /tmp) remain reachable, and SCM_RIGHTS over them likewise, until
//! sandboxes get a mount namespace of their own (issue 12). Landlock's filesystem right
//! for connecting to pathname sockets (`LANDLOCK_ACCESS_FS_RESOLVE_UNIX`) arrives with
//! ABI 9 (Linux 7.1); this kernel line (6.18) has ABI 7, so it is not used here.
//! Descriptors the command inherits (its stdin/stdout/stderr) are not affected, and
//! processes outside the sandbox may still connect *into* its abstract sockets and
//! signal it (the launcher forwards SIGTERM that way).
//!
//! The ruleset is built in the launcher, with the `landlock` crate requiring every scope
//! (no best-effort downgrade), and the child only calls `landlock_restrict_self(2)` on its
//! descriptor between fork and exec: one syscall, no allocation. Must never: start the
//! command unscoped unless the operator asked for that (`--allow-unscoped`).

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
};

use landlock::{CompatLevel, Compatible as _, Ruleset, RulesetAttr as _, RulesetError, Scope};

/// The Landlock ABI that brought scopes (abstract Unix sockets and signals), Linux 6.12.
const SCOPES_ABI: i64 = 6;

/// Why the command could not be scoped.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error(
        "this kernel has no Landlock (landlock_create_ruleset: ENOSYS); sandbox run needs Landlock ABI {SCOPES_ABI} \
         (Linux 6.12) to scope abstract Unix sockets and signals: refusing to run the command unscoped \
         (--allow-unscoped runs it anyway, able to reach abstract Unix sockets and signal processes outside its sandbox)"
    )]
    NotImplemented,
    #[error(
        "Landlock is built into this kernel but not enabled (add landlock to the lsm= boot parameter); sandbox run \
         needs Landlock ABI {SCOPES_ABI} (Linux 6.12) to scope abstract Unix sockets and signals: refusing to run \
         the command unscoped (--allow-unscoped runs it anyway, able to reach abstract Unix sockets and signal \
         processes outside its sandbox)"
    )]
    NotEnabled,
    #[error(
        "this kernel's Landlock ABI is {0}, and scoping abstract Unix sockets and signals needs ABI {SCOPES_ABI} \
         (Linux 6.12): refusing to run the command unscoped (--allow-unscoped runs it anyway, able to reach \
         abstract Unix sockets and signal processes outside its sandbox)"
    )]
    TooOld(i64),
    #[error("cannot query the kernel's Landlock ABI")]
    Query(#[source] io::Error),
    #[error("cannot create the Landlock ruleset that scopes abstract Unix sockets and signals")]
    Ruleset(#[source] RulesetError),
}

/// The launcher's half: a created ruleset (scopes only, no file or network rules), or
/// nothing when the operator allowed an unscoped run on a kernel without scopes.
pub struct Scoping {
    ruleset: Option<OwnedFd>,
}

impl Scoping {
    /// Checks the kernel's Landlock ABI and builds the ruleset. Fails closed: without
    /// ABI 6 this is an error unless `allow_unscoped`, and then a warning on stderr.
    pub fn prepare(allow_unscoped: bool) -> Result<Self, ScopeError> {
        match landlock_abi().and_then(|abi| {
            if abi < SCOPES_ABI {
                Err(ScopeError::TooOld(abi))
            } else {
                Ok(abi)
            }
        }) {
            Ok(_) => {}
            Err(
                e @ (ScopeError::NotImplemented | ScopeError::NotEnabled | ScopeError::TooOld(_)),
            ) if allow_unscoped => {
                eprintln!(
                    "hb-agent: warning: running the command without Landlock scoping (--allow-unscoped): {e}"
                );
                return Ok(Self { ruleset: None });
            }
            Err(e) => return Err(e),
        }
        let created = Ruleset::default()
            // Every scope or an error: a silently dropped scope would be a hole.
            .set_compatibility(CompatLevel::HardRequirement)
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .and_then(Ruleset::create)
            .map_err(ScopeError::Ruleset)?;
        // The kernel opens a ruleset with O_CLOEXEC: the command never inherits it.
        let ruleset: Option<OwnedFd> = created.into();
        match ruleset {
            Some(fd) => Ok(Self { ruleset: Some(fd) }),
            // HardRequirement makes a ruleset or fails; an empty one would scope nothing.
            None => Err(ScopeError::TooOld(0)),
        }
    }

    /// What the child needs (a plain descriptor number, copied into the pre-exec
    /// closure); valid while `self` lives, i.e. until the spawn returns.
    pub fn for_child(&self) -> ChildScope {
        ChildScope(self.ruleset.as_ref().map(AsRawFd::as_raw_fd))
    }
}

/// The child's half of [`Scoping`].
#[derive(Clone, Copy)]
pub struct ChildScope(Option<RawFd>);

impl ChildScope {
    /// Puts the calling process in a new Landlock domain with the scopes. Needs
    /// `no_new_privs` set first (or CAP_SYS_ADMIN): the kernel's rule for unprivileged
    /// `landlock_restrict_self`. An error stops the exec.
    ///
    /// # Safety
    /// Called between fork and exec: one async-signal-safe syscall, no allocation.
    pub unsafe fn enter(self) -> io::Result<()> {
        let Some(fd) = self.0 else {
            return Ok(());
        };
        // SAFETY: landlock_restrict_self(2) with the ruleset descriptor the launcher opened
        // before fork and no flags: integer arguments only.
        let rc = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// The running kernel's Landlock ABI version (`LANDLOCK_CREATE_RULESET_VERSION`).
fn landlock_abi() -> Result<i64, ScopeError> {
    const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1 << 0;
    // SAFETY: landlock_create_ruleset(2) with a null attr, size 0 and the VERSION flag
    // only returns the ABI number; it reads no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v >= 0 {
        return Ok(v);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS) => Err(ScopeError::NotImplemented),
        Some(libc::EOPNOTSUPP) => Err(ScopeError::NotEnabled),
        _ => Err(ScopeError::Query(e)),
    }
}
