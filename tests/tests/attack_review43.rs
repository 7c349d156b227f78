//! A forty-third attack review, run as the process inside the sandbox (uid 65534,
//! arbitrary Python): each test performs one attack from a `sandbox run` sandbox against
//! the real agent, the real kernel, real DNS (dnsmasq) and real listeners on the test
//! namespace's `lo`, counts what reached the far side, and asserts the secure outcome.
//!
//! Angle: "cannot send a byte to an address its policy did not validate, never to a
//! private or special range unless carved out" — the ways a destination the hooks judged
//! could still end somewhere else, and the host's own services as that somewhere.
//!
//! Found (fails against 8a073d7):
//! - the host's "own" addresses (`HB_LOCAL_ADDRS`, and the resolvers' and broker's
//!   `host_own` check, attack reviews 22 and 27) were the addresses of its interfaces and
//!   what their prefixes deliver (network, broadcast, subnet-router anycast), read with
//!   `getifaddrs`. What the kernel delivers locally is what its routing tables say is
//!   local, and a `local` route need not be an address: an AnyIP prefix (`ip route add
//!   local 100.129.0.0/24 dev lo`, `ip -6 route add local 2a00:1451::/64 dev lo`, as a
//!   proxy or a load balancer's node sets up to answer a whole block) makes every address
//!   in it the host's. A sandbox reached a host service on the wildcard address through
//!   such an address, by a name whose answer is one (the rebinding trick review 22
//!   closed for interface addresses) and by a static CIDR holding one (review 27's
//!   `0.0.0.0/0` or a provider's block): 4 of 4 connections on 8a073d7 (IPv4 and IPv6,
//!   each way), and 1 of 1 through a route added while the agent ran. The agent now
//!   reads the kernel's routes too (the `local`, `broadcast` and `anycast` routes of the
//!   tables of the default rules, `local`, `main` and `default`, kept current from
//!   rtnetlink's route groups; `hb-agent/src/local_routes.rs`) and holds their prefixes
//!   as delivered here (`LOCAL_DELIVERED`: refused as a destination, never a source):
//!   0 of 4 and 0 of 1, with `dns_rebinding` events for the names.
//!   The broker, which resolves for itself and connects from the host (so for a pod in a
//!   namespace of its own too), carried a handle-less GET there the same way (status 200
//!   from the host service on 8a073d7); now `dns_rejected`.
//!
//! Held (read in 8a073d7's code and the kernel's, not tried here for want of time):
//! - destination-changing options and control messages: `IP_OPTIONS` and `IPV6_RTHDR`
//!   are refused in `cgroup/setsockopt`, and whatever puts a source route or routing
//!   header in a packet another way (a control message, `IPV6_FLOWLABEL_MGR`'s options)
//!   meets `cgroup_skb/egress`, which drops any routing header and LSRR/SSRR;
//!   `IPV6_NEXTHOP`, `IPV6_HOPOPTS`/`DSTOPTS` need `CAP_NET_RAW`, which no sandbox holds;
//! - a connected UDP socket's `sendmsg` with a name: judged (`sendmsg4|6`); with a
//!   control message and no name: the connected peer; `AF_UNSPEC` names on IPv6 are
//!   dropped as none by the kernel, on IPv4 judged by their address;
//! - the resolver: a label holding a dot or odd byte is refused before any pattern, case
//!   is folded, only the question's chain is kept, TTLs are the chain's lowest;
//! - the guard: `Host` with a port, a trailing dot or capitals is normalised before it is
//!   compared, absolute-form targets must agree with `Host`, `CONNECT`, h2c and plain
//!   `Upgrade` are refused;
//! - the error-queue rewrite with an `optlen` past one page (the kernel ignores a
//!   program's buffer then): the program cuts `optlen` to the page it rewrote;
//! - the resolver builds its own upstream query (the client's EDNS options, an ECS
//!   subnet among them, never reach the upstream); `request_key` (whose `dns_resolver`
//!   upcall would look a chosen name up from outside every cgroup) is refused by the
//!   sandbox's seccomp filter, as `keyctl` and `add_key` are.
//!
//! Tried: an IPv6 prefix on `lo` (`2a00:1452::1/64`) is not local whole, unlike IPv4's
//! (ENETUNREACH to its other addresses): nothing to hold.
//!
//! Everything lives in the test's own network namespace: addresses and the AnyIP routes
//! on `lo`, the "remote" server on an excepted TEST-NET address as in every other test.

use std::{process::Command, thread, time::Duration};

use hb_tests::{
    TcpProbe,
    sandboxed::nobody_broker_client,
    sh,
    worlds::{attack_as, names_on_lo, resolver_config, started_agent},
};
use serde_json::Value;

const DNS_PORT: u16 = 5543;
/// Prefixes the host delivers locally by a `local` route alone (no address in them).
const ANYIP4: &str = "100.129.0.0/24";
const ANYIP6: &str = "2a00:1451::/64";
/// The addresses in them that the attacker's name answers, and that the literals use.
const NAMED4: &str = "100.129.0.5";
const NAMED6: &str = "2a00:1451::5";
const LITERAL4: &str = "100.129.0.6";
const LITERAL6: &str = "2a00:1451::6";
/// A remote server (an exception, as the tests' "public" addresses are): the control.
const REMOTE: &str = "203.0.113.10";

/// The sandbox's Python: resolves `anyip.test` (both families) and connects to the host
/// service's port there, connects to the two literals (a static CIDR holds them), and
/// the control, `remote.test`. One line per try: `<what> connected|refused|unresolved`.
const PY_REACH: &str = r#"
import socket, sys
port, rport = int(sys.argv[1]), int(sys.argv[2])
def connect(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3)
    try:
        s.connect(addr); return "connected"
    except OSError:
        return "refused"
    finally:
        s.close()
def reach(name, port, fam):
    try:
        infos = socket.getaddrinfo(name, port, fam, socket.SOCK_STREAM)
    except socket.gaierror:
        return "unresolved"
    return connect(fam, infos[0][4])
print("remote", reach("remote.test", rport, socket.AF_INET))
print("named4", reach("anyip.test", port, socket.AF_INET))
print("named6", reach("anyip.test", port, socket.AF_INET6))
print("literal4", connect(socket.AF_INET, (sys.argv[3], port)))
print("literal6", connect(socket.AF_INET6, (sys.argv[4], port)))
"#;

/// A prefix the host delivers by a `local` route (AnyIP) opens no host service to a
/// sandbox: not through a name whose answer lies in it, nor through a static CIDR that
/// holds it. The host service listens on the wildcard address, both families, as the
/// kubelet or sshd do. Before the fix: 4 of 4 connections reached it; now 0, and the
/// names are refused as rebinding.
#[test]
fn a_prefix_the_host_routes_locally_opens_no_host_service() {
    let _dns = names_on_lo(
        &[REMOTE, "192.0.2.53"],
        DNS_PORT,
        &[
            ("anyip.test", &[NAMED4, NAMED6]),
            ("remote.test", &[REMOTE]),
        ],
        60,
    );
    sh(&format!("ip route add local {ANYIP4} dev lo"));
    sh(&format!("ip -6 route add local {ANYIP6} dev lo"));
    let host_service = TcpProbe::bind("[::]:0");
    let remote = TcpProbe::bind(&format!("{REMOTE}:0"));
    let env = started_agent(
        "ar43anyip",
        &format!(
            "{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"anyip.test\", \"remote.test\"]\n\
             allow_cidrs = [\"100.129.0.0/16\", \"2a00:1451::/32\"]\n",
            resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"])
        ),
    );
    let script = format!(
        "import sys\nsys.argv = ['x', '{port}', '{rport}', '{LITERAL4}', '{LITERAL6}']\n{PY_REACH}",
        port = host_service.addr.port(),
        rport = remote.addr.port(),
    );
    let out = attack_as(&env, "web", &script);
    assert_eq!(remote.wait_accepted(1), 1, "control: {out}");
    // Every connect above completed (or failed) before the script returned; a moment
    // more lets the probe's thread accept what is in the backlog.
    thread::sleep(Duration::from_millis(300));
    let reached = host_service.accepted();
    println!(
        "figure: {reached} of 4 connections through an AnyIP prefix (a name's answer and a \
         static CIDR, IPv4 and IPv6) reached a host service; the sandbox saw {}",
        out.replace('\n', ", ")
    );
    assert!(out.contains("remote connected"), "control: {out}");
    assert_eq!(
        reached, 0,
        "a sandbox reached a host service through a locally routed prefix: {out}"
    );
    for line in [
        "named4 unresolved",
        "named6 unresolved",
        "literal4 refused",
        "literal6 refused",
    ] {
        assert!(out.contains(line), "expected {line:?}: {out}");
    }
    let e = env.wait_event("dns_rebinding for anyip.test", |e| {
        e["reason"] == "dns_rebinding" && e["name"] == "anyip.test"
    });
    println!("event: {e}");
}

/// A `local` route added while the agent runs is held from then on: the agent hears the
/// route change (rtnetlink's route groups) as it hears address changes. Before the fix:
/// the connect reached the host service (1 of 1); now 0.
#[test]
fn a_local_route_added_while_the_agent_runs_opens_no_host_service() {
    let _dns = names_on_lo(&[REMOTE, "192.0.2.53"], DNS_PORT, &[], 60);
    let host_service = TcpProbe::bind("[::]:0");
    let mut env = started_agent(
        "ar43late",
        &format!(
            "{}\n[[policy]]\nname = \"web\"\nallow_cidrs = [\"100.129.0.0/16\"]\n",
            resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"])
        ),
    );
    let changes = env
        .agent()
        .log_text()
        .matches("local addresses changed")
        .count();
    let added = Command::new("ip")
        .args(["route", "add", "local", ANYIP4, "dev", "lo"])
        .status()
        .expect("ip route add");
    assert!(added.success(), "ip route add local {ANYIP4}");
    // The agent logs the change once the kernel's map holds it; an agent that does not
    // watch routes never does (then a bounded wait).
    for _ in 0..100 {
        if env
            .agent()
            .log_text()
            .matches("local addresses changed")
            .count()
            > changes
        {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let script = format!(
        "import socket\ns = socket.socket(); s.settimeout(3)\ntry:\n    s.connect(('{LITERAL4}', {port})); print('connected')\nexcept OSError as e:\n    print('refused', e.errno)\n",
        port = host_service.addr.port(),
    );
    let out = attack_as(&env, "web", &script);
    thread::sleep(Duration::from_millis(300));
    let reached = host_service.accepted();
    println!(
        "figure: {reached} of 1 connections to {LITERAL4} (a local route added after the \
         agent started) reached a host service; the sandbox saw {}",
        out.trim()
    );
    assert_eq!(
        reached, 0,
        "a sandbox reached a host service through a local route added later: {out}"
    );
    assert!(out.contains("refused"), "{out}");
    // The kernel's map holds the prefix, as the operator's dump shows it.
    let dump = hb_tests::stdout(&env.hb(&["maps", "dump", "local_addrs"]));
    assert!(dump.contains(ANYIP4), "maps dump local_addrs: {dump}");
}

/// The broker resolves for itself and connects from the host: a handle-less GET to an
/// allowed name whose answer lies in an AnyIP prefix reached the host service through it
/// (what a pod in its own network namespace, which cannot reach the host's addresses
/// itself, gets too). Before the fix: status 200 from the host service (1 accepted); now
/// `dns_rejected` and nothing accepted.
#[test]
fn the_broker_carries_no_call_into_a_prefix_the_host_routes_locally() {
    let _dns = names_on_lo(
        &[REMOTE, "192.0.2.53"],
        DNS_PORT,
        &[("anyip.test", &[NAMED4]), ("remote.test", &[REMOTE])],
        60,
    );
    sh(&format!("ip route add local {ANYIP4} dev lo"));
    let host_service = TcpProbe::bind("[::]:0");
    let remote = TcpProbe::bind(&format!("{REMOTE}:0"));
    let env = started_agent(
        "ar43brk",
        &format!(
            "[broker]\nsocket_mode = \"0666\"\n{}\n[[policy]]\nname = \"web\"\n\
             allow_domains = [\"anyip.test\", \"remote.test\"]\n",
            resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"])
        ),
    );
    let port = host_service.addr.port().to_string();
    let rport = remote.addr.port().to_string();
    let got: Value = nobody_broker_client(
        &env,
        "web",
        r#"
port, rport = sys.argv[1], sys.argv[2]
print(json.dumps({
    "remote": code(lambda: hb.request("GET", "http://remote.test:%s/" % rport)),
    "anyip": code(lambda: hb.request("GET", "http://anyip.test:%s/" % port)),
}))
"#,
        &[&port, &rport],
    );
    thread::sleep(Duration::from_millis(300));
    let reached = host_service.accepted();
    println!("figure: {got} ; host service accepted {reached} of 1");
    assert_eq!(got["remote"], 200, "control: {got}");
    assert_eq!(
        reached, 0,
        "the broker carried a sandbox's call into a locally routed prefix: {got}"
    );
    assert_eq!(got["anyip"], "dns_rejected", "{got}");
}
