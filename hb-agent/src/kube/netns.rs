//! The agent's listeners inside a pod's network namespace.
//!
//! The kernel sends an enrolled socket's DNS (port 53) to `dns.listen` and its guarded
//! connects to `guard.listen`, both on loopback at `port + policy id`. Inside a pod's
//! own network namespace that loopback is the pod's, where nothing of the agent's
//! listens: so for every enforced pod whose processes live in a network namespace other
//! than the agent's, the agent binds that policy's resolver (UDP and TCP) and guard
//! listeners *in the pod's namespace*, on the same address and ports. The kernel redirect
//! needs no change and the port still names the policy.
//!
//! Data path: a pod cgroup enrolled ([`PodNets::enrolled`]) or its `cgroup.events`
//! modified (inotify, on this module's thread: `populated 1` when the first process,
//! the pause container, appears) → the network namespace of the oldest process in the
//! pod's cgroup tree outside the agent's namespace (`/proc/<pid>/ns/net`, compared by
//! device and inode with the agent's own; the oldest is the sandbox's) → none other
//! than the agent's: nothing to do (hostNetwork), and while the pod is populated it is
//! looked at again every [`PENDING_POLL`] for [`PENDING_FOR`] (a process may enter its
//! namespace after it entered the cgroup) → another: a short-lived thread
//! enters it (`setns(CLONE_NEWNET)`), checks that `lo` is up, binds the sockets and
//! exits; sockets stay in the namespace they were made in, and the agent's runtime
//! serves them with the resolver's and guard's own tasks ([`Opener`]).
//!
//! A namespace serves one policy: several pods sharing one namespace (same inode) share
//! its listeners, opened once, if they have the same policy; a pod under another policy
//! in a namespace already served gets nothing there (its lookups are refused, an error
//! is logged and reported), since a process of either pod could use every port in it.
//! The listeners close when the last pod using the namespace is gone (its cgroup
//! removed) or has moved to another namespace.
//!
//! Must never: bring up or change anything in a pod's namespace (a `lo` that is down is
//! reported, not raised), open another policy's port in it, or keep a namespace's
//! sockets (and with them the namespace) after its last pod is gone.

use std::{
    collections::{HashMap, HashSet},
    fs::{self, File},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

/// How often a populated pod whose processes all share the agent's namespace is looked
/// at again, and for how long after it became populated.
pub const PENDING_POLL: Duration = Duration::from_millis(5);
pub const PENDING_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot enter the pod's network namespace")]
    Setns(#[source] io::Error),
    #[error(
        "the loopback interface (lo) is down in the pod's network namespace: the agent's \
         listeners cannot serve it (the pod's DNS and guarded ports are refused)"
    )]
    LoopbackDown,
    #[error("cannot bind {addr} in the pod's network namespace")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot serve the listeners bound in the pod's network namespace")]
    Serve(#[source] io::Error),
    #[error("the listener thread failed")]
    Thread,
    #[error(
        "the pod shares its network namespace with a pod under policy \"{other}\": only \
         that policy is served there (this pod's DNS and guarded ports are refused)"
    )]
    PolicyConflict { other: String },
}

/// A network namespace: the device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NsId {
    pub dev: u64,
    pub ino: u64,
}

impl NsId {
    fn of(file: &File) -> io::Result<Self> {
        let m = file.metadata()?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// Opens a policy's listeners in a network namespace; they stay open until the value
/// returned is dropped.
pub trait Opener: Send {
    type Served: Send;
    fn open(&self, ns: &File, policy_id: u32) -> Result<Self::Served, NetnsError>;
}

/// What the manager has to say, for logs and events.
#[derive(Debug, PartialEq, Eq)]
pub enum NetOutcome {
    Opened {
        pod: String,
        policy: String,
        ns: NsId,
        pid: u32,
    },
    Shared {
        pod: String,
        ns: NsId,
    },
    Closed {
        ns: NsId,
    },
    Failed {
        pod: String,
        policy: String,
        cgroup: String,
        pid: u32,
        error: String,
    },
}

struct PodNet {
    path: PathBuf,
    relative: String,
    pod: String,
    policy: String,
    policy_id: u32,
    ns: Option<NsId>,
    /// Populated, but every process found shares the agent's namespace, since then.
    pending: Option<Instant>,
    /// The namespace that failed last (not tried again until something changes).
    failed: Option<NsId>,
    /// The namespace whose `lo` was found down (reported once, tried again while
    /// pending).
    lo_down: Option<NsId>,
    wd: Option<WatchDescriptor>,
}

struct Net<S> {
    policy_id: u32,
    policy: String,
    pods: HashSet<String>,
    _served: S,
}

/// The pods' network namespaces and the listeners opened in them.
pub struct PodNets<O: Opener> {
    opener: O,
    /// The agent's own namespace (`None`: unknown, every namespace is foreign).
    own: Option<NsId>,
    pods: HashMap<String, PodNet>,
    nets: HashMap<NsId, Net<O::Served>>,
    watches: Option<Watches>,
    by_wd: HashMap<WatchDescriptor, String>,
    /// Wakes this module's thread (an eventfd it polls), which looks at pending pods.
    wake: Option<Arc<OwnedFd>>,
}

impl<O: Opener> PodNets<O> {
    pub fn new(opener: O, own: Option<NsId>, watches: Option<Watches>) -> Self {
        Self {
            opener,
            own,
            pods: HashMap::new(),
            nets: HashMap::new(),
            watches,
            by_wd: HashMap::new(),
            wake: None,
        }
    }

    /// Pods are marked pending and looked at by this module's thread, so that the
    /// enrolling thread never waits for a namespace to be entered and bound.
    fn wake_thread(&self) {
        if let Some(fd) = &self.wake {
            let one = 1u64;
            // SAFETY: an 8-byte write to an eventfd we own. A full counter (never in
            // practice) only means the thread is awake already.
            let _ = unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
        }
    }

    /// An enforced pod's cgroup was enrolled: its namespace is looked at at once (by
    /// this module's thread) and every time its `cgroup.events` changes. Enrolled again
    /// under another policy (a static pod's cgroup moved to the strictest, see `node`),
    /// it leaves the listeners it had (closed if it was their last pod, reported) and is
    /// served again under the new one.
    pub fn enrolled(
        &mut self,
        uid: &str,
        path: &Path,
        relative: &str,
        pod: &str,
        policy: &str,
        policy_id: u32,
    ) -> Vec<NetOutcome> {
        let mut out = Vec::new();
        if self.pods.get(uid).is_some_and(|p| p.policy_id != policy_id) {
            out = self.gone(uid);
        }
        if !self.pods.contains_key(uid) {
            let wd = self.watches.as_mut().and_then(|w| {
                w.add(path.join("cgroup.events"), WatchMask::MODIFY)
                    .map_err(|e| tracing::debug!(cgroup = %path.display(), error = %e, "cannot watch cgroup.events"))
                    .ok()
            });
            if let Some(wd) = &wd {
                self.by_wd.insert(wd.clone(), uid.to_owned());
            }
            self.pods.insert(
                uid.to_owned(),
                PodNet {
                    path: path.to_owned(),
                    relative: relative.to_owned(),
                    pod: pod.to_owned(),
                    policy: policy.to_owned(),
                    policy_id,
                    ns: None,
                    pending: None,
                    failed: None,
                    lo_down: None,
                    wd,
                },
            );
        }
        if let Some(p) = self.pods.get_mut(uid) {
            p.pending.get_or_insert_with(Instant::now);
        }
        self.wake_thread();
        out
    }

    /// A pod's cgroup is gone: its share of its namespace's listeners goes.
    pub fn gone(&mut self, uid: &str) -> Vec<NetOutcome> {
        let Some(p) = self.pods.remove(uid) else {
            return Vec::new();
        };
        if let (Some(wd), Some(w)) = (p.wd, self.watches.as_mut()) {
            self.by_wd.remove(&wd);
            // Fails when the cgroup is gone already (the kernel dropped the watch).
            let _ = w.remove(wd);
        }
        p.ns.map(|ns| self.leave(uid, ns))
            .into_iter()
            .flatten()
            .collect()
    }

    /// The inotify watch `wd` fired: its pod is looked at again.
    fn changed(&mut self, wd: &WatchDescriptor, ignored: bool) -> Vec<NetOutcome> {
        let Some(uid) = self.by_wd.get(wd).cloned() else {
            return Vec::new();
        };
        if ignored {
            self.by_wd.remove(wd);
            if let Some(p) = self.pods.get_mut(&uid) {
                p.wd = None;
            }
            return Vec::new();
        }
        self.check(&uid)
    }

    /// Every pod still pending, looked at again; and those pending too long dropped
    /// (they share the agent's namespace: hostNetwork).
    fn poll_pending(&mut self, now: Instant) -> Vec<NetOutcome> {
        let uids: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| p.pending.is_some())
            .map(|(u, _)| u.clone())
            .collect();
        let mut out = Vec::new();
        for uid in uids {
            out.extend(self.check(&uid));
            if let Some(p) = self.pods.get_mut(&uid)
                && p.pending
                    .is_some_and(|t| now.duration_since(t) >= PENDING_FOR)
            {
                tracing::debug!(pod = %p.pod, "pod not served in a namespace of its own (hostNetwork, or its lo stayed down): looked at again when its cgroup.events changes");
                p.pending = None;
            }
        }
        out
    }

    /// The reconciling scan: every pod looked at again (by this module's thread),
    /// failed ones included.
    pub fn rescan(&mut self) {
        let now = Instant::now();
        for p in self.pods.values_mut() {
            p.failed = None;
            p.pending.get_or_insert(now);
        }
        self.wake_thread();
    }

    fn has_pending(&self) -> bool {
        self.pods.values().any(|p| p.pending.is_some())
    }

    /// How many namespaces have listeners now.
    #[cfg(test)]
    fn served(&self) -> usize {
        self.nets.len()
    }

    /// Finds the pod's namespace and attaches the pod to it.
    fn check(&mut self, uid: &str) -> Vec<NetOutcome> {
        let Some(p) = self.pods.get(uid) else {
            return Vec::new();
        };
        let found = pod_netns(foreign_netns(&p.path, self.own), p.ns);
        let mut out = Vec::new();
        let Some(Candidate { pid, file, ns, .. }) = found else {
            let populated = super::node::first_process(&p.path).is_some();
            if let Some(p) = self.pods.get_mut(uid) {
                p.pending = match (populated, p.pending, p.ns) {
                    (true, None, None) => Some(Instant::now()),
                    (true, pending, None) => pending,
                    _ => None,
                };
            }
            return out;
        };
        if p.ns == Some(ns) || p.failed == Some(ns) {
            if let Some(p) = self.pods.get_mut(uid) {
                p.pending = None;
            }
            return out;
        }
        // The pod is in another namespace than before (its sandbox was made again).
        if let Some(old) = p.ns {
            out.extend(self.leave(uid, old));
        }
        let Some(p) = self.pods.get_mut(uid) else {
            return out;
        };
        let pending = p.pending.take();
        p.ns = None;
        let fail = |p: &PodNet, error: String| NetOutcome::Failed {
            pod: p.pod.clone(),
            policy: p.policy.clone(),
            cgroup: p.relative.clone(),
            pid,
            error,
        };
        match self.nets.get_mut(&ns) {
            Some(net) if net.policy_id == p.policy_id => {
                net.pods.insert(uid.to_owned());
                p.ns = Some(ns);
                out.push(NetOutcome::Shared {
                    pod: p.pod.clone(),
                    ns,
                });
            }
            Some(net) => {
                let e = NetnsError::PolicyConflict {
                    other: net.policy.clone(),
                };
                p.failed = Some(ns);
                out.push(fail(p, e.to_string()));
            }
            None => match self.opener.open(&file, p.policy_id) {
                Ok(served) => {
                    self.nets.insert(
                        ns,
                        Net {
                            policy_id: p.policy_id,
                            policy: p.policy.clone(),
                            pods: HashSet::from([uid.to_owned()]),
                            _served: served,
                        },
                    );
                    p.ns = Some(ns);
                    out.push(NetOutcome::Opened {
                        pod: p.pod.clone(),
                        policy: p.policy.clone(),
                        ns,
                        pid,
                    });
                }
                Err(NetnsError::LoopbackDown) => {
                    // Tried again while pending (whoever made the namespace may bring
                    // `lo` up in a moment), reported once.
                    p.pending = Some(pending.unwrap_or_else(Instant::now));
                    if p.lo_down.replace(ns) != Some(ns) {
                        out.push(fail(p, NetnsError::LoopbackDown.to_string()));
                    }
                }
                Err(e) => {
                    p.failed = Some(ns);
                    out.push(fail(p, crate::error_chain(&e)));
                }
            },
        }
        out
    }

    /// Pod `uid` no longer uses namespace `ns`: the listeners close with its last pod.
    fn leave(&mut self, uid: &str, ns: NsId) -> Option<NetOutcome> {
        let net = self.nets.get_mut(&ns)?;
        net.pods.remove(uid);
        if net.pods.is_empty() {
            self.nets.remove(&ns);
            return Some(NetOutcome::Closed { ns });
        }
        None
    }
}

/// The agent's own network namespace.
pub fn own_netns() -> Option<NsId> {
    File::open("/proc/self/ns/net")
        .and_then(|f| NsId::of(&f))
        .ok()
}

/// Processes looked at per cgroup of the pod's tree (its first: the sandbox's cgroup
/// holds one process), and cgroups per pod.
const PIDS_PER_CGROUP: usize = 1;
const MAX_PIDS: usize = 256;

/// A process of the pod's cgroup tree in a network namespace other than the agent's.
struct Candidate {
    start: u64,
    pid: u32,
    /// The namespace's file, opened first, then identified (so a pid reused meanwhile
    /// cannot mislead).
    file: File,
    ns: NsId,
}

/// The processes of the pod's cgroup tree (the first of each cgroup) in a network
/// namespace other than `own`.
fn foreign_netns(dir: &Path, own: Option<NsId>) -> Vec<Candidate> {
    let mut pids = Vec::new();
    collect_pids(dir, 0, &mut pids);
    pids.into_iter()
        .filter_map(|pid| {
            let file = File::open(format!("/proc/{pid}/ns/net")).ok()?;
            let ns = NsId::of(&file).ok()?;
            if Some(ns) == own {
                return None;
            }
            let start = start_time(pid)?;
            Some(Candidate {
                start,
                pid,
                file,
                ns,
            })
        })
        .collect()
}

/// The pod's namespace among `found`: the one it is served in while a process of the
/// pod is still there, else the oldest process's.
///
/// The pod's namespace is its sandbox's ("pause"), whose process starts before every
/// container's: a process started later may be in a namespace it made itself
/// (`unshare -Urn` needs no capability where unprivileged user namespaces are allowed),
/// which is not the pod's and must not take its listeners.
fn pod_netns(found: Vec<Candidate>, current: Option<NsId>) -> Option<Candidate> {
    if let Some(cur) = current
        && let Some(i) = found.iter().position(|c| c.ns == cur)
    {
        return found.into_iter().nth(i);
    }
    // The first of equals: the order of the tree.
    found.into_iter().min_by_key(|c| c.start)
}

/// When process `pid` started (`/proc/<pid>/stat` field 22, clock ticks since boot).
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) is in parentheses and may hold anything: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn collect_pids(dir: &Path, depth: u32, pids: &mut Vec<u32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(
            text.lines()
                .filter_map(|l| l.trim().parse::<u32>().ok())
                .take(PIDS_PER_CGROUP),
        );
    }
    if depth > 8 || pids.len() >= MAX_PIDS {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if pids.len() >= MAX_PIDS {
            return;
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&e.path(), depth + 1, pids);
        }
    }
}

/// Starts the thread that follows the pods' `cgroup.events` and the pending ones.
/// `make` builds the manager with the thread's inotify watches.
pub fn spawn<O: Opener + 'static>(
    make: impl FnOnce(Option<Watches>) -> PodNets<O>,
    report: impl Fn(NetOutcome) + Send + 'static,
) -> io::Result<Arc<Mutex<PodNets<O>>>> {
    let inotify = Inotify::init()?;
    // SAFETY: plain syscall; the descriptor is owned below.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if efd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    let wake: Arc<OwnedFd> = Arc::new(unsafe { std::os::fd::FromRawFd::from_raw_fd(efd) });
    let mut made = make(Some(inotify.watches()));
    made.wake = Some(Arc::clone(&wake));
    let nets = Arc::new(Mutex::new(made));
    let shared = Arc::clone(&nets);
    std::thread::Builder::new()
        .name("hb-kube-netns".into())
        .spawn(move || follow(inotify, &wake, &shared, &report))?;
    Ok(nets)
}

fn follow<O: Opener>(
    mut inotify: Inotify,
    wake: &OwnedFd,
    nets: &Mutex<PodNets<O>>,
    report: &dyn Fn(NetOutcome),
) {
    let lock = || {
        nets.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let wait = if lock().has_pending() {
            PENDING_POLL
        } else {
            Duration::from_secs(3600)
        };
        let [ino_ready, woken] = readable2([inotify.as_raw_fd(), wake.as_raw_fd()], wait);
        if woken {
            let mut count = 0u64;
            // SAFETY: an 8-byte read from a non-blocking eventfd we own (resets it).
            let _ = unsafe { libc::read(wake.as_raw_fd(), (&raw mut count).cast(), 8) };
        }
        if ino_ready {
            let changed: Vec<(WatchDescriptor, bool)> = match inotify.read_events(&mut buf) {
                Ok(events) => events
                    .map(|e| (e.wd.clone(), e.mask.contains(EventMask::IGNORED)))
                    .collect(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Vec::new(),
                Err(e) => {
                    tracing::error!(error = %e, "inotify on pods' cgroup.events failed: pod network namespaces are found by the reconciling scan only");
                    return;
                }
            };
            let mut n = lock();
            let out: Vec<NetOutcome> = changed
                .iter()
                .flat_map(|(wd, ignored)| n.changed(wd, *ignored))
                .collect();
            drop(n);
            out.into_iter().for_each(report);
        }
        let out = lock().poll_pending(Instant::now());
        out.into_iter().for_each(report);
    }
}

/// Waits up to `timeout` for either descriptor to be readable; which are.
fn readable2(fds: [i32; 2], timeout: Duration) -> [bool; 2] {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: two valid pollfds.
    let n = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms.max(1)) };
    if n <= 0 {
        return [false, false];
    }
    pfds.map(|p| p.revents & libc::POLLIN != 0)
}

/// What a pod namespace gets: the resolver's and the guard's listeners of its policy,
/// bound on the agent's loopback addresses and ports there.
pub struct Listeners {
    pub runtime: tokio::runtime::Handle,
    pub dns: Option<(crate::dns::PodServer, Ipv4Addr, u16)>,
    pub guard: Option<(crate::guard::PodServer, Ipv4Addr, u16)>,
}

/// The tasks serving one namespace; dropping it closes the sockets.
pub struct Served(Vec<tokio::task::AbortHandle>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

enum Bound {
    Dns(std::net::UdpSocket, std::net::TcpListener),
    Guard(std::net::TcpListener),
}

impl Opener for Listeners {
    type Served = Served;

    fn open(&self, ns: &File, policy_id: u32) -> Result<Served, NetnsError> {
        let dns = self
            .dns
            .as_ref()
            .filter(|(s, ..)| s.serves(policy_id))
            .map(|(_, ip, base)| (*ip, base.wrapping_add(policy_id as u16)));
        let guard = self
            .guard
            .as_ref()
            .filter(|(s, ..)| s.serves(policy_id))
            .map(|(_, ip, base)| (*ip, base.wrapping_add(policy_id as u16)));
        if dns.is_none() && guard.is_none() {
            return Ok(Served(Vec::new()));
        }
        let ns: OwnedFd = ns.try_clone().map_err(NetnsError::Setns)?.into();
        let bound = std::thread::Builder::new()
            .name("hb-netns-bind".into())
            .spawn(move || bind_in(&ns, dns, guard))
            .map_err(|_| NetnsError::Thread)?
            .join()
            .map_err(|_| NetnsError::Thread)??;
        let _rt = self.runtime.enter();
        let mut tasks = Served(Vec::new());
        for b in bound {
            match (b, &self.dns, &self.guard) {
                (Bound::Dns(udp, tcp), Some((server, ..)), _) => tasks.0.extend(
                    server
                        .serve(policy_id, udp, tcp)
                        .map_err(NetnsError::Serve)?,
                ),
                (Bound::Guard(l), _, Some((server, ..))) => tasks
                    .0
                    .push(server.serve(policy_id, l).map_err(NetnsError::Serve)?),
                _ => {}
            }
        }
        Ok(tasks)
    }
}

/// On a thread of its own, which exits right after: enters namespace `ns` and binds the
/// resolver's UDP and TCP sockets and the guard's listener, on the IPv4 address and on
/// `[::1]` (left out when the namespace has no IPv6 loopback: the pod's IPv6 lookups
/// are then refused, as everything else of it is).
fn bind_in(
    ns: &OwnedFd,
    dns: Option<(Ipv4Addr, u16)>,
    guard: Option<(Ipv4Addr, u16)>,
) -> Result<Vec<Bound>, NetnsError> {
    // SAFETY: setns on this thread only, which makes no other use of the network.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Setns(io::Error::last_os_error()));
    }
    if !loopback_up().map_err(NetnsError::Setns)? {
        return Err(NetnsError::LoopbackDown);
    }
    let mut out = Vec::new();
    let addrs = |ip: Ipv4Addr, port: u16| {
        [
            (SocketAddr::new(IpAddr::V4(ip), port), true),
            (
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
                false,
            ),
        ]
    };
    let bind_err = |addr| move |source| NetnsError::Bind { addr, source };
    if let Some((ip, port)) = dns {
        for (addr, required) in addrs(ip, port) {
            let udp = match std::net::UdpSocket::bind(addr) {
                Ok(s) => s,
                Err(e) if !required && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => continue,
                Err(e) => return Err(bind_err(addr)(e)),
            };
            let tcp = std::net::TcpListener::bind(addr).map_err(bind_err(addr))?;
            udp.set_nonblocking(true).map_err(bind_err(addr))?;
            tcp.set_nonblocking(true).map_err(bind_err(addr))?;
            out.push(Bound::Dns(udp, tcp));
        }
    }
    if let Some((ip, port)) = guard {
        for (addr, required) in addrs(ip, port) {
            let l = match std::net::TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) if !required && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => continue,
                Err(e) => return Err(bind_err(addr)(e)),
            };
            l.set_nonblocking(true).map_err(bind_err(addr))?;
            out.push(Bound::Guard(l));
        }
    }
    Ok(out)
}

/// Whether `lo` is up in the calling thread's network namespace (`SIOCGIFFLAGS`).
fn loopback_up() -> io::Result<bool> {
    // SAFETY: a datagram socket we own, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags into our ifreq.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(flags & libc::IFF_UP as libc::c_short != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts live "listener sets".
    struct Fake(Arc<AtomicUsize>);
    struct FakeServed(Arc<AtomicUsize>);
    impl Drop for FakeServed {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    impl Opener for Fake {
        type Served = FakeServed;
        fn open(&self, _: &File, _: u32) -> Result<FakeServed, NetnsError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(FakeServed(Arc::clone(&self.0)))
        }
    }

    /// A directory standing for a pod cgroup, whose cgroup.procs names this process.
    fn pod_dir() -> crate::vault::tests::TempDir {
        let d = crate::vault::tests::TempDir::new();
        fs::write(
            d.path().join("cgroup.procs"),
            format!("{}\n", std::process::id()),
        )
        .expect("procs");
        d
    }

    #[test]
    fn the_pods_namespace_is_the_served_one_while_used_else_the_oldest_processs() {
        let c = |start, ino| Candidate {
            start,
            pid: 1,
            file: File::open("/proc/self/ns/net").expect("netns"),
            ns: NsId { dev: 0, ino },
        };
        let ns = |found: Vec<Candidate>, current: Option<u64>| {
            pod_netns(found, current.map(|ino| NsId { dev: 0, ino })).map(|c| c.ns.ino)
        };
        // A later process in a namespace of its own listed first: the sandbox's wins.
        assert_eq!(ns(vec![c(20, 7), c(10, 3)], None), Some(3));
        assert_eq!(ns(vec![c(20, 7), c(10, 3)], Some(3)), Some(3));
        // Served in 7 and a process still there: it stays.
        assert_eq!(ns(vec![c(20, 7), c(10, 3)], Some(7)), Some(7));
        // The namespace served is no process's any more (the sandbox made again).
        assert_eq!(ns(vec![c(30, 9), c(40, 8)], Some(3)), Some(9));
        assert_eq!(ns(Vec::new(), Some(3)), None);
    }

    #[test]
    fn a_process_started_later_has_a_later_start_time() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let (me, it) = (start_time(std::process::id()), start_time(child.id()));
        let _ = child.kill();
        let _ = child.wait();
        assert!(me.is_some() && it.is_some(), "{me:?} {it:?}");
        assert!(me <= it, "{me:?} {it:?}");
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn pods_sharing_a_namespace_share_its_listeners_until_the_last_one_goes() {
        let live = Arc::new(AtomicUsize::new(0));
        // "own" is some other namespace: this process's counts as the pods'.
        let mut n = PodNets::new(Fake(Arc::clone(&live)), Some(NsId { dev: 0, ino: 1 }), None);
        let (a, b) = (pod_dir(), pod_dir());
        n.enrolled("a", a.path(), "a", "ns/a", "web", 1);
        let out = n.poll_pending(Instant::now());
        assert!(matches!(&out[..], [NetOutcome::Opened { .. }]), "{out:?}");
        n.enrolled("b", b.path(), "b", "ns/b", "web", 1);
        let out = n.poll_pending(Instant::now());
        assert!(matches!(&out[..], [NetOutcome::Shared { .. }]), "{out:?}");
        assert_eq!(live.load(Ordering::SeqCst), 1, "opened once");
        assert!(n.gone("a").is_empty());
        assert_eq!(live.load(Ordering::SeqCst), 1, "b still uses them");
        let out = n.gone("b");
        assert!(matches!(&out[..], [NetOutcome::Closed { .. }]), "{out:?}");
        assert_eq!(live.load(Ordering::SeqCst), 0, "closed with the last pod");
        assert_eq!(n.served(), 0);
    }

    #[test]
    fn a_pod_enrolled_again_under_another_policy_is_served_under_it() {
        let live = Arc::new(AtomicUsize::new(0));
        let mut n = PodNets::new(Fake(Arc::clone(&live)), Some(NsId { dev: 0, ino: 1 }), None);
        let a = pod_dir();
        assert!(n.enrolled("a", a.path(), "a", "ns/a", "web", 1).is_empty());
        n.poll_pending(Instant::now());
        // The same policy again (an adopted enrollment reported): nothing changes.
        assert!(n.enrolled("a", a.path(), "a", "ns/a", "web", 1).is_empty());
        assert!(n.poll_pending(Instant::now()).is_empty());
        let out = n.enrolled("a", a.path(), "a", "ns/a", "strict", 2);
        assert!(matches!(&out[..], [NetOutcome::Closed { .. }]), "{out:?}");
        let out = n.poll_pending(Instant::now());
        assert!(
            matches!(&out[..], [NetOutcome::Opened { policy, .. }] if policy == "strict"),
            "{out:?}"
        );
        assert_eq!(live.load(Ordering::SeqCst), 1);
        assert_eq!(
            n.nets.values().map(|net| net.policy_id).collect::<Vec<_>>(),
            [2]
        );
    }

    #[test]
    fn a_pod_under_another_policy_in_a_served_namespace_gets_nothing() {
        let live = Arc::new(AtomicUsize::new(0));
        let mut n = PodNets::new(Fake(Arc::clone(&live)), Some(NsId { dev: 0, ino: 1 }), None);
        let (a, b) = (pod_dir(), pod_dir());
        n.enrolled("a", a.path(), "a", "ns/a", "web", 1);
        n.poll_pending(Instant::now());
        n.enrolled("b", b.path(), "b", "ns/b", "open", 3);
        let out = n.poll_pending(Instant::now());
        assert!(
            matches!(&out[..], [NetOutcome::Failed { error, .. }] if error.contains("\"web\"")),
            "{out:?}"
        );
        assert_eq!(live.load(Ordering::SeqCst), 1);
        n.gone("a");
        n.gone("b");
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_pod_in_the_agents_namespace_gets_nothing_and_is_pending_while_populated() {
        let live = Arc::new(AtomicUsize::new(0));
        let mut n = PodNets::new(Fake(Arc::clone(&live)), own_netns(), None);
        let a = pod_dir();
        fs::write(a.path().join("cgroup.events"), "populated 1\nfrozen 0\n").expect("events");
        n.enrolled("a", a.path(), "a", "ns/a", "web", 1);
        assert!(n.poll_pending(Instant::now()).is_empty());
        assert!(n.has_pending(), "populated: looked at again for a while");
        let later = Instant::now() + PENDING_FOR;
        assert!(n.poll_pending(later).is_empty());
        assert!(!n.has_pending(), "given up after PENDING_FOR: hostNetwork");
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }
}
