//! What a pod's spec says about seccomp: which of its containers do not run under hb's
//! profile (`hb-agent sandbox seccomp-profile`, installed on the node as a kubelet
//! `Localhost` profile).
//!
//! The profile closes, for a pod, what no cgroup program sees: 32-bit and x32 system
//! calls (which skip the cgroup sockopt programs), packet, vsock and every other socket
//! family but UNIX, INET, INET6 and NETLINK_ROUTE, and io_uring. It binds a container
//! only if *every* container of the pod runs under it: a sibling without it (a sidecar,
//! an init container still running, an ephemeral debug container) can open such a
//! socket and hand it over through a Unix socket or a shared `/proc/<pid>/fd`.
//!
//! A container's profile is its own `securityContext.seccompProfile`, else the pod's
//! `spec.securityContext.seccompProfile` (the kubelet's order); it is hb's when its type
//! is `Localhost` and its `localhostProfile` is exactly the configured name (the kubelet
//! reads that file below its seccomp folder). `RuntimeDefault`, `Unconfined`, another
//! file or no profile at all are not. Nor is a `privileged: true` container's, whatever
//! it names: containerd starts a privileged container with no seccomp filter
//! at all (containerd's `generateSeccompSpecOpts`: "Do not set seccomp profile when
//! container is privileged").
//!
//! Must never: report a container as confined that the kubelet and runtime would start
//! under another profile or none; a pod without a spec has no confined container.

use k8s_openapi::api::core::v1::{PodSpec, SeccompProfile, SecurityContext};

/// A container that does not run under hb's profile, and what it runs under instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unconfined {
    /// `containers/NAME`, `initContainers/NAME` or `ephemeralContainers/NAME`.
    pub container: String,
    /// `no profile`, `RuntimeDefault`, `Unconfined`, `Localhost other.json`, …
    pub runs_under: String,
}

/// The containers of `spec` that do not run under the `Localhost` profile `profile`;
/// a pod without a spec is one such entry (fail closed: the API always sends one).
pub fn unconfined(spec: Option<&PodSpec>, profile: &str) -> Vec<Unconfined> {
    let Some(spec) = spec else {
        return vec![Unconfined {
            container: "-".to_owned(),
            runs_under: "no pod spec".to_owned(),
        }];
    };
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref());
    let own = |sc: Option<&SecurityContext>| {
        let privileged = sc.and_then(|s| s.privileged) == Some(true);
        (privileged, sc.and_then(|s| s.seccomp_profile.clone()))
    };
    let containers = spec
        .containers
        .iter()
        .map(|c| ("containers", &c.name, own(c.security_context.as_ref())));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", &c.name, own(c.security_context.as_ref())));
    let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| {
        (
            "ephemeralContainers",
            &c.name,
            own(c.security_context.as_ref()),
        )
    });
    containers
        .chain(init)
        .chain(ephemeral)
        .filter_map(|(kind, name, (privileged, own))| {
            let effective = own.as_ref().or(pod);
            let runs_under = if privileged {
                "no profile (privileged: the runtime applies none)".to_owned()
            } else if is_hbs(effective, profile) {
                return None;
            } else {
                describe(effective)
            };
            Some(Unconfined {
                container: format!("{kind}/{name}"),
                runs_under,
            })
        })
        .collect()
}

fn is_hbs(p: Option<&SeccompProfile>, profile: &str) -> bool {
    p.is_some_and(|p| p.type_ == "Localhost" && p.localhost_profile.as_deref() == Some(profile))
}

fn describe(p: Option<&SeccompProfile>) -> String {
    match p {
        None => "no profile".to_owned(),
        Some(p) => match &p.localhost_profile {
            Some(file) => format!("{} {file}", p.type_),
            None => p.type_.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn listed(spec: serde_json::Value) -> Vec<(String, String)> {
        let spec: PodSpec = serde_json::from_value(spec).expect("pod spec");
        unconfined(Some(&spec), "hb.json")
            .into_iter()
            .map(|u| (u.container, u.runs_under))
            .collect()
    }

    fn u(c: &str, under: &str) -> (String, String) {
        (c.to_owned(), under.to_owned())
    }

    const HBS: fn() -> serde_json::Value =
        || json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "hb.json"}});

    #[test]
    fn the_pods_profile_binds_containers_without_their_own() {
        let s = json!({"securityContext": HBS(), "containers": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(listed(s), []);
        let s = json!({"securityContext": HBS(), "containers": [
            {"name": "a"},
            {"name": "b", "securityContext": {"seccompProfile": {"type": "Unconfined"}}},
        ]});
        assert_eq!(listed(s), [u("containers/b", "Unconfined")]);
    }

    #[test]
    fn a_containers_own_profile_counts_and_only_hbs_file() {
        let s = json!({"containers": [
            {"name": "a", "securityContext": HBS()},
            {"name": "b"},
            {"name": "c", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}},
            {"name": "d", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "hb.json.bak"}}},
            {"name": "e", "securityContext": {"seccompProfile": {"type": "localhost", "localhostProfile": "hb.json"}}},
        ]});
        assert_eq!(
            listed(s),
            [
                u("containers/b", "no profile"),
                u("containers/c", "RuntimeDefault"),
                u("containers/d", "Localhost hb.json.bak"),
                u("containers/e", "localhost hb.json"),
            ]
        );
    }

    #[test]
    fn a_privileged_container_is_unconfined_whatever_profile_it_names() {
        let s = json!({"securityContext": HBS(), "containers": [
            {"name": "a", "securityContext": {"privileged": true}},
            {"name": "b", "securityContext": {"privileged": true, "seccompProfile":
                {"type": "Localhost", "localhostProfile": "hb.json"}}},
            {"name": "c", "securityContext": {"privileged": false}},
        ]});
        let privileged = "no profile (privileged: the runtime applies none)";
        assert_eq!(
            listed(s),
            [u("containers/a", privileged), u("containers/b", privileged)]
        );
    }

    #[test]
    fn init_and_ephemeral_containers_count_and_no_spec_is_unconfined() {
        let s = json!({
            "containers": [{"name": "a", "securityContext": HBS()}],
            "initContainers": [{"name": "i"}],
            "ephemeralContainers": [{"name": "debug", "securityContext": HBS()}],
        });
        assert_eq!(listed(s), [u("initContainers/i", "no profile")]);
        assert_eq!(unconfined(None, "hb.json").len(), 1);
    }
}
