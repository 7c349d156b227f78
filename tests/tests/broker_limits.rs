//! One sandbox cannot make the broker slow for the others by issuing handles: each
//! caller holds at most `broker.max_handles_per_caller` live handles (`handle_limit`)
//! and gets at most `broker.handles_per_minute` new ones a minute (`rate_limited`),
//! while another sandbox is still served. Outcomes and counters only, never time.

use std::fs;

use hb_tests::{TestEnv, private_netns, sandboxed::nobody_python, worlds::svc_broker_config};
use serde_json::Value;

/// Five live handles a caller, twelve new ones a minute; policy `bound` binds `svc`.
fn config() -> String {
    let broker = svc_broker_config(
        "max_handles_per_caller = 5\nhandles_per_minute = 12\n",
        5300,
    );
    format!(
        "{broker}\n[[policy]]\nname = \"bound\"\nallow_domains = []\nintegrations = [\"svc\"]\ncanary_handles = 4\n"
    )
}

/// Python with `raw(method, path, body) -> (status, parsed JSON or None)` and
/// `handle(execution) -> (status, answer)` on the broker socket.
const PY_RAW: &str = r#"
import json, socket, sys
SOCK = sys.argv[1]
def raw(method, path, body=b""):
    s = socket.socket(socket.AF_UNIX); s.connect(SOCK); s.settimeout(60)
    s.sendall(("%s %s HTTP/1.1\r\nHost: hb\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (method, path, len(body))).encode() + body)
    data = b""
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), (json.loads(rest) if rest.strip() else None)
def handle(execution):
    return raw("POST", "/v1/handles", json.dumps({"integration": "svc", "account": "bot", "execution": execution}).encode())
def outcome(status, body):
    return "%d %s" % (status, body["error"]["code"] if status >= 400 else "ok")
def tally(outcomes):
    t = {}
    for o in outcomes: t[o] = t.get(o, 0) + 1
    return t
"#;

/// Runs `script` (after [`PY_RAW`]) in a new sandbox of policy `bound` as uid 65534;
/// its stdout as JSON.
fn in_sandbox(env: &TestEnv, script: &str) -> Value {
    let sock = env.broker_socket().display().to_string();
    let full = format!("{PY_RAW}\n{script}");
    let out = nobody_python(env, "bound", &full, &[&sock]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sandboxed python ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_sandbox_flooding_handle_creation_is_capped_and_rate_limited_while_another_is_served() {
    private_netns(&[]);
    let mut env = TestEnv::new("handlelimits", &config());
    env.init_vault(&[("svc", "bot", "p7Rk2VfQ9mWz4LxT8nYc3HsJ6bDg1AeU5oKi0Zqv")]);
    env.start_agent();

    // The flooder: 8 handles in 8 executions (cap 5), then all of them deleted and 15
    // more, each deleted at once (12 a minute: the allowance runs out part-way and
    // refills far slower than the calls come).
    let flood = in_sandbox(
        &env,
        r#"
first, held, messages = [], [], {}
for i in range(8):
    status, body = handle("a%d" % i)
    first.append(outcome(status, body))
    if status == 201: held.append(body["handle"])
    else: messages[body["error"]["code"]] = body["error"]["message"]
deleted = [raw("DELETE", "/v1/handles/" + h)[0] for h in held]
second = []
for i in range(15):
    status, body = handle("b%d" % i)
    second.append(outcome(status, body))
    if status == 201: raw("DELETE", "/v1/handles/" + body["handle"])
    else: messages[body["error"]["code"]] = body["error"]["message"]
print(json.dumps({"first": first, "deleted": deleted, "second": tally(second), "messages": messages}))
"#,
    );
    let first: Vec<&str> = flood["first"]
        .as_array()
        .expect("first")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        first,
        [vec!["201 ok"; 5], vec!["429 handle_limit"; 3]].concat(),
        "the 6th live handle is refused: {flood}"
    );
    assert_eq!(flood["deleted"], serde_json::json!(vec![204; 5]), "{flood}");
    let second = &flood["second"];
    let ok = second["201 ok"].as_u64().unwrap_or(0);
    let limited = second["429 rate_limited"].as_u64().unwrap_or(0);
    // 12 a minute: 8 were taken by the first round, so 4 remain (and a few refill).
    assert!((4..15).contains(&ok) && limited > 0, "{flood}");
    assert_eq!(ok + limited, 15, "only the rate limit refuses now: {flood}");
    let messages = &flood["messages"];
    assert!(
        messages["handle_limit"]
            .as_str()
            .is_some_and(|m| m.contains("broker.max_handles_per_caller (5)")),
        "{flood}"
    );
    assert!(
        messages["rate_limited"]
            .as_str()
            .is_some_and(|m| m.contains("broker.handles_per_minute (12)")),
        "{flood}"
    );

    // Another sandbox has its own allowance and is served.
    let other = in_sandbox(
        &env,
        r#"
status, body = handle("v1")
listed = raw("GET", "/v1/handles")
print(json.dumps({"handle": outcome(status, body), "listed": len(listed[1]["handles"]), "whoami": raw("GET", "/v1/whoami")[0]}))
"#,
    );
    assert_eq!(other["handle"], "201 ok", "{other}");
    assert_eq!(other["listed"], 5, "its handle and its 4 decoys: {other}");
    assert_eq!(other["whoami"], 200, "{other}");

    let status = env.hb_json(&["status"]);
    // Counted (the file may lag the last second of a flood).
    assert!(
        status["broker"]["handles_limited"].as_u64() >= Some(1),
        "{status}"
    );
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).expect("audit.log");
    let refusals: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "broker_decision" && r["action"] == "handle")
        .collect();
    for decision in ["handle_limit", "rate_limited"] {
        assert!(
            refusals.iter().any(|r| r["decision"] == decision),
            "{decision} audited: {refusals:?}"
        );
    }
}
