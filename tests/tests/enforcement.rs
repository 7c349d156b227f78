//! The kernel refuses what policy forbids: real programs, real sockets, real clients, each
//! test in its own network namespace with every address on its `lo`.

use std::{process::Command, thread, time::Duration};

use hb_tests::{
    TcpProbe, TestEnv, UdpProbe, host_probe, pod_glob, private_netns, python, sandbox_probe,
};
use serde_json::Value;

/// Targets that must be refused by the deny ranges, as (connect address, address the
/// listener binds, address the event reports).
const PRIVATE: &[(&str, &str, &str)] = &[
    ("10.0.0.1", "10.0.0.1", "10.0.0.1"),
    ("172.16.0.1", "172.16.0.1", "172.16.0.1"),
    ("192.168.0.1", "192.168.0.1", "192.168.0.1"),
    ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
    ("169.254.169.254", "169.254.169.254", "169.254.169.254"),
    ("100.64.0.1", "100.64.0.1", "100.64.0.1"),
    ("::1", "::1", "::1"),
    ("fd00::1", "fd00::1", "fd00::1"),
    ("fe80::1", "fe80::1", "fe80::1"),
    // IPv4-mapped: the socket talks IPv4 to 10.0.0.1.
    ("::ffff:10.0.0.1", "10.0.0.1", "::ffff:10.0.0.1"),
    // NAT64 well-known prefix embedding 10.0.0.1.
    ("64:ff9b::a00:1", "64:ff9b::a00:1", "64:ff9b::a00:1"),
];

const OPEN_POLICY: &str = r#"
[[policy]]
name = "open"
# Any public address; the deny ranges still win.
allow_cidrs = ["0.0.0.0/0", "::/0"]
"#;

fn lo_addrs() -> Vec<&'static str> {
    let mut v: Vec<&str> = Vec::new();
    for (_, bind, _) in PRIVATE {
        // Loopback is on lo already.
        if !v.contains(bind) && *bind != "127.0.0.1" && *bind != "::1" {
            v.push(bind);
        }
    }
    v.extend(["203.0.113.10", "198.51.100.7", "127.0.0.2", "2001:db8::10"]);
    v
}

fn has_event(e: &Value, reason: &str, dst: &str, hook_prefix: &str) -> bool {
    e["reason"] == reason
        && e["dst"] == dst
        && e["verdict"] == "deny"
        && e["hook"]
            .as_str()
            .is_some_and(|h| h.starts_with(hook_prefix))
}

#[test]
fn private_destinations_are_refused_over_tcp_and_udp() {
    private_netns(&lo_addrs());
    let mut env = TestEnv::new("private", OPEN_POLICY);
    env.start_agent();

    for (target, bind, reported) in PRIVATE {
        let tcp = TcpProbe::bind(&sock(bind, 0));
        let udp = UdpProbe::bind(&sock(bind, 0));
        let (tport, uport) = (tcp.addr.port(), udp.addr.port());
        for (op, port, hook) in [
            ("tcp", tport, "connect"),
            ("udp-connect", uport, "connect"),
            ("udp-sendto", uport, "sendmsg"),
        ] {
            let got = sandbox_probe(&env, "open", op, target, port);
            assert_eq!(
                got, "EPERM",
                "{op} to {target} from the sandbox must get EPERM"
            );
            // A v4-mapped datagram is judged by sendmsg4 as the IPv4 it is.
            env.wait_event(&format!("deny_range {op} {reported}"), |e| {
                (has_event(e, "deny_range", reported, hook)
                    || has_event(e, "deny_range", bind, hook))
                    && e["port"] == port
            });
        }
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            tcp.accepted(),
            0,
            "listener on {bind} accepted a sandboxed connection"
        );
        assert_eq!(
            udp.received(),
            0,
            "UDP socket on {bind} received a sandboxed datagram"
        );
        // The same probe from outside any sandbox gets through: the check can fail.
        assert_eq!(
            host_probe("tcp", target, tport),
            "OK",
            "host connect to {target}"
        );
    }
    assert!(env.counter("deny_range") >= (PRIVATE.len() * 3) as u64);
}

#[test]
fn curl_and_requests_are_refused_and_the_listener_sees_nothing() {
    private_netns(&lo_addrs());
    let mut env = TestEnv::new("clients", OPEN_POLICY);
    env.start_agent();
    let probe = TcpProbe::bind("10.0.0.1:0");
    let url = format!("http://10.0.0.1:{}/", probe.addr.port());

    let curl = env.sandbox("open", &["curl", "-sS", "-m", "3", &url]);
    assert!(!curl.status.success(), "sandboxed curl reached {url}");
    let requests = env.sandbox(
        "open",
        &[
            python(),
            "-c",
            &format!("import requests; requests.get('{url}', timeout=3)"),
        ],
    );
    assert!(
        !requests.status.success(),
        "sandboxed requests reached {url}"
    );
    let stderr = String::from_utf8_lossy(&requests.stderr);
    assert!(
        stderr.contains("Operation not permitted"),
        "requests error: {stderr}"
    );
    assert_eq!(probe.accepted(), 0);
    let e = env.wait_event("curl refusal", |e| {
        e["comm"] == "curl" && e["dst"] == "10.0.0.1" && e["reason"] == "deny_range"
    });
    assert_eq!(e["policy"], "open");
    assert!(
        e["cgroup"]
            .as_str()
            .is_some_and(|c| c.starts_with(&env.cgroup_root)),
        "event names the sandbox cgroup: {e}"
    );

    // Outside the sandbox curl works against the same listener.
    let host = Command::new("curl")
        .args(["-sS", "-m", "3", &url])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&host.stdout), "hb-test");
}

#[test]
fn static_cidrs_allow_and_everything_else_is_refused() {
    private_netns(&lo_addrs());
    let mut env = TestEnv::new(
        "cidr",
        r#"
[egress]
exception_cidrs = ["203.0.113.0/24", "198.51.100.0/24", "127.0.0.2/32", "2001:db8::/32"]

[[policy]]
name = "narrow"
allow_cidrs = ["203.0.113.10", "127.0.0.2", "2001:db8::10/128"]
"#,
    );
    env.start_agent();
    let allowed = TcpProbe::bind("203.0.113.10:0");
    let allowed_lo = TcpProbe::bind("127.0.0.2:0");
    let allowed6 = TcpProbe::bind("[2001:db8::10]:0");
    let outside = TcpProbe::bind("198.51.100.7:0");
    let loopback = TcpProbe::bind("127.0.0.1:0");

    let url = format!("http://203.0.113.10:{}/", allowed.addr.port());
    let ok = env.sandbox("narrow", &["curl", "-sS", "-m", "3", &url]);
    assert!(
        ok.status.success(),
        "curl to an allowed CIDR: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "hb-test");
    assert_eq!(allowed.wait_accepted(1), 1);
    assert_eq!(
        sandbox_probe(&env, "narrow", "tcp", "127.0.0.2", allowed_lo.addr.port()),
        "OK"
    );
    assert_eq!(
        sandbox_probe(&env, "narrow", "tcp", "2001:db8::10", allowed6.addr.port()),
        "OK"
    );

    // An exception lifts the deny range but does not allow: the policy must too.
    assert_eq!(
        sandbox_probe(&env, "narrow", "tcp", "198.51.100.7", outside.addr.port()),
        "EPERM"
    );
    env.wait_event("not_allowed 198.51.100.7", |e| {
        has_event(e, "not_allowed", "198.51.100.7", "connect")
    });
    assert_eq!(outside.accepted(), 0);
    // 127.0.0.2 is carved out, the rest of loopback is not.
    assert_eq!(
        sandbox_probe(&env, "narrow", "tcp", "127.0.0.1", loopback.addr.port()),
        "EPERM"
    );
    env.wait_event("deny_range 127.0.0.1", |e| {
        has_event(e, "deny_range", "127.0.0.1", "connect")
    });
    assert_eq!(loopback.accepted(), 0);

    // A process outside any enrolled cgroup is untouched.
    assert_eq!(host_probe("tcp", "198.51.100.7", outside.addr.port()), "OK");
    assert!(env.counter("allow_cidr") >= 3);
}

/// Writes an allow-map entry with bpftool, straight into the pinned map.
fn bpftool_allow4(env: &TestEnv, policy_id: u32, ip: [u8; 4], expires_ns: u64) {
    let mut key: Vec<String> = policy_id
        .to_le_bytes()
        .iter()
        .map(|b| b.to_string())
        .collect();
    key.extend(ip.iter().map(|b| b.to_string()));
    let value: Vec<String> = expires_ns
        .to_le_bytes()
        .iter()
        .map(|b| b.to_string())
        .collect();
    let pin = env.map_pin("HB_ALLOW4");
    let out = Command::new("bpftool")
        .args(["map", "update", "pinned"])
        .arg(&pin)
        .arg("key")
        .args(&key)
        .arg("value")
        .args(&value)
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool map update: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn allow_map_entries_allow_until_they_expire() {
    private_netns(&lo_addrs());
    let mut env = TestEnv::new(
        "expiry",
        r#"
[egress]
exception_cidrs = ["203.0.113.0/24", "198.51.100.0/24"]

[[policy]]
name = "dns"
"#,
    );
    env.start_agent();
    let id = env.policy_id("dns");
    let live = TcpProbe::bind("203.0.113.10:0");
    let dead = TcpProbe::bind("198.51.100.7:0");
    // Before any entry: refused.
    assert_eq!(
        sandbox_probe(&env, "dns", "tcp", "203.0.113.10", live.addr.port()),
        "EPERM"
    );
    bpftool_allow4(&env, id, [203, 0, 113, 10], u64::MAX);
    // Expiry 1 ns after boot: long past.
    bpftool_allow4(&env, id, [198, 51, 100, 7], 1);
    assert_eq!(
        sandbox_probe(&env, "dns", "tcp", "203.0.113.10", live.addr.port()),
        "OK"
    );
    assert_eq!(
        sandbox_probe(&env, "dns", "tcp", "198.51.100.7", dead.addr.port()),
        "EPERM"
    );
    env.wait_event("expired entry refused", |e| {
        has_event(e, "not_allowed", "198.51.100.7", "connect")
    });
    assert_eq!(live.wait_accepted(1), 1);
    assert_eq!(dead.accepted(), 0);

    let rows = env.hb_json(&["maps", "dump", "allow4"]);
    let row = |ip: &str| {
        rows.as_array()
            .expect("rows")
            .iter()
            .find(|r| r["ip"] == ip)
            .cloned()
            .unwrap_or_else(|| panic!("{ip} missing from allow4 dump: {rows}"))
    };
    assert_eq!(row("203.0.113.10")["expired"], false);
    assert_eq!(row("203.0.113.10")["policy"], "dns");
    assert_eq!(row("198.51.100.7")["expired"], true);
}

/// Sends one ICMP echo request over a raw socket; prints `REPLY`, `TIMEOUT` or an errno,
/// or `socket` and the errno when the raw socket cannot even be opened.
const PY_PING: &str = r#"
import errno, socket, struct, sys
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
hdr = struct.pack("!BBHHH", 8, 0, 0, 0x4862, 1) + b"hb-test!"
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
except socket.timeout:
    print("TIMEOUT")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// Raw ICMP needs CAP_NET_RAW. A pod enrolled by a `[[sandbox]]` glob may hold it, so
/// the attack runs there as root with every capability, and `cgroup_skb/egress` must
/// drop the echo. From `sandbox run`, even `--user 0`, the raw socket cannot even be
/// opened (no capabilities).
#[test]
fn raw_icmp_to_private_addresses_is_dropped_by_skb_egress() {
    private_netns(&lo_addrs());
    // The policy opts in to raw sockets (refused at `cgroup/sock_create` otherwise): what
    // is tested is the packet hook's verdict.
    let mut env = TestEnv::new(
        "icmp",
        &format!("{OPEN_POLICY}raw_sockets = true\n{}", pod_glob("open")),
    );
    env.start_agent();
    let host = Command::new(python())
        .args(["-c", PY_PING, "10.0.0.1"])
        .output()
        .expect("python");
    assert_eq!(
        String::from_utf8_lossy(&host.stdout).trim(),
        "REPLY",
        "host ping must work"
    );

    let pod = env.root_pod("open");
    let out = pod.run(&[python(), "-c", PY_PING, "10.0.0.1"]);
    let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        got == "EPERM" || got == "TIMEOUT",
        "raw ICMP from root in an enrolled pod got {got:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.counter("skb_drop") >= 1, "skb_drop counter");
    let e = env.wait_event("skb_egress drop", |e| {
        e["hook"] == "skb_egress" && e["dst"] == "10.0.0.1" && e["protocol"] == "icmp"
    });
    assert_eq!(e["verdict"], "deny");
    let stats = env.hb_json(&["maps", "dump", "cg_stats"]);
    assert!(
        stats
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["drop_packets"].as_u64() >= Some(1)),
        "per-cgroup drop counted: {stats}"
    );

    // Root in a sandbox has no CAP_NET_RAW: the attack cannot start.
    let out = env.hb(&[
        "sandbox",
        "run",
        "--policy",
        "open",
        "--user",
        "0",
        "--",
        python(),
        "-c",
        PY_PING,
        "10.0.0.1",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "socket EPERM",
        "a raw ICMP socket from `sandbox run --user 0`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn audit_mode_allows_and_reports() {
    private_netns(&lo_addrs());
    let mut env = TestEnv::new(
        "audit",
        r#"
[[policy]]
name = "watch"
mode = "audit"
"#,
    );
    env.start_agent();
    let probe = TcpProbe::bind("10.0.0.1:0");
    assert_eq!(
        sandbox_probe(&env, "watch", "tcp", "10.0.0.1", probe.addr.port()),
        "OK"
    );
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        probe.wait_accepted(1),
        1,
        "audit mode must let the connection through"
    );
    let e = env.wait_event("audit event", |e| {
        e["verdict"] == "audit" && e["dst"] == "10.0.0.1"
    });
    assert_eq!(e["reason"], "deny_range");
    assert_eq!(e["policy"], "watch");
    assert!(env.counter("audit") >= 1);
}

fn sock(ip: &str, port: u16) -> String {
    if ip.starts_with("fe80") {
        // Link-local needs a scope: lo is interface 1 in a fresh namespace.
        format!("[{ip}%1]:{port}")
    } else if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}
