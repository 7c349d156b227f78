//! The sandbox's filesystem: what its private mount namespace shows the command.
//!
//! [`Layout::plan`] runs in the launcher, before any fork: it checks every path the
//! operator gave (a clear error names the one that is wrong), decides where each mount
//! point comes from, and turns the whole layout into a list of prepared steps whose
//! arguments are C strings already. [`Layout::enter`] runs those steps in the sandbox's
//! init — pid 1 of a fresh pid namespace, in a fresh mount namespace that still shares
//! propagation with the host, root with every capability — and makes system calls only:
//! it does not allocate (the init is a forked copy of the launcher).
//!
//! The layout, in the order `enter` makes it:
//! 1. propagation private, recursively: nothing mounted here reaches the host, and the
//!    host's later mounts do not appear here;
//! 2. the sources that later steps hide are cloned first (`open_tree(OPEN_TREE_CLONE)`,
//!    detached): the tenant's work dir (tenants live in state_dir, which is hidden), the
//!    `--ro-bind` sources, the broker socket and the few device nodes `/dev` keeps;
//! 3. the whole root read-only, nosuid and nodev, recursively (`mount_setattr`). A uid-0
//!    command owns the host's root-owned files, so without this it could write, chmod or
//!    chown them; with it (and no capabilities) it cannot, nor write any `cgroup.procs`;
//! 4. a fresh `/proc` for the sandbox's pid namespace (no host pid is visible), read-only;
//! 5. a fresh cgroup2 at the host's cgroup2 mount point, rooted at the sandbox's cgroup
//!    namespace, read-only: the command sees only its own cgroup;
//! 6. a fresh `/tmp` tmpfs (mode 1777, size-limited, nosuid, nodev);
//! 7. a minimal `/dev` like bubblewrap's: a read-only tmpfs holding null, zero, full,
//!    random, urandom and tty bound from the host, the fd/stdin/stdout/stderr links, a
//!    new devpts instance and a small `/dev/shm` — no block device, no host pty;
//! 8. a fresh `/run` (host daemons' sockets — docker, containerd, systemd — are gone);
//! 9. the hidden paths covered: a directory by an empty read-only tmpfs (one tmpfs bound
//!    on every directory that gets no mount point below it), a file by a
//!    device node that cannot be opened (state_dir with vault.db and the tenants, the
//!    master key file, the bpffs folder, host secrets a uid-0 command could read);
//! 10. the tenant's work dir read-write at its mount point, the `--ro-bind` pairs
//!     read-only, the broker socket (the sandbox's policy's own) at the main socket's
//!     configured path, or its folder at the main socket's folder when that holds only
//!     hb's sockets (under `/tmp` or `/run` its parents are created in the fresh
//!     tmpfs), then `/run` and the covers made read-only;
//! 11. the working directory: the work mount, else the launcher's if it exists here,
//!     else `/`; never a directory of the host's mount that a fresh mount now covers.
//!
//! Must never: leave a mount point the plan did not list, change a mount of the host's
//! namespace, or let a source that a later step hides be opened after it is hidden.

use std::{
    collections::BTreeSet,
    ffi::CString,
    fmt, fs, io,
    os::unix::{ffi::OsStrExt as _, fs::FileTypeExt as _},
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicI32, Ordering},
};

/// `open_tree(2)` flags (include/uapi/linux/mount.h; not in the libc crate for glibc).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
/// `move_mount(2)`: the source is the fd itself.
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
/// `mount_setattr(2)` attributes.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// `struct mount_attr` (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// The mounts made fresh inside the sandbox; what lies below them on the host is not
/// visible, so a hidden path there needs no cover and a mount point there is created.
const TMP: &str = "/tmp";
const RUN: &str = "/run";
const DEV: &str = "/dev";
const PROC: &str = "/proc";

/// Device nodes the sandbox's `/dev` keeps (bubblewrap's set), bound from the host's.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// Links in the sandbox's `/dev`: (name, target).
const DEV_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];
/// Size of the `/dev`, `/run` and cover tmpfs: they hold only mount points.
const SMALL_TMPFS: &str = "size=65536";

/// Host paths hidden in every sandbox besides the agent's own (state_dir, master key,
/// tenants, bpffs): a `--user 0` command owns root's 0600 files (password hashes, host
/// keys, a node's kubelet and container runtime state with other pods' service account
/// tokens), and the default uid (1000) is often a real user's. Absent ones are skipped.
/// A denylist over the host's root: what is not named here stays readable (read-only).
pub const HOST_PRIVATE: [&str; 22] = [
    "/root",
    "/home",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/gshadow-",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/pki/tls/private",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/krb5.keytab",
    "/etc/security/opasswd",
    "/var/backups",
    "/var/log",
    "/var/lib/cloud",
    "/var/lib/sss",
    "/var/lib/cni",
    "/etc/kubernetes",
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/var/lib/docker",
];

/// What the sandbox's filesystem is made of; every path absolute, on the host.
#[derive(Debug, Clone)]
pub struct LayoutPlan {
    /// Where the broker's socket is inside: `broker.socket`'s path (nothing is bound if
    /// no socket is there on the host: no agent runs).
    pub broker_socket: PathBuf,
    /// The socket bound there: the sandbox's policy's own (`broker.policy_sockets_dir`),
    /// so the main socket, whose backlog host callers and other tenants share, is not
    /// reachable inside; `broker_socket` itself if this one does not exist (an agent
    /// that serves no socket per policy).
    pub broker_socket_source: PathBuf,
    /// The main socket's folder holds nothing of the host's but hb's sockets: the
    /// source's folder is bound there instead of the socket file. An agent restart
    /// unlinks and binds the socket files again: a mount on a file follows the old,
    /// unlinked inode (or, on a path the sandbox sees of the host's, is detached by the
    /// unlink, showing the new main socket), a mount on the folder shows the new
    /// socket of the sandbox's policy.
    pub broker_folder: bool,
    /// Paths covered inside: directories by an empty read-only tmpfs, files by an
    /// unopenable node. Absent ones, and ones below a fresh mount, need nothing.
    pub hidden: Vec<PathBuf>,
    /// Size limit of the fresh `/tmp`.
    pub tmp_size_bytes: u64,
    /// Size limit of `/dev/shm`.
    pub shm_size_bytes: u64,
    /// The tenant's work dir on the host and where it appears inside (read-write).
    pub work: Option<(PathBuf, PathBuf)>,
    /// `--ro-bind SRC DEST` pairs, in order.
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    /// The host's cgroup2 mount point, where a fresh read-only cgroup2 rooted at the
    /// sandbox's cgroup namespace is mounted (None: the host's, read-only like the rest).
    pub cgroup2_mount: Option<PathBuf>,
    /// The init is in a user namespace of its own (a `--user 0` command): once the
    /// sources are cloned (with the host's root ids, which may traverse root's 0700
    /// folders), it becomes that namespace's root, the ids it can make files as.
    pub user_namespace: bool,
}

impl LayoutPlan {
    /// Docker's default `/dev/shm` size.
    pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;
}

/// Why a layout cannot be planned; each names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{what} {path:?} must be an absolute path without `..`")]
    NotAbsolute { what: &'static str, path: PathBuf },
    #[error("{what} {path:?} contains a NUL byte")]
    Nul { what: &'static str, path: PathBuf },
    #[error("{what} {path:?} cannot be used")]
    Host {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{what} {path:?} does not exist in the read-only root filesystem (create it on the host, \
         or choose a path under /tmp or /run, where mount points are created)"
    )]
    MissingMountPoint { what: &'static str, path: PathBuf },
    #[error("{what} {dest:?} is {dest_kind} but its source {source_path:?} is {source_kind}")]
    KindMismatch {
        what: &'static str,
        dest: PathBuf,
        dest_kind: &'static str,
        source_path: PathBuf,
        source_kind: &'static str,
    },
    #[error("{what} {path:?}: {reason}")]
    Refused {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// One mount as `--print-confinement` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MountEntry {
    /// Where it appears inside the sandbox.
    pub target: PathBuf,
    /// What it is ("tmpfs", "bind", "proc", …).
    pub kind: &'static str,
    /// The host path it shows, for binds.
    pub source: Option<PathBuf>,
    /// Mount flags and options, e.g. "ro,nosuid,nodev".
    pub flags: String,
}

impl fmt::Display for MountEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.target.display(),
            self.kind,
            self.flags
        )?;
        if let Some(s) = &self.source {
            write!(f, " from {}", s.display())?;
        }
        Ok(())
    }
}

/// A step of [`Layout::enter`] that failed, and its errno. Copy, so the init can report
/// it without allocating; [`Layout::explain`] names the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnterError {
    pub step: usize,
    pub errno: i32,
}

impl From<EnterError> for io::Error {
    fn from(e: EnterError) -> Self {
        io::Error::from_raw_os_error(e.errno)
    }
}

/// One prepared step of [`Layout::enter`]. Paths resolve in the sandbox's namespace (a
/// tree of another namespace cannot be cloned into it).
#[derive(Debug)]
enum Op {
    /// `mount(NULL, "/", NULL, MS_REC | MS_PRIVATE)`.
    PrivateRoot,
    /// `open_tree(path, OPEN_TREE_CLONE)` into `slot`, then `mount_setattr` on the clone.
    Clone {
        slot: usize,
        path: CString,
        recursive: bool,
        set: u64,
        clear: u64,
    },
    /// `setresgid`/`setresuid(0)` in the init's user namespace.
    BecomeNamespaceRoot,
    /// `mount_setattr("/", AT_RECURSIVE)`: read-only, nosuid, nodev.
    RootReadOnly,
    /// `umount2(target, MNT_DETACH)`: the host's mount (and its submounts), gone from
    /// this namespace only. `optional`: no mount there (or, in a user namespace, a locked
    /// one, which the fresh mount then covers) is fine.
    Detach {
        target: CString,
        optional: bool,
    },
    /// A fresh filesystem.
    Mount {
        fstype: CString,
        target: CString,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `MS_REMOUNT | MS_BIND` with exactly `flags` (the mount only, not its submounts).
    Remount {
        target: CString,
        flags: libc::c_ulong,
    },
    /// `mount(source, target, MS_BIND)` inside the sandbox's own tree.
    Bind {
        source: CString,
        target: CString,
    },
    Mkdir {
        path: CString,
        mode: libc::mode_t,
    },
    /// An empty file to mount a non-directory on.
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// `move_mount(slot, target)`.
    Attach {
        slot: usize,
        target: CString,
    },
    /// The first of `paths` that works (the last is "/").
    Chdir {
        paths: Vec<CString>,
    },
}

/// The prepared layout; [`Layout::enter`] applies it.
#[derive(Debug)]
pub struct Layout {
    ops: Vec<Op>,
    entries: Vec<MountEntry>,
    /// The detached clones' fds, filled and closed by `enter` (in the init's copy).
    slots: Box<[AtomicI32]>,
}

/// How a mount point comes to exist inside.
enum Place {
    /// In the read-only root: it must exist on the host.
    Root,
    /// Below a tmpfs this layout makes (its root): created there.
    Created(PathBuf),
    /// Below an earlier `--ro-bind`: it must exist in that source.
    InBind(PathBuf),
}

/// Builds the op list; the phases of [`Layout::plan`] are its methods.
struct Planner {
    ops: Vec<Op>,
    entries: Vec<MountEntry>,
    slots: usize,
    /// Covered directories (canonical), which take mount points below them.
    cover_dirs: Vec<PathBuf>,
    /// Covered files (canonical).
    cover_files: Vec<PathBuf>,
    /// The op mounting each covered directory's tmpfs, by index, for [`Planner::seal`].
    cover_ops: Vec<(usize, PathBuf)>,
    /// Every hidden path (canonical), those under a fresh mount too: no bind may show
    /// one.
    hidden_all: Vec<PathBuf>,
    /// Describing only (`--print-confinement`): nothing is created on the host, and a
    /// tenant dir not made yet or a path this user cannot resolve is no error.
    dry: bool,
    /// Directories and files already created inside (so each is made once).
    created: BTreeSet<PathBuf>,
    /// `--ro-bind` (dest, source) pairs already placed, canonical.
    binds: Vec<(PathBuf, PathBuf)>,
    work_target: Option<PathBuf>,
    cgroup2: Option<PathBuf>,
}

impl Layout {
    /// Checks `plan` and prepares every step. Runs in the launcher before any fork. A
    /// missing work mount point in the host's root is created there (an empty root-owned
    /// directory: the root is read-only inside, so it cannot be made there).
    pub fn plan(plan: &LayoutPlan) -> Result<Layout, MountError> {
        Self::build(plan, false)
    }

    /// The mounts `plan` would give, for `--print-confinement`: the same checks, but
    /// nothing is created (a tenant's work dir may not exist yet) and paths this user
    /// cannot resolve are shown as given.
    pub fn preview(plan: &LayoutPlan) -> Result<Vec<MountEntry>, MountError> {
        Ok(std::mem::take(&mut Self::build(plan, true)?.entries))
    }

    fn build(plan: &LayoutPlan, dry: bool) -> Result<Layout, MountError> {
        check_inputs(plan)?;
        let mut p = Planner {
            ops: vec![Op::PrivateRoot],
            entries: Vec::new(),
            slots: 0,
            cover_dirs: Vec::new(),
            cover_files: Vec::new(),
            cover_ops: Vec::new(),
            hidden_all: Vec::new(),
            dry,
            created: BTreeSet::new(),
            binds: Vec::new(),
            work_target: None,
            cgroup2: plan
                .cgroup2_mount
                .as_deref()
                .map(|c| resolve("cgroup2 mount", c))
                .transpose()?,
        };
        p.resolve_hidden(&plan.hidden)?;
        let sources = p.clone_sources(plan)?;
        if plan.user_namespace {
            p.ops.push(Op::BecomeNamespaceRoot);
        }
        p.ops.push(Op::RootReadOnly);
        p.entry("/", "host root (recursive)", None, "ro,nosuid,nodev");
        p.fresh_proc_and_cgroup()?;
        p.fresh_tmp(plan.tmp_size_bytes)?;
        p.fresh_dev(&sources.devices, plan.shm_size_bytes)?;
        p.fresh_run()?;
        p.covers()?;
        p.attach(plan, &sources)?;
        p.seal()?;
        p.chdir()?;
        if plan.user_namespace {
            // The host's mounts are locked to their parents in a user namespace and cannot
            // be taken away (EINVAL); the fresh mount goes on top and hides them as well
            // (the command can unmount nothing: no capability, and seccomp refuses umount2).
            for op in &mut p.ops {
                if let Op::Detach { optional, .. } = op {
                    *optional = true;
                }
            }
        }
        Ok(Layout {
            ops: p.ops,
            entries: p.entries,
            slots: (0..p.slots).map(|_| AtomicI32::new(-1)).collect(),
        })
    }

    /// The mounts the command will see, in the order they are made.
    #[cfg(test)]
    pub fn describe(&self) -> &[MountEntry] {
        &self.entries
    }

    /// Applies the layout. Called in the sandbox's init: pid 1 of a new pid namespace, in
    /// a new mount namespace (shared propagation is made private first), with
    /// `CAP_SYS_ADMIN`, after `unshare(CLONE_NEWCGROUP)`. On error the init must not run
    /// the command: the layout may be half made.
    ///
    /// # Safety
    /// Only system calls on prepared arguments; no allocation, no lock. Must run in a
    /// process whose mount namespace is its own (it changes every mount in it).
    pub unsafe fn enter(&self) -> Result<(), EnterError> {
        let result = self.ops.iter().enumerate().try_for_each(|(step, op)| {
            // SAFETY: the caller's contract; `run` makes system calls on prepared strings.
            unsafe { self.run(op) }.map_err(|errno| EnterError { step, errno })
        });
        self.close_slots();
        result
    }

    /// A readable description of a failed step, for the launcher's error message.
    #[cfg(test)]
    pub fn explain(&self, e: EnterError) -> String {
        format!(
            "{}: {}",
            self.explain_step(e.step),
            io::Error::from_raw_os_error(e.errno)
        )
    }

    /// What step `step` of [`Layout::enter`] does, e.g. "mounting tmpfs on /tmp".
    pub fn explain_step(&self, step: usize) -> String {
        match self.ops.get(step) {
            Some(op) => describe_op(op),
            None => format!("step {step}"),
        }
    }

    /// # Safety
    /// See [`Layout::enter`].
    unsafe fn run(&self, op: &Op) -> Result<(), i32> {
        // SAFETY: each call gets NUL-terminated strings that outlive it, fds this process
        // owns, or a `MountAttr` on the stack of the size the kernel is told.
        unsafe {
            match op {
                Op::PrivateRoot => check(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )),
                Op::Clone {
                    slot,
                    path,
                    recursive,
                    set,
                    clear,
                } => {
                    let rec = if *recursive { libc::AT_RECURSIVE } else { 0 };
                    let flags = OPEN_TREE_CLONE
                        | OPEN_TREE_CLOEXEC
                        | libc::AT_SYMLINK_NOFOLLOW as libc::c_uint
                        | rec as libc::c_uint;
                    let fd =
                        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags);
                    if fd < 0 {
                        return Err(errno());
                    }
                    let fd = fd as libc::c_int;
                    self.slots[*slot].store(fd, Ordering::Relaxed);
                    set_attr(fd, c"", libc::AT_EMPTY_PATH | rec, *set, *clear)
                }
                Op::BecomeNamespaceRoot => {
                    check(libc::setresgid(0, 0, 0))?;
                    check(libc::setresuid(0, 0, 0))
                }
                Op::RootReadOnly => set_attr(
                    libc::AT_FDCWD,
                    c"/",
                    libc::AT_RECURSIVE,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                    0,
                ),
                Op::Mount {
                    fstype,
                    target,
                    flags,
                    data,
                } => check(libc::mount(
                    fstype.as_ptr(),
                    target.as_ptr(),
                    fstype.as_ptr(),
                    *flags,
                    data.as_ref()
                        .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
                )),
                Op::Detach { target, optional } => {
                    match check(libc::umount2(target.as_ptr(), libc::MNT_DETACH)) {
                        Err(libc::EINVAL) if *optional => Ok(()),
                        other => other,
                    }
                }
                Op::Remount { target, flags } => check(libc::mount(
                    std::ptr::null(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_BIND | *flags,
                    std::ptr::null(),
                )),
                Op::Bind { source, target } => check(libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )),
                Op::Mkdir { path, mode } => {
                    if libc::mkdir(path.as_ptr(), *mode) == 0 {
                        // The mode as given, whatever the umask.
                        check(libc::chmod(path.as_ptr(), *mode))
                    } else if errno() == libc::EEXIST {
                        Ok(())
                    } else {
                        Err(errno())
                    }
                }
                Op::Touch { path } => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd < 0 {
                        return Err(errno());
                    }
                    libc::close(fd);
                    Ok(())
                }
                Op::Symlink { target, link } => {
                    check(libc::symlink(target.as_ptr(), link.as_ptr()))
                }
                Op::Attach { slot, target } => {
                    let fd = self.slots[*slot].load(Ordering::Relaxed);
                    let rc = libc::syscall(
                        libc::SYS_move_mount,
                        fd,
                        c"".as_ptr(),
                        libc::AT_FDCWD,
                        target.as_ptr(),
                        MOVE_MOUNT_F_EMPTY_PATH,
                    );
                    if rc < 0 { Err(errno()) } else { Ok(()) }
                }
                Op::Chdir { paths } => {
                    for p in paths {
                        if libc::chdir(p.as_ptr()) == 0 {
                            return Ok(());
                        }
                    }
                    Err(errno())
                }
            }
        }
    }

    /// Closes the clones' fds (attached or not: the mounts live on without them).
    fn close_slots(&self) {
        for slot in self.slots.iter() {
            let fd = slot.swap(-1, Ordering::Relaxed);
            if fd >= 0 {
                // SAFETY: an fd `enter` opened and nothing else holds.
                unsafe { libc::close(fd) };
            }
        }
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        self.close_slots();
    }
}

/// The sources cloned before anything is hidden: slots of the device nodes.
struct Sources {
    devices: Vec<(&'static str, usize)>,
    work: Option<usize>,
    binds: Vec<usize>,
    /// The broker socket's slot, its path inside and its source on the host: the
    /// socket files, or their folders ([`LayoutPlan::broker_folder`]).
    socket: Option<(usize, PathBuf, PathBuf)>,
    /// `socket` holds the folders.
    socket_folder: bool,
}

impl Planner {
    fn slot(&mut self) -> usize {
        self.slots += 1;
        self.slots - 1
    }

    fn entry(
        &mut self,
        target: impl Into<PathBuf>,
        kind: &'static str,
        source: Option<PathBuf>,
        flags: impl Into<String>,
    ) {
        self.entries.push(MountEntry {
            target: target.into(),
            kind,
            source,
            flags: flags.into(),
        });
    }

    /// The folders of the main `socket` and its `source` (both canonical) when the
    /// socket's folder may be covered whole by the source's: the source is a policy's
    /// socket, not the main one itself (bound over itself, the main folder would show
    /// the policies' folder, whose cover is dropped below, and every policy's socket
    /// bound there later), the plan says the folder holds nothing else of the host's,
    /// and it is neither `/`, nor hidden, nor at or above another mount point of the
    /// layout. The covers below it are dropped (the bind hides what they hid).
    fn socket_folders(
        &mut self,
        plan: &LayoutPlan,
        socket: &Path,
        source: &Path,
    ) -> Option<(PathBuf, PathBuf)> {
        let (folder, source_folder) = (socket.parent()?, source.parent()?);
        let mut others: Vec<PathBuf> = [TMP, RUN, DEV, PROC].map(PathBuf::from).to_vec();
        others.extend(self.cgroup2.clone());
        others.extend(plan.work.iter().map(|(_, dest)| dest.clone()));
        others.extend(plan.ro_binds.iter().map(|(_, dest)| dest.clone()));
        let fits = plan.broker_folder
            && source != socket
            && socket.file_name() == source.file_name()
            && folder != Path::new("/")
            && !under_any(folder, &self.hidden_all)
            && !others.iter().any(|o| {
                o.starts_with(folder)
                    || (folder.starts_with(o) && o != Path::new(TMP) && o != Path::new(RUN))
            });
        if !fits {
            return None;
        }
        self.cover_dirs.retain(|c| !c.starts_with(folder));
        self.cover_files.retain(|c| !c.starts_with(folder));
        Some((folder.to_owned(), source_folder.to_owned()))
    }

    /// Canonical hidden paths: absent ones and those below a fresh mount or another
    /// hidden directory dropped (nothing to cover), `/` refused.
    fn resolve_hidden(&mut self, hidden: &[PathBuf]) -> Result<(), MountError> {
        let mut found = Vec::new();
        for h in hidden {
            let meta = match fs::symlink_metadata(h) {
                Ok(_) => fs::metadata(h),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => Err(e),
            };
            let canonical = meta.and_then(|m| Ok((fs::canonicalize(h)?, m.is_dir())));
            let (path, is_dir) = match canonical {
                Ok(v) => v,
                // A dangling symlink: what it names does not exist, so nothing to cover.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) if self.dry => (h.clone(), true),
                Err(source) => {
                    return Err(MountError::Host {
                        what: "hidden path",
                        path: h.clone(),
                        source,
                    });
                }
            };
            if path == Path::new("/") {
                return Err(MountError::Refused {
                    what: "hidden path",
                    path: h.clone(),
                    reason: "hiding / would hide everything".into(),
                });
            }
            found.push((path, is_dir));
        }
        found.sort();
        found.dedup();
        self.hidden_all = found.iter().map(|(p, _)| p.clone()).collect();
        for (path, is_dir) in found {
            if self.fresh_root_of(&path).is_some() || under_any(&path, &self.cover_dirs) {
                continue;
            }
            if is_dir {
                self.cover_dirs.push(path);
            } else {
                self.cover_files.push(path);
            }
        }
        Ok(())
    }

    /// The fresh mount `path` lies in or at, if any.
    fn fresh_root_of(&self, path: &Path) -> Option<PathBuf> {
        [TMP, RUN, DEV, PROC]
            .iter()
            .map(PathBuf::from)
            .chain(self.cgroup2.clone())
            .find(|root| path.starts_with(root))
    }

    /// Phase 2: every source a later step hides, cloned while still visible.
    fn clone_sources(&mut self, plan: &LayoutPlan) -> Result<Sources, MountError> {
        let mut sources = Sources {
            devices: Vec::new(),
            work: None,
            binds: Vec::new(),
            socket: None,
            socket_folder: false,
        };
        if let Some((src, _)) = &plan.work {
            let src = match resolve("tenant work dir", src) {
                Err(_) if self.dry => src.clone(),
                other => other?,
            };
            match host_meta("tenant work dir", &src) {
                Ok(meta) if !meta.is_dir() => {
                    return Err(refused("tenant work dir", &src, "not a directory"));
                }
                Ok(_) => {}
                Err(_) if self.dry => {}
                Err(e) => return Err(e),
            }
            self.check_not_exposing("tenant work dir", &src)?;
            let slot = self.slot();
            self.ops.push(Op::Clone {
                slot,
                path: cstring("tenant work dir", &src)?,
                recursive: false,
                set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                clear: MOUNT_ATTR_RDONLY,
            });
            sources.work = Some(slot);
        }
        for (src, _) in &plan.ro_binds {
            let canonical = resolve("--ro-bind source", src)?;
            host_meta("--ro-bind source", &canonical)?;
            if canonical.starts_with(PROC) || canonical.starts_with(DEV) {
                return Err(refused(
                    "--ro-bind source",
                    src,
                    "host /proc and /dev are not bound into a sandbox",
                ));
            }
            self.check_not_exposing("--ro-bind source", &canonical)?;
            let slot = self.slot();
            self.ops.push(Op::Clone {
                slot,
                path: cstring("--ro-bind source", &canonical)?,
                recursive: true,
                set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                clear: 0,
            });
            sources.binds.push(slot);
        }
        match fs::canonicalize(&plan.broker_socket) {
            Ok(socket) => {
                let source = match fs::canonicalize(&plan.broker_socket_source) {
                    Ok(source) => source,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => socket.clone(),
                    Err(source) => {
                        return Err(MountError::Host {
                            what: "broker socket",
                            path: plan.broker_socket_source.clone(),
                            source,
                        });
                    }
                };
                for path in [&socket, &source] {
                    let meta = host_meta("broker socket", path)?;
                    if !meta.file_type().is_socket() {
                        return Err(refused("broker socket", path, "not a Unix socket"));
                    }
                }
                let (socket, source) = match self.socket_folders(plan, &socket, &source) {
                    Some(folders) => {
                        sources.socket_folder = true;
                        folders
                    }
                    None => (socket, source),
                };
                let slot = self.slot();
                // Read-only: a uid-0 command owns the root-owned socket inode, and could
                // chmod it on a writable mount. connect(2) needs no writable mount.
                self.ops.push(Op::Clone {
                    slot,
                    path: cstring("broker socket", &source)?,
                    recursive: false,
                    set: MOUNT_ATTR_RDONLY
                        | MOUNT_ATTR_NOSUID
                        | MOUNT_ATTR_NODEV
                        | MOUNT_ATTR_NOEXEC,
                    clear: 0,
                });
                sources.socket = Some((slot, socket, source));
            }
            // No agent has made it yet: the sandbox has no broker (it cannot make one).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) if self.dry => {}
            Err(source) => {
                return Err(MountError::Host {
                    what: "broker socket",
                    path: plan.broker_socket.clone(),
                    source,
                });
            }
        }
        for name in DEVICES {
            let path = Path::new(DEV).join(name);
            if !fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_char_device()) {
                continue;
            }
            let slot = self.slot();
            // Read-only: the host's nodes are root's, and a uid-0 command could chmod
            // them on a writable mount. Writing to a device needs no writable mount.
            self.ops.push(Op::Clone {
                slot,
                path: cstring("device", &path)?,
                recursive: false,
                set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
                clear: MOUNT_ATTR_NODEV,
            });
            sources.devices.push((name, slot));
        }
        Ok(sources)
    }

    /// A bound source must not contain a hidden path (it may lie in one: the tenant's
    /// work dir lies in state_dir, and a file the operator names there is their choice).
    fn check_not_exposing(&self, what: &'static str, src: &Path) -> Result<(), MountError> {
        for h in &self.hidden_all {
            if h.starts_with(src) {
                return Err(refused(
                    what,
                    src,
                    format!("it would show the hidden path {}", h.display()),
                ));
            }
        }
        Ok(())
    }

    /// Phases 4 and 5: `/proc` of the sandbox's pid namespace and cgroup2 of its cgroup
    /// namespace, both read-only.
    fn fresh_proc_and_cgroup(&mut self) -> Result<(), MountError> {
        let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // The host's mount (and what is mounted below it) leaves this namespace: nothing
        // of it stays underneath the fresh one.
        self.ops.push(Op::Detach {
            target: c"/proc".into(),
            optional: true,
        });
        self.ops.push(Op::Mount {
            fstype: c"proc".into(),
            target: c"/proc".into(),
            flags: hardened,
            data: None,
        });
        self.ops.push(Op::Remount {
            target: c"/proc".into(),
            flags: hardened | libc::MS_RDONLY,
        });
        self.entry(
            PROC,
            "proc (the sandbox's pid namespace)",
            None,
            "ro,nosuid,nodev,noexec",
        );
        if let Some(cg) = self.cgroup2.clone() {
            let target = cstring("cgroup2 mount", &cg)?;
            // The kernel refuses a second mount of one superblock on its own mount point
            // (EBUSY), and cgroup2 has one superblock for every namespace.
            self.ops.push(Op::Detach {
                target: target.clone(),
                optional: false,
            });
            self.ops.push(Op::Mount {
                fstype: c"cgroup2".into(),
                target: target.clone(),
                flags: hardened,
                data: None,
            });
            self.ops.push(Op::Remount {
                target,
                flags: hardened | libc::MS_RDONLY,
            });
            self.entry(
                cg,
                "cgroup2 (the sandbox's cgroup namespace)",
                None,
                "ro,nosuid,nodev,noexec",
            );
        }
        Ok(())
    }

    /// Phase 6.
    fn fresh_tmp(&mut self, size: u64) -> Result<(), MountError> {
        if size == 0 {
            return Err(refused(
                "tmp size",
                Path::new(TMP),
                "must be more than 0 (0 is unlimited to tmpfs)",
            ));
        }
        let data = format!("mode=1777,size={size}");
        // The host's mount (and what is mounted below it) leaves this namespace: nothing
        // of it stays underneath the fresh one.
        self.ops.push(Op::Detach {
            target: c"/tmp".into(),
            optional: true,
        });
        self.ops.push(Op::Mount {
            fstype: c"tmpfs".into(),
            target: c"/tmp".into(),
            flags: libc::MS_NOSUID | libc::MS_NODEV,
            data: Some(cstring_str(&data)),
        });
        self.entry(TMP, "tmpfs", None, format!("rw,nosuid,nodev,{data}"));
        Ok(())
    }

    /// Phase 7: the minimal `/dev`.
    fn fresh_dev(
        &mut self,
        devices: &[(&'static str, usize)],
        shm_size: u64,
    ) -> Result<(), MountError> {
        let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // The host's mount (and what is mounted below it) leaves this namespace: nothing
        // of it stays underneath the fresh one.
        self.ops.push(Op::Detach {
            target: c"/dev".into(),
            optional: true,
        });
        self.ops.push(Op::Mount {
            fstype: c"tmpfs".into(),
            target: c"/dev".into(),
            flags: hardened,
            data: Some(cstring_str(&format!("mode=0755,{SMALL_TMPFS}"))),
        });
        let mut names = Vec::new();
        for &(name, slot) in devices {
            let path = cstring_str(&format!("{DEV}/{name}"));
            self.ops.push(Op::Touch { path: path.clone() });
            self.ops.push(Op::Attach { slot, target: path });
            names.push(name);
        }
        for (name, target) in DEV_LINKS {
            self.ops.push(Op::Symlink {
                target: cstring_str(target),
                link: cstring_str(&format!("{DEV}/{name}")),
            });
        }
        self.ops.push(Op::Mkdir {
            path: c"/dev/pts".into(),
            mode: 0o755,
        });
        self.ops.push(Op::Mount {
            fstype: c"devpts".into(),
            target: c"/dev/pts".into(),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: Some(c"newinstance,ptmxmode=0666,mode=620".into()),
        });
        self.ops.push(Op::Mkdir {
            path: c"/dev/shm".into(),
            mode: 0o1777,
        });
        if shm_size == 0 {
            return Err(refused(
                "shm size",
                Path::new("/dev/shm"),
                "must be more than 0",
            ));
        }
        let shm = format!("mode=1777,size={shm_size}");
        self.ops.push(Op::Mount {
            fstype: c"tmpfs".into(),
            target: c"/dev/shm".into(),
            flags: hardened,
            data: Some(cstring_str(&shm)),
        });
        self.ops.push(Op::Remount {
            target: c"/dev".into(),
            flags: hardened | libc::MS_RDONLY,
        });
        self.entry(
            DEV,
            "tmpfs",
            None,
            format!(
                "ro,nosuid,nodev,noexec; nodes {}; links fd, stdin, stdout, stderr, ptmx",
                names.join(", ")
            ),
        );
        self.entry(
            "/dev/pts",
            "devpts (new instance)",
            None,
            "rw,nosuid,noexec",
        );
        self.entry(
            "/dev/shm",
            "tmpfs",
            None,
            format!("rw,nosuid,nodev,noexec,{shm}"),
        );
        Ok(())
    }

    /// Phase 8 (made read-only in [`Planner::seal`], after the socket is bound in).
    fn fresh_run(&mut self) -> Result<(), MountError> {
        // The host's mount (and what is mounted below it) leaves this namespace: nothing
        // of it stays underneath the fresh one.
        self.ops.push(Op::Detach {
            target: c"/run".into(),
            optional: true,
        });
        self.ops.push(Op::Mount {
            fstype: c"tmpfs".into(),
            target: c"/run".into(),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: Some(cstring_str(&format!("mode=0755,{SMALL_TMPFS}"))),
        });
        self.entry(RUN, "tmpfs", None, "ro,nosuid,nodev,noexec");
        Ok(())
    }

    /// Phase 9: each hidden directory under an empty tmpfs (read-only once mount points
    /// below it exist; [`Planner::seal`] turns those that get none into binds of one
    /// read-only tmpfs), each hidden file under the sandbox's `/dev/null` on a nodev mount,
    /// so opening it fails.
    fn covers(&mut self) -> Result<(), MountError> {
        for dir in self.cover_dirs.clone() {
            self.cover_ops.push((self.ops.len(), dir.clone()));
            self.ops.push(Op::Mount {
                fstype: c"tmpfs".into(),
                target: cstring("hidden path", &dir)?,
                flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data: Some(cstring_str(&format!("mode=0755,{SMALL_TMPFS}"))),
            });
            self.entry(dir, "hidden (empty tmpfs)", None, "ro,nosuid,nodev,noexec");
        }
        // The first file gets the node and its flags; a bind copies a mount's flags, so
        // the others are binds of the first (one system call each instead of two).
        let mut first: Option<CString> = None;
        for file in self.cover_files.clone() {
            let target = cstring("hidden path", &file)?;
            if let Some(source) = &first {
                self.ops.push(Op::Bind {
                    source: source.clone(),
                    target,
                });
            } else {
                self.ops.push(Op::Bind {
                    source: c"/dev/null".into(),
                    target: target.clone(),
                });
                self.ops.push(Op::Remount {
                    target: target.clone(),
                    flags: libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                });
                first = Some(target);
            }
            self.entry(
                file,
                "hidden (unopenable node)",
                None,
                "ro,nosuid,nodev,noexec",
            );
        }
        Ok(())
    }

    /// Phase 10: the work dir, the `--ro-bind` pairs and the broker socket at their mount
    /// points (created first where they lie in a tmpfs of this layout).
    fn attach(&mut self, plan: &LayoutPlan, sources: &Sources) -> Result<(), MountError> {
        if let (Some((src, target)), Some(slot)) = (&plan.work, sources.work) {
            let target = resolve("work mount point", target)?;
            let src = match resolve("tenant work dir", src) {
                Err(_) if self.dry => src.clone(),
                other => other?,
            };
            if self.fresh_root_of(&target).as_deref() == Some(target.as_path()) {
                return Err(refused(
                    "work mount point",
                    &target,
                    "it is a mount of the sandbox's own",
                ));
            }
            let c = self.mount_point("work mount point", &target, &src, true, true)?;
            self.ops.push(Op::Attach { slot, target: c });
            self.entry(
                target.clone(),
                "tenant work dir (bind)",
                Some(src),
                "rw,nosuid,nodev",
            );
            self.work_target = Some(target);
        }
        for ((src, dest), &slot) in plan.ro_binds.iter().zip(&sources.binds) {
            let src = resolve("--ro-bind source", src)?;
            let dest = resolve("--ro-bind destination", dest)?;
            if let Some(work) = &self.work_target
                && (dest.starts_with(work) || work.starts_with(&dest))
            {
                return Err(refused(
                    "--ro-bind destination",
                    &dest,
                    format!("it overlaps the work mount {}", work.display()),
                ));
            }
            let is_dir = host_meta("--ro-bind source", &src)?.is_dir();
            let c = self.mount_point("--ro-bind destination", &dest, &src, is_dir, false)?;
            self.ops.push(Op::Attach { slot, target: c });
            self.entry(dest.clone(), "bind", Some(src.clone()), "ro,nosuid,nodev");
            self.binds.push((dest, src));
        }
        if let Some((slot, socket, source)) = &sources.socket {
            let folder = sources.socket_folder;
            let c = self.mount_point("broker socket", socket, source, folder, false)?;
            self.ops.push(Op::Attach {
                slot: *slot,
                target: c,
            });
            self.entry(
                socket.clone(),
                if folder {
                    "broker socket folder (bind)"
                } else {
                    "broker socket (bind)"
                },
                Some(source.clone()),
                "ro,nosuid,nodev,noexec",
            );
        }
        Ok(())
    }

    /// Makes sure `target` (canonical) exists inside as a directory (`is_dir`) or a
    /// file like `source`: creating it below a tmpfs of this layout, checking it in an
    /// earlier bind's source or in the host's root otherwise (`create_on_host`: a missing
    /// directory there is made on the host, empty, root's, 0755, as the root is
    /// read-only inside).
    fn mount_point(
        &mut self,
        what: &'static str,
        target: &Path,
        source: &Path,
        is_dir: bool,
        create_on_host: bool,
    ) -> Result<CString, MountError> {
        if target == Path::new("/") {
            return Err(refused(what, target, "it would cover the whole root"));
        }
        let fresh = self.fresh_root_of(target);
        if fresh
            .as_deref()
            .is_some_and(|f| f != Path::new(TMP) && f != Path::new(RUN))
        {
            return Err(refused(
                what,
                target,
                "mount points under /dev, /proc and the cgroup filesystem are not supported",
            ));
        }
        if under_any(target, &self.cover_files) || self.cover_dirs.iter().any(|c| c == target) {
            return Err(refused(what, target, "it is a hidden path"));
        }
        let tmpfs = fresh.or_else(|| {
            self.cover_dirs
                .iter()
                .find(|c| target.starts_with(c))
                .cloned()
        });
        let place = match tmpfs {
            Some(root) if root != target => Place::Created(root),
            _ => match self
                .binds
                .iter()
                .rev()
                .find(|(d, _)| target.starts_with(d) && d != target)
            {
                Some((dest, src)) => {
                    Place::InBind(src.join(target.strip_prefix(dest).unwrap_or(target)))
                }
                None => Place::Root,
            },
        };
        let expect_kind = |host: &Path| -> Result<(), MountError> {
            let meta = match fs::symlink_metadata(host) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(MountError::MissingMountPoint {
                        what,
                        path: target.to_owned(),
                    });
                }
                Err(source) => {
                    return Err(MountError::Host {
                        what,
                        path: host.to_owned(),
                        source,
                    });
                }
            };
            if meta.is_dir() != is_dir {
                return Err(MountError::KindMismatch {
                    what,
                    dest: target.to_owned(),
                    dest_kind: kind_name(meta.is_dir()),
                    source_path: source.to_owned(),
                    source_kind: kind_name(is_dir),
                });
            }
            Ok(())
        };
        match place {
            Place::Created(root) => self.create_inside(&root, target, is_dir)?,
            Place::InBind(host) => expect_kind(&host)?,
            Place::Root if self.dry && create_on_host => {}
            Place::Root => {
                if create_on_host && is_dir && !target.exists() {
                    fs::create_dir(target).map_err(|source| MountError::Host {
                        what,
                        path: target.to_owned(),
                        source,
                    })?;
                }
                expect_kind(target)?;
            }
        }
        cstring(what, target)
    }

    /// `mkdir -p` of `target`'s parents below `root` (a tmpfs of this layout), then
    /// `target` itself, each once.
    fn create_inside(
        &mut self,
        root: &Path,
        target: &Path,
        is_dir: bool,
    ) -> Result<(), MountError> {
        let mut dirs: Vec<PathBuf> = target
            .ancestors()
            .skip(1)
            .take_while(|a| *a != root)
            .map(Path::to_owned)
            .collect();
        dirs.reverse();
        for dir in dirs {
            if self.created.insert(dir.clone()) {
                self.ops.push(Op::Mkdir {
                    path: cstring("mount point", &dir)?,
                    mode: 0o755,
                });
            }
        }
        if self.created.insert(target.to_owned()) {
            let path = cstring("mount point", target)?;
            self.ops.push(if is_dir {
                Op::Mkdir { path, mode: 0o755 }
            } else {
                Op::Touch { path }
            });
        }
        Ok(())
    }

    /// Read-only `/run` and covers, now that their mount points exist.
    ///
    /// A cover that got no mount point below it stays empty: the first such is mounted
    /// read-only at once and every other is a bind of it (which copies its read-only,
    /// nosuid, nodev and noexec), so the sandbox makes one tmpfs for them all instead of
    /// one each — each is a superblock to set up and, when the sandbox ends, to tear down.
    fn seal(&mut self) -> Result<(), MountError> {
        let sealed = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        self.ops.push(Op::Remount {
            target: c"/run".into(),
            flags: sealed,
        });
        let mut shared: Option<CString> = None;
        for (index, dir) in std::mem::take(&mut self.cover_ops) {
            let target = cstring("hidden path", &dir)?;
            if self.created.iter().any(|c| c.starts_with(&dir)) {
                self.ops.push(Op::Remount {
                    target,
                    flags: sealed,
                });
                continue;
            }
            match &shared {
                Some(source) => {
                    self.ops[index] = Op::Bind {
                        source: source.clone(),
                        target,
                    };
                }
                None => {
                    if let Op::Mount { flags, .. } = &mut self.ops[index] {
                        *flags |= libc::MS_RDONLY;
                    }
                    shared = Some(target);
                }
            }
        }
        Ok(())
    }

    /// Phase 11: the work mount, else the launcher's directory as seen from inside (a
    /// covered one fails), else `/`.
    fn chdir(&mut self) -> Result<(), MountError> {
        let mut paths = Vec::new();
        if let Some(w) = &self.work_target {
            paths.push(cstring("work mount point", w)?);
        } else if let Ok(cwd) = std::env::current_dir()
            && let Ok(c) = CString::new(cwd.as_os_str().as_bytes())
        {
            paths.push(c);
        }
        paths.push(c"/".into());
        self.ops.push(Op::Chdir { paths });
        Ok(())
    }
}

/// Every path of `plan` absolute, without `..`.
fn check_inputs(plan: &LayoutPlan) -> Result<(), MountError> {
    let mut all: Vec<(&'static str, &Path)> = vec![
        ("broker socket", &plan.broker_socket),
        ("broker socket", &plan.broker_socket_source),
    ];
    all.extend(plan.hidden.iter().map(|h| ("hidden path", h.as_path())));
    if let Some((src, dest)) = &plan.work {
        all.push(("tenant work dir", src));
        all.push(("work mount point", dest));
    }
    for (src, dest) in &plan.ro_binds {
        all.push(("--ro-bind source", src));
        all.push(("--ro-bind destination", dest));
    }
    if let Some(cg) = &plan.cgroup2_mount {
        all.push(("cgroup2 mount", cg));
    }
    for (what, p) in all {
        if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
            return Err(MountError::NotAbsolute {
                what,
                path: p.to_owned(),
            });
        }
        cstring(what, p)?;
    }
    Ok(())
}

/// `path` with its existing part resolved on the host (symlinks followed) and the rest
/// appended as given: where it lands inside, since the sandbox sees the host's tree.
fn resolve(what: &'static str, path: &Path) -> Result<PathBuf, MountError> {
    let mut rest = Vec::new();
    let mut existing = path;
    loop {
        match fs::canonicalize(existing) {
            Ok(mut resolved) => {
                resolved.extend(rest.iter().rev());
                return Ok(resolved);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match (existing.file_name(), existing.parent()) {
                    (Some(name), Some(parent)) => {
                        rest.push(name.to_owned());
                        existing = parent;
                    }
                    _ => {
                        return Err(MountError::Host {
                            what,
                            path: path.to_owned(),
                            source: e,
                        });
                    }
                }
            }
            Err(source) => {
                return Err(MountError::Host {
                    what,
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
}

fn host_meta(what: &'static str, path: &Path) -> Result<fs::Metadata, MountError> {
    fs::metadata(path).map_err(|source| MountError::Host {
        what,
        path: path.to_owned(),
        source,
    })
}

fn under_any(path: &Path, roots: &[PathBuf]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

fn kind_name(is_dir: bool) -> &'static str {
    if is_dir {
        "a directory"
    } else {
        "not a directory"
    }
}

fn refused(what: &'static str, path: &Path, reason: impl Into<String>) -> MountError {
    MountError::Refused {
        what,
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn cstring(what: &'static str, path: &Path) -> Result<CString, MountError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| MountError::Nul {
        what,
        path: path.to_owned(),
    })
}

/// A string this module wrote itself (no NUL in it).
fn cstring_str(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn describe_op(op: &Op) -> String {
    let s = |c: &CString| c.to_string_lossy().into_owned();
    match op {
        Op::PrivateRoot => "making mount propagation private".into(),
        Op::Clone { path, .. } => format!("cloning {}", s(path)),
        Op::BecomeNamespaceRoot => "becoming the user namespace's root".into(),
        Op::RootReadOnly => "making the root read-only".into(),
        Op::Mount { fstype, target, .. } => format!("mounting {} on {}", s(fstype), s(target)),
        Op::Remount { target, .. } => format!("remounting {}", s(target)),
        Op::Detach { target, .. } => format!("unmounting the host's {}", s(target)),
        Op::Bind { source, target } => format!("binding {} on {}", s(source), s(target)),
        Op::Mkdir { path, .. } => format!("creating directory {}", s(path)),
        Op::Touch { path } => format!("creating mount point {}", s(path)),
        Op::Symlink { link, .. } => format!("creating link {}", s(link)),
        Op::Attach { target, .. } => format!("mounting on {}", s(target)),
        Op::Chdir { .. } => "changing directory".into(),
    }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(rc: libc::c_int) -> Result<(), i32> {
    if rc == 0 { Ok(()) } else { Err(errno()) }
}

/// `mount_setattr(dirfd, path, flags, {set, clear})`.
///
/// # Safety
/// `dirfd` is an fd this process owns or `AT_FDCWD`.
unsafe fn set_attr(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    flags: libc::c_int,
    set: u64,
    clear: u64,
) -> Result<(), i32> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `attr` lives on the stack for the call, its size is what the kernel is told.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags as libc::c_uint,
            &raw const attr,
            size_of::<MountAttr>(),
        )
    };
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read as _,
        os::{
            fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
            unix::net::UnixListener,
        },
    };

    use super::*;

    fn require_root() {
        // SAFETY: no arguments.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "mount tests make mount namespaces: run them as root"
        );
    }

    fn suffix() -> String {
        let mut b = [0u8; 6];
        // SAFETY: getrandom(2) fills the buffer it is given.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        assert_eq!(n, 6, "getrandom");
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// A host tree to hide, bind and look for: under /var/tmp (so the covers are
    /// exercised: /tmp is fresh inside anyway), with a broker socket under /tmp and a
    /// host daemon's socket under /run.
    struct Fixture {
        base: PathBuf,
        tmp_base: PathBuf,
        run_base: PathBuf,
        broker: UnixListener,
        _host_daemon: UnixListener,
        /// A cgroup of its own for the sandbox: a cgroup namespace rooted at the host's
        /// root cgroup would make the fresh cgroup2 mount the host's very mount (EBUSY).
        cgroup: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            require_root();
            let s = suffix();
            let base = PathBuf::from(format!("/var/tmp/hb-mounts-{s}"));
            let tmp_base = PathBuf::from(format!("/tmp/hb-mounts-{s}"));
            let run_base = PathBuf::from(format!("/run/hb-mounts-{s}"));
            for d in [
                "state/tenants/a/work",
                "state/tenants/b/work",
                "keys",
                "src/sub",
                "dest",
                "workmnt",
                "hide1",
                "hide2",
                "hide3",
            ] {
                fs::create_dir_all(base.join(d)).expect("fixture dir");
            }
            for (f, text) in [
                ("state/vault.db", "VAULT-SECRET"),
                ("state/tenants/a/work/mine", "A-FILE"),
                ("state/tenants/b/work/theirs", "B-FILE"),
                ("keys/master.key", "KEY-SECRET"),
                ("src/ro-file", "RO-CONTENT"),
                ("keys/other.key", "OTHER-SECRET"),
                ("hide1/secret", "HIDE1-SECRET"),
                ("hide3/secret", "HIDE3-SECRET"),
            ] {
                fs::write(base.join(f), text).expect("fixture file");
            }
            fs::create_dir_all(&tmp_base).expect("tmp base");
            fs::create_dir_all(&run_base).expect("run base");
            let broker = UnixListener::bind(tmp_base.join("broker.sock")).expect("broker");
            broker.set_nonblocking(true).expect("nonblocking");
            let host_daemon = UnixListener::bind(run_base.join("host.sock")).expect("daemon");
            host_daemon.set_nonblocking(true).expect("nonblocking");
            let cgroup = cgroup2().join(format!("hb-mounts-{s}"));
            fs::create_dir(&cgroup).expect("test cgroup");
            Self {
                base,
                tmp_base,
                run_base,
                broker,
                _host_daemon: host_daemon,
                cgroup,
            }
        }

        fn plan(&self) -> LayoutPlan {
            LayoutPlan {
                broker_socket: self.tmp_base.join("broker.sock"),
                broker_socket_source: self.tmp_base.join("policies/web/broker.sock"),
                broker_folder: false,
                hidden: vec![
                    self.base.join("state"),
                    self.base.join("keys/master.key"),
                    self.base.join("keys/other.key"),
                    self.base.join("hide1"),
                    self.base.join("hide2"),
                    self.base.join("hide3"),
                ],
                tmp_size_bytes: 8 << 20,
                shm_size_bytes: 1 << 20,
                work: Some((
                    self.base.join("state/tenants/a/work"),
                    self.base.join("workmnt"),
                )),
                ro_binds: vec![
                    (self.base.join("src"), self.base.join("dest")),
                    (self.base.join("src/ro-file"), "/tmp/nested/ro-file".into()),
                    (self.base.join("src/ro-file"), "/run/x/ro-file".into()),
                    (
                        self.base.join("src/ro-file"),
                        self.base.join("hide2/inner/ro-file"),
                    ),
                ],
                cgroup2_mount: Some(cgroup2()),
                user_namespace: false,
            }
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            for d in [&self.base, &self.tmp_base, &self.run_base] {
                let _ = fs::remove_dir_all(d);
            }
            let _ = fs::remove_dir(&self.cgroup);
        }
    }

    fn cgroup2() -> PathBuf {
        fs::read_to_string("/proc/mounts")
            .expect("/proc/mounts")
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .next()
            .expect("a cgroup2 mount")
    }

    /// Mount points and their options in this (the host's) namespace, sorted.
    fn host_mounts() -> Vec<String> {
        let mut v: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {} {}", f[4], f[5], f[6])
            })
            .collect();
        v.sort();
        v
    }

    /// Runs `script` with /bin/sh as pid 1 of a new pid namespace, in a new mount and
    /// cgroup namespace rooted at `cgroup`, after `layout.enter()` — the sandbox init's
    /// situation, as root with every capability. Returns the exit code and the merged
    /// output.
    fn run_inside(layout: &Layout, cgroup: &Path, script: &str) -> (i32, String) {
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(cgroup.join("cgroup.procs"))
            .expect("cgroup.procs");
        let script = CString::new(script).expect("script");
        let argv = [
            c"sh".as_ptr(),
            c"-c".as_ptr(),
            script.as_ptr(),
            std::ptr::null(),
        ];
        let pipe = |flags| {
            let mut fds = [0; 2];
            // SAFETY: pipe2(2) fills the array it is given.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), flags) }, 0, "pipe2");
            // SAFETY: fresh fds nothing else owns.
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
        };
        let (out_r, out_w) = pipe(libc::O_CLOEXEC);
        let (err_r, err_w) = pipe(libc::O_CLOEXEC);
        // SAFETY: clone(2) without a new stack behaves like fork(2); the child below makes
        // only system calls on prepared data (no allocation) until exec or _exit.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            )
        };
        assert!(pid >= 0, "clone: {}", io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: the child of a fork: system calls only, then exec or _exit.
            unsafe {
                libc::dup2(out_w.as_raw_fd(), 1);
                libc::dup2(out_w.as_raw_fd(), 2);
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(119);
                }
                if libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
                    libc::_exit(120);
                }
                if let Err(e) = layout.enter() {
                    let report = [e.step as i64, i64::from(e.errno)];
                    libc::write(err_w.as_raw_fd(), report.as_ptr().cast(), 16);
                    libc::_exit(121);
                }
                libc::execv(c"/bin/sh".as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }
        drop((out_w, err_w, procs));
        let mut out = String::new();
        fs::File::from(out_r)
            .read_to_string(&mut out)
            .expect("read output");
        let mut report = Vec::new();
        fs::File::from(err_r)
            .read_to_end(&mut report)
            .expect("read report");
        let mut status = 0;
        // SAFETY: waitpid(2) on our own child.
        unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if report.len() == 16 {
            let step = i64::from_ne_bytes(report[..8].try_into().expect("8"));
            let errno = i64::from_ne_bytes(report[8..].try_into().expect("8"));
            panic!(
                "enter failed: {}",
                layout.explain(EnterError {
                    step: step as usize,
                    errno: errno as i32
                })
            );
        }
        assert!(libc::WIFEXITED(status), "sandbox died: {status:#x}\n{out}");
        (libc::WEXITSTATUS(status), out)
    }

    #[test]
    fn the_layout_hides_the_host_and_keeps_the_command_contained() {
        let fx = Fixture::new();
        let layout = Layout::plan(&fx.plan()).expect("plan");
        let before = host_mounts();
        let base = fx.base.display();
        let tmp_base = fx.tmp_base.display();
        let run_base = fx.run_base.display();
        let cg = cgroup2();
        let cg = cg.display();
        let script = format!(
            r#"
fail() {{ echo "FAIL: $*"; }}
expect_erofs() {{
    out=$( ( : > "$1" ) 2>&1 ) && fail "wrote $1"
    case "$out" in *Read-only*) ;; *) fail "writing $1: $out";; esac
}}
# The root, read-only everywhere (root with every capability still gets EROFS).
expect_erofs /hb-probe
expect_erofs /usr/hb-probe
expect_erofs /etc/hb-probe
expect_erofs {base}/hb-probe
expect_erofs {cg}/cgroup.procs
expect_erofs /proc/sys/kernel/hostname
chmod 000 {base}/keys 2>/dev/null && fail "chmod on the root"
# The cgroup filesystem: this sandbox's cgroup as its root, no other cgroup in it.
[ -z "$(find {cg} -mindepth 1 -type d)" ] || fail "other cgroups visible: $(find {cg} -mindepth 1 -type d)"
grep -q '^0::/$' /proc/self/cgroup || fail "cgroup $(cat /proc/self/cgroup)"
# The host's /proc and /dev are gone, not just covered.
[ "$(awk '$5=="/proc" || $5=="/dev"' /proc/self/mountinfo | wc -l)" = 2 ] || fail "host /proc or /dev left: $(cat /proc/self/mountinfo)"
# /tmp fresh: only the mount points of this layout, and writable.
[ "$(ls -A /tmp | tr '\n' ' ')" = "hb-mounts-{suffix} nested " ] || fail "/tmp holds: $(ls -A /tmp)"
[ "$(stat -c %a /tmp)" = 1777 ] || fail "/tmp mode $(stat -c %a /tmp)"
echo x > /tmp/w && [ "$(cat /tmp/w)" = x ] || fail "/tmp not writable"
# /proc: this pid namespace only (the shell is pid 1 and alone: no child in this loop).
n=0; for p in /proc/[0-9]*; do n=$((n+1)); last=$p; done
[ "$n $last" = "1 /proc/1" ] || fail "/proc shows $n pids: $(ls /proc | grep -E '^[0-9]+$' | tr '\n' ' ')"
[ "$(ps -o comm= -p 1)" = sh ] || fail "ps: $(ps -e)"
ps -e -o comm= | grep -q hb-agent && fail "the host's test process visible: $(ps -e)"
# /dev: the small set, no block device.
[ "$(ls -A /dev | tr '\n' ' ')" = "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero " ] || fail "/dev: $(ls -A /dev)"
for f in /dev/* /dev/*/*; do [ -b "$f" ] && fail "block device $f"; done
echo hi > /dev/null || fail "/dev/null"
[ "$(head -c 4 /dev/urandom | wc -c)" = 4 ] || fail "/dev/urandom"
expect_erofs /dev/hb-probe
echo x > /dev/shm/w || fail "/dev/shm"
# /run: only what this layout put there, no host daemon's socket.
[ "$(find /run | sort | tr '\n' ' ')" = "/run /run/x /run/x/ro-file " ] || fail "/run: $(find /run)"
[ -e {run_base}/host.sock ] && fail "host socket visible"
# Hidden: the state dir empty, the key unopenable.
[ -z "$(ls -A {base}/state)" ] || fail "state visible: $(ls -A {base}/state)"
[ -e {base}/state/vault.db ] && fail "vault.db visible"
out=$(cat {base}/keys/master.key 2>&1) && fail "read the master key: $out"
case "$out" in *KEY-SECRET*) fail "key contents";; esac
expect_erofs {base}/state/x
out=$(cat {base}/keys/other.key 2>&1) && fail "read other.key: $out"
case "$out" in *OTHER-SECRET*) fail "other.key contents";; esac
# Hidden directories that get no mount point share one empty read-only tmpfs; the one
# with a mount point below it has its own (what is made there shows nowhere else).
for d in hide1 hide3; do
    [ -z "$(ls -A {base}/$d)" ] || fail "$d visible: $(ls -A {base}/$d)"
    expect_erofs {base}/$d/x
done
[ "$(ls -A {base}/hide2)" = inner ] || fail "hide2 holds: $(ls -A {base}/hide2)"
[ "$(cat {base}/hide2/inner/ro-file)" = RO-CONTENT ] || fail "ro-bind under a hidden dir"
expect_erofs {base}/hide2/x
expect_erofs {base}/hide2/inner/x
# The tenant's work dir: read-write, another tenant's absent.
[ "$(cat {base}/workmnt/mine)" = A-FILE ] || fail "work dir content"
echo new > {base}/workmnt/new || fail "work dir not writable"
[ "$(pwd)" = "{base}/workmnt" ] || fail "cwd $(pwd)"
ls {base}/state/tenants/b 2>/dev/null && fail "tenant b visible"
# The --ro-bind pairs: visible, read-only.
[ "$(cat {base}/dest/ro-file)" = RO-CONTENT ] || fail "ro-bind dir"
[ -d {base}/dest/sub ] || fail "ro-bind subdir"
expect_erofs {base}/dest/ro-file
expect_erofs {base}/dest/new
[ "$(cat /tmp/nested/ro-file)" = RO-CONTENT ] || fail "ro-bind under /tmp"
[ "$(cat /run/x/ro-file)" = RO-CONTENT ] || fail "ro-bind under /run"
expect_erofs /tmp/nested/ro-file
# The broker socket, reachable.
[ -S {tmp_base}/broker.sock ] || fail "no broker socket"
/usr/bin/python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' {tmp_base}/broker.sock || fail "connect broker"
echo DONE
"#,
            suffix = fx
                .tmp_base
                .file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .trim_start_matches("hb-mounts-"),
        );
        let (code, out) = run_inside(&layout, &fx.cgroup, &script);
        assert_eq!(host_mounts(), before, "the host's mount table changed");
        assert!(
            code == 0 && !out.contains("FAIL") && out.contains("DONE"),
            "exit {code}:\n{out}"
        );
        assert!(fx.broker.accept().is_ok(), "the broker saw no connection");
        // Written inside, kept on the host; nothing else written.
        assert_eq!(
            fs::read_to_string(fx.base.join("state/tenants/a/work/new")).expect("new"),
            "new\n"
        );
        assert!(!Path::new("/hb-probe").exists() && !fx.base.join("hb-probe").exists());
        assert!(!fx.tmp_base.join("w").exists() && !Path::new("/tmp/w").exists());
    }

    #[test]
    fn describe_lists_every_mount() {
        let fx = Fixture::new();
        let layout = Layout::plan(&fx.plan()).expect("plan");
        let targets: Vec<String> = layout
            .describe()
            .iter()
            .map(|e| e.target.display().to_string())
            .collect();
        for t in ["/", "/proc", "/tmp", "/dev", "/dev/pts", "/dev/shm", "/run"] {
            assert!(targets.iter().any(|x| x == t), "{t} missing: {targets:?}");
        }
        let line = |t: PathBuf| {
            layout
                .describe()
                .iter()
                .find(|e| e.target == t)
                .unwrap_or_else(|| panic!("{} missing", t.display()))
                .to_string()
        };
        assert!(line(fx.base.join("state")).contains("hidden"));
        assert!(line(fx.base.join("keys/master.key")).contains("hidden"));
        assert!(line(fx.base.join("workmnt")).contains("rw"));
        assert!(line(fx.base.join("dest")).contains("ro,"));
        assert!(line(fx.tmp_base.join("broker.sock")).contains("broker"));
    }

    #[test]
    fn bad_plans_name_the_path_at_fault() {
        let fx = Fixture::new();
        let err = |f: &dyn Fn(&mut LayoutPlan)| {
            let mut p = fx.plan();
            f(&mut p);
            Layout::plan(&p).expect_err("a bad plan").to_string()
        };
        let missing = fx.base.join("no-such-source");
        let e = err(&|p| p.ro_binds.push((missing.clone(), "/tmp/x".into())));
        assert!(
            e.contains("--ro-bind source") && e.contains("no-such-source"),
            "{e}"
        );
        let e = err(&|p| {
            p.ro_binds
                .push((fx.base.join("src"), "/no-such-dest".into()))
        });
        assert!(
            e.contains("does not exist in the read-only root") && e.contains("/no-such-dest"),
            "{e}"
        );
        let e = err(&|p| {
            p.ro_binds
                .push((fx.base.join("src/ro-file"), fx.base.join("dest")))
        });
        assert!(e.contains("is a directory"), "{e}");
        let e = err(&|p| p.ro_binds.push((fx.base.join("state"), "/tmp/s".into())));
        assert!(e.contains("hidden path"), "{e}");
        let e = err(&|p| p.ro_binds.push((fx.base.clone(), "/tmp/s".into())));
        assert!(e.contains("hidden path"), "{e}");
        let e = err(&|p| p.ro_binds.push(("/proc".into(), "/tmp/p".into())));
        assert!(e.contains("/proc"), "{e}");
        let e = err(&|p| p.ro_binds.push(("relative".into(), "/tmp/p".into())));
        assert!(e.contains("absolute"), "{e}");
        let e = err(&|p| p.ro_binds.push((fx.base.join("src"), "/dev/x".into())));
        assert!(e.contains("/dev"), "{e}");
        let e = err(&|p| p.tmp_size_bytes = 0);
        assert!(e.contains("tmp size"), "{e}");
        let e = err(&|p| p.hidden.push("/".into()));
        assert!(e.contains("hiding /"), "{e}");
    }
}
