//! The kubelet's pod cgroup names, for both cgroup drivers and every QoS class.
//!
//! A pod's cgroup is recognised by its *name*, which carries the pod's uid, never by its
//! depth or its parent: the kubelet's layouts differ by driver and QoS class, and a
//! node's kubepods hierarchy may sit anywhere below the cgroup2 mount.
//!
//! | driver   | QoS class  | pod cgroup                                                      |
//! |----------|------------|-----------------------------------------------------------------|
//! | systemd  | guaranteed | `kubepods.slice/kubepods-pod<uid, - as _>.slice`               |
//! | systemd  | burstable  | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice` |
//! | systemd  | besteffort | `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice` |
//! | cgroupfs | guaranteed | `kubepods/pod<uid>`                                             |
//! | cgroupfs | burstable  | `kubepods/burstable/pod<uid>`                                   |
//! | cgroupfs | besteffort | `kubepods/besteffort/pod<uid>`                                  |
//!
//! A static pod (a manifest in the kubelet's static pod directory, or from its manifest
//! URL) has no API uid: the kubelet names its cgroup after the uid it computes itself,
//! the MD5 of the manifest in 32 hex digits, no dashes (`pkg/kubelet/config/common.go`,
//! `applyDefaults`). Those names are pod cgroups too ([`config_hash`]); which pod's policy
//! applies to them is `node`'s business (through the mirror pod's annotation).
//!
//! Container cgroups (`cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`,
//! or the bare container id with cgroupfs) sit below the pod's: enrolling the pod's
//! cgroup covers them all, since the programs look up a socket's cgroup and its
//! ancestors. (kubelet source: `pkg/kubelet/cm/cgroup_manager_linux.go`,
//! `pkg/kubelet/cm/pod_container_manager_linux.go`.)

/// The key of the pod whose pod-level cgroup is named `name`, or `None` when `name` is
/// not a pod cgroup: the pod's uid (canonical form, with dashes, lower case), or for a
/// static pod its config hash (32 hex digits, lower case, see [`config_hash`]).
pub fn pod_uid(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("kubepods-")
        && let Some(rest) = rest.strip_suffix(".slice")
    {
        // systemd: `kubepods-pod<uid_>` or `kubepods-<qos>-pod<uid_>`.
        let uid = rest
            .strip_prefix("pod")
            .or_else(|| rest.strip_prefix("burstable-pod"))
            .or_else(|| rest.strip_prefix("besteffort-pod"))?;
        return canonical(&uid.replace('_', "-")).or_else(|| config_hash(uid));
    }
    // cgroupfs: `pod<uid>`.
    let uid = name.strip_prefix("pod")?;
    canonical(uid).or_else(|| config_hash(uid))
}

/// `uid` if it is a Kubernetes object uid (an RFC 4122 UUID, 8-4-4-4-12 hex), lower case.
/// The API server gives every object such a uid on create, whatever the client sent
/// (`FillObjectMetaSystemFields`, `k8s.io/apiserver/pkg/registry/rest/meta.go`), so an
/// API pod's key is never a [`config_hash`].
pub fn canonical(uid: &str) -> Option<String> {
    let groups: Vec<&str> = uid.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| uid.to_ascii_lowercase())
}

/// `value` if it is a static pod's config hash (the uid the kubelet gives a static pod,
/// and the value of its mirror pod's `kubernetes.io/config.mirror` annotation): exactly
/// 32 hex digits, lower case.
pub fn config_hash(value: &str) -> Option<String> {
    (value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

/// Whether a pod cgroup key (from [`pod_uid`]) is a static pod's config hash.
pub fn is_config_hash(key: &str) -> bool {
    config_hash(key).is_some()
}

#[cfg(test)]
/// The pod-level cgroup of pod `uid` (canonical form) in a QoS class under a driver,
/// relative to the kubepods cgroup's parent: the kubelet's layout, for tests and tools.
pub fn pod_cgroup(driver: Driver, qos: Qos, uid: &str) -> String {
    let under = uid.replace('-', "_");
    match (driver, qos) {
        (Driver::Systemd, Qos::Guaranteed) => format!("kubepods.slice/kubepods-pod{under}.slice"),
        (Driver::Systemd, q) => {
            let q = q.name();
            format!("kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{under}.slice")
        }
        (Driver::Cgroupfs, Qos::Guaranteed) => format!("kubepods/pod{uid}"),
        (Driver::Cgroupfs, q) => format!("kubepods/{}/pod{uid}", q.name()),
    }
}

#[cfg(test)]
/// The kubelet's cgroup driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Systemd,
    Cgroupfs,
}

#[cfg(test)]
/// A pod's QoS class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

#[cfg(test)]
impl Qos {
    fn name(self) -> &'static str {
        match self {
            Qos::Guaranteed => "guaranteed",
            Qos::Burstable => "burstable",
            Qos::BestEffort => "besteffort",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0c8d7b5e-1f2a-4b3c-9d4e-5f6a7b8c9d0e";

    #[test]
    fn every_driver_and_qos_class_names_the_pod() {
        for driver in [Driver::Systemd, Driver::Cgroupfs] {
            for qos in [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort] {
                let path = pod_cgroup(driver, qos, UID);
                let name = path.rsplit('/').next().expect("a name");
                assert_eq!(pod_uid(name).as_deref(), Some(UID), "{path}");
            }
        }
    }

    #[test]
    fn the_hierarchy_around_pods_is_not_a_pod() {
        for name in [
            "kubepods.slice",
            "kubepods-burstable.slice",
            "kubepods-besteffort.slice",
            "kubepods",
            "burstable",
            "besteffort",
            "cri-containerd-4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c.scope",
            "crio-conmon-abc.scope",
            "docker-0123.scope",
            "pod",
            "podnot-a-uid",
            "kubepods-pod.slice",
            "kubepods-burstable-pod0c8d7b5e_1f2a_4b3c_9d4e.slice",
            // a uid with the other driver's separator
            "pod0c8d7b5e_1f2a_4b3c_9d4e_5f6a7b8c9d0e",
            "kubepods-guaranteed-pod0c8d7b5e_1f2a_4b3c_9d4e_5f6a7b8c9d0e.slice",
        ] {
            assert_eq!(pod_uid(name), None, "{name}");
        }
    }

    #[test]
    fn a_static_pods_config_hash_names_its_cgroup_under_every_driver_and_qos_class() {
        const HASH: &str = "6d3f8a1b2c4e5f60718293a4b5c6d7e8";
        for driver in [Driver::Systemd, Driver::Cgroupfs] {
            for qos in [Qos::Guaranteed, Qos::Burstable, Qos::BestEffort] {
                let path = pod_cgroup(driver, qos, HASH);
                let name = path.rsplit('/').next().expect("a name");
                assert_eq!(pod_uid(name).as_deref(), Some(HASH), "{path}");
                assert!(is_config_hash(HASH));
            }
        }
        assert_eq!(
            pod_uid(&format!("pod{}", HASH.to_ascii_uppercase())).as_deref(),
            Some(HASH)
        );
        // A uid is never a hash, nor the reverse.
        assert!(!is_config_hash(UID));
        assert_eq!(canonical(HASH), None);
        for name in [
            "pod6d3f8a1b2c4e5f60718293a4b5c6d7e",   // 31
            "pod6d3f8a1b2c4e5f60718293a4b5c6d7e8f", // 33
            "pod6d3f8a1b2c4e5f60718293a4b5c6d7eg",
            "kubepods-burstable-pod6d3f8a1b_2c4e5f60718293a4b5c6d7e8.slice",
            "kubepods-guaranteed-pod6d3f8a1b2c4e5f60718293a4b5c6d7e8.slice",
        ] {
            assert_eq!(pod_uid(name), None, "{name}");
        }
        assert_eq!(config_hash(" 6d3f8a1b2c4e5f60718293a4b5c6d7e8"), None);
    }

    #[test]
    fn upper_case_uids_are_canonicalised() {
        assert_eq!(
            pod_uid(&format!("pod{}", UID.to_ascii_uppercase())).as_deref(),
            Some(UID)
        );
    }
}
