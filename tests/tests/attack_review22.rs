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
//! `egress.exception_cidrs` carves them out, in both resolvers.
//!
//! Everything lives on `lo` in the test's own network namespace: the "host's address" is
//! an ordinary global unicast address the test gives `lo` (never routed anywhere: the
//! namespace has no other link), the "remote" server sits on an excepted TEST-NET
//! address as in every other test.

use hb_tests::{
    TcpProbe,
    sandboxed::nobody_broker_client,
    worlds::{attack_as, names_on_lo, resolver_config, started_agent},
};
use serde_json::Value;

const DNS_PORT: u16 = 5522;
/// The host's own address: global unicast, in no default deny range and no exception.
const HOST_V4: &str = "100.128.0.77";
const HOST_V6: &str = "2a00:1450::77";
/// A remote server (an exception, as the tests' "public" addresses are).
const REMOTE: &str = "203.0.113.10";

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
            "[broker]\nsocket_mode = \"0666\"\n{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"node.test\", \"remote.test\"]\n",
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
