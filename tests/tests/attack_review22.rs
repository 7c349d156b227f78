//! A twenty-second attack review, run as the process inside the sandbox: each test
//! performs one attack from a sandbox (uid 65534, arbitrary Python) against the real
//! agent, the real kernel, real DNS (dnsmasq) and real listeners on the test namespace's
//! `lo`, and asserts the secure outcome.
//!
//! Angle: the network side again, from addresses nobody looked at — the host's own. The
//! deny ranges keep a sandbox off loopback and the private ranges, but a node often has
//! an address that is in none of them (a bare-metal or edge node's public IPv4, any
//! node's global IPv6). A connection to it never leaves the host: it is delivered
//! locally, exactly as one to 127.0.0.1 is, to every service listening on the wildcard
//! address (the kubelet, node-exporter, sshd, the agent's own `/metrics` when
//! `metrics_listen` names the node's address as the README suggests) and past any
//! firewall that only filters what arrives from outside.
//!
//! Found here (each test fails against the agent before its fix): an allowed name whose
//! answer is one of the host's own addresses was validated like any public answer — a
//! sandbox beside the agent then reached host services on it directly, and any sandbox
//! (a pod in its own namespace too) through the broker's handle-less read-only calls,
//! which the broker makes from the host. The rebinding defence now counts the host's
//! addresses (`HB_LOCAL_ADDRS`, kept from rtnetlink) as denied unless
//! `egress.exception_cidrs` carves them out, in both resolvers; so are the network and
//! broadcast address of the host's IPv4 prefixes and the subnet-router anycast address
//! of its IPv6 prefixes, where a datagram is delivered on the host too (unit tests: the
//! test namespace has only `lo`, whose IPv4 prefixes are local whole).
//!
//! Found too: a sandbox beside the agent shares the host's ephemeral port range, and
//! binding sockets to port 0 took all of it; every TCP connect in the namespace then
//! failed with EADDRNOTAVAIL (another tenant's, the broker's, the host's). The kernel now
//! counts the internet sockets such a sandbox holds (`cgroup/sock_create` and
//! `cgroup/sock_release`) and refuses one past `sandbox_defaults.sockets_max` (default
//! 4,096 of the default range's 28,232: several sandboxes together can still take the
//! range; the bound is per sandbox, not a share).
//!
//! Held, tried and not kept as tests: the kernel refuses the host's addresses as IP
//! literals (never validated); TCP to a host's IPv6 subnet-router anycast address is not
//! answered by the kernel (UDP is, with forwarding on: now refused as an answer).
//!
//! Everything lives on `lo` in the test's own network namespace: the "host's address" is
//! an ordinary global unicast address the test gives `lo` (never routed anywhere: the
//! namespace has no other link), the "remote" server sits on an excepted TEST-NET
//! address as in every other test.

use hb_tests::{
    TcpProbe, python,
    sandboxed::{
        PY_FIVE_CONNECTS, PY_PORT_HOARDER, Running, nobody_broker_client, nobody_command,
        nobody_python,
    },
    stdout,
    worlds::{attack_as, names_on_lo, resolver_config, started_agent},
};
use serde_json::Value;

const DNS_PORT: u16 = 5522;
/// The host's own address: global unicast, in no default deny range and no exception.
const HOST_V4: &str = "100.128.0.77";
const HOST_V6: &str = "2a00:1450::77";
/// A remote server (an exception, as the tests' "public" addresses are).
const REMOTE: &str = "203.0.113.10";
/// The sandboxes' bound on open sockets (`sandbox_defaults.sockets_max`'s default).
const SOCKETS_MAX: u32 = 4096;
/// The ephemeral range the port test leaves its namespace: 5,000 ports, more than one
/// sandbox's bound and fewer than the default range, so that the attack is quick.
const PORT_RANGE: &str = "41000 45999";

/// The world: `lo` holds the host's addresses and the remote server's; dnsmasq answers
/// `node.test` with the host's addresses and `remote.test` with the remote one; the
/// agent's policy `web` allows both names. Returns the agent, the host service (on the
/// wildcard address, both families, as the kubelet listens) and the remote server.
fn world(
    name: &str,
) -> (
    hb_tests::TestEnv,
    TcpProbe,
    TcpProbe,
    hb_tests::upstream::Dnsmasq,
) {
    let dns = names_on_lo(
        &[HOST_V4, HOST_V6, REMOTE, "192.0.2.53"],
        DNS_PORT,
        &[
            ("node.test", &[HOST_V4, HOST_V6]),
            ("remote.test", &[REMOTE]),
        ],
        60,
    );
    let host_service = TcpProbe::bind("[::]:0");
    let remote = TcpProbe::bind(&format!("{REMOTE}:0"));
    let env = started_agent(
        name,
        &format!(
            "[broker]\nsocket_mode = \"0666\"\n{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"node.test\", \"remote.test\"]\n\n[[policy]]\nname = \"victim\"\nallow_domains = [\"remote.test\"]\n",
            resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"])
        ),
    );
    (env, host_service, remote, dns)
}

/// Waits for the `dns_rebinding` event that names `node.test` and one of the host's
/// addresses.
fn assert_rebinding_event(env: &hb_tests::TestEnv) {
    let e = env.wait_event("dns_rebinding for node.test", |e| {
        e["reason"] == "dns_rebinding"
            && e["name"] == "node.test"
            && (e["dst"] == HOST_V4 || e["dst"] == HOST_V6)
    });
    println!("event: {e}");
}

/// A sandbox beside the agent resolves `node.test` (IPv4 and IPv6) and connects to the
/// host service's port at whatever it got, then tries the host's addresses as literals;
/// the control resolves `remote.test` and connects to the remote server. Before the fix
/// both lookups answered the host's addresses and both connects reached the host
/// service (2 accepted); now the lookups are refused, the literals are not admitted, and
/// the host service accepts nothing.
#[test]
fn a_name_answering_the_hosts_own_address_reaches_no_host_service() {
    let (env, host_service, remote, _dns) = world("ar22host");
    let port = host_service.addr.port();
    let rport = remote.addr.port();
    let out = attack_as(
        &env,
        "web",
        &format!(
            r#"
import socket
def reach(name, port, fam):
    try:
        infos = socket.getaddrinfo(name, port, fam, socket.SOCK_STREAM)
    except socket.gaierror as e:
        return "unresolved"
    return connect(fam, infos[0][4])
def connect(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3)
    try:
        s.connect(addr); return "connected"
    except OSError as e:
        return "refused"
    finally:
        s.close()
print("remote", reach("remote.test", {rport}, socket.AF_INET))
print("node4", reach("node.test", {port}, socket.AF_INET))
print("node6", reach("node.test", {port}, socket.AF_INET6))
print("literal4", connect(socket.AF_INET, ("{HOST_V4}", {port})))
print("literal6", connect(socket.AF_INET6, ("{HOST_V6}", {port})))
"#
        ),
    );
    let reached = host_service.wait_accepted(1);
    println!(
        "figure: {} ; host service accepted {reached}",
        out.replace('\n', ", ")
    );
    assert!(out.contains("remote connected"), "control: {out}");
    assert_eq!(remote.wait_accepted(1), 1, "control: {out}");
    assert_eq!(
        reached, 0,
        "a sandbox reached a host service on the host's own address: {out}"
    );
    for line in [
        "node4 unresolved",
        "node6 unresolved",
        "literal4 refused",
        "literal6 refused",
    ] {
        assert!(out.contains(line), "expected {line:?}: {out}");
    }
    assert_rebinding_event(&env);
}

/// The broker resolves for itself and connects from the host: a handle-less GET to an
/// allowed name that answers the host's address reached the host service through it (a
/// pod in its own network namespace, which cannot reach the host's addresses at all,
/// gets the same). Before the fix: status 200 from the host service (1 accepted); now
/// `dns_rejected` and nothing accepted.
#[test]
fn the_broker_does_not_carry_a_handle_less_call_to_the_hosts_own_address() {
    let (env, host_service, remote, _dns) = world("ar22brk");
    let port = host_service.addr.port().to_string();
    let rport = remote.addr.port().to_string();
    let got: Value = nobody_broker_client(
        &env,
        "web",
        r#"
port, rport = sys.argv[1], sys.argv[2]
print(json.dumps({
    "remote": code(lambda: hb.request("GET", "http://remote.test:%s/" % rport)),
    "node": code(lambda: hb.request("GET", "http://node.test:%s/" % port)),
}))
"#,
        &[&port, &rport],
    );
    let reached = host_service.wait_accepted(1);
    println!("figure: {got} ; host service accepted {reached}");
    assert_eq!(got["remote"], 200, "control: {got}");
    assert_eq!(
        reached, 0,
        "the broker carried a sandbox's call to the host's own address: {got}"
    );
    assert_eq!(got["node"], "dns_rejected", "{got}");
    let audit = env.audit_records();
    let refusal = audit.iter().find(|r| {
        r["action"]
            .as_str()
            .is_some_and(|a| a.contains("node.test"))
            && r["decision"] == "error"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains(HOST_V4) || d.contains(HOST_V6))
    });
    assert!(
        refusal.is_some(),
        "no audit record of the refusal naming the address: {audit:?}"
    );
}

/// A sandbox beside the agent shares the host's network namespace, and with it the
/// ephemeral port range. Binding TCP sockets to port 0 took every port of it (the kernel
/// never hands a bound port to a connect: `__inet_hash_connect` skips buckets a bind
/// made), after which no process in the namespace could open a TCP connection:
/// EADDRNOTAVAIL for another tenant's sandbox, the broker, the guard's upstream side and
/// the host's own daemons; nothing bounded how many sockets a sandbox held (the
/// descriptor limit is per process, and `pids_max` processes each have one). Outside
/// any test, in a namespace of its own with the default range 32768-60999, four
/// processes of one uid took all 28,232 ports in about a second and every connect then
/// failed. Here the range is narrowed to 5,000 ports; `sockets_max` keeps its default.
/// Before the fix (3bbd807): the attacker held 5,000 ports, the victim tenant's 5
/// connects to an allowed server gave 0 (EADDRNOTAVAIL) and the broker's call for it
/// `upstream_error`. Now the attacker holds 4,096, the rest of its sockets are refused
/// with a `sockets_max` event, and the victim and the broker connect.
#[test]
fn a_sandbox_holding_every_ephemeral_port_does_not_cut_another_tenants_connections() {
    let (env, _host_service, remote, _dns) = world("ar22port");
    // The test's own namespace only: a narrow range, so that the attack is quick.
    std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", PORT_RANGE)
        .expect("ip_local_port_range");
    let mut hoarder = Running::spawn(nobody_command(
        &env,
        "web",
        &[],
        &[python(), "-c", PY_PORT_HOARDER, "4"],
    ));
    let held = hoarder.line();
    let held_n: u32 = held
        .strip_prefix("held ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("attacker: {held}"));
    let rport = remote.addr.port().to_string();
    let victim = stdout(&nobody_python(&env, "victim", PY_FIVE_CONNECTS, &[&rport]));
    let brokered = nobody_broker_client(
        &env,
        "victim",
        r#"
print(json.dumps({"remote": code(lambda: hb.request("GET", "http://remote.test:%s/" % sys.argv[1]))}))
"#,
        &[&rport],
    );
    drop(hoarder);
    println!("figure: attacker {held}; victim {victim}; broker {brokered}");
    assert!(
        victim.contains("connected 5"),
        "another tenant lost its connections to a sandbox holding the ports ({held}): {victim}"
    );
    assert_eq!(brokered["remote"], 200, "the broker's call: {brokered}");
    // The count is added first and read after: tasks creating at once are never over
    // (4,097 here once, before the first entry was made only where none was).
    assert!(
        held_n <= SOCKETS_MAX,
        "the attacker held {held_n} sockets past sockets_max {SOCKETS_MAX}"
    );
    let e = env.wait_event("sockets_max", |e| {
        e["reason"] == "sockets_max" && e["hook"] == "sock_create" && e["policy"] == "web"
    });
    println!("event: {e}");
    // Every sandbox has ended: each count went back to 0, and no entry is kept for a
    // cgroup no longer enrolled (a map of sandboxes gone would fill and refuse every
    // other sandbox's sockets; the agent removes those entries, an enrolled cgroup's
    // stays at 0).
    let mut counted = (usize::MAX, usize::MAX);
    for _ in 0..50 {
        let enrolled = map_keys(&env, "HB_ENROLLED");
        let held = map_rows(&env, "HB_SOCKS_HELD");
        counted = (
            held.iter().filter(|r| hex_u64(&r["value"]) != 0).count(),
            held.iter()
                .filter(|r| !enrolled.contains(&r["key"]))
                .count(),
        );
        if counted == (0, 0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        counted,
        (0, 0),
        "sandboxes gone are still counted (sandboxes holding sockets, entries not enrolled)"
    );
}

/// The rows of a pinned map, read with bpftool (`key` and `value` as hex bytes).
fn map_rows(env: &hb_tests::TestEnv, name: &str) -> Vec<Value> {
    let out = std::process::Command::new("bpftool")
        .args(["--json", "map", "dump", "pinned"])
        .arg(env.map_pin(name))
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool map dump {name}");
    let rows: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    rows.as_array().expect("rows").clone()
}

/// The keys of a pinned map (hex bytes, as bpftool gives them).
fn map_keys(env: &hb_tests::TestEnv, name: &str) -> Vec<Value> {
    map_rows(env, name)
        .into_iter()
        .map(|r| r["key"].clone())
        .collect()
}

/// A little-endian `u64` given as bpftool's hex bytes.
fn hex_u64(bytes: &Value) -> u64 {
    let bytes: Vec<u8> = bytes
        .as_array()
        .expect("hex bytes")
        .iter()
        .map(|b| {
            u8::from_str_radix(b.as_str().expect("hex").trim_start_matches("0x"), 16).expect("hex")
        })
        .collect();
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}
