//! Inbound: a sandbox accepts no connection and no datagram from outside unless its policy
//! says `inbound = true`; replies to what it opened itself (TCP, its DNS through hb's
//! resolver, UDP from an allowed address) still flow. The sandbox's listener runs as
//! nobody (uid 65534) and records what it accepted; the outside client is the test
//! process, outside every hb cgroup. Everything lives on `lo` in the test's own network
//! namespace.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::UdpSocket,
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    Pod, TcpProbe, TestEnv, agent_bin, pod_glob, private_netns, python, sandboxed::nobody_python,
    upstream::Dnsmasq,
};
use serde_json::Value;

const DNS_PORT: u16 = 5400;
/// One family's addresses: where outside clients connect from, where sandboxes listen.
struct Addrs {
    client: &'static str,
    sandbox: &'static str,
}

const V4: Addrs = Addrs {
    client: "203.0.113.10",
    sandbox: "203.0.113.20",
};
const V6: Addrs = Addrs {
    client: "2001:db8::10",
    sandbox: "2001:db8::20",
};
/// A public server the sandbox may reach (api.test).
const API: &str = "203.0.113.30";

/// The policies every test has. No `inbound` key: `inbound = false` is the default, and
/// the agent before this change (which does not know the key) runs this config too.
const BASE: &str = r#"
[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:5400"]

[egress]
exception_cidrs = ["203.0.113.0/24", "2001:db8::/32"]

[[policy]]
name = "closed"
allow_domains = ["api.test"]
# The sandbox's own addresses, so it may connect to itself.
allow_cidrs = ["203.0.113.20/32", "2001:db8::20/128"]

[[policy]]
name = "watch"
mode = "audit"
allow_domains = ["api.test"]
"#;

const OPEN: &str = r#"
[[policy]]
name = "open"
inbound = true
allow_domains = ["api.test"]
"#;

/// A TCP and a UDP server in the sandbox. Prints its two ports, answers each connection's
/// first read with `pong:` + what it read, counts accepted connections and datagrams,
/// and prints the counts when its stdin closes (after draining what is pending).
const PY_SERVER: &str = r#"
import os, select, socket, sys
host = sys.argv[1]
# Optional: the stream protocol (262 for MPTCP).
proto = int(sys.argv[2]) if len(sys.argv) > 2 else 0
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
t = socket.socket(fam, socket.SOCK_STREAM, proto); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((host, 0)); t.listen(16)
u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((host, 0))
print(t.getsockname()[1], u.getsockname()[1], flush=True)
accepted = datagrams = 0
def serve(ready):
    global accepted, datagrams
    if t in ready:
        c, _ = t.accept(); accepted += 1
        c.settimeout(3)
        try:
            c.sendall(b"pong:" + c.recv(100))
        except OSError:
            pass
        c.close()
    if u in ready:
        u.recvfrom(2048); datagrams += 1
while True:
    ready, _, _ = select.select([t, u, sys.stdin], [], [])
    serve(ready)
    if sys.stdin in ready and not os.read(sys.stdin.fileno(), 100):
        break
while True:
    ready, _, _ = select.select([t, u], [], [], 0)
    if not ready:
        break
    serve(ready)
print("accepted", accepted, "datagrams", datagrams, flush=True)
"#;

/// The outside client: from `src`, `tcp` connects to `dst`:`port`, sends `ping` and
/// prints `OK` + the answer, or the error; `udp` sends three datagrams and prints `SENT`.
const PY_CLIENT: &str = r#"
import errno, socket, sys
op, src, dst, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fam = socket.AF_INET6 if ":" in src else socket.AF_INET
try:
    if op == "tcp":
        s = socket.socket(fam); s.bind((src, 0)); s.settimeout(3)
        s.connect((dst, port)); s.sendall(b"ping")
        print("OK", s.recv(100).decode())
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((src, 0))
        for _ in range(3):
            s.sendto(b"hello", (dst, port))
        print("SENT")
except socket.timeout:
    print("TIMEOUT")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// Runs in the sandbox: resolves api.test (getent, through hb's resolver), fetches from
/// its TCP server, and asks its UDP echo server; prints what came back.
const PY_OUTBOUND: &str = r#"
import socket, subprocess, sys
port, uport = int(sys.argv[1]), int(sys.argv[2])
out = subprocess.run(["getent", "hosts", "api.test"], capture_output=True, text=True).stdout
addr = out.split()[0] if out else "none"
print("resolved", addr)
s = socket.create_connection((addr, port), timeout=3)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
print("tcp", s.recv(200).decode().split("\r\n")[0])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
u.sendto(b"echo", (addr, uport))
print("udp", u.recvfrom(100)[0].decode())
"#;

/// The sandbox's servers, run as nobody under `policy`.
struct SandboxServer {
    child: Child,
    stdout: BufReader<ChildStdout>,
    tcp_port: u16,
    udp_port: u16,
}

impl SandboxServer {
    /// [`PY_SERVER`] on `host`, as nobody.
    fn start(env: &TestEnv, policy: &str, host: &str) -> Self {
        Self::run(env, policy, &["--user", "65534"], PY_SERVER, &[host])
    }

    /// `script ARGS…` in a sandbox; its first line holds the ports it listens on.
    fn run(env: &TestEnv, policy: &str, user: &[&str], script: &str, args: &[&str]) -> Self {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("--config")
            .arg(&env.config_path)
            .args(["sandbox", "run", "--policy", policy])
            .args(user)
            .arg("--")
            .args([python(), "-c", script])
            .args(args);
        Self::spawn(cmd)
    }

    /// `script ARGS…` as root with every capability in a pod-shaped cgroup the agent
    /// enrolled by a glob ([`TestEnv::root_pod`]).
    fn in_pod(pod: &Pod, script: &str, args: &[&str]) -> Self {
        let mut cmd = vec![python(), "-c", script];
        cmd.extend_from_slice(args);
        Self::spawn(pod.command(&cmd))
    }

    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the sandboxed server");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("server's ports");
        let ports: Vec<u16> = line
            .split_whitespace()
            .map(|p| p.parse().expect("port"))
            .collect();
        assert_eq!(ports.len(), 2, "sandboxed server said {line:?}");
        Self {
            child,
            stdout,
            tcp_port: ports[0],
            udp_port: ports[1],
        }
    }

    /// Stops the server; returns (connections accepted, datagrams received).
    fn finish(mut self) -> (u32, u32) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.stdout
            .read_to_string(&mut rest)
            .expect("server output");
        let status = self.child.wait().expect("wait server");
        assert!(
            status.success(),
            "sandboxed server: {status}, said {rest:?}"
        );
        let f: Vec<&str> = rest.split_whitespace().collect();
        assert!(
            f.len() == 4 && f[0] == "accepted" && f[2] == "datagrams",
            "sandboxed server said {rest:?}"
        );
        (f[1].parse().expect("count"), f[3].parse().expect("count"))
    }
}

/// The outside client (the test process's own cgroup) from `a.client` to `a.sandbox`.
fn client(op: &str, a: &Addrs, port: u16) -> String {
    let out = Command::new(python())
        .args(["-c", PY_CLIENT, op, a.client, a.sandbox, &port.to_string()])
        .output()
        .expect("python3 client");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn is_inbound_event(e: &Value, protocol: &str, from: &str, port: u16, verdict: &str) -> bool {
    e["hook"] == "skb_ingress"
        && e["reason"] == "inbound"
        && e["verdict"] == verdict
        && e["protocol"] == protocol
        && e["dst"] == from
        && e["port"] == port
}

fn world(name: &str, extra: &str) -> (TestEnv, Dnsmasq) {
    private_netns(&[V4.client, V4.sandbox, V6.client, V6.sandbox, API]);
    let dns = Dnsmasq::start("127.0.0.1", DNS_PORT, &[("api.test", &[API])], &[], 5);
    let mut env = TestEnv::new(name, &format!("{BASE}{extra}"));
    env.start_agent();
    (env, dns)
}

/// A UDP server on `API` that echoes every datagram back.
fn udp_echo() -> u16 {
    let sock = UdpSocket::bind((API, 0)).expect("udp echo");
    let port = sock.local_addr().expect("addr").port();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    port
}

#[test]
fn inbound_tcp_from_outside_is_refused_and_reported() {
    // No socket bound: beside the agent a sandbox opens no MPTCP socket while one is set
    // (attack review 25).
    let (env, _dns) = world(
        "in-tcp",
        "\n[sandbox_defaults]\nsockets_max = 0\nsockets_node_percent = 0\n",
    );
    // IPv4, IPv6, IPv4 to a dual-stack listener, and MPTCP (whose subflow listener is a
    // TCP socket in the sandbox's cgroup).
    for (a, args) in [
        (&V4, &[V4.sandbox][..]),
        (&V6, &[V6.sandbox][..]),
        (&V4, &["::"][..]),
        (&V4, &[V4.sandbox, "262"][..]),
    ] {
        let server = SandboxServer::run(&env, "closed", &["--user", "65534"], PY_SERVER, args);
        let port = server.tcp_port;
        let tcp = client("tcp", a, port);
        assert_ne!(
            tcp.split_whitespace().next(),
            Some("OK"),
            "an outside client connected to the sandbox's listener {args:?}: {tcp}"
        );
        env.wait_event("inbound tcp refusal", |e| {
            is_inbound_event(e, "tcp", a.client, port, "deny")
        });
        let (accepted, _) = server.finish();
        assert_eq!(accepted, 0, "the sandbox accepted an outside connection");

        // `hb-agent events` names the hook and the reason, and shows the sender.
        let text = env.hb(&["events"]);
        let text = String::from_utf8_lossy(&text.stdout);
        let line = format!("{} -> :{port}", a.client);
        assert!(
            text.lines()
                .any(|l| l.contains("inbound") && l.contains("skb_ingress") && l.contains(&line)),
            "no inbound line with {line} in:\n{text}"
        );
    }
}

#[test]
fn inbound_udp_from_outside_is_refused_and_reported() {
    let (env, _dns) = world("in-udp", "");
    for a in [&V4, &V6] {
        let server = SandboxServer::start(&env, "closed", a.sandbox);
        let port = server.udp_port;
        assert_eq!(client("udp", a, port), "SENT");
        // The event says the kernel has dealt with the datagrams; without it (the old
        // agent) the server's count shows what arrived.
        let event = find_event(&env, |e| is_inbound_event(e, "udp", a.client, port, "deny"));
        let (_, datagrams) = server.finish();
        assert_eq!(
            datagrams, 0,
            "the sandbox received outside datagrams on {}",
            a.sandbox
        );
        assert!(event.is_some(), "no inbound udp event from {}", a.client);
    }
}

/// A raw TCP socket hears a copy of every TCP segment that arrives, listener or not: a
/// process with CAP_NET_RAW in an enrolled cgroup could take commands from the SYNs of an
/// outside host without ever accepting a connection. Prints `socket` and the errno when
/// the raw socket cannot even be opened.
const PY_RAW: &str = r#"
import errno, os, select, socket, sys
try:
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
except OSError as e:
    print("socket", errno.errorcode.get(e.errno, str(e.errno)), flush=True); sys.exit(0)
print(0, 0, flush=True)
seen = 0
def serve():
    global seen
    data = r.recv(2048)
    if socket.inet_ntoa(data[12:16]) == sys.argv[1]:
        seen += 1
while True:
    ready, _, _ = select.select([r, sys.stdin], [], [])
    if r in ready:
        serve()
    if sys.stdin in ready and not os.read(sys.stdin.fileno(), 100):
        break
while select.select([r], [], [], 0)[0]:
    serve()
print("accepted 0 datagrams", seen, flush=True)
"#;

/// A policy like `closed` (no `inbound`) whose sandboxes may open raw sockets, which
/// `cgroup/sock_create` refuses otherwise (attack review 27).
const RAW: &str = "\n[[policy]]\nname = \"raw\"\nraw_sockets = true\n";

/// The raw socket is held by root with every capability in a pod the agent enrolled by a
/// `[[sandbox]]` glob (a Kubernetes pod may hold CAP_NET_RAW) under a policy that lets it
/// open one; `sandbox run`, even with `--user 0`, cannot open one at all.
#[test]
fn a_raw_socket_hears_nothing_from_outside() {
    let (env, _dns) = world("in-raw", &format!("{RAW}{}", pod_glob("raw")));
    let pod = env.root_pod("raw");
    let server = SandboxServer::in_pod(&pod, PY_RAW, &[V4.client]);
    // Nothing listens on port 9: the kernel answers with a reset, the raw socket would
    // still have heard the SYN.
    let got = client("tcp", &V4, 9);
    assert_eq!(got, "ECONNREFUSED", "the client: {got}");
    let event = find_event(&env, |e| {
        e["hook"] == "skb_ingress" && e["reason"] == "inbound" && e["dst"] == V4.client
    });
    let (_, seen) = server.finish();
    assert_eq!(seen, 0, "the pod's raw socket heard an outside SYN");
    assert!(event.is_some(), "no inbound event for the raw socket");

    // Root in a sandbox has no CAP_NET_RAW: no raw socket to listen with.
    let out = env.hb(&[
        "sandbox",
        "run",
        "--policy",
        "raw",
        "--user",
        "0",
        "--",
        python(),
        "-c",
        PY_RAW,
        V4.client,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "socket EPERM",
        "a raw TCP socket from `sandbox run --user 0`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Like `TestEnv::wait_event`, without failing: the matching event, if one shows up
/// within 5 s.
fn find_event(env: &TestEnv, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let out = env.hb(&["events", "--json"]);
        let found = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| pred(e));
        if found.is_some() {
            return found;
        }
        thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn replies_to_the_sandboxs_own_traffic_still_flow() {
    let (env, _dns) = world("in-replies", "");
    let api = TcpProbe::bind(&format!("{API}:0"));
    let echo = udp_echo();
    let out = nobody_python(
        &env,
        "closed",
        PY_OUTBOUND,
        &[&api.addr.port().to_string(), &echo.to_string()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sandboxed outbound failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("resolved {API}")), "{stdout}");
    assert!(stdout.contains("tcp HTTP/1.1 200 OK"), "{stdout}");
    assert!(stdout.contains("udp echo"), "{stdout}");
    assert_eq!(api.wait_accepted(1), 1);
}

#[test]
fn a_sandbox_may_connect_to_its_own_listener() {
    let (env, _dns) = world("in-self", "");
    let script = r#"
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
t = socket.socket(fam); t.bind((sys.argv[1], 0)); t.listen(1)
c = socket.create_connection(t.getsockname()[:2], timeout=3)
a, _ = t.accept(); c.sendall(b"self"); print(a.recv(10).decode())
"#;
    for a in [&V4, &V6] {
        let out = nobody_python(&env, "closed", script, &[a.sandbox]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "self",
            "{}: {}",
            a.sandbox,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn inbound_true_accepts_and_data_flows_both_ways() {
    let (env, _dns) = world("in-open", OPEN);
    let policies = env.hb_json(&["maps", "dump", "policies"]);
    let inbound = |name: &str| {
        policies
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["inbound"].clone())
    };
    assert_eq!(inbound("open"), Some(Value::Bool(true)), "{policies}");
    assert_eq!(inbound("closed"), Some(Value::Bool(false)), "{policies}");
    // IPv4, IPv6, and IPv4 clients of a dual-stack listener (IPv4-mapped in the socket,
    // plain IPv4 on the wire). The replies go to a client the policy does not allow (only api.test): the SYN-ACK
    // passes on the listener's admitted peer (recorded by the ingress program), the answer
    // on the accepted socket's (sock_ops). Both live in the sockets' own storage
    // (`HB_SOCK_PEER`), which cannot be listed: the answer arriving is the proof.
    for (a, host) in [(&V4, V4.sandbox), (&V6, V6.sandbox), (&V4, "::")] {
        let server = SandboxServer::start(&env, "open", host);
        assert_eq!(client("tcp", a, server.tcp_port), "OK pong:ping", "{host}");
        assert_eq!(client("udp", a, server.udp_port), "SENT");
        let (accepted, datagrams) = server.finish();
        assert_eq!(accepted, 1, "{host}");
        assert!(
            datagrams >= 1,
            "no datagram arrived under inbound = true ({host})"
        );
    }
}

#[test]
fn audit_mode_passes_inbound_and_reports_it() {
    let (env, _dns) = world("in-audit", "");
    let server = SandboxServer::start(&env, "watch", V4.sandbox);
    let port = server.tcp_port;
    assert_eq!(client("tcp", &V4, port), "OK pong:ping");
    env.wait_event("inbound tcp audit", |e| {
        is_inbound_event(e, "tcp", V4.client, port, "audit")
    });
    let (accepted, _) = server.finish();
    assert_eq!(accepted, 1);
}

#[test]
fn the_refusal_outlives_the_agent_and_a_restart_adopts_it() {
    let (mut env, _dns) = world("in-restart", "");
    env.kill_agent();
    let server = SandboxServer::start(&env, "closed", V4.sandbox);
    let port = server.tcp_port;
    let got = client("tcp", &V4, port);
    assert_ne!(
        got.split_whitespace().next(),
        Some("OK"),
        "agent dead: {got}"
    );
    env.start_agent();
    let got = client("tcp", &V4, port);
    assert_ne!(
        got.split_whitespace().next(),
        Some("OK"),
        "agent restarted: {got}"
    );
    let (accepted, _) = server.finish();
    assert_eq!(accepted, 0);
}
