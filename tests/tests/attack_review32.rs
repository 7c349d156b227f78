//! A thirty-second attack review, run as the process inside sandbox A (uid 65534,
//! arbitrary Python, many sockets) against the real agent in the test's own network
//! namespace: A tries to starve sandbox B — another policy's, or another sandbox of
//! A's own policy — of the broker, the guard, the resolver or its events. Each test
//! counts B's answers while A attacks and prints a `figure:` line; it fails while the
//! attack works.
//!
//! Found:
//! - the broker's budget of request bodies being read at once (`server::BodyBudget`) was
//!   shared out among tenants (policies) only: one sandbox sending a few large bodies all
//!   but their last byte held its whole policy's share until `request_timeout_secs`,
//!   and every other sandbox of that policy had each call that carries a body (handles,
//!   requests, sessions) refused `unavailable` meanwhile. The same held for the answers
//!   budget (`server::AnswerBudget`), keyed the same way. Each is now shared out at two
//!   levels, as the broker's connections are: among tenants, and among the callers
//!   (sandboxes, host uids) within, one caller holding at most a quarter of the budget.

use std::time::Duration;

use hb_tests::{
    TestEnv, private_netns, python,
    sandboxed::{nobody_command, nobody_python_json, stdout_lines},
};
use serde_json::Value;

const CONFIG: &str = r#"
[broker]
socket_mode = "0666"
request_timeout_secs = 240
idle_timeout_secs = 300

[dns]
listen = "127.0.0.1:5332"

[[integration]]
name = "svc"
auth = "bearer"
hosts = ["api.svc.test"]
methods = ["GET"]

[[policy]]
name = "bound"
allow_domains = []
integrations = ["svc"]
"#;

/// Sandbox A: `argv[2]` connections, each sending `POST /v1/handles` with a body of
/// `argv[3]` MiB all but its last byte; prints `held` once every byte is sent (the
/// broker has read them: a Unix socket's buffer is far smaller), then holds the
/// connections until its stdin closes, and prints what each got meanwhile.
const PY_HOLD_BODIES: &str = r#"
import socket, sys
SOCK, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = mib << 20
conns = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX); s.connect(SOCK)
    s.sendall(b"POST /v1/handles HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % size)
    try:
        s.sendall(b" " * (size - 1))
    except OSError:
        pass
    conns.append(s)
print("held", flush=True)
sys.stdin.read()
for s in conns:
    s.setblocking(False)
    try:
        print("got", s.recv(12).split(b" ")[1].decode(), flush=True)
    except (OSError, IndexError):
        print("got nothing", flush=True)
"#;

/// Sandbox B: `POST /v1/handles` on the broker socket `argv[1]`, `argv[2]` times; prints the JSON
/// tally of `STATUS CODE`.
const PY_HANDLES: &str = r#"
import json, socket, sys
SOCK = sys.argv[1]
def call(method, path, doc):
    body = json.dumps(doc).encode()
    s = socket.socket(socket.AF_UNIX); s.connect(SOCK); s.settimeout(120)
    s.sendall(b"%s %s HTTP/1.1\r\nHost: hb\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (method.encode(), path.encode(), len(body)) + body)
    data = b""
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(rest)
t = {}
for i in range(int(sys.argv[2])):
    status, body = call("POST", "/v1/handles", {"integration": "svc", "account": "bot", "execution": "b%d" % i})
    k = "%d %s" % (status, body["error"]["code"] if status >= 400 else "ok")
    t[k] = t.get(k, 0) + 1
print(json.dumps(t))
"#;

fn count(tally: &Value, key: &str) -> u64 {
    tally[key].as_u64().unwrap_or(0)
}

/// One sandbox holding eight 4 MiB bodies of `POST /v1/handles` all but their last byte
/// (32 MiB, half the broker's 64 MiB body budget) leaves another sandbox of its
/// policy its part: of B's calls, each with a small body, every one is answered.
#[test]
fn a_sandbox_holding_bodies_leaves_another_sandbox_of_its_policy_served() {
    const B_CALLS: u64 = 5;
    private_netns(&[]);
    let mut env = TestEnv::new("a32bodies", CONFIG);
    env.init_vault(&[("svc", "bot", "p7Rk2VfQ9mWz4LxT8nYc3HsJ6bDg1AeU5oKi0Zqv")]);
    env.start_agent();
    let sock = env.broker_socket().display().to_string();
    let mut attacker = nobody_command(
        &env,
        "bound",
        &[],
        &[python(), "-c", PY_HOLD_BODIES, &sock, "8", "4"],
    )
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::inherit())
    .spawn()
    .expect("sandbox run");
    let lines = stdout_lines(&mut attacker);
    let held = lines.recv_timeout(Duration::from_secs(120));
    assert_eq!(
        held.as_deref(),
        Ok("held"),
        "the attacker never sent its bodies"
    );

    let b_calls = B_CALLS.to_string();
    let b = nobody_python_json(&env, "bound", PY_HANDLES, &[&sock, &b_calls]);

    drop(attacker.stdin.take());
    let a_got: Vec<String> = lines.iter().collect();
    let _ = attacker.wait();
    eprintln!(
        "figure: while sandbox A holds 8 bodies of 4 MiB all but their last byte, sandbox B \
         of the same policy: {b} of {B_CALLS} calls; A's connections got {a_got:?}"
    );
    assert_eq!(
        count(&b, "201 ok"),
        B_CALLS,
        "another sandbox of A's policy was refused while A held bodies: {b}"
    );
}
