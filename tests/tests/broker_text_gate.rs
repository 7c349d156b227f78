//! `POST /v1/scrub` and `/v1/sanitize` are no oracle for a sandbox (issue 16): a
//! sandbox that submits the live value of a credential it holds no handle for learns
//! nothing (the answer is the one a wrong guess of the same shape gets), error messages
//! do not quote the body, and the endpoints are rate-limited per caller and audited.

use std::{fs, process::Command};

use hb_tests::{TestEnv, private_netns, sandboxed::nobody_python, worlds::svc_broker_config};
use serde_json::{Value, json};

/// Policy `bound` binds `svc`, policy `unbound` nothing.
const POLICIES: &str = r#"
[[policy]]
name = "bound"
allow_domains = []
integrations = ["svc"]

[[policy]]
name = "unbound"
allow_domains = []
"#;

/// A live secret with no known token shape (only the vault knows it is one).
const SECRET: &str = "p7Rk2VfQ9mWz4LxT8nYc3HsJ6bDg1AeU5oKi0Zqv";

fn start(name: &str) -> TestEnv {
    private_netns(&[]);
    let mut env = TestEnv::new(name, &(svc_broker_config("", 5300) + POLICIES));
    env.init_vault(&[("svc", "bot", SECRET)]);
    env.start_agent();
    env
}

/// Python with `raw(method, path, body) -> (status, parsed JSON)` on the broker socket.
const PY_RAW: &str = r#"
import json, socket, sys
SOCK = sys.argv[1]
def raw(method, path, body=b""):
    s = socket.socket(socket.AF_UNIX); s.connect(SOCK); s.settimeout(30)
    s.sendall(("%s %s HTTP/1.1\r\nHost: hb\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (method, path, len(body))).encode() + body)
    data = b""
    while True:
        d = s.recv(65536)
        if not d: break
        data += d
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(rest)
def scrub(text):
    return raw("POST", "/v1/scrub", json.dumps({"text": text}).encode())
"#;

/// Runs `script` (after [`PY_RAW`]) in a sandbox of `policy` as uid 65534; its stdout
/// as JSON.
fn in_sandbox(env: &TestEnv, policy: &str, script: &str) -> Value {
    let sock = env.broker_socket().display().to_string();
    let full = format!("{PY_RAW}\n{script}");
    let out = nobody_python(env, policy, &full, &[&sock]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sandboxed python ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_sandbox_learns_nothing_from_scrubbing_a_live_secret_it_has_no_handle_for() {
    let env = start("gateoracle");
    // A wrong guess of the same shape and length.
    let guess: String = SECRET.chars().rev().collect();
    let script = format!(
        r#"
out = {{}}
for name, t in (("live", {SECRET:?}), ("guess", {guess:?})):
    out[name] = {{
        "scrub": scrub("value " + t + " end"),
        "sanitize": raw("POST", "/v1/sanitize", json.dumps({{"text": "value " + t + " end"}}).encode()),
        "bad_field": raw("POST", "/v1/scrub", json.dumps({{t: "x"}}).encode()),
        "bad_type": raw("POST", "/v1/scrub", json.dumps({{"text": [t]}}).encode()),
        # Any endpoint's error message that quotes the input is the same oracle.
        "handle_error": raw("POST", "/v1/handles", json.dumps({{"integration": t, "account": "bot"}}).encode()),
        "request_error": raw("POST", "/v1/requests", json.dumps({{"method": "GET", "url": "https://" + t.lower() + ".test/"}}).encode()),
    }}
print(json.dumps(out))
"#
    );
    let out = in_sandbox(&env, "unbound", &script);
    let as_guess = |v: &Value| {
        serde_json::to_string(v)
            .expect("json")
            .replace(SECRET, &guess)
            .replace(&SECRET.to_lowercase(), &guess.to_lowercase())
    };
    for part in [
        "scrub",
        "sanitize",
        "bad_field",
        "bad_type",
        "handle_error",
        "request_error",
    ] {
        assert_eq!(
            as_guess(&out["live"][part]),
            serde_json::to_string(&out["guess"][part]).expect("json"),
            "{part}: the live secret's answer differs from a wrong guess's: {out}"
        );
    }
    assert_eq!(
        out["live"]["scrub"],
        json!([200, {"text": format!("value {SECRET} end"), "redactions": []}]),
        "{out}"
    );

    // A sandbox holding a handle for the credential still has it scrubbed (its own
    // tool output may carry it), and so does a host caller.
    let bound = in_sandbox(
        &env,
        "bound",
        &format!(
            r#"
before = scrub({SECRET:?})
h = raw("POST", "/v1/handles", b'{{"integration": "svc", "account": "bot"}}')
print(json.dumps({{"before": before, "handle": h[0], "after": scrub({SECRET:?})}}))
"#
        ),
    );
    assert_eq!(bound["before"][1]["redactions"], json!([]), "{bound}");
    assert_eq!(bound["handle"], 201, "{bound}");
    assert_eq!(
        bound["after"][1]["text"], "[REDACTED:live_secret]",
        "{bound}"
    );
    let host = Command::new("curl")
        .args(["-sS", "-m", "5", "--unix-socket"])
        .arg(env.broker_socket())
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(json!({ "text": SECRET }).to_string())
        .arg("http://hb/v1/scrub")
        .output()
        .expect("curl");
    let host: Value = serde_json::from_slice(&host.stdout).expect("host scrub");
    assert_eq!(host["text"], "[REDACTED:live_secret]", "{host}");

    // Every call is audited, without the text.
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).expect("audit.log");
    let gate: Vec<String> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "text_gate")
        .map(|r| r.to_string())
        .collect();
    assert!(
        gate.iter()
            .filter(|r| r.contains("\"endpoint\":\"scrub\""))
            .count()
            >= 5,
        "scrub calls audited: {audit}"
    );
    for needle in [SECRET, guess.as_str()] {
        assert!(
            !gate.iter().any(|r| r.contains(needle)),
            "a text_gate record holds a submitted text: {gate:?}"
        );
    }
}

#[test]
fn scrub_calls_over_the_per_caller_limit_are_rate_limited_and_audited() {
    let env = start("gatelimit");
    // broker.scrub_per_minute is 120 by default: 130 calls in a row from one sandbox.
    let script = r#"
codes = {}
for i in range(130):
    status, body = scrub("call %d" % i)
    key = "%d %s" % (status, body["error"]["code"] if status != 200 else "ok")
    codes[key] = codes.get(key, 0) + 1
print(json.dumps(codes))
"#;
    let codes = in_sandbox(&env, "unbound", script);
    let ok = codes["200 ok"].as_u64().unwrap_or(0);
    let limited = codes["429 rate_limited"].as_u64().unwrap_or(0);
    assert!(limited > 0, "no call was rate-limited: {codes}");
    assert!((120..130).contains(&ok), "{codes}");
    assert_eq!(ok + limited, 130, "{codes}");
    // Another sandbox has its own allowance.
    let other = in_sandbox(&env, "unbound", r#"print(json.dumps(scrub("x")[0]))"#);
    assert_eq!(other, 200);
    let audit = fs::read_to_string(env.state_dir.join("audit.log")).expect("audit.log");
    let refusals = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "broker_decision" && r["decision"] == "rate_limited")
        .count();
    assert_eq!(
        refusals, 1,
        "the first refusal audited, the rest summarised later: {audit}"
    );
    let status = env.hb_json(&["status"]);
    assert!(
        status["broker"]["text_gate_limited"].as_u64() >= Some(1),
        "{status}"
    );
}

/// `POST /v1/scrub` (which looks at the text as it is, without the broker's NUL-free
/// view) cuts a live value in UTF-32, either byte order and any alignment, and in
/// base64 (coreutils') of its UTF-16 and UTF-32: the text a host caller gets back holds
/// no spelling of it.
#[test]
fn the_scrub_endpoint_cuts_a_live_value_in_wide_and_stacked_encodings() {
    let env = start("gatewide");
    let utf32 = |be: bool| -> Vec<u8> {
        SECRET
            .chars()
            .flat_map(|c| {
                if be {
                    u32::from(c).to_be_bytes()
                } else {
                    u32::from(c).to_le_bytes()
                }
            })
            .collect()
    };
    let utf16le: Vec<u8> = format!("key={SECRET}")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let mut texts: Vec<(String, String)> = Vec::new();
    for be in [false, true] {
        for stray in 0..4 {
            let mut bytes = "x".repeat(stray).into_bytes();
            bytes.extend(utf32(be));
            let text = String::from_utf8(bytes).expect("UTF-32 of ASCII is UTF-8");
            texts.push((format!("utf-32 be={be} stray={stray}"), text));
        }
    }
    for (what, bytes) in [("base64 utf-16", utf16le), ("base64 utf-32", utf32(false))] {
        let mut child = Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("base64");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &bytes).expect("write");
        let out = child.wait_with_output().expect("base64");
        texts.push((what.into(), String::from_utf8(out.stdout).expect("base64")));
    }
    for (what, text) in texts {
        let out = Command::new("curl")
            .args(["-sS", "-m", "5", "--unix-socket"])
            .arg(env.broker_socket())
            .args(["-H", "Content-Type: application/json", "-d"])
            .arg(json!({ "text": format!("you sent: {text}\n") }).to_string())
            .arg("http://hb/v1/scrub")
            .output()
            .expect("curl");
        let got: Value = serde_json::from_slice(&out.stdout).expect("host scrub");
        let text = got["text"].as_str().expect("text");
        assert!(text.contains("[REDACTED:live_secret]"), "{what}: not cut");
        assert!(
            !text.replace('\0', "").contains(SECRET),
            "{what}: the value is left"
        );
    }
}
