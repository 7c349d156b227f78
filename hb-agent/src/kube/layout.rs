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
//! Container cgroups (`cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`,
//! or the bare container id with cgroupfs) sit below the pod's: enrolling the pod's
//! cgroup covers them all, since the programs look up a socket's cgroup and its
//! ancestors. (kubelet source: `pkg/kubelet/cm/cgroup_manager_linux.go`,
//! `pkg/kubelet/cm/pod_container_manager_linux.go`.)

/// The uid of the pod whose pod-level cgroup is named `name` (canonical form, with
/// dashes, lower case), or `None` when `name` is not a pod cgroup.
pub fn pod_uid(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix("kubepods-")
        && let Some(rest) = rest.strip_suffix(".slice")
    {
        // systemd: `kubepods-pod<uid_>` or `kubepods-<qos>-pod<uid_>`.
        let uid = rest
            .strip_prefix("pod")
            .or_else(|| rest.strip_prefix("burstable-pod"))
            .or_else(|| rest.strip_prefix("besteffort-pod"))?;
        return canonical(&uid.replace('_', "-"));
    }
    // cgroupfs: `pod<uid>`.
    canonical(name.strip_prefix("pod")?)
}

/// `uid` if it is a Kubernetes object uid (an RFC 4122 UUID, 8-4-4-4-12 hex), lower case.
pub fn canonical(uid: &str) -> Option<String> {
    let groups: Vec<&str> = uid.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| uid.to_ascii_lowercase())
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
    fn upper_case_uids_are_canonicalised() {
        assert_eq!(
            pod_uid(&format!("pod{}", UID.to_ascii_uppercase())).as_deref(),
            Some(UID)
        );
    }
}
