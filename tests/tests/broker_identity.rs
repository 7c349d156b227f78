//! The broker binds a connection to its caller when it accepts it, from the kernel
//! (SO_PEERPIDFD), and never looks the caller up again by pid.
//!
//! The attack (issue 16, bypass 5): a process in sandbox A connects through a child,
//! the child exits, A keeps the socket, and a process of sandbox B (same uid) gets the
//! child's pid; A's first request is then judged by whoever holds that pid. Waiting for a
//! pid to come around is slow and racy, so the tests make the reuse certain: once the
//! child is reaped, the test (root) starts B's process with exactly that pid, with
//! clone3(2)'s `set_tid` (and `CLONE_INTO_CGROUP` into B's sandbox cgroup), before A
//! sends anything. Two orders are tried: the broker accepted while the child was alive
//! (the connection must stay A's), and the child was gone before the broker accepted
//! (the connection must be refused: its pid now names someone else). The accept is
//! ordered by the listening socket's backlog as `ss` reports it, and held back by
//! filling `broker.max_connections` with an event stream.
//!
//! Each sandbox has a pid namespace of its own: A's child knows only its namespace pid.
//! The broker (and its peer credentials) see host pids, so the test maps the child's
//! namespace pid to its host pid while the child lives, and B's impostor takes that host
//! pid: the pid by which an old broker would have looked the caller up.

use std::{
    ffi::CString,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::{fd::AsRawFd as _, unix::net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{
    TestEnv, agent_bin, cgroup2_mount, private_netns, python, sandboxed::nobody_python,
    worlds::svc_broker_config,
};
use serde_json::Value;

/// The world with `broker` (more `[broker]` keys): policy `a` binds nothing, `b` binds
/// `svc`.
fn config(broker: &str) -> String {
    svc_broker_config(broker, 5300)
        + r#"
[[policy]]
name = "a"
allow_domains = []

[[policy]]
name = "b"
allow_domains = []
integrations = ["svc"]
"#
}

/// One broker connection at a time.
const ONE_CONNECTION: &str = "max_connections = 1\n";

/// Sandbox A's attacker. A child connects the socket both share and waits; on the
/// test's first line it exits and is reaped; on the second, A sends its first requests
/// (whoami, then a handle for svc, which only B's policy binds) and prints what came
/// back, or `closed` when the broker hung up without an answer.
const ATTACKER: &str = r#"
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
r1, w1 = os.pipe(); r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    s.connect(sys.argv[1]); os.write(w1, b"x"); os.read(r2, 1); os._exit(0)
os.read(r1, 1)
print("connected", pid, flush=True)
sys.stdin.readline()
os.write(w2, b"x"); os.waitpid(pid, 0)
print("reaped", pid, flush=True)
sys.stdin.readline()
s.settimeout(60)
buf = b""
def ask(method, path, body=b""):
    global buf
    try:
        s.sendall(("%s %s HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (method, path, len(body))).encode() + body)
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d: return "closed"
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
        while len(buf) < n:
            d = s.recv(65536)
            if not d: return "closed"
            buf += d
        body, buf = buf[:n], buf[n:]
        return {"status": int(head.split(b" ")[1]), "body": json.loads(body)}
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
out = {"whoami": ask("GET", "/v1/whoami")}
out["handle"] = ask("POST", "/v1/handles", b'{"integration": "svc", "account": "bot"}') if out["whoami"] != "closed" else "closed"
print(json.dumps(out), flush=True)
"#;

struct Attacker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Attacker {
    /// Starts [`ATTACKER`] in a sandbox of policy `a` as uid 65534; returns once its
    /// child has connected, with the child's host pid (what the broker sees) and its pid
    /// in the sandbox's namespace (what the attacker prints).
    fn start(env: &TestEnv) -> (Self, i32, i32) {
        let sock = env.broker_socket().display().to_string();
        let mut child = Command::new(agent_bin())
            .arg("--config")
            .arg(&env.config_path)
            .args(["sandbox", "run", "--policy", "a", "--user", "65534", "--"])
            .args([python(), "-c", ATTACKER, &sock])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sandbox run");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut me = Self {
            child,
            stdin,
            stdout,
        };
        let ns_pid = me.expect_pid("connected");
        // The child waits for the test's word: it lives while its host pid is looked up.
        let host_pid = env.host_pid_in_sandbox("a", ns_pid);
        (me, host_pid, ns_pid)
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).expect("attacker output");
        assert!(!l.is_empty(), "the attacker ended early");
        l.trim().to_owned()
    }

    fn expect_pid(&mut self, word: &str) -> i32 {
        let l = self.line();
        l.strip_prefix(word)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("expected `{word} PID`, got {l:?}"))
    }

    fn go(&mut self) {
        self.stdin.write_all(b"go\n").expect("to the attacker");
    }

    fn result(mut self) -> Value {
        let l = self.line();
        let _ = self.child.wait();
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("attacker printed {l:?}: {e}"))
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connections waiting in the backlog of the listening socket at `path` (`ss`'s Recv-Q
/// of a listener).
fn backlog(path: &Path) -> u32 {
    let out = Command::new("ss")
        .args(["-xlnH"])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let needle = path.display().to_string();
    text.lines()
        .find(|l| l.split_whitespace().any(|f| f == needle))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or_else(|| panic!("no listener {needle} in ss -xl:\n{text}"))
}

/// Waits until the listener's backlog is `n` (the broker accepted, or did not).
fn wait_backlog(path: &Path, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while backlog(path) != n {
        assert!(
            Instant::now() < deadline,
            "backlog of {} is not {n}",
            path.display()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sandbox B: a process of policy `b` as uid 65534 (left running); its cgroup.
fn sandbox_b(env: &TestEnv) -> (Child, PathBuf) {
    let mut child = Command::new(agent_bin())
        .arg("--config")
        .arg(&env.config_path)
        .args(["sandbox", "run", "--policy", "b", "--user", "65534", "--"])
        .args(["sh", "-c", "echo running; exec sleep 1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sandbox run");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("B's first line");
    assert_eq!(line.trim(), "running", "sandbox B did not start");
    (child, cgroup2_mount().join(env.running_sandbox_cgroup("b")))
}

/// clone3(2)'s argument (linux/sched.h, CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A process of B that has exactly host pid `pid`: `sleep 1000` as uid/gid 65534, born in
/// the cgroup `dir` (in the test's pid namespace: the pid is the one the broker sees).
/// Killed and reaped on drop.
struct Impostor(i32);

impl Impostor {
    fn start(pid: i32, dir: &Path) -> Self {
        let cgroup = fs::File::open(dir).expect("open the cgroup directory");
        let prog = CString::new("/bin/sleep").expect("path");
        let (a0, a1) = (
            CString::new("sleep").expect("arg"),
            CString::new("1000").expect("arg"),
        );
        let argv = [a0.as_ptr(), a1.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        let set_tid = [pid];
        let args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            set_tid: set_tid.as_ptr() as u64,
            set_tid_size: 1,
            cgroup: cgroup.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3(2) without CLONE_VM: the child is a copy of this process with
        // one thread. It makes raw syscalls only (no libc wrapper that assumes the
        // parent's threads) and execs or exits.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &raw const args,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if rc == 0 {
            // SAFETY: in the child; integer arguments and pointers to memory copied
            // from the parent.
            unsafe {
                let nobody = 65534 as libc::c_long;
                if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setgid, nobody) != 0
                    || libc::syscall(libc::SYS_setuid, nobody) != 0
                {
                    libc::syscall(libc::SYS_exit_group, 120);
                }
                libc::syscall(
                    libc::SYS_execve,
                    prog.as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                );
                libc::syscall(libc::SYS_exit_group, 121);
            }
        }
        assert_eq!(
            rc,
            i64::from(pid),
            "clone3 with set_tid [{pid}]: {}",
            std::io::Error::last_os_error()
        );
        // It is B's, as the old broker would have checked: owner and cgroup.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status.contains("Name:\tsleep") && status.contains("Uid:\t65534") {
                break;
            }
            assert!(Instant::now() < deadline, "impostor not up: {status}");
            thread::sleep(Duration::from_millis(10));
        }
        let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        let rel = dir
            .strip_prefix(cgroup2_mount())
            .expect("below the mount")
            .display()
            .to_string();
        assert!(cg.trim().ends_with(&rel), "{cg} vs {rel}");
        Self(pid)
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        // SAFETY: kill(2) and waitpid(2) on this test's own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

fn start(name: &str) -> TestEnv {
    start_with(name, &config(ONE_CONNECTION))
}

fn start_with(name: &str, config: &str) -> TestEnv {
    private_netns(&[]);
    let mut env = TestEnv::new(name, config);
    env.init_vault(&[("svc", "bot", "Qm9vdGxlZ2dlcnNHb25uYUJvb3RsZWcxMjM0NTY3")]);
    env.start_agent();
    env
}

/// The attacker's result says it was served as B: B's policy, B's handle.
fn served_as_b(out: &Value) -> bool {
    out["whoami"]["body"]["sandbox"]["policy"] == "b" || out["handle"]["status"] == 201
}

#[test]
fn a_connection_stays_its_connectors_after_the_pid_goes_to_another_sandbox() {
    let env = start("identpid");
    let (_b, b_cgroup) = sandbox_b(&env);
    let (mut attacker, pid, ns_pid) = Attacker::start(&env);
    // The broker has accepted the child's connection while the child lives (on A's
    // policy's socket, which `sandbox run` shows at the main socket's path).
    wait_backlog(&env.policy_socket("a"), 0);
    attacker.go();
    assert_eq!(attacker.expect_pid("reaped"), ns_pid);
    let _impostor = Impostor::start(pid, &b_cgroup);
    attacker.go();
    let out = attacker.result();
    assert!(!served_as_b(&out), "served as sandbox B: {out}");
    assert_eq!(out["whoami"]["body"]["sandbox"]["policy"], "a", "{out}");
    // The broker reports the connector's host pid (the one the impostor now holds).
    assert_eq!(out["whoami"]["body"]["pid"], pid, "{out}");
    assert_eq!(
        out["handle"]["body"]["error"]["code"], "binding_missing",
        "{out}"
    );
}

#[test]
fn a_connection_whose_connector_exited_before_accept_is_refused() {
    let mut env = start("identgone");
    let (_b, b_cgroup) = sandbox_b(&env);
    // Hold the broker's one connection with an event stream, so the next one waits in
    // the backlog (A's policy's socket's: the connections of every socket share
    // broker.max_connections).
    let minted = Command::new("curl")
        .args(["-sS", "-m", "5", "--unix-socket"])
        .arg(env.broker_socket())
        .args(["-X", "POST", "http://hb/v1/sessions"])
        .output()
        .expect("curl");
    let token: Value = serde_json::from_slice(&minted.stdout).expect("session JSON");
    let token = token["token"].as_str().expect("token");
    let mut stream = UnixStream::connect(env.broker_socket()).expect("connect");
    write!(
        stream,
        "GET /v1/events HTTP/1.1\r\nHost: hb\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .expect("events request");
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).expect("events answer");
    assert_eq!(&head, b"HTTP/1.1 200", "the event stream is open");

    let (mut attacker, pid, ns_pid) = Attacker::start(&env);
    wait_backlog(&env.policy_socket("a"), 1);
    attacker.go();
    assert_eq!(attacker.expect_pid("reaped"), ns_pid);
    let _impostor = Impostor::start(pid, &b_cgroup);
    assert_eq!(backlog(&env.policy_socket("a")), 1, "still not accepted");
    drop(stream);
    attacker.go();
    let out = attacker.result();
    assert!(!served_as_b(&out), "served as sandbox B: {out}");
    assert_eq!(out["whoami"], "closed", "refused unanswered: {out}");
    let log = env.agent().log_text();
    assert!(
        log.contains("broker refused a connection") && log.contains("peer_gone"),
        "logged: {log}"
    );
    let status = env.hb_json(&["status"]);
    assert_eq!(status["broker"]["refused"]["peer_gone"], 1, "{status}");
}

#[test]
fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let env = start("identidle");
    // From inside a sandbox: one connection sends nothing, one trickles a header a
    // byte a second (never finishing). Both must be closed by the broker (the default
    // broker.header_read_timeout_secs, 10 s); 60 s is only the test's own bound.
    let script = r#"
import socket, sys, time, json
silent = socket.socket(socket.AF_UNIX); silent.connect(sys.argv[1])
slow = socket.socket(socket.AF_UNIX); slow.connect(sys.argv[1])
slow.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: hb\r\n")
out = {}
start = time.monotonic()
silent.setblocking(False); slow.setblocking(False)
while len(out) < 2 and time.monotonic() - start < 60:
    for name, s in (("silent", silent), ("slow", slow)):
        if name in out: continue
        try:
            d = s.recv(4096)
            if not d: out[name] = "closed"
        except BlockingIOError:
            pass
        except ConnectionResetError:
            out[name] = "closed"
    try:
        if "slow" not in out: slow.send(b"X")
    except OSError:
        out["slow"] = "closed"
    time.sleep(1)
for name in ("silent", "slow"): out.setdefault(name, "open")
print(json.dumps(out))
"#;
    let sock = env.broker_socket().display().to_string();
    let out = nobody_python(&env, "a", script, &[&sock]);
    let out: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(out["silent"], "closed", "{out}");
    assert_eq!(out["slow"], "closed", "{out}");
}

#[test]
fn a_connection_that_stops_reading_its_answer_is_closed_after_the_idle_timeout() {
    private_netns(&[]);
    // The shortest idle timeout the config allows: over request_timeout_secs and the
    // event stream's 15 s keep-alive. (Keys the old binary does not know.)
    let config = config("request_timeout_secs = 2\nidle_timeout_secs = 16\n");
    let mut env = TestEnv::new("identslow", &config);
    env.start_agent();
    // A sandbox asks for a 2 MB answer and reads none of it: the broker's write stalls
    // once the socket buffer is full.
    let script = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
body = json.dumps({"text": "a" * 2000000}).encode()
s.sendall(("POST /v1/scrub HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)).encode() + body)
print("sent", flush=True)
sys.stdin.readline()
s.settimeout(30); data = b""
while True:
    d = s.recv(1 << 20)
    if not d: break
    data += d
head, _, rest = data.partition(b"\r\n\r\n")
n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
print(json.dumps({"status": int(head.split(b" ")[1]), "got": len(rest), "length": n}), flush=True)
"#;
    let sock = env.broker_socket().display().to_string();
    let mut child = Command::new(agent_bin())
        .arg("--config")
        .arg(&env.config_path)
        .args(["sandbox", "run", "--policy", "a", "--user", "65534", "--"])
        .args([python(), "-c", script, &sock])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sandbox run");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("sent");
    assert_eq!(line.trim(), "sent");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = env.hb_json(&["status"]);
        if status["broker"]["idle_closed"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled connection is still open: {status}"
        );
        thread::sleep(Duration::from_millis(500));
    }
    stdin.write_all(b"read\n").expect("to the sandbox");
    line.clear();
    stdout.read_line(&mut line).expect("result");
    let _ = child.wait();
    let out: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert_eq!(out["status"], 200, "{out}");
    assert!(
        out["got"].as_u64() < out["length"].as_u64(),
        "closed mid-answer: {out}"
    );
    // Logged after the count: the line may trail the status.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.agent().log_text().contains("closed an idle connection") {
        assert!(Instant::now() < deadline, "not logged");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_sandbox_cannot_hold_more_than_its_share_of_connections() {
    // The default broker.max_connections (256), not this file's 1.
    let env = start_with("identshare", &config(""));
    // broker.max_connections_per_caller is 32 by default: the 33rd open connection of
    // one sandbox is closed unanswered, and one given back makes room again.
    let script = r#"
import json, socket, sys, time
def whoami(s):
    try:
        s.sendall(b"GET /v1/whoami HTTP/1.1\r\nHost: hb\r\n\r\n")
        d = s.recv(65536)
        return "served" if d.startswith(b"HTTP/1.1 200") else "closed"
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
def conn():
    s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sys.argv[1]); return s
held = [conn() for _ in range(33)]
answers = [whoami(s) for s in held]
held[0].close()
again = "closed"
for _ in range(100):
    again = whoami(conn())
    if again == "served": break
    time.sleep(0.05)
print(json.dumps({"served": answers.count("served"), "last": answers[-1], "again": again}))
"#;
    let sock = env.broker_socket().display().to_string();
    let out = nobody_python(&env, "a", script, &[&sock]);
    let out: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out["served"], 32, "{out}");
    assert_eq!(out["last"], "closed", "{out}");
    assert_eq!(out["again"], "served", "{out}");
    let status = env.hb_json(&["status"]);
    assert!(
        status["broker"]["refused"]["per_caller_limit"].as_u64() >= Some(1),
        "{status}"
    );
}
