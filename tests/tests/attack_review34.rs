//! A thirty-fourth attack review, run as the process inside sandbox A (uid 65534,
//! arbitrary Python) holding a handle for account `a` of integration `svc` on
//! `api.test`, while sandbox B of another policy calls the same API with account `b`:
//! can A smuggle a request through the broker, desynchronise the broker's framing towards
//! the upstream, or plant bytes on a connection that B's call (with B's credential)
//! then takes? The upstream records every request it parses, on which connection and
//! under whose credential; each test counts and prints a `figure:` line.
//!
//! Held, tested: see the tests' docs.

use std::thread;

use hb_tests::{TestEnv, sandboxed::nobody_broker_client, worlds::PythonApi};
use serde_json::Value;

const DNS_PORT: u16 = 5734;
const API: &str = "api.test";

/// Account `a`'s key (sandbox A's): fake, made for this file.
const KEY_A: &str = "keyA-3f8e2d1c0b9a87654321fedcba9876";
/// Account `b`'s key (sandbox B's): fake, made for this file.
const KEY_B: &str = "keyB-9c1e5a7b3d2f40618e7c5a3b1d9f20";

/// The API: every request it parses is logged (`cid`: its connection, numbered in
/// accept order; `seq`: its place on the connection; `who`: whose key it carried, `A`,
/// `B`, both or `-`; method, path, header names). It reads a body by `Content-Length`
/// except on GET and HEAD (as many handlers do: what follows the head is read as the
/// next request unless the connection closes), honours `Connection: close`, and answers
/// `answer to METHOD PATH`. Paths under `/plant/` are A's own on the API: their answers
/// carry more than their framing says, an answer `PLANTED` for whoever reads next on
/// the connection.
const API_PY: &str = r#"
import itertools
PLANTED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\n"
           b"PLANTED\n")
conns = itertools.count()
lock = threading.Lock()
def rec(**kw):
    with lock:
        with open(log, "a") as f:
            f.write(json.dumps(kw) + "\n")
class H(TlsHandler):
    def setup(self):
        super().setup()
        self.cid = next(conns)
        self.seq = 0
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.serve
        raise AttributeError(name)
    def who(self):
        seen = str(self.headers) + self.path
        w = ("A" if key_a in seen else "") + ("B" if key_b in seen else "")
        return w or "-"
    def serve(self):
        self.seq += 1
        n = int(self.headers.get("content-length") or 0)
        if self.command not in ("GET", "HEAD") and n:
            self.rfile.read(n)
        rec(cid=self.cid, seq=self.seq, method=self.command, path=self.path, who=self.who(),
            names=[k.lower() for k in self.headers.keys()])
        path = self.path.split("?")[0]
        own = ("answer to %s %s\n" % (self.command, path)).encode()
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                % len(own))
        kind = path[len("/plant/"):] if path.startswith("/plant/") else ""
        out = self.wfile
        if kind == "long":
            out.write(head + own + PLANTED)
        elif kind == "late":
            out.write(head + own); out.flush(); time.sleep(0.2); out.write(PLANTED)
        elif kind == "switch":
            out.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                      b"Upgrade: x\r\n\r\n" + PLANTED)
        elif kind == "continue":
            out.write(b"HTTP/1.1 100 Continue\r\n\r\n" + head + own + PLANTED)
        elif kind == "nocontent":
            out.write(b"HTTP/1.1 204 No Content\r\n\r\n" + PLANTED)
        elif kind == "closing":
            out.write(b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n" + own)
            out.flush(); time.sleep(0.2); out.write(PLANTED)
            self.close_connection = True
        elif kind == "head":
            out.write(head + own)
        else:
            out.write(head + (b"" if self.command == "HEAD" else own))
        out.flush()
"#;

/// `svc` (bearer, every method A probes with) on the API, accounts `a` and `b`; policy
/// `pa` (sandbox A) and `pb` (sandbox B) both bind it; `broker_extra`: lines in
/// `[broker]`.
fn world(name: &str, broker_extra: &str) -> (TestEnv, PythonApi) {
    let api = PythonApi::start(
        name,
        DNS_PORT,
        &[API],
        &format!("key_a, key_b = {KEY_A:?}, {KEY_B:?}\n{API_PY}"),
    );
    let body = format!(
        r#"
[[integration]]
name = "svc"
auth = "bearer"
hosts = ["{API}"]
methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

[[policy]]
name = "pa"
integrations = ["svc"]
allow_domains = ["{API}"]

[[policy]]
name = "pb"
integrations = ["svc"]
allow_domains = ["{API}"]
"#
    );
    let env = api.names.agent(
        name,
        broker_extra,
        &body,
        &[("svc", "a", KEY_A), ("svc", "b", KEY_B)],
    );
    (env, api)
}

/// Sandbox B: `argv[1]` GETs with its handle for `b`, one every 50 ms; how many got
/// their own answer, and what the others got.
const BYSTANDER: &str = r#"
h = hb.handle("svc", "b")["handle"]
c = Counter()
for i in range(int(sys.argv[1])):
    r = attempt(lambda: hb.request("GET", "https://api.test/b/%d" % i, handle=h))
    body = r.get("body") or ""
    c["own" if body == "answer to GET /b/%d\n" % i else "planted" if "PLANTED" in body
      else r.get("error") or body[:40]] += 1
    time.sleep(0.05)
print(json.dumps(c))
"#;

/// Sandbox A: every smuggling attempt through `POST /v1/requests` it can phrase, with its
/// handle for `a`, then `argv[1]` rounds of calls to its own `/plant/` paths, each
/// followed by a GET of its own; what each attempt was answered.
const SMUGGLER: &str = r#"
h = hb.handle("svc", "a")["handle"]
S = "GET /smuggled HTTP/1.1\r\nHost: api.test\r\n\r\n"
C = "0\r\n\r\n" + S
U = "https://api.test"
tries = [
    ("GET", U + "/s/get-body", {}, S),
    ("POST", U + "/s/cl0", {"Content-Length": "0"}, S),
    ("POST", U + "/s/cl-big", {"Content-Length": "9999"}, S),
    ("GET", U + "/s/cl-get", {"Content-Length": "44"}, ""),
    ("POST", U + "/s/te", {"Transfer-Encoding": "chunked"}, C),
    ("POST", U + "/s/te_", {"Transfer_Encoding": "chunked"}, C),
    ("POST", U + "/s/te-case", {"TRANSFER-ENCODING": "chunked"}, C),
    ("POST", U + "/s/te-ws", {"Transfer-Encoding": " chunked"}, C),
    ("POST", U + "/s/te-tab", {"Transfer-Encoding": "\tchunked"}, C),
    ("POST", U + "/s/te-list", {"Transfer-Encoding": "identity, chunked"}, C),
    ("POST", U + "/s/cl_", {"Content_Length": "0"}, S),
    ("POST", U + "/s/expect", {"Expect": "100-continue"}, S),
    ("GET", U + "/s/expect-get", {"Expect": "100-continue"}, ""),
    ("GET", U + "/s/keep", {"Connection": "keep-alive"}, S),
    ("POST", U + "/s/conn-names", {"Connection": "close, content-length, host"}, S),
    ("POST", U + "/s/upgrade", {"Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQAAP__",
                                 "Connection": "Upgrade, HTTP2-Settings"}, S),
    ("GET", U + "/s/te-trailers", {"TE": "trailers", "Trailer": "X-T"}, ""),
    ("GET", U + "/s/keep-alive", {"Keep-Alive": "timeout=600, max=1000"}, ""),
    ("HEAD", U + "/s/head-body", {}, S),
    ("OPTIONS", U + "/s/options-body", {}, S),
    ("DELETE", U + "/s/delete-body", {}, S),
    ("get", U + "/s/lower", {}, ""),
    ("GET ", U + "/s/space", {}, ""),
    ("GET /smuggled HTTP/1.1\r\n", U + "/s/crlf-method", {}, ""),
    ("GET", U + "/s/enc%0d%0aX-Injected:%20y", {}, ""),
    ("GET", U + "/s/raw\r\nX-Injected: y", {}, ""),
    ("GET", U + "/s/sp HTTP/1.1", {}, ""),
    ("GET", U + "/s/abs/http://evil.test/x", {}, ""),
    ("GET", U + "//evil.test/s/authority", {}, ""),
    ("GET", U + "/s/value", {"X-A": "v\r\n\r\nGET /smuggled HTTP/1.1"}, ""),
    ("GET", U + "/s/value-lf", {"X-A": "v\nGET /smuggled HTTP/1.1"}, ""),
    ("GET", U + "/s/value-nul", {"X-A": "v\x00w"}, ""),
    ("GET", U + "/s/fold", {"X-A": "v\r\n folded"}, ""),
    ("GET", U + "/s/name", {"X-A\r\nGET /smuggled HTTP/1.1\r\nX": "v"}, ""),
    ("GET", U + "/s/long", {"X-Long": "x" * 65536}, ""),
    ("GET", U + "/s/host", {"Host": "evil.test"}, ""),
    ("POST", U + "/s/b64", {"Content-Length": "1"}, None),
]
# An auth header of its own is a collision that ends the handle: those go last.
last = [
    ("GET", U + "/s/auth", {"authorization": "Bearer mine"}, ""),
    ("GET", U + "/s/auth_", {"Authorization_": "Bearer mine"}, ""),
]
got = {}
def run(tries):
    for m, u, hd, b in tries:
        kw = {"body_base64": base64.b64encode(S.encode()).decode()} if b is None else (
            {"body": b} if b else {})
        r = attempt(lambda: hb.request(m, u, handle=h, headers=hd, **kw))
        got[u.split("/s/", 1)[-1][:20]] = r.get("error") or r.get("status")
run(tries)
own = Counter()
for _ in range(int(sys.argv[1])):
    for kind in ["long", "late", "switch", "continue", "nocontent", "closing", "head"]:
        m = "HEAD" if kind == "head" else "GET"
        attempt(lambda: hb.request(m, U + "/plant/" + kind, handle=h))
        r = attempt(lambda: hb.request("GET", U + "/a/after-" + kind, handle=h))
        own["own" if r.get("body") == "answer to GET /a/after-%s\n" % kind else
            "planted" if "PLANTED" in (r.get("body") or "") else r.get("error") or "?"] += 1
run(last)
print(json.dumps({"tries": got, "after_plants": own}))
"#;

/// Everything A can phrase through `POST /v1/requests` to smuggle a request (a body
/// holding a request head after `Content-Length: 0`, `Transfer-Encoding` in every
/// spelling, `Expect`, `Upgrade`, `Connection` naming headers, bodies on GET, HEAD,
/// OPTIONS and DELETE, CR/LF in the method, URL, header names and values, absolute
/// forms in the path) and every answer of its own path on the API that carries more
/// than its framing says (a surplus answer, one written late, after a `101`, a `100`,
/// a `204`, a close-delimited body under `keep-alive`, a body to a HEAD), while B calls
/// the same API with another account: the API parses no request A did not send (none
/// for `/smuggled`), no connection carries both A's and B's calls, every request under
/// B's key is one of B's, and B gets its own answer every time.
#[test]
fn a_tenant_cannot_smuggle_onto_another_accounts_upstream_connection() {
    const B_CALLS: usize = 60;
    let (env, api) = world("review34-smuggle", "");
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| nobody_broker_client(&env, "pa", SMUGGLER, &["3"]));
        let b = s.spawn(|| nobody_broker_client(&env, "pb", BYSTANDER, &[&B_CALLS.to_string()]));
        (a.join().expect("A"), b.join().expect("B"))
    });
    let records = hb_tests::worlds::json_lines(&api.log);
    let on = |cid: &Value, who: &str| {
        records
            .iter()
            .any(|r| &r["cid"] == cid && r["who"].as_str().is_some_and(|w| w.contains(who)))
    };
    let smuggled = records
        .iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains("smuggled")))
        .count();
    let shared = records
        .iter()
        .filter(|r| r["who"] == "B" && on(&r["cid"], "A"))
        .count();
    let b_keyed: Vec<&Value> = records
        .iter()
        .filter(|r| r["who"].as_str().is_some_and(|w| w.contains('B')))
        .collect();
    let not_bs = b_keyed
        .iter()
        .filter(|r| {
            !(r["method"] == "GET" && r["path"].as_str().is_some_and(|p| p.starts_with("/b/")))
        })
        .count();
    let unkeyed = records.iter().filter(|r| r["who"] == "-").count();
    println!(
        "figure: A's tries {}; A after its plants {}; B {b}; the API parsed {} requests, \
         {smuggled} for /smuggled, {unkeyed} without a key, {shared} of B's on a connection \
         that carried A's, {} under B's key ({not_bs} not B's)",
        a["tries"],
        a["after_plants"],
        records.len(),
        b_keyed.len(),
    );
    assert_eq!(smuggled, 0, "the API parsed a request A smuggled");
    assert_eq!(
        unkeyed, 0,
        "the API parsed a request nobody's key came with"
    );
    assert_eq!(shared, 0, "B's calls shared a connection with A's");
    assert_eq!(not_bs, 0, "a request under B's key that B never sent");
    assert_eq!(b["own"].as_u64(), Some(B_CALLS as u64), "B: {b}");
}

/// The largest request body the broker takes in the pipelining test.
const MAX_BODY: usize = 4096;

/// Sandbox A on one raw connection to the broker: `POST /v1/requests` for `/p/1` to
/// `/p/5` with its handle, pipelined, bodies trickled in pieces 0.2 s apart and the next
/// request's head in the same write as the last piece; the fourth's body is over
/// `argv[1]` bytes (`broker.max_body_bytes`) and ends with a whole request for `/p/inner`;
/// the paths each answer named, in order (the answer's status or error code when it
/// named none).
const PIPELINER: &str = r#"
import socket, http.client
h = hb.handle("svc", "a")["handle"]
limit = int(sys.argv[1])
def call(path, pad=0, tail=b""):
    body = json.dumps({"handle": h, "method": "GET", "url": "https://api.test" + path,
                       "headers": {"X-Pad": "p" * pad}}).encode() + tail
    return (b"POST /v1/requests HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body
inner = call("/p/inner")
big = call("/p/4", pad=limit, tail=b" " * 16 + inner)
reqs = [call("/p/1"), call("/p/2"), call("/p/3"), big, call("/p/5")]
wire = b"".join(reqs)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(SOCK)
cuts = sorted({len(b"".join(reqs[:i])) + off for i in range(len(reqs)) for off in (60, 120)})
at = 0
for cut in cuts + [len(wire)]:
    s.sendall(wire[at:cut]); at = cut
    time.sleep(0.2)
s.shutdown(socket.SHUT_WR)
class Keep:
    def __init__(self, f): self.f = f
    def __getattr__(self, n): return getattr(self.f, n)
    def close(self): pass
class Conn:
    def __init__(self, f): self.f = f
    def makefile(self, *a, **k): return self.f
f = Keep(s.makefile("rb"))
got = []
s.settimeout(60)
while True:
    r = http.client.HTTPResponse(Conn(f), method="POST")
    try:
        r.begin()
    except (http.client.HTTPException, OSError):
        break
    a = json.loads(r.read() or b"{}")
    body = a.get("body") or ""
    e = a.get("error")
    got.append(body.split(" ", 3)[-1].strip() if body.startswith("answer to") else
               (e.get("code") if isinstance(e, dict) else e) or a.get("status"))
print(json.dumps({"answers": got}))
"#;

/// Requests pipelined on one broker connection, their bodies trickled in pieces with the
/// next request's head in the same write, are answered in order, each with its own
/// request's answer; one whose body is over `broker.max_body_bytes` is refused
/// `too_large` by itself, the request at the end of its body is never read as one, and
/// the request after it is answered.
#[test]
fn pipelined_requests_with_slow_bodies_are_each_answered_and_limited_alone() {
    let (env, api) = world(
        "review34-pipeline",
        &format!("max_body_bytes = {MAX_BODY}\n"),
    );
    let got = nobody_broker_client(&env, "pa", PIPELINER, &[&MAX_BODY.to_string()]);
    let records = hb_tests::worlds::json_lines(&api.log);
    let paths: Vec<&str> = records.iter().filter_map(|r| r["path"].as_str()).collect();
    println!(
        "figure: answers on the connection {}; the API was asked for {paths:?}",
        got["answers"]
    );
    let answers: Vec<String> = got["answers"]
        .as_array()
        .expect("answers")
        .iter()
        .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
        .collect();
    assert_eq!(
        answers.get(..4),
        Some(
            &[
                "/p/1".to_owned(),
                "/p/2".into(),
                "/p/3".into(),
                "too_large".into()
            ][..]
        ),
        "the first four answers: {answers:?}"
    );
    assert!(
        !paths.contains(&"/p/inner") && !answers.iter().any(|a| a == "/p/inner"),
        "the request inside a refused body was read as one: {answers:?} {paths:?}"
    );
    assert!(!paths.contains(&"/p/4"), "the refused request went out");
}
