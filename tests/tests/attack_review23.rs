//! A twenty-third attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent, the
//! real kernel and a real upstream on the test namespace's `lo`, and asserts the secure
//! outcome.
//!
//! Angle: the broker's socket and what it parses, and where what the upstream says goes
//! when the broker does not make an answer of it.
//!
//! Found:
//! - words of an upstream's answer that the broker quotes in an error, not in an
//!   answer — a redirect's `Location` (its host, when policy refuses the hop; its
//!   scheme, when it is not http or https) and the answer's `Content-Encoding` (a coding
//!   the broker cannot undo) — were scrubbed as the caller's own text is: of its own
//!   handles and credentials only. A provider answer naming another tenant's live
//!   credential there reached the caller in clear, though the same value in the
//!   answer's body or headers is redacted (review 1's F2: an answer is scrubbed of every
//!   live value on the node). Such an error is now scrubbed as the answer it stands for.
//! - a credentialed POST (the integration allows POST, not DELETE) with a `_method=DELETE`
//!   form body was sent when its `Content-Type` was missing, empty or had blanks before
//!   it: the override check read a form only by a `Content-Type` starting with the
//!   form's media type, but Rack reads a POST without a media type as a form (and
//!   servers strip the blanks), so `Rack::MethodOverride` turned it into a DELETE. A body
//!   with no media type is now read as a form too, and every `Content-Type` as servers
//!   read it.
//! - (found with the first) that error, once scrubbed of every live value, told whether
//!   a guess the caller had an upstream spell there was another tenant's key, and no
//!   detector heard of it; such a key is now its account's `reflection`
//!   (`response_unheld`), as in an answer.
//! - a request naming 40000 headers panicked the broker's task that built the outbound
//!   request (an HTTP header map holds at most 32768): the caller got a closed
//!   connection and the agent's log a panic. A request names at most 100 headers now
//!   (`bad_request`).
//! - the broker's idle upstream connections were shared by every caller: one tenant's
//!   HEAD calls to an API whose HEAD answers wrongly carry a body (the attacker's choice
//!   of bytes: a whole HTTP answer) left those bytes on a pooled connection, read as the
//!   answer to its next request. Another tenant's credentialed calls got the planted
//!   answer or the answers to the attacker's calls, and the attacker got that tenant's
//!   answers (on 3bbd807, of 300 calls each at once: 12 planted, 16 of the attacker's,
//!   13 of the victim's to the attacker). A connection now carries one caller's calls
//!   (the agent's own calls have their own), and none is pooled after an answer that
//!   has no body (HEAD, 1xx, 204, 304): a caller's own HEAD call left the planted answer
//!   for its own next call (5 of 10 on 3bbd807 and on the per-caller pool), where a
//!   credentialed call's answer could reach a later call without a credentialed call's
//!   refusals.
//!
//! Held (figures in the report): duplicate JSON keys (`url`, `handle` twice: refused
//! `bad_request`, serde's duplicate field), a UTF-8 BOM before the JSON (refused), a
//! method in lower case (sent upper case, judged as such), `OPTIONS` and `PROPFIND` with
//! a handle of an integration that allows neither (refused `policy_denied`); from the
//! sandbox, `hb-agent events` reads nothing and `hb-agent maps list` is refused
//! (`BPF_OBJ_GET`: EPERM).
//!
//! Still open: an upstream that sends more than its answer's framing says in another way
//! (a `Content-Length` short of what it writes) can still leave bytes on one caller's
//! pooled connection for its next call. The names under `/sys/fs/bpf` are listable from
//! a sandbox.

use hb_tests::{
    TestEnv,
    sandboxed::nobody_broker_client,
    worlds::{OverrideArrivals, PythonApi, two_tenants},
};
use serde_json::Value;

const DNS_PORT: u16 = 5723;

/// The provider's API, where both tenants' integrations send their credentials.
const API: &str = "api.provider.test";

/// The attacker's own credential (integration `p`): fake, made for this file.
const OWN: &str = "own-4f1c9e7a2b6d8305c1e7a9f3b5d7c2e4";

/// Another tenant's credential (integration `v`, policy `other`): fake, made for this
/// file; lower case letters and digits that no token family matches, 40 characters
/// starting with a letter, so a URL's host label, a URL's scheme and a coding token
/// can each hold it whole.
const VICTIM: &str = "vk7d2f9c4e1b8a6305d7e9f1c3b5a7d9e2f4c6b8";

/// The provider's handler (see [`World::with`]). `/listing` answers 200 with the other tenant's key in the
/// body (the control: an answer is scrubbed of it); `/moved` a 302 to a host whose first
/// label is the key; `/scheme` a 302 to a URL whose scheme is the key; `/coded` a 200
/// whose `Content-Encoding` is the key. The key is the provider's own knowledge (argv),
/// never in the request.
const PROVIDER_PY: &str = r#"
class H(TlsHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        status, headers, body = 200, [], b"ok\n"
        if path == "/listing":
            body = ('{"keys": ["%s"]}\n' % victim).encode()
        elif path == "/moved":
            status, headers = 302, [("Location", "https://%s.provider.test/next" % victim)]
        elif path == "/scheme":
            status, headers = 302, [("Location", "%s:/next" % victim)]
        elif path == "/coded":
            headers = [("Content-Encoding", victim)]
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
"#;

/// Integration `p` (the attacker's, bearer, GET and POST) and `v` (another tenant's,
/// bearer, GET), both on the provider's API; policy `web` binds `p` and reaches the API
/// by itself, policy `other` binds `v`. Redirects are followed.
struct World {
    env: TestEnv,
    api: PythonApi,
}

impl World {
    fn new(name: &str) -> Self {
        Self::with(name, PROVIDER_PY)
    }

    /// The world with `handler` as the provider's API (a [`PythonApi`] handler), with
    /// `victim` (the other tenant's key, the provider's own knowledge) in scope.
    fn with(name: &str, handler: &str) -> Self {
        let api = PythonApi::start(
            name,
            DNS_PORT,
            &[API],
            &format!("victim = {VICTIM:?}\n{handler}"),
        );
        let body = two_tenants(API, &["GET", "POST"], true);
        let env = api.names.agent(
            name,
            "follow_redirects = true\n",
            &body,
            &[("p", "bot", OWN), ("v", "bot", VICTIM)],
        );
        Self { env, api }
    }
}

/// What the provider says in an answer the broker turns into an error (a redirect's
/// refused host, a redirect's scheme, a coding it cannot undo) is scrubbed as that
/// answer would be: another tenant's live credential named there never reaches the
/// caller, with its handle or without one. Control: the same provider's listing of that
/// credential in a body comes back redacted (the value is live and the broker holds it).
#[test]
fn another_tenants_credential_in_an_upstream_error_never_reaches_the_caller() {
    let w = World::new("review23-errors");
    // The other tenant uses its credential: the broker holds it decrypted.
    let victim = nobody_broker_client(
        &w.env,
        "other",
        &format!(
            r#"
v = hb.handle("v", "bot")["handle"]
print(json.dumps(attempt(lambda: hb.request("GET", "https://{API}/hello", handle=v))))
"#
        ),
        &[],
    );
    assert_eq!(victim["status"], 200, "{victim}");
    let got = nobody_broker_client(
        &w.env,
        "web",
        &format!(
            r#"
h = hb.handle("p", "bot")["handle"]
out = {{}}
for path in ("listing", "moved", "scheme", "coded"):
    for name, handle in (("handle", h), ("none", None)):
        out[path + " " + name] = attempt(lambda: hb.request("GET", "https://{API}/" + path, handle=handle))
print(json.dumps(out))
"#
        ),
        &[],
    );
    let cases = got.as_object().expect("cases");
    let outcome = |v: &Value| {
        v["error"]
            .as_str()
            .map_or_else(|| v["status"].to_string(), str::to_owned)
    };
    let leaked: Vec<&String> = cases
        .iter()
        .filter(|(_, v)| v.to_string().contains(VICTIM))
        .map(|(k, _)| k)
        .collect();
    let errors = cases
        .iter()
        .filter(|(k, v)| !k.starts_with("listing") && v["error"].is_string())
        .count();
    println!(
        "figure: {} calls; {errors} answered as errors; another tenant's key in clear in {}: {leaked:?}; {}",
        cases.len(),
        leaked.len(),
        cases
            .iter()
            .map(|(k, v)| format!("{k}={}", outcome(v)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for case in ["listing handle", "listing none"] {
        let body = got[case]["body"].as_str().unwrap_or_default();
        assert!(
            got[case]["status"] == 200 && body.contains("REDACTED"),
            "control {case}: the listing did not come back redacted: {}",
            got[case].to_string().replace(VICTIM, "<victim>")
        );
    }
    assert_eq!(
        errors,
        6,
        "every redirect and coding case must end as an error: {}",
        got.to_string().replace(VICTIM, "<victim>")
    );
    assert!(
        leaked.is_empty(),
        "another tenant's live credential reached the caller in an error: {leaked:?}"
    );
    assert!(
        !got.to_string().contains(OWN),
        "the caller's own credential came back"
    );
}

/// Another tenant's key the upstream named in an error (a refused redirect's host) is
/// that key's `reflection` (`seen: "response_unheld"`), as it is when an answer shows
/// it: the caller gets it redacted, and a guess it had an upstream spell there is no
/// free oracle (its integration's `on_reflection` acts on it).
#[test]
fn another_tenants_key_in_an_upstream_error_is_a_reflection() {
    let w = World::new("review23-unheld");
    let victim = nobody_broker_client(
        &w.env,
        "other",
        r#"print(json.dumps(attempt(lambda: {"handle": hb.handle("v", "bot")["handle"]})))"#,
        &[],
    );
    assert!(victim["handle"].is_string(), "{victim}");
    let got = nobody_broker_client(
        &w.env,
        "web",
        &format!(r#"print(json.dumps(attempt(lambda: hb.request("GET", "https://{API}/moved"))))"#),
        &[],
    );
    let signals: Vec<Value> = w
        .env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "detector" && r["seen"] == "response_unheld")
        .collect();
    println!(
        "figure: the caller got {}; response_unheld signals: {}",
        got.to_string().replace(VICTIM, "<victim>"),
        signals.len()
    );
    assert_eq!(got["error"], "policy_denied", "{got}");
    assert!(
        !got.to_string().contains(VICTIM),
        "the key reached the caller"
    );
    assert!(
        signals
            .iter()
            .any(|r| r["integration"] == "v" && r["account"] == "bot"),
        "no reflection of v/bot: {signals:?}"
    );
}

/// An upstream that reads a request's method as Rack does (`Rack::MethodOverride`
/// before a Rails or Sinatra app): a POST whose body is form data carries its real
/// method in a `_method` field. Form data, by `Rack::Request#form_data?`: the media type
/// (the `Content-Type` value up to `;` or `,`, the server having stripped the blanks
/// around it, lower case) is `application/x-www-form-urlencoded` or
/// `multipart/form-data`, or the request is a POST with no media type at all (no
/// `Content-Type`, or an empty one). Every request is a JSON line in `log`:
/// `method` (as sent), `acted` (as Rack reads it), `auth` (the `Authorization` header).
const RACK_PY: &str = r#"
lock = threading.Lock()
def media_type(headers):
    v = headers.get("content-type")
    if v is None:
        return None
    t = v.strip(" \t").replace(",", ";").split(";")[0].rstrip(" \t").lower()
    return t or None
class H(TlsHandler):
    def any(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        acted = self.command
        t = media_type(self.headers)
        if self.command == "POST" and (t is None or t == "application/x-www-form-urlencoded"):
            fields = dict(urllib.parse.parse_qsl(body.decode("latin-1")))
            if fields.get("_method", "").upper() in ("PUT", "PATCH", "DELETE"):
                acted = fields["_method"].upper()
        rec = {"method": self.command, "acted": acted, "path": self.path,
               "auth": self.headers.get("authorization", "")}
        with lock, open(log, "a") as f:
            f.write(json.dumps(rec) + "\n")
        out = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_GET = do_POST = do_PUT = do_DELETE = any
"#;

/// A credentialed POST to an integration that allows POST and not DELETE never acts as
/// a DELETE at an upstream that reads `_method` as Rack does: not with the form's
/// `Content-Type` given with blanks before it (which the server strips), not with an
/// empty one, not with none (Rack reads a POST without a media type as form data).
/// Control: the same body with `Content-Type: text/plain` reaches the upstream as a POST
/// Rack leaves alone.
#[test]
fn a_post_without_a_form_content_type_does_not_act_as_another_method() {
    let w = World::with("review23-override", RACK_PY);
    let got = nobody_broker_client(
        &w.env,
        "web",
        &format!(
            r#"
h = hb.handle("p", "bot")["handle"]
cases = {{
    "none": {{}},
    "empty": {{"Content-Type": ""}},
    "space": {{"Content-Type": " application/x-www-form-urlencoded"}},
    "tab": {{"Content-Type": "\tapplication/x-www-form-urlencoded"}},
    "text": {{"Content-Type": "text/plain"}},
}}
out = {{}}
for name, headers in cases.items():
    r = attempt(lambda: hb.request("POST", "https://{API}/items/1?case=" + name, handle=h,
                                   headers=headers, body="_method=DELETE"))
    out[name] = r.get("error") or r["status"]
print(json.dumps(out))
"#
        ),
        &[],
    );
    let seen = OverrideArrivals::read(&w.api, OWN, "5 POSTs with a _method=DELETE form body", &got);
    assert_eq!(got["text"], 200, "control: a text body is sent: {got}");
    assert!(
        seen.credentialed_post("/items/1?case=text"),
        "control: the text POST did not arrive as a POST: {:?}",
        seen.all
    );
    seen.assert_none_overridden();
}

/// A request naming more headers than an HTTP request map can hold (32768) is refused
/// `bad_request` before anything is sent, with its handle or without: the broker does
/// not panic on it (on 3bbd807 the call's task panicked building the outbound request,
/// and the caller got a closed connection instead of an answer). Another call is served
/// after it.
#[test]
fn a_request_with_more_headers_than_a_request_can_hold_is_refused() {
    let mut w = World::new("review23-headers");
    let got = nobody_broker_client(
        &w.env,
        "web",
        &format!(
            r#"
h = hb.handle("p", "bot")["handle"]
many = {{"x-h%d" % i: "1" for i in range(40000)}}
out = {{}}
for name, handle in (("handle", h), ("none", None)):
    try:
        out[name] = attempt(lambda: hb.request("GET", "https://{API}/hello", handle=handle, headers=many))
    except Exception as e:
        out[name] = {{"error": "no answer: " + type(e).__name__}}
out["after"] = attempt(lambda: hb.request("GET", "https://{API}/hello", handle=h))
print(json.dumps({{k: v.get("error") or v.get("status") for k, v in out.items()}}))
"#
        ),
        &[],
    );
    let panics = w.env.agent().log_text().matches("panicked").count();
    println!("figure: 2 calls of 40000 headers: {got}; agent panics logged: {panics}");
    assert_eq!(got["after"], 200, "the call after was not served: {got}");
    assert_eq!(got["handle"], "bad_request", "{got}");
    assert_eq!(got["none"], "bad_request", "{got}");
    assert_eq!(panics, 0, "the broker panicked on a request's headers");
}

/// The shared API's handler in
/// [`a_connection_one_tenant_desynchronised_never_carries_another_tenants_call`]: its answer to `HEAD /spill` wrongly carries a body (as a handler that
/// serves HEAD with its GET code does), and that body is a whole HTTP answer of the
/// attacker's choosing, `PLANTED`; any other request is answered `answer to <path>`.
const SPILL_PY: &str = r#"
PLANTED = b"PLANTED by the other tenant\n"
class H(TlsHandler):
    def any(self):
        body = ("answer to %s\n" % self.path).encode()
        if self.command == "HEAD" and self.path == "/spill":
            body = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                    % len(PLANTED) + PLANTED)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_HEAD = any
"#;

/// A caller's own HEAD call to that API, then its own GET: the GET gets its own answer,
/// not the body the HEAD answer left on a pooled connection (a connection is not pooled
/// after an answer that has no body). On 3bbd807 (and with the pool keyed by caller
/// alone) each GET after a HEAD got the planted answer, which a credentialed call's
/// answer could take the place of: the answer to one of the caller's calls reaching a
/// later call that does not get a credentialed call's refusals.
#[test]
fn a_callers_own_head_call_does_not_desynchronise_its_next_call() {
    let w = World::with("review23-selfdesync", SPILL_PY);
    let script = format!(
        r#"
c = Counter()
for i in range(10):
    attempt(lambda: hb.request("HEAD", "https://{API}/spill"))
    r = attempt(lambda: hb.request("GET", "https://{API}/peek"))
    body = r.get("body") or r.get("error") or ""
    c["planted" if "PLANTED" in body else "own" if "/peek" in body else body] += 1
print(json.dumps(c))
"#
    );
    let got = nobody_broker_client(&w.env, "web", &script, &[]);
    println!("figure: {got}");
    assert_eq!(got["own"], 10, "every GET got its own answer: {got}");
}

/// One tenant (policy `web`, no handle needed) makes HEAD calls to an API another tenant
/// (policy `other`) calls with its credential, on an upstream whose HEAD answers carry a
/// body: bytes hyper does not read as that answer's and, on a connection the broker
/// pooled, reads as the answer to the connection's next request. Neither tenant gets an
/// answer to the other's call: the other tenant's credentialed calls never get the
/// attacker's planted answer, and the attacker's GETs never get the other tenant's
/// answers. Counted over 300 calls each, made at once.
#[test]
fn a_connection_one_tenant_desynchronised_never_carries_another_tenants_call() {
    let w = World::with("review23-desync", SPILL_PY);
    let start = hb_tests::sandboxed::unix_secs_in(3);
    let attacker = format!(
        r#"
start = {start}
while time.time() < start:
    time.sleep(0.01)
c = Counter()
for i in range(300):
    attempt(lambda: hb.request("HEAD", "https://{API}/spill"))
    r = attempt(lambda: hb.request("GET", "https://{API}/peek"))
    body = r.get("body") or ""
    c["victim's answer" if "/mine" in body else "own or error"] += 1
print(json.dumps(c))
"#
    );
    let victim = format!(
        r#"
start = {start}
v = hb.handle("v", "bot")["handle"]
while time.time() < start:
    time.sleep(0.01)
c = Counter()
for i in range(300):
    r = attempt(lambda: hb.request("GET", "https://{API}/mine", handle=v))
    body = r.get("body") or r.get("error") or ""
    c["planted" if "PLANTED" in body else "own" if "/mine" in body
      else "attacker's" if "/peek" in body else body] += 1
print(json.dumps(c))
"#
    );
    let (a, v) = std::thread::scope(|s| {
        let v = s.spawn(|| nobody_broker_client(&w.env, "other", &victim, &[]));
        let a = nobody_broker_client(&w.env, "web", &attacker, &[]);
        (a, v.join().expect("victim"))
    });
    println!("figure: attacker {a}; victim {v}");
    assert!(
        v["own"].as_u64().unwrap_or(0) > 0,
        "the victim was not served: {v}"
    );
    assert_eq!(
        v["planted"].as_u64().unwrap_or(0),
        0,
        "another tenant's credentialed calls got the attacker's planted answer: {v}"
    );
    assert_eq!(
        v["attacker's"].as_u64().unwrap_or(0),
        0,
        "another tenant's credentialed calls got answers to the attacker's calls: {v}"
    );
    assert_eq!(
        a["victim's answer"].as_u64().unwrap_or(0),
        0,
        "the attacker got another tenant's answers: {a}"
    );
}
