//! A sandbox attacking what every policy on a node shares with it: the agent's file
//! descriptors (stalled TCP DNS connections), the kernel's allow maps (answers with many
//! addresses), and the text log (a process name with a newline in it). Each attack runs
//! from inside a sandbox; each test then checks that other callers and other policies
//! are still served and that the log holds no forged line.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Output},
    thread,
    time::Duration,
};

use hb_tests::{
    PythonServer, TcpProbe, TestEnv, private_netns, python, stdout, worlds::dns_server,
};

const UPSTREAM_PORT: u16 = 5410;

/// `web` is the attacker's policy, `other` an innocent neighbour on the same node. The
/// test's upstream answers every name; TTLs stay at their defaults (up to an hour), as
/// the attacker would want.
const CONFIG: &str = r#"
[dns]
listen = "127.0.0.1:5300"
redirect = true
upstreams = ["127.0.0.1:5410"]

[egress]
exception_cidrs = ["203.0.113.0/24", "2001:db8::/32"]

[[policy]]
name = "web"
allow_domains = ["allowed.test", "*.fill.test"]

[[policy]]
name = "other"
allow_domains = ["unrelated.test"]
"#;

/// The answers of a DNS server on 127.0.0.1:[`UPSTREAM_PORT`] (UDP and TCP), run by
/// [`upstream`].
/// `f<G>x<N>.fill.test` AAAA → 64 addresses 2001:db8:G:N::0–63 (a wildcard zone of an
/// attacker: every name brings new addresses); `allowed.test` → 203.0.113.10 /
/// 2001:db8::10; `unrelated.test` → 203.0.113.11 / 2001:db8::11; TTL 3600. UDP replies
/// over 512 bytes carry TC and no records, as a real server does; TCP answers whole.
const UPSTREAM: &str = r#"
import re
FIXED = {b"allowed.test": ("203.0.113.10", "2001:db8::10"), b"unrelated.test": ("203.0.113.11", "2001:db8::11")}
def answer(q, tcp):
    end = 12; labels = []
    while q[end] != 0:
        labels.append(q[end + 1:end + 1 + q[end]]); end += q[end] + 1
    name = b".".join(labels).lower()
    question = q[12:end + 5]
    qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
    rdatas = []
    m = re.fullmatch(rb"f(\d+)x(\d+)\.fill\.test", name)
    if m and qtype == 28:
        g, n = int(m.group(1)), int(m.group(2))
        rdatas = [struct.pack("!8H", 0x2001, 0xdb8, g, n, 0, 0, 0, i) for i in range(64)]
    elif name in FIXED and qtype == 1:
        rdatas = [socket.inet_pton(socket.AF_INET, FIXED[name][0])]
    elif name in FIXED and qtype == 28:
        rdatas = [socket.inet_pton(socket.AF_INET6, FIXED[name][1])]
    rrs = [b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 3600, len(r)) + r for r in rdatas]
    full = q[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, len(rrs), 0, 0) + question + b"".join(rrs)
    if not tcp and len(full) > 512:
        return q[:2] + b"\x83\x80" + struct.pack("!HHHH", 1, 0, 0, 0) + question
    return full
"#;

/// The fake authoritative server, on 127.0.0.1:UPSTREAM_PORT.
fn upstream() -> PythonServer {
    dns_server(UPSTREAM_PORT, UPSTREAM)
}

fn in_sandbox(env: &TestEnv, policy: &str, cmd: &str) -> Output {
    env.sandbox_with_nameserver(policy, cmd)
}

/// One query for `name` over TCP to a documentation nameserver (redirected to hb's
/// resolver); prints `tcp rcode N ADDR` or the error.
const PY_TCP_DNS: &str = r#"
import socket, struct, sys
name = sys.argv[1]
q = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
try:
    t = socket.create_connection(("192.0.2.53", 53), timeout=5)
    t.sendall(struct.pack("!H", len(q)) + q)
    n = struct.unpack("!H", t.recv(2, socket.MSG_WAITALL))[0]
    d = t.recv(n, socket.MSG_WAITALL)
    print("tcp rcode", d[3] & 15, socket.inet_ntoa(d[-4:]))
except OSError as e:
    print("tcp failed", e)
"#;

/// The attacker: opens `n` TCP DNS connections and stalls each one — nothing sent, half
/// a length prefix, or a whole prefix with a few bytes of the body — then reports how
/// many it holds and waits (up to 120 s) until the resolver has closed each of them.
const PY_STALL: &str = r#"
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
n = int(sys.argv[1]); held = []
for i in range(n):
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect(("192.0.2.53", 53))
    except OSError as e:
        print("connect", i, "failed:", e, file=sys.stderr)
        break
    try:
        s.send([b"", b"\x00", b"\x00\x20abc"][i % 3])
    except OSError:
        pass
    held.append(s)
print("held", len(held), flush=True)
closed = 0; deadline = time.time() + 120
for s in held:
    s.settimeout(max(0.1, deadline - time.time()))
    try:
        if s.recv(1) == b"":
            closed += 1
    except (ConnectionResetError, BrokenPipeError):
        closed += 1
    except OSError:
        pass
print("closed", closed, "of", len(held), flush=True)
"#;

/// `GET /v1/whoami` on the broker socket from the host, with a 5 s limit; the HTTP
/// status ("000" when the broker never answered).
fn broker_whoami(env: &TestEnv) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg("--unix-socket")
        .arg(env.broker_socket())
        .arg("http://hb/v1/whoami")
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn stalled_tcp_dns_connections_neither_starve_the_broker_nor_other_policies() {
    private_netns(&["203.0.113.10", "203.0.113.11", "192.0.2.53"]);
    let _up = upstream();
    let mut env = TestEnv::new("fdstall", CONFIG);
    let pid = env.start_agent().pid();
    // A node agent with a small descriptor budget: what a sandbox could exhaust.
    let prlimit = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=256:256"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(prlimit.success(), "prlimit failed");

    let mut attacker = env.sandbox_spawn("web", &[python(), "-c", PY_STALL, "600"]);
    let mut lines = BufReader::new(attacker.stdout.take().expect("stdout")).lines();
    let Some(held) = lines.next().and_then(Result::ok) else {
        let _ = attacker.kill();
        let out = attacker.wait_with_output().expect("attacker");
        panic!(
            "the attacker printed nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // While the attacker holds them: the broker answers another caller…
    assert_eq!(
        broker_whoami(&env),
        "200",
        "the broker answers while a sandbox stalls TCP DNS connections"
    );
    // …and another policy resolves, over UDP (glibc) and over TCP, and connects.
    let probe = TcpProbe::bind("203.0.113.11:0");
    let other = in_sandbox(&env, "other", "getent ahostsv4 unrelated.test");
    assert!(
        stdout(&other).contains("203.0.113.11"),
        "the other policy resolves over UDP: {} {}",
        stdout(&other),
        String::from_utf8_lossy(&other.stderr)
    );
    let tcp = env.sandbox("other", &[python(), "-c", PY_TCP_DNS, "unrelated.test"]);
    assert_eq!(
        stdout(&tcp).trim(),
        "tcp rcode 0 203.0.113.11",
        "the other policy resolves over TCP: {}",
        String::from_utf8_lossy(&tcp.stderr)
    );
    let curl = in_sandbox(
        &env,
        "other",
        &format!(
            "curl -4 -sS -m 5 http://unrelated.test:{}/",
            probe.addr.port()
        ),
    );
    assert_eq!(
        stdout(&curl),
        "hb-test",
        "the other policy connects: {}",
        String::from_utf8_lossy(&curl.stderr)
    );

    assert_eq!(held, "held 600", "the attacker opened its connections");
    // Every stalled connection is closed by the resolver, none held for ever.
    let closed = lines
        .next()
        .expect("attacker output")
        .expect("attacker output");
    assert_eq!(closed, "closed 600 of 600", "stalled connections closed");
    let _ = attacker.wait();

    // Those refused at the cap were counted and logged once per interval.
    thread::sleep(Duration::from_millis(1500));
    let status = env.hb_json(&["status"]);
    assert!(
        status["resolver"]["tcp_refused"].as_u64().unwrap_or(0) > 0,
        "refusals counted: {status}"
    );
    let log = env.agent().log_text();
    let refusal_lines = log
        .lines()
        .filter(|l| l.contains("TCP DNS connections closed at once"))
        .count();
    assert!(
        (1..=20).contains(&refusal_lines),
        "refusals logged once per interval, not per connection ({refusal_lines} lines)"
    );
}

/// The attacker: asks AAAA for `f<G>x<first>.fill.test` … `f<G>x<last - 1>.fill.test`
/// (64 fresh addresses each) and reports how many answers were NOERROR and SERVFAIL.
const PY_FILL: &str = r#"
import socket, struct, sys
g, first, last = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
rcodes = {}
for n in range(first, last):
    name = "f%dx%d.fill.test" % (g, n)
    q = struct.pack("!HHHHHH", n & 0xffff, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 28, 1)
    u.sendto(q, ("192.0.2.53", 53))
    try:
        while True:
            d, _ = u.recvfrom(4096)
            if d[:2] == q[:2]:
                break
        rc = d[3] & 15
    except socket.timeout:
        rc = "timeout"
    rcodes[rc] = rcodes.get(rc, 0) + 1
print("noerror", rcodes.get(0, 0), "servfail", rcodes.get(2, 0), "all", rcodes)
"#;

/// Addresses `policy` holds in the IPv6 allow map (unexpired).
fn allow6_of(env: &TestEnv, policy: &str) -> usize {
    env.hb_json(&["maps", "dump", "allow6"])
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["policy"] == policy && r["expired"] == false)
        .count()
}

/// The default share of one policy: an eighth of the IPv6 allow map (131072 entries).
const DEFAULT_SHARE: usize = 131_072 / 8;

fn fill(env: &TestEnv, generation: u32, first: u32, last: u32) -> String {
    let out = env.sandbox(
        "web",
        &[
            python(),
            "-c",
            PY_FILL,
            &generation.to_string(),
            &first.to_string(),
            &last.to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "fill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out).trim().to_owned()
}

/// The neighbour resolves its name over IPv6 and connects to it.
fn other_policy_resolves_and_connects(env: &TestEnv, probe: &TcpProbe, when: &str) {
    let v6 = in_sandbox(env, "other", "getent ahostsv6 unrelated.test");
    assert!(
        stdout(&v6).contains("2001:db8::11"),
        "{when}: the other policy's name resolves: {:?} {}",
        stdout(&v6),
        String::from_utf8_lossy(&v6.stderr)
    );
    let curl = in_sandbox(
        env,
        "other",
        &format!(
            "curl -6 -sS -m 5 http://unrelated.test:{}/",
            probe.addr.port()
        ),
    );
    assert_eq!(
        stdout(&curl),
        "hb-test",
        "{when}: the other policy connects: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
}

#[test]
fn one_policy_filling_the_allow_map_evicts_only_its_own_addresses() {
    private_netns(&["2001:db8::11"]);
    let _up = upstream();
    let mut env = TestEnv::new("fillmap", CONFIG);
    env.start_agent();
    let probe = TcpProbe::bind("[2001:db8::11]:0");

    // 2100 names × 64 addresses: more than the whole map (131072) holds.
    let first = fill(&env, 1, 0, 2100);
    other_policy_resolves_and_connects(&env, &probe, "after the fill");
    assert!(
        first.starts_with("noerror 2100 servfail 0"),
        "the attacker's own names keep resolving (its oldest addresses make room): {first}"
    );
    let held = allow6_of(&env, "web");
    assert!(
        held <= DEFAULT_SHARE,
        "the attacker holds at most its share: {held}"
    );
    thread::sleep(Duration::from_millis(1500));
    let status = env.hb_json(&["status"]);
    assert!(
        status["resolver"]["policy_quota_evicted"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "quota evictions counted: {status}"
    );
    assert!(
        env.agent()
            .log_text()
            .contains("sandbox at its share of its policy's allow map"),
        "quota evictions logged"
    );

    // A restarted agent adopts the pinned entries: the attacker's share is still full,
    // so fresh addresses again replace its own, and the map keeps room for others.
    env.kill_agent();
    env.start_agent();
    let second = fill(&env, 2, 0, 300);
    assert!(
        second.starts_with("noerror 300 servfail 0"),
        "after the restart: {second}"
    );
    let held = allow6_of(&env, "web");
    assert!(
        held <= DEFAULT_SHARE,
        "after the restart the attacker still holds at most its share: {held}"
    );
    other_policy_resolves_and_connects(&env, &probe, "after the restart");
}

/// Sets the process name (comm) to a newline and a forged log line, then connects
/// where the policy forbids it, so the kernel reports an event naming the process.
const PY_COMM: &str = r#"
import ctypes, socket
libc = ctypes.CDLL(None)
libc.prctl(15, b"a\nhb::event forged", 0, 0, 0)
try:
    socket.create_connection(("203.0.113.66", 4444), timeout=2)
    print("connected")
except OSError as e:
    print("refused", e.errno)
"#;

#[test]
fn a_process_name_with_a_newline_cannot_forge_a_log_line() {
    private_netns(&["203.0.113.66"]);
    let mut env = TestEnv::new("logforge", CONFIG);
    // Event lines are logged at debug (the info log carries a summary per interval).
    env.start_agent_logging("info,hb::event=debug");
    let out = env.sandbox("web", &[python(), "-c", PY_COMM]);
    assert!(
        stdout(&out).starts_with("refused"),
        "the connection is refused: {} {}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let event = env.wait_event("the refusal", |e| {
        e["comm"].as_str().is_some_and(|c| c.starts_with("a\n"))
    });
    assert_eq!(
        event["comm"], "a\nhb::event for",
        "the JSON event keeps the name"
    );
    // The text log: one line per event, the newline (and the space: a sandbox-chosen
    // value cannot add a field) written as escapes.
    let mut log = String::new();
    for _ in 0..50 {
        log = env.agent().log_text();
        if log.contains("comm=a") {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let forged: Vec<&str> = log
        .lines()
        .filter(|l| l.trim_start().starts_with("hb::event for"))
        .collect();
    assert!(forged.is_empty(), "forged log lines: {forged:?}\n{log}");
    assert!(
        log.contains("comm=a\\nhb::event\\u{20}for "),
        "the name is logged escaped on the event's line:\n{log}"
    );
}

/// Queries `allowed.test` (A) 30 times in a row; prints how many were answered.
const SH_QUERY_30: &str = "n=0; for i in $(seq 30); do getent ahostsv4 allowed.test >/dev/null && n=$((n+1)); done; echo answered $n";

/// The allow map full of other rows (the test's own, standing in for the shares of a
/// crowded node's other policies): an answer whose address the kernel cannot be told is
/// refused (SERVFAIL) with a `dns_allow_map_full` event naming the name and the address,
/// under the sandbox's event budget. It was an error line in the agent's log per query,
/// which a sandbox could repeat as fast as it can send, and no event at all.
#[test]
fn an_answer_that_finds_the_allow_map_full_is_refused_with_an_event_not_a_log_line() {
    private_netns(&["203.0.113.10"]);
    let _up = upstream();
    let mut env = TestEnv::new("mapfull", CONFIG);
    env.start_agent();
    let map = hb_tests::kube::PinnedMap::open(&env.bpffs_dir.join("maps/HB_ALLOW4"));
    // Rows of a policy id no config has (key: policy id, then the address's 4 bytes;
    // value: the row's expiry, far off).
    let mut filled = 0u64;
    while map.put_u64_key(4242 | (filled << 32), (u32::MAX, u32::MAX)) {
        filled += 1;
        assert!(filled <= 200_000, "the allow map never filled up");
    }
    let out = in_sandbox(&env, "web", SH_QUERY_30);
    println!(
        "figure: {filled} rows filled the map; the sandbox's queries: {}",
        stdout(&out).trim()
    );
    assert!(
        stdout(&out).contains("answered 0"),
        "an address the kernel was not told about was handed out: {} {}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let event = env.wait_event("the refusal", |e| e["reason"] == "dns_allow_map_full");
    assert_eq!(event["name"], "allowed.test", "{event}");
    assert_eq!(event["dst"], "203.0.113.10", "{event}");
    assert_eq!(event["policy"], "web", "{event}");
    let lines = env
        .agent()
        .log_text()
        .lines()
        .filter(|l| l.contains("allow map full"))
        .count();
    assert_eq!(lines, 0, "a log line per refused query");
}
