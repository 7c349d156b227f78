//! A third attack review, run as the process inside the sandbox: each test performs one
//! attack from a sandbox (uid 65534, arbitrary Python) against the real agent, real
//! kernel and real upstreams on the test namespace's `lo`, and asserts the secure
//! outcome. A test marked `#[ignore = "open: …"]` is a break found and not yet fixed:
//! it fails against the current agent.
//!
//! Angle: cross-tenant denial through what the node's sandboxes share — the policy's
//! share of the allow maps, the policy's share of upstream lookups.

use std::{
    process::Output,
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    PythonServer, TcpProbe, TestEnv, private_netns,
    provider::{Provider, bearers},
    python,
    sandboxed::{
        PY_UDP_ASK, Running, broker_client_script, nobody_command, nobody_python,
        nobody_python_many, nobody_run, udp_ask, udp_flooder, unix_secs_in,
    },
    stdout,
};
use serde_json::Value;

const DNS_PORT: u16 = 5431;

/// The agent's resolver forwards to the test's DNS server; policy `web` allows every
/// name under `wild.test`; `203.0.113.0/24` and the benchmark net `198.18.0.0/15` are
/// exceptions to the deny ranges (test addresses standing for public ones).
fn config(extra_dns: &str) -> String {
    format!(
        r#"
[dns]
listen = "127.0.0.1:5330"
redirect = true
upstreams = ["127.0.0.1:{DNS_PORT}"]
min_ttl_secs = 5
max_ttl_secs = 3600
{extra_dns}

[egress]
exception_cidrs = ["203.0.113.0/24", "198.18.0.0/15"]

[[policy]]
name = "web"
guard = false
allow_domains = ["*.wild.test"]
"#
    )
}

/// A DNS server (Python, UDP) on 127.0.0.1:[`DNS_PORT`]:
/// - `victim.wild.test` → 203.0.113.10, TTL 300 (a name a legitimate sandbox uses);
/// - `n<N>.wild.test` → 16 addresses of its own in 198.18.0.0/15, TTL 3600 (the
///   attacker's names: each distinct, as a CDN's or object store's zone gives);
/// - names under `hold.wild.test` are never answered (a slow or unreachable zone);
/// - any other name → 203.0.113.12, TTL 60.
fn upstream() -> PythonServer {
    PythonServer::start(&format!(
        r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", {DNS_PORT}))
def rr(ip, ttl):
    return b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + socket.inet_aton(ip)
while True:
    q, a = s.recvfrom(512)
    end = 12
    while q[end] != 0: end += q[end] + 1
    labels = []; i = 12
    while q[i]: labels.append(q[i + 1:i + 1 + q[i]].decode().lower()); i += 1 + q[i]
    name = ".".join(labels)
    qtype = struct.unpack("!H", q[end + 1:end + 3])[0]
    if name.endswith(".hold.wild.test"): continue
    if qtype != 1:
        rrs = []
    elif name == "victim.wild.test":
        rrs = [rr("203.0.113.10", 300)]
    elif labels[0].startswith("n") and labels[0][1:].isdigit():
        n = int(labels[0][1:])
        rrs = [rr("198.%d.%d.%d" % (18 + ((n * 16 + j) >> 16), ((n * 16 + j) >> 8) & 255, (n * 16 + j) & 255), 3600) for j in range(16)]
    else:
        rrs = [rr("203.0.113.12", 60)]
    s.sendto(q[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, len(rrs), 0, 0) + q[12:end + 5] + b"".join(rrs), a)
"#
    ))
}

/// Python for a sandbox: A queries for `n<first>.wild.test` … `n<last-1>.wild.test`, one
/// after the other over UDP to a documentation nameserver (redirected to the resolver);
/// prints `asked N answered M addresses K`.
const PY_MANY_NAMES: &str = r#"
import socket, struct, sys
first, last = int(sys.argv[1]), int(sys.argv[2])
def q(name, i):
    h = struct.pack("!HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0)
    return h + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(3)
c.connect(("192.0.2.53", 53))
asked = answered = addrs = 0
for n in range(first, last):
    c.send(q("n%d.wild.test" % n, n)); asked += 1
    try:
        d = c.recv(1500)
    except OSError:
        continue
    if d[3] & 15 == 0:
        answered += 1; addrs += struct.unpack("!H", d[6:8])[0]
print("asked", asked, "answered", answered, "addresses", addrs, flush=True)
"#;

/// 1(a) The attack: a victim sandbox of policy `web` resolves `victim.wild.test`
/// (203.0.113.10, TTL 300) and connects. Another sandbox of the same policy then
/// resolves ~1,100 distinct names under the allowed zone, 16 addresses each (about
/// 17,600: past the policy's default share of the allow maps, 16,384), each with a
/// longer TTL. The policy at its share drops its soonest-expiring addresses, and the
/// victim's was learned first with the shortest TTL: well within its TTL the victim's
/// connect to the address it was just told was refused (EPERM), and stayed refused while
/// the attacker kept asking. A sandbox that did nothing lost service. Now each sandbox
/// holds its own claims within `max_ips_per_cgroup` and trades only those.
#[test]
fn resolving_many_names_does_not_evict_another_sandboxs_validated_address() {
    hb_tests::require_root();
    private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _dns = upstream();
    let probe = TcpProbe::bind("203.0.113.10:8080");
    let mut env = TestEnv::new("evict", &config(""));
    env.start_agent();

    let said = udp_ask(&env, "web", &["victim.wild.test"]);
    assert!(
        said.contains("victim.wild.test rcode 0 203.0.113.10"),
        "{said}"
    );
    let before = hb_tests::sandbox_probe(&env, "web", "tcp", "203.0.113.10", 8080);
    assert_eq!(before, "OK", "the victim connects to its validated address");

    let flood = nobody_run(&env, "web", &[python(), "-c", PY_MANY_NAMES, "0", "1100"]);
    let rows = env.allow_rows();
    let victim_row = rows.iter().any(|r| r["ip"] == "203.0.113.10");
    let after = hb_tests::sandbox_probe(&env, "web", "tcp", "203.0.113.10", 8080);
    // Resolving again does not help for long: with the policy at its share, the next
    // name any sandbox of the policy resolves drops the soonest-expiring address again.
    let again = nobody_run(
        &env,
        "web",
        &[
            python(),
            "-c",
            &format!(
                "{PY_UDP_ASK}\nimport errno\ntry:\n    socket.create_connection(('203.0.113.10', 8080), timeout=3); print('connect OK')\nexcept OSError as e:\n    print('connect', errno.errorcode.get(e.errno, e.errno))"
            ),
            "victim.wild.test",
            "other.wild.test",
        ],
    );
    println!(
        "attacker: {} | allow4 rows: {} | victim's address still allowed: {victim_row} | \
         victim's connect within its TTL: {after} | resolve victim, then another name, \
         then connect: {:?}",
        flood.trim(),
        rows.len(),
        again.trim()
    );
    assert!(
        flood.contains("answered 1100"),
        "the attacker's names were all answered: {flood}"
    );
    assert_eq!(
        after,
        "OK",
        "the victim's connect to the address it resolved (TTL 300) was refused after \
         another sandbox of its policy resolved many names (attacker: {})",
        flood.trim()
    );
    assert!(victim_row, "the victim's row is still in the allow map");
    assert!(
        again.contains("victim.wild.test rcode 0 203.0.113.10") && again.contains("connect OK"),
        "a victim that resolved its name and then another was refused: {again}"
    );
    assert!(
        probe.wait_accepted(3) >= 3,
        "the three connects reached the listener"
    );
}

/// 1(b) The attack: four sandboxes of policy `web` each ask for a fresh name under a
/// zone whose server never answers, every 2 ms. Each is held to its own share of
/// upstream lookups (64, a quarter of the policy's 256), but four shares are the
/// policy's whole share: a fifth sandbox of the policy, which asks for three ordinary
/// names once, must still get them answered.
#[test]
fn four_flooding_sandboxes_leave_a_fifths_lookups_answered() {
    hb_tests::require_root();
    private_netns(&["192.0.2.53"]);
    let _dns = upstream();
    let mut env = TestEnv::new("fourfill", &config(""));
    env.start_agent();

    let mut flooders: Vec<Running> = (0..4)
        .map(|_| udp_flooder(&env, "web", "8", "hold.wild.test", "0.002"))
        .collect();
    thread::sleep(Duration::from_millis(1500));
    let said = udp_ask(
        &env,
        "web",
        &["v1.wild.test", "v2.wild.test", "v3.wild.test"],
    );
    let lines: Vec<String> = flooders.iter_mut().map(Running::line).collect();
    let busy = env
        .hb(&["events", "--json"])
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(|e| e["reason"] == "dns_policy_busy")
        .count();
    println!("victim: {said:?} | flooders: {lines:?} | dns_policy_busy events: {busy}");
    for name in ["v1.wild.test", "v2.wild.test", "v3.wild.test"] {
        assert!(
            said.contains(&format!("{name} rcode 0 203.0.113.12")),
            "a sandbox that asked for three names once lost them to four others' floods \
             (dns_policy_busy events: {busy}): {said}"
        );
    }
}

const BROKER_DNS_PORT: u16 = 5432;
const KEY: &str = "key-acct-5e4d3c2b1a09f8e7d6c5b4a39281706f";

/// An agent of the provider's world `p` (its CA trusted, its resolver on
/// [`BROKER_DNS_PORT`]) with the integration `svc` (bearer, host `api.test`; `rest` ends
/// its table and adds the policies), the vault holding `svc`/`bot` = `key`; started.
fn svc_agent(name: &str, p: &Provider, key: &str, rest: &str) -> TestEnv {
    let config = format!(
        "{head}\n[[integration]]\nname = \"svc\"\nauth = \"bearer\"\nhosts = [\"api.test\"]\n{rest}",
        head = hb_tests::tls_broker_config(&p.ca.cert, BROKER_DNS_PORT, ""),
    );
    let mut env = TestEnv::new(name, &config);
    env.init_vault(&[("svc", "bot", key)]);
    env.start_agent();
    env
}

/// Runs `body` as a [`broker_client_script`] as nobody in a fresh sandbox of `policy`.
fn run_broker_script(env: &TestEnv, policy: &str, body: &str) -> Output {
    nobody_python(env, policy, &broker_client_script(env, body), &[])
}

/// A flooder: from the wall-clock second in `argv[1]` (all flooders start together),
/// for 6 s, GETs through its own handle from two connections as fast as it can; prints
/// the answers counted.
const BROKER_FLOOD: &str = r#"
h = hb.handle("svc", "bot")["handle"]
time.sleep(max(0, float(sys.argv[1]) - time.time()))
got = []
def worker():
    c = Client(SOCK)
    stop = time.time() + 6
    while time.time() < stop:
        got.append(code(lambda: c.request("GET", "https://api.test/plain?step=flood", handle=h)))
threads = [threading.Thread(target=worker) for _ in range(2)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(dict(Counter(str(x) for x in got))), flush=True)
"#;

/// The victim: one POST through its own handle.
const BROKER_VICTIM: &str = r#"
h = hb.handle("svc", "bot")["handle"]
print(json.dumps({"post": code(lambda: hb.request("POST", "https://api.test/plain?step=victim", handle=h, body="x"))}), flush=True)
"#;

/// 1(c) The attack: three sandboxes flood the same account at once, each alone past
/// `spike_hard_cap`. When a spike could be pinned on at most two callers, the detector
/// held the whole account, every caller together: a sandbox of another policy (another
/// tenant) that only ever made one write was refused (`policy_denied`, quarantined) for
/// `quarantine_secs`. The secure outcome: the flooders are held, the bystander's write
/// goes through.
#[test]
fn a_flood_spread_over_three_sandboxes_does_not_hold_an_innocent_tenant() {
    hb_tests::require_root();
    let p = Provider::start("spread", BROKER_DNS_PORT, None);
    let env = p.shared_account_agent("spread", KEY);

    let flood = broker_client_script(&env, BROKER_FLOOD);
    let floods = nobody_python_many(&env, "web", &flood, &[&unix_secs_in(8)], 3);
    let victim = stdout(&run_broker_script(&env, "ops", BROKER_VICTIM));
    let records = env.audit_records();
    let actions: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "detector" && r["detector"] == "rate_spike")
        .collect();
    let holds: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "detector_action")
        .collect();
    println!(
        "flooders: {floods:?} | victim: {} | rate_spike: {actions:?} | actions: {holds:?}",
        victim.trim()
    );
    assert!(
        !actions.is_empty(),
        "the flood was a rate_spike (else this test proves nothing): {floods:?}"
    );
    assert!(
        victim.contains("\"post\": 200"),
        "a tenant that made one write was held by a quarantine three other sandboxes \
         raised: {victim} (spike: {actions:?})"
    );
    assert_eq!(
        bearers(&p.api, "victim").len(),
        1,
        "the write reached the API"
    );
    let _ = std::fs::remove_dir_all(&p.dir);
}

const ORACLE_KEY: &str = "key-9f3a61c0d2b84e57a1c6f0e3d9b27c48";

/// The oracle attack: knowing the credential's shape (`key-` and 32 lower-case hex
/// digits, as a token family's prefix and alphabet are public) and the first four
/// digits past its prefix (as a dashboard might show `key-9f3a…`), the sandbox sends
/// candidate runs in the URL of a GET through its handle to an integration host whose
/// answer echoes the path (`ok GET /path?…`, as a 404 page or any echoing API does).
/// The scrubber cuts every run of 8 of the injected key's own characters from the
/// answer, so which candidates come back cut says which are pieces of the key: the
/// first window from 65,536 candidates of `key-9f3aXXXX`, then one character at a
/// time from 16. (Without the four known digits the first window is one of 16⁸: runs
/// across the public prefix's end are no pieces of the key.) A refused call is read as "a candidate of this batch hit": the attacker
/// takes a fresh handle and splits the batch in halves (at most 200 calls). Prints the
/// calls it made, the error codes its calls and handle requests got, and the SHA-256 of what it rebuilt (never the
/// value).
const PY_ORACLE: &str = r#"
import hashlib
h = hb.handle("svc", "bot")["handle"]
HEX = "0123456789abcdef"
calls = 0
codes = []
handle_codes = []
def cut(cands):
    global calls
    calls += 1
    try:
        r = hb.request("GET", "https://api.test/plain?g=" + "~".join(cands) + "&step=oracle", handle=h)
    except BrokerError as e:
        codes.append(e.code)
        return None
    toks = r["body"].split("g=", 1)[1].split("&step=")[0].split("~")
    return [c for c, t in zip(cands, toks) if t != c]
def find(cands):
    global h
    if calls >= 200:
        return []
    hit = cut(cands)
    if hit is not None:
        return hit
    try:
        h = hb.handle("svc", "bot")["handle"]
    except BrokerError as e:
        handle_codes.append(e.code)
    if len(cands) == 1:
        return cands
    mid = len(cands) // 2
    return find(cands[:mid]) or find(cands[mid:])
first = ["key-9f3a" + "%04x" % i for i in range(65536)]
known = None
for i in range(0, len(first), 500):
    hit = find(first[i:i + 500])
    if hit:
        known = hit[0]
        break
while known and len(known) < 36 and calls < 200:
    hit = find([known[-7:] + c for c in HEX])
    if len(hit) != 1:
        break
    known += hit[0][-1]
print(json.dumps({"calls": calls, "len": len(known or ""), "codes": codes,
                  "handle_codes": handle_codes,
                  "sha256": hashlib.sha256((known or "").encode()).hexdigest()}), flush=True)
"#;

/// A bystander of the same account, in another sandbox: one GET through its own handle
/// after the attacker was barred.
const PY_BYSTANDER: &str = r#"
h = hb.handle("svc", "bot")["handle"]
r = hb.request("GET", "https://api.test/plain?step=bystander", handle=h)
print(json.dumps({"status": r["status"], "body": r["body"]}), flush=True)
"#;

/// Angle 2, reflection as an oracle: the secure outcome is that the sandbox cannot
/// rebuild the credential from which of its guesses the scrubber cuts. Its first call
/// that holds a piece of the key is refused (`credential_fragment`) before it goes
/// upstream, and after it every call and handle request of the attacker for the account
/// gets that same answer; the account gets a `reflection` signal; another sandbox of
/// the account is served.
#[test]
fn which_guesses_the_scrubber_cuts_does_not_rebuild_the_key() {
    hb_tests::require_root();
    let p = Provider::start("oracle", BROKER_DNS_PORT, None);
    let env = svc_agent(
        "oracle",
        &p,
        ORACLE_KEY,
        "methods = [\"GET\"]\n\n[[policy]]\nname = \"web\"\nintegrations = [\"svc\"]\n",
    );
    let out = run_broker_script(&env, "web", PY_ORACLE);
    let said = stdout(&out);
    let got: Value = serde_json::from_str(said.trim()).unwrap_or_else(|_| {
        panic!(
            "attacker output: {said} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let sent = bearers(&p.api, "oracle");
    assert!(
        !sent.is_empty() && sent.iter().all(|b| b == ORACLE_KEY),
        "the calls carried the key (else this proves nothing)"
    );
    let rebuilt = got["sha256"] == hb_tests::sha256_hex(ORACLE_KEY);
    let records = std::fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    let signalled = records.contains("\"reflection\"");
    println!(
        "attacker calls: {} | rebuilt length: {} | rebuilt the key: {rebuilt} | reflection signalled: {signalled}",
        got["calls"], got["len"]
    );
    assert!(
        !rebuilt,
        "the sandbox rebuilt the injected key from which guesses the scrubber cut, in {} \
         calls (reflection signalled: {signalled})",
        got["calls"]
    );
    // No request that held a piece of the key (8 of its own characters, past `key-`)
    // reached the upstream.
    let key_runs: Vec<String> = ORACLE_KEY.as_bytes()[4..]
        .windows(8)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    for r in p.api.requests() {
        let path = r["path"].as_str().unwrap_or_default().to_ascii_lowercase();
        let hit = key_runs.iter().find(|run| path.contains(run.as_str()));
        assert!(
            hit.is_none(),
            "a guess holding a piece of the key went upstream"
        );
    }
    // Barred after its first hit: every call it made after is refused with the one
    // fixed error, and so is every handle it asked for (past `handles_per_minute`, the
    // handle rate limit answers first).
    let list = |key: &str| -> Vec<String> {
        got[key]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (codes, handle_codes) = (list("codes"), list("handle_codes"));
    let served = got["calls"].as_u64().unwrap_or(0) - codes.len() as u64;
    println!(
        "attacker calls served: {served} | refused: {} | handle requests refused: {}",
        codes.len(),
        handle_codes.len()
    );
    assert!(
        !codes.is_empty() && codes.iter().all(|c| c == "credential_fragment"),
        "the attacker's calls were not refused with credential_fragment after its first \
         hit: {codes:?}"
    );
    assert!(
        handle_codes
            .first()
            .is_some_and(|c| c == "credential_fragment")
            && handle_codes
                .iter()
                .all(|c| c == "credential_fragment" || c == "rate_limited"),
        "the attacker got a handle for the account after its first hit: {handle_codes:?}"
    );
    assert_eq!(
        sent.len() as u64,
        served,
        "a refused call reached the upstream"
    );
    assert!(signalled, "the account got no reflection signal");
    for word in ["\"credential_fragment\"", "\"request_fragment\""] {
        assert!(records.contains(word), "no {word} record in the audit log");
    }
    assert!(
        !records.contains(ORACLE_KEY) && !records.contains(&ORACLE_KEY[4..20]),
        "the audit log holds the key"
    );
    // Another sandbox of the same account keeps full service.
    let out = run_broker_script(&env, "web", PY_BYSTANDER);
    let said = stdout(&out);
    let bystander: Value = serde_json::from_str(said.trim()).unwrap_or_else(|_| {
        panic!(
            "bystander output: {said} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    println!("bystander: status {}", bystander["status"]);
    assert_eq!(bystander["status"], 200, "{bystander}");
    assert_eq!(
        bearers(&p.api, "bystander"),
        [ORACLE_KEY],
        "the bystander's call"
    );
    let _ = std::fs::remove_dir_all(&p.dir);
}

/// A plain-HTTP upstream on 203.0.113.10:80: a request for `/hold` is read and never
/// answered (the connection stays open, as a slow API or a long poll); any other gets
/// 200 `served` and the connection closes.
fn holding_http() -> PythonServer {
    PythonServer::start(
        r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("203.0.113.10", 80)); s.listen(4096)
held = []
def serve(c):
    d = b""
    while b"\r\n\r\n" not in d:
        x = c.recv(4096)
        if not x: return
        d += x
    if d.startswith(b"GET /hold"):
        held.append(c); return
    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nserved"); c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#,
    )
}

/// Python for a sandbox: resolves `victim.wild.test`, opens `argv[1]` connections to it
/// on port 80, each sending `GET /hold` (never answered), prints `holding N` and keeps
/// them for `argv[2]` seconds.
const PY_HOLD_GUARD: &str = r#"
import socket, sys, time
socket.getaddrinfo("victim.wild.test", 80)
socks = []
for _ in range(int(sys.argv[1])):
    try:
        c = socket.create_connection(("203.0.113.10", 80), timeout=3)
        c.sendall(b"GET /hold HTTP/1.1\r\nHost: victim.wild.test\r\n\r\n")
        socks.append(c)
    except OSError:
        pass
print("holding", len(socks), flush=True)
time.sleep(float(sys.argv[2]))
"#;

/// Python for a sandbox: one plain-HTTP GET to `victim.wild.test`; prints the answer's
/// body or the error.
const PY_GET: &str = r#"
import socket
try:
    socket.getaddrinfo("victim.wild.test", 80)
    c = socket.create_connection(("203.0.113.10", 80), timeout=5)
    c.sendall(b"GET /served HTTP/1.1\r\nHost: victim.wild.test\r\n\r\n")
    d = b""
    while True:
        x = c.recv(4096)
        if not x: break
        d += x
    print("answer", d.split(b"\r\n\r\n", 1)[-1].decode() or "(closed empty)", flush=True)
except OSError as e:
    print("error", e, flush=True)
"#;

/// 1(b) again, on the guard: four sandboxes of a guarded policy each hold their share
/// of guarded connections (256, a quarter of `guard.max_connections_per_policy`) open
/// to an allowed name; a fifth sandbox of the policy, which makes one plain GET to the
/// same allowed name, must still be served.
#[test]
fn four_sandboxes_holding_guarded_connections_leave_a_fifth_served() {
    hb_tests::require_root();
    private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _dns = upstream();
    let _http = holding_http();
    let cfg = config("").replace("guard = false\n", "");
    let rc = std::env::temp_dir().join(format!("hb-guardfill-{}.conf", std::process::id()));
    std::fs::write(&rc, "nameserver 192.0.2.53\n").expect("resolv.conf");
    let rc_path = rc.to_str().expect("UTF-8").to_owned();
    let mut env = TestEnv::new("guardfill", &cfg);
    env.start_agent();
    let sandbox_cmd = |args: &[&str]| {
        nobody_command(
            &env,
            "web",
            &["--ro-bind", &rc_path, "/etc/resolv.conf"],
            args,
        )
    };

    let before = stdout(
        &sandbox_cmd(&[python(), "-c", PY_GET])
            .output()
            .expect("victim"),
    );
    assert!(
        before.contains("answer served"),
        "the GET is served when nobody holds connections: {before}"
    );
    let mut holders: Vec<Running> = (0..4)
        .map(|_| Running::spawn(sandbox_cmd(&[python(), "-c", PY_HOLD_GUARD, "256", "20"])))
        .collect();
    let held: Vec<String> = holders.iter_mut().map(Running::line).collect();
    let victim = sandbox_cmd(&[python(), "-c", PY_GET])
        .output()
        .expect("victim");
    let victim = stdout(&victim);
    drop(holders);
    let _ = std::fs::remove_file(&rc);
    let busy = env
        .hb(&["events", "--json"])
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .filter(|e| e["reason"] == "guard_busy")
        .count();
    println!(
        "holders: {held:?} | victim: {} | guard_busy events: {busy}",
        victim.trim()
    );
    assert!(
        held.iter().all(|h| h.starts_with("holding ")),
        "the holders ran: {held:?}"
    );
    assert!(
        victim.contains("answer served"),
        "a sandbox that made one GET was refused while four others held the policy's \
         guarded connections (guard_busy events: {busy}): {victim}"
    );
}

/// Python for a sandbox: opens `argv[2]` connections to the broker at `argv[1]` and
/// keeps each busy with a `GET /v1/whoami` every 3 s for `argv[3]` seconds (never idle,
/// never slow); prints `holding N answered M` once all are open and asked once.
const PY_HOLD_BROKER: &str = r#"
import socket, sys, time
path, n, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
REQ = b"GET /v1/whoami HTTP/1.1\r\nHost: hb\r\n\r\n"
socks = []
for _ in range(n):
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(path); s.settimeout(5); socks.append(s)
    except OSError:
        pass
def ask(s):
    try:
        s.sendall(REQ); return s.recv(65536).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
ok = sum(ask(s) for s in socks)
print("holding", len(socks), "answered", ok, flush=True)
end = time.time() + secs
while time.time() < end:
    time.sleep(3)
    for s in socks: ask(s)
"#;

/// Python for a sandbox: one `GET /v1/whoami` on the broker at `argv[1]`, waiting at
/// most 10 s; prints the status line or the error.
const PY_WHOAMI: &str = r#"
import socket, sys
try:
    s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
    s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n")
    print("answer", s.recv(65536).split(b"\r\n")[0].decode(), flush=True)
except OSError as e:
    print("error", e, flush=True)
"#;

/// 1(c) again, across policies: the broker serves `broker.max_connections` (256)
/// connections at once for the whole node, and each caller may hold
/// `broker.max_connections_per_caller` (32) of them. Eight sandboxes (of one policy)
/// each keep their 32 busy; a sandbox of another policy — another tenant, which makes
/// one call — must still be answered.
#[test]
fn eight_sandboxes_holding_broker_connections_leave_another_tenant_served() {
    hb_tests::require_root();
    private_netns(&[]);
    let mut env = TestEnv::new(
        "brokerfill",
        r#"
[broker]
socket_mode = "0666"

[dns]
listen = "127.0.0.1:5300"

[[policy]]
name = "web"

[[policy]]
name = "ops"
"#,
    );
    env.start_agent();
    let sock = env.broker_socket().display().to_string();
    let sandbox = |policy: &str, script: &str, args: &[&str]| {
        let mut full = vec![python(), "-c", script, &sock];
        full.extend_from_slice(args);
        nobody_command(&env, policy, &[], &full)
    };
    let before = stdout(&sandbox("ops", PY_WHOAMI, &[]).output().expect("victim"));
    assert!(
        before.contains("answer HTTP/1.1 200"),
        "whoami is answered when nobody holds connections: {before}"
    );
    let mut holders: Vec<Running> = (0..8)
        .map(|_| Running::spawn(sandbox("web", PY_HOLD_BROKER, &["32", "25"])))
        .collect();
    let held: Vec<String> = holders.iter_mut().map(Running::line).collect();
    let victim = stdout(&sandbox("ops", PY_WHOAMI, &[]).output().expect("victim"));
    drop(holders);
    println!(
        "holders: {held:?} | another tenant's whoami: {}",
        victim.trim()
    );
    assert!(
        held.iter().all(|h| h.starts_with("holding 32")),
        "the holders ran: {held:?}"
    );
    assert!(
        victim.contains("answer HTTP/1.1 200"),
        "another tenant's broker call was not served while eight sandboxes held the \
         broker's connections: {victim}"
    );
}

/// 1(a) across policies (held): the same flood from a sandbox of `web` leaves a sandbox
/// of policy `ops`, which resolved the same name, its validated address: each policy
/// frees only its own share.
#[test]
fn resolving_many_names_does_not_evict_another_policys_validated_address() {
    hb_tests::require_root();
    private_netns(&["192.0.2.53", "203.0.113.10"]);
    let _dns = upstream();
    let probe = TcpProbe::bind("203.0.113.10:8080");
    let cfg = format!(
        "{}\n[[policy]]\nname = \"ops\"\nguard = false\nallow_domains = [\"*.wild.test\"]\n",
        config("")
    );
    let mut env = TestEnv::new("evictpol", &cfg);
    env.start_agent();
    let said = udp_ask(&env, "ops", &["victim.wild.test"]);
    assert!(
        said.contains("victim.wild.test rcode 0 203.0.113.10"),
        "{said}"
    );
    let flood = nobody_run(&env, "web", &[python(), "-c", PY_MANY_NAMES, "0", "1100"]);
    let after = nobody_run(
        &env,
        "ops",
        &[
            python(),
            "-c",
            hb_tests::PY_PROBE,
            "tcp",
            "203.0.113.10",
            "8080",
        ],
    );
    let ops_id = env.policy_id("ops");
    let ops_rows = env
        .allow_rows()
        .iter()
        .filter(|r| r["policy_id"] == ops_id || r["policy"] == "ops")
        .count();
    println!(
        "attacker (web): {} | ops rows: {ops_rows} | ops's connect: {}",
        flood.trim(),
        after.trim()
    );
    assert!(flood.contains("answered 1100"), "{flood}");
    assert_eq!(
        after.trim(),
        "OK",
        "a sandbox of another policy lost its validated address to web's flood"
    );
    assert!(
        probe.wait_accepted(1) >= 1,
        "the connect reached the listener"
    );
}

/// Python for a sandbox: one refused connect to 10.0.0.1:80 (a kernel refusal, audited),
/// then for `argv[2]` seconds refused broker calls (a plain GET to a private address,
/// `policy_denied`) on 8 kept-alive connections to the broker at `argv[1]`; prints
/// `connect E calls N`.
const PY_AUDIT_FLOOD: &str = r#"
import errno, socket, sys, threading, time
try:
    socket.create_connection(("10.0.0.1", 80), timeout=2); first = "OK"
except OSError as e:
    first = errno.errorcode.get(e.errno, str(e.errno))
body = b'{"method":"GET","url":"https://10.0.0.1/"}'
REQ = b"POST /v1/requests HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
calls = [0] * 8
def worker(i):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(10)
    stop = time.time() + float(sys.argv[2])
    while time.time() < stop:
        s.sendall(REQ)
        d = s.recv(65536)
        if not d: return
        calls[i] += 1
ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
for t in ts: t.start()
for t in ts: t.join()
print("connect", first, "calls", sum(calls), flush=True)
"#;

/// Angle 4, the audit trail: the kernel's refusals are budgeted per sandbox so that "a
/// sandbox refused in a loop cannot rotate the audit log's history away" (README). The
/// attack: a sandbox is refused a connect to a private address, then makes refused
/// broker calls as fast as it can. Each broker decision was an audit line, with no
/// budget, so the history rotated and the record of what it tried first was gone from
/// every audit file (the history here is 2 × 256 KiB so the test is quick). Now a
/// caller's records have the kernel's event budget: the refused connect stays, and
/// every refused call is still counted.
#[test]
fn refused_broker_calls_cannot_rotate_a_sandboxs_earlier_refusal_out_of_the_audit_trail() {
    hb_tests::require_root();
    private_netns(&["10.0.0.1"]);
    let mut env = TestEnv::new(
        "auditroll",
        r#"
[broker]
socket_mode = "0666"

[dns]
listen = "127.0.0.1:5300"

[[policy]]
name = "web"
"#,
    );
    // A short history, so the test is quick.
    let text = std::fs::read_to_string(&env.config_path).expect("config");
    let text = text.replacen(
        "[agent]\n",
        "[agent]\naudit_max_bytes = 262144\naudit_max_files = 2\n",
        1,
    );
    std::fs::write(&env.config_path, text).expect("config");
    env.start_agent();
    let sock = env.broker_socket().display().to_string();
    let said = nobody_run(&env, "web", &[python(), "-c", PY_AUDIT_FLOOD, &sock, "6"]);
    let calls: u64 = said
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(said.contains("connect EPERM"), "{said}");
    assert!(calls > 0, "the flood made no call: {said}");
    // What a window held back is written once the window has passed (10 s).
    let read = || {
        let mut text = String::new();
        for name in ["audit.log", "audit.log.1"] {
            text.push_str(&std::fs::read_to_string(env.state_dir.join(name)).unwrap_or_default());
        }
        let records: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (text.len(), records)
    };
    let denied = |records: &[Value]| -> (usize, u64) {
        let lines: Vec<&Value> = records
            .iter()
            .filter(|r| r["decision"] == "policy_denied")
            .collect();
        let counted = lines
            .iter()
            .map(|r| 1 + r["suppressed"].as_u64().unwrap_or(0))
            .sum();
        (lines.len(), counted)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (bytes, records) = loop {
        let (bytes, records) = read();
        if denied(&records).1 >= calls || Instant::now() > deadline {
            break (bytes, records);
        }
        thread::sleep(Duration::from_millis(250));
    };
    let (lines, counted) = denied(&records);
    let first_kept = records
        .iter()
        .any(|r| r.to_string().contains("10.0.0.1") && r.to_string().contains("\"port\":80"));
    println!(
        "attacker: {} | audit records {} ({bytes} bytes) | policy_denied lines: {lines}, \
         counting {counted} calls | the refused connect still recorded: {first_kept} | \
         {} calls/s",
        said.trim(),
        records.len(),
        calls / 6
    );
    assert!(
        first_kept,
        "the sandbox's refused connect to 10.0.0.1:80 is in no audit file after it made \
         {calls} refused broker calls"
    );
    assert_eq!(
        counted, calls,
        "every refused call is counted in the audit log, once ({lines} lines)"
    );
    // A caller's budget a 10 s window: 64 records and one per subject held back, for
    // its decisions and for its refusals on the event stream; the 6 s flood spans at
    // most two windows. Whatever the number of calls.
    assert!(
        records.len() <= 2 * 2 * 65 + 40,
        "{} audit records for {calls} calls",
        records.len()
    );
}
