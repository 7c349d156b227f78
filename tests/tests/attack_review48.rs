//! A forty-eighth attack review, run as the processes inside two `sandbox run` sandboxes
//! (uid 65534, arbitrary Python) of two guarded policies, against the real agent, kernel
//! and guard, with dnsmasq and an HTTP server on the test namespace's `lo`. Each test
//! prints a `figure:` line.
//!
//! Angle: the kernel's bounded maps under a flood from one sandbox, read for what
//! another sandbox loses.
//!
//! Found (each fails against af34429):
//! - the egress guard's record of what a redirected socket addressed (`HB_GUARD_ORIG`)
//!   was one node-wide LRU of 65,536 entries keyed by socket cookie, filed at every
//!   guarded connect and never removed. A sandbox that opens and resets guarded
//!   connections (socket, non-blocking connect, `SO_LINGER` 0 close: no TIME_WAIT, so no
//!   socket bound stops it; 70,000 in 3.7 s) pushed every other sandbox's records out:
//!   the victim's open connection then answered `getpeername()` with the guard's own
//!   address (`127.0.0.1:15301`) instead of `203.0.113.10:80`, and a victim connect
//!   whose record went between the connect hook and its SYN would have had no flow
//!   record (the guard closes it; a race, not run). Now the record is the socket's own
//!   storage (`HB_GUARD_NAMED`, socket-local storage freed with the socket; the LRU's pin
//!   is removed at load), which no other socket can push out
//!   ([`a_flood_of_guarded_connects_leaves_another_sandboxs_peer`]).
//! - the guard's flow records (`HB_GUARD_CONNS`, client end → original destination, an
//!   LRU of 65,536 for the node) were removed only by the guard, when it closed a
//!   connection it had accepted. The guard accepts only once a connection's first bytes
//!   arrived (`TCP_DEFER_ACCEPT`), so a connection reset before it wrote anything was
//!   never accepted and its record stayed. One sandbox resetting 150,000 guarded
//!   connects from sources spread over `127.0.0.2`–`127.0.0.9` (10.8 s) left 65,365
//!   records and pushed out the record of another policy's sandbox's connection that
//!   had not written yet (a pool connected ahead, a slow first request): its request
//!   was reset by the guard (fail closed, but the victim lost service). Now `sock_ops`
//!   removes a record when its client end closes (the state callback, turned on for
//!   every socket a record is filed for): 1 record left (the victim's), its request
//!   answered 200 ([`a_flood_of_unsent_guarded_connects_leaves_another_sandboxs_waiting_connection`]).
//!
//! Held (tried):
//! - a flood of 200,000 guarded connects from one source (127.0.0.1, at most one key per
//!   ephemeral port, ~14,000 records left on af34429, 0 now) while another policy's
//!   sandbox makes guarded requests back to back: none of the victim's failed on either
//!   binary (~5,700–8,000 served); a record is read within a millisecond of its SYN when
//!   the client writes at once ([`a_flood_of_guarded_connects_leaves_another_sandboxs_connections`]).
//! - a TCP DNS connection another policy's sandbox holds open and asks on after
//!   40,000 reset TCP DNS connects from spread sources is answered (rcode 0 on both
//!   binaries: the resolver read its record when it accepted;
//!   [`a_flood_of_reset_tcp_dns_connects_leaves_another_sandboxs_waiting_query`]).
//! - a flow record is keyed by the client end, the guard port and the network
//!   namespace; the guard port is the policy's own, and the guard refuses a record of
//!   another policy's port, so another policy's flood never files a record the victim's
//!   guard reads; a guarded connection without a flow record is closed (fail closed).
//!
//! Still open or weak:
//! - live records: a connection that stays open without writing keeps its record until
//!   the guard accepts it after `TCP_DEFER_ACCEPT` and closes it at
//!   `first_flight_timeout_secs`. In the host's namespace the socket bounds keep the
//!   sandboxes far under 65,536 open sockets; a pod in its own namespace is not counted
//!   (README: `sockets_max` applies to the host's namespace), so a pod that holds ~65,000
//!   unwritten guarded connections at once could still push out a waiting record (not run).
//! - `HB_DNS_CONNS` (TCP DNS) is the same shape, and still removed only by the
//!   resolver: a connect reset before the resolver accepted it leaves its record (~2–3 %
//!   of them: 40,000 resets left 770–1,230, on af34429 and now), so ~2 million resets
//!   (minutes) fill the LRU. The resolver accepts at once and reads the record then, so
//!   only a connection waiting in its accept queue could lose one; the same removal at
//!   the client's close would close that too.
//! - a UDP DNS datagram whose `HB_DNS_UDP` record the LRU forgot is charged to cgroup 0
//!   (known, attack review 45).

use std::{fs, path::Path, thread, time::Duration};

use hb_tests::{
    sandboxed::Running,
    worlds::{
        RecordingPython, attack_as, names_on_lo, nameserver_sandbox, resolver_config, started_agent,
    },
};

const DNS_PORT: u16 = 5548;
const SHARED: &str = "203.0.113.10";

/// An HTTP server on `argv[1]:80` answering every GET 200 `ok`, logging each request.
const SERVER_PY: &str = r#"
import http.server, json, sys, threading
addr, log = sys.argv[1:3]
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        with lock:
            with open(log, "a") as f:
                f.write(json.dumps({"path": self.path}) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    def handle_error(self, request, client_address): pass
s = S((addr, 80), H)
print("ready", flush=True)
s.serve_forever()
"#;

/// The victim: connects to `allowed.test:80` (guarded), prints the peer, waits for a
/// line on stdin, prints the peer again, then a GET on that connection: its status.
const VICTIM_PY: &str = r#"
import socket, sys
a = socket.getaddrinfo("allowed.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
s = socket.create_connection((a, 80), timeout=10)
print("peer %s:%d" % s.getpeername(), flush=True)
sys.stdin.readline()
print("peer %s:%d" % s.getpeername(), flush=True)
try:
    s.sendall(b"GET /victim HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
    print("status " + (s.recv(4096).split(b"\r\n")[0].decode() or "closed"), flush=True)
except OSError as e:
    print("status " + type(e).__name__, flush=True)
"#;

/// The attacker: `N` guarded connects, each reset at once (`SO_LINGER` 0: no TIME_WAIT).
const FLOOD_PY: &str = r#"
import socket, struct, time
a = socket.getaddrinfo("allowed.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
opened = refused = 0
t = time.time()
for i in range(N):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.setblocking(False)
    e = s.connect_ex((a, 80))
    if e in (0, 115):
        opened += 1
    else:
        refused += 1
    s.close()
print("opened %d refused %d in %.1f s" % (opened, refused, time.time() - t))
"#;

/// The world: dnsmasq answering `allowed.test` with [`SHARED`], [`SERVER_PY`] on it, and
/// the agent with two guarded policies, `web` (the attacker's) and `victim`, each
/// allowing `allowed.test`.
struct World {
    env: hb_tests::TestEnv,
    _server: RecordingPython,
    _dns: hb_tests::upstream::Dnsmasq,
    dir: std::path::PathBuf,
}

impl World {
    fn new(name: &str) -> Self {
        let dns = names_on_lo(
            &[SHARED, "192.0.2.53"],
            DNS_PORT,
            &[("allowed.test", &[SHARED])],
            300,
        );
        let dir =
            std::env::temp_dir().join(format!("hb-review48-{name}-{}", hb_tests::random_suffix()));
        fs::create_dir_all(&dir).expect("test folder");
        let server =
            RecordingPython::start::<&Path>(SERVER_PY, SHARED, &dir.join("server.jsonl"), &[]);
        let config = format!(
            r#"
{resolver}
[[policy]]
name = "web"
allow_domains = ["allowed.test"]
guard = true

[[policy]]
name = "victim"
allow_domains = ["allowed.test"]
guard = true
"#,
            resolver = resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"]),
        );
        Self {
            env: started_agent(name, &config),
            _server: server,
            _dns: dns,
            dir,
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// One sandbox (`web`) opens and resets 70,000 guarded connections (more than
/// `HB_GUARD_ORIG` held) while a sandbox of another policy holds one open: the victim's
/// connection still reports the destination it connected to, and still works.
#[test]
fn a_flood_of_guarded_connects_leaves_another_sandboxs_peer() {
    let w = World::new("r48orig");
    let mut victim = Running::spawn(nameserver_sandbox(
        &w.env,
        "victim",
        3,
        &[hb_tests::python(), "-c", VICTIM_PY],
    ));
    let before = victim.line();
    println!("victim before: {before}");
    assert_eq!(
        before,
        format!("peer {SHARED}:80"),
        "the victim's connection"
    );
    let flood = attack_as(&w.env, "web", &FLOOD_PY.replace("range(N)", "range(70000)"));
    println!("flood: {}", flood.trim());
    thread::sleep(Duration::from_millis(500));
    victim.say("go");
    let after = victim.line();
    let status = victim.line();
    println!("victim after: {after}; {status}");
    println!(
        "figure: the victim's getpeername after the flood: {after} (connected to {SHARED}:80); {status}"
    );
    assert_eq!(
        after,
        format!("peer {SHARED}:80"),
        "another sandbox's flood changed what the victim's socket reports as its peer"
    );
    assert_eq!(
        status, "status HTTP/1.1 200 OK",
        "the victim's connection after the flood"
    );
    victim.wait();
}

/// The victim: for `argv[1]` seconds, one guarded GET after another (a fresh connection
/// each); prints `ok N failed F` and the first failures.
const VICTIM_LOOP_PY: &str = r#"
import socket, sys, time
a = socket.getaddrinfo("allowed.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
print("started", flush=True)
sys.stdin.readline()
end = time.time() + float(sys.argv[1])
ok = failed = 0
why = {}
while time.time() < end:
    try:
        s = socket.create_connection((a, 80), timeout=5)
        s.sendall(b"GET /v HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
        line = s.recv(4096).split(b"\r\n")[0].decode() or "closed"
        s.close()
    except OSError as e:
        line = type(e).__name__
    if line == "HTTP/1.1 200 OK":
        ok += 1
    else:
        failed += 1
        why[line] = why.get(line, 0) + 1
    # Paced to stay well under the victim's own socket bound (sockets_max, 4,096 with
    # its TIME_WAIT sockets): at most ~2,400 requests in 12 s, spread over the flood.
    time.sleep(0.005)
print("ok %d failed %d %s" % (ok, failed, sorted(why.items())), flush=True)
"#;

/// One sandbox (`web`) opens and resets 200,000 guarded connections, each filing a flow
/// record (`HB_GUARD_CONNS`, an LRU of 65,536 for the node) when its SYN leaves, while a
/// sandbox of another policy makes guarded requests one after another: each of the
/// victim's connections must find its record when the guard accepts it.
#[test]
fn a_flood_of_guarded_connects_leaves_another_sandboxs_connections() {
    let w = World::new("r48flows");
    let mut victim = Running::spawn(nameserver_sandbox(
        &w.env,
        "victim",
        3,
        &[hb_tests::python(), "-c", VICTIM_LOOP_PY, "12"],
    ));
    assert_eq!(victim.line(), "started");
    victim.say("go");
    let flood = attack_as(
        &w.env,
        "web",
        &FLOOD_PY.replace("range(N)", "range(200000)"),
    );
    println!("flood: {}", flood.trim());
    let got = victim.line();
    let flows = w.env.hb_json(&["maps", "list"]);
    let left = flows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "HB_GUARD_CONNS")
        .map(|r| r["entries"].clone());
    println!(
        "figure: the victim's guarded requests during the flood: {got}; flow records left: {left:?}"
    );
    let failed: u64 = got
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .expect("failed count");
    assert_eq!(
        failed, 0,
        "the victim's guarded requests during another sandbox's flood: {got}"
    );
    victim.wait();
}

/// The attacker, spread: `N` guarded connects from sources `127.0.0.2`…`127.0.0.9` (the
/// namespace's `lo` holds all of 127/8), each reset before it sent a byte. The guard
/// accepts a connection only once its first bytes arrived (`TCP_DEFER_ACCEPT`), so it
/// never sees these, and never removes their flow records.
const FLOOD_SPREAD_PY: &str = r#"
import socket, struct, time
a = socket.getaddrinfo("allowed.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
opened = refused = 0
t = time.time()
for i in range(N):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        s.bind(("127.0.0.%d" % (2 + i % 8), 0))
        s.setblocking(False)
        e = s.connect_ex((a, 80))
    except OSError as x:
        e = x.errno
    if e in (0, 115):
        opened += 1
    else:
        refused += 1
    s.close()
print("opened %d refused %d in %.1f s" % (opened, refused, time.time() - t))
"#;

/// The victim holds a guarded connection it has not written to yet (a client's pool
/// connected ahead, a slow first request) while another policy's sandbox resets 150,000
/// guarded connections from spread sources before their first byte: its request must
/// still be served when it sends it.
#[test]
fn a_flood_of_unsent_guarded_connects_leaves_another_sandboxs_waiting_connection() {
    let w = World::new("r48stale");
    let mut victim = Running::spawn(nameserver_sandbox(
        &w.env,
        "victim",
        3,
        &[hb_tests::python(), "-c", VICTIM_PY],
    ));
    let before = victim.line();
    assert_eq!(
        before,
        format!("peer {SHARED}:80"),
        "the victim's connection"
    );
    let flood = attack_as(
        &w.env,
        "web",
        &FLOOD_SPREAD_PY.replace("range(N)", "range(150000)"),
    );
    println!("flood: {}", flood.trim());
    let flows = w.env.hb_json(&["maps", "list"]);
    let left = flows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "HB_GUARD_CONNS")
        .map(|r| r["entries"].clone());
    victim.say("go");
    let _peer = victim.line();
    let status = victim.line();
    println!(
        "figure: the victim's first request after the flood: {status}; flow records left: {left:?}"
    );
    assert_eq!(
        status, "status HTTP/1.1 200 OK",
        "another sandbox's flood cost the victim its waiting connection"
    );
    victim.wait();
}

/// The victim's TCP DNS: connects to a port-53 address (the kernel's redirect to the
/// resolver), waits for a line on stdin, then asks `allowed.test` (A) on it; prints
/// `rcode R` or the error.
const VICTIM_TCP_DNS_PY: &str = r#"
import socket, struct, sys
m = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + b"\x07allowed\x04test\x00" + struct.pack("!HH", 1, 1)
t = socket.create_connection(("192.0.2.53", 53), timeout=5)
print("connected", flush=True)
sys.stdin.readline()
try:
    t.sendall(struct.pack("!H", len(m)) + m)
    ln = struct.unpack("!H", t.recv(2, socket.MSG_WAITALL))[0]
    d = t.recv(ln, socket.MSG_WAITALL)
    print("rcode %d" % (d[3] & 15), flush=True)
except (OSError, struct.error) as e:
    print(type(e).__name__, flush=True)
"#;

/// One sandbox resets 40,000 TCP DNS connects (redirected to the resolver, each filing
/// an `HB_DNS_CONNS` record at its SYN) from spread sources, while another policy's
/// sandbox holds a TCP DNS connection it has not asked on yet (within
/// `tcp_idle_timeout_secs`): its query is answered. The resolver accepts at once and
/// reads a record then, so few records stay behind.
#[test]
fn a_flood_of_reset_tcp_dns_connects_leaves_another_sandboxs_waiting_query() {
    let w = World::new("r48dns");
    let mut victim = Running::spawn(nameserver_sandbox(
        &w.env,
        "victim",
        3,
        &[hb_tests::python(), "-c", VICTIM_TCP_DNS_PY],
    ));
    assert_eq!(victim.line(), "connected");
    let flood = attack_as(
        &w.env,
        "web",
        &FLOOD_SPREAD_PY
            .replace("range(N)", "range(40000)")
            .replace("connect_ex((a, 80))", "connect_ex((\"192.0.2.53\", 53))"),
    );
    println!("flood: {}", flood.trim());
    let maps = w.env.hb_json(&["maps", "list"]);
    let left = maps
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "HB_DNS_CONNS")
        .map(|r| r["entries"].clone());
    victim.say("go");
    let got = victim.line();
    println!(
        "figure: the victim's TCP query after the flood: {got}; TCP DNS records left: {left:?}"
    );
    assert_eq!(
        got, "rcode 0",
        "another sandbox's flood cost the victim its TCP DNS query"
    );
    victim.wait();
}
