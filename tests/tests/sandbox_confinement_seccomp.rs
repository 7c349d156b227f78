//! The sandbox's seccomp filter, attacked from inside a sandbox: each test runs the
//! attack as the default sandbox user and as `--user 0` (root stays confined), records
//! what reached the far side (a UDP recorder, the victim's memory), asserts the call was
//! refused with EPERM and reported as a `seccomp` event naming the call, and that the
//! kernel hooks still refuse a private target afterwards.
//!
//! Every test runs in its own network namespace; its addresses are on its `lo`.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, ChildStdout, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use hb_tests::{TcpProbe, TestEnv, UdpProbe, agent_bin, private_netns, python};
use serde_json::Value;

const CONFIG: &str = r#"
[egress]
exception_cidrs = ["203.0.113.0/24"]

[[policy]]
name = "strict"
allow_cidrs = []

[[policy]]
name = "loose"
allow_cidrs = ["203.0.113.66/32"]
"#;

/// Reachable only under the loose policy.
const LOOSE_ONLY: &str = "203.0.113.66";
/// A private address no policy reaches.
const PRIVATE: &str = "10.20.30.40";

/// The users each attack runs as: the configured default, and root.
const USERS: [Option<&str>; 2] = [None, Some("0")];

/// The attacker, through ctypes: `OP ARGS…`; prints `OK …` or the errno name of the
/// refused call (x86_64 and aarch64 system call numbers).
const PY_ATTACK: &str = r#"
import ctypes, errno, os, platform, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"x86_64": dict(pidfd_open=434, pidfd_getfd=438, process_vm_readv=310, bpf=321,
                     io_uring_setup=425),
      "aarch64": dict(pidfd_open=434, pidfd_getfd=438, process_vm_readv=270, bpf=280,
                      io_uring_setup=425)}[platform.machine()]
def err(): return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def sys_(name, *a): return libc.syscall(ctypes.c_long(NR[name]), *[ctypes.c_long(x) for x in a])
op, args = sys.argv[1], sys.argv[2:]
if op == "ptrace":
    pid = int(args[0])
    if libc.ptrace(ctypes.c_long(16), ctypes.c_long(pid), None, None) == 0:  # ATTACH
        libc.ptrace(ctypes.c_long(17), ctypes.c_long(pid), None, None)       # DETACH
        print("OK")
    else:
        print(err())
elif op == "getfd":
    pid, fd, host, port = int(args[0]), int(args[1]), args[2], int(args[3])
    pidfd = sys_("pidfd_open", pid, 0)
    if pidfd < 0:
        # The pid is not in this pid namespace: aim at our own process instead, so the
        # call itself is tried (a namespace alone is not what refuses it).
        print("pidfd_open", err())
        pidfd = sys_("pidfd_open", os.getpid(), 0)
    got = sys_("pidfd_getfd", pidfd, fd, 0)
    if got < 0:
        print(err())
    else:
        s = socket.socket(fileno=got)
        try:
            s.sendto(b"stolen", (host, port))
            print("OK sent")
        except OSError as e:
            print("OK", errno.errorcode.get(e.errno, str(e.errno)))
elif op == "vm_read":
    pid, addr, n = int(args[0]), int(args[1]), int(args[2])
    buf = ctypes.create_string_buffer(n)
    local = struct.pack("@QQ", ctypes.addressof(buf), n)
    remote = struct.pack("@QQ", addr, n)
    lb, rb = ctypes.create_string_buffer(local), ctypes.create_string_buffer(remote)
    got = sys_("process_vm_readv", pid, ctypes.addressof(lb), 1, ctypes.addressof(rb), 1, 0)
    print("OK " + buf.raw[:max(got, 0)].decode(errors="replace") if got >= 0 else err())
elif op == "bpf":
    # BPF_MAP_CREATE of a one-entry array.
    attr = ctypes.create_string_buffer(struct.pack("@IIII", 2, 4, 4, 1) + bytes(112))
    fd = sys_("bpf", 0, ctypes.addressof(attr), 128)
    print("OK" if fd >= 0 else err())
elif op == "socket":
    fam, ty, proto = int(args[0]), int(args[1]), int(args[2])
    try:
        socket.socket(fam, ty, proto).close(); print("OK")
    except OSError as e:
        print(errno.errorcode.get(e.errno, str(e.errno)))
elif op == "unshare":
    print("OK" if libc.unshare(ctypes.c_int(int(args[0], 0))) == 0 else err())
elif op == "mount":
    os.makedirs("/tmp/hb-mnt", exist_ok=True)
    rc = libc.mount(b"none", b"/tmp/hb-mnt", b"tmpfs", ctypes.c_ulong(0), None)
    print("OK" if rc == 0 else err())
elif op == "io_uring":
    params = ctypes.create_string_buffer(120)
    fd = sys_("io_uring_setup", 4, ctypes.addressof(params))
    print("OK" if fd >= 0 else err())
elif op == "tiocsti":
    # A terminal of our own (the sandbox has none): as root, TIOCSTI into any tty works.
    try:
        master, fd = os.openpty()
    except OSError:
        fd = 0
    c = ctypes.c_char(b"x")
    rc = libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(0x5412), ctypes.byref(c))
    print("OK" if rc == 0 else err())
"#;

/// A host process (outside any sandbox) holding a UDP socket and a secret in memory; it
/// prints `PID FD ADDR LEN` and lives until its stdin closes.
const PY_VICTIM: &str = r#"
import ctypes, os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
secret = ctypes.create_string_buffer(b"hb-victim-secret-7f3a")
print(os.getpid(), s.fileno(), ctypes.addressof(secret), len(secret.value), flush=True)
sys.stdin.read()
"#;

/// The sandbox user's uid: what `id -u` says in a sandbox run as `user`.
fn sandbox_uid(env: &TestEnv, user: Option<&str>) -> u32 {
    let out = sandboxed(env, "strict", user, &["id", "-u"]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("id -u in a sandbox: {out:?}"))
}

fn sandbox_args<'a>(
    env: &'a TestEnv,
    policy: &'a str,
    user: Option<&'a str>,
    cmd: &[&'a str],
) -> Vec<&'a str> {
    let config = env.config_path.to_str().expect("utf-8 config path");
    let mut args = vec!["--config", config, "sandbox", "run", "--policy", policy];
    if let Some(user) = user {
        args.extend(["--user", user]);
    }
    args.push("--");
    args.extend_from_slice(cmd);
    args
}

/// `cmd` in a sandbox of `policy` as `user` (None: the default), captured; it must run.
fn sandboxed(env: &TestEnv, policy: &str, user: Option<&str>, cmd: &[&str]) -> Output {
    let out = Command::new(agent_bin())
        .args(sandbox_args(env, policy, user, cmd))
        .stdin(Stdio::null())
        .output()
        .expect("run hb-agent sandbox run");
    assert!(
        out.status.success(),
        "sandboxed {cmd:?} did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// [`PY_ATTACK`] `op args` in a sandbox; its output lines.
fn attack(env: &TestEnv, policy: &str, user: Option<&str>, op: &str, args: &[&str]) -> String {
    let mut cmd = vec![python(), "-c", PY_ATTACK, op];
    cmd.extend_from_slice(args);
    let out = sandboxed(env, policy, user, &cmd);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The `seccomp` event for `syscall` in a sandbox of `policy`, newer than `seen` such
/// events (each attack must add its own).
fn wait_refusal(env: &TestEnv, policy: &str, syscall: &str, seen: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let matching = refusals(env, policy, syscall);
        if matching.len() > seen {
            return matching.last().cloned().expect("one");
        }
        assert!(
            Instant::now() < deadline,
            "no seccomp event for {syscall} under {policy}; events:\n{}",
            String::from_utf8_lossy(&env.hb(&["events", "--json"]).stdout)
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn refusals(env: &TestEnv, policy: &str, syscall: &str) -> Vec<Value> {
    let out = env.hb(&["events", "--json"]);
    assert!(out.status.success(), "hb-agent events failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("event JSON"))
        .filter(|e| {
            e["hook"] == "seccomp"
                && e["reason"] == "syscall_refused"
                && e["policy"] == policy
                && e["name"] == syscall
        })
        .collect()
}

/// Runs `op` as each of [`USERS`]; each must print `expected` and add a `seccomp` event
/// for `syscall`.
fn refused_as_everyone(env: &TestEnv, op: &str, args: &[&str], syscall: &str, expected: &str) {
    for user in USERS {
        let seen = refusals(env, "strict", syscall).len();
        let got = attack(env, "strict", user, op, args);
        assert_eq!(got, expected, "{op} {args:?} as {user:?}");
        let event = wait_refusal(env, "strict", syscall, seen);
        // Named by the launcher: the sandbox's cgroup, and the caller's host pid and name.
        assert!(event["cgroup_id"].as_u64().unwrap_or(0) != 0, "{event}");
        assert!(event["pid"].as_u64().unwrap_or(0) > 1, "{event}");
        assert!(
            event["comm"].as_str().unwrap_or("").starts_with("python"),
            "{event}"
        );
        assert!(
            event["cgroup"]
                .as_str()
                .unwrap_or("")
                .contains("/sandboxes/strict-"),
            "{event}"
        );
    }
}

/// The kernel hooks still refuse a private target from a sandbox, and nothing arrived.
fn enforcement_still_holds(env: &TestEnv) {
    let target = TcpProbe::bind(&format!("{PRIVATE}:0"));
    for user in USERS {
        let got = attack_tcp(env, user, target.addr.port());
        assert_eq!(got, "EPERM", "tcp to {PRIVATE} as {user:?}");
    }
    assert_eq!(target.accepted(), 0);
}

fn attack_tcp(env: &TestEnv, user: Option<&str>, port: u16) -> String {
    let port = port.to_string();
    let out = sandboxed(
        env,
        "strict",
        user,
        &[python(), "-c", hb_tests::PY_PROBE, "tcp", PRIVATE, &port],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn setup(name: &str) -> TestEnv {
    private_netns(&[LOOSE_ONLY, PRIVATE]);
    let mut env = TestEnv::new(name, CONFIG);
    env.start_agent();
    env
}

/// A host process running [`PY_VICTIM`] as `uid`, outside any sandbox.
struct Victim {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    pid: String,
    fd: String,
    addr: String,
    len: String,
}

impl Victim {
    fn start(uid: u32) -> Self {
        let mut child = Command::new(python())
            .args(["-c", PY_VICTIM])
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn victim");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("victim line");
        let f: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        assert_eq!(f.len(), 4, "victim said {line:?}");
        Self {
            child,
            _stdout: stdout,
            pid: f[0].clone(),
            fd: f[1].clone(),
            addr: f[2].clone(),
            len: f[3].clone(),
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ptrace_of_a_host_process_is_refused() {
    let env = setup("sc-ptrace");
    for user in USERS {
        let victim = Victim::start(sandbox_uid(&env, user));
        let seen = refusals(&env, "strict", "ptrace").len();
        let got = attack(&env, "strict", user, "ptrace", &[&victim.pid]);
        assert_eq!(got, "EPERM", "ptrace as {user:?}");
        wait_refusal(&env, "strict", "ptrace", seen);
        // The victim was never stopped: it is still running (state S, not t).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", victim.pid)).expect("stat");
        assert!(!stat.contains(") t "), "{stat}");
    }
    enforcement_still_holds(&env);
}

#[test]
fn process_vm_readv_of_a_host_process_is_refused() {
    let env = setup("sc-vmread");
    for user in USERS {
        let victim = Victim::start(sandbox_uid(&env, user));
        let seen = refusals(&env, "strict", "process_vm_readv").len();
        let got = attack(
            &env,
            "strict",
            user,
            "vm_read",
            &[&victim.pid, &victim.addr, &victim.len],
        );
        assert!(!got.contains("hb-victim-secret"), "read the victim: {got}");
        assert_eq!(got, "EPERM", "process_vm_readv as {user:?}");
        wait_refusal(&env, "strict", "process_vm_readv", seen);
    }
    enforcement_still_holds(&env);
}

#[test]
fn pidfd_getfd_of_a_host_process_socket_is_refused_and_nothing_is_sent() {
    let env = setup("sc-getfd-host");
    let recorder = UdpProbe::bind(&format!("{PRIVATE}:0"));
    let port = recorder.addr.port().to_string();
    for user in USERS {
        let victim = Victim::start(sandbox_uid(&env, user));
        let seen = refusals(&env, "strict", "pidfd_getfd").len();
        let got = attack(
            &env,
            "strict",
            user,
            "getfd",
            &[&victim.pid, &victim.fd, PRIVATE, &port],
        );
        assert!(!got.contains("OK"), "stole the socket as {user:?}: {got}");
        assert!(got.ends_with("EPERM"), "pidfd_getfd as {user:?}: {got}");
        wait_refusal(&env, "strict", "pidfd_getfd", seen);
    }
    only_the_sentinel_arrives(PRIVATE, &recorder);
    enforcement_still_holds(&env);
}

#[test]
fn pidfd_getfd_of_another_sandbox_socket_is_refused_and_nothing_is_sent() {
    let env = setup("sc-getfd-sandbox");
    let recorder = UdpProbe::bind(&format!("{LOOSE_ONLY}:0"));
    let port = recorder.addr.port().to_string();
    for user in USERS {
        // The victim: a sandbox of the loose policy (which may reach the recorder)
        // holding a UDP socket, as the same user as the attacker.
        let mut victim = Command::new(agent_bin())
            .args(sandbox_args(
                &env,
                "loose",
                user,
                &[python(), "-c", PY_VICTIM],
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn victim sandbox");
        let mut stdout = BufReader::new(victim.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("victim line");
        let fd = line.split_whitespace().nth(1).expect("fd").to_owned();
        let pid = host_pid_of_sandboxed(&env, PY_VICTIM);
        let seen = refusals(&env, "strict", "pidfd_getfd").len();
        let got = attack(
            &env,
            "strict",
            user,
            "getfd",
            &[&pid, &fd, LOOSE_ONLY, &port],
        );
        // Closing its stdin ends the victim, and its sandbox with it.
        drop(victim.stdin.take());
        let _ = victim.wait();
        assert!(!got.contains("OK"), "stole the socket as {user:?}: {got}");
        assert!(got.ends_with("EPERM"), "pidfd_getfd as {user:?}: {got}");
        wait_refusal(&env, "strict", "pidfd_getfd", seen);
    }
    only_the_sentinel_arrives(LOOSE_ONLY, &recorder);
    enforcement_still_holds(&env);
}

/// Sends a sentinel datagram from the host (from `from`) to `recorder` and checks it is
/// the only one that arrived: a datagram sent earlier through a stolen socket, before
/// the attacks' sandboxes ended, would be there by now, and the sentinel proves the
/// recorder was listening.
fn only_the_sentinel_arrives(from: &str, recorder: &UdpProbe) {
    std::net::UdpSocket::bind(format!("{from}:0"))
        .and_then(|s| s.send_to(b"sentinel", recorder.addr))
        .expect("sentinel");
    let deadline = Instant::now() + Duration::from_secs(5);
    while recorder.received() < 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(recorder.received(), 1, "only the sentinel arrived");
}

/// The host pid of the sandboxed python whose command line contains `marker`, found in
/// the test's sandbox cgroups (the sandbox's init has the launcher's command line).
fn host_pid_of_sandboxed(env: &TestEnv, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut pids = Vec::new();
        collect_procs(&env.cgroup_path(), &mut pids);
        for pid in pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with(python()) && cmdline.contains(marker) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "victim sandbox not found");
        thread::sleep(Duration::from_millis(20));
    }
}

fn collect_procs(dir: &Path, out: &mut Vec<String>) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(procs.lines().map(str::to_owned));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_procs(&e.path(), out);
        }
    }
}

#[test]
fn bpf_is_refused() {
    let env = setup("sc-bpf");
    refused_as_everyone(&env, "bpf", &[], "bpf", "EPERM");
    enforcement_still_holds(&env);
}

#[test]
fn packet_and_raw_icmp_sockets_are_refused() {
    let env = setup("sc-raw");
    // AF_PACKET, SOCK_RAW, htons(ETH_P_ALL); AF_INET, SOCK_RAW, ICMP; AF_INET6 raw.
    refused_as_everyone(&env, "socket", &["17", "3", "768"], "socket", "EPERM");
    refused_as_everyone(&env, "socket", &["2", "3", "1"], "socket", "EPERM");
    refused_as_everyone(&env, "socket", &["10", "3", "58"], "socket", "EPERM");
    // AF_VSOCK (the hypervisor host in a VM), SOCK_STREAM.
    refused_as_everyone(&env, "socket", &["40", "1", "0"], "socket", "EPERM");
    // Ordinary sockets still open: TCP, UDP, Unix, netlink route.
    for (fam, ty, proto) in [
        ("2", "1", "0"),
        ("10", "2", "0"),
        ("1", "1", "0"),
        ("16", "3", "0"),
    ] {
        for user in USERS {
            let got = attack(&env, "strict", user, "socket", &[fam, ty, proto]);
            assert_eq!(got, "OK", "socket({fam}, {ty}, {proto}) as {user:?}");
        }
    }
    enforcement_still_holds(&env);
}

#[test]
fn new_namespaces_are_refused() {
    let env = setup("sc-unshare");
    for flag in ["0x20000", "0x10000000", "0x40000000"] {
        // CLONE_NEWNS (unshare -m), CLONE_NEWUSER (-U), CLONE_NEWNET (-n).
        refused_as_everyone(&env, "unshare", &[flag], "unshare", "EPERM");
    }
    // The util-linux tool too, as an attacker would type it.
    for user in USERS {
        for flag in ["-m", "-U", "-n"] {
            let out = Command::new(agent_bin())
                .args(sandbox_args(
                    &env,
                    "strict",
                    user,
                    &["unshare", flag, "true"],
                ))
                .stdin(Stdio::null())
                .output()
                .expect("run");
            assert!(!out.status.success(), "unshare {flag} as {user:?} worked");
        }
    }
    enforcement_still_holds(&env);
}

#[test]
fn mount_is_refused() {
    let env = setup("sc-mount");
    refused_as_everyone(&env, "mount", &[], "mount", "EPERM");
    enforcement_still_holds(&env);
}

#[test]
fn io_uring_is_refused() {
    let env = setup("sc-uring");
    refused_as_everyone(&env, "io_uring", &[], "io_uring_setup", "EPERM");
    enforcement_still_holds(&env);
}

#[test]
fn tiocsti_is_refused() {
    let env = setup("sc-tiocsti");
    refused_as_everyone(&env, "tiocsti", &[], "ioctl", "EPERM");
    enforcement_still_holds(&env);
}

#[test]
fn io_uring_works_only_where_the_policy_allows_it() {
    private_netns(&[PRIVATE]);
    let config = format!(
        "{CONFIG}\n[[policy]]\nname = \"uring\"\nallow_cidrs = []\nallow_io_uring = true\n"
    );
    let mut env = TestEnv::new("sc-uring-allowed", &config);
    env.start_agent();
    for user in USERS {
        assert_eq!(
            attack(&env, "uring", user, "io_uring", &[]),
            "OK",
            "as {user:?}"
        );
        assert_eq!(
            attack(&env, "strict", user, "io_uring", &[]),
            "EPERM",
            "as {user:?}"
        );
    }
    assert!(refusals(&env, "uring", "io_uring_setup").is_empty());
    enforcement_still_holds(&env);
}
