//! A sandbox cannot blind monitoring by getting refused in a loop: each cgroup has an
//! event budget in the kernel (`hb_common::limits::EVENT_BURST` per
//! `EVENT_WINDOW_NS`), refusals past it are still enforced and counted, and another
//! sandbox's refusal is reported meanwhile. Each test in its own network namespace.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::Duration,
};

use hb_tests::{
    TcpProbe, TestEnv, UdpProbe, agent_bin, private_netns, python, sandboxed::nobody_python,
};
use serde_json::Value;

const POLICIES: &str = r#"
[[policy]]
name = "flood"
allow_cidrs = ["0.0.0.0/0", "::/0"]

[[policy]]
name = "quiet"
allow_cidrs = ["0.0.0.0/0", "::/0"]
"#;

/// Refused sends the flooder makes.
const FLOOD: u32 = 200_000;

/// Bound on the flooder's reported events: the budget lets through 64 per 10 s window
/// (plus a few per window when CPUs restart it together); this is far above what any
/// run of this test can reach and far below one event per refusal.
const MAX_FLOOD_EVENTS: usize = 5_000;

/// `sendto` a private address `N` times once told to (a line on stdin), printing
/// `half` midway and the tally at the end; then one more send per stdin line.
const PY_FLOOD: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("ready", flush=True)
sys.stdin.readline()
refused = sent = other = 0
for i in range(n):
    if i == n // 2:
        print("half", flush=True)
    try:
        s.sendto(b"x", (host, port)); sent += 1
    except PermissionError:
        refused += 1
    except OSError:
        other += 1
print(f"refused={refused} sent={sent} other={other}", flush=True)
for line in sys.stdin:
    try:
        s.sendto(b"x", (host, port)); sent += 1
    except OSError:
        pass
    print(f"sent={sent}", flush=True)
"#;

/// One TCP connect once told to; prints `OK` or the errno name.
const PY_CONNECT: &str = r#"
import errno, socket, sys
print("ready", flush=True)
sys.stdin.readline()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print("OK", flush=True)
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
"#;

/// A sandboxed script run as nobody, talked to line by line.
struct Sandboxed {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Sandboxed {
    fn start(env: &TestEnv, policy: &str, script: &str, args: &[&str]) -> Self {
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
            .expect("spawn a sandboxed script");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut s = Self {
            child,
            stdin,
            stdout,
        };
        assert_eq!(s.line(), "ready", "sandboxed script under {policy}");
        s
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("script output");
        line.trim().to_owned()
    }

    fn tell(&mut self) {
        self.stdin.write_all(b"go\n").expect("script stdin");
        self.stdin.flush().expect("script stdin");
    }

    fn finish(self) {
        let Self {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let status = child.wait().expect("wait sandboxed script");
        assert!(status.success(), "sandboxed script: {status}");
    }
}

fn events(env: &TestEnv) -> Vec<Value> {
    let out = env.hb(&["events", "--json"]);
    assert!(out.status.success(), "hb-agent events failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("event JSON"))
        .collect()
}

fn flood_events(env: &TestEnv) -> Vec<Value> {
    events(env)
        .into_iter()
        .filter(|e| e["policy"] == "flood")
        .collect()
}

#[test]
fn a_flooding_sandbox_is_rate_limited_and_another_sandboxs_refusal_is_still_reported() {
    private_netns(&["10.0.0.1", "172.16.0.1"]);
    let mut env = TestEnv::new("evrate", POLICIES);
    env.start_agent();
    let sink = UdpProbe::bind("10.0.0.1:0");
    let listener = TcpProbe::bind("172.16.0.1:0");
    let sink_port = sink.addr.port().to_string();
    let listener_port = listener.addr.port().to_string();

    let mut flooder = Sandboxed::start(
        &env,
        "flood",
        PY_FLOOD,
        &["10.0.0.1", &sink_port, &FLOOD.to_string()],
    );
    let mut quiet = Sandboxed::start(&env, "quiet", PY_CONNECT, &["172.16.0.1", &listener_port]);

    // The other sandbox's one refusal, made while the flood runs.
    flooder.tell();
    assert_eq!(flooder.line(), "half");
    quiet.tell();
    assert_eq!(
        quiet.line(),
        "EPERM",
        "the quiet sandbox's connect is refused"
    );
    quiet.finish();
    let tally = flooder.line();
    assert_eq!(
        tally,
        format!("refused={FLOOD} sent=0 other=0"),
        "every send of the flood was refused"
    );

    let quiet_event = env.wait_event("the quiet sandbox's refusal", |e| {
        e["policy"] == "quiet" && e["dst"] == "172.16.0.1" && e["verdict"] == "deny"
    });
    assert_eq!(quiet_event["hook"], "connect4", "{quiet_event}");
    let reported = flood_events(&env).len();
    assert!(
        reported < MAX_FLOOD_EVENTS,
        "{reported} events for {FLOOD} refusals: not rate-limited"
    );

    // The flood's suppressed refusals ride on its next reported event: one more refused
    // send until that event (the next budget window) arrives.
    let mut carried = None;
    for _ in 0..60 {
        flooder.tell();
        assert!(flooder.line().starts_with("sent=0"), "still refused");
        carried = events(&env)
            .into_iter()
            .find(|e| e["policy"] == "flood" && e["suppressed"].as_u64().is_some_and(|n| n > 0));
        if carried.is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    let carried = carried.expect("an event of the flooder carries its suppressed refusals");
    flooder.finish();

    let flood = flood_events(&env);
    let reported = flood.len();
    let suppressed_in_events: u64 = flood.iter().filter_map(|e| e["suppressed"].as_u64()).sum();
    assert!(
        reported < MAX_FLOOD_EVENTS,
        "{reported} events for {FLOOD} refusals: not rate-limited"
    );
    assert!(
        reported as u64 + suppressed_in_events <= u64::from(FLOOD) + 61,
        "no refusal counted twice: {reported} reported + {suppressed_in_events} suppressed"
    );
    assert!(
        suppressed_in_events >= u64::from(FLOOD) - reported as u64 - 100,
        "the carried counts account for the flood: {reported} reported, \
         {suppressed_in_events} suppressed, last carrier {carried}"
    );

    let status = env.hb_json(&["status"]);
    let counted = status["counters"]["events_suppressed"]
        .as_u64()
        .unwrap_or_else(|| panic!("status shows events_suppressed: {status}"));
    assert!(
        counted >= suppressed_in_events,
        "status events_suppressed {counted} < {suppressed_in_events} carried"
    );
    let by_cgroup = status["events_suppressed_by_cgroup"]
        .as_array()
        .unwrap_or_else(|| panic!("status shows suppression by cgroup: {status}"));
    assert!(
        by_cgroup.iter().any(
            |r| r["cgroup"].as_str().is_some_and(|c| c.contains("/flood-"))
                && r["events_suppressed"].as_u64() >= Some(suppressed_in_events)
        ),
        "the flooder's cgroup is listed: {status}"
    );
    assert!(
        !by_cgroup
            .iter()
            .any(|r| r["cgroup"].as_str().is_some_and(|c| c.contains("/quiet-"))),
        "the quiet sandbox had nothing suppressed: {status}"
    );
    let text = String::from_utf8_lossy(&env.hb(&["status"]).stdout).into_owned();
    assert!(text.contains("events_suppressed"), "status: {text}");

    // Nothing reached either listener.
    assert_eq!(sink.received(), 0, "a flood datagram reached the sink");
    assert_eq!(
        listener.accepted(),
        0,
        "the quiet connect reached the listener"
    );

    // The agent's log has no line per refusal.
    let log = env.agent().log_text();
    let lines = log.lines().count();
    assert!(
        lines < 500,
        "agent log has {lines} lines after the flood:\n{}",
        log.lines().take(20).collect::<Vec<_>>().join("\n")
    );
}

const DNS_POLICIES: &str = r#"
[dns]
listen = "127.0.0.1:5300"
redirect = true
# Never asked: every name below is refused by policy before any upstream.
upstreams = ["127.0.0.1:5400"]

[[policy]]
name = "flood"
allow_domains = ["allowed.test"]

[[policy]]
name = "quiet"
allow_domains = ["allowed.test"]
"#;

/// Asks for a refused name `N` times over UDP (each waiting for its answer), to a
/// documentation nameserver the kernel redirects to hb's resolver; prints how many
/// answers came back and their rcodes.
const PY_DNS_FLOOD: &str = r#"
import collections, socket, struct, sys
name, n = sys.argv[1], int(sys.argv[2])
qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
rcodes = collections.Counter()
for i in range(n):
    q = struct.pack(">HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    s.sendto(q, ("192.0.2.53", 53))
    try:
        rcodes[s.recv(512)[3] & 0xf] += 1
    except OSError:
        rcodes["lost"] += 1
print(" ".join(f"{k}={v}" for k, v in sorted(rcodes.items(), key=str)), flush=True)
"#;

#[test]
fn a_sandbox_asking_for_refused_names_in_a_loop_is_rate_limited_too() {
    private_netns(&[]);
    let mut env = TestEnv::new("evrate-dns", DNS_POLICIES);
    env.start_agent();
    const QUERIES: u32 = 10_000;
    let flood = nobody_python(
        &env,
        "flood",
        PY_DNS_FLOOD,
        &["denied.test", &QUERIES.to_string()],
    );
    assert!(
        flood.status.success(),
        "dns flood: {}",
        String::from_utf8_lossy(&flood.stderr)
    );
    let said = String::from_utf8_lossy(&flood.stdout).trim().to_owned();
    let refused: u32 = said
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k != "0" && *k != "lost")
        .filter_map(|(_, v)| v.parse::<u32>().ok())
        .sum();
    assert!(
        refused > QUERIES / 2,
        "most queries got a refusal answer: {said}"
    );
    assert!(
        !said.split_whitespace().any(|kv| kv.starts_with("0=")),
        "no query was answered NOERROR: {said}"
    );

    let quiet = nobody_python(&env, "quiet", PY_DNS_FLOOD, &["quiet-denied.test", "1"]);
    assert!(quiet.status.success(), "quiet query");
    env.wait_event("the quiet sandbox's refused name", |e| {
        e["policy"] == "quiet" && e["name"] == "quiet-denied.test"
    });
    let reported = events(&env)
        .into_iter()
        .filter(|e| e["policy"] == "flood" && e["hook"] == "dns")
        .count();
    assert!(
        reported < 1_000,
        "{reported} events for {refused} refused names: not rate-limited"
    );
    let log = env.agent().log_text();
    let lines = log.lines().count();
    assert!(lines < 500, "agent log has {lines} lines after the flood");
}

const INBOUND_POLICY: &str = r#"
[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "closed"
allow_cidrs = ["203.0.113.20/32"]
"#;

/// Binds a UDP port on `argv[1]` and prints it; once told to, connects to
/// `argv[2]`:`argv[3]` and prints `OK` or the errno name.
const PY_VICTIM: &str = r#"
import errno, socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((sys.argv[1], 0))
print(u.getsockname()[1], flush=True)
sys.stdin.readline()
try:
    socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=3)
    print("OK", flush=True)
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)), flush=True)
"#;

#[test]
fn packets_sent_to_a_sandbox_cannot_use_up_the_budget_that_reports_its_own_refusals() {
    private_netns(&["10.0.0.1", "203.0.113.10", "203.0.113.20"]);
    let mut env = TestEnv::new("evrate-in", INBOUND_POLICY);
    env.start_agent();
    let listener = TcpProbe::bind("10.0.0.1:0");
    let mut victim = Command::new(agent_bin())
        .arg("--config")
        .arg(&env.config_path)
        .args([
            "sandbox", "run", "--policy", "closed", "--user", "65534", "--",
        ])
        .args([python(), "-c", PY_VICTIM, "203.0.113.20", "10.0.0.1"])
        .arg(listener.addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the sandboxed victim");
    let mut stdin = victim.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(victim.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("victim's port");
    let port: u16 = line.trim().parse().expect("port");

    // Someone outside floods the sandbox with datagrams its policy refuses.
    let outside = std::net::UdpSocket::bind("203.0.113.10:0").expect("outside socket");
    for _ in 0..20_000 {
        let _ = outside.send_to(b"x", ("203.0.113.20", port));
    }
    env.wait_event("an inbound refusal", |e| {
        e["policy"] == "closed" && e["reason"] == "inbound"
    });

    // The sandbox's own refused connect is still reported on its own.
    stdin.write_all(b"go\n").expect("victim stdin");
    stdin.flush().expect("victim stdin");
    line.clear();
    stdout.read_line(&mut line).expect("victim's result");
    assert_eq!(line.trim(), "EPERM", "the victim's connect is refused");
    drop(stdin);
    assert!(victim.wait().expect("wait victim").success());
    let own = env.wait_event("the sandbox's own refusal", |e| {
        e["policy"] == "closed" && e["hook"] == "connect4" && e["dst"] == "10.0.0.1"
    });
    assert_eq!(own["reason"], "deny_range", "{own}");
    assert_eq!(listener.accepted(), 0);

    let inbound = events(&env)
        .into_iter()
        .filter(|e| e["policy"] == "closed" && e["reason"] == "inbound")
        .count();
    assert!(
        inbound < MAX_FLOOD_EVENTS,
        "{inbound} inbound events for 20,000 datagrams: not rate-limited"
    );
}

const SCAN_POLICY: &str = r#"
[egress]
exception_cidrs = ["198.51.100.0/24"]

[[policy]]
name = "scan"
allow_cidrs = []
"#;

/// Refused sends within one budget window: `argv[1]` to 10.9.8.7:9 (one destination),
/// then one to each of `argv[2]` ports of 10.9.8.7 from 1000 (new destinations), then
/// five connects to 198.51.100.99:80 (the one the attacker is after), then one to each
/// of `argv[3]` ports from 20000. Prints the connects' results.
const PY_SCAN: &str = r#"
import errno, socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def send(port):
    try:
        u.sendto(b"x", ("10.9.8.7", port))
    except OSError:
        pass
for _ in range(int(sys.argv[1])):
    send(9)
for p in range(1000, 1000 + int(sys.argv[2])):
    send(p)
said = []
for _ in range(5):
    s = socket.socket()
    try:
        s.connect(("198.51.100.99", 80))
        said.append("OK")
    except OSError as e:
        said.append(errno.errorcode.get(e.errno, str(e.errno)))
    s.close()
for p in range(20000, 20000 + int(sys.argv[3])):
    send(p)
print(" ".join(said), flush=True)
"#;

/// Past the burst (64) and the destinations reported at once (64 more), a new
/// destination is held back in the kernel and written by the agent with its count: a
/// scan cannot hide the address tried after it, and the cgroup's events stay bounded
/// (64 + 64 + 192 per window) however many destinations it tries.
#[test]
fn a_scan_past_both_caps_still_names_the_address_tried_next_and_stays_bounded() {
    private_netns(&["10.9.8.7", "198.51.100.99"]);
    let mut env = TestEnv::new("evrate-scan", SCAN_POLICY);
    env.start_agent();
    let out = nobody_python(&env, "scan", PY_SCAN, &["100", "164", "5000"]);
    assert!(
        out.status.success(),
        "scan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        said, "EPERM EPERM EPERM EPERM EPERM",
        "the connects were refused"
    );
    env.wait_event("the held-back connect", |e| e["dst"] == "198.51.100.99");
    let scan: Vec<Value> = events(&env)
        .into_iter()
        .filter(|e| e["policy"] == "scan")
        .collect();
    let target: Vec<&Value> = scan
        .iter()
        .filter(|e| e["dst"] == "198.51.100.99")
        .collect();
    let tries: u64 = target
        .iter()
        .map(|e| 1 + e["suppressed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        tries, 5,
        "the five connects, counted in the target's events: {target:?}"
    );
    assert_eq!(target[0]["hook"], "connect4", "{}", target[0]);
    let ports: std::collections::HashSet<u64> = scan
        .iter()
        .filter(|e| e["dst"] == "10.9.8.7")
        .filter_map(|e| e["port"].as_u64())
        .collect();
    let missing: Vec<u64> = (1000..1164).filter(|p| !ports.contains(p)).collect();
    assert!(
        missing.is_empty(),
        "every new destination within the caps is named; not: {missing:?}"
    );
    let late = ports.iter().filter(|p| **p >= 20000).count();
    assert!(
        (1..=192).contains(&late),
        "the scan's tail is named only within the held-back cap: {late} of 5000"
    );
    // One window's caps (320), with room for a second window on a slow machine.
    assert!(scan.len() <= 640, "{} events for the scan", scan.len());
}
