//! The sandbox's seccomp filter: the system calls a command may not make, and the
//! launcher's side that refuses and reports each attempt.
//!
//! Stacked after the native-ABI filter (which kills 32-bit and x32 calls), this one
//! allows everything except what [`rules`] lists, in the spirit of Docker's default
//! profile for a container without capabilities: raw and packet sockets and the socket
//! families the cgroup hooks do not see, the kernel's debugging, tracing and bpf
//! interfaces, other processes' memory and file descriptors, mounts and namespaces, the
//! keyring, kexec and modules, `personality` tricks, io_uring unless the policy allows it,
//! and the terminal's input queue (TIOCSTI) and line discipline (TIOCSETD).
//!
//! A refused call returns EPERM (`clone3` returns ENOSYS, see its rule) and is reported:
//! the refusing action is `SECCOMP_RET_USER_NOTIF`, the kernel queues the call on a
//! listener fd the launcher holds, and [`answer_refusals`] answers every one with
//! -EPERM and hands it to a reporter (the launcher writes a `seccomp` event). It never
//! answers "continue": nothing a rule matched is ever let through, so the usual
//! user-notification race (the command changing the arguments after they were read) has
//! nothing to win. If the launcher is gone, the kernel fails notified calls with ENOSYS:
//! still refused, only no longer reported.
//!
//! The filter is built with `seccompiler` (rust-vmm, pure Rust) before any fork, and
//! installed in the sandbox's init by [`Filter::install`], which only makes system calls.
//! seccompiler gives a filter one match action and has no user-notification one, so the
//! refusals are compiled as a marker errno rewritten to `SECCOMP_RET_USER_NOTIF`
//! ([`rewrite_refusals`]), and the ENOSYS rule is a second, stacked filter. A command
//! cannot stack a listener of its own (the kernel allows one per filter chain: EBUSY),
//! so tools that supervise children through seccomp notifications do not run inside.
//! Must never: allow a call a rule matches, or allocate in [`Filter::install`].

use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsRawFd as _, OwnedFd, RawFd},
    path::PathBuf,
    time::{Instant, SystemTime},
};

use crate::events::{self, EventRecord};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the seccomp filter's rule for {syscall}")]
    Rule {
        syscall: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("cannot compile the seccomp filter")]
    Compile(#[source] seccompiler::BackendError),
    #[error("seccompiler does not know this machine's architecture {0}")]
    Arch(&'static str),
    #[error("the compiled seccomp filter has no instruction returning the refusal marker")]
    NoRefusal,
}

/// What a matching call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// EPERM, through the launcher, which reports it as an event.
    Refused,
    /// ENOSYS straight from the kernel, not reported (callers fall back to another call).
    NoSuchCall,
    /// Not refused: a decision written down so `--print-confinement` shows it.
    Allowed,
}

/// How an argument is compared (all comparisons read the low 32 bits of the argument:
/// every value compared here is an `int` or `unsigned int` in the kernel, or, for
/// `clone`'s flags, a value the kernel truncates to 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq(u32),
    Ne(u32),
    /// `(arg & mask) == value`.
    Masked {
        mask: u32,
        value: u32,
    },
}

/// One comparison on argument `arg` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub arg: u8,
    pub op: Op,
}

/// A system call by name and number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    pub name: &'static str,
    pub nr: libc::c_long,
}

/// One line of the filter: the calls, when they match (`when` is a list of
/// alternatives, each a list of comparisons that must all hold; empty = always), what
/// they get, and why, in words for `--print-confinement` and the README.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub syscalls: &'static [Syscall],
    pub when: &'static [&'static [Cond]],
    pub outcome: Outcome,
    pub condition: &'static str,
    pub why: &'static str,
}

/// `sys!(a, b)`: the [`Syscall`]s named `a` and `b` (their numbers from `paste_sys!`,
/// one arm per call, as macro_rules cannot build the `libc::SYS_a` identifier).
macro_rules! sys {
    ($($name:ident),+ $(,)?) => {
        &[$(Syscall { name: stringify!($name), nr: paste_sys!($name) }),+]
    };
}
macro_rules! paste_sys {
    (socket) => {
        libc::SYS_socket
    };
    (socketpair) => {
        libc::SYS_socketpair
    };
    (clone) => {
        libc::SYS_clone
    };
    (clone3) => {
        libc::SYS_clone3
    };
    (unshare) => {
        libc::SYS_unshare
    };
    (setns) => {
        libc::SYS_setns
    };
    (mount) => {
        libc::SYS_mount
    };
    (umount2) => {
        libc::SYS_umount2
    };
    (pivot_root) => {
        libc::SYS_pivot_root
    };
    (move_mount) => {
        libc::SYS_move_mount
    };
    (open_tree) => {
        libc::SYS_open_tree
    };
    // Linux 6.15; not in the libc crate. Calls from 424 on have one number everywhere.
    (open_tree_attr) => {
        467
    };
    (fsopen) => {
        libc::SYS_fsopen
    };
    (fsmount) => {
        libc::SYS_fsmount
    };
    (fsconfig) => {
        libc::SYS_fsconfig
    };
    (fspick) => {
        libc::SYS_fspick
    };
    (mount_setattr) => {
        libc::SYS_mount_setattr
    };
    (chroot) => {
        libc::SYS_chroot
    };
    (bpf) => {
        libc::SYS_bpf
    };
    (perf_event_open) => {
        libc::SYS_perf_event_open
    };
    (ptrace) => {
        libc::SYS_ptrace
    };
    (process_vm_readv) => {
        libc::SYS_process_vm_readv
    };
    (process_vm_writev) => {
        libc::SYS_process_vm_writev
    };
    (process_madvise) => {
        libc::SYS_process_madvise
    };
    (pidfd_getfd) => {
        libc::SYS_pidfd_getfd
    };
    (kcmp) => {
        libc::SYS_kcmp
    };
    (keyctl) => {
        libc::SYS_keyctl
    };
    (add_key) => {
        libc::SYS_add_key
    };
    (request_key) => {
        libc::SYS_request_key
    };
    (kexec_load) => {
        libc::SYS_kexec_load
    };
    (kexec_file_load) => {
        libc::SYS_kexec_file_load
    };
    (init_module) => {
        libc::SYS_init_module
    };
    (finit_module) => {
        libc::SYS_finit_module
    };
    (delete_module) => {
        libc::SYS_delete_module
    };
    (personality) => {
        libc::SYS_personality
    };
    (io_uring_setup) => {
        libc::SYS_io_uring_setup
    };
    (io_uring_enter) => {
        libc::SYS_io_uring_enter
    };
    (io_uring_register) => {
        libc::SYS_io_uring_register
    };
    (ioctl) => {
        libc::SYS_ioctl
    };
    (userfaultfd) => {
        libc::SYS_userfaultfd
    };
    (open_by_handle_at) => {
        libc::SYS_open_by_handle_at
    };
    (name_to_handle_at) => {
        libc::SYS_name_to_handle_at
    };
    (swapon) => {
        libc::SYS_swapon
    };
    (swapoff) => {
        libc::SYS_swapoff
    };
    (reboot) => {
        libc::SYS_reboot
    };
    (settimeofday) => {
        libc::SYS_settimeofday
    };
    (clock_settime) => {
        libc::SYS_clock_settime
    };
    (clock_adjtime) => {
        libc::SYS_clock_adjtime
    };
    (adjtimex) => {
        libc::SYS_adjtimex
    };
    (acct) => {
        libc::SYS_acct
    };
    (quotactl) => {
        libc::SYS_quotactl
    };
    (quotactl_fd) => {
        libc::SYS_quotactl_fd
    };
    (lookup_dcookie) => {
        libc::SYS_lookup_dcookie
    };
    (syslog) => {
        libc::SYS_syslog
    };
    (vhangup) => {
        libc::SYS_vhangup
    };
    (fanotify_init) => {
        libc::SYS_fanotify_init
    };
    (sethostname) => {
        libc::SYS_sethostname
    };
    (setdomainname) => {
        libc::SYS_setdomainname
    };
}

const fn arg_ne(arg: u8, value: libc::c_int) -> Cond {
    Cond {
        arg,
        op: Op::Ne(value as u32),
    }
}
const fn arg_eq(arg: u8, value: libc::c_int) -> Cond {
    Cond {
        arg,
        op: Op::Eq(value as u32),
    }
}
const fn arg_has(arg: u8, flag: libc::c_int) -> Cond {
    Cond {
        arg,
        op: Op::Masked {
            mask: flag as u32,
            value: flag as u32,
        },
    }
}
/// The socket type without SOCK_NONBLOCK/SOCK_CLOEXEC (include/linux/net.h SOCK_TYPE_MASK).
const fn sock_type_is(ty: libc::c_int) -> Cond {
    Cond {
        arg: 1,
        op: Op::Masked {
            mask: 0xf,
            value: ty as u32,
        },
    }
}

/// TIOCLINUX is not in the libc crate for every target; 0x541C on x86_64 and arm64.
const TIOCLINUX: libc::c_int = 0x541c;
/// The obsolete packet socket type (include/linux/net.h); libc deprecates its constant.
const SOCK_PACKET: libc::c_int = 10;
/// `personality(0xffffffff)` only reads the current persona.
const PERSONALITY_QUERY: libc::c_int = -1;

/// The families a sandbox may open sockets of: what the cgroup hooks see (INET, INET6),
/// local ones (UNIX, which Landlock scopes) and NETLINK (limited to NETLINK_ROUTE below).
const FAMILY_ALLOWLIST: &[Cond] = &[
    arg_ne(0, libc::AF_UNIX),
    arg_ne(0, libc::AF_INET),
    arg_ne(0, libc::AF_INET6),
    arg_ne(0, libc::AF_NETLINK),
];

/// Every rule of the filter, refused and deliberately allowed alike.
pub fn rules() -> &'static [Rule] {
    RULES
}

const RULES: &[Rule] = &[
    Rule {
        syscalls: sys!(socket, socketpair),
        when: &[FAMILY_ALLOWLIST],
        outcome: Outcome::Refused,
        condition: "family other than AF_UNIX, AF_INET, AF_INET6, AF_NETLINK",
        why: "the cgroup hooks see only INET/INET6: AF_PACKET, AF_XDP, AF_VSOCK (the \
              hypervisor host in a VM), AF_BLUETOOTH, AF_CAN… would go around them",
    },
    Rule {
        syscalls: sys!(socket),
        when: &[&[arg_eq(0, libc::AF_NETLINK), arg_ne(2, libc::NETLINK_ROUTE)]],
        outcome: Outcome::Refused,
        condition: "AF_NETLINK with a protocol other than NETLINK_ROUTE",
        why: "libc needs only NETLINK_ROUTE (getaddrinfo's interface list); the others \
              (sock_diag, audit, uevent, netfilter…) expose the host or its firewall",
    },
    Rule {
        syscalls: sys!(socket),
        when: &[
            &[arg_eq(0, libc::AF_INET), sock_type_is(libc::SOCK_RAW)],
            &[arg_eq(0, libc::AF_INET6), sock_type_is(libc::SOCK_RAW)],
            &[arg_eq(0, libc::AF_INET), sock_type_is(SOCK_PACKET)],
            &[arg_eq(0, libc::AF_INET6), sock_type_is(SOCK_PACKET)],
        ],
        outcome: Outcome::Refused,
        condition: "AF_INET/AF_INET6 of type SOCK_RAW or SOCK_PACKET",
        why: "raw sockets forge headers the hooks read; ping works through SOCK_DGRAM \
              ICMP sockets",
    },
    Rule {
        syscalls: sys!(clone3),
        when: &[],
        outcome: Outcome::NoSuchCall,
        condition: "always, ENOSYS",
        why: "its flags are in memory, where seccomp cannot read them; ENOSYS makes glibc \
              fall back to clone, whose flags are checked (as Docker does)",
    },
    Rule {
        syscalls: sys!(clone),
        when: &[
            &[arg_has(0, libc::CLONE_NEWNS)],
            &[arg_has(0, libc::CLONE_NEWCGROUP)],
            &[arg_has(0, libc::CLONE_NEWUTS)],
            &[arg_has(0, libc::CLONE_NEWIPC)],
            &[arg_has(0, libc::CLONE_NEWUSER)],
            &[arg_has(0, libc::CLONE_NEWPID)],
            &[arg_has(0, libc::CLONE_NEWNET)],
        ],
        outcome: Outcome::Refused,
        condition: "any CLONE_NEW* flag",
        why: "a new user namespace gives back every capability inside it, and with it \
              the kernel's namespaced attack surface; the other namespaces need one",
    },
    Rule {
        syscalls: sys!(unshare, setns),
        when: &[],
        outcome: Outcome::Refused,
        condition: "always",
        why: "new or other namespaces: a user namespace regains capabilities, setns \
              would enter another process's",
    },
    Rule {
        syscalls: sys!(
            mount,
            umount2,
            pivot_root,
            move_mount,
            open_tree,
            open_tree_attr,
            fsopen,
            fsmount,
            fsconfig,
            fspick,
            mount_setattr,
            chroot
        ),
        when: &[],
        outcome: Outcome::Refused,
        condition: "always",
        why: "the sandbox's mounts are fixed before the command starts (read-only root, \
              its own /tmp and tenant folder)",
    },
    Rule {
        syscalls: sys!(bpf, perf_event_open),
        when: &[],
        outcome: Outcome::Refused,
        condition: "always",
        why: "the kernel's program and tracing interfaces: reading kernel memory, and \
              hb's own maps and programs",
    },
    Rule {
        syscalls: sys!(
            ptrace,
            process_vm_readv,
            process_vm_writev,
            process_madvise,
            pidfd_getfd,
            kcmp
        ),
        when: &[],
        outcome: Outcome::Refused,
        condition: "always",
        why: "another process's memory or file descriptors (a broker connection or a \
              socket made outside the sandbox); kcmp compares other processes' files, \
              nothing ordinary needs it (Docker allows it only with CAP_SYS_PTRACE); \
              debuggers do not run in a sandbox",
    },
    Rule {
        syscalls: sys!(keyctl, add_key, request_key),
        when: &[],
        outcome: Outcome::Refused,
        condition: "always",
        why: "the kernel keyring is not namespaced",
    },
    Rule {
        syscalls: sys!(
            kexec_load,
            kexec_file_load,
            init_module,
            finit_module,
            delete_module,
            reboot,
            swapon,
            swapoff,
            acct,
            quotactl,
            quotactl_fd,
            lookup_dcookie,
            syslog,
            vhangup,
            sethostname,
            setdomainname
        ),
        when: &[],
        outcome: Outcome::Refused,
        condition: "always",
        why: "the machine's kernel, modules, power, swap, accounting, quotas, kernel log \
              and names belong to the host (the sandbox shares its UTS namespace)",
    },
    Rule {
        syscalls: sys!(settimeofday, clock_settime, clock_adjtime, adjtimex),
        when: &[],
        outcome: Outcome::Refused,
        condition: "always",
        why: "the clock is the host's (token expiry, TLS validity); stricter than Docker, \
              which lets adjtimex and clock_adjtime read it",
    },
    Rule {
        syscalls: sys!(personality),
        when: &[&[arg_ne(0, 0), arg_ne(0, PERSONALITY_QUERY)]],
        outcome: Outcome::Refused,
        condition: "other than PER_LINUX and the 0xffffffff query",
        why: "READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE, MMAP_PAGE_ZERO weaken the memory \
              protections of what the sandbox runs next",
    },
    Rule {
        syscalls: sys!(io_uring_setup, io_uring_enter, io_uring_register),
        when: &[],
        outcome: Outcome::Refused,
        condition: "unless the policy sets allow_io_uring",
        why: "io_uring runs calls (IORING_OP_SOCKET, connect…) this filter never sees",
    },
    Rule {
        syscalls: sys!(ioctl),
        when: &[
            &[arg_eq(1, libc::TIOCSTI as libc::c_int)],
            &[arg_eq(1, TIOCLINUX)],
        ],
        outcome: Outcome::Refused,
        condition: "request TIOCSTI or TIOCLINUX",
        why: "pushing keystrokes into a terminal's input queue, which the shell that \
              started the sandbox would run",
    },
    Rule {
        syscalls: sys!(ioctl),
        when: &[&[arg_eq(1, libc::TIOCSETD as libc::c_int)]],
        outcome: Outcome::Refused,
        condition: "request TIOCSETD",
        why: "a terminal's line discipline: needs no controlling terminal, so N_NULL \
              kills the operator's terminal (on stdin without --tty), and any other \
              number makes the kernel load that discipline's module (n_hdlc, n_gsm…)",
    },
    Rule {
        syscalls: sys!(userfaultfd),
        when: &[],
        outcome: Outcome::Refused,
        condition: "always",
        why: "stalls kernel page faults at will, a classic way to win kernel races",
    },
    Rule {
        syscalls: sys!(open_by_handle_at),
        when: &[],
        outcome: Outcome::Refused,
        condition: "always",
        why: "opens files by handle, past the mount namespace (the 'shocker' escape)",
    },
    Rule {
        syscalls: sys!(name_to_handle_at),
        when: &[],
        outcome: Outcome::Allowed,
        condition: "allowed",
        why: "a handle alone opens nothing once open_by_handle_at is refused; some tools \
              use it to tell mounts apart (Docker allows it too)",
    },
    Rule {
        syscalls: sys!(fanotify_init),
        when: &[],
        outcome: Outcome::Refused,
        condition: "always",
        why: "unprivileged fanotify watches other processes' access to shared files; \
              inotify does what ordinary tools need (Docker wants CAP_SYS_ADMIN)",
    },
];

/// The errno the compiled program returns for [`Outcome::Refused`] before
/// [`rewrite_refusals`] turns those returns into `SECCOMP_RET_USER_NOTIF`. No rule
/// returns this errno for real (4095 is MAX_ERRNO, which no call reports).
const REFUSAL_MARKER: u32 = 4095;

/// A compiled filter, ready to install.
pub struct Filter {
    /// Refused calls: default ALLOW, matches notify the launcher.
    notify: Vec<libc::sock_filter>,
    /// ENOSYS calls: default ALLOW, matches return ENOSYS.
    enosys: Vec<libc::sock_filter>,
}

impl Filter {
    /// Compiles [`rules`]; io_uring stays allowed with `allow_io_uring`. Runs before the
    /// sandbox's first fork (it allocates).
    pub fn build(allow_io_uring: bool) -> Result<Filter, SeccompError> {
        let arch = std::env::consts::ARCH
            .try_into()
            .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))?;
        let keep = |rule: &Rule| !(allow_io_uring && rule.syscalls[0].name == "io_uring_setup");
        let mut notify = compile(
            rules_for(Outcome::Refused, keep)?,
            SeccompAction::Errno(REFUSAL_MARKER),
            arch,
        )?;
        if rewrite_refusals(&mut notify) == 0 {
            return Err(SeccompError::NoRefusal);
        }
        let enosys = compile(
            rules_for(Outcome::NoSuchCall, keep)?,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )?;
        Ok(Filter {
            notify: to_libc(notify),
            enosys: to_libc(enosys),
        })
    }

    /// Installs the filter in the calling thread and returns the user-notification
    /// listener (the launcher gives it to [`answer_refusals`]). `no_new_privs` must
    /// already be set.
    ///
    /// # Safety
    /// Called in the sandbox's init after fork: only seccomp(2), no allocation.
    pub unsafe fn install(&self) -> io::Result<RawFd> {
        // SAFETY: each program outlives the call; the kernel copies it.
        unsafe {
            load(&self.enosys, 0)?;
            load(&self.notify, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER)
        }
    }
}

/// seccomp(SECCOMP_SET_MODE_FILTER, flags, program); its return value (the listener fd
/// with NEW_LISTENER, else 0).
///
/// # Safety
/// System call only.
unsafe fn load(program: &[libc::sock_filter], flags: libc::c_ulong) -> io::Result<RawFd> {
    let prog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points to a live, initialised program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as RawFd)
}

/// The seccompiler rules of every table entry with `outcome` that `keep` keeps.
fn rules_for(
    outcome: Outcome,
    keep: impl Fn(&Rule) -> bool,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for rule in RULES.iter().filter(|r| r.outcome == outcome && keep(r)) {
        for sys in rule.syscalls {
            let error = |source| SeccompError::Rule {
                syscall: sys.name,
                source,
            };
            let chain = map.entry(sys.nr).or_default();
            if rule.when.is_empty() {
                // An empty chain matches unconditionally (no call is both unconditional
                // and conditional in the table: see the tests).
                chain.clear();
                continue;
            }
            for alternative in rule.when {
                let conditions = alternative
                    .iter()
                    .map(|c| condition(c).map_err(error))
                    .collect::<Result<Vec<_>, _>>()?;
                chain.push(SeccompRule::new(conditions).map_err(error)?);
            }
        }
    }
    Ok(map)
}

fn condition(c: &Cond) -> Result<SeccompCondition, seccompiler::BackendError> {
    let (op, value) = match c.op {
        Op::Eq(v) => (SeccompCmpOp::Eq, v),
        Op::Ne(v) => (SeccompCmpOp::Ne, v),
        Op::Masked { mask, value } => (SeccompCmpOp::MaskedEq(u64::from(mask)), value),
    };
    SeccompCondition::new(c.arg, SeccompCmpArgLen::Dword, op, u64::from(value))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    on_match: SeccompAction,
    arch: seccompiler::TargetArch,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, on_match, arch)
        .map_err(SeccompError::Compile)?;
    filter.try_into().map_err(SeccompError::Compile)
}

/// seccompiler has no user-notification action: the refusing returns are compiled as
/// `SECCOMP_RET_ERRNO | REFUSAL_MARKER` and turned into `SECCOMP_RET_USER_NOTIF` here.
/// Only `BPF_RET | BPF_K` instructions are touched (a comparison with the same constant
/// is not a return). Returns how many were rewritten.
fn rewrite_refusals(program: &mut BpfProgram) -> usize {
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let marker = libc::SECCOMP_RET_ERRNO | REFUSAL_MARKER;
    let mut n = 0;
    for insn in program.iter_mut() {
        if insn.code == RET_K && insn.k == marker {
            insn.k = libc::SECCOMP_RET_USER_NOTIF;
            n += 1;
        }
    }
    n
}

fn to_libc(program: BpfProgram) -> Vec<libc::sock_filter> {
    program
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect()
}

/// One refused call, as the listener saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The call's name from [`rules`] (`"#NR"` for a number no rule names, which the
    /// filter never notifies).
    pub syscall: String,
    pub nr: i32,
    /// Thread id of the caller, in the launcher's pid namespace.
    pub tid: u32,
    /// Its process id (0 if it was gone before it could be read).
    pub pid: u32,
    /// Its command name, best effort (read while the call is still held).
    pub comm: String,
}

/// The name of system call `nr` among the rules.
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    RULES
        .iter()
        .flat_map(|r| r.syscalls)
        .find(|s| s.nr == nr)
        .map(|s| s.name)
}

/// Where [`answer_refusals`] sends what it answered.
pub trait Refusals {
    /// Counts a refusal of `syscall` whose record would be held back anyway (the
    /// sandbox's event budget is spent and the call is already held), without reading
    /// its process from /proc: true when counted so. Reading /proc costs the launcher,
    /// outside the sandbox's cgroup, more than the refused call costs the sandbox.
    fn counted(&mut self, syscall: &str) -> bool;
    fn report(&mut self, refusal: Refusal);
}

/// Answers every call the filter behind `listener` holds with -EPERM and reports it,
/// until no process uses the filter any more (the sandbox ended: POLLHUP). Runs on a
/// launcher thread.
pub fn answer_refusals(listener: OwnedFd, refusals: &mut impl Refusals) {
    let fd = listener.as_raw_fd();
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
        if rc < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfd.revents & libc::POLLIN == 0 {
            if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                return;
            }
            continue;
        }
        // SAFETY: seccomp_notif is plain data; the kernel wants it zeroed.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: RECV writes one seccomp_notif into `req`.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
            match io::Error::last_os_error().raw_os_error() {
                // The caller died (or a signal interrupted it) before we took the call.
                Some(libc::ENOENT | libc::EINTR) => continue,
                _ => return,
            }
        }
        let syscall = syscall_name(i64::from(req.data.nr))
            .map_or_else(|| format!("#{}", req.data.nr), str::to_owned);
        if refusals.counted(&syscall) {
            refuse(fd, req.id);
            continue;
        }
        // Read while the caller is held in the call, so its tid names it; checked
        // against the notification id afterwards.
        let (mut pid, mut comm) = describe(req.pid);
        // SAFETY: ID_VALID reads one u64.
        if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) } != 0 {
            (pid, comm) = (0, String::new());
        }
        refuse(fd, req.id);
        refusals.report(Refusal {
            syscall,
            nr: req.data.nr,
            tid: req.pid,
            pid,
            comm,
        });
    }
}

/// Answers held call `id` with -EPERM.
fn refuse(listener: RawFd, id: u64) {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: -libc::EPERM,
        flags: 0,
    };
    // SAFETY: SEND reads one seccomp_notif_resp. ENOENT (the caller is gone) is fine:
    // its call did not go through either.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
}

/// `Tgid` and `comm` of thread `tid` from /proc (0 and "" when unreadable).
fn describe(tid: u32) -> (u32, String) {
    let comm = std::fs::read_to_string(format!("/proc/{tid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or_default();
    let pid = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0);
    (pid, comm)
}

/// Turns refusals into `seccomp` events in `state_dir/events.jsonl`, under the
/// sandbox's event budget, which holds refusals back per system call name past its
/// burst (see [`events::EventBudget`]). Used by the launcher's [`answer_refusals`]
/// thread.
pub struct EventReporter {
    state_dir: PathBuf,
    max_bytes: u64,
    policy: String,
    cgroup_id: u64,
    cgroup: Option<String>,
    budget: events::EventBudget,
}

impl EventReporter {
    pub fn new(
        state_dir: PathBuf,
        max_bytes: u64,
        policy: String,
        cgroup_id: u64,
        cgroup: Option<String>,
    ) -> Self {
        Self {
            state_dir,
            max_bytes,
            policy,
            cgroup_id,
            cgroup,
            budget: events::EventBudget::new(Instant::now()),
        }
    }

    /// The event line of `refusal`.
    pub fn record(&self, refusal: &Refusal) -> EventRecord {
        EventRecord {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            hook: events::SECCOMP_HOOK.to_owned(),
            verdict: "deny".to_owned(),
            reason: events::SYSCALL_REFUSED.to_owned(),
            policy: self.policy.clone(),
            cgroup_id: self.cgroup_id,
            cgroup: self.cgroup.clone(),
            pid: refusal.pid,
            tid: refusal.tid,
            comm: refusal.comm.clone(),
            family: String::new(),
            protocol: String::new(),
            dst: String::new(),
            port: 0,
            name: Some(refusal.syscall.clone()),
            suppressed: 0,
            detail: None,
        }
    }

    pub fn report(&mut self, refusal: Refusal) {
        let record = self.record(&refusal);
        for record in self.budget.admit(record, Instant::now()) {
            self.write(&record);
        }
    }

    fn counted(&mut self, syscall: &str) -> bool {
        self.budget
            .count_held(&events::Subject::syscall(syscall), Instant::now())
    }

    /// At the sandbox's end: the refusals the budget held back since the last record.
    pub fn finish(mut self) {
        for record in self.budget.take_held() {
            self.write(&record);
        }
    }

    fn write(&self, record: &EventRecord) {
        if let Err(e) = events::append_one(&self.state_dir, self.max_bytes, record) {
            // The refusal itself stands; only its record is lost. The syscall name is
            // not secret.
            eprintln!(
                "hb-agent: seccomp refused {} (pid {}): {}",
                record.name.as_deref().unwrap_or("?"),
                record.pid,
                crate::error_chain(&e)
            );
        }
    }
}

impl Refusals for EventReporter {
    fn counted(&mut self, syscall: &str) -> bool {
        EventReporter::counted(self, syscall)
    }
    fn report(&mut self, refusal: Refusal) {
        EventReporter::report(self, refusal);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        sync::{
            atomic::{AtomicBool, Ordering},
            mpsc,
        },
    };

    use super::*;

    #[test]
    fn every_rule_says_when_and_why() {
        for rule in rules() {
            assert!(!rule.syscalls.is_empty());
            assert!(
                !rule.condition.is_empty() && !rule.why.is_empty(),
                "{rule:?}"
            );
        }
    }

    #[test]
    fn no_call_is_both_unconditional_and_conditional() {
        for outcome in [Outcome::Refused, Outcome::NoSuchCall] {
            let mut always = HashSet::new();
            let mut sometimes = HashSet::new();
            for rule in RULES.iter().filter(|r| r.outcome == outcome) {
                for sys in rule.syscalls {
                    let set = if rule.when.is_empty() {
                        &mut always
                    } else {
                        &mut sometimes
                    };
                    assert!(
                        set.insert(sys.name) || !rule.when.is_empty(),
                        "{}",
                        sys.name
                    );
                }
            }
            let both: Vec<_> = always.intersection(&sometimes).collect();
            assert!(both.is_empty(), "{both:?}");
        }
    }

    #[test]
    fn the_rewrite_touches_exactly_the_marker_returns() {
        let arch = std::env::consts::ARCH.try_into().expect("arch");
        let map = rules_for(Outcome::Refused, |_| true).expect("rules");
        // One return of the match action per alternative, one per unconditional call.
        let expected: usize = map.values().map(|chain| chain.len().max(1)).sum();
        let before = compile(map, SeccompAction::Errno(REFUSAL_MARKER), arch).expect("compile");
        let mut after = before.clone();
        assert_eq!(rewrite_refusals(&mut after), expected);
        assert_eq!(before.len(), after.len());
        let ret_k = (libc::BPF_RET | libc::BPF_K) as u16;
        let mut changed = 0;
        for (b, a) in before.iter().zip(&after) {
            if b == a {
                // Nothing that still returns the marker was missed.
                assert!(!(a.code == ret_k && a.k == libc::SECCOMP_RET_ERRNO | REFUSAL_MARKER));
                continue;
            }
            changed += 1;
            assert_eq!((b.code, b.jt, b.jf), (a.code, a.jt, a.jf));
            assert_eq!(b.code, ret_k);
            assert_eq!(b.k, libc::SECCOMP_RET_ERRNO | REFUSAL_MARKER);
            assert_eq!(a.k, libc::SECCOMP_RET_USER_NOTIF);
        }
        assert_eq!(changed, expected);
        // The default action is still ALLOW.
        assert!(
            after
                .iter()
                .any(|i| i.code == ret_k && i.k == libc::SECCOMP_RET_ALLOW)
        );
    }

    #[test]
    fn io_uring_is_left_out_only_when_allowed() {
        let names = |allow| {
            let keep = |rule: &Rule| !(allow && rule.syscalls[0].name == "io_uring_setup");
            rules_for(Outcome::Refused, keep)
                .expect("rules")
                .into_keys()
                .collect::<HashSet<_>>()
        };
        assert!(names(false).contains(&libc::SYS_io_uring_setup));
        assert!(!names(true).contains(&libc::SYS_io_uring_enter));
        assert!(names(true).contains(&libc::SYS_ptrace));
        Filter::build(true).expect("builds");
    }

    /// What the child reports per probe: 0 for success, else the errno.
    fn outcome(rc: libc::c_long) -> i32 {
        if rc < 0 {
            io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }

    static THREAD_RAN: AtomicBool = AtomicBool::new(false);

    extern "C" fn thread_body(_: *mut libc::c_void) -> libc::c_int {
        THREAD_RAN.store(true, Ordering::SeqCst);
        // SAFETY: ends only this thread.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
        0
    }

    /// The probes, in the child, after the filter is installed: (name, result).
    ///
    /// # Safety
    /// Runs in a forked child of the (multi-threaded) test process.
    unsafe fn probes(parent: libc::pid_t) -> [(&'static str, i32); 14] {
        // SAFETY: plain system calls on integers and stack buffers; a clone that wrongly
        // succeeds ends its child at once.
        unsafe {
            let ch = b'x';
            let close = |rc: libc::c_long| {
                if rc >= 0 {
                    libc::close(rc as libc::c_int);
                }
                outcome(rc)
            };
            let socket = |f, t, p| close(libc::socket(f, t, p) as libc::c_long);
            // Each result is read at once: errno is overwritten by the next call.
            let ptrace = outcome(libc::ptrace(libc::PTRACE_ATTACH, parent, 0, 0));
            let pidfd = libc::syscall(libc::SYS_pidfd_open, parent, 0);
            let getfd = close(libc::syscall(libc::SYS_pidfd_getfd, pidfd, 0, 0));
            // htons(ETH_P_ALL)
            let packet = socket(libc::AF_PACKET, libc::SOCK_RAW, 0x0300);
            let userns = outcome(libc::unshare(libc::CLONE_NEWUSER).into());
            let tiocsti = outcome(libc::ioctl(0, libc::TIOCSTI, &ch).into());
            let raw = socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
            let mut clone3_args = [0u64; 11];
            clone3_args[4] = libc::SIGCHLD as u64; // exit_signal
            let clone3 = libc::syscall(libc::SYS_clone3, clone3_args.as_ptr(), 88);
            if clone3 == 0 {
                libc::_exit(0);
            }
            let clone3 = outcome(clone3);
            let clone_ns = libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWNS | libc::SIGCHLD) as libc::c_ulong,
                0,
                0,
                0,
                0,
            );
            if clone_ns == 0 {
                libc::_exit(0);
            }
            let clone_ns = outcome(clone_ns);
            // A thread the way glibc makes them when clone3 is refused.
            static mut STACK: [u8; 64 * 1024] = [0; 64 * 1024];
            let top = std::ptr::addr_of_mut!(STACK).cast::<u8>().add(64 * 1024);
            let tid = libc::clone(
                thread_body,
                top.cast(),
                libc::CLONE_VM
                    | libc::CLONE_FS
                    | libc::CLONE_FILES
                    | libc::CLONE_SIGHAND
                    | libc::CLONE_THREAD
                    | libc::CLONE_SYSVSEM,
                std::ptr::null_mut(),
            );
            while tid > 0 && !THREAD_RAN.load(Ordering::SeqCst) {
                libc::sched_yield();
            }
            let child = libc::fork();
            if child == 0 {
                libc::_exit(0);
            }
            if child > 0 {
                libc::waitpid(child, std::ptr::null_mut(), 0);
            }
            [
                ("ptrace", ptrace),
                ("pidfd_getfd", getfd),
                ("socket", packet),
                ("unshare", userns),
                ("ioctl", tiocsti),
                ("clone", clone_ns),
                ("socket", raw),
                ("clone3", clone3),
                // Allowed:
                ("tcp", socket(libc::AF_INET, libc::SOCK_STREAM, 0)),
                (
                    "udp6",
                    socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0),
                ),
                ("unix", socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)),
                (
                    "route",
                    socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
                ),
                (
                    "thread",
                    if THREAD_RAN.load(Ordering::SeqCst) {
                        0
                    } else {
                        -1
                    },
                ),
                ("fork", if child > 0 { 0 } else { -1 }),
            ]
        }
    }

    #[test]
    fn refused_calls_fail_with_eperm_and_are_reported_allowed_ones_work() {
        // SAFETY: getuid(2).
        assert_eq!(unsafe { libc::getuid() }, 0, "this test must run as root");
        let filter = Filter::build(false).expect("builds");
        let mut pair = [0; 2];
        let mut results = [0; 2];
        // SAFETY: socketpair(2)/pipe2(2) into stack arrays.
        unsafe {
            assert_eq!(
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                    pair.as_mut_ptr()
                ),
                0
            );
            assert_eq!(libc::pipe2(results.as_mut_ptr(), libc::O_CLOEXEC), 0);
        }
        // SAFETY: getpid(2).
        let parent = unsafe { libc::getpid() };
        // SAFETY: the child makes system calls only, on memory prepared before the fork,
        // and ends with _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: see above.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(2);
                }
                let Ok(listener) = filter.install() else {
                    libc::_exit(3)
                };
                if crate::sandbox::fdpass::send(pair[0], &[0], Some(listener)).is_err() {
                    libc::_exit(4);
                }
                libc::close(listener);
                let out = probes(parent);
                for (_, errno) in out {
                    libc::write(results[1], (&errno as *const i32).cast(), 4);
                }
                libc::_exit(0);
            }
        }
        assert!(child > 0, "fork failed");
        // SAFETY: closing our copies of the child's ends.
        unsafe {
            libc::close(pair[0]);
            libc::close(results[1]);
        }
        let mut byte = [0u8; 1];
        let listener = crate::sandbox::fdpass::recv(pair[1], &mut byte)
            .expect("the child sends its listener")
            .1
            .expect("with its listener attached");
        let (tx, rx) = mpsc::channel();
        struct Sent(mpsc::Sender<Refusal>);
        impl Refusals for Sent {
            fn counted(&mut self, _: &str) -> bool {
                false
            }
            fn report(&mut self, refusal: Refusal) {
                self.0.send(refusal).expect("send");
            }
        }
        let answering = std::thread::spawn(move || {
            answer_refusals(listener, &mut Sent(tx));
        });
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child status {status:#x}"
        );
        answering
            .join()
            .expect("answer_refusals returns when the child is gone");
        let mut bytes = Vec::new();
        // SAFETY: reading into a stack buffer.
        loop {
            let mut buf = [0u8; 256];
            let n = unsafe { libc::read(results[0], buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n as usize]);
        }
        let errnos: Vec<i32> = bytes
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let names = [
            "ptrace",
            "pidfd_getfd",
            "AF_PACKET",
            "unshare(NEWUSER)",
            "TIOCSTI",
            "clone(NEWNS)",
            "SOCK_RAW",
            "clone3",
            "tcp",
            "udp6",
            "unix",
            "route",
            "thread",
            "fork",
        ];
        let expected = [
            libc::EPERM,
            libc::EPERM,
            libc::EPERM,
            libc::EPERM,
            libc::EPERM,
            libc::EPERM,
            libc::EPERM,
            libc::ENOSYS,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let got: Vec<_> = names.iter().zip(&errnos).collect();
        let want: Vec<_> = names.iter().zip(&expected).collect();
        assert_eq!(got, want);
        let reported: Vec<String> = rx.try_iter().map(|r| r.syscall).collect();
        let mut sorted = reported.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "clone",
                "ioctl",
                "pidfd_getfd",
                "ptrace",
                "socket",
                "socket",
                "unshare"
            ],
            "reported: {reported:?}"
        );
    }

    #[test]
    fn a_flood_of_refusals_is_capped_and_every_one_counted() {
        let dir = std::env::temp_dir().join(format!("hb-seccomp-events-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut reporter = EventReporter::new(dir.clone(), 1 << 20, "p".into(), 42, None);
        let refusal = Refusal {
            syscall: "ptrace".into(),
            nr: libc::SYS_ptrace as i32,
            tid: 7,
            pid: 7,
            comm: "evil\nforged".into(),
        };
        // As the listener does: a refusal the budget only counts is not described.
        let mut undescribed = 0;
        for _ in 0..1000 {
            if reporter.counted(&refusal.syscall) {
                undescribed += 1;
            } else {
                reporter.report(refusal.clone());
            }
        }
        reporter.finish();
        let records = events::read_all(&dir).expect("read");
        std::fs::remove_dir_all(&dir).expect("clean up");
        let burst = hb_common::limits::EVENT_BURST as usize;
        assert_eq!(
            undescribed,
            1000 - burst - 1,
            "past the burst and the first held record, refusals are counted without /proc"
        );
        assert_eq!(records.len(), burst + 1);
        let counted: u64 = records.iter().map(|r| 1 + r.suppressed).sum();
        assert_eq!(counted, 1000);
        let first = &records[0];
        assert_eq!(
            (
                first.hook.as_str(),
                first.reason.as_str(),
                first.name.as_deref()
            ),
            ("seccomp", "syscall_refused", Some("ptrace"))
        );
        assert_eq!((first.cgroup_id, first.policy.as_str()), (42, "p"));
        assert!(first.to_string().contains("syscall=ptrace"), "{first}");
    }

    #[test]
    fn with_the_listener_gone_refused_calls_fail_with_enosys() {
        // SAFETY: getuid(2).
        assert_eq!(unsafe { libc::getuid() }, 0, "this test must run as root");
        let filter = Filter::build(false).expect("builds");
        // SAFETY: the child makes system calls only, on memory prepared before the fork,
        // and ends with _exit; its exit code is the errno of the refused call.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: see above.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(200);
                }
                let Ok(listener) = filter.install() else {
                    libc::_exit(201)
                };
                // Nobody answers: the launcher is gone.
                libc::close(listener);
                let rc = libc::unshare(libc::CLONE_NEWUSER);
                let errno = if rc == 0 {
                    0
                } else {
                    *libc::__errno_location()
                };
                libc::_exit(errno);
            }
        }
        assert!(child > 0, "fork failed");
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), libc::ENOSYS);
    }
}
