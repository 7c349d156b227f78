//! Enrollment: which cgroups are sandboxes, under which policy.
//!
//! The agent enrolls every cgroup below `agent.cgroup_root` that matches a `[[sandbox]]`
//! glob (first match wins, in config order), re-scanning every `rescan_interval_ms` for
//! new ones. `hb-agent sandbox run` enrolls its own cgroups (flag `ENROLL_LAUNCHER`) before
//! any process enters them; the agent never changes those, it only forgets them once the
//! cgroup is gone, and removes the cgroup of a launcher killed before it could.
//!
//! A cgroup created by someone else and matched by a glob is unenforced until the next
//! scan: orchestrators should create the cgroup, wait until `hb-agent status` lists it,
//! then start processes in it (or use `hb-agent sandbox run`, which has no such window).
//!
//! Must never: remove an entry whose cgroup might still exist (the map snapshot is taken
//! *before* the walk, and cgroup ids are never reused, so a fresh entry is always seen).

use std::{collections::HashMap, path::Path};

use hb_common::{ENROLL_GLOB, ENROLL_KUBE, ENROLL_LAUNCHER, Enrollment, limits};

use crate::{
    cgroup::{self, CgroupError, Found},
    maps::{Maps, MapsError},
};

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("cannot enroll cgroup {path}")]
    Insert {
        path: String,
        #[source]
        source: aya::maps::MapError,
    },
}

/// A `[[sandbox]]` glob resolved to a policy id.
pub struct Rule {
    pub pattern: glob::Pattern,
    pub policy_id: u32,
    pub policy: String,
}

/// What one reconciliation changed, for logging.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub enrolled: Vec<(String, String)>,
    pub removed: usize,
    /// Cgroups of killed launchers removed ([`cgroup::abandoned`]).
    pub abandoned: usize,
    pub too_deep: Vec<String>,
}

/// Brings the enrolled map in line with the cgroup tree and the rules. Returns the walk
/// too, so callers can name cgroups by id.
pub fn reconcile(
    maps: &mut Maps,
    mount: &Path,
    root: &str,
    rules: &[Rule],
) -> Result<(Changes, Vec<Found>), EnrollError> {
    // Snapshot first, walk second: see the module doc.
    let before: HashMap<u64, Enrollment> = maps.enrolled.iter().filter_map(|r| r.ok()).collect();
    // Walk one level deeper than we may enroll, so a too-deep match is reported.
    let tree = cgroup::walk(mount, root, limits::MAX_CGROUP_DEPTH + 1)?;
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut changes = Changes::default();
    let mut wanted: HashMap<u64, u32> = HashMap::new();
    for found in &tree {
        let Some(rule) = rules
            .iter()
            .find(|r| r.pattern.matches_with(&found.relative, opts))
        else {
            continue;
        };
        if cgroup::depth(&found.relative) > limits::MAX_CGROUP_DEPTH {
            changes.too_deep.push(found.relative.clone());
            continue;
        }
        wanted.insert(found.id, rule.policy_id);
        let current = before.get(&found.id);
        // The launcher's and the pod watcher's own enrollments are theirs to change.
        if current.is_some_and(|e| e.flags & (ENROLL_LAUNCHER | ENROLL_KUBE) != 0) {
            continue;
        }
        if current.map(|e| e.policy_id) != Some(rule.policy_id) {
            let value = Enrollment {
                policy_id: rule.policy_id,
                flags: ENROLL_GLOB,
            };
            maps.enrolled
                .insert(found.id, value, 0)
                .map_err(|source| EnrollError::Insert {
                    path: found.relative.clone(),
                    source,
                })?;
            changes
                .enrolled
                .push((found.relative.clone(), rule.policy.clone()));
        }
    }
    // A launcher killed with SIGKILL leaves its (empty) cgroup: removed here, so its
    // enrollment goes below with the other gone ones.
    let abandoned: std::collections::HashSet<u64> = tree
        .iter()
        .filter(|f| {
            before
                .get(&f.id)
                .is_some_and(|e| e.flags & ENROLL_LAUNCHER != 0)
        })
        .filter(|f| {
            let path = mount.join(&f.relative);
            cgroup::abandoned(&path) && std::fs::remove_dir(&path).is_ok()
        })
        .map(|f| f.id)
        .collect();
    changes.abandoned = abandoned.len();
    let alive: std::collections::HashSet<u64> = tree
        .iter()
        .map(|f| f.id)
        .filter(|id| !abandoned.contains(id))
        .collect();
    for (id, e) in &before {
        let gone = !alive.contains(id);
        let unmatched_glob = e.flags & ENROLL_GLOB != 0 && !wanted.contains_key(id);
        if (gone || unmatched_glob) && maps.enrolled.remove(id).is_ok() {
            changes.removed += 1;
        }
    }
    if !changes.enrolled.is_empty() || changes.removed > 0 {
        maps.bump_generation()?;
    }
    // After the removals above, and for those of the launcher and the pod watcher.
    maps.forget_unenrolled_socket_counts();
    Ok((changes, tree))
}
