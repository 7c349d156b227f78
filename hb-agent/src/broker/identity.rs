//! Who is calling: peer credentials → process → cgroup → enrolled sandbox → policy.
//!
//! The socket's file mode is only a first gate. The kernel tells us the caller's pid and
//! uid (SO_PEERCRED, taken when it connected); its cgroup comes from
//! `/proc/<pid>/cgroup`, and the cgroup (or its nearest enrolled ancestor, the same walk
//! the eBPF programs do) is looked up in the pinned `HB_ENROLLED` map. So a caller has
//! exactly the policy the kernel enforces on its sockets. Callers in no enrolled cgroup
//! are *host* callers.
//!
//! Must never: guess. A pid that is gone, a uid that no longer matches, or an unreadable
//! cgroup is an unknown caller and gets nothing. (A pid can be reused after its process
//! exits; the uid check and the short window between connect and lookup keep that to a
//! process of the same user, racing an exit.)

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use hb_common::{Enrollment, map_names};

use crate::maps::{MapsError, open_typed};

/// How far up the hierarchy enrollment is inherited (as in the eBPF programs).
const MAX_LEVELS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the calling process {pid} is gone")]
    Gone { pid: i32 },
    #[error("the calling process {pid} changed owner since it connected")]
    Reused { pid: i32 },
    #[error("cannot read the cgroup of process {pid}")]
    Cgroup {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
}

/// What SO_PEERCRED said when the caller connected.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
}

/// A caller, as the broker authorizes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Caller {
    pub pid: i32,
    pub uid: u32,
    /// The caller's cgroup, relative to the cgroup2 mount.
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

    pub fn identify(&self, peer: Peer) -> Result<Caller, IdentityError> {
        let pid = peer.pid;
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let owner = fs::metadata(&proc)
            .map_err(|_| IdentityError::Gone { pid })?
            .uid();
        if owner != peer.uid {
            return Err(IdentityError::Reused { pid });
        }
        let text = fs::read_to_string(proc.join("cgroup")).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                IdentityError::Gone { pid }
            } else {
                IdentityError::Cgroup { pid, source }
            }
        })?;
        // cgroup v2: the line "0::/path".
        let cgroup = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or_else(|| IdentityError::Cgroup {
                pid,
                source: std::io::Error::other("no cgroup v2 entry"),
            })?
            .trim_start_matches('/')
            .to_owned();
        let mut level = Some(cgroup.as_str());
        let mut sandbox = None;
        for _ in 0..MAX_LEVELS {
            let Some(rel) = level else { break };
            if rel.is_empty() {
                break;
            }
            if let Ok(id) = crate::cgroup::cgroup_id(&self.mount.join(rel))
                && let Ok(e) = self.enrolled.get(&id, 0)
            {
                let policy = self
                    .policy_names
                    .get(&e.policy_id)
                    .cloned()
                    .unwrap_or_else(|| format!("#{}", e.policy_id));
                sandbox = Some(Sandbox {
                    cgroup: rel.to_owned(),
                    cgroup_id: id,
                    policy,
                });
                break;
            }
            level = rel.rsplit_once('/').map(|(parent, _)| parent);
        }
        Ok(Caller {
            pid,
            uid: peer.uid,
            cgroup,
            sandbox,
        })
    }
}
