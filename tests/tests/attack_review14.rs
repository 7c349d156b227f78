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
    io::{BufRead, BufReader, Write as _},
    process::{Command, Stdio},
};

use hb_tests::{
    TestEnv, private_netns, python,
    sandboxed::nobody_python_json,
    upstream::{Dnsmasq, RecordingServer, TestCa},
};

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

# No socket bound: beside the agent a sandbox opens no MPTCP socket while one is set
# (attack review 25), and these tests try MPTCP's own option paths.
[sandbox_defaults]
sockets_max = 0
sockets_node_percent = 0

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

const OLD: &str = "tOkEn-ar14-old-4f3e2d1c0b9a8877665544-Y9";
const NEW: &str = "tOkEn-ar14-new-a1b2c3d4e5f60718293a-RZ9";
/// What the upstream's `/auth` refuses when a caller asks it to: the new value's end
/// (a key the provider does not take yet)...
const DENY: &str = "RZ9";
/// ...or both values' (a path that refuses every key of the account).
const DENY_ALL: &str = "9";

/// A sandbox client of `svc` that does what the test's stdin says, one line at a time:
/// `auth STEP DENY` (a call to a path that refuses the values ending in DENY: a 401 the
/// caller chose to provoke) or `echo STEP` (an ordinary call); prints each call's status
/// or error.
const PY_TURNS: &str = r#"
hb = Client(SOCK)
h = hb.handle("svc", "bot")["handle"]
print("ready", flush=True)
for line in sys.stdin:
    kind, step, *deny = line.split()
    path = "/auth?deny=" + deny[0] + "&step=" + step if kind == "auth" else "/echo?step=" + step
    try:
        print(hb.request("GET", "https://api.test" + path, handle=h)["status"], flush=True)
    except BrokerError as e:
        print(e.code, flush=True)
"#;

/// The world of the propagation attacks: the provider's API `api.test` (its `/auth`
/// refuses what a call asks it to), integration `svc` (`propagation_secs = 60`) bound to
/// two policies, `web` (the attacker's) and `ops` (another tenant's); account `bot`
/// rotated from [`OLD`] to [`NEW`] a moment ago, the previous value in a 10-minute grace.
struct PropWorld {
    env: TestEnv,
    api: RecordingServer,
    _dns: Dnsmasq,
    dir: std::path::PathBuf,
    /// The previous value's id.
    old_id: String,
}

impl PropWorld {
    fn start(name: &str) -> Self {
        private_netns(&["203.0.113.10"]);
        let dir = std::env::temp_dir().join(format!("hb-{name}-{}", std::process::id()));
        let ca = TestCa::new(&dir, "trusted");
        let cert = ca.issue("api", &["api.test"]);
        let api = RecordingServer::start(&dir, "203.0.113.10", 443, Some(&cert));
        let dns = Dnsmasq::start(
            "127.0.0.1",
            5401,
            &[("api.test", &["203.0.113.10"])],
            &[],
            60,
        );
        let config = format!(
            r#"
{head}
[[integration]]
name = "svc"
auth = "bearer"
hosts = ["api.test"]
methods = ["GET"]
propagation_secs = 60

[[policy]]
name = "web"
integrations = ["svc"]

[[policy]]
name = "ops"
integrations = ["svc"]
"#,
            head = hb_tests::tls_broker_config(&ca.cert, 5401, ""),
        );
        let mut env = TestEnv::new(name, &config);
        env.init_vault(&[("svc", "bot", OLD)]);
        env.start_agent();
        let args = [
            "rotate",
            "--integration",
            "svc",
            "--account",
            "bot",
            "--grace",
            "10m",
        ];
        env.vault_with_secret(&args, NEW);
        let old_id = env
            .hb_json(&["vault", "list"])
            .as_array()
            .expect("list")
            .iter()
            .find(|c| c["status"] == "deprecated")
            .and_then(|c| c["id"].as_str())
            .expect("the previous value's id")
            .to_owned();
        Self {
            env,
            api,
            _dns: dns,
            dir,
            old_id,
        }
    }

    /// A [`PY_TURNS`] client in a sandbox of `policy`, ready.
    fn client(&self, policy: &str) -> Turns {
        let script = hb_tests::provider::client_script(
            &[("SOCK", self.env.broker_socket().display().to_string())],
            PY_TURNS,
        );
        let mut child = self.env.sandbox_piped(policy, &[python(), "-c", &script]);
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut t = Turns { child, stdin, out };
        assert_eq!(t.read(), "ready", "{policy} client");
        t
    }

    /// Which values the API's requests of `step` carried, in order.
    fn carried(&self, step: &str) -> Vec<&'static str> {
        hb_tests::provider::bearers(&self.api, step)
            .iter()
            .map(|b| match b.as_str() {
                OLD => "previous",
                NEW => "new",
                _ => "other",
            })
            .collect()
    }
}

impl Drop for PropWorld {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A sandboxed [`PY_TURNS`] client.
struct Turns {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    out: BufReader<std::process::ChildStdout>,
}

impl Turns {
    fn read(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("client's line");
        line.trim().to_owned()
    }

    /// Sends one turn; the call's status or error code.
    fn call(&mut self, what: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{what}").expect("to client");
        self.read()
    }
}

impl Drop for Turns {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A sandbox that provokes the upstream's 401 to a newly rotated value (a path that
/// refuses it) moves every caller of the account, another policy's too, to the previous
/// value for a second: by design, while that value is in its grace period. The attack:
/// keep doing it once the previous value is revoked (an operator who learnt it leaked),
/// so that another tenant's calls carry a value hb must never send again. Holds: the
/// order is drawn from the account's usable values at each call, and a revoked one is
/// not among them — the other tenant's next call carries the new value only.
#[test]
fn a_provoked_refusal_never_sends_another_tenants_call_with_a_revoked_previous_key() {
    let w = PropWorld::start("ar14-prop");
    let (mut attacker, mut tenant) = (w.client("web"), w.client("ops"));
    let provoked = attacker.call(&format!("auth provoke {DENY}"));
    let moved = tenant.call("echo moved");
    let out = w.env.hb(&["vault", "revoke", "--id", &w.old_id]);
    assert!(out.status.success(), "revoke the previous value");
    let again = attacker.call(&format!("auth again {DENY}"));
    let after = tenant.call("echo after");
    println!(
        "figure: provoked 401 ({provoked}, sent {:?}), then the other tenant's call ({moved}) carried {:?}; previous revoked: provoked again ({again}, sent {:?}), the other tenant's call ({after}) carried {:?}",
        w.carried("provoke"),
        w.carried("moved"),
        w.carried("again"),
        w.carried("after")
    );
    // The design at work: the other tenant's call right after carries the previous value.
    assert_eq!(w.carried("provoke"), ["new", "previous"]);
    assert_eq!(
        w.carried("moved"),
        ["previous"],
        "the provocation moved nothing"
    );
    // The attack: a revoked value is never sent again, first or as the retry.
    assert_eq!(w.carried("again"), ["new"]);
    assert_eq!(w.carried("after"), ["new"]);
    assert_eq!(after, "200");
}

/// The attack: a sandbox calls a path that refuses every key of the account (on a real
/// API: one that wants another kind of authorization, or a key the provider already
/// revoked while hb keeps it in its grace period), within the new value's propagation
/// window. Both values get a 401 — no sign of propagation — yet hb took the first 401
/// as one, and for a second every caller of the account, another tenant's too, sent the
/// previous value first (one such call a second keeps it so for the whole window, 60 s
/// by default): another tenant's calls carried a value the upstream had just refused,
/// each a 401 in the provider's logs and a second round trip. Now a 401 to the new value
/// counts only when the previous one was taken in its place.
#[test]
fn a_path_that_refuses_every_key_moves_no_other_tenant_to_the_previous_key() {
    let w = PropWorld::start("ar14-propall");
    let (mut attacker, mut tenant) = (w.client("web"), w.client("ops"));
    let provoked = attacker.call(&format!("auth provoke {DENY_ALL}"));
    let next = tenant.call(&format!("auth next {DENY}"));
    println!(
        "figure: a path refusing both values ({provoked}, sent {:?}), then the other tenant's call ({next}) carried {:?}",
        w.carried("provoke"),
        w.carried("next"),
    );
    assert_eq!(provoked, "401");
    assert_eq!(w.carried("provoke"), ["new", "previous"]);
    assert_eq!(
        w.carried("next"),
        ["new", "previous"],
        "another tenant's call was sent first with the value the upstream just refused"
    );
    assert_eq!(next, "200");
    // A real propagation (the new value refused, the previous one taken: the tenant's
    // call just now) still moves the account's calls to the previous value for a moment.
    let moved = attacker.call("echo moved");
    assert_eq!(moved, "200");
    assert_eq!(w.carried("moved"), ["previous"]);
}
