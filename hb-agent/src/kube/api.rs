//! The Kubernetes API side: this node's pods (field selector `spec.nodeName=<node>`) and
//! the namespaces, each through kube-runtime's watcher. Namespaces on metadata-only
//! requests (labels, annotations: all enforcement needs of them); pods whole, since
//! their containers' security contexts say whether they keep `CAP_NET_RAW` (`caps`),
//! which the metadata does not.
//!
//! The watcher lists, then watches from the list's resourceVersion; when the server
//! says the version is too old (410 Gone) or the stream breaks, it lists again. A
//! relist is bracketed by `Init` … `InitDone`: objects known before and absent from the
//! new list were deleted while the agent was not watching, and are handled as deletions.
//!
//! Must never: treat an API error as "pod gone" (only a completed relist says that).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, atomic::Ordering},
};

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod as K8sPod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api, Client,
    api::PartialObjectMeta,
    runtime::{WatchStreamExt as _, watcher},
};

use super::{
    KubeError, Stats,
    caps::Keeper,
    decide::{Namespace, Pod},
    node::{Node, Outcome, Sink},
};

/// The annotation of a mirror pod (the API's view of a static pod): the static pod's
/// config hash, which names its cgroup (see `node` for who can set it).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The keys enforcement reads.
#[derive(Debug, Clone)]
pub struct Keys {
    pub enforce_label: String,
    pub policy_annotation: String,
    pub allowed_annotation: String,
    /// Namespaces whose mirror pods' claims are honoured (`kubernetes.static_pod_namespaces`).
    pub static_pod_namespaces: Vec<String>,
    /// hb's `Localhost` seccomp profile ("" = not looked at), and whether an enforced
    /// pod must run under it (`kubernetes.seccomp_profile`, `require_seccomp_profile`).
    pub seccomp_profile: String,
    pub require_seccomp_profile: bool,
    /// The one host folder an enforced pod may mount, read-only
    /// (`broker.policy_sockets_dir`, see `node_access`).
    pub policy_sockets_dir: std::path::PathBuf,
    /// The RuntimeClasses an enforced pod may name (`kubernetes.runtime_classes`).
    pub runtime_classes: Vec<String>,
}

/// Builds the API client: from a kubeconfig file, or the in-cluster service account.
pub async fn client(kubeconfig: &str) -> Result<Client, KubeError> {
    let config = if kubeconfig.is_empty() {
        kube::Config::incluster().map_err(|e| KubeError::Config(e.to_string()))?
    } else {
        let file = kube::config::Kubeconfig::read_from(kubeconfig)
            .map_err(|e| KubeError::Config(format!("{kubeconfig}: {e}")))?;
        kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| KubeError::Config(format!("{kubeconfig}: {e}")))?
    };
    Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))
}

/// Relist bookkeeping of one watched kind.
#[derive(Default)]
struct Relist {
    /// Between `Init` and `InitDone`: the objects the new list holds.
    listing: Option<HashSet<String>>,
    lists: u64,
}

/// Follows pods and namespaces until the process ends. `report` hears every outcome;
/// `synced` is called once both initial lists are applied.
pub async fn follow<S: Sink + Send + 'static>(
    client: Client,
    node_name: String,
    keys: Keys,
    node: Arc<Mutex<Node<S>>>,
    stats: Arc<Stats>,
    report: impl Fn(Outcome) + Send + Sync,
    synced: impl Fn() + Send + Sync,
) {
    let pods: Api<K8sPod> = Api::all(client.clone());
    let namespaces: Api<PartialObjectMeta<K8sNamespace>> = Api::all(client);
    let pod_config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut pod_events = watcher(pods, pod_config).default_backoff().boxed();
    let mut ns_events = watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .boxed();
    let lock = || {
        node.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let (mut pod_relist, mut ns_relist) = (Relist::default(), Relist::default());
    let mut synced_once = false;
    loop {
        tokio::select! {
            ev = ns_events.try_next() => match ev {
                Ok(Some(ev)) => {
                    let outcomes = on_namespace(&mut lock(), &keys, &mut ns_relist, &stats, ev);
                    outcomes.into_iter().for_each(&report);
                }
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "namespace watch failed; the watcher retries and relists"),
            },
            ev = pod_events.try_next() => match ev {
                Ok(Some(ev)) => {
                    let outcomes = on_pod(&mut lock(), &keys, &mut pod_relist, &stats, ev);
                    outcomes.into_iter().for_each(&report);
                }
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "pod watch failed; the watcher retries and relists"),
            },
        }
        if !synced_once && pod_relist.lists > 0 && ns_relist.lists > 0 {
            synced_once = true;
            synced();
        }
    }
}

fn name_of(metadata: &ObjectMeta) -> String {
    metadata.name.clone().unwrap_or_default()
}

fn on_namespace<S: Sink>(
    node: &mut Node<S>,
    keys: &Keys,
    relist: &mut Relist,
    stats: &Stats,
    ev: watcher::Event<PartialObjectMeta<K8sNamespace>>,
) -> Vec<Outcome> {
    let apply = |node: &mut Node<S>, o: &PartialObjectMeta<K8sNamespace>| {
        let ns = Namespace {
            enforce: o
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(&keys.enforce_label))
                .is_some_and(|v| v == "true"),
            default_policy: o
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(&keys.policy_annotation))
                .cloned(),
            allowed: o
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(&keys.allowed_annotation))
                .map(|v| super::decide::parse_allowed(v)),
        };
        node.apply_namespace(&name_of(&o.metadata), ns)
    };
    match ev {
        watcher::Event::Init => {
            start_relist(relist, stats, "namespaces");
            Vec::new()
        }
        watcher::Event::InitApply(o) => {
            if let Some(seen) = relist.listing.as_mut() {
                seen.insert(name_of(&o.metadata));
            }
            apply(node, &o)
        }
        watcher::Event::InitDone => {
            let seen = relist.listing.take().unwrap_or_default();
            for gone in node.namespace_names().difference(&seen) {
                node.delete_namespace(gone);
            }
            relist.lists += 1;
            Vec::new()
        }
        watcher::Event::Apply(o) => apply(node, &o),
        watcher::Event::Delete(o) => {
            node.delete_namespace(&name_of(&o.metadata));
            Vec::new()
        }
    }
}

/// The static pod's cgroup a mirror pod in `namespace` claims with its annotation
/// `value`: its config hash, if the value is one and the namespace is one of
/// `kubernetes.static_pod_namespaces` (anyone who may create pods can write the
/// annotation, so a claim from elsewhere — a tenant's copy of a control-plane pod's
/// hash — would enforce that pod under the tenant's policy).
fn static_claim(keys: &Keys, uid: &str, namespace: &str, value: &str) -> Option<String> {
    let Some(hash) = super::layout::config_hash(value) else {
        // Its length, not its text: a tenant's annotation may be large and is re-sent at
        // every change of the pod.
        tracing::warn!(%uid, length = value.len(), "mirror pod annotation is no config hash: the pod claims no static pod's cgroup");
        return None;
    };
    if !keys.static_pod_namespaces.iter().any(|n| n == namespace) {
        tracing::warn!(%uid, namespace = %crate::events::Escaped(namespace), static_pod = %hash, "mirror pod outside kubernetes.static_pod_namespaces: its claim is ignored and its static pod is not enforced through it");
        return None;
    }
    Some(hash)
}

/// What a pod's spec holds against it ([`spec_findings`]).
struct Findings {
    /// The containers that keep `CAP_NET_RAW` where it opens packet and raw sockets
    /// (none when every container runs under hb's seccomp profile, which refuses them).
    net_raw: Vec<Keeper>,
    /// The containers privileged or adding a capability beyond the runtime's default
    /// set, profile or not (the profile does not take capabilities away).
    beyond_default: Vec<Keeper>,
    /// Where the profile is required, the containers that do not run under it; and the
    /// pod itself (`-`) if it shares the node's PID namespace (`hostPID`) or opens the
    /// node's folders or IPC (`node_access`), refused in any case.
    unconfined: Vec<Keeper>,
}

/// What pod spec `spec` holds against it, under the agent's `kubernetes` keys.
fn spec_findings(keys: &Keys, spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> Findings {
    let profile = &keys.seccomp_profile;
    let unconfined: Vec<Keeper> = if profile.is_empty() {
        Vec::new()
    } else {
        super::confined::unconfined(spec, profile)
            .into_iter()
            .map(|u| Keeper {
                container: u.container,
                why: format!("runs under {}, not Localhost {profile}", u.runs_under),
            })
            .collect()
    };
    // Under the profile packet and raw sockets are refused: `CAP_NET_RAW` opens nothing.
    let confined = !profile.is_empty() && unconfined.is_empty();
    let net_raw = if confined {
        Vec::new()
    } else {
        super::caps::net_raw_keepers(spec)
    };
    let mut required = if keys.require_seccomp_profile {
        unconfined
    } else {
        Vec::new()
    };
    // Whatever the profile: it refuses `ptrace`, not `/proc/PID/mem`, through which a
    // root process of the pod writes into any node process running as root with no
    // more capabilities (another tenant's container), whose cgroup then runs its code.
    if spec.is_some_and(|s| s.host_pid == Some(true)) {
        required.push(Keeper {
            container: "-".to_owned(),
            why: "hostPID: the node's processes are open to its /proc/PID/mem".to_owned(),
        });
    }
    if let Some(spec) = spec {
        required.extend(super::node_access::node_access(
            spec,
            &keys.policy_sockets_dir,
        ));
        // What the checks above read is what the node's default runtime (runc) does
        // with a spec; another runtime applies neither the profile nor the capability
        // set the same way, and may move the pod's traffic out of its cgroup's sockets.
        if let Some(class) = &spec.runtime_class_name
            && !keys.runtime_classes.contains(class)
        {
            required.push(Keeper {
                container: "-".to_owned(),
                why: format!(
                    "runtimeClassName {class}: a runtime hb's checks do not cover (kubernetes.runtime_classes)"
                ),
            });
        }
    }
    Findings {
        net_raw,
        beyond_default: super::caps::beyond_default_keepers(spec),
        unconfined: required,
    }
}

fn on_pod<S: Sink>(
    node: &mut Node<S>,
    keys: &Keys,
    relist: &mut Relist,
    stats: &Stats,
    ev: watcher::Event<K8sPod>,
) -> Vec<Outcome> {
    let uid = |o: &K8sPod| o.metadata.uid.as_deref().and_then(super::layout::canonical);
    let apply = |node: &mut Node<S>, o: &K8sPod| {
        let Some(uid) = uid(o) else {
            return Vec::new();
        };
        let annotations = o.metadata.annotations.as_ref();
        let namespace = o.metadata.namespace.clone().unwrap_or_default();
        let mirror = annotations
            .and_then(|a| a.get(MIRROR_ANNOTATION))
            .and_then(|v| static_claim(keys, &uid, &namespace, v));
        let Findings {
            net_raw,
            beyond_default,
            unconfined,
        } = spec_findings(keys, o.spec.as_ref());
        let pod = Pod {
            namespace,
            name: name_of(&o.metadata),
            policy: annotations
                .and_then(|a| a.get(&keys.policy_annotation))
                .cloned(),
            mirror,
            net_raw,
            beyond_default,
            unconfined,
        };
        node.apply_pod(&uid, pod)
    };
    match ev {
        watcher::Event::Init => {
            start_relist(relist, stats, "pods");
            Vec::new()
        }
        watcher::Event::InitApply(o) => {
            if let (Some(seen), Some(u)) = (relist.listing.as_mut(), uid(&o)) {
                seen.insert(u);
            }
            apply(node, &o)
        }
        watcher::Event::InitDone => {
            let seen = relist.listing.take().unwrap_or_default();
            for gone in node.live_pod_uids().difference(&seen) {
                tracing::info!(uid = %gone, "pod absent from the new list: deleted while unwatched");
                node.delete_pod(gone);
            }
            relist.lists += 1;
            Vec::new()
        }
        watcher::Event::Apply(o) => apply(node, &o),
        watcher::Event::Delete(o) => {
            if let Some(u) = uid(&o) {
                node.delete_pod(&u);
            }
            Vec::new()
        }
    }
}

fn start_relist(relist: &mut Relist, stats: &Stats, kind: &'static str) {
    if relist.lists > 0 {
        stats.relists.fetch_add(1, Ordering::Relaxed);
        tracing::info!(kind, "relisting (the watch expired or broke)");
    }
    relist.listing = Some(HashSet::new());
}
