//! Which pods are enforced, under which policy: the cluster admin decides, not the pod.
//!
//! - A namespace whose label `enforce_namespace_label` is `true` enforces every pod in it.
//!   A pod cannot opt in or out: its own labels and annotations never turn enforcement
//!   on or off.
//! - The pod annotation `policy_annotation` only picks *which* policy. A name that is no
//!   configured policy falls back to the namespace's default (the same annotation on the
//!   namespace), then to `[kubernetes] default_policy`, then to the strictest configured
//!   policy: an enforced pod is never left with nothing.
//! - A namespace annotated `allowed_policies_annotation: "a,b"` limits the names its
//!   pods may pick: a pod naming another configured policy falls back the same way
//!   (`refused_annotation`, reported). Only whoever may edit the Namespace sets it.
//! - The choice is made once per pod and is sticky (see `node`): a later edit of the
//!   annotation, or the namespace losing its label, does not change or lift it.
//!
//! - An enforced pod whose spec keeps `CAP_NET_RAW` (`caps`) under a policy without
//!   `raw_sockets = true` is refused: it may be enrolled, never run (see `node`).
//!
//! Must never: return "not enforced" for a pod of an enforcing namespace.

use std::collections::{HashMap, HashSet};

use super::caps::Keeper;

use crate::config::{Config, PolicyConfig};

/// What the API says about a namespace, as far as enforcement goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    pub enforce: bool,
    /// The namespace's default policy name, as written (may name no policy).
    pub default_policy: Option<String>,
    /// The policies its pods may name (`None`: any configured policy).
    pub allowed: Option<Vec<String>>,
}

/// The value of the allowed-policies annotation: names separated by commas, blanks
/// around them ignored, empty entries dropped (an empty list allows no pod choice).
pub fn parse_allowed(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What the API says about a pod, as far as enforcement goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// The pod's policy annotation, as written (may name no policy).
    pub policy: Option<String>,
    /// For a mirror pod, the static pod's config hash it names (its valid
    /// `kubernetes.io/config.mirror` annotation): which cgroup the pod claims. Never
    /// used to decide *whether* or *how* the pod is enforced (see `node`).
    pub mirror: Option<String>,
    /// Its containers that keep `CAP_NET_RAW` (`caps::net_raw_keepers`; none when
    /// every container runs under hb's seccomp profile, which refuses packet and raw
    /// sockets). `raw_sockets = true` spares these.
    pub net_raw: Vec<Keeper>,
    /// Its containers holding a capability beyond the runtime's default set, or
    /// privileged (`caps::beyond_default_keepers`): refused under every policy.
    pub beyond_default: Vec<Keeper>,
    /// Where `kubernetes.require_seccomp_profile` is set: its containers that do not run
    /// under hb's seccomp profile (`confined::unconfined`).
    pub unconfined: Vec<Keeper>,
}

/// Why an enforced pod got its policy (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    PodAnnotation,
    NamespaceDefault,
    ConfigDefault,
    Strictest,
}

/// The decision for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Unenforced,
    Enforced {
        policy: String,
        policy_id: u32,
        source: Source,
        /// The pod's annotation named a policy that does not exist.
        unknown_annotation: bool,
        /// The pod's annotation named a policy its namespace does not allow.
        refused_annotation: bool,
    },
}

/// The configured policies by name, and the fallback chain's end.
#[derive(Debug, Clone)]
pub struct Policies {
    ids: HashMap<String, u32>,
    config_default: Option<String>,
    strictest: String,
    /// The policies with `raw_sockets = true`: their pods may keep `CAP_NET_RAW`.
    raw_sockets: HashSet<String>,
}

impl Policies {
    /// From the config and the policy ids the kernel's table uses.
    pub fn new(config: &Config, ids: &HashMap<String, u32>) -> Self {
        let default = &config.kubernetes.default_policy;
        Self {
            ids: ids.clone(),
            config_default: (!default.is_empty()).then(|| default.clone()),
            strictest: strictest(&config.policies),
            raw_sockets: config
                .policies
                .iter()
                .filter(|p| p.raw_sockets)
                .map(|p| p.name.get_ref().clone())
                .collect(),
        }
    }

    /// Whether policy `name` lets its pods keep `CAP_NET_RAW` (`raw_sockets = true`).
    pub fn allows_net_raw(&self, name: &str) -> bool {
        self.raw_sockets.contains(name)
    }

    fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The strictest configured policy (the fallback chain's end) and its id; id 0 (an
    /// unknown policy to the kernel: deny) if it has none.
    pub fn strictest(&self) -> (String, u32) {
        let id = self.id(&self.strictest).unwrap_or(0);
        (self.strictest.clone(), id)
    }

    /// The name of the policy with id `id`.
    pub fn name_by_id(&self, id: u32) -> Option<String> {
        self.ids
            .iter()
            .find(|(_, i)| **i == id)
            .map(|(n, _)| n.clone())
    }
}

/// The strictest configured policy: enforce mode before audit, then the fewest ways
/// out (allowed domains, CIDRs, write domains, integrations, inbound, QUIC, ping and raw
/// sockets), then the name.
/// Config validation guarantees at least one policy when `[kubernetes]` is enabled.
pub fn strictest(policies: &[PolicyConfig]) -> String {
    policies
        .iter()
        .min_by_key(|p| {
            let openings = p.allow_domains.len()
                + p.allow_cidrs.len()
                + p.write_domains.len()
                + p.integrations.len()
                + usize::from(p.inbound)
                + usize::from(p.allow_quic)
                + usize::from(p.icmp_echo)
                + usize::from(p.raw_sockets);
            let audit = p.mode == crate::config::PolicyMode::Audit;
            (audit, openings, p.name.get_ref().clone())
        })
        .map(|p| p.name.get_ref().clone())
        .unwrap_or_default()
}

/// Decides for `pod` in `namespace` (`None`: the namespace is not known yet, which
/// never enforces by itself; the pod is decided again when it is).
pub fn decide(pod: &Pod, namespace: Option<&Namespace>, policies: &Policies) -> Decision {
    let Some(ns) = namespace.filter(|n| n.enforce) else {
        return Decision::Unenforced;
    };
    let unknown_annotation = pod
        .policy
        .as_deref()
        .is_some_and(|p| policies.id(p).is_none());
    let refused_annotation = !unknown_annotation
        && pod.policy.as_deref().is_some_and(|p| {
            ns.allowed
                .as_ref()
                .is_some_and(|allowed| !allowed.iter().any(|a| a == p))
        });
    let chosen = pod.policy.as_deref().filter(|_| !refused_annotation);
    let chain = [
        (chosen, Source::PodAnnotation),
        (ns.default_policy.as_deref(), Source::NamespaceDefault),
        (policies.config_default.as_deref(), Source::ConfigDefault),
        (Some(policies.strictest.as_str()), Source::Strictest),
    ];
    for (name, source) in chain {
        if let Some(name) = name
            && let Some(policy_id) = policies.id(name)
        {
            return Decision::Enforced {
                policy: name.to_owned(),
                policy_id,
                source,
                unknown_annotation,
                refused_annotation,
            };
        }
    }
    // Unreachable with a valid config (the strictest policy exists); still enforced,
    // under policy id 0, which the kernel treats as an unknown policy (deny).
    Decision::Enforced {
        policy: String::new(),
        policy_id: 0,
        source: Source::Strictest,
        unknown_annotation,
        refused_annotation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> Policies {
        let config = Config::parse(
            r#"
[[policy]]
name = "open"
allow_domains = ["a.test", "b.test"]
allow_cidrs = ["8.8.8.0/24"]

[[policy]]
name = "narrow"
allow_domains = ["a.test"]

[[policy]]
name = "loose-audit"
mode = "audit"
"#,
            "test",
        )
        .expect("config");
        let ids = [("open", 1), ("narrow", 2), ("loose-audit", 3)]
            .into_iter()
            .map(|(n, i)| (n.to_owned(), i))
            .collect();
        Policies::new(&config, &ids)
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

    fn enforcing(default: Option<&str>) -> Namespace {
        Namespace {
            enforce: true,
            default_policy: default.map(str::to_owned),
            allowed: None,
        }
    }

    fn policy_of(d: &Decision) -> (&str, Source) {
        match d {
            Decision::Enforced { policy, source, .. } => (policy, *source),
            Decision::Unenforced => panic!("not enforced"),
        }
    }

    #[test]
    fn the_namespace_decides_and_the_pod_cannot_opt_in() {
        let p = policies();
        assert_eq!(decide(&pod(Some("open")), None, &p), Decision::Unenforced);
        let off = Namespace {
            enforce: false,
            default_policy: Some("open".into()),
            allowed: None,
        };
        assert_eq!(
            decide(&pod(Some("open")), Some(&off), &p),
            Decision::Unenforced
        );
        let d = decide(&pod(None), Some(&enforcing(Some("open"))), &p);
        assert_eq!(policy_of(&d), ("open", Source::NamespaceDefault));
    }

    #[test]
    fn the_annotation_picks_the_policy() {
        let d = decide(
            &pod(Some("narrow")),
            Some(&enforcing(Some("open"))),
            &policies(),
        );
        assert_eq!(policy_of(&d), ("narrow", Source::PodAnnotation));
    }

    #[test]
    fn a_namespace_limits_which_policies_its_pods_may_name() {
        let p = policies();
        let limited = Namespace {
            allowed: Some(parse_allowed(" narrow, ,loose-audit ")),
            ..enforcing(Some("narrow"))
        };
        assert_eq!(
            limited.allowed.as_deref(),
            Some(&["narrow".to_owned(), "loose-audit".to_owned()][..])
        );
        // Outside the set: the namespace's default, and reported.
        let d = decide(&pod(Some("open")), Some(&limited), &p);
        assert_eq!(policy_of(&d), ("narrow", Source::NamespaceDefault));
        assert!(matches!(
            d,
            Decision::Enforced {
                refused_annotation: true,
                unknown_annotation: false,
                ..
            }
        ));
        // Inside it: the pod's pick.
        let d = decide(&pod(Some("loose-audit")), Some(&limited), &p);
        assert_eq!(policy_of(&d), ("loose-audit", Source::PodAnnotation));
        // An empty list allows no pick at all.
        let none = Namespace {
            allowed: Some(parse_allowed("")),
            ..enforcing(Some("narrow"))
        };
        let d = decide(&pod(Some("narrow")), Some(&none), &p);
        assert_eq!(policy_of(&d), ("narrow", Source::NamespaceDefault));
        assert!(matches!(
            d,
            Decision::Enforced {
                refused_annotation: true,
                ..
            }
        ));
    }

    #[test]
    fn an_unknown_name_falls_back_and_never_to_nothing() {
        let p = policies();
        let d = decide(&pod(Some("nope")), Some(&enforcing(Some("open"))), &p);
        assert_eq!(policy_of(&d), ("open", Source::NamespaceDefault));
        assert!(matches!(
            d,
            Decision::Enforced {
                unknown_annotation: true,
                ..
            }
        ));
        // Nothing usable anywhere: the strictest (enforce mode, fewest openings).
        let d = decide(&pod(Some("nope")), Some(&enforcing(Some("gone"))), &p);
        assert_eq!(policy_of(&d), ("narrow", Source::Strictest));
        let d = decide(&pod(None), Some(&enforcing(None)), &p);
        assert_eq!(policy_of(&d), ("narrow", Source::Strictest));
    }
}
