//! What a pod's spec opens of the node itself: host folders (`hostPath` volumes) and the
//! node's IPC namespace (`hostIPC`).
//!
//! A container runs as root unless its spec says otherwise, and root owns the node's
//! root-owned files through a writable `hostPath`: `/etc` (a cron job, a systemd unit),
//! `/var/lib/kubelet/seccomp/hb.json` (hb's profile, which every other pod then runs
//! under), `/sys/fs/cgroup` (moving its own processes to a cgroup no policy enrolls).
//! Any of these ends hb's enforcement for the node, so an enforced pod may mount one
//! host folder only: below the broker's policy socket folder
//! (`broker.policy_sockets_dir`, where a sandbox pod finds its policy's socket), and
//! only read-only in every container that mounts it. `hostIPC` shares the node's SysV
//! IPC and POSIX message queues with every process outside any sandbox: a channel to
//! them no network hook sees.
//!
//! Must never: accept a host path it cannot read as below the socket folder (relative
//! paths, `.` or `..` components), or a mount it cannot read as read-only.

use std::path::Path;

use k8s_openapi::api::core::v1::{PodSpec, VolumeMount};

use super::caps::Keeper;

/// What of the node `spec` opens to its pod, one entry each, with `socket_dir` the one
/// host folder (and what lies below it) a pod may mount, read-only.
pub fn node_access(spec: &PodSpec, socket_dir: &Path) -> Vec<Keeper> {
    let mut found = Vec::new();
    if spec.host_ipc == Some(true) {
        found.push(Keeper {
            container: "-".to_owned(),
            why: "hostIPC: the node's SysV IPC and message queues".to_owned(),
        });
    }
    for volume in spec.volumes.iter().flatten() {
        let Some(host) = &volume.host_path else {
            continue;
        };
        let below = is_below(&host.path, socket_dir);
        let writable = mounts(spec)
            .filter(|(_, m)| m.name == volume.name && m.read_only != Some(true))
            .map(|(container, _)| container)
            .collect::<Vec<_>>();
        let why = if !below {
            format!(
                "hostPath volume {} ({}): a node folder outside {}",
                volume.name,
                host.path,
                socket_dir.display()
            )
        } else if !writable.is_empty() {
            format!(
                "hostPath volume {} ({}): mounted writable by {}",
                volume.name,
                host.path,
                writable.join(", ")
            )
        } else {
            continue;
        };
        found.push(Keeper {
            container: "-".to_owned(),
            why,
        });
    }
    found
}

/// Whether host path `path` is `dir` or below it, read lexically: absolute, with no
/// `.` or `..` component (the kubelet hands such a path to the mount as written).
fn is_below(path: &str, dir: &Path) -> bool {
    // Segment by segment as written: `Path::components` drops `.` and empty segments.
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let plain = rest.split('/').all(|seg| !matches!(seg, "" | "." | ".."));
    plain && Path::new(path).starts_with(dir)
}

/// Every volume mount of `spec`'s containers, init and ephemeral containers, with the
/// container's name (`containers/NAME`, …).
fn mounts(spec: &PodSpec) -> impl Iterator<Item = (String, &VolumeMount)> {
    let containers = spec
        .containers
        .iter()
        .flat_map(|c| named("containers", &c.name, c.volume_mounts.as_deref()));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .flat_map(|c| named("initContainers", &c.name, c.volume_mounts.as_deref()));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .flat_map(|c| named("ephemeralContainers", &c.name, c.volume_mounts.as_deref()));
    containers.chain(init).chain(ephemeral)
}

/// Container `kind/name`'s mounts, each with that name.
fn named<'a>(
    kind: &str,
    name: &str,
    mounts: Option<&'a [VolumeMount]>,
) -> impl Iterator<Item = (String, &'a VolumeMount)> {
    let container = format!("{kind}/{name}");
    mounts
        .unwrap_or_default()
        .iter()
        .map(move |m| (container.clone(), m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKETS: &str = "/run/hb/policies";

    fn found(json: serde_json::Value) -> Vec<String> {
        let spec: PodSpec = serde_json::from_value(json).expect("pod spec");
        node_access(&spec, Path::new(SOCKETS))
            .into_iter()
            .map(|k| k.why)
            .collect()
    }

    fn with_volume(path: &str, read_only: Option<bool>) -> serde_json::Value {
        let mut mount = serde_json::json!({"name": "v", "mountPath": "/run/hb"});
        if let Some(ro) = read_only {
            mount["readOnly"] = ro.into();
        }
        serde_json::json!({
            "volumes": [{"name": "v", "hostPath": {"path": path}}],
            "containers": [{"name": "a", "volumeMounts": [mount]}],
        })
    }

    #[test]
    fn the_policy_socket_folder_read_only_is_the_one_host_folder_allowed() {
        for path in [
            "/run/hb/policies/web",
            "/run/hb/policies",
            "/run/hb/policies/web/",
        ] {
            assert_eq!(
                found(with_volume(path, Some(true))),
                Vec::<String>::new(),
                "{path}"
            );
        }
        assert_eq!(
            found(serde_json::json!({"containers": [{"name": "a"}]})),
            Vec::<String>::new()
        );
    }

    #[test]
    fn any_other_host_folder_or_spelling_is_refused() {
        for path in [
            "/",
            "/etc",
            "/run/hb",
            "/run/hb/broker.sock",
            "/var/lib/kubelet/seccomp",
            "/run/hb/policies/../../../etc",
            "/run/hb/policies/./web",
            "/run/hb//policies/web",
            "run/hb/policies/web",
            "/run/hb/policiesx",
        ] {
            let got = found(with_volume(path, Some(true)));
            assert!(
                got.len() == 1 && got[0].contains("a node folder outside /run/hb/policies"),
                "{path}: {got:?}"
            );
        }
    }

    #[test]
    fn the_socket_folder_mounted_writable_anywhere_is_refused() {
        for ro in [None, Some(false)] {
            let got = found(with_volume("/run/hb/policies/web", ro));
            assert_eq!(
                got,
                ["hostPath volume v (/run/hb/policies/web): mounted writable by containers/a"],
                "{ro:?}"
            );
        }
        // Read-only in the main container, writable in an ephemeral one.
        let mut s = with_volume("/run/hb/policies/web", Some(true));
        s["ephemeralContainers"] = serde_json::json!([
            {"name": "debug", "volumeMounts": [{"name": "v", "mountPath": "/x"}]}
        ]);
        assert_eq!(
            found(s),
            [
                "hostPath volume v (/run/hb/policies/web): mounted writable by ephemeralContainers/debug"
            ]
        );
    }

    #[test]
    fn host_ipc_is_refused() {
        let got = found(serde_json::json!({"hostIPC": true, "containers": [{"name": "a"}]}));
        assert_eq!(got, ["hostIPC: the node's SysV IPC and message queues"]);
    }
}
