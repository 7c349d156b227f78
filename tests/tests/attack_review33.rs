//! A thirty-third attack review, run as the process inside sandbox A (uid 65534,
//! arbitrary Python) holding a handle for an account that sandbox B of another policy
//! also uses: can A make hb rotate or quarantine what B depends on, by looking abusive
//! or by making B look so? Each test counts B's calls and what the detectors named,
//! prints a `figure:` line, and fails while the attack works.
//!
//! Found:
//! - `rate_spike` framed a bystander: a bucket over `spike_hard_cap` named first the
//!   callers most over their usual calls (their share of the last normal bucket times
//!   the learned mean), also when the bucket was not far above the baseline. A sandbox
//!   calling steadily just under the cap made its own rate the account's usual load;
//!   then another tenant's few calls took the bucket over the cap, and that tenant was
//!   the one named, its handle revoked and its calls held read-only: on ff780be B (10
//!   GETs a bucket beside A's 36, cap 40) was named and its write answered
//!   `unknown_handle`. Over the cap but not far above the baseline no caller's usual
//!   calls are excused now (`sensor::suspects`): the heaviest are named first, A here,
//!   and B's write is answered 200 (unit test
//!   `over_the_cap_near_the_baseline_the_heaviest_caller_is_named` too). Still weak, the
//!   other way round: the heaviest caller is named even when others' calls took the
//!   bucket over the cap — a tenant whose own usual calls nearly fill the cap, or one
//!   heavier than each of several colluding sandboxes whose calls together fill it (the
//!   README tells operators to keep the cap well above the learned rate).
//!
//! Held, tested: 300 `POST /v1/scrub` pipelined in one write on one connection get 300
//! answers, each its own request's; four connections pipelining 48 KiB scrubs whose
//! answers are never read have 394 048 to 443 304 bytes each taken by the broker (of 188 MiB
//! offered), the agent's RSS +2.4 MiB; an upstream answering A's calls with endless
//! `102 Processing` answers (about 1 500 each) or an endless header block (5 304 lines,
//! about 400 KiB, hyper's buffer) gives A `timeout` and `upstream_error`, and B's 10 calls
//! to the same upstream meanwhile get their own answers.
//! Held, read in the code (not tested here): the broker's upstream connections are
//! pooled per party (caller and credential), never for the agent's rotators and verify
//! probes, and one that carried a body or answered without one (HEAD, 1xx, 204, 304) is
//! not pooled, so surplus bytes of an upstream (a body longer than its
//! `Content-Length`, bytes after the answer) reach at most the same caller's next call
//! with the same credential, and hyper refuses bytes on an idle client connection
//! (review 24 tests the surplus). Forced compromise rotations through A's own decoys or
//! an echo are by design and in the README (at most
//! `max_compromise_rotations_per_day` − 1 a day, A barred); an `auth_failure` rotation
//! needs the operator's `verify_url` to refuse the key too (a 403 or 429 never counts).
//! Not checked (no time): pipelined requests interleaved with slow bodies; an answer
//! written before its request; a close-delimited body under `Connection: keep-alive`.

use std::fs;

use hb_tests::{
    TestEnv,
    provider::Provider,
    sandboxed::nobody_broker_client,
    worlds::{PythonApi, two_tenants},
};
use serde_json::Value;

const DNS_PORT: u16 = 5433;
const KEY: &str = "key-shared-5e4d3c2b1a0f9e8d7c6b5a4938271605";

/// Python for both sandboxes of the framing: `bucket()`, the sensor bucket now (of `secs`
/// seconds), and `wait_next(b)`, which returns once bucket `b` has ended.
const PY_BUCKETS: &str = r#"
def bucket():
    return int(time.time()) // secs
def wait_next(b):
    while bucket() <= b:
        time.sleep(0.01)
"#;

/// Sandbox A: `argv[1]` GETs with its handle at the start of each of `argv[2]` sensor
/// buckets of `argv[3]` s (a steady rate just under the hard cap); the JSON tally of
/// what they got.
const STEADY: &str = r#"
n, buckets, secs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
h = hb.handle("svc", "bot")["handle"]
wait_next(bucket())
tally = Counter()
for _ in range(buckets):
    b = bucket()
    for _ in range(n):
        tally[str(code(lambda: hb.request("GET", "https://api.test/plain?step=a", handle=h)))] += 1
    wait_next(b)
print(json.dumps(tally))
"#;

/// Sandbox B: waits `argv[2]` buckets of `argv[3]` s, then `argv[1]` GETs at the start of
/// each of three buckets, waits two more, then one write and three reads; the JSON of
/// what each group got.
const BYSTANDER: &str = r#"
n, wait, secs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
h = hb.handle("svc", "bot")["handle"]
start = bucket()
wait_next(start + wait - 1)
reads = Counter()
for _ in range(3):
    b = bucket()
    for _ in range(n):
        reads[str(code(lambda: hb.request("GET", "https://api.test/plain?step=b", handle=h)))] += 1
    wait_next(b)
wait_next(bucket() + 1)
out = {"reads": reads}
out["write"] = code(lambda: hb.request("POST", "https://api.test/plain?step=bw", handle=h, body="x"))
out["after"] = Counter(str(code(lambda: hb.request("GET", "https://api.test/plain?step=ba", handle=h))) for _ in range(3))
print(json.dumps(out))
"#;

/// A sandbox of one policy that keeps its calls steady just under `spike_hard_cap`
/// cannot have another policy's sandbox, whose few calls take the account over the cap,
/// named for the spike: B's calls, its write among them, are all answered 200 and B is
/// not a suspect.
#[test]
fn a_steady_caller_just_under_the_hard_cap_cannot_have_a_bystander_named() {
    const SECS: u64 = 3;
    const A_CALLS: u64 = 36;
    const B_CALLS: u64 = 10;
    hb_tests::require_root();
    let p = Provider::start("review33-frame", DNS_PORT, None);
    let env = p.shared_account_agent_sensing(
        "a33frame",
        KEY,
        &format!(
            "sensor_bucket_secs = {SECS}\nspike_halflife_secs = {SECS}\n\
             spike_learning_secs = 3600\nspike_hard_cap = 40\nspike_buckets = 2\n\
             quarantine_secs = 120\nquarantine_calls_per_minute = 5\n"
        ),
    );

    // A: eight buckets alone (its rate becomes the learned mean), three beside B, three
    // more.
    let (a, b) = std::thread::scope(|s| {
        let env = &env;
        let a = s.spawn(move || {
            nobody_broker_client(
                env,
                "web",
                &format!("{PY_BUCKETS}{STEADY}"),
                &[&A_CALLS.to_string(), "14", &SECS.to_string()],
            )
        });
        let b = nobody_broker_client(
            env,
            "ops",
            &format!("{PY_BUCKETS}{BYSTANDER}"),
            &[&B_CALLS.to_string(), "9", &SECS.to_string()],
        );
        (a.join().expect("sandbox A"), b)
    });
    let spikes: Vec<Value> = env
        .audit_records()
        .into_iter()
        .filter(|r| r["kind"] == "detector" && r["detector"] == "rate_spike")
        .collect();
    let named: Vec<&Value> = spikes
        .iter()
        .flat_map(|r| r["suspects"].as_array().into_iter().flatten())
        .map(|s| &s["policy"])
        .collect();
    eprintln!(
        "figure: A ({A_CALLS} GETs a {SECS} s bucket, cap 40) got {a}; B ({B_CALLS} a \
         bucket for 3 buckets, then a write and 3 reads) got {b}; rate_spike signals: {}, \
         suspects' policies {named:?}",
        spikes.len()
    );
    let _ = fs::remove_dir_all(&p.dir);
    assert_eq!(
        a["200"].as_u64().map(|n| n >= A_CALLS * 8),
        Some(true),
        "A kept its steady rate while alone: {a}"
    );
    assert!(
        !spikes.is_empty(),
        "B's calls beside A's took the account over the cap: a spike: {b}"
    );
    assert!(
        named.iter().all(|p| *p != "ops"),
        "B, calling 10 a bucket beside A's steady 36, is named for the spike: {named:?}"
    );
    assert_eq!(b["write"], 200, "B's write is held for a spike A made: {b}");
    assert_eq!(
        b["after"]["200"], 3,
        "B's reads after the spike are refused: {b}"
    );
}

/// Sandbox A: `argv[2]` `POST /v1/scrub` requests, each with its own marker, pipelined
/// in one write on one connection to the broker socket `argv[1]` (written by a thread
/// while the answers are read); the JSON count of answers, of those holding their own
/// request's marker, of those holding another's, and of their statuses.
const PY_PIPELINED: &str = r#"
import json, re, socket, sys, threading
SOCK, n = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX); s.connect(SOCK); s.settimeout(120)
def req(i):
    body = json.dumps({"text": "marker-%06d" % i}).encode()
    return b"POST /v1/scrub HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
data = b"".join(req(i) for i in range(n))
threading.Thread(target=lambda: s.sendall(data), daemon=True).start()
buf, out = b"", {"answers": 0, "own": 0, "other": 0, "statuses": {}}
def fill(k):
    global buf
    while len(buf) < k:
        d = s.recv(65536)
        if not d:
            raise EOFError
        buf += d
try:
    while out["answers"] < n:
        while b"\r\n\r\n" not in buf:
            fill(len(buf) + 1)
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        fill(length)
        body, buf = buf[:length], buf[length:]
        i = out["answers"]
        out["answers"] += 1
        status = head.split(b" ")[1].decode()
        out["statuses"][status] = out["statuses"].get(status, 0) + 1
        marks = re.findall(rb"marker-(\d{6})", body)
        if marks == [b"%06d" % i]:
            out["own"] += 1
        elif marks:
            out["other"] += 1
except (EOFError, OSError, AttributeError):
    pass
print(json.dumps(out))
"#;

/// Requests pipelined into the broker's socket in one write are answered one by one, in
/// order: each answer is its own request's, none another's.
#[test]
fn pipelined_requests_each_get_their_own_answer() {
    const N: u64 = 300;
    hb_tests::private_netns(&[]);
    let mut env = TestEnv::new(
        "a33pipe",
        "[broker]\nsocket_mode = \"0666\"\nscrub_per_minute = 6000\n\n\
         [[policy]]\nname = \"web\"\nallow_domains = []\n",
    );
    env.start_agent();
    let sock = env.broker_socket().display().to_string();
    let got = hb_tests::sandboxed::nobody_python_json(
        &env,
        "web",
        PY_PIPELINED,
        &[&sock, &N.to_string()],
    );
    eprintln!("figure: {N} scrub requests pipelined in one write: {got}");
    assert_eq!(got["other"], 0, "an answer went to another request: {got}");
    assert_eq!(got["answers"], N, "every request answered: {got}");
    assert_eq!(got["own"], N, "each answer its own request's: {got}");
}

/// Sandbox A: on `argv[2]` connections to the broker socket `argv[1]`, pipelines
/// `POST /v1/scrub` requests of 48 KiB of text each, never reading an answer, until a
/// write has waited 5 s; then holds them until its stdin closes. Prints the bytes sent
/// on each connection.
const PY_UNREAD_PIPELINE: &str = r#"
import json, socket, sys
SOCK, n = sys.argv[1], int(sys.argv[2])
body = json.dumps({"text": "x" * (48 << 10)}).encode()
req = b"POST /v1/scrub HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
conns, sent = [], []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX); s.connect(SOCK); s.settimeout(5)
    total = 0
    try:
        for _ in range(4000):
            s.sendall(req)
            total += len(req)
    except OSError:
        pass
    conns.append(s); sent.append(total)
print(json.dumps({"sent": sent}), flush=True)
sys.stdin.read()
"#;

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A sandbox pipelining requests it never reads the answers of holds a bounded part of
/// the broker: the broker stops reading each connection once its answers back up, and
/// its memory grows by little.
#[test]
fn pipelined_requests_whose_answers_are_never_read_are_bounded() {
    const CONNS: usize = 4;
    hb_tests::private_netns(&[]);
    let mut env = TestEnv::new(
        "a33unread",
        "[broker]\nsocket_mode = \"0666\"\nscrub_per_minute = 100000\n\n\
         [[policy]]\nname = \"web\"\nallow_domains = []\n",
    );
    let pid = env.start_agent().pid();
    let sock = env.broker_socket().display().to_string();
    let before = rss_kib(pid);
    let mut a = hb_tests::sandboxed::nobody_command(
        &env,
        "web",
        &[],
        &[
            hb_tests::python(),
            "-c",
            PY_UNREAD_PIPELINE,
            &sock,
            &CONNS.to_string(),
        ],
    )
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::inherit())
    .spawn()
    .expect("sandbox run");
    let lines = hb_tests::sandboxed::stdout_lines(&mut a);
    let sent: Value = serde_json::from_str(
        &lines
            .recv_timeout(std::time::Duration::from_secs(300))
            .expect("A's report"),
    )
    .expect("JSON");
    let after = rss_kib(pid);
    drop(a.stdin.take());
    let _ = a.wait();
    let per_conn: Vec<u64> = sent["sent"]
        .as_array()
        .expect("sent")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    eprintln!(
        "figure: {CONNS} connections pipelining 48 KiB scrubs, answers never read: bytes \
         the broker took on each {per_conn:?} (of {} offered); the agent's RSS {before} KiB \
         before, {after} KiB after",
        4000 * (48 << 10)
    );
    assert!(
        per_conn.iter().all(|&b| b < 64 << 20),
        "the broker read a connection's pipeline without bound: {per_conn:?}"
    );
    assert!(
        after < before + (256 << 10),
        "the agent grew by {} KiB",
        after.saturating_sub(before)
    );
}

const FRAMING_DNS_PORT: u16 = 5434;
const API: &str = "api.frame33.test";

/// The upstream A's policy reaches, its operator hostile: `/interim` answers with
/// interim `102 Processing` answers, one every 5 ms, forever; `/headers` with a status
/// line and then header lines forever; anything else `answer to <path>`. Each endless
/// answer logs how many lines it wrote once the broker hangs up.
const HOSTILE_PY: &str = r#"
class H(TlsHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        n = 0
        try:
            if path == "/interim":
                while True:
                    self.wfile.write(b"HTTP/1.1 102 Processing\r\n\r\n"); self.wfile.flush()
                    n += 1; time.sleep(0.005)
            if path == "/headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                while True:
                    self.wfile.write(b"X-Line-%d: %s\r\n" % (n, b"a" * 64)); self.wfile.flush()
                    n += 1; time.sleep(0.001)
        except OSError:
            with open(log, "a") as f:
                f.write(json.dumps({"path": path, "lines": n}) + "\n")
            return
        body = ("answer to " + path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
"#;

/// Sandbox A: four calls to `/interim` and four to `/headers` at once with its handle;
/// the JSON tally of what they got.
const PY_ENDLESS: &str = r#"
h = hb.handle("p", "bot")["handle"]
got = Counter()
def call(path):
    c = Client(SOCK)
    r = attempt(lambda: c.request("GET", "https://api.frame33.test" + path, handle=h))
    got[path + " " + str(r.get("status") or r.get("error"))] += 1
threads = [threading.Thread(target=call, args=(p,)) for p in ["/interim", "/headers"] * 4]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(got))
"#;

/// Sandbox B: waits 2 s (A's calls are out), then ten calls with its own handle; the
/// JSON tally of what they got.
const PY_B_CALLS: &str = r#"
h = hb.handle("v", "bot")["handle"]
time.sleep(2)
got = Counter()
for i in range(10):
    r = attempt(lambda: hb.request("GET", "https://api.frame33.test/b%d" % i, handle=h))
    got["own" if r.get("body") == "answer to /b%d" % i else str(r.get("status") or r.get("error"))] += 1
print(json.dumps(got))
"#;

/// An upstream that answers A's calls with endless interim answers or an endless header
/// block holds each of them at most `upstream_timeout_secs` (or until hyper's header
/// limits refuse it) and never B's: B's calls to the same upstream are all answered with
/// their own answers meanwhile.
#[test]
fn endless_interim_answers_and_headers_hold_only_the_callers_calls() {
    let api = PythonApi::start("review33-frame", FRAMING_DNS_PORT, &[API], HOSTILE_PY);
    let body = two_tenants(API, &["GET"], false);
    let env = api.names.agent(
        "a33endless",
        "upstream_timeout_secs = 8\n",
        &body,
        &[
            ("p", "bot", "own-9a8b7c6d5e4f30211203f4e5d6c7b8a9"),
            ("v", "bot", "vic-1a2b3c4d5e6f70819203f4e5d6c7b8a9"),
        ],
    );
    let (a, b) = std::thread::scope(|s| {
        let env = &env;
        let a = s.spawn(move || nobody_broker_client(env, "web", PY_ENDLESS, &[]));
        let b = nobody_broker_client(env, "other", PY_B_CALLS, &[]);
        (a.join().expect("sandbox A"), b)
    });
    let lines: Vec<Value> = hb_tests::worlds::json_lines(&api.log);
    eprintln!(
        "figure: A's 4 calls to /interim and 4 to /headers got {a}; the upstream wrote \
         {:?} lines before the broker hung up; B's 10 calls meanwhile: {b}",
        lines
            .iter()
            .map(|l| format!("{} {}", l["path"].as_str().unwrap_or("?"), l["lines"]))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        b["own"], 10,
        "B's calls not all given their own answer: {b}"
    );
    let a_calls: u64 = a
        .as_object()
        .expect("tally")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(a_calls, 8, "every call of A's ended: {a}");
    assert!(
        a.as_object()
            .expect("tally")
            .keys()
            .all(|k| !k.ends_with(" 200") && !k.ends_with(" 102")),
        "an endless answer was taken for an answer: {a}"
    );
}
