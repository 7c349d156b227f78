//! A pod under hb's seccomp profile (`hb-agent sandbox seccomp-profile`), run by a real
//! container runtime (runc) in a cgroup the agent enrolled, as a kubelet would run it:
//! what goes around the cgroup hooks in a pod without the profile is refused with it.
//!
//! Each run is one container (root, `CAP_NET_RAW` as runtimes grant by default, the
//! test's network namespace, a read-only root of the host's `/usr` and `/etc`) whose
//! cgroup is a child of an enrolled pod cgroup; it tries, in order:
//! - a UDP datagram to an address the policy does not allow written through a packet
//!   socket (`AF_PACKET`), which no cgroup hook sees, then sent through a UDP socket (the
//!   hooks refuse it: the control that the container is enforced at all);
//! - opening an `AF_VSOCK` socket (to the hypervisor's host on a VM node; nothing is
//!   sent) and an io_uring (whose `IORING_OP_SOCKET` opens any family);
//! - a 32-bit `setsockopt` (`int $0x80`), which skips every cgroup sockopt program.
//!
//! Without the profile (the control that the attacks work) the packet socket's datagram
//! arrives and the rest opens or succeeds; with it, each is refused (`EPERM`) and the
//! 32-bit call kills the process (`SIGSYS`, the runtime's bad-architecture action).
//!
//! Through the Kubernetes path (the fake API server, `kubernetes.require_seccomp_profile`,
//! the default): a pod whose spec does not put every container under hb's profile is
//! refused (frozen, killed, `unconfined_pod`), and one whose spec does runs, keeping
//! `CAP_NET_RAW`, in a container runc starts under the profile, where the same attacks
//! are refused.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use std::os::unix::process::ExitStatusExt as _;

use hb_tests::{
    PY_COMPAT_SETSOCKOPT, TestEnv, UdpProbe, cgroup2_mount,
    kube::{Driver, FakePod, PY_PACKET, Qos, run_in_cgroup, wait_until},
    kube_cluster::{Cluster, NODE},
    pod_glob, private_netns, random_suffix,
};
use serde_json::{Value, json};

/// Allowed by the policy (a static CIDR).
const ALLOWED4: &str = "203.0.113.10";
/// Held by the test's namespace, not allowed: the listener the attacks aim at.
const OTHER4: &str = "203.0.113.20";
/// The Kubernetes cluster's private address (held by its namespace, in the deny ranges).
const PRIVATE4: &str = "10.0.0.1";
/// An address the host does not hold (the packet socket's datagram's source: one of
/// the host's own would be a martian on `lo`).
const FOREIGN4: &str = "198.51.100.1";

/// The attacks after [`PY_PACKET`]'s two (its `packet`, `udp`), with
/// [`PY_COMPAT_SETSOCKOPT`]'s helpers: each prints `LABEL RESULT` (`OK` or the errno's
/// name), the 32-bit call last (it kills the process under the profile).
const PY_MORE_ATTACKS: &str = r#"
libc = ctypes.CDLL(None, use_errno=True)
def vsock():
    socket.socket(40, socket.SOCK_STREAM).close()
def io_uring():
    params = ctypes.create_string_buffer(120)
    if libc.syscall(425, 4, params) < 0:
        raise OSError(ctypes.get_errno(), "io_uring_setup")
print("vsock", attempt(vsock), flush=True)
print("io_uring", attempt(io_uring), flush=True)
print("begin32", flush=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("compat", compat(s, socket.SOL_SOCKET, socket.SO_REUSEADDR, ONE), flush=True)
"#;

/// A runc bundle: a root of empty mount points (the host's `/usr` and `/etc` bound
/// read-only over them), the container in `cgroup` (below the cgroup2 mount), the
/// profile `seccomp` if any. Removed on drop.
struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    fn new(cgroup: &str, seccomp: Option<&Value>, args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("hb-runc-{}", random_suffix()));
        let root = dir.join("rootfs");
        for d in ["usr", "etc", "tmp", "proc", "dev"] {
            fs::create_dir_all(root.join(d)).expect("bundle folders");
        }
        for link in ["bin", "lib", "lib64", "sbin"] {
            let host = Path::new("/").join(link);
            if host.is_symlink() {
                let target = fs::read_link(&host).expect("merged-/usr link");
                std::os::unix::fs::symlink(target, root.join(link)).expect("link");
            } else if host.is_dir() {
                fs::create_dir_all(root.join(link)).expect("folder");
            }
        }
        let mut config = runc_spec(&dir);
        config["root"] = json!({"path": "rootfs", "readonly": true});
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(args);
        for set in ["bounding", "effective", "permitted"] {
            config["process"]["capabilities"][set]
                .as_array_mut()
                .expect("capabilities")
                .push(json!("CAP_NET_RAW"));
        }
        let mounts = config["mounts"].as_array_mut().expect("mounts");
        // No sysfs: this namespace is the test's, which a new sysfs mount would need as its own.
        mounts.retain(|m| {
            !m["destination"]
                .as_str()
                .is_some_and(|d| d.starts_with("/sys"))
        });
        for d in ["/usr", "/etc"] {
            mounts.push(
                json!({"destination": d, "type": "bind", "source": d, "options": ["rbind", "ro"]}),
            );
        }
        for d in ["/lib", "/lib64", "/bin", "/sbin"] {
            if Path::new(d).is_dir() && !Path::new(d).is_symlink() {
                mounts.push(json!({"destination": d, "type": "bind", "source": d, "options": ["rbind", "ro"]}));
            }
        }
        let linux = &mut config["linux"];
        linux["namespaces"]
            .as_array_mut()
            .expect("namespaces")
            .retain(|n| n["type"] != "network");
        linux["cgroupsPath"] = json!(format!("/{cgroup}"));
        if let Some(profile) = seccomp {
            linux["seccomp"] = profile.clone();
        }
        fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&config).expect("json"),
        )
        .expect("config.json");
        Bundle { dir }
    }

    /// `runc run` of the bundle to its end (runc's state kept in the bundle).
    fn run(&self) -> Output {
        Command::new("runc")
            .arg("--root")
            .arg(self.dir.join("state"))
            .args(["run", "--bundle"])
            .arg(&self.dir)
            .arg(format!("hb-{}", random_suffix()))
            .stdin(Stdio::null())
            .output()
            .expect("runc (cargo xtask setup installs it)")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// runc's own default `config.json` (`runc spec`), read back.
fn runc_spec(dir: &Path) -> Value {
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(dir)
        .output()
        .expect("runc (cargo xtask setup installs it)");
    assert!(out.status.success(), "runc spec: {out:?}");
    let text = fs::read(dir.join("config.json")).expect("runc spec's config.json");
    serde_json::from_slice(&text).expect("runc spec's JSON")
}

/// The value printed after `label` (`LABEL RESULT` lines), or "-" if none.
fn result<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(' '))
        .unwrap_or("-")
}

/// One container of the pod `pod` (its cgroup a child of the pod's) running the
/// attacks, with or without `profile`; its output and how many of its datagrams the
/// listener got.
fn attacks(pod: &str, profile: Option<&Value>, probe: &UdpProbe) -> (Output, String, usize) {
    let before = probe.received();
    let script = format!("{PY_PACKET}\n{PY_COMPAT_SETSOCKOPT}\n{PY_MORE_ATTACKS}");
    let (dst, port) = (probe.addr.ip().to_string(), probe.addr.port().to_string());
    let bundle = Bundle::new(
        &format!("{pod}/c-{}", random_suffix()),
        profile,
        &["/usr/bin/python3", "-c", &script, &dst, &port, FOREIGN4],
    );
    let out = bundle.run();
    thread::sleep(Duration::from_millis(300));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text, probe.received() - before)
}

#[test]
fn a_pod_under_hbs_profile_opens_nothing_the_hooks_cannot_see() {
    private_netns(&[ALLOWED4, OTHER4]);
    let mut env = TestEnv::new(
        "podsec",
        &format!(
            "[egress]\nexception_cidrs = [\"203.0.113.0/24\"]\n\n[[policy]]\nname = \"narrow\"\n\
             allow_cidrs = [\"{ALLOWED4}\"]\n{}",
            pod_glob("narrow")
        ),
    );
    env.start_agent();
    let out = env.hb(&["sandbox", "seccomp-profile", "--policy", "narrow"]);
    assert!(out.status.success(), "seccomp-profile: {out:?}");
    let profile: Value = serde_json::from_slice(&out.stdout).expect("the profile is JSON");
    let unknown = env.hb(&["sandbox", "seccomp-profile", "--policy", "nope"]);
    assert!(
        unknown.status.code() == Some(1)
            && String::from_utf8_lossy(&unknown.stderr).contains("nope"),
        "an unknown policy is an error that names it: {unknown:?}"
    );
    let probe = UdpProbe::bind(&format!("{OTHER4}:0"));
    let pod = env.root_pod("narrow");

    let (bare, bare_text, bare_arrived) = attacks(&pod.rel, None, &probe);
    eprintln!(
        "figure: a pod without the profile: {bare_text:?}, {bare_arrived} datagram(s) at the \
         unvalidated {OTHER4}; exit {:?}",
        bare.status.code()
    );
    assert_eq!(
        result(&bare_text, "udp"),
        "EPERM",
        "the control: the container's UDP is judged by hb ({bare:?})"
    );
    assert_eq!(
        (result(&bare_text, "packet"), bare_arrived),
        ("sent", 1),
        "the control: without the profile the packet socket's datagram arrives ({bare:?})"
    );
    assert_eq!(result(&bare_text, "io_uring"), "OK", "{bare:?}");
    assert_eq!(result(&bare_text, "compat"), "OK", "{bare:?}");

    let (held, text, arrived) = attacks(&pod.rel, Some(&profile), &probe);
    eprintln!(
        "figure: a pod under hb's profile: {text:?}, {arrived} datagram(s) at {OTHER4}; exit \
         {:?}",
        held.status.code()
    );
    assert_eq!(result(&text, "udp"), "EPERM", "{held:?}");
    assert_eq!(result(&text, "packet"), "EPERM", "{held:?}");
    assert_eq!(arrived, 0, "a datagram reached {OTHER4}: {held:?}");
    assert_eq!(result(&text, "vsock"), "EPERM", "{held:?}");
    assert_eq!(result(&text, "io_uring"), "EPERM", "{held:?}");
    assert!(
        result(&text, "compat") == "-" && text.contains("begin32"),
        "the 32-bit call returned: {held:?}"
    );
    assert_eq!(
        held.status.code(),
        Some(128 + libc::SIGSYS),
        "runc passes on the container's exit: SIGSYS at the 32-bit call ({held:?})"
    );
}

#[test]
fn an_enforced_pod_runs_only_under_hbs_profile() {
    // The reconciling scan every 100 ms: it kills a process that joined a frozen cgroup.
    let c = Cluster::start_configured("podsec-kube", 100, true);
    let profile: Value = {
        let out = c.env.hb(&["sandbox", "seccomp-profile"]);
        assert!(out.status.success(), "seccomp-profile: {out:?}");
        serde_json::from_slice(&out.stdout).expect("the profile is JSON")
    };
    let probe = UdpProbe::bind(&format!("{PRIVATE4}:0"));

    // Dropping every capability is not enough: no profile, so refused.
    let bare = FakePod::new("bare", "agents", NODE, Some("web"))
        .with_security(json!({"capabilities": {"drop": ["ALL"]}}));
    let (_, container) = c.enrolled_container(&bare, Driver::Cgroupfs, Qos::Burstable, "web");
    let (status, got) = run_in_cgroup(&container, &["/usr/bin/python3", "-c", "print('ran')"]);
    eprintln!(
        "figure: a pod whose spec names no seccomp profile: its process ended with {status:?} \
         having printed {got:?}"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the pod outside hb's profile is killed ({got:?})\n{}",
        c.log()
    );
    assert!(!got.contains("ran"), "its process ran: {got:?}");
    assert!(
        wait_until(Duration::from_secs(10), || c
            .env
            .audit_records()
            .iter()
            .any(|r| {
                r["reason"] == "unconfined_pod"
                    && r["name"] == "agents/bare"
                    && r["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("containers/main (runs under no profile"))
            })),
        "no unconfined_pod event for agents/bare: {:?}",
        c.env.audit_records()
    );
    c.wait_stat("the refusal counted", |s| s["unconfined_pods"] == 1);

    // Under the profile (pod-level), keeping CAP_NET_RAW: runs, and runc applies it.
    let mut confined = FakePod::new("confined", "agents", NODE, Some("web"));
    confined.spec = json!({
        "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "hb.json"}},
        "containers": [{"name": "main"}],
    });
    let (dir, container) = c.enrolled_container(&confined, Driver::Cgroupfs, Qos::Burstable, "web");
    let rel = container
        .strip_prefix(cgroup2_mount())
        .expect("below the cgroup2 mount")
        .to_str()
        .expect("utf-8")
        .to_owned();
    let (held, text, arrived) = attacks(&rel, Some(&profile), &probe);
    eprintln!(
        "figure: a pod under hb's profile keeping CAP_NET_RAW, run by runc: {text:?}, \
         {arrived} datagram(s) at {PRIVATE4}; exit {:?}",
        held.status.code()
    );
    assert_eq!(result(&text, "udp"), "EPERM", "{held:?}");
    assert_eq!(result(&text, "packet"), "EPERM", "{held:?}");
    assert_eq!(arrived, 0, "a datagram reached {PRIVATE4}: {held:?}");
    assert_eq!(result(&text, "vsock"), "EPERM", "{held:?}");
    assert_eq!(result(&text, "io_uring"), "EPERM", "{held:?}");
    assert_eq!(held.status.code(), Some(128 + libc::SIGSYS), "{held:?}");
    assert_eq!(
        fs::read_to_string(dir.join("cgroup.freeze")).expect("freeze"),
        "0\n",
        "the confined pod is not refused"
    );
    assert_eq!(c.stats()["net_raw_pods"], 0, "{}", c.stats());
}
