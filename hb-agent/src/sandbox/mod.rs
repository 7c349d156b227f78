//! `hb-agent sandbox run`: run one command in a fresh, enrolled, confined sandbox.
//!
//! The data path of a run: [`prepare`] (policy loaded, programs attached, user, limits,
//! the init's plan, all before any process exists) → the sandbox cgroup created and
//! enrolled → its limits applied ([`limits`]) → the init cloned straight into it
//! ([`init`]: pid 1 of its own namespaces, which confines itself and starts the command)
//! → the launcher waits, passing on SIGTERM, SIGHUP, SIGINT and SIGQUIT → anything left
//! in the cgroup is killed, the cgroup removed, and only then the enrollment dropped.
//!
//! The command is in the enrolled cgroup from the init's first instruction
//! (`CLONE_INTO_CGROUP`), so not one of its syscalls runs unenforced. What confines it is
//! listed in the init's module header and shown by `--print-confinement`: a pid namespace
//! (it cannot name another process), a session with no controlling terminal (no TIOCSTI
//! into the launcher's terminal), the user from `--user` or `[sandbox_defaults] user`
//! (1000:1000 by default; root only when asked, and then with no capability), every
//! capability gone with locked securebits, `no_new_privs`, Landlock scopes (abstract Unix
//! sockets and signals outside the sandbox, see [`crate::scope`]; without Landlock ABI 6
//! the run is refused unless `--allow-unscoped`), a native-ABI-only seccomp filter
//! ([`abi`]) and the rule filter ([`seccomp`], whose refusals a launcher thread answers
//! and writes as `seccomp` events), and only stdin, stdout and stderr crossing into it
//! (never a directory, link or non-Unix socket; a regular file as a relayed pipe, see
//! [`stdio`]).
//! Must never: start the command when the programs are not attached or the policy is not
//! loaded — that would be a sandbox in name only.

use std::{
    ffi::{CString, OsString},
    fs, io,
    os::{fd::OwnedFd, unix::ffi::OsStrExt as _},
    path::PathBuf,
};

use hb_common::{ENROLL_LAUNCHER, Enrollment};

use crate::{
    agent::is_root,
    cgroup::{self, CgroupError},
    config::Config,
    loader,
    maps::{Maps, MapsError},
    scope::{ScopeError, Scoping},
};

mod abi;
mod caps;
mod confinement;
mod environment;
mod fdpass;
mod init;
pub mod limits;
pub mod mounts;
pub mod oci;
pub mod seccomp;
mod stdio;
pub mod tenant;
mod tty;
mod user;

pub use user::{User, parse_user};

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
    #[error("no policy \"{name}\" in the config; its policies: {known}")]
    NoSuchPolicy { name: String, known: String },
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error(transparent)]
    Limit(#[from] limits::LimitError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error(transparent)]
    Mounts(#[from] mounts::MountError),
    #[error(transparent)]
    Tenant(#[from] tenant::TenantError),
    #[error("the sandbox failed while setting up its mounts ({what}); the command did not run")]
    MountStep {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot enroll sandbox cgroup {0}")]
    Enroll(PathBuf, #[source] aya::maps::MapError),
    #[error("sandbox_defaults.user {0}")]
    DefaultUser(String),
    #[error("{0}")]
    Environment(String),
    #[error("argument {0:?} holds a NUL byte, which no command line can carry")]
    NulInArgument(OsString),
    #[error("cannot create the sandbox")]
    Clone(#[source] io::Error),
    #[error("cannot open a pseudo-terminal for --tty")]
    Pty(#[source] io::Error),
    #[error("cannot make the pipes that relay a regular file on stdin, stdout or stderr")]
    Relay(#[source] io::Error),
    #[error("the sandbox failed while {step}; the command did not run")]
    Confine {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot start {command:?}")]
    Spawn {
        command: OsString,
        #[source]
        source: io::Error,
    },
    #[error("no command given (usage: hb-agent sandbox run --policy NAME -- CMD ARGS…)")]
    NoCommand,
    #[error(
        "the command's {name} (descriptor {fd}) is {kind}: a sandbox's stdin, stdout and stderr must not \
         be directories or links (they open the host's filesystem to it) nor Internet sockets (made \
         outside its cgroup, no hook judges them); redirect from a file, a pipe or /dev/null"
    )]
    StandardDescriptor {
        fd: i32,
        name: &'static str,
        kind: &'static str,
    },
    #[error("cannot inspect the command's {name} (descriptor {fd})")]
    StandardDescriptorStat {
        fd: i32,
        name: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What `hb-agent sandbox run` was asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy: String,
    /// `--user`; `[sandbox_defaults] user` when None.
    pub user: Option<User>,
    /// `--tenant`; the policy's `tenant` when None.
    pub tenant: Option<String>,
    /// `--ro-bind SRC DEST` pairs.
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    /// `--tty`: a fresh pseudo-terminal, relayed by the launcher.
    pub tty: bool,
    /// `--env KEY[=VALUE]`: variables passed besides the kept ones.
    pub env: Vec<String>,
    pub allow_unscoped: bool,
    pub command: Vec<OsString>,
}

/// A sandbox cgroup that removes itself (and then its enrollment) when dropped.
struct SandboxCgroup<'m> {
    maps: &'m mut Maps,
    path: PathBuf,
    id: u64,
    /// The cgroup's folder, locked (`flock`) from before its enrollment until after its
    /// removal: a cgroup enrolled by a launcher whose lock is free was abandoned (the
    /// launcher killed), and the agent removes it ([`cgroup::abandoned`]).
    _held: fs::File,
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
        self.maps.forget_unenrolled_socket_counts();
    }
}

/// Runs the command of `opts` in a sandbox (see the module header) and returns the exit
/// code to pass on (128+N for a command killed by signal N).
pub fn run(config: &Config, opts: &RunOptions) -> Result<i32, SandboxError> {
    let (program, _) = opts.command.split_first().ok_or(SandboxError::NoCommand)?;
    if !is_root() {
        return Err(SandboxError::NotRoot);
    }
    if !opts.tty {
        check_standard_descriptors()?;
    }
    // Put back once the run is over, however it ends: what the command did to the
    // caller's terminal does not outlive it.
    let _terminals = (!opts.tty).then(tty::CallerTerminals::save);
    check_attached(config)?;
    let mut maps = Maps::open(&config.agent.bpffs_dir)?;
    let policy_id = loaded_policy(&maps, &opts.policy)?;
    let filter = seccomp_filter(config, &opts.policy)?;
    let user = sandbox_user(config, opts)?;
    let limits = config.sandbox_defaults.limits();
    // Read once: /proc/mounts for the cgroup2 mount, mountinfo for the v1 hierarchies.
    let cgroup2 = cgroup::cgroup2_mount()?;
    let v1 = limits::V1Mounts::read();
    let layout_plan = layout_plan(config, opts, user, Some(&cgroup2), &v1, true)?;
    let env = command_environment(opts, &layout_plan)?;
    let layout = mounts::Layout::plan(&layout_plan)?;
    // Before any cgroup exists: a kernel without scopes stops here with nothing to undo.
    let scoping = Scoping::prepare(opts.allow_unscoped)?;
    let mut plan = init::Plan {
        program: c_string(program)?,
        argv: opts
            .command
            .iter()
            .map(c_string)
            .collect::<Result<_, _>>()?,
        env,
        user,
        last_cap: caps::last_cap(),
        scope: scoping.for_child(),
        userns: root_in_userns(user),
        tty: None,
        stdio: [None; 3],
        filter,
        limits: Vec::new(),
        layout,
    };
    let pty = opts
        .tty
        .then(tty::open)
        .transpose()
        .map_err(SandboxError::Pty)?;
    plan.tty = pty.as_ref().map(|p| tty::raw(&p.slave));
    let relays = stdio::Relays::prepare(opts.tty).map_err(SandboxError::Relay)?;
    plan.stdio = relays.sandbox_ends();

    let (sandbox, relative) =
        create_enrolled_cgroup(config, &mut maps, &cgroup2, &opts.policy, policy_id)?;
    let name = relative.rsplit('/').next().unwrap_or_default().to_owned();
    let applied = limits::apply(
        &limits,
        &v1,
        &cgroup2,
        config.cgroup_root(),
        &relative,
        &name,
    )?;
    let cgroup_dir: OwnedFd = fs::File::open(&sandbox.path)
        .map_err(|source| CgroupError::Io {
            path: sandbox.path.clone(),
            action: "open",
            source,
        })?
        .into();

    plan.limits = applied.tasks();
    let forwarded = block_forwarded_signals();
    let started = init::start(&plan, &cgroup_dir).map_err(SandboxError::Clone)?;
    let relayed = match relays.start() {
        Ok(relayed) => relayed,
        Err(cause) => return Err(release_failed(&started, program, &plan.layout, cause)),
    };
    // The init joins its v1 limits itself, then waits for its user namespace's ids
    // before confining itself (writing them needs the host's root). If that fails, it
    // is never released and ends with the channel.
    let released = match plan.userns {
        Some(host) => init::map_ids(&started, host),
        None => Ok(()),
    }
    .and_then(|()| init::release(&started, init::Gate::Confine));
    if let Err(cause) = released {
        return Err(release_failed(&started, program, &plan.layout, cause));
    }
    drop(scoping);
    // The sandbox holds the slave now; the launcher only relays through the master.
    let relay = match pty {
        Some(p) => {
            drop(p.slave);
            Some(tty::relay(p.master).map_err(SandboxError::Pty)?)
        }
        None => None,
    };
    let mut refusals = None;
    let outcome = await_command(&started, program, &plan.layout, |listener| {
        let reporter = seccomp::EventReporter::new(
            config.agent.state_dir.clone(),
            config.agent.events_file_max_bytes,
            opts.policy.clone(),
            sandbox.id,
            Some(relative.clone()),
        );
        refusals = Some(answer_refusals(listener, reporter));
    });
    if outcome.is_ok()
        && let Some(set) = forwarded
    {
        let pidfd = started.pidfd.try_clone().ok();
        if let Some(pidfd) = pidfd {
            std::thread::spawn(move || forward_signals(set, pidfd));
        }
    }
    let code = wait_exit(started.pid);
    if let Some(thread) = refusals {
        // The init is reaped: the filter has no user left, so the listener hangs up
        // and the thread ends once it has answered what was queued.
        let _ = thread.join();
    }
    if let Some(relay) = relay {
        relay.finish();
    }
    drop(applied);
    drop(sandbox);
    // The sandbox is gone (after the clean-up: a descriptor smuggled out to a process
    // that holds it must not keep the cgroup alive): the relays copy what their pipes
    // hold and end, whoever else holds a pipe.
    relayed.finish();
    outcome.map(|()| code)
}

/// The seccomp filter for `policy`, compiled before any fork (it allocates).
fn seccomp_filter(config: &Config, policy: &str) -> Result<seccomp::Filter, SandboxError> {
    let allow_io_uring = config
        .policies
        .iter()
        .find(|p| p.name.as_ref() == policy)
        .is_some_and(|p| p.allow_io_uring);
    Ok(seccomp::Filter::build(allow_io_uring)?)
}

/// Starts the launcher's thread that answers the sandbox's refused system calls (EPERM)
/// and writes a `seccomp` event for each, under the sandbox's event budget.
fn answer_refusals(
    listener: OwnedFd,
    mut reporter: seccomp::EventReporter,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        seccomp::answer_refusals(listener, &mut reporter);
        reporter.finish();
    })
}

/// Stdin, stdout and stderr cross into the sandbox as they are (without `--tty`). A
/// directory there (`< /`, a supervisor's inherited descriptor) is one of the host's
/// mount namespace: `/proc/self/fd/0/…` or `openat(0, "..")` would walk the host's tree
/// from it, past every cover and on the host's read-write mounts. An `O_PATH` symbolic
/// link resolves on the host's side the same way. A socket other than a Unix one was
/// made outside the sandbox, so it is the caller's cgroup's, which no hook of the
/// sandbox's judges: a UDP one sends anywhere, a TCP one is dropped with
/// `connect(AF_UNSPEC)` and connected anywhere. All are refused before anything is made.
fn check_standard_descriptors() -> Result<(), SandboxError> {
    for (fd, name) in [(0, "stdin"), (1, "stdout"), (2, "stderr")] {
        // SAFETY: stat is plain data; fstat(2) writes it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat(2) of a descriptor number into a local.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EBADF) {
                // Closed: nothing crosses. (Rust's runtime opens /dev/null in place of a
                // closed 0-2 before `main`, so the hb-agent binary does not get here.)
                continue;
            }
            return Err(SandboxError::StandardDescriptorStat { fd, name, source });
        }
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => "a directory",
            libc::S_IFLNK => "a symbolic link",
            libc::S_IFSOCK if socket_domain(fd) != Some(libc::AF_UNIX) => {
                "a socket other than a Unix one"
            }
            _ => continue,
        };
        return Err(SandboxError::StandardDescriptor { fd, name, kind });
    }
    Ok(())
}

/// The address family of socket `fd` (`SO_DOMAIN`), None if it cannot be read.
fn socket_domain(fd: libc::c_int) -> Option<libc::c_int> {
    let mut domain: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes one int into a local.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_DOMAIN,
            (&raw mut domain).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(domain)
}

/// Every program the config needs is attached (pinned links of a running agent).
fn check_attached(config: &Config) -> Result<(), SandboxError> {
    let bpffs = &config.agent.bpffs_dir;
    for (link, pinned) in loader::pinned_links(bpffs, &loader::programs()) {
        if !pinned {
            return Err(SandboxError::NotAttached(
                bpffs.join(hb_common::pin_dirs::LINKS).join(link),
            ));
        }
    }
    Ok(())
}

/// `--print-confinement`: what a run of `opts` would give its command, as text or JSON;
/// an unknown policy or user is the same error a run would give.
pub fn print_confinement(
    config: &Config,
    opts: &RunOptions,
    json: bool,
) -> Result<(), SandboxError> {
    if !config
        .policies
        .iter()
        .any(|p| *p.name.get_ref() == opts.policy)
    {
        return Err(SandboxError::NoSuchPolicy {
            name: opts.policy.clone(),
            known: config
                .policies
                .iter()
                .map(|p| p.name.get_ref().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let user = sandbox_user(config, opts)?;
    let cgroup2 = cgroup::cgroup2_mount().ok();
    let v1 = limits::V1Mounts::read();
    let mounts = mounts::Layout::preview(&layout_plan(
        config,
        opts,
        user,
        cgroup2.as_deref(),
        &v1,
        false,
    )?)?;
    let described = confinement::describe(config, opts, user, &mounts);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&described).unwrap_or_default()
        );
    } else {
        confinement::print_text(&described);
    }
    Ok(())
}

/// The id of `name` among the policies the running agent loaded.
fn loaded_policy(maps: &Maps, name: &str) -> Result<u32, SandboxError> {
    if let Some(p) = maps.loaded_policy(name)? {
        return Ok(p.id);
    }
    // Not loaded: the error names those that are.
    let loaded = maps.loaded_policies()?;
    Err(SandboxError::UnknownPolicy {
        name: name.to_owned(),
        loaded: loaded
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The host uid and gid a `--user 0` command's root is, in a user namespace of its own:
/// the overflow user, who owns nothing. Root's files, sockets and locks on the host are
/// then other people's to it, as to any user. Other users need no user namespace.
const ROOT_ON_HOST: (u32, u32) = (65534, 65534);

pub(crate) fn root_in_userns(user: User) -> Option<(u32, u32)> {
    (user.uid == 0).then_some(ROOT_ON_HOST)
}

/// The host ids that own what the sandbox's user makes (its tenant folder).
fn host_ids(user: User) -> (u32, u32) {
    root_in_userns(user).unwrap_or((user.uid, user.gid))
}

/// `--user`, else `[sandbox_defaults] user`.
fn sandbox_user(config: &Config, opts: &RunOptions) -> Result<User, SandboxError> {
    match opts.user {
        Some(u) => Ok(u),
        None => parse_user(&config.sandbox_defaults.user).map_err(SandboxError::DefaultUser),
    }
}

fn c_string(s: &OsString) -> Result<CString, SandboxError> {
    CString::new(s.as_bytes()).map_err(|_| SandboxError::NulInArgument(s.clone()))
}

/// Creates the sandbox's cgroup below `cgroup_root/sandboxes` and enrolls it under
/// `policy_id`; returns it (removed again when dropped) and its path below the mount.
fn create_enrolled_cgroup<'m>(
    config: &Config,
    maps: &'m mut Maps,
    mount: &std::path::Path,
    policy: &str,
    policy_id: u32,
) -> Result<(SandboxCgroup<'m>, String), SandboxError> {
    let parent = format!("{}/sandboxes", config.cgroup_root());
    cgroup::create(mount, &parent)?;
    let relative = format!("{parent}/{}", unique_name(policy));
    let path = mount.join(&relative);
    fs::create_dir(&path).map_err(|source| CgroupError::Io {
        path: path.clone(),
        action: "mkdir",
        source,
    })?;
    let held = match cgroup::hold(&path) {
        Ok(held) => held,
        Err(e) => {
            let _ = fs::remove_dir(&path);
            return Err(e.into());
        }
    };
    let id = cgroup::cgroup_id(&path)?;
    // Leave the agent a note of which cgroup this id was, so events that arrive after the
    // sandbox (and its cgroup) are gone still name it. Best effort: no secret, no argv.
    cgroup::remember(&config.agent.state_dir, id, &relative);
    let enrollment = Enrollment {
        policy_id,
        flags: ENROLL_LAUNCHER,
    };
    if let Err(e) = maps.enrolled.insert(id, enrollment, 0) {
        let _ = fs::remove_dir(&path);
        return Err(SandboxError::Enroll(path, e));
    }
    let sandbox = SandboxCgroup {
        maps,
        path,
        id,
        _held: held,
    };
    sandbox.maps.bump_generation()?;
    Ok((sandbox, relative))
}

/// The main socket's folder holds nothing but the main socket and the policies' socket
/// folder: a sandbox may be shown its policy's socket folder there instead (it follows
/// an agent restart), hiding nothing else of the host's.
fn holds_only_hbs_sockets(broker: &crate::config::BrokerConfig) -> bool {
    let Some(folder) = broker.socket.parent() else {
        return false;
    };
    let policies = broker.policy_sockets_dir();
    let ours = |name: &std::ffi::OsStr| {
        Some(name) == broker.socket.file_name() || folder.join(name) == policies
    };
    std::fs::read_dir(folder).is_ok_and(|entries| {
        entries
            .map(|e| e.map(|e| e.file_name()))
            .all(|name| name.is_ok_and(|n| ours(&n)))
    })
}

/// The host paths of the Unix sockets bound in this network namespace
/// (`/proc/net/unix`): daemons' sockets the sandbox could otherwise connect to. The
/// table gives each path as its binder saw it, so only a path that is a socket on the
/// host counts (a sandbox binding "/work/x" in its own folder names nothing here).
/// Those bound after the sandbox starts are not in the list.
fn bound_unix_sockets() -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt as _;
    let table = limits::read_proc(std::path::Path::new("/proc/net/unix")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(socket_path_field)
        .map(PathBuf::from)
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The path of one `/proc/net/unix` line: whatever follows its seven fixed fields
/// (spaces included), if it is a pathname (abstract names start with `@`).
fn socket_path_field(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    for _ in 0..7 {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    rest.starts_with('/').then_some(rest)
}

/// The command's environment (see [`environment`]): `HOME` is the work mount when
/// there is one, else `/`.
fn command_environment(
    opts: &RunOptions,
    layout: &mounts::LayoutPlan,
) -> Result<Vec<CString>, SandboxError> {
    let home = layout
        .work
        .as_ref()
        .map_or(std::path::Path::new("/"), |(_, mount)| mount.as_path());
    environment::build(std::env::vars_os(), &opts.env, home).map_err(SandboxError::Environment)
}

/// What the sandbox's filesystem is made of (see [`mounts`]): the agent's own secrets
/// and [`mounts::HOST_PRIVATE`] hidden, the broker socket bound in, and the tenant's
/// work dir (`--tenant`, else the policy's `tenant`) at `work_mount` — made first when
/// `prepare` (a run; `--print-confinement` only names it). `cgroup2` is the host's
/// cgroup2 mount, `v1` its cgroup v1 hierarchies.
fn layout_plan(
    config: &Config,
    opts: &RunOptions,
    user: User,
    cgroup2: Option<&std::path::Path>,
    v1: &limits::V1Mounts,
    prepare: bool,
) -> Result<mounts::LayoutPlan, SandboxError> {
    let agent = &config.agent;
    let defaults = &config.sandbox_defaults;
    let tenants_dir = if defaults.tenants_dir.as_os_str().is_empty() {
        agent.state_dir.join("tenants")
    } else {
        defaults.tenants_dir.clone()
    };
    let tenant = opts.tenant.clone().or_else(|| {
        config
            .policies
            .iter()
            .find(|p| *p.name.get_ref() == opts.policy)
            .map(|p| p.tenant.clone())
            .filter(|t| !t.is_empty())
    });
    let work = match tenant {
        Some(name) if prepare => {
            let (uid, gid) = host_ids(user);
            Some(tenant::prepare_work_dir(&tenants_dir, &name, uid, gid)?)
        }
        Some(name) => {
            tenant::validate_name(&name)?;
            Some(tenants_dir.join(name).join("work"))
        }
        None => None,
    };
    let mut hidden = vec![
        agent.state_dir.clone(),
        agent.master_key_file.clone(),
        tenants_dir,
        agent.bpffs_dir.clone(),
    ];
    hidden.extend(mounts::HOST_PRIVATE.iter().map(PathBuf::from));
    // Every policy's socket folder, as a whole: a cover on a socket file (below) is a
    // mount on that file, which the host's unlink detaches here (an agent restart binds
    // a new socket there, another policy's then reachable, its backlog fillable), and it
    // names only the sockets bound when the sandbox starts. The sandbox's own socket is
    // bound in from its source, cloned before anything is hidden.
    hidden.push(config.broker.policy_sockets_dir());
    // The host's cgroup v1 trees list every sandbox (policy, launcher pid) and service;
    // the sandbox's own limits there were joined before the mounts.
    hidden.extend(v1.points());
    if root_in_userns(user).is_some()
        && let Some(v2) = cgroup2
    {
        hidden.push(v2.to_owned());
    }
    // Pathname Unix sockets: a read-only mount does not stop connect(2), and a --user 0
    // command owns root's sockets. Every socket bound by a path in this network
    // namespace (which the sandbox shares) is covered, but the broker's.
    hidden.extend(
        bound_unix_sockets()
            .into_iter()
            .filter(|p| *p != config.broker.socket),
    );
    Ok(mounts::LayoutPlan {
        broker_socket: config.broker.socket.clone(),
        broker_socket_source: config.broker.policy_socket(&opts.policy),
        broker_folder: holds_only_hbs_sockets(&config.broker),
        hidden,
        // Validated with the config: a size above zero.
        tmp_size_bytes: limits::parse_size(&defaults.tmp_size)
            .ok()
            .flatten()
            .unwrap_or(256 << 20),
        shm_size_bytes: mounts::LayoutPlan::DEFAULT_SHM_SIZE,
        work: work.map(|w| (w, defaults.work_mount.clone())),
        ro_binds: opts.ro_binds.clone(),
        // A user namespace may not mount cgroup2 here (EBUSY): the host's is covered
        // instead (see `hidden`), and the command sees no cgroup tree at all.
        cgroup2_mount: if root_in_userns(user).is_some() {
            None
        } else {
            cgroup2.map(std::path::Path::to_owned)
        },
        user_namespace: root_in_userns(user).is_some(),
    })
}

/// The launcher could not release the init (`cause`): the init is told (it ends at its
/// wait), and if it failed a step of its own first (joining its limits, say) — then it
/// was gone when the launcher came — its report names that step instead.
fn release_failed(
    started: &init::Started,
    program: &OsString,
    layout: &mounts::Layout,
    cause: io::Error,
) -> SandboxError {
    init::hang_up(started);
    match await_command(started, program, layout, drop) {
        Err(own @ SandboxError::Confine { step, .. })
            if step != init::Step::WaitForLauncher.describe() && step != "starting" =>
        {
            own
        }
        _ => SandboxError::Clone(cause),
    }
}

/// Reads the init's reports until the command runs: Ok once it has exec'd, the failed
/// step otherwise (the init has exited or is exiting then).
fn await_command(
    started: &init::Started,
    program: &OsString,
    layout: &mounts::Layout,
    on_listener: impl FnOnce(OwnedFd),
) -> Result<(), SandboxError> {
    let unexpected_end = || SandboxError::Confine {
        step: "starting",
        source: io::Error::other("the sandbox's init ended without a report"),
    };
    match init::read_report(&started.channel).map_err(SandboxError::Clone)? {
        None => return Err(unexpected_end()),
        Some(init::Report::Failed(init::Step::Mounts, source, detail)) => {
            return Err(SandboxError::MountStep {
                what: layout.explain_step(usize::from(detail)),
                source,
            });
        }
        Some(init::Report::Failed(step, source, _)) => {
            return Err(SandboxError::Confine {
                step: step.describe(),
                source,
            });
        }
        // Before the command can run: it waits in any refused call until answered.
        Some(init::Report::Ready(Some(listener))) => on_listener(listener),
        Some(init::Report::Ready(None)) => {
            return Err(SandboxError::Confine {
                step: init::Step::SeccompFilter.describe(),
                source: io::Error::other("the sandbox's init sent no seccomp listener"),
            });
        }
    }
    match init::read_report(&started.channel).map_err(SandboxError::Clone)? {
        None => Ok(()),
        Some(init::Report::Failed(init::Step::Exec, source, _)) => Err(SandboxError::Spawn {
            command: program.clone(),
            source,
        }),
        Some(init::Report::Failed(step, source, _)) => Err(SandboxError::Confine {
            step: step.describe(),
            source,
        }),
        Some(init::Report::Ready(_)) => Err(unexpected_end()),
    }
}

/// Waits for the init to exit; its code (the command's), or 128+N for a signal N.
fn wait_exit(pid: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) on our own child, writing a local.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
            continue;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return 127;
        }
    }
}

/// Signals the launcher passes on to the sandbox's init, which passes them to the
/// command: a supervisor stopping the launcher, a closed terminal, and the terminal's
/// ^C and ^\ (the command has no terminal of its own, so only the launcher gets those).
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT];

/// Blocks [`FORWARDED`] in this (still single-threaded) process; None if that failed,
/// and then they keep their default action (the launcher ends, the sandbox runs on in
/// its enrolled cgroup: still enforced, only the cleanup is lost).
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

/// Waits for the blocked signals in `set` and sends each to the init behind `pidfd`,
/// for as long as the launcher lives.
fn forward_signals(set: libc::sigset_t, pidfd: OwnedFd) {
    use std::os::fd::AsRawFd as _;
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
                pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

/// Default action for every signal that has one to set, then an empty mask (after the
/// dispositions, so no signal blocked until now runs a handler inherited from the
/// launcher).
///
/// # Safety
/// Called in the command's process before exec: sigaction(2) and sigprocmask(2) only.
pub(super) unsafe fn reset_signals() -> io::Result<()> {
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

fn unique_name(policy: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{policy}-{}-{nanos:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_read_whole_from_proc_net_unix() {
        let line = |rest: &str| {
            format!("0000000000000000: 00000002 00000000 00010000 0001 01 12345 {rest}")
        };
        assert_eq!(
            socket_path_field(&line("/run/a b.sock")),
            Some("/run/a b.sock")
        );
        assert_eq!(socket_path_field(&line("@abstract")), None);
        // No path at all (an unbound socket), and the inode padded with spaces.
        assert_eq!(
            socket_path_field("0000000000000000: 00000002 00000000 00000000 0001 03    77"),
            None
        );
        assert_eq!(
            socket_path_field("0000000000000000: 00000002 00000000 00010000 0001 01    77 /x"),
            Some("/x")
        );
    }
}
