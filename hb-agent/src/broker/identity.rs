//! Who is calling: the connecting process, pinned by the kernel at accept → its cgroup →
//! enrolled sandbox → policy.
//!
//! The socket's file mode is only a first gate. When the broker accepts a connection it
//! asks the kernel for the peer: SO_PEERCRED (the pid and uid of the process that called
//! connect(), recorded then) and SO_PEERPIDFD, a pidfd for that very process. A pid is a
//! number that can be reused once its process is reaped; a pidfd is a reference to one
//! process that never moves to another. From the pidfd: `PIDFD_GET_INFO` (Linux 6.13)
//! gives the process's cgroup id, read by the kernel without any race; its cgroup path
//! comes from `/proc/<pid>/cgroup`, whose id must be that same id, and after the read the
//! pidfd must still say the process is alive (a live process's pid cannot have been
//! reused, so `/proc/<pid>` was that process). The cgroup (or its nearest enrolled
//! ancestor, the same walk the eBPF programs do) is looked up in the pinned
//! `HB_ENROLLED` map. So a caller has exactly the policy the kernel enforces on its
//! sockets, as of the moment its connection was accepted, and keeps it for the
//! connection's life (`server` binds it to the connection). Callers in no enrolled
//! cgroup are *host* callers; a host caller's cgroup is looked up again at each of its
//! requests, and once it is enrolled the connection is refused (the caller reconnects
//! and is identified as the sandbox it now is).
//!
//! Must never: guess, or look a caller up later by its pid. A peer that has exited (a
//! zombie included), a kernel without SO_PEERPIDFD, an unreadable cgroup or a cgroup
//! that disagrees with the pidfd's is an unknown caller, and its connection is refused.

use std::{
    collections::HashMap,
    fs, io,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use hb_common::{Enrollment, map_names};

use crate::maps::{MapsError, open_typed};

/// How far up the hierarchy enrollment is inherited (as in the eBPF programs).
const MAX_LEVELS: usize = 16;

/// `SO_PEERPIDFD` (Linux 6.5), asm-generic/socket.h: the value on x86_64, arm64 and
/// the other architectures that use the generic socket options.
const SO_PEERPIDFD: libc::c_int = 77;

/// `PIDFD_GET_INFO` (Linux 6.13), linux/pidfd.h: `_IOWR(0xFF, 11, struct pidfd_info)`
/// for the first published struct (64 bytes), which later kernels still accept.
const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | (64 << 16) | (0xFF << 8) | 11;
/// In `pidfd_info.mask`: the cgroup id field is filled in.
const PIDFD_INFO_CGROUPID: u64 = 1 << 2;

/// `struct pidfd_info` as of Linux 6.13 (`PIDFD_INFO_SIZE_VER0`).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}
const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the socket has no peer credentials")]
    NoPeer(#[source] io::Error),
    #[error(
        "the kernel gives no pidfd for the peer (SO_PEERPIDFD needs Linux 6.5): callers cannot be identified safely"
    )]
    NoPidfd(#[source] io::Error),
    #[error("the connecting process {pid} has already exited")]
    Gone { pid: i32 },
    #[error("cannot read the cgroup of process {pid}")]
    Cgroup {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error(
        "process {pid} is in cgroup {kernel} by its pidfd but /proc says {path} (it moved while being identified)"
    )]
    Moved { pid: i32, kernel: u64, path: String },
}

/// Why [`Identity::kill_sandbox`] killed nothing.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// Not a cgroup hb may kill (the fixed word says why).
    #[error("refused: {0}")]
    Refused(&'static str),
    #[error("cgroup.kill failed")]
    Failed(#[source] io::Error),
}

impl KillError {
    /// A short, stable name for records.
    pub fn class(&self) -> &'static str {
        match self {
            KillError::Refused(why) => why,
            KillError::Failed(_) => "kill_failed",
        }
    }
}

impl IdentityError {
    /// A short, stable name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            IdentityError::NoPeer(_) => "no_peer",
            IdentityError::NoPidfd(_) => "no_pidfd",
            IdentityError::Gone { .. } => "peer_gone",
            IdentityError::Cgroup { .. } => "cgroup_unreadable",
            IdentityError::Moved { .. } => "cgroup_moved",
        }
    }
}

/// A caller, as the broker authorizes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Caller {
    /// The connecting process (a number only for the record: the identity was taken
    /// through its pidfd, never looked up by this).
    pub pid: i32,
    /// Its uid when it connected (SO_PEERCRED).
    pub uid: u32,
    /// The caller's cgroup when its connection was accepted, relative to the cgroup2
    /// mount.
    pub cgroup: String,
    /// `None`: a host caller (in no enrolled cgroup).
    pub sandbox: Option<Sandbox>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Sandbox {
    /// The enrolled cgroup (the caller's own or the ancestor that carries enrollment).
    pub cgroup: String,
    pub cgroup_id: u64,
    pub policy: String,
}

impl Caller {
    /// Root, or the configured operator uid: may mint event-stream sessions.
    pub fn is_operator(&self, operator_uid: u32) -> bool {
        self.uid == 0 || self.uid == operator_uid
    }
}

/// The process at the other end of a Unix socket, as the kernel recorded it at connect.
struct PeerProcess {
    pid: i32,
    uid: u32,
    pidfd: OwnedFd,
}

fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// SO_PEERCRED and SO_PEERPIDFD of `sock`.
fn peer_of(sock: &impl AsRawFd) -> Result<PeerProcess, IdentityError> {
    let fd = sock.as_raw_fd();
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `cred`, which is that big.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(IdentityError::NoPeer(last_error()));
    }
    let pid = cred.pid;
    let mut raw: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: as above, into one c_int; on success the kernel made `raw` a new fd that
    // this process owns.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&raw mut raw).cast(),
            &mut len,
        )
    };
    if rc != 0 || raw < 0 {
        let e = last_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOPROTOOPT) => IdentityError::NoPidfd(e),
            // Kernels before 6.16 give no pidfd for a peer that is already reaped.
            Some(libc::ESRCH | libc::EINVAL) => IdentityError::Gone { pid },
            _ => IdentityError::NoPeer(e),
        });
    }
    // SAFETY: `raw` is a pidfd the kernel just opened for us; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(PeerProcess {
        pid,
        uid: cred.uid,
        pidfd,
    })
}

/// Whether the process behind `pidfd` is still running. A pidfd turns readable once
/// its process has exited (zombies included), and that never reverses.
fn alive(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd, no wait.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc == 0
}

/// The cgroup id of the process behind `pidfd`, read by the kernel (PIDFD_GET_INFO);
/// `None` on kernels before 6.13, which have only the liveness check.
fn kernel_cgroup(peer: &PeerProcess) -> Result<Option<u64>, IdentityError> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_CGROUPID,
        ..PidfdInfo::default()
    };
    // SAFETY: ioctl(2) PIDFD_GET_INFO reads and writes one `struct pidfd_info` of the
    // size encoded in the request, which is `info`'s.
    let rc = unsafe { libc::ioctl(peer.pidfd.as_raw_fd(), PIDFD_GET_INFO, &raw mut info) };
    if rc != 0 {
        let e = last_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Err(IdentityError::Gone { pid: peer.pid }),
            Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP) => Ok(None),
            _ => Err(IdentityError::Cgroup {
                pid: peer.pid,
                source: e,
            }),
        };
    }
    Ok((info.mask & PIDFD_INFO_CGROUPID != 0).then_some(info.cgroupid))
}

/// The cgroup v2 path of `pid` (the line `0::/path`), relative to the mount.
fn proc_cgroup(pid: i32) -> Result<String, IdentityError> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            IdentityError::Gone { pid }
        } else {
            IdentityError::Cgroup { pid, source }
        }
    })?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| IdentityError::Cgroup {
            pid,
            source: io::Error::other("no cgroup v2 entry"),
        })?
        .trim_start_matches('/')
        .to_owned())
}

pub struct Identity {
    mount: PathBuf,
    enrolled: BpfHashMap<MapData, u64, Enrollment>,
    policy_names: HashMap<u32, String>,
}

impl Identity {
    pub fn open(
        mount: &Path,
        bpffs_dir: &Path,
        policy_names: HashMap<u32, String>,
    ) -> Result<Self, MapsError> {
        Ok(Self {
            mount: mount.to_owned(),
            enrolled: open_typed(bpffs_dir, map_names::ENROLLED)?,
            policy_names,
        })
    }

    /// Identifies the process that connected `sock` (call at accept; see the module
    /// header for why each step is there).
    pub fn identify(&self, sock: &impl AsRawFd) -> Result<Caller, IdentityError> {
        let peer = peer_of(sock)?;
        let pid = peer.pid;
        let kernel = kernel_cgroup(&peer)?;
        let cgroup = proc_cgroup(pid)?;
        // Alive now, so alive while /proc/<pid> was read: that was this process.
        if !alive(&peer.pidfd) {
            return Err(IdentityError::Gone { pid });
        }
        if let Some(kernel) = kernel {
            let path_id = crate::cgroup::cgroup_id(&self.mount.join(&cgroup)).ok();
            if path_id != Some(kernel) {
                return Err(IdentityError::Moved {
                    pid,
                    kernel,
                    path: cgroup,
                });
            }
        }
        let sandbox = self.enrollment(&cgroup);
        Ok(Caller {
            pid,
            uid: peer.uid,
            cgroup,
            sandbox,
        })
    }

    /// Kills every process of an enrolled sandbox (`cgroup.kill`, Linux 5.14): the
    /// cgroup the caller was identified in at accept, by id, not by a pid. Refused for
    /// the cgroup root, for a cgroup that contains the agent itself, for a path that now
    /// names another cgroup (the sandbox ended and its name was reused: the directory
    /// opened must have the id the caller had), and for one no longer enrolled (the
    /// enrolled map must still hold that id). The write goes through the directory
    /// opened and checked, so the check and the kill are about the same cgroup.
    pub fn kill_sandbox(&self, sandbox: &Sandbox) -> Result<(), KillError> {
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let rel = sandbox.cgroup.trim_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
            return Err(KillError::Refused("cgroup_root"));
        }
        let own = proc_cgroup(i32::try_from(std::process::id()).unwrap_or(0))
            .map_err(|_| KillError::Refused("own_cgroup_unknown"))?;
        if own == rel || own.starts_with(&format!("{rel}/")) {
            return Err(KillError::Refused("contains_the_agent"));
        }
        let dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.mount.join(rel))
            .map_err(|_| KillError::Refused("gone"))?;
        if dir.metadata().map(|m| m.ino()).ok() != Some(sandbox.cgroup_id) {
            return Err(KillError::Refused("gone"));
        }
        if self.enrolled.get(&sandbox.cgroup_id, 0).is_err() {
            return Err(KillError::Refused("not_enrolled"));
        }
        let name = c"cgroup.kill";
        // SAFETY: openat(2) relative to a directory this function holds open, with a
        // NUL-terminated name; on success the kernel made a new fd that we own.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(KillError::Failed(last_error()));
        }
        // SAFETY: `fd` was just opened above and nothing else owns it.
        let mut kill = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        io::Write::write_all(&mut kill, b"1").map_err(KillError::Failed)
    }

    /// Whether a host caller's cgroup (as of its accept) has been enrolled since: the
    /// kernel judges that cgroup's sockets by its policy from then on, so the broker
    /// must stop serving the connection as a host caller's (it would keep root's or the
    /// operator uid's rights past the enrollment that took them away).
    pub fn enrolled_since_accept(&self, caller: &Caller) -> bool {
        caller.sandbox.is_none() && self.enrollment(&caller.cgroup).is_some()
    }

    /// The enrolled cgroup that governs `cgroup`, found as the kernel programs find it
    /// (`hb-ebpf`'s `policy::governing`): the cgroup itself if it is enrolled, else its
    /// deepest enrolled ancestor among the first [`MAX_LEVELS`] levels below the root —
    /// however deep `cgroup` itself lies, so a process that nests itself far below its
    /// sandbox is still that sandbox to the broker, as it is to the kernel.
    fn enrollment(&self, cgroup: &str) -> Option<Sandbox> {
        let rel = cgroup.trim_matches('/');
        if rel.is_empty() {
            return None;
        }
        if let Some(own) = self.enrolled_at(rel) {
            return Some(own);
        }
        ancestors_by_level(rel, MAX_LEVELS)
            .into_iter()
            .rev()
            .find_map(|ancestor| self.enrolled_at(ancestor))
    }

    /// The sandbox whose enrolled cgroup is `rel` (relative to the cgroup mount), if it
    /// is enrolled.
    fn enrolled_at(&self, rel: &str) -> Option<Sandbox> {
        let id = crate::cgroup::cgroup_id(&self.mount.join(rel)).ok()?;
        let e = self.enrolled.get(&id, 0).ok()?;
        let policy = self
            .policy_names
            .get(&e.policy_id)
            .cloned()
            .unwrap_or_else(|| format!("#{}", e.policy_id));
        Some(Sandbox {
            cgroup: rel.to_owned(),
            cgroup_id: id,
            policy,
        })
    }
}

/// The proper ancestors of the cgroup `rel` (a path below the root, no leading `/`) at
/// absolute levels 1 to `max_level`, shallowest first: `a/b/c` → `a`, `a/b`.
fn ancestors_by_level(rel: &str, max_level: usize) -> Vec<&str> {
    rel.match_indices('/')
        .take(max_level)
        .map(|(end, _)| &rel[..end])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_are_the_first_levels_below_the_root_at_any_depth() {
        assert_eq!(ancestors_by_level("a/b/c", MAX_LEVELS), ["a", "a/b"]);
        assert!(ancestors_by_level("a", MAX_LEVELS).is_empty());
        // 20 levels deep: the ancestors looked at are levels 1 to 16, as the kernel's.
        let deep: Vec<String> = (0..20).map(|i| format!("l{i}")).collect();
        let deep = deep.join("/");
        let got = ancestors_by_level(&deep, MAX_LEVELS);
        assert_eq!(got.len(), 16);
        assert_eq!(got[0], "l0");
        assert_eq!(got[15].split('/').count(), 16);
        let level16: Vec<String> = (0..16).map(|i| format!("l{i}")).collect();
        assert_eq!(got.last().copied(), Some(level16.join("/").as_str()));
    }
}
