//! Resource limits of a sandbox: `pids.max`, memory and CPU, from `[sandbox_defaults]`.
//!
//! Owns: putting each limit where this host's kernel keeps that controller. On a pure
//! cgroup2 host that is the sandbox's own cgroup (the controllers enabled down the path
//! from `cgroup_root`). On a hybrid host, where the controllers sit in cgroup v1
//! hierarchies and the v2 tree only tells sockets apart, a v1 cgroup of the sandbox's
//! own is made per controller below the launcher's cgroup there (limits the host put on
//! hb still hold above it), and the sandbox's init joins them before anything else.
//! Must never: start a sandbox without a limit the config asks for; a limit the host
//! cannot apply is an error that names the controller (set the key to 0 or "" to run
//! without it).

use std::{
    fs,
    io::{self, Write as _},
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error(
        "the {controller} controller is neither enabled in the cgroup2 tree above {below} nor mounted as a cgroup v1 hierarchy, so {key} cannot be applied (set it to {off} to run sandboxes without it)"
    )]
    NoController {
        controller: &'static str,
        below: PathBuf,
        key: &'static str,
        off: &'static str,
    },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What `[sandbox_defaults]` asks for; `None` is no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub pids_max: Option<u64>,
    pub memory_max: Option<u64>,
    /// `cpu.max` syntax: `QUOTA PERIOD` in microseconds.
    pub cpu_max: Option<(u64, u64)>,
}

/// One controller's limit and where it went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Placed {
    pub controller: &'static str,
    pub file: PathBuf,
    pub value: String,
}

/// The limits as applied: the files written, the v1 cgroups to remove afterwards and
/// the `tasks` file of each, which the sandbox's init writes itself into.
#[derive(Debug, Default)]
pub struct Applied {
    pub placed: Vec<Placed>,
    v1_dirs: Vec<PathBuf>,
    v1_tasks: Vec<OwnedFd>,
}

impl Applied {
    /// The v1 `tasks` files the sandbox's init joins by writing "0" (itself) into each,
    /// first thing after the clone ([`super::init::join_limits`]). The kernel moves a
    /// single thread that names itself without the write side of its threadgroup lock,
    /// whose RCU grace period (1–8 ms on a cgroup v1 host) a launcher writing the
    /// init's pid into `cgroup.procs` pays on every run.
    pub fn tasks(&self) -> Vec<RawFd> {
        self.v1_tasks.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

impl Drop for Applied {
    /// Removes the v1 cgroups made for the sandbox, however the run ends (its processes
    /// are gone by then, or going: the pid namespace ends with its init). Best effort,
    /// retried while the kernel reaps.
    fn drop(&mut self) {
        self.v1_tasks.clear();
        for dir in self.v1_dirs.iter().rev() {
            for _ in 0..100 {
                match fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
        }
    }
}

/// One controller: its name, the v2 file and value, the v1 file and value, and the
/// config key that asked for it.
struct Wanted {
    controller: &'static str,
    key: &'static str,
    off: &'static str,
    v2: (&'static str, String),
    v1: (&'static str, String),
}

impl Limits {
    fn wanted(&self) -> Vec<Wanted> {
        let mut out = Vec::new();
        if let Some(n) = self.pids_max {
            out.push(Wanted {
                controller: "pids",
                key: "sandbox_defaults.pids_max",
                off: "0",
                v2: ("pids.max", n.to_string()),
                v1: ("pids.max", n.to_string()),
            });
        }
        if let Some(bytes) = self.memory_max {
            out.push(Wanted {
                controller: "memory",
                key: "sandbox_defaults.memory_max",
                off: "\"\"",
                v2: ("memory.max", bytes.to_string()),
                v1: ("memory.limit_in_bytes", bytes.to_string()),
            });
        }
        if let Some((quota, period)) = self.cpu_max {
            out.push(Wanted {
                controller: "cpu",
                key: "sandbox_defaults.cpu_max",
                off: "\"\"",
                v2: ("cpu.max", format!("{quota} {period}")),
                v1: ("cpu.cfs_quota_us", quota.to_string()),
            });
        }
        out
    }
}

/// Applies `limits` to the sandbox cgroup `cgroup` (v2, at `mount`/`relative`), whose
/// ancestors from `root` (the agent's `cgroup_root`) down get the controllers enabled.
/// `name` names the v1 cgroups, when this host needs them (found in `v1`).
pub fn apply(
    limits: &Limits,
    v1: &V1Mounts,
    mount: &Path,
    root: &str,
    relative: &str,
    name: &str,
) -> Result<Applied, LimitError> {
    let mut applied = Applied::default();
    let cgroup = mount.join(relative);
    let wanted = limits.wanted();
    if wanted.is_empty() {
        return Ok(applied);
    }
    // Read once for every controller: what the v2 tree has at `root`, and (only when a
    // controller lives in a v1 hierarchy) the launcher's own cgroups.
    let available = read_proc(&mount.join(root).join("cgroup.controllers")).unwrap_or_default();
    let mut own: Option<String> = None;
    for want in wanted {
        if enable_v2(&available, mount, root, relative, want.controller)? {
            let file = cgroup.join(want.v2.0);
            write(&file, &want.v2.1)?;
            applied.placed.push(Placed {
                controller: want.controller,
                file,
                value: want.v2.1,
            });
            continue;
        }
        let own = own
            .get_or_insert_with(|| read_proc(Path::new("/proc/self/cgroup")).unwrap_or_default());
        let Some(dir) = v1_cgroup(v1, own, want.controller, name)? else {
            return Err(LimitError::NoController {
                controller: want.controller,
                below: cgroup,
                key: want.key,
                off: want.off,
            });
        };
        applied.v1_dirs.push(dir.clone());
        let file = dir.join(want.v1.0);
        write(&file, &want.v1.1)?;
        if want.controller == "cpu"
            && let Some((_, period)) = limits.cpu_max
        {
            write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
        }
        let tasks = dir.join("tasks");
        let fd = fs::OpenOptions::new()
            .write(true)
            .open(&tasks)
            .map_err(io_err("open", &tasks))?;
        applied.v1_tasks.push(fd.into());
        applied.placed.push(Placed {
            controller: want.controller,
            file,
            value: want.v1.1,
        });
    }
    Ok(applied)
}

/// Enables `controller` in `cgroup.subtree_control` from `root` down to the sandbox's
/// parent, if the cgroup2 tree has it at `root` at all; false when it does not (the
/// controller lives in a v1 hierarchy, or the host did not delegate it to us).
fn enable_v2(
    available: &str,
    mount: &Path,
    root: &str,
    relative: &str,
    controller: &str,
) -> Result<bool, LimitError> {
    let root_dir = mount.join(root);
    if !available.split_whitespace().any(|c| c == controller) {
        return Ok(false);
    }
    let parent_rel = relative.rsplit_once('/').map_or("", |(p, _)| p);
    let below_root = parent_rel
        .strip_prefix(root)
        .map(|rest| rest.trim_start_matches('/'))
        .unwrap_or("");
    let mut dir = root_dir;
    let mut levels = vec![dir.clone()];
    for part in below_root.split('/').filter(|p| !p.is_empty()) {
        dir = dir.join(part);
        levels.push(dir.clone());
    }
    for level in levels {
        let control = level.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&control).unwrap_or_default();
        if !enabled.split_whitespace().any(|c| c == controller) {
            write(&control, &format!("+{controller}"))?;
        }
    }
    Ok(true)
}

/// A fresh v1 cgroup for the sandbox in `controller`'s hierarchy, below the launcher's
/// own cgroup there (`own`: its `/proc/self/cgroup`); None when no v1 hierarchy has the
/// controller.
fn v1_cgroup(
    v1: &V1Mounts,
    own: &str,
    controller: &str,
    name: &str,
) -> Result<Option<PathBuf>, LimitError> {
    let Some(mount) = v1.mount_of(controller) else {
        return Ok(None);
    };
    let own_path = own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let controllers = parts.next()?;
        let path = parts.next()?;
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.trim_start_matches('/').to_owned())
    });
    let parent = mount
        .join(own_path.unwrap_or_default())
        .join("hb-sandboxes");
    sweep_abandoned(&parent);
    let dir = parent.join(name);
    fs::create_dir_all(&dir).map_err(io_err("mkdir", &dir))?;
    Ok(Some(dir))
}

/// The most leftover v1 cgroups one launcher removes (about 30 µs each here, so some
/// 30 ms at most): a start never pays for a host's whole backlog at once, the next
/// launchers take the rest.
const SWEPT_PER_START: usize = 1024;

/// Removes, below `parent` (a v1 hierarchy's `hb-sandboxes` folder), the cgroups of
/// launchers that are gone. A launcher removes its own when it ends ([`Applied`]'s
/// drop); one killed with SIGKILL cannot, and on a hybrid host its empty v1 cgroups
/// stayed for good, one per controller per killed run (attack review 38: 1,774 on one
/// test machine). The agent cannot sweep them: they sit below each launcher's own v1
/// cgroup, which only that launcher knows. A folder goes when its name is a sandbox's
/// (`<policy>-<launcher pid>-<8 hex digits>`), that pid is no live process, and the
/// kernel lets it go (`rmdir` of a cgroup that holds a task or a child fails). A live
/// launcher's folder is never touched; a dead one's whose pid was reused waits for a
/// later sweep. Best effort: an error here never stops a sandbox.
fn sweep_abandoned(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let mut swept = 0;
    for entry in entries.flatten() {
        if swept == SWEPT_PER_START {
            break;
        }
        let Some(pid) = entry.file_name().to_str().and_then(launcher_pid) else {
            continue;
        };
        if !process_alive(pid) && fs::remove_dir(entry.path()).is_ok() {
            swept += 1;
        }
    }
}

/// The launcher pid a sandbox cgroup's name carries (`<policy>-<pid>-<8 hex digits>`,
/// `super::unique_name`); None for any other name.
fn launcher_pid(name: &str) -> Option<libc::pid_t> {
    let mut parts = name.rsplitn(3, '-');
    let nanos = parts.next()?;
    let pid = parts.next()?;
    let policy = parts.next()?;
    let hex = nanos.len() == 8 && nanos.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    if !hex || !digits || policy.is_empty() {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Whether a process with this pid exists (in the launcher's pid namespace). A pid we
/// may not signal (`EPERM`) is alive.
fn process_alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the target exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The host's cgroup v1 hierarchies (a hybrid host's `/sys/fs/cgroup/memory`, …), read
/// once from mountinfo: their mount points, which the sandbox gets covered (they show
/// every other sandbox and host service), and the controllers each holds.
#[derive(Debug, Default)]
pub struct V1Mounts {
    /// (mount point, super options: the controllers and flags).
    mounts: Vec<(PathBuf, String)>,
}

impl V1Mounts {
    pub fn read() -> V1Mounts {
        Self::parse(&read_proc(Path::new("/proc/self/mountinfo")).unwrap_or_default())
    }

    fn parse(info: &str) -> V1Mounts {
        let mounts = info
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let mut right = right.split_whitespace();
                if right.next()? != "cgroup" {
                    return None;
                }
                let _source = right.next()?;
                let options = right.next().unwrap_or_default();
                let mount_point = left.split_whitespace().nth(4)?;
                Some((PathBuf::from(mount_point), options.to_owned()))
            })
            .collect();
        V1Mounts { mounts }
    }

    /// Every v1 hierarchy's mount point.
    pub fn points(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.mounts.iter().map(|(p, _)| p.clone())
    }

    /// Where the hierarchy holding `controller` is mounted (its super options name it).
    fn mount_of(&self, controller: &str) -> Option<&Path> {
        self.mounts
            .iter()
            .find(|(_, options)| options.split(',').any(|o| o == controller))
            .map(|(p, _)| p.as_path())
    }
}

/// A /proc (or cgroupfs) file whole, in one or two reads: `fs::read_to_string` starts
/// these zero-sized files with 32-byte probes and doubles from there, and each read makes
/// the kernel walk its table again.
pub(super) fn read_proc(path: &Path) -> io::Result<String> {
    use std::io::Read as _;
    let mut text = String::with_capacity(16 << 10);
    fs::File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

fn write(path: &Path, value: &str) -> Result<(), LimitError> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(io_err("write", path))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LimitError {
    let path = path.to_owned();
    move |source| LimitError::Io {
        action,
        path,
        source,
    }
}

/// `2G`, `512M`, `64K`, `1048576`: bytes (binary units); "" or "max" is no limit.
pub fn parse_size(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.is_empty() || t == "max" {
        return Ok(None);
    }
    let (digits, shift) = match t.as_bytes()[t.len() - 1].to_ascii_uppercase() {
        b'K' => (&t[..t.len() - 1], 10),
        b'M' => (&t[..t.len() - 1], 20),
        b'G' => (&t[..t.len() - 1], 30),
        b'T' => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (expected e.g. 2G, 512M, 65536 or \"max\")"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n && *v > 0)
        .map(Some)
        .ok_or_else(|| format!("{s:?} is not a size above zero that fits in 64 bits"))
}

/// `cpu.max` syntax: `"QUOTA PERIOD"` or `"QUOTA"` (period 100000 µs); "" or "max" is
/// no limit.
pub fn parse_cpu_max(s: &str) -> Result<Option<(u64, u64)>, String> {
    let mut parts = s.split_whitespace();
    let bad = || {
        format!(
            "{s:?} is not cpu.max syntax (expected \"QUOTA PERIOD\" in µs, e.g. \"50000 100000\" for half a CPU, or \"max\")"
        )
    };
    let Some(quota) = parts.next() else {
        return Ok(None);
    };
    if quota == "max" {
        return Ok(None);
    }
    let quota: u64 = quota.parse().map_err(|_| bad())?;
    let period: u64 = match parts.next() {
        Some(p) => p.parse().map_err(|_| bad())?,
        None => 100_000,
    };
    if parts.next().is_some() || quota < 1000 || !(1000..=1_000_000).contains(&period) {
        return Err(bad());
    }
    Ok(Some((quota, period)))
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_sandbox_names_its_launcher() {
        let own = std::process::id() as libc::pid_t;
        assert_eq!(
            launcher_pid(&super::super::unique_name("web-tier")),
            Some(own)
        );
        assert_eq!(launcher_pid("a-11147-35f8415e"), Some(11147));
        for other in [
            "a-11147-35f8415",
            "a-x1147-35f8415e",
            "-11147-35f8415e",
            "cpu",
            "a-0-35f8415e",
        ] {
            assert_eq!(launcher_pid(other), None, "{other}");
        }
    }

    /// Dead launchers' empty folders go, a live launcher's and any other name stay, and
    /// a folder the kernel would not let go (here: not empty) stays.
    #[test]
    fn a_sweep_removes_only_dead_launchers_folders() {
        let parent = std::env::temp_dir().join(format!("hb-sweep-{}", std::process::id()));
        let _ = fs::remove_dir_all(&parent);
        let dead = dead_pid();
        let names = [
            format!("web-{dead}-0000abcd"),
            format!("web-{}-0000abcd", std::process::id()),
            "not-a-sandbox".to_owned(),
            format!("busy-{dead}-0000abcd"),
        ];
        for n in &names {
            fs::create_dir_all(parent.join(n)).expect("mkdir");
        }
        fs::write(parent.join(&names[3]).join("tasks"), "1").expect("a file inside");
        sweep_abandoned(&parent);
        let left: Vec<bool> = names.iter().map(|n| parent.join(n).exists()).collect();
        fs::remove_dir_all(&parent).expect("clean up");
        assert_eq!(left, [false, true, true, true]);
    }

    /// A pid no process has: a child that was reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap true");
        pid
    }
    use super::*;

    #[test]
    fn sizes_and_cpu_are_read() {
        assert_eq!(parse_size("2G"), Ok(Some(2 << 30)));
        assert_eq!(parse_size("512m"), Ok(Some(512 << 20)));
        assert_eq!(parse_size("4096"), Ok(Some(4096)));
        assert_eq!(parse_size(""), Ok(None));
        assert_eq!(parse_size("max"), Ok(None));
        for bad in ["2X", "G", "-1", "0", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_cpu_max("50000 100000"), Ok(Some((50000, 100000))));
        assert_eq!(parse_cpu_max("200000"), Ok(Some((200000, 100000))));
        assert_eq!(parse_cpu_max(""), Ok(None));
        for bad in ["x", "5 100000", "50000 1", "1 2 3"] {
            assert!(parse_cpu_max(bad).is_err(), "{bad}");
        }
    }
}
