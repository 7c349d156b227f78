//! A twelfth attack review, run as the process inside the sandbox: each test performs one
//! attack from a sandbox (uid 65534, arbitrary Python) against the real agent, real
//! kernel and real listeners on the test namespace's `lo`, and asserts the secure
//! outcome. A test marked `#[ignore = "open: …"]` is a break found and not yet fixed:
//! it fails against the current agent.
//!
//! Angle: fail closed across the agent's life and under pressure the sandbox itself
//! makes — what a sandbox can take while the agent is down or restarting (the ports the
//! kernel keeps redirecting to the agent's guard and resolver), and what it can make
//! the agent stop recording.
//!
//! Everything lives on `lo` in the test's own network namespace.

use std::process::Command;

use hb_tests::{
    TestEnv, private_netns, python,
    sandboxed::{Running, nobody_command},
};

/// Where the test's `203.0.113.10:80` would be; nothing listens there (the attack is on
/// the guard's side of the redirect).
const WEB: &str = "203.0.113.10";

fn sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).unwrap_or_else(|e| panic!("{path} <- {value}: {e}"));
}

// --- the agent's ports while it is down ---------------------------------------------
//
// The kernel keeps redirecting a guarded policy's connects to `guard.listen`'s port +
// policy id, and its DNS to `dns.listen`'s, while the agent is down or restarting: with
// nobody listening there, the connect is refused. The bind hook refuses a sandbox's
// bind to those ports. But a socket gets a port without naming one — `bind` to port 0,
// `listen` or `connect` on an unbound socket: the kernel picks one from its ephemeral
// range, and the bind hook sees port 0 or is not called at all. On a node whose
// ephemeral range covers the agent's ports (a widened `ip_local_port_range`, as
// connection-heavy nodes are tuned, or ports configured above 32768), a sandbox whose
// policy accepts inbound connections takes another policy's guard port while the agent
// restarts, and is handed that policy's guarded connections, in clear, before the guard
// ever sees them.

/// The attacker: on `go`, takes ports the kernel picks — `listen()` on fresh unbound TCP
/// sockets until one has `argv[1]`, `bind` to port 0 of fresh UDP sockets until one has
/// `argv[2]` — and lets the others go; prints what it holds (`holding tcp udp`, `-` for
/// what it did not get); on the next line, reads for 6 s and prints what arrived on
/// them as JSON (`{"tcp": text, "udp": text}`).
const PY_SQUAT: &str = r#"
import json, select, socket, sys, time
def squat(kind, target):
    held = []
    for i in range(2000):
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                s.listen(8)
            else:
                s.bind(("0.0.0.0", 0))
        except OSError:
            s.close()
            break
        if s.getsockname()[1] == target:
            for h in held:
                h.close()
            return s
        held.append(s)
    for h in held:
        h.close()
    return None
sys.stdin.readline()
t = squat(socket.SOCK_STREAM, int(sys.argv[1]))
u = squat(socket.SOCK_DGRAM, int(sys.argv[2]))
print("holding", t.getsockname()[1] if t else "-", u.getsockname()[1] if u else "-", flush=True)
got = {"tcp": "", "udp": ""}
end = time.time() + 6
ready_for = [x for x in (t, u) if x]
conn = None
while ready_for and time.time() < end:
    r, _, _ = select.select(ready_for, [], [], max(0, end - time.time()))
    for x in r:
        if x is t:
            conn, _ = t.accept(); conn.settimeout(3)
            ready_for.remove(t); ready_for.append(conn)
        elif x is u:
            got["udp"] += u.recv(2048).decode(errors="replace")
        else:
            d = conn.recv(4096)
            got["tcp"] += d.decode(errors="replace")
            if not d:
                ready_for.remove(conn)
    if "victim-private" in got["tcp"] and "victim-private" in got["udp"]:
        break
print(json.dumps(got), flush=True)
"#;

/// The victim: on `go`, a DNS query for `victim-private-name.web.test` to a nameserver
/// (the kernel redirects it to its policy's resolver port) and a guarded plain-HTTP POST
/// to `argv[1]`:80; prints what each did (`sent`, or the error).
const PY_VICTIM: &str = r#"
import errno, socket, struct, sys
def err(e):
    return errno.errorcode.get(e.errno, str(e))
sys.stdin.readline()
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
for label in "victim-private-name.web.test".split("."):
    q += bytes([len(label)]) + label.encode()
q += b"\0" + struct.pack(">HH", 1, 1)
try:
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); d.settimeout(1)
    d.sendto(q, ("192.0.2.53", 53))
    try:
        d.recv(512); dns = "answered"
    except OSError as e:
        dns = "sent, " + err(e)
except OSError as e:
    dns = err(e)
try:
    s = socket.create_connection((sys.argv[1], 80), timeout=3)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: web.test\r\nContent-Length: 22\r\n\r\nvictim-private-payload")
    http = "sent"
except OSError as e:
    http = err(e)
print("dns", dns, "http", http, flush=True)
"#;

#[test]
fn a_sandbox_cannot_take_another_policys_guard_or_resolver_port_while_the_agent_restarts() {
    hb_tests::require_root();
    private_netns(&[WEB, "192.0.2.53"]);
    // A node tuned for many connections: its ephemeral range covers the agent's ports
    // (the guard's at 15300 + policy id, the resolver's at 15556 + policy id).
    sysctl("net.ipv4.ip_local_port_range", "15290 15820");
    let config = r#"
[dns]
listen = "127.0.0.1:15556"
redirect = true
upstreams = ["127.0.0.1:5399"]

[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "victim"
guard = true
guard_ports = [80]
allow_domains = ["web.test"]
allow_cidrs = ["203.0.113.10/32"]

[[policy]]
name = "server"
inbound = true
allow_domains = ["web.test"]
"#;
    let mut env = TestEnv::new("a12-squat", config);
    env.start_agent();
    let id = env.policy_id("victim");
    let (guard_port, dns_port) = ((15300 + id).to_string(), (15556 + id).to_string());
    let mut attacker = Running::spawn(nobody_command(
        &env,
        "server",
        &[],
        &[python(), "-c", PY_SQUAT, &guard_port, &dns_port],
    ));
    let mut victim = Running::spawn(nobody_command(
        &env,
        "victim",
        &[],
        &[python(), "-c", PY_VICTIM, WEB],
    ));
    env.kill_agent();
    attacker.say("go");
    let squat = attacker.line();
    victim.say("go");
    let sent = victim.line();
    let got: serde_json::Value =
        serde_json::from_str(&attacker.line()).unwrap_or(serde_json::Value::Null);
    println!(
        "figure: agent down, the inbound sandbox's ports picked by the kernel: {squat:?} \
         (victim's guard {guard_port}, resolver {dns_port}); victim: {sent:?}; the squatter read: {got}"
    );
    assert!(
        !got.to_string().contains("victim-private"),
        "another policy's guarded request or lookup reached a sandbox holding its port: {got}"
    );
    assert_eq!(
        squat, "holding - -",
        "a sandbox took another policy's guard or resolver port while the agent was down"
    );
    // Fail closed: with nobody listening, the guarded connect is refused.
    assert!(sent.ends_with("http ECONNREFUSED"), "victim: {sent}");
}

// --- a full disk ----------------------------------------------------------------------
//
// A tenant's work dir is `tenants_dir/NAME/work`, and `tenants_dir` defaults to
// `state_dir/tenants`: the same filesystem as the audit log and `events.jsonl`. A
// sandbox that fills its work dir fills the agent's disk (on a filesystem without a
// reserve for root: XFS, btrfs, tmpfs — ext4 keeps 5 % that only root may use), and
// every refusal after that was enforced but written nowhere: the audit log's and the
// events file's writes failed, and the agent only logged that it could not write. Both
// writers now keep a megabyte allocated past their file's end (`room`), which the
// sandbox cannot take: what it does next is recorded until that is spent too.

/// A tmpfs of `size` mounted at a fresh folder; unmounted (and the folder removed) on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hb-a12-disk-{}", hb_tests::random_suffix()));
        std::fs::create_dir_all(&dir).expect("mount point");
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .expect("mount")
            .success();
        assert!(ok, "mount tmpfs at {}", dir.display());
        Self(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The attacker, in its tenant's work dir: writes until the disk is full, then is
/// refused 48 times (distinct documentation addresses, within one window's event
/// budget) so the last pages of the agent's files fill too, then tries the address it
/// wants hidden, `argv[1]`:443. Prints `full ERRNO last ERRNO`.
const PY_FILL: &str = r#"
import errno, os, socket, sys, time
def err(e):
    return errno.errorcode.get(e.errno, str(e))
full = "-"
try:
    with open("/work/fill", "wb") as f:
        while True:
            f.write(b"\0" * 65536); f.flush()
except OSError as e:
    full = err(e)
for i in range(200):
    try:
        with open("/work/f%d" % i, "wb") as f:
            f.write(b"\0" * 4096)
    except OSError:
        break
def connect(host):
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, 443)); return "connected"
    except OSError as e:
        return err(e)
    finally:
        s.close()
for i in range(1, 49):
    connect("198.51.100.%d" % i)
time.sleep(1)
print("full", full, "last", connect(sys.argv[1]), flush=True)
"#;

#[test]
fn a_sandbox_filling_its_work_dir_does_not_leave_its_next_refusal_unrecorded() {
    hb_tests::require_root();
    private_netns(&[]);
    let disk = SmallDisk::mount("24m");
    let hidden = "198.51.100.200";
    let config = r#"
[[policy]]
name = "worker"
allow_domains = ["web.test"]
"#;
    let mut env = TestEnv::new_in(&disk.0, "a12-full", config);
    env.start_agent();
    let out = nobody_command(
        &env,
        "worker",
        &["--tenant", "acme"],
        &[python(), "-c", PY_FILL, hidden],
    )
    .output()
    .expect("sandbox run");
    let said = hb_tests::stdout(&out);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let audit = std::fs::read_to_string(env.state_dir.join("audit.log")).unwrap_or_default();
    let events = std::fs::read_to_string(env.state_dir.join("events.jsonl")).unwrap_or_default();
    let noise = (1..49)
        .filter(|i| events.contains(&format!("\"198.51.100.{i}\"")))
        .count();
    let recorded = (audit.contains(hidden), events.contains(hidden));
    println!(
        "figure: sandbox: {:?}; of its 48 refusals after the disk was full, {noise} in events.jsonl; \
         the last one ({hidden}) in audit.log / events.jsonl: {recorded:?}",
        said.trim()
    );
    assert!(
        said.contains("last EPERM"),
        "the refusal itself: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        recorded.0 || recorded.1,
        "a refusal after the sandbox filled the disk is recorded nowhere"
    );
    // Leave the tmpfs emptied before it is unmounted.
    drop(env);
}

// --- the broker's memory ----------------------------------------------------------------
//
// The broker reads a request's body whole before it decides (`broker.max_body_bytes`,
// 10 MiB by default) and serves `broker.max_connections` (256) at once,
// `max_connections_per_caller` (32) of one sandbox. A body sent all but its last bytes
// is held until `request_timeout_secs`; before the body budget nothing bounded the
// sum, so one policy's sandboxes made the agent hold connections × max_body_bytes —
// 2.5 GiB at the defaults, where the DaemonSet's limit is 512 MiB: the agent killed
// out of memory, every other tenant without its broker and resolver until it is back.

/// On the broker socket `argv[1]`: `argv[2]` connections, each sending a `/v1/scrub`
/// request whose body (`argv[3]` bytes announced) stops 2 bytes short; prints `holding N`
/// (the connections whose bytes the broker took) and holds them until stdin says so.
const PY_HOLD_BODIES: &str = r#"
import socket, sys
path, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
head = ("POST /v1/scrub HTTP/1.1\r\nHost: hb\r\nContent-Type: application/json\r\n"
        "Content-Length: %d\r\n\r\n" % size).encode()
body = b'{"text": "' + b"a" * (size - 12)
held = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX); s.settimeout(10)
    try:
        s.connect(path); s.sendall(head + body); held.append(s)
    except OSError:
        s.close()
print("holding", len(held), flush=True)
sys.stdin.readline()
"#;

#[test]
fn one_policys_sandboxes_cannot_make_the_broker_hold_unbounded_request_bodies() {
    hb_tests::require_root();
    private_netns(&[]);
    const BODY: u64 = 4 << 20;
    let config = format!(
        r#"
[broker]
socket_mode = "0666"
max_body_bytes = {BODY}

[[policy]]
name = "a"
allow_domains = []

[[policy]]
name = "b"
allow_domains = []
"#
    );
    let mut env = TestEnv::new("a12-bodies", &config);
    env.start_agent();
    let pid = env.agent().pid();
    let before = hb_tests::memory_kib(pid, false);
    let sock = env.broker_socket().display().to_string();
    let size = BODY.to_string();
    let mut holders: Vec<Running> = (0..2)
        .map(|_| {
            Running::spawn(nobody_command(
                &env,
                "a",
                &[],
                &[python(), "-c", PY_HOLD_BODIES, &sock, "32", &size],
            ))
        })
        .collect();
    let held: Vec<String> = holders.iter_mut().map(Running::line).collect();
    let during = hb_tests::memory_kib(pid, false);
    // Another tenant's body meanwhile (1 MiB of text).
    let other = hb_tests::sandboxed::nobody_broker_client(
        &env,
        "b",
        r#"print(json.dumps({"code": code(lambda: {"status": len(hb.scrub("x" * (1 << 20))["text"])})}))"#,
        &[],
    );
    for h in &mut holders {
        h.say("done");
    }
    let grown_mib = during.saturating_sub(before) / 1024;
    println!(
        "figure: two sandboxes of one policy {held:?} unfinished {BODY}-byte bodies of 64 sent: the \
         agent grew by {grown_mib} MiB (64 x 4 MiB held would be 256; at the defaults, 10 MiB x 256 \
         connections, 2.5 GiB); another policy's 1 MiB scrub: {other}"
    );
    assert!(
        grown_mib < 100,
        "one policy's unfinished request bodies made the agent hold {grown_mib} MiB"
    );
    assert_eq!(
        other["code"],
        1 << 20,
        "another policy's scrub meanwhile: {other}"
    );
}
