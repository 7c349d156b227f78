//! The sandbox's first process: pid 1 of its own pid namespace, in its own mount, IPC
//! and cgroup namespaces, confined step by step before the command exists.
//!
//! The launcher creates it with clone3(2): `CLONE_INTO_CGROUP` puts it in the enrolled
//! sandbox cgroup from its first instruction, `CLONE_NEWPID` makes it pid 1 of a fresh
//! pid namespace (no other process, another sandbox's or the host's, can be named by pid
//! from inside), `CLONE_NEWNS`/`CLONE_NEWIPC` give it mounts and System V IPC of its own,
//! and `CLONE_PIDFD` gives the launcher a descriptor that names it for good. It is a
//! copy of the single-threaded launcher, not an exec'd program, so it runs the plan
//! prepared before the clone: [`confine`] (first its cgroup v1 limits on a hybrid host,
//! which it joins itself; a new session without a controlling terminal — or, with
//! `--tty`, with a fresh pseudo-terminal of its own —, a cgroup namespace, the mounts of
//! [`super::mounts`], itself made undumpable (it keeps descriptors of the host's mount
//! namespace), every capability dropped and the user's ids, `no_new_privs`, Landlock
//! scopes, the seccomp filters, every descriptor past stderr closed at exec), then it
//! starts the command (pid 2, cloned as posix_spawn does: sharing the init's memory
//! until its exec), which resets its signals and execs. pid 1 stays behind as the
//! namespace's reaper: it forwards the signals the launcher passes on to the command,
//! reaps orphans, and exits with the command's status. When it exits the kernel kills whatever is left in the namespace.
//!
//! Init and launcher talk over a `SOCK_SEQPACKET` pair: one [`Report`] per packet, and
//! the end of the stream (every copy of init's end closed: init's once the command is
//! started, the command's at exec) means the command is running.
//! Must never: exec the command less confined than the plan says; any failed step ends
//! the init with a report naming the step.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::atomic::{AtomicI32, AtomicU16, Ordering},
};

use super::{User, abi, caps, seccomp};
use crate::scope::ChildScope;

/// Everything the init needs, prepared by the launcher before the clone.
pub struct Plan {
    pub program: CString,
    /// `program` and its arguments, as C strings.
    pub argv: Vec<CString>,
    /// The command's whole environment, `KEY=VALUE` (see [`super::environment`]).
    pub env: Vec<CString>,
    pub user: User,
    pub last_cap: u32,
    pub scope: ChildScope,
    /// For a `--user 0` command: the host uid and gid its root is in a user namespace of
    /// its own (so on the host it owns nothing of root's). None: no user namespace.
    pub userns: Option<(u32, u32)>,
    /// `--tty`: the slave side of the sandbox's own pseudo-terminal.
    pub tty: Option<RawFd>,
    /// Pipes put in place of 0, 1 and 2 where the caller's were regular files
    /// ([`super::stdio`]): the sandbox's ends, relayed by the launcher.
    pub stdio: [Option<RawFd>; 3],
    /// The mount layout, entered by `confine` right after the cgroup namespace.
    pub layout: super::mounts::Layout,
    /// The rule filter ([`seccomp`]), installed by `confine` after the native-ABI one.
    pub filter: seccomp::Filter,
    /// The `tasks` files of the sandbox's cgroup v1 limits (none on a cgroup2 host),
    /// which the init joins first ([`join_limits`]).
    pub limits: Vec<RawFd>,
}

/// A confinement step, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Priorities = 1,
    JoinLimits,
    WaitForLauncher,
    NewSession,
    Terminal,
    Stdio,
    CgroupNamespace,
    Mounts,
    Undumpable,
    ParentDeath,
    Capabilities,
    NoNewPrivs,
    Landlock,
    NativeAbiFilter,
    SeccompFilter,
    CloseDescriptors,
    ForkCommand,
    Exec,
}

impl Step {
    const ALL: [Step; 18] = [
        Step::Priorities,
        Step::JoinLimits,
        Step::WaitForLauncher,
        Step::NewSession,
        Step::Terminal,
        Step::Stdio,
        Step::CgroupNamespace,
        Step::Mounts,
        Step::Undumpable,
        Step::ParentDeath,
        Step::Capabilities,
        Step::NoNewPrivs,
        Step::Landlock,
        Step::NativeAbiFilter,
        Step::SeccompFilter,
        Step::CloseDescriptors,
        Step::ForkCommand,
        Step::Exec,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Step::JoinLimits => "joining its cgroup v1 limits",
            Step::Priorities => "leaving real-time scheduling and raised priority",
            Step::WaitForLauncher => "waiting for the launcher (user namespace ids)",
            Step::NewSession => "starting a new session (setsid)",
            Step::Terminal => "taking its own pseudo-terminal (--tty)",
            Step::Stdio => "putting the relayed pipes in place of stdin, stdout and stderr",
            Step::CgroupNamespace => "creating the cgroup namespace",
            Step::Mounts => "setting up the sandbox's mounts",
            Step::Undumpable => "making the init undumpable",
            Step::ParentDeath => "tying the sandbox's life to its launcher",
            Step::Capabilities => "dropping capabilities and switching user",
            Step::NoNewPrivs => "setting no_new_privs",
            Step::Landlock => "entering the Landlock scopes",
            Step::NativeAbiFilter => "installing the native-ABI seccomp filter",
            Step::SeccompFilter => "installing the seccomp filter",
            Step::CloseDescriptors => "closing inherited descriptors",
            Step::ForkCommand => "forking the command",
            Step::Exec => "starting the command",
        }
    }
}

/// What the init (or the command, before exec) tells the launcher.
#[derive(Debug)]
pub enum Report {
    /// Confined; the command is being started. Carries the seccomp listener, if any.
    Ready(Option<OwnedFd>),
    /// A step failed with this errno; nothing ran. The third field says which part of
    /// the step failed (for [`Step::Mounts`], the layout's own step).
    Failed(Step, io::Error, u16),
}

/// The running sandbox as the launcher holds it.
pub struct Started {
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    /// The launcher's end of the report channel.
    pub channel: OwnedFd,
}

/// Clones the init into `cgroup` (a directory descriptor of the sandbox's v2 cgroup).
/// The child never returns from here: it runs [`init_main`] and exits.
///
/// The calling process must be single-threaded (checked): the child is a copy of it and
/// may take the locks (allocator, stdio) no other thread could then be holding.
pub fn start(plan: &Plan, cgroup: &OwnedFd) -> io::Result<Started> {
    if thread_count() != Some(1) {
        return Err(io::Error::other(
            "the sandbox launcher must be single-threaded when it clones the sandbox",
        ));
    }
    let (launcher_end, init_end) = seqpacket_pair()?;
    let mut pidfd: libc::c_int = -1;
    // clone3(2) flags (include/uapi/linux/sched.h), as u64 whatever libc's types.
    const CLONE_NEWNS: u64 = 0x0002_0000;
    const CLONE_PIDFD: u64 = 0x0000_1000;
    const CLONE_NEWIPC: u64 = 0x0800_0000;
    const CLONE_NEWPID: u64 = 0x2000_0000;
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    args.flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_INTO_CGROUP | CLONE_PIDFD;
    if plan.userns.is_some() {
        args.flags |= CLONE_NEWUSER;
    }
    args.pidfd = (&raw mut pidfd) as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    args.cgroup = cgroup.as_raw_fd() as u64;
    // SAFETY: clone3(2) without CLONE_VM: the child gets a copy of this (single-threaded)
    // process and continues on its copy of this stack, like fork(2).
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw mut args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(launcher_end);
        init_main(plan, init_end);
    }
    drop(init_end);
    Ok(Started {
        pid: pid as libc::pid_t,
        // SAFETY: the kernel wrote a new descriptor this process owns.
        pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        channel: launcher_end,
    })
}

/// What the init waits for, one byte on the channel.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Gate {
    /// Its user namespace's id maps are written (or it has none): it may confine itself.
    Confine = b'C',
}

/// Lets the init past `gate`.
pub fn release(started: &Started, gate: Gate) -> io::Result<()> {
    let byte = gate as u8;
    // SAFETY: send(2) of one byte from a local on the launcher's own socket.
    let rc = unsafe {
        libc::send(
            started.channel.as_raw_fd(),
            (&raw const byte).cast(),
            1,
            libc::MSG_NOSIGNAL,
        )
    };
    if rc == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Tells the init no release will come: its wait for one ends with the channel.
pub fn hang_up(started: &Started) {
    // SAFETY: shutdown(2) of the launcher's own socket.
    unsafe { libc::shutdown(started.channel.as_raw_fd(), libc::SHUT_WR) };
}

/// Writes the id maps of the init's user namespace: its uid and gid 0 are `host` on
/// the host (setgroups stays allowed: the writer is privileged, and the init drops
/// its supplementary groups itself).
pub fn map_ids(started: &Started, host: (u32, u32)) -> io::Result<()> {
    let proc = std::path::PathBuf::from(format!("/proc/{}", started.pid));
    std::fs::write(proc.join("uid_map"), format!("0 {} 1\n", host.0))?;
    std::fs::write(proc.join("gid_map"), format!("0 {} 1\n", host.1))
}

/// Reads one report from the init; None at the end of the stream.
pub fn read_report(channel: &OwnedFd) -> io::Result<Option<Report>> {
    let mut buf = [0u8; 8];
    let (n, passed) = super::fdpass::recv(channel.as_raw_fd(), &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    let errno = i32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let detail = u16::from_le_bytes([buf[2], buf[3]]);
    match buf[0] {
        b'R' => Ok(Some(Report::Ready(passed))),
        b'E' => {
            let step = Step::ALL
                .into_iter()
                .find(|s| *s as u8 == buf[1])
                .unwrap_or(Step::Exec);
            Ok(Some(Report::Failed(
                step,
                io::Error::from_raw_os_error(errno),
                detail,
            )))
        }
        _ => Err(io::Error::other(
            "unreadable report from the sandbox's init",
        )),
    }
}

/// The number of threads of this process, from /proc.
fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair(2) writes two descriptors into the local array.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Which of the mount layout's steps failed, for the report (this process's own copy).
static MOUNT_STEP: AtomicU16 = AtomicU16::new(0);

/// Sends one report (and optionally a descriptor) to the launcher. Errors are ignored:
/// a launcher that is gone cannot be told, and init exits anyway on failure.
fn send_report(channel: RawFd, kind: u8, step: u8, errno: i32, fd: Option<RawFd>) {
    let e = errno.to_le_bytes();
    let d = if step == Step::Mounts as u8 {
        MOUNT_STEP.load(Ordering::SeqCst).to_le_bytes()
    } else {
        [0, 0]
    };
    let buf = [kind, step, d[0], d[1], e[0], e[1], e[2], e[3]];
    let _ = super::fdpass::send(channel, &buf, fd);
}

/// The init's whole life: confine, report, start the command, reap, exit.
fn init_main(plan: &Plan, channel: OwnedFd) -> ! {
    let channel = channel.as_raw_fd();
    let listener = match confine(plan, channel) {
        Ok(listener) => listener,
        Err((step, e)) => {
            send_report(
                channel,
                b'E',
                step as u8,
                e.raw_os_error().unwrap_or(0),
                None,
            );
            // SAFETY: _exit(2) ends this process without running the launcher's exit code.
            unsafe { libc::_exit(127) };
        }
    };
    send_report(channel, b'R', 0, 0, listener);
    // Everything else the clone copied from the launcher (the sandbox's cgroup
    // directory, cgroup v1 files, the pinned maps, the Landlock ruleset, the listener,
    // which the launcher has now) is closed: pid 1 lives as long as the sandbox and
    // needs none of it. A second layer beside its being undumpable.
    close_all_but(channel);
    forward_signals_to_command();
    let pid = match spawn_command(plan, channel) {
        Ok(pid) => pid,
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            send_report(channel, b'E', Step::ForkCommand as u8, errno, None);
            // SAFETY: as above.
            unsafe { libc::_exit(127) };
        }
    };
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending != 0 {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(pid, pending) };
    }
    // SAFETY: our end of the channel; the command keeps its own until exec.
    unsafe { libc::close(channel) };
    let code = reap_until_command_exits(pid);
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

/// Whether the launcher's end of the report channel has hung up (the launcher is gone).
fn launcher_gone(channel: RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd: channel,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one descriptor this process owns, without waiting.
    let n = unsafe { libc::poll(&mut poll, 1, 0) };
    n > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

/// Blocks until the launcher lets this process past `gate`: 0, or -1 when the channel
/// ended or carried anything else (the launcher failed or is gone).
fn wait_for(channel: RawFd, gate: Gate) -> libc::c_int {
    let mut got = 0u8;
    // SAFETY: recv(2) of one byte into a local, on this process's own socket.
    let rc = unsafe { libc::recv(channel, (&raw mut got).cast(), 1, 0) };
    if rc == 1 && got == gate as u8 { 0 } else { -1 }
}

/// Closes every descriptor from 3 up, but `keep`.
fn close_all_but(keep: RawFd) {
    let keep = libc::c_uint::try_from(keep).unwrap_or(0);
    // SAFETY: close_range(2) on this process's own descriptor table.
    unsafe {
        if keep > 3 {
            libc::close_range(3, keep - 1, 0);
        }
        libc::close_range(keep.max(2) + 1, libc::c_uint::MAX, 0);
    }
}

/// Runs every confinement step in order; returns the seccomp listener to hand over.
fn confine(plan: &Plan, channel: RawFd) -> Result<Option<RawFd>, (Step, io::Error)> {
    let check = |step: Step| {
        move |rc: libc::c_int| {
            if rc >= 0 {
                Ok(())
            } else {
                Err((step, io::Error::last_os_error()))
            }
        }
    };
    // SAFETY: each call below takes integers or pointers to data the plan owns; this
    // process is a single-threaded copy of the launcher.
    unsafe {
        // No real-time scheduling and no raised priority, whatever the caller ran with
        // or may take: a real-time task is not bounded by cpu.max's absence (or by a v1
        // cpu cgroup that has no real-time runtime), and would starve the node. The
        // clone inherited the launcher's policy and nice value (`chrt -f`, `nice -n
        // -10`), and the limits would let the command take them again.
        let policy = libc::sched_getscheduler(0) & !SCHED_RESET_ON_FORK;
        if matches!(policy, libc::SCHED_FIFO | libc::SCHED_RR | SCHED_DEADLINE) {
            let normal = libc::sched_param { sched_priority: 0 };
            check(Step::Priorities)(libc::sched_setscheduler(0, libc::SCHED_OTHER, &normal))?;
        }
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice < 0 && *libc::__errno_location() == 0 {
            check(Step::Priorities)(libc::setpriority(libc::PRIO_PROCESS, 0, 0))?;
        }
        for limit in [libc::RLIMIT_RTPRIO, libc::RLIMIT_NICE] {
            let zero = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            check(Step::Priorities)(libc::setrlimit(limit, &zero))?;
        }
        // Into the limits before anything else (but a real-time task, which a v1 cpu
        // cgroup without real-time runtime refuses): whatever this process and the command
        // then do is counted and bounded.
        join_limits(&plan.limits).map_err(|e| (Step::JoinLimits, e))?;
        // For a user namespace, the launcher first writes its id maps (that needs the
        // host's root); one byte says done.
        check(Step::WaitForLauncher)(wait_for(channel, Gate::Confine))?;
        check(Step::NewSession)(libc::setsid())?;
        if let Some(slave) = plan.tty {
            super::tty::make_controlling(slave).map_err(|e| (Step::Terminal, e))?;
        }
        for (target, end) in (0..).zip(plan.stdio) {
            if let Some(end) = end {
                check(Step::Stdio)(libc::dup2(end, target))?;
            }
        }
        check(Step::CgroupNamespace)(libc::unshare(libc::CLONE_NEWCGROUP))?;
        // As root with every capability, pid 1 of the new pid namespace (for /proc).
        plan.layout.enter().map_err(|e| {
            MOUNT_STEP.store(u16::try_from(e.step).unwrap_or(u16::MAX), Ordering::SeqCst);
            (Step::Mounts, io::Error::from(e))
        })?;
        // pid 1 keeps descriptors of the host's mount namespace (the sandbox's cgroup
        // directory, cgroup v1 files, the maps) for its whole life. Dumpable, it would
        // let a uid-0 command (same uid, no capability) follow /proc/1/fd/N into the
        // host's writable cgroup tree and out of its cgroup, or read /proc/1/mem.
        // Undumpable, /proc/1 is off limits without CAP_SYS_PTRACE; the command's own
        // exec makes it dumpable again, for itself only.
        check(Step::Undumpable)(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0))?;
        caps::drop_all(plan.user, plan.last_cap).map_err(|e| (Step::Capabilities, e))?;
        // The sandbox dies with its launcher (SIGKILL to pid 1 ends the namespace): a
        // killed launcher must not leave a command running unsupervised, its refusals
        // unreported and its cgroups never removed. Set after the ids change, which
        // clears it; a launcher that died before this shows as a hung-up channel.
        check(Step::ParentDeath)(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ))?;
        if launcher_gone(channel) {
            return Err((Step::ParentDeath, io::Error::from_raw_os_error(libc::ESRCH)));
        }
        check(Step::NoNewPrivs)(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        plan.scope.enter().map_err(|e| (Step::Landlock, e))?;
        abi::native_syscalls_only().map_err(|e| (Step::NativeAbiFilter, e))?;
        // Last before the descriptors: its listener goes to the launcher, which answers
        // (and reports) every refused call of the command.
        let listener = plan
            .filter
            .install()
            .map_err(|e| (Step::SeccompFilter, e))?;
        let listener = Some(listener);
        check(Step::CloseDescriptors)(libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        ))?;
        Ok(listener)
    }
}

/// `sched_getscheduler`'s flag bit and the deadline policy (include/uapi/linux/sched.h).
const SCHED_RESET_ON_FORK: libc::c_int = 0x4000_0000;
const SCHED_DEADLINE: libc::c_int = 6;

/// Moves this process into each cgroup v1 limit by writing "0" (the writer itself) into
/// the cgroup's `tasks` file, opened by the launcher as root. A single thread naming
/// itself is moved without the write side of the kernel's threadgroup lock, whose RCU
/// grace period a write of its pid into `cgroup.procs` by another process pays (1–8 ms
/// on a cgroup v1 host). This process is single-threaded (a clone of the single-threaded
/// launcher), so the thread is the whole process; the command, forked later, inherits
/// the cgroups.
fn join_limits(tasks: &[RawFd]) -> io::Result<()> {
    for &fd in tasks {
        // SAFETY: write(2) of a one-byte local to a descriptor the plan owns.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The command's pid (2), for the signal handler; 0 until it is started.
static COMMAND: AtomicI32 = AtomicI32::new(0);
/// A forwarded signal that came before the command existed; sent to it once it does.
static PENDING: AtomicI32 = AtomicI32::new(0);

/// Signals the launcher passes on (and that the init, as pid 1, only receives because it
/// has a handler for them).
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

extern "C" fn forward(sig: libc::c_int) {
    let pid = COMMAND.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    } else {
        PENDING.store(sig, Ordering::SeqCst);
    }
}

fn forward_signals_to_command() {
    // SAFETY: sigaction with a handler that only makes async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = forward as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        for sig in FORWARDED {
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
        // The Rust runtime's stack-overflow handlers, copied from the launcher: pid 1 of
        // a namespace receives from inside it only the signals it handles, and a command
        // could forge a fault (`rt_sigqueueinfo` with an address in the stack guard) to
        // make it print a stack overflow and abort. By default it receives neither; a
        // real fault still ends it.
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for sig in [libc::SIGSEGV, libc::SIGBUS] {
            libc::sigaction(sig, &default, std::ptr::null_mut());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Stack of the command's process from its clone to its exec.
const SPAWN_STACK: usize = 256 << 10;

/// What the command's process needs until exec, prepared by the init beforehand (the
/// process shares the init's memory until then: it must not allocate).
struct Spawn<'a> {
    program: &'a CString,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    channel: RawFd,
}

/// Starts the command, pid 2, as posix_spawn(3) does: clone(2) with `CLONE_VM |
/// CLONE_VFORK`, so the child runs on a stack of its own in the init's memory (no copy
/// of the init's address space is made, to be torn down again at exec) and the init
/// goes on once the child has exec'd or exited. Every signal is blocked meanwhile: a
/// forwarded one waits until the command's pid is known, and none runs a handler in the
/// child, which resets them all before exec ([`exec_command`]).
fn spawn_command(plan: &Plan, channel: RawFd) -> io::Result<libc::pid_t> {
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let spawn = Spawn {
        program: &plan.program,
        argv,
        envp,
        channel,
    };
    // SAFETY: an anonymous private mapping of our own, unmapped below.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SPAWN_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sigset_t is plain data, initialised by sigfillset; sigprocmask changes
    // this (single-threaded) process's mask.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut before);
    }
    // SAFETY: clone(2) with CLONE_VM | CLONE_VFORK: `command_main` runs on the top of
    // the fresh stack with `spawn`, which outlives it (this call returns only once the
    // child has exec'd or exited).
    let pid = unsafe {
        libc::clone(
            command_main,
            stack.cast::<u8>().add(SPAWN_STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw const spawn).cast_mut().cast(),
        )
    };
    let result = if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        COMMAND.store(pid, Ordering::SeqCst);
        Ok(pid)
    };
    // SAFETY: as above; the child is past its exec (or gone), so nothing uses the stack.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        libc::munmap(stack, SPAWN_STACK);
    }
    result
}

extern "C" fn command_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn_command` passes a `Spawn` that outlives this process's use of it.
    let spawn = unsafe { &*arg.cast::<Spawn<'_>>() };
    exec_command(spawn)
}

/// pid 2: default signals, empty mask, exec. Reports a failed exec and exits 127. Runs
/// in the init's memory (see [`spawn_command`]): system calls only, no allocation.
fn exec_command(spawn: &Spawn<'_>) -> ! {
    // SAFETY: reset_signals makes sigaction/sigprocmask calls only.
    if let Err(e) = unsafe { super::reset_signals() } {
        send_report(
            spawn.channel,
            b'E',
            Step::Exec as u8,
            e.raw_os_error().unwrap_or(0),
            None,
        );
        // SAFETY: as in init_main.
        unsafe { libc::_exit(127) };
    }
    // SAFETY: execvpe(3) with NUL-terminated strings and NULL-terminated arrays that
    // outlive the call (the program is looked up on the launcher's PATH, which the
    // command's environment keeps); it returns only on failure.
    unsafe {
        libc::execvpe(
            spawn.program.as_ptr(),
            spawn.argv.as_ptr(),
            spawn.envp.as_ptr(),
        )
    };
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    send_report(spawn.channel, b'E', Step::Exec as u8, errno, None);
    // SAFETY: as above.
    unsafe { libc::_exit(127) }
}

/// Reaps every child (orphans of the namespace included) until `command` exits; its
/// exit code, or 128+N when a signal N killed it.
fn reap_until_command_exits(command: libc::pid_t) -> libc::c_int {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) writes the local status.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return 127;
        }
        if pid == command {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
        }
    }
}
