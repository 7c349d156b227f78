//! hb's resolver end to end: sandbox DNS to any nameserver is redirected in the kernel to
//! the resolver port of the sandbox's policy; the resolver answers only allowed names,
//! refuses private answers (rebinding), and teaches the kernel exactly the addresses it
//! handed out, for as long as their TTL. Upstreams are real DNS servers (dnsmasq, and a
//! small flip-flopping server for rebinding) on the test namespace's loopback.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpStream, UdpSocket},
    process::{Child, Command, Output, Stdio},
    thread,
    time::Duration,
};

use hb_tests::{
    PythonServer, TcpProbe, TestEnv, UdpProbe, private_netns, python,
    sandboxed::{Running, nobody_command, udp_ask, udp_flooder},
    stdout,
    worlds::recording_upstream,
};
use serde_json::Value;

const UPSTREAM_PORT: u16 = 5400;
const FLIP_PORT: u16 = 5401;
const MANY_PORT: u16 = 5402;
const TRUNCATING_PORT: u16 = 5403;

fn config(upstream_port: u16) -> String {
    format!(
        r#"
[dns]
listen = "127.0.0.1:5300"
redirect = true
upstreams = ["127.0.0.1:{upstream_port}"]
min_ttl_secs = 2
max_ttl_secs = 3

[egress]
exception_cidrs = ["203.0.113.0/24", "2001:db8::/32"]

[[policy]]
name = "web"
allow_domains = ["allowed.test", "*.wild.test", "private.test", "cname.test", "flip.test"]

[[policy]]
name = "other"
allow_domains = ["unrelated.test"]
"#
    )
}

/// A real DNS server answering the test names (dnsmasq), killed on drop; the scripted
/// ones are [`PythonServer`]s.
struct Upstream(Child);

impl Upstream {
    fn dnsmasq() -> Self {
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--pid-file=",
                "--host-record=allowed.test,203.0.113.10,2001:db8::10",
                "--host-record=a.wild.test,203.0.113.12",
                "--host-record=denied.test,203.0.113.11",
                "--host-record=private.test,10.0.0.1",
                "--cname=cname.test,private.test",
            ])
            .arg(format!("--port={UPSTREAM_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (cargo xtask setup installs dnsmasq-base)");
        thread::sleep(Duration::from_millis(300));
        Self(child)
    }

    /// Answers every A query with 203.0.113.10 and 10.0.0.1 in turn, TTL 1: a rebinding
    /// attacker's server.
    fn flip() -> PythonServer {
        Self::scripted(
            FLIP_PORT,
            &[&["203.0.113.10"], &["10.0.0.1"]],
            &[],
            1,
            false,
        )
    }

    /// Answers every A query with 203.0.113.20-24 and every AAAA query with
    /// 2001:db8::20-24, TTL 60: more addresses than the test's max_ips_per_name.
    fn many() -> PythonServer {
        let v4 = [
            "203.0.113.20",
            "203.0.113.21",
            "203.0.113.22",
            "203.0.113.23",
            "203.0.113.24",
        ];
        let v6 = [
            "2001:db8::20",
            "2001:db8::21",
            "2001:db8::22",
            "2001:db8::23",
            "2001:db8::24",
        ];
        Self::scripted(MANY_PORT, &[&v4], &v6, 60, false)
    }

    /// Answers A queries with 203.0.113.30 only over TCP: over UDP every reply is
    /// truncated (TC set, no records), as a server does when an answer is too large.
    fn truncating() -> PythonServer {
        Self::scripted(TRUNCATING_PORT, &[&["203.0.113.30"]], &[], 60, true)
    }

    /// A small DNS server (Python) on 127.0.0.1:`port`: each A query gets the next of
    /// `a_sets` in turn, each AAAA query gets `aaaa`, with `ttl`; other types get no answer;
    /// names starting with the label `gone` get NXDOMAIN (no SOA).
    /// With `truncate_udp`, UDP replies carry TC and no records, and the same server
    /// answers over TCP (RFC 7766 length-prefixed).
    fn scripted(
        port: u16,
        a_sets: &[&[&str]],
        aaaa: &[&str],
        ttl: u32,
        truncate_udp: bool,
    ) -> PythonServer {
        let script = format!(
            r#"
import socket, struct, threading
A_SETS = {a_sets:?}
AAAA = {aaaa:?}
TRUNCATE_UDP = {truncate_udp}
n = 0
def answer(q, udp):
    global n
    end = 12
    while q[end] != 0: end += q[end] + 1
    question = q[12:end + 5]
    qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
    if qtype == 1:
        rdatas = [socket.inet_pton(socket.AF_INET, ip) for ip in A_SETS[n % len(A_SETS)]]; n += 1
    elif qtype == 28:
        rdatas = [socket.inet_pton(socket.AF_INET6, ip) for ip in AAAA]
    else:
        rdatas = []
    rrs = [b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, {ttl}, len(r)) + r for r in rdatas]
    if q[12:17].lower() == b"\x04gone":
        return q[:2] + b"\x81\x83" + struct.pack("!HHHH", 1, 0, 0, 0) + question
    if udp and TRUNCATE_UDP:
        return q[:2] + b"\x83\x80" + struct.pack("!HHHH", 1, 0, 0, 0) + question
    return q[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, len(rrs), 0, 0) + question + b"".join(rrs)
def tcp():
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("127.0.0.1", {port})); t.listen(16)
    while True:
        c, _ = t.accept()
        ln = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))[0]
        r = answer(c.recv(ln, socket.MSG_WAITALL), False)
        c.sendall(struct.pack("!H", len(r)) + r); c.close()
threading.Thread(target=tcp, daemon=True).start()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", {port}))
while True:
    q, a = s.recvfrom(512)
    s.sendto(answer(q, True), a)
"#,
            truncate_udp = if truncate_udp { "True" } else { "False" }
        );
        PythonServer::start(&script)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_sandbox(env: &TestEnv, policy: &str, cmd: &str) -> Output {
    env.sandbox_with_nameserver(policy, cmd)
}

/// Queries a name over UDP (unconnected and connected) and TCP, aimed at a documentation
/// nameserver, and prints what the socket API reports and the first A answer.
const PY_DNS: &str = r#"
import socket, struct, sys
def q(name):
    h = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    return h + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
name = sys.argv[1]
ns = ("192.0.2.53", 53)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
u.sendto(q(name), ns)
data, src = u.recvfrom(512)
print("udp", src[0], src[1], "rcode", data[3] & 15, socket.inet_ntoa(data[-4:]))
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(3); c.connect(ns)
print("peer", *c.getpeername())
t = socket.create_connection(ns, timeout=3)
m = q(name); t.sendall(struct.pack("!H", len(m)) + m)
n = struct.unpack("!H", t.recv(2))[0]; d = b""
while len(d) < n: d += t.recv(n - len(d))
print("tcp", *t.getpeername(), "rcode", d[3] & 15, socket.inet_ntoa(d[-4:]))
"#;

#[test]
fn allowed_names_resolve_through_the_redirect_and_their_addresses_connect() {
    private_netns(&["203.0.113.10", "2001:db8::10", "192.0.2.53"]);
    let _up = Upstream::dnsmasq();
    let mut env = TestEnv::new("resolve", &config(UPSTREAM_PORT));
    env.start_agent();
    let web = TcpProbe::bind("203.0.113.10:0");
    let web6 = TcpProbe::bind("[2001:db8::10]:0");
    let named = UdpProbe::bind("192.0.2.53:53");

    let out = in_sandbox(
        &env,
        "web",
        &format!(
            "{} -c '{}' allowed.test",
            python(),
            PY_DNS.replace('\'', "\"")
        ),
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "dns probe: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("udp 192.0.2.53 53 rcode 0 203.0.113.10"),
        "unconnected UDP: {text}"
    );
    assert!(
        text.contains("peer 192.0.2.53 53"),
        "getpeername restored: {text}"
    );
    assert!(
        text.contains("tcp 192.0.2.53 53 rcode 0 203.0.113.10"),
        "TCP DNS: {text}"
    );
    assert_eq!(
        named.received(),
        0,
        "the named nameserver never saw a query"
    );

    let v4 = in_sandbox(&env, "web", "getent ahostsv4 allowed.test");
    assert!(
        stdout(&v4).contains("203.0.113.10"),
        "getent ahostsv4: {}",
        stdout(&v4)
    );
    let v6 = in_sandbox(&env, "web", "getent ahostsv6 allowed.test");
    assert!(
        stdout(&v6).contains("2001:db8::10"),
        "getent ahostsv6: {}",
        stdout(&v6)
    );
    let wild = in_sandbox(&env, "web", "getent ahostsv4 a.wild.test");
    assert!(
        stdout(&wild).contains("203.0.113.12"),
        "wildcard: {}",
        stdout(&wild)
    );
    // glibc's resolver turns on its query sockets' error queue, which hb rewrites to off
    // for a policy without `inbound = true` (attack review 13): it resolves all the same.
    env.wait_event("glibc's IP_RECVERR rewritten", |e| {
        e["hook"] == "setsockopt" && e["reason"] == "error_queue"
    });

    // No static CIDR allows these addresses: only what the resolver taught the kernel.
    let url = format!("http://allowed.test:{}/", web.addr.port());
    let curl = in_sandbox(&env, "web", &format!("curl -sS -m 5 {url}"));
    assert_eq!(
        stdout(&curl),
        "hb-test",
        "curl: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let url6 = format!("http://allowed.test:{}/", web6.addr.port());
    let curl6 = in_sandbox(&env, "web", &format!("curl -6 -sS -m 5 {url6}"));
    assert_eq!(
        stdout(&curl6),
        "hb-test",
        "curl -6: {}",
        String::from_utf8_lossy(&curl6.stderr)
    );
    let req = in_sandbox(
        &env,
        "web",
        &format!(
            "{} -c \"import requests; print(requests.get('{url}', timeout=5).text)\"",
            python()
        ),
    );
    assert_eq!(
        stdout(&req).trim(),
        "hb-test",
        "requests: {}",
        String::from_utf8_lossy(&req.stderr)
    );

    // Operators ask the running resolver what a sandbox would get.
    let lookup = env.hb_json(&["dns", "lookup", "--policy", "web", "allowed.test"]);
    let a = &lookup[0];
    assert!(
        a["answers"]
            .as_array()
            .is_some_and(|x| x.contains(&Value::from("203.0.113.10"))),
        "{lookup}"
    );
    let denied = env.hb_json(&["dns", "lookup", "--policy", "web", "denied.test"]);
    assert!(
        denied[0]["answers"]
            .as_array()
            .is_some_and(|x| x.is_empty()),
        "{denied}"
    );
    assert_ne!(
        denied[0]["rcode"], a["rcode"],
        "refused name has its own rcode: {denied}"
    );

    thread::sleep(Duration::from_millis(1200));
    let both = env.hb_json(&["maps", "dump", "allow"]);
    assert!(
        both.as_array()
            .expect("rows")
            .iter()
            .any(|r| r["ip"] == "2001:db8::10" && r["names"] == "allowed.test"),
        "maps dump allow covers IPv6 with names: {both}"
    );
    let rows = env.allow_rows();
    assert!(
        rows.iter().any(|r| r["ip"] == "203.0.113.10"
            && r["policy"] == "web"
            && r["names"] == "allowed.test"),
        "allow4 names the address's name: {rows:?}"
    );
    assert!(env.counter("allow_addr") >= 3);
}

#[test]
fn names_outside_the_policy_and_other_policies_are_refused() {
    private_netns(&["203.0.113.10", "203.0.113.11"]);
    let _up = Upstream::dnsmasq();
    let mut env = TestEnv::new("nxdomain", &config(UPSTREAM_PORT));
    env.start_agent();
    let denied = TcpProbe::bind("203.0.113.11:0");
    let web = TcpProbe::bind("203.0.113.10:0");

    let out = in_sandbox(
        &env,
        "web",
        &format!("curl -sS -m 5 http://denied.test:{}/", denied.addr.port()),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resolve"),
        "curl fails at resolution: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = env.wait_event("name_not_allowed", |e| {
        e["reason"] == "name_not_allowed" && e["name"] == "denied.test"
    });
    assert_eq!(e["policy"], "web");
    assert_eq!(denied.accepted(), 0);

    // web learns 203.0.113.10; a sandbox of another policy still may not connect there.
    let ok = in_sandbox(
        &env,
        "web",
        &format!("curl -sS -m 5 http://allowed.test:{}/", web.addr.port()),
    );
    assert_eq!(stdout(&ok), "hb-test");
    let probe = hb_tests::sandbox_probe(&env, "other", "tcp", "203.0.113.10", web.addr.port());
    assert_eq!(probe, "EPERM", "allow maps are per policy");
    assert_eq!(web.wait_accepted(1), 1);
}

#[test]
fn private_answers_are_refused_directly_and_through_cnames() {
    private_netns(&["10.0.0.1"]);
    let _up = Upstream::dnsmasq();
    let mut env = TestEnv::new("private", &config(UPSTREAM_PORT));
    env.start_agent();
    let inside = TcpProbe::bind("10.0.0.1:0");
    for name in ["private.test", "cname.test"] {
        let out = in_sandbox(
            &env,
            "web",
            &format!("curl -sS -m 5 http://{name}:{}/", inside.addr.port()),
        );
        assert!(
            !out.status.success(),
            "{name} resolved to a private address"
        );
        env.wait_event("dns_rebinding", |e| {
            e["reason"] == "dns_rebinding" && e["name"] == name && e["dst"] == "10.0.0.1"
        });
    }
    assert_eq!(inside.accepted(), 0);
    assert!(env.allow_rows().iter().all(|r| r["ip"] != "10.0.0.1"));
}

#[test]
fn a_rebinding_upstream_never_moves_the_sandbox_onto_a_private_address() {
    private_netns(&["203.0.113.10", "10.0.0.1"]);
    let _up = Upstream::flip();
    let mut env = TestEnv::new("rebind", &config(FLIP_PORT));
    env.start_agent();
    let public = TcpProbe::bind("203.0.113.10:8080");
    let private = TcpProbe::bind("10.0.0.1:8080");
    // Resolve and connect again and again over the flips (the upstream's TTL is 1 s).
    let script = r#"
import socket, time
for i in range(6):
    try:
        ip = socket.gethostbyname("flip.test")
        s = socket.create_connection((ip, 8080), timeout=2); s.close(); print("connected", ip)
    except OSError as e:
        print("failed", e)
    time.sleep(0.7)
"#;
    let out = in_sandbox(
        &env,
        "web",
        &format!("{} -c '{}'", python(), script.replace('\'', "\"")),
    );
    let text = stdout(&out);
    assert!(
        text.contains("connected 203.0.113.10"),
        "the public answer works: {text}"
    );
    assert!(
        !text.contains("connected 10.0.0.1"),
        "reached the private address: {text}"
    );
    assert_eq!(private.accepted(), 0);
    assert!(public.accepted() >= 1);
    env.wait_event("dns_rebinding flip", |e| {
        e["reason"] == "dns_rebinding" && e["name"] == "flip.test" && e["dst"] == "10.0.0.1"
    });
}

#[test]
fn expired_addresses_refuse_new_connections_but_keep_established_ones() {
    private_netns(&["203.0.113.10"]);
    let _up = Upstream::dnsmasq();
    let mut env = TestEnv::new("ttl", &config(UPSTREAM_PORT));
    env.start_agent();
    let web = TcpProbe::bind("203.0.113.10:8080");
    // Resolve, connect and hold the connection; wait past max_ttl (3 s); a new connect by
    // address is refused while the held one still talks; resolving again re-allows.
    let script = r#"
import socket, time
ip = socket.gethostbyname("allowed.test")
held = socket.create_connection((ip, 8080), timeout=3)
time.sleep(4.5)
try:
    socket.create_connection((ip, 8080), timeout=3); print("new: ok")
except PermissionError:
    print("new: EPERM")
held.sendall(b"GET / HTTP/1.0\r\n\r\n"); print("held:", held.recv(100).split(b"\r\n\r\n")[-1].decode())
socket.gethostbyname("allowed.test")
socket.create_connection((ip, 8080), timeout=3); print("again: ok")
"#;
    let out = in_sandbox(
        &env,
        "web",
        &format!("{} -c '{}'", python(), script.replace('\'', "\"")),
    );
    let text = stdout(&out);
    assert!(
        text.contains("new: EPERM"),
        "expired entry still allowed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("held: hb-test"),
        "established connection broke: {text}"
    );
    assert!(
        text.contains("again: ok"),
        "resolving again re-allows: {text}"
    );
    assert_eq!(
        web.wait_accepted(2),
        2,
        "the held and the renewed connection, nothing between"
    );
}

#[test]
fn garbage_at_the_resolver_is_survived_and_a_killed_agent_fails_closed() {
    private_netns(&["203.0.113.10", "192.0.2.53"]);
    let _up = Upstream::dnsmasq();
    let mut env = TestEnv::new("garbage", &config(UPSTREAM_PORT));
    env.start_agent();
    let port = 5300 + env.policy_id("web") as u16;
    // A few thousand malformed datagrams: random bytes, truncated headers, huge counts.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..3000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 600) as usize;
        let mut pkt: Vec<u8> = (0..len)
            .map(|j| (seed >> (j % 56)) as u8 ^ j as u8)
            .collect();
        if i % 3 == 0 && pkt.len() > 12 {
            pkt[4..12].copy_from_slice(&[0xff; 8]);
        }
        let _ = sock.send_to(&pkt, ("127.0.0.1", port));
    }
    // Oversized and truncated TCP messages.
    if let Ok(mut t) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = t.write_all(&[0xff, 0xff, 1, 2, 3]);
    }
    if let Ok(mut t) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = t.write_all(&[0x00, 0x03, 0xab]);
        let mut b = [0u8; 8];
        let _ = t.set_read_timeout(Some(Duration::from_millis(200)));
        let _ = t.read(&mut b);
    }
    let ok = in_sandbox(&env, "web", "getent ahostsv4 allowed.test");
    assert!(
        stdout(&ok).contains("203.0.113.10"),
        "resolver still answers: {}",
        stdout(&ok)
    );

    // With the agent gone the redirect stays: sandbox DNS finds nobody, and the
    // nameserver it named gets nothing.
    let named = UdpProbe::bind("192.0.2.53:53");
    env.kill_agent();
    let out = in_sandbox(&env, "web", "getent ahostsv4 allowed.test");
    assert!(
        !out.status.success(),
        "resolved with the agent dead: {}",
        stdout(&out)
    );
    assert_eq!(named.received(), 0);
}

#[test]
fn answers_are_trimmed_to_max_ips_per_name_and_the_oldest_addresses_evicted() {
    private_netns(&["203.0.113.20"]);
    let _up = Upstream::many();
    let cfg = config(MANY_PORT)
        .replace("max_ttl_secs = 3", "max_ttl_secs = 3\nmax_ips_per_name = 3")
        .replace("\"flip.test\"]", "\"flip.test\", \"many.test\"]");
    let mut env = TestEnv::new("maxips", &cfg);
    env.start_agent();
    let v4 = env.hb_json(&["dns", "lookup", "--policy", "web", "many.test"]);
    assert_eq!(
        v4[0]["answers"].as_array().map(Vec::len),
        Some(3),
        "A answer trimmed to 3: {v4}"
    );
    let learned = |family: &str| -> usize {
        env.hb_json(&["maps", "dump", family])
            .as_array()
            .expect("rows")
            .iter()
            .filter(|r| r["policy"] == "web" && r["expired"] == false)
            .count()
    };
    // `dns lookup` asks A, then AAAA: the AAAA answer is the name's newest three
    // addresses, so the three IPv4 ones learned just before are evicted.
    assert_eq!(
        v4[1]["answers"].as_array().map(Vec::len),
        Some(3),
        "AAAA answer trimmed: {v4}"
    );
    assert_eq!(learned("allow4"), 0, "oldest addresses evicted");
    assert_eq!(learned("allow6"), 3);
    let probe = hb_tests::sandbox_probe(&env, "web", "tcp", "203.0.113.20", 9);
    assert_eq!(probe, "EPERM", "an evicted address no longer connects");
    thread::sleep(Duration::from_millis(1500));
    let status = env.hb_json(&["status"]);
    assert_eq!(
        status["resolver"]["evicted"], 3,
        "eviction counted: {status}"
    );
}

#[test]
fn audit_mode_resolves_names_outside_the_policy_and_reports_them() {
    private_netns(&["203.0.113.10"]);
    let _up = Upstream::dnsmasq();
    let cfg = format!(
        "{}\n[[policy]]\nname = \"watch\"\nmode = \"audit\"\nallow_domains = []\n",
        config(UPSTREAM_PORT)
    );
    let mut env = TestEnv::new("dnsaudit", &cfg);
    env.start_agent();
    let web = TcpProbe::bind("203.0.113.10:0");
    let out = in_sandbox(
        &env,
        "watch",
        &format!("curl -sS -m 5 http://allowed.test:{}/", web.addr.port()),
    );
    assert_eq!(
        stdout(&out),
        "hb-test",
        "audit mode blocks nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = env.wait_event("audited name", |e| {
        e["reason"] == "name_not_allowed" && e["name"] == "allowed.test"
    });
    assert_eq!(e["verdict"], "audit");
    assert_eq!(e["policy"], "watch");
}

#[test]
fn truncated_upstream_answers_are_asked_again_over_tcp_and_then_served_from_the_cache() {
    private_netns(&["203.0.113.30"]);
    let upstream = Upstream::truncating();
    let cfg = config(TRUNCATING_PORT)
        .replace("min_ttl_secs = 2", "min_ttl_secs = 20")
        .replace("max_ttl_secs = 3", "max_ttl_secs = 30")
        .replace(
            "\"flip.test\"]",
            "\"flip.test\", \"big.test\", \"gone.test\"]",
        );
    let mut env = TestEnv::new("dnstc", &cfg);
    env.start_agent();
    let gone = env.hb_json(&["dns", "lookup", "--policy", "web", "gone.test"]);
    assert_eq!(
        gone[0]["rcode"], "Non-Existent Domain",
        "the upstream's NXDOMAIN: {gone}"
    );
    // Over UDP the upstream only ever sends TC and no records: an address can only have
    // come over TCP.
    let first = env.hb_json(&["dns", "lookup", "--policy", "web", "big.test"]);
    assert_eq!(
        first[0]["answers"],
        serde_json::json!(["203.0.113.30"]),
        "A answer fetched over TCP: {first}"
    );
    assert_eq!(first[1]["type"], "AAAA", "{first}");
    assert_eq!(
        first[1]["answers"],
        serde_json::json!([]),
        "no AAAA (NODATA): {first}"
    );
    // With the upstream gone, only the resolver's cache of validated answers can answer:
    // the addresses, and the empty AAAA answer (NODATA is cached too, for min_ttl_secs
    // when the upstream sends no SOA).
    drop(upstream);
    let again = env.hb_json(&["dns", "lookup", "--policy", "web", "big.test"]);
    assert_eq!(
        again[0]["answers"], first[0]["answers"],
        "served from the cache: {again}"
    );
    assert_eq!(
        (&again[1]["rcode"], &again[1]["answers"]),
        (&first[1]["rcode"], &first[1]["answers"]),
        "NODATA served from the cache: {again}"
    );
    let gone_again = env.hb_json(&["dns", "lookup", "--policy", "web", "gone.test"]);
    assert_eq!(
        (&gone_again[0]["rcode"], &gone_again[1]["rcode"]),
        (&gone[0]["rcode"], &gone[1]["rcode"]),
        "NXDOMAIN served from the cache, not SERVFAIL: {gone_again}"
    );
    let ttl = again[0]["ttl"].as_u64().expect("ttl");
    assert!((1..=30).contains(&ttl), "cached TTL counts down: {again}");
    let web = TcpProbe::bind("203.0.113.30:0");
    let out = in_sandbox(
        &env,
        "web",
        &format!("curl -4 -sS -m 5 http://big.test:{}/", web.addr.port()),
    );
    assert_eq!(
        stdout(&out),
        "hb-test",
        "the sandbox resolves from the cache and connects: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const RECORDING_PORT: u16 = 5404;

#[test]
fn names_with_a_dot_or_odd_byte_inside_a_label_get_the_denied_answer_and_never_go_upstream() {
    private_netns(&["203.0.113.10"]);
    let mut env = TestEnv::new("labels", &config(RECORDING_PORT));
    let log = env.state_dir.join("upstream-queries");
    let _up = recording_upstream(RECORDING_PORT, &log);
    env.start_agent();
    // Raw queries from a sandbox, labels as bytes: `["x.wild", "test"]` prints as
    // `x\.wild.test`, which ends in `.wild.test` as text (policy web allows
    // `*.wild.test`); a NUL, a space, a non-ASCII byte inside a label under
    // `wild.test`; and last a plain allowed name, which must go upstream (so the
    // recorder is known to work).
    let script = r#"
import json, socket, struct
def q(labels, qid):
    h = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    return h + b"".join(bytes([len(l)]) + l for l in labels) + b"\0" + struct.pack("!HH", 1, 1)
tries = [[b"x.wild", b"test"], [b"a.b.wild", b"test"], [b"a\x00", b"wild", b"test"],
         [b"a b", b"wild", b"test"], [b"caf\xc3\xa9", b"wild", b"test"], [b"ok", b"wild", b"test"]]
out = []
for i, labels in enumerate(tries):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3)
    u.sendto(q(labels, 0x4200 + i), ("192.0.2.53", 53))
    data, _ = u.recvfrom(512)
    out.append({"id": struct.unpack("!H", data[:2])[0] - 0x4200, "rcode": data[3] & 15,
                "answers": struct.unpack("!H", data[6:8])[0]})
print(json.dumps(out))
"#;
    let out = nobody_command(&env, "web", &[], &[python(), "-c", script])
        .output()
        .expect("sandbox run");
    let answers: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sandboxed DNS client ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let seen = fs::read_to_string(&log).unwrap_or_default();
    // Only `ok.wild.test` (hex 026f6b 0477696c64 0474657374) reached the upstream.
    let names: Vec<&str> = seen.lines().map(|l| &l[24..]).collect();
    assert!(
        !names.is_empty()
            && names
                .iter()
                .all(|n| n.starts_with("026f6b0477696c6404746573740000")),
        "the upstream saw other names: {seen}"
    );
    let answers = answers.as_array().expect("answers");
    for (i, a) in answers.iter().enumerate().take(5) {
        assert_eq!(a["id"], i, "{a}");
        assert_eq!(a["rcode"], 3, "the denied-name answer (NXDOMAIN): {a}");
        assert_eq!(a["answers"], 0, "{a}");
    }
    assert_eq!(answers[5]["rcode"], 0, "{answers:?}");
    assert_eq!(answers[5]["answers"], 1, "{answers:?}");
    let e = env.wait_event("name_malformed", |e| e["reason"] == "name_malformed");
    assert_eq!(
        (&e["policy"], &e["verdict"]),
        (&"web".into(), &"deny".into()),
        "{e}"
    );
}

/// Opens as many TCP connections to "the nameserver" (the resolver, through the redirect)
/// as it can, reports how many the resolver kept open (a closed one reads EOF), then
/// holds them until its stdin closes.
const PY_TCP_HOARD: &str = r#"
import socket, sys, time
held = []
for i in range(64):
    try:
        held.append(socket.create_connection(("192.0.2.53", 53), timeout=3))
    except OSError as e:
        print("connect", i, e, flush=True)
        break
time.sleep(1.5)
alive = 0
for s in held:
    s.setblocking(False)
    try:
        s.recv(1)
    except BlockingIOError:
        alive += 1
    except OSError:
        pass
print("held", alive, "of", len(held), flush=True)
sys.stdin.read()
"#;

/// Starts a sandbox of `web` running [`PY_TCP_HOARD`], which holds its connections
/// while this lives.
fn tcp_hoarder(env: &TestEnv) -> Running {
    Running::spawn(nobody_command(
        env,
        "web",
        &[],
        &[python(), "-c", PY_TCP_HOARD],
    ))
}

/// One TCP DNS query for `allowed.test` to the documentation nameserver.
const PY_TCP_QUERY: &str = r#"
import socket, struct
h = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
m = h + b"\x07allowed\x04test\x00" + struct.pack("!HH", 1, 1)
t = socket.create_connection(("192.0.2.53", 53), timeout=3)
t.sendall(struct.pack("!H", len(m)) + m)
hdr = t.recv(2)
if len(hdr) < 2:
    print("closed without an answer")
else:
    n = struct.unpack("!H", hdr)[0]; d = b""
    while len(d) < n:
        c = t.recv(n - len(d))
        if not c: break
        d += c
    print("tcp rcode", d[3] & 15, socket.inet_ntoa(d[-4:]))
"#;

/// The attack: one sandbox (uid 65534) opens every TCP DNS connection it can and keeps
/// them idle. Its policy has 8 TCP slots; it must get only its cgroup's share (a
/// quarter: 2), the rest closed with a `dns_cgroup_busy` event naming its cgroup, so
/// another sandbox of the same policy still resolves over TCP. A TCP connection to the
/// resolver the kernel did not redirect (the host's, here) has no cgroup: closed unanswered.
#[test]
fn one_sandbox_holding_tcp_dns_connections_leaves_the_others_their_share() {
    private_netns(&["203.0.113.10", "192.0.2.53"]);
    let _up = Upstream::dnsmasq();
    let cfg = config(UPSTREAM_PORT).replace(
        "max_ttl_secs = 3\n",
        "max_ttl_secs = 3\ntcp_idle_timeout_secs = 60\nmax_tcp_connections_per_policy = 8\n",
    );
    let mut env = TestEnv::new("tcphoard", &cfg);
    env.start_agent();

    let mut hoarder = tcp_hoarder(&env);
    let line = hoarder.line();
    assert!(line.starts_with("held "), "hoarder: {line:?}");

    let out = env.sandbox("web", &[python(), "-c", PY_TCP_QUERY]);
    let text = stdout(&out);
    assert!(
        text.contains("tcp rcode 0 203.0.113.10"),
        "a second sandbox of the policy could not resolve over TCP while the first \
         ({line}) holds connections: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        line.starts_with("held 2 of"),
        "the hoarder kept more than its cgroup's share: {line:?}"
    );
    let e = env.wait_event("dns_cgroup_busy", |e| e["reason"] == "dns_cgroup_busy");
    assert_eq!(
        (&e["hook"], &e["policy"]),
        (&"dns".into(), &"web".into()),
        "{e}"
    );
    assert!(e["cgroup_id"].as_u64().is_some_and(|c| c > 0), "{e}");
    // The connections the resolver kept are the hoarder's, filed under its cgroup: the
    // one the event names.
    let rows = env.hb_json(&["maps", "dump", "dns_conns"]);
    let held = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["cgroup_id"] == e["cgroup_id"])
        .count();
    assert_eq!(held, 2, "the hoarder's records: {rows}");

    // Fail closed: the host's own connection to the resolver port has no kernel record.
    let port = 5300 + env.policy_id("web") as u16;
    let mut t = TcpStream::connect(("127.0.0.1", port)).expect("connect to the resolver");
    let q = b"\x00\x1e\x42\x42\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07allowed\x04test\x00\x00\x01\x00\x01";
    let _ = t.write_all(q);
    t.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut buf = [0u8; 2];
    let n = t.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "an unattributed TCP connection was answered");
}

/// The attack, spread: four sandboxes (uid 65534) each open every TCP DNS connection
/// they can and keep them idle. Each is held to its cgroup's cap (8, a quarter of the
/// policy's 32), and four caps were the policy's every slot; now a sandbox takes another
/// only while it holds fewer than its policy has free, so a fifth sandbox of the policy
/// still resolves over TCP.
#[test]
fn four_sandboxes_holding_tcp_dns_connections_leave_a_fifth_served() {
    private_netns(&["203.0.113.10", "192.0.2.53"]);
    let _up = Upstream::dnsmasq();
    let cfg = config(UPSTREAM_PORT).replace(
        "max_ttl_secs = 3\n",
        "max_ttl_secs = 3\ntcp_idle_timeout_secs = 60\n",
    );
    let mut env = TestEnv::new("tcpfour", &cfg);
    env.start_agent();
    let mut held = Vec::new();
    let mut hoarders = Vec::new();
    for _ in 0..4 {
        let mut hoarder = tcp_hoarder(&env);
        let line = hoarder.line();
        assert!(line.starts_with("held "), "hoarder: {line:?}");
        held.push(line);
        hoarders.push(hoarder);
    }
    let out = env.sandbox("web", &[python(), "-c", PY_TCP_QUERY]);
    let text = stdout(&out);
    println!("hoarders: {held:?} | fifth: {}", text.trim());
    assert!(
        text.contains("tcp rcode 0 203.0.113.10"),
        "a fifth sandbox of the policy could not resolve over TCP while four others \
         hold connections ({held:?}): {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// TCP DNS needs the kernel's record of each redirected connection (`sock_ops` files
/// it), whatever the policies say of the guard and inbound connections: with both off
/// everywhere, a sandbox's query over TCP is still answered, and its connection is
/// still held to its sandbox's share.
#[test]
fn tcp_dns_is_answered_when_no_policy_uses_the_guard_or_inbound() {
    private_netns(&["203.0.113.10", "192.0.2.53"]);
    let _up = Upstream::dnsmasq();
    let cfg = config(UPSTREAM_PORT).replace(
        "name = \"web\"\n",
        "name = \"web\"\nguard = false\ninbound = false\n",
    );
    let cfg = cfg.replace(
        "name = \"other\"\n",
        "name = \"other\"\nguard = false\ninbound = false\n",
    );
    let mut env = TestEnv::new("tcpnoguard", &cfg);
    env.start_agent();
    let out = env.sandbox("web", &[python(), "-c", PY_TCP_QUERY]);
    let text = stdout(&out);
    assert!(
        text.contains("tcp rcode 0 203.0.113.10"),
        "a sandbox could not resolve over TCP with no guarded or inbound policy: \
         {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The attack: one sandbox floods refused names over UDP, each one new (more than the
/// 256 an event budget holds back by name), while another sandbox of the same policy asks
/// once for a refused name of its own. The victim's refusal must be named in an event
/// charged to its own cgroup, which the kernel's record of its UDP socket tells the
/// resolver (`maps dump dns_udp`); a budget shared by the policy's UDP queries let the
/// flood push the victim's name out unnamed.
#[test]
fn one_sandbox_flooding_refused_names_over_udp_cannot_hide_another_sandboxs() {
    hb_tests::require_root();
    private_netns(&["192.0.2.53"]);
    let mut env = TestEnv::new("udpcover", &config(UPSTREAM_PORT));
    env.start_agent();

    let mut flooder = udp_flooder(&env, "web", "7", "flood.denied.test", "0.0005");
    // Past the attacker's burst of events: from here on its names are held back.
    thread::sleep(Duration::from_millis(1500));
    let said = udp_ask(&env, "web", &["victim-secret.denied.test"]);
    assert!(
        said.contains("victim-secret.denied.test rcode 3"),
        "the victim's refused name got NXDOMAIN: {said}"
    );
    let line = flooder.line();
    flooder.wait();
    assert!(line.starts_with("sent "), "flooder: {line:?}");
    let sent: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        sent > 2000,
        "the flood was too slow to prove anything: {line:?}"
    );

    let victim = env.wait_event("naming the victim's refused name", |e| {
        e["name"] == "victim-secret.denied.test"
    });
    let attacker = env.wait_event("naming a flooded name", |e| {
        e["name"]
            .as_str()
            .is_some_and(|n| n.ends_with(".flood.denied.test"))
    });
    let (v, a) = (&victim["cgroup_id"], &attacker["cgroup_id"]);
    assert!(
        v.as_u64().is_some_and(|c| c > 0) && a.as_u64().is_some_and(|c| c > 0) && v != a,
        "each sandbox's refusals are charged to its own cgroup: victim {victim}, attacker {attacker}"
    );
    let rows = env.hb_json(&["maps", "dump", "dns_udp"]);
    assert!(
        rows.as_array()
            .expect("rows")
            .iter()
            .any(|r| &r["cgroup_id"] == v && r["policy"] == "web"),
        "the kernel filed the victim's UDP socket: {rows}"
    );
}

const HOLDING_PORT: u16 = 5405;

/// An upstream with a bound on queries it holds (as dnsmasq's `dns-forward-max`): a
/// query for a name under `hold.wild.test` is never answered and held for 3 s; while 200
/// are held every other query is dropped; any other A query is answered 203.0.113.12,
/// TTL 1. Writes the most it ever held to `log`.
fn holding_upstream(log: &std::path::Path) -> PythonServer {
    let script = format!(
        r#"
import socket, struct, time
held = {{}}; most = 0
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", {HOLDING_PORT}))
while True:
    q, a = s.recvfrom(512)
    now = time.monotonic()
    for k in [k for k, t in held.items() if now - t > 3]: del held[k]
    end = 12
    while q[end] != 0: end += q[end] + 1
    name = q[12:end].lower()
    if name.endswith(b"\x04hold\x04wild\x04test"):
        if len(held) < 200: held[(a, q[:2])] = now
        if len(held) > most:
            most = len(held); open("{log}", "w").write(str(most))
        continue
    if len(held) >= 200: continue
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4) + socket.inet_aton("203.0.113.12")
    s.sendto(q[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0) + q[12:end + 5] + rr, a)
"#,
        log = log.display()
    );
    PythonServer::start(&script)
}

/// The attack: one sandbox asks for a new random name under an allowed zone every 2 ms,
/// names its upstream never answers. The resolver must hold the sandbox to its share of
/// upstream lookups (the default: 64, a quarter of the policy's 256), answering the rest SERVFAIL with a `dns_cgroup_busy` event,
/// so the upstream's own bound on held queries is never reached and another sandbox of
/// the same policy still gets its names answered. Without the share the flood held every
/// query the upstream would take, and the victim's were dropped.
#[test]
fn one_sandbox_flooding_distinct_names_leaves_the_others_lookups_answered() {
    hb_tests::require_root();
    private_netns(&["192.0.2.53"]);
    let mut env = TestEnv::new("udplookups", &config(HOLDING_PORT));
    let most_held = env.state_dir.join("upstream-most-held");
    let _up = holding_upstream(&most_held);
    env.start_agent();

    let mut flooder = udp_flooder(&env, "web", "9", "hold.wild.test", "0.002");
    thread::sleep(Duration::from_millis(1500));
    let said = udp_ask(
        &env,
        "web",
        &["v1.wild.test", "v2.wild.test", "v3.wild.test"],
    );
    let line = flooder.line();
    flooder.wait();
    let held = fs::read_to_string(&most_held).unwrap_or_default();
    for name in ["v1.wild.test", "v2.wild.test", "v3.wild.test"] {
        assert!(
            said.contains(&format!("{name} rcode 0 203.0.113.12")),
            "the victim's lookup of {name} was not answered while another sandbox flooded \
             (flooder: {line}, most queries the upstream held: {held}): {said}"
        );
    }
    let servfail: u64 = line
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        servfail > 0,
        "the flood past its share was not refused: {line:?}"
    );
    // Each lookup asks the upstream at most twice (one retry), one ask at a time.
    let held: u64 = held.trim().parse().expect("the upstream held queries");
    assert!(
        held <= 128,
        "the upstream held {held} of the flood's queries at once"
    );
    let e = env.wait_event("dns_cgroup_busy for a lookup", |e| {
        e["reason"] == "dns_cgroup_busy" && e["protocol"] == "udp"
    });
    assert!(e["cgroup_id"].as_u64().is_some_and(|c| c > 0), "{e}");
    assert!(
        e["name"]
            .as_str()
            .is_some_and(|n| n.ends_with(".hold.wild.test")),
        "{e}"
    );
}
