//! The cgroup2 filesystem: finding its mount, walking the tree below hb's root, creating
//! and removing sandbox cgroups.
//!
//! Owns: every path and id computation for cgroups. A cgroup's id (what the kernel's
//! `bpf_get_current_cgroup_id` returns) is the inode number of its cgroup2 directory.
//! Must never: remove a cgroup it did not create.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 filesystem is mounted (looked in /proc/mounts); hb needs cgroup v2")]
    NoCgroup2,
    #[error("cannot read /proc/mounts")]
    Mounts(#[source] io::Error),
    #[error("cgroup {path}: {action} failed")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, CgroupError>;

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io {
        path,
        action,
        source,
    }
}

/// Where cgroup2 is mounted. Prefers `/sys/fs/cgroup` (pure v2 nodes) over other mounts
/// such as `/sys/fs/cgroup/unified` (hybrid hosts).
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").map_err(CgroupError::Mounts)?;
    let mut found: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir.replace("\\040", " ")))
        })
        .collect();
    found.sort_by_key(|p| p != Path::new("/sys/fs/cgroup"));
    found.into_iter().next().ok_or(CgroupError::NoCgroup2)
}

/// The id the kernel uses for the cgroup at `path`.
pub fn cgroup_id(path: &Path) -> Result<u64> {
    fs::metadata(path)
        .map(|m| m.ino())
        .map_err(io_err(path, "stat"))
}

/// `CAP_NET_RAW`'s bit in a capability set.
const CAP_NET_RAW_BIT: u64 = 1 << 13;

/// A process directly in cgroup `dir` whose bounding set holds `CAP_NET_RAW` (it holds
/// the capability, or may gain it by an exec), if any: `CapBnd` of `/proc/<pid>/status`.
pub fn net_raw_holder(dir: &Path) -> Option<u32> {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    procs
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| {
                    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
                    u64::from_str_radix(hex.trim(), 16).ok()
                })
                .is_some_and(|bounding| bounding & CAP_NET_RAW_BIT != 0)
        })
}

/// Whether a process lives in the cgroup or below it (`populated 1` in its
/// `cgroup.events`).
pub fn populated(path: &Path) -> bool {
    fs::read_to_string(path.join("cgroup.events"))
        .is_ok_and(|t| t.lines().any(|l| l == "populated 1"))
}

/// Opens the cgroup folder at `path` and locks it (`flock`, exclusive) for as long as
/// the returned file is open: `sandbox run` holds its sandbox's cgroup so.
pub fn hold(path: &Path) -> Result<fs::File> {
    let folder = fs::File::open(path).map_err(io_err(path, "open"))?;
    folder.lock().map_err(io_err(path, "flock"))?;
    Ok(folder)
}

/// Whether the cgroup at `path`, which a launcher enrolled, was abandoned: no process
/// in it and its folder's lock ([`hold`]) free, so the launcher that held it is gone
/// (killed before it could remove the cgroup). The launcher locks the folder before
/// it enrolls it, so a cgroup being set up is never taken for one.
pub fn abandoned(path: &Path) -> bool {
    !populated(path) && fs::File::open(path).is_ok_and(|f| f.try_lock().is_ok())
}

/// Level of a cgroup below the hierarchy's root (the root is level 0).
pub fn depth(relative: &str) -> u32 {
    relative.split('/').filter(|s| !s.is_empty()).count() as u32
}

/// One cgroup found below hb's root.
#[derive(Debug, Clone)]
pub struct Found {
    /// Relative to the cgroup2 mount, without leading slash (`hb/agents/a1`).
    pub relative: String,
    pub id: u64,
}

/// Walks `mount/root` and everything below it (bounded by `max_depth` levels below the
/// mount). Cgroups that vanish while walking are skipped.
pub fn walk(mount: &Path, root: &str, max_depth: u32) -> Result<Vec<Found>> {
    let start = mount.join(root);
    let mut out = vec![Found {
        relative: root.to_owned(),
        id: cgroup_id(&start)?,
    }];
    let mut stack = vec![(start, root.to_owned())];
    while let Some((dir, rel)) = stack.pop() {
        if depth(&rel) >= max_depth {
            continue;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = format!("{rel}/{name}");
            out.push(Found {
                relative: child_rel.clone(),
                id: meta.ino(),
            });
            stack.push((entry.path(), child_rel));
        }
    }
    Ok(out)
}

/// Creates `mount/relative` and its parents.
pub fn create(mount: &Path, relative: &str) -> Result<PathBuf> {
    let path = mount.join(relative);
    fs::create_dir_all(&path).map_err(io_err(&path, "mkdir"))?;
    Ok(path)
}

/// Kills whatever is left in a cgroup and removes it. Retries for a while: the kernel
/// reaps killed tasks asynchronously and `rmdir` fails with EBUSY until it has.
pub fn remove(path: &Path) -> Result<()> {
    for attempt in 0..200 {
        match fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                if attempt == 0 {
                    // cgroup.kill (5.14+) SIGKILLs every task in the cgroup and below.
                    let _ = fs::OpenOptions::new()
                        .write(true)
                        .open(path.join("cgroup.kill"))
                        .and_then(|mut f| f.write_all(b"1"));
                    // Children first: rmdir needs an empty subtree.
                    if let Ok(entries) = fs::read_dir(path) {
                        for e in entries.flatten() {
                            if e.metadata().is_ok_and(|m| m.is_dir()) {
                                let _ = remove(&e.path());
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err(path, "rmdir")(e)),
        }
    }
    Err(io_err(path, "rmdir")(io::Error::from_raw_os_error(
        libc::EBUSY,
    )))
}

/// Folder below `state_dir` where `sandbox run` notes `<cgroup id>` → path.
const NOTES_DIR: &str = "sandboxes";

/// Notes the path of a cgroup that may be gone before its events are read.
pub fn remember(state_dir: &Path, id: u64, relative: &str) {
    let dir = state_dir.join(NOTES_DIR);
    let _ = fs::create_dir_all(&dir).and_then(|()| fs::write(dir.join(id.to_string()), relative));
}

/// The noted path of a cgroup id, if any.
pub fn recall(state_dir: &Path, id: u64) -> Option<String> {
    fs::read_to_string(state_dir.join(NOTES_DIR).join(id.to_string())).ok()
}

/// Drops notes older than `age` whose cgroup is not in `alive`.
pub fn forget_old(state_dir: &Path, alive: &std::collections::HashSet<u64>, age: Duration) {
    let Ok(entries) = fs::read_dir(state_dir.join(NOTES_DIR)) else {
        return;
    };
    for e in entries.flatten() {
        let id: Option<u64> = e.file_name().to_str().and_then(|n| n.parse().ok());
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|a| a > age);
        if old && id.is_some_and(|id| !alive.contains(&id)) {
            let _ = fs::remove_file(e.path());
        }
    }
}
