//! Sandboxed attackers and victims shared by the suites that flood what sandboxes share
//! (`resolver.rs`, `attack_review3.rs`): each runs as nobody (uid 65534, arbitrary
//! Python) in a sandbox of a policy; a long-running one is read line by line while it
//! runs and killed on drop. The DNS ones aim at a documentation nameserver (192.0.2.53),
//! which the kernel redirects to the policy's resolver. Broker clients run the same way:
//! [`nobody_broker_client`] runs a Python client script and returns the JSON it printed.
//! An operator's terminal is a pseudo-terminal the test opens ([`operator_terminal`]),
//! from which a launcher is started as from a shell ([`from_terminal`]).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

use crate::{TestEnv, agent_bin, py_client_prelude, python, stdout};

/// `hb-agent sandbox run --policy POLICY --user 65534 OPTIONS -- ARGS` for `env`'s agent.
pub fn nobody_command(env: &TestEnv, policy: &str, options: &[&str], args: &[&str]) -> Command {
    let mut c = Command::new(agent_bin());
    c.arg("--config")
        .arg(&env.config_path)
        .args(["sandbox", "run", "--policy", policy, "--user", "65534"])
        .args(options)
        .arg("--")
        .args(args);
    c
}

/// Runs `args` as nobody in a fresh sandbox of `policy` and returns what it printed;
/// the sandbox must exit 0.
pub fn nobody_run(env: &TestEnv, policy: &str, args: &[&str]) -> String {
    let out = nobody_command(env, policy, &[], args)
        .output()
        .expect("sandbox run");
    assert!(
        out.status.success(),
        "sandbox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// Runs `python3 -c SCRIPT ARGS` as nobody in a fresh sandbox of `policy`; its output,
/// whatever its exit.
pub fn nobody_python(env: &TestEnv, policy: &str, script: &str, args: &[&str]) -> Output {
    let mut argv = vec![python(), "-c", script];
    argv.extend_from_slice(args);
    nobody_command(env, policy, &[], &argv)
        .output()
        .expect("sandbox run")
}

/// Runs `python3 -c SCRIPT ARGS` as nobody in a fresh sandbox of `policy`; the JSON it
/// printed (see [`client_json`]).
pub fn nobody_python_json(env: &TestEnv, policy: &str, script: &str, args: &[&str]) -> Value {
    client_json(&nobody_python(env, policy, script, args))
}

/// The JSON a client script printed; the script must have exited 0.
pub fn client_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("client JSON ({e}): {text}"))
}

/// Runs `python3 -c SCRIPT ARGS` as nobody in `n` fresh sandboxes of `policy` at once
/// (their stderr the test's); what each printed, once all have ended.
pub fn nobody_python_many(
    env: &TestEnv,
    policy: &str,
    script: &str,
    args: &[&str],
    n: usize,
) -> Vec<String> {
    let mut argv = vec![python(), "-c", script];
    argv.extend_from_slice(args);
    let children: Vec<Child> = (0..n)
        .map(|_| {
            nobody_command(env, policy, &[], &argv)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("sandbox run")
        })
        .collect();
    children
        .into_iter()
        .map(|c| stdout(&c.wait_with_output().expect("sandbox run")))
        .collect()
}

/// The Unix time `secs` seconds from now, in whole seconds: a moment for sandboxes
/// started one after another to act together.
pub fn unix_secs_in(secs: u64) -> String {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + secs)
        .to_string()
}

/// A Python broker client for `env`'s agent, then `script`: `base64`, `json`, `sys`,
/// `threading`, `time` and `collections.Counter` imported, `Client` and `BrokerError`
/// from `hb_client`, `SOCK`
/// the broker's socket, `hb` a client on it, `attempt(f)` (what `f()` returned, or
/// `{"error": code, "message": message}` for a broker error) and `code(f)` (the status
/// of `f()`'s answer, or the broker error's code).
pub fn broker_client_script(env: &TestEnv, script: &str) -> String {
    let prelude = py_client_prelude();
    format!(
        "import base64, json, sys, threading, time\nfrom collections import Counter\n{prelude}\
         from hb_client import Client, BrokerError\nSOCK = {sock:?}\nhb = Client(SOCK)\n\
         def attempt(f):\n    try:\n        return f()\n    except BrokerError as e:\n        \
         return {{\"error\": e.code, \"message\": e.message}}\n\
         def code(f):\n    try:\n        return f()[\"status\"]\n    except BrokerError as e:\n        \
         return e.code\n{script}",
        sock = env.broker_socket().display().to_string()
    )
}

/// Runs `script` as a [`broker_client_script`] (with `ARGS` in `sys.argv[1:]`) as nobody
/// in a fresh sandbox of `policy`; the JSON it printed.
pub fn nobody_broker_client(env: &TestEnv, policy: &str, script: &str, args: &[&str]) -> Value {
    nobody_python_json(env, policy, &broker_client_script(env, script), args)
}

/// A sandbox process still running, its stdout read line by line and its stdin written
/// line by line ([`Running::say`]); killed and reaped on drop. Its stdin is a pipe kept
/// open until then, so a script that holds what it took until its stdin closes holds it
/// while this lives.
pub struct Running {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Running {
    /// Spawns `cmd` (a [`nobody_command`]), its stderr the test's.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sandbox run");
        let stdin = child.stdin.take().expect("stdin");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Self { child, stdin, out }
    }

    /// Writes `line` to its stdin.
    pub fn say(&mut self, line: &str) {
        use std::io::Write as _;
        writeln!(self.stdin, "{line}").expect("sandbox stdin");
        self.stdin.flush().expect("sandbox stdin");
    }

    /// The next line it prints, trimmed (empty once it has ended).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("sandbox output");
        line.trim().to_owned()
    }

    /// Waits for it to exit.
    pub fn wait(&mut self) {
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A sandbox's UDP DNS attack loop: for `argv[1]` seconds, a query for a fresh name
/// `r<i>.<argv[2]>` every `argv[3]` seconds from one unconnected socket (`sendto`, the
/// sendmsg hook's redirect), replies read as they come; prints `flooding` at the start
/// and `sent N servfail S` (replies with rcode 2) at the end.
pub const PY_UDP_FLOOD: &str = r#"
import socket, struct, sys, time
def q(name, i):
    h = struct.pack("!HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0)
    return h + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
end = time.time() + float(sys.argv[1]); pause = float(sys.argv[3])
sent = servfail = 0
print("flooding", flush=True)
while time.time() < end:
    s.sendto(q("r%d.%s" % (sent, sys.argv[2]), sent), ("192.0.2.53", 53)); sent += 1
    time.sleep(pause)
    while True:
        try:
            d = s.recv(512)
        except OSError:
            break
        servfail += (d[3] & 15) == 2
print("sent", sent, "servfail", servfail, flush=True)
"#;

/// A victim sandbox's lookups over a connected UDP socket (as glibc does: the connect
/// hook's redirect): one A query per name in `argv[1:]`, each waiting up to 8 s,
/// printing `NAME rcode R ADDR` (`-` for no address) or `NAME lost ERROR`.
pub const PY_UDP_ASK: &str = r#"
import socket, struct, sys
def q(name, i):
    h = struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0)
    return h + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
for i, name in enumerate(sys.argv[1:]):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(8)
    c.connect(("192.0.2.53", 53)); c.send(q(name, i + 1))
    try:
        d = c.recv(512)
        addr = socket.inet_ntoa(d[-4:]) if d[7] else "-"
        print(name, "rcode", d[3] & 15, addr, flush=True)
    except OSError as e:
        print(name, "lost", e, flush=True)
"#;

/// An attacker's lookups: A queries for `<argv[3]><first>.wild.test` … `<argv[3]><last-1>.wild.test` over
/// one UDP socket, at most 32 unanswered at a time (below its share of upstream
/// lookups); prints `asked N answered M servfail S`.
pub const PY_WIDE_NAMES: &str = r#"
import socket, struct, sys
first, last, label = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def q(name, i):
    h = struct.pack("!HHHHHH", i & 0xffff, 0x0100, 1, 0, 0, 0)
    return h + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(3)
c.connect(("192.0.2.53", 53))
asked = answered = servfail = out = 0
def take():
    global answered, servfail, out
    d = c.recv(4096); out -= 1
    rc = d[3] & 15
    answered += rc == 0; servfail += rc == 2
for n in range(first, last):
    c.send(q("%s%d.wild.test" % (label, n), n)); asked += 1; out += 1
    while out >= 32:
        try:
            take()
        except OSError:
            out = 0
while out > 0:
    try:
        take()
    except OSError:
        break
print("asked", asked, "answered", answered, "servfail", servfail, flush=True)
"#;

/// Asks each name of `argv[1:]` (A) over TCP to a port-53 address (the kernel's
/// redirect) and prints `NAME rcode R answers N types T,… addrs A,… ttl L`: every record of
/// the answer section the sandbox was handed, and the lowest TTL among them.
pub const PY_TCP_ANSWERS: &str = r#"
import socket, struct, sys
def skip(d, i):
    while d[i]:
        if d[i] >= 0xc0: return i + 2
        i += d[i] + 1
    return i + 1
for n, name in enumerate(sys.argv[1:]):
    m = struct.pack("!HHHHHH", n + 1, 0x0100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
    t = socket.create_connection(("192.0.2.53", 53), timeout=5)
    t.sendall(struct.pack("!H", len(m)) + m)
    ln = struct.unpack("!H", t.recv(2, socket.MSG_WAITALL))[0]
    d = b""
    while len(d) < ln: d += t.recv(ln - len(d))
    t.close()
    i = skip(d, 12) + 4
    types, addrs, ttls = [], [], set()
    for _ in range(struct.unpack("!H", d[6:8])[0]):
        i = skip(d, i)
        rtype, _, ttl, rdlen = struct.unpack("!HHIH", d[i:i + 10])
        types.append(str(rtype)); ttls.add(ttl)
        if rtype == 1: addrs.append(socket.inet_ntoa(d[i + 10:i + 14]))
        i += 10 + rdlen
    print(name, "rcode", d[3] & 15, "answers", len(types), "types", ",".join(types) or "-", "addrs", ",".join(addrs) or "-", "ttl", min(ttls, default=0), flush=True)
"#;

/// Starts an attacker sandbox of `policy` running [`PY_UDP_FLOOD`] (for `seconds`, names
/// under `zone`, `pause` seconds apart), and waits until it floods.
pub fn udp_flooder(env: &TestEnv, policy: &str, seconds: &str, zone: &str, pause: &str) -> Running {
    let mut flooder = Running::spawn(nobody_command(
        env,
        policy,
        &[],
        &[python(), "-c", PY_UDP_FLOOD, seconds, zone, pause],
    ));
    let line = flooder.line();
    assert_eq!(line, "flooding", "flooder: {line:?}");
    flooder
}

/// Runs [`PY_UDP_ASK`] for `names` in a fresh sandbox of `policy`; what it printed.
pub fn udp_ask(env: &TestEnv, policy: &str, names: &[&str]) -> String {
    let mut args = vec![python(), "-c", PY_UDP_ASK];
    args.extend_from_slice(names);
    nobody_run(env, policy, &args)
}

/// Runs [`PY_TCP_ANSWERS`] for `names` in a fresh sandbox of `policy`; what it printed.
pub fn tcp_answers(env: &TestEnv, policy: &str, names: &[&str]) -> String {
    let mut args = vec![python(), "-c", PY_TCP_ANSWERS];
    args.extend_from_slice(names);
    nobody_run(env, policy, &args)
}

/// A new pseudo-terminal (master, slave), of window `size` when given: an operator's
/// terminal. Keep the master open: with it closed, the terminal hangs up.
pub fn operator_terminal(
    size: Option<libc::winsize>,
) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd as _;
    let (mut master, mut slave) = (-1, -1);
    let size_ptr = size.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
    // SAFETY: openpty(3) writes two new descriptors into the locals; the size, when
    // given, is read from a local that outlives the call.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            size_ptr,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both are new descriptors this test owns.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    }
}

/// Makes the launcher `cmd` start from the terminal `slave`, as from an operator's shell:
/// its stdin, and its controlling terminal (setsid(2) and TIOCSCTTY between fork and
/// exec).
pub fn from_terminal(cmd: &mut Command, slave: &std::os::fd::OwnedFd) {
    cmd.stdin(Stdio::from(slave.try_clone().expect("dup the terminal")));
    // SAFETY: async-signal-safe calls only, on the child's own stdin.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The lines of `child`'s standard output as they come (a reader thread).
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Another tenant (root on the host) asks `GET /v1/whoami`, one call after another,
/// until the attacker (its lines on `attacker`) says `answered` or `failed`, at most
/// `enough` times: how many were answered (each must be 200) before that, and the
/// attacker's lines so far. A broker held by the attacker's work answers one or two.
pub fn whoami_before_the_attackers_answer(
    env: &TestEnv,
    attacker: &mpsc::Receiver<String>,
    enough: usize,
) -> (usize, Vec<String>) {
    let mut heard = Vec::new();
    let mut served = 0;
    while served < enough {
        let mut s = UnixStream::connect(env.broker_socket()).expect("connect to the broker");
        s.set_read_timeout(Some(Duration::from_secs(300)))
            .expect("read timeout");
        s.write_all(b"GET /v1/whoami HTTP/1.1\r\nHost: hb\r\nConnection: close\r\n\r\n")
            .expect("send whoami");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("whoami answered");
        assert!(answer.starts_with("HTTP/1.1 200"), "whoami: {answer}");
        heard.extend(attacker.try_iter());
        if heard
            .iter()
            .any(|l| l.starts_with("answered") || l.starts_with("failed"))
        {
            break;
        }
        served += 1;
    }
    (served, heard)
}

/// Forks `argv[1]` processes that wait for a common go, then each binds TCP sockets to
/// port 0 until one is refused; prints "held N" (all of them together) and holds them
/// until its stdin ends (attack reviews 22 and 25).
pub const PY_PORT_HOARDER: &str = r#"
import os, resource, socket, sys
procs = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
r, w = os.pipe()
go_r, go_w = os.pipe()
kids = []
for k in range(procs):
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        os.read(go_r, 1)
        held = []
        while len(held) < hard - 50:
            try:
                s = socket.socket()
            except OSError:
                break
            try:
                s.bind(("0.0.0.0", 0))
            except OSError:
                s.close()
                break
            held.append(s)
        os.write(w, b"%d\n" % len(held))
        sys.stdin.read()
        os._exit(0)
    kids.append(pid)
os.close(w)
os.close(go_r)
os.write(go_w, b"x" * procs)
f = os.fdopen(r)
print("held", sum(int(f.readline()) for _ in kids), flush=True)
sys.stdin.read()
"#;

/// Five TCP connects to `remote.test` at port `argv[1]` (each socket closed after);
/// prints "connected N errors [...]" (errno names). A victim tenant's view of the host's
/// ports (attack reviews 22 and 25).
pub const PY_FIVE_CONNECTS: &str = r#"
import errno, socket, sys
ok = 0; errors = set()
for i in range(5):
    c = socket.socket(); c.settimeout(3)
    try:
        c.connect(("remote.test", int(sys.argv[1]))); ok += 1
    except OSError as e:
        errors.add(errno.errorcode.get(e.errno, str(e.errno)))
    c.close()
print("connected", ok, "errors", sorted(errors))
"#;

/// Python that names its process `name` (a Python bytes expression, as
/// `prctl(PR_SET_NAME)` takes it: the event's `comm`), then connects to
/// 198.51.100.7:80, an address no policy validated, and prints the errno name: a
/// refusal whose event carries a name the sandbox chose.
pub fn py_named_refused_connect(name: &str) -> String {
    format!(
        r#"
import ctypes, errno, socket
ctypes.CDLL(None).prctl(15, ctypes.c_char_p({name}), 0, 0, 0)
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("198.51.100.7", 80))
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#
    )
}
