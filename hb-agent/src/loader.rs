//! Loading hb's eBPF object, attaching its programs and pinning everything.
//!
//! Owns: bpffs (mounted when missing), the embedded object, program load/attach, and the
//! pins under `bpffs_dir` (`maps/`, `progs/`, `links/`). Maps are pinned by name, so a
//! restarted agent reopens the very maps the kernel is enforcing with.
//!
//! Hand-over without a gap: a new agent attaches its own links first (multi-attach, so
//! the old and new programs run side by side over the same maps and agree), pins them as
//! `<name>_new`, and only then unpins the old link and renames the new pin into place.
//! A crash in between leaves at least one pinned link per hook; the next start repairs
//! the names. Links are never detached on shutdown: enforcement outlives the agent.
//!
//! Must never: detach a link before its replacement is attached (`uninstall` alone
//! detaches for good, see [`detach_link`]).

use std::{
    ffi::CString,
    fs, io,
    os::{
        fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        CgroupSockopt, ProgramError, SockOps,
        links::{FdLink, PinnedLink},
    },
};
use hb_common::{limits, map_names, pin_dirs, prog_names};

/// The compiled kernel side, built by `build.rs` through aya-build.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hb-ebpf"));

/// `statfs` magic of bpffs (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const DEFAULT_BPFFS: &str = "/sys/fs/bpf";
/// Suffix of a link pin during hand-over. Not a dot: bpffs reserves names with dots
/// (EPERM; `bpf_lookup` in kernel/bpf/inode.c).
const NEW_SUFFIX: &str = "_new";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "{path} is not on a bpf filesystem and hb will only mount one at {DEFAULT_BPFFS}; mount one (mount -t bpf bpf DIR) or choose a bpffs_dir below {DEFAULT_BPFFS}"
    )]
    NotBpffs { path: PathBuf },
    #[error("mounting bpffs at {DEFAULT_BPFFS} failed")]
    Mount(#[source] io::Error),
    #[error("{action} {path} failed")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the embedded eBPF object was built without its programs (AYA_BUILD_SKIP was set at build time?)"
    )]
    NoObject,
    #[error("loading the eBPF object failed (is this root with CAP_BPF, on a kernel with BTF?)")]
    Object(#[source] aya::EbpfError),
    #[error("program {name} is missing from the eBPF object")]
    MissingProgram { name: &'static str },
    #[error("program {name}: {action} failed")]
    Program {
        name: &'static str,
        action: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("link {path}: {action} failed")]
    Link {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

type Result<T> = std::result::Result<T, LoadError>;

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LoadError {
    let path = path.to_owned();
    move |source| LoadError::Io {
        action,
        path,
        source,
    }
}

pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated path; buf is a properly sized out-parameter.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut buf) == 0 && buf.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes sure `bpffs_dir` and its sub-folders exist on a bpf filesystem, mounting bpffs at
/// `/sys/fs/bpf` when nothing is mounted there.
pub fn ensure_bpffs(bpffs_dir: &Path) -> Result<()> {
    let existing = bpffs_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(existing) {
        let default = Path::new(DEFAULT_BPFFS);
        if !bpffs_dir.starts_with(default)
            || !(existing == default || default.starts_with(existing))
        {
            return Err(LoadError::NotBpffs {
                path: bpffs_dir.to_owned(),
            });
        }
        fs::create_dir_all(default).map_err(io_err("creating", default))?;
        let target = CString::new(DEFAULT_BPFFS).map_err(|_| LoadError::NotBpffs {
            path: default.to_owned(),
        })?;
        // SAFETY: NUL-terminated literals and paths; no data argument.
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(LoadError::Mount(io::Error::last_os_error()));
        }
        tracing::info!(path = DEFAULT_BPFFS, "mounted bpffs");
    }
    for sub in [pin_dirs::MAPS, pin_dirs::PROGS, pin_dirs::LINKS] {
        let dir = bpffs_dir.join(sub);
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    }
    Ok(())
}

/// Loads the object, creating the maps or reopening their pins. Programs are not
/// attached yet: the caller fills the maps first. Pins of retired maps
/// ([`map_names::RETIRED`]) an older agent left are removed once the object loaded.
pub fn load(bpffs_dir: &Path) -> Result<Ebpf> {
    if OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    let maps = bpffs_dir.join(pin_dirs::MAPS);
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    let ebpf = EbpfLoader::new()
        .default_map_pin_directory(&maps)
        .map_max_entries(map_names::GUARD_FLOWS, guard_flow_entries(cpus))
        .load(OBJECT)
        .map_err(LoadError::Object)?;
    remove_retired_pins(&maps);
    Ok(ebpf)
}

/// Free entries an LRU hash map keeps in each CPU's local list at most
/// (`LOCAL_FREE_TARGET`, kernel/bpf/bpf_lru_list.h): entries parked there are not free
/// to the other CPUs, so the map evicts before it is full.
const LRU_LOCAL_FREE: u32 = 128;

/// Entries of the guard's flow records (`HB_GUARD_CONNS`) on a node of `cpus` possible
/// CPUs: what the connect hooks let all cgroups hold (`limits::GUARD_FLOWS_FILED`) and
/// every CPU's local free list besides, so a record is never pushed out while the hooks
/// keep below that (attack review 51): `limits::GUARD_FLOWS` up to 64 CPUs, more above.
/// A map an older agent pinned keeps its size until its pin goes.
fn guard_flow_entries(cpus: usize) -> u32 {
    let lists = u32::try_from(cpus)
        .unwrap_or(u32::MAX)
        .saturating_mul(LRU_LOCAL_FREE);
    let filed = u32::try_from(limits::GUARD_FLOWS_FILED).unwrap_or(u32::MAX);
    limits::GUARD_FLOWS.max(filed.saturating_add(lists))
}

/// Unpins the maps no program of this agent uses. An older agent's programs, still
/// attached until [`attach`] replaces them, hold their own references: the map goes
/// with them. A pin that cannot be removed is logged and left (it only costs memory).
fn remove_retired_pins(maps_dir: &Path) {
    for name in map_names::RETIRED {
        let pin = maps_dir.join(name);
        match fs::remove_file(&pin) {
            Ok(()) => tracing::info!(pin = %pin.display(), "removed the pin of a retired map"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(pin = %pin.display(), error = %e, "could not remove a retired map's pin")
            }
        }
    }
}

/// What [`attach`] did, for the log and the state file.
#[derive(Debug)]
pub struct Attached {
    pub program: &'static str,
    pub prog_id: u32,
    /// True when a link from a previous agent was replaced.
    pub replaced: bool,
}

/// Loads, attaches (bpf_link) and pins every program on `cgroup`, then retires the links
/// of a previous agent.
///
/// A cgroup bpf_link is always multi-attach: the kernel attaches it with
/// `BPF_F_ALLOW_MULTI` and rejects any flag in `BPF_LINK_CREATE` (EINVAL; see
/// `cgroup_bpf_link_attach` in kernel/bpf/cgroup.c). aya's `Single` mode passes no flag,
/// so other programs on the node's cgroups keep working beside ours.
pub fn attach(
    ebpf: &mut Ebpf,
    bpffs_dir: &Path,
    cgroup: &Path,
    programs: &[&'static str],
) -> Result<Vec<Attached>> {
    let cgroup_fd = fs::File::open(cgroup).map_err(io_err("opening cgroup", cgroup))?;
    let links = bpffs_dir.join(pin_dirs::LINKS);
    let progs = bpffs_dir.join(pin_dirs::PROGS);
    let mut out = Vec::new();
    for name in prog_names::ALL {
        repair_link_names(&links, name)?;
        if !programs.contains(&name) {
            // Not needed under this config: a link a previous agent left is let go
            // (unpinning drops the last reference, which detaches it).
            for pin in [links.join(name), progs.join(name)] {
                if pin.exists() {
                    fs::remove_file(&pin).map_err(io_err("removing", &pin))?;
                }
            }
            continue;
        }
        let program = ebpf
            .program_mut(name)
            .ok_or(LoadError::MissingProgram { name })?;
        let perr = |action| {
            move |source| LoadError::Program {
                name,
                action,
                source,
            }
        };
        // The two program types share no trait for these steps; the macro keeps the
        // sequence (load, attach, take the link, pin the program) written once.
        macro_rules! attach_and_pin {
            ($ty:ty, $($attach:expr),+) => {{
                let p: &mut $ty = program.try_into().map_err(perr("type check"))?;
                p.load().map_err(perr("load"))?;
                let id = p.attach(&cgroup_fd, $($attach),+).map_err(perr("attach"))?;
                let link = p.take_link(id).map_err(perr("take link"))?;
                let prog_id = p.info().map_err(perr("info"))?.id();
                replace_pin(&progs, name, |path| p.pin(path))?;
                let link: FdLink = link.try_into().map_err(
                    |e: aya::programs::links::LinkError| LoadError::Link {
                        path: links.join(name),
                        action: "convert",
                        source: Box::new(e),
                    },
                )?;
                (link, prog_id)
            }};
        }
        let (fd_link, prog_id) = if name == prog_names::SKB_EGRESS {
            attach_and_pin!(
                CgroupSkb,
                CgroupSkbAttachType::Egress,
                CgroupAttachMode::Single
            )
        } else if name == prog_names::SKB_INGRESS {
            attach_and_pin!(
                CgroupSkb,
                CgroupSkbAttachType::Ingress,
                CgroupAttachMode::Single
            )
        } else if name == prog_names::SOCK_OPS {
            attach_and_pin!(SockOps, CgroupAttachMode::Single)
        } else if name == prog_names::SOCK_CREATE || name == prog_names::SOCK_RELEASE {
            attach_and_pin!(CgroupSock, CgroupAttachMode::Single)
        } else if name == prog_names::SETSOCKOPT {
            let p: &mut CgroupSockopt = program.try_into().map_err(perr("type check"))?;
            p.load().map_err(perr("load"))?;
            let prog_id = p.info().map_err(perr("info"))?.id();
            replace_pin(&progs, name, |path| p.pin(path))?;
            let prog_fd = p.fd().map_err(perr("fd"))?;
            (
                sockopt_link(prog_fd.as_fd(), cgroup_fd.as_fd(), &links, name)?,
                prog_id,
            )
        } else {
            attach_and_pin!(CgroupSockAddr, CgroupAttachMode::Single)
        };
        let replaced = swap_link(&links, name, fd_link)?;
        out.push(Attached {
            program: name,
            prog_id,
            replaced,
        });
    }
    Ok(out)
}

/// `BPF_CGROUP_SETSOCKOPT` in `enum bpf_attach_type` (include/uapi/linux/bpf.h).
const BPF_CGROUP_SETSOCKOPT: u32 = 22;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;

/// Attaches a `cgroup/setsockopt` program with a bpf_link of our own making.
///
/// aya 0.14 attaches `CgroupSockopt` with a bpf_link too, but keeps it in a private type
/// that cannot become an [`FdLink`], so it could not be pinned. Here the link is created
/// with `BPF_LINK_CREATE` (no flags: multi-attach, as for the others), pinned at the
/// hand-over name, and reopened through the pin as an [`FdLink`] that [`swap_link`]
/// handles like any other.
fn sockopt_link(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    links: &Path,
    name: &'static str,
) -> Result<FdLink> {
    let new = links.join(format!("{name}{NEW_SUFFIX}"));
    let lerr = |action: &'static str, e: io::Error| LoadError::Link {
        path: new.clone(),
        action,
        source: Box::new(e),
    };
    // bpf_attr for BPF_LINK_CREATE: prog_fd, target_fd, attach_type, flags, then a union
    // the kernel requires to be zero for cgroup links.
    let mut attr = [0u32; 16];
    attr[0] = prog.as_raw_fd() as u32;
    attr[1] = cgroup.as_raw_fd() as u32;
    attr[2] = BPF_CGROUP_SETSOCKOPT;
    // SAFETY: attr is a valid, fully initialised bpf_attr prefix of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            attr.as_ptr(),
            size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(lerr("BPF_LINK_CREATE", io::Error::last_os_error()));
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let path = CString::new(new.as_os_str().as_bytes())
        .map_err(|e| lerr("pin", io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // bpf_attr for BPF_OBJ_PIN: pathname (u64), bpf_fd, file_flags, path_fd.
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: u32,
    }
    let pin = ObjPin {
        pathname: path.as_ptr() as u64,
        bpf_fd: link.as_raw_fd() as u32,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    let _ = fs::remove_file(&new);
    // SAFETY: pin points at a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, &pin, size_of_val(&pin)) };
    if rc != 0 {
        return Err(lerr("BPF_OBJ_PIN", io::Error::last_os_error()));
    }
    drop(link);
    let pinned = PinnedLink::from_pin(&new).map_err(|e| LoadError::Link {
        path: new.clone(),
        action: "open",
        source: Box::new(e),
    })?;
    // swap_link pins it at the hand-over name again; our fd keeps it attached meanwhile.
    pinned.unpin().map_err(io_err("unpinning", &new))
}

/// Pins a program at `dir/name`, replacing an older program's pin (the program itself
/// stays loaded as long as a link uses it).
fn replace_pin(
    dir: &Path,
    name: &'static str,
    pin: impl FnOnce(&Path) -> std::result::Result<(), aya::pin::PinError>,
) -> Result<()> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &path)(e)),
    }
    pin(&path).map_err(|e| LoadError::Link {
        path,
        action: "pin program",
        source: Box::new(e),
    })
}

/// After a crash mid-hand-over: promote a lone `_new` pin, drop a surplus one (the main
/// pin still enforces).
fn repair_link_names(links: &Path, name: &str) -> Result<()> {
    let main = links.join(name);
    let new = links.join(format!("{name}{NEW_SUFFIX}"));
    if new.exists() {
        if main.exists() {
            fs::remove_file(&new).map_err(io_err("removing", &new))?;
        } else {
            fs::rename(&new, &main).map_err(io_err("renaming", &new))?;
        }
    }
    Ok(())
}

/// Pins `link` in place of the current link for `name`; returns whether one was replaced.
fn swap_link(links: &Path, name: &'static str, link: FdLink) -> Result<bool> {
    let main = links.join(name);
    let new = links.join(format!("{name}{NEW_SUFFIX}"));
    let lerr = |path: &Path, action| {
        let path = path.to_owned();
        move |e: Box<dyn std::error::Error + Send + Sync>| LoadError::Link {
            path,
            action,
            source: e,
        }
    };
    // The new link is attached already (the caller attached it); pinning it keeps it so.
    let pinned = link.pin(&new).map_err(|e| lerr(&new, "pin")(Box::new(e)))?;
    let replaced = main.exists();
    if replaced {
        // Only now is the old link let go: unpin, then drop the last fd, which detaches it.
        let old = PinnedLink::from_pin(&main).map_err(|e| lerr(&main, "open")(Box::new(e)))?;
        drop(old.unpin().map_err(io_err("unpinning", &main))?);
    }
    fs::rename(&new, &main).map_err(io_err("renaming", &new))?;
    // Our fd goes; the pin keeps the link attached.
    drop(pinned);
    Ok(replaced)
}

/// Pins that exist for the links of `programs` (for `status`, `sandbox run` and tests).
pub fn pinned_links(bpffs_dir: &Path, programs: &[&'static str]) -> Vec<(&'static str, bool)> {
    let links = bpffs_dir.join(pin_dirs::LINKS);
    programs
        .iter()
        .map(|n| (*n, links.join(n).exists()))
        .collect()
}

/// The programs the agent attaches: all of them, whatever the config. `sock_ops` too,
/// although the kernel calls it about ten times per TCP connection: besides recording
/// an accepted connection's client (`inbound = true`) and filing guarded connections
/// for the guard, it files every redirected TCP DNS connection for the resolver, which
/// closes a connection it finds no record of.
pub fn programs() -> Vec<&'static str> {
    prog_names::ALL.to_vec()
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_DETACH: libc::c_long = 34;
/// `BPF_LINK_TYPE_CGROUP` in `enum bpf_link_type`.
const BPF_LINK_TYPE_CGROUP: u32 = 3;

/// Opens the bpf object pinned at `pin` (`BPF_OBJ_GET`).
fn obj_get(pin: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags, path_fd.
    let mut attr = [0u64; 3];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: attr points at a NUL-terminated path that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_ptr(),
            size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What the kernel says about a pinned cgroup link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// No pin at that path.
    Missing,
    /// Pinned and attached to the cgroup with this id.
    Attached { cgroup_id: u64, prog_id: u32 },
    /// Pinned, but the kernel let go of its cgroup (the cgroup was removed, or the link
    /// was detached with `BPF_LINK_DETACH`): it enforces nothing.
    Detached,
    /// The pin exists but is not a cgroup link, or cannot be read.
    Unreadable,
}

/// The state of the link pinned at `pin`, from `bpf_link_info` (its `cgroup.cgroup_id`
/// is 0 once the kernel detached it: `bpf_cgroup_link_fill_link_info` in
/// kernel/bpf/cgroup.c).
pub fn link_state(pin: &Path) -> LinkState {
    if !pin.exists() {
        return LinkState::Missing;
    }
    let Ok(fd) = obj_get(pin) else {
        return LinkState::Unreadable;
    };
    // struct bpf_link_info: type, id, prog_id (u32 each), then a union aligned to 8 whose
    // cgroup member is { u64 cgroup_id; u32 attach_type; }.
    let mut info = [0u64; 16];
    // bpf_attr for BPF_OBJ_GET_INFO_BY_FD: bpf_fd, info_len (u32 each), info (u64).
    let attr: [u64; 2] = [
        u64::from(fd.as_raw_fd() as u32) | (u64::from(size_of_val(&info) as u32) << 32),
        info.as_mut_ptr() as u64,
    ];
    // SAFETY: attr names a writable buffer of the size it gives; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_ptr(),
            size_of_val(&attr),
        )
    };
    if rc != 0 || (info[0] & 0xffff_ffff) as u32 != BPF_LINK_TYPE_CGROUP {
        return LinkState::Unreadable;
    }
    match info[2] {
        0 => LinkState::Detached,
        cgroup_id => LinkState::Attached {
            cgroup_id,
            prog_id: (info[1] & 0xffff_ffff) as u32,
        },
    }
}

/// Detaches the link pinned at `pin` from its cgroup at once (`BPF_LINK_DETACH`),
/// whoever else holds it open; the pin then holds a link that enforces nothing.
pub fn detach_link(pin: &Path) -> io::Result<()> {
    let fd = obj_get(pin)?;
    let attr: [u32; 2] = [fd.as_raw_fd() as u32, 0];
    // SAFETY: attr is a valid bpf_attr prefix for BPF_LINK_DETACH (link_fd).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            attr.as_ptr(),
            size_of_val(&attr),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Each of `programs` with the state of its pinned link under `bpffs_dir`.
pub fn link_states(bpffs_dir: &Path, programs: &[&'static str]) -> Vec<(&'static str, LinkState)> {
    let links = bpffs_dir.join(pin_dirs::LINKS);
    programs
        .iter()
        .map(|n| (*n, link_state(&links.join(n))))
        .collect()
}

/// Whether every one of `programs` is linked to the cgroup `cgroup_id`: what "enforcing"
/// means for `status` and `/readyz`.
pub fn all_attached(bpffs_dir: &Path, programs: &[&'static str], cgroup_id: u64) -> bool {
    link_states(bpffs_dir, programs)
        .iter()
        .all(|(_, s)| matches!(s, LinkState::Attached { cgroup_id: c, .. } if *c == cgroup_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Up to 64 CPUs the map keeps its declared size; past them it grows by each CPU's
    /// local free list, so the part the hooks let cgroups hold is never evicted.
    #[test]
    fn guard_flow_entries_leave_every_cpus_free_list_beside_the_held_part() {
        assert_eq!(guard_flow_entries(1), limits::GUARD_FLOWS);
        assert_eq!(guard_flow_entries(64), limits::GUARD_FLOWS);
        for cpus in [65, 96, 256, 1024] {
            let entries = u64::from(guard_flow_entries(cpus));
            assert_eq!(
                entries,
                limits::GUARD_FLOWS_FILED + cpus as u64 * u64::from(LRU_LOCAL_FREE),
                "{cpus} CPUs"
            );
        }
    }
}
