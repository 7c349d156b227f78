//! What a pod's spec says about `CAP_NET_RAW`: which of its containers keep it.
//!
//! A process holding `CAP_NET_RAW` in its network namespace opens a packet socket
//! (`AF_PACKET`) and writes frames straight to a device: `packet_snd` →
//! `dev_queue_xmit` runs no cgroup program (`cgroup/sock_create` runs for internet
//! sockets only, `cgroup_skb/egress` in the IP output path only), so the kernel side
//! cannot judge what such a pod sends. The agent therefore decides from the spec,
//! before any container runs (see `node`): a pod that keeps the capability does not run
//! under a policy that has not opted in with `raw_sockets = true`.
//!
//! The rules, for each container, init container and ephemeral container:
//! - `privileged: true` keeps it (every capability);
//! - `capabilities.add` of `NET_RAW`, `NET_ADMIN`, `SYS_ADMIN` or `ALL` keeps it (the
//!   runtime adds after it drops: `drop: [ALL]` with `add: [NET_RAW]` holds it);
//! - else `capabilities.drop` of `NET_RAW` or `ALL` removes it;
//! - else the runtime's default set applies, which holds `NET_RAW` (containerd's and
//!   Docker's do).
//!
//! Names compare as the runtime reads them, in the reading that keeps the most: an
//! `add` counts in any case (Unicode's: containerd's Go upper-cases `ı` to `I`), with
//! or without the `CAP_` prefix and surrounding blanks; a `drop` only as containerd
//! honours it, the bare name in ASCII case: containerd prefixes `CAP_` to every name but `ALL` (so a drop of
//! `CAP_NET_RAW` or `CAP_ALL` drops the unknown `CAP_CAP_…` and keeps `NET_RAW`) and
//! trims nothing.
//!
//! A pod whose every container runs under hb's seccomp profile (`confined`) cannot open
//! packet sockets, but keeps what any capability beyond the runtime's default set gives
//! ([`beyond_default_keepers`]): the agent refuses such a pod by those containers
//! instead.
//!
//! Must never: report "keeps nothing" for a container it cannot read (no spec at all
//! counts as keeping it).

use k8s_openapi::api::core::v1::{PodSpec, SecurityContext};

/// A container that keeps `CAP_NET_RAW`, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keeper {
    /// `containers/NAME`, `initContainers/NAME` or `ephemeralContainers/NAME`.
    pub container: String,
    /// What keeps it: `privileged`, `adds NET_RAW` (the name as written), or `runtime
    /// default` (nothing drops it).
    pub why: String,
}

/// The containers of `spec` that keep `CAP_NET_RAW`; a pod without a spec keeps it
/// (fail closed: the API always sends one).
pub fn net_raw_keepers(spec: Option<&PodSpec>) -> Vec<Keeper> {
    keepers(spec, why_kept)
}

/// containerd's default capability set (`oci.defaultUnixCaps`), without the `CAP_`
/// prefix: what a container holds that neither drops nor adds any.
const RUNTIME_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The containers of `spec` that hold a capability beyond the runtime's default set
/// (`privileged`, or an `add` of any other name, `ALL` included): what hb's seccomp
/// profile does not take away. `CAP_NET_ADMIN`, for one, makes a tunnel device (VXLAN)
/// through rtnetlink, which the profile allows, whose encapsulated packets the kernel
/// sends from its own socket, which no cgroup hook judges; `CAP_SYS_RAWIO` gets
/// `iopl`. A pod without a spec holds them.
pub fn beyond_default_keepers(spec: Option<&PodSpec>) -> Vec<Keeper> {
    keepers(spec, |sc| {
        if sc.and_then(|s| s.privileged) == Some(true) {
            return Some("privileged".to_owned());
        }
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let adds = caps.and_then(|c| c.add.as_ref()).into_iter().flatten();
        adds.into_iter()
            .find(|n| !RUNTIME_DEFAULT.contains(&bare(n).as_str()))
            .map(|name| format!("adds {name}"))
    })
}

/// The containers, init containers and ephemeral containers of `spec` for which `why`
/// gives a reason, with it; one entry for a pod without a spec.
fn keepers(
    spec: Option<&PodSpec>,
    why: impl Fn(Option<&SecurityContext>) -> Option<String>,
) -> Vec<Keeper> {
    let Some(spec) = spec else {
        return vec![Keeper {
            container: "-".to_owned(),
            why: "no pod spec".to_owned(),
        }];
    };
    let containers = spec
        .containers
        .iter()
        .map(|c| ("containers", &c.name, c.security_context.as_ref()));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", &c.name, c.security_context.as_ref()));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| ("ephemeralContainers", &c.name, c.security_context.as_ref()));
    containers
        .chain(init)
        .chain(ephemeral)
        .filter_map(|(kind, name, sc)| {
            why(sc).map(|why| Keeper {
                container: format!("{kind}/{name}"),
                why,
            })
        })
        .collect()
}

/// Why a container with security context `sc` keeps `CAP_NET_RAW`, if it does.
fn why_kept(sc: Option<&SecurityContext>) -> Option<String> {
    if sc.and_then(|s| s.privileged) == Some(true) {
        return Some("privileged".to_owned());
    }
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let added = caps.and_then(|c| c.add.as_ref()).into_iter().flatten();
    if let Some(name) = added.into_iter().find(|n| {
        matches!(
            bare(n).as_str(),
            "NET_RAW" | "NET_ADMIN" | "SYS_ADMIN" | "ALL"
        )
    }) {
        return Some(format!("adds {name}"));
    }
    let dropped = caps.and_then(|c| c.drop.as_ref()).into_iter().flatten();
    if dropped
        .into_iter()
        .any(|n| n.eq_ignore_ascii_case("NET_RAW") || n.eq_ignore_ascii_case("ALL"))
    {
        return None;
    }
    Some("runtime default".to_owned())
}

/// A capability's name upper-cased (Unicode's upper case, as containerd's Go
/// `strings.ToUpper` takes it: the dotless `ı` becomes `I` and the long `ſ` `S`, so
/// `net_admın` is `NET_ADMIN` to the runtime), without its `CAP_` prefix.
fn bare(name: &str) -> String {
    let upper = name.trim().to_uppercase();
    upper
        .strip_prefix("CAP_")
        .map_or(upper.clone(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).expect("pod spec")
    }

    fn keepers(json: serde_json::Value) -> Vec<(String, String)> {
        net_raw_keepers(Some(&spec(json)))
            .into_iter()
            .map(|k| (k.container, k.why))
            .collect()
    }

    fn k(c: &str, why: &str) -> (String, String) {
        (c.to_owned(), why.to_owned())
    }

    #[test]
    fn a_container_keeps_net_raw_unless_it_drops_it() {
        assert_eq!(
            keepers(serde_json::json!({"containers": [{"name": "a"}]})),
            [k("containers/a", "runtime default")]
        );
        for drop in ["ALL", "all", "NET_RAW", "net_raw", "Net_Raw"] {
            let s = serde_json::json!({"containers": [
                {"name": "a", "securityContext": {"capabilities": {"drop": ["CHOWN", drop]}}}
            ]});
            assert_eq!(keepers(s), [], "drop {drop}");
        }
        // containerd drops `CAP_` + the name: these drop nothing it knows.
        for drop in ["CAP_NET_RAW", "cap_all", " NET_RAW", "ALL "] {
            let s = serde_json::json!({"containers": [
                {"name": "a", "securityContext": {"capabilities": {"drop": [drop]}}}
            ]});
            assert_eq!(
                keepers(s),
                [k("containers/a", "runtime default")],
                "drop {drop:?}"
            );
        }
        // Dropping another capability keeps it.
        let s = serde_json::json!({"containers": [
            {"name": "a", "securityContext": {"capabilities": {"drop": ["NET_ADMIN"]}}}
        ]});
        assert_eq!(keepers(s), [k("containers/a", "runtime default")]);
    }

    #[test]
    fn privileged_or_an_add_keeps_it_whatever_is_dropped() {
        let s = serde_json::json!({"containers": [
            {"name": "a", "securityContext": {"privileged": true, "capabilities": {"drop": ["ALL"]}}},
            {"name": "b", "securityContext": {"privileged": false, "capabilities": {"drop": ["ALL"]}}},
        ]});
        assert_eq!(keepers(s), [k("containers/a", "privileged")]);
        for add in [
            "NET_RAW",
            "cap_net_raw",
            "NET_ADMIN",
            "net_adm\u{131}n",
            "\u{17f}ys_admin",
            "ALL",
        ] {
            let s = serde_json::json!({"containers": [
                {"name": "a", "securityContext": {"capabilities": {"drop": ["ALL"], "add": [add]}}}
            ]});
            assert_eq!(
                keepers(s),
                [k("containers/a", &format!("adds {add}"))],
                "add {add}"
            );
        }
        let s = serde_json::json!({"containers": [
            {"name": "a", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}
        ]});
        assert_eq!(keepers(s), []);
    }

    #[test]
    fn beyond_the_default_set_by_privilege_or_an_add_only() {
        let s = serde_json::json!({"containers": [
            {"name": "a"},
            {"name": "b", "securityContext": {"capabilities": {"add": ["NET_RAW", "net_bind_service"]}}},
            {"name": "c", "securityContext": {"capabilities": {"drop": ["ALL"], "add": ["cap_net_admin"]}}},
            {"name": "d", "securityContext": {"capabilities": {"add": ["SYS_RAWIO"]}}},
            {"name": "e", "securityContext": {"capabilities": {"add": ["all"]}}},
            {"name": "f", "securityContext": {"privileged": true}},
        ]});
        let beyond: Vec<_> = beyond_default_keepers(Some(&spec(s)))
            .into_iter()
            .map(|k| (k.container, k.why))
            .collect();
        assert_eq!(
            beyond,
            [
                k("containers/c", "adds cap_net_admin"),
                k("containers/d", "adds SYS_RAWIO"),
                k("containers/e", "adds all"),
                k("containers/f", "privileged"),
            ]
        );
        assert_eq!(beyond_default_keepers(None).len(), 1);
    }

    #[test]
    fn init_and_ephemeral_containers_count_and_no_spec_keeps_it() {
        let dropped = serde_json::json!({"capabilities": {"drop": ["ALL"]}});
        let s = serde_json::json!({
            "containers": [{"name": "a", "securityContext": dropped}],
            "initContainers": [{"name": "i"}],
            "ephemeralContainers": [{"name": "debug", "securityContext": {"capabilities": {"add": ["NET_RAW"]}}}],
        });
        assert_eq!(
            keepers(s),
            [
                k("initContainers/i", "runtime default"),
                k("ephemeralContainers/debug", "adds NET_RAW")
            ]
        );
        assert_eq!(net_raw_keepers(None).len(), 1);
    }
}
