//! What a sandboxed command inherits and holds: no terminal to type into, no descriptor
//! beyond stdin/stdout/stderr, no capability in any set (a `--user 0` command included),
//! and limits that stop a fork bomb and a memory hog inside their own sandbox. Each is an
//! attempted escape from inside a sandbox, in the test's own network namespace.

use std::{
    os::fd::{AsRawFd as _, OwnedFd},
    process::{Command, Stdio},
};

use hb_tests::{
    TestEnv, UdpProbe, agent_bin, private_netns, python,
    sandboxed::{from_terminal, operator_terminal},
    stdout,
};

const CONFIG: &str = r#"
[[policy]]
name = "open"
allow_cidrs = ["0.0.0.0/0", "::/0"]
"#;

/// Small limits, so the test reaches them.
const LIMITS: &str = "[sandbox_defaults]\npids_max = 64\nmemory_max = \"64M\"\n";

fn start(name: &str) -> TestEnv {
    start_with(name, CONFIG)
}

fn start_with(name: &str, config: &str) -> TestEnv {
    private_netns(&["10.9.0.1"]);
    let mut env = TestEnv::new(name, config);
    env.start_agent();
    env
}

/// Pushes "echo PWNED\n" into the terminal on stdin with TIOCSTI, one byte at a time;
/// prints OK, or the errno's name of the first refusal.
const PY_TIOCSTI: &str = r#"
import errno, fcntl, termios
try:
    for c in b"echo PWNED\n":
        fcntl.ioctl(0, termios.TIOCSTI, bytes([c]))
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// The launcher runs with a pseudo-terminal as its controlling terminal and stdin, as
/// from an operator's shell. The command pushes keystrokes into it: when it could, the
/// shell would run them after the sandbox ends (this kernel may allow TIOCSTI at all:
/// `dev.tty.legacy_tiocsti`). Refused: the command has a session of its own with no
/// controlling terminal, and no CAP_SYS_ADMIN. The terminal's input queue stays empty.
#[test]
fn a_sandbox_cannot_type_into_the_launchers_terminal() {
    let env = start("tiocsti");
    let terminal = Terminal::open();
    for user in ["1000", "0"] {
        let out = terminal.launch(&env, &["--user", user], &[python(), "-c", PY_TIOCSTI]);
        let said = stdout(&out);
        let queued = terminal.queued();
        assert_eq!(
            queued,
            0,
            "--user {user}: the sandbox typed {queued} byte(s) into the launcher's terminal (it said {said:?}; stderr {})",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(said.trim(), "EPERM", "--user {user}: TIOCSTI refused");
    }
}

/// A pseudo-terminal the test opens to stand for an operator's terminal.
struct Terminal {
    /// Held open: with its master closed, the terminal hangs up.
    _master: OwnedFd,
    slave: OwnedFd,
}

impl Terminal {
    fn open() -> Self {
        let (master, slave) = operator_terminal(None);
        Self {
            _master: master,
            slave,
        }
    }

    /// `hb-agent sandbox run --policy open OPTIONS -- CMD` with this terminal as the
    /// launcher's stdin and controlling terminal, as from an operator's shell.
    fn launch(&self, env: &TestEnv, options: &[&str], cmd: &[&str]) -> std::process::Output {
        let mut launcher = Command::new(agent_bin());
        launcher
            .arg("--config")
            .arg(&env.config_path)
            .args(["sandbox", "run", "--policy", "open"])
            .args(options)
            .arg("--")
            .args(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        from_terminal(&mut launcher, &self.slave);
        launcher.output().expect("sandbox run")
    }

    /// Bytes waiting in the terminal's input queue (typed into it, by anyone).
    fn queued(&self) -> libc::c_int {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes the number of bytes waiting in the terminal's input.
        unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::FIONREAD, &mut queued) };
        queued
    }

    /// The terminal's line discipline flags (local, input, output).
    fn mode(&self) -> (libc::tcflag_t, libc::tcflag_t, libc::tcflag_t) {
        // SAFETY: termios is plain data tcgetattr fills.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above, on the slave this test owns.
        assert_eq!(
            unsafe { libc::tcgetattr(self.slave.as_raw_fd(), &mut t) },
            0
        );
        (t.c_lflag, t.c_iflag, t.c_oflag)
    }
}

/// With `--tty` the command has a terminal, but a fresh one: it is a terminal on stdin,
/// and what it pushes into that terminal stays in its own input queue. The launcher's
/// terminal (a pseudo-terminal here, its controlling one) gets no byte, and its mode is
/// restored after the relay's raw mode.
#[test]
fn with_tty_the_command_gets_a_terminal_of_its_own() {
    let env = start("tty");
    let terminal = Terminal::open();
    let before = terminal.mode();
    let script = format!("import os; print('tty', os.isatty(0), flush=True)\n{PY_TIOCSTI}");
    let out = terminal.launch(&env, &["--tty"], &[python(), "-c", &script]);
    let said = stdout(&out);
    assert!(
        said.contains("tty True"),
        "the command has a terminal: {said:?} (stderr {})",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        terminal.queued(),
        0,
        "bytes typed into the launcher's terminal: {said:?}"
    );
    assert_eq!(
        before,
        terminal.mode(),
        "the launcher's terminal mode is restored"
    );
}

/// Tries every descriptor from 3 to 63: lists the open ones (other than the listing's
/// own), and sends one datagram from each that is a socket, to the recorder's address.
const PY_INHERITED: &str = r#"
import os, socket, sys
listing = sorted(int(f) for f in os.listdir("/proc/self/fd"))
print(" ".join(str(f) for f in listing))
sent = 0
for fd in range(3, 64):
    try:
        s = socket.socket(fileno=os.dup(fd))
        s.sendto(b"stolen", (sys.argv[1], int(sys.argv[2])))
        sent += 1
    except OSError:
        pass
print("sent", sent)
"#;

/// The launcher's caller holds a UDP socket made outside any sandbox (so no hook judges
/// what it sends) and lets it be inherited, as a careless supervisor would. The command
/// must not get it: only 0, 1 and 2 cross into the sandbox, and the recorder on a
/// private address hears nothing.
#[test]
fn only_stdin_stdout_and_stderr_cross_into_a_sandbox() {
    let env = start("fds");
    let sink = UdpProbe::bind("10.9.0.1:0");
    let port = sink.addr.port().to_string();
    let leaked = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let fd = leaked.as_raw_fd();
    // SAFETY: clearing FD_CLOEXEC on a descriptor this test owns, so children get it.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    for user in ["1000", "0"] {
        let out = env.hb(&[
            "sandbox",
            "run",
            "--policy",
            "open",
            "--user",
            user,
            "--",
            python(),
            "-c",
            PY_INHERITED,
            "10.9.0.1",
            &port,
        ]);
        let said = stdout(&out);
        let mut lines = said.lines();
        let open: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        // The listing's own descriptor is the one past stderr.
        assert!(
            open.len() == 4 && open[..3] == ["0", "1", "2"],
            "--user {user}: descriptors open in the sandbox: {open:?} (stderr {})",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(lines.next(), Some("sent 0"), "--user {user}: {said}");
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        sink.received(),
        0,
        "a datagram left through an inherited socket"
    );
}

/// Prints the command's ids, every capability set, no_new_privs, its seccomp mode and
/// its securebits (prctl PR_GET_SECUREBITS = 27).
const PY_STATUS: &str = r#"
import ctypes, os
fields = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
libc = ctypes.CDLL(None, use_errno=True)
print(os.getuid(), os.getgid(), " ".join(str(g) for g in os.getgroups()))
for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
    print(k, fields[k].strip())
print("securebits", hex(libc.prctl(27, 0, 0, 0, 0)))
"#;

/// No capability in any set, no_new_privs, seccomp filters installed and the securebits
/// locked, as the default user and as `--user 0` alike; the default user is 1000:1000
/// with no supplementary groups.
#[test]
fn the_command_holds_no_capability_even_as_uid_0() {
    let env = start("caps");
    for (user, ids) in [(None, "1000 1000"), (Some("0"), "0 0")] {
        let mut args = vec!["sandbox", "run", "--policy", "open"];
        if let Some(u) = user {
            args.extend(["--user", u]);
        }
        args.extend(["--", python(), "-c", PY_STATUS]);
        let out = env.hb(&args);
        let said = stdout(&out);
        let zero = "0000000000000000";
        let expected = format!(
            "{ids} \nCapInh {zero}\nCapPrm {zero}\nCapEff {zero}\nCapBnd {zero}\nCapAmb {zero}\nNoNewPrivs 1\nSeccomp 2\nsecurebits 0xef"
        );
        assert_eq!(
            said.trim(),
            expected.trim(),
            "--user {user:?}: stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Forks children that sleep until it has 200 or fork fails; prints how many and why
/// it stopped.
const PY_FORK_BOMB: &str = r#"
import errno, os, time
n = 0
why = "limit-of-the-test"
while n < 200:
    try:
        pid = os.fork()
    except OSError as e:
        why = errno.errorcode.get(e.errno, str(e.errno))
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print(n, why, flush=True)
"#;

/// Touches 256 MiB, a page at a time; prints "survived" if it could.
const PY_MEMORY_HOG: &str = r#"
b = bytearray(256 << 20)
for i in range(0, len(b), 4096):
    b[i] = 1
print("survived", flush=True)
"#;

/// A fork bomb stops at the sandbox's pids.max (64 here), with fork failing (EAGAIN),
/// and the host goes on; a memory hog is killed inside its sandbox at memory_max (64M
/// here) and the launcher reports the kill (128+9).
#[test]
fn a_fork_bomb_and_a_memory_hog_stop_at_their_sandbox_limits() {
    let env = start_with("limits", &format!("{CONFIG}\n{LIMITS}"));
    let out = env.sandbox("open", &[python(), "-c", PY_FORK_BOMB]);
    let said = stdout(&out);
    let (n, why) = said.trim().split_once(' ').expect("count and reason");
    let n: u32 = n.parse().expect("count");
    assert!(
        n < 64 && why == "EAGAIN",
        "the fork bomb made {n} processes and stopped on {why} (stderr {})",
        String::from_utf8_lossy(&out.stderr)
    );
    // The host is unaffected: it still starts processes at once.
    assert!(Command::new("true").status().expect("true").success());

    let out = env.sandbox("open", &[python(), "-c", PY_MEMORY_HOG]);
    assert_ne!(
        stdout(&out).trim(),
        "survived",
        "the hog outgrew memory_max"
    );
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGKILL),
        "the OOM killer ended the hog inside its sandbox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--print-confinement --json` describes a run without making one: the default user,
/// empty capability sets, the limits of the config; an unknown policy is named.
#[test]
fn print_confinement_describes_a_run_and_runs_nothing() {
    let env = TestEnv::new("printconf", &format!("{CONFIG}\n{LIMITS}"));
    let c = env.hb_json(&["sandbox", "run", "--policy", "open", "--print-confinement"]);
    assert_eq!(c["user"]["uid"], 1000, "{c}");
    assert_eq!(c["user"]["from"], "[sandbox_defaults] user", "{c}");
    for set in [
        "bounding",
        "permitted",
        "effective",
        "inheritable",
        "ambient",
    ] {
        assert_eq!(c["capabilities"][set], serde_json::json!([]), "{set}: {c}");
    }
    assert_eq!(c["limits"]["pids_max"], 64, "{c}");
    assert_eq!(c["limits"]["memory_max_bytes"], 64 << 20, "{c}");
    assert_eq!(c["no_new_privs"], true, "{c}");
    let root = env.hb_json(&[
        "sandbox",
        "run",
        "--policy",
        "open",
        "--user",
        "0",
        "--print-confinement",
    ]);
    assert_eq!(root["user"]["uid"], 0, "{root}");
    assert_eq!(root["capabilities"]["effective"], serde_json::json!([]));
    let bad = env.hb(&["sandbox", "run", "--policy", "nope", "--print-confinement"]);
    assert!(
        !bad.status.success()
            && String::from_utf8_lossy(&bad.stderr).contains("no policy \"nope\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// A policy added to the config after the agent started is not in the kernel's table:
/// `sandbox run` under it refuses and names the policies the running agent loaded (the
/// launcher finds a loaded policy by its slot and reads the whole table only for this).
#[test]
fn a_policy_the_running_agent_never_loaded_is_refused_by_name() {
    let env = start_with("notloaded", CONFIG);
    let text = std::fs::read_to_string(&env.config_path).expect("config");
    std::fs::write(
        &env.config_path,
        format!("{text}\n[[policy]]\nname = \"later\"\nallow_cidrs = []\n"),
    )
    .expect("config");
    let out = env.hb(&["sandbox", "run", "--policy", "later", "--", "true"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("policy \"later\" is not loaded in the kernel")
            && said.contains("loaded policies: open"),
        "{said}"
    );
    let ok = env.hb(&["sandbox", "run", "--policy", "open", "--", "true"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// The command's process shares the init's memory from its clone to its exec, as
/// posix_spawn's child does. A command that cannot start is still named, with the
/// reason, in the launcher's error, and leaves no sandbox cgroup behind; a script without
/// a `#!` line still runs through /bin/sh (execvpe's fallback, which posix_spawnp lacks).
/// (That the command starts with no signal blocked or ignored, and gets the ones the
/// launcher forwards, is lifecycle's `sigterm_to_the_launcher_…` test.)
#[test]
fn a_command_that_cannot_start_is_named_and_one_that_can_runs_as_exec_would_run_it() {
    let env = start("nostart");
    let missing = env.sandbox("open", &["/nonexistent/hb-no-such-command"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success()
            && stderr.contains("cannot start")
            && stderr.contains("hb-no-such-command")
            && stderr.contains("No such file"),
        "exit {:?}: {stderr}",
        missing.status
    );
    let sandboxes = hb_tests::cgroup2_mount()
        .join(&env.cgroup_root)
        .join("sandboxes");
    let left: Vec<_> = std::fs::read_dir(&sandboxes)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "sandbox cgroups left: {left:?}");

    // /var/tmp is the host's, read-only inside (a sandbox gets a fresh /tmp).
    let dir = std::path::PathBuf::from(format!(
        "/var/tmp/hb-test-noshebang-{}",
        hb_tests::random_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("script dir");
    let script = dir.join("script");
    std::fs::write(&script, "echo SCRIPT-RAN-AS $(id -u)\n").expect("script");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ran = env.sandbox("open", &[script.to_str().expect("UTF-8")]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ran.status.success() && stdout(&ran).contains("SCRIPT-RAN-AS 1000"),
        "exit {:?}: {} {}",
        ran.status,
        stdout(&ran),
        String::from_utf8_lossy(&ran.stderr)
    );
}
