//! The egress guard end to end: one address, 203.0.113.10, serves both `allowed.test`
//! and `evil.test` (TLS with certificates chosen by SNI, plain HTTP routed by Host), as
//! a CDN does. A sandbox may reach that address because the resolver validated it for
//! `allowed.test`; it must not reach `evil.test` through it, by SNI or by Host, and over
//! plain HTTP it may only read unless the host is in `write_domains`. The servers record
//! what each virtual host received; the tests assert on those records, not only on the
//! client's exit status.
//!
//! The attack tests run against an older binary too (`HB_GUARD_OLD_CONFIG=1` leaves the
//! guard's config keys out, which an agent without the guard rejects): there the fronted
//! name reaches `evil.test`.

use std::{fs, path::PathBuf, thread, time::Duration};

use hb_tests::{
    TestEnv, UdpProbe, private_netns, python, stdout,
    upstream::{Dnsmasq, TestCa},
};
use serde_json::Value;

const DNS_PORT: u16 = 5410;

/// Two virtual hosts on one address, over TLS (SNI picks the certificate, and is logged)
/// and plain HTTP (logged with its Host). Every request is a JSON line in LOG:
/// {"tls", "sni", "host", "method", "path", "len", "sha"}. GET /big?n=N answers N bytes
/// of a fixed pseudo-random stream (its sha256 is logged); POST bodies are hashed.
const VHOSTS_PY: &str = r#"
import hashlib, http.server, json, os, random, socketserver, ssl, sys, threading
addr, log, ca_dir = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
def record(d):
    with lock, open(log, "a") as f:
        f.write(json.dumps(d) + "\n")
def payload(n):
    return random.Random(7).randbytes(n)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def rec(self, body):
        sni = getattr(self.connection, "hb_sni", None)
        record({"tls": sni is not None or isinstance(self.connection, ssl.SSLSocket), "sni": sni,
                "host": self.headers.get("Host"), "method": self.command, "path": self.path,
                "len": len(body), "sha": hashlib.sha256(body).hexdigest()})
    def do_GET(self):
        if self.path == "/reset":
            # Half an answer, then a reset: the client must see the reset.
            self.rec(b"")
            self.send_response(200); self.send_header("Content-Length", "1000000"); self.end_headers()
            self.wfile.write(b"x" * 1000); self.wfile.flush()
            import socket, struct
            raw = self.connection
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # Closed under http.server's feet: its own close would send a FIN first.
            os.close(raw.fileno())
            self.close_connection = True
            return
        if self.path.startswith("/big?n="):
            data = payload(int(self.path.split("=")[1]))
            self.rec(b"")
            record({"served": hashlib.sha256(data).hexdigest()})
            return self.answer(data)
        self.rec(b"")
        self.answer(("vhost " + str(self.headers.get("Host"))).encode())
    def do_HEAD(self):
        self.rec(b""); self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self.rec(body)
        self.answer(hashlib.sha256(body).hexdigest().encode())
    do_PUT = do_POST
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
contexts = {}
for name in ["allowed.test", "evil.test", "write.test"]:
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    c.load_cert_chain(f"{ca_dir}/{name}.pem", f"{ca_dir}/{name}.key")
    contexts[name] = c
default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
default.load_cert_chain(f"{ca_dir}/allowed.test.pem", f"{ca_dir}/allowed.test.key")
def pick(sock, name, ctx):
    sock.hb_sni = name
    if name in contexts:
        sock.context = contexts[name]
default.sni_callback = pick
tls = S((addr, 443), H)
tls.socket = default.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
plain = S((addr, 80), H)
for s in (tls, plain):
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

struct World {
    env: TestEnv,
    _servers: Vec<std::process::Child>,
    _dns: Dnsmasq,
    dir: PathBuf,
    log: PathBuf,
    ca: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self._servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether the world leaves the guard's config keys out (to run the attacks against an
/// agent that does not know them).
fn old_config() -> bool {
    std::env::var_os("HB_GUARD_OLD_CONFIG").is_some()
}

impl World {
    fn new(name: &str) -> Self {
        hb_tests::require_root();
        private_netns(&["203.0.113.10", "203.0.113.11"]);
        // Below /var/tmp, which a sandbox sees: curl there trusts the test CA.
        let dir = PathBuf::from(format!(
            "/var/tmp/hb-guard-{name}-{}",
            hb_tests::random_suffix()
        ));
        let ca = TestCa::new(&dir, "guard");
        for host in ["allowed.test", "evil.test", "write.test", "other.test"] {
            ca.issue(host, &[host]);
        }
        let log = dir.join("vhosts.jsonl");
        fs::write(&log, "").expect("log");
        let mut servers = Vec::new();
        for addr in ["203.0.113.10", "203.0.113.11"] {
            let mut child = std::process::Command::new(python())
                .args(["-c", VHOSTS_PY, addr])
                .arg(&log)
                .arg(&dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("python3");
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
                &mut line,
            )
            .expect("server output");
            assert_eq!(line.trim(), "ready", "vhost server on {addr}");
            servers.push(child);
        }
        let dns = Dnsmasq::start(
            "127.0.0.1",
            DNS_PORT,
            &[
                ("allowed.test", &["203.0.113.10"]),
                ("evil.test", &["203.0.113.10"]),
                ("write.test", &["203.0.113.10"]),
                ("other.test", &["203.0.113.11"]),
            ],
            &[],
            60,
        );
        let guard_keys = if old_config() {
            ""
        } else {
            "write_domains = [\"write.test\"]\n"
        };
        let quic_policy = if old_config() {
            ""
        } else {
            "[[policy]]\nname = \"quic\"\nallow_domains = [\"allowed.test\"]\nallow_quic = true\n\n\
             [[policy]]\nname = \"direct\"\nallow_domains = [\"allowed.test\"]\nguard = false\n"
        };
        let config = format!(
            r#"
[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:{DNS_PORT}"]

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "web"
allow_domains = ["allowed.test", "write.test", "other.test"]
{guard_keys}
{quic_policy}
"#
        );
        let mut env = TestEnv::new_in(std::path::Path::new("/var/tmp"), name, &config);
        env.start_agent();
        Self {
            env,
            _servers: servers,
            _dns: dns,
            log,
            ca: ca.cert.clone(),
            dir,
        }
    }

    /// Every request the virtual hosts recorded.
    fn requests(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .expect("vhost log")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Requests recorded for `vhost` (by SNI over TLS, by Host over plain HTTP).
    fn received_by(&self, vhost: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r["sni"].as_str() == Some(vhost)
                    || r["host"]
                        .as_str()
                        .is_some_and(|h| h.split(':').next() == Some(vhost))
            })
            .collect()
    }

    /// A shell command in a sandbox of `policy` (user 65534) whose DNS goes to hb's
    /// resolver.
    fn sandbox(&self, policy: &str, cmd: &str) -> std::process::Output {
        self.env
            .sandbox_with_nameserver_as(policy, &["--user", "65534"], cmd)
    }

    fn curl(&self, args: &str) -> String {
        format!("curl -sS -m 10 --cacert {} {args}", self.ca.display())
    }
}

/// The guard event with `reason` naming `name`.
fn guard_event(env: &TestEnv, reason: &str, name: Option<&str>) -> Value {
    env.wait_event(&format!("guard {reason} {name:?}"), |e| {
        e["hook"] == "guard"
            && e["reason"] == reason
            && name.is_none_or(|n| e["name"].as_str() == Some(n))
    })
}

#[test]
fn tls_reaches_the_validated_name_only() {
    let w = World::new("tls");
    let script = format!(
        "{allowed}; echo \" allowed=$?\"
         {evil} -o /dev/null; echo \" evil=$?\"
         getent hosts other.test >/dev/null
         {other} -o /dev/null; echo \" wrong_address=$?\"
         echo | timeout 10 openssl s_client -connect 203.0.113.10:443 -noservername >/dev/null 2>&1; echo \" no_sni=$?\"
         {py} -c 'import ssl, urllib.request; c = ssl.create_default_context(cafile=\"{ca}\"); print(\"py\", urllib.request.urlopen(\"https://allowed.test/py\", context=c).status)'",
        allowed = w.curl("https://allowed.test/ok"),
        evil = w.curl("--resolve evil.test:443:203.0.113.10 https://evil.test/stolen"),
        other = w.curl("--resolve allowed.test:443:203.0.113.11 https://allowed.test/elsewhere"),
        py = python(),
        ca = w.ca.display(),
    );
    let out = w.sandbox("web", &script);
    let text = stdout(&out);
    assert!(
        text.contains("vhost allowed.test allowed=0"),
        "curl https://allowed.test/ from the sandbox: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("py 200"), "python over TLS: {text}");
    assert!(
        !text.contains("evil=0"),
        "evil.test over TLS passed: {text}"
    );
    assert!(
        w.received_by("evil.test").is_empty(),
        "evil.test's virtual host received {:?}",
        w.received_by("evil.test")
    );
    let fronted = guard_event(&w.env, "sni_mismatch", Some("evil.test"));
    assert_eq!(fronted["dst"], "203.0.113.10");
    assert_eq!(fronted["port"], 443);
    assert_eq!(fronted["policy"], "web");
    assert_eq!(fronted["comm"], "curl");
    // allowed.test is validated for 203.0.113.10 only: at other.test's address its SNI
    // is refused, though both names and both addresses are allowed.
    assert!(!text.contains("wrong_address=0"), "{text}");
    assert!(
        !w.requests().iter().any(|r| r["path"] == "/elsewhere"),
        "allowed.test's SNI reached 203.0.113.11"
    );
    let wrong = guard_event(&w.env, "sni_mismatch", Some("allowed.test"));
    assert_eq!(wrong["dst"], "203.0.113.11");
    assert!(!text.contains("no_sni=0"), "{text}");
    guard_event(&w.env, "no_sni", None);
    assert!(
        w.requests().iter().all(|r| !r["sni"].is_null()),
        "a connection without SNI reached the server: {:?}",
        w.requests()
    );
}

#[test]
fn plain_http_reaches_the_validated_host_and_only_reads() {
    let w = World::new("http");
    // One kept-alive connection: a GET that passes, then a POST that must not.
    let keepalive = r#"
import http.client
c = http.client.HTTPConnection("allowed.test", 80, timeout=10)
c.request("GET", "/first"); r = c.getresponse(); print("get", r.status, r.read().decode())
try:
    c.request("POST", "/second", body=b"exfil"); r = c.getresponse(); print("post", r.status, r.getheader("X-Hb-Refused"))
except Exception as e:
    print("post error", type(e).__name__)
"#;
    let script = format!(
        "{evil} -H 'Host: evil.test' http://allowed.test/fronted; echo \" evil=$?\"
         {py} -c '{keepalive}'
         {write} -X POST --data-binary written http://write.test/w; echo \" write=$?\"",
        evil = w.curl(""),
        write = w.curl(""),
        py = python(),
        keepalive = keepalive.replace('\'', "'\\''"),
    );
    let out = w.sandbox("web", &script);
    let text = stdout(&out);
    assert!(
        w.received_by("evil.test").is_empty(),
        "Host: evil.test reached its virtual host: {:?}\n{text}",
        w.received_by("evil.test")
    );
    let ev = guard_event(&w.env, "host_mismatch", Some("evil.test"));
    assert_eq!(ev["port"], 80);
    assert!(
        text.contains("get 200 vhost allowed.test"),
        "GET on the kept-alive connection: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("post 403 method_denied"),
        "POST after a GET on the same connection: {text}"
    );
    let methods: Vec<Value> = w
        .received_by("allowed.test")
        .into_iter()
        .map(|r| r["method"].clone())
        .collect();
    assert_eq!(methods, ["GET"], "allowed.test received {methods:?}");
    guard_event(&w.env, "method_denied", Some("allowed.test"));
    let written = w.received_by("write.test");
    assert_eq!(written.len(), 1, "{text}");
    assert_eq!(written[0]["method"], "POST");
    assert!(text.contains(" write=0"), "{text}");
}

#[test]
fn transfers_arrive_whole_both_ways_and_a_half_close_passes() {
    let w = World::new("bulk");
    const N: usize = 32 << 20;
    let half_close = r#"
import socket
s = socket.create_connection(("write.test", 80), timeout=10)
s.sendall(b"POST /half HTTP/1.1\r\nHost: write.test\r\nContent-Length: 4\r\nConnection: close\r\n\r\nhalf")
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    b = s.recv(65536)
    if not b: break
    data += b
print("half", data.split(b"\r\n")[0].decode())
"#;
    let script = format!(
        "{down} -o /tmp/big && sha256sum /tmp/big
         head -c {N} /dev/urandom > /tmp/up && sha256sum /tmp/up
         {up} -X POST --data-binary @/tmp/up http://write.test/upload; echo
         {py} -c '{half_close}'",
        down = w.curl(&format!("https://allowed.test/big?n={N}")),
        up = w.curl(""),
        py = python(),
    );
    let out = w.sandbox("web", &script);
    let text = stdout(&out);
    let served = w
        .requests()
        .iter()
        .find_map(|r| r["served"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no download served: {text}"));
    assert!(
        text.contains(&format!("{served}  /tmp/big")),
        "the download through the guard differs from what was served ({served}): {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uploaded = w
        .requests()
        .into_iter()
        .find(|r| r["path"] == "/upload")
        .unwrap_or_else(|| panic!("no upload arrived: {text}"));
    assert_eq!(uploaded["len"], N);
    let sent = uploaded["sha"].as_str().expect("sha");
    assert!(
        text.contains(&format!("{sent}  /tmp/up")),
        "the server received other bytes than were sent: {text}"
    );
    assert!(
        text.contains("half HTTP/1.1 200 OK"),
        "an answer after the client's half-close: {text}"
    );
}

#[test]
fn an_upstream_reset_reaches_the_client_as_a_reset() {
    let w = World::new("reset");
    // TLS through a memory BIO, so the outcome is read off the TCP socket itself (the
    // ssl module turns a reset into a quiet end of stream).
    let client = r#"
import socket, ssl, sys
REQ = b"GET /reset HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
def drain(s, feed=None):
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return "clean end"
            if feed: feed(b)
    except ConnectionResetError:
        return "reset"
def fetch_plain():
    s = socket.create_connection(("allowed.test", 80), timeout=10)
    s.sendall(REQ)
    return drain(s)
def fetch_tls():
    s = socket.create_connection(("allowed.test", 443), timeout=10)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    t = ssl.create_default_context(cafile=sys.argv[1]).wrap_bio(inc, out, server_hostname="allowed.test")
    while True:
        try:
            t.do_handshake(); break
        except ssl.SSLWantReadError:
            s.sendall(out.read())
            inc.write(s.recv(65536))
    s.sendall(out.read())
    t.write(REQ); s.sendall(out.read())
    return drain(s, inc.write)
print("plain", fetch_plain()); print("tls", fetch_tls())
"#;
    let run = |policy: &str| {
        let out = w.sandbox(
            policy,
            &format!(
                "{py} -c '{client}' {ca}",
                py = python(),
                ca = w.ca.display()
            ),
        );
        (
            stdout(&out),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Without the guard the client sees the reset: the check below can fail.
    let (direct, _) = run("direct");
    assert!(
        direct.contains("plain reset") && direct.contains("tls reset"),
        "the server's reset, seen directly: {direct}"
    );
    let (text, stderr) = run("web");
    assert!(
        text.contains("plain reset") && text.contains("tls reset"),
        "the server reset mid-answer; through the guard the sandbox saw: {text}\n{stderr}"
    );
}

/// Open descriptors of a process.
fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count()
}

#[test]
fn connections_in_flight_are_listed_and_none_leaks() {
    let mut w = World::new("flows");
    let pid = w.env.agent().pid();
    // Validates allowed.test (and writes the sandboxes' resolv.conf).
    let warm = w.sandbox("web", "getent hosts allowed.test");
    assert!(
        warm.status.success(),
        "{}",
        String::from_utf8_lossy(&warm.stderr)
    );
    // The sandbox's view of a guarded connection, and the guard's record of it while
    // it is held open.
    let hold = r#"
import socket, sys, time
s = socket.create_connection(("allowed.test", 443), timeout=10)
print("peer", s.getpeername()[0], s.getpeername()[1], flush=True)
time.sleep(3)
"#;
    let mut child = std::process::Command::new(hb_tests::agent_bin())
        .arg("--config")
        .arg(&w.env.config_path)
        .args(["sandbox", "run", "--policy", "web", "--user", "65534"])
        .arg("--ro-bind")
        .arg(w.env.state_dir.join("resolv.conf"))
        .args(["/etc/resolv.conf", "--", python(), "-c", hold])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sandbox");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("peer line");
    assert_eq!(
        line.trim(),
        "peer 203.0.113.10 443",
        "getpeername in the sandbox"
    );
    let flows = w.env.hb_json(&["maps", "dump", "guard"]);
    let held = flows
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["dst"] == "203.0.113.10" && r["port"] == 443)
        .unwrap_or_else(|| panic!("the held connection is not in maps dump guard: {flows}"));
    assert_eq!(held["policy"], "web");
    assert_eq!(held["comm"], "python3");
    let _ = child.wait();

    let before = fds(pid);
    let many = format!(
        "{py} -c 'import socket
for i in range(1000):
    s = socket.create_connection((\"allowed.test\", 80), timeout=10)
    s.sendall(b\"GET /n HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: close\\r\\n\\r\\n\")
    while s.recv(65536): pass
    s.close()
print(\"done\")'",
        py = python()
    );
    let out = w.sandbox("web", &many);
    assert!(
        stdout(&out).contains("done"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Connections close asynchronously: wait until the count settles back.
    let mut after = fds(pid);
    for _ in 0..100 {
        if after <= before + 2 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        after = fds(pid);
    }
    assert!(
        after <= before + 2,
        "the agent holds {after} descriptors after 1,000 guarded connections, {before} before"
    );
    let status = w.env.hb_json(&["status"]);
    let guard = &status["guard"];
    for _ in 0..30 {
        if w.env.hb_json(&["status"])["guard"]["passed"].as_u64() >= Some(1000) {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let guard_now = &w.env.hb_json(&["status"])["guard"];
    assert!(
        guard_now["passed"].as_u64() >= Some(1000),
        "status guard counters: {guard} then {guard_now}"
    );
    assert_eq!(guard_now["open"], 0, "{guard_now}");
    assert!(
        w.env
            .hb_json(&["maps", "dump", "guard"])
            .as_array()
            .expect("rows")
            .is_empty(),
        "flow records left behind"
    );
}

#[test]
fn a_killed_agent_leaves_guarded_connects_refused() {
    let mut w = World::new("killed");
    // Resolve (and validate) first, with the agent up.
    let out = w.sandbox(
        "web",
        &format!("{} -o /dev/null https://allowed.test/warm", w.curl("")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = w.requests().len();
    w.env.kill_agent();
    let out = w.sandbox(
        "web",
        &format!(
            "{py} -c 'import socket
try:
    s = socket.create_connection((\"203.0.113.10\", 443), timeout=5); s.sendall(b\"x\"); print(\"connected\")
except OSError as e:
    print(\"refused\", e.errno)'",
            py = python()
        ),
    );
    let text = stdout(&out);
    assert!(
        text.contains("refused"),
        "a guarded connect with no agent: {text}"
    );
    thread::sleep(Duration::from_millis(300));
    assert_eq!(w.requests().len(), before, "something reached the server");
}

#[test]
fn quic_is_refused_unless_the_policy_allows_it() {
    let w = World::new("quic");
    let probe = UdpProbe::bind("203.0.113.10:443");
    let send = format!(
        "getent hosts allowed.test >/dev/null; {py} -c 'import errno, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b\"quic\", (\"203.0.113.10\", 443)); print(\"sent\")
except OSError as e:
    print(errno.errorcode[e.errno])'",
        py = python()
    );
    let out = w.sandbox("web", &send);
    let text = stdout(&out);
    assert!(
        text.contains("EPERM"),
        "UDP 443 under a guarded policy: {text}"
    );
    let ev = w.env.wait_event("quic", |e| e["reason"] == "quic");
    assert_eq!(ev["port"], 443);
    assert_eq!(ev["protocol"], "udp");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(probe.received(), 0, "a datagram reached the server");
    if !old_config() {
        let out = w.sandbox("quic", &send);
        assert!(stdout(&out).contains("sent"), "{}", stdout(&out));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while probe.received() == 0 && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(probe.received(), 1, "allow_quic = true");
    }
}
