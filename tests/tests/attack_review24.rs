//! A twenty-fourth attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent, the
//! real kernel and a real upstream on the test namespace's `lo`, and asserts the secure
//! outcome.
//!
//! Angle: the broker's upstream side and its caches.
//!
//! Found:
//! - a caller's calls shared its pooled upstream connections whatever credential they
//!   carried (review 23 keyed the pool by caller): an upstream that writes part of an
//!   answer a moment after it (once the connection is idle in the pool) had those bytes
//!   read as the answer to the caller's next call on the connection, which can be one
//!   made without a handle or with another handle, and the answer to the call before
//!   went to the call after. On 0aadde1, of 10 calls without a handle each after a
//!   credentialed call: 4 got the surplus (a 206 the credentialed call is refused), 3
//!   the credentialed call's answer; with another handle: 4 `partial_response`, 3 the
//!   other credential's answer. A connection now carries one caller's calls that carry
//!   one credential (or none): 10 of 10 get their own answer.
//! - an address a resolver validated for a name and that the host gained afterwards (an
//!   address added to an interface, a failover address moved to this node) stayed
//!   usable for the answer's TTL: the resolver's cached answer, the kernel allow entry
//!   it taught, and the broker's cached answer were never judged again, so a sandbox
//!   beside the agent and the broker's handle-less call reached a host service on it
//!   (3 of 3 on 0aadde1). Both caches judge a cached answer again when they read it,
//!   and a change of the host's addresses revokes the allow entries of those it now
//!   holds (0 of 3).
//! - (pinned, held) `sightings::foreign`'s widening: an answer to a call made with a
//!   handle that lists the account's other key (the one before a rotation, in its
//!   grace) is no `response_unheld` reflection even once the same answer's echo ended
//!   the caller; without the widening the account got a second signal for one answer.
//!
//! Left open here and closed by attack review 26 (`attack_review26.rs`): a sandbox's
//! connected UDP socket admitted to such an address before the host gained it kept its
//! admission (`HB_SOCK_PEER`: an established flow outlives its allow entry; in a probe,
//! 5 of 5 datagrams reached a host service on the wildcard address after the address
//! was added and the allow entries revoked, unconnected sends 0 of 5), and the agent's
//! own calls (`Party::Agent`: rotators, verify probes of every tenant's accounts)
//! shared one pool per host.
//!
//! Held: an upstream that names a header after the key a call carried (the broker's
//! client gives names in lower case: the key folded, which the case-sensitive scrub of
//! whole values missed) got the answer refused whole, `credential_fragment`, on 0aadde1
//! too (the fragment watch folds case); since the scrubber looks for a key upper- and
//! lower-cased whole, the folded key is redacted in the name instead. A surplus in the same write as the answer (a
//! `Content-Length` short of the body, bytes after a chunked body's end) never reached
//! the next call (10 of 10 own on 0aadde1): hyper reads an idle connection's buffered
//! bytes as an error and closes it. A 1xx answer's headers (`103 Early Hints`) never
//! reach anyone: hyper's client skips 1xx heads (no informational callback is set).

use hb_tests::{
    TestEnv,
    sandboxed::nobody_broker_client,
    worlds::{PythonApi, bearer_integration},
};

const DNS_PORT: u16 = 5724;

/// The provider's API, where the caller's integrations send their credentials.
const API: &str = "api.provider.test";

/// The caller's own credential (integration `p`): fake, made for this file.
const OWN: &str = "own-8d3b1f6a9c2e7405b8d1f3a5c7e9b2d4";

/// A second credential of the caller's (integration `q`, same API): fake, made for this
/// file; upper case, so that a header name (which HTTP/1.1 reads in any case and the
/// broker's client gives in lower case) holds it folded.
const SECOND: &str = "SEC2A7C9E1F4B6D8305A2C4E6F8B1D3F5A7C9E1";

/// The API's handler: every answer is `answer to <path>`, written whole in one write;
/// `/short` announces a `Content-Length` that counts that text only, `/chunked` ends its
/// chunked body and goes on, `/late` writes the same surplus a moment after its answer,
/// once the connection is idle. The surplus is a whole HTTP answer, `PLANTED`: a part of
/// a representation (206, `Content-Range`), which a call made with a handle is refused.
const SURPLUS_PY: &str = r#"
PLANTED = (b"HTTP/1.1 206 Partial Content\r\nContent-Type: text/plain\r\n"
           b"Content-Range: bytes 0-7/64\r\nContent-Length: 8\r\n\r\nPLANTED\n")
class H(TlsHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        own = ("answer to %s\n" % self.path).encode()
        if path == "/chunked":
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            own = b"%x\r\n%s\r\n0\r\n\r\n" % (len(own), own)
        else:
            head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
                    % len(own))
        extra = PLANTED if path in ("/short", "/chunked") else b""
        self.wfile.write(head + own + extra)
        self.wfile.flush()
        if path == "/late":
            time.sleep(0.2)
            self.wfile.write(PLANTED)
            self.wfile.flush()
"#;

/// Integrations `p` and `q` (the caller's, bearer, GET) on the provider's API; policy
/// `web` binds both and reaches the API by itself (a call without a handle). A
/// reflection of `p`'s key ends its caller at once (`quarantine`, nothing rotated).
struct World {
    env: TestEnv,
    _api: PythonApi,
}

impl World {
    /// The world with `handler` as the provider's API (a [`PythonApi`] handler), with
    /// `first` ([`OWN`], `p`'s first key: the provider's own knowledge) in scope.
    fn with(name: &str, handler: &str) -> Self {
        let api = PythonApi::start(
            name,
            DNS_PORT,
            &[API],
            &format!("first = {OWN:?}\n{handler}"),
        );
        let body = format!(
            r#"{p}verify_url = "https://{API}/verify"

[integration.rotation]
exec = ["/bin/false"]
on_reflection = "quarantine"
{q}
[[policy]]
name = "web"
integrations = ["p", "q"]
allow_domains = ["{API}"]
"#,
            p = bearer_integration("p", API, &["GET"]),
            q = bearer_integration("q", API, &["GET"]),
        );
        let env = api
            .names
            .agent(name, "", &body, &[("p", "bot", OWN), ("q", "bot", SECOND)]);
        Self { env, _api: api }
    }
}

/// The caller's calls made with its handle for `p` to `path` (an answer that writes
/// more than its framing says), each followed by `then` (`None`: a call without a
/// handle; `Some(i)`: one with its handle for `i`) to `/peek`: what the followers got,
/// counted over 10 pairs (`own`: their own answer; `planted`: the surplus; `another
/// call's`: the answer to the call before; an error code: the surplus refused).
fn followers(w: &World, path: &str, then: Option<&str>) -> serde_json::Value {
    let then = then.map_or("None".to_owned(), |i| {
        format!("hb.handle({i:?}, \"bot\")[\"handle\"]")
    });
    let script = format!(
        r#"
h = hb.handle("p", "bot")["handle"]
then = {then}
c = Counter()
for i in range(10):
    attempt(lambda: hb.request("GET", "https://{API}{path}", handle=h))
    r = attempt(lambda: hb.request("GET", "https://{API}/peek", handle=then))
    body = r.get("body") or ""
    c["own" if "/peek" in body else "planted" if "PLANTED" in body
      else "another call's" if "answer to" in body else r.get("error") or body] += 1
print(json.dumps(c))
"#
    );
    nobody_broker_client(&w.env, "web", &script, &[])
}

/// An answer to a call made with a handle whose upstream wrote more than its framing says
/// (a `Content-Length` short of its body, bytes after its chunked body's end, bytes a
/// moment after its answer) never becomes the answer to the caller's next call without a
/// handle, which does not get a credentialed call's refusals: here a 206 that the call
/// made with the handle would have been refused (`partial_response`).
#[test]
fn surplus_of_a_credentialed_answer_never_answers_a_call_without_the_handle() {
    let w = World::with("review24-surplus", SURPLUS_PY);
    let mut crossed = Vec::new();
    for path in ["/short", "/chunked", "/late"] {
        let got = followers(&w, path, None);
        println!("figure: {path} then a call without a handle: {got}");
        crossed.push((path, 10 - got["own"].as_u64().unwrap_or(0)));
    }
    assert!(
        crossed.iter().all(|(_, n)| *n == 0),
        "calls without the handle not given their own answer: {crossed:?}"
    );
}

/// The same with the follower made with the caller's handle for another integration:
/// the surplus of a call carrying one credential never answers a call carrying another
/// (the fragments watched, the echo signalled, are the other credential's).
#[test]
fn surplus_of_one_credentials_answer_never_answers_a_call_with_another() {
    let w = World::with("review24-surplus2", SURPLUS_PY);
    let mut crossed = Vec::new();
    for path in ["/short", "/late"] {
        let got = followers(&w, path, Some("q"));
        println!("figure: {path} then a call with another handle: {got}");
        crossed.push((path, 10 - got["own"].as_u64().unwrap_or(0)));
    }
    assert!(
        crossed.iter().all(|(_, n)| *n == 0),
        "calls with another handle not given their own answer: {crossed:?}"
    );
}

/// `p`'s key after a rotation: fake, made for this file.
const ROTATED: &str = "rot-5e9a2c7f1d3b8604e2a4c6f8d1b3e5a7";

/// The provider's key listing: `/keys` answers with the account's keys, the one the call
/// carried (its bearer) and `first` (the account's key before its rotation, still in its
/// grace period); `/first` with `first` alone.
const LISTING_PY: &str = r#"
class H(TlsHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        keys = [first]
        if path == "/keys":
            keys.insert(0, self.headers.get("authorization", "").removeprefix("Bearer "))
        body = (json.dumps({"keys": keys}) + "\n").encode()
        self.send_response(200)
        if path == "/named":
            self.send_header("X-Key-" + self.headers.get("authorization", "").removeprefix("Bearer "), "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
"#;

/// An answer to a call made with a handle that lists the handle's account's other key
/// (here the key before a rotation, in its grace period) is that account's own business:
/// redacted, and no `response_unheld` reflection of the account, even when the same
/// answer's echo of the injected key ended the caller (its handles revoked) before the
/// answer was searched for other accounts' keys (`sightings::foreign` leaves out every
/// key of an injected credential's account). The echo is the account's one signal
/// (`response`); without the widening the listing was a second one, charged to the
/// same account for the same answer. Control: `/first` alone (the caller holds its
/// handle) raises nothing.
#[test]
fn an_injected_accounts_other_key_in_its_answer_is_not_another_reflection() {
    let w = World::with("review24-listing", LISTING_PY);
    let rotate = [
        "rotate",
        "--integration",
        "p",
        "--account",
        "bot",
        "--grace",
        "10m",
    ];
    w.env.vault_with_secret(&rotate, ROTATED);
    let script = format!(
        r#"
h = hb.handle("p", "bot")["handle"]
out = {{}}
for path in ("/first", "/keys"):
    r = attempt(lambda: hb.request("GET", "https://{API}" + path, handle=h))
    out[path] = r.get("body") or r.get("error")
print(json.dumps(out))
"#
    );
    let got = nobody_broker_client(&w.env, "web", &script, &[]);
    let signals: Vec<String> = w
        .env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "detector" && r["integration"] == "p")
        .map(|r| r["seen"].as_str().unwrap_or_default().to_owned())
        .collect();
    let text = got.to_string();
    println!(
        "figure: the caller got {}; p's signals: {signals:?}",
        text.replace(OWN, "<first>").replace(ROTATED, "<rotated>")
    );
    assert!(
        !text.contains(OWN) && !text.contains(ROTATED),
        "a key of p reached the caller"
    );
    assert!(text.contains("REDACTED"), "no listing was answered: {got}");
    let seen = |at: &str| signals.iter().filter(|s| *s == at).count();
    assert_eq!(
        seen("response"),
        1,
        "the echo is one reflection: {signals:?}"
    );
    assert_eq!(
        seen("response_unheld"),
        0,
        "the account's own listing was another reflection: {signals:?}"
    );
}

/// The address the host gains during [`an_address_the_host_gains_is_refused_from_every_cache`]:
/// global unicast, in no default deny range and no exception.
const GAINED: &str = "100.128.0.99";
/// The other resolver world's DNS port.
const GAIN_DNS_PORT: u16 = 5725;

/// Python for a sandbox beside the agent (after `port = N`): `reach(name)` resolves
/// `name` (IPv4) and connects to `port` there; `connect(addr)` connects to `addr`:`port`
/// (the address taken as it is).
const PY_REACH: &str = r#"
import socket
def connect(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(3)
    try:
        s.connect((addr, port)); return "connected"
    except OSError as e:
        return "refused"
    finally:
        s.close()
def reach(name):
    try:
        infos = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return "unresolved"
    return connect(infos[0][4][0])
"#;

/// An address of a name that is not the host's when a resolver validates it and becomes
/// one afterwards (an address added to an interface, a failover address moved to this
/// node) is refused from then on wherever the validation was kept: the resolver's cached
/// answer for a sandbox beside the agent, the kernel's allow entry that answer taught
/// (the address connected to as it is), and the broker's own cached answer for a
/// handle-less call. Here the host service listens on the wildcard address (as the
/// kubelet does), and the address is added to the namespace's `lo` between the two
/// rounds; the second round waits for the agent to log the change. On 0aadde1 each of
/// the three reached the host service (3 accepted: the name resolved from the cache, the
/// address connected to as it is, the broker's call 200); now the name is unresolved
/// (looked up again, refused as the host's own), the connect refused by the kernel (the
/// allow entries revoked) and the broker's call `dns_rejected`: 0 accepted.
#[test]
fn an_address_the_host_gains_is_refused_from_every_cache() {
    use hb_tests::{
        TcpProbe,
        sandboxed::nobody_broker_client,
        worlds::{attack_as, gain_address, names_on_lo, resolver_config, started_agent},
    };
    let remote = "203.0.113.10";
    let _dns = names_on_lo(
        &[remote, "192.0.2.53"],
        GAIN_DNS_PORT,
        &[
            ("later.test", &[GAINED]),
            ("direct.test", &[GAINED]),
            ("broker.test", &[GAINED]),
        ],
        600,
    );
    let host_service = TcpProbe::bind("[::]:0");
    let port = host_service.addr.port().to_string();
    let mut env = started_agent(
        "review24-gained",
        &format!(
            "[broker]\nsocket_mode = \"0666\"\n{}\n[[policy]]\nname = \"web\"\nallow_domains = [\"later.test\", \"direct.test\", \"broker.test\"]\n",
            resolver_config(GAIN_DNS_PORT, true, "", &["203.0.113.0/24"])
        ),
    );
    let broker_call = r#"
print(json.dumps({"broker": code(lambda: hb.request("GET", "http://broker.test:%s/" % sys.argv[1]))}))
"#;
    // Round 1: every name validated while the address is nobody's here (no route: the
    // connects fail).
    let before = attack_as(
        &env,
        "web",
        &format!(
            "port = {port}\n{PY_REACH}\nprint('later', reach('later.test'))\nprint('direct', reach('direct.test'))\n"
        ),
    );
    let broker_before = nobody_broker_client(&env, "web", broker_call, &[&port]);
    gain_address(&mut env, GAINED);
    // Round 2: the same names again (cached), and the address as it is.
    let after = attack_as(
        &env,
        "web",
        &format!(
            "port = {port}\n{PY_REACH}\nprint('later', reach('later.test'))\nprint('direct', connect('{GAINED}'))\n"
        ),
    );
    let broker_after = nobody_broker_client(&env, "web", broker_call, &[&port]);
    let reached = host_service.accepted();
    println!(
        "figure: before: {} {broker_before}; after: {} {broker_after}; host service accepted {reached}",
        before.replace('\n', ", "),
        after.replace('\n', ", ")
    );
    assert!(before.contains("later refused"), "round 1: {before}");
    assert_eq!(
        reached, 0,
        "a cached validation reached the host: {after} {broker_after}"
    );
    assert!(after.contains("later unresolved"), "{after}");
    assert!(after.contains("direct refused"), "{after}");
    assert_eq!(broker_after["broker"], "dns_rejected", "{broker_after}");
}

/// An upstream that names a header after the key a call carried: the broker's client
/// gives header names in lower case, so the name holds the key folded, which the scrub
/// reads as the key's lower-cased form (the fragment watch, which folds case, refused
/// the answer whole as `credential_fragment` before the scrubber knew that form): the
/// answer never reaches the caller with the key in lower case (an upper-case key read
/// back whole), only redacted or refused.
#[test]
fn a_key_folded_into_a_header_name_never_reaches_the_caller() {
    let w = World::with("review24-named", LISTING_PY);
    let script = format!(
        r#"
h = hb.handle("q", "bot")["handle"]
r = attempt(lambda: hb.request("GET", "https://{API}/named", handle=h))
print(json.dumps(r))
"#
    );
    let got = nobody_broker_client(&w.env, "web", &script, &[]);
    let text = got.to_string();
    let folded = SECOND.to_ascii_lowercase();
    println!(
        "figure: {}",
        text.replace(&folded, "<folded key>")
            .replace(SECOND, "<key>")
    );
    assert!(
        !text.to_ascii_lowercase().contains(&folded),
        "the key reached the caller folded"
    );
    let redacted = got["headers"]
        .as_object()
        .is_some_and(|h| h.keys().any(|name| name.contains("[REDACTED:live_secret]")));
    assert!(
        got["error"] == "credential_fragment" || redacted,
        "neither refused nor redacted: {got}"
    );
}
