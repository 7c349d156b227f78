//! A forty-ninth attack review, run as the process inside `sandbox run --policy web`
//! (`--user 65534`, arbitrary Python) against the credential broker: its socket taken
//! as raw bytes, its outbound framing, redirects and retries, who it thinks the caller
//! is, and what one sandbox's calls cost every other tenant. Each test counts and prints
//! a `figure:` line.
//!
//! Found (fails against 061f73e):
//! - `POST /v1/requests` read its `headers` object as a JSON value tree
//!   (`serde_json::Map<String, Value>`) before any check: a header's value may be any
//!   JSON, and an element of `[0,0,…]` is two bytes of text and an 80-byte `Value` in a
//!   vector that doubles as it grows. One request body of 10 MiB (under
//!   `broker.max_body_bytes`) became about a gigabyte of the agent's memory, built on one
//!   of the broker's two async workers, before `parse` refused it (`the value must be a
//!   string`, `bad_request`); the body budget (`server::BodyBudget`) had already let go
//!   of the body's count, since it counts bytes being read. Under the DaemonSet's
//!   512 MiB limit one such request ends the agent (every tenant's broker, resolver and
//!   guard with it); under the systemd unit (no limit) a sandbox's 32 connections ask for
//!   tens of gigabytes. `headers` is now read entry by entry (`requests::HeadersIn`):
//!   refused at the first value that is not a string, the first name given twice or the
//!   101st name, before the rest is parsed into anything
//!   ([`a_requests_headers_never_become_a_value_tree_in_the_agent`]): two such requests
//!   side by side grew the agent's peak by 392 MiB on 061f73e (another tenant's whoami
//!   meanwhile waited up to 3.8 s), by 22 to 36 MiB now (1 to 4 ms).
//! - the search of what a call sends for runs of the credential it would carry (and of
//!   the caller's other accounts', `fragment_hit::in_request`) ran on the broker's two
//!   async workers, over up to 10 MiB of URL, headers and body. Its cost per byte depends
//!   on the bytes: a run of `A` matches the first bytes of a key's base64 forms (of
//!   NUL-padded text) at every position, and each position then hashes several windows,
//!   so 10 MiB took minutes on the debug build. A sandbox's two GETs with its own handle
//!   (an integration that allows GET only), each with 90 headers of 110 KiB of `A`, held
//!   both workers: another tenant's whoami was answered 0 of 3 times (20 s each) on
//!   061f73e; in a probe, a whoami waited 408 s. The searches of a request over 64 KiB
//!   (this one, and the search for carried values and decoys, which ran on the blocking
//!   pool without bound) now run on the blocking pool in one of the caller's two places
//!   of text work (`requests::search_off_workers`), as the scrub of an answer does: 3 of
//!   3 ([`a_requests_filler_never_holds_the_broker_from_another_tenant`]).
//! - Hardening without a test of its own, same class: the method-override check read a
//!   JSON body's top-level names into a `HashMap` (a body of a million short names: ten
//!   times its size, on an async worker); it now looks at each name as it is read and
//!   keeps none (`requests::NamesOverride`). And every request body over 64 KiB is now
//!   parsed on a blocking thread (`state::parse_json`), not on the two async workers
//!   every tenant's calls share.
//!
//! Held, read in the code (reviews 17, 23, 24, 28, 29 and 34 test most of it): header
//! names and values with CR, LF, NUL or other controls are refused; `Transfer-Encoding`,
//! `Content-Length`, `Expect`, `Upgrade`, `Connection` and what it names, `TE`,
//! `Trailer` never reach the upstream, in `_` spellings too; a body is sent with
//! `Connection: close` on a connection never pooled again; U+0085 or U+2028 in a value
//! is no line break to Python's `http.client` (3.11, tried). An answer's 1xx heads and
//! trailers are dropped by hyper's client (data frames only) and its reason phrase is
//! never returned (the status goes out as a number); a body past its
//! `Content-Length` or one that never ends stops at `upstream_timeout_secs` and
//! `max_response_bytes`. A redirect hop is judged as a request (`Decision::hop`): the
//! credential, the caller's `Authorization`/`Cookie` and the credential query go only to
//! the first URL's origin, a hop elsewhere must be read-only, bodiless and in the
//! caller's reach, and one whose URL holds a run of the credential is refused. A retry
//! happens only on a reused connection that closed, and re-sends only idempotent
//! methods (or a request hyper never wrote). A caller is the process that connected
//! (pidfd at accept); a connection passed to another sandbox over `SCM_RIGHTS` carries
//! the first sandbox's identity, which only that sandbox can hand over.
//!
//! Not checked (no time): a handle revoked (an execution ended, a canary tripped) while
//! its call waits in `hold_for_rotation` is not looked at again: the call is sent once
//! more with the new key.
//!
//! Still weak: the search itself stays slow on such filler (the scrubber's
//! `Fragments::runs`, not the broker's to restructure here); a sandbox's two places
//! keep two blocking threads busy for minutes on a debug build, so on a node of two
//! cores other tenants' work shares the CPU with it.
//!
//! Everything stays on the machine: the agent runs in the test's own network namespace
//! and no test sends a packet.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    TestEnv, private_netns, python,
    sandboxed::{nobody_command, stdout_lines},
    worlds::svc_broker_config,
};

/// Policy `web` (the attacker's sandbox) binds `svc`; `other` is another tenant.
fn config() -> String {
    let broker = svc_broker_config("", 5300);
    format!(
        "{broker}\n[[policy]]\nname = \"web\"\nallow_domains = []\nintegrations = [\"svc\"]\n\n\
         [[policy]]\nname = \"other\"\nallow_domains = []\n"
    )
}

/// The agent of [`config`], in the test's own network namespace.
fn agent(name: &str) -> TestEnv {
    private_netns(&[]);
    let mut env = TestEnv::new(name, &config());
    env.init_vault(&[("svc", "bot", "p7Rk2VfQ9mWz4LxT8nYc3HsJ6bDg1AeU5oKi0Zqv")]);
    env.start_agent();
    env
}

/// `argv[2]` calls side by side, each on a connection of its own: `POST /v1/requests`
/// whose body is `argv[3]` bytes at most, a header's value being `[0,0,…]` to the end.
/// Prints `sent` once every body is written, then `answered STATUS CODE` for each.
const PY_TREES: &str = r#"
import json, socket, sys, threading
SOCK, n, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
head = b'{"method":"GET","url":"https://api.svc.test/","headers":{"x-tree":['
tail = b'0]}}'
body = head + b'0,' * ((limit - len(head) - len(tail)) // 2) + tail
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX); s.connect(SOCK); s.settimeout(300)
    conns.append(s)
def send(s):
    s.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: hb\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
senders = [threading.Thread(target=send, args=(s,)) for s in conns]
[t.start() for t in senders]
[t.join() for t in senders]
print("sent", flush=True)
def read(s):
  try:
    data = b""
    while True:
        d = s.recv(1 << 20)
        if not d: break
        data += d
    head, _, rest = data.partition(b"\r\n\r\n")
    code = json.loads(rest).get("error", {}).get("code", "-") if rest.strip() else "-"
    print("answered", head.split(b" ")[1].decode(), code, flush=True)
  except Exception as e:
    print("failed", type(e).__name__, flush=True)
readers = [threading.Thread(target=read, args=(s,)) for s in conns]
[t.start() for t in readers]
[t.join() for t in readers]
"#;

/// Another tenant meanwhile: `GET /v1/whoami` as a host caller (root), one after
/// another until `stop`; how many answered and the slowest, in milliseconds.
fn whoami_meanwhile(env: &TestEnv, stop: Arc<AtomicBool>) -> thread::JoinHandle<(usize, u128)> {
    let sock = env.broker_socket();
    thread::spawn(move || {
        let (mut answered, mut slowest) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let ok = UnixStream::connect(&sock).is_ok_and(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                let mut out = Vec::new();
                s.write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n")
                    .is_ok()
                    && s.read_to_end(&mut out).is_ok()
                    && out.starts_with(b"HTTP/1.1 200")
            });
            if ok {
                answered += 1;
                slowest = slowest.max(start.elapsed().as_millis());
            }
            thread::sleep(Duration::from_millis(100));
        }
        (answered, slowest)
    })
}

/// A sandbox's two `POST /v1/requests` side by side (two fit its third of the body budget), each 10 MiB (the default
/// `broker.max_body_bytes`) whose one header's value is the JSON array `[0,0,…]`: the
/// agent must refuse both without building the array. Counted: the two answers (400
/// `bad_request` on both binaries) and the agent's peak resident memory; another
/// tenant's whoami meanwhile is printed, not asserted (time).
#[test]
fn a_requests_headers_never_become_a_value_tree_in_the_agent() {
    const CALLS: usize = 2;
    const LIMIT: usize = 10 * 1024 * 1024;
    let mut env = agent("a49tree");
    let pid = env.agent().pid();
    let before = hb_tests::memory_kib(pid, true);
    let stop = Arc::new(AtomicBool::new(false));
    let victim = whoami_meanwhile(&env, stop.clone());
    let sock = env.broker_socket().display().to_string();
    let (n, limit) = (CALLS.to_string(), LIMIT.to_string());
    let mut attacker = nobody_command(
        &env,
        "web",
        &[],
        &[python(), "-c", PY_TREES, &sock, &n, &limit],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("sandbox run");
    let rx = stdout_lines(&mut attacker);
    let mut heard = Vec::new();
    while heard.len() < CALLS + 1 {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(line) => heard.push(line),
            Err(_) => break,
        }
    }
    let _ = attacker.kill();
    let _ = attacker.wait();
    stop.store(true, Ordering::Relaxed);
    let (answered, slowest) = victim.join().expect("victim");
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    let grown_mib = if alive {
        hb_tests::memory_kib(pid, true).saturating_sub(before) / 1024
    } else {
        u64::MAX
    };
    eprintln!(
        "figure: {CALLS} requests of 10 MiB whose header value is [0,0,…]: the attacker \
         heard {heard:?}; the agent's peak grew by {grown_mib} MiB (alive: {alive}); \
         another tenant's whoami meanwhile: {answered} answered, the slowest in {slowest} ms"
    );
    let refused = heard
        .iter()
        .filter(|l| l.as_str() == "answered 400 bad_request")
        .count();
    assert_eq!(
        refused, CALLS,
        "each call is refused bad_request: {heard:?}"
    );
    assert!(
        grown_mib < 128,
        "one sandbox's {CALLS} request bodies grew the agent's peak by {grown_mib} MiB"
    );
}

/// The attacker's calls with its own handle: `GET https://api.svc.test/` carrying `argv[2]`
/// headers of `argv[3]` bytes of `A` each, `argv[4]` side by side, each on a connection
/// of its own. Prints `sent` once every call is written, then `answered STATUS` for each.
const PY_FILLER: &str = r#"
import json, socket, sys, threading
SOCK, headers, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def raw(path, body):
    s = socket.socket(socket.AF_UNIX); s.connect(SOCK); s.settimeout(600)
    s.sendall(b"POST %s HTTP/1.1\r\nHost: hb\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (path, len(body)) + body)
    return s
def answer(s):
    data = b""
    while True:
        d = s.recv(1 << 20)
        if not d: break
        data += d
    return data
got = answer(raw(b"/v1/handles", json.dumps({"integration": "svc", "account": "bot"}).encode()))
handle = json.loads(got.partition(b"\r\n\r\n")[2])["handle"]
call = json.dumps({"handle": handle, "method": "GET", "url": "https://api.svc.test/",
                   "headers": {"x-f%d" % i: "A" * size for i in range(headers)}}).encode()
conns = [raw(b"/v1/requests", call) for _ in range(n)]
print("sent", flush=True)
def read(s):
  try:
    print("answered", answer(s).split(b" ")[1].decode(), flush=True)
  except Exception as e:
    print("failed", type(e).__name__, flush=True)
readers = [threading.Thread(target=read, args=(s,)) for s in conns]
[t.start() for t in readers]
[t.join() for t in readers]
"#;

/// Another tenant's `GET /v1/whoami` (a host caller), `n` times one after another, each
/// given `secs` to be answered: how many were.
fn whoami_within(env: &TestEnv, n: usize, secs: u64) -> usize {
    (0..n)
        .filter(|_| {
            let answered = UnixStream::connect(env.broker_socket()).is_ok_and(|mut s| {
                let _ = s.set_read_timeout(Some(Duration::from_secs(secs)));
                let mut out = Vec::new();
                s.write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n")
                    .is_ok()
                    && s.read_to_end(&mut out).is_ok()
                    && out.starts_with(b"HTTP/1.1 200")
            });
            thread::sleep(Duration::from_millis(500));
            answered
        })
        .count()
}

/// A sandbox's two credentialed GETs (its own handle, an integration that allows GET
/// only), each carrying 90 headers of 110 KiB of `A`: the broker searches what a call
/// sends for runs of the credential it would carry, and `A`s match the start of the
/// credential's encodings everywhere (base64 of NUL-padded text), so each position costs
/// a hash of several windows. That search ran on the broker's two async workers: on
/// 061f73e, another tenant's whoami went unanswered meanwhile. It now runs on the
/// blocking pool in one of the caller's two places of text work. Counted: another
/// tenant's whoami answered within 20 s each, 3 tries.
#[test]
fn a_requests_filler_never_holds_the_broker_from_another_tenant() {
    const TRIES: usize = 3;
    let env = agent("a49filler");
    let sock = env.broker_socket().display().to_string();
    let mut attacker = nobody_command(
        &env,
        "web",
        &[],
        &[python(), "-c", PY_FILLER, &sock, "90", "112640", "2"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("sandbox run");
    let rx = stdout_lines(&mut attacker);
    let sent = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_default();
    // The body is read and the earlier checks done before the search starts.
    thread::sleep(Duration::from_secs(5));
    let answered = whoami_within(&env, TRIES, 20);
    let _ = attacker.kill();
    let _ = attacker.wait();
    let heard: Vec<String> = rx.try_iter().collect();
    eprintln!(
        "figure: while a sandbox's 2 GETs carrying 90 headers of 110 KiB of `A` were searched, \
         another tenant's whoami was answered {answered} of {TRIES} times (20 s each); the \
         attacker: {sent} {heard:?}"
    );
    assert_eq!(sent, "sent", "the attacker's calls were not sent");
    assert_eq!(
        answered, TRIES,
        "another tenant's whoami went unanswered while one sandbox's requests were searched"
    );
}
