//! Pod enrollment on a Kubernetes node (`[kubernetes]`): the pods of this node, from the
//! API, enrolled by their pod-level cgroup the moment the kubelet creates it.
//!
//! Data path: API watch (`api`) → pod uid registered with its policy (`decide`, `node`)
//! → inotify on the kubepods hierarchy (`watch`) sees `…pod<uid>…` appear (`layout`) →
//! the cgroup id goes into the pinned enrolled map → the programs enforce every socket of
//! every container below it.
//!
//! Owns: the `ENROLL_KUBE` entries of the enrolled map. Must never: remove an
//! enrollment whose cgroup exists, or let a pod's own metadata lift its enforcement (see
//! `node`). The remaining window (a container that runs before the agent has seen its
//! pod cgroup) is measured and reported, never hidden: `late_enrollment`. An enforced pod
//! whose spec keeps `CAP_NET_RAW` under a policy without `raw_sockets` is frozen and
//! killed instead of run (`caps`, `node`): `net_raw_pod`.

mod api;
mod caps;
mod confined;
pub mod decide;
pub mod layout;
pub mod netns;
pub mod node;
mod node_access;
mod watch;

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use hb_common::{ENROLL_KUBE, Enrollment, map_names};

use crate::{config::Config, events::EventRecord, maps};

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "kubernetes.node_name is empty and K8S_NODE_NAME is not set: the agent must know its node \
         (set it from the downward API: fieldRef spec.nodeName)"
    )]
    NoNodeName,
    #[error("kubernetes API client: {0}")]
    Config(String),
    #[error(transparent)]
    Maps(#[from] maps::MapsError),
    #[error("cannot start the pod cgroup watcher")]
    Watcher(#[source] std::io::Error),
}

/// Upper bounds (µs) of the enrollment latency buckets.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000, 10_000_000,
];

/// The pod watcher's numbers, for the metrics endpoint and `/readyz` (wired by the
/// metrics module; also written to `state_dir/kubernetes.json`):
/// - `pods_known`, `pods_enforced`, `cgroups_enrolled`: gauges (pods bound to this node
///   the agent knows, those enforced, pod cgroups enrolled now);
/// - `late_enrollments`: counter of pod cgroups that already held a process when they
///   were enrolled (each also a `late_enrollment` event);
/// - `relists`: counter of watch restarts that needed a new list (410 Gone, errors);
/// - `initial_sync_done`: both initial lists applied and the first cgroup scan done;
/// - the enrollment latency histogram: from the moment the agent learned of a pod
///   cgroup (inotify event or scan) to its enrollment, in µs, cumulative buckets
///   [`LATENCY_BUCKETS_US`] plus +Inf, with sum and count;
/// - `net_raw_pods`: counter of pod cgroups refused because their pod keeps
///   `CAP_NET_RAW` under a policy without `raw_sockets`, or hold a capability beyond
///   the runtime's default set under any (each also a `net_raw_pod` event);
///   `unconfined_pods`: those refused because a container of theirs runs
///   outside hb's seccomp profile (`unconfined_pod`). (From the kubelet's `mkdir`
///   the figure is measured outside, by the tests and `cargo xtask bench enroll`.)
#[derive(Debug, Default)]
pub struct Stats {
    pub pods_known: AtomicU64,
    pub pods_enforced: AtomicU64,
    pub cgroups_enrolled: AtomicU64,
    pub late_enrollments: AtomicU64,
    pub net_raw_pods: AtomicU64,
    pub unconfined_pods: AtomicU64,
    pub relists: AtomicU64,
    pub initial_sync_done: AtomicBool,
    /// Pod network namespaces the agent's listeners are open in now.
    pub netns_served: AtomicU64,
    latency: Mutex<Latency>,
}

/// A latency histogram: counts per bucket of [`LATENCY_BUCKETS_US`] (the last slot is
/// +Inf), sum in µs and count.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Latency {
    pub buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    pub sum_us: u64,
    pub count: u64,
}

impl Stats {
    fn observe_latency(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut l = self
            .latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = LATENCY_BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        l.buckets[slot] += 1;
        l.sum_us += us;
        l.count += 1;
        crate::telemetry::global()
            .enrollment_latency
            .observe(d.as_secs_f64());
    }

    fn late(&self) {
        self.late_enrollments.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::global().late_enrollments.inc();
    }

    fn net_raw_refused(&self) {
        self.net_raw_pods.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::global().net_raw_pods.inc();
    }

    fn unconfined_refused(&self) {
        self.unconfined_pods.fetch_add(1, Ordering::Relaxed);
        crate::telemetry::global().unconfined_pods.inc();
    }

    fn set_gauges(&self, known: usize, enforced: usize, enrolled: usize) {
        crate::telemetry::global()
            .pods
            .set(i64::try_from(enforced).unwrap_or(i64::MAX));
        self.pods_known.store(known as u64, Ordering::Relaxed);
        self.pods_enforced.store(enforced as u64, Ordering::Relaxed);
        self.cgroups_enrolled
            .store(enrolled as u64, Ordering::Relaxed);
    }

    /// The latency histogram so far.
    pub fn latency(&self) -> Latency {
        self.latency
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "pods_known": self.pods_known.load(Ordering::Relaxed),
            "pods_enforced": self.pods_enforced.load(Ordering::Relaxed),
            "cgroups_enrolled": self.cgroups_enrolled.load(Ordering::Relaxed),
            "late_enrollments": self.late_enrollments.load(Ordering::Relaxed),
            "net_raw_pods": self.net_raw_pods.load(Ordering::Relaxed),
            "unconfined_pods": self.unconfined_pods.load(Ordering::Relaxed),
            "relists": self.relists.load(Ordering::Relaxed),
            "initial_sync_done": self.initial_sync_done.load(Ordering::Relaxed),
            "netns_served": self.netns_served.load(Ordering::Relaxed),
            "enroll_latency_us": self.latency(),
        })
    }
}

/// File below `state_dir` with the pod watcher's [`Stats`].
pub const STATE_FILE: &str = "kubernetes.json";

/// The pinned enrolled map, as the pod watcher's sink.
struct MapSink {
    maps: maps::Maps,
}

impl node::Sink for MapSink {
    fn enroll(&mut self, id: u64, policy_id: u32) -> Result<(), String> {
        let value = Enrollment {
            policy_id,
            flags: ENROLL_KUBE,
        };
        self.maps
            .enrolled
            .insert(id, value, 0)
            .map_err(|e| e.to_string())?;
        self.maps.bump_generation().map_err(|e| e.to_string())
    }

    fn unenroll(&mut self, id: u64) {
        if self.maps.enrolled.remove(&id).is_ok() {
            let _ = self.maps.bump_generation();
            self.maps.forget_unenrolled_socket_counts();
        }
    }

    fn kube_policy(&self, id: u64) -> Option<u32> {
        self.maps
            .enrolled
            .get(&id, 0)
            .ok()
            .filter(|e| e.flags & ENROLL_KUBE != 0)
            .map(|e| e.policy_id)
    }
}

/// Everything `start` needs from the agent.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub policy_ids: &'a HashMap<String, u32>,
    pub bpffs: &'a Path,
    pub mount: &'a Path,
    /// Where `late_enrollment` events go (the agent's user-space event channel).
    pub events: crate::events::EventSender,
    /// The resolver and the guard, to serve pods in network namespaces of their own.
    pub dns: Option<crate::dns::PodServer>,
    pub guard: Option<crate::guard::PodServer>,
}

/// Starts the pod watcher: the cgroup watcher thread at once, the API watch as a task.
/// Returns its numbers.
pub async fn start(inputs: Inputs<'_>) -> Result<Arc<Stats>, KubeError> {
    let k = &inputs.config.kubernetes;
    let node_name = if k.node_name.is_empty() {
        std::env::var("K8S_NODE_NAME").unwrap_or_default()
    } else {
        k.node_name.clone()
    };
    if node_name.is_empty() {
        return Err(KubeError::NoNodeName);
    }
    let client = api::client(&k.kubeconfig).await?;
    let stats = Arc::new(Stats::default());
    let sink = MapSink {
        maps: maps::Maps::open(inputs.bpffs)?,
    };
    // The enrolled map must exist (it does: the agent loaded the programs first).
    let _: BpfHashMap<MapData, u64, Enrollment> =
        maps::open_typed(inputs.bpffs, map_names::ENROLLED)?;
    let policies = decide::Policies::new(inputs.config, inputs.policy_ids);
    let node = Arc::new(Mutex::new(node::Node::new(
        sink,
        policies,
        Arc::clone(&stats),
    )));
    let state_file = inputs.config.agent.state_dir.join(STATE_FILE);
    let scanned = Arc::new(AtomicBool::new(false));
    let listed = Arc::new(AtomicBool::new(false));
    let mark_synced = {
        let (stats, scanned, listed, state_file) = (
            Arc::clone(&stats),
            Arc::clone(&scanned),
            Arc::clone(&listed),
            state_file.clone(),
        );
        move || {
            if scanned.load(Ordering::SeqCst)
                && listed.load(Ordering::SeqCst)
                && !stats.initial_sync_done.swap(true, Ordering::SeqCst)
            {
                crate::telemetry::global()
                    .readiness
                    .set(crate::telemetry::Condition::PodsSynced, true);
                tracing::info!("kubernetes: initial sync done (pods, namespaces and pod cgroups)");
                write_state(&state_file, &stats);
            }
        }
    };
    let mark_synced = Arc::new(mark_synced);

    let nets = start_pod_nets(&inputs, &stats)?;
    let reporter = Reporter {
        events: inputs.events.clone(),
        nets: nets.clone(),
        stats: Arc::clone(&stats),
    };
    let watcher = watch::Watcher {
        mount: inputs.mount.to_owned(),
        root: inputs.config.kube_cgroup_root().to_owned(),
        node: Arc::clone(&node),
        inotify: k.watch_cgroups,
        rescan: Duration::from_millis(k.rescan_interval_ms),
        report: Box::new({
            let r = reporter.clone();
            move |o| r.report(o)
        }),
        scanned: Box::new({
            let (scanned, mark) = (Arc::clone(&scanned), Arc::clone(&mark_synced));
            move || {
                scanned.store(true, Ordering::SeqCst);
                mark();
            }
        }),
        after_scan: Box::new({
            let r = reporter.clone();
            move || r.rescan_nets()
        }),
    };
    watcher.spawn().map_err(KubeError::Watcher)?;
    let keys = api::Keys {
        enforce_label: k.enforce_namespace_label.clone(),
        policy_annotation: k.policy_annotation.clone(),
        allowed_annotation: k.allowed_policies_annotation.clone(),
        static_pod_namespaces: k.static_pod_namespaces.clone(),
        seccomp_profile: k.seccomp_profile.clone(),
        require_seccomp_profile: k.require_seccomp_profile,
        policy_sockets_dir: inputs.config.broker.policy_sockets_dir(),
        runtime_classes: k.runtime_classes.clone(),
    };
    tracing::info!(node = %node_name, cgroups = %inputs.config.kube_cgroup_root(), inotify = k.watch_cgroups, "kubernetes: watching this node's pods");
    let stats2 = Arc::clone(&stats);
    tokio::spawn(async move {
        let r = reporter.clone();
        api::follow(
            client,
            node_name,
            keys,
            node,
            stats2,
            move |o| r.report(o),
            move || {
                listed.store(true, Ordering::SeqCst);
                mark_synced();
            },
        )
        .await;
    });
    // The numbers on disk twice a second, off the enrolling thread.
    let (s, f) = (Arc::clone(&stats), state_file);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            write_state(&f, &s);
        }
    });
    Ok(stats)
}

type Nets = Arc<Mutex<netns::PodNets<netns::Listeners>>>;

/// The manager of the listeners in pods' network namespaces, with its thread; `None`
/// when neither the resolver nor the guard listens on loopback (then pods reach them
/// by routing, and nothing is opened in their namespaces).
fn start_pod_nets(inputs: &Inputs<'_>, stats: &Arc<Stats>) -> Result<Option<Nets>, KubeError> {
    let config = inputs.config;
    let dns_listen = config.dns_listen();
    let guard_listen = config.guard_listen();
    let listeners = netns::Listeners {
        runtime: tokio::runtime::Handle::current(),
        dns: inputs
            .dns
            .clone()
            .filter(|_| dns_listen.ip().is_loopback())
            .map(|s| (s, *dns_listen.ip(), dns_listen.port())),
        guard: inputs
            .guard
            .clone()
            .filter(|_| guard_listen.ip().is_loopback())
            .map(|s| (s, *guard_listen.ip(), guard_listen.port())),
    };
    if listeners.dns.is_none() && listeners.guard.is_none() {
        return Ok(None);
    }
    let own = netns::own_netns();
    if own.is_none() {
        tracing::warn!(
            "cannot read the agent's own network namespace: every pod is served in its own"
        );
    }
    let reporter = NetReporter {
        events: inputs.events.clone(),
        stats: Arc::clone(stats),
    };
    let nets = netns::spawn(
        |watches| netns::PodNets::new(listeners, own, watches),
        move |o| reporter.report(o),
    )
    .map_err(KubeError::Watcher)?;
    Ok(Some(nets))
}

/// Logs what happens to pods' network namespaces, counts them, and reports failures as
/// `pod_netns_unserved` events.
#[derive(Clone)]
struct NetReporter {
    events: crate::events::EventSender,
    stats: Arc<Stats>,
}

impl NetReporter {
    fn report(&self, outcome: netns::NetOutcome) {
        match outcome {
            netns::NetOutcome::Opened {
                pod,
                policy,
                ns,
                pid,
            } => {
                self.stats.netns_served.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%pod, %policy, netns = ns.ino, pid, "pod network namespace: the resolver's and guard's listeners opened in it");
            }
            netns::NetOutcome::Shared { pod, ns } => {
                tracing::info!(%pod, netns = ns.ino, "pod shares a network namespace already served");
            }
            netns::NetOutcome::Closed { ns } => {
                self.stats.netns_served.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(
                    netns = ns.ino,
                    "pod network namespace: its last pod is gone, listeners closed"
                );
            }
            netns::NetOutcome::Failed {
                pod,
                policy,
                cgroup,
                pid,
                error,
            } => {
                tracing::error!(%pod, %policy, cgroup = %crate::events::Escaped(&cgroup), pid, %error, "pod network namespace not served: its DNS and guarded ports are refused");
                let record = EventRecord {
                    hook: "enroll".to_owned(),
                    verdict: "deny".to_owned(),
                    reason: "pod_netns_unserved".to_owned(),
                    pid,
                    tid: pid,
                    comm: comm_of(pid),
                    ..pod_record(&pod, &cgroup, &policy)
                };
                self.events.try_send(record);
            }
        }
    }
}

/// Logs outcomes and sends `late_enrollment` events (nothing that waits on a disk: it
/// runs on the enrolling thread); opens and closes the listeners in pods' network
/// namespaces as pods are enrolled and go.
#[derive(Clone)]
struct Reporter {
    events: crate::events::EventSender,
    nets: Option<Nets>,
    stats: Arc<Stats>,
}

impl Reporter {
    fn nets(
        &self,
        f: impl FnOnce(&mut netns::PodNets<netns::Listeners>) -> Vec<netns::NetOutcome>,
    ) {
        let Some(nets) = &self.nets else { return };
        let out = f(&mut nets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
        let r = NetReporter {
            events: self.events.clone(),
            stats: Arc::clone(&self.stats),
        };
        out.into_iter().for_each(|o| r.report(o));
    }

    fn rescan_nets(&self) {
        if let Some(nets) = &self.nets {
            nets.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .rescan();
        }
    }

    fn report(&self, outcome: node::Outcome) {
        match outcome {
            node::Outcome::Enrolled {
                uid,
                pod,
                cgroup,
                path,
                policy,
                policy_id,
                late,
            } => {
                tracing::info!(%uid, %pod, cgroup = %crate::events::Escaped(&cgroup), %policy, late = late.is_some(), "pod cgroup enrolled");
                self.nets(|n| n.enrolled(&uid, &path, &cgroup, &pod, &policy, policy_id));
                if let Some(late) = late {
                    tracing::warn!(%uid, %pod, cgroup = %crate::events::Escaped(&cgroup), pid = late.pid, "late enrollment: the pod cgroup already held a process before it was enrolled");
                    let record = late_record(&pod, &cgroup, &policy, &late);
                    // Never block the watcher: a full channel loses the event, the
                    // counter still has it.
                    self.events.try_send(record);
                }
            }
            node::Outcome::PolicyRefused {
                uid,
                pod,
                asked,
                policy,
                unknown,
            } => {
                // (A name that is no policy is logged where it is decided.)
                if !unknown {
                    tracing::warn!(%uid, %pod, asked = %crate::events::Escaped(&asked), %policy, "pod names a policy its namespace does not allow: enforced under the namespace's fallback");
                }
                // The policy applied, the pod as `name`; the name it asked for is in
                // the log line.
                let reason = if unknown {
                    "policy_unknown"
                } else {
                    "policy_not_allowed"
                };
                let record = EventRecord {
                    verdict: "deny".to_owned(),
                    reason: reason.to_owned(),
                    cgroup: None,
                    ..pod_record(&pod, "", &policy)
                };
                self.events.try_send(record);
            }
            node::Outcome::Adopted {
                uid,
                pod,
                cgroup,
                path,
                policy,
                policy_id,
            } => {
                tracing::info!(%uid, %pod, cgroup = %crate::events::Escaped(&cgroup), %policy, "pod cgroup enrolled by an earlier agent: kept under its policy");
                // The earlier agent's listeners in the pod's network namespace closed
                // with it: opened again as for a pod enrolled now.
                self.nets(|n| n.enrolled(&uid, &path, &cgroup, &pod, &policy, policy_id));
            }
            node::Outcome::Unenrolled { uid, cgroup } => {
                tracing::info!(%uid, cgroup = %crate::events::Escaped(&cgroup), "pod cgroup gone: enrollment removed");
                self.nets(|n| n.gone(&uid));
            }
            node::Outcome::PodRefused(refusal) => self.pod_refused(&refusal),
            node::Outcome::Failed {
                cgroup,
                error,
                frozen: true,
            } => {
                tracing::error!(cgroup = %crate::events::Escaped(&cgroup), %error, "cannot enroll pod cgroup: frozen until it can be (fail closed)");
            }
            node::Outcome::Failed {
                cgroup,
                error,
                frozen: false,
            } => {
                tracing::error!(cgroup = %crate::events::Escaped(&cgroup), %error, "cannot enroll pod cgroup, nor freeze it: NOT enforced");
            }
        }
    }
}

impl Reporter {
    /// Logs a refused pod and sends its event: `unconfined_pod` when a container runs
    /// outside hb's seccomp profile, else `net_raw_pod`.
    fn pod_refused(&self, r: &node::PodRefusal) {
        let node::PodRefusal {
            uid,
            pod,
            cgroup,
            policy,
            grounds,
            frozen,
            killed,
        } = r;
        let list = |keepers: &[caps::Keeper]| {
            keepers
                .iter()
                .map(|k| format!("{} ({})", k.container, k.why))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut found = Vec::new();
        let mut fixes = Vec::new();
        if !grounds.unconfined.is_empty() {
            found.push(format!(
                "outside hb's seccomp profile: {}",
                list(&grounds.unconfined)
            ));
            fixes.push(
                "run every container under hb's profile (securityContext.seccompProfile: {type: Localhost, localhostProfile: <kubernetes.seccomp_profile>})"
                    .to_owned(),
            );
        }
        if !grounds.net_raw.is_empty() {
            found.push(format!("keeps CAP_NET_RAW: {}", list(&grounds.net_raw)));
            fixes.push(format!(
                "drop NET_RAW (securityContext.capabilities.drop: [ALL]) or set raw_sockets = true in policy {policy}"
            ));
        }
        if !grounds.beyond_default.is_empty() {
            found.push(format!(
                "holds capabilities beyond the runtime's default set: {}",
                list(&grounds.beyond_default)
            ));
            fixes.push(
                "run no container privileged and add no capability but NET_BIND_SERVICE (no policy opts into more)"
                    .to_owned(),
            );
        }
        let (found, fix) = (found.join("; "), fixes.join("; "));
        if *frozen && *killed {
            tracing::error!(%uid, %pod, cgroup = %crate::events::Escaped(cgroup), %policy, found = %crate::events::Escaped(&found), %fix, "pod refused (what it runs could pass every cgroup hook): frozen and killed");
        } else {
            tracing::error!(%uid, %pod, cgroup = %crate::events::Escaped(cgroup), %policy, found = %crate::events::Escaped(&found), frozen, killed, %fix, "pod refused, and its cgroup could not be frozen or emptied: it may run unconfined");
        }
        let reason = if grounds.unconfined.is_empty() {
            "net_raw_pod"
        } else {
            "unconfined_pod"
        };
        let record = EventRecord {
            verdict: "deny".to_owned(),
            reason: reason.to_owned(),
            detail: Some(format!("{found}; fix: {fix}")),
            ..pod_record(pod, cgroup, policy)
        };
        self.events.try_send(record);
    }
}

/// The `late_enrollment` event of a pod cgroup enrolled with a process already in it.
fn late_record(pod: &str, cgroup: &str, policy: &str, late: &node::Late) -> EventRecord {
    EventRecord {
        cgroup_id: late.cgroup_id,
        pid: late.pid,
        tid: late.pid,
        comm: comm_of(late.pid),
        ..pod_record(pod, cgroup, policy)
    }
}

fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

/// An `enroll` event about a pod (`name`) and its cgroup; the command is the pid's.
fn pod_record(pod: &str, cgroup: &str, policy: &str) -> EventRecord {
    EventRecord {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        hook: "enroll".to_owned(),
        verdict: "audit".to_owned(),
        reason: "late_enrollment".to_owned(),
        policy: policy.to_owned(),
        cgroup_id: 0,
        cgroup: Some(cgroup.to_owned()),
        pid: 0,
        tid: 0,
        comm: String::new(),
        family: String::new(),
        protocol: String::new(),
        dst: String::new(),
        port: 0,
        name: Some(pod.to_owned()),
        suppressed: 0,
        detail: None,
    }
}

fn write_state(path: &Path, stats: &Stats) {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(&stats.snapshot()).unwrap_or_default();
    if std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .is_err()
    {
        tracing::debug!(file = %path.display(), "cannot write the pod watcher's numbers");
    }
}
