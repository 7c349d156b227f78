//! The egress guard passes a failure on as a failure: when the server resets a
//! connection mid-answer, the sandbox sees a reset on its TCP socket — over plain HTTP
//! (the guard's request-judging relay) and over TLS (its record-reading splice) — not a
//! clean end that could pass for a complete answer. Checked beside a policy without the
//! guard, where the sandbox sees the server's reset directly, so the check can fail.
//! (The guard's refusals and transfers: `guard.rs`; attacks on it: `guard_attacks.rs`.)

use std::{fs, path::PathBuf};

use hb_tests::{
    TestEnv, private_netns, python, stdout,
    upstream::{Dnsmasq, TestCa},
};

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
            # Closed under http.server's feet: its own close would send a FIN first. The
            # socket object gives the descriptor up first, so http.server's later close
            # cannot land on a descriptor number the next accepted connection reuses.
            os.close(raw.detach())
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
        Self::build(name, "")
    }

    /// The world with `guard` (a `[guard]` section) in the config.
    fn build(name: &str, guard: &str) -> Self {
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
{guard}

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
            ca: ca.cert.clone(),
            dir,
        }
    }

    /// A shell command in a sandbox of `policy` (user 65534) whose DNS goes to hb's
    /// resolver.
    fn sandbox(&self, policy: &str, cmd: &str) -> std::process::Output {
        self.env
            .sandbox_with_nameserver_as(policy, &["--user", "65534"], cmd)
    }
}

#[test]
fn an_upstream_reset_reaches_the_client_as_a_reset() {
    let w = World::new("reset");
    resets_reach_the_client(&w);
}

/// The same with the kernel relay on: the TLS connection is in the kernel's hands when
/// the server resets it (the test server speaks TLS 1.3), and the guard resets the
/// client's side.
#[test]
fn with_the_kernel_relay_an_upstream_reset_reaches_the_client_as_a_reset() {
    if old_config() {
        return;
    }
    let w = World::build("kreset", "[guard]\nsockmap = true");
    resets_reach_the_client(&w);
    w.env.guard_stats_when(
        10,
        "showed the TLS connection gone through the kernel relay, leaving no entry",
        |g| g["kernel"].as_u64().is_some_and(|k| k >= 1) && g["kernel_entries"] == 0,
    );
}

fn resets_reach_the_client(w: &World) {
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
    let (direct, direct_err) = run("direct");
    assert!(
        direct.contains("plain reset") && direct.contains("tls reset"),
        "the server's reset, seen directly: {direct}\n{direct_err}"
    );
    let (text, stderr) = run("web");
    assert!(
        text.contains("plain reset") && text.contains("tls reset"),
        "the server reset mid-answer; through the guard the sandbox saw: {text}\n{stderr}"
    );
}
