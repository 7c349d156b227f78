//! The kubepods cgroup hierarchy, watched with inotify so that a pod's cgroup is enrolled
//! the moment the kubelet creates it, and scanned periodically to reconcile whatever
//! inotify could not tell (a queue overflow, a directory created before its parent was
//! watched).
//!
//! Runs on a thread of its own: a blocking `poll` on the inotify descriptor, no async
//! runtime between the kernel's notification and the map update. Every directory that
//! is not a pod cgroup is watched (the QoS levels, whatever wraps the hierarchy); a pod
//! cgroup is not descended into, since enrolling it covers its containers.
//!
//! inotify is racy by nature: a directory created between `mkdir` of its parent and the
//! watch on that parent is not reported, so after adding a watch the directory's
//! existing children are handled as if just created.
//!
//! Must never: skip the reconciling scan (it is the only path when inotify is off or
//! overflowed).

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    fs, io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

use super::{
    layout,
    node::{Node, Outcome, PodCgroup, Sink},
};

/// What the watcher thread needs.
pub struct Watcher<S> {
    pub mount: PathBuf,
    /// Below the mount.
    pub root: String,
    pub node: Arc<Mutex<Node<S>>>,
    pub inotify: bool,
    pub rescan: Duration,
    /// Told about every outcome (events, logs).
    pub report: Box<dyn Fn(Outcome) + Send>,
    /// Called once the first full scan is done.
    pub scanned: Box<dyn Fn() + Send>,
    /// Called after every full scan (the pods' network namespaces are looked at again).
    pub after_scan: Box<dyn Fn() + Send>,
}

struct State {
    inotify: Option<Inotify>,
    /// Watched directories (absolute).
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

impl<S: Sink + Send + 'static> Watcher<S> {
    pub fn spawn(self) -> io::Result<std::thread::JoinHandle<()>> {
        let inotify = if self.inotify {
            Some(Inotify::init()?)
        } else {
            None
        };
        std::thread::Builder::new()
            .name("hb-kube-cgroups".into())
            .spawn(move || {
                self.run(State {
                    inotify,
                    dirs: HashMap::new(),
                })
            })
    }

    fn run(self, mut st: State) {
        let root = self.mount.join(&self.root);
        self.scan(&mut st, &root);
        (self.scanned)();
        let mut next_scan = Instant::now() + self.rescan;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let wait = next_scan.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                self.scan(&mut st, &root);
                next_scan = Instant::now() + self.rescan;
                continue;
            }
            let Some(ino) = st.inotify.as_ref() else {
                std::thread::sleep(wait);
                continue;
            };
            if !readable(ino.as_raw_fd(), wait) {
                continue;
            }
            let seen = Instant::now();
            // In the order they happened: a pod cgroup removed and made again (same
            // name, another cgroup) within one read must end enrolled, not gone.
            let mut changes = Vec::new();
            let mut overflow = false;
            let Some(ino) = st.inotify.as_mut() else {
                continue;
            };
            match ino.read_events(&mut buf) {
                Ok(events) => {
                    for e in events {
                        if e.mask.contains(EventMask::Q_OVERFLOW) {
                            overflow = true;
                            continue;
                        }
                        if e.mask.contains(EventMask::IGNORED) {
                            st.dirs.remove(&e.wd);
                            continue;
                        }
                        let (Some(dir), Some(name)) = (st.dirs.get(&e.wd), e.name) else {
                            continue;
                        };
                        if !e.mask.contains(EventMask::ISDIR) {
                            continue;
                        }
                        let path = dir.join(name);
                        if e.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                            changes.push(Change::Appeared(path));
                        } else if e.mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
                            changes.push(Change::Vanished(path));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::error!(error = %e, "inotify read failed; falling back to the periodic scan");
                    st.inotify = None;
                    continue;
                }
            }
            for change in changes {
                match change {
                    Change::Appeared(path) => self.appeared(&mut st, &path, seen),
                    Change::Vanished(path) => self.vanished(&path),
                }
            }
            if overflow {
                tracing::warn!("inotify queue overflowed: rescanning the pod cgroups now");
                self.scan(&mut st, &root);
                next_scan = Instant::now() + self.rescan;
            }
        }
    }

    /// A directory appeared: a pod cgroup is handed to the node; anything else is
    /// watched and its children handled (they may predate the watch).
    fn appeared(&self, st: &mut State, path: &Path, seen: Instant) {
        let Some(name) = path.file_name().and_then(OsStr::to_str) else {
            return;
        };
        if let Some(uid) = layout::pod_uid(name) {
            let Ok(meta) = fs::metadata(path) else {
                return;
            };
            let relative = path
                .strip_prefix(&self.mount)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if crate::cgroup::depth(&relative) > hb_common::limits::MAX_CGROUP_DEPTH {
                tracing::error!(cgroup = %relative, max = hb_common::limits::MAX_CGROUP_DEPTH, "pod cgroup too deep to enforce; NOT enrolled");
                return;
            }
            let cgroup = PodCgroup {
                path: path.to_owned(),
                relative,
                id: meta.ino(),
                seen,
                enrolled: false,
                frozen: false,
                adopted: None,
                reported: false,
                refused: false,
            };
            let out = self.lock().cgroup_appeared(&uid, cgroup);
            out.into_iter().for_each(&self.report);
            return;
        }
        self.watch_dir(st, path);
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    self.appeared(st, &e.path(), seen);
                }
            }
        }
    }

    fn vanished(&self, path: &Path) {
        if let Some(uid) = path
            .file_name()
            .and_then(OsStr::to_str)
            .and_then(layout::pod_uid)
        {
            let out = self.lock().cgroup_gone(&uid, path);
            out.into_iter().for_each(&self.report);
        }
    }

    fn watch_dir(&self, st: &mut State, path: &Path) {
        let Some(ino) = st.inotify.as_mut() else {
            return;
        };
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::ONLYDIR;
        match ino.watches().add(path, mask) {
            Ok(wd) => {
                st.dirs.insert(wd, path.to_owned());
            }
            Err(e) => {
                tracing::debug!(dir = %path.display(), error = %e, "cannot watch (gone already?)");
            }
        }
    }

    /// The reconciler: every pod cgroup below the root handed to the node (known ones
    /// are no-ops), known ones that are gone dropped, every other directory watched.
    fn scan(&self, st: &mut State, root: &Path) {
        let seen = Instant::now();
        let mut found = HashSet::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            let name = dir.file_name().and_then(OsStr::to_str).unwrap_or_default();
            if dir != root
                && let Some(uid) = layout::pod_uid(name)
            {
                found.insert(uid);
                self.appeared(st, &dir, seen);
                continue;
            }
            self.watch_dir(st, &dir);
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        let known = self.lock().cgroup_uids();
        for (uid, path) in known {
            if !found.contains(&uid) && !path.exists() {
                let out = self.lock().cgroup_gone(&uid, &path);
                out.into_iter().for_each(&self.report);
            }
        }
        self.lock().expire_tombstones(Instant::now());
        (self.after_scan)();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Node<S>> {
        // A panic while holding the lock leaves consistent-enough state (each step
        // is a map update); keep enrolling rather than stop.
        self.node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Waits up to `timeout` for `fd` to be readable.
pub(super) fn readable(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&raw mut pfd, 1, ms.max(1)) > 0 }
}

/// A directory event of one inotify read.
enum Change {
    Appeared(PathBuf),
    Vanished(PathBuf),
}
