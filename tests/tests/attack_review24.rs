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
//!
//! Held: a surplus in the same write as the answer (a `Content-Length` short of the
//! body, bytes after a chunked body's end) never reached the next call (10 of 10 own on
//! 0aadde1): hyper reads an idle connection's buffered bytes as an error and closes it.

use hb_tests::{
    PythonServer, TestEnv,
    sandboxed::nobody_broker_client,
    upstream::{PY_SERVE_HTTPS, PY_TLS_HANDLER},
    worlds::{REFLECTOR_ADDR, TrustedNames},
};

const DNS_PORT: u16 = 5724;

/// The provider's API, where the caller's integrations send their credentials.
const API: &str = "api.provider.test";

/// The caller's own credential (integration `p`): fake, made for this file.
const OWN: &str = "own-8d3b1f6a9c2e7405b8d1f3a5c7e9b2d4";

/// A second credential of the caller's (integration `q`, same API): fake, made for this file.
const SECOND: &str = "sec-2a7c9e1f4b6d8305a2c4e6f8b1d3f5a7";

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
/// `web` binds both and reaches the API by itself (a call without a handle).
struct World {
    env: TestEnv,
    _server: PythonServer,
    _names: TrustedNames,
}

impl World {
    /// The world with `handler` as the provider's API: Python defining `H`, a
    /// `TlsHandler` ([`PY_TLS_HANDLER`]), served over TLS on 443 ([`PY_SERVE_HTTPS`]),
    /// with `http.server`, `json`, `ssl`, `sys`, `threading` and `time` imported.
    fn with(name: &str, handler: &str) -> Self {
        let names = TrustedNames::start(name, DNS_PORT, "provider", &[API]);
        let argv = [
            REFLECTOR_ADDR.to_owned(),
            names.leaf.cert.display().to_string(),
            names.leaf.key.display().to_string(),
        ]
        .map(|a| format!("{a:?}"))
        .join(", ");
        let server = PythonServer::start(&format!(
            "import http.server, json, ssl, sys, threading, time\n\
             addr, cert, key = [{argv}]\n{PY_TLS_HANDLER}{handler}{PY_SERVE_HTTPS}"
        ));
        let body = format!(
            r#"
[[integration]]
name = "p"
auth = "bearer"
hosts = ["{API}"]
methods = ["GET"]

[[integration]]
name = "q"
auth = "bearer"
hosts = ["{API}"]
methods = ["GET"]

[[policy]]
name = "web"
integrations = ["p", "q"]
allow_domains = ["{API}"]
"#
        );
        let env = names.agent(name, "", &body, &[("p", "bot", OWN), ("q", "bot", SECOND)]);
        Self {
            env,
            _server: server,
            _names: names,
        }
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
