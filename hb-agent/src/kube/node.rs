//! What the agent knows about this node's pods and their cgroups, and the enrollments it
//! makes from the two: the one place where "pod known" meets "cgroup exists".
//!
//! A pod is registered (uid → policy) as soon as the API says it is bound here, usually
//! before the kubelet makes its cgroup; the cgroup is enrolled the moment the watcher
//! sees it. If the cgroup shows up first (agent start, API lag), it is remembered and
//! enrolled the moment the pod is known; had processes already run in it, that is a late
//! enrollment.
//!
//! Fail-closed rules, so that someone who can edit or delete pods cannot lift
//! enforcement:
//! - A pod's enforcement is decided once and is sticky for the pod's life: removing or
//!   changing its annotation changes nothing; removing the namespace's label stops new
//!   pods being enforced, not those already enforced.
//! - An enrollment is removed only when its cgroup is gone (cgroup ids are never reused,
//!   so a stale entry matches nothing). A pod deleted from the API (even force-deleted,
//!   while its containers still run) stays enforced while its cgroup exists, and a
//!   deleted enforced pod is remembered for [`TOMBSTONE`] in case its cgroup appears
//!   after the deletion.
//! - A pod cgroup that is already enrolled by the pod watcher when the agent starts (the
//!   pinned map survives restarts) keeps that policy.
//!
//! Static pods. The kubelet runs a static pod (a manifest in its static pod directory or
//! from its manifest URL) in a cgroup named after the pod's config hash (32 hex digits,
//! `layout::config_hash`), and shows it in the API as a *mirror pod*: an API pod with a
//! uid of its own and the annotation `kubernetes.io/config.mirror: <hash>`. A mirror pod
//! therefore claims the cgroup named by that hash, and the claim is enforced under the
//! mirror pod's own decision (its namespace, its policy annotation), like any pod.
//!
//! Who can make such a claim (Kubernetes source, kubernetes/kubernetes; functions named,
//! line numbers only for `admission.go`, at commit 01467da7):
//! - Anyone allowed to create pods in some namespace. The annotation is validated on
//!   create only to need `spec.nodeName` (`pkg/apis/core/validation/validation.go`,
//!   `ValidatePodSpecificAnnotations`: "must set spec.nodeName if mirror pod annotation
//!   is set"), and a client may set `spec.nodeName` itself, skipping the scheduler. The
//!   NodeRestriction admission plugin restricts *nodes* to creating mirror pods bound to
//!   themselves with a controller owner reference to their Node
//!   (`plugin/pkg/admission/noderestriction/admission.go`, `admitPodCreate` from L198:
//!   mirror pods only L205-208, bound to itself L210-213, the owner reference after),
//!   but lets every other user through untouched (`Admit`, L121-124: "Our job is just to
//!   restrict nodes"); the owner reference is no proof either, since any user may write
//!   one. Nothing in the stored object says who created it (managed fields name a
//!   client-chosen manager). So a tenant CAN create a pod claiming any hash, in its own
//!   namespace, bound to this node. (The kubelet never runs a pod carrying the
//!   annotation, `pkg/kubelet/kubelet.go`, `HandlePodAdditions`: `IsMirrorPod` →
//!   `handleMirrorPod`, `continue`, so the claim is the tenant's only use of it; and it
//!   deletes mirror pods whose name and namespace match no static pod of its own,
//!   `pkg/kubelet/pod/pod_manager.go`, `GetOrphanedMirrorPodNames`, but only later.)
//! - The value cannot change after creation: a pod update that adds, removes or changes
//!   the annotation is refused (`validation.go`, `ValidatePodSpecificAnnotationUpdates`:
//!   "may not remove or update mirror pod annotation", "may not add mirror annotation"),
//!   which `pkg/registry/core/pod/strategy.go` (`podStrategy.ValidateUpdate` →
//!   `ValidatePodUpdate`) applies to every update. The agent does not rely on it: a pod's
//!   claim is fixed the first time the agent sees the pod, and a later change is ignored
//!   and logged.
//!
//! Hence, first, only mirror pods of `kubernetes.static_pod_namespaces` (namespaces
//! where only cluster admins create pods) carry a claim at all (`api::static_claim`):
//! else a tenant's copy of a control-plane static pod's hash (etcd's, in an unenforced
//! namespace) would have that pod enforced under the tenant's policy. And the rule for
//! a static pod's cgroup, whatever pods of those namespaces claim it: a claim from a pod
//! that is not enforced counts for nothing; the cgroup is enforced if any claim is, under
//! that claim's policy if every enforced claim (and the cgroup's enrollment, if it has
//! one already) names the same policy, else under the strictest configured policy
//! (`decide::strictest`), where it stays: a static pod's enrollment only ever tightens.
//! So a claiming pod's deletion changes nothing either (the claim is kept until it is in
//! the enrollment, or for [`TOMBSTONE`] if the cgroup never appears, and no longer: many
//! pods may claim one cgroup, so a tenant's fakes made and deleted in a loop must not
//! pile up). A fake claim (made by someone who may create pods in a listed namespace)
//! can therefore only tighten a static pod's policy, never loosen or lift it; a cgroup
//! no pod claims is not enrolled (as before static pods were understood). What it can
//! do: make an unenforced static pod of those namespaces enforced, or move one to the
//! strictest policy (a denial of service on that pod, never an escape), and before the
//! true mirror pod is seen, have the cgroup enforced under the fake claim's policy
//! alone (which is one the faker's namespace allows its own pods).
//!
//! Pods that keep `CAP_NET_RAW`. A pod whose spec keeps the capability (`caps`) can
//! write frames through a packet socket that no cgroup program sees, so an enforced pod
//! that keeps it under a policy without `raw_sockets = true` is refused: its cgroup is
//! frozen (`cgroup.freeze`, before anything else is done with it), enrolled as usual,
//! and its processes killed (`cgroup.kill`), when it appears, at every reconciling scan
//! while it exists (a process that joins the frozen cgroup cannot run, and the next
//! scan kills it), and for cgroups already there when the agent starts. The refusal is
//! decided with the pod and sticky like its policy; an update (an ephemeral container
//! added) can only turn it on. A static pod's cgroup is refused if any enforced claim on
//! it is, or keeps the capability while the claims combined put the cgroup under a
//! policy without `raw_sockets` (the strictest, when they disagree).
//!
//! Pods outside hb's seccomp profile. Under `kubernetes.require_seccomp_profile` (the
//! default) an enforced pod any of whose containers does not run under hb's `Localhost`
//! profile (`confined`) is refused the same way, whatever its policy: without it, 32-bit
//! calls, vsock and other socket families, and io_uring go around the cgroup hooks. A
//! pod whose every container runs under it may keep `CAP_NET_RAW` (the profile refuses
//! packet sockets), so `caps` reports nothing for it.
//!
//! Pods holding more than the runtime's default capabilities. A container that is
//! privileged or adds a capability beyond the runtime's default set refuses its pod
//! the same way, under every policy and profile: `raw_sockets` spares `CAP_NET_RAW`
//! alone, and the profile takes no capability away (`CAP_NET_ADMIN` makes tunnels
//! whose kernel sockets no hook judges, `CAP_SYS_ADMIN` detaches programs).
//!
//! Must never: remove the enrollment of a cgroup that exists, or thaw a refused pod's
//! cgroup.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{
    Stats,
    caps::Keeper,
    decide::{self, Decision, Namespace, Pod, Policies},
    layout,
};

/// How long a deleted enforced pod is remembered when its cgroup was never seen.
pub const TOMBSTONE: Duration = Duration::from_secs(600);

/// Where enrollments go: the pinned map in the agent, a table in unit tests.
pub trait Sink {
    /// Enrolls cgroup `id` under `policy_id` (pod-watcher flag).
    fn enroll(&mut self, id: u64, policy_id: u32) -> Result<(), String>;
    /// Drops the enrollment of cgroup `id`.
    fn unenroll(&mut self, id: u64);
    /// The policy cgroup `id` is enrolled under by the pod watcher, if any.
    fn kube_policy(&self, id: u64) -> Option<u32>;
}

/// A pod-level cgroup found on disk.
#[derive(Debug, Clone)]
pub struct PodCgroup {
    /// Absolute path.
    pub path: PathBuf,
    /// Below the cgroup2 mount (for logs and events).
    pub relative: String,
    pub id: u64,
    /// When the watcher learned of it.
    pub seen: Instant,
    /// In the enrolled map by the pod watcher (kept here so counting needs no lookup).
    pub enrolled: bool,
    /// Frozen by the pod watcher because its enrollment failed (thawed once it works).
    pub frozen: bool,
    /// Found enrolled by the pod watcher of an earlier agent, under this policy (read
    /// from the pinned map when the cgroup was first seen).
    pub adopted: Option<u32>,
    /// Reported to the caller as enrolled ([`Outcome::Enrolled`] or [`Outcome::Adopted`]).
    pub reported: bool,
    /// Refused (a pod keeping `CAP_NET_RAW`, see the module doc) and reported so: it
    /// stays frozen, and every scan kills what is in it.
    pub refused: bool,
}

#[derive(Debug)]
struct Enforced {
    policy: String,
    policy_id: u32,
}

#[derive(Debug)]
struct PodEntry {
    pod: Pod,
    /// The key of the cgroup the pod claims: its uid, or for a mirror pod the static
    /// pod's config hash. Fixed when the pod is first seen.
    key: String,
    enforced: Option<Enforced>,
    /// Why the pod was refused, when it was (sticky).
    refused: Option<Grounds>,
    /// Deleted from the API at this time (kept while its cgroup exists).
    deleted: Option<Instant>,
}

/// Something worth an event or a log line, for the caller to report.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Enrolled {
        uid: String,
        pod: String,
        cgroup: String,
        /// The cgroup's absolute path.
        path: PathBuf,
        policy: String,
        policy_id: u32,
        late: Option<Late>,
    },
    /// A cgroup an earlier agent enrolled, kept under its earlier policy: nothing
    /// changes in the map, but whatever that agent had set up around the pod (its
    /// listeners in the pod's network namespace) must be set up again.
    Adopted {
        uid: String,
        pod: String,
        cgroup: String,
        path: PathBuf,
        policy: String,
        policy_id: u32,
    },
    Unenrolled {
        uid: String,
        cgroup: String,
    },
    /// The pod named a policy its namespace does not allow, or no configured policy:
    /// enforced under `policy`.
    PolicyRefused {
        uid: String,
        pod: String,
        asked: String,
        policy: String,
        /// The name is no configured policy (else: one the namespace does not allow).
        unknown: bool,
    },
    /// An enforced pod gives grounds for refusal ([`Grounds`]): its cgroup is frozen and
    /// its processes killed. Reported once per cgroup.
    PodRefused(PodRefusal),
    /// The enrollment failed: the cgroup is frozen (`cgroup.freeze`) until it works,
    /// so nothing in it runs unenforced; `frozen` false when even that failed.
    Failed {
        cgroup: String,
        error: String,
        frozen: bool,
    },
}

/// Why a pod is refused: its containers that keep `CAP_NET_RAW` (under a policy
/// without `raw_sockets`), those holding a capability beyond the runtime's default set
/// (under any policy), and those that do not run under hb's seccomp profile (where it
/// is required) or the pod itself for `hostPID`. At least one is not empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grounds {
    pub net_raw: Vec<Keeper>,
    pub beyond_default: Vec<Keeper>,
    pub unconfined: Vec<Keeper>,
}

impl Grounds {
    /// The grounds `pod` gives under a policy that does (`raw_ok`) or does not allow
    /// `CAP_NET_RAW`; None when it gives none. `raw_sockets` spares `CAP_NET_RAW` alone:
    /// what a capability beyond the runtime's default set gives (`CAP_NET_ADMIN`'s
    /// tunnels, `CAP_SYS_ADMIN`'s `bpf()` detach, `CAP_SYS_MODULE`) no policy opts into.
    fn of(pod: &Pod, raw_ok: bool) -> Option<Grounds> {
        let beyond = &pod.beyond_default;
        let g = Grounds {
            // A container listed for both is named once, for what it holds beyond.
            net_raw: if raw_ok {
                Vec::new()
            } else {
                pod.net_raw
                    .iter()
                    .filter(|k| !beyond.iter().any(|b| b.container == k.container))
                    .cloned()
                    .collect()
            },
            beyond_default: beyond.clone(),
            unconfined: pod.unconfined.clone(),
        };
        (!g.net_raw.is_empty() || !g.beyond_default.is_empty() || !g.unconfined.is_empty())
            .then_some(g)
    }
}

/// A pod cgroup refused because its pod keeps `CAP_NET_RAW` or runs outside hb's
/// seccomp profile (module doc).
#[derive(Debug, PartialEq, Eq)]
pub struct PodRefusal {
    pub uid: String,
    pub pod: String,
    pub cgroup: String,
    pub policy: String,
    /// Why.
    pub grounds: Grounds,
    /// Whether `cgroup.freeze` and `cgroup.kill` were written.
    pub frozen: bool,
    pub killed: bool,
}

/// A cgroup that held processes before it was enrolled.
#[derive(Debug, PartialEq, Eq)]
pub struct Late {
    pub cgroup_id: u64,
    pub pid: u32,
}

/// The node's pods, namespaces and pod cgroups.
pub struct Node<S> {
    sink: S,
    policies: Policies,
    namespaces: HashMap<String, Namespace>,
    pods: HashMap<String, PodEntry>,
    cgroups: HashMap<String, PodCgroup>,
    stats: std::sync::Arc<Stats>,
}

impl<S: Sink> Node<S> {
    pub fn new(sink: S, policies: Policies, stats: std::sync::Arc<Stats>) -> Self {
        Self {
            sink,
            policies,
            namespaces: HashMap::new(),
            pods: HashMap::new(),
            cgroups: HashMap::new(),
            stats,
        }
    }

    /// A namespace added or changed. Pods of a namespace that now enforces become
    /// enforced; a namespace that stops enforcing changes no enforced pod.
    pub fn apply_namespace(&mut self, name: &str, ns: Namespace) -> Vec<Outcome> {
        self.namespaces.insert(name.to_owned(), ns);
        let uids: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| e.pod.namespace == name && e.enforced.is_none())
            .map(|(uid, _)| uid.clone())
            .collect();
        uids.iter().flat_map(|uid| self.settle(uid)).collect()
    }

    /// A namespace gone from the API: its pods keep what they have.
    pub fn delete_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    /// The namespaces known, for a relist's "gone" computation.
    pub fn namespace_names(&self) -> HashSet<String> {
        self.namespaces.keys().cloned().collect()
    }

    /// A pod bound to this node, added or changed.
    pub fn apply_pod(&mut self, uid: &str, pod: Pod) -> Vec<Outcome> {
        match self.pods.get_mut(uid) {
            Some(e) => {
                if let Some(enf) = &e.enforced
                    && e.pod.policy != pod.policy
                {
                    tracing::info!(uid, pod = %format!("{}/{}", pod.namespace, pod.name), policy = %enf.policy, annotation = ?pod.policy, "pod's policy annotation changed: ignored, the pod keeps the policy it was enforced with");
                }
                if e.pod.mirror != pod.mirror {
                    // The API server refuses this (see the module doc); never followed.
                    tracing::warn!(uid, pod = %format!("{}/{}", pod.namespace, pod.name), claimed = ?e.pod.mirror, now = ?pod.mirror, "pod's mirror annotation changed: ignored, the pod keeps the cgroup it claimed");
                }
                let mirror = e.pod.mirror.take();
                e.pod = Pod { mirror, ..pod };
                // A deleted pod does not come back under the same uid; a relist that
                // shows it again means the deletion was not real.
                e.deleted = None;
            }
            None => {
                let key = pod.mirror.clone().unwrap_or_else(|| uid.to_owned());
                self.pods.insert(
                    uid.to_owned(),
                    PodEntry {
                        pod,
                        key,
                        enforced: None,
                        refused: None,
                        deleted: None,
                    },
                );
            }
        }
        self.settle(uid)
    }

    /// A pod gone from the API. Its enrollment stays while its cgroup exists.
    pub fn delete_pod(&mut self, uid: &str) {
        let Some(e) = self.pods.get_mut(uid) else {
            return;
        };
        if e.enforced.is_some() {
            tracing::info!(uid, pod = %format!("{}/{}", e.pod.namespace, e.pod.name), "pod deleted from the API: its enrollment stays while its cgroup exists");
        }
        let keep = if e.key == uid {
            e.enforced.is_some() || self.cgroups.contains_key(&e.key)
        } else {
            // A mirror pod: many may claim one cgroup, so a deleted claim is kept only
            // while it may still matter, never for as long as the cgroup lives (else
            // fakes made and deleted in a loop pile up). One that enforces nothing
            // never counts; one whose cgroup is enrolled already is in that enrollment,
            // which later claims can only tighten; else it waits for the cgroup, for
            // [`TOMBSTONE`] (see `expire_tombstones`).
            e.enforced.is_some() && !self.cgroups.get(&e.key).is_some_and(|c| c.enrolled)
        };
        if keep {
            e.deleted.get_or_insert_with(Instant::now);
        } else {
            self.pods.remove(uid);
        }
        self.count();
    }

    /// The uids of pods known and not deleted, for a relist's "gone" computation.
    pub fn live_pod_uids(&self) -> HashSet<String> {
        self.pods
            .iter()
            .filter(|(_, e)| e.deleted.is_none())
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// A pod-level cgroup appeared (or was found by a scan); `uid` is its key (a pod's
    /// uid, or a static pod's config hash).
    pub fn cgroup_appeared(&mut self, uid: &str, mut cgroup: PodCgroup) -> Vec<Outcome> {
        if let Some(known) = self.cgroups.get(uid)
            && known.id == cgroup.id
        {
            // Seen again (the reconciling scan): a refused pod's cgroup is frozen and
            // emptied again (whatever joined it since); tried again only if a pod
            // claiming it is enforced and the enrollment failed before (the cgroup is
            // frozen then).
            if known.refused {
                refuse(&known.path);
            }
            let failed = !known.enrolled
                && self
                    .pods
                    .values()
                    .any(|e| e.key == uid && e.enforced.is_some());
            return if failed {
                self.settle_key(uid)
            } else {
                Vec::new()
            };
        }
        let adopted = self.sink.kube_policy(cgroup.id);
        cgroup.enrolled = adopted.is_some();
        cgroup.adopted = adopted;
        cgroup.reported = false;
        cgroup.refused = false;
        // (A static pod's cgroup is keyed by its hash, which is no pod's uid: its
        // enrollment counts as one more claim instead, see `target`.)
        if let Some(policy_id) = adopted
            && let Some(e) = self.pods.get_mut(uid)
            && e.key == uid
            && e.enforced
                .as_ref()
                .is_none_or(|enf| enf.policy_id != policy_id)
        {
            // Enrolled by an earlier agent: sticky across restarts, whatever this agent
            // decided from the pod's annotation before it saw the cgroup.
            e.enforced = Some(Enforced {
                policy: self.policies.name_of(policy_id),
                policy_id,
            });
        }
        self.cgroups.insert(uid.to_owned(), cgroup);
        self.settle_key(uid)
    }

    /// A pod-level cgroup is gone: its enrollment goes, and the pod too if the API
    /// deleted it.
    pub fn cgroup_gone(&mut self, uid: &str, path: &Path) -> Vec<Outcome> {
        // Only the directory tracked for the pod ends its enrollment: another directory
        // named after the same uid (made and removed elsewhere in the tree) ends nothing.
        if self.cgroups.get(uid).is_none_or(|c| c.path != path) {
            return Vec::new();
        }
        let Some(c) = self.cgroups.remove(uid) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if self.sink.kube_policy(c.id).is_some() {
            self.sink.unenroll(c.id);
            out.push(Outcome::Unenrolled {
                uid: uid.to_owned(),
                cgroup: c.relative,
            });
        }
        self.pods.retain(|_, e| e.key != uid || e.deleted.is_none());
        self.count();
        out
    }

    /// The uids whose cgroup is known, for a scan's "gone" computation.
    pub fn cgroup_uids(&self) -> Vec<(String, PathBuf)> {
        self.cgroups
            .iter()
            .map(|(u, c)| (u.clone(), c.path.clone()))
            .collect()
    }

    /// Forgets deleted pods whose cgroup never appeared within [`TOMBSTONE`] (a deleted
    /// mirror pod's claim after [`TOMBSTONE`] in any case: see `delete_pod`).
    pub fn expire_tombstones(&mut self, now: Instant) {
        let cgroups = &self.cgroups;
        self.pods.retain(|uid, e| {
            (e.key == *uid && cgroups.contains_key(&e.key))
                || e.deleted.is_none_or(|t| now.duration_since(t) < TOMBSTONE)
        });
        self.count();
    }

    /// Decides a pod if it is undecided, and enrolls the cgroup it claims if both are
    /// there.
    fn settle(&mut self, uid: &str) -> Vec<Outcome> {
        let mut out = self.decide_pod(uid);
        if let Some(key) = self.pods.get(uid).map(|e| e.key.clone()) {
            out.extend(self.refuse_key(&key));
            out.extend(self.enroll_key(&key));
        }
        self.count();
        out
    }

    /// Decides every pod claiming cgroup `key`, then enrolls it.
    fn settle_key(&mut self, key: &str) -> Vec<Outcome> {
        let uids: Vec<String> = if layout::is_config_hash(key) {
            self.pods
                .iter()
                .filter(|(_, e)| e.key == key)
                .map(|(u, _)| u.clone())
                .collect()
        } else {
            self.pods
                .get(key)
                .is_some_and(|e| e.key == key)
                .then(|| key.to_owned())
                .into_iter()
                .collect()
        };
        let mut out: Vec<Outcome> = uids.iter().flat_map(|u| self.decide_pod(u)).collect();
        out.extend(self.refuse_key(key));
        out.extend(self.enroll_key(key));
        self.count();
        out
    }

    /// Decides pod `uid` if it is undecided (once: sticky).
    fn decide_pod(&mut self, uid: &str) -> Vec<Outcome> {
        let mut out = Vec::new();
        let Some(e) = self.pods.get_mut(uid) else {
            return out;
        };
        if e.enforced.is_none()
            && e.key == uid
            && let Some(policy_id) = self.cgroups.get(uid).and_then(|c| c.adopted)
        {
            // Its cgroup was enrolled by an earlier agent: that policy stays.
            e.enforced = Some(Enforced {
                policy: self.policies.name_of(policy_id),
                policy_id,
            });
        }
        if e.enforced.is_none()
            && let Decision::Enforced {
                policy,
                policy_id,
                source,
                unknown_annotation,
                refused_annotation,
            } = decide::decide(
                &e.pod,
                self.namespaces.get(&e.pod.namespace),
                &self.policies,
            )
        {
            let pod = format!("{}/{}", e.pod.namespace, e.pod.name);
            if unknown_annotation {
                tracing::warn!(uid, %pod, annotation = ?e.pod.policy, %policy, ?source, "pod names no configured policy: enforced under the fallback");
            }
            if refused_annotation || unknown_annotation {
                out.push(Outcome::PolicyRefused {
                    uid: uid.to_owned(),
                    pod: pod.clone(),
                    asked: e.pod.policy.clone().unwrap_or_default(),
                    policy: policy.clone(),
                    unknown: unknown_annotation,
                });
            }
            tracing::info!(uid, %pod, %policy, ?source, static_pod = ?e.pod.mirror, "pod enforced");
            e.enforced = Some(Enforced { policy, policy_id });
        }
        // Every time the pod is seen, not once: an ephemeral container added later may
        // keep the capability. Only ever towards refused.
        if e.refused.is_none()
            && let Some(enf) = &e.enforced
            && let Some(grounds) = Grounds::of(&e.pod, self.policies.allows_net_raw(&enf.policy))
        {
            let pod = format!("{}/{}", e.pod.namespace, e.pod.name);
            tracing::warn!(uid, %pod, policy = %enf.policy, ?grounds, "pod keeps CAP_NET_RAW under a policy without raw_sockets, or runs outside hb's seccomp profile: refused (its cgroup is frozen and its processes killed)");
            e.refused = Some(grounds);
        }
        out
    }

    /// The refusal that applies to cgroup `key`, if a pod claiming it is refused, or
    /// gives grounds under the cgroup's policy (for a static pod's, the claims combined:
    /// possibly the strictest; [`Grounds::of`]): the pod, that policy and the grounds.
    fn refusal(&self, key: &str) -> Option<(String, String, Grounds)> {
        let (_, target) = self.target(key)?;
        let raw_ok = self.policies.allows_net_raw(&target.policy);
        self.pods
            .values()
            .filter(|e| e.key == key && e.enforced.is_some())
            .find_map(|e| {
                let grounds = e.refused.clone().or_else(|| Grounds::of(&e.pod, raw_ok))?;
                Some((
                    format!("{}/{}", e.pod.namespace, e.pod.name),
                    target.policy.clone(),
                    grounds,
                ))
            })
    }

    /// Freezes cgroup `key` and kills its processes if a pod claiming it is refused
    /// (before it is enrolled: nothing in it runs from here on); reports it once.
    fn refuse_key(&mut self, key: &str) -> Option<Outcome> {
        let (pod, policy, grounds) = self.refusal(key)?;
        let c = self.cgroups.get_mut(key)?;
        let (frozen, killed) = refuse(&c.path);
        if c.refused {
            return None;
        }
        c.refused = true;
        if grounds.unconfined.is_empty() {
            self.stats.net_raw_refused();
        } else {
            self.stats.unconfined_refused();
        }
        Some(Outcome::PodRefused(PodRefusal {
            uid: key.to_owned(),
            pod,
            cgroup: c.relative.clone(),
            policy,
            grounds,
            frozen,
            killed,
        }))
    }

    /// The policy cgroup `key` is to be enrolled under, with the pod(s) it is for, if
    /// any: the pod's, or for a static pod's cgroup the claims combined (module doc).
    fn target(&self, key: &str) -> Option<(String, Enforced)> {
        let label = |e: &PodEntry| format!("{}/{}", e.pod.namespace, e.pod.name);
        if !layout::is_config_hash(key) {
            let e = self.pods.get(key).filter(|e| e.key == key)?;
            let enf = e.enforced.as_ref()?;
            return Some((
                label(e),
                Enforced {
                    policy: enf.policy.clone(),
                    policy_id: enf.policy_id,
                },
            ));
        }
        let mut claims: Vec<(String, &Enforced)> = self
            .pods
            .values()
            .filter(|e| e.key == key)
            .filter_map(|e| e.enforced.as_ref().map(|enf| (label(e), enf)))
            .collect();
        if claims.is_empty() {
            // Claimed by no enforced pod: left as it is (not enrolled, or enrolled by
            // an earlier agent and kept so).
            return None;
        }
        claims.sort_by(|a, b| a.0.cmp(&b.0));
        let pods = claims
            .iter()
            .map(|(l, _)| l.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let current = self
            .cgroups
            .get(key)
            .and_then(|c| self.sink.kube_policy(c.id));
        let first = claims[0].1;
        let agree = claims.iter().all(|(_, e)| e.policy_id == first.policy_id)
            && current.is_none_or(|id| id == first.policy_id);
        if agree {
            return Some((
                pods,
                Enforced {
                    policy: first.policy.clone(),
                    policy_id: first.policy_id,
                },
            ));
        }
        let (policy, policy_id) = self.policies.strictest();
        if current != Some(policy_id) {
            let asked: Vec<&str> = claims.iter().map(|(_, e)| e.policy.as_str()).collect();
            tracing::warn!(static_pod = key, %pods, ?asked, enrolled = ?current.map(|id| self.policies.name_of(id)), %policy, "static pod cgroup claimed under different policies: enforced under the strictest");
        }
        Some((pods, Enforced { policy, policy_id }))
    }

    /// Enrolls cgroup `key` under its [`target`](Self::target) if it exists and is not
    /// enrolled so already; reports an earlier agent's enrollment once.
    fn enroll_key(&mut self, key: &str) -> Vec<Outcome> {
        let mut out = Vec::new();
        let Some((pod, enf)) = self.target(key) else {
            return out;
        };
        let Some(c) = self.cgroups.get_mut(key) else {
            return out;
        };
        if self.sink.kube_policy(c.id) != Some(enf.policy_id) {
            match self.sink.enroll(c.id, enf.policy_id) {
                Ok(()) => {
                    c.enrolled = true;
                    c.reported = true;
                    if c.frozen && !c.refused {
                        c.frozen = !set_frozen(&c.path, false);
                    }
                    self.stats.observe_latency(c.seen.elapsed());
                    let late = first_process(&c.path).map(|pid| Late {
                        cgroup_id: c.id,
                        pid,
                    });
                    if late.is_some() {
                        self.stats.late();
                    }
                    out.push(Outcome::Enrolled {
                        uid: key.to_owned(),
                        pod,
                        cgroup: c.relative.clone(),
                        path: c.path.clone(),
                        policy: enf.policy,
                        policy_id: enf.policy_id,
                        late,
                    });
                }
                Err(error) => {
                    // Fail closed: an enforced pod that cannot be enrolled does not run
                    // (the reconciling scan tries again and thaws it when it works).
                    c.frozen = c.frozen || set_frozen(&c.path, true);
                    out.push(Outcome::Failed {
                        cgroup: c.relative.clone(),
                        error,
                        frozen: c.frozen,
                    });
                }
            }
        } else if !c.reported {
            // Enrolled already (by an earlier agent) under the pod's policy.
            c.reported = true;
            if c.frozen && !c.refused {
                c.frozen = !set_frozen(&c.path, false);
            }
            out.push(Outcome::Adopted {
                uid: key.to_owned(),
                pod,
                cgroup: c.relative.clone(),
                path: c.path.clone(),
                policy: enf.policy,
                policy_id: enf.policy_id,
            });
        }
        out
    }

    /// Updates the gauges.
    fn count(&self) {
        let enforced = self.pods.values().filter(|e| e.enforced.is_some()).count();
        let enrolled = self.cgroups.values().filter(|c| c.enrolled).count();
        self.stats.set_gauges(self.pods.len(), enforced, enrolled);
    }
}

impl Policies {
    /// The name of policy `id` (for an adopted enrollment).
    pub fn name_of(&self, id: u32) -> String {
        self.name_by_id(id).unwrap_or_else(|| format!("#{id}"))
    }
}

/// Freezes or thaws cgroup `dir` (and every cgroup below it: cgroup v2's
/// `cgroup.freeze`); whether the write succeeded.
fn set_frozen(dir: &Path, frozen: bool) -> bool {
    fs::write(dir.join("cgroup.freeze"), if frozen { "1" } else { "0" }).is_ok()
}

/// Freezes cgroup `dir`, then kills every process in it and below (`cgroup.kill`:
/// SIGKILL, frozen ones included); whether each write succeeded.
fn refuse(dir: &Path) -> (bool, bool) {
    let frozen = set_frozen(dir, true);
    let killed = fs::write(dir.join("cgroup.kill"), "1").is_ok();
    (frozen, killed)
}

/// A process in cgroup `dir` or below, if any: `cgroup.events` says `populated 1` when
/// the subtree has a live process (one read for the whole subtree); the pid is looked
/// up for the event only then.
pub fn first_process(dir: &Path) -> Option<u32> {
    let events = fs::read_to_string(dir.join("cgroup.events")).ok()?;
    if !events.lines().any(|l| l.trim() == "populated 1") {
        return None;
    }
    Some(find_pid(dir, 0).unwrap_or(0))
}

fn find_pid(dir: &Path, depth: u32) -> Option<u32> {
    if let Some(pid) = fs::read_to_string(dir.join("cgroup.procs"))
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.trim().parse().ok()))
    {
        return Some(pid);
    }
    if depth > 8 {
        return None;
    }
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| find_pid(&e.path(), depth + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[derive(Default)]
    struct Table(HashMap<u64, u32>);

    impl Sink for Table {
        fn enroll(&mut self, id: u64, policy_id: u32) -> Result<(), String> {
            self.0.insert(id, policy_id);
            Ok(())
        }
        fn unenroll(&mut self, id: u64) {
            self.0.remove(&id);
        }
        fn kube_policy(&self, id: u64) -> Option<u32> {
            self.0.get(&id).copied()
        }
    }

    /// A map that refuses every insert while `full` (as a full enrolled map does).
    #[derive(Default)]
    struct Full {
        table: Table,
        full: bool,
    }

    impl Sink for Full {
        fn enroll(&mut self, id: u64, policy_id: u32) -> Result<(), String> {
            if self.full {
                return Err("map full".into());
            }
            self.table.enroll(id, policy_id)
        }
        fn unenroll(&mut self, id: u64) {
            self.table.unenroll(id);
        }
        fn kube_policy(&self, id: u64) -> Option<u32> {
            self.table.kube_policy(id)
        }
    }

    #[test]
    fn an_enforced_pod_that_cannot_be_enrolled_is_frozen_until_it_can() {
        let dir = crate::vault::tests::TempDir::new();
        let freeze = dir.path().join("cgroup.freeze");
        fs::write(&freeze, "0").expect("freeze file");
        let config = Config::parse("[[policy]]\nname = \"narrow\"\n", "test").expect("config");
        let ids = [("narrow".to_owned(), 2)].into();
        let sink = Full {
            full: true,
            ..Full::default()
        };
        let mut n = Node::new(
            sink,
            Policies::new(&config, &ids),
            std::sync::Arc::default(),
        );
        n.apply_namespace("ns", enforcing());
        n.apply_pod(UID, pod(None));
        let mut c = cgroup(7);
        c.path = dir.path().to_owned();
        let out = n.cgroup_appeared(UID, c);
        assert!(
            matches!(&out[..], [Outcome::Failed { frozen: true, .. }]),
            "{out:?}"
        );
        assert_eq!(fs::read_to_string(&freeze).expect("read"), "1");
        // Room again: the reconciling scan's next pass enrolls and thaws it.
        n.sink.full = false;
        let mut again = cgroup(7);
        again.path = dir.path().to_owned();
        let out = n.cgroup_appeared(UID, again);
        assert!(matches!(&out[..], [Outcome::Enrolled { .. }]), "{out:?}");
        assert_eq!(fs::read_to_string(&freeze).expect("read"), "0");
        assert_eq!(n.sink.table.0.get(&7), Some(&2));
    }

    /// A cgroup directory stand-in with `cgroup.freeze` and `cgroup.kill` files.
    fn fake_cgroup_dir() -> crate::vault::tests::TempDir {
        let dir = crate::vault::tests::TempDir::new();
        fs::write(dir.path().join("cgroup.freeze"), "0").expect("freeze file");
        fs::write(dir.path().join("cgroup.kill"), "").expect("kill file");
        dir
    }

    /// Policies `narrow` (id 2) and `raw` (id 3, `raw_sockets = true`); namespace `ns`
    /// enforces.
    fn raw_node(stats: std::sync::Arc<Stats>) -> Node<Table> {
        let config = Config::parse(
            "[[policy]]\nname = \"narrow\"\n\n[[policy]]\nname = \"raw\"\nraw_sockets = true\n",
            "test",
        )
        .expect("config");
        let ids = [("narrow".to_owned(), 2), ("raw".to_owned(), 3)].into();
        let mut n = Node::new(Table::default(), Policies::new(&config, &ids), stats);
        n.apply_namespace("ns", enforcing());
        n
    }

    /// Cgroup `id` at `dir`.
    fn cgroup_at(id: u64, dir: &Path) -> PodCgroup {
        PodCgroup {
            path: dir.to_owned(),
            ..cgroup(id)
        }
    }

    fn unconfined(policy: Option<&str>) -> Pod {
        Pod {
            unconfined: vec![Keeper {
                container: "containers/a".into(),
                why: "runs under no profile, not Localhost hb.json".into(),
            }],
            ..pod(policy)
        }
    }

    fn keeping_net_raw(policy: Option<&str>) -> Pod {
        Pod {
            net_raw: vec![Keeper {
                container: "containers/a".into(),
                why: "runtime default".into(),
            }],
            ..pod(policy)
        }
    }

    #[test]
    fn a_pod_keeping_net_raw_is_frozen_killed_and_enrolled_and_never_thawed() {
        let stats = std::sync::Arc::<Stats>::default();
        let mut n = raw_node(stats.clone());
        let dir = fake_cgroup_dir();
        let read = |f: &str| fs::read_to_string(dir.path().join(f)).expect("read");
        n.apply_pod(UID, keeping_net_raw(Some("narrow")));
        let out = n.cgroup_appeared(UID, cgroup_at(7, dir.path()));
        assert!(
            matches!(
                &out[..],
                [
                    Outcome::PodRefused(PodRefusal { frozen: true, killed: true, policy, .. }),
                    Outcome::Enrolled { policy_id: 2, .. }
                ] if policy == "narrow"
            ),
            "{out:?}"
        );
        assert_eq!(
            (read("cgroup.freeze"), read("cgroup.kill")),
            ("1".into(), "1".into())
        );
        assert_eq!(
            stats
                .net_raw_pods
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // The reconciling scan: frozen and emptied again, not reported again.
        fs::write(dir.path().join("cgroup.freeze"), "0").expect("thaw");
        fs::write(dir.path().join("cgroup.kill"), "").expect("reset");
        assert!(n.cgroup_appeared(UID, cgroup_at(7, dir.path())).is_empty());
        assert_eq!(
            (read("cgroup.freeze"), read("cgroup.kill")),
            ("1".into(), "1".into())
        );
        // An update that drops the capability changes nothing: sticky.
        n.apply_pod(UID, pod(Some("narrow")));
        fs::write(dir.path().join("cgroup.freeze"), "0").expect("thaw");
        n.cgroup_appeared(UID, cgroup_at(7, dir.path()));
        assert_eq!(read("cgroup.freeze"), "1");
        assert_eq!(
            stats
                .net_raw_pods
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    /// A pod outside hb's seccomp profile (where it is required) is refused whatever its
    /// policy, `raw_sockets` included, and counted apart; an unenforced one runs.
    #[test]
    fn an_unconfined_pod_is_refused_under_any_policy() {
        let stats = std::sync::Arc::<Stats>::default();
        let mut n = raw_node(std::sync::Arc::clone(&stats));
        n.apply_namespace("plain", Namespace::default());
        let plain = "88888888-1f2a-4b3c-9d4e-5f6a7b8c9d0e";
        let (d1, d2) = (fake_cgroup_dir(), fake_cgroup_dir());
        n.apply_pod(UID, unconfined(Some("raw")));
        n.apply_pod(
            plain,
            Pod {
                namespace: "plain".into(),
                ..unconfined(None)
            },
        );
        let out = n.cgroup_appeared(UID, cgroup_at(7, d1.path()));
        assert!(
            out.iter().any(|o| matches!(o,
                Outcome::PodRefused(PodRefusal { grounds, policy, frozen: true, killed: true, .. })
                    if policy == "raw" && grounds.net_raw.is_empty() && grounds.unconfined.len() == 1)),
            "{out:?}"
        );
        let out = n.cgroup_appeared(plain, cgroup_at(8, d2.path()));
        assert!(
            !out.iter().any(|o| matches!(o, Outcome::PodRefused(_))),
            "{out:?}"
        );
        let read = |d: &crate::vault::tests::TempDir| {
            fs::read_to_string(d.path().join("cgroup.freeze")).expect("read")
        };
        assert_eq!((read(&d1).as_str(), read(&d2).as_str()), ("1", "0"));
        let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            (count(&stats.unconfined_pods), count(&stats.net_raw_pods)),
            (1, 0)
        );
    }

    #[test]
    fn net_raw_is_refused_only_without_raw_sockets_and_an_update_can_only_refuse() {
        let mut n = raw_node(std::sync::Arc::default());
        n.apply_namespace("plain", Namespace::default());
        // Under the opt-in, and unenforced: runs.
        let other = "99999999-1f2a-4b3c-9d4e-5f6a7b8c9d0e";
        let plain = "88888888-1f2a-4b3c-9d4e-5f6a7b8c9d0e";
        let (d1, d2, d3) = (fake_cgroup_dir(), fake_cgroup_dir(), fake_cgroup_dir());
        n.apply_pod(other, keeping_net_raw(Some("raw")));
        n.apply_pod(
            plain,
            Pod {
                namespace: "plain".into(),
                ..keeping_net_raw(None)
            },
        );
        n.apply_pod(UID, pod(Some("narrow")));
        for (uid, dir, id) in [(other, &d1, 8), (plain, &d2, 9), (UID, &d3, 7)] {
            let out = n.cgroup_appeared(uid, cgroup_at(id, dir.path()));
            assert!(
                !out.iter().any(|o| matches!(o, Outcome::PodRefused(_))),
                "{out:?}"
            );
        }
        for d in [&d1, &d2, &d3] {
            assert_eq!(
                fs::read_to_string(d.path().join("cgroup.freeze")).expect("read"),
                "0"
            );
        }
        // An ephemeral container that keeps it is added to the running pod: refused.
        let out = n.apply_pod(UID, keeping_net_raw(Some("narrow")));
        assert!(matches!(&out[..], [Outcome::PodRefused(_)]), "{out:?}");
        assert_eq!(
            fs::read_to_string(d3.path().join("cgroup.freeze")).expect("read"),
            "1"
        );
    }

    /// `raw_sockets` spares `CAP_NET_RAW` alone: a container holding a capability beyond
    /// the runtime's default set refuses its pod under it too, named once (for what it
    /// holds beyond) when it also keeps `CAP_NET_RAW`.
    #[test]
    fn raw_sockets_spares_net_raw_alone_never_more_capabilities() {
        let stats = std::sync::Arc::<Stats>::default();
        let mut n = raw_node(std::sync::Arc::clone(&stats));
        let admin = Keeper {
            container: "containers/a".into(),
            why: "adds NET_ADMIN".into(),
        };
        let d = fake_cgroup_dir();
        n.apply_pod(
            UID,
            Pod {
                beyond_default: vec![admin.clone()],
                ..keeping_net_raw(Some("raw"))
            },
        );
        let out = n.cgroup_appeared(UID, cgroup_at(7, d.path()));
        assert!(
            out.iter().any(|o| matches!(o,
            Outcome::PodRefused(PodRefusal { grounds, policy, frozen: true, killed: true, .. })
                if policy == "raw" && *grounds == Grounds {
                    beyond_default: vec![admin.clone()],
                    ..Grounds::default()
                })),
            "{out:?}"
        );
        assert_eq!(
            fs::read_to_string(d.path().join("cgroup.freeze")).expect("read"),
            "1"
        );
        // Under a policy without the opt-in: the container is named once, for NET_ADMIN.
        let other = "99999999-1f2a-4b3c-9d4e-5f6a7b8c9d0e";
        let d2 = fake_cgroup_dir();
        n.apply_pod(
            other,
            Pod {
                beyond_default: vec![admin.clone()],
                ..keeping_net_raw(Some("narrow"))
            },
        );
        let out = n.cgroup_appeared(other, cgroup_at(8, d2.path()));
        assert!(
            out.iter().any(|o| matches!(o,
                Outcome::PodRefused(PodRefusal { grounds, .. })
                    if grounds.net_raw.is_empty() && grounds.beyond_default == [admin.clone()])),
            "{out:?}"
        );
        assert_eq!(
            stats
                .net_raw_pods
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
    }

    #[test]
    fn a_static_pods_cgroup_moved_to_a_policy_without_raw_sockets_is_refused() {
        let mut n = raw_node(std::sync::Arc::default());
        let dir = fake_cgroup_dir();
        let claim = |policy: &str| Pod {
            mirror: Some(HASH.into()),
            ..keeping_net_raw(Some(policy))
        };
        // One claim under `raw`: runs under it.
        n.apply_pod(MIRROR, claim("raw"));
        let out = n.cgroup_appeared(HASH, cgroup_at(7, dir.path()));
        assert!(
            matches!(&out[..], [Outcome::Enrolled { policy_id: 3, .. }]),
            "{out:?}"
        );
        // Another claim under `raw` too: still fine. Then one under `narrow` from a pod
        // that keeps nothing itself: the cgroup goes to the strictest (`narrow`), which
        // lacks raw_sockets, while the static pod keeps the capability: refused.
        n.apply_pod(FAKE, claim("raw"));
        assert_eq!(
            fs::read_to_string(dir.path().join("cgroup.freeze")).expect("read"),
            "0"
        );
        let out = n.apply_pod(
            FAKE2,
            Pod {
                mirror: Some(HASH.into()),
                ..pod(Some("narrow"))
            },
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Outcome::PodRefused(r) if r.policy == "narrow")),
            "{out:?}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("cgroup.freeze")).expect("read"),
            "1"
        );
    }

    const UID: &str = "0c8d7b5e-1f2a-4b3c-9d4e-5f6a7b8c9d0e";

    fn node() -> Node<Table> {
        let config = Config::parse(
            "[[policy]]\nname = \"open\"\nallow_domains = [\"a.test\"]\n\n[[policy]]\nname = \"narrow\"\n",
            "test",
        )
        .expect("config");
        let ids = [("open".to_owned(), 1), ("narrow".to_owned(), 2)].into();
        Node::new(
            Table::default(),
            Policies::new(&config, &ids),
            std::sync::Arc::default(),
        )
    }

    fn pod(policy: Option<&str>) -> Pod {
        Pod {
            namespace: "ns".into(),
            name: "p".into(),
            policy: policy.map(str::to_owned),
            mirror: None,
            net_raw: Vec::new(),
            beyond_default: Vec::new(),
            unconfined: Vec::new(),
        }
    }

    fn cgroup(id: u64) -> PodCgroup {
        PodCgroup {
            // No such directory: never "late" in these tests.
            path: PathBuf::from("/nonexistent/hb-test"),
            relative: format!("kubepods/pod{UID}"),
            id,
            seen: Instant::now(),
            enrolled: false,
            frozen: false,
            adopted: None,
            reported: false,
            refused: false,
        }
    }

    fn enforcing() -> Namespace {
        Namespace {
            enforce: true,
            default_policy: None,
            allowed: None,
        }
    }

    #[test]
    fn a_pod_known_before_its_cgroup_is_enrolled_when_the_cgroup_appears() {
        let mut n = node();
        n.apply_namespace("ns", enforcing());
        assert!(n.apply_pod(UID, pod(Some("open"))).is_empty());
        let out = n.cgroup_appeared(UID, cgroup(7));
        assert!(
            matches!(&out[..], [Outcome::Enrolled { late: None, .. }]),
            "{out:?}"
        );
        assert_eq!(n.sink.0.get(&7), Some(&1));
    }

    #[test]
    fn a_cgroup_seen_before_its_pod_is_enrolled_when_the_pod_is_known() {
        let mut n = node();
        n.apply_namespace("ns", enforcing());
        assert!(n.cgroup_appeared(UID, cgroup(7)).is_empty());
        let out = n.apply_pod(UID, pod(None));
        assert!(matches!(&out[..], [Outcome::Enrolled { .. }]), "{out:?}");
        // No annotation, no namespace default, no config default: the strictest.
        assert_eq!(n.sink.0.get(&7), Some(&2));
    }

    #[test]
    fn enforcement_is_sticky_against_pod_and_namespace_edits() {
        let mut n = node();
        n.apply_namespace("ns", enforcing());
        n.apply_pod(UID, pod(Some("narrow")));
        n.cgroup_appeared(UID, cgroup(7));
        // The pod drops its annotation, then asks for the looser policy.
        n.apply_pod(UID, pod(None));
        n.apply_pod(UID, pod(Some("open")));
        // The namespace loses its label.
        n.apply_namespace("ns", Namespace::default());
        assert_eq!(n.sink.0.get(&7), Some(&2));
        // Deleted from the API (force-deleted while running): still enrolled.
        n.delete_pod(UID);
        assert_eq!(n.sink.0.get(&7), Some(&2));
        // A directory of the same name elsewhere goes: nothing ends.
        assert!(
            n.cgroup_gone(UID, Path::new("/elsewhere/kubepods/pod-same-uid"))
                .is_empty()
        );
        assert_eq!(n.sink.0.get(&7), Some(&2));
        // The cgroup is gone: the enrollment and the pod go.
        let out = n.cgroup_gone(UID, Path::new("/nonexistent/hb-test"));
        assert!(matches!(&out[..], [Outcome::Unenrolled { .. }]), "{out:?}");
        assert!(n.sink.0.is_empty() && n.pods.is_empty());
    }

    #[test]
    fn labelling_a_namespace_enforces_its_running_pods() {
        let mut n = node();
        n.apply_namespace("ns", Namespace::default());
        n.apply_pod(UID, pod(Some("open")));
        n.cgroup_appeared(UID, cgroup(7));
        assert!(n.sink.0.is_empty(), "unenforced namespace: untouched");
        n.apply_namespace("ns", enforcing());
        assert_eq!(n.sink.0.get(&7), Some(&1));
    }

    #[test]
    fn a_deleted_pod_whose_cgroup_appears_later_is_still_enrolled() {
        let mut n = node();
        n.apply_namespace("ns", enforcing());
        n.apply_pod(UID, pod(Some("open")));
        n.delete_pod(UID);
        n.cgroup_appeared(UID, cgroup(7));
        assert_eq!(n.sink.0.get(&7), Some(&1));
    }

    #[test]
    fn an_enrollment_left_by_an_earlier_agent_is_kept_and_reported_whichever_comes_first() {
        // The cgroup first (the scan ran before the API's list), then the pod, which
        // names another policy now: the earlier policy stays, reported once.
        let mut n = node();
        n.sink.0.insert(7, 2);
        n.apply_namespace("ns", enforcing());
        assert!(n.cgroup_appeared(UID, cgroup(7)).is_empty());
        let out = n.apply_pod(UID, pod(Some("open")));
        assert!(
            matches!(&out[..], [Outcome::Adopted { policy_id: 2, .. }]),
            "{out:?}"
        );
        assert!(n.apply_pod(UID, pod(Some("open"))).is_empty());
        assert_eq!(n.sink.0.get(&7), Some(&2));
        // The pod first, decided from its annotation, then its cgroup.
        let mut n = node();
        n.sink.0.insert(7, 2);
        n.apply_namespace("ns", enforcing());
        assert!(n.apply_pod(UID, pod(Some("open"))).is_empty());
        let out = n.cgroup_appeared(UID, cgroup(7));
        assert!(
            matches!(&out[..], [Outcome::Adopted { policy_id: 2, .. }]),
            "{out:?}"
        );
        assert_eq!(n.sink.0.get(&7), Some(&2));
    }

    #[test]
    fn an_enrollment_left_by_an_earlier_agent_is_kept() {
        let mut n = node();
        n.sink.0.insert(7, 1);
        n.apply_namespace("ns", Namespace::default());
        n.apply_pod(UID, pod(Some("narrow")));
        n.cgroup_appeared(UID, cgroup(7));
        assert_eq!(n.sink.0.get(&7), Some(&1));
    }

    const HASH: &str = "6d3f8a1b2c4e5f60718293a4b5c6d7e8";

    /// `open` (id 1) and `web` (id 3) each allow a domain; `narrow` (id 2) is the
    /// strictest.
    fn node3() -> Node<Table> {
        let config = Config::parse(
            "[[policy]]\nname = \"open\"\nallow_domains = [\"a.test\", \"b.test\"]\n\n[[policy]]\nname = \"narrow\"\n\n[[policy]]\nname = \"web\"\nallow_domains = [\"w.test\"]\n",
            "test",
        )
        .expect("config");
        let ids = [
            ("open".to_owned(), 1),
            ("narrow".to_owned(), 2),
            ("web".to_owned(), 3),
        ]
        .into();
        let mut n = Node::new(
            Table::default(),
            Policies::new(&config, &ids),
            std::sync::Arc::default(),
        );
        n.apply_namespace("ns", enforcing());
        n.apply_namespace("tenant", enforcing());
        n.apply_namespace("plain", Namespace::default());
        n
    }

    fn mirror(ns: &str, name: &str, policy: Option<&str>, hash: &str) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            policy: policy.map(str::to_owned),
            mirror: Some(hash.into()),
            net_raw: Vec::new(),
            beyond_default: Vec::new(),
            unconfined: Vec::new(),
        }
    }

    const MIRROR: &str = "11111111-1f2a-4b3c-9d4e-5f6a7b8c9d0e";
    const FAKE: &str = "22222222-1f2a-4b3c-9d4e-5f6a7b8c9d0e";
    const FAKE2: &str = "33333333-1f2a-4b3c-9d4e-5f6a7b8c9d0e";

    #[test]
    fn a_mirror_pod_enrolls_its_static_pods_cgroup_whichever_comes_first() {
        let mut n = node3();
        n.apply_pod(MIRROR, mirror("ns", "etcd", Some("web"), HASH));
        let out = n.cgroup_appeared(HASH, cgroup(7));
        assert!(
            matches!(&out[..], [Outcome::Enrolled { uid, policy_id: 3, .. }] if uid == HASH),
            "{out:?}"
        );
        let mut n = node3();
        assert!(n.cgroup_appeared(HASH, cgroup(7)).is_empty());
        let out = n.apply_pod(MIRROR, mirror("ns", "etcd", Some("web"), HASH));
        assert!(
            matches!(&out[..], [Outcome::Enrolled { policy_id: 3, .. }]),
            "{out:?}"
        );
        // Nothing is keyed by the mirror pod's own uid.
        assert!(n.cgroup_appeared(MIRROR, cgroup(8)).is_empty());
        assert_eq!(n.sink.0.get(&8), None);
        // The cgroup goes: so does its enrollment and nothing else.
        let out = n.cgroup_gone(HASH, Path::new("/nonexistent/hb-test"));
        assert!(matches!(&out[..], [Outcome::Unenrolled { .. }]), "{out:?}");
        assert!(n.sink.0.is_empty());
    }

    #[test]
    fn a_fake_claim_never_loosens_a_static_pods_cgroup() {
        // The true mirror pod first, then fakes.
        let mut n = node3();
        n.apply_pod(MIRROR, mirror("ns", "etcd", Some("web"), HASH));
        n.cgroup_appeared(HASH, cgroup(7));
        assert_eq!(n.sink.0.get(&7), Some(&3));
        // From a namespace that enforces nothing: nothing changes.
        assert!(
            n.apply_pod(FAKE, mirror("plain", "fake", Some("open"), HASH))
                .is_empty()
        );
        assert_eq!(n.sink.0.get(&7), Some(&3));
        // Under another policy: the strictest, not the fake's.
        let out = n.apply_pod(FAKE2, mirror("tenant", "fake", Some("open"), HASH));
        assert!(
            matches!(&out[..], [Outcome::Enrolled { policy_id: 2, .. }]),
            "{out:?}"
        );
        assert_eq!(n.sink.0.get(&7), Some(&2));
        // The fakes go (the kubelet deletes orphaned mirror pods), then the true one
        // comes back: the cgroup stays under the strictest.
        n.delete_pod(FAKE);
        n.delete_pod(FAKE2);
        n.delete_pod(MIRROR);
        n.apply_pod(
            "44444444-1f2a-4b3c-9d4e-5f6a7b8c9d0e",
            mirror("ns", "etcd", Some("web"), HASH),
        );
        assert_eq!(n.sink.0.get(&7), Some(&2));

        // A fake first, under a looser policy, then the true mirror pod: the strictest.
        let mut n = node3();
        n.apply_pod(FAKE, mirror("tenant", "fake", Some("open"), HASH));
        n.cgroup_appeared(HASH, cgroup(7));
        assert_eq!(n.sink.0.get(&7), Some(&1));
        n.apply_pod(MIRROR, mirror("ns", "etcd", Some("web"), HASH));
        assert_eq!(n.sink.0.get(&7), Some(&2));

        // A fake in an unenforced namespace alone: not enrolled, as before.
        let mut n = node3();
        n.apply_pod(FAKE, mirror("plain", "fake", None, HASH));
        n.cgroup_appeared(HASH, cgroup(7));
        assert!(n.sink.0.is_empty());
    }

    #[test]
    fn deleted_fake_claims_do_not_pile_up_and_loosen_nothing() {
        let mut n = node3();
        n.apply_pod(MIRROR, mirror("ns", "etcd", Some("web"), HASH));
        n.cgroup_appeared(HASH, cgroup(7));
        for i in 0..100 {
            let uid = format!("{i:08x}-1f2a-4b3c-9d4e-5f6a7b8c9d0e");
            let ns = if i % 2 == 0 { "plain" } else { "tenant" };
            n.apply_pod(&uid, mirror(ns, "fake", Some("open"), HASH));
            n.delete_pod(&uid);
        }
        assert_eq!(n.pods.len(), 1, "only the true mirror pod is kept");
        assert_eq!(n.sink.0.get(&7), Some(&2), "the strictest, still");
        // A claim made before its cgroup exists is kept for a while, then forgotten.
        n.apply_pod(
            FAKE,
            mirror(
                "tenant",
                "fake",
                Some("open"),
                "aaaabbbbccccddddeeeeffff00001111",
            ),
        );
        n.delete_pod(FAKE);
        assert_eq!(n.pods.len(), 2);
        n.expire_tombstones(Instant::now() + TOMBSTONE);
        assert_eq!(n.pods.len(), 1);
    }

    #[test]
    fn a_mirror_pods_claim_is_fixed_when_first_seen() {
        let mut n = node3();
        n.apply_pod(MIRROR, mirror("ns", "etcd", Some("web"), HASH));
        n.cgroup_appeared(HASH, cgroup(7));
        let other = "aaaabbbbccccddddeeeeffff00001111";
        n.cgroup_appeared(other, cgroup(9));
        // The annotation changed to another hash, or removed: both ignored.
        n.apply_pod(MIRROR, mirror("ns", "etcd", Some("web"), other));
        n.apply_pod(MIRROR, pod(Some("web")));
        assert_eq!(n.sink.0.get(&7), Some(&3));
        assert_eq!(n.sink.0.get(&9), None);
        // A pod first seen without it does not claim one later.
        let mut n = node3();
        n.apply_pod(UID, pod(Some("open")));
        n.cgroup_appeared(HASH, cgroup(7));
        n.apply_pod(UID, mirror("ns", "p", Some("open"), HASH));
        assert!(n.sink.0.is_empty());
    }

    #[test]
    fn a_static_pods_enrollment_left_by_an_earlier_agent_is_adopted() {
        let mut n = node3();
        n.sink.0.insert(7, 3);
        assert!(n.cgroup_appeared(HASH, cgroup(7)).is_empty());
        let out = n.apply_pod(MIRROR, mirror("ns", "etcd", Some("web"), HASH));
        assert!(
            matches!(&out[..], [Outcome::Adopted { uid, policy_id: 3, .. }] if uid == HASH),
            "{out:?}"
        );
        assert!(
            n.apply_pod(MIRROR, mirror("ns", "etcd", Some("web"), HASH))
                .is_empty()
        );
        // A claim under another policy after the restart: the strictest.
        let mut n = node3();
        n.sink.0.insert(7, 3);
        n.apply_pod(FAKE, mirror("tenant", "fake", Some("open"), HASH));
        n.cgroup_appeared(HASH, cgroup(7));
        assert_eq!(n.sink.0.get(&7), Some(&2));
    }
}
