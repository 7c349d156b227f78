//! A twenty-sixth attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary Python) against the real agent, the
//! real kernel and a real upstream on the test namespace's `lo`, and asserts the secure
//! outcome.
//!
//! Angle: the two gaps review 24 left open.
//!
//! Found:
//! - the agent's own calls (`Party::Agent`: verify probes and rotators of every tenant's
//!   accounts) shared one pool per (scheme, host, address): an upstream that writes
//!   bytes a moment after its answer to one account's verify probe (once the connection
//!   is idle in the pool) had them read as the answer to the next account's probe on the
//!   connection. On 0aadde1, of 3 accounts whose key works, probed after another
//!   account's probe whose answer was followed by a planted 401: 3 found dead and a
//!   rotation started (a healthy key rotated on a stranger's word; a planted 200 would
//!   keep a dead one). The agent's calls are never pooled now: 0 of 3.

use hb_tests::{
    PythonServer, TestEnv,
    sandboxed::nobody_broker_client,
    upstream::{PY_SERVE_HTTPS, PY_TLS_HANDLER},
    worlds::{REFLECTOR_ADDR, TrustedNames},
};

const DNS_PORT: u16 = 5726;

/// The provider's API, where both integrations send their keys.
const API: &str = "api.provider.test";

/// The accounts probed, one round each (a probe of an account runs at most once in ten
/// seconds).
const ROUNDS: [&str; 3] = ["r0", "r1", "r2"];

/// The API: every call to `/data` is refused 401 (about something else: the keys work),
/// which sends the account's verify probe; both `verify_url`s answer 200. After its
/// answer to `/verify-p`, once the connection carries the next request (the next
/// bytes the agent writes on it), the handler writes a 401 of its own: an answer the
/// next request on the connection reads as its own. (Timed by the next request rather
/// than by a delay, so that the count does not hang on a race: a fixed delay hits when
/// the next call goes out within it.)
const PLANTING_PY: &str = r#"
import select
PLANTED = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
class H(TlsHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        status = 401 if path == "/data" else 200
        body = ("answer to %s\n" % path).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if path == "/verify-p":
            ready, _, _ = select.select([self.connection], [], [], 10)
            if ready:
                try:
                    self.wfile.write(PLANTED)
                    self.wfile.flush()
                except OSError:
                    pass
"#;

/// Integrations `p` and `q` (bearer, GET, rotated by a rotator that always fails) on
/// the provider's API, with their own `verify_url`s; policy `web` binds both. Accounts
/// [`ROUNDS`] of each, every key a fake made for this file.
struct ProbeWorld {
    env: TestEnv,
    _server: PythonServer,
    _names: TrustedNames,
}

impl ProbeWorld {
    fn start(name: &str) -> Self {
        let names = TrustedNames::start(name, DNS_PORT, "provider", &[API]);
        let argv = [
            REFLECTOR_ADDR.to_owned(),
            names.leaf.cert.display().to_string(),
            names.leaf.key.display().to_string(),
        ]
        .map(|a| format!("{a:?}"))
        .join(", ");
        let server = PythonServer::start(&format!(
            "import http.server, ssl\naddr, cert, key = [{argv}]\n{PY_TLS_HANDLER}{PLANTING_PY}{PY_SERVE_HTTPS}"
        ));
        let integration = |name: &str| {
            format!(
                r#"
[[integration]]
name = "{name}"
auth = "bearer"
hosts = ["{API}"]
methods = ["GET"]
verify_url = "https://{API}/verify-{name}"

[integration.rotation]
exec = ["/bin/false"]
"#
            )
        };
        let body = format!(
            "{}{}\n[[policy]]\nname = \"web\"\nintegrations = [\"p\", \"q\"]\n",
            integration("p"),
            integration("q")
        );
        let keys: Vec<(String, String)> = ROUNDS
            .iter()
            .flat_map(|a| {
                ["p", "q"].map(|i| (i.to_owned(), format!("key-{i}-{a}-5e0c9a7b3d1f4e2a8c6b")))
            })
            .collect();
        let credentials: Vec<(&str, &str, &str)> = keys
            .iter()
            .zip(ROUNDS.iter().flat_map(|a| [a, a]))
            .map(|((i, k), a)| (i.as_str(), *a, k.as_str()))
            .collect();
        let env = names.agent(name, "", &body, &credentials);
        Self {
            env,
            _server: server,
            _names: names,
        }
    }
}

/// An account's verify probe is never answered by bytes an upstream wrote after its
/// answer to another account's probe: each round, a call with `p`'s key is refused 401
/// (its probe: 200, then the planted 401 waits for the connection's next request), then
/// a call with `q`'s (its probe finds the key working: the 401 passes and nothing is
/// rotated). The figure: how many of `q`'s accounts got a rotation.
#[test]
fn a_verify_probe_never_reads_an_answer_planted_after_another_accounts_probe() {
    let w = ProbeWorld::start("review26-probe");
    let script = format!(
        r#"
out = []
for a in {ROUNDS:?}:
    for i in ("p", "q"):
        h = hb.handle(i, a)["handle"]
        out.append(code(lambda: hb.request("GET", "https://{API}/data", handle=h)))
print(json.dumps(out))
"#
    );
    let answers = nobody_broker_client(&w.env, "web", &script, &[]);
    let history = w.env.hb_json(&["rotation", "history"]);
    let rotated: Vec<&serde_json::Value> = history
        .as_array()
        .map(|h| h.iter().filter(|r| r["integration"] == "q").collect())
        .unwrap_or_default();
    println!(
        "figure: q's working keys rotated: {} of {} (answers {answers})",
        rotated.len(),
        ROUNDS.len()
    );
    let p_rotated = history
        .as_array()
        .map_or(0, |h| h.iter().filter(|r| r["integration"] == "p").count());
    assert_eq!(p_rotated, 0, "p's keys work: {history}");
    assert!(
        rotated.is_empty(),
        "q's working keys were found dead by an answer planted after p's probe: {history}"
    );
}
