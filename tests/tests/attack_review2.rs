//! Attacks on what hb added most recently (evidence-driven rotation, the kernel's event
//! caps), from inside a sandbox (`--user 65534`, arbitrary code), each asserting the
//! secure behaviour: a test here fails while its hole is open.
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names; the upstreams are Python servers started by the test.

use std::{fs, time::Duration};

use hb_tests::{
    TestEnv, private_netns,
    provider::Provider,
    sandboxed::{broker_client_script, client_json, nobody_broker_client, nobody_python},
    upstream::RecordingServer,
    worlds::{REFLECTOR_ADDR, ReflectingUpstream, TrustedNames},
};
use serde_json::Value;

const DNS_PORT: u16 = 5410;
const KEY: &str = "key-shared-0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A world where integration `svc` (one account, `bot`, rotating through the provider's
/// exec rotator, on one-second sensor buckets with a hard cap of 20 calls a bucket) is
/// bound to two policies: `web` (the attacker's tenant) and `other` (another tenant).
struct SharedAccount {
    env: TestEnv,
    p: Provider,
}

impl Drop for SharedAccount {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.p.dir);
    }
}

impl SharedAccount {
    fn new(name: &str) -> Self {
        hb_tests::require_root();
        let p = Provider::start(&format!("review2-{name}"), DNS_PORT, None);
        let keys = p.key_store("keys.json", &[KEY]);
        let config = format!(
            r#"
{head}{svc}
[[policy]]
name = "web"
integrations = ["svc"]

[[policy]]
name = "other"
integrations = ["svc"]
"#,
            head = p.config_head(""),
            svc = p.exec_rotated(
                "svc",
                &keys,
                "verify",
                "sensor_bucket_secs = 1\nspike_learning_secs = 3600\nspike_hard_cap = 20\n\
                 spike_buckets = 2\nquarantine_secs = 120\nquarantine_calls_per_minute = 5\n",
            ),
        );
        let mut env = TestEnv::new(name, &config);
        env.init_vault(&[("svc", "bot", KEY)]);
        env.start_agent();
        Self { env, p }
    }

    /// Runs `script` (a [`broker_client_script`], with `hb` a broker client, `SOCK` its
    /// socket and `code(f)` the status or error code of a call) in a sandbox of `policy`
    /// as user 65534; its JSON output.
    fn in_sandbox(&self, policy: &str, script: &str) -> Value {
        nobody_broker_client(&self.env, policy, script, &[])
    }
}

/// The attacker: floods `svc` with eight threads for four seconds (a spike by the hard
/// cap), waits for the sensor to judge it, then tries a write of its own, asks for a
/// new handle (its old one ended?), tries a write with it and keeps reading to spend
/// the quarantine's per-minute allowance.
const FLOODER: &str = r#"
h = hb.handle("svc", "bot")["handle"]
def get(c, step):
    return code(lambda: c.request("GET", "https://api.test/plain?step=" + step, handle=h))
flood = []
def worker():
    c = Client(SOCK)
    stop = time.time() + 4
    while time.time() < stop:
        flood.append(get(c, "flood"))
threads = [threading.Thread(target=worker) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
time.sleep(3)
out = {"flood_calls": len(flood)}
out["own_write"] = code(lambda: hb.request("POST", "https://api.test/plain?step=w", handle=h, body="x"))
try:
    h = hb.handle("svc", "bot")["handle"]
    out["new_handle"] = h[:8]
    out["new_write"] = code(lambda: hb.request("POST", "https://api.test/plain?step=w2", handle=h, body="x"))
except BrokerError as e:
    out["new_handle"] = e.code
out["reads"] = [get(hb, "spend") for _ in range(10)]
print(json.dumps(out))
"#;

/// The other tenant: one write and three reads with its own handle.
const BYSTANDER: &str = r#"
h = hb.handle("svc", "bot")["handle"]
out = {"write": code(lambda: hb.request("POST", "https://api.test/plain?step=b", handle=h, body="x"))}
out["reads"] = [code(lambda: hb.request("GET", "https://api.test/plain?step=br", handle=h)) for _ in range(3)]
print(json.dumps(out))
"#;

// R1: `rate_spike` (default action `quarantine`) is judged per account, but the sensor
// also counts each caller's calls, and the signal names the callers that made the spike:
// only they are held on the account (read-only, their own allowance) and their handles
// to it are ended; another tenant's calls on the same account keep full service.
/// A sandbox flooding an account it shares with another tenant's policy cannot make the
/// agent hold that tenant's calls: the flooder is named and held, the other is not.
#[test]
fn a_flood_by_one_tenant_does_not_quarantine_another_tenants_calls() {
    let w = SharedAccount::new("r2-spike");
    let attacker = w.in_sandbox("web", FLOODER);
    let bystander = w.in_sandbox("other", BYSTANDER);
    let records = w.env.audit_records();
    let spike = records
        .iter()
        .find(|r| r["kind"] == "detector" && r["detector"] == "rate_spike");
    eprintln!(
        "attacker: {attacker}; bystander: {bystander}; spike signal: {}",
        spike.map_or("none".into(), Value::to_string)
    );
    assert!(
        attacker["flood_calls"].as_u64() > Some(60),
        "the flood ran: {attacker}"
    );
    assert_eq!(
        bystander["write"], 200,
        "another tenant's write is held by the flood of one it does not control: {bystander}"
    );
    assert!(
        bystander["reads"]
            .as_array()
            .is_some_and(|r| r.iter().all(|s| s == 200)),
        "another tenant's reads are starved by the flooder: {bystander}"
    );
    let spike = spike.expect("a rate_spike signal");
    assert_eq!(spike["policy"], "web", "the flooder is named: {spike}");
    assert!(
        spike["suspects"]
            .as_array()
            .is_some_and(|s| s.len() == 1 && s[0]["policy"] == "web"),
        "{spike}"
    );
    assert_eq!(
        attacker["own_write"], "unknown_handle",
        "the flooder's handle is ended: {attacker}"
    );
    assert_eq!(
        attacker["new_write"], "policy_denied",
        "the flooder stays held with a new handle: {attacker}"
    );
    assert!(
        attacker["reads"]
            .as_array()
            .is_some_and(|r| r.iter().any(|s| s == "rate_limited")),
        "the flooder's reads are held to a rate: {attacker}"
    );
}

const SCAN_POLICY: &str = r#"
[egress]
exception_cidrs = ["198.51.100.0/24"]

[[policy]]
name = "scan"
allow_cidrs = []
"#;

/// Within one budget window: `argv[1]` refused sends to 10.9.8.7:9, then one to each of
/// `argv[2]` ports of 10.9.8.7 from 1000 (each a new destination), then five connects to
/// 198.51.100.99:80 (the one the attacker is after). Prints the connects' results and
/// how long the whole took.
const PY_SCAN: &str = r#"
import errno, socket, sys, time
t0 = time.monotonic()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
def send(port):
    try:
        u.sendto(b"x", ("10.9.8.7", port))
    except OSError:
        pass
for _ in range(int(sys.argv[1])):
    send(9)
for p in range(1000, 1000 + int(sys.argv[2])):
    send(p)
said = []
for _ in range(5):
    s = socket.socket()
    try:
        s.connect(("198.51.100.99", 80))
        said.append("OK")
    except OSError as e:
        said.append(errno.errorcode.get(e.errno, str(e.errno)))
    s.close()
print(" ".join(said), "%.3f" % (time.monotonic() - t0), flush=True)
"#;

// FINDING R2: past a cgroup's three kernel caps in one 10 s window (EVENT_BURST 64,
// EVENT_DISTINCT 64, EVENT_HELD_PER_WINDOW 192: `hb-ebpf/src/policy.rs`, constants in
// `hb-common/src/lib.rs::limits`), a refusal is only counted into the cgroup's
// `pending`, which its next reported event carries. Each port is a new destination
// (`EventSeenKey` holds the port), so 64 refused sends to one address and 320 to as many
// ports of it (well under a second of `sendto` calls) spend every cap, and the connects
// to the address the sandbox is after are never named. Worse, a sandbox that then
// stops (or ends) leaves its pending count in the kernel: 149 of its 505 refusals were
// in no event, not even as a count.
//
// Closed: the agent writes a count that stood still for a tick as a `refusals_counted`
// record and takes it off the cgroup's next event, so every refusal is in the trail,
// once. Still open, and said in the README: past the caps, WHICH destination a
// refusal was aimed at is not kept (any fixed cap can be spent on distinct
// destinations, by port or by address, as cheaply).
/// A scan past every kernel event cap is counted in the audit trail to its last
/// refusal, each refusal once, after the sandbox has ended.
#[test]
fn a_scan_past_every_event_cap_is_counted_to_its_last_refusal() {
    private_netns(&["10.9.8.7", "198.51.100.99"]);
    let mut env = TestEnv::new("r2-scan", SCAN_POLICY);
    env.start_agent();
    let out = nobody_python(&env, "scan", PY_SCAN, &["100", "400"]);
    assert!(
        out.status.success(),
        "scan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        said.starts_with("EPERM EPERM EPERM EPERM EPERM "),
        "the connects were refused: {said}"
    );
    // 100 + 400 sends and 5 connects, each refused. Each event stands for one refusal
    // and its `suppressed` others; the agent looks at the kernel's counts every second.
    const REFUSED: u64 = 505;
    let counted = |scan: &[Value]| -> u64 {
        scan.iter()
            .map(|e| 1 + e["suppressed"].as_u64().unwrap_or(0))
            .sum()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let scan = loop {
        let scan: Vec<Value> = env
            .events()
            .into_iter()
            .filter(|e| e["policy"] == "scan")
            .collect();
        if counted(&scan) >= REFUSED || std::time::Instant::now() > deadline {
            break scan;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let named = scan.iter().any(|e| e["dst"] == "198.51.100.99");
    eprintln!(
        "scan took {said}; {} events for the scan; the target named: {named}",
        scan.len()
    );
    assert_eq!(
        counted(&scan),
        REFUSED,
        "every refusal of the scan, once, in the trail: {:?}",
        scan.iter()
            .filter(|e| e["reason"] == "refusals_counted")
            .collect::<Vec<_>>()
    );
    assert!(
        scan.iter().any(|e| e["reason"] == "refusals_counted"
            && e["hook"] == "kernel"
            && e["cgroup_id"].as_u64().is_some_and(|c| c > 0)),
        "the uncarried count is a record of its own, naming the sandbox"
    );
}

/// A password-like credential with a non-ASCII character every few bytes (any text a
/// header may carry as obs-text: UTF-8 bytes past 0x7F). No token family matches it.
const NON_ASCII_SECRET: &str = "pä55wört-Übér-ñøkëy-ßëcrét-Ærø";

/// An HTTPS upstream on `addr`:443 that reflects the request's `Authorization` header
/// (read as the UTF-8 it is, as Go, Node and most frameworks give it) in a text body in
/// charset `?charset=C` (a Python codec name), and says so in its `Content-Type`.
const REFLECT_PY: &str = r#"
import http.server, ssl, sys, urllib.parse
addr, _log, cert, key = sys.argv[1:5]
class H(TlsHandler):
    def do_GET(self):
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query))
        charset = q.get("charset", "utf-8")
        auth = self.headers.get("authorization", "").encode("latin-1").decode("utf-8")
        out = ("you sent: %s\n" % auth).encode(charset)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=" + charset)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
"#;

// FINDING R3: a credential with non-ASCII characters, reflected by its upstream in
// UTF-32 with a byte-order mark, reaches the caller whole. `broker/requests.rs::
// readable_text` takes the UTF-32LE mark (FF FE 00 00) for UTF-16LE's (FF FE), so the
// body passes as text (returned as `body_base64`); `cut_spread`'s NUL-free view
// (`scrub/spread.rs::Squeezed`) spells each character below U+0100 as its one Latin-1
// byte, not the value's UTF-8, so no form of the value (`scrub/live.rs::forms`: raw,
// UTF-16, …; no Latin-1, no UTF-32) matches, and `Fragments` finds no 8-byte run of the
// value's UTF-8 between its non-ASCII characters. Without a mark, UTF-32LE is refused
// as unreadable; in UTF-16 the value's UTF-16 form matches.
/// A non-ASCII credential reflected in UTF-8, UTF-16 or UTF-32 (with a byte-order mark)
/// never reaches the caller.
#[test]

fn a_non_ascii_credential_reflected_in_utf32_never_reaches_the_caller() {
    assert_never_whole(&non_ascii_reflections("r2-utf32", &["utf-8", "utf-32"]));
}

/// The same credential reflected in UTF-8 and in UTF-16 (with and without a byte-order
/// mark, either byte order) is cut: these held.
#[test]
fn a_non_ascii_credential_reflected_in_utf16_never_reaches_the_caller() {
    assert_never_whole(&non_ascii_reflections(
        "r2-utf16",
        &["utf-8", "utf-16", "utf-16le", "utf-16be"],
    ));
}

fn assert_never_whole(got: &Value) {
    eprintln!("answers: {got}");
    assert_eq!(got["utf-8"]["status"], 200, "the reflector answered: {got}");
    assert_never_whole_of(got);
}

/// What a sandbox of policy `web` recovers of [`NON_ASCII_SECRET`] reflected in each
/// of `charsets`: per charset, the status and whether the value came back whole.
fn non_ascii_reflections(name: &str, charsets: &[&str]) -> Value {
    let client = format!(
        r#"
h = hb.handle("e", "bot")["handle"]
out = {{}}
for cs in {charsets}:
    try:
        r = hb.request("GET", "https://echo.test/reflect?charset=" + cs, handle=h)
    except BrokerError as e:
        out[cs] = {{"error": e.code}}
        continue
    raw = r["body"].encode("utf-8") if "body" in r else base64.b64decode(r["body_base64"])
    text = raw.decode(cs, errors="replace")
    out[cs] = {{"status": r["status"], "as": "body" if "body" in r else "body_base64",
               "whole": SECRET in text}}
print(json.dumps(out))
"#,
        charsets = serde_json::json!(charsets),
    );
    reflected_by(name, REFLECT_PY, NON_ASCII_SECRET, &client)
}

/// Runs `client` (a [`broker_client_script`], with `SECRET` the credential) in a sandbox
/// of policy `web`, whose integration `e` (bearer `secret`, host `echo.test` on
/// 203.0.113.10) is served by `reflector` (a [`ReflectingUpstream`] reflector); the JSON
/// it printed.
fn reflected_by(name: &str, reflector: &str, secret: &str, client: &str) -> Value {
    let upstream = ReflectingUpstream::start(
        &format!("review2-{name}"),
        DNS_PORT,
        &["echo.test"],
        reflector,
        &[],
    );
    let env = upstream.agent(
        name,
        "",
        r#"
[[integration]]
name = "e"
auth = "bearer"
hosts = ["echo.test"]
methods = ["GET"]

[[policy]]
name = "web"
integrations = ["e"]
"#,
        &[("e", "bot", secret)],
    );
    let script = broker_client_script(&env, &format!("SECRET = {secret:?}\n{client}"));
    let out = nobody_python(&env, "web", &script, &[]);
    client_json(&out)
}

// FINDING R4: the same credential echoed by a Python web app (WSGI and `http.server`
// hand header values over as Latin-1 text, so each UTF-8 byte is one character) as
// JSON with `json.dumps`'s ASCII escapes — httpbin's `/headers` does exactly this — is
// `p\u00c3\u00a455w\u00c3\u00b6rt…`: `scrub/live.rs::forms` holds the value's JSON
// escape of its characters (`\u00e4`), not of its bytes, and no 8-byte run of the
// value's UTF-8 lies between the escapes, so the body reaches the caller unredacted and
// `json.loads(...).encode("latin-1").decode("utf-8")` gives the credential back.
/// A non-ASCII credential echoed as a Python JSON echo writes headers (each byte of its
/// UTF-8 a `\u00XX` escape) never reaches the caller.
#[test]

fn a_non_ascii_credential_in_a_python_json_echo_never_reaches_the_caller() {
    let names = TrustedNames::start("review2-json", DNS_PORT, "api", &["api.test"]);
    let api = RecordingServer::start(&names.dir, REFLECTOR_ADDR, 443, Some(&names.leaf));
    let env = names.agent(
        "r2-json",
        "",
        r#"
[[integration]]
name = "e"
auth = "bearer"
hosts = ["api.test"]
methods = ["GET"]

[[policy]]
name = "web"
integrations = ["e"]
"#,
        &[("e", "bot", NON_ASCII_SECRET)],
    );
    let script = broker_client_script(
        &env,
        &format!(
            r#"SECRET = {secret:?}
h = hb.handle("e", "bot")["handle"]
r = hb.request("GET", "https://api.test/echo", handle=h)
body = r.get("body", "")
try:
    got = json.loads(body)["headers"].get("authorization", "")
    got = got.encode("latin-1", errors="replace").decode("utf-8", errors="replace")
except Exception as e:
    got = ""
print(json.dumps({{"status": r["status"], "escaped": "\\u00c3" in body, "whole": SECRET in got}}))
"#,
            secret = NON_ASCII_SECRET,
        ),
    );
    let out = nobody_python(&env, "web", &script, &[]);
    let reached = api.requests().len();
    let got = client_json(&out);
    eprintln!("answer: {got}; upstream requests: {reached}");
    assert_eq!(got["status"], 200, "the echo answered: {got}");
    assert_eq!(
        got["whole"], false,
        "the credential came back whole through the JSON echo: {got}"
    );
}

/// A credential with the symbols escapers rewrite between runs of fewer than 8 of its
/// characters (no token family matches it).
const SYMBOL_SECRET: &str = "Zq8k<Lm2v&X9pQ>r7\"w3T'Yb<5nK";

/// An HTTPS upstream on `addr`:443 that reflects the token of the request's
/// `Authorization` header the way `?enc=` says: `html` as `html.escape` writes it in a
/// page (`&lt;`, `&amp;`, `&quot;`, `&#x27;`), `go` as Go's `encoding/json` writes it
/// (`\u003c`, `\u0026`, `\"`), `named` with HTML5 names for every symbol (`&lt;`,
/// `&amp;`, `&quot;`, `&apos;`, `&gt;`).
const ESCAPE_REFLECT_PY: &str = r#"
import http.server, ssl, sys, urllib.parse, html, json
addr, _log, cert, key = sys.argv[1:5]
NAMES = {"<": "&lt;", ">": "&gt;", "&": "&amp;", '"': "&quot;", "'": "&apos;"}
class H(TlsHandler):
    def do_GET(self):
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query))
        tok = self.headers.get("authorization", "").split(" ", 1)[-1]
        enc = q.get("enc")
        if enc == "html":
            out, ctype = "<p>you sent: %s</p>" % html.escape(tok), "text/html"
        elif enc == "go":
            s = json.dumps({"sent": tok}).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            out, ctype = s, "application/json"
        else:
            out, ctype = "<p>you sent: %s</p>" % "".join(NAMES.get(c, c) for c in tok), "text/html"
        out = out.encode()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
"#;

/// A credential its upstream reflects with some of its characters escaped (as
/// `html.escape`, Go's JSON writer, or HTML5's named references write them) never
/// reaches the caller: the broker's answer, read back by the sandbox with
/// `html.unescape` or `json.loads`, does not hold it. The broker looks for the value in
/// each escaper's spelling (and the spelling its decoded view leaves of it) and cuts
/// it where it is spelled.
#[test]
fn a_credential_reflected_with_some_characters_escaped_never_reaches_the_caller() {
    let got = reflected_by(
        "r2-escaped",
        ESCAPE_REFLECT_PY,
        SYMBOL_SECRET,
        r#"
import html
h = hb.handle("e", "bot")["handle"]
out = {}
for enc in ["html", "go", "named"]:
    try:
        r = hb.request("GET", "https://echo.test/reflect?enc=" + enc, handle=h)
    except BrokerError as e:
        out[enc] = {"error": e.code}
        continue
    body = r.get("body", "")
    try:
        read = json.loads(body)["sent"] if enc == "go" else html.unescape(body)
    except Exception:
        read = html.unescape(body)
    out[enc] = {"status": r["status"], "whole": SECRET in read,
                "cut": "[REDACTED:live_secret]" in body}
print(json.dumps(out))
"#,
    );
    eprintln!("answers: {got}");
    assert_never_whole_of(&got);
    for enc in ["html", "go", "named"] {
        assert_eq!(
            got[enc]["status"], 200,
            "{enc}: the reflector answered: {got}"
        );
    }
    for enc in ["html", "go", "named"] {
        assert_eq!(
            got[enc]["cut"], true,
            "{enc}: cut where it is spelled: {got}"
        );
    }
}

/// No answer in `got` held the credential whole once read back.
fn assert_never_whole_of(got: &Value) {
    let leaked: Vec<&String> = got
        .as_object()
        .expect("answers")
        .iter()
        .filter(|(_, v)| v["whole"] == true)
        .map(|(k, _)| k)
        .collect();
    assert!(
        leaked.is_empty(),
        "the credential came back whole as {leaked:?}: {got}"
    );
}
