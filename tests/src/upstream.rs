//! Upstreams for tests of the broker's outbound path: a test CA and certificates
//! (`openssl` CLI), HTTP and HTTPS servers that record every request they receive
//! (Python's `http.server` + `ssl`), and a DNS server answering test names (dnsmasq).
//!
//! Everything binds to addresses of the test's own network namespace (see
//! [`crate::private_netns`]) and is killed on drop. Nothing here skips: a missing tool
//! fails the test and says which.

use std::{
    ffi::OsStr,
    fs,
    net::UdpSocket,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::worlds::RecordingPython;

/// The end of a Python HTTPS test upstream: serves the handler class `H` (whose `setup`
/// completes the TLS handshake, left to it by `do_handshake_on_connect=False`) on
/// `(addr, 443)` with the certificate `cert` and its key `key` (variables the script
/// sets), a thread a connection, errors not printed.
pub const PY_SERVE_HTTPS: &str = r#"
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address): pass
srv = S((addr, 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
srv.serve_forever()
"#;

/// Python: `TlsHandler`, the base of an `http.server` handler whose socket was wrapped
/// with `do_handshake_on_connect=False` (as [`PY_SERVE_HTTPS`] wraps it): HTTP/1.1
/// keep-alive, no access log, the TLS handshake done in the handler's own thread. It goes
/// before the handler's class.
pub const PY_TLS_HANDLER: &str = r#"
import http.server
class TlsHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def setup(self):
        self.request.do_handshake()
        super().setup()
"#;

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate authority made for one test, in its own folder.
pub struct TestCa {
    dir: PathBuf,
    /// The CA certificate (PEM): what `broker.extra_ca_file` names.
    pub cert: PathBuf,
    key: PathBuf,
}

/// A server certificate and its key, issued by a [`TestCa`].
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A fresh P-256 CA valid for two days, files under `dir/<label>-ca.*`.
    pub fn new(dir: &Path, label: &str) -> Self {
        fs::create_dir_all(dir).expect("CA folder");
        let cert = dir.join(format!("{label}-ca.pem"));
        let key = dir.join(format!("{label}-ca.key"));
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN=hb test CA {label}"))
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        Self {
            dir: dir.to_owned(),
            cert,
            key,
        }
    }

    /// A server certificate for `names` (DNS names; an entry that parses as an IP
    /// address becomes an IP SAN).
    pub fn issue(&self, file_label: &str, names: &[&str]) -> Leaf {
        let key = self.dir.join(format!("{file_label}.key"));
        let csr = self.dir.join(format!("{file_label}.csr"));
        let cert = self.dir.join(format!("{file_label}.pem"));
        let ext = self.dir.join(format!("{file_label}.ext"));
        let sans: Vec<String> = names
            .iter()
            .map(|n| {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{n}")
                } else {
                    format!("DNS:{n}")
                }
            })
            .collect();
        fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )
        .expect("extension file");
        run(Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
            ])
            .arg("-subj")
            .arg(format!("/CN={}", names.first().copied().unwrap_or("leaf")))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-set_serial"])
            .arg(format!("{}", std::process::id()))
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.cert)
            .arg("-CAkey")
            .arg(&self.key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert));
        Leaf { cert, key }
    }
}

/// The recording server. Routes (everything else answers 200 `ok METHOD PATH`):
/// `/redirect?to=URL[&code=N]` (a redirect, default 302), `/loop` (redirects to
/// itself), `/cookie` (secret-bearing response headers), `/big?n=N` (N bytes with a
/// Content-Length), `/stream?n=N` (N bytes delimited by closing the connection),
/// `/slow?secs=S` (answers after S seconds), `/echo` (the request's path and headers as
/// JSON, as an API that reflects what it got; after `secs=S` seconds if given), `/self?enc=E` (a "self" link: the
/// request's own URL, credential query included, in a JSON body and in `Location` and
/// `Link` headers; the body sent as `E` says whatever the request's Accept-Encoding was:
/// `gzip`, `deflate`, `br`, `zstd` as a Content-Encoding, `utf-16le`/`utf-16be` with a
/// byte-order mark and charset, `binary` as a gzip file with no Content-Encoding, empty
/// for plain UTF-8; `case=upper` upper-cases the text, `trunc=K` keeps its first K
/// bytes, as APIs that echo a shortened or re-cased URL; `partial=A-B` answers 206
/// with bytes A to B whether or not a range was asked for). A `Range: bytes=A-B` (one
/// range, end optional) on a 200 answer is honoured with a 206 and its
/// `Content-Range`. Each request is one JSON line in the log:
/// method, path, headers (lower-case names), body, and the connection's number.
const SERVER_PY: &str = r#"
import http.server, json, os, socket, ssl, sys, threading, time, urllib.parse, itertools
addr, port, log, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
lock = threading.Lock()
conns = itertools.count(1)
def held(path):
    # Whether the hold at `path` refuses this call: it exists, and holds no count of
    # calls still to let through (a count is taken down by one per call let through).
    with lock:
        try:
            with open(path) as f:
                left = f.read().strip()
        except FileNotFoundError:
            return False
        if left.isdigit() and int(left) > 0:
            with open(path, "w") as f:
                f.write(str(int(left) - 1))
            return False
        return True
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def setup(self):
        if cert:
            self.request.do_handshake()
        self.conn_id = next(conns)
        super().setup()
    def any(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        rec = {"method": self.command, "path": self.path, "conn": self.conn_id,
               "headers": [[k.lower(), v] for k, v in self.headers.items()],
               "body": body.decode("latin-1")}
        with lock:
            with open(log, "a") as f:
                f.write(json.dumps(rec) + "\n")
        u = urllib.parse.urlparse(self.path)
        q = {k: v[0] for k, v in urllib.parse.parse_qs(u.query).items()}
        status, headers, out, close = 200, [], ("ok %s %s" % (self.command, self.path)).encode(), False
        if u.path == "/redirect":
            status, out = int(q.get("code", "302")), b""
            headers.append(("Location", q["to"]))
        elif u.path == "/loop":
            status, out = 302, b""
            headers.append(("Location", "/loop"))
        elif u.path == "/cookie":
            headers += [("Set-Cookie", "session=cookie-secret; HttpOnly"), ("Set-Cookie", "b=2"),
                        ("Set-Cookie2", "old=cookie2-secret"),
                        ("WWW-Authenticate", 'Bearer realm="api", error="invalid_token", error_description="challenge-secret expired"'),
                        ("Proxy-Authenticate", 'Basic realm="proxy-secret"'),
                        ("Authorization", "Bearer echoed-secret"), ("X-Kept", "yes")]
        elif u.path == "/echo":
            time.sleep(float(q.get("secs", "0")))
            out = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        elif u.path == "/self":
            link = "https://%s%s" % (self.headers.get("host"), self.path)
            text = json.dumps({"self": link}).encode()
            if q.get("case") == "upper":
                text, link = text.upper(), link.upper()
            if "trunc" in q:
                text = text[:int(q["trunc"])]
            if "partial" in q:
                a, b = (int(x) for x in q["partial"].split("-"))
                headers.append(("Content-Range", "bytes %d-%d/%d" % (a, b, len(text))))
                status, text = 206, text[a:b + 1]
            enc = q.get("enc", "")
            headers += [("Location", link), ("Link", "<%s>; rel=self" % link)]
            if enc in ("utf-16le", "utf-16be"):
                bom = b"\xff\xfe" if enc == "utf-16le" else b"\xfe\xff"
                out = bom + text.decode().encode(enc)
                headers.append(("Content-Type", "application/json; charset=" + enc))
            elif enc == "binary":
                import gzip
                out = gzip.compress(text)
                headers.append(("Content-Type", "application/gzip"))
            elif enc:
                import gzip, zlib
                if enc == "br":
                    import brotli
                    out = brotli.compress(text)
                elif enc == "zstd":
                    import zstandard
                    out = zstandard.ZstdCompressor().compress(text)
                else:
                    out = {"gzip": gzip.compress, "deflate": zlib.compress}[enc](text)
                headers.append(("Content-Encoding", enc))
            else:
                out = text
        elif u.path == "/auth":
            # 401 to a bearer that ends with ?deny= (a key the provider does not know yet).
            deny = q.get("deny", "")
            if deny and (self.headers.get("authorization") or "").endswith(deny):
                status, out = 401, b"unauthorized"
            else:
                out = b"authorized"
        elif u.path == "/keys":
            # A provider's API: 200 to a bearer its key store (a JSON list at ?file=) holds;
            # 403 to it while the file at ?hold= exists (a spent rate limit; a count N in
            # the file lets the next N such calls through first); ?list=1 lists
            # the store's keys (as key-listing APIs do; ?list=newest: newest first); ?wait= answers once that file
            # exists (at most 30 s). With ?born= (the provider's minting times, a JSON
            # object key -> Unix seconds) and ?propagation_ms=, a key minted less than
            # that long ago is refused too (not valid everywhere yet).
            t0 = time.time()
            while "wait" in q and not os.path.exists(q["wait"]) and time.time() - t0 < 30:
                time.sleep(0.05)
            try:
                with open(q["file"]) as f:
                    live = json.load(f)
            except Exception:
                live = []
            token = (self.headers.get("authorization") or "")[len("Bearer "):]
            born = 0.0
            if "born" in q:
                try:
                    with open(q["born"]) as f:
                        born = json.load(f).get(token, 0.0)
                except Exception:
                    pass
            young = t0 - born < int(q.get("propagation_ms", "0")) / 1000.0
            if token not in live or young:
                status, out = 401, b"unauthorized"
            elif "hold" in q and held(q["hold"]):
                status, out = 403, b"rate limited"
            elif q.get("list"):
                # ?list=newest: newest first, as many key listings go.
                listed = live[::-1] if q["list"] == "newest" else live
                out = json.dumps({"keys": listed}).encode()
            else:
                out = b"authorized"
        elif u.path == "/big":
            out = b"x" * int(q["n"])
        elif u.path == "/stream":
            out, close = b"y" * int(q["n"]), True
        elif u.path == "/slow":
            time.sleep(float(q["secs"]))
        elif u.path == "/close":
            # Answers as if keeping the connection, then closes it: a server dropping an
            # idle keep-alive connection.
            self.close_connection = True
        rng = self.headers.get("range", "")
        if status == 200 and rng.startswith("bytes=") and "," not in rng:
            a, _, b = rng[6:].partition("-")
            a, b = int(a), min(int(b) if b else len(out) - 1, len(out) - 1)
            headers.append(("Content-Range", "bytes %d-%d/%d" % (a, b, len(out))))
            status, out = 206, out[a:b + 1]
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = any
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    daemon_threads = True
    # A storm of calls connects at once: past the default backlog of 5, a connection
    # the kernel completed waits unaccepted, and its TLS handshake can time out.
    request_queue_size = 256
    def handle_error(self, request, client_address): pass
srv = S((addr, port), H)
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
print("ready", flush=True)
srv.serve_forever()
"#;

/// An HTTP or HTTPS server that records every request it receives; killed on drop.
pub struct RecordingServer {
    child: Child,
    log: PathBuf,
    pub addr: String,
    pub port: u16,
}

impl RecordingServer {
    /// Serves `addr`:`port` (plain HTTP without `tls`), logging to `dir`.
    pub fn start(dir: &Path, addr: &str, port: u16, tls: Option<&Leaf>) -> Self {
        let log = dir.join(format!("requests-{addr}-{port}.jsonl"));
        fs::write(&log, "").expect("request log");
        let (cert, key) = tls.map_or((String::new(), String::new()), |l| {
            (l.cert.display().to_string(), l.key.display().to_string())
        });
        let child = crate::spawn_ready(
            Command::new(crate::python())
                .args(["-c", SERVER_PY, addr, &port.to_string()])
                .arg(&log)
                .args([&cert, &key]),
            &format!("the recording server on {addr}:{port}"),
        );
        Self {
            child,
            log,
            addr: addr.to_owned(),
            port,
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        fs::read_to_string(&self.log)
            .expect("request log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("request JSON"))
            .collect()
    }

    /// The raw log: search it for bytes that must never have arrived.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).expect("request log")
    }
}

/// The value of header `name` (lower case) in a recorded request.
pub fn header<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dnsmasq answering only the given records (no /etc/hosts, no upstream), authoritative
/// for `.test`: other names there get NXDOMAIN, a name without an AAAA record gets an
/// empty answer. Killed on drop.
pub struct Dnsmasq(Child);

impl Dnsmasq {
    /// Serves on `listen`:`port`. `hosts`: `(name, addresses)` (at most one IPv4 and one
    /// IPv6 each, dnsmasq's rule); `cnames`: `(alias, target)`; `ttl` for every answer.
    pub fn start(
        listen: &str,
        port: u16,
        hosts: &[(&str, &[&str])],
        cnames: &[(&str, &str)],
        ttl: u32,
    ) -> Self {
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--pid-file=",
            "--local=/test/",
        ])
        .arg(format!("--listen-address={listen}"))
        .arg(format!("--port={port}"))
        .arg(format!("--local-ttl={ttl}"));
        for (name, addrs) in hosts {
            cmd.arg(format!("--host-record={name},{},{ttl}", addrs.join(",")));
        }
        for (alias, target) in cnames {
            cmd.arg(format!("--cname={alias},{target},{ttl}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base)");
        let me = Self(child);
        me.wait_ready(listen, port);
        me
    }

    /// Until dnsmasq answers a query (5 s at most).
    fn wait_ready(&self, listen: &str, port: u16) {
        let sock = UdpSocket::bind((listen, 0)).expect("udp socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        // id 0x4242, RD, one question: ready.test A IN.
        let mut q = vec![0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["ready", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 512];
        while Instant::now() < deadline {
            let _ = sock.send_to(&q, (listen, port));
            if sock
                .recv(&mut buf)
                .is_ok_and(|n| n >= 2 && buf[..2] == [0x42, 0x42])
            {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("dnsmasq on {listen}:{port} did not answer within 5 s");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The virtual-host server: one address serving several names, as a CDN does. TLS on
/// 443 picks the certificate by SNI (`ca_dir/<name>.pem` and `.key`, the first name's
/// without SNI); plain HTTP on 80 routes by the absolute-form URI's host, else by
/// the last `Host` (servers differ on which of several wins). Every event is one JSON line in the log, with `local` (`addr:port`):
/// `{"ev": "accept", "peer"}` for each TCP connection accepted; `{"ev": "first", "peer",
/// "bytes"}` once its first byte came (bytes 1) or it ended without one (bytes 0, and
/// `error` for a reset); `{"ev": "hello", "sni", "peer"}` for each ClientHello (sni null
/// without one); `{"ev": "request", "tls", "sni",
/// "vhost", "host", "method", "path", "peer", "len", "sha"}` for each request (body
/// length and sha256); `{"ev": "served", "sha", "len"}` for `GET /big?n=N` (N bytes of a
/// stream seeded by N); `{"ev": "eof", "path"}` when `GET /eof` saw the client's
/// half-close (it reads until EOF before it answers). POST/PUT answer the body's sha256;
/// other requests answer `vhost NAME path PATH`.
const VHOSTS_PY: &str = r#"
import hashlib, http.server, json, random, socket, socketserver, ssl, sys, threading, urllib.parse
addr, log, ca_dir, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
lock = threading.Lock()
def record(d):
    with lock, open(log, "a") as f:
        f.write(json.dumps(d) + "\n")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def local(self):
        return "%s:%d" % (addr, self.server.server_address[1])
    def setup(self):
        # Whether the connection carried any byte at all, before TLS or HTTP reads it.
        first = {"ev": "first", "local": self.local(), "peer": "%s:%d" % self.client_address[:2]}
        try:
            self.request.settimeout(30)
            first["bytes"] = len(self.request.recv(1, socket.MSG_PEEK))
        except OSError as e:
            first["bytes"], first["error"] = 0, type(e).__name__
        record(first)
        if not first["bytes"]:
            raise ConnectionAbortedError("no byte")
        if self.server.server_address[1] == 443:
            self.request = default.wrap_socket(self.request, server_side=True)
        super().setup()
    def answer(self, body, close=False):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def rec(self, body):
        tls = isinstance(self.connection, ssl.SSLSocket)
        # With several Host fields, the last one wins here (servers differ).
        hosts = self.headers.get_all("Host") or [None]
        host = hosts[-1]
        u = urllib.parse.urlsplit(self.path)
        vhost = u.hostname if u.scheme else (host or "").rsplit(":", 1)[0]
        record({"ev": "request", "local": self.local(), "tls": tls,
                "sni": getattr(self.connection, "hb_sni", None), "vhost": vhost, "host": host,
                "method": self.command, "path": self.path,
                "peer": "%s:%d" % self.client_address[:2], "len": len(body),
                "sha": hashlib.sha256(body).hexdigest()})
        return vhost
    def do_GET(self):
        if self.path.startswith("/big?n="):
            n = int(self.path.split("=")[1])
            data = random.Random(n).randbytes(n)
            self.rec(b"")
            record({"ev": "served", "local": self.local(), "len": n, "sha": hashlib.sha256(data).hexdigest()})
            return self.answer(data)
        if self.path == "/eof":
            self.rec(b"")
            rest = self.rfile.read()
            record({"ev": "eof", "local": self.local(), "path": self.path, "after": len(rest)})
            return self.answer(b"answered after eof", close=True)
        vhost = self.rec(b"")
        self.answer(("vhost %s path %s" % (vhost, self.path)).encode())
    do_HEAD = do_OPTIONS = do_GET
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self.rec(body)
        self.answer(hashlib.sha256(body).hexdigest().encode())
    do_PUT = do_PATCH = do_DELETE = do_POST
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    def get_request(self):
        sock, peer = self.socket.accept()
        record({"ev": "accept", "local": "%s:%d" % (addr, self.server_address[1]), "peer": "%s:%d" % peer[:2]})
        return sock, peer
    def handle_error(self, request, client_address): pass
contexts = {}
for name in names:
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    c.load_cert_chain("%s/%s.pem" % (ca_dir, name), "%s/%s.key" % (ca_dir, name))
    contexts[name] = c
default = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
default.load_cert_chain("%s/%s.pem" % (ca_dir, names[0]), "%s/%s.key" % (ca_dir, names[0]))
def pick(sock, name, ctx):
    sock.hb_sni = name
    record({"ev": "hello", "local": addr + ":443", "sni": name, "peer": "%s:%d" % sock.getpeername()[:2]})
    if name in contexts:
        sock.context = contexts[name]
default.sni_callback = pick
tls = S((addr, 443), H)
plain = S((addr, 80), H)
for s in (tls, plain):
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// [`VHOSTS_PY`] on one address, its certificates issued by a [`TestCa`] in `dir`
/// (`dir/<name>.pem`); killed on drop.
pub struct VirtualHosts(RecordingPython);

impl VirtualHosts {
    /// Serves `names` on `addr` (ports 443 and 80), certificates for each from `ca`,
    /// logging to `dir/vhosts-<addr>.jsonl`. The first name's certificate is the default.
    pub fn start(dir: &Path, ca: &TestCa, addr: &str, names: &[&str]) -> Self {
        for n in names {
            if !dir.join(format!("{n}.pem")).exists() {
                ca.issue(n, &[n]);
            }
        }
        Self(RecordingPython::start(
            VHOSTS_PY,
            addr,
            &dir.join(format!("vhosts-{addr}.jsonl")),
            &[dir.as_os_str(), OsStr::new(&names.join(","))],
        ))
    }

    /// Every event recorded so far, oldest first.
    pub fn records(&self) -> Vec<Value> {
        self.0.records()
    }

    /// Records of kind `ev` (`accept`, `first`, `hello`, `request`, `served`, `eof`).
    pub fn events(&self, ev: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["ev"] == ev)
            .collect()
    }

    /// Connections accepted on `local` (`addr:port`).
    pub fn accepted(&self, local: &str) -> usize {
        self.events("accept")
            .iter()
            .filter(|r| r["local"] == local)
            .count()
    }

    /// Connections on `local` that carried at least one byte to the server.
    pub fn carried_bytes(&self, local: &str) -> usize {
        self.events("first")
            .iter()
            .filter(|r| r["local"] == local && r["bytes"] != 0)
            .count()
    }

    /// What reached virtual host `name`: ClientHellos naming it and requests routed to it.
    pub fn reached(&self, name: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| {
                (r["ev"] == "hello" && r["sni"] == name)
                    || (r["ev"] == "request" && (r["vhost"] == name || r["sni"] == name))
            })
            .collect()
    }

    /// Requests whose path is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Value> {
        self.events("request")
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }

    /// Until a request for `path` was recorded (10 s at most): a client's request is
    /// recorded before it is answered, but a sentinel sent after an attack proves the
    /// attack's records, if any, are in the log.
    pub fn wait_request(&self, path: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.requests_to(path).into_iter().next() {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no request for {path} reached the server: {:#?}",
                self.records()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The fake provider's API (`POST /v1/keys`, JSON): `{"op": "create"}` mints a key
/// (`key-http-` and 32 hex digits) into the key store (`keys.json`, a JSON list: what
/// the [`RecordingServer`]'s `/keys` API accepts) and answers
/// `{"data": {"secret", "expires"}}`; `{"op": "revoke", "key_sha256"}` removes the key
/// with that SHA-256 (404 if none is live). Every call must carry `Authorization:
/// Bearer <admin key>` (or a live key) and an `Idempotency-Key`: a create repeated with
/// a key already seen answers the key it minted then, and mints nothing. Outage modes,
/// read from the file `mode` at each request: `503` (answers 503 and does nothing),
/// `403` (answers 403 and does nothing: a refusal, not an outage),
/// `hang` (does the work, then answers after `hang_secs`, or what the file `hang_secs`
/// says — a client that gave up retries), anything else: normal. "Refused" is [`FakeProvider::stop`]. Each request
/// is one JSON line in `provider.jsonl`: `t` (Unix seconds, float), method, path,
/// headers, body and the status answered; every key minted is appended to
/// `minted.json`, and its minting time kept in `born.json` (the API refuses it for a
/// propagation delay when asked: see [`FakeProvider::born_path`]). State lives in
/// files, so a restarted provider goes on.
const PROVIDER_PY: &str = r#"
import hashlib, http.server, json, os, secrets, socket, ssl, sys, threading, time
addr, port, d, cert, key, admin, hang_secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6], float(sys.argv[7])
lock = threading.Lock()
def load(name, default):
    try:
        with open(os.path.join(d, name)) as f:
            return json.load(f)
    except Exception:
        return default
def save(name, value):
    tmp = os.path.join(d, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, os.path.join(d, name))
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def setup(self):
        self.request.do_handshake()
        super().setup()
    def do_POST(self):
        t = time.time()
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            mode = open(os.path.join(d, "mode")).read().strip()
        except OSError:
            mode = "ok"
        status, out = self.work(raw, mode)
        rec = {"t": t, "method": self.command, "path": self.path, "mode": mode,
               "headers": [[k.lower(), v] for k, v in self.headers.items()],
               "body": raw.decode("latin-1"), "status": status}
        with lock, open(os.path.join(d, "provider.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
        if mode == "hang":
            try:
                time.sleep(float(open(os.path.join(d, "hang_secs")).read()))
            except (OSError, ValueError):
                time.sleep(hang_secs)
        body = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_PUT = do_PATCH = do_DELETE = do_POST
    def work(self, raw, mode):
        if mode == "503":
            return 503, {"error": "unavailable"}
        if mode == "403":
            return 403, {"error": "forbidden"}
        with lock:
            live = load("keys.json", [])
            token = (self.headers.get("authorization") or "")[len("Bearer "):]
            if token != admin and token not in live:
                return 401, {"error": "unauthorized"}
            idem = self.headers.get("idempotency-key")
            if not idem:
                return 400, {"error": "Idempotency-Key required"}
            try:
                req = json.loads(raw)
            except Exception:
                return 400, {"error": "bad json"}
            seen = load("idempotency.json", {})
            if idem in seen:
                return 200, seen[idem]
            if req.get("op") == "create":
                new = "key-http-" + secrets.token_hex(16)
                born = load("born.json", {})
                born[new] = time.time()
                save("born.json", born)
                live.append(new)
                save("keys.json", live)
                save("minted.json", load("minted.json", []) + [new])
                out = {"data": {"secret": new, "expires": None}, "note": "minted " + new}
            elif req.get("op") == "revoke":
                gone = [k for k in live if hashlib.sha256(k.encode()).hexdigest() == req.get("key_sha256")]
                if not gone:
                    return 404, {"error": "no such key"}
                save("keys.json", [k for k in live if k not in gone])
                out = {"revoked": len(gone)}
            else:
                return 400, {"error": "unknown op"}
            seen[idem] = out
            save("idempotency.json", seen)
            return 200, out
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    daemon_threads = True
    allow_reuse_address = True
    def handle_error(self, request, client_address): pass
srv = S((addr, port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
print("ready", flush=True)
srv.serve_forever()
"#;

/// [`PROVIDER_PY`] on `addr`:`port` over TLS, its state in `dir`; killed on drop.
pub struct FakeProvider {
    child: Option<Child>,
    dir: PathBuf,
    addr: String,
    port: u16,
    cert: PathBuf,
    key: PathBuf,
    admin: String,
    hang_secs: f64,
}

impl FakeProvider {
    /// Serves `addr`:`port` with `tls`; `admin` is the key its calls may authenticate
    /// with; `keys` the key store's first content; `hang` mode answers after `hang_secs`.
    pub fn start(
        dir: &Path,
        addr: &str,
        port: u16,
        tls: &Leaf,
        admin: &str,
        keys: &[&str],
        hang_secs: f64,
    ) -> Self {
        fs::create_dir_all(dir).expect("provider folder");
        fs::write(
            dir.join("keys.json"),
            serde_json::to_string(keys).expect("json"),
        )
        .expect("key store");
        fs::write(dir.join("provider.jsonl"), "").expect("provider log");
        let mut me = Self {
            child: None,
            dir: dir.to_owned(),
            addr: addr.to_owned(),
            port,
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            admin: admin.to_owned(),
            hang_secs,
        };
        me.restart();
        me
    }

    /// The key store (the provider's live keys).
    pub fn keys_path(&self) -> PathBuf {
        self.dir.join("keys.json")
    }

    /// The live keys.
    pub fn live(&self) -> Vec<String> {
        serde_json::from_str(&fs::read_to_string(self.keys_path()).expect("key store"))
            .expect("key store JSON")
    }

    /// When each key was minted (`{key: Unix seconds}`): the [`RecordingServer`]'s
    /// `/keys` API given `born=<this>&propagation_ms=N` refuses a key younger than N ms.
    pub fn born_path(&self) -> PathBuf {
        self.dir.join("born.json")
    }

    /// Revokes every live key out of band (as a person at the provider's console
    /// would): the API refuses them from now on; hb is not told.
    pub fn revoke_all_out_of_band(&self) {
        fs::write(self.keys_path(), "[]").expect("key store");
    }

    /// Every key ever minted, oldest first.
    pub fn minted(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("minted.json"))
            .ok()
            .map(|t| serde_json::from_str(&t).expect("minted JSON"))
            .unwrap_or_default()
    }

    /// `503`, `403`, `hang` or `ok`, from the next request on.
    pub fn set_mode(&self, mode: &str) {
        fs::write(self.dir.join("mode"), mode).expect("mode file");
    }

    /// How long the `hang` mode waits from the next request on, in place of the
    /// `hang_secs` it was started with (hours: it accepts and never answers).
    pub fn set_hang_secs(&self, secs: f64) {
        fs::write(self.dir.join("hang_secs"), secs.to_string()).expect("hang_secs file");
    }

    /// Connections are refused until [`FakeProvider::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Serves again (its files as they are).
    pub fn restart(&mut self) {
        self.stop();
        let child = crate::spawn_ready(
            Command::new(crate::python())
                .args(["-c", PROVIDER_PY, &self.addr, &self.port.to_string()])
                .arg(&self.dir)
                .arg(&self.cert)
                .arg(&self.key)
                .arg(&self.admin)
                .arg(self.hang_secs.to_string()),
            "the fake provider",
        );
        self.child = Some(child);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        fs::read_to_string(self.dir.join("provider.jsonl"))
            .expect("provider log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("provider log JSON"))
            .collect()
    }

    /// The requests whose body's `op` is `op`.
    pub fn calls(&self, op: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| {
                serde_json::from_str::<Value>(r["body"].as_str().unwrap_or(""))
                    .is_ok_and(|b| b["op"] == op)
            })
            .collect()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.stop();
    }
}
