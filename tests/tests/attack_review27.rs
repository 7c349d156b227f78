//! A twenty-seventh attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent, the
//! real kernel and listeners of the host (root, in no hb cgroup) that record every
//! datagram carrying the attacker's tag, and asserts the secure outcome. A test marked
//! `#[ignore = "open: …"]` is a break found and not yet fixed: it fails against the
//! current agent.
//!
//! Angle: the kernel side, protocols and paths the socket hooks do not cover, where
//! `cgroup_skb/egress` is the last judge. It is not the last judge of everything: for
//! an IPv4 multicast or broadcast destination on a device other than `lo`, the kernel
//! loops a copy to the host's own listeners (`ip_mc_output` clones the packet and hands
//! the clone to `ip_mc_finish_output` → `dev_loopback_xmit`) *before* the original
//! meets the packet hook, and the clone has no socket, so
//! `BPF_CGROUP_RUN_PROG_INET_EGRESS` (which runs only when the skb's socket is the
//! sender's) skips it. The original was dropped (an `skb_egress` event); the copy had
//! already reached the host. (IPv6 makes its loop copy in `ip6_finish_output2`, after
//! the hook: judged.) Where a socket hook judges the destination first (UDP's
//! `connect4`/`sendmsg4`: multicast and broadcast are deny ranges), nothing is sent.
//! And the host's own addresses, which a static CIDR of a policy could hold.
//!
//! Found (each test fails against 2740a98):
//! - UDP-Lite (`socket(AF_INET, SOCK_DGRAM, 136)`, which the seccomp filter allows): its
//!   `connect` runs no cgroup hook (attack review 1 knew, and left it to the packet
//!   hook), so a socket connected to an IPv4 multicast group or a subnet's broadcast
//!   address delivered its datagrams to the host's UDP-Lite listeners of the group or
//!   port; and the guard's port rules (`guard::route`: QUIC refused on guarded ports)
//!   judge UDP only, so under `guard_all_ports` UDP-Lite reached a guarded port of an
//!   allowed address, by `connect` and by `sendto` (UDP: refused `quic`). On 2740a98, 4
//!   of 4 tagged datagrams arrived. A sandbox may open no UDP-Lite socket now
//!   (`cgroup/sock_create`, reason `unjudged_send`): 0.
//! - a ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`, where `ping_group_range` allows it) runs
//!   no hook on `sendto`; with `SO_BROADCAST`, an echo request to a subnet's broadcast
//!   address carried the sandbox's payload to a raw ICMP socket of the host (2 copies
//!   on 2740a98: the looped request and the host's answer to it, which the sandbox's
//!   ingress then drops), though the sandbox's `sendto` failed with EPERM (the original,
//!   dropped by `skb_egress`). `SO_BROADCAST` is refused on every datagram or raw socket but
//!   UDP (`cgroup/setsockopt`, reason `unjudged_send`): 0.
//! - a static CIDR that holds one of the host's own addresses (`0.0.0.0/0`, or a
//!   provider's block the node lives in) allowed it: `policy::judge4|6` took the static
//!   allow before anything looked at the host's addresses, which attack review 22 keeps
//!   out of resolver answers and IP literals only. A sandbox reached a host service on
//!   the wildcard address through the node's own global IPv4 and IPv6 address (2 of 2
//!   connections on 2740a98). A static allow of an address in `HB_LOCAL_ADDRS` outside
//!   every exception is now `deny_range` (one LPM lookup more on a static allow, on the
//!   connect path and the packet hook's cache miss; a cache hit is unchanged, and the
//!   agent drops the cache when the host's addresses change): 0 of 2, and an address the
//!   operator excepted still opens. The same for what the host's prefixes deliver here:
//!   `HB_LOCAL_ADDRS` held the host's addresses only, not the network and broadcast
//!   addresses of its IPv4 prefixes nor the subnet-router anycast addresses of its IPv6
//!   ones (the resolvers refuse those, attack review 22), so under `0.0.0.0/0` a UDP
//!   datagram to the broadcast address of the node's public /24 reached the host's UDP
//!   listener on the wildcard address (1 of 1 on 2740a98; the original went to the whole
//!   link). They are in the map now (`LOCAL_DELIVERED`: a destination refused as the
//!   host's own, never a source): 0 of 1.
//! - the same ping socket's echo request to an IPv4 multicast group (no option needed:
//!   `IP_MULTICAST_LOOP` is on by default, and no program can turn it off — a
//!   `sock_create` program's `bpf_setsockopt` takes only `IP_TOS` at `SOL_IP`) reached
//!   the host's raw ICMP sockets (2 per group on 2740a98 and 4db6673, for 239.7.7.7 and
//!   224.0.0.1). The looped copy is delivered in the sender's own system call, before
//!   the original meets the packet hook, so nothing the hook could record in time; a
//!   mark the receiving side could read (`sock_create` may write `sk_mark` or
//!   `sk_priority`) is read by the host's firewall, policy routing and qdiscs too. A
//!   raw socket in a pod with `CAP_NET_RAW` in the agent's network namespace (a
//!   `hostNetwork` pod) looped the same way, any protocol: a UDP datagram written whole
//!   to 239.7.7.7 reached the host's UDP listener of the group (1 of 1 on 2740a98 and
//!   4db6673: an mDNS or SSDP daemon hears it), while the pod saw EPERM. A pod in a
//!   namespace of its own loops only to itself. A sandbox opens no ping socket and no
//!   raw socket now unless its policy sets `icmp_echo = true` or `raw_sockets = true`
//!   (`cgroup/sock_create`, reason `unjudged_send`): 0 and 0. A policy that opts in
//!   keeps the loop (its docs say so); ping to validated addresses then works, and to
//!   any other is dropped (`ping_and_raw_sockets_open_only_under_the_policys_opt_in`).
//!
//! - a pod with `CAP_NET_RAW` (the runtime's default set holds it) writes frames through
//!   a packet socket (`AF_PACKET`), which no cgroup hook sees at all: a UDP datagram to an
//!   unvalidated address reached the host's listener (1 of 1 on bd19797 and b70f749, from
//!   a glob-enrolled pod and from a Kubernetes pod), and out of a real device it would
//!   leave the node. `sandbox run` cannot (seccomp refuses `AF_PACKET`, no
//!   `CAP_NET_RAW`). The agent now decides from the pod's spec: an enforced pod whose
//!   containers keep the capability under a policy without `raw_sockets = true` has its
//!   cgroup frozen and its processes killed (`net_raw_pod`): 0 of 1, the process
//!   SIGKILLed. Still open, and documented rather than tested as fixed: a cgroup enrolled
//!   by a `[[sandbox]]` glob has no spec to read, so a process holding `CAP_NET_RAW`
//!   there still sends past every hook (README: such cgroups must not hold it).
//!
//! Held, tried from a sandbox on 2740a98 and not kept as tests:
//! - UDP to a multicast group or a broadcast address: `connect4`/`sendmsg4` refuse it
//!   (`deny_range`), nothing arrives; UDP-Lite and ping to an unvalidated unicast address:
//!   `skb_egress` drops it (`not_allowed`), nothing arrives.
//! - a ping socket's echo to a broadcast address without `SO_BROADCAST`: EACCES; to
//!   255.255.255.255: ENETUNREACH (no route). A ping socket's echo to IPv6 multicast
//!   (ff02::1, ff02::2, ff05::1 out of a veth): dropped (`deny_range`), nothing reached a
//!   host raw ICMPv6 socket (IPv6 loops after the hook).
//! - `sendmmsg` of three datagrams, the first to the allowed address and two to an
//!   address outside the policy: 1 sent, the second refused by `sendmsg4` (each message
//!   meets the hook), 1 arrival.
//! - child cgroups for more socket budget: the sandbox's cgroupfs is read-only
//!   (`mkdir` EROFS); `unshare`/`clone` with a namespace flag and every socket family
//!   but `AF_UNIX`, `AF_INET`, `AF_INET6`, `AF_NETLINK` (`NETLINK_ROUTE` only) are
//!   seccomp's (its rule table, read, not probed again here).
//! - SCTP, DCCP, L2TP/IP, SMC, TIPC, RDS, KCM and `AF_ALG` are not built into this
//!   machine's kernel (`socket()` as root outside any sandbox: EPROTONOSUPPORT,
//!   ESOCKTNOSUPPORT or EAFNOSUPPORT): not tried.
//!
//! Everything lives in the test's own network namespace: addresses on `lo` and, where a
//! test needs a device other than loopback, a veth pair (`v0`, its peer `v1` in the same
//! namespace; the multicast route goes out of `v0`); nothing leaves the namespace.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use std::os::unix::process::ExitStatusExt as _;

use hb_tests::{
    TcpProbe, TestEnv, UdpProbe,
    kube::{Driver, FakePod, PY_PACKET, Qos, run_in_cgroup, wait_until},
    kube_cluster::{Cluster, NODE},
    pod_glob, private_netns, python, random_suffix, sandbox_probe,
    sandboxed::nobody_python,
    sh, spawn_ready,
};
use serde_json::{Value, json};

/// Allowed by the policy (a static CIDR), and an exception to the deny ranges.
const ALLOWED4: &str = "203.0.113.10";
/// The host's address on the veth device, the subnet's broadcast, a multicast group.
const HOST_V0: &str = "10.9.0.1";
const BROADCAST: &str = "10.9.0.255";
const GROUP: &str = "239.7.7.7";
/// The host's listeners' ports: UDP-Lite on the wildcard address (group member), and a
/// UDP-Lite port the policy guards on the allowed address.
const UDPLITE_PORT: u16 = 7002;
const GUARDED_PORT: u16 = 7443;

/// The test's namespace: `ALLOWED4` on `lo`, the veth pair with the host's address and
/// the multicast route, ping sockets for every group (as most distributions set it), and
/// the host answering echoes to broadcast and multicast addresses (so a looped request
/// is answered, as on a host that sets it).
fn world() {
    private_netns(&[ALLOWED4]);
    sh(&format!(
        "ip link add v0 type veth peer name v1 && ip link set v0 up && ip link set v1 up \
         && ip addr add {HOST_V0}/24 dev v0 && ip route add 224.0.0.0/4 dev v0"
    ));
    sh("sysctl -qw net.ipv4.ping_group_range='0 2147483647'");
    sh("sysctl -qw net.ipv4.icmp_echo_ignore_broadcasts=0");
}

/// The host's listeners (root, outside every hb cgroup): UDP-Lite on the wildcard
/// address and port `argv[2]` (a member of [`GROUP`] on `v0`, broadcasts allowed) and on
/// `argv[3]`:`argv[4]`, UDP on the wildcard address and port `argv[2]` (a member of the
/// group: an mDNS or SSDP daemon), and a raw ICMP socket. Every datagram carrying `hb-exfil:<tag>`
/// is written to the file `argv[1]` as a line `<listener> <tag>`.
const PY_RECORDER: &str = r#"
import select, socket, sys
out = open(sys.argv[1], "a", buffering=1)
port, allowed, guarded = int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
group = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
group.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
group.bind(("0.0.0.0", port))
group.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton("239.7.7.7") + socket.inet_aton("10.9.0.1"))
guard = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
guard.bind((allowed, guarded))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", port))
udp.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
               socket.inet_aton("239.7.7.7") + socket.inet_aton("10.9.0.1"))
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
names = {group: "udplite", guard: "guarded", udp: "udp", icmp: "icmp"}
print("ready", flush=True)
while True:
    for s in select.select(list(names), [], [])[0]:
        data = s.recv(4096)
        i = data.find(b"hb-exfil:")
        if i >= 0:
            out.write("%s %s\n" % (names[s], data[i + 9:].split(b"\0")[0].decode(errors="replace")))
"#;

/// The host's listeners of [`PY_RECORDER`], killed when dropped.
struct Recorder {
    child: Child,
    log: PathBuf,
}

impl Recorder {
    fn start() -> Self {
        let log = std::env::temp_dir().join(format!("hb-ar27-{}", random_suffix()));
        let child = spawn_ready(
            Command::new(python()).args([
                "-c",
                PY_RECORDER,
                &log.display().to_string(),
                &UDPLITE_PORT.to_string(),
                ALLOWED4,
                &GUARDED_PORT.to_string(),
            ]),
            "the host's listeners",
        );
        Self { child, log }
    }

    /// The `(listener, tag)` pairs recorded so far, once in-flight datagrams settled.
    fn arrivals(&self) -> Vec<(String, String)> {
        thread::sleep(Duration::from_millis(300));
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }

    /// How many arrivals carried a tag starting with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.arrivals()
            .iter()
            .filter(|(_, tag)| tag.starts_with(prefix))
            .count()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.log);
    }
}

/// Python helpers: `attempt(label, f)` prints `label sent` or `label ERRNO`;
/// `udplite(how, dst, port, label)` sends a tagged UDP-Lite datagram by `connect` +
/// `send` or by `sendto` (broadcasts allowed, multicast out of `v0`); `ping(dst,
/// label, broadcast)` sends a tagged echo request from a ping socket. Run as the host
/// (`argv[1] == "host"`), the same calls are the controls.
const PRELUDE: &str = r#"
import errno, socket, struct, sys
def attempt(label, f):
    try:
        f(); print(label, "sent", flush=True)
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, str(e)), flush=True)
def tag(label):
    return ("hb-exfil:" + label).encode()
def udplite(how, dst, port, label):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.9.0.1"))
    if how == "connect":
        s.connect((dst, port)); s.send(tag(label))
    else:
        s.sendto(tag(label), (dst, port))
def ping(dst, label, broadcast=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    if broadcast:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.9.0.1"))
    s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + tag(label), (dst, 0))
"#;

/// The agent with policy `narrow`: the allowed address as a static CIDR, every port
/// guarded (`guard_all_ports`: UDP to any port but 53 is refused as QUIC), `keys` (more
/// of its keys, one a line), and pods enrolled by a glob ([`TestEnv::root_pod`]).
fn agent(name: &str, keys: &str) -> TestEnv {
    let mut env = TestEnv::new(
        name,
        &format!(
            "[egress]\nexception_cidrs = [\"203.0.113.0/24\"]\n\n[[policy]]\nname = \"narrow\"\n\
             allow_cidrs = [\"{ALLOWED4}\"]\nguard_all_ports = true\n{keys}{}",
            pod_glob("narrow")
        ),
    );
    env.start_agent();
    env
}

/// The opt-ins that let a sandbox open ping sockets and (with `CAP_NET_RAW`) raw ones.
const OPT_IN: &str = "icmp_echo = true\nraw_sockets = true\n";

/// Runs `body` (after [`PRELUDE`]) in a sandbox of `policy` as uid 65534; its output.
fn attack(env: &TestEnv, policy: &str, body: &str) -> String {
    let script = format!("{PRELUDE}\n{body}");
    let out = nobody_python(env, policy, &script, &["sandbox"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.trim().is_empty(),
        "the attack printed nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Runs `body` (after [`PRELUDE`]) as the host: the controls, which show the listeners
/// hear what the attack sends when nothing stands in the way.
fn host(body: &str) -> String {
    let out = Command::new(python())
        .args(["-c", &format!("{PRELUDE}\n{body}"), "host"])
        .stdin(Stdio::null())
        .output()
        .expect("python");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sock_create_refusal(e: &Value) -> bool {
    e["hook"] == "sock_create" && e["reason"] == "unjudged_send" && e["policy"] == "narrow"
}

/// UDP-Lite from a sandbox reaches neither the host's listeners of a multicast group or
/// a broadcast address (the looped copy no packet hook judges) nor a port the policy
/// guards on an allowed address (the guard's rules judge UDP only): by `connect` and,
/// to the guarded port, by `sendto`. The controls: the same datagrams from the host
/// arrive, and so would the sandbox's.
#[test]
fn udp_lite_neither_loops_to_the_hosts_listeners_nor_passes_the_guard() {
    world();
    let env = agent("ar27-udplite", "");
    let recorder = Recorder::start();
    let sends = format!(
        r#"
attempt("group", lambda: udplite("connect", "{GROUP}", {UDPLITE_PORT}, PREFIX + "group"))
attempt("broadcast", lambda: udplite("connect", "{BROADCAST}", {UDPLITE_PORT}, PREFIX + "broadcast"))
attempt("guarded-connect", lambda: udplite("connect", "{ALLOWED4}", {GUARDED_PORT}, PREFIX + "guarded-connect"))
attempt("guarded-sendto", lambda: udplite("sendto", "{ALLOWED4}", {GUARDED_PORT}, PREFIX + "guarded-sendto"))
"#
    );
    let control = host(&format!("PREFIX = \"control-\"\n{sends}"));
    let got = attack(&env, "narrow", &format!("PREFIX = \"attack-\"\n{sends}"));
    let arrived = recorder.count("attack-");
    println!(
        "figure: {arrived} of 4 tagged UDP-Lite datagrams from the sandbox reached the host's \
         listeners (group, broadcast, guarded port by connect and sendto); sandbox saw {got:?}"
    );
    assert_eq!(
        recorder.count("control-"),
        4,
        "the host's own sends reach every listener (control: {control:?}): {:?}",
        recorder.arrivals()
    );
    assert_eq!(
        arrived,
        0,
        "UDP-Lite from the sandbox reached the host's listeners ({got:?}): {:?}",
        recorder.arrivals()
    );
    env.wait_event("the UDP-Lite socket's refusal", sock_create_refusal);
}

/// A ping socket's echo request to a broadcast address (with `SO_BROADCAST`) never
/// reaches the host's raw ICMP listener; the host's own does (the control). The policy
/// lets its sandboxes open ping sockets, so the option's refusal is what is tested.
#[test]
fn a_ping_socket_loops_no_broadcast_to_the_hosts_listeners() {
    world();
    let env = agent("ar27-pingbc", OPT_IN);
    let recorder = Recorder::start();
    let send = format!(r#"attempt("broadcast", lambda: ping("{BROADCAST}", PREFIX, True))"#);
    let control = host(&format!("PREFIX = \"control\"\n{send}"));
    let got = attack(&env, "narrow", &format!("PREFIX = \"attack\"\n{send}"));
    let arrived = recorder.count("attack");
    println!(
        "figure: {arrived} copies of the sandbox's echo request to {BROADCAST} reached the \
         host's raw ICMP socket; sandbox saw {got:?}"
    );
    assert!(
        recorder.count("control") > 0,
        "the host's own broadcast echo reaches its raw socket (control: {control:?})"
    );
    assert_eq!(
        arrived, 0,
        "the sandbox's broadcast echo reached the host ({got:?})"
    );
    env.wait_event("the SO_BROADCAST refusal", |e| {
        e["hook"] == "setsockopt" && e["reason"] == "unjudged_send"
    });
}

/// A ping socket's echo request to an IPv4 multicast group (a group the host joined, and
/// all-hosts) never reaches the host's raw ICMP listener: a policy without `icmp_echo`
/// opens no ping socket.
#[test]
fn a_ping_socket_loops_no_multicast_to_the_hosts_listeners() {
    world();
    let env = agent("ar27-pingmc", "");
    let recorder = Recorder::start();
    let got = attack(
        &env,
        "narrow",
        &format!(
            r#"
attempt("group", lambda: ping("{GROUP}", "group"))
attempt("all-hosts", lambda: ping("224.0.0.1", "all-hosts"))
"#
        ),
    );
    let arrived = recorder.arrivals();
    println!(
        "figure: {} copies of the sandbox's multicast echo requests reached the host's raw \
         ICMP socket; sandbox saw {got:?}",
        arrived.len()
    );
    assert!(
        arrived.is_empty(),
        "the sandbox's multicast echo reached the host ({got:?}): {arrived:?}"
    );
    env.wait_event("the ping socket's refusal", |e| {
        sock_create_refusal(e) && e["protocol"] == "icmp" && e["port"] == SOCK_DGRAM
    });
}

/// A UDP datagram written whole through a raw socket (root with `CAP_NET_RAW` in a
/// glob-enrolled pod in the agent's network namespace, as a `hostNetwork` pod may be) to
/// an IPv4 multicast group never reaches the host's UDP listener of the group (an mDNS
/// or SSDP daemon): a policy without `raw_sockets` opens no raw socket. `sandbox run`
/// cannot open one at all.
#[test]
fn a_raw_socket_in_a_pod_loops_no_multicast_to_the_hosts_listeners() {
    world();
    let env = agent("ar27-rawmc", "");
    let pod = env.root_pod("narrow");
    let recorder = Recorder::start();
    let script = format!(
        r#"{PRELUDE}
def raw():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("{HOST_V0}"))
    payload = tag("raw")
    s.sendto(struct.pack("!HHHH", 40000, {UDPLITE_PORT}, 8 + len(payload), 0) + payload, ("{GROUP}", 0))
attempt("raw", raw)
"#
    );
    let out = pod.run(&[python(), "-c", &script]);
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    let arrived = recorder.arrivals();
    println!(
        "figure: {} of 1 raw UDP datagrams from the pod to {GROUP} reached the host's UDP \
         listener of the group; the pod saw {got:?}",
        arrived.len()
    );
    assert!(
        got.contains("raw "),
        "the pod's script did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        arrived.is_empty(),
        "the pod's multicast datagram reached the host ({got:?}): {arrived:?}"
    );
    env.wait_event("the raw socket's refusal", |e| {
        sock_create_refusal(e) && e["protocol"] == "udp" && e["port"] == SOCK_RAW
    });
}

/// The socket types in a `sock_create` event's `port`.
const SOCK_DGRAM: u16 = 2;
const SOCK_RAW: u16 = 3;

/// An address on `lo` in the policy's exception but not in its CIDRs: not validated.
const OTHER4: &str = "203.0.113.20";
/// An address the host does not hold (the packet socket's datagram's source).
const FOREIGN4: &str = "198.51.100.1";

/// Python helpers for the opt-in test: `echo(kind, dst, label)` sends one tagged echo
/// request to `dst` from a ping socket (`kind` "ping4"/"ping6") or a raw ICMP socket
/// ("raw4", "raw6": `CAP_NET_RAW`) and prints `label REPLY`, `label TIMEOUT` or `label`
/// and the errno name (the socket's own refusal included).
const PY_ECHO: &str = r#"
import errno, socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def echo(kind, dst, label):
    v6 = kind.endswith("6")
    family = socket.AF_INET6 if v6 else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    raw = kind.startswith("raw")
    try:
        s = socket.socket(family, socket.SOCK_RAW if raw else socket.SOCK_DGRAM, proto)
        s.settimeout(1)
        body = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0x4862, 1) + ("hb-exfil:" + label).encode()
        s.sendto(body[:2] + struct.pack("!H", csum(body)) + body[4:] if raw and not v6 else body, (dst, 0))
        while True:
            data = s.recv(2048)
            if raw and not v6:
                data = data[20:]
            if data[0] in (0, 129) and b"hb-exfil:" + label.encode() in data:
                print(label, "REPLY", flush=True); return
    except TimeoutError:
        print(label, "TIMEOUT", flush=True)
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, str(e.errno)), flush=True)
for arg in sys.argv[1:]:
    echo(*arg.split(",") + [arg.replace(",", "-")])
"#;

/// Runs [`PY_ECHO`] as uid 65534 in a sandbox of `policy` or as root in a pod of it, one
/// echo per `kind,dst` argument; its lines.
fn echoes(env: &TestEnv, policy: &str, pod: bool, args: &[&str]) -> Vec<String> {
    let out = if pod {
        let mut argv = vec![python(), "-c", PY_ECHO];
        argv.extend_from_slice(args);
        env.root_pod(policy).run(&argv)
    } else {
        nobody_python(env, policy, PY_ECHO, args)
    };
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, v)| v).to_owned())
        .collect();
    assert_eq!(
        lines.len(),
        args.len(),
        "one line per echo: {lines:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

/// A policy without `icmp_echo` and `raw_sockets` opens neither a ping socket (uid 65534
/// in a sandbox, IPv4 and IPv6) nor a raw one (root in a pod, ICMP and ICMPv6), each
/// refusal an event. With them, ping and raw sockets reach a validated address (the
/// control) and still nothing else (`cgroup_skb/egress` drops it): the host's raw ICMP
/// socket hears no echo to the unvalidated address. An audit policy's ping socket opens,
/// and is reported.
#[test]
fn ping_and_raw_sockets_open_only_under_the_policys_opt_in() {
    world();
    sh(&format!("ip addr add {OTHER4}/32 dev lo"));
    let env = agent(
        "ar27-optin",
        &format!(
            "\n[[policy]]\nname = \"pinging\"\nallow_cidrs = [\"{ALLOWED4}\"]\n{OPT_IN}{}\
             \n[[policy]]\nname = \"watch\"\nmode = \"audit\"\nallow_cidrs = [\"{ALLOWED4}\"]\n",
            pod_glob("pinging")
        ),
    );
    let policies = env.hb_json(&["maps", "dump", "policies"]);
    for (name, opted_in) in [("narrow", false), ("pinging", true)] {
        let row = policies
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing from the policies: {policies}"));
        assert_eq!(row["icmp_echo"], opted_in, "{row}");
        assert_eq!(row["raw_sockets"], opted_in, "{row}");
    }
    let recorder = Recorder::start();
    let ping = ["ping4,127.0.0.1", "ping6,::1"];
    let raw = ["raw4,127.0.0.1", "raw6,::1"];
    let refused = [
        echoes(&env, "narrow", false, &ping),
        echoes(&env, "narrow", true, &raw),
    ]
    .concat();
    let a4 = format!("ping4,{ALLOWED4}");
    let o4 = format!("ping4,{OTHER4}");
    let ra4 = format!("raw4,{ALLOWED4}");
    let ro4 = format!("raw4,{OTHER4}");
    let allowed = [
        echoes(&env, "pinging", false, &[&a4, &o4]),
        echoes(&env, "pinging", true, &[&ra4, &ro4]),
    ]
    .concat();
    let audited = echoes(&env, "watch", false, &[&a4]);
    let other =
        recorder.count(&format!("ping4-{OTHER4}")) + recorder.count(&format!("raw4-{OTHER4}"));
    println!(
        "figure: without the opt-ins the sandbox's ping and the pod's raw sockets saw \
         {refused:?}; with them, to the validated and the unvalidated address: {allowed:?}, \
         and {other} echo request(s) to the unvalidated address reached the host; under \
         audit: {audited:?}"
    );
    assert_eq!(
        refused, ["EPERM"; 4],
        "ping and raw sockets without the opt-ins"
    );
    for (protocol, kind) in [
        ("icmp", SOCK_DGRAM),
        ("icmpv6", SOCK_DGRAM),
        ("icmp", SOCK_RAW),
        ("icmpv6", SOCK_RAW),
    ] {
        env.wait_event(
            &format!("the refusal of a {protocol} socket of type {kind}"),
            |e| sock_create_refusal(e) && e["protocol"] == protocol && e["port"] == kind,
        );
    }
    assert_eq!(
        allowed[0], "REPLY",
        "a ping to the validated address (control)"
    );
    assert_eq!(
        allowed[2], "REPLY",
        "a raw echo to the validated address (control)"
    );
    for got in [&allowed[1], &allowed[3]] {
        assert!(
            got == "EPERM" || got == "TIMEOUT",
            "an echo to the unvalidated address: {allowed:?}"
        );
    }
    assert_eq!(
        other,
        0,
        "an echo reached the unvalidated {OTHER4}: {:?}",
        recorder.arrivals()
    );
    assert_eq!(audited, ["REPLY"], "an audit policy's ping socket opens");
    env.wait_event("the audited ping socket", |e| {
        e["hook"] == "sock_create" && e["policy"] == "watch" && e["verdict"] == "audit"
    });
    env.wait_event("the echo to the unvalidated address dropped", |e| {
        e["hook"] == "skb_egress" && e["reason"] == "not_allowed" && e["dst"] == OTHER4
    });
}

/// The host's own global addresses in the static-CIDR test (on `lo`: a bare-metal node's
/// public IPv4 and global IPv6, as in attack review 22), and one of its addresses the
/// operator excepted (the control).
const NODE4: &str = "100.128.0.77";
const NODE6: &str = "2a00:1450::77";
const EXCEPTED4: &str = "100.128.0.78";

/// A static CIDR that holds the node's own address (a provider's block the node lives
/// in, `0.0.0.0/0`) does not open the host's services to a sandbox: TCP to a listener on
/// the wildcard address through the node's IPv4 and IPv6 address is refused, as every
/// other way to name a host address is. An address of the host that `exception_cidrs`
/// names still opens (the control).
#[test]
fn a_static_cidr_holding_the_hosts_address_opens_no_host_service() {
    private_netns(&[NODE4, NODE6, EXCEPTED4]);
    let service = TcpProbe::bind("[::]:0");
    let port = service.addr.port();
    let mut env = TestEnv::new(
        "ar27-cidr",
        &format!(
            "[egress]\nexception_cidrs = [\"{EXCEPTED4}/32\"]\n\n[[policy]]\nname = \"wide\"\n\
             allow_cidrs = [\"100.128.0.0/16\", \"2a00:1450::/32\"]\n"
        ),
    );
    env.start_agent();
    let node: Vec<String> = [NODE4, NODE6]
        .iter()
        .map(|h| sandbox_probe(&env, "wide", "tcp", h, port))
        .collect();
    let control = sandbox_probe(&env, "wide", "tcp", EXCEPTED4, port);
    // Every connect above completed before its probe returned, so once the control is
    // accepted the listener's backlog held them all; a moment more lets it take them.
    service.wait_accepted(1);
    thread::sleep(Duration::from_millis(300));
    let reached = service.accepted().saturating_sub(1);
    println!(
        "figure: {reached} of 2 connections through the node's own address (IPv4, IPv6) \
         under a static CIDR reached a host service; the sandbox saw {node:?}"
    );
    assert_eq!(control, "OK", "an excepted host address stays reachable");
    assert_eq!(
        reached, 0,
        "a host service was reached through the node's own address: {node:?}"
    );
    assert_eq!(node, ["EPERM", "EPERM"]);
}

/// The broadcast address of the node's public prefix in the broadcast test (on the veth
/// `v0`, `100.128.1.1/24`).
const NODE_BROADCAST: &str = "100.128.1.255";

/// A static CIDR that holds the broadcast address of one of the node's prefixes (a
/// public /24 on a device, under `0.0.0.0/0`) does not carry a sandbox's datagram to the
/// host's UDP listeners on the wildcard address: the kernel loops a copy of a broadcast
/// to them (and sends the original to the whole link). The resolvers refuse the address
/// as an answer (attack review 22); the kernel now refuses it as a static allow too.
#[test]
fn a_static_cidr_holding_the_hosts_broadcast_address_reaches_no_host_listener() {
    private_netns(&[]);
    sh(
        "ip link add v0 type veth peer name v1 && ip link set v0 up && ip link set v1 up \
        && ip addr add 100.128.1.1/24 dev v0",
    );
    let listener = UdpProbe::bind("0.0.0.0:0");
    let port = listener.addr.port();
    let mut env = TestEnv::new(
        "ar27-bcast",
        "[[policy]]\nname = \"wide\"\nallow_cidrs = [\"0.0.0.0/0\"]\n",
    );
    env.start_agent();
    let got = attack(
        &env,
        "wide",
        &format!(
            r#"
def broadcast():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.sendto(tag("broadcast"), ("{NODE_BROADCAST}", {port}))
attempt("broadcast", broadcast)
"#
        ),
    );
    thread::sleep(Duration::from_millis(300));
    let arrived = listener.received();
    println!(
        "figure: {arrived} of 1 datagrams to the node's broadcast address {NODE_BROADCAST} \
         under a static 0.0.0.0/0 reached the host's UDP listener; the sandbox saw {got:?}"
    );
    assert_eq!(arrived, 0, "the broadcast reached the host ({got:?})");
    assert_eq!(got.trim(), "broadcast EPERM");
}

/// A Kubernetes pod whose container keeps `CAP_NET_RAW` (no `securityContext`: the
/// runtime's default set holds it) in an enforced namespace under a policy without
/// `raw_sockets`: a process in it that writes an IPv4 UDP datagram to an address outside
/// the policy through a packet socket (`AF_PACKET`) reaches nothing. A packet socket's
/// `dev_queue_xmit` runs no cgroup hook (neither `sock_create`, which only internet
/// sockets run, nor `cgroup_skb/egress`, which `ip_finish_output` runs), so the agent
/// decides from the pod's spec: it freezes the pod's cgroup when it appears, enrolls it,
/// and kills what enters it (SIGKILL at the next reconciling scan; a frozen process
/// runs no instruction meanwhile), with a `net_raw_pod` event. On b70f749 the datagram
/// arrived (1 of 1). Controls: a pod whose container drops `ALL`, its process run with
/// `CAP_NET_RAW` really gone from its bounding set, runs and the kernel refuses its
/// packet socket (EPERM); a pod keeping it under policy `rawok` (`raw_sockets = true`)
/// runs, and its packet socket's datagram does arrive (the listener hears such frames:
/// the opt-in accepts exactly this).
///
/// The datagram names a source that is not the host's: one from a loopback address or a
/// host address is a martian on input (a packet socket's frame has no route attached,
/// so `lo` routes it as if it came from outside). Out of a real device the same frame
/// leaves the node to any address.
#[test]
fn a_packet_socket_in_a_pod_reaches_no_unvalidated_address() {
    // The reconciling scan every 100 ms: it is what kills a process that joined the
    // frozen cgroup.
    let c = Cluster::start_with("ar27-packet", 100);
    let listener = UdpProbe::bind(&format!("{PRIVATE4}:0"));
    let port = listener.addr.port().to_string();
    let argv = [python(), "-c", PY_PACKET, PRIVATE4, &port, FOREIGN4];

    // The pod keeping CAP_NET_RAW under `web`.
    let keeper = FakePod::new("keeper", "agents", NODE, Some("web")).with_security(Value::Null);
    let (_, container) = c.enrolled_container(&keeper, Driver::Cgroupfs, Qos::Burstable, "web");
    let (status, got) = run_in_cgroup(&container, &argv);
    thread::sleep(Duration::from_millis(300));
    let arrived = listener.received();
    println!(
        "figure: {arrived} of 1 datagrams a pod keeping CAP_NET_RAW wrote through a packet \
         socket reached the host's listener on the unvalidated {PRIVATE4}; the pod's process \
         ended with {status:?} having printed {got:?}"
    );
    assert_eq!(
        arrived, 0,
        "the pod's packet socket reached {PRIVATE4} ({got:?})"
    );
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the refused pod's process is killed ({got:?})\n{}",
        c.log()
    );
    assert!(
        !got.contains("packet"),
        "the refused pod's process ran: {got:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || c
            .env
            .audit_records()
            .iter()
            .any(|r| {
                r["reason"] == "net_raw_pod"
                    && r["name"] == "agents/keeper"
                    && r["policy"] == "web"
                    && r["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("containers/main (runtime default)"))
            })),
        "no net_raw_pod event for agents/keeper: {:?}",
        c.env.audit_records()
    );
    c.wait_stat("the refusal counted", |s| s["net_raw_pods"] == 1);
    let status = c.env.hb(&["status", "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["kubernetes"]["net_raw_pods"], 1, "{status}");

    // The control: a pod that drops ALL, its process without CAP_NET_RAW.
    let dropper = FakePod::new("dropper", "agents", NODE, Some("web"))
        .with_security(json!({"capabilities": {"drop": ["ALL"]}}));
    let (dir, container) = c.enrolled_container(&dropper, Driver::Cgroupfs, Qos::Burstable, "web");
    let mut dropped = vec!["setpriv", "--bounding-set", "-net_raw"];
    dropped.extend_from_slice(&argv);
    let (status, got) = run_in_cgroup(&container, &dropped);
    assert!(
        status.success(),
        "the dropping pod runs: {status:?} {got:?}"
    );
    assert_eq!(got, "packet EPERM\nudp EPERM\n");
    assert_eq!(
        fs::read_to_string(dir.join("cgroup.freeze")).expect("freeze"),
        "0\n"
    );

    // Under the opt-in: the pod runs, and its packet socket is not judged.
    let opted = FakePod::new("opted", "agents", NODE, Some("rawok")).with_security(Value::Null);
    let (_, container) = c.enrolled_container(&opted, Driver::Cgroupfs, Qos::Burstable, "rawok");
    let (status, got) = run_in_cgroup(&container, &argv);
    thread::sleep(Duration::from_millis(300));
    println!(
        "figure: under raw_sockets = true the pod ran ({got:?}) and {} datagram(s) arrived",
        listener.received()
    );
    assert!(
        status.success(),
        "the opted-in pod runs: {status:?} {got:?}"
    );
    assert_eq!(got, "packet sent\nudp EPERM\n");
    assert_eq!(
        listener.received(),
        1,
        "the listener hears a packet socket's datagram (the opt-in's cost)"
    );
    // (Written twice a second: a refusal of the opted-in pod would show by now.)
    thread::sleep(Duration::from_millis(600));
    assert_eq!(c.stats()["net_raw_pods"], 1, "only the keeper was refused");
}

/// The private target's address of the [`Cluster`]'s namespace (on `lo`, outside every
/// policy but `open`).
const PRIVATE4: &str = "10.0.0.1";

/// A cgroup enrolled by a `[[sandbox]]` glob has no pod spec to refuse by, so a process
/// there that may hold `CAP_NET_RAW` is only reported (detection only, nothing is
/// stopped): a `net_raw_cgroup` event names the cgroup whose process's bounding set
/// holds it, and none names the cgroup whose process dropped it from its bounding set.
#[test]
fn a_glob_enrolled_cgroup_holding_net_raw_is_reported() {
    private_netns(&[ALLOWED4]);
    let env = agent("ar27-globraw", "");
    let holder = env.root_pod("narrow");
    let dropper = env.root_pod("narrow");
    let mut dropping = dropper
        .command(&["setpriv", "--bounding-set", "-net_raw", "sleep", "600"])
        .spawn()
        .expect("sleep without CAP_NET_RAW");
    let mut holding = holder.command(&["sleep", "600"]).spawn().expect("sleep");
    let e = env.wait_event("the holder's report", |e| {
        e["reason"] == "net_raw_cgroup" && e["cgroup"] == holder.rel.as_str()
    });
    // The agent's glob rescan runs every 100 ms in the tests: a few have passed.
    thread::sleep(Duration::from_millis(500));
    let about_dropper = env
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "net_raw_cgroup" && e["cgroup"] == dropper.rel.as_str())
        .count();
    let still_running = holding.try_wait().expect("wait").is_none();
    for child in [&mut dropping, &mut holding] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(
        (&e["hook"], &e["verdict"], &e["policy"]),
        (
            &Value::from("enroll"),
            &Value::from("audit"),
            &Value::from("narrow")
        )
    );
    assert_eq!(e["comm"], "sleep");
    assert_eq!(
        about_dropper, 0,
        "the process without CAP_NET_RAW was reported"
    );
    assert!(still_running, "detection only: the holder runs on");
}
