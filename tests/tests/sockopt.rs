//! `cgroup/setsockopt`: a sandbox cannot make the kernel carry its data in multicast
//! membership reports, nor set a route other than the destination it was admitted to,
//! while ordinary socket options keep working.
//!
//! Every test runs in its own network namespace with `lo` multicast-capable, as the
//! attack needs, and watches `lo` with a packet socket outside the sandbox: the IGMP/MLD
//! reports the kernel sends for a join are what the attack reads.

use std::{
    io::{self, BufRead as _, BufReader},
    net::{Ipv4Addr, Ipv6Addr, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{TestEnv, agent_bin, private_netns, python, sandboxed::nobody_python};
use serde_json::Value;

const POLICIES: &str = r#"
[[policy]]
name = "open"
allow_cidrs = ["0.0.0.0/0", "::/0"]

[[policy]]
name = "watch"
mode = "audit"
allow_cidrs = ["0.0.0.0/0", "::/0"]
"#;

const SOL_IP: u16 = 0;
const SOL_IPV6: u16 = 41;

/// Every join the sandbox tries: (name the script prints, level, optname, group whose
/// report would carry the data). The groups spell "hbSECRET-MLD" and "SE" + a counter.
const JOINS: &[(&str, u16, u16, &str)] = &[
    (
        "IPV6_JOIN_GROUP",
        SOL_IPV6,
        20,
        "ff0e:6862:5345:4352:4554:2d4d:4c44:1",
    ),
    (
        "MCAST_JOIN_GROUP6",
        SOL_IPV6,
        42,
        "ff0e:6862:5345:4352:4554:2d4d:4c44:2",
    ),
    (
        "MCAST_JOIN_SOURCE_GROUP6",
        SOL_IPV6,
        46,
        "ff3e:6862:5345:4352:4554:2d4d:4c44:3",
    ),
    // The solicited-node group of 2001:db8::a:b.
    ("IPV6_JOIN_ANYCAST", SOL_IPV6, 27, "ff02::1:ff0a:b"),
    ("IP_ADD_MEMBERSHIP", SOL_IP, 35, "239.83.69.1"),
    ("MCAST_JOIN_GROUP4", SOL_IP, 42, "239.83.69.2"),
    ("IP_ADD_SOURCE_MEMBERSHIP", SOL_IP, 39, "232.83.69.3"),
    ("MCAST_JOIN_SOURCE_GROUP4", SOL_IP, 46, "232.83.69.4"),
];

/// Tries each join of [`JOINS`] (same groups) and prints `NAME RESULT` per line, RESULT
/// being `OK` or the errno name.
const PY_JOINS: &str = r#"
import errno, socket, struct, sys
lo = socket.if_nametoindex("lo")
def a6(s): return socket.inet_pton(socket.AF_INET6, s)
def a4(s): return socket.inet_aton(s)
def ss6(s): return struct.pack("@HHI", socket.AF_INET6, 0, 0) + a6(s) + struct.pack("@I", 0) + bytes(100)
def ss4(s): return struct.pack("@HH", socket.AF_INET, 0) + a4(s) + bytes(120)
def gr(ifi, g): return struct.pack("@I4x", ifi) + g
def gsr(ifi, g, s): return struct.pack("@I4x", ifi) + g + s
IPV6_JOIN_ANYCAST = 27
MCAST_JOIN_GROUP, MCAST_JOIN_SOURCE_GROUP = 42, 46
IP_ADD_SOURCE_MEMBERSHIP = 39
tries = [
    ("IPV6_JOIN_GROUP", socket.AF_INET6, socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
     a6("ff0e:6862:5345:4352:4554:2d4d:4c44:1") + struct.pack("@I", lo)),
    ("MCAST_JOIN_GROUP6", socket.AF_INET6, socket.IPPROTO_IPV6, MCAST_JOIN_GROUP,
     gr(lo, ss6("ff0e:6862:5345:4352:4554:2d4d:4c44:2"))),
    ("MCAST_JOIN_SOURCE_GROUP6", socket.AF_INET6, socket.IPPROTO_IPV6, MCAST_JOIN_SOURCE_GROUP,
     gsr(lo, ss6("ff3e:6862:5345:4352:4554:2d4d:4c44:3"), ss6("2001:db8::5:1"))),
    ("IPV6_JOIN_ANYCAST", socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_JOIN_ANYCAST,
     a6("2001:db8::a:b") + struct.pack("@I", lo)),
    ("IP_ADD_MEMBERSHIP", socket.AF_INET, socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
     a4("239.83.69.1") + a4("127.0.0.1")),
    ("MCAST_JOIN_GROUP4", socket.AF_INET, socket.IPPROTO_IP, MCAST_JOIN_GROUP,
     gr(lo, ss4("239.83.69.2"))),
    ("IP_ADD_SOURCE_MEMBERSHIP", socket.AF_INET, socket.IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP,
     a4("232.83.69.3") + a4("127.0.0.1") + a4("203.0.113.5")),
    ("MCAST_JOIN_SOURCE_GROUP4", socket.AF_INET, socket.IPPROTO_IP, MCAST_JOIN_SOURCE_GROUP,
     gsr(lo, ss4("232.83.69.4"), ss4("203.0.113.5"))),
]
keep = []
for name, fam, level, opt, val in tries:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    keep.append(s)
    try:
        s.setsockopt(level, opt, val)
        print(name, "OK", flush=True)
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, str(e.errno)), flush=True)
# Keep the memberships (if any) until the test has watched lo: a join left at once
# may never be reported.
sys.stdin.read()
"#;

/// IGMP and MLD packets seen on `lo`, from a packet socket in the test's namespace.
struct Sniffer {
    packets: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Sniffer {
    /// Opens an `AF_PACKET` socket on `lo` (of the calling thread's namespace) and keeps
    /// every IGMP (IPv4 protocol 2) and ICMPv6 packet it sees.
    fn start() -> Self {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain syscalls with valid arguments; the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
        assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
        // SAFETY: fd is a new socket nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_ll is valid; we fill the fields bind needs.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) } as i32;
        // SAFETY: sll is a properly sized sockaddr_ll.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", io::Error::last_os_error());
        let packets = Arc::new(Mutex::new(Vec::new()));
        let keep = packets.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                // SAFETY: buf is valid for its length.
                let n =
                    unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n <= 0 {
                    return;
                }
                let frame = &buf[..n as usize];
                if is_membership_packet(frame) {
                    keep.lock().expect("lock").push(frame.to_vec());
                }
            }
        });
        Self { packets }
    }

    /// Packets that contain `bytes` (a group address in network order).
    fn naming(&self, bytes: &[u8]) -> usize {
        self.packets
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| p.windows(bytes.len()).any(|w| w == bytes))
            .count()
    }

    /// Joins `group` on `lo` from this (unsandboxed) process until a report naming it
    /// reaches the sniffer (up to 10 s a try; a join left and made again, three tries:
    /// under load the kernel once sent no report of a join in 10 s); the socket keeps
    /// the membership.
    fn join_seen(&self, group: &str) -> UdpSocket {
        let bytes = group_bytes(group);
        for _ in 0..3 {
            let joined = host_join(group);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if self.naming(&bytes) > 0 {
                    return joined;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("no membership report for {group} reached the sniffer on lo in 3 joins");
    }
}

/// An Ethernet frame on `lo` carrying IGMP, or ICMPv6 (MLD rides in ICMPv6 after a
/// hop-by-hop header).
fn is_membership_packet(frame: &[u8]) -> bool {
    let Some(ip) = frame.get(14..) else {
        return false;
    };
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => ip.get(9) == Some(&2),
        0x86dd => ip.get(6) == Some(&0) || ip.get(6) == Some(&58),
        _ => false,
    }
}

fn group_bytes(group: &str) -> Vec<u8> {
    if group.contains(':') {
        group.parse::<Ipv6Addr>().expect("v6").octets().to_vec()
    } else {
        group.parse::<Ipv4Addr>().expect("v4").octets().to_vec()
    }
}

/// The test's namespace, with `lo` able to join groups (and so to send reports).
fn multicast_netns() {
    private_netns(&["203.0.113.10"]);
    let out = Command::new("ip")
        .args(["link", "set", "lo", "multicast", "on"])
        .output()
        .expect("ip link");
    assert!(
        out.status.success(),
        "ip link set lo multicast on: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Joins `group` on `lo` from this (unsandboxed) process; the socket keeps the
/// membership (see [`Sniffer::join_seen`]).
fn host_join(group: &str) -> UdpSocket {
    if group.contains(':') {
        let s = UdpSocket::bind("[::]:0").expect("udp6");
        // SAFETY: no arguments beyond a NUL-terminated literal.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        s.join_multicast_v6(&group.parse().expect("v6"), lo)
            .expect("host join v6");
        s
    } else {
        let s = UdpSocket::bind("0.0.0.0:0").expect("udp4");
        s.join_multicast_v4(&group.parse().expect("v4"), &Ipv4Addr::LOCALHOST)
            .expect("host join v4");
        s
    }
}

/// Runs a Python script in a sandbox as uid 65534; returns `NAME RESULT` pairs.
fn sandboxed(env: &TestEnv, policy: &str, script: &str) -> Vec<(String, String)> {
    let out = nobody_python(env, policy, script, &[]);
    assert!(
        out.status.success(),
        "sandboxed script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_owned(), b.trim().to_owned()))
        .collect()
}

/// A sandboxed script (as uid 65534) that holds its sockets until its stdin closes.
struct Held {
    child: Child,
    /// `NAME RESULT` pairs it printed before it blocked (or ended).
    got: Vec<(String, String)>,
}

impl Held {
    /// Starts `script ARGS…` and reads `lines` result lines (fewer if it ends first).
    fn start(env: &TestEnv, policy: &str, script: &str, args: &[&str], lines: usize) -> Self {
        let mut child = Command::new(agent_bin())
            .arg("--config")
            .arg(&env.config_path)
            .args([
                "sandbox", "run", "--policy", policy, "--user", "65534", "--",
            ])
            .args([python(), "-c", script])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sandbox");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut got = Vec::new();
        while got.len() < lines {
            let mut line = String::new();
            if out.read_line(&mut line).expect("read sandbox stdout") == 0 {
                break;
            }
            if let Some((a, b)) = line.trim().split_once(' ') {
                got.push((a.to_owned(), b.to_owned()));
            }
        }
        Self { child, got }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn result<'a>(got: &'a [(String, String)], name: &str) -> &'a str {
    got.iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.as_str())
        .unwrap_or_else(|| panic!("the script did not try {name}: {got:?}"))
}

fn setsockopt_event(e: &Value, reason: &str, verdict: &str, level: u16, optname: u16) -> bool {
    e["hook"] == "setsockopt"
        && e["reason"] == reason
        && e["verdict"] == verdict
        && e["port"] == (level << 8 | optname)
}

#[test]
fn multicast_joins_from_a_sandbox_are_refused_and_no_report_leaves() {
    multicast_netns();
    let sniffer = Sniffer::start();
    let mut env = TestEnv::new("mcast", POLICIES);
    env.start_agent();

    // The sniffer sees reports, and a process outside any sandbox may still join.
    let _before = sniffer.join_seen("ff0e:6862::f001");

    let held = Held::start(&env, "open", PY_JOINS, &[], JOINS.len());
    let got = &held.got;

    // Reports are sent in order: once the kernel has announced groups joined after the
    // sandbox ran, anything the sandbox's joins caused has been sent too.
    let _after6 = sniffer.join_seen("ff0e:6862::f002");
    let _after4 = sniffer.join_seen("239.83.69.240");
    let leaked: Vec<(&str, &str)> = JOINS
        .iter()
        .filter(|(_, _, _, group)| sniffer.naming(&group_bytes(group)) > 0)
        .map(|(name, _, _, group)| (*name, *group))
        .collect();
    assert!(
        leaked.is_empty(),
        "membership reports on lo named groups the sandbox chose: {leaked:?} \
         (what its setsockopt calls returned: {got:?})"
    );
    for (name, level, optname, _) in JOINS {
        assert_eq!(
            result(got, name),
            "EPERM",
            "{name} from the sandbox must get EPERM"
        );
        env.wait_event(&format!("multicast_join {name}"), |e| {
            setsockopt_event(e, "multicast_join", "deny", *level, *optname)
        });
    }
    // The text form names the hook, the reason and the option (level:optname).
    let text = String::from_utf8_lossy(&env.hb(&["events"]).stdout).into_owned();
    assert!(
        text.lines().any(|l| l.contains("multicast_join")
            && l.contains("setsockopt")
            && l.contains("option=41:20")),
        "hb-agent events: {text}"
    );
}

/// SRH (type 4) with one segment, 2001:db8::99, segments left 0: the packet would go to
/// the segment, not to the destination the connect hook admitted.
const PY_ROUTES: &str = r#"
import errno, socket, struct
srh = bytes([17, 2, 4, 0, 0, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, "2001:db8::99")
lsrr = bytes([0x83, 7, 4]) + socket.inet_aton("203.0.113.99") + bytes([0])
rr = bytes([7, 7, 4, 0, 0, 0, 0, 0])
IPV6_2292RTHDR, IPV6_2292PKTOPTIONS, IPV6_RTHDR, IP_OPTIONS = 5, 6, 57, 4
# RFC 2292 sticky options: one cmsghdr (len, level, type) holding the same header.
pktopts = struct.pack("@Qii", 16 + len(srh), socket.IPPROTO_IPV6, IPV6_RTHDR) + srh
def attempt(name, fam, typ, level, opt, val, get=None):
    s = socket.socket(fam, typ)
    try:
        s.setsockopt(level, opt, val)
        if get is not None and s.getsockopt(level, opt) != get:
            print(name, "WRONG", s.getsockopt(level, opt), flush=True)
            return
        print(name, "OK", flush=True)
    except OSError as e:
        print(name, errno.errorcode.get(e.errno, str(e.errno)), flush=True)
A6, A4, D, T = socket.AF_INET6, socket.AF_INET, socket.SOCK_DGRAM, socket.SOCK_STREAM
attempt("IPV6_RTHDR", A6, D, socket.IPPROTO_IPV6, IPV6_RTHDR, srh)
attempt("IPV6_2292RTHDR", A6, D, socket.IPPROTO_IPV6, IPV6_2292RTHDR, srh)
attempt("IPV6_2292PKTOPTIONS", A6, D, socket.IPPROTO_IPV6, IPV6_2292PKTOPTIONS, pktopts)
attempt("IP_OPTIONS_LSRR", A4, D, socket.IPPROTO_IP, IP_OPTIONS, lsrr)
attempt("IP_OPTIONS_RR", A4, T, socket.IPPROTO_IP, IP_OPTIONS, rr)
# Clearing (a zero-length value) routes nothing and passes.
attempt("IPV6_RTHDR_CLEAR", A6, D, socket.IPPROTO_IPV6, IPV6_RTHDR, b"")
attempt("IP_OPTIONS_CLEAR", A4, D, socket.IPPROTO_IP, IP_OPTIONS, b"")
# Ordinary options work and read back.
attempt("SO_REUSEADDR", A4, T, socket.SOL_SOCKET, socket.SO_REUSEADDR, 1, 1)
attempt("TCP_NODELAY", A4, T, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1, 1)
attempt("IP_TOS", A4, D, socket.IPPROTO_IP, socket.IP_TOS, 0x10, 0x10)
attempt("IPV6_V6ONLY", A6, T, socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1, 1)
attempt("SO_RCVBUF", A4, D, socket.SOL_SOCKET, socket.SO_RCVBUF, 65536, 131072)
# A value longer than a page: the kernel hands the program only the first page; the
# option must still reach the kernel whole.
attempt("SO_RCVBUF_LONG", A4, D, socket.SOL_SOCKET, socket.SO_RCVBUF,
        struct.pack("@i", 32768) + bytes(8192), 65536)
"#;

#[test]
fn route_options_are_refused_and_ordinary_options_pass() {
    multicast_netns();
    let mut env = TestEnv::new("sroute", POLICIES);
    env.start_agent();

    let got = sandboxed(&env, "open", PY_ROUTES);
    for (name, level, optname) in [
        ("IPV6_RTHDR", SOL_IPV6, 57),
        ("IPV6_2292RTHDR", SOL_IPV6, 5),
        ("IPV6_2292PKTOPTIONS", SOL_IPV6, 6),
        ("IP_OPTIONS_LSRR", SOL_IP, 4),
        ("IP_OPTIONS_RR", SOL_IP, 4),
    ] {
        assert_eq!(
            result(&got, name),
            "EPERM",
            "{name} from the sandbox must get EPERM"
        );
        env.wait_event(&format!("source_route {name}"), |e| {
            setsockopt_event(e, "source_route", "deny", level, optname)
        });
    }
    for name in [
        "IPV6_RTHDR_CLEAR",
        "IP_OPTIONS_CLEAR",
        "SO_REUSEADDR",
        "TCP_NODELAY",
        "IP_TOS",
        "IPV6_V6ONLY",
        "SO_RCVBUF",
        "SO_RCVBUF_LONG",
    ] {
        assert_eq!(result(&got, name), "OK", "{name} must work in the sandbox");
    }
}

#[test]
fn an_audit_policy_lets_a_join_pass_and_reports_it() {
    multicast_netns();
    let mut env = TestEnv::new("mcaudit", POLICIES);
    env.start_agent();
    let got = sandboxed(&env, "watch", PY_JOINS);
    assert_eq!(result(&got, "IPV6_JOIN_GROUP"), "OK", "audit mode refused");
    env.wait_event("audited multicast_join", |e| {
        setsockopt_event(e, "multicast_join", "audit", SOL_IPV6, 20)
    });
}

/// A join of group `argv[1]` on `lo` through the 32-bit system call entry (after
/// [`hb_tests::PY_COMPAT_SETSOCKOPT`]). Prints `compat RESULT`.
#[cfg(target_arch = "x86_64")]
const PY_COMPAT_JOIN: &str = r#"
val = socket.inet_pton(socket.AF_INET6, sys.argv[1]) + struct.pack("@I", socket.if_nametoindex("lo"))
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
print("start", "OK", flush=True)
print("compat", compat(s, socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, val), flush=True)
sys.stdin.read()
"#;

/// The kernel runs cgroup sockopt programs for native system calls only
/// (`do_sock_setsockopt(sock, in_compat_syscall(), …)` skips them for compat calls), so
/// a join through the 32-bit entry would pass `hb_setsockopt` unseen: the sandbox
/// launcher allows only the native system call ABI.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_32_bit_setsockopt_cannot_join_either() {
    multicast_netns();
    let sniffer = Sniffer::start();
    let mut env = TestEnv::new("mcompat", POLICIES);
    env.start_agent();
    let group = "ff0e:6862:5345:4352:4554:2d33:3262:1";
    let script = format!("{}\n{PY_COMPAT_JOIN}", hb_tests::PY_COMPAT_SETSOCKOPT);
    let held = Held::start(&env, "open", &script, &[group], 2);
    let got = format!("{:?}", held.got);
    let _after = sniffer.join_seen("ff0e:6862::f003");
    assert_eq!(
        sniffer.naming(&group_bytes(group)),
        0,
        "a 32-bit setsockopt from the sandbox joined {group}: {got}"
    );
    assert!(
        result(&held.got, "start") == "OK" && !got.contains("compat"),
        "the script must run up to the call and not get past it: {got}"
    );
}
