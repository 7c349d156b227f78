//! An eleventh attack review, run as the process inside the sandbox: each test performs
//! one attack from a sandbox (uid 65534, arbitrary code) or from a pod's own cgroup
//! subtree, against the real agent, then reads what hb shows an operator (the real CLI,
//! the audit log) and asserts that it is whole and true. A test marked
//! `#[ignore = "open: …"]` is a break found and not yet fixed: it fails against the
//! current agent.
//!
//! Angle: promise (5), "every refusal is recorded, and what hb records and shows an
//! operator is true" — strings the attacker chooses (its process name, the names of the
//! cgroups a pod makes below its own) on their way into the audit log, the agent's JSON
//! log, the broker's event stream (`hb-agent events --follow`), the text lines of
//! `hb-agent events` and the tables `hb-agent maps dump` prints on a terminal.
//!
//! Everything lives on `lo` in the test's own network namespace; dnsmasq answers the
//! test names; the upstream is a Python server started by the test.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use hb_tests::{
    Pod, PythonServer, TestEnv, private_netns,
    sandboxed::{Running, broker_client_script, nobody_command},
    upstream::Dnsmasq,
};
use serde_json::Value;

const DNS_PORT: u16 = 5411;

/// A plain HTTP/1.1 server on `203.0.113.10:80` that answers every request 200 and
/// keeps the connection open.
const KEEPALIVE_PY: &str = r#"
import http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        out = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
class S(http.server.ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address): pass
S(("203.0.113.10", 80), H).serve_forever()
"#;

/// The agent's config: policy `web` allows `allowed.test` (203.0.113.10, port 80
/// guarded by default); pods of `web` enrolled by their glob; the broker socket open
/// to uid 65534. `broker_extra` goes into `[broker]`, `integrations` before the policy,
/// `policy_extra` into it.
fn config(broker_extra: &str, integrations: &str, policy_extra: &str) -> String {
    format!(
        r#"
[broker]
socket_mode = "0666"
{broker_extra}

[dns]
listen = "127.0.0.1:5300"
upstreams = ["127.0.0.1:{DNS_PORT}"]

[egress]
exception_cidrs = ["203.0.113.0/24"]
{integrations}

[[policy]]
name = "web"
allow_domains = ["allowed.test"]
{policy_extra}
{glob}
"#,
        glob = hb_tests::pod_glob("web")
    )
}

fn world(name: &str) -> (TestEnv, PythonServer, Dnsmasq) {
    world_with(name, "text", &config("", "", ""), |_| {})
}

/// [`world`] with the agent's log in `log_format`, `config`, and `setup` run before the
/// agent starts.
fn world_with(
    name: &str,
    log_format: &str,
    config: &str,
    setup: impl FnOnce(&TestEnv),
) -> (TestEnv, PythonServer, Dnsmasq) {
    private_netns(&["203.0.113.10"]);
    let server = PythonServer::start(KEEPALIVE_PY);
    let dns = Dnsmasq::start(
        "127.0.0.1",
        DNS_PORT,
        &[("allowed.test", &["203.0.113.10"])],
        &[],
        60,
    );
    let mut env = TestEnv::new(name, config);
    let text = std::fs::read_to_string(&env.config_path).expect("config");
    let text = text.replacen(
        "[agent]\n",
        &format!("[agent]\nlog_format = \"{log_format}\"\n"),
        1,
    );
    std::fs::write(&env.config_path, text).expect("config");
    setup(&env);
    env.start_agent();
    (env, server, dns)
}

/// The control characters (C0, DEL, C1) in `text`, as escapes: what a terminal would
/// have acted on rather than shown.
fn controls(text: &str) -> Vec<String> {
    text.chars()
        .filter(|c| c.is_control() && *c != '\n')
        .map(|c| c.escape_default().to_string())
        .collect()
}

/// Names itself (`prctl(PR_SET_NAME)`, the kernel's `comm`) with an OSC 52 clipboard
/// write and a carriage return, opens a guarded connection to allowed.test:80, prints
/// `held`, and keeps the connection open until its stdin closes.
const PY_ESCAPE_COMM: &str = r#"
import ctypes, socket, sys
libc = ctypes.CDLL(None)
libc.prctl(15, ctypes.c_char_p(b"\x1b]52;c;aGk=\x07\r"), 0, 0, 0)
socket.getaddrinfo("allowed.test", 80)
s = socket.create_connection(("203.0.113.10", 80), timeout=10)
s.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
print("held" if s.recv(100).startswith(b"HTTP/1.1 200") else "refused", flush=True)
sys.stdin.read()
"#;

// FINDING 1: `hb-agent maps dump` prints its table cells as they are
// (`cli/maps.rs::print_rows`): the `comm` column of `maps dump guard` is the sandbox's
// own `prctl(PR_SET_NAME)`, 15 bytes of whatever it likes, and `cgroup` columns name
// directories a pod with a delegated cgroup creates. A sandbox names itself
// `ESC ] 52 ; c ; … BEL` and the operator's terminal, asked to show the guard's
// connections, writes the sandbox's text to the operator's clipboard (or erases and
// rewrites the line with `ESC [ 2K CR`). `hb-agent events` already shows such strings
// through `events::Escaped`; the tables now do too.
/// What `hb-agent maps dump guard` prints of a sandbox's connection holds no control
/// character the sandbox put in its process name: the operator's terminal shows the
/// name, and runs none of it.
#[test]
fn a_process_name_with_terminal_escapes_is_shown_inert_by_maps_dump() {
    hb_tests::require_root();
    let (env, _server, _dns) = world("review11-comm");
    let mut attacker = Running::spawn(nobody_command(
        &env,
        "web",
        &[],
        &[hb_tests::python(), "-c", PY_ESCAPE_COMM],
    ));
    assert_eq!(attacker.line(), "held", "control: the guarded connection");
    let out = env.hb(&["maps", "dump", "guard"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = env.hb_json(&["maps", "dump", "guard"]);
    drop(attacker);
    let rows = json.as_array().expect("rows");
    // Control: the JSON form carries the name as it is (serde escapes it).
    assert!(
        rows.iter()
            .any(|r| r["comm"].as_str().is_some_and(|c| c.contains("]52;c;"))),
        "control: the connection is listed: {json}"
    );
    let got = controls(&table);
    println!(
        "figure: control characters written raw to the operator's terminal by `maps dump \
         guard`: {got:?}"
    );
    assert!(
        got.is_empty(),
        "the sandbox's process name reached the terminal as control characters {got:?}: \
         {table:?}"
    );
}

/// Runs the broker client `script` ([`broker_client_script`]) as uid 65534 in `sub`, a
/// sub-cgroup of `pod` the pod makes and names (as a pod with a delegated cgroup does,
/// one per container); the JSON it printed.
fn pod_call(env: &TestEnv, pod: &Pod, sub: &str, script: &str) -> Value {
    let script = broker_client_script(env, script);
    let shell = format!(
        "mkdir -p \"./$1\" && echo $$ > \"./$1/cgroup.procs\" && exec setpriv --reuid 65534 \
         --regid 65534 --clear-groups {py} -c \"$0\"",
        py = hb_tests::python(),
    );
    let mut cmd = pod.command(&["sh", "-c", &shell, &script, sub]);
    cmd.current_dir(hb_tests::cgroup2_mount().join(&pod.rel));
    let out = cmd.output().expect("pod command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

// FINDING 2: the audit log scrubs a record after serialising it
// (`audit.rs::AuditLog::timed`), and the scrubber's `pem_private_key` family runs from
// `-----BEGIN … PRIVATE KEY-----` through base64, whitespace and backslashes (the
// `\n` of a JSON-escaped key) when no END line follows. A string in a record that holds
// `-----BEGIN PRIVATE KEY-----` right before a `"` serialises as `…-----\"`: the
// redaction takes the escaping backslash and leaves a bare quote, and the line is no
// longer JSON. Every broker call's record holds the caller's cgroup path, and a pod with
// a delegated cgroup names its sub-cgroups as it likes: its calls then leave lines that
// `jq` (and the harness's own `audit_records`) cannot read — the refusals among them
// included, and, for `jq`, every line after the first.
/// Every line the audit log holds for a caller whose cgroup name ends a PEM header
/// before a quote is a JSON record, and its refusal is there.
#[test]
fn a_cgroup_name_that_opens_a_redacted_key_leaves_every_audit_line_json() {
    hb_tests::require_root();
    let (env, _server, _dns) = world("review11-audit");
    let pod = env.root_pod("web");
    let sub = "-----BEGIN PRIVATE KEY-----\"";
    let got = pod_call(
        &env,
        &pod,
        sub,
        "print(json.dumps({\"scrub\": attempt(lambda: hb.scrub(\"hello\")), \
         \"request\": attempt(lambda: hb.request(\"GET\", \"http://denied.test/x\"))}))\n",
    );
    assert_eq!(
        got["request"]["error"], "policy_denied",
        "control: the call is refused: {got}"
    );
    // The records are written as the calls are made; give the writer a moment.
    let path = env.state_dir.join("audit.log");
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("denied.test") || text.contains("policy_denied") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let broken = not_json(text.lines());
    println!(
        "figure: {} of {} audit lines are not JSON after the pod's two calls",
        broken.len(),
        text.lines().count()
    );
    assert!(
        broken.is_empty(),
        "audit lines that are not JSON: {broken:#?}"
    );
    let refused = env.audit_records().into_iter().any(|r| {
        r["kind"] == "broker_decision"
            && r["decision"] == "policy_denied"
            && r["caller"]["cgroup"]
                .as_str()
                .is_some_and(|c| c.contains(&pod.rel))
    });
    assert!(
        refused,
        "the pod's refused call is not in the audit log: {text}"
    );
}

/// A refused call of a pod's sub-cgroup named `sub`: the broker's event of it names the
/// sub-cgroup.
const REFUSED_CALL: &str =
    "print(json.dumps(attempt(lambda: hb.request(\"GET\", \"http://denied.test/x\"))))\n";

/// Whether `line` (from `events --follow --json`) is the broker's refusal of a call
/// made in the sub-cgroup `sub`.
fn refusal_of(line: &str, sub: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| {
        v["hook"] == "broker"
            && v["cgroup"]
                .as_str()
                .is_some_and(|c| c.ends_with(&format!("/{sub}")))
    })
}

// FINDING 2b: the broker's event stream (`GET /v1/events`, what `hb-agent events
// --follow` shows while an agent runs) scrubs each event's serialised line as the audit
// log did (`broker/server.rs::events`), and `events --follow` skips a `data:` line that
// does not parse: the refusal of a caller whose cgroup name opens a PEM redaction
// before a quote never reaches the operator watching live. Both now go through
// `audit::scrub_json`.
/// `hb-agent events --follow` shows the refusal of a call made from a cgroup whose name
/// opens a redacted key, before the refusal of a call made after it.
#[test]
fn a_cgroup_name_that_opens_a_redacted_key_does_not_hide_a_refusal_from_events_follow() {
    hb_tests::require_root();
    let (env, _server, _dns) = world("review11-follow");
    let pod = env.root_pod("web");
    let mut follow = Command::new(hb_tests::agent_bin())
        .arg("--config")
        .arg(&env.config_path)
        .args(["events", "--follow", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("events --follow");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = BufReader::new(follow.stdout.take().expect("stdout"));
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Markers, each from a fresh sub-cgroup, until one shows up after the first seen:
    // the follower then streams live (past its reading of the events file).
    let mut seen_first = false;
    let mut live = false;
    for i in 0..30 {
        let marker = format!("marker{i}");
        pod_call(&env, &pod, &marker, REFUSED_CALL);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if refusal_of(&line, &marker) => {
                    live = seen_first;
                    seen_first = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if live {
            break;
        }
    }
    assert!(live, "control: events --follow never streamed a marker");
    let sub = "-----BEGIN PRIVATE KEY-----\"";
    let got = pod_call(&env, &pod, sub, REFUSED_CALL);
    assert_eq!(got["error"], "policy_denied", "control: {got}");
    pod_call(&env, &pod, "after", REFUSED_CALL);
    let mut before_after = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("events --follow ended before the refusal of the call after");
        if refusal_of(&line, "after") {
            break;
        }
        before_after.push(line);
    }
    let _ = follow.kill();
    let _ = follow.wait();
    let shown = before_after
        .iter()
        .filter(|l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| {
                v["hook"] == "broker"
                    && v["cgroup"]
                        .as_str()
                        .is_some_and(|c| c.contains(&pod.rel) && !c.contains("/marker"))
            })
        })
        .count();
    println!(
        "figure: refusals of the cgroup named to open a redaction shown by events --follow: \
         {shown} of 1"
    );
    assert_eq!(
        shown, 1,
        "events --follow did not show the refusal: {before_after:#?}"
    );
}

// FINDING 2c: the agent's own log is scrubbed a whole event at a time
// (`scrub/exits.rs::EventWriter`); with `agent.log_format = "json"` that is the
// serialised JSON line, and the same PEM redaction takes the backslash before a quote.
// When the broker ends a suspect caller (`broker/cutoff.rs`: a decoy handle used, a
// quarantine, the compromise cap) it logs the caller's cgroup path in a field, so a
// pod's sub-cgroup named to open a redaction makes the log line of its own cutoff
// unreadable to the log pipeline. A JSON event now goes through `audit::scrub_json`.
/// With the JSON log, the line that says a suspect caller was ended is JSON even when
/// the caller's cgroup name opens a redacted key before a quote.
#[test]
fn a_cgroup_name_that_opens_a_redacted_key_leaves_the_json_log_json() {
    hb_tests::require_root();
    let config = config(
        "canary_kill = false",
        "\n[[integration]]\nname = \"svc\"\nauth = \"bearer\"\nhosts = [\"api.test\"]\n\
         methods = [\"GET\"]\n",
        "integrations = [\"svc\"]\ncanary_handles = 1",
    );
    let (mut env, _server, _dns) = world_with("review11-jsonlog", "json", &config, |env| {
        env.init_vault(&[("svc", "bot", "Zq8vLr2mXn4pWt6yBc1dEf3gHj5kMs7u")])
    });
    let pod = env.root_pod("web");
    let sub = "-----BEGIN PRIVATE KEY-----\"";
    // The caller takes a handle, finds the decoy planted beside it, and uses it.
    let got = pod_call(
        &env,
        &pod,
        sub,
        "mine = hb.handle(\"svc\", \"bot\")[\"handle\"]\n\
         listed = hb.handles()\n\
         listed = listed.get(\"handles\", listed) if isinstance(listed, dict) else listed\n\
         decoys = [h[\"handle\"] if isinstance(h, dict) else h for h in listed]\n\
         decoys = [h for h in decoys if h != mine]\n\
         print(json.dumps({\"decoys\": len(decoys), \"used\": attempt(lambda: hb.request(\"GET\", \"https://api.test/\", handle=decoys[0]))}))\n",
    );
    assert_eq!(got["decoys"], 1, "control: one decoy listed: {got}");
    let mut ended = Vec::new();
    for _ in 0..100 {
        let log = env.agent().log_text();
        ended = log
            .lines()
            .filter(|l| l.contains("a suspect caller is ended"))
            .map(str::to_owned)
            .collect();
        if !ended.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !ended.is_empty(),
        "control: the cutoff was not logged: {got}"
    );
    let log = env.agent().log_text();
    let broken = not_json(log.lines().filter(|l| l.starts_with('{')));
    println!(
        "figure: {} of {} JSON log lines do not parse after the pod's cutoff",
        broken.len(),
        log.lines().count()
    );
    assert!(
        broken.is_empty(),
        "log lines that are not JSON: {broken:#?}"
    );
}

// FINDING 3: `hb-agent events` prints each refusal as `key=value` fields
// (`events.rs`, `Display for EventRecord`), and the values a sandbox chooses (its
// process name, its cgroup's name, a DNS name) go through `Escaped`, which keeps them
// on one line but leaves spaces and `=` as they are. A sandbox of policy `batch` that
// names itself `x policy=web` prints `policy=batch pid=… comm=x policy=web cgroup=…`:
// `hb-agent events | grep policy=web`, or any key=value reader that keeps the last
// value, files batch's refusals under web. Such values now show their spaces and `=`
// escaped (`events::Field`).
/// The text line `hb-agent events` prints for a refusal names the sandbox's policy
/// once, whatever the sandbox calls itself.
#[test]
fn a_process_name_cannot_add_a_field_to_the_events_line() {
    hb_tests::require_root();
    let config = config(
        "",
        "\n[[policy]]\nname = \"batch\"\nallow_domains = [\"allowed.test\"]\n",
        "",
    );
    let (env, _server, _dns) = world_with("review11-field", "text", &config, |_| {});
    let mut cmd = nobody_command(
        &env,
        "batch",
        &[],
        &[
            hb_tests::python(),
            "-c",
            &hb_tests::sandboxed::py_named_refused_connect(r#"b"x policy=web""#),
        ],
    );
    let out = cmd.output().expect("sandbox run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "EPERM",
        "control: the connect is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.wait_event("the refused connect", |e| {
        e["dst"] == "198.51.100.7" && e["policy"] == "batch"
    });
    let text = String::from_utf8_lossy(&env.hb(&["events"]).stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("198.51.100.7:80"))
        .unwrap_or_else(|| panic!("control: no line for the refusal in:\n{text}"));
    let policies: Vec<&str> = line
        .split(' ')
        .filter(|t| t.starts_with("policy="))
        .collect();
    println!("figure: policy fields of batch's refusal in `hb-agent events`: {policies:?}");
    assert_eq!(policies, ["policy=batch"], "{line}");
    assert!(
        !line.contains("policy=web"),
        "`grep policy=web` finds batch's refusal: {line}"
    );
}

/// The lines that do not parse as JSON.
fn not_json<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    lines
        .filter(|l| serde_json::from_str::<Value>(l).is_err())
        .collect()
}
