//! `hb-agent sandbox run`: run one command in a fresh, enrolled cgroup.
//!
//! The cgroup is created and enrolled *before* the command's process enters it (the child
//! moves itself in between fork and exec), so not one of its syscalls runs unenforced.
//! Afterwards anything left in the cgroup is killed, the cgroup removed, and only then is
//! the enrollment dropped.
//!
//! In the child, after the move and before exec ([`confine`]): a cgroup namespace rooted
//! at the sandbox cgroup, `no_new_privs` (no setuid or file-capability binary raises
//! what the command may do), then, with `--user`, the command's uid and gid (no
//! supplementary groups), and a seccomp filter that allows only the native system call
//! ABI (cgroup sockopt programs do not run for 32-bit calls). The namespace makes the kernel refuse moves out through
//! `cgroup.procs` only where cgroup2 is mounted with `nsdelegate` (systemd's pure-v2
//! default; not hybrid hosts), and root keeps CAP_SYS_ADMIN, which can enter another
//! namespace: a command that must not leave its cgroup runs with `--user`, whose uid
//! cannot write the root-owned `cgroup.procs` files.
//! Last, [`Scoping`]: a Landlock domain of its own whose scopes refuse connecting or
//! sending to abstract Unix sockets made outside it and signalling processes outside it
//! (see [`crate::scope`]: the cgroup hooks see only AF_INET/AF_INET6, and abstract names
//! are shared by every sandbox and the host). Not closed: pathname Unix sockets in
//! directories a sandbox can reach (e.g. /tmp), and SCM_RIGHTS over them, until
//! sandboxes get their own mount namespace (issue 12). Without Landlock ABI 6 (Linux
//! 6.12) the run is refused unless `--allow-unscoped`.
//! Must never: start the command when the programs are not attached or the policy is not
//! loaded — that would be a sandbox in name only.

use std::{
    ffi::OsString,
    fs, io,
    os::{
        fd::AsRawFd as _,
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::PathBuf,
    process::Command,
};

use hb_common::{ENROLL_LAUNCHER, Enrollment};

// Standalone until the sandbox module becomes a directory (issue 12's skeleton).
#[allow(dead_code)]
#[path = "sandbox/mounts.rs"]
pub mod mounts;
#[allow(dead_code)]
#[path = "sandbox/tenant.rs"]
pub mod tenant;

use crate::{
    agent::is_root,
    cgroup::{self, CgroupError},
    config::Config,
    loader,
    maps::{Maps, MapsError},
    scope::{ScopeError, Scoping},
};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("hb-agent sandbox run must run as root (it creates cgroups and writes pinned maps)")]
    NotRoot,
    #[error(
        "hb's programs are not attached (no pinned link {0}); start `hb-agent run` with the same config first"
    )]
    NotAttached(PathBuf),
    #[error("policy \"{name}\" is not loaded in the kernel; loaded policies: {loaded}")]
    UnknownPolicy { name: String, loaded: String },
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("cannot enroll sandbox cgroup {0}")]
    Enroll(PathBuf, #[source] aya::maps::MapError),
    #[error("cannot open {0}")]
    Procs(PathBuf, #[source] io::Error),
    #[error("cannot start {command:?}")]
    Spawn {
        command: OsString,
        #[source]
        source: io::Error,
    },
    #[error("no command given (usage: hb-agent sandbox run --policy NAME -- CMD ARGS…)")]
    NoCommand,
}

/// A sandbox cgroup that removes itself (and then its enrollment) when dropped.
struct SandboxCgroup<'m> {
    maps: &'m mut Maps,
    path: PathBuf,
    id: u64,
}

impl Drop for SandboxCgroup<'_> {
    fn drop(&mut self) {
        if let Err(e) = cgroup::remove(&self.path) {
            // The enrollment stays, so whatever survived stays enforced.
            eprintln!("hb-agent: {}", crate::error_chain(&e));
            return;
        }
        let _ = self.maps.enrolled.remove(&self.id);
        let _ = self.maps.bump_generation();
    }
}

/// The numeric user and group `--user` runs a command as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// `UID[:GID]`, numbers only (a name lookup is not safe between fork and exec).
pub fn parse_user(s: &str) -> Result<User, String> {
    let number = |part: &str, what: &str| {
        part.parse::<u32>().map_err(|_| {
            format!("{what} {part:?} is not a number (expected UID[:GID], e.g. 65534:65534)")
        })
    };
    let (uid, gid) = match s.split_once(':') {
        Some((u, g)) => (number(u, "uid")?, number(g, "gid")?),
        None => {
            let u = number(s, "uid")?;
            (u, u)
        }
    };
    Ok(User { uid, gid })
}

/// Runs `command` under `policy` (as `user`, if given) and returns the exit code to pass
/// on (128+N for a command killed by signal N). `allow_unscoped` runs it even on a kernel
/// without Landlock scopes (see [`crate::scope`]); otherwise such a kernel is an error.
pub fn run(
    config: &Config,
    policy: &str,
    user: Option<User>,
    allow_unscoped: bool,
    command: &[OsString],
) -> Result<i32, SandboxError> {
    let (program, args) = command.split_first().ok_or(SandboxError::NoCommand)?;
    if !is_root() {
        return Err(SandboxError::NotRoot);
    }
    let bpffs = &config.agent.bpffs_dir;
    for (name, pinned) in loader::pinned_links(bpffs, &loader::programs_for(config)) {
        if !pinned {
            return Err(SandboxError::NotAttached(
                bpffs.join(hb_common::pin_dirs::LINKS).join(name),
            ));
        }
    }
    let mut maps = Maps::open(bpffs)?;
    let loaded = maps.loaded_policies()?;
    let policy_id = loaded
        .iter()
        .find(|p| p.name == policy)
        .map(|p| p.id)
        .ok_or_else(|| SandboxError::UnknownPolicy {
            name: policy.to_owned(),
            loaded: loaded
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;

    // Before any cgroup exists: a kernel without scopes stops here with nothing to undo.
    let scoping = Scoping::prepare(allow_unscoped)?;
    let child_scope = scoping.for_child();

    let mount = cgroup::cgroup2_mount()?;
    let parent = format!("{}/sandboxes", config.cgroup_root());
    cgroup::create(&mount, &parent)?;
    let name = unique_name(policy);
    let path = mount.join(&parent).join(&name);
    fs::create_dir(&path).map_err(|source| CgroupError::Io {
        path: path.clone(),
        action: "mkdir",
        source,
    })?;
    let id = cgroup::cgroup_id(&path)?;
    // Leave the agent a note of which cgroup this id was, so events that arrive after the
    // sandbox (and its cgroup) are gone still name it. Best effort: no secret, no argv.
    cgroup::remember(&config.agent.state_dir, id, &format!("{parent}/{name}"));
    let enrollment = Enrollment {
        policy_id,
        flags: ENROLL_LAUNCHER,
    };
    if let Err(e) = maps.enrolled.insert(id, enrollment, 0) {
        let _ = fs::remove_dir(&path);
        return Err(SandboxError::Enroll(path, e));
    }
    let sandbox = SandboxCgroup {
        maps: &mut maps,
        path,
        id,
    };
    sandbox.maps.bump_generation()?;

    let procs_path = sandbox.path.join("cgroup.procs");
    let procs = fs::OpenOptions::new()
        .write(true)
        .open(&procs_path)
        .map_err(|e| SandboxError::Procs(procs_path.clone(), e))?;
    let procs_fd = procs.as_raw_fd();

    // SIGTERM and SIGHUP (a supervisor stopping the launcher, a closed terminal) go to
    // the child, so it can end its own way and the launcher still cleans up the cgroup.
    // Blocked before spawn and waited for by a thread. A child inherits its parent's
    // signal mask and ignored signals, and std's spawn keeps both, so `confine` gives
    // the command an empty mask and default dispositions itself.
    let forwarded = block_forwarded_signals();
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the closure only makes async-signal-safe syscalls (write, unshare, prctl,
    // landlock_restrict_self), on fds opened before fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // "0" moves the writing process itself (cgroup v2, cgroup.procs).
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
            confine(user)?;
            // Landlock scopes, after no_new_privs (set in `confine`) as the kernel requires.
            child_scope.enter()
        });
    }
    let mut child = cmd.spawn().map_err(|source| SandboxError::Spawn {
        command: program.clone(),
        source,
    })?;
    drop(procs);
    drop(scoping);
    if let Some(set) = forwarded {
        // A pidfd names this child even after it is reaped (a pid could be reused).
        // SAFETY: pidfd_open(2) on our own unreaped child; no pointers.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) };
        if let Ok(pidfd) = libc::c_int::try_from(pidfd)
            && pidfd >= 0
        {
            std::thread::spawn(move || forward_signals(set, pidfd));
        }
    }
    // The terminal's ^C and ^\ reach the child (same process group); the launcher stays
    // to clean up. Set after spawn: ignored signals would survive exec in the child.
    // SAFETY: plain signal disposition changes.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let status = child.wait().map_err(|source| SandboxError::Spawn {
        command: program.clone(),
        source,
    })?;
    drop(sandbox);
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Signals the launcher passes on to its child.
const FORWARDED: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGHUP];

/// Blocks [`FORWARDED`] in this (still single-threaded) process; None if that failed,
/// and then they keep their default action (the launcher ends, the child runs on in its
/// enrolled cgroup: still enforced, only the cleanup is lost).
fn block_forwarded_signals() -> Option<libc::sigset_t> {
    // SAFETY: sigset_t is plain data that sigemptyset initialises; pthread_sigmask
    // changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        (libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) == 0).then_some(set)
    }
}

/// Waits for the blocked signals in `set` and sends each to the child behind `pidfd`,
/// for as long as the launcher lives.
fn forward_signals(set: libc::sigset_t, pidfd: libc::c_int) {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and blocked in every thread (threads inherit the
        // mask of the thread that spawns them); sigwait writes only `sig`.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            return;
        }
        // SAFETY: pidfd_send_signal(2) on a pidfd this process owns; no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// Run in the child once it is in the sandbox cgroup: a cgroup namespace rooted there,
/// `no_new_privs`, the native-ABI seccomp filter, then `user`'s ids (see the module
/// header); in that order, as creating the namespace needs root and the filter needs
/// `no_new_privs`. Last, every signal back to its default action and an empty signal
/// mask: the command starts as any program expects to, and a forwarded SIGTERM ends it.
/// An error stops the exec: the command never runs less confined than asked.
///
/// # Safety
/// Called between fork and exec: it makes only async-signal-safe syscalls.
unsafe fn confine(user: Option<User>) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: unshare(2), prctl(2), setgroups(2) with no list, setgid(2), setuid(2):
    // integer arguments only.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWCGROUP))?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        native_syscalls_only()?;
        if let Some(User { uid, gid }) = user {
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
        }
        reset_signals()
    }
}

/// Default action for every signal that has one to set, then an empty mask (after the
/// dispositions, so no signal blocked until now runs a handler inherited from the
/// launcher).
///
/// # Safety
/// Called between fork and exec: sigaction(2) and sigprocmask(2) only.
unsafe fn reset_signals() -> io::Result<()> {
    // SAFETY: sigset_t and sigaction are plain data, initialised before use; the calls
    // take pointers to locals only.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        // 1..=64: every signal Linux has (_NSIG is 64), real-time ones included.
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            // Signals reserved by libc (32, 33 under glibc) refuse; that is fine.
            libc::sigaction(sig, &default, std::ptr::null_mut());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `AUDIT_ARCH_*` of the native system call ABI (include/uapi/linux/audit.h).
#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xc000_00b7;

/// Installs a seccomp filter that kills the command at its first system call made
/// through another ABI than the native one: the 32-bit entry (`int $0x80` or a 32-bit
/// binary on x86_64, AArch32 on arm64) and x32.
///
/// Why: the kernel runs cgroup sockopt programs only for native calls
/// (`do_sock_setsockopt(sock, in_compat_syscall(), …)` in net/socket.c skips them for
/// compat ones), so a 32-bit `setsockopt` would join multicast groups or set routing
/// headers past `hb_setsockopt`. The cost: 32-bit binaries do not run in a sandbox.
///
/// # Safety
/// Called between fork and exec: the filter lives on the stack, prctl(2) only.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
unsafe fn native_syscalls_only() -> io::Result<()> {
    // Classic BPF over `struct seccomp_data` { nr: u32 at 0, arch: u32 at 4, … }.
    const LD_ABS_W: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    /// `__X32_SYSCALL_BIT`: x32 calls arrive with the x86_64 arch and this bit in `nr`.
    const X32_BIT: u32 = 0x4000_0000;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let filter = [
        op(LD_ABS_W, 0, 0, 4),
        op(JEQ_K, 1, 0, NATIVE_ARCH),
        op(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        op(LD_ABS_W, 0, 0, 0),
        op(JGE_K, 0, 1, X32_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prog points at a filter that outlives the call; no_new_privs is set.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const prog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Other architectures: no filter (their compat ABIs, if any, are not handled).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn native_syscalls_only() -> io::Result<()> {
    Ok(())
}

fn unique_name(policy: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{policy}-{}-{nanos:08x}", std::process::id())
}
