//! `hb-agent uninstall`: takes hb off a node.
//!
//! In order: every link pinned under `bpffs_dir/links` is detached from its cgroup
//! (`BPF_LINK_DETACH`, which holds whoever else has the link open) and unpinned; then
//! the program and map pins go (with the enrolled-cgroups map, the enrollments), and the
//! pin folders; then the agent's runtime state in `state_dir` (what it attached where,
//! the allow-map name index, its counters), and the ports hb added to the network
//! namespace's `ip_local_reserved_ports` (see `ports`). What is history or a credential stays: the
//! vault, the master key, the audit log, `events.jsonl`, the tenants' folders, and the
//! cgroups (hb never removes a cgroup it did not create, and processes may run in them).
//!
//! Refuses while an agent runs (it holds `agent.lock`) unless forced. Forced, the running
//! agent is left running without enforcement: its programs are detached under it, its
//! `/readyz` answers 503 (`programs_attached`) and `hb-agent status` exits 4 until it is
//! stopped; started again, an agent attaches everything anew.
//!
//! Must never: remove anything outside `bpffs_dir` and the listed state files (and
//! nothing at all when `bpffs_dir` is not on a bpf filesystem), or leave a link attached
//! whose pin it removed.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use hb_common::pin_dirs;
use serde::Serialize;

use crate::{
    agent::{self, AgentState, STATE_FILE},
    config::Config,
    loader::{self, LinkState},
};

#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error(
        "an hb-agent is running with state_dir {state_dir}{}: stop it first, or pass --force to take hb off underneath it (it then runs without enforcing)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AgentRunning {
        state_dir: PathBuf,
        pid: Option<u32>,
    },
    #[error(
        "bpffs_dir {0} is not on a bpf filesystem: what is there is not hb's pins; nothing removed"
    )]
    NotBpffs(PathBuf),
    #[error("cannot detach the link pinned at {path}")]
    Detach {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One thing uninstall removed.
#[derive(Debug, Serialize)]
pub struct Removed {
    /// `link`, `program`, `map`, `folder`, `state` or `reserved_ports`.
    pub kind: &'static str,
    pub path: PathBuf,
    /// For a link: what it was attached to before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What uninstall did.
#[derive(Debug, Serialize)]
pub struct Report {
    /// An agent held the state folder's lock (only with `--force`).
    pub agent_was_running: bool,
    pub agent_pid: Option<u32>,
    pub removed: Vec<Removed>,
    /// What was left on purpose.
    pub kept: Vec<String>,
}

/// Files of `state_dir` that describe the running agent's kernel state, and go with it.
const STATE_FILES: [&str; 5] = [
    STATE_FILE,
    crate::dns::NAMES_FILE,
    crate::dns::STATS_FILE,
    crate::guard::STATS_FILE,
    crate::broker::stats::STATS_FILE,
];

pub fn run(config: &Config, force: bool) -> Result<Report, UninstallError> {
    let state_dir = &config.agent.state_dir;
    let bpffs = &config.agent.bpffs_dir;
    let running = agent::agent_running(state_dir);
    let pid = std::fs::read(state_dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<AgentState>(&b).ok())
        .map(|s| s.pid)
        .filter(|_| running);
    if running && !force {
        return Err(UninstallError::AgentRunning {
            state_dir: state_dir.clone(),
            pid,
        });
    }
    // Only pins are removed: a bpffs_dir set to an ordinary folder by mistake loses nothing.
    if bpffs.exists() && !loader::is_bpffs(bpffs) {
        return Err(UninstallError::NotBpffs(bpffs.clone()));
    }
    let mut removed = detach_links(&bpffs.join(pin_dirs::LINKS))?;
    removed.extend(remove_pins(bpffs)?);
    removed.extend(remove_state(state_dir)?);
    removed.extend(release_ports(state_dir)?);
    Ok(Report {
        agent_was_running: running,
        agent_pid: pid,
        removed,
        kept: vec![
            format!(
                "{}: the vault, master key, audit log, events.jsonl and tenant folders",
                state_dir.display()
            ),
            format!(
                "the cgroups below {} (processes may run in them; no program enforces there any more)",
                config.cgroup_root()
            ),
        ],
    })
}

/// Files directly in `dir` (none when it does not exist), sorted.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>, UninstallError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(UninstallError::Remove {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn remove_file(path: &Path) -> Result<(), UninstallError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UninstallError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Detaches and unpins every link pin (hand-over leftovers `<name>_new` too).
fn detach_links(links: &Path) -> Result<Vec<Removed>, UninstallError> {
    let mut out = Vec::new();
    for pin in files_in(links)? {
        let note = match loader::link_state(&pin) {
            LinkState::Attached { cgroup_id, .. } => {
                loader::detach_link(&pin).map_err(|source| UninstallError::Detach {
                    path: pin.clone(),
                    source,
                })?;
                format!("detached from cgroup id {cgroup_id}")
            }
            LinkState::Detached => "was already detached".to_owned(),
            LinkState::Missing | LinkState::Unreadable => "not a cgroup link".to_owned(),
        };
        remove_file(&pin)?;
        out.push(Removed {
            kind: "link",
            path: pin,
            note: Some(note),
        });
    }
    Ok(out)
}

/// Removes the program and map pins, then the (now empty) folders.
fn remove_pins(bpffs: &Path) -> Result<Vec<Removed>, UninstallError> {
    let mut out = Vec::new();
    for (sub, kind) in [(pin_dirs::PROGS, "program"), (pin_dirs::MAPS, "map")] {
        for pin in files_in(&bpffs.join(sub))? {
            remove_file(&pin)?;
            out.push(Removed {
                kind,
                path: pin,
                note: None,
            });
        }
    }
    for dir in [
        bpffs.join(pin_dirs::LINKS),
        bpffs.join(pin_dirs::PROGS),
        bpffs.join(pin_dirs::MAPS),
        bpffs.to_owned(),
    ] {
        match fs::remove_dir(&dir) {
            Ok(()) => out.push(Removed {
                kind: "folder",
                path: dir,
                note: None,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(UninstallError::Remove { path: dir, source }),
        }
    }
    Ok(out)
}

fn remove_state(state_dir: &Path) -> Result<Vec<Removed>, UninstallError> {
    let mut out = Vec::new();
    for name in STATE_FILES {
        let path = state_dir.join(name);
        if path.exists() {
            remove_file(&path)?;
            out.push(Removed {
                kind: "state",
                path,
                note: None,
            });
        }
    }
    Ok(out)
}

/// Gives back the ports hb reserved for its redirects (the record goes with them).
fn release_ports(state_dir: &Path) -> Result<Option<Removed>, UninstallError> {
    let released = crate::ports::release(state_dir).map_err(|source| UninstallError::Remove {
        path: state_dir.join(crate::ports::RECORD_FILE),
        source,
    })?;
    Ok(released.map(|ports| Removed {
        kind: "reserved_ports",
        path: PathBuf::from(crate::ports::RESERVED),
        note: Some(format!("gave back {ports}")),
    }))
}

/// The report for a person.
pub fn print(report: &Report) {
    if report.removed.is_empty() {
        println!("nothing to remove: hb is not installed here (no pins, no agent state)");
    } else {
        for r in &report.removed {
            match &r.note {
                Some(n) => println!("removed {:<7} {} ({n})", r.kind, r.path.display()),
                None => println!("removed {:<7} {}", r.kind, r.path.display()),
            }
        }
    }
    for k in &report.kept {
        println!("kept:   {k}");
    }
    if report.agent_was_running {
        println!(
            "the running agent{} was not stopped: it runs on without enforcing (its programs \
             are detached; /readyz answers 503, `hb-agent status` exits 4). Stop it; started \
             again, it attaches everything anew.",
            report
                .agent_pid
                .map(|p| format!(" (pid {p})"))
                .unwrap_or_default()
        );
    }
}
