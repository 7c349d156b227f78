//! A thirty-fourth attack review, run as the process inside sandbox A (uid 65534,
//! arbitrary Python) holding a handle for account `a` of integration `sa` on
//! `api.test`, while sandbox B of another policy calls the same API with account `b` of
//! integration `sb` (with one integration bound by both, A's policy would keep A to `a`
//! through its `accounts`, since this review): can A smuggle a request
//! through the broker, desynchronise the broker's framing towards the upstream, or plant
//! bytes on a connection that B's call (with B's credential) then takes? The upstream records every request it parses, on which connection and
//! under whose credential; each test counts and prints a `figure:` line.
//!
//! Found:
//! - the broker sent a body whose first line reads as a request line, which the guard
//!   refuses (`http::body_start`): a back end that answers a request it refuses at its
//!   head without reading the body and keeps the connection (CL.0) reads that body as
//!   the next request, and the broker's `Connection: close` ends at a front that shares
//!   one back-end connection among its clients (a CDN, a load balancer), where that
//!   request's answer is queued for the front's next client. With A's sandbox reaching
//!   the API only through the broker (its own connect: EPERM), on 278e343, after one
//!   POST of A's, B's 3 calls got 0 of their own answers (the first got A's smuggled
//!   request's) and A's 3 calls after them got B's third answer. Such a body is
//!   refused now, `policy_denied`, before anything is sent (`body_start` moved to
//!   `http_rules`, which the guard and the broker share): 3 of 3 own each, none of B's
//!   to A.
//! - the broker forwarded a caller's `Expect: 100-continue`, though it never waits for
//!   a `100 Continue` (hyper writes the body at once): a back end that answers such a
//!   request early when it refuses it at its head takes the body as not coming and reads
//!   it as the start of the next request on its connection (Kettle's Expect-based 0.CL
//!   desync, 2025); behind the same front, B's request, sent next, was read as the rest
//!   of A's JSON body's line: on 278e343 B's first call got the back end's `400`, 2 of 3
//!   own. `Expect` is not forwarded now (`headers::outgoing`): 3 of 3.
//!
//! Held, tested: A's smuggling attempts through `POST /v1/requests` (a body holding a
//! request head after its own `Content-Length: 0`/`9999`, `Transfer-Encoding` in every
//! spelling and list, `Content_Length`, `Connection` naming `content-length` and `host`,
//! `Upgrade: h2c`, `TE`/`Trailer`/`Keep-Alive`; bodies on GET, HEAD, OPTIONS and DELETE
//! are `policy_denied`; CR, LF, NUL and obs-fold in the method, URL, header names and
//! values are `bad_request`; `%0d%0a` in the path stays encoded; absolute forms in the
//! path go out in origin form; a 64 KiB value gets the upstream's 431; a caller's `Host`
//! is refused, its `Authorization` ends its handle; in the URL, `API.TEST.`, `api%2Etest`
//! and full-width letters reach `api.test`, while userinfo, `\`, ports 0 and 65979, a zone
//! id and a fragment are `bad_request`; since this review a body that reads as a request
//! is `policy_denied`): of 119 requests the upstream parsed (126 on 278e343), none was one
//! A did not send, none came without a key, each named `api.test` in its one `Host`; A
//! is refused a handle for B's account (`binding_missing`).
//! A's own path on the API answering with more than its framing says (a surplus answer,
//! one written 0.2 s late, after a `101`, a `100`, a `204`, a close-delimited body under
//! `keep-alive`, a body to a HEAD) while B called the API 60 times with another
//! account: B 60 of 60 own, none of B's requests on a connection that carried A's (the
//! pool is keyed by caller and credential, `client.rs`). A's own calls do read the
//! surplus (of 21 calls after a plant, 3 got `PLANTED` and 3 a `101`): a late surplus
//! written after the next request went out answers it, and the answers on that
//! connection stay one behind (hyper refuses only bytes that come while it is idle);
//! that is the caller's own calls with its own credential, which the pool allows by
//! design. Pipelined `POST /v1/requests` on one broker connection, bodies trickled
//! 0.2 s apart with the next head in the same write, one over `broker.max_body_bytes`
//! ending with a whole request: each answered its own, the big one `too_large` alone,
//! the request in its body never read.
//! Held, read in the code: a connection's pool key is (caller's cgroup or uid,
//! credential id, scheme, host, address, port); the agent's own calls are never pooled;
//! a request with a body goes with `Connection: close` and its connection is never
//! pooled; a retry on a fresh connection keeps the party.
//! Still weak (the upstream's framing, not the broker's): a CL.0 back end behind a shared
//! front still reads a body that does not start as a request (JSON, here) as the start
//! of the next request, which then fails (`400`) with the next client's head in it; a
//! back end that reads only part of a body (a size cap) reads the rest as a request; a
//! HEAD answered with a body desynchronises such a front too. A policy bound
//! integrations, not accounts: two tenants on one integration could each get handles
//! for every account of it. A policy's `accounts` now keeps it to its own
//! (`broker::a_policys_accounts_keep_its_sandboxes_to_their_own_accounts`).
//! The rustls client keeps its default session cache, shared by every caller's
//! connections to one name (read in the code, not tested): a ticket from A's connection
//! can resume B's, so the upstream can link the two, nothing more.

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
            host=self.headers.get_all("host"), names=[k.lower() for k in self.headers.keys()])
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

/// `sa` (account `a`) and `sb` (account `b`), both bearer with every method A probes with
/// on the API; policy `pa` (sandbox A) binds `sa`, `pb` (sandbox B) `sb`, and neither
/// reaches the API but through the broker; `broker_extra`: lines in `[broker]`.
fn world(name: &str, broker_extra: &str) -> (TestEnv, PythonApi) {
    let api = PythonApi::start(
        name,
        DNS_PORT,
        &[API],
        &format!("key_a, key_b = {KEY_A:?}, {KEY_B:?}\n{API_PY}"),
    );
    let env = agent_of(&api, name, broker_extra);
    (env, api)
}

/// The agent of the world's config on `api`'s names (see [`world`]).
fn agent_of(api: &PythonApi, name: &str, broker_extra: &str) -> TestEnv {
    let body = format!(
        r#"
[[integration]]
name = "sa"
auth = "bearer"
hosts = ["{API}"]
methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

[[integration]]
name = "sb"
auth = "bearer"
hosts = ["{API}"]
methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

[[policy]]
name = "pa"
integrations = ["sa"]

[[policy]]
name = "pb"
integrations = ["sb"]
"#
    );
    api.names.agent(
        name,
        broker_extra,
        &body,
        &[("sa", "a", KEY_A), ("sb", "b", KEY_B)],
    )
}

/// Sandbox B: `argv[1]` GETs with its handle for `b`, one every 50 ms; how many got
/// their own answer, and what the others got.
const BYSTANDER: &str = r#"
h = hb.handle("sb", "b")["handle"]
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
h = hb.handle("sa", "a")["handle"]
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
    ("GET", "https://API.TEST./s/case-dot", {}, ""),
    ("GET", "https://api%2Etest/s/pct-host", {}, ""),
    ("GET", "https://api.test:443@evil.test/s/userinfo", {}, ""),
    ("GET", "https://evil.test\\@api.test/s/backslash", {}, ""),
    ("GET", "https://api.test:0/s/port0", {}, ""),
    ("GET", "https://api.test:65979/s/port-wrap", {}, ""),
    ("GET", "https://[fe80::1%25lo]/s/zone", {}, ""),
    ("GET", "https://api.test/s/frag#x", {}, ""),
    ("GET", "https://ａｐｉ.test/s/fullwidth", {}, ""),
]
# An auth header of its own is a collision that ends the handle: those go last.
last = [
    ("GET", U + "/s/auth", {"authorization": "Bearer mine"}, ""),
    ("GET", U + "/s/auth_", {"Authorization_": "Bearer mine"}, ""),
]
got = {"handle for sb": attempt(lambda: hb.handle("sb", "b")).get("error")}
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
        body = r.get("body") or ""
        own["own" if body == "answer to GET /a/after-%s\n" % kind else
            "planted" if "PLANTED" in body else r.get("error") or "status %s" % r.get("status")] += 1
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
    let elsewhere = records
        .iter()
        .filter(|r| r["host"] != serde_json::json!([API]))
        .count();
    println!(
        "figure: A's tries {}; A after its plants {}; B {b}; the API parsed {} requests, \
         {smuggled} for /smuggled, {unkeyed} without a key, {elsewhere} with another Host \
         than {API}, {shared} of B's on a connection that carried A's, {} under B's key \
         ({not_bs} not B's)",
        a["tries"],
        a["after_plants"],
        records.len(),
        b_keyed.len(),
    );
    assert_eq!(
        a["tries"]["handle for sb"], "binding_missing",
        "A holds a handle for B's account"
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
h = hb.handle("sa", "a")["handle"]
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

/// The back end behind the API's front (plain HTTP on 127.0.0.1:18080): it answers
/// `answer to METHOD PATH for WHO` (`WHO`: whose key came with it), reading a body by
/// `Content-Length` — except for a request it refuses at its head (a path it does not
/// serve) when `early` (a Python string set before) says so: `"expect"`, one with
/// `Expect: 100-continue` (as servers that answer such a request early do: no
/// `100 Continue` was sent, so the body is taken as not coming), `"always"`, any (a
/// CL.0 server: a handler that answers first and keeps the connection). Such a request's
/// `404` goes without its body being read, and the connection's next request is read
/// from there; a line that is no request line is answered `400` and the connection
/// closed.
const BACKEND_PY: &str = r#"
import re, socket
BACK = ("127.0.0.1", 18080)
BAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad request\n"
def refuse(c):
    # A line that is no request line: 400, then a lingering close (no reset for the
    # bytes still unread).
    c.sendall(BAD)
    c.shutdown(socket.SHUT_WR)
    c.settimeout(0.5)
    try:
        while c.recv(65536):
            pass
    except OSError:
        pass
    c.close()
def whose(headers):
    seen = " ".join(headers.values())
    return ("A" if key_a in seen else "") + ("B" if key_b in seen else "") or "nobody"
def serve_back(c):
    f = c.makefile("rb")
    while True:
        line = f.readline()
        if not line.strip():
            return
        words = line.decode("latin-1").split()
        if (len(words) != 3 or not re.fullmatch(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+", words[0])
                or not words[2].startswith("HTTP/1.")):
            return refuse(c)
        method, target, _ = words
        headers = {}
        while True:
            l = f.readline()
            if l in (b"\r\n", b"\n", b""):
                break
            k, v = l.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        path = target.split("?")[0]
        known = path.startswith(("/a/", "/b/"))
        expects = headers.get("expect", "").lower() == "100-continue"
        if known or not (early == "always" or early == "expect" and expects):
            f.read(int(headers.get("content-length") or 0))
        ans = ("answer to %s %s for %s\n" % (method, path, whose(headers))).encode()
        status = b"200 OK" if known else b"404 Not Found"
        c.sendall(b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                  % (status, len(ans)) + ans)
def backend():
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(BACK)
    ls.listen(8)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve_back, args=(c,), daemon=True).start()
threading.Thread(target=backend, daemon=True).start()
"#;

/// The API's front (a reverse proxy, as a CDN or load balancer is): each request it
/// gets, hop-by-hop headers dropped, goes on to the back end over one kept-alive
/// connection shared by all its clients (a new one when the back end closed it), and
/// the next answer on it is the request's.
const FRONT_PY: &str = r#"
HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
       "upgrade"}
shared = {}
shared_lock = threading.Lock()
def exchange(raw):
    if "sock" not in shared:
        shared["sock"] = socket.create_connection(BACK)
        shared["file"] = shared["sock"].makefile("rb")
    shared["sock"].sendall(raw)
    status = shared["file"].readline()
    if not status:
        raise ConnectionError("the back end closed")
    return status
def forward(raw):
    with shared_lock:
        try:
            status = exchange(raw)
        except OSError:
            # The back end closed the kept connection: once more on a new one.
            shared.clear()
            status = exchange(raw)
        f = shared["file"]
        code = int(status.split()[1])
        n = 0
        while True:
            l = f.readline()
            if l in (b"\r\n", b""):
                break
            if l.lower().startswith(b"content-length:"):
                n = int(l.split(b":")[1])
        return code, f.read(n)
class H(TlsHandler):
    def __getattr__(self, name):
        if name.startswith("do_"):
            return self.serve
        raise AttributeError(name)
    def serve(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        head = "%s %s HTTP/1.1\r\n" % (self.command, self.path) + "".join(
            "%s: %s\r\n" % (k, v) for k, v in self.headers.items() if k.lower() not in HOP)
        code, data = forward(head.encode() + b"\r\n" + body)
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
"#;

/// Sandbox A's POST with its handle to a path the back end does not serve, with the
/// headers of the JSON object `argv[1]` and the body `argv[2]`; what it was answered, and what its own connect to the API got (`direct`: the broker is its only
/// way there).
const POISON: &str = r#"
import socket
try:
    socket.create_connection(("203.0.113.10", 443), timeout=3).close()
    direct = "connected"
except OSError as e:
    direct = type(e).__name__
h = hb.handle("sa", "a")["handle"]
r = attempt(lambda: hb.request("POST", "https://api.test/nope", handle=h,
    headers=json.loads(sys.argv[1]), body=sys.argv[2]))
print(json.dumps({"direct": direct, "status": r.get("status") or r.get("error"),
                  "body": r.get("body")}))
"#;

/// Sandbox `argv[2]`: `argv[1]` GETs to `/<argv[2]>/<i>` with its handle for account
/// `argv[2]` (of integration `s<argv[2]>`); how many got their own answer, and the
/// answers meant for the other sandbox.
const THREE_CALLS: &str = r#"
me = sys.argv[2]
h = hb.handle("s" + me, me)["handle"]
own, theirs = 0, []
for i in range(int(sys.argv[1])):
    r = attempt(lambda: hb.request("GET", "https://api.test/%s/%d" % (me, i), handle=h))
    body = r.get("body") or ""
    own += body == "answer to GET /%s/%d for %s\n" % (me, i, me.upper())
    if body and not body.endswith(" for %s\n" % me.upper()):
        theirs.append(body.strip())
print(json.dumps({"own": own, "not_mine": theirs}))
"#;

/// What came of A's poisoning POST (with `headers`, a JSON object, and `body`) behind the
/// API's front, the back end answering early as `early` says (see [`BACKEND_PY`]): A's answer,
/// then B's and A's answers to [`CALLS`] calls each, one sandbox after the other, and the
/// count of B's answers A got; prints the figure line.
fn queue_after_poison(name: &str, early: &str, headers: &str, body: &str) -> (Value, Value, usize) {
    let api = PythonApi::start(
        name,
        DNS_PORT,
        &[API],
        &format!(
            "import socket\nkey_a, key_b = {KEY_A:?}, {KEY_B:?}\nearly = {early:?}\n\
             {BACKEND_PY}{FRONT_PY}"
        ),
    );
    let env = agent_of(&api, name, "");
    let poison = nobody_broker_client(&env, "pa", POISON, &[headers, body]);
    assert_ne!(poison["direct"], "connected", "A reaches the API by itself");
    let n = CALLS.to_string();
    let b = nobody_broker_client(&env, "pb", THREE_CALLS, &[&n, "b"]);
    let a = nobody_broker_client(&env, "pa", THREE_CALLS, &[&n, "a"]);
    let b_to_a = a["not_mine"].as_array().map_or(0, |v| {
        v.iter()
            .filter(|s| s.as_str().is_some_and(|s| s.ends_with("for B")))
            .count()
    });
    println!(
        "figure: A's POST with headers {headers} (back end answering early: {early}): \
         {poison}; B's {CALLS} calls after it: {b}; A's {CALLS} calls after B's: {a}; \
         B's answers A got: {b_to_a}"
    );
    (poison, b, b_to_a)
}

/// Calls each sandbox makes after A's poisoning POST.
const CALLS: usize = 3;

/// Behind an API front that shares one back-end connection among its clients, a back
/// end that answers an `Expect: 100-continue` request it refuses at its head without
/// reading the body (taking the body as not coming) reads A's body as the start of the
/// next request on the connection: B's request, sent next, is read as the rest of that
/// line, and B gets the back end's `400` for it. The broker never waits for
/// `100 Continue` (it writes the body at once), so a caller's `Expect` has no use but
/// this: it is not forwarded. (A JSON body, which the broker does not refuse as it
/// refuses one that reads as a request: see the next test, where the queued answer
/// goes to B and B's to A.)
#[test]
fn a_callers_expect_never_makes_a_back_end_read_its_body_as_a_request() {
    let (_, b, b_to_a) = queue_after_poison(
        "review34-expect",
        "expect",
        r#"{"Expect": "100-continue"}"#,
        r#"{"note": "x"}"#,
    );
    assert_eq!(b_to_a, 0, "A got B's answers");
    assert_eq!(b["own"].as_u64(), Some(CALLS as u64), "B: {b}");
}

/// The same front before a CL.0 back end (one that answers a request it refuses at its
/// head without reading its body, and keeps the connection: the broker's
/// `Connection: close` ends at the front): a body that reads as a request is refused
/// before anything is sent, as the guard refuses it.
#[test]
fn a_body_that_reads_as_a_request_is_never_sent() {
    let (poison, b, b_to_a) = queue_after_poison(
        "review34-cl0",
        "always",
        "{}",
        "GET /a/smuggled HTTP/1.1\r\nHost: api.test\r\n\r\n",
    );
    assert_eq!(b_to_a, 0, "A got B's answers");
    assert_eq!(b["own"].as_u64(), Some(CALLS as u64), "B: {b}");
    assert_eq!(poison["status"], "policy_denied", "A's POST: {poison}");
}
