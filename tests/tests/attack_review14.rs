//! A fourteenth attack review, run as the process inside the sandbox against the newest
//! fixes (attack review 13's `nonlocal_source` and `shared_port` refusals in
//! `cgroup/setsockopt`, and the ingress program's local-source rule for a same-sandbox
//! client): each test tries variants of the same class — a foreign source or a shared
//! port reached without the refused options — from a sandbox (uid 65534, arbitrary
//! Python) against the real agent and the real kernel, and asserts the secure outcome.
//!
//! Everything lives in the test's own network namespace: addresses on `lo`; the
//! "foreign" addresses are never configured, so nothing is sent anywhere.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use hb_tests::{TestEnv, private_netns, python, sandboxed::nobody_python_json};

/// The sandbox's own addresses, which its policy allows.
const OWN6: &str = "2001:db8::20";
const OWN4: &str = "203.0.113.20";
/// Addresses of no interface here: the attacker's host.
const C2_4: &str = "198.51.100.66";
const C2_6: &str = "2001:db8:66::66";

const CONFIG: &str = r#"
[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:5400"]

[egress]
exception_cidrs = ["203.0.113.0/24", "198.51.100.0/24", "2001:db8::/32"]

[[policy]]
name = "closed"
allow_cidrs = ["203.0.113.20/32", "2001:db8::20/128"]
"#;

/// In the sandbox: every other way of giving a socket a source that is not the host's
/// (a source in a `sendmsg` control message, a plain bind, the `SOL_IP` options on an
/// IPv6 socket, `IPV6_ADDRFORM` to an IPv4 socket and the options after it, an MPTCP
/// socket whose `SOL_SOCKET`/`SOL_IP` options its own code handles), and of sharing the
/// host service's port (`SO_BINDTODEVICE`, an IPv4-mapped IPv6 bind, TCP's
/// `SO_REUSEADDR` beside a listener). Prints one JSON object: each attempt's `ok` or
/// error.
const PY_VARIANTS: &str = r#"
import json, socket, struct, sys
own4, own6, c2_4, c2_6, port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
res = {}
def attempt(name, f):
    try:
        f(); res[name] = "ok"
    except OSError as e:
        res[name] = e.strerror
def pktinfo6():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    info = socket.inet_pton(socket.AF_INET6, c2_6) + struct.pack("I", 0)
    s.sendmsg([b"x"], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)], 0, (own6, port))
def pktinfo4():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    info = struct.pack("i", 0) + socket.inet_aton(c2_4) + socket.inet_aton("0.0.0.0")
    s.sendmsg([b"x"], [(socket.IPPROTO_IP, 8, info)], 0, (own4, port))  # IP_PKTINFO
def bind(family, addr):
    return lambda: socket.socket(family, socket.SOCK_DGRAM).bind((addr, 0))
def sol_ip_on6(opt):
    return lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM).setsockopt(socket.SOL_IP, opt, 1)
def addrform_then(level, opt):
    def f():
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.connect(("::ffff:" + own4, port))
        s.setsockopt(socket.IPPROTO_IPV6, 1, socket.AF_INET)  # IPV6_ADDRFORM
        s.setsockopt(level, opt, 1)
    return f
def mptcp(level, opt):
    return lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262).setsockopt(level, opt, 1)
def bindtodevice():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
    s.bind((own4, port))
def mapped():
    socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("::ffff:" + own4, port))
def tcp_reuseaddr():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((own4, port))
    s.listen()
attempt("ipv6_pktinfo_foreign_source", pktinfo6)
attempt("ip_pktinfo_foreign_source", pktinfo4)
attempt("bind6_foreign", bind(socket.AF_INET6, c2_6))
attempt("bind4_foreign", bind(socket.AF_INET, c2_4))
attempt("ip_freebind_on_ipv6", sol_ip_on6(15))
attempt("ip_transparent_on_ipv6", sol_ip_on6(19))
attempt("addrform_udp_reuseaddr", addrform_then(socket.SOL_SOCKET, socket.SO_REUSEADDR))
attempt("addrform_ip_freebind", addrform_then(socket.SOL_IP, 15))
attempt("mptcp_reuseport", mptcp(socket.SOL_SOCKET, socket.SO_REUSEPORT))
attempt("mptcp_freebind", mptcp(socket.SOL_IP, 15))
attempt("udp_bindtodevice_beside_service", bindtodevice)
attempt("udp_v4mapped_beside_service", mapped)
attempt("tcp_reuseaddr_beside_listener", tcp_reuseaddr)
print(json.dumps(res), flush=True)
"#;

/// A host service: UDP and a TCP listener on the wildcard address, both with
/// `SO_REUSEADDR`, on one port, which it prints; it exits when its stdin closes.
const PY_HOST_SERVICE: &str = r#"
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind(("0.0.0.0", 0))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", u.getsockname()[1]))
t.listen()
print(u.getsockname()[1], flush=True)
sys.stdin.read()
"#;

/// The attacks that hold: no route around attack review 13's options gives a sandbox a
/// source that is not the host's or a share of a host service's port. hb's own refusals
/// (`EPERM`) are asserted where the kernel would allow the call: `IP_FREEBIND` at
/// `SOL_IP` on an IPv6 socket, and `SO_REUSEPORT`/`IP_FREEBIND` on an MPTCP socket,
/// whose options MPTCP's own code applies (the cgroup program runs before it). The
/// rest the kernel refuses without hb (a source in `IP_PKTINFO`/`IPV6_PKTINFO` must be
/// local, `IPV6_ADDRFORM` is gone from this kernel, a bind beside a wildcard socket
/// without `SO_REUSEADDR` on both, or beside a TCP listener, conflicts): asserted not
/// `ok`, so a kernel that changes that shows here.
#[test]
fn no_other_route_gives_a_sandbox_a_foreign_source_or_a_host_services_port() {
    private_netns(&[OWN4, OWN6]);
    let mut env = TestEnv::new("ar14-variants", CONFIG);
    env.start_agent();
    // The host service (root, in no hb cgroup), on the wildcard address with
    // SO_REUSEADDR, UDP and a TCP listener on one port, until its stdin closes.
    let mut service = Command::new(python())
        .args(["-c", PY_HOST_SERVICE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("host service");
    let mut port = String::new();
    BufReader::new(service.stdout.take().expect("stdout"))
        .read_line(&mut port)
        .expect("port");
    let port = port.trim().to_owned();
    let got = nobody_python_json(
        &env,
        "closed",
        PY_VARIANTS,
        &[OWN4, OWN6, C2_4, C2_6, &port],
    );
    drop(service.stdin.take());
    let _ = service.wait();
    println!("figure: {got}");
    let map = got.as_object().expect("object");
    assert_eq!(map.len(), 13, "{got}");
    for (name, result) in map {
        assert_ne!(result, "ok", "{name} went through: {got}");
    }
    for name in ["ip_freebind_on_ipv6", "mptcp_reuseport", "mptcp_freebind"] {
        assert_eq!(got[name], "Operation not permitted", "{name}: {got}");
    }
    env.wait_event("IP_FREEBIND refused", |e| {
        e["hook"] == "setsockopt" && e["reason"] == "nonlocal_source"
    });
    env.wait_event("SO_REUSEPORT on MPTCP refused", |e| {
        e["hook"] == "setsockopt" && e["reason"] == "shared_port"
    });
}
