//! A twenty-sixth attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent, the
//! real kernel and a real upstream on the test namespace's `lo`, and asserts the secure
//! outcome.
//!
//! Angle: the two gaps review 24 left open.
//!
//! Found:
//! - the agent's own calls (`Party::Agent`: verify probes and rotators of every tenant's
//!   accounts) shared one pool per (scheme, host, address): an upstream that writes
//!   bytes a moment after its answer to one account's verify probe (once the connection
//!   is idle in the pool) had them read as the answer to the next account's probe on the
//!   connection. On 0aadde1, of 3 accounts whose key works, probed after another
//!   account's probe whose answer was followed by a planted 401: 3 found dead and a
//!   rotation started (a healthy key rotated on a stranger's word; a planted 200 would
//!   keep a dead one). The agent's calls are never pooled now: 0 of 3.
//! - a UDP socket a sandbox connected to a validated address before the host gained it
//!   kept its admission (`HB_SOCK_PEER`), and `cgroup_skb/egress` passed its datagrams
//!   by that admission (or its flow cache) to a host service on the address: on 872c7c5
//!   (review 24's revocation of the allow entry in place) 5 of 5 connected sends
//!   arrived, unconnected ones 0 of 5. An admission of a validated address is marked
//!   (`SOCK_ADMIT_VALIDATED`); on the flow cache's miss path, such a peer the host holds
//!   (`HB_LOCAL_ADDRS`) outside every exception (`LOCAL_EXCEPTED`) meets the full
//!   verdict (its allow entry revoked), and the agent bumps `HB_GENERATION` after each
//!   revocation so cached flows miss: 0 of 5. The cache's hit path is unchanged.
//!
//! Held: a TCP connection established to such an address before the host gained it
//! never reaches a host service there either (probed by hand, no hb: the segments after
//! the change go to the local stack, where the wildcard listener answers the stray ACK
//! with a reset; the client got `ECONNRESET`, the listener accepted nothing).
//!
//! Still open: a socket admitted by a previous agent's programs (no mark) keeps passing
//! by its admission until it closes. Not checked: the ingress side passes datagrams
//! from a connected socket's admitted peer, so a host service on the gained address may
//! still send into the sandbox's socket (which can no longer send to it). The UDP test
//! does not tell
//! the generation bump's part from the miss path's (other flows may take the CPU's
//! cache slot between the sends).

use hb_tests::{
    TestEnv,
    sandboxed::nobody_broker_client,
    worlds::{PythonApi, REFLECTOR_ADDR},
};

const DNS_PORT: u16 = 5726;

/// The provider's API, where both integrations send their keys.
const API: &str = "api.provider.test";

/// The accounts probed, one round each (a probe of an account runs at most once in ten
/// seconds).
const ROUNDS: [&str; 3] = ["r0", "r1", "r2"];

/// The API: every call to `/data` is refused 401 (about something else: the keys work),
/// which sends the account's verify probe; both `verify_url`s answer 200. After its
/// answer to `/verify-p`, once the connection carries the next request (the next
/// bytes the agent writes on it), the handler writes a 401 of its own: an answer the
/// next request on the connection reads as its own. (Timed by the next request rather
/// than by a delay, so that the count does not hang on a race: a fixed delay hits when
/// the next call goes out within it.)
const PLANTING_PY: &str = r#"
import select
PLANTED = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
class H(TlsHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        status = 401 if path == "/data" else 200
        body = ("answer to %s\n" % path).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if path == "/verify-p":
            ready, _, _ = select.select([self.connection], [], [], 10)
            if ready:
                try:
                    self.wfile.write(PLANTED)
                    self.wfile.flush()
                except OSError:
                    pass
"#;

/// Integrations `p` and `q` (bearer, GET, rotated by a rotator that always fails) on
/// the provider's API, with their own `verify_url`s; policy `web` binds both. Accounts
/// [`ROUNDS`] of each, every key a fake made for this file.
struct ProbeWorld {
    env: TestEnv,
    _api: PythonApi,
}

impl ProbeWorld {
    fn start(name: &str) -> Self {
        let api = PythonApi::start(name, DNS_PORT, &[API], PLANTING_PY);
        let integration = |name: &str| {
            format!(
                r#"
[[integration]]
name = "{name}"
auth = "bearer"
hosts = ["{API}"]
methods = ["GET"]
verify_url = "https://{API}/verify-{name}"

[integration.rotation]
exec = ["/bin/false"]
"#
            )
        };
        let body = format!(
            "{}{}\n[[policy]]\nname = \"web\"\nintegrations = [\"p\", \"q\"]\n",
            integration("p"),
            integration("q")
        );
        let keys: Vec<(String, String)> = ROUNDS
            .iter()
            .flat_map(|a| {
                ["p", "q"].map(|i| (i.to_owned(), format!("key-{i}-{a}-5e0c9a7b3d1f4e2a8c6b")))
            })
            .collect();
        let credentials: Vec<(&str, &str, &str)> = keys
            .iter()
            .zip(ROUNDS.iter().flat_map(|a| [a, a]))
            .map(|((i, k), a)| (i.as_str(), *a, k.as_str()))
            .collect();
        let env = api.names.agent(name, "", &body, &credentials);
        Self { env, _api: api }
    }
}

/// An account's verify probe is never answered by bytes an upstream wrote after its
/// answer to another account's probe: each round, a call with `p`'s key is refused 401
/// (its probe: 200, then the planted 401 waits for the connection's next request), then
/// a call with `q`'s (its probe finds the key working: the 401 passes and nothing is
/// rotated). The figure: how many of `q`'s accounts got a rotation.
#[test]
fn a_verify_probe_never_reads_an_answer_planted_after_another_accounts_probe() {
    let w = ProbeWorld::start("review26-probe");
    let script = format!(
        r#"
out = []
for a in {ROUNDS:?}:
    for i in ("p", "q"):
        h = hb.handle(i, a)["handle"]
        out.append(code(lambda: hb.request("GET", "https://{API}/data", handle=h)))
print(json.dumps(out))
"#
    );
    let answers = nobody_broker_client(&w.env, "web", &script, &[]);
    let history = w.env.hb_json(&["rotation", "history"]);
    let rotated: Vec<&serde_json::Value> = history
        .as_array()
        .map(|h| h.iter().filter(|r| r["integration"] == "q").collect())
        .unwrap_or_default();
    println!(
        "figure: q's working keys rotated: {} of {} (answers {answers})",
        rotated.len(),
        ROUNDS.len()
    );
    let p_rotated = history
        .as_array()
        .map_or(0, |h| h.iter().filter(|r| r["integration"] == "p").count());
    assert_eq!(p_rotated, 0, "p's keys work: {history}");
    assert!(
        rotated.is_empty(),
        "q's working keys were found dead by an answer planted after p's probe: {history}"
    );
}

/// The address the host gains during
/// [`a_connected_udp_socket_stops_at_an_address_the_host_gains`]: global unicast, in no
/// default deny range and no exception.
const GAINED: &str = "100.128.0.99";
/// The UDP world's DNS port.
const UDP_DNS_PORT: u16 = 5727;

/// Python for a sandbox beside the agent (`argv[1]`: the port): resolves `udp.test`,
/// connects a UDP socket to it there and sends 5 datagrams (routed away, lost); prints
/// `connected`, waits for a line, then sends 5 datagrams on the connected socket and 5
/// unconnected ones to the same address and port, and prints what each send returned.
const PY_UDP_GAINED: &str = r#"
import json, socket, sys
from collections import Counter
port = int(sys.argv[1])
addr = socket.getaddrinfo("udp.test", port, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect((addr, port))
for _ in range(5):
    c.send(b"before")
print("connected", addr, flush=True)
sys.stdin.readline()
out = {"connected": Counter(), "unconnected": Counter()}
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for kind, send in (("connected", lambda: c.send(b"connected")),
                   ("unconnected", lambda: u.sendto(b"unconnected", (addr, port)))):
    for _ in range(5):
        try:
            send()
            out[kind]["sent"] += 1
        except OSError as e:
            out[kind][e.strerror] += 1
print(json.dumps(out), flush=True)
"#;

/// A UDP socket a sandbox beside the agent connected to a validated address before the
/// host gained it (an address added to an interface, a failover address moved here)
/// reaches no host service on it afterwards: its admission (`HB_SOCK_PEER`) no longer
/// passes its datagrams once the host holds the peer, nor does the flow cache. Here the
/// address is routed out of a veth pair while the sandbox resolves and connects (its
/// datagrams lost there), then added to the namespace's `lo`, where a service listens on
/// the wildcard address and counts what arrives; the datagrams after the change wait
/// for the agent to log the revocation. On 872c7c5 (review 24's revocation in place):
/// connected 5 of 5 arrived, unconnected 0 of 5; now 0 and 0.
#[test]
fn a_connected_udp_socket_stops_at_an_address_the_host_gains() {
    use hb_tests::{
        sandboxed::Running,
        worlds::{gain_address, names_on_lo, nameserver_sandbox, resolver_config, started_agent},
    };
    let _dns = names_on_lo(
        &[REFLECTOR_ADDR, "192.0.2.53"],
        UDP_DNS_PORT,
        &[("udp.test", &[GAINED])],
        600,
    );
    // Somewhere the connect can go before the host holds the address: out of one end of
    // a veth pair whose other end is in this namespace too (nothing answers there).
    for args in [
        "link add hb26a type veth peer name hb26b",
        "link set hb26a up",
        "link set hb26b up",
        &format!("route add {GAINED}/32 dev hb26a"),
    ] {
        let ok = std::process::Command::new("ip")
            .args(args.split(' '))
            .status()
            .expect("ip");
        assert!(ok.success(), "ip {args}");
    }
    let service = std::net::UdpSocket::bind("0.0.0.0:0").expect("host service");
    let port = service.local_addr().expect("port").port().to_string();
    let mut env = started_agent(
        "review26-udp",
        &format!(
            "{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"udp.test\"]\n",
            resolver_config(UDP_DNS_PORT, true, "", &["203.0.113.0/24"])
        ),
    );
    let mut sandbox = Running::spawn(nameserver_sandbox(
        &env,
        "web",
        3,
        &[hb_tests::python(), "-c", PY_UDP_GAINED, &port],
    ));
    assert_eq!(sandbox.line(), format!("connected {GAINED}"));
    gain_address(&mut env, GAINED);
    sandbox.say("go");
    let sent: serde_json::Value = serde_json::from_str(&sandbox.line()).expect("sandbox JSON");
    sandbox.wait();
    // What reached the host service: every datagram sent is on `lo`'s queue by now; a
    // read that waits a second more ends the count.
    service
        .set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .expect("timeout");
    let mut arrived = std::collections::BTreeMap::<String, u32>::new();
    let mut buf = [0u8; 64];
    while let Ok(n) = service.recv(&mut buf) {
        *arrived
            .entry(String::from_utf8_lossy(&buf[..n]).into_owned())
            .or_default() += 1;
    }
    println!("figure: sent {sent}; arrived at the host service {arrived:?}");
    assert!(
        arrived.is_empty(),
        "datagrams reached a host service on an address the host gained: {arrived:?} (sent {sent})"
    );
}
